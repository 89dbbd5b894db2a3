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
//!   it (excused as stale reads are, below);
//! * stale read: the same across clients: a successful read by any client
//!   that started after a write's acknowledgement returns that value or
//!   something that superseded it, or a delete that saw it may have run;
//! * resurrection: a value that an acknowledged write (through its context)
//!   or delete superseded is read again by a read that started after that
//!   acknowledgement, or is in the final state;
//! * siblings: final keys with more than one value (concurrent writes kept).
//!
//! Sloppy quorum: a write acknowledged through a fallback (or a read that
//! counted one) no longer meets R + W > N among the key's primaries, so a
//! stale read where a fallback took part, in the read or in the write it
//! missed (`X-VinzClortho-Fallbacks`), is reported apart: allowed, counted
//! and printed; read-your-writes likewise. A stale read where none did is
//! judged as before. A read that returns a value an operation superseded,
//! where a fallback took part in either, is such a stale read too (not a
//! resurrection); a superseded value in the final state never is.
//!
//! Stale reads and resurrections are reported by kind. *Excused* (counted,
//! allowed): a fault that may lose a replica's data was active between the
//! operation's start and the read's end, or a membership change was under
//! way both when the operation was acknowledged and when the read began
//! (a coordinator that has not yet heard of a move writes to the current
//! holders only; see README "Moving data"). Everything else fails the run:
//! in particular, a write acknowledged *before* a move began must stay
//! readable throughout it, which is what the move protocol guarantees. A
//! resurrection in the final state is never excused (a data-losing fault
//! can make a replica forget a write, never bring back what a context
//! superseded, since the superseding clock covers it).

use std::collections::{BTreeMap, BTreeSet};

use super::history::{FaultWindow, History, Kind, Op, Outcome};

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub ops: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    pub acknowledged_writes: usize,
    pub lost: Vec<String>,
    pub phantoms: Vec<String>,
    pub ryw_violations: Vec<String>,
    /// Stale reads no fault or membership change explains: a bug.
    pub stale_reads: Vec<String>,
    /// Stale reads while a data-losing fault or a membership change was
    /// active: allowed, counted.
    pub stale_reads_excused: Vec<String>,
    /// Stale reads (and read-your-writes misses) where a fallback took part
    /// in the read or in the write it missed: allowed under sloppy quorum,
    /// counted.
    pub stale_reads_fallback: Vec<String>,
    /// Superseded or deleted values read again (or in the final state)
    /// that nothing explains: a bug.
    pub resurrections: Vec<String>,
    /// Resurrections while a data-losing fault or a membership change was
    /// active: allowed, counted.
    pub resurrections_excused: Vec<String>,
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
        self.lost.is_empty()
            && self.phantoms.is_empty()
            && self.ryw_violations.is_empty()
            && self.stale_reads.is_empty()
            && self.resurrections.is_empty()
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

    let mut keys: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        keys.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, ops) in keys {
        let index = KeyIndex::new(ops, &causality);
        index.stale_reads(history, &mut report);
        index.resurrections(history, key, &mut report);
    }

    for values in history.final_state.values() {
        if values.len() > 1 {
            report.keys_with_siblings += 1;
        }
        report.max_siblings = report.max_siblings.max(values.len());
    }
    availability(history, &mut report);
    report
}

/// The fault window, if any, that excuses `read` for not reflecting `op`
/// (a write it missed, or a superseding operation it read around): a fault
/// that may lose a replica's data active anywhere from the operation's
/// start to the read's end, or a membership change under way both when the
/// operation was acknowledged and when the read began.
/// Data loss is named first when both apply: it is the likelier cause.
fn excuse<'h>(faults: &'h [FaultWindow], op: &Op, read: &Op) -> Option<&'h FaultWindow> {
    let lost = faults.iter().filter(|f| f.loses_data && f.start < read.end && f.end > op.start);
    let moving = faults.iter().filter(|f| f.membership && op.end > f.start && read.start < f.end);
    lost.chain(moving).next()
}

/// A set of a key's writes, by their position in start order.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn or(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// Members of `self` in neither `a` nor `b`.
    fn minus(&self, a: &Bits, b: &Bits) -> Vec<usize> {
        let mut out = Vec::new();
        for (w, ((x, y), z)) in self.0.iter().zip(&a.0).zip(&b.0).enumerate() {
            let mut left = x & !y & !z;
            while left != 0 {
                out.push(w * 64 + left.trailing_zeros() as usize);
                left &= left - 1;
            }
        }
        out
    }
}

