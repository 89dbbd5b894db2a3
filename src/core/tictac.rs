//! TicTac Merkle trees for active anti-entropy, as riak_kv 3 keeps them
//! (`leveled_tictac`, `kv_index_tictactree`): one tree per partition, a fixed
//! number of leaf segments, each the XOR of `entry_hash(key, version)` of the
//! keys that fall in it, and branches that are the XOR of their leaves.
//!
//! Why XOR: a write changes one key's version, and the tree follows with
//! `leaf ^= entry_hash(key, old) ^ entry_hash(key, new)` (the same delta on
//! the leaf's branch), without reading any other key. So a replica keeps its
//! trees exact on every write at the cost of two small hashes, and two
//! replicas holding the same objects have equal trees whatever order the
//! writes came in. A difference of one key changes one leaf and one branch by
//! a random 64-bit value; two differences cancel only by a 2^-64 accident.
//!
//! Comparing two replicas of a partition walks down: the [`BRANCHES`]
//! branch hashes first, then the leaves of the differing branches only, then
//! the `(key, version hash)` lists of the differing segments only (read from
//! the store, not the tree), which name the keys to repair.
//!
//! The version hash of an object must be the same on every replica holding
//! an equal object. It hashes the clock (entries in actor order) and the
//! dots of the siblings (sorted by dot): a dot names one value for ever
//! (the invariant of `object`), so hashing values too would cost a pass over
//! every value byte under the key's lock, and a difference it could find
//! (two values under one dot) is one no merge could repair anyway.

use sha2::{Digest, Sha256};

use super::key::ObjectKey;
use super::object::Object;

/// Leaf segments per partition tree.
pub const SEGMENTS: usize = 1024;
/// Branches per tree, each the XOR of [`SEGMENTS_PER_BRANCH`] leaves.
pub const BRANCHES: usize = 32;
pub const SEGMENTS_PER_BRANCH: usize = SEGMENTS / BRANCHES;

/// A leaf's index in a partition tree, `0..SEGMENTS`.
pub type Segment = u32;
/// A branch's index, `0..BRANCHES`.
pub type Branch = u32;

/// A hash of one stored version of a key; 0 means absent (never written,
/// or removed), so an absent key contributes nothing to its leaf.
pub type VersionHash = u64;

/// The segment `key` falls in: the same on every node.
pub fn segment_of(key: &ObjectKey) -> Segment {
    let digest = Sha256::new().chain_update(b"vc-aae-segment").chain_update(key.hash_input()).finalize();
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    head % SEGMENTS as u32
}

/// The branch a segment belongs to.
pub fn branch_of(segment: Segment) -> Branch {
    segment / SEGMENTS_PER_BRANCH as u32
}

/// The version hash of `object`: equal objects hash equal on every node.
/// An empty object (absent key) hashes to 0; any other object never does.
pub fn version_hash(object: &Object) -> VersionHash {
    if object.is_empty() {
        return 0;
    }
    let mut h = Sha256::new();
    h.update(b"vc-aae-version");
    h.update((object.clock().len() as u64).to_be_bytes());
    for (actor, counter) in object.clock().iter() {
        h.update(actor.to_be_bytes());
        h.update(counter.to_be_bytes());
    }
    // Siblings are kept sorted by dot (`Object` invariant).
    h.update((object.siblings().len() as u64).to_be_bytes());
    for sibling in object.siblings() {
        h.update(sibling.dot.actor.to_be_bytes());
        h.update(sibling.dot.counter.to_be_bytes());
    }
    nonzero(first_u64(&h.finalize()))
}

