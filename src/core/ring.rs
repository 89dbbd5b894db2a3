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
//!
//! Spacing: a node should not own two partitions closer than N apart. If it
//! does, the preference lists starting between them meet it once and walk on
//! to one more node, so some nodes hold far more keys than their share (a
//! ring grown one join at a time without this had, at 4 nodes and N=3, one
//! node holding every key and another 36 %). `rebalance` frees crowded
//! partitions first, hands free ones to nodes that are not nearby, and then
//! swaps owners while that removes crowding. With at most N nodes every node
//! holds every key whatever the layout, so that spacing moves no data and
//! readies the ring for the next join.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

use super::key::{NodeId, ObjectKey};

pub type Partition = u32;

/// The largest partition count we accept. Gossip carries the whole cluster
/// state, and the largest legal state of a cluster this size (two rings
/// while a move runs, every member's transfer reports, at the member cap)
/// must fit the membership message ceiling, 1 GiB; twice this does not
/// (`rpc::membership::largest_message_bytes`, tested there).
pub const MAX_PARTITIONS: u32 = 1 << 18;

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
    /// True for the owners the ring assigns; `false` for fallbacks
    /// ([`Ring::fallbacks`]), which stand in for owners that are down.
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "RingWire", into = "RingWire")]
pub struct Ring {
    /// `owners[p]` owns partition `p`; the length is the partition count.
    owners: Vec<NodeId>,
    /// How many distinct nodes own partitions (derived from `owners`, never
    /// stored): a preference list stops once it has met them all. Without
    /// it a ring of fewer nodes than N walked every partition for every
    /// preference list, and a move's bookkeeping (`holders` of every
    /// partition) cost O(P^2): 0.1 to 0.7 s per transfer at 1,024
    /// partitions in a debug build.
    distinct: usize,
}

/// What a ring is on the wire and on disk: its owners only.
#[derive(serde::Serialize, serde::Deserialize)]
struct RingWire {
    owners: Vec<NodeId>,
}

impl From<RingWire> for Ring {
    fn from(wire: RingWire) -> Ring {
        Ring::with_owners(wire.owners)
    }
}

impl From<Ring> for RingWire {
    fn from(ring: Ring) -> RingWire {
        RingWire { owners: ring.owners }
    }
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
        Ok(Ring::with_owners(vec![node; partitions as usize]))
    }

    /// A ring with the given owners (from the wire or disk).
    pub fn from_owners(owners: Vec<NodeId>) -> Result<Ring, RingError> {
        validate_partition_count(owners.len() as u32)?;
        Ok(Ring::with_owners(owners))
    }

    fn with_owners(owners: Vec<NodeId>) -> Ring {
        let distinct = owners.iter().collect::<std::collections::BTreeSet<_>>().len();
        Ring { owners, distinct }
    }

    pub fn owners(&self) -> &[NodeId] {
        &self.owners
    }

    /// The nodes holding a partition's keys: its preference list's nodes.
    pub fn holders(&self, partition: Partition, n: usize) -> Vec<NodeId> {
        self.preflist(partition, n).into_iter().map(|e| e.node).collect()
    }

    /// A fresh ring for `claims`, spread so that no node owns two
    /// partitions within `n` of each other where the claims allow it.
    pub fn from_claims(partitions: u32, claims: &[Claim], n: usize) -> Result<Ring, RingError> {
        validate_partition_count(partitions)?;
        let targets = targets(partitions, claims)?;
        let mut owners: Vec<Option<NodeId>> = vec![None; partitions as usize];
        assign_free(&mut owners, &targets, n);
        let mut owners: Vec<NodeId> = owners.into_iter().map(|o| o.expect("every partition assigned")).collect();
        spread(&mut owners, n);
        Ok(Ring::with_owners(owners))
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
        let n = n.min(self.distinct);
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

    /// The key's fallbacks, in order: the distinct owners clockwise after
    /// the first `n` (the primaries), each once. Riak's active preference
    /// list takes them, in this order, for primaries that are down; every
    /// node computes the same order, so hints for one key concentrate on
    /// few nodes. Walks the whole ring (only on the failure path).
    pub fn fallbacks(&self, partition: Partition, n: usize) -> Vec<PreflistEntry> {
        let count = self.owners.len();
        let mut seen: Vec<&NodeId> = Vec::new();
        let mut out = Vec::new();
        for step in 0..count {
            let p = (partition as usize + step) % count;
            let node = &self.owners[p];
            if seen.contains(&node) {
                continue;
            }
            seen.push(node);
            if seen.len() > n {
                out.push(PreflistEntry { node: node.clone(), partition: p as Partition, primary: false });
            }
        }
        out
    }

    /// The ring that honours `claims` with replicas spread for `n`
    /// (see the module comment), reached from `self` by moving few
    /// partitions: those of nodes above their target (or gone), plus the
    /// swaps that remove crowding. Unchanged claims on a ring this returned
    /// give the same ring back.
    pub fn rebalance(&self, claims: &[Claim], n: usize) -> Result<Ring, RingError> {
        let targets = targets(self.partitions(), claims)?;
        let mut kept: BTreeMap<NodeId, u32> = BTreeMap::new();
        let mut owners: Vec<Option<NodeId>> = Vec::with_capacity(self.owners.len());
        // Keep each owner's partitions up to its target, preferring to give
        // up partitions near others it owns.
        let order = release_order(&self.owners, n);
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
        assign_free(&mut owners, &remaining, n);
        let mut owners: Vec<NodeId> = owners.into_iter().map(|o| o.expect("every partition assigned")).collect();
        spread(&mut owners, n);
        Ok(Ring::with_owners(owners))
    }
}

