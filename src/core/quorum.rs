//! Quorum accounting as values: feed replies in, ask whether the quorum is
//! met, still possible, or lost. The coordinator owns the I/O and the clock;
//! these types only count, so every rule is a table test.

use std::fmt;

use super::digest::Digest;
use super::key::NodeId;
use super::object::Object;

/// Where a quorum stands after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not enough answers yet, but enough replicas still outstanding.
    Pending,
    /// `needed` replicas answered successfully.
    Met,
    /// So many replicas failed that `needed` can no longer be reached.
    Failed,
}

/// Counts successes and failures of `total` replicas against `needed`.
#[derive(Debug, Clone)]
pub struct Quorum {
    /// What is counted, for messages: "replicas", or "primaries" for
    /// `?pr=`/`?pw=`.
    what: &'static str,
    needed: usize,
    total: usize,
    ok: Vec<NodeId>,
    failed: Vec<(NodeId, String)>,
}

impl Quorum {
    /// `needed` must be in `1..=total`; the coordinator clamps and validates
    /// before it asks.
    pub fn new(needed: usize, total: usize) -> Quorum {
        assert!(needed >= 1 && needed <= total, "quorum {needed} of {total}");
        Quorum { what: "replicas", needed, total, ok: Vec::new(), failed: Vec::new() }
    }

    /// A quorum of primaries (`?pr=`, `?pw=`): only owners answering for
    /// themselves count, never a fallback standing in for one.
    pub fn primaries(needed: usize, total: usize) -> Quorum {
        Quorum { what: "primaries", ..Quorum::new(needed, total) }
    }

    pub fn record_ok(&mut self, node: NodeId) -> Progress {
        debug_assert!(!self.answered(&node), "{node} answered twice");
        self.ok.push(node);
        self.progress()
    }

    pub fn record_err(&mut self, node: NodeId, reason: impl Into<String>) -> Progress {
        debug_assert!(!self.answered(&node), "{node} answered twice");
        self.failed.push((node, reason.into()));
        self.progress()
    }

    /// Turns `node`'s success into a failure: it answered, but what the
    /// answer stood for could not be had (a digest read whose value fetch
    /// failed). Nothing happens if it had not succeeded.
    pub fn withdraw(&mut self, node: &NodeId, reason: impl Into<String>) -> Progress {
        if let Some(at) = self.ok.iter().position(|n| n == node) {
            self.ok.remove(at);
            self.failed.push((node.clone(), reason.into()));
        }
        self.progress()
    }

    /// Undoes `node`'s success: its slot is pending again, for another
    /// node to answer in (a fallback, after a failed value fetch).
    pub fn reopen(&mut self, node: &NodeId) -> Progress {
        self.ok.retain(|n| n != node);
        self.progress()
    }

    /// True once `node` has been recorded, either way.
    pub fn answered(&self, node: &NodeId) -> bool {
        self.ok.contains(node) || self.failed.iter().any(|(n, _)| n == node)
    }

    pub fn progress(&self) -> Progress {
        if self.ok.len() >= self.needed {
            Progress::Met
        } else if self.total - self.failed.len() < self.needed {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    pub fn needed(&self) -> usize {
        self.needed
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn ok(&self) -> &[NodeId] {
        &self.ok
    }

    /// How many failed (a not-found counted as one, see `ReadQuorum`).
    pub fn failures(&self) -> usize {
        self.failed.len()
    }

    /// A report for a client or a log line when the quorum was not met.
    pub fn shortfall(&self) -> Shortfall {
        Shortfall {
            what: self.what,
            needed: self.needed,
            total: self.total,
            ok: self.ok.clone(),
            failed: self.failed.clone(),
            silent: self.total - self.ok.len() - self.failed.len(),
        }
    }
}

/// What a failed quorum needed and what it got; its Display is the body of
/// a 503 ("needed 2 of 3 replicas, 1 answered: ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// "replicas" or "primaries".
    pub what: &'static str,
    pub needed: usize,
    pub total: usize,
    pub ok: Vec<NodeId>,
    pub failed: Vec<(NodeId, String)>,
    /// Replicas that had not answered when we gave up (timeout).
    pub silent: usize,
}

impl Shortfall {
    /// The same report with every node renamed (ids to addresses, for people).
    pub fn rename(self, name: impl Fn(&NodeId) -> NodeId) -> Shortfall {
        Shortfall {
            ok: self.ok.iter().map(&name).collect(),
            failed: self.failed.into_iter().map(|(n, reason)| (name(&n), reason)).collect(),
            ..self
        }
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "needed {} of {} {}, {} answered", self.needed, self.total, self.what, self.ok.len())?;
        if !self.ok.is_empty() {
            let names: Vec<&str> = self.ok.iter().map(NodeId::as_str).collect();
            write!(f, " ({})", names.join(", "))?;
        }
        for (node, reason) in &self.failed {
            write!(f, "; {node} failed: {reason}")?;
        }
        if self.silent > 0 {
            write!(f, "; {} did not answer in time", self.silent)?;
        }
        Ok(())
    }
}

/// Sloppy quorum: which fallback stands in for which primary.
///
/// A primary that is down or fails hands its slot to the next fallback of
/// the key (the distinct owners after the N primaries, in ring order,
/// `Ring::fallbacks`) that is up and not in use, as Riak's active
/// preference list does. The fallback stores the object with a hint naming
/// the primary, and its answer counts for that primary's slot: W and R
/// count fallbacks, `?pw=`/`?pr=` do not. A fallback that fails hands the
/// slot on to the next one. Candidates never include a node the request
/// already talks to for itself (a node in both rings of a move, say), so no
/// node counts twice.
#[derive(Debug, Clone, Default)]
pub struct Fallbacks {
    candidates: Vec<NodeId>,
    /// Candidates before this index were taken or skipped as down.
    next: usize,
    /// (fallback, the primary it stands in for), in the order taken.
    standing: Vec<(NodeId, NodeId)>,
}

impl Fallbacks {
    /// `candidates` in ring order; nodes in `exclude` (the request's own
    /// replicas) are dropped.
    pub fn new(candidates: Vec<NodeId>, exclude: &[NodeId]) -> Fallbacks {
        let candidates = candidates.into_iter().filter(|c| !exclude.contains(c)).collect();
        Fallbacks { candidates, next: 0, standing: Vec::new() }
    }

