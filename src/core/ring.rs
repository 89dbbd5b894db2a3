//! Consistent hashing over a fixed number of partitions.
//!
//! The SHA-1 space is cut into `partitions` equal ranges (a power of two, so a
//! key's partition is the top bits of its hash). Each partition has one owner.
//! A key's preference list walks the ring clockwise from its partition and
//! takes the first `n` *distinct* owners it meets, so the N replicas of a key
//! are on N different nodes whenever the ring has at least N nodes, whatever
//! the claims look like. With fewer nodes the list is shorter: every node
//! holds the key.
//!
//! Claims: each node asks for a share of partitions ([`Claim`]); the ring gives
//! out partitions in proportion to those wishes ([`Ring::rebalance`]) and moves
//! as few partitions as it can when wishes or members change.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

use super::key::{NodeId, ObjectKey};

pub type Partition = u32;

/// The largest partition count we accept; a ring this size is 1M owners.
pub const MAX_PARTITIONS: u32 = 1 << 20;

/// A node's wish: how many partitions it would like to own. Wishes are
/// weights: if they add up to more (or less) than the ring has, every node
/// gets the same proportion of its wish. 0 means "hold no data".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub node: NodeId,
    pub wanted: u32,
}

/// One replica in a key's preference list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflistEntry {
    pub node: NodeId,
    /// The partition whose ownership put this node in the list.
    pub partition: Partition,
    /// True for the owners the ring assigns; fallbacks (when an owner is
    /// down) will be `false`.
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ring {
    /// `owners[p]` owns partition `p`; the length is the partition count.
    owners: Vec<NodeId>,
}

/// Why a ring cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("partition count {0} is not a power of two between 1 and {MAX_PARTITIONS}")]
    BadPartitionCount(u32),
    #[error("no member claims any partition; at least one claim must be above 0")]
    NoClaims,
}

pub fn validate_partition_count(partitions: u32) -> Result<(), RingError> {
    if partitions == 0 || partitions > MAX_PARTITIONS || !partitions.is_power_of_two() {
        return Err(RingError::BadPartitionCount(partitions));
    }
    Ok(())
}

/// The partition a key falls in: the top `log2(partitions)` bits of SHA-1.
pub fn partition_of(key: &ObjectKey, partitions: u32) -> Partition {
    debug_assert!(partitions.is_power_of_two());
    let digest: [u8; 20] = Sha1::digest(key.hash_input()).into();
    let top = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let bits = partitions.trailing_zeros();
    if bits == 0 { 0 } else { top >> (32 - bits) }
}

impl Ring {
    /// A ring where one node owns every partition.
    pub fn single(partitions: u32, node: NodeId) -> Result<Ring, RingError> {
        validate_partition_count(partitions)?;
        Ok(Ring { owners: vec![node; partitions as usize] })
    }

    /// A ring with the given owners (from the wire or disk).
    pub fn from_owners(owners: Vec<NodeId>) -> Result<Ring, RingError> {
        validate_partition_count(owners.len() as u32)?;
        Ok(Ring { owners })
    }

    pub fn owners(&self) -> &[NodeId] {
        &self.owners
    }

    /// The nodes holding a partition's keys: its preference list's nodes.
    pub fn holders(&self, partition: Partition, n: usize) -> Vec<NodeId> {
        self.preflist(partition, n).into_iter().map(|e| e.node).collect()
    }

    /// A fresh ring for `claims`, spread so that neighbours differ.
    pub fn from_claims(partitions: u32, claims: &[Claim]) -> Result<Ring, RingError> {
        validate_partition_count(partitions)?;
        let targets = targets(partitions, claims)?;
        let mut owners: Vec<Option<NodeId>> = vec![None; partitions as usize];
        assign_free(&mut owners, &targets);
        Ok(Ring { owners: owners.into_iter().map(|o| o.expect("every partition assigned")).collect() })
    }

    pub fn partitions(&self) -> u32 {
        self.owners.len() as u32
    }

    pub fn partition_of(&self, key: &ObjectKey) -> Partition {
        partition_of(key, self.partitions())
    }

    pub fn owner(&self, partition: Partition) -> &NodeId {
        &self.owners[partition as usize]
    }

