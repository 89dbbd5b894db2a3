//! Verdicts on a history. Pure: no processes, no clock.
//!
//! Causality from the client's side: a write or delete that carried the
//! context of a read *saw* the values that read returned, and so supersedes
//! them and everything they superseded (the closure). Then:
//! * lost write: an acknowledged write whose value is neither in the key's
//!   final state nor superseded by an operation that may have been applied
//!   (acknowledged or unknown) and that is itself accounted for;
//! * phantom: a value read that no client wrote (or whose write was refused);
//! * read-your-writes: with R + W > N, a client's successful read after its
//!   own acknowledged write returns that value or something that superseded
//!   it (not checked across faults that may lose a replica's data);
//! * siblings: final keys with more than one value (concurrent writes kept).

use std::collections::{BTreeMap, BTreeSet};

use super::history::{History, Kind, Op, Outcome};

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub ops: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    pub acknowledged_writes: usize,
    pub lost: Vec<String>,
    pub phantoms: Vec<String>,
    pub ryw_violations: Vec<String>,
    pub keys_with_siblings: usize,
    pub max_siblings: usize,
    /// Share of operations acknowledged while a fault was active.
    pub availability_during_faults: Option<f64>,
    /// Share of operations sent to majority-side nodes that were
    /// acknowledged while a minority was cut off.
    pub majority_availability: Option<f64>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.lost.is_empty() && self.phantoms.is_empty() && self.ryw_violations.is_empty()
    }
}

fn may_be_applied(op: &Op) -> bool {
    !matches!(op.outcome, Outcome::Failed)
}

/// The causal graph of a history, computed once: for each written value,
/// the values its writer directly superseded.
struct Causality<'a> {
    /// value -> the operation that wrote it.
    writers: BTreeMap<&'a str, &'a Op>,
    /// value -> values its write superseded directly: what the read before
    /// it returned and, after a tombstone, what the deletes of its key
    /// before it saw (the client cannot tell which delete made the
    /// tombstone, so all earlier ones count: a slight over-approximation).
    preds: BTreeMap<&'a str, Vec<&'a str>>,
    /// key -> (start, what it saw) of deletes that may have been applied.
    deletes: BTreeMap<&'a str, Vec<(std::time::Duration, &'a [String])>>,
}