    /// The next candidate `up` says is up, from now on standing in for
    /// `primary`; `None` when none is left. Candidates found down are
    /// passed over for good within this request.
    pub fn take(&mut self, primary: &NodeId, up: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        // The slot belongs to the primary even when a fallback gives it up.
        let primary = self.slot(primary);
        while let Some(candidate) = self.candidates.get(self.next).cloned() {
            self.next += 1;
            if up(&candidate) {
                self.standing.push((candidate.clone(), primary));
                return Some(candidate);
            }
        }
        None
    }

    /// The primary `node` stands in for; `None` for anything else.
    pub fn stands_for(&self, node: &NodeId) -> Option<&NodeId> {
        self.standing.iter().find(|(f, _)| f == node).map(|(_, p)| p)
    }

    /// The slot `node` answers for: its primary's when it is a fallback.
    pub fn slot(&self, node: &NodeId) -> NodeId {
        self.stands_for(node).unwrap_or(node).clone()
    }

    /// Every (fallback, primary) taken so far.
    pub fn standing(&self) -> &[(NodeId, NodeId)] {
        &self.standing
    }
}

/// One group of a write: W slots (replicas or fallbacks) and, with `?pw=`,
/// that many primaries answering for themselves.
#[derive(Debug, Clone)]
struct Group {
    nodes: Vec<NodeId>,
    slots: Quorum,
    primaries: Option<Quorum>,
}

impl Group {
    fn new(nodes: Vec<NodeId>, needed: usize, pw: usize) -> Group {
        let total = nodes.len();
        let slots = Quorum::new(needed.min(total), total);
        let primaries = (pw > 0).then(|| Quorum::primaries(pw.min(total), total));
        Group { nodes, slots, primaries }
    }

    fn quorums(&self) -> impl Iterator<Item = &Quorum> {
        std::iter::once(&self.slots).chain(self.primaries.as_ref())
    }

    fn primary_failed(&mut self, node: &NodeId, reason: &str) {
        if let Some(p) = &mut self.primaries
            && !p.answered(node)
        {
            p.record_err(node.clone(), reason);
        }
    }
}

fn combined<'a>(quorums: impl Iterator<Item = &'a Quorum>) -> Progress {
    let mut progress = Progress::Met;
    for q in quorums {
        match q.progress() {
            Progress::Failed => return Progress::Failed,
            Progress::Pending => progress = Progress::Pending,
            Progress::Met => {}
        }
    }
    progress
}

/// A write's quorum: W of the key's current holders and, while the key's
/// partition moves, W of its holders in the target ring too (a node in both
/// counts for both). Once the ring switches, reads ask only the new holders;
/// requiring W of them for every write acknowledged during the move is what
/// keeps R + W > N overlapping across the switch (see `core::membership`).
///
/// Fallbacks during a move. A fallback fills the slot of the primary it
/// stands in for, in every group that primary belongs to, and is never one
/// of the write's own holders ([`Fallbacks::new`]), so each group still
/// counts W distinct nodes, each holding the object durably. What changes is
/// where the copies are: a fallback's copy reaches the holders through its
/// hint, not through the move's transfer. If the ring switches first, the
/// hint's owner is no longer a holder and the fallback delivers to the
/// partition's holders in the ring of that time instead (`services::hints`),
/// so the write ends up on the new holders either way, but only once hints
/// are delivered: a read between the switch and the delivery may miss it.
/// That is the sloppy-quorum trade (README, *Sloppy quorum*); `?pw=` is how
/// a client refuses it, and with every primary up no fallback is used and
/// the move rule holds exactly as before.
#[derive(Debug, Clone)]
pub struct WriteQuorum {
    current: Group,
    target: Option<Group>,
    /// Fallbacks that acknowledged, each with the primary it stood in for.
    fallbacks_ok: Vec<NodeId>,
}

impl WriteQuorum {
    /// `needed` of `current`, and of `target` when the key moves (capped at
    /// its size, like a cluster smaller than N).
    pub fn new(current: Vec<NodeId>, needed: usize, target: Option<Vec<NodeId>>) -> WriteQuorum {
        WriteQuorum::with_primaries(current, needed, target, 0)
    }

    /// The same, also needing `pw` primaries of each group answering for
    /// themselves (`?pw=`; 0: none).
    pub fn with_primaries(current: Vec<NodeId>, needed: usize, target: Option<Vec<NodeId>>, pw: usize) -> WriteQuorum {
        let target = target.filter(|t| !t.is_empty() && *t != current).map(|t| Group::new(t, needed, pw));
        WriteQuorum { current: Group::new(current, needed, pw), target, fallbacks_ok: Vec::new() }
    }