    /// Distinct owners, sorted.
    pub fn members(&self) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self.owners.clone();
        m.sort();
        m.dedup();
        m
    }

    /// How many partitions `node` owns.
    pub fn claimed_by(&self, node: &NodeId) -> u32 {
        self.owners.iter().filter(|o| *o == node).count() as u32
    }

    /// The first `n` distinct owners clockwise from `partition`.
    pub fn preflist(&self, partition: Partition, n: usize) -> Vec<PreflistEntry> {
        let count = self.owners.len();
        let mut list: Vec<PreflistEntry> = Vec::with_capacity(n);
        for step in 0..count {
            if list.len() == n {
                break;
            }
            let p = (partition as usize + step) % count;
            let node = &self.owners[p];
            if list.iter().all(|e| &e.node != node) {
                list.push(PreflistEntry { node: node.clone(), partition: p as Partition, primary: true });
            }
        }
        list
    }

    /// The ring that honours `claims`, reached from `self` by moving as few
    /// partitions as possible: only partitions of nodes above their target
    /// (or gone) change hands.
    pub fn rebalance(&self, claims: &[Claim]) -> Result<Ring, RingError> {
        let targets = targets(self.partitions(), claims)?;
        let mut kept: BTreeMap<NodeId, u32> = BTreeMap::new();
        let mut owners: Vec<Option<NodeId>> = Vec::with_capacity(self.owners.len());
        // Keep each owner's partitions up to its target, preferring to give
        // up partitions whose neighbours it also owns.
        let order = release_order(&self.owners);
        owners.resize(self.owners.len(), None);
        for p in order.into_iter().rev() {
            let node = &self.owners[p];
            let target = targets.get(node).copied().unwrap_or(0);
            let have = kept.entry(node.clone()).or_insert(0);
            if *have < target {
                *have += 1;
                owners[p] = Some(node.clone());
            }
        }
        let remaining: BTreeMap<NodeId, u32> =
            targets.iter().map(|(n, t)| (n.clone(), t - kept.get(n).copied().unwrap_or(0))).collect();
        assign_free(&mut owners, &remaining);
        Ok(Ring { owners: owners.into_iter().map(|o| o.expect("every partition assigned")).collect() })
    }
}

/// Partitions per node, proportional to wishes, by largest remainder so the
/// targets add up to exactly `partitions`. Ties go to the smaller node name
/// so every node computes the same ring.
fn targets(partitions: u32, claims: &[Claim]) -> Result<BTreeMap<NodeId, u32>, RingError> {
    let total: u64 = claims.iter().map(|c| u64::from(c.wanted)).sum();
    if total == 0 {
        return Err(RingError::NoClaims);
    }
    let mut out = BTreeMap::new();
    let mut rest: Vec<(u64, NodeId)> = Vec::new();
    let mut given = 0u64;
    for c in claims {
        let exact = u64::from(partitions) * u64::from(c.wanted);
        let share = exact / total;
        given += share;
        out.insert(c.node.clone(), share as u32);
        rest.push((exact % total, c.node.clone()));
    }
    rest.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (_, node) in rest.into_iter().take((u64::from(partitions) - given) as usize) {
        *out.get_mut(&node).expect("node has a target") += 1;
    }
    Ok(out)
}

/// Partition indexes ordered so that the ones a node should give up first
/// (it also owns a neighbour) come first.
fn release_order(owners: &[NodeId]) -> Vec<usize> {
    let count = owners.len();
    let mut order: Vec<usize> = (0..count).collect();
    let crowded = |p: usize| {
        let prev = &owners[(p + count - 1) % count];
        let next = &owners[(p + 1) % count];
        count > 1 && (prev == &owners[p] || next == &owners[p])
    };
    order.sort_by_key(|&p| (!crowded(p), p));
    order
}

