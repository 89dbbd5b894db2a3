//! Covering sets: which nodes to ask so that every partition is read once.
//!
//! A listing (keys of a bucket, buckets of a type, a secondary-index
//! query) must see every partition, but each partition only once: its N
//! holders have the same keys, and asking one is enough (Riak's coverage
//! queries are r=1 too, `riak_core_coverage_plan`). So a plan gives every
//! partition exactly one live holder, and picks holders so that few nodes
//! are asked: each node then answers for many partitions, and a listing
//! opens few connections. The choice is a greedy set cover (the node that
//! holds the most partitions not yet covered first), which on a ring spread
//! for N (`ring`) asks about `members / N` nodes, as Riak's plan does.
//!
//! Storage keeps a key under the partition of the key itself on each of its
//! holders (`storage::codec`), so a holder can answer for any partition it
//! holds, whichever of its preference-list slots put it there: unlike
//! Riak's vnodes no filter is needed.
//!
//! A plan is made on the current ring, also while a move is in progress:
//! the current holders keep their data until the ring switches (handoff
//! sweeps a partition only after the switch), and a holder on a newer ring
//! refuses a call planned on the older one (the caller's fence), so the
//! caller re-plans instead of reading a swept partition.

use std::collections::BTreeMap;

use super::key::NodeId;
use super::ring::{Partition, Ring};

/// Every partition of the ring, each given to one of its live holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoveragePlan {
    /// The partitions each chosen node answers for, ascending.
    pub assignments: BTreeMap<NodeId, Vec<Partition>>,
}

impl CoveragePlan {
    /// (node, partition) pairs, every partition once, in partition order.
    pub fn by_partition(&self) -> Vec<(Partition, NodeId)> {
        let mut out: Vec<(Partition, NodeId)> =
            self.assignments.iter().flat_map(|(node, ps)| ps.iter().map(|p| (*p, node.clone()))).collect();
        out.sort();
        out
    }
}

/// Why no plan covers the ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{count} of {partitions} partitions have no live holder (first: {first:?}); \
     a listing needs one live holder of every partition"
)]
pub struct Uncovered {
    pub count: usize,
    pub partitions: u32,
    /// The lowest few uncovered partitions, for the message.
    pub first: Vec<Partition>,
}

/// How many uncovered partitions an error names.
const NAMED: usize = 8;

/// A plan on `ring` with `n` holders per partition, asking only nodes for
/// which `is_up` holds. `rotation` breaks ties between nodes that would
/// cover as many partitions (the node `rotation` places first wins), so
/// that callers varying it spread listings over the holders; the plan is a
/// function of its arguments.
pub fn plan(
    ring: &Ring,
    n: usize,
    is_up: impl Fn(&NodeId) -> bool,
    rotation: usize,
) -> Result<CoveragePlan, Uncovered> {
    let partitions = ring.partitions();
    // Live holders per partition, as indexes into `nodes`.
    let mut nodes: Vec<NodeId> = ring.members();
    nodes.retain(|node| is_up(node));
    let index: BTreeMap<&NodeId, usize> = nodes.iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut holders: Vec<Vec<usize>> = Vec::with_capacity(partitions as usize);
    let mut uncovered = Vec::new();
    for p in 0..partitions {
        let live: Vec<usize> = ring.holders(p, n.max(1)).iter().filter_map(|h| index.get(h).copied()).collect();
        if live.is_empty() {
            uncovered.push(p);
        }
        holders.push(live);
    }
    if !uncovered.is_empty() {
        let count = uncovered.len();
        uncovered.truncate(NAMED);
        return Err(Uncovered { count, partitions, first: uncovered });
    }
    let mut covered = vec![false; partitions as usize];
    let mut left = partitions as usize;
    let mut assignments: BTreeMap<NodeId, Vec<Partition>> = BTreeMap::new();
    let count = nodes.len();
    while left > 0 {
        // How many uncovered partitions each live node holds.
        let mut gain = vec![0usize; count];
        for (p, hs) in holders.iter().enumerate() {
            if !covered[p] {
                for &h in hs {
                    gain[h] += 1;
                }
            }
        }
        // The best node; of equals, the first in rotated order.
        let mut best = rotation % count;
        for i in (0..count).map(|i| (i + rotation) % count) {
            if gain[i] > gain[best] {
                best = i;
            }
        }
        debug_assert!(gain[best] > 0, "some uncovered partition has a live holder");
        let mine = assignments.entry(nodes[best].clone()).or_default();
        for (p, hs) in holders.iter().enumerate() {
            if !covered[p] && hs.contains(&best) {
                covered[p] = true;
                left -= 1;
                mine.push(p as Partition);
            }
        }
    }
    Ok(CoveragePlan { assignments })
}

