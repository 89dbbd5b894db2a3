//! Quorum accounting as values: feed replies in, ask whether the quorum is
//! met, still possible, or lost. The coordinator owns the I/O and the clock;
//! these types only count, so every rule is a table test.

use std::fmt;

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
        Quorum { needed, total, ok: Vec::new(), failed: Vec::new() }
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

    /// A report for a client or a log line when the quorum was not met.
    pub fn shortfall(&self) -> Shortfall {
        Shortfall {
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
        write!(f, "needed {} of {} replicas, {} answered", self.needed, self.total, self.ok.len())?;
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

/// A write's quorum: W of the key's current holders and, while the key's
/// partition moves, W of its holders in the target ring too (a node in both
/// counts for both). Once the ring switches, reads ask only the new holders;
/// requiring W of them for every write acknowledged during the move is what
/// keeps R + W > N overlapping across the switch (see `core::membership`).
#[derive(Debug, Clone)]
pub struct WriteQuorum {
    current: (Vec<NodeId>, Quorum),
    target: Option<(Vec<NodeId>, Quorum)>,
}

impl WriteQuorum {
    /// `needed` of `current`, and of `target` when the key moves (capped at
    /// its size, like a cluster smaller than N).
    pub fn new(current: Vec<NodeId>, needed: usize, target: Option<Vec<NodeId>>) -> WriteQuorum {
        let q = |nodes: &Vec<NodeId>| Quorum::new(needed.min(nodes.len()), nodes.len());
        let current = (current.clone(), q(&current));
        let target = target.filter(|t| !t.is_empty() && *t != current.0).map(|t| (t.clone(), q(&t)));
        WriteQuorum { current, target }
    }

    /// Every node the write goes to: current holders, then incoming ones.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut all = self.current.0.clone();
        if let Some((target, _)) = &self.target {
            all.extend(target.iter().filter(|n| !self.current.0.contains(n)).cloned());
        }
        all
    }

    /// Applies `f` to each group `node` belongs to.
    fn in_groups(&mut self, node: &NodeId, mut f: impl FnMut(&mut Quorum)) {
        let (nodes, q) = &mut self.current;
        if nodes.contains(node) {
            f(q);
        }
        if let Some((nodes, q)) = &mut self.target
            && nodes.contains(node)
        {
            f(q);
        }
    }

    pub fn record_ok(&mut self, node: NodeId) -> Progress {
        self.in_groups(&node.clone(), |q| {
            q.record_ok(node.clone());
        });
        self.progress()
    }

    pub fn record_err(&mut self, node: NodeId, reason: impl Into<String>) -> Progress {
        let reason = reason.into();
        self.in_groups(&node.clone(), |q| {
            q.record_err(node.clone(), reason.clone());
        });
        self.progress()
    }

    pub fn answered(&self, node: &NodeId) -> bool {
        self.current.1.answered(node) || self.target.as_ref().is_some_and(|(_, q)| q.answered(node))
    }

    /// Met when every group is; failed as soon as one is.
    pub fn progress(&self) -> Progress {
        let groups = std::iter::once(&self.current.1).chain(self.target.as_ref().map(|(_, q)| q));
        let mut progress = Progress::Met;
        for q in groups {
            match q.progress() {
                Progress::Failed => return Progress::Failed,
                Progress::Pending => progress = Progress::Pending,
                Progress::Met => {}
            }
        }
        progress
    }

    /// Nodes that acknowledged, each once.
    pub fn ok(&self) -> Vec<NodeId> {
        let mut ok = self.current.1.ok().to_vec();
        if let Some((_, q)) = &self.target {
            ok.extend(q.ok().iter().filter(|n| !ok.contains(n)).cloned().collect::<Vec<_>>());
        }
        ok
    }

    /// The shortfall of the group that failed, else of one still short
    /// (the current ring's first).
    pub fn shortfall(&self) -> Shortfall {
        let current = &self.current.1;
        match &self.target {
            Some((_, q)) if q.progress() == Progress::Failed && current.progress() != Progress::Failed => q.shortfall(),
            Some((_, q)) if q.progress() != Progress::Met && current.progress() == Progress::Met => q.shortfall(),
            _ => current.shortfall(),
        }
    }

    /// True when the key is moving and the target holders are counted.
    pub fn moving(&self) -> bool {
        self.target.is_some()
    }
}

/// A read in progress: the quorum plus every object seen so far.
#[derive(Debug, Clone)]
pub struct ReadQuorum {
    quorum: Quorum,
    replies: Vec<(NodeId, Object)>,
}

impl ReadQuorum {
    pub fn new(needed: usize, total: usize) -> ReadQuorum {
        ReadQuorum { quorum: Quorum::new(needed, total), replies: Vec::new() }
    }

    /// A replica's answer; a key it does not have is `Object::new()` and
    /// counts as a successful answer (Riak's `notfound_ok`).
    pub fn record(&mut self, node: NodeId, reply: Result<Object, String>) -> Progress {
        match reply {
            Ok(object) => {
                self.replies.push((node.clone(), object));
                self.quorum.record_ok(node)
            }
            Err(reason) => self.quorum.record_err(node, reason),
        }
    }

    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// The join of every reply: what the client is told.
    pub fn merged(&self) -> Object {
        self.replies.iter().fold(Object::new(), |acc, (_, o)| acc.merge(o))
    }

    /// Read repair as a value: the replicas that answered with less than
    /// `merged` (stale or missing) and should be sent it.
    pub fn repairs(&self, merged: &Object) -> Vec<NodeId> {
        if merged.is_empty() {
            return Vec::new();
        }
        self.replies.iter().filter(|(_, o)| o != merged).map(|(n, _)| n.clone()).collect()
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

    fn written(value: &str, actor: u64) -> Object {
        let mut o = Object::new();
        let content =
            Content { value: value.to_owned().into(), content_type: "text/plain".into(), last_modified_ms: 0 };
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

    #[test]
    fn nothing_found_needs_no_repair() {
        let mut r = ReadQuorum::new(1, 2);
        r.record(NodeId::new("a"), Ok(Object::new()));
        r.record(NodeId::new("b"), Err("timeout".into()));
        assert!(r.merged().is_empty());
        assert!(r.repairs(&r.merged()).is_empty());
    }
}
