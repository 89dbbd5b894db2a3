//! A copy's digest: what a read asks of the replicas it does not need a
//! value from (Riak's `head_only` GET, which returns the object's clock and
//! a hash instead of its value).
//!
//! A digest is the copy's clock, and for each sibling its dot and a hash of
//! its content. That is enough to decide, without the value, whether a
//! merge of full copies already holds everything the digested copy holds
//! ([`Digest::covered_by`]): merging it would then change nothing, so a read
//! that answers with that merge answers exactly what it would have with the
//! copy's value. When it is not covered (the copy is newer, concurrent, or
//! superseded something the merge still shows), the reader fetches the
//! copy's value. Dots name values (`object`'s invariant), so the content
//! hashes only guard against a broken invariant: a mismatch is treated as a
//! difference, which costs a fetch, never a wrong answer.

use std::hash::{Hash, Hasher};

use sha2::{Digest as _, Sha256};

use super::object::{Content, Object};
use super::vclock::{Dot, VersionVector};

/// The clock of a copy and the dot and content hash of each sibling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    clock: VersionVector,
    /// Sorted by dot, no dot twice, every dot covered by `clock`.
    siblings: Vec<(Dot, u64)>,
}

impl Digest {
    /// The digest of `object`.
    pub fn of(object: &Object) -> Digest {
        Digest {
            clock: object.clock().clone(),
            siblings: object.siblings().iter().map(|s| (s.dot, content_hash(&s.content))).collect(),
        }
    }

    /// Rebuilds a digest from a peer's parts, checking what [`Digest::of`]
    /// guarantees (a peer's message is input like any other).
    pub fn from_parts(clock: VersionVector, mut siblings: Vec<(Dot, u64)>) -> Result<Digest, String> {
        siblings.sort_by_key(|(dot, _)| *dot);
        if let Some(pair) = siblings.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!("two siblings share dot {:?}", pair[0].0));
        }
        if let Some((dot, _)) = siblings.iter().find(|(dot, _)| dot.counter == 0 || !clock.covers(*dot)) {
            return Err(format!("sibling dot {dot:?} is not covered by the clock"));
        }
        Ok(Digest { clock, siblings })
    }

    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// Each sibling's dot and content hash, sorted by dot.
    pub fn siblings(&self) -> &[(Dot, u64)] {
        &self.siblings
    }

    /// The digest of a copy that does not exist (the key was never
    /// written there).
    pub fn is_empty(&self) -> bool {
        self.clock.is_empty() && self.siblings.is_empty()
    }

    /// True when merging the digested copy into `full` would change nothing
    /// (`full.merge(copy) == full`): `full`'s clock has seen the copy's, the
    /// copy has not superseded a value `full` still holds, and the values
    /// both hold hash the same.
    pub fn covered_by(&self, full: &Object) -> bool {
        if !full.clock().descends(&self.clock) {
            return false;
        }
        // With the copy's clock below `full`'s, the copy's values that
        // `full` lacks were superseded there, and merge drops them.
        let held = |dot: Dot| self.siblings.binary_search_by_key(&dot, |(d, _)| *d).ok().map(|i| self.siblings[i].1);
        full.siblings().iter().all(|s| match held(s.dot) {
            Some(hash) => hash == content_hash(&s.content),
            // A value the copy lacks but has seen: it superseded it.
            None => !self.clock.covers(s.dot),
        })
    }

    /// True when the digested copy is `object` (read repair: a copy that
    /// is not the read's merge is sent it).
    pub fn matches(&self, object: &Object) -> bool {
        *self == Digest::of(object)
    }
}

/// A hash of a value with its metadata, equal on every node of one build
/// (SHA-256 over `Content`'s `Hash` feed, truncated to 64 bits). Two builds
/// that fed it differently would only see a difference and fetch.
pub fn content_hash(content: &Content) -> u64 {
    let mut hasher = ShaHasher(Sha256::new());
    content.hash(&mut hasher);
    let digest = hasher.0.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 is 32 bytes"))
}