/// Another live holder of `partition` than those in `tried`, for a retry
/// after the chosen one failed before answering; `None` when there is none.
pub fn alternative(
    ring: &Ring,
    n: usize,
    partition: Partition,
    is_up: impl Fn(&NodeId) -> bool,
    tried: &[NodeId],
) -> Option<NodeId> {
    ring.holders(partition, n.max(1)).into_iter().find(|h| is_up(h) && !tried.contains(h))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::core::ring::Claim;

    fn ring(members: usize, partitions: u32, n: usize) -> Ring {
        let claims: Vec<Claim> =
            (0..members).map(|i| Claim { node: NodeId::new(format!("n{i}")), wanted: 1 }).collect();
        Ring::from_claims(partitions, &claims, n).unwrap()
    }

    /// Every partition once, by one of its holders, and that holder up.
    fn check(plan: &CoveragePlan, ring: &Ring, n: usize, down: &BTreeSet<NodeId>) {
        let pairs = plan.by_partition();
        let seen: Vec<Partition> = pairs.iter().map(|(p, _)| *p).collect();
        assert_eq!(seen, (0..ring.partitions()).collect::<Vec<_>>(), "every partition exactly once");
        for (p, node) in pairs {
            assert!(ring.holders(p, n).contains(&node), "{node} does not hold {p}");
            assert!(!down.contains(&node), "{node} is down");
        }
    }

    #[test]
    fn a_spread_ring_is_covered_by_about_members_over_n_nodes() {
        let r = ring(6, 64, 3);
        let plan = plan(&r, 3, |_| true, 0).unwrap();
        check(&plan, &r, 3, &BTreeSet::new());
        // 6 members, N=3: two nodes could do; greedy may need one more.
        assert!(plan.assignments.len() <= 3, "{:?}", plan.assignments.keys());
    }

    #[test]
    fn a_partition_without_a_live_holder_fails_with_its_number() {
        let r = ring(5, 16, 3);
        let down: BTreeSet<NodeId> = r.holders(7, 3).into_iter().collect();
        let e = plan(&r, 3, |n| !down.contains(n), 0).unwrap_err();
        assert!(e.first.contains(&7) && e.count >= 1 && e.partitions == 16, "{e:?}");
        assert!(e.to_string().contains("no live holder"), "{e}");
    }

    #[test]
    fn rotation_moves_the_plan_and_alternatives_skip_the_tried() {
        let r = ring(6, 64, 3);
        let plans: BTreeSet<Vec<NodeId>> =
            (0..6).map(|rot| plan(&r, 3, |_| true, rot).unwrap().assignments.into_keys().collect()).collect();
        assert!(plans.len() > 1, "rotation should change which nodes are asked");
        let holders = r.holders(3, 3);
        assert_eq!(alternative(&r, 3, 3, |_| true, &holders[..1]), Some(holders[1].clone()));
        assert_eq!(alternative(&r, 3, 3, |_| true, &holders), None);
        assert_eq!(alternative(&r, 3, 3, |n| *n != holders[1], &holders[..1]), Some(holders[2].clone()));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn plans_cover_each_partition_once_by_a_live_holder(
            members in 1usize..9,
            bits in 0u32..8,
            n in 1usize..5,
            down_mask in any::<u16>(),
            rotation in 0usize..16,
        ) {
            let r = ring(members, 1 << bits, n);
            let down: BTreeSet<NodeId> =
                (0..members).filter(|i| down_mask & (1 << i) != 0).map(|i| NodeId::new(format!("n{i}"))).collect();
            match plan(&r, n, |node| !down.contains(node), rotation) {
                Ok(plan) => check(&plan, &r, n, &down),
                Err(e) => {
                    // Only when some partition really has no live holder.
                    let bare: Vec<Partition> = (0..r.partitions())
                        .filter(|&p| r.holders(p, n).iter().all(|h| down.contains(h)))
                        .collect();
                    prop_assert_eq!(e.count, bare.len());
                    prop_assert!(e.count > 0);
                    prop_assert_eq!(&e.first[..], &bare[..bare.len().min(NAMED)]);
                }
            }
        }
    }
}
