//! Cluster membership as a value: members, the ring, how two views merge,
//! how the ring changes, which data must move, and who is alive.
//!
//! State and its merge (gossip exchanges whole states, push-pull):
//! * each [`Member`] record is owned by that member: only it changes it, and
//!   it bumps `version` on every change, heartbeats included. Records merge
//!   by the larger `(generation, version)`; `generation` is the member's
//!   start time, so a restarted member's record beats its old incarnation.
//! * the [`RingState`] is changed only by the *claimant* (the smallest member
//!   name that is up and not leaving) and merges by the larger
//!   `(epoch, author)`. A claimant stamps `epoch + 1`, so in a healthy cluster
//!   ring versions are a total order; two claimants on two sides of a
//!   partition may race, and the larger stamp wins. Nothing is lost when a
//!   ring is overwritten: the claimant recomputes targets from the members'
//!   records, and senders report finished transfers again.
//!
//! Both merges are joins of a semilattice (commutative, associative,
//! idempotent; tested below), so any gossip order converges.
//!
//! Moving data: when claims change, the claimant sets a *target* ring. For
//! each partition whose holders change, some of its current holders stream
//! it to the holders that are new in the target, then list the partition in
//! their record's `transfers_done`, naming the move ([`ClusterState::move_id`]:
//! the target epoch and both rings) it was for. A report for another move
//! counts for nothing, so a second join or a racing claimant that changes the
//! target during a long stream makes the senders send again.
//!
//! When may the target become current? A write acknowledged by W of the N
//! current holders must be on W of the new ones, or a read of R new holders
//! (R + W > N) could miss it. So each moving partition needs finished
//! transfers from `N - W + 1` of its current holders: every W-set of them
//! meets that many senders, so some sender had the write and sent it to every
//! new holder, and the holders that stay keep theirs; counting, W new holders
//! have it. Leaving holders that are up send first, then the staying ones; a
//! sender that went down after reporting still counts. Until enough holders
//! have reported (say most of them are down, or the claimant is the one cut
//! off), the ring does not switch. Writes during the move are acknowledged by
//! W holders of both rings (see `coordinator`), so they are covered too.
//!
//! Failure detection: a member is up while its version keeps advancing (it
//! heartbeats every gossip round, and gossip spreads the counter, so a node
//! learns of a failure even from peers it never talks to directly).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use sha1::{Digest, Sha1};

use super::bucket::Buckets;
use super::key::NodeId;
use super::ring::{Claim, Partition, Planner, Ring, RingError};
use super::security::{self, Tokens};

/// Bumped when nodes of different builds can no longer understand each
/// other's gossip; peers refuse a different version with a clear message.
pub const PROTOCOL_VERSION: u32 = 1;

// Bounds on a cluster state. Gossip exchanges the whole state, so these make
// its largest legal size computable, and the gRPC limits are sized from it
// (`rpc::membership::largest_message_bytes`) instead of guessed.

/// The most members a cluster has; a join beyond it is refused.
pub const MAX_MEMBERS: usize = 1024;
/// The most removed ids a cluster remembers (`ClusterState::removed` is
/// grow-only): a replacement beyond it is refused.
pub const MAX_REMOVED: usize = 4 * MAX_MEMBERS;
/// Node ids are 16 hex digits (`node::identity`); ids from the wire are
/// bounded with room for another scheme.
pub const MAX_NODE_ID_BYTES: usize = 64;
/// An address: a DNS name (at most 253 bytes), a port, maybe a scheme.
pub const MAX_ADDRESS_BYTES: usize = 300;
/// A certificate name (a subject common name, at most 64 characters by
/// RFC 5280's upper bound, in UTF-8), with room to spare.
pub const MAX_CERTIFICATE_NAME_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Stable id, created with the node's data directory; addresses may
    /// change across restarts, the id does not.
    pub node: NodeId,
    /// Advertised HTTP address.
    pub address: String,
    pub cluster_address: String,
    pub wanted_claim: u32,
    pub generation: u64,
    pub version: u64,
    /// The move ([`ClusterState::move_id`]) that `transfers_done` refers to.
    /// (Named for its first meaning, the target's epoch, which two claimants
    /// could share; the name stays for the persisted and gossiped format.)
    pub transfers_epoch: u64,
    pub transfers_done: BTreeSet<Partition>,
    /// Leaving members claim nothing; their partitions move away.
    pub leaving: bool,
}

impl Member {
    pub fn new(node: NodeId, address: String, cluster_address: String, wanted_claim: u32, generation: u64) -> Member {
        Member {
            node,
            address,
            cluster_address,
            wanted_claim,
            generation,
            version: 0,
            transfers_epoch: 0,
            transfers_done: BTreeSet::new(),
            leaving: false,
        }
    }

    fn stamp(&self) -> (u64, u64) {
        (self.generation, self.version)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    pub epoch: u64,
    pub author: NodeId,
    pub current: Ring,
    pub target: Option<Ring>,
    /// The epoch at which `target` was set; transfers report against it.
    pub target_epoch: u64,
}

impl RingState {
    fn stamp(&self) -> (u64, &NodeId) {
        (self.epoch, &self.author)
    }

    /// Names this ring among rings of its epoch: a hash of its author (one
    /// author stamps one ring per epoch, so `(epoch, hash)` names a ring).
    /// Replica calls carry it, so that a replica refuses a call planned on
    /// another claimant's ring of the same epoch. Never 0, which means "not
    /// named" on the wire.
    pub fn hash(&self) -> u64 {
        let digest: [u8; 20] = Sha1::digest(self.author.as_str().as_bytes()).into();
        u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")).max(1)
    }
}

/// A change staged for the next commit, keyed by the member it concerns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Change {
    /// The member hands every partition to the others, then leaves.
    Leave,
    /// A dead member is dropped for good; its partitions are reassigned and
    /// refilled from the surviving replicas.
    Remove,
    /// Another member (`by`, already joined) takes over exactly its
    /// partitions.
    Replace { by: NodeId },
}

/// One member's staged change, stamped by its last edit; `None` once it
/// was unstaged (a clear) or applied (a commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub version: u64,
    pub author: NodeId,
    pub change: Option<Change>,
}

impl Staged {
    fn stamp(&self) -> (u64, &NodeId) {
        (self.version, &self.author)
    }
}

/// The staged changes: `Leave`, `Remove` and `Replace` wait here until an
/// operator commits them, as Riak's `cluster plan` / `cluster commit`.
///
/// Any node edits it (staging, clearing, asking for a commit), so each part
/// is a last-writer-wins register stamped `(version, editor)`, where the
/// version is a Lamport clock over the whole plan: one register per member
/// (its staged change), one for the last commit request and one for the
/// last request the claimant applied. Views merge register by register,
/// keeping the larger stamp: a semilattice join, and changes staged through
/// different nodes at the same time (a leave on the leaving node, a removal
/// on another) are both kept. Only two edits of the same member's change at
/// once race, and one of them wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedPlan {
    pub changes: BTreeMap<NodeId, Staged>,
    /// The last commit request; version 0: none.
    pub commit: (u64, NodeId),
    /// The last commit request the claimant applied.
    pub applied: (u64, NodeId),
}

impl Default for StagedPlan {
    fn default() -> StagedPlan {
        StagedPlan { changes: BTreeMap::new(), commit: (0, NodeId::new("")), applied: (0, NodeId::new("")) }
    }
}

impl StagedPlan {
    /// The changes staged now.
    pub fn staged(&self) -> BTreeMap<NodeId, Change> {
        self.changes.iter().filter_map(|(n, s)| Some((n.clone(), s.change.clone()?))).collect()
    }

    /// A commit was asked for that the claimant has not applied yet.
    pub fn commit_pending(&self) -> bool {
        self.commit > self.applied
    }

    /// The next version: above every stamp this view has seen.
    fn next_version(&self) -> u64 {
        let entries = self.changes.values().map(|s| s.version);
        entries.chain([self.commit.0, self.applied.0]).max().unwrap_or(0) + 1
    }

    /// Keeps the larger stamp of each register; true if anything changed.
    fn merge(&mut self, other: &StagedPlan) -> bool {
        let mut changed = false;
        for (node, theirs) in &other.changes {
            if self.changes.get(node).is_none_or(|ours| ours.stamp() < theirs.stamp()) {
                self.changes.insert(node.clone(), theirs.clone());
                changed = true;
            }
        }
        for (ours, theirs) in [(&mut self.commit, &other.commit), (&mut self.applied, &other.applied)] {
            if *theirs > *ours {
                *ours = theirs.clone();
                changed = true;
            }
        }
        changed
    }
}