/// Remembers the last [`Ring::rebalance`]. The claimant plans after every
/// gossip round, almost always from the same ring and claims, and spreading
/// a large ring can take milliseconds (done under the membership lock that
/// every quorum request reads), so an unchanged plan is not computed again.
#[derive(Debug, Default)]
pub struct Planner {
    last: Option<Plan>,
}

#[derive(Debug)]
struct Plan {
    from: Ring,
    claims: Vec<Claim>,
    n: usize,
    planned: Result<Ring, RingError>,
}

impl Planner {
    /// `ring.rebalance(claims, n)`, from memory when the inputs are the last ones.
    pub fn rebalance(&mut self, ring: &Ring, claims: &[Claim], n: usize) -> Result<Ring, RingError> {
        if let Some(last) = &self.last
            && last.from == *ring
            && last.claims == claims
            && last.n == n
        {
            return last.planned.clone();
        }
        let planned = ring.rebalance(claims, n);
        self.last = Some(Plan { from: ring.clone(), claims: claims.to_vec(), n, planned: planned.clone() });
        planned
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

/// Owners as `rebalance` sees them: a finished ring, or one being filled.
trait Owners {
    fn count(&self) -> usize;
    fn at(&self, p: usize) -> Option<&NodeId>;
}

impl Owners for [NodeId] {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, p: usize) -> Option<&NodeId> {
        Some(&self[p])
    }
}

impl Owners for [Option<NodeId>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, p: usize) -> Option<&NodeId> {
        self[p].as_ref()
    }
}

/// How many partitions within `n - 1` of `p` (either side, `p` and `skip`
/// excluded) `node` owns: the crowding `node` would have at `p`.
fn crowding<O: Owners + ?Sized>(owners: &O, p: usize, node: &NodeId, n: usize, skip: Option<usize>) -> usize {
    let count = owners.count();
    let reach = n.saturating_sub(1).min(count / 2);
    let mut near = 0;
    for d in 1..=reach {
        for q in [(p + d) % count, (p + count - d) % count] {
            if q != p && Some(q) != skip && owners.at(q) == Some(node) {
                near += 1;
            }
        }
    }
    near
}

/// Partition indexes ordered so that the ones a node should give up first
/// (it owns others nearby) come first.
fn release_order(owners: &[NodeId], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..owners.len()).collect();
    order.sort_by_key(|&p| (std::cmp::Reverse(crowding(owners, p, &owners[p], n.max(2), None)), p));
    order
}

/// Gives every unowned partition to the node with the most partitions still
/// due, preferring one that owns nothing within `n - 1` of it.
fn assign_free(owners: &mut [Option<NodeId>], due: &BTreeMap<NodeId, u32>, n: usize) {
    let mut due: Vec<(NodeId, u32)> = due.iter().map(|(n, d)| (n.clone(), *d)).collect();
    for p in 0..owners.len() {
        if owners[p].is_some() {
            continue;
        }
        let near: Vec<usize> = due.iter().map(|(node, _)| crowding(&owners[..], p, node, n.max(2), None)).collect();
        let pick = (0..due.len())
            .filter(|&i| due[i].1 > 0)
            .max_by(|&a, &b| {
                (std::cmp::Reverse(near[a]), due[a].1)
                    .cmp(&(std::cmp::Reverse(near[b]), due[b].1))
                    .then_with(|| due[b].0.cmp(&due[a].0))
            })
            .expect("targets add up to the partition count");
        due[pick].1 -= 1;
        owners[p] = Some(due[pick].0.clone());
    }
}