    /// Every node the write goes to: current holders, then incoming ones.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut all = self.current.nodes.clone();
        if let Some(target) = &self.target {
            all.extend(target.nodes.iter().filter(|n| !self.current.nodes.contains(n)).cloned());
        }
        all
    }

    fn groups_of(&mut self, node: &NodeId) -> impl Iterator<Item = &mut Group> {
        std::iter::once(&mut self.current).chain(self.target.as_mut()).filter(|g| g.nodes.contains(node))
    }

    /// A holder acknowledged for itself.
    pub fn record_ok(&mut self, node: NodeId) -> Progress {
        for g in self.groups_of(&node) {
            g.slots.record_ok(node.clone());
            if let Some(p) = &mut g.primaries
                && !p.answered(&node)
            {
                p.record_ok(node.clone());
            }
        }
        self.progress()
    }

    /// `fallback` acknowledged in place of `primary`.
    pub fn record_fallback_ok(&mut self, fallback: NodeId, primary: &NodeId) -> Progress {
        for g in self.groups_of(primary) {
            g.slots.record_ok(primary.clone());
        }
        self.fallbacks_ok.push(fallback);
        self.progress()
    }

    /// A holder failed but a fallback takes its slot: it is lost for
    /// `?pw=` only.
    pub fn record_primary_failed(&mut self, node: &NodeId, reason: &str) -> Progress {
        for g in self.groups_of(node) {
            g.primary_failed(node, reason);
        }
        self.progress()
    }

    /// The slot of `node` (a holder) is lost for good: it failed and no
    /// fallback could take its place.
    pub fn record_err(&mut self, node: NodeId, reason: impl Into<String>) -> Progress {
        let reason = reason.into();
        for g in self.groups_of(&node) {
            g.slots.record_err(node.clone(), reason.clone());
            g.primary_failed(&node, &reason);
        }
        self.progress()
    }

    /// True once the slot of `node` (a holder) is decided.
    pub fn answered(&self, node: &NodeId) -> bool {
        self.current.slots.answered(node) || self.target.as_ref().is_some_and(|g| g.slots.answered(node))
    }

    /// Met when every group is; failed as soon as one is.
    pub fn progress(&self) -> Progress {
        combined(self.current.quorums().chain(self.target.iter().flat_map(Group::quorums)))
    }

    /// Slots acknowledged (by their holder or a fallback), each once.
    pub fn ok(&self) -> Vec<NodeId> {
        let mut ok = self.current.slots.ok().to_vec();
        if let Some(g) = &self.target {
            ok.extend(g.slots.ok().iter().filter(|n| !ok.contains(n)).cloned().collect::<Vec<_>>());
        }
        ok
    }

    /// How many fallbacks acknowledged.
    pub fn fallbacks(&self) -> usize {
        self.fallbacks_ok.len()
    }

    /// The shortfall of a quorum that failed, else of one still short (the
    /// current ring's first).
    pub fn shortfall(&self) -> Shortfall {
        let all: Vec<&Quorum> = self.current.quorums().chain(self.target.iter().flat_map(Group::quorums)).collect();
        let pick = all
            .iter()
            .find(|q| q.progress() == Progress::Failed)
            .or_else(|| all.iter().find(|q| q.progress() != Progress::Met))
            .unwrap_or(&all[0]);
        pick.shortfall()
    }

    /// True when the key is moving and the target holders are counted.
    pub fn moving(&self) -> bool {
        self.target.is_some()
    }
}

/// What a replica answered a read with: its copy, or (asked for a digest,
/// `core::digest`) the copy's digest. A replica that cannot give digests
/// answers in full, which is always correct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Full(Object),
    Digest(Digest),
}

impl Answer {
    /// The replica has no copy (the key was never written there).
    pub fn is_empty(&self) -> bool {
        match self {
            Answer::Full(object) => object.is_empty(),
            Answer::Digest(digest) => digest.is_empty(),
        }
    }
}

/// One replica's reply to a read.
#[derive(Debug, Clone)]
struct ReadReply {
    node: NodeId,
    /// The slot it answered for: its own, or its primary's for a fallback.
    slot: NodeId,
    answer: Answer,
    fallback: bool,
}

/// What becomes of a digest replica's slot when its value fetch fails
/// ([`ReadQuorum::fetch_failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFetchFailure {
    /// No fallback is left to ask: the slot is lost.
    SlotLost,
    /// A fallback was asked in the replica's place: its answer fills the slot.
    FallbackAsked,
}

/// A read in progress: the quorum plus every answer seen so far.
///
/// Digest reads (`core::digest`). Answers may be digests; they count
/// towards R like full copies. The answer to the client is the merge of
/// the full copies ([`ReadQuorum::merged`]) once no digest shows a copy it
/// does not cover ([`ReadQuorum::fetches`]): the coordinator fetches those
/// copies' values and records them ([`ReadQuorum::record_fetched`]), so
/// the answer is the merge of every answer, as with full reads alone. A
/// fetch that fails takes the answer back ([`ReadQuorum::fetch_failed`]).
#[derive(Debug, Clone)]
pub struct ReadQuorum {
    quorum: Quorum,
    /// `?pr=`: primaries that must answer for themselves.
    primaries: Option<Quorum>,
    /// Every reply, in the order recorded.
    replies: Vec<ReadReply>,
    /// Riak's `notfound_ok`: a replica without the key counts towards R.
    notfound_ok: bool,
    /// Failures (not-founds included) at which the read gives up: N - R + 1,
    /// or with Riak's `basic_quorum` at most a majority of N.
    fail_threshold: usize,
    /// Replicas that answered without the key, when they do not count.
    not_found: usize,
}