/// A committed leave or replacement: a cluster-level fact the claimant's
/// planner reads (member records are self-owned, so committing cannot edit
/// the departing member's record). Views merge per member by the larger
/// value (`done` first), so a departure only moves forward.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Departure {
    /// The member owns nothing any more and was removed from the members.
    pub done: bool,
    /// The member that takes over its partitions; None for a leave.
    pub by: Option<NodeId>,
    /// Its wanted claim when the change was committed: a replacement claims
    /// at least this much afterwards (it may have joined with claim 0).
    pub claim: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster_id: u64,
    pub n_val: usize,
    pub r: usize,
    pub w: usize,
    pub members: BTreeMap<NodeId, Member>,
    /// Members removed for good (replaced, force-removed, or left); never
    /// readmitted.
    pub removed: BTreeSet<NodeId>,
    pub ring: RingState,
    /// Changes staged for the next commit.
    pub plan: StagedPlan,
    /// Committed leaves and replacements, in progress or done.
    pub departures: BTreeMap<NodeId, Departure>,
    /// With mutual TLS between nodes: the certificate name each member
    /// presents, recorded when it joins (or when it first runs with a
    /// certificate) and never changed, so that a certificate can never act
    /// for another node (`rpc::identity`). Only members have one.
    pub certificate_names: BTreeMap<NodeId, String>,
    /// Client authentication (`core::security`): fixed when the cluster is
    /// created (`--security`); never changed by a merge (membership refuses
    /// a peer whose view differs).
    pub security: bool,
    /// Client tokens by name, as hashes; merged per name.
    pub tokens: Tokens,
    /// Bucket types and buckets with their own properties
    /// (`core::bucket`); merged per type and per bucket.
    pub buckets: Buckets,
}

/// A node id is bound to another certificate name than the one presented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node} uses the certificate named {bound:?}, not {presented:?}")]
pub struct CertificateMismatch {
    pub node: NodeId,
    pub bound: String,
    pub presented: String,
}

/// Why a change cannot be staged or committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("node {0} is not a member of this cluster")]
    UnknownMember(NodeId),
    #[error("node {0} is already leaving or being replaced")]
    AlreadyDeparting(NodeId),
    #[error("node {node} cannot {what}: no other member would be left to hold the data")]
    LastMember { node: NodeId, what: &'static str },
    #[error("node {0} cannot force-remove itself; use POST /admin/leave on it instead")]
    RemoveSelf(NodeId),
    #[error("node {0} cannot replace itself")]
    ReplaceBySelf(NodeId),
    #[error("node {by} cannot take over {old}'s partitions: {by} is {why}")]
    BadReplacement { old: NodeId, by: NodeId, why: &'static str },
    #[error("the cluster has removed {max} nodes, the most it can remember; removing {node} would forget one")]
    TooManyRemoved { node: NodeId, max: usize },
    #[error("nothing is staged; stage a leave, force-remove or replace first")]
    NothingStaged,
}

/// What a merge changed, so the caller knows what to persist or announce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// A member was added or a record changed in more than its heartbeat.
    pub members: bool,
    pub ring: bool,
    /// Any record advanced (heartbeats included).
    pub any: bool,
}

/// One partition one node must stream to new holders, for one move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub partition: Partition,
    pub from: NodeId,
    pub to: Vec<NodeId>,
    /// The move this transfer belongs to ([`ClusterState::move_id`]).
    pub move_id: u64,
}

impl ClusterState {
    /// A new cluster of one.
    pub fn new(
        cluster_id: u64,
        first: Member,
        partitions: u32,
        n_val: usize,
        r: usize,
        w: usize,
    ) -> Result<ClusterState, RingError> {
        let ring = Ring::single(partitions, first.node.clone())?;
        let author = first.node.clone();
        let members = BTreeMap::from([(first.node.clone(), first)]);
        Ok(ClusterState {
            cluster_id,
            n_val,
            r,
            w,
            members,
            removed: BTreeSet::new(),
            ring: RingState { epoch: 1, author, current: ring, target: None, target_epoch: 0 },
            plan: StagedPlan::default(),
            departures: BTreeMap::new(),
            certificate_names: BTreeMap::new(),
            security: false,
            tokens: Tokens::new(),
            buckets: Buckets::default(),
        })
    }

    /// Records that member `node` presents the certificate named `name`,
    /// unless it has a name already: the same one is fine (`Ok(false)`,
    /// nothing changed), another is refused. `Ok(true)`: recorded. Only a
    /// member can be bound, with a name of at most
    /// [`MAX_CERTIFICATE_NAME_BYTES`] (longer ones are not recorded).
    pub fn bind_certificate(&mut self, node: &NodeId, name: &str) -> Result<bool, CertificateMismatch> {
        match self.certificate_names.get(node) {
            Some(bound) if bound == name => Ok(false),
            Some(bound) => {
                Err(CertificateMismatch { node: node.clone(), bound: bound.clone(), presented: name.to_owned() })
            }
            None if !self.members.contains_key(node) || name.len() > MAX_CERTIFICATE_NAME_BYTES => Ok(false),
            None => {
                self.certificate_names.insert(node.clone(), name.to_owned());
                Ok(true)
            }
        }
    }

    pub fn partitions(&self) -> u32 {
        self.ring.current.partitions()
    }

    /// Merges another view of the same cluster (same `cluster_id`; the
    /// caller checks).
    pub fn merge(&mut self, other: &ClusterState) -> Changes {
        let mut changes = Changes::default();
        for node in other.removed.difference(&self.removed.clone()) {
            self.remove_member(node);
            changes.members = true;
            changes.any = true;
        }
        for (node, theirs) in other.members.iter().filter(|(n, _)| !self.removed.contains(*n)) {
            match self.members.get(node) {
                Some(ours) if ours.stamp() >= theirs.stamp() => {}
                ours => {
                    changes.any = true;
                    let heartbeat_only = ours.is_some_and(|o| same_but_version(o, theirs));
                    changes.members |= !heartbeat_only;
                    self.members.insert(node.clone(), theirs.clone());
                }
            }
        }
        if other.ring.stamp() > self.ring.stamp() {
            self.ring = other.ring.clone();
            changes.ring = true;
            changes.any = true;
        }
        if self.plan.merge(&other.plan) {
            changes.members = true;
            changes.any = true;
        }
        for (node, theirs) in &other.departures {
            if self.departures.get(node).is_none_or(|ours| ours < theirs) {
                self.departures.insert(node.clone(), theirs.clone());
                changes.members = true;
                changes.any = true;
            }
        }
        // Bindings are set once; two views can only disagree if a node was
        // bound twice concurrently (joined through two seeds with two
        // certificates): the smaller name wins everywhere, so views agree.
        for (node, theirs) in other.certificate_names.iter().filter(|(n, _)| self.members.contains_key(*n)) {
            if self.certificate_names.get(node).is_none_or(|ours| theirs < ours) {
                self.certificate_names.insert(node.clone(), theirs.clone());
                changes.members = true;
                changes.any = true;
            }
        }
        if security::merge(&mut self.tokens, &other.tokens) {
            changes.members = true;
            changes.any = true;
        }
        if self.buckets.merge(&other.buckets) {
            changes.members = true;
            changes.any = true;
        }
        changes
    }

    /// Changes the record of `node` (the local member) and bumps its version.
    pub fn update_member(&mut self, node: &NodeId, change: impl FnOnce(&mut Member)) {
        if let Some(m) = self.members.get_mut(node) {
            change(m);
            m.version += 1;
        }
    }

    /// The smallest member name that is up and not leaving.
    pub fn claimant(&self, is_up: impl Fn(&NodeId) -> bool) -> Option<&NodeId> {
        self.members
            .values()
            .filter(|m| !m.leaving && !self.departing(&m.node) && is_up(&m.node))
            .map(|m| &m.node)
            .next()
    }

    /// True while a committed leave or replacement of `node` runs.
    pub fn departing(&self, node: &NodeId) -> bool {
        self.departures.get(node).is_some_and(|d| !d.done)
    }