/// Gives every unowned partition to the node with the most partitions still
/// due, preferring one that does not own the previous partition.
fn assign_free(owners: &mut [Option<NodeId>], due: &BTreeMap<NodeId, u32>) {
    let mut due: Vec<(NodeId, u32)> = due.iter().map(|(n, d)| (n.clone(), *d)).collect();
    let count = owners.len();
    for p in 0..count {
        if owners[p].is_some() {
            continue;
        }
        let prev = if p == 0 { owners[count - 1].clone() } else { owners[p - 1].clone() };
        let next = owners[(p + 1) % count].clone();
        let pick = due
            .iter()
            .enumerate()
            .filter(|(_, (_, d))| *d > 0)
            .max_by(|(_, (na, da)), (_, (nb, db))| {
                let away_a = Some(na) != prev.as_ref() && Some(na) != next.as_ref();
                let away_b = Some(nb) != prev.as_ref() && Some(nb) != next.as_ref();
                (away_a, da).cmp(&(away_b, db)).then_with(|| nb.cmp(na))
            })
            .map(|(i, _)| i)
            .expect("targets add up to the partition count");
        due[pick].1 -= 1;
        owners[p] = Some(due[pick].0.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId::new(n)
    }

    fn claims(wanted: &[(&str, u32)]) -> Vec<Claim> {
        wanted.iter().map(|(n, w)| Claim { node: node(n), wanted: *w }).collect()
    }

    #[test]
    fn partition_count_must_be_power_of_two() {
        for bad in [0, 3, 12, MAX_PARTITIONS * 2] {
            assert_eq!(validate_partition_count(bad), Err(RingError::BadPartitionCount(bad)));
        }
        for good in [1, 2, 64, 1024, MAX_PARTITIONS] {
            assert_eq!(validate_partition_count(good), Ok(()));
        }
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = vec![0u32; 16];
        for i in 0..16_000 {
            counts[partition_of(&ObjectKey::in_default_bucket(format!("key{i}")), 16) as usize] += 1;
        }
        // 1000 expected per partition; SHA-1 keeps each well within 20 %.
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        assert_eq!(partition_of(&ObjectKey::in_default_bucket("x"), 1), 0);
    }

    #[test]
    fn namespace_changes_placement_input() {
        let a = ObjectKey::new("default", "ab", "c");
        let b = ObjectKey::new("default", "a", "bc");
        assert_ne!(a.hash_input(), b.hash_input());
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases reads best inline
    fn targets_are_proportional_and_exact() {
        // (partitions, wishes, expected targets)
        let cases: &[(u32, &[(&str, u32)], &[(&str, u32)])] = &[
            (64, &[("a", 64)], &[("a", 64)]),
            (64, &[("a", 64), ("b", 64)], &[("a", 32), ("b", 32)]),
            (64, &[("a", 64), ("b", 64), ("c", 64)], &[("a", 22), ("b", 21), ("c", 21)]),
            (64, &[("a", 10), ("b", 30)], &[("a", 16), ("b", 48)]),
            (8, &[("a", 0), ("b", 1)], &[("a", 0), ("b", 8)]),
        ];
        for (p, wishes, expected) in cases {
            let got = targets(*p, &claims(wishes)).unwrap();
            let want: BTreeMap<NodeId, u32> = expected.iter().map(|(n, t)| (node(n), *t)).collect();
            assert_eq!(got, want, "{wishes:?}");
        }
        assert_eq!(targets(8, &claims(&[("a", 0)])), Err(RingError::NoClaims));
    }

    #[test]
    fn preflists_have_distinct_nodes() {
        let ring = Ring::from_claims(64, &claims(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)])).unwrap();
        for p in 0..64 {
            let list = ring.preflist(p, 3);
            assert_eq!(list.len(), 3);
            assert_eq!(list[0].partition, p);
            let mut nodes: Vec<_> = list.iter().map(|e| e.node.clone()).collect();
            nodes.dedup();
            nodes.sort();
            nodes.dedup();
            assert_eq!(nodes.len(), 3, "partition {p}: {list:?}");
        }
    }

    #[test]
    fn small_cluster_preflist_is_every_node() {
        let ring = Ring::single(64, node("a")).unwrap();
        let list = ring.preflist(5, 3);
        assert_eq!(list, vec![PreflistEntry { node: node("a"), partition: 5, primary: true }]);
        let two = Ring::from_claims(8, &claims(&[("a", 1), ("b", 1)])).unwrap();
        assert_eq!(two.preflist(0, 3).len(), 2);
    }

    #[test]
    fn fresh_ring_alternates_owners() {
        let ring = Ring::from_claims(64, &claims(&[("a", 1), ("b", 1), ("c", 1)])).unwrap();
        // 64 is not a multiple of 3, so only the wrap-around may repeat.
        for p in 0..63u32 {
            assert_ne!(ring.owner(p), ring.owner(p + 1), "partition {p}");
        }
    }

    #[test]
    fn rebalance_moves_only_what_it_must() {
        let three = claims(&[("a", 64), ("b", 64), ("c", 64)]);
        let ring = Ring::from_claims(64, &three).unwrap();
        let mut four = three.clone();
        four.push(Claim { node: node("d"), wanted: 64 });
        let next = ring.rebalance(&four).unwrap();
        let moved = (0..64).filter(|p| ring.owner(*p) != next.owner(*p)).count();
        assert_eq!(next.claimed_by(&node("d")), 16);
        // Every moved partition went to the newcomer: 16 of 64, no churn.
        assert_eq!(moved, 16);
        for n in ["a", "b", "c"] {
            assert_eq!(next.claimed_by(&node(n)), 16);
        }
        // Unchanged wishes: nothing moves.
        assert_eq!(next.rebalance(&four).unwrap(), next);
    }

    #[test]
    fn zero_claim_holds_nothing_and_departed_nodes_are_replaced() {
        let ring = Ring::from_claims(32, &claims(&[("a", 1), ("b", 1)])).unwrap();
        let next = ring.rebalance(&claims(&[("a", 0), ("b", 1)])).unwrap();
        assert_eq!(next.claimed_by(&node("a")), 0);
        assert_eq!(next.members(), vec![node("b")]);
        let next = ring.rebalance(&claims(&[("c", 1), ("b", 1)])).unwrap();
        assert_eq!(next.claimed_by(&node("a")), 0);
        assert_eq!(next.claimed_by(&node("c")), 16);
        assert_eq!(ring.rebalance(&claims(&[("a", 0)])), Err(RingError::NoClaims));
    }
}