/// What one key at one version adds to its leaf; 0 for an absent key.
pub fn entry_hash(key: &ObjectKey, version: VersionHash) -> u64 {
    if version == 0 {
        return 0;
    }
    let digest = Sha256::new()
        .chain_update(b"vc-aae-entry")
        .chain_update(key.hash_input())
        .chain_update(version.to_be_bytes())
        .finalize();
    first_u64(&digest)
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut head = [0; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

fn nonzero(h: u64) -> u64 {
    if h == 0 { 1 } else { h }
}

/// One write as the tree sees it: the segment and the XOR delta. Computed
/// outside any lock (it hashes), applied under one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub segment: Segment,
    pub delta: u64,
}

impl Change {
    /// `key` went from `old` to `new` (an empty object is an absent key).
    pub fn new(key: &ObjectKey, old: &Object, new: &Object) -> Change {
        Change::of_versions(key, version_hash(old), version_hash(new))
    }

    pub fn of_versions(key: &ObjectKey, old: VersionHash, new: VersionHash) -> Change {
        Change { segment: segment_of(key), delta: entry_hash(key, old) ^ entry_hash(key, new) }
    }
}

/// One partition's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicTacTree {
    leaves: Vec<u64>,
    branches: Vec<u64>,
}

impl Default for TicTacTree {
    fn default() -> TicTacTree {
        TicTacTree::new()
    }
}

impl TicTacTree {
    /// The tree of an empty partition: all zero.
    pub fn new() -> TicTacTree {
        TicTacTree { leaves: vec![0; SEGMENTS], branches: vec![0; BRANCHES] }
    }

    /// Applies one write (see [`Change`]).
    pub fn apply(&mut self, change: Change) {
        let segment = change.segment as usize;
        assert!(segment < SEGMENTS, "segment {segment} out of range");
        self.leaves[segment] ^= change.delta;
        self.branches[segment / SEGMENTS_PER_BRANCH] ^= change.delta;
    }

    /// Adds a key found by a scan (absent before).
    pub fn add(&mut self, key: &ObjectKey, object: &Object) {
        self.apply(Change::new(key, &Object::new(), object));
    }

    pub fn branches(&self) -> &[u64] {
        &self.branches
    }

    pub fn leaves(&self) -> &[u64] {
        &self.leaves
    }

    /// The leaves of one branch.
    pub fn branch_leaves(&self, branch: Branch) -> &[u64] {
        let start = branch as usize * SEGMENTS_PER_BRANCH;
        &self.leaves[start..start + SEGMENTS_PER_BRANCH]
    }
}

/// Branches whose hashes differ. `theirs` must have [`BRANCHES`] entries.
pub fn differing_branches(mine: &[u64], theirs: &[u64]) -> Result<Vec<Branch>, String> {
    if mine.len() != BRANCHES || theirs.len() != BRANCHES {
        return Err(format!("a tree has {BRANCHES} branches, got {} and {}", mine.len(), theirs.len()));
    }
    Ok((0..BRANCHES).filter(|&b| mine[b] != theirs[b]).map(|b| b as Branch).collect())
}

/// Segments of `branch` whose leaves differ, given both sides' leaves of
/// that branch ([`SEGMENTS_PER_BRANCH`] each).
pub fn differing_segments(branch: Branch, mine: &[u64], theirs: &[u64]) -> Result<Vec<Segment>, String> {
    if branch as usize >= BRANCHES {
        return Err(format!("branch {branch} is out of range (a tree has {BRANCHES})"));
    }
    if mine.len() != SEGMENTS_PER_BRANCH || theirs.len() != SEGMENTS_PER_BRANCH {
        return Err(format!("a branch has {SEGMENTS_PER_BRANCH} leaves, got {} and {}", mine.len(), theirs.len()));
    }
    let first = branch * SEGMENTS_PER_BRANCH as u32;
    Ok((0..SEGMENTS_PER_BRANCH).filter(|&i| mine[i] != theirs[i]).map(|i| first + i as u32).collect())
}