    /// What the planner gives each member: departing members nothing, a
    /// replacement at least what the member it replaced asked for.
    fn claims(&self) -> Vec<Claim> {
        self.members
            .values()
            .map(|m| {
                let inherited =
                    self.departures.values().filter(|d| d.by.as_ref() == Some(&m.node)).map(|d| d.claim).max();
                let wanted =
                    if m.leaving || self.departing(&m.node) { 0 } else { m.wanted_claim.max(inherited.unwrap_or(0)) };
                Claim { node: m.node.clone(), wanted }
            })
            .collect()
    }

    /// The ring the claimant aims for. A replacement in progress moves
    /// exactly the replaced members' partitions, to their replacements (and
    /// rebalances only if leaves were committed with it); otherwise claims
    /// are honoured from the current ring, departing members claiming 0.
    pub fn desired_ring(&self, planner: &mut Planner) -> Result<Ring, RingError> {
        let heirs: BTreeMap<&NodeId, &NodeId> = self
            .departures
            .iter()
            .filter(|(old, d)| !d.done && self.members.contains_key(*old))
            .filter_map(|(old, d)| d.by.as_ref().filter(|by| self.members.contains_key(*by)).map(|by| (old, by)))
            .collect();
        if heirs.is_empty() {
            return planner.rebalance(&self.ring.current, &self.claims(), self.n_val);
        }
        let owners = self.ring.current.owners().iter().map(|o| (*heirs.get(o).unwrap_or(&o)).clone()).collect();
        let substituted = Ring::from_owners(owners)?;
        let leaves = self.departures.iter().any(|(n, d)| !d.done && d.by.is_none() && self.members.contains_key(n));
        if leaves { planner.rebalance(&substituted, &self.claims(), self.n_val) } else { Ok(substituted) }
    }

    /// True when `me` may act as claimant on this view: it is the smallest
    /// member up, and it sees a majority of the members up.
    pub fn eligible_claimant(&self, me: &NodeId, is_up: impl Fn(&NodeId) -> bool) -> bool {
        if self.claimant(&is_up) != Some(me) {
            return false;
        }
        let up = self.members.keys().filter(|n| is_up(n)).count();
        up * 2 > self.members.len()
    }

    /// The claimant's step, run by every node after gossip but effective only
    /// on the claimant: finish a move whose transfers are all done, or set a
    /// new target when claims or members changed. Returns true if the ring
    /// changed.
    ///
    /// A claimant that sees no majority of the members up plans nothing:
    /// across a partition each side has a claimant (the smallest member it
    /// sees up), and two claimants would each publish a ring at the next
    /// epoch. Replicas fence calls by epoch, so coordinators on the two
    /// rings would both be served, and a write could be acknowledged on
    /// holders the ring that wins does not have (found by the simulator).
    pub fn plan_ring(&mut self, me: &NodeId, is_up: impl Fn(&NodeId) -> bool, planner: &mut Planner) -> bool {
        if !self.eligible_claimant(me, &is_up) {
            return false;
        }
        let finished = self.finish_departures();
        let committed = self.apply_plan(me);
        if let Some(target) = &self.ring.target
            && self.move_complete()
        {
            let target = target.clone();
            self.bump_ring(me, |ring| {
                ring.current = target;
                ring.target = None;
            });
            return true;
        }
        let desired = match self.desired_ring(planner) {
            Ok(ring) => ring,
            // Every claim is 0: keep the ring rather than strand the data.
            Err(_) => return finished || committed,
        };
        let wanted = (desired != self.ring.current).then_some(desired);
        if wanted == self.ring.target {
            return finished || committed;
        }
        self.bump_ring(me, |ring| {
            ring.target = wanted;
            ring.target_epoch = ring.epoch;
        });
        true
    }

    /// Stages `change` for `node`, as `me`. Checks what can be checked now;
    /// the claimant checks again when it commits. Staging again for the same
    /// node replaces its change.
    pub fn stage(&mut self, me: &NodeId, node: &NodeId, change: Change) -> Result<(), PlanError> {
        if !self.members.contains_key(node) {
            return Err(PlanError::UnknownMember(node.clone()));
        }
        if self.departing(node) {
            return Err(PlanError::AlreadyDeparting(node.clone()));
        }
        // Members that would still hold data once every staged change and
        // this one are applied.
        let staged = self.plan.staged();
        let going = |n: &NodeId| n == node || self.departing(n) || staged.contains_key(n);
        let staying = self.members.keys().filter(|n| !going(n)).count();
        match &change {
            Change::Leave | Change::Remove if staying == 0 => {
                let what = if change == Change::Leave { "leave" } else { "be removed" };
                return Err(PlanError::LastMember { node: node.clone(), what });
            }
            Change::Remove if node == me => return Err(PlanError::RemoveSelf(node.clone())),
            Change::Replace { by } if by == node => return Err(PlanError::ReplaceBySelf(node.clone())),
            Change::Replace { by } => {
                let bad = |why| Err(PlanError::BadReplacement { old: node.clone(), by: by.clone(), why });
                if !self.members.contains_key(by) {
                    return bad("not a member (start it with -j first)");
                }
                if going(by) {
                    return bad("leaving, being removed or replaced itself");
                }
                let heir = |c: &Change| matches!(c, Change::Replace { by: b } if b == by);
                if staged.iter().any(|(n, c)| n != node && heir(c))
                    || self.departures.values().any(|d| !d.done && d.by.as_ref() == Some(by))
                {
                    return bad("already taking over another node");
                }
            }
            _ => {}
        }
        let removals = staged.values().filter(|c| **c != Change::Leave).count() + 1;
        if self.removed.len() + removals > MAX_REMOVED {
            return Err(PlanError::TooManyRemoved { node: node.clone(), max: MAX_REMOVED });
        }
        let version = self.plan.next_version();
        self.plan.changes.insert(node.clone(), Staged { version, author: me.clone(), change: Some(change) });
        Ok(())
    }

    /// Drops every staged change, as `me`.
    pub fn clear_plan(&mut self, me: &NodeId) {
        self.unstage(me, |_| true);
    }

    /// Unstages the changes `which` picks, each with a new stamp.
    fn unstage(&mut self, me: &NodeId, which: impl Fn(&Staged) -> bool) {
        let version = self.plan.next_version();
        for staged in self.plan.changes.values_mut().filter(|s| s.change.is_some() && which(s)) {
            *staged = Staged { version, author: me.clone(), change: None };
        }
    }

    /// Asks the claimant to apply the staged changes, as `me`.
    pub fn request_commit(&mut self, me: &NodeId) -> Result<(), PlanError> {
        if self.plan.staged().is_empty() {
            return Err(PlanError::NothingStaged);
        }
        self.plan.commit = (self.plan.next_version(), me.clone());
        Ok(())
    }

    /// The claimant's half of a commit: every change staged before the
    /// commit request becomes a cluster-level fact at once (a removal drops
    /// the member for good, a leave or replacement is recorded in
    /// `departures`) and is unstaged; the caller then plans the one ring
    /// change that follows. Changes no longer possible (a member gone
    /// meanwhile) are dropped. Changes staged after the request wait for
    /// the next one.
    fn apply_plan(&mut self, me: &NodeId) -> bool {
        if !self.plan.commit_pending() {
            return false;
        }
        let request = self.plan.commit.clone();
        let before = |s: &Staged| (s.version, &s.author) <= (request.0, &request.1);
        let staged: Vec<(NodeId, Change)> = self
            .plan
            .changes
            .iter()
            .filter(|(_, s)| before(s))
            .filter_map(|(n, s)| Some((n.clone(), s.change.clone()?)))
            .collect();
        self.unstage(me, before);
        self.plan.applied = request;
        for (node, change) in staged {
            let Some(claim) = self.members.get(&node).map(|m| m.wanted_claim) else { continue };
            match change {
                Change::Remove => self.remove_member(&node),
                Change::Leave => {
                    self.departures.insert(node, Departure { done: false, by: None, claim });
                }
                Change::Replace { by } if self.members.contains_key(&by) => {
                    self.departures.insert(node, Departure { done: false, by: Some(by), claim });
                }
                Change::Replace { .. } => {}
            }
        }
        true
    }