/// `writes` (in start order) reordered so that every write comes after the
/// writes it superseded, keeping start order wherever the graph allows.
/// An edge that would close a cycle (possible only through the
/// over-approximation after tombstones) is ignored.
fn topological<'a>(writes: impl Iterator<Item = &'a Op>, causality: &Causality<'a>) -> Vec<&'a Op> {
    let writes: Vec<&Op> = writes.collect();
    let index: BTreeMap<&str, usize> = writes
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match &op.kind {
            Kind::Write { value, .. } => Some((value.as_str(), i)),
            _ => None,
        })
        .collect();
    let preds = |i: usize| -> Vec<usize> {
        let Kind::Write { value, .. } = &writes[i].kind else { return vec![] };
        causality.preds.get(value.as_str()).into_iter().flatten().filter_map(|v| index.get(v).copied()).collect()
    };
    // 0: not visited, 1: on the stack, 2: placed.
    let mut state = vec![0u8; writes.len()];
    let mut order = Vec::with_capacity(writes.len());
    for root in 0..writes.len() {
        let mut stack = vec![(root, false)];
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                state[i] = 2;
                order.push(writes[i]);
                continue;
            }
            if state[i] != 0 {
                continue;
            }
            state[i] = 1;
            stack.push((i, true));
            let mut ps = preds(i);
            // Visit earlier-started predecessors first.
            ps.sort_unstable_by(|a, b| b.cmp(a));
            stack.extend(ps.into_iter().filter(|&p| state[p] == 0).map(|p| (p, false)));
        }
    }
    order
}

/// One key's writes and what each covers, as bit sets: a long run has
/// thousands of writes per key, and a pairwise walk of the causal graph
/// per read would not finish.
struct KeyIndex<'a> {
    ops: Vec<&'a Op>,
    /// The key's writes in a topological order of the causal graph: a
    /// write's predecessors were read before it started, so they started
    /// no later; among writes that started at the same instant (the
    /// simulator's clock counts whole milliseconds) predecessors go first.
    writes: Vec<&'a Op>,
    position: BTreeMap<&'a str, usize>,
    /// Each write and everything it supersedes, through the causal graph
    /// (with its over-approximation after tombstones): what a read of it
    /// reflects.
    covers: Vec<Bits>,
    /// The same through what writers' contexts certainly covered (the
    /// values their read returned), for resurrections, which must not be
    /// over-approximated.
    exact: Vec<Bits>,
}