impl<'a> Causality<'a> {
    fn new(history: &'a History) -> Causality<'a> {
        let mut deletes: BTreeMap<&str, Vec<(std::time::Duration, &[String])>> = BTreeMap::new();
        for op in history.ops.iter().filter(|op| may_be_applied(op)) {
            if let Kind::Delete { seen } = &op.kind {
                deletes.entry(op.key.as_str()).or_default().push((op.start, seen.as_slice()));
            }
        }
        let mut writers = BTreeMap::new();
        let mut preds = BTreeMap::new();
        for op in &history.ops {
            if let Kind::Write { value, seen, after_delete } = &op.kind {
                writers.insert(value.as_str(), op);
                let mut direct: Vec<&str> = seen.iter().map(String::as_str).collect();
                if *after_delete {
                    for (start, saw) in deletes.get(op.key.as_str()).into_iter().flatten() {
                        if *start < op.start {
                            direct.extend(saw.iter().map(String::as_str));
                        }
                    }
                }
                preds.insert(value.as_str(), direct);
            }
        }
        Causality { writers, preds, deletes }
    }

    /// Everything `from` supersede, transitively (not `from` themselves
    /// unless reachable).
    fn closure(&self, from: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<&str> = from.into_iter().collect();
        while let Some(v) = stack.pop() {
            if out.insert(v)
                && let Some(direct) = self.preds.get(v)
            {
                stack.extend(direct.iter().copied());
            }
        }
        out
    }
}

pub fn check(history: &History) -> Report {
    let causality = Causality::new(history);
    let mut report = Report { ops: history.ops.len(), ..Report::default() };
    for op in &history.ops {
        match op.outcome {
            Outcome::Ok(_) => report.acknowledged += 1,
            Outcome::Unknown => report.unknown += 1,
            Outcome::Failed => {}
        }
    }

    // Phantoms: every value ever read was written by a write that may have
    // been applied.
    let read_values = history
        .ops
        .iter()
        .filter(|op| op.kind == Kind::Read)
        .filter_map(|op| match &op.outcome {
            Outcome::Ok(values) => Some(values),
            _ => None,
        })
        .chain(history.final_state.values());
    let mut phantoms = BTreeSet::new();
    for v in read_values.flatten() {
        if !causality.writers.get(v.as_str()).is_some_and(|w| may_be_applied(w)) {
            phantoms.insert(v.clone());
        }
    }
    report.phantoms = phantoms.into_iter().collect();

    // Lost writes: walk back from what survived. A value is explained if it
    // is in the final state or superseded by an explained value, or seen by
    // a delete that may have been applied (its effect is the absence).
    let survivors = history.final_state.values().flatten().map(String::as_str);
    let deleted = causality.deletes.values().flatten().flat_map(|(_, saw)| saw.iter().map(String::as_str));
    let explained = causality.closure(survivors.chain(deleted));
    for op in &history.ops {
        if let (Kind::Write { value, .. }, Outcome::Ok(_)) = (&op.kind, &op.outcome) {
            report.acknowledged_writes += 1;
            if !explained.contains(value.as_str()) {
                report.lost.push(format!("{} on {} (client {}, node {})", value, op.key, op.client, op.node));
            }
        }
    }

    report.ryw_violations = read_your_writes(history, &causality);

    for values in history.final_state.values() {
        if values.len() > 1 {
            report.keys_with_siblings += 1;
        }
        report.max_siblings = report.max_siblings.max(values.len());
    }
    availability(history, &mut report);
    report
}

fn read_your_writes(history: &History, causality: &Causality) -> Vec<String> {
    // Per (client, key), in start order: only a client's own reads of the
    // same key are held to its writes.
    let mut groups: BTreeMap<(usize, &str), Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        groups.entry((op.client, op.key.as_str())).or_default().push(op);
    }
    // value -> everything it supersedes, including itself.
    let mut covers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut violations = Vec::new();
    for ops in groups.values() {
        for (i, w) in ops.iter().enumerate() {
            let (Kind::Write { value, .. }, Outcome::Ok(_)) = (&w.kind, &w.outcome) else { continue };
            // Deletes of this key that saw the write may have removed it,
            // whatever else (concurrent siblings) later reads still find.
            let deleted_from = causality
                .deletes
                .get(w.key.as_str())
                .into_iter()
                .flatten()
                .filter(|(_, saw)| causality.closure(saw.iter().map(String::as_str)).contains(value.as_str()))
                .map(|(start, _)| *start)
                .min();
            for r in &ops[i + 1..] {
                let Outcome::Ok(values) = &r.outcome else { continue };
                if r.kind != Kind::Read || r.start < w.end {
                    continue;
                }
                if history.faults.iter().any(|f| f.loses_data && f.start < r.end && f.end > w.start) {
                    continue;
                }
                if deleted_from.is_some_and(|d| d < r.end) {
                    continue;
                }
                let seen = values.iter().any(|v| {
                    covers.entry(v.as_str()).or_insert_with(|| causality.closure([v.as_str()])).contains(value.as_str())
                });
                if !seen {
                    violations.push(format!(
                        "client {} wrote {} on {} at {:?}, then read {:?} at {:?}",
                        w.client, value, w.key, w.end, values, r.end
                    ));
                }
            }
        }
    }
    violations
}