impl ReadQuorum {
    pub fn new(needed: usize, total: usize) -> ReadQuorum {
        ReadQuorum::with_primaries(needed, total, 0)
    }

    /// Also needs `pr` primaries answering for themselves (0: none).
    pub fn with_primaries(needed: usize, total: usize, pr: usize) -> ReadQuorum {
        let primaries = (pr > 0).then(|| Quorum::primaries(pr.min(total), total));
        ReadQuorum {
            quorum: Quorum::new(needed, total),
            primaries,
            replies: Vec::new(),
            notfound_ok: true,
            fail_threshold: total - needed + 1,
            not_found: 0,
        }
    }

    /// Riak's early-failure rules (`riak_kv_get_core`). With
    /// `notfound_ok=false` a replica without the key does not count towards
    /// R; once N - R + 1 replicas failed or had nothing (with
    /// `basic_quorum`, once a majority of N did), the read is over, and it
    /// is a not-found (see [`ReadQuorum::not_found`]) when the not-founds
    /// alone reached that threshold.
    pub fn with_notfound_rules(mut self, notfound_ok: bool, basic_quorum: bool) -> ReadQuorum {
        self.notfound_ok = notfound_ok;
        let total = self.quorum.total();
        if basic_quorum {
            self.fail_threshold = self.fail_threshold.min(total / 2 + 1);
        }
        self
    }

    /// True when the read ended because enough replicas had no value (only
    /// with `notfound_ok=false`): the answer is not found, not a 503.
    pub fn not_found(&self) -> bool {
        !self.notfound_ok && self.quorum.progress() != Progress::Met && self.not_found >= self.fail_threshold
    }

    /// A primary's answer; a key it does not have is `Object::new()` and
    /// counts as a successful answer unless `notfound_ok` is off.
    pub fn record(&mut self, node: NodeId, reply: Result<Object, String>) -> Progress {
        self.record_answer(node, reply.map(Answer::Full))
    }

    /// A primary's answer, a copy or a digest.
    pub fn record_answer(&mut self, node: NodeId, reply: Result<Answer, String>) -> Progress {
        match reply {
            Ok(answer) => {
                let missing = answer.is_empty();
                self.replies.push(ReadReply { node: node.clone(), slot: node.clone(), answer, fallback: false });
                if let Some(p) = &mut self.primaries {
                    p.record_ok(node.clone());
                }
                if !self.notfound_ok && missing {
                    self.not_found += 1;
                    self.quorum.record_err(node, "not found");
                } else {
                    self.quorum.record_ok(node);
                }
            }
            Err(reason) => {
                self.record_primary_failed(&node, &reason);
                self.quorum.record_err(node, reason);
            }
        }
        self.progress()
    }

    /// A primary failed and a fallback was asked in its place.
    pub fn record_primary_failed(&mut self, node: &NodeId, reason: &str) -> Progress {
        if let Some(p) = &mut self.primaries
            && !p.answered(node)
        {
            p.record_err(node.clone(), reason);
        }
        self.progress()
    }

    /// `fallback`'s answer for the slot of `primary`. An error loses the
    /// slot: call it only when no other fallback is left to ask.
    pub fn record_fallback(&mut self, fallback: NodeId, primary: &NodeId, reply: Result<Object, String>) -> Progress {
        self.record_fallback_answer(fallback, primary, reply.map(Answer::Full))
    }

    /// `fallback`'s answer for the slot of `primary`, a copy or a digest.
    pub fn record_fallback_answer(
        &mut self,
        fallback: NodeId,
        primary: &NodeId,
        reply: Result<Answer, String>,
    ) -> Progress {
        match reply {
            Ok(answer) => {
                let missing = answer.is_empty();
                let slot = primary.clone();
                self.replies.push(ReadReply { node: fallback, slot, answer, fallback: true });
                if !self.notfound_ok && missing {
                    self.not_found += 1;
                    self.quorum.record_err(primary.clone(), "not found");
                } else {
                    self.quorum.record_ok(primary.clone());
                }
            }
            Err(reason) => {
                self.quorum.record_err(primary.clone(), format!("{reason} (fallback {fallback})"));
            }
        }
        self.progress()
    }

    /// The replicas whose digest shows a copy the merge of the full copies
    /// does not cover: their values must be fetched before the read
    /// answers (see the type's comment).
    pub fn fetches(&self) -> Vec<NodeId> {
        let merged = self.merged();
        self.replies
            .iter()
            .filter(|r| matches!(&r.answer, Answer::Digest(d) if !d.covered_by(&merged)))
            .map(|r| r.node.clone())
            .collect()
    }

    /// The value fetched from `node`, which had answered with a digest.
    pub fn record_fetched(&mut self, node: &NodeId, object: Object) {
        if let Some(reply) = self.replies.iter_mut().find(|r| &r.node == node) {
            reply.answer = Answer::Full(object);
        }
    }