impl<'a> KeyIndex<'a> {
    fn new(mut ops: Vec<&'a Op>, causality: &Causality<'a>) -> KeyIndex<'a> {
        ops.sort_by_key(|op| op.start);
        let writes = topological(ops.iter().copied().filter(|op| matches!(op.kind, Kind::Write { .. })), causality);
        let position: BTreeMap<&str, usize> = writes
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match &op.kind {
                Kind::Write { value, .. } => Some((value.as_str(), i)),
                _ => None,
            })
            .collect();
        let n = writes.len();
        let (mut covers, mut exact) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (i, op) in writes.iter().enumerate() {
            let Kind::Write { value, seen, .. } = &op.kind else { unreachable!("writes only") };
            let (mut c, mut e) = (Bits::new(n), Bits::new(n));
            c.set(i);
            e.set(i);
            let earlier = |v: &str| position.get(v).copied().filter(|&p| p < i);
            for p in causality.preds.get(value.as_str()).into_iter().flatten().filter_map(|v| earlier(v)) {
                c.or(&covers[p]);
            }
            for p in seen.iter().filter_map(|v| earlier(v)) {
                e.or(&exact[p]);
            }
            covers.push(c);
            exact.push(e);
        }
        KeyIndex { ops, writes, position, covers, exact }
    }

    /// The union of `sets` over the positions of `values` (unknown values,
    /// phantoms, are reported elsewhere).
    fn union(&self, sets: &[Bits], values: &[String]) -> Bits {
        let mut out = Bits::new(self.writes.len());
        for p in values.iter().filter_map(|v| self.position.get(v.as_str())) {
            out.or(&sets[*p]);
        }
        out
    }

    fn reads(&self) -> impl Iterator<Item = (&'a Op, &'a [String])> + '_ {
        self.ops.iter().filter(|op| op.kind == Kind::Read).filter_map(|op| match &op.outcome {
            Outcome::Ok(values) => Some((*op, values.as_slice())),
            _ => None,
        })
    }

    /// Every successful read reflects every write acknowledged before it
    /// began, unless a delete that saw the write may have run by its end;
    /// the reader's own writes among those it missed are also
    /// read-your-writes violations.
    fn stale_reads(&self, history: &History, report: &mut Report) {
        let n = self.writes.len();
        let mut acked: Vec<usize> = (0..n).filter(|&i| matches!(self.writes[i].outcome, Outcome::Ok(_))).collect();
        acked.sort_by_key(|&i| self.writes[i].end);
        // Deletes that may have run, in start order, with the running union
        // of what they saw: prefix[j] = seen by the first j.
        let deletes: Vec<&Op> = self
            .ops
            .iter()
            .copied()
            .filter(|op| matches!(op.kind, Kind::Delete { .. }) && may_be_applied(op))
            .collect();
        let mut prefix = vec![Bits::new(n)];
        for d in &deletes {
            let Kind::Delete { seen } = &d.kind else { unreachable!("deletes only") };
            let mut next = prefix.last().expect("starts with one").clone();
            next.or(&self.union(&self.covers, seen));
            prefix.push(next);
        }
        let (mut before, mut next) = (Bits::new(n), 0);
        for (read, values) in self.reads() {
            while next < acked.len() && self.writes[acked[next]].end < read.start {
                before.set(acked[next]);
                next += 1;
            }
            let covered = self.union(&self.covers, values);
            let deleted = &prefix[deletes.partition_point(|d| d.start < read.end)];
            let missed = before.minus(&covered, deleted);
            let blame = |w: &Op| excuse(&history.faults, w, read);
            let describe = |w: &Op| {
                let Kind::Write { value, .. } = &w.kind else { unreachable!("writes only") };
                format!(
                    "client {} read {:?} on {} at {:?}..{:?} (node {}), but {} was acknowledged at {:?} (client {}, node {})",
                    read.client, values, read.key, read.start, read.end, read.node, value, w.end, w.client, w.node
                )
            };
            // A fallback in the read or in the write it missed: sloppy
            // quorum's trade, not a bug (see the module comment).
            let sloppy = |w: &Op| read.fallbacks > 0 || w.fallbacks > 0;
            // Read-your-writes: each of the reader's own writes it missed.
            for w in missed.iter().map(|&i| self.writes[i]).filter(|w| w.client == read.client) {
                if blame(w).is_none() && !sloppy(w) {
                    let Kind::Write { value, .. } = &w.kind else { unreachable!("writes only") };
                    report.ryw_violations.push(format!(
                        "client {} wrote {} on {} at {:?}, then read {:?} at {:?}",
                        w.client, value, w.key, w.end, values, read.end
                    ));
                }
            }
            // The latest missed write names the read; one unexcused miss
            // makes it a bug.
            let missed: Vec<&Op> = missed.iter().rev().map(|&i| self.writes[i]).collect();
            if let Some(w) = missed.iter().find(|w| blame(w).is_none() && !sloppy(w)) {
                report.stale_reads.push(describe(w));
            } else if let Some(w) = missed.iter().find(|w| blame(w).is_none()) {
                let (r, wf) = (read.fallbacks, w.fallbacks);
                report.stale_reads_fallback.push(format!("{} (fallbacks: read {r}, write {wf})", describe(w)));
            } else if let Some(w) = missed.first() {
                let during = blame(w).map(|f| f.name.as_str()).unwrap_or_default();
                report.stale_reads_excused.push(format!("{} (during {during})", describe(w)));
            }
        }
    }

    /// What each acknowledged operation certainly superseded: for a write,
    /// what its context's read returned (and their past); for a delete,
    /// what it saw.
    fn superseded_by(&self, op: &Op) -> Option<Bits> {
        if !matches!(op.outcome, Outcome::Ok(_)) {
            return None;
        }
        match &op.kind {
            Kind::Write { seen, .. } | Kind::Delete { seen } => Some(self.union(&self.exact, seen)),
            Kind::Read => None,
        }
    }

    /// No read that began after an acknowledged operation superseded a
    /// value returns that value; no such value is in the final state.
    fn resurrections(&self, history: &History, key: &str, report: &mut Report) {
        let mut supersede: Vec<(&Op, Bits)> =
            self.ops.iter().filter_map(|op| self.superseded_by(op).map(|b| (*op, b))).collect();
        supersede.sort_by_key(|(op, _)| op.end);
        let (mut gone, mut next) = (Bits::new(self.writes.len()), 0);
        for (read, values) in self.reads() {
            while next < supersede.len() && supersede[next].0.end < read.start {
                gone.or(&supersede[next].1);
                next += 1;
            }
            for value in values {
                let Some(&p) = self.position.get(value.as_str()).filter(|p| gone.get(**p)) else { continue };
                let by: Vec<&Op> = supersede[..next].iter().filter(|(_, b)| b.get(p)).map(|(op, _)| *op).collect();
                let describe = |s: &Op| {
                    format!(
                        "client {} read {} on {} at {:?}..{:?} (node {}), superseded by client {}'s {} acknowledged at {:?}",
                        read.client,
                        value,
                        read.key,
                        read.start,
                        read.end,
                        read.node,
                        s.client,
                        if matches!(s.kind, Kind::Delete { .. }) { "delete" } else { "write" },
                        s.end
                    )
                };
                // A superseded value read while the superseding operation
                // (or this read) went through a fallback is a stale read
                // under sloppy quorum, not a resurrection.
                let sloppy = |s: &Op| read.fallbacks > 0 || s.fallbacks > 0;
                if let Some(s) = by.iter().find(|s| excuse(&history.faults, s, read).is_none() && !sloppy(s)) {
                    report.resurrections.push(describe(s));
                } else if let Some(s) = by.iter().find(|s| excuse(&history.faults, s, read).is_none()) {
                    let (r, sf) = (read.fallbacks, s.fallbacks);
                    report
                        .stale_reads_fallback
                        .push(format!("{} (fallbacks: read {r}, superseding {sf})", describe(s)));
                } else if let Some(s) = by.first() {
                    let during = excuse(&history.faults, s, read).map(|f| f.name.as_str()).unwrap_or_default();
                    report.resurrections_excused.push(format!("{} (during {during})", describe(s)));
                }
            }
        }
        for value in history.final_state.get(key).into_iter().flatten() {
            let Some(&p) = self.position.get(value.as_str()) else { continue };
            if let Some((s, _)) = supersede.iter().find(|(_, b)| b.get(p)) {
                report.resurrections.push(format!(
                    "{value} on {key} is in the final state, though client {} superseded it (acknowledged at {:?})",
                    s.client, s.end
                ));
            }
        }
    }
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
        Op { client, node: 0, key: key.into(), kind, start: ms(at), end: ms(at + 1), outcome, fallbacks: 0 }
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
        // Another client's read concurrent with the write need not see it
        // (one that starts after its acknowledgement must: stale reads);
        // a superseding value is fine.
        let fine = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                read(1, "k", &[], 0),
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
            membership: false,
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
            membership: false,
            minority: vec![1],
        });
        let r = check(&h);
        assert_eq!(r.majority_availability, Some(1.0));
        assert_eq!(r.availability_during_faults, Some(2.0 / 3.0));
    }

    fn window(name: &str, start: u64, end: u64, loses_data: bool, membership: bool) -> FaultWindow {
        FaultWindow { name: name.into(), start: ms(start), end: ms(end), loses_data, membership, minority: vec![] }
    }

    /// The simulator's clock counts whole milliseconds: a write can start
    /// at the same instant as the write it supersedes (a read saw the value
    /// before its writer had its acknowledgement). It still covers it.
    #[test]
    fn a_write_that_started_with_the_one_it_superseded_still_covers_it() {
        let ops =
            vec![write(1, "k", "b", &["a"], 10, ok()), write(0, "k", "a", &[], 10, ok()), read(2, "k", &["b"], 20)];
        let r = check(&history(ops, &[("k", &["b"])]));
        assert!(r.valid(), "{r:?}");
    }

    #[test]
    fn a_read_that_misses_another_clients_acknowledged_write_is_stale() {
        let stale = history(vec![write(0, "k", "a", &[], 0, ok()), read(1, "k", &[], 20)], &[("k", &["a"])]);
        let r = check(&stale);
        assert_eq!(r.stale_reads.len(), 1, "{r:?}");
        assert!(!r.valid());
        // Missing the newer of two acknowledged writes is stale too.
        let older = history(
            vec![write(0, "k", "a", &[], 0, ok()), write(0, "k", "b", &["a"], 10, ok()), read(1, "k", &["a"], 20)],
            &[("k", &["b"])],
        );
        assert_eq!(check(&older).stale_reads.len(), 1);
    }

    #[test]
    fn a_stale_read_where_a_fallback_took_part_is_counted_apart() {
        let stale = |write_fallbacks, read_fallbacks| {
            let w = Op { fallbacks: write_fallbacks, ..write(0, "k", "a", &[], 0, ok()) };
            let r = Op { fallbacks: read_fallbacks, ..read(1, "k", &[], 20) };
            let own = Op { fallbacks: read_fallbacks, ..read(0, "k", &[], 30) };
            check(&history(vec![w, r, own], &[("k", &["a"])]))
        };
        // No fallback anywhere: a bug, as before.
        let r = stale(0, 0);
        assert_eq!((r.stale_reads.len(), r.stale_reads_fallback.len(), r.ryw_violations.len()), (2, 0, 1), "{r:?}");
        assert!(!r.valid());
        // The write went through a fallback, or the reads counted one.
        for (w, rd) in [(1, 0), (0, 1), (2, 2)] {
            let r = stale(w, rd);
            assert_eq!((r.stale_reads.len(), r.stale_reads_fallback.len(), r.ryw_violations.len()), (0, 2, 0), "{r:?}");
            assert!(r.valid(), "{r:?}");
            assert!(r.stale_reads_fallback[0].contains("fallbacks: read"), "{r:?}");
        }
    }

    #[test]
    fn an_old_value_read_after_a_fallback_write_superseded_it_is_a_stale_read_not_a_resurrection() {
        let old = write(0, "k", "a", &[], 0, ok());
        let read_a = read(0, "k", &["a"], 5);
        let newer = |fallbacks| Op { fallbacks, ..write(0, "k", "b", &["a"], 10, ok()) };
        let later = read(1, "k", &["a"], 20);
        let r = check(&history(vec![old.clone(), read_a.clone(), newer(0), later.clone()], &[("k", &["b"])]));
        assert_eq!(r.resurrections.len(), 1, "{r:?}");
        let r = check(&history(vec![old, read_a, newer(1), later], &[("k", &["b"])]));
        assert!(r.resurrections.is_empty(), "{r:?}");
        assert!(r.stale_reads_fallback.iter().any(|s| s.contains("superseding 1")), "{r:?}");
        assert!(r.valid(), "{r:?}");
    }

    #[test]
    fn reads_that_reflect_or_overlap_a_write_or_follow_its_delete_are_not_stale() {
        let h = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                // Overlaps b's write (which ends at 11): may miss it.
                read(2, "k", &["a"], 10),
                write(1, "k", "b", &["a"], 10, ok()),
                // c superseded b, so reading c reflects b and a.
                write(2, "k", "c", &["b"], 20, ok()),
                read(3, "k", &["c"], 30),
                // Siblings: both concurrent writes are reflected.
                write(4, "s", "x", &[], 0, ok()),
                write(5, "s", "y", &[], 0, ok()),
                read(3, "s", &["x", "y"], 10),
                // A delete that saw c may have removed it.
                op(1, "k", Kind::Delete { seen: vec!["c".into()] }, 40, ok()),
                read(0, "k", &[], 50),
                // An unknown write need not be there.
                write(1, "u", "m", &[], 0, Outcome::Unknown),
                read(0, "u", &[], 10),
            ],
            &[("k", &[]), ("s", &["x", "y"]), ("u", &[])],
        );
        let r = check(&h);
        assert!(r.valid(), "{r:?}");
        assert!(r.stale_reads_excused.is_empty(), "{r:?}");
    }

    #[test]
    fn stale_reads_are_excused_by_lost_data_and_by_moves_only_for_writes_acknowledged_during_them() {
        let stale = || history(vec![write(0, "k", "a", &[], 10, ok()), read(1, "k", &[], 20)], &[("k", &["a"])]);
        let with = |w: FaultWindow| {
            let mut h = stale();
            h.faults.push(w);
            check(&h)
        };
        // A replica lost its data between the write and the read.
        let r = with(window("restore 1", 15, 16, true, false));
        assert_eq!((r.stale_reads.len(), r.stale_reads_excused.len()), (0, 1), "{r:?}");
        assert!(r.valid());
        // A move under way when the write was acknowledged and the read began.
        let r = with(window("claim 3 0", 5, 25, false, true));
        assert_eq!((r.stale_reads.len(), r.stale_reads_excused.len()), (0, 1), "{r:?}");
        // A write acknowledged before the move began must stay readable.
        let r = with(window("claim 3 0", 12, 25, false, true));
        assert_eq!((r.stale_reads.len(), r.stale_reads_excused.len()), (1, 0), "{r:?}");
        // ...and so must one read after the move settled.
        let r = with(window("claim 3 0", 5, 15, false, true));
        assert_eq!((r.stale_reads.len(), r.stale_reads_excused.len()), (1, 0), "{r:?}");
        // A crash loses nothing: no excuse.
        let r = with(window("crash 1", 12, 18, false, false));
        assert_eq!(r.stale_reads.len(), 1, "{r:?}");
    }

    #[test]
    fn a_superseded_or_deleted_value_read_again_is_a_resurrection() {
        let superseded = history(
            vec![write(0, "k", "a", &[], 0, ok()), write(1, "k", "b", &["a"], 10, ok()), read(2, "k", &["a"], 20)],
            &[("k", &["b"])],
        );
        let r = check(&superseded);
        assert_eq!(r.resurrections.len(), 1, "{r:?}");
        assert!(!r.valid());
        let deleted = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                op(1, "k", Kind::Delete { seen: vec!["a".into()] }, 10, ok()),
                read(2, "k", &["a"], 20),
            ],
            &[("k", &[])],
        );
        assert_eq!(check(&deleted).resurrections.len(), 1);
        // Back in the final state, whatever the faults: never excused.
        let mut back = history(
            vec![write(0, "k", "a", &[], 0, ok()), write(1, "k", "b", &["a"], 10, ok())],
            &[("k", &["a", "b"])],
        );
        back.faults.push(window("restore 1", 0, 100, true, true));
        let r = check(&back);
        assert_eq!(r.resurrections.len(), 1, "{r:?}");
    }

    #[test]
    fn reading_a_value_before_it_was_superseded_or_beside_a_concurrent_one_is_fine() {
        let tomb =
            |v: &str, at| op(0, "k", Kind::Write { value: v.into(), seen: vec![], after_delete: true }, at, ok());
        let h = history(
            vec![
                write(0, "k", "a", &[], 0, ok()),
                // Overlaps b's acknowledgement (at 11).
                read(2, "k", &["a"], 10),
                write(1, "k", "b", &["a"], 10, ok()),
                // An unacknowledged supersession may not have happened.
                write(0, "s", "x", &[], 0, ok()),
                write(1, "s", "y", &["x"], 10, Outcome::Unknown),
                read(2, "s", &["x"], 20),
                // A write after a tombstone supersedes what the delete saw
                // only as far as the lost-write check is concerned: a
                // concurrent delete that failed does not make b's return a
                // resurrection.
                op(3, "k", Kind::Delete { seen: vec!["b".into()] }, 15, Outcome::Unknown),
                tomb("c", 30),
                read(2, "k", &["b", "c"], 40),
            ],
            &[("k", &["b", "c"]), ("s", &["x"])],
        );
        let r = check(&h);
        assert!(r.resurrections.is_empty() && r.resurrections_excused.is_empty(), "{r:?}");
    }

    #[test]
    fn resurrections_while_data_was_lost_are_excused() {
        let mut h = history(
            vec![write(0, "k", "a", &[], 0, ok()), write(1, "k", "b", &["a"], 10, ok()), read(2, "k", &["a", "b"], 20)],
            &[("k", &["b"])],
        );
        h.faults.push(window("power loss 0", 12, 15, true, false));
        let r = check(&h);
        assert_eq!((r.resurrections.len(), r.resurrections_excused.len()), (0, 1), "{r:?}");
        assert!(r.valid(), "{r:?}");
    }
}