    /// The claimant marks a departure done once the ring gives the member
    /// nothing (current and target), and removes the member for good: it no
    /// longer counts towards a majority, and if it comes back it is refused.
    fn finish_departures(&mut self) -> bool {
        let owns = |ring: &Ring, n: &NodeId| ring.claimed_by(n) > 0;
        let finished: Vec<NodeId> = self
            .departures
            .iter()
            .filter(|(_, d)| !d.done)
            .filter(|(n, _)| {
                !self.members.contains_key(*n)
                    || (!owns(&self.ring.current, n) && self.ring.target.as_ref().is_none_or(|t| !owns(t, n)))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for node in &finished {
            if let Some(d) = self.departures.get_mut(node) {
                d.done = true;
            }
            if self.members.contains_key(node) {
                self.remove_member(node);
            }
        }
        !finished.is_empty()
    }

    /// What committing the staged changes now would aim for: the ring before
    /// (current) and after. Nothing moves until the commit.
    pub fn preview(&self, me: &NodeId) -> Result<(Ring, Ring), RingError> {
        let mut next = self.clone();
        next.plan.commit = (next.plan.next_version(), me.clone());
        next.apply_plan(me);
        let after = next.desired_ring(&mut Planner::default())?;
        Ok((self.ring.current.clone(), after))
    }

    /// Makes the target current at once, whatever was sent: the bug the
    /// fault suite's `switch-before-data-moved` canary runs (never called
    /// otherwise). Only the claimant does it; true if the ring changed.
    pub fn force_switch(&mut self, me: &NodeId, is_up: impl Fn(&NodeId) -> bool) -> bool {
        if self.claimant(is_up) != Some(me) {
            return false;
        }
        let Some(target) = self.ring.target.take() else { return false };
        self.bump_ring(me, |ring| ring.current = target);
        true
    }

    fn bump_ring(&mut self, me: &NodeId, change: impl FnOnce(&mut RingState)) {
        self.ring.epoch += 1;
        self.ring.author = me.clone();
        change(&mut self.ring);
    }

    /// Names the move in progress: a hash of the target epoch and both
    /// rings. Two claimants that set different targets at one epoch, or a
    /// target set again after a round trip, name different moves; a done
    /// report for one never counts for another.
    pub fn move_id(&self) -> Option<u64> {
        let target = self.ring.target.as_ref()?;
        let mut h = Sha1::new();
        h.update(self.ring.target_epoch.to_be_bytes());
        for ring in [&self.ring.current, target] {
            for owner in ring.owners() {
                h.update((owner.as_str().len() as u32).to_be_bytes());
                h.update(owner.as_str().as_bytes());
            }
        }
        let digest: [u8; 20] = h.finalize().into();
        // Never 0, which a record that never sent anything carries.
        Some(u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")).max(1))
    }

    /// How many current holders of a moving partition must have sent it
    /// before the ring may switch: `N - W + 1` (see the module comment),
    /// at most the holders there are.
    fn senders_needed(&self, holders: usize) -> usize {
        (self.n_val + 1).saturating_sub(self.w).clamp(1, holders.max(1))
    }

    /// Every transfer the current move needs now, done or not: for each
    /// moving partition, the holders that already reported it for this move,
    /// plus enough live ones (leaving first) to reach `N - W + 1` senders.
    /// A dead or replaced holder is not asked; its place goes to the next.
    pub fn transfers(&self, is_up: impl Fn(&NodeId) -> bool) -> Vec<Transfer> {
        let (Some(target), Some(move_id)) = (&self.ring.target, self.move_id()) else { return Vec::new() };
        let mut out = Vec::new();
        for p in 0..self.partitions() {
            let old = self.ring.current.holders(p, self.n_val);
            let new = target.holders(p, self.n_val);
            let to: Vec<NodeId> = new.iter().filter(|n| !old.contains(n)).cloned().collect();
            if to.is_empty() {
                continue;
            }
            let needed = self.senders_needed(old.len());
            let done = |n: &NodeId| self.sent(n, p, move_id);
            let leaving = old.iter().filter(|n| !new.contains(n));
            let staying = old.iter().filter(|n| new.contains(n));
            let mut senders: Vec<&NodeId> = old.iter().filter(|n| done(n)).collect();
            for candidate in leaving.chain(staying) {
                if senders.len() >= needed {
                    break;
                }
                if !done(candidate) && is_up(candidate) && self.members.contains_key(candidate) {
                    senders.push(candidate);
                }
            }
            for from in senders {
                out.push(Transfer { partition: p, from: from.clone(), to: to.clone(), move_id });
            }
        }
        out
    }

    /// Transfers not yet reported done for this move.
    pub fn pending_transfers(&self, is_up: impl Fn(&NodeId) -> bool) -> Vec<Transfer> {
        self.transfers(is_up).into_iter().filter(|t| !self.sent(&t.from, t.partition, t.move_id)).collect()
    }

    /// True when every moving partition has been sent by enough of its
    /// current holders: the ring may switch without losing an acknowledged
    /// write. False when there are too few live holders to get there.
    /// (Nothing is then pending: [`ClusterState::transfers`] asks no more
    /// senders of a partition that already has enough.)
    pub fn move_complete(&self) -> bool {
        let (Some(target), Some(move_id)) = (&self.ring.target, self.move_id()) else { return false };
        (0..self.partitions()).all(|p| {
            let old = self.ring.current.holders(p, self.n_val);
            if target.holders(p, self.n_val).iter().all(|n| old.contains(n)) {
                return true;
            }
            let sent = old.iter().filter(|n| self.sent(n, p, move_id)).count();
            sent >= self.senders_needed(old.len())
        })
    }

    fn sent(&self, node: &NodeId, partition: Partition, move_id: u64) -> bool {
        self.members.get(node).is_some_and(|m| m.transfers_epoch == move_id && m.transfers_done.contains(&partition))
    }

    /// What `me` still has to send for the current move.
    pub fn my_transfers(&self, me: &NodeId, is_up: impl Fn(&NodeId) -> bool) -> Vec<Transfer> {
        self.transfers(is_up)
            .into_iter()
            .filter(|t| &t.from == me && !self.sent(&t.from, t.partition, t.move_id))
            .collect()
    }

    /// Drops `node` from the cluster for good: a node whose data directory
    /// was lost and that came back under a new id replaces its old self.
    /// Grow-only, so every view learns it whatever the gossip order.
    pub fn remove_member(&mut self, node: &NodeId) {
        self.members.remove(node);
        self.certificate_names.remove(node);
        self.removed.insert(node.clone());
    }

    /// Records that `me` finished `transfer`. A transfer of a move that is
    /// no longer the current one records nothing (returns false): its data
    /// may have gone to holders the new target no longer names, or not to
    /// the ones it adds.
    pub fn mark_transfer_done(&mut self, me: &NodeId, transfer: &Transfer) -> bool {
        if self.move_id() != Some(transfer.move_id) {
            return false;
        }
        let move_id = transfer.move_id;
        self.update_member(me, |m| {
            if m.transfers_epoch != move_id {
                m.transfers_epoch = move_id;
                m.transfers_done.clear();
            }
            m.transfers_done.insert(transfer.partition);
        });
        true
    }
}

/// What moving from ring `before` to `after` costs, for `n` replicas: the
/// partitions whose holders change, and the copies to send (one per
/// partition and holder that is new to it).
pub fn moves(before: &Ring, after: &Ring, n: usize) -> (u32, u32) {
    let (mut partitions, mut copies) = (0, 0);
    for p in 0..before.partitions() {
        let old = before.holders(p, n);
        let new = after.holders(p, n).into_iter().filter(|h| !old.contains(h)).count() as u32;
        partitions += u32::from(new > 0);
        copies += new;
    }
    (partitions, copies)
}

/// True when two records of one member differ only in their version.
fn same_but_version(a: &Member, b: &Member) -> bool {
    Member { version: 0, ..a.clone() } == Member { version: 0, ..b.clone() }
}

/// Holds a node back from acting as claimant until its view has settled.
///
/// The claimant is the smallest member a node sees up, and failure detectors
/// disagree for a while after a partition heals: the smallest member, back
/// from the minority side, sees a majority and plans at once, while the
/// majority's claimant has not yet heard it is back and plans too; both
/// publish a ring at one epoch (the simulator's seed 2000156). So a node acts
/// only once it has been the claimant, seeing a majority, for `settle_ms`
/// (a failure timeout: by then the previous claimant has seen it up and
/// stepped back, since the gossip that showed it the majority carried its
/// heartbeat the other way), and no sooner than `settle_ms` after it last
/// learnt a ring another member made (a claimant still acting).
#[derive(Debug, Clone)]
pub struct ClaimantGate {
    settle_ms: u64,
    eligible_since: Option<u64>,
    other_ring_at: Option<u64>,
    /// Alone at start, and the claimant ever since: no wait.
    alone: bool,
}

impl ClaimantGate {
    /// A node alone in its cluster has no other claimant to wait for.
    pub fn new(settle_ms: u64, now_ms: u64, alone: bool) -> ClaimantGate {
        ClaimantGate { settle_ms, eligible_since: alone.then_some(now_ms), other_ring_at: None, alone }
    }

    /// This node learnt a ring another member made.
    pub fn other_ring(&mut self, now_ms: u64) {
        self.other_ring_at = Some(now_ms);
    }

    /// Whether a node that is (or is not) `eligible` now may plan.
    pub fn may_plan(&mut self, eligible: bool, now_ms: u64) -> bool {
        if !eligible {
            self.eligible_since = None;
            self.alone = false;
            return false;
        }
        let since = *self.eligible_since.get_or_insert(now_ms);
        let settled = |at: u64| now_ms.saturating_sub(at) >= self.settle_ms;
        (self.alone || settled(since)) && self.other_ring_at.is_none_or(settled)
    }
}

/// Accrual-free failure detector: a member is up while its record's
/// `(generation, version)` has advanced within `timeout_ms`. Time is passed in.
///
/// A member that said it is going down (a clean shutdown) is down at once,
/// not after the timeout, and stays down until a record of it newer than
/// the one it stopped with arrives: its next start writes one (a higher
/// generation), so it comes back up as soon as gossip brings that.
#[derive(Debug, Clone)]
pub struct FailureDetector {
    timeout_ms: u64,
    /// node -> (stamp last seen, when it last advanced)
    seen: BTreeMap<NodeId, ((u64, u64), u64)>,
    /// node -> the stamp of its record when it said it was going down.
    stopped: BTreeMap<NodeId, (u64, u64)>,
}

impl FailureDetector {
    pub fn new(timeout_ms: u64) -> FailureDetector {
        FailureDetector { timeout_ms, seen: BTreeMap::new(), stopped: BTreeMap::new() }
    }

    /// Looks at every record; a first sighting counts as a sign of life.
    pub fn observe(&mut self, state: &ClusterState, now_ms: u64) {
        for m in state.members.values() {
            let stamp = m.stamp();
            // Only a record newer than the one it stopped with is a new
            // life: the old one may still reach us by gossip.
            if self.stopped.get(&m.node).is_some_and(|at| stamp > *at) {
                self.stopped.remove(&m.node);
            }
            match self.seen.get_mut(&m.node) {
                Some((last, _)) if *last == stamp => {}
                Some(entry) => *entry = (stamp, now_ms),
                None => {
                    self.seen.insert(m.node.clone(), (stamp, now_ms));
                }
            }
        }
        self.seen.retain(|node, _| state.members.contains_key(node));
        self.stopped.retain(|node, _| state.members.contains_key(node));
    }

    /// `node` said it is going down with its record at `stamp`
    /// (`(generation, version)`): down from now until a newer record of it
    /// is observed. A notice older than the record `state` holds for it
    /// comes from an earlier life (it has started again since): ignored,
    /// as is one for a node that is not a member. Returns whether it was
    /// taken.
    pub fn going_down(&mut self, state: &ClusterState, node: &NodeId, stamp: (u64, u64)) -> bool {
        match state.members.get(node) {
            Some(m) if m.stamp() <= stamp => {
                let at = self.stopped.entry(node.clone()).or_insert(stamp);
                *at = (*at).max(stamp);
                true
            }
            _ => false,
        }
    }

    pub fn is_up(&self, node: &NodeId, now_ms: u64) -> bool {
        !self.stopped.contains_key(node)
            && self.seen.get(node).is_some_and(|(_, at)| now_ms.saturating_sub(*at) <= self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId::new(n)
    }

    fn member(n: &str, claim: u32) -> Member {
        Member::new(node(n), format!("{n}:h"), format!("{n}:c"), claim, 1)
    }

    fn cluster(names: &[&str], partitions: u32) -> ClusterState {
        let mut s = ClusterState::new(7, member(names[0], partitions), partitions, 3, 2, 2).unwrap();
        for n in &names[1..] {
            s.members.insert(node(n), member(n, partitions));
        }
        s
    }

    fn all_up(_: &NodeId) -> bool {
        true
    }

    /// Runs claimant steps and completes every transfer until the ring is
    /// stable.
    fn settle(s: &mut ClusterState) {
        for _ in 0..10 {
            let claimant = s.claimant(all_up).unwrap().clone();
            for t in s.my_transfers_all() {
                s.mark_transfer_done(&t.from, &t);
            }
            if !s.plan_ring(&claimant, all_up, &mut Planner::default()) {
                return;
            }
        }
        panic!("ring did not settle");
    }

    impl ClusterState {
        fn my_transfers_all(&self) -> Vec<Transfer> {
            self.members.keys().flat_map(|m| self.my_transfers(m, all_up)).collect()
        }
    }

    #[test]
    fn a_joiner_gets_its_share_only_after_transfers() {
        let mut s = cluster(&["a"], 16);
        s.members.insert(node("b"), member("b", 16));
        assert!(s.plan_ring(&node("a"), all_up, &mut Planner::default()), "claimant sets a target");
        assert!(s.ring.target.is_some());
        assert_eq!(s.ring.current.claimed_by(&node("b")), 0, "ownership waits for data");
        // From one node to two: every partition goes from a to b.
        let transfers = s.my_transfers(&node("a"), all_up);
        assert_eq!(transfers.len(), 16);
        assert!(transfers.iter().all(|t| t.to == vec![node("b")]));
        assert!(!s.plan_ring(&node("a"), all_up, &mut Planner::default()), "nothing done yet: no change");
        for t in &transfers[..15] {
            s.mark_transfer_done(&node("a"), t);
        }
        assert!(!s.plan_ring(&node("a"), all_up, &mut Planner::default()), "one transfer left");
        s.mark_transfer_done(&node("a"), &transfers[15]);
        assert!(s.plan_ring(&node("a"), all_up, &mut Planner::default()));
        assert_eq!(s.ring.current.claimed_by(&node("b")), 8);
        assert_eq!(s.ring.target, None);
        assert!(!s.plan_ring(&node("a"), all_up, &mut Planner::default()), "stable");
    }

    #[test]
    fn a_replaced_member_is_removed_everywhere_and_live_holders_send_its_data() {
        let mut s = cluster(&["a", "b", "c"], 16);
        settle(&mut s);
        // c lost its disk and came back as d.
        let mut other_view = s.clone();
        other_view.remove_member(&node("c"));
        other_view.members.insert(node("d"), member("d", 16));
        let changes = s.merge(&other_view);
        assert!(changes.members);
        assert!(!s.members.contains_key(&node("c")));
        // A stale view that still has c cannot bring it back.
        let mut stale = cluster(&["a", "b", "c"], 16);
        stale.ring = s.ring.clone();
        s.merge(&stale);
        assert!(!s.members.contains_key(&node("c")));
        let up = |n: &NodeId| n != &node("c");
        assert!(s.plan_ring(&node("a"), up, &mut Planner::default()));
        // c is gone: a and b, which stay, send its partitions to d.
        let transfers = s.pending_transfers(up);
        assert!(!transfers.is_empty());
        assert!(transfers.iter().all(|t| t.from != node("c") && t.to == vec![node("d")]), "{transfers:?}");
        for t in transfers {
            s.mark_transfer_done(&t.from, &t);
        }
        assert!(s.plan_ring(&node("a"), up, &mut Planner::default()));
        assert_eq!(s.ring.current.claimed_by(&node("c")), 0);
        assert!(s.ring.current.claimed_by(&node("d")) > 0);
    }

    #[test]
    fn only_the_claimant_changes_the_ring() {
        let mut s = cluster(&["a", "b", "c"], 8);
        assert!(!s.plan_ring(&node("b"), all_up, &mut Planner::default()));
        // With a down, b is the claimant.
        assert!(s.plan_ring(&node("b"), |n| n != &node("a"), &mut Planner::default()));
        assert_eq!(s.ring.author, node("b"));
    }

    /// Across a partition each side has a claimant; only the one that sees a
    /// majority may change the ring, or the two sides would publish
    /// different rings under one epoch (the simulator's seed 2000156).
    #[test]
    fn a_claimant_that_sees_only_a_minority_plans_nothing() {
        let names = ["a", "b", "c", "d", "e"];
        let mut s = cluster(&names, 16);
        settle(&mut s);
        s.members.get_mut(&node("a")).unwrap().wanted_claim = 1;
        let (mut minority, mut majority) = (s.clone(), s.clone());
        let small = |n: &NodeId| ["a", "b"].contains(&n.as_str());
        let large = |n: &NodeId| !small(n);
        assert_eq!(minority.claimant(small), Some(&node("a")));
        assert!(!minority.plan_ring(&node("a"), small, &mut Planner::default()), "2 of 5 up: no plan");
        assert_eq!(majority.claimant(large), Some(&node("c")));
        assert!(majority.plan_ring(&node("c"), large, &mut Planner::default()), "3 of 5 up: plans");
        // Two nodes of two: a majority of one is not enough either.
        let mut pair = cluster(&["a", "b"], 8);
        assert!(!pair.plan_ring(&node("b"), |n| n != &node("a"), &mut Planner::default()));
    }

    /// Right after a heal the smallest member, back from the minority side,
    /// sees a majority before the majority's claimant has heard it is back:
    /// both would plan at one epoch. The gate makes the newcomer wait a
    /// failure timeout, and wait again after each ring the other publishes.
    #[test]
    fn a_new_claimant_waits_until_the_old_one_has_stepped_back() {
        let mut gate = ClaimantGate::new(1000, 0, false);
        assert!(!gate.may_plan(false, 0));
        assert!(!gate.may_plan(true, 100), "just became the claimant");
        assert!(!gate.may_plan(true, 900));
        gate.other_ring(1000);
        assert!(!gate.may_plan(true, 1500), "another claimant is still acting");
        assert!(gate.may_plan(true, 2000));
        assert!(!gate.may_plan(false, 2100), "not the claimant any more");
        assert!(!gate.may_plan(true, 2200), "the wait starts again");
        assert!(gate.may_plan(true, 3200));
        let mut alone = ClaimantGate::new(1000, 50, true);
        assert!(alone.may_plan(true, 50), "a cluster of one has no other claimant");
    }

    #[test]
    fn rings_of_one_epoch_by_two_authors_have_different_hashes() {
        let s = cluster(&["a", "b"], 8);
        let mut other = s.ring.clone();
        other.author = node("b");
        assert_ne!(s.ring.hash(), other.hash());
        assert_ne!(s.ring.hash(), 0);
        let mut later = s.ring.clone();
        later.epoch += 1;
        assert_eq!(later.hash(), s.ring.hash(), "the epoch is fenced on its own");
    }

    #[test]
    fn a_move_waits_for_enough_senders_and_a_sender_that_died_after_sending_counts() {
        // N=3, W=2: each moving partition needs 2 of its 3 holders to send.
        let mut s = cluster(&["a", "b", "c"], 8);
        settle(&mut s);
        s.members.insert(node("d"), member("d", 8));
        assert!(s.plan_ring(&node("a"), all_up, &mut Planner::default()));
        let only_a = |n: &NodeId| n == &node("a") || n == &node("d");
        // With b and c down, a alone cannot cover a write b and c
        // acknowledged: it sends, but the ring does not switch. (Before, the
        // move completed here and such a write was on one new holder.)
        for t in s.my_transfers(&node("a"), only_a) {
            s.mark_transfer_done(&node("a"), &t);
        }
        assert!(s.pending_transfers(only_a).is_empty(), "nobody else can send");
        assert!(!s.move_complete());
        assert!(!s.plan_ring(&node("a"), only_a, &mut Planner::default()), "no switch with too few senders");
        // b comes back and sends what it must; then b dies again: its
        // finished transfers still count.
        let a_and_b = |n: &NodeId| n != &node("c");
        let from_b = s.my_transfers(&node("b"), a_and_b);
        assert!(!from_b.is_empty());
        for t in from_b {
            s.mark_transfer_done(&node("b"), &t);
        }
        // b is down again and c is back, so the claimant sees a majority (it
        // plans nothing with a minority up): b's transfers still count.
        let not_b = |n: &NodeId| n != &node("b");
        assert!(s.plan_ring(&node("a"), not_b, &mut Planner::default()), "two senders per partition: switch");
        assert_eq!(s.ring.current.claimed_by(&node("d")), 2);
    }

    #[test]
    fn a_claimant_cut_off_from_everyone_never_switches() {
        let mut s = cluster(&["a", "b", "c"], 8);
        settle(&mut s);
        s.members.insert(node("d"), member("d", 8));
        let alone = |n: &NodeId| n == &node("a");
        for _ in 0..5 {
            for t in s.my_transfers(&node("a"), alone) {
                s.mark_transfer_done(&node("a"), &t);
            }
            s.plan_ring(&node("a"), alone, &mut Planner::default());
        }
        assert_eq!(s.ring.current.claimed_by(&node("d")), 0, "switched with no data moved");
    }

    #[test]
    fn a_transfer_done_for_an_older_target_does_not_count() {
        // A stream runs while a second node joins: the target changes under
        // it. Its completion names the move it was for and records nothing.
        let mut s = cluster(&["a", "b", "c"], 16);
        settle(&mut s);
        s.members.insert(node("d"), member("d", 16));
        assert!(s.plan_ring(&node("a"), all_up, &mut Planner::default()));
        let before = s.transfers(all_up);
        s.members.insert(node("e"), member("e", 16));
        assert!(s.plan_ring(&node("a"), all_up, &mut Planner::default()), "a new target for the second join");
        let after = s.transfers(all_up);
        assert!(before.iter().all(|t| t.move_id != after[0].move_id));
        for t in &before {
            assert!(!s.mark_transfer_done(&t.from, t), "recorded against the wrong target");
        }
        assert_eq!(s.pending_transfers(all_up).len(), after.len(), "everything is still to send");
        // Two claimants setting different targets at the same epoch name
        // different moves too.
        let mut other = s.clone();
        other.ring.target = Some(Ring::single(16, node("e")).unwrap());
        assert_ne!(other.move_id(), s.move_id());
    }

    #[test]
    fn transfers_go_from_current_holders_leaving_ones_first_to_new_holders() {
        let mut s = cluster(&["a", "b", "c"], 16);
        settle(&mut s);
        s.members.insert(node("d"), member("d", 16));
        s.plan_ring(&node("a"), all_up, &mut Planner::default());
        let target = s.ring.target.clone().unwrap();
        let mut senders: BTreeMap<Partition, Vec<NodeId>> = BTreeMap::new();
        for t in s.transfers(all_up) {
            let old = s.ring.current.holders(t.partition, 3);
            let new = target.holders(t.partition, 3);
            assert!(old.contains(&t.from), "{t:?}");
            assert!(t.to.iter().all(|n| new.contains(n) && !old.contains(n)), "{t:?}");
            senders.entry(t.partition).or_default().push(t.from.clone());
        }
        for (p, from) in senders {
            assert_eq!(from.len(), 2, "N - W + 1 senders for partition {p}");
            let new = target.holders(p, 3);
            assert!(!new.contains(&from[0]), "a leaving holder sends first: {from:?}");
        }
    }

    #[test]
    fn claim_changes_move_partitions_and_settle() {
        let mut s = cluster(&["a", "b", "c"], 64);
        settle(&mut s);
        for n in ["a", "b", "c"] {
            assert!((21..=22).contains(&s.ring.current.claimed_by(&node(n))));
        }
        s.update_member(&node("c"), |m| m.wanted_claim = 0);
        settle(&mut s);
        assert_eq!(s.ring.current.claimed_by(&node("c")), 0);
        assert_eq!(s.ring.current.claimed_by(&node("a")), 32);
    }

    #[test]
    fn merge_takes_newer_records_and_rings() {
        let mut a = cluster(&["a", "b"], 8);
        let mut b = a.clone();
        b.update_member(&node("b"), |m| m.wanted_claim = 3);
        b.plan_ring(&node("a"), all_up, &mut Planner::default());
        let changes = a.merge(&b);
        assert!(changes.members && changes.ring && changes.any);
        assert_eq!(a, b);
        assert_eq!(a.merge(&b), Changes::default(), "idempotent");
        // A heartbeat is a change, but not a membership change.
        b.update_member(&node("b"), |_| {});
        assert_eq!(a.merge(&b), Changes { members: false, ring: false, any: true });
        // An older record never wins.
        let old = a.clone();
        a.update_member(&node("a"), |m| m.wanted_claim = 1);
        let mut newer = a.clone();
        newer.merge(&old);
        assert_eq!(newer, a);
    }

    #[test]
    fn a_restarted_member_wins_with_its_new_generation() {
        let mut s = cluster(&["a", "b"], 8);
        for _ in 0..100 {
            s.update_member(&node("b"), |_| {});
        }
        let mut restarted = s.clone();
        restarted.members.insert(node("b"), Member::new(node("b"), "new:h".into(), "new:c".into(), 8, 2));
        s.merge(&restarted);
        assert_eq!(s.members[&node("b")].cluster_address, "new:c");
    }

    /// Commits as an operator would: stage, ask for a commit, then the
    /// claimant's steps with every transfer done, until the ring settles.
    fn commit(s: &mut ClusterState, changes: &[(&str, Change)]) {
        for (n, change) in changes {
            s.stage(&node("b"), &node(n), change.clone()).unwrap();
        }
        s.request_commit(&node("b")).unwrap();
    }

    fn owned(s: &ClusterState, n: &str) -> u32 {
        s.ring.current.claimed_by(&node(n))
    }

    #[test]
    fn a_staged_leave_moves_nothing_until_committed_then_the_leaver_hands_everything_over() {
        let mut s = cluster(&["a", "b", "c", "d", "e"], 32);
        settle(&mut s);
        let before = s.ring.clone();
        s.stage(&node("c"), &node("c"), Change::Leave).unwrap();
        settle(&mut s);
        assert_eq!(s.ring, before, "staged only: nothing moves");
        let (now, after) = s.preview(&node("a")).unwrap();
        assert_eq!(now, before.current);
        assert_eq!(after.claimed_by(&node("c")), 0, "the plan shows c owning nothing");
        // c's partitions change owner, and few others (swaps that keep
        // replicas spread).
        let moved = (0..32).filter(|p| now.owner(*p) != after.owner(*p)).count() as u32;
        let of_c = now.claimed_by(&node("c"));
        assert!((of_c..=2 * of_c).contains(&moved), "{moved} moved for {of_c} of c's");
        let (partitions, copies) = moves(&now, &after, 3);
        assert!(partitions >= of_c && copies >= partitions, "{partitions} {copies}");
        s.request_commit(&node("e")).unwrap();
        assert!(s.plan_ring(&node("a"), all_up, &mut Planner::default()));
        assert!(s.plan.staged().is_empty() && !s.plan.commit_pending(), "the commit clears the plan");
        assert_eq!(s.ring.epoch, before.epoch + 1, "one ring change for the commit");
        assert!(s.departing(&node("c")));
        // c is a holder that leaves: it sends first.
        let transfers = s.transfers(all_up);
        let from_c = transfers.iter().filter(|t| t.from == node("c")).count();
        let from_c_needed = (0..32).filter(|p| s.ring.current.holders(*p, 3).contains(&node("c"))).count();
        assert_eq!(from_c, from_c_needed, "c sends every partition it holds");
        settle(&mut s);
        assert_eq!(owned(&s, "c"), 0);
        assert!(!s.members.contains_key(&node("c")) && s.removed.contains(&node("c")));
        assert_eq!(s.departures[&node("c")], Departure { done: true, by: None, claim: 32 });
        for n in ["a", "b", "d", "e"] {
            assert_eq!(owned(&s, n), 8);
        }
    }

    #[test]
    fn a_force_removed_dead_node_is_refilled_by_the_survivors() {
        let mut s = cluster(&["a", "b", "c", "d", "e"], 32);
        settle(&mut s);
        let up = |n: &NodeId| n != &node("d");
        assert_eq!(s.stage(&node("b"), &node("b"), Change::Remove), Err(PlanError::RemoveSelf(node("b"))));
        commit(&mut s, &[("d", Change::Remove)]);
        assert!(s.plan_ring(&node("a"), up, &mut Planner::default()));
        assert!(s.removed.contains(&node("d")) && !s.members.contains_key(&node("d")));
        // N - W + 1 = 2 senders per partition, none of them d, and enough.
        let transfers = s.pending_transfers(up);
        assert!(!transfers.is_empty());
        assert!(transfers.iter().all(|t| t.from != node("d") && !t.to.contains(&node("d"))), "{transfers:?}");
        for t in transfers {
            s.mark_transfer_done(&t.from, &t);
        }
        assert!(s.move_complete(), "two live holders of every partition sent it");
        assert!(s.plan_ring(&node("a"), up, &mut Planner::default()));
        assert_eq!(owned(&s, "d"), 0);
        // A stale view that still has d cannot bring it back.
        let mut stale = cluster(&["a", "b", "c", "d", "e"], 32);
        stale.members.get_mut(&node("d")).unwrap().version = 99;
        s.merge(&stale);
        assert!(!s.members.contains_key(&node("d")));
    }

    #[test]
    fn a_replacement_takes_over_exactly_the_old_nodes_partitions() {
        let mut s = cluster(&["a", "b", "c", "d"], 32);
        settle(&mut s);
        // f joins with claim 0, to be c's replacement; nothing moves for it.
        s.members.insert(node("f"), member("f", 0));
        settle(&mut s);
        assert_eq!(owned(&s, "f"), 0);
        let before = s.ring.current.clone();
        commit(&mut s, &[("c", Change::Replace { by: node("f") })]);
        let up = |n: &NodeId| n != &node("c");
        assert!(s.plan_ring(&node("a"), up, &mut Planner::default()));
        let target = s.ring.target.clone().unwrap();
        for p in 0..32 {
            let expected = if before.owner(p) == &node("c") { node("f") } else { before.owner(p).clone() };
            assert_eq!(target.owner(p), &expected, "partition {p}");
        }
        for t in s.pending_transfers(up) {
            s.mark_transfer_done(&t.from, &t);
        }
        assert!(s.plan_ring(&node("a"), up, &mut Planner::default()), "switch");
        assert!(s.plan_ring(&node("a"), up, &mut Planner::default()), "c is done and removed");
        assert!(!s.members.contains_key(&node("c")));
        assert_eq!(s.ring.current, target);
        // f inherited c's claim: the ring stays as it is.
        assert!(!s.plan_ring(&node("a"), up, &mut Planner::default()), "stable");
        assert_eq!(owned(&s, "f"), 8);
    }

    #[test]
    fn bad_stagings_and_commits_are_refused_and_a_plan_can_be_cleared() {
        let mut s = cluster(&["a", "b"], 8);
        settle(&mut s);
        assert_eq!(s.request_commit(&node("a")), Err(PlanError::NothingStaged));
        assert_eq!(s.stage(&node("a"), &node("zz"), Change::Leave), Err(PlanError::UnknownMember(node("zz"))));
        let by_self = Change::Replace { by: node("a") };
        assert_eq!(s.stage(&node("a"), &node("a"), by_self), Err(PlanError::ReplaceBySelf(node("a"))));
        let stranger = Change::Replace { by: node("zz") };
        assert!(matches!(s.stage(&node("a"), &node("a"), stranger), Err(PlanError::BadReplacement { .. })));
        s.stage(&node("a"), &node("a"), Change::Leave).unwrap();
        assert!(matches!(s.stage(&node("b"), &node("b"), Change::Leave), Err(PlanError::LastMember { .. })));
        let mut one = cluster(&["a"], 8);
        assert!(matches!(one.stage(&node("a"), &node("a"), Change::Leave), Err(PlanError::LastMember { .. })));
        s.clear_plan(&node("b"));
        assert!(s.plan.staged().is_empty());
        assert_eq!(s.request_commit(&node("a")), Err(PlanError::NothingStaged));
        let before = s.ring.clone();
        settle(&mut s);
        assert_eq!(s.ring, before, "a cleared plan moves nothing");
        s.stage(&node("a"), &node("b"), Change::Leave).unwrap();
        s.request_commit(&node("a")).unwrap();
        settle(&mut s);
        assert!(matches!(s.stage(&node("a"), &node("a"), Change::Leave), Err(PlanError::LastMember { .. })));
    }

    #[test]
    fn plans_and_departures_merge_by_their_stamps() {
        let base = cluster(&["a", "b", "c", "d"], 8);
        let (mut x, mut y) = (base.clone(), base.clone());
        x.stage(&node("a"), &node("c"), Change::Leave).unwrap();
        y.stage(&node("b"), &node("c"), Change::Remove).unwrap();
        y.stage(&node("b"), &node("d"), Change::Leave).unwrap();
        let (mut xy, mut yx) = (x.clone(), y.clone());
        xy.merge(&y);
        yx.merge(&x);
        assert_eq!(xy, yx, "the same everywhere");
        assert_eq!(xy.plan.staged()[&node("c")], Change::Remove, "one edit of c wins: (1, b) beats (1, a)");
        assert_eq!(xy.plan.staged()[&node("d")], Change::Leave, "changes of different members are all kept");
        // A clear through one node and a staging through another, at once:
        // the staging of a member the clear had not seen survives it.
        let (mut cleared, mut staged) = (xy.clone(), xy.clone());
        cleared.clear_plan(&node("a"));
        staged.stage(&node("b"), &node("a"), Change::Leave).unwrap();
        cleared.merge(&staged);
        assert_eq!(cleared.plan.staged().into_keys().collect::<Vec<_>>(), vec![node("a")]);
        x.departures.insert(node("c"), Departure { done: false, by: None, claim: 8 });
        y.departures.insert(node("c"), Departure { done: true, by: None, claim: 8 });
        x.merge(&y);
        assert!(x.departures[&node("c")].done, "a departure only moves forward");
    }

    #[test]
    fn a_certificate_name_is_bound_once_and_spreads_by_merge() {
        let mut x = cluster(&["a", "b"], 8);
        let y = x.clone();
        assert_eq!(x.bind_certificate(&node("a"), "node-a"), Ok(true));
        assert_eq!(x.bind_certificate(&node("a"), "node-a"), Ok(false), "the same name again changes nothing");
        let err = x.bind_certificate(&node("a"), "intruder").unwrap_err();
        assert_eq!((err.bound.as_str(), err.presented.as_str()), ("node-a", "intruder"));
        assert_eq!(x.bind_certificate(&node("zz"), "stranger"), Ok(false), "only members are bound");
        assert_eq!(x.bind_certificate(&node("b"), &"n".repeat(MAX_CERTIFICATE_NAME_BYTES + 1)), Ok(false));
        assert!(!x.certificate_names.contains_key(&node("zz")) && !x.certificate_names.contains_key(&node("b")));

        let mut z = y.clone();
        let changes = z.merge(&x);
        assert!(changes.members && changes.any, "a new binding is a change to persist");
        assert_eq!(z.certificate_names.get(&node("a")).map(String::as_str), Some("node-a"));
        assert_eq!(z.merge(&x), Changes::default());
        // A removed member's binding goes with it and does not come back.
        z.remove_member(&node("a"));
        z.merge(&x);
        assert!(!z.certificate_names.contains_key(&node("a")));
    }

    use crate::core::bucket::PropsPatch;
    use proptest::prelude::*;

    /// Random views of one cluster: heartbeats, claim changes, ring steps,
    /// staged changes, clears, commits, tokens, bucket types and bucket
    /// properties, and merges.
    fn arb_views() -> impl Strategy<Value = Vec<ClusterState>> {
        proptest::collection::vec((0usize..3, 0u8..13, 0u32..9), 0..30).prop_map(|ops| {
            let base = cluster(&["a", "b", "c"], 8);
            let mut views = vec![base.clone(), base.clone(), base];
            let names = ["a", "b", "c"];
            for (i, op, claim) in ops {
                let me = node(names[i]);
                let other = node(names[claim as usize % 3]);
                match op {
                    0 => views[i].update_member(&me, |_| {}),
                    1 => views[i].update_member(&me, |m| m.wanted_claim = claim),
                    // Concurrent, conflicting bindings: merge must still agree.
                    2 => {
                        let _ = views[i].bind_certificate(&other, &format!("cert-{}", (claim + i as u32) % 2));
                    }
                    3 => {
                        let _ = views[i].stage(&me, &other, Change::Leave);
                    }
                    4 => {
                        let _ = views[i].stage(&me, &other, Change::Remove);
                    }
                    5 => views[i].clear_plan(&me),
                    6 => {
                        let _ = views[i].request_commit(&me);
                    }
                    // Tokens, by name t0..t2 (names reused across views).
                    7 => {
                        let name = format!("t{}", claim % 3);
                        let _ = security::create(&mut views[i].tokens, &me, &name, [claim as u8; 32], vec![], None);
                    }
                    8 => {
                        let _ = security::revoke(&mut views[i].tokens, &me, &format!("t{}", claim % 3));
                    }
                    // Bucket types and bucket properties (names reused).
                    9 => {
                        let props = PropsPatch { n_val: Some(claim % 3 + 1), ..PropsPatch::default() };
                        let _ = views[i].buckets.create_type(&me, &format!("bt{}", claim % 2), props, 3);
                    }
                    10 => {
                        let _ = views[i].buckets.activate_type(&me, &format!("bt{}", claim % 2));
                    }
                    11 => {
                        let props = PropsPatch { allow_mult: Some(claim % 2 == 0), ..PropsPatch::default() };
                        let _ = views[i].buckets.set_bucket(&me, b"default", &[claim as u8 % 3], &props, 3);
                    }
                    _ => {
                        let other = views[(i + 1) % 3].clone();
                        views[i].merge(&other);
                        views[i].plan_ring(&me, all_up, &mut Planner::default());
                    }
                }
            }
            views
        })
    }

    fn merged(a: &ClusterState, b: &ClusterState) -> ClusterState {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        #[test]
        fn merge_is_commutative(v in arb_views()) {
            // Views whose rings share a stamp must agree on the ring for
            // commutativity; the claimant rule guarantees that in practice,
            // and here every ring change comes from the same claimant "a"
            // or from identical computations.
            prop_assume!(v[0].ring.stamp() != v[1].ring.stamp() || v[0].ring == v[1].ring);
            prop_assert_eq!(merged(&v[0], &v[1]), merged(&v[1], &v[0]));
        }

        #[test]
        fn merge_is_associative_and_idempotent(v in arb_views()) {
            prop_assert_eq!(merged(&merged(&v[0], &v[1]), &v[2]), merged(&v[0], &merged(&v[1], &v[2])));
            prop_assert_eq!(merged(&v[0], &v[0]), v[0].clone());
        }
    }

    #[test]
    fn detector_sees_silence_as_down_and_new_life_as_up() {
        let mut s = cluster(&["a", "b"], 8);
        let mut d = FailureDetector::new(1000);
        d.observe(&s, 0);
        assert!(d.is_up(&node("b"), 1000));
        assert!(!d.is_up(&node("b"), 1001));
        s.update_member(&node("b"), |_| {});
        d.observe(&s, 1500);
        assert!(d.is_up(&node("b"), 2400));
        assert!(!d.is_up(&node("zz"), 0), "unknown nodes are not up");
        s.members.remove(&node("b"));
        d.observe(&s, 1600);
        assert!(!d.is_up(&node("b"), 1600));
    }

    #[test]
    fn a_member_going_down_is_down_at_once_until_it_starts_again() {
        let mut s = cluster(&["a", "b"], 8);
        let mut d = FailureDetector::new(1000);
        d.observe(&s, 0);
        // b heartbeats once more, then says it stops with that record; we
        // have not seen the heartbeat yet.
        let old = s.clone();
        s.update_member(&node("b"), |_| {});
        let last = s.members[&node("b")].stamp();
        assert!(d.going_down(&old, &node("b"), last));
        assert!(!d.is_up(&node("b"), 1), "down at once, long before the timeout");
        // Its last heartbeat arrives late by gossip: still down.
        d.observe(&s, 10);
        assert!(!d.is_up(&node("b"), 10));
        // It starts again: a new generation.
        s.members.get_mut(&node("b")).unwrap().generation += 1;
        d.observe(&s, 20);
        assert!(d.is_up(&node("b"), 20));
        // A notice from before that start (delayed) changes nothing.
        assert!(!d.going_down(&s, &node("b"), last));
        assert!(d.is_up(&node("b"), 30));
        assert!(!d.going_down(&s, &node("zz"), (9, 9)), "not a member");
        assert!(d.is_up(&node("a"), 30), "others are untouched");
    }
}