/// Owner pairs `spread` may try per ring change. Rings of the default size
/// are done in a few thousand; a ring of a million partitions stops early
/// (the same way every time) and continues at its next change.
const SPREAD_BUDGET: usize = 1 << 22;

/// Swaps the owners of two partitions while that lowers the crowding (pairs
/// of one owner closer than `n`), first improvement found, in index order:
/// deterministic, and a ring with no improving swap is left as it is.
fn spread(owners: &mut [NodeId], n: usize) {
    let count = owners.len();
    if n < 2 || count < 4 {
        return;
    }
    let mut budget = SPREAD_BUDGET;
    let mut improved = true;
    while improved && budget > 0 {
        improved = false;
        for p in 0..count {
            let x = owners[p].clone();
            let before_p = crowding(owners, p, &x, n, None);
            if before_p == 0 {
                continue;
            }
            for step in 1..count {
                if budget == 0 {
                    return;
                }
                budget -= 1;
                let q = (p + step) % count;
                let y = &owners[q];
                if *y == x {
                    continue;
                }
                let before = before_p + crowding(owners, q, y, n, None);
                let after = crowding(owners, p, y, n, Some(q)) + crowding(owners, q, &x, n, Some(p));
                if after < before {
                    owners.swap(p, q);
                    improved = true;
                    break;
                }
            }
        }
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
    fn a_ring_of_fewer_nodes_than_n_lists_each_once_in_ring_order() {
        let ring = Ring::from_owners(vec![node("a"), node("a"), node("b"), node("a")]).unwrap();
        let list = |p| ring.preflist(p, 3).into_iter().map(|e| (e.node, e.partition)).collect::<Vec<_>>();
        assert_eq!(list(0), vec![(node("a"), 0), (node("b"), 2)]);
        assert_eq!(list(3), vec![(node("a"), 3), (node("b"), 2)]);
        assert_eq!(ring.holders(2, 3), vec![node("b"), node("a")]);
        // What travels is the owners only; the count of nodes comes back.
        let back: Ring = postcard::from_bytes(&postcard::to_allocvec(&ring).unwrap()).unwrap();
        assert_eq!(back, ring);
        assert_eq!(back.preflist(1, 3).len(), 2);
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
        let ring = Ring::from_claims(64, &claims(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]), 3).unwrap();
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
    fn fallbacks_are_the_next_distinct_owners_after_the_primaries() {
        let n = |s: &str| NodeId::new(s);
        // a b a c d b e: from 0, primaries a b c (N=3), then d, e.
        let ring = Ring::from_owners(["a", "b", "a", "c", "d", "b", "e", "a"].iter().map(|s| n(s)).collect()).unwrap();
        let names = |v: Vec<PreflistEntry>| {
            v.into_iter().map(|e| (e.node.to_string(), e.partition, e.primary)).collect::<Vec<_>>()
        };
        assert_eq!(names(ring.fallbacks(0, 3)), vec![("d".into(), 4, false), ("e".into(), 6, false)]);
        // From 5: b e a are primaries, then c (wrapping) and d.
        assert_eq!(names(ring.fallbacks(5, 3)), vec![("c".into(), 3, false), ("d".into(), 4, false)]);
        // No node is both a primary and a fallback; together they are every member.
        for p in 0..ring.partitions() {
            let primaries = ring.holders(p, 3);
            let fallbacks: Vec<NodeId> = ring.fallbacks(p, 3).into_iter().map(|e| e.node).collect();
            assert!(fallbacks.iter().all(|f| !primaries.contains(f)));
            let mut all = [primaries, fallbacks].concat();
            all.sort();
            assert_eq!(all, ring.members());
        }
        // Fewer members than N: no fallbacks.
        assert!(Ring::single(8, n("a")).unwrap().fallbacks(3, 3).is_empty());
    }

    #[test]
    fn small_cluster_preflist_is_every_node() {
        let ring = Ring::single(64, node("a")).unwrap();
        let list = ring.preflist(5, 3);
        assert_eq!(list, vec![PreflistEntry { node: node("a"), partition: 5, primary: true }]);
        let two = Ring::from_claims(8, &claims(&[("a", 1), ("b", 1)]), 3).unwrap();
        assert_eq!(two.preflist(0, 3).len(), 2);
    }

    #[test]
    fn fresh_ring_alternates_owners() {
        let ring = Ring::from_claims(64, &claims(&[("a", 1), ("b", 1), ("c", 1)]), 3).unwrap();
        // 64 is not a multiple of 3, so only the wrap-around may repeat.
        for p in 0..63u32 {
            assert_ne!(ring.owner(p), ring.owner(p + 1), "partition {p}");
        }
    }

    #[test]
    fn a_fourth_node_gets_a_quarter_and_only_its_share_moves() {
        let three = claims(&[("a", 64), ("b", 64), ("c", 64)]);
        let ring = Ring::from_claims(64, &three, 3).unwrap();
        let mut four = three.clone();
        four.push(Claim { node: node("d"), wanted: 64 });
        let next = ring.rebalance(&four, 3).unwrap();
        for n in ["a", "b", "c", "d"] {
            assert_eq!(next.claimed_by(&node(n)), 16);
        }
        // Every node holds 3/4 of the keys; the newcomer's 48 partitions are
        // the only copies made.
        assert!(holdings(&next, 3).values().all(|h| *h == 48), "{:?}", holdings(&next, 3));
        assert_eq!(copies(&ring, &next, 3), 48);
        // Unchanged wishes: nothing moves.
        assert_eq!(next.rebalance(&four, 3).unwrap(), next);
    }

    /// Partitions whose keys each node holds (it is in their preflist).
    fn holdings(ring: &Ring, n: usize) -> BTreeMap<NodeId, usize> {
        let mut held = BTreeMap::new();
        for p in 0..ring.partitions() {
            for node in ring.holders(p, n) {
                *held.entry(node).or_insert(0) += 1;
            }
        }
        held
    }

    /// Partition copies a change makes: each new holder of a partition.
    fn copies(from: &Ring, to: &Ring, n: usize) -> usize {
        (0..from.partitions())
            .map(|p| {
                let old = from.holders(p, n);
                to.holders(p, n).iter().filter(|h| !old.contains(h)).count()
            })
            .sum()
    }

    #[test]
    fn rings_grown_one_join_at_a_time_hold_balanced_shares() {
        for partitions in [64u32, 256] {
            let mut ring = Ring::single(partitions, node("n0")).unwrap();
            let mut wanted = vec![Claim { node: node("n0"), wanted: 1 }];
            for k in 2..=10usize {
                let newcomer = node(&format!("n{}", k - 1));
                wanted.push(Claim { node: newcomer.clone(), wanted: 1 });
                let next = ring.rebalance(&wanted, 3).unwrap();
                assert_eq!(next.rebalance(&wanted, 3).unwrap(), next, "P={partitions} k={k}: not a fixed point");
                let held = holdings(&next, 3);
                let ideal = (3 * partitions as usize).div_ceil(k).min(partitions as usize);
                for (n, h) in &held {
                    assert!(
                        h.abs_diff(ideal) <= 3,
                        "P={partitions} k={k}: {n} holds {h}, its share is {ideal}: {held:?}"
                    );
                }
                // What moves: every new holder of a partition gets a copy.
                // At least what the newcomer will hold; the spreading swaps
                // may add some, never a reshuffle of everything.
                let (moved, minimum) = (copies(&ring, &next, 3), held[&newcomer]);
                assert!(moved <= 2 * minimum, "P={partitions} k={k}: {moved} copies for a newcomer holding {minimum}");
                ring = next;
            }
        }
    }

    #[test]
    fn the_planner_never_answers_with_a_stale_plan() {
        let mut planner = Planner::default();
        let three = claims(&[("a", 1), ("b", 1), ("c", 1)]);
        let mut four = three.clone();
        four.push(Claim { node: node("d"), wanted: 1 });
        let ring = Ring::from_claims(64, &three, 3).unwrap();
        let next = ring.rebalance(&four, 3).unwrap();
        // Each input changed in turn, and repeated: always what rebalance says.
        for (from, wanted, n) in
            [(&ring, &four, 3), (&ring, &four, 3), (&next, &four, 3), (&next, &three, 3), (&next, &three, 2)]
        {
            assert_eq!(planner.rebalance(from, wanted, n), from.rebalance(wanted, n));
        }
        assert_eq!(planner.rebalance(&ring, &claims(&[("a", 0)]), 3), Err(RingError::NoClaims));
    }

    #[test]
    fn zero_claim_holds_nothing_and_departed_nodes_are_replaced() {
        let ring = Ring::from_claims(32, &claims(&[("a", 1), ("b", 1)]), 3).unwrap();
        let next = ring.rebalance(&claims(&[("a", 0), ("b", 1)]), 3).unwrap();
        assert_eq!(next.claimed_by(&node("a")), 0);
        assert_eq!(next.members(), vec![node("b")]);
        let next = ring.rebalance(&claims(&[("c", 1), ("b", 1)]), 3).unwrap();
        assert_eq!(next.claimed_by(&node("a")), 0);
        assert_eq!(next.claimed_by(&node("c")), 16);
        assert_eq!(ring.rebalance(&claims(&[("a", 0)]), 3), Err(RingError::NoClaims));
    }
}