    /// The value of `node`'s digest could not be fetched: its answer no
    /// longer counts. With [`AfterFetchFailure::SlotLost`] the slot is lost,
    /// as if the replica had failed; with
    /// [`AfterFetchFailure::FallbackAsked`] the slot is pending again, so the
    /// fallback asked in its place can fill it, as when a replica fails
    /// outright. A primary's `?pr=` slot is lost either way (a fallback never
    /// counts there).
    pub fn fetch_failed(&mut self, node: &NodeId, reason: &str, then: AfterFetchFailure) -> Progress {
        if let Some(at) = self.replies.iter().position(|r| &r.node == node) {
            let reply = self.replies.remove(at);
            let reason = format!("value fetch failed: {reason}");
            if let Some(p) = &mut self.primaries
                && !reply.fallback
            {
                p.withdraw(&reply.slot, reason.clone());
            }
            match then {
                AfterFetchFailure::SlotLost => self.quorum.withdraw(&reply.slot, reason),
                AfterFetchFailure::FallbackAsked => self.quorum.reopen(&reply.slot),
            };
        }
        self.progress()
    }

    pub fn progress(&self) -> Progress {
        let progress = combined(std::iter::once(&self.quorum).chain(self.primaries.as_ref()));
        if progress == Progress::Pending && self.quorum.failures() >= self.fail_threshold {
            return Progress::Failed;
        }
        progress
    }

    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// What a failed read reports: the `?pr=` quorum when that is the one
    /// that failed.
    pub fn shortfall(&self) -> Shortfall {
        match &self.primaries {
            Some(p) if p.progress() == Progress::Failed || self.quorum.progress() == Progress::Met => p.shortfall(),
            _ => self.quorum.shortfall(),
        }
    }

    /// How many fallbacks answered.
    pub fn fallbacks(&self) -> usize {
        self.replies.iter().filter(|r| r.fallback).count()
    }

    /// The join of every full reply: what the client is told (once
    /// [`ReadQuorum::fetches`] is empty).
    pub fn merged(&self) -> Object {
        self.replies.iter().fold(Object::new(), |acc, r| match &r.answer {
            Answer::Full(o) => acc.merge(o),
            Answer::Digest(_) => acc,
        })
    }

    /// Read repair as a value: the primaries that answered with less than
    /// `merged` (stale or missing) and should be sent it. Fallbacks are not
    /// repaired: a copy there without a hint would never leave.
    pub fn repairs(&self, merged: &Object) -> Vec<NodeId> {
        if merged.is_empty() {
            return Vec::new();
        }
        let stale = |answer: &Answer| match answer {
            Answer::Full(o) => o != merged,
            Answer::Digest(d) => !d.matches(merged),
        };
        self.replies.iter().filter(|r| !r.fallback && stale(&r.answer)).map(|r| r.node.clone()).collect()
    }