fn availability(history: &History, report: &mut Report) {
    let during = |op: &Op| history.faults.iter().any(|f| op.start < f.end && op.end > f.start);
    let share = |ops: Vec<&Op>| {
        (!ops.is_empty())
            .then(|| ops.iter().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count() as f64 / ops.len() as f64)
    };
    report.availability_during_faults = share(history.ops.iter().filter(|op| during(op)).collect());
    let majority = history
        .ops
        .iter()
        .filter(|op| {
            history.faults.iter().any(|f| {
                !f.minority.is_empty() && !f.minority.contains(&op.node) && op.start >= f.start && op.end <= f.end
            })
        })
        .collect();
    report.majority_availability = share(majority);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::history::FaultWindow;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn op(client: usize, key: &str, kind: Kind, at: u64, outcome: Outcome) -> Op {
        Op { client, node: 0, key: key.into(), kind, start: ms(at), end: ms(at + 1), outcome }
    }

    fn write(client: usize, key: &str, value: &str, seen: &[&str], at: u64, outcome: Outcome) -> Op {
        let kind = Kind::Write {
            value: value.into(),
            seen: seen.iter().map(|s| s.to_string()).collect(),
            after_delete: false,
        };
        op(client, key, kind, at, outcome)
    }

    fn read(client: usize, key: &str, values: &[&str], at: u64) -> Op {
        op(client, key, Kind::Read, at, Outcome::Ok(values.iter().map(|s| s.to_string()).collect()))
    }

    fn ok() -> Outcome {
        Outcome::Ok(vec![])
    }

    fn history(ops: Vec<Op>, finals: &[(&str, &[&str])]) -> History {
        History {
            ops,
            faults: vec![],
            final_state: finals
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        }
    }

    #[test]
    fn a_clean_history_is_valid() {
        let h = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                read(0, "k", &["a"], 10),
                write(0, "k", "b", &["a"], 20, ok()),
                read(0, "k", &["b"], 30),
            ],
            &[("k", &["b"])],
        );
        let r = check(&h);
        assert!(r.valid(), "{r:?}");
        assert_eq!((r.acknowledged_writes, r.keys_with_siblings), (2, 0));
    }

    #[test]
    fn an_acknowledged_write_missing_at_the_end_is_lost() {
        let h = history(vec![write(0, "k", "a", &[], 0, ok()), write(1, "k", "b", &[], 5, ok())], &[("k", &["b"])]);
        let r = check(&h);
        assert_eq!(r.lost.len(), 1, "{r:?}");
        assert!(r.lost[0].starts_with("a on k"));
    }

    #[test]
    fn superseded_writes_are_not_lost_even_transitively() {
        let h = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                write(1, "k", "b", &["a"], 5, ok()),
                write(2, "k", "c", &["b"], 9, Outcome::Unknown),
            ],
            &[("k", &["c"])],
        );
        assert!(check(&h).valid());
    }

    #[test]
    fn a_delete_explains_what_it_saw() {
        let h = history(
            vec![write(0, "k", "a", &[], 0, ok()), op(1, "k", Kind::Delete { seen: vec!["a".into()] }, 5, ok())],
            &[("k", &[])],
        );
        assert!(check(&h).valid());
    }

    #[test]
    fn a_refused_write_supersedes_nothing_and_cannot_be_read() {
        let h = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                write(1, "k", "b", &["a"], 5, Outcome::Failed),
                read(2, "k", &["b"], 9),
            ],
            &[("k", &[])],
        );
        let r = check(&h);
        assert_eq!(r.lost.len(), 1, "{r:?}");
        assert_eq!(r.phantoms, vec!["b".to_string()]);
    }

    #[test]
    fn unknown_writes_may_or_may_not_be_there() {
        let with = history(vec![write(0, "k", "a", &[], 0, Outcome::Unknown)], &[("k", &["a"])]);
        let without = history(vec![write(0, "k", "a", &[], 0, Outcome::Unknown)], &[("k", &[])]);
        assert!(check(&with).valid() && check(&without).valid());
    }

    #[test]
    fn values_nobody_wrote_are_phantoms() {
        let h = history(vec![read(0, "k", &["zzz"], 0)], &[("k", &["yyy"])]);
        assert_eq!(check(&h).phantoms, vec!["yyy".to_string(), "zzz".to_string()]);
    }

    #[test]
    fn concurrent_writes_must_all_survive_as_siblings() {
        let kept =
            history(vec![write(0, "k", "a", &[], 0, ok()), write(1, "k", "b", &[], 0, ok())], &[("k", &["a", "b"])]);
        let r = check(&kept);
        assert!(r.valid());
        assert_eq!((r.keys_with_siblings, r.max_siblings), (1, 2));
        // Last-writer-wins would drop one: that is a lost write.
        let lww = history(vec![write(0, "k", "a", &[], 0, ok()), write(1, "k", "b", &[], 0, ok())], &[("k", &["b"])]);
        assert_eq!(check(&lww).lost.len(), 1);
    }

    #[test]
    fn reading_around_ones_own_write_is_a_violation() {
        let stale = history(
            vec![write(0, "k", "a", &[], 0, ok()), write(0, "k", "b", &["a"], 10, ok()), read(0, "k", &["a"], 20)],
            &[("k", &["b"])],
        );
        assert_eq!(check(&stale).ryw_violations.len(), 1);
        // Another client's read is not held to it; a superseding value is fine.
        let fine = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                read(1, "k", &[], 5),
                write(1, "k", "b", &["a"], 10, ok()),
                read(0, "k", &["b"], 20),
            ],
            &[("k", &["b"])],
        );
        assert!(check(&fine).valid(), "{:?}", check(&fine));
        // Not found after one's write is fine only if a delete saw it.
        let gone = history(vec![write(0, "k", "a", &[], 0, ok()), read(0, "k", &[], 20)], &[("k", &["a"])]);
        assert_eq!(check(&gone).ryw_violations.len(), 1);
    }

    #[test]
    fn a_delete_that_saw_ones_write_excuses_its_absence_even_beside_siblings() {
        let h = history(
            vec![
                write(1, "k", "x", &[], 0, ok()),
                write(0, "k", "a", &[], 5, ok()),
                op(0, "k", Kind::Delete { seen: vec!["a".into()] }, 10, ok()),
                // x was concurrent with the delete's read: it stays.
                read(0, "k", &["x"], 20),
            ],
            &[("k", &["x"])],
        );
        let r = check(&h);
        assert!(r.valid(), "{r:?}");
        // Without the delete the same read is a violation.
        let h = history(
            vec![write(1, "k", "x", &[], 0, ok()), write(0, "k", "a", &[], 5, ok()), read(0, "k", &["x"], 20)],
            &[("k", &["x", "a"])],
        );
        assert_eq!(check(&h).ryw_violations.len(), 1);
    }

    #[test]
    fn a_write_after_a_tombstone_supersedes_what_the_delete_saw() {
        let tomb =
            |v: &str, at| op(0, "k", Kind::Write { value: v.into(), seen: vec![], after_delete: true }, at, ok());
        let h = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                op(1, "k", Kind::Delete { seen: vec!["a".into()] }, 5, ok()),
                tomb("b", 10),
                read(0, "k", &["b"], 20),
            ],
            &[("k", &["b"])],
        );
        assert!(check(&h).valid(), "{:?}", check(&h));
    }

    #[test]
    fn faults_that_lose_a_disk_excuse_read_your_writes_but_not_lost_writes() {
        let mut h = history(vec![write(0, "k", "a", &[], 0, ok()), read(0, "k", &[], 20)], &[("k", &[])]);
        h.faults.push(FaultWindow {
            name: "lost disk".into(),
            start: ms(5),
            end: ms(15),
            loses_data: true,
            minority: vec![],
        });
        let r = check(&h);
        assert!(r.ryw_violations.is_empty());
        assert_eq!(r.lost.len(), 1);
    }

    #[test]
    fn availability_counts_majority_side_operations_during_a_partition() {
        let mut h = history(
            vec![
                Op { node: 0, ..write(0, "k", "a", &[], 10, ok()) },
                Op { node: 1, ..write(1, "k", "b", &[], 10, Outcome::Unknown) },
                Op { node: 2, ..write(2, "k", "c", &[], 10, ok()) },
            ],
            &[("k", &["a", "c"])],
        );
        h.faults.push(FaultWindow {
            name: "cut 1".into(),
            start: ms(0),
            end: ms(100),
            loses_data: false,
            minority: vec![1],
        });
        let r = check(&h);
        assert_eq!(r.majority_availability, Some(1.0));
        assert_eq!(r.availability_during_faults, Some(2.0 / 3.0));
    }
}
