//! Is another live process running under this node's id? A pure rule; time
//! is passed in.
//!
//! A node's id is created with its data directory (`storage::meta`), so a
//! directory copied to a second machine, or restored from a backup while the
//! original still runs, makes two live processes with one id. Only a member
//! writes its own record, so each process re-asserts its record above the
//! other's whenever gossip brings the other's back (`membership::Membership::
//! merge`): without this rule they take turns forever, and the cluster routes
//! that id's replica calls to whichever won last.
//!
//! The rule: a process knows every generation it wrote its record under (its
//! start generation, then one per re-assertion). A record for its id under
//! another generation that beats its own was written by someone else: either
//! an earlier run of this node (gossip still carries its record; after a
//! clock step back it can be above ours) or another live process. After we
//! re-assert above it, an earlier run can never beat us again, since it
//! writes nothing; a live process answers each re-assertion with a new,
//! higher generation of its own. So [`THRESHOLD`] foreign generations beating
//! ours within the window mean another live process. Stale records stay
//! below it: at most one or two earlier runs can be above a fresh start.

use std::collections::{BTreeSet, VecDeque};

use super::membership::Member;

/// Foreign generations that must beat ours within the window. One is what a
/// stale record of an earlier run does (two after two clock steps back);
/// three is a process that keeps writing.
pub const THRESHOLD: usize = 3;

/// The other process, as its latest record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub address: String,
    pub cluster_address: String,
    pub generation: u64,
}

#[derive(Debug, Clone)]
pub struct DuplicateDetector {
    window_ms: u64,
    /// Every generation this process wrote its record under.
    mine: BTreeSet<u64>,
    /// (foreign generation, when it beat ours), oldest first.
    beaten: VecDeque<(u64, u64)>,
    verdict: Option<Duplicate>,
}

impl DuplicateDetector {
    /// This process starts with its record at `start_generation`.
    pub fn new(start_generation: u64, window_ms: u64) -> DuplicateDetector {
        DuplicateDetector {
            window_ms,
            mine: BTreeSet::from([start_generation]),
            beaten: VecDeque::new(),
            verdict: None,
        }
    }

    /// This process (re-)wrote its record under `generation`.
    pub fn wrote(&mut self, generation: u64) {
        self.mine.insert(generation);
    }

    /// `theirs` replaced this node's record in a merge (it was above ours).
    /// Returns the verdict once another live process is certain; it stays.
    pub fn beaten_by(&mut self, theirs: &Member, now_ms: u64) -> Option<&Duplicate> {
        if self.verdict.is_none() && !self.mine.contains(&theirs.generation) {
            self.beaten.retain(|(generation, at)| {
                *generation != theirs.generation && now_ms.saturating_sub(*at) <= self.window_ms
            });
            self.beaten.push_back((theirs.generation, now_ms));
            if self.beaten.len() >= THRESHOLD {
                self.verdict = Some(Duplicate {
                    address: theirs.address.clone(),
                    cluster_address: theirs.cluster_address.clone(),
                    generation: theirs.generation,
                });
            }
        }
        self.verdict.as_ref()
    }

    pub fn verdict(&self) -> Option<&Duplicate> {
        self.verdict.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::key::NodeId;

    const WINDOW_MS: u64 = 60_000;

    fn record(address: &str, generation: u64, version: u64) -> Member {
        let mut m = Member::new(NodeId::new("n"), format!("{address}:h"), format!("{address}:c"), 8, generation);
        m.version = version;
        m
    }

    /// Plays the re-assertion war of two processes A and B with one id, as
    /// `Membership::merge` does it: the one beaten re-asserts at their
    /// generation + 1. Returns how many rounds until A's detector is sure.
    fn war(a: &mut DuplicateDetector, a_gen: u64, b_gen: u64, step_ms: u64) -> Option<usize> {
        let (mut ours, mut theirs) = (a_gen, b_gen);
        for round in 1..=10 {
            let now = round as u64 * step_ms;
            if theirs > ours {
                if a.beaten_by(&record("b", theirs, 3), now).is_some() {
                    return Some(round);
                }
                ours = theirs + 1;
                a.wrote(ours);
            }
            // B is beaten in turn and re-asserts above us.
            theirs = ours + 1;
        }
        None
    }

    #[test]
    fn a_second_live_process_is_found_within_a_few_rounds() {
        let mut a = DuplicateDetector::new(1_000, WINDOW_MS);
        assert_eq!(war(&mut a, 1_000, 1_005, 500), Some(THRESHOLD));
        let verdict = a.verdict().unwrap();
        assert_eq!((verdict.address.as_str(), verdict.cluster_address.as_str()), ("b:h", "b:c"));
        // The verdict stays, whatever comes after.
        assert!(a.beaten_by(&record("b", 5_000, 0), WINDOW_MS * 10).is_some());
    }

    #[test]
    fn a_process_started_earlier_finds_it_too() {
        // B started first: its generation is below A's, so A is beaten only
        // once B re-asserts (after B saw A's record).
        let mut a = DuplicateDetector::new(2_000, WINDOW_MS);
        assert_eq!(war(&mut a, 2_000, 1_500, 500), Some(THRESHOLD + 1));
    }

    #[test]
    fn a_restart_and_a_stale_record_of_an_earlier_run_are_not_duplicates() {
        // A restart: the new run starts above the old run's records, which
        // therefore never beat it. Our own records gossiped back do not count.
        let mut a = DuplicateDetector::new(10_000, WINDOW_MS);
        for now in 0..20 {
            assert!(a.beaten_by(&record("me", 10_000, now), now).is_none());
        }
        // After a clock step back: the earlier run's record (generation
        // 12_000) is above our start (10_000). It beats us once; we
        // re-assert above it; it can never beat us again, however many
        // peers hold copies of it at other versions.
        let mut a = DuplicateDetector::new(10_000, WINDOW_MS);
        assert!(a.beaten_by(&record("old", 12_000, 40), 100).is_none());
        a.wrote(12_001);
        for version in 41..60 {
            assert!(a.beaten_by(&record("old", 12_000, version), 200).is_none(), "the same run is one event");
        }
        // Even a second earlier run above us (two clock steps back) is not
        // enough.
        assert!(a.beaten_by(&record("older", 12_500, 7), 300).is_none());
        a.wrote(12_501);
        assert!(a.verdict().is_none());
    }

    #[test]
    fn events_older_than_the_window_are_forgotten() {
        let mut a = DuplicateDetector::new(1_000, WINDOW_MS);
        let mut generation = 2_000;
        for i in 0..10u64 {
            // One foreign generation per window and a half: never three at once.
            assert!(a.beaten_by(&record("b", generation, 0), i * WINDOW_MS * 3 / 2).is_none(), "event {i}");
            a.wrote(generation + 1);
            generation += 2;
        }
    }
}