/// Keys whose versions differ between two `(key, version hash)` lists, each
/// sorted by key with every key at most once (a partition scan's order):
/// present on one side only, or with different version hashes. Sorted.
pub fn differing_keys(mine: &[(ObjectKey, VersionHash)], theirs: &[(ObjectKey, VersionHash)]) -> Vec<ObjectKey> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < mine.len() || j < theirs.len() {
        match (mine.get(i), theirs.get(j)) {
            (Some((a, ha)), Some((b, hb))) if a == b => {
                if ha != hb {
                    out.push(a.clone());
                }
                i += 1;
                j += 1;
            }
            (Some((a, _)), b) if b.is_none_or(|(b, _)| a < b) => {
                out.push(a.clone());
                i += 1;
            }
            (_, Some((b, _))) => {
                out.push(b.clone());
                j += 1;
            }
            (Some(_), None) | (None, None) => unreachable!("covered by the arms above"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::core::object::{Content, Mutation};
    use crate::core::vclock::VersionVector;

    fn key(i: u32) -> ObjectKey {
        ObjectKey::in_default_bucket(format!("key-{i}"))
    }

    fn put(object: &mut Object, actor: u64, value: &str) {
        let content = Content {
            value: value.to_owned().into(),
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            meta: Default::default(),
        };
        let context = object.clock().clone();
        object.update(actor, &context, Mutation::Put(content)).unwrap();
    }

    fn object(actor: u64, value: &str) -> Object {
        let mut o = Object::new();
        put(&mut o, actor, value);
        o
    }

    fn rebuild(objects: &BTreeMap<ObjectKey, Object>) -> TicTacTree {
        let mut tree = TicTacTree::new();
        for (k, o) in objects {
            tree.add(k, o);
        }
        tree
    }

    #[test]
    fn equal_objects_hash_equal_whatever_their_history() {
        // Two replicas reach the same state by merging in different orders.
        let a = object(1, "a");
        let b = object(2, "b");
        let left = a.merge(&b);
        let right = b.merge(&a);
        assert_eq!(left, right);
        assert_eq!(version_hash(&left), version_hash(&right));
        assert_ne!(version_hash(&left), version_hash(&a), "a sibling more is another version");
        assert_eq!(version_hash(&Object::new()), 0);
        // A tombstone is a version, not an absence.
        let mut deleted = a.clone();
        deleted.update(9, &a.clock().clone(), Mutation::Delete).unwrap();
        assert!(deleted.is_tombstone());
        assert_ne!(version_hash(&deleted), 0);
        assert_ne!(version_hash(&deleted), version_hash(&a));
        // The clock counts: the same dots under a larger clock differ.
        let bigger =
            Object::from_parts(a.clock().clone().merged(&VersionVector::from_entries([(5, 3)])), a.siblings().to_vec())
                .unwrap();
        assert_ne!(version_hash(&bigger), version_hash(&a));
    }

    #[test]
    fn segments_and_branches_are_in_range_and_spread() {
        let mut used = std::collections::BTreeSet::new();
        for i in 0..4096 {
            let s = segment_of(&key(i));
            assert!((s as usize) < SEGMENTS);
            assert!((branch_of(s) as usize) < BRANCHES);
            used.insert(s);
        }
        assert!(used.len() > SEGMENTS * 9 / 10, "4096 keys hit only {} segments", used.len());
    }

    #[test]
    fn removing_every_key_gives_the_empty_tree() {
        let mut tree = TicTacTree::new();
        let objects: Vec<_> = (0..50).map(|i| (key(i), object(1, &i.to_string()))).collect();
        for (k, o) in &objects {
            tree.add(k, o);
        }
        assert_ne!(tree, TicTacTree::new());
        for (k, o) in &objects {
            tree.apply(Change::new(k, o, &Object::new()));
        }
        assert_eq!(tree, TicTacTree::new());
    }

    #[test]
    fn a_walk_down_finds_exactly_the_differing_keys() {
        let mut mine: BTreeMap<ObjectKey, Object> = (0..300).map(|i| (key(i), object(1, "v"))).collect();
        let mut theirs = mine.clone();
        // One changed on their side, one missing here, one extra here.
        put(theirs.get_mut(&key(7)).unwrap(), 2, "w");
        mine.remove(&key(42));
        mine.insert(key(1000), object(3, "x"));
        let (a, b) = (rebuild(&mine), rebuild(&theirs));
        let branches = differing_branches(a.branches(), b.branches()).unwrap();
        let mut segments = Vec::new();
        for branch in &branches {
            segments.extend(differing_segments(*branch, a.branch_leaves(*branch), b.branch_leaves(*branch)).unwrap());
        }
        let want: std::collections::BTreeSet<Segment> = [7, 42, 1000].iter().map(|&i| segment_of(&key(i))).collect();
        assert_eq!(segments.iter().copied().collect::<std::collections::BTreeSet<_>>(), want);
        // Only the branches holding those segments were walked.
        assert!(branches.len() <= 3);
        let list = |m: &BTreeMap<ObjectKey, Object>| {
            m.iter()
                .filter(|(k, _)| segments.contains(&segment_of(k)))
                .map(|(k, o)| (k.clone(), version_hash(o)))
                .collect::<Vec<_>>()
        };
        assert_eq!(differing_keys(&list(&mine), &list(&theirs)), vec![key(1000), key(42), key(7)]);
    }

    #[test]
    fn malformed_remote_trees_are_errors_not_panics() {
        let tree = TicTacTree::new();
        assert!(differing_branches(tree.branches(), &[0; 3]).is_err());
        assert!(differing_segments(BRANCHES as u32, &[0; SEGMENTS_PER_BRANCH], &[0; SEGMENTS_PER_BRANCH]).is_err());
        assert!(differing_segments(0, tree.branch_leaves(0), &[]).is_err());
    }

    /// A random history of writes to a few keys, by a few actors.
    fn ops() -> impl Strategy<Value = Vec<(u32, u64, bool)>> {
        proptest::collection::vec((0u32..20, 1u64..4, any::<bool>()), 0..120)
    }

    proptest! {
        #[test]
        fn incremental_updates_equal_a_rebuild(ops in ops()) {
            let mut objects: BTreeMap<ObjectKey, Object> = BTreeMap::new();
            let mut tree = TicTacTree::new();
            for (k, actor, remove) in ops {
                let k = key(k);
                let old = objects.get(&k).cloned().unwrap_or_default();
                let new = if remove {
                    Object::new()
                } else {
                    let mut o = old.clone();
                    put(&mut o, actor, "v");
                    o
                };
                tree.apply(Change::new(&k, &old, &new));
                if new.is_empty() {
                    objects.remove(&k);
                } else {
                    objects.insert(k, new);
                }
            }
            prop_assert_eq!(&tree, &rebuild(&objects));
            // Branches stay the XOR of their leaves.
            for b in 0..BRANCHES as u32 {
                let xor = tree.branch_leaves(b).iter().fold(0, |acc, l| acc ^ l);
                prop_assert_eq!(xor, tree.branches()[b as usize]);
            }
        }

        #[test]
        fn comparing_two_trees_yields_exactly_the_differing_segments(
            shared in proptest::collection::btree_set(0u32..500, 0..100),
            only_mine in proptest::collection::btree_set(500u32..1000, 0..10),
            changed in proptest::collection::btree_set(0u32..500, 0..10),
        ) {
            let mine: BTreeMap<ObjectKey, Object> =
                shared.iter().chain(&only_mine).map(|&i| (key(i), object(1, "v"))).collect();
            let theirs: BTreeMap<ObjectKey, Object> = shared
                .iter()
                .map(|&i| (key(i), if changed.contains(&i) { object(2, "w") } else { object(1, "v") }))
                .collect();
            let (a, b) = (rebuild(&mine), rebuild(&theirs));
            let mut found = std::collections::BTreeSet::new();
            for branch in differing_branches(a.branches(), b.branches()).unwrap() {
                found.extend(differing_segments(branch, a.branch_leaves(branch), b.branch_leaves(branch)).unwrap());
            }
            // A segment differs exactly when it holds a differing key (the
            // keys of one segment cancelling out is a 2^-64 accident).
            let want: std::collections::BTreeSet<Segment> = only_mine
                .iter()
                .chain(changed.iter().filter(|i| shared.contains(i)))
                .map(|&i| segment_of(&key(i)))
                .collect();
            prop_assert_eq!(found, want);
        }
    }
}