    /// The primaries that answered.
    pub fn primaries_answered(&self) -> Vec<NodeId> {
        self.replies.iter().filter(|r| !r.fallback).map(|r| r.node.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::object::{Content, Mutation};
    use crate::core::vclock::VersionVector;

    /// A reply in a table: Ok or Err from replica n.
    #[derive(Clone, Copy)]
    enum R {
        Ok(&'static str),
        Err(&'static str),
    }

    #[test]
    fn quorum_table() {
        use Progress::*;
        use R::*;
        // (needed, total, replies in order, progress after each reply)
        let cases: &[(usize, usize, &[R], &[Progress])] = &[
            (1, 1, &[Ok("a")], &[Met]),
            (1, 1, &[Err("a")], &[Failed]),
            (2, 3, &[Ok("a"), Ok("b"), Ok("c")], &[Pending, Met, Met]),
            (2, 3, &[Err("a"), Ok("b"), Ok("c")], &[Pending, Pending, Met]),
            (2, 3, &[Ok("a"), Err("b"), Err("c")], &[Pending, Pending, Failed]),
            (2, 3, &[Err("a"), Err("b")], &[Pending, Failed]),
            (3, 3, &[Ok("a"), Ok("b"), Err("c")], &[Pending, Pending, Failed]),
            (3, 3, &[Err("a")], &[Failed]),
            (1, 3, &[Err("a"), Err("b"), Ok("c")], &[Pending, Pending, Met]),
            (3, 5, &[Err("a"), Err("b"), Ok("c"), Ok("d"), Ok("e")], &[Pending, Pending, Pending, Pending, Met]),
            (3, 5, &[Ok("a"), Err("b"), Err("c"), Err("d")], &[Pending, Pending, Pending, Failed]),
        ];
        for (needed, total, replies, expected) in cases {
            let mut q = Quorum::new(*needed, *total);
            let got: Vec<Progress> = replies
                .iter()
                .map(|r| match r {
                    Ok(n) => q.record_ok(NodeId::new(n)),
                    Err(n) => q.record_err(NodeId::new(n), "refused"),
                })
                .collect();
            assert_eq!(&got, expected, "{needed} of {total}");
        }
    }

    #[test]
    #[should_panic(expected = "quorum 4 of 3")]
    fn needed_above_total_is_a_bug() {
        Quorum::new(4, 3);
    }

    #[test]
    fn shortfall_says_what_was_needed_and_what_answered() {
        let mut q = Quorum::new(2, 3);
        q.record_ok(NodeId::new("a:1"));
        q.record_err(NodeId::new("b:1"), "connection refused");
        let text = q.shortfall().to_string();
        assert_eq!(
            text,
            "needed 2 of 3 replicas, 1 answered (a:1); b:1 failed: connection refused; 1 did not answer in time"
        );
    }

    #[test]
    fn a_write_during_a_move_needs_w_of_both_rings() {
        use Progress::*;
        let n = |s: &str| NodeId::new(s);
        let names = |v: &[&str]| v.iter().map(|s| n(s)).collect::<Vec<_>>();
        // current {a,b,c}, target {a,d,e}, W=2.
        let fresh = || WriteQuorum::new(names(&["a", "b", "c"]), 2, Some(names(&["a", "d", "e"])));
        assert_eq!(fresh().nodes(), names(&["a", "b", "c", "d", "e"]));
        // (replies, progress after each)
        type Case<'a> = (&'a [(&'a str, bool)], &'a [Progress]);
        let cases: &[Case] = &[
            // a counts in both; b completes current, d completes target.
            (&[("a", true), ("b", true), ("d", true)], &[Pending, Pending, Met]),
            // Current met alone is not enough while moving.
            (&[("b", true), ("c", true)], &[Pending, Pending]),
            // Two target holders down: the write cannot be acknowledged.
            (&[("d", false), ("e", false)], &[Pending, Failed]),
            (&[("a", false), ("d", false)], &[Pending, Failed]),
            (&[("b", true), ("c", true), ("d", true), ("e", true)], &[Pending, Pending, Pending, Met]),
        ];
        for (replies, expected) in cases {
            let mut q = fresh();
            let got: Vec<Progress> = replies
                .iter()
                .map(|(node, ok)| if *ok { q.record_ok(n(node)) } else { q.record_err(n(node), "down") })
                .collect();
            assert_eq!(&got, expected, "{replies:?}");
        }
        // Not moving: the plain quorum.
        let mut q = WriteQuorum::new(names(&["a", "b", "c"]), 2, None);
        assert!(!q.moving());
        assert_eq!(q.record_ok(n("a")), Pending);
        assert_eq!(q.record_ok(n("b")), Met);
        assert_eq!(q.ok(), names(&["a", "b"]));
    }

    #[test]
    fn fallbacks_are_taken_in_order_skipping_down_and_excluded_nodes() {
        let n = |s: &str| NodeId::new(s);
        let mut f = Fallbacks::new(vec![n("d"), n("e"), n("f"), n("g")], &[n("e")]);
        // d is down: f stands in for a; then g for b; none left for c.
        assert_eq!(f.take(&n("a"), |x| x != &n("d")), Some(n("f")));
        assert_eq!(f.take(&n("b"), |_| true), Some(n("g")));
        assert_eq!(f.take(&n("c"), |_| true), None);
        assert_eq!(f.stands_for(&n("f")), Some(&n("a")));
        assert_eq!(f.slot(&n("g")), n("b"));
        assert_eq!(f.slot(&n("a")), n("a"));
        // A fallback that fails hands the slot of its primary on.
        let mut f = Fallbacks::new(vec![n("d"), n("e")], &[]);
        assert_eq!(f.take(&n("a"), |_| true), Some(n("d")));
        assert_eq!(f.take(&n("d"), |_| true), Some(n("e")));
        assert_eq!(f.stands_for(&n("e")), Some(&n("a")));
    }

    #[test]
    fn sloppy_write_quorum_table() {
        use Progress::*;
        let n = |s: &str| NodeId::new(s);
        let names = |v: &[&str]| v.iter().map(|s| n(s)).collect::<Vec<_>>();
        // What happens to a slot: Ok(node) primary acked; Fb(fallback,
        // primary) acked in its place; Pf(node) primary failed, a fallback
        // tries; Err(node) slot lost.
        #[derive(Debug, Clone, Copy)]
        enum E {
            Ok(&'static str),
            Fb(&'static str, &'static str),
            Pf(&'static str),
            Err(&'static str),
        }
        use E::*;
        // (W, pw, events, progress after each, fallbacks counted at the end)
        type Case<'a> = (usize, usize, &'a [E], &'a [Progress], usize);
        let cases: &[Case] = &[
            // One primary down, W=2: the fallback counts.
            (2, 0, &[Pf("c"), Ok("a"), Fb("d", "c")], &[Pending, Pending, Met], 1),
            // Two down: two fallbacks make W=2.
            (2, 0, &[Pf("b"), Pf("c"), Fb("d", "b"), Fb("e", "c")], &[Pending, Pending, Pending, Met], 2),
            // pw=2 with one primary down: W is met by the fallback, pw is
            // still pending, then met by the second primary.
            (2, 2, &[Pf("c"), Ok("a"), Fb("d", "c"), Ok("b")], &[Pending, Pending, Pending, Met], 1),
            // pw=2 with two primaries down fails at once.
            (2, 2, &[Pf("b"), Pf("c")], &[Pending, Failed], 0),
            // A slot without any fallback left is lost.
            (2, 0, &[Err("b"), Err("c")], &[Pending, Failed], 0),
            (3, 0, &[Ok("a"), Ok("b"), Pf("c"), Err("c")], &[Pending, Pending, Pending, Failed], 0),
        ];
        for (w, pw, events, expected, fallbacks) in cases {
            let mut q = WriteQuorum::with_primaries(names(&["a", "b", "c"]), *w, None, *pw);
            let got: Vec<Progress> = events
                .iter()
                .map(|e| match *e {
                    Ok(x) => q.record_ok(n(x)),
                    Fb(f, p) => q.record_fallback_ok(n(f), &n(p)),
                    Pf(x) => q.record_primary_failed(&n(x), "down"),
                    Err(x) => q.record_err(n(x), "down"),
                })
                .collect();
            assert_eq!(&got, expected, "W={w} pw={pw} {events:?}");
            assert_eq!(q.fallbacks(), *fallbacks, "{events:?}");
        }
        // The pw shortfall speaks of primaries.
        let mut q = WriteQuorum::with_primaries(names(&["a", "b", "c"]), 2, None, 2);
        q.record_primary_failed(&n("b"), "node is down");
        q.record_primary_failed(&n("c"), "node is down");
        assert!(q.shortfall().to_string().starts_with("needed 2 of 3 primaries, 0 answered"), "{}", q.shortfall());
    }

    #[test]
    fn a_fallback_fills_its_primarys_slot_in_both_rings_of_a_move() {
        use Progress::*;
        let n = |s: &str| NodeId::new(s);
        let names = |v: &[&str]| v.iter().map(|s| n(s)).collect::<Vec<_>>();
        // current {a,b,c}, target {a,d,e}, W=2; a is down and f stands in:
        // f counts in both groups, like a would have.
        let mut q = WriteQuorum::new(names(&["a", "b", "c"]), 2, Some(names(&["a", "d", "e"])));
        assert_eq!(q.record_primary_failed(&n("a"), "down"), Pending);
        assert_eq!(q.record_fallback_ok(n("f"), &n("a")), Pending);
        assert_eq!(q.record_ok(n("b")), Pending);
        assert_eq!(q.record_ok(n("d")), Met);
        assert_eq!(q.fallbacks(), 1);
        // A fallback for b (current only) does not help the target group.
        let mut q = WriteQuorum::new(names(&["a", "b", "c"]), 2, Some(names(&["a", "d", "e"])));
        q.record_ok(n("c"));
        assert_eq!(q.record_fallback_ok(n("f"), &n("b")), Pending);
        assert_eq!(q.record_err(n("d"), "down"), Pending);
        assert_eq!(q.record_err(n("e"), "down"), Failed);
    }

    #[test]
    fn sloppy_reads_count_fallbacks_but_pr_does_not() {
        use Progress::*;
        let n = |s: &str| NodeId::new(s);
        let v = written("v", 1);
        // R=2, pr=0: c down, its fallback d has the value.
        let mut r = ReadQuorum::new(2, 3);
        assert_eq!(r.record_primary_failed(&n("c"), "down"), Pending);
        assert_eq!(r.record(n("a"), Ok(Object::new())), Pending);
        assert_eq!(r.record_fallback(n("d"), &n("c"), Ok(v.clone())), Met);
        assert_eq!(r.merged(), v);
        assert_eq!(r.fallbacks(), 1);
        // The stale primary is repaired, the fallback is not.
        assert_eq!(r.repairs(&r.merged()), vec![n("a")]);
        // pr=2 with two primaries down fails, whatever fallbacks answer.
        let mut r = ReadQuorum::with_primaries(1, 3, 2);
        assert_eq!(r.record_primary_failed(&n("b"), "down"), Pending);
        assert_eq!(r.record_fallback(n("d"), &n("b"), Ok(v.clone())), Pending);
        assert_eq!(r.record_primary_failed(&n("c"), "down"), Failed);
        assert!(r.shortfall().to_string().contains("primaries"), "{}", r.shortfall());
        // A fallback that fails when none is left loses the slot.
        let mut r = ReadQuorum::new(3, 3);
        r.record(n("a"), Ok(Object::new()));
        r.record_primary_failed(&n("b"), "down");
        assert_eq!(r.record_fallback(n("d"), &n("b"), Err("refused".into())), Failed);
    }

    fn written(value: &str, actor: u64) -> Object {
        let mut o = Object::new();
        let content = Content {
            value: value.to_owned().into(),
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            meta: Default::default(),
        };
        o.update(actor, &VersionVector::new(), Mutation::Put(content)).unwrap();
        o
    }

    #[test]
    fn read_merges_replies_and_plans_repairs() {
        let fresh = written("v", 1);
        let mut r = ReadQuorum::new(2, 3);
        assert_eq!(r.record(NodeId::new("a"), Ok(fresh.clone())), Progress::Pending);
        assert_eq!(r.record(NodeId::new("b"), Ok(Object::new())), Progress::Met);
        assert_eq!(r.record(NodeId::new("c"), Ok(fresh.clone())), Progress::Met);
        let merged = r.merged();
        assert_eq!(merged, fresh);
        assert_eq!(r.repairs(&merged), vec![NodeId::new("b")]);
    }

    #[test]
    fn concurrent_replies_become_siblings_and_all_are_repaired() {
        let mut r = ReadQuorum::new(2, 2);
        r.record(NodeId::new("a"), Ok(written("x", 1)));
        r.record(NodeId::new("b"), Ok(written("y", 2)));
        let merged = r.merged();
        assert_eq!(merged.siblings().len(), 2);
        assert_eq!(r.repairs(&merged), vec![NodeId::new("a"), NodeId::new("b")]);
    }

    /// riak_kv_get_core's table: with notfound_ok=false a not-found does
    /// not count towards R; N - R + 1 of them (a majority with
    /// basic_quorum) end the read as not found, errors among them make it a
    /// failure.
    #[test]
    fn notfound_ok_and_basic_quorum_table() {
        use Progress::*;
        let (a, b, c) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("c"));
        // Default rules: a not-found counts.
        let mut r = ReadQuorum::new(2, 3);
        r.record(a.clone(), Ok(Object::new()));
        assert_eq!(r.record(b.clone(), Ok(Object::new())), Met);
        assert!(!r.not_found());
        // notfound_ok=false, R=2 of 3: two not-founds end it, as not found.
        let mut r = ReadQuorum::new(2, 3).with_notfound_rules(false, false);
        assert_eq!(r.record(a.clone(), Ok(Object::new())), Pending);
        assert_eq!(r.record(b.clone(), Ok(Object::new())), Failed);
        assert!(r.not_found());
        // ... but a value and a not-found wait for the third.
        let mut r = ReadQuorum::new(2, 3).with_notfound_rules(false, false);
        assert_eq!(r.record(a.clone(), Ok(written("v", 1))), Pending);
        assert_eq!(r.record(b.clone(), Ok(Object::new())), Pending);
        assert_eq!(r.record(c.clone(), Ok(written("v", 1))), Met);
        assert!(!r.not_found());
        assert_eq!(r.merged(), written("v", 1));
        // R=1 of 3: three not-founds without basic_quorum, two with it.
        let mut r = ReadQuorum::new(1, 3).with_notfound_rules(false, false);
        r.record(a.clone(), Ok(Object::new()));
        assert_eq!(r.record(b.clone(), Ok(Object::new())), Pending);
        let mut r = ReadQuorum::new(1, 3).with_notfound_rules(false, true);
        r.record(a.clone(), Ok(Object::new()));
        assert_eq!(r.record(b.clone(), Ok(Object::new())), Failed);
        assert!(r.not_found());
        // An error and a not-found: a failure, not a not-found.
        let mut r = ReadQuorum::new(2, 3).with_notfound_rules(false, false);
        r.record(a, Ok(Object::new()));
        assert_eq!(r.record(b, Err("down".into())), Failed);
        assert!(!r.not_found());
        // A tombstone is a value, not a not-found.
        let mut r = ReadQuorum::new(1, 3).with_notfound_rules(false, false);
        assert_eq!(r.record(c, Ok(Object::tombstone(VersionVector::from_entries([(1, 1)])))), Met);
    }

    #[test]
    fn digest_answers_count_and_uncovered_ones_are_fetched() {
        use Progress::*;
        let n = |s: &str| NodeId::new(s);
        let (old, new) = (written("v", 1), written("v", 1).merge(&written("w", 2)));
        let digest = |o: &Object| Ok(Answer::Digest(Digest::of(o)));
        // a full (old), b digest of the same: met, nothing to fetch.
        let mut r = ReadQuorum::new(2, 3);
        assert_eq!(r.record(n("a"), Ok(old.clone())), Pending);
        assert_eq!(r.record_answer(n("b"), digest(&old)), Met);
        assert!(r.fetches().is_empty());
        // c's digest shows a newer copy: fetch it, and the merge has it.
        assert_eq!(r.record_answer(n("c"), digest(&new)), Met);
        assert_eq!(r.fetches(), vec![n("c")]);
        r.record_fetched(&n("c"), new.clone());
        assert!(r.fetches().is_empty());
        assert_eq!(r.merged(), new);
        // b is stale: read repair sends it the merge, c is not.
        assert_eq!(r.repairs(&r.merged()), vec![n("a"), n("b")]);
        // A failed fetch takes the answer back: the quorum is short again.
        let mut r = ReadQuorum::with_primaries(2, 3, 2);
        r.record(n("a"), Ok(old.clone()));
        r.record(n("b"), Err("refused".into()));
        assert_eq!(r.record_answer(n("c"), digest(&new)), Met);
        assert_eq!(r.fetch_failed(&n("c"), "refused", AfterFetchFailure::SlotLost), Failed);
        assert!(r.shortfall().to_string().contains("value fetch failed: refused"), "{}", r.shortfall());
        // ...unless a fallback takes the slot: pending until it answers,
        // and the fallback counts for R, not for ?pr=.
        let mut r = ReadQuorum::with_primaries(2, 3, 1);
        r.record(n("a"), Ok(old.clone()));
        r.record_answer(n("c"), digest(&new));
        assert_eq!(r.fetch_failed(&n("c"), "refused", AfterFetchFailure::FallbackAsked), Pending);
        assert_eq!(r.fetches(), vec![], "c's digest is gone");
        assert_eq!(r.record_fallback(n("d"), &n("c"), Ok(new.clone())), Met);
        assert_eq!(r.merged(), new);
        assert_eq!(r.fallbacks(), 1);
        let mut strict = ReadQuorum::with_primaries(2, 3, 3);
        strict.record(n("a"), Ok(old.clone()));
        strict.record(n("b"), Ok(old.clone()));
        strict.record_answer(n("c"), digest(&new));
        assert_eq!(
            strict.fetch_failed(&n("c"), "refused", AfterFetchFailure::FallbackAsked),
            Failed,
            "pr=3 lost c for good"
        );
        // With notfound_ok=false an empty digest is a not-found.
        let mut r = ReadQuorum::new(2, 3).with_notfound_rules(false, false);
        r.record_answer(n("a"), digest(&Object::new()));
        assert_eq!(r.record_answer(n("b"), digest(&Object::new())), Failed);
        assert!(r.not_found());
    }

    #[test]
    fn nothing_found_needs_no_repair() {
        let mut r = ReadQuorum::new(1, 2);
        r.record(NodeId::new("a"), Ok(Object::new()));
        r.record(NodeId::new("b"), Err("timeout".into()));
        assert!(r.merged().is_empty());
        assert!(r.repairs(&r.merged()).is_empty());
    }
}
