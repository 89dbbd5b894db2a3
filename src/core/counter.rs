//! Riak's 1.4 counters: a PN-counter per key, stored as an ordinary value
//! (Content-Type [`CONTENT_TYPE`]) so that it replicates, repairs and moves
//! like any other object. Each replica adds to its own actor's entry only;
//! concurrent increments on different replicas become siblings, and a read
//! (or the next increment) merges them entry by entry, taking each entry's
//! maximum. That merge is a join, so the value converges whatever order the
//! replicas meet in, and no increment is counted twice or lost.

use std::collections::BTreeMap;

use super::vclock::ActorId;

/// The Content-Type of a counter's value (Riak's).
pub const CONTENT_TYPE: &str = "application/riak_counter";
const FORMAT: u8 = 1;
const ENTRY_BYTES: usize = 24;

/// Per actor: the sum of its increments and the sum of its decrements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PnCounter {
    entries: BTreeMap<ActorId, (u64, u64)>,
}

impl PnCounter {
    pub fn value(&self) -> i128 {
        self.entries.values().map(|&(p, n)| p as i128 - n as i128).sum()
    }

    /// Adds `delta` to `actor`'s entry (saturating: 2^64 increments of one
    /// actor are not a real workload).
    pub fn add(&mut self, actor: ActorId, delta: i64) {
        let entry = self.entries.entry(actor).or_default();
        if delta >= 0 {
            entry.0 = entry.0.saturating_add(delta as u64);
        } else {
            entry.1 = entry.1.saturating_add(delta.unsigned_abs());
        }
    }

    /// The join: each entry's maximum.
    pub fn merge(&mut self, other: &PnCounter) {
        for (&actor, &(p, n)) in &other.entries {
            let entry = self.entries.entry(actor).or_default();
            *entry = (entry.0.max(p), entry.1.max(n));
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.entries.len() * ENTRY_BYTES);
        out.push(FORMAT);
        for (actor, (p, n)) in &self.entries {
            for word in [actor, p, n] {
                out.extend_from_slice(&word.to_be_bytes());
            }
        }
        out
    }

    /// `None` for bytes that are not a counter (a value some client wrote
    /// under the counter's key through the object API).
    pub fn decode(raw: &[u8]) -> Option<PnCounter> {
        let (&format, body) = raw.split_first()?;
        if format != FORMAT || !body.len().is_multiple_of(ENTRY_BYTES) {
            return None;
        }
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        let entries =
            body.chunks_exact(ENTRY_BYTES).map(|e| (word(&e[..8]), (word(&e[8..16]), word(&e[16..])))).collect();
        Some(PnCounter { entries })
    }

    /// The merge of every value that is a counter; values that are not are
    /// ignored (Riak would fail the read; a counter key written through the
    /// object API is a client error, and ignoring it keeps the counter).
    pub fn merge_all<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> PnCounter {
        let mut merged = PnCounter::default();
        for counter in values.into_iter().filter_map(PnCounter::decode) {
            merged.merge(&counter);
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn increments_and_decrements_per_actor() {
        let mut c = PnCounter::default();
        c.add(1, 5);
        c.add(2, -3);
        c.add(1, -1);
        assert_eq!(c.value(), 1);
        assert_eq!(PnCounter::decode(&c.encode()), Some(c));
        assert_eq!(PnCounter::decode(b"text"), None);
        assert_eq!(PnCounter::decode(&[1, 0, 0]), None);
        assert_eq!(PnCounter::decode(&[]), None);
    }

    proptest! {
        /// Replicas that each add to their own entry and exchange states in
        /// any order converge on the sum of every increment.
        #[test]
        fn replicas_converge_on_the_sum(ops in proptest::collection::vec((0u64..3, -50i64..50, 0usize..3), 0..40)) {
            let mut replicas = vec![PnCounter::default(); 3];
            let mut total = 0i128;
            for (actor, delta, sync) in ops {
                replicas[actor as usize].add(actor, delta);
                total += delta as i128;
                let from = replicas[sync].clone();
                replicas[actor as usize].merge(&from);
                let back = replicas[actor as usize].clone();
                replicas[sync].merge(&back);
            }
            let mut all = PnCounter::default();
            for r in &replicas {
                all.merge(r);
            }
            prop_assert_eq!(all.value(), total);
            // Idempotent and commutative: merging again changes nothing.
            let mut again = all.clone();
            again.merge(&replicas[0]);
            prop_assert_eq!(again, all);
        }
    }
}
