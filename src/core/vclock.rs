//! Version vectors and dots: the causality half of dotted version vectors.
//!
//! Every replica that coordinates a write is an *actor*. An actor is a random
//! 64-bit id created with a node's data directory (see `storage`), not a node
//! name: a node whose disk was wiped comes back with a new actor, so it can
//! never reissue a dot that an older incarnation already handed out. Reissuing
//! a dot would make two different values look identical and lose one of them.
//!
//! A [`Dot`] names one write event: the `counter`-th write coordinated by
//! `actor` on one key. A [`VersionVector`] maps actors to counters and means
//! "every event `(a, 1..=vv[a])` has been seen". That set is downward-closed
//! because an actor stamps dot `n + 1` only on a replica state that already
//! contains (or superseded) its dots `1..=n`; so pointwise max is the union of
//! two histories.
//!
//! Merge laws (checked by proptest in `tests` below): [`VersionVector::merge`]
//! is commutative, associative and idempotent, and the result descends both
//! inputs.

use std::collections::BTreeMap;

/// Identity of a replica incarnation that stamps dots.
pub type ActorId = u64;

/// One write event: the `counter`-th write stamped by `actor` on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub actor: ActorId,
    pub counter: u64,
}

impl Dot {
    pub fn new(actor: ActorId, counter: u64) -> Dot {
        debug_assert!(counter > 0, "dot counters start at 1");
        Dot { actor, counter }
    }
}

/// How two version vectors relate causally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// The left side has seen everything the right side has, and more.
    Descends,
    /// The right side has seen everything the left side has, and more.
    Precedes,
    Concurrent,
}

/// A map from actor to the highest counter seen; absent actors are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    /// Invariant: no entry has counter 0 (absent means 0), so that equal
    /// histories have equal representations.
    entries: BTreeMap<ActorId, u64>,
}

impl VersionVector {
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// Builds a vector from `(actor, counter)` pairs; zero counters are
    /// dropped and repeated actors keep their maximum.
    pub fn from_entries(entries: impl IntoIterator<Item = (ActorId, u64)>) -> VersionVector {
        let mut vv = VersionVector::new();
        for (actor, counter) in entries {
            vv.observe(Dot { actor, counter });
        }
        vv
    }

    pub fn get(&self, actor: ActorId) -> u64 {
        self.entries.get(&actor).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.entries.iter().map(|(a, c)| (*a, *c))
    }

    /// True when the event `dot` is part of the history this vector describes.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Records that `dot` (and so, by downward closure, its predecessors of
    /// the same actor) has been seen.
    pub fn observe(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        let entry = self.entries.entry(dot.actor).or_insert(0);
        *entry = (*entry).max(dot.counter);
    }

    /// The next dot `actor` should stamp on a key whose history is `self`;
    /// `None` when its counter is exhausted (only a forged history gets
    /// there: the stamping replica then takes a fresh actor).
    pub fn next_dot(&self, actor: ActorId) -> Option<Dot> {
        self.get(actor).checked_add(1).map(|counter| Dot::new(actor, counter))
    }

    /// Pointwise maximum: the union of both histories.
    pub fn merge(&mut self, other: &VersionVector) {
        for (actor, counter) in other.iter() {
            self.observe(Dot { actor, counter });
        }
    }

    pub fn merged(mut self, other: &VersionVector) -> VersionVector {
        self.merge(other);
        self
    }

    /// True when `self` has seen every event `other` has.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.iter().all(|(actor, counter)| self.get(actor) >= counter)
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::Descends,
            (false, true) => Causality::Precedes,
            (false, false) => Causality::Concurrent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        VersionVector::from_entries(entries.iter().copied())
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases reads best inline
    fn compare_table() {
        // (left, right, expected)
        let cases: &[(&[(u64, u64)], &[(u64, u64)], Causality)] = &[
            (&[], &[], Causality::Equal),
            (&[(1, 1)], &[], Causality::Descends),
            (&[], &[(1, 1)], Causality::Precedes),
            (&[(1, 2)], &[(1, 1)], Causality::Descends),
            (&[(1, 1), (2, 1)], &[(1, 1)], Causality::Descends),
            (&[(1, 1)], &[(2, 1)], Causality::Concurrent),
            (&[(1, 2), (2, 1)], &[(1, 1), (2, 2)], Causality::Concurrent),
            (&[(1, 3), (2, 0)], &[(1, 3)], Causality::Equal),
        ];
        for (left, right, expected) in cases {
            assert_eq!(vv(left).compare(&vv(right)), *expected, "{left:?} vs {right:?}");
        }
    }

    #[test]
    fn covers_and_next_dot() {
        let v = vv(&[(7, 3)]);
        assert!(v.covers(Dot::new(7, 1)));
        assert!(v.covers(Dot::new(7, 3)));
        assert!(!v.covers(Dot::new(7, 4)));
        assert!(!v.covers(Dot::new(8, 1)));
        assert_eq!(v.next_dot(7), Some(Dot::new(7, 4)));
        assert_eq!(v.next_dot(9), Some(Dot::new(9, 1)));
        assert_eq!(vv(&[(7, u64::MAX)]).next_dot(7), None);
    }

    #[test]
    fn zero_counters_are_not_stored() {
        assert_eq!(vv(&[(1, 0)]), VersionVector::new());
        assert!(vv(&[(1, 0)]).is_empty());
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..5, 0u64..6), 0..6).prop_map(VersionVector::from_entries)
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_vv(), b in arb_vv()) {
            prop_assert_eq!(a.clone().merged(&b), b.merged(&a));
        }

        #[test]
        fn merge_is_associative(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            prop_assert_eq!(a.clone().merged(&b).merged(&c), a.merged(&b.merged(&c)));
        }

        #[test]
        fn merge_is_idempotent(a in arb_vv()) {
            prop_assert_eq!(a.clone().merged(&a), a);
        }

        #[test]
        fn merge_descends_both(a in arb_vv(), b in arb_vv()) {
            let m = a.clone().merged(&b);
            prop_assert!(m.descends(&a) && m.descends(&b));
        }
    }
}