/// `std::hash::Hasher` over SHA-256, so that `#[derive(Hash)]` types hash
/// the same in every process (the std hashers are seeded or unspecified).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("read with finalize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::object::Mutation;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn content(v: &str) -> Content {
        Content {
            value: Bytes::from(v.to_owned()),
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            meta: Default::default(),
        }
    }

    fn put(o: &mut Object, actor: u64, context: &VersionVector, v: &str) {
        o.update(actor, context, Mutation::Put(content(v))).unwrap();
    }

    #[test]
    fn a_copy_is_covered_by_itself_and_by_what_supersedes_it() {
        let mut a = Object::new();
        put(&mut a, 1, &VersionVector::new(), "v1");
        let old = a.clone();
        let context = a.clock().clone();
        put(&mut a, 1, &context, "v2");
        assert!(Digest::of(&a).covered_by(&a));
        assert!(Digest::of(&old).covered_by(&a), "an older copy adds nothing");
        assert!(!Digest::of(&a).covered_by(&old), "a newer copy must be fetched");
        assert!(Digest::of(&Object::new()).covered_by(&old));
        assert!(Digest::of(&Object::new()).is_empty());
        assert!(Digest::of(&a).matches(&a) && !Digest::of(&old).matches(&a));
    }

    #[test]
    fn a_delete_with_the_same_clock_is_not_covered_by_the_value_it_deleted() {
        let mut value = Object::new();
        put(&mut value, 1, &VersionVector::new(), "v");
        // Another replica deleted it: same clock, no sibling.
        let mut deleted = value.clone();
        deleted.update(2, &value.clock().clone(), Mutation::Delete).unwrap();
        assert_eq!(deleted.clock(), value.clock());
        assert!(!Digest::of(&deleted).covered_by(&value));
        assert!(Digest::of(&value).covered_by(&deleted));
    }

    #[test]
    fn concurrent_copies_are_not_covered_and_a_hash_mismatch_is_a_difference() {
        let (mut a, mut b) = (Object::new(), Object::new());
        put(&mut a, 1, &VersionVector::new(), "x");
        put(&mut b, 2, &VersionVector::new(), "y");
        assert!(!Digest::of(&b).covered_by(&a));
        assert!(Digest::of(&b).covered_by(&a.merge(&b)));
        // Same dot, other content (a broken invariant): not covered.
        let mut forged = Object::new();
        put(&mut forged, 1, &VersionVector::new(), "other");
        assert!(!Digest::of(&forged).covered_by(&a));
        assert_ne!(content_hash(&content("x")), content_hash(&content("y")));
    }

    #[test]
    fn from_parts_refuses_what_of_never_makes() {
        let clock = VersionVector::from_entries([(1, 2)]);
        assert!(Digest::from_parts(clock.clone(), vec![(Dot { actor: 1, counter: 3 }, 0)]).is_err());
        assert!(Digest::from_parts(clock.clone(), vec![(Dot { actor: 1, counter: 0 }, 0)]).is_err());
        let twice = vec![(Dot::new(1, 1), 0), (Dot::new(1, 1), 1)];
        assert!(Digest::from_parts(clock.clone(), twice).is_err());
        let d = Digest::from_parts(clock, vec![(Dot::new(1, 2), 7), (Dot::new(1, 1), 5)]).unwrap();
        assert_eq!(d.siblings()[0].0, Dot::new(1, 1));
    }

    /// One step of a random history over three replicas.
    #[derive(Debug, Clone)]
    enum Op {
        /// Replica `at` stamps a put with the context of replica `seen`.
        Put { at: usize, seen: usize, value: u8 },
        /// Replica `at` deletes what replica `seen` holds.
        Delete { at: usize, seen: usize },
        /// Replica `to` merges replica `from`'s copy.
        Sync { from: usize, to: usize },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, 0..3usize, any::<u8>()).prop_map(|(at, seen, value)| Op::Put { at, seen, value }),
            (0..3usize, 0..3usize).prop_map(|(at, seen)| Op::Delete { at, seen }),
            (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    fn replay(ops: &[Op]) -> Vec<Object> {
        let mut replicas = vec![Object::new(); 3];
        for op in ops {
            match *op {
                Op::Put { at, seen, value } => {
                    let context = replicas[seen].clock().clone();
                    // Each replica stamps with its own actor, from its own
                    // history (what keeps dots unique).
                    let _ = replicas[at].update(at as u64 + 1, &context, Mutation::Put(content(&value.to_string())));
                }
                Op::Delete { at, seen } => {
                    let context = replicas[seen].clock().clone();
                    let _ = replicas[at].update(at as u64 + 1, &context, Mutation::Delete);
                }
                Op::Sync { from, to } => replicas[to] = replicas[to].merge(&replicas[from]),
            }
        }
        replicas
    }

    proptest! {
        /// The digest read's rule: merge the full copies, then fetch each
        /// digested copy the merge does not cover, and merge it. Whatever
        /// the replicas hold and whichever are asked in full, that answers
        /// exactly what merging every copy does (a full read).
        #[test]
        fn a_digest_read_answers_what_a_full_read_does(
            ops in prop::collection::vec(arb_op(), 0..30),
            full in prop::collection::vec(any::<bool>(), 3),
        ) {
            let replicas = replay(&ops);
            let full_read = replicas.iter().fold(Object::new(), |acc, o| acc.merge(o));
            let mut merged = replicas.iter().zip(&full).filter(|(_, f)| **f).fold(Object::new(), |acc, (o, _)| acc.merge(o));
            // Fetching can uncover nothing new for a later digest that an
            // earlier fetch covers, so one pass in any order is enough; the
            // coordinator loops anyway.
            for (copy, _) in replicas.iter().zip(&full).filter(|(_, f)| !**f) {
                let digest = Digest::of(copy);
                prop_assert_eq!(digest.covered_by(&merged), merged.merge(copy) == merged);
                if !digest.covered_by(&merged) {
                    merged = merged.merge(copy);
                }
            }
            prop_assert_eq!(merged, full_read);
        }
    }
}
