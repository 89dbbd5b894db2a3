//! The I/O half of membership: holds this node's view of the cluster
//! (`core::membership::ClusterState`), applies gossip and local changes to
//! it, persists it, and publishes the ring to the coordinator and workers.
//!
//! The rules (merge, claimant, transfers, failure detection) live in the
//! pure core; this type adds a lock, a clock, the data directory and a
//! `watch` channel that wakes workers when the ring changes.
//!
//! A node can learn from gossip that the cluster removed it for good (another
//! node replaced it: one that joined at its address without its data). It
//! is no member from then on: [`Membership::removed`] turns true (logged
//! once), the coordinator and the gRPC server refuse data, and the node
//! shuts down with [`MembershipError::Removed`]; it refuses to start again
//! on that data directory.
//!
//! A node can also learn that another live process runs under its id (a
//! copied or restored data directory; the rule is `core::duplicate`). It
//! stops the same way, with [`MembershipError::Duplicate`] naming the other
//! process's addresses, and leaves the other's record in place instead of
//! fighting over it.

use std::sync::{Arc, RwLock};

use crate::coordinator::{AddressBook, RingView, Topology};
use crate::core::bucket::{BucketEditError, BucketError, BucketProps, ClusterDefaults, PropsPatch};
use crate::core::duplicate::{Duplicate, DuplicateDetector};
use crate::core::key::NodeId;
use crate::core::membership::{
    CertificateMismatch, Change, Changes, ClaimantGate, ClusterState, FailureDetector, MAX_MEMBERS, MAX_REMOVED,
    Member, PlanError, Transfer,
};
use crate::core::ring::{Planner, Ring, RingError};
use crate::core::security::{self, Grant, Permission, Refusal, Resource, TokenError, TokenRecord};
use crate::env::Clock;
use crate::error::{ErrorCode, HasErrorCode};
use crate::storage::{StorageError, Store};
use crate::watched::Watched;

const META_CLUSTER_STATE: &str = "cluster_state";
const STATE_FORMAT_V1: u8 = 1;
/// V2 adds the staged plan and the departures (leave, force-remove,
/// replace); a V1 state is read as one with neither.
const STATE_FORMAT_V2: u8 = 2;
/// V3 adds the certificate names bound to node ids (mutual TLS); a V2 state
/// is read as one with none.
const STATE_FORMAT_V3: u8 = 3;
/// V4 adds client security (the flag and the token records); a V3 state is
/// read as one without security.
const STATE_FORMAT_V4: u8 = 4;
/// V5 adds bucket types and bucket properties; a V4 state is read as one
/// with none (every bucket of the default type, with its defaults).
const STATE_FORMAT_V5: u8 = 5;

/// The cluster state as format V4 stored it.
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct StateV4 {
    cluster_id: u64,
    n_val: usize,
    r: usize,
    w: usize,
    members: std::collections::BTreeMap<NodeId, Member>,
    removed: std::collections::BTreeSet<NodeId>,
    ring: crate::core::membership::RingState,
    plan: crate::core::membership::StagedPlan,
    departures: std::collections::BTreeMap<NodeId, crate::core::membership::Departure>,
    certificate_names: std::collections::BTreeMap<NodeId, String>,
    security: bool,
    tokens: security::Tokens,
}

/// The cluster state as format V3 stored it.
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct StateV3 {
    cluster_id: u64,
    n_val: usize,
    r: usize,
    w: usize,
    members: std::collections::BTreeMap<NodeId, Member>,
    removed: std::collections::BTreeSet<NodeId>,
    ring: crate::core::membership::RingState,
    plan: crate::core::membership::StagedPlan,
    departures: std::collections::BTreeMap<NodeId, crate::core::membership::Departure>,
    certificate_names: std::collections::BTreeMap<NodeId, String>,
}

/// The cluster state as format V2 stored it.
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct StateV2 {
    cluster_id: u64,
    n_val: usize,
    r: usize,
    w: usize,
    members: std::collections::BTreeMap<NodeId, Member>,
    removed: std::collections::BTreeSet<NodeId>,
    ring: crate::core::membership::RingState,
    plan: crate::core::membership::StagedPlan,
    departures: std::collections::BTreeMap<NodeId, crate::core::membership::Departure>,
}

/// The cluster state as format V1 stored it.
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct StateV1 {
    cluster_id: u64,
    n_val: usize,
    r: usize,
    w: usize,
    members: std::collections::BTreeMap<NodeId, Member>,
    removed: std::collections::BTreeSet<NodeId>,
    ring: crate::core::membership::RingState,
}

/// How long, in failure timeouts, the evidence of a second live process is
/// kept (`core::duplicate`). Each round of the two processes' re-assertions
/// crosses the cluster twice by gossip, a few gossip intervals each, so
/// several rounds fit well inside this even in a large cluster; stale
/// records of earlier runs come in a burst after a start and never again.
const DUPLICATE_WINDOW_TIMEOUTS: u64 = 12;

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("claim {wanted} is out of range: a node can claim 0 to {max} partitions")]
    ClaimOutOfRange { wanted: u64, max: u32 },
    #[error("no member would claim any partition; at least one claim must be above 0")]
    NoClaims,
    #[error("{0}")]
    Ring(#[from] RingError),
    #[error("peer belongs to cluster {theirs:016x}, this node to cluster {ours:016x}")]
    WrongCluster { ours: u64, theirs: u64 },
    #[error(
        "node {node} was removed from the cluster: another node replaced it (one that joined at its \
         address without its data, or named in POST /admin/replace), or an operator force-removed it, so it \
         serves no data; wipe its data directory to rejoin as a new node"
    )]
    Removed { node: NodeId },
    #[error(
        "another process runs as node {node} at {address} (cluster address {cluster_address}): a copied or \
         restored data directory? stop one of them; wipe the copy's data directory to make it a new node"
    )]
    Duplicate { node: NodeId, address: String, cluster_address: String },
    #[error(
        "node {node} asks to join, but it is this node, running at {address}: a copied data directory? \
         wipe the copy's data directory to make it a new node"
    )]
    JoinAsSelf { node: NodeId, address: String },
    #[error("the cluster has {max} members, the most it can have; remove one before adding another")]
    TooManyMembers { max: usize },
    #[error("the cluster has replaced {max} nodes, the most it can remember; replacing {node} would forget one")]
    TooManyRemoved { node: NodeId, max: usize },
    #[error("node {node} claims address {address}, which is this node's ({local})")]
    AddressOfSeed { node: NodeId, address: String, local: NodeId },
    #[error(
        "node {node} left the cluster: it owns no partitions and serves no data; it can be shut down (to rejoin, \
         wipe its data directory and join as a new node)"
    )]
    Left { node: NodeId },
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error(
        "{0}: a certificate cannot act for another node; give the node a certificate with the name it was bound \
         to (`vinzclortho certs node --name ...`)"
    )]
    Certificate(CertificateMismatch),
    #[error(
        "node {node} is up as this node sees it: force-remove is for a dead node that will not come back; stop it first, or stage a leave on it"
    )]
    RemoveLiveNode { node: NodeId },
    #[error(
        "peer's cluster runs with client security {}, this node's with it {}; security is fixed when a cluster is created",
        if *theirs { "on" } else { "off" },
        if *ours { "on" } else { "off" }
    )]
    SecurityMismatch { ours: bool, theirs: bool },
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("{0}")]
    Bucket(#[from] BucketEditError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl HasErrorCode for MembershipError {
    fn code(&self) -> ErrorCode {
        match self {
            MembershipError::ClaimOutOfRange { .. } | MembershipError::Ring(_) => ErrorCode::BadRequest,
            MembershipError::Plan(PlanError::UnknownMember(_)) => ErrorCode::NotFound,
            MembershipError::Plan(PlanError::ReplaceBySelf(_) | PlanError::RemoveSelf(_)) => ErrorCode::BadRequest,
            MembershipError::Plan(_) | MembershipError::RemoveLiveNode { .. } => ErrorCode::Conflict,
            MembershipError::Left { .. } => ErrorCode::Unavailable,
            MembershipError::NoClaims
            | MembershipError::WrongCluster { .. }
            | MembershipError::Removed { .. }
            | MembershipError::Duplicate { .. }
            | MembershipError::JoinAsSelf { .. }
            | MembershipError::TooManyMembers { .. }
            | MembershipError::TooManyRemoved { .. }
            | MembershipError::AddressOfSeed { .. }
            | MembershipError::Certificate(_) => ErrorCode::Conflict,
            MembershipError::SecurityMismatch { .. } => ErrorCode::Conflict,
            MembershipError::Token(TokenError::Unknown(_)) => ErrorCode::NotFound,
            MembershipError::Token(TokenError::BadName(_) | TokenError::BadGrant(_) | TokenError::TooManyGrants(_)) => {
                ErrorCode::BadRequest
            }
            MembershipError::Token(_) => ErrorCode::Conflict,
            MembershipError::Bucket(e) => e.code(),
            MembershipError::Storage(e) => e.code(),
        }
    }
}

/// Where `core::bucket` refuses an edit.
impl HasErrorCode for BucketEditError {
    fn code(&self) -> ErrorCode {
        match self {
            BucketEditError::NoSuchType(_) | BucketEditError::Bucket(_) => ErrorCode::NotFound,
            BucketEditError::TypeExists(_)
            | BucketEditError::TooManyTypes { .. }
            | BucketEditError::TooManyBuckets { .. } => ErrorCode::Conflict,
            BucketEditError::BadTypeName(_)
            | BucketEditError::BadBucketName(_)
            | BucketEditError::DefaultType
            | BucketEditError::Props(_) => ErrorCode::BadRequest,
        }
    }
}

/// One member as shown by `/admin/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    pub id: String,
    pub address: String,
    pub cluster_address: String,
    /// "up" or "down", as this node's failure detector sees it.
    pub status: &'static str,
    /// Partitions it owns now.
    pub claim: u32,
    /// Partitions it asked for (a weight; see `core::ring::Claim`).
    pub wanted_claim: u32,
    pub leaving: bool,
    /// The certificate name its id is bound to (mutual TLS), if any.
    pub certificate: Option<String>,
}

/// Why a node stopped serving; it never serves again in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The cluster removed it: another node replaced it.
    Removed,
    /// Another live process runs under its id.
    Duplicate(Duplicate),
    /// It left the cluster (a committed leave finished): it owns nothing,
    /// serves no data, and keeps answering `/admin/status` until shut down.
    Left,
}

struct Inner {
    state: ClusterState,
    detector: FailureDetector,
    /// When this node may act as claimant (`core::membership::ClaimantGate`).
    gate: ClaimantGate,
    planner: Planner,
    duplicate: DuplicateDetector,
    /// The last save failed: save again at the next change of any kind.
    unsaved: bool,
}

pub struct Membership {
    local: NodeId,
    store: Arc<dyn Store>,
    clock: Clock,
    inner: RwLock<Inner>,
    ring: Arc<Watched<Arc<RingView>>>,
    /// Set once this node stops serving; it is never unset.
    stopped: Arc<Watched<Option<Stopped>>>,
    /// A peer known to have a newer ring than ours: the gossip worker talks
    /// to it next, at once (see [`Membership::catch_up`]).
    gossip_hint: Arc<Watched<Option<NodeId>>>,
    /// Set when this process begins a clean shutdown (SIGTERM); never unset.
    shutting_down: std::sync::atomic::AtomicBool,
}

/// The persisted cluster state of a data directory, if any.
pub fn load_state(store: &dyn Store) -> Result<Option<ClusterState>, StorageError> {
    let Some(raw) = store.get_meta(META_CLUSTER_STATE)? else { return Ok(None) };
    match raw.split_first() {
        Some((&STATE_FORMAT_V5, body)) => postcard::from_bytes(body)
            .map(Some)
            .map_err(|e| StorageError::Corrupt(format!("stored cluster state: {e}"))),
        Some((&STATE_FORMAT_V4, body)) => postcard::from_bytes::<StateV4>(body)
            .map(|v4| {
                Some(ClusterState {
                    cluster_id: v4.cluster_id,
                    n_val: v4.n_val,
                    r: v4.r,
                    w: v4.w,
                    members: v4.members,
                    removed: v4.removed,
                    ring: v4.ring,
                    plan: v4.plan,
                    departures: v4.departures,
                    certificate_names: v4.certificate_names,
                    security: v4.security,
                    tokens: v4.tokens,
                    buckets: Default::default(),
                })
            })
            .map_err(|e| StorageError::Corrupt(format!("stored cluster state: {e}"))),
        Some((&STATE_FORMAT_V3, body)) => postcard::from_bytes::<StateV3>(body)
            .map(|v3| {
                Some(ClusterState {
                    cluster_id: v3.cluster_id,
                    n_val: v3.n_val,
                    r: v3.r,
                    w: v3.w,
                    members: v3.members,
                    removed: v3.removed,
                    ring: v3.ring,
                    plan: v3.plan,
                    departures: v3.departures,
                    certificate_names: v3.certificate_names,
                    security: false,
                    tokens: Default::default(),
                    buckets: Default::default(),
                })
            })
            .map_err(|e| StorageError::Corrupt(format!("stored cluster state: {e}"))),
        Some((&STATE_FORMAT_V2, body)) => postcard::from_bytes::<StateV2>(body)
            .map(|v2| {
                Some(ClusterState {
                    cluster_id: v2.cluster_id,
                    n_val: v2.n_val,
                    r: v2.r,
                    w: v2.w,
                    members: v2.members,
                    removed: v2.removed,
                    ring: v2.ring,
                    plan: v2.plan,
                    departures: v2.departures,
                    certificate_names: Default::default(),
                    security: false,
                    tokens: Default::default(),
                    buckets: Default::default(),
                })
            })
            .map_err(|e| StorageError::Corrupt(format!("stored cluster state: {e}"))),
        Some((&STATE_FORMAT_V1, body)) => postcard::from_bytes::<StateV1>(body)
            .map(|v1| {
                Some(ClusterState {
                    cluster_id: v1.cluster_id,
                    n_val: v1.n_val,
                    r: v1.r,
                    w: v1.w,
                    members: v1.members,
                    removed: v1.removed,
                    ring: v1.ring,
                    plan: Default::default(),
                    departures: Default::default(),
                    certificate_names: Default::default(),
                    security: false,
                    tokens: Default::default(),
                    buckets: Default::default(),
                })
            })
            .map_err(|e| StorageError::Corrupt(format!("stored cluster state: {e}"))),
        _ => Err(StorageError::Corrupt("stored cluster state has an unknown format".into())),
    }
}

fn save_state(store: &dyn Store, state: &ClusterState) -> Result<(), StorageError> {
    let mut raw = vec![STATE_FORMAT_V5];
    raw.extend(postcard::to_allocvec(state).expect("cluster state serializes"));
    store.put_meta(META_CLUSTER_STATE, &raw)
}

impl Membership {
    /// Starts from `state` (new, loaded or received on join) with `me` as
    /// this node's fresh record, and persists the result.
    pub fn open(
        me: Member,
        mut state: ClusterState,
        store: Arc<dyn Store>,
        failure_timeout_ms: u64,
        clock: Clock,
    ) -> Result<Membership, MembershipError> {
        let local = me.node.clone();
        // Rejoining under a removed id would make a member nobody listens to.
        if state.removed.contains(&local) {
            return Err(removed_error(&state, local));
        }
        // Our own record is ours: replace whatever the cluster remembered,
        // with a generation above it so every peer takes the new one.
        let mut me = me;
        if let Some(old) = state.members.get(&local) {
            me.generation = me.generation.max(old.generation + 1);
        }
        let duplicate = DuplicateDetector::new(me.generation, failure_timeout_ms * DUPLICATE_WINDOW_TIMEOUTS);
        state.members.insert(local.clone(), me);
        let mut detector = FailureDetector::new(failure_timeout_ms);
        detector.observe(&state, clock());
        let gate = ClaimantGate::new(failure_timeout_ms, clock(), state.members.len() == 1);
        let ring = Arc::new(Watched::new(Arc::new(view_of(&state))));
        let membership = Membership {
            local,
            store,
            clock,
            inner: RwLock::new(Inner { state, detector, gate, planner: Planner::default(), duplicate, unsaved: false }),
            ring,
            stopped: Arc::new(Watched::new(None)),
            gossip_hint: Arc::new(Watched::new(None)),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        };
        membership.after_change(Changes { members: true, ring: false, any: true })?;
        Ok(membership)
    }

    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// The ring and quorum settings the data path uses now.
    pub fn view(&self) -> Arc<RingView> {
        self.ring.get()
    }

    /// Counts ring changes, for [`Membership::ring_changed`].
    pub fn ring_version(&self) -> u64 {
        self.ring.version()
    }

    /// Completes once the ring changed after `version`; returns the new one.
    pub async fn ring_changed(&self, version: u64) -> u64 {
        self.ring.changed_since(version).await
    }

    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.view().current)
    }

    pub fn snapshot(&self) -> ClusterState {
        self.inner.read().expect("membership lock").state.clone()
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.read().expect("membership lock").state.cluster_id
    }

    /// Why this node stopped serving, if it did.
    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped.get()
    }

    /// True once this node learnt that the cluster removed it (replaced,
    /// force-removed, or left).
    pub fn removed(&self) -> bool {
        self.stopped.with(|s| matches!(s, Some(Stopped::Removed | Stopped::Left)))
    }

    /// True once this node's leave finished.
    pub fn left(&self) -> bool {
        self.stopped.with(|s| matches!(s, Some(Stopped::Left)))
    }

    /// The other process running under this node's id, once found.
    pub fn duplicate_of(&self) -> Option<Duplicate> {
        self.stopped.with(|s| match s {
            Some(Stopped::Duplicate(other)) => Some(other.clone()),
            _ => None,
        })
    }

    /// Completes once this node must exit (removed, or a duplicate). A node
    /// that left keeps running, owning nothing, until it is shut down.
    pub fn wait_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let stopped = Arc::clone(&self.stopped);
        async move {
            stopped.wait_for(|s| s.as_ref().is_some_and(|why| *why != Stopped::Left)).await;
        }
    }

    /// The error a stopped node answers and exits with.
    pub fn stop_error(&self) -> Option<MembershipError> {
        self.stopped().map(|why| self.error_of(&why))
    }

    fn error_of(&self, why: &Stopped) -> MembershipError {
        match why {
            Stopped::Removed => MembershipError::Removed { node: self.local.clone() },
            Stopped::Left => MembershipError::Left { node: self.local.clone() },
            Stopped::Duplicate(other) => MembershipError::Duplicate {
                node: self.local.clone(),
                address: other.address.clone(),
                cluster_address: other.cluster_address.clone(),
            },
        }
    }

    /// This process begins a clean shutdown: no more heartbeats, so the
    /// record it announces with [`Membership::local_stamp`] stays its last
    /// until it starts again.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// True once [`Membership::begin_shutdown`] was called.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The `(generation, version)` of this node's own record now.
    pub fn local_stamp(&self) -> (u64, u64) {
        let inner = self.inner.read().expect("membership lock");
        inner.state.members.get(&self.local).map_or((0, 0), |m| (m.generation, m.version))
    }

    /// Peer `node` says it is going down with its record at `stamp`: it is
    /// down from now on, for routing and everything else, until a newer
    /// record of it arrives (`core::membership::FailureDetector`). Returns
    /// whether the notice was taken (not for this node itself, a stranger,
    /// or a notice from an earlier life of the peer).
    pub fn peer_going_down(&self, node: &NodeId, stamp: (u64, u64)) -> bool {
        if node == &self.local {
            return false;
        }
        let taken = {
            let mut inner = self.inner.write().expect("membership lock");
            let Inner { state, detector, .. } = &mut *inner;
            detector.going_down(state, node, stamp)
        };
        if taken {
            tracing::info!(%node, address = %self.http_address(node), "member is shutting down: down until it starts again");
        }
        taken
    }

    /// This node is always up to itself; others per the failure detector.
    pub fn is_up(&self, node: &NodeId) -> bool {
        node == &self.local || self.inner.read().expect("membership lock").detector.is_up(node, (self.clock)())
    }

    /// One gossip round's local part: heartbeat, then the claimant's step.
    pub fn heartbeat(&self) -> Result<(), MembershipError> {
        // A stopped node's record is no longer its own to write. A node
        // shutting down told its peers it stops with its record as it is:
        // a heartbeat now would read to them as a new life.
        if self.stopped().is_some() || self.shutting_down() {
            return Ok(());
        }
        let changes = {
            let mut inner = self.inner.write().expect("membership lock");
            inner.state.update_member(&self.local, |_| {});
            Changes { any: true, ..Changes::default() }
        };
        self.after_change(changes)
    }

    /// Merges a peer's view (gossip).
    pub fn merge(&self, theirs: &ClusterState) -> Result<Changes, MembershipError> {
        let now = (self.clock)();
        let changes = {
            let mut inner = self.inner.write().expect("membership lock");
            let ours = inner.state.cluster_id;
            if theirs.cluster_id != ours {
                return Err(MembershipError::WrongCluster { ours, theirs: theirs.cluster_id });
            }
            // Fixed at creation: a view that says otherwise is not merged,
            // so gossip can never switch security off.
            if theirs.security != inner.state.security {
                return Err(MembershipError::SecurityMismatch { ours: inner.state.security, theirs: theirs.security });
            }
            let mine = inner.state.members.get(&self.local).cloned();
            let changes = inner.state.merge(theirs);
            if changes.ring && inner.state.ring.author != self.local {
                inner.gate.other_ring(now);
            }
            // Only this node writes its record. A peer holding a "newer" one
            // (an incarnation from before a clock step back) must not
            // replace it: re-assert ours above theirs. Unless it comes from
            // another live process under our id (`core::duplicate`): then we
            // stop, and leave it its record. No record after the merge means
            // the cluster removed us (`after_change` acts on both).
            if let Some(mut mine) = mine
                && let Some(winner) = inner.state.members.get(&self.local).cloned()
                && winner != mine
                && inner.duplicate.beaten_by(&winner, now).is_none()
            {
                mine.generation = winner.generation + 1;
                mine.version = 0;
                inner.duplicate.wrote(mine.generation);
                inner.state.members.insert(self.local.clone(), mine);
            }
            changes
        };
        self.after_change(changes)?;
        Ok(changes)
    }

    /// Adds (or refreshes) a joining node's record; returns the state the
    /// joiner should start from.
    /// A wanted claim above the partition count means "the default": an
    /// equal share, like every member that never set one.
    pub fn admit(&self, member: Member) -> Result<ClusterState, MembershipError> {
        self.admit_with_certificate(member, None)
    }

    /// [`Membership::admit`] for a joiner that presented the certificate
    /// named `certificate` (mutual TLS): its id is bound to that name, and a
    /// member already bound to another name is refused.
    pub fn admit_with_certificate(
        &self,
        mut member: Member,
        certificate: Option<&str>,
    ) -> Result<ClusterState, MembershipError> {
        {
            let mut inner = self.inner.write().expect("membership lock");
            if inner.state.removed.contains(&member.node) {
                return Err(removed_error(&inner.state, member.node));
            }
            if let (Some(presented), Some(bound)) = (certificate, inner.state.certificate_names.get(&member.node))
                && presented != bound
            {
                return Err(MembershipError::Certificate(CertificateMismatch {
                    node: member.node,
                    bound: bound.clone(),
                    presented: presented.to_owned(),
                }));
            }
            // We run under this id, so the joiner is another process with a
            // copy of our data directory: admitting it would hand our record
            // to it.
            if member.node == self.local {
                let address = inner.state.members.get(&self.local).map(|m| m.address.clone()).unwrap_or_default();
                return Err(MembershipError::JoinAsSelf { node: member.node, address });
            }
            // The largest legal membership message is computed from these
            // caps (`rpc::membership::largest_message_bytes`).
            if !inner.state.members.contains_key(&member.node) && inner.state.members.len() >= MAX_MEMBERS {
                return Err(MembershipError::TooManyMembers { max: MAX_MEMBERS });
            }
            // Replacing ourselves would remove the node admitting it; a node
            // that does answer here cannot have lost its address to another.
            if let Some(mine) = inner.state.members.get(&self.local)
                && member.node != self.local
                && (mine.address == member.address || mine.cluster_address == member.cluster_address)
            {
                let address = if mine.address == member.address { &member.address } else { &member.cluster_address };
                return Err(MembershipError::AddressOfSeed {
                    node: member.node,
                    address: address.clone(),
                    local: self.local.clone(),
                });
            }
            member.wanted_claim = member.wanted_claim.min(inner.state.partitions());
            // Same address, new id: the node lost its data directory and
            // came back as a new node; its old self is gone for good.
            let replaced: Vec<NodeId> = inner
                .state
                .members
                .values()
                .filter(|m| m.node != member.node)
                .filter(|m| m.address == member.address || m.cluster_address == member.cluster_address)
                .map(|m| m.node.clone())
                .collect();
            if inner.state.removed.len() + replaced.len() > MAX_REMOVED {
                return Err(MembershipError::TooManyRemoved { node: member.node, max: MAX_REMOVED });
            }
            for old in replaced {
                tracing::warn!(old = %old, new = %member.node, address = %member.address, "member replaced by a new node at its address");
                inner.state.remove_member(&old);
            }
            let newer = inner
                .state
                .members
                .get(&member.node)
                .is_none_or(|m| (member.generation, member.version) > (m.generation, m.version));
            let node = member.node.clone();
            if newer {
                inner.state.members.insert(member.node.clone(), member);
            }
            if let Some(name) = certificate {
                // Checked above; a name too long to record is not recorded.
                let _ = inner.state.bind_certificate(&node, name);
            }
        }
        self.after_change(Changes { members: true, ring: false, any: true })?;
        Ok(self.snapshot())
    }

    /// Binds this node's id to the name of the certificate it runs with, if
    /// the cluster has no name for it yet (a new cluster, or one that ran
    /// without certificates); refuses a certificate of another name than
    /// the one bound (its peers would refuse every call it makes).
    pub fn bind_local_certificate(&self, name: &str) -> Result<(), MembershipError> {
        let bound = {
            let mut inner = self.inner.write().expect("membership lock");
            inner.state.bind_certificate(&self.local, name).map_err(MembershipError::Certificate)?
        };
        if bound {
            tracing::info!(node = %self.local, certificate = name, "this node's id is bound to its certificate name");
            self.after_change(Changes { members: true, ring: false, any: true })?;
        }
        Ok(())
    }

    /// Whether the cluster authenticates clients (fixed at creation).
    pub fn security(&self) -> bool {
        self.inner.read().expect("membership lock").state.security
    }

    /// May the holder of the token hashed `presented` do `permission` on
    /// `resource` now? (`core::security::authorize`.)
    pub fn authorize(
        &self,
        presented: &[u8; 32],
        permission: Permission,
        resource: Resource<'_>,
    ) -> Result<String, Refusal> {
        let now = (self.clock)();
        security::authorize(
            &self.inner.read().expect("membership lock").state.tokens,
            presented,
            now,
            permission,
            resource,
        )
    }

    /// Every token record (hashes included: the caller shows what it may).
    pub fn tokens(&self) -> Vec<TokenRecord> {
        self.inner.read().expect("membership lock").state.tokens.values().cloned().collect()
    }

    /// Adds a token; gossip spreads it.
    pub fn create_token(
        &self,
        name: &str,
        hash: [u8; 32],
        grants: Vec<Grant>,
        expires_at_ms: Option<u64>,
    ) -> Result<(), MembershipError> {
        self.edit_tokens(|tokens, me| security::create(tokens, me, name, hash, grants, expires_at_ms))
    }

    /// Revokes a token for good; gossip spreads it.
    pub fn revoke_token(&self, name: &str) -> Result<(), MembershipError> {
        self.edit_tokens(|tokens, me| security::revoke(tokens, me, name).map(drop))
    }

    /// Replaces a token's grants; gossip spreads them.
    pub fn set_token_grants(&self, name: &str, grants: Vec<Grant>) -> Result<(), MembershipError> {
        self.edit_tokens(|tokens, me| security::set_grants(tokens, me, name, grants))
    }

    fn edit_tokens(
        &self,
        edit: impl FnOnce(&mut security::Tokens, &NodeId) -> Result<(), TokenError>,
    ) -> Result<(), MembershipError> {
        {
            let mut inner = self.inner.write().expect("membership lock");
            edit(&mut inner.state.tokens, &self.local)?;
        }
        self.after_change(Changes { members: true, ring: false, any: true })
    }

    /// The properties in effect for `bucket` of `bucket_type` (on every
    /// request: a read lock and a few map lookups, no await).
    pub fn bucket_props(&self, bucket_type: &[u8], bucket: &[u8]) -> Result<BucketProps, BucketError> {
        let inner = self.inner.read().expect("membership lock");
        inner.state.buckets.props(defaults_of(&inner.state), bucket_type, bucket)
    }

    /// A bucket type's properties in effect and whether it is active; None
    /// if there is no such type.
    pub fn bucket_type(&self, name: &str) -> Option<(BucketProps, bool)> {
        let inner = self.inner.read().expect("membership lock");
        inner.state.buckets.type_status(defaults_of(&inner.state), name)
    }

    /// Every bucket type, `default` first, with whether it is active.
    pub fn bucket_types(&self) -> Vec<(String, bool)> {
        let inner = self.inner.read().expect("membership lock");
        let others = inner.state.buckets.types.iter().map(|(n, t)| (n.clone(), t.active));
        std::iter::once((crate::core::bucket::DEFAULT_TYPE.to_owned(), true)).chain(others).collect()
    }

    /// The member this node sees as claimant (Riak shows its name in a
    /// bucket type's properties).
    pub fn claimant(&self) -> Option<NodeId> {
        let now = (self.clock)();
        let inner = self.inner.read().expect("membership lock");
        inner.state.claimant(|n| n == &self.local || inner.detector.is_up(n, now)).cloned()
    }

    /// Creates (or, while inactive, redefines) a bucket type; gossip
    /// spreads it.
    pub fn create_bucket_type(&self, name: &str, props: PropsPatch) -> Result<(), MembershipError> {
        self.edit_buckets(|state, me| {
            let n_val = state.n_val;
            state.buckets.create_type(me, name, props, n_val)
        })
    }

    /// Activates a bucket type; false if it was active already.
    pub fn activate_bucket_type(&self, name: &str) -> Result<bool, MembershipError> {
        let mut activated = false;
        self.edit_buckets(|state, me| {
            activated = state.buckets.activate_type(me, name)?;
            Ok(())
        })?;
        Ok(activated)
    }

    /// Updates a bucket type's properties.
    pub fn update_bucket_type(&self, name: &str, props: &PropsPatch) -> Result<(), MembershipError> {
        self.edit_buckets(|state, me| {
            let n_val = state.n_val;
            state.buckets.update_type(me, name, props, n_val)
        })
    }

    /// Sets some of one bucket's own properties.
    pub fn set_bucket_props(
        &self,
        bucket_type: &[u8],
        bucket: &[u8],
        props: &PropsPatch,
    ) -> Result<(), MembershipError> {
        self.edit_buckets(|state, me| {
            let n_val = state.n_val;
            state.buckets.set_bucket(me, bucket_type, bucket, props, n_val)
        })
    }

    /// Resets one bucket to its type's properties.
    pub fn reset_bucket_props(&self, bucket_type: &[u8], bucket: &[u8]) -> Result<(), MembershipError> {
        self.edit_buckets(|state, me| state.buckets.reset_bucket(me, bucket_type, bucket))
    }

    fn edit_buckets(
        &self,
        edit: impl FnOnce(&mut ClusterState, &NodeId) -> Result<(), BucketEditError>,
    ) -> Result<(), MembershipError> {
        {
            let mut inner = self.inner.write().expect("membership lock");
            edit(&mut inner.state, &self.local)?;
        }
        self.after_change(Changes { members: true, ring: false, any: true })
    }

    /// The certificate name `node` is bound to, if any.
    pub fn certificate_name(&self, node: &NodeId) -> Option<String> {
        self.inner.read().expect("membership lock").state.certificate_names.get(node).cloned()
    }

    /// Observes, runs the claimant step, publishes and persists as needed.
    fn after_change(&self, mut changes: Changes) -> Result<(), MembershipError> {
        let now = (self.clock)();
        let (view, save, stopped) = {
            let mut inner = self.inner.write().expect("membership lock");
            let Inner { state, detector, gate, planner, duplicate, unsaved } = &mut *inner;
            let left = state.departures.get(&self.local).is_some_and(|d| d.done && d.by.is_none());
            let stopped = if state.removed.contains(&self.local) {
                Some(if left { Stopped::Left } else { Stopped::Removed })
            } else {
                duplicate.verdict().cloned().map(Stopped::Duplicate)
            };
            detector.observe(state, now);
            let local = self.local.clone();
            let up = |n: &NodeId| n == &local || detector.is_up(n, now);
            // A stopped node plans nothing: its id is no longer (only) its.
            let eligible = stopped.is_none() && state.eligible_claimant(&self.local, up);
            if gate.may_plan(eligible, now) && state.plan_ring(&self.local, up, planner) {
                changes.ring = true;
            }
            #[cfg(feature = "fault-injection")]
            if crate::faults::switch_before_data_moved() && state.force_switch(&self.local, up) {
                changes.ring = true;
            }
            let save = (changes.members || changes.ring || *unsaved).then(|| state.clone());
            (changes.ring.then(|| view_of(state)), save, stopped)
        };
        // The state in memory is what this node now acts on: publish it even
        // if it cannot be saved. Publishing only after a successful save left
        // a node whose disk failed once on its old ring for good (the merged
        // state no longer differed, so no later change republished it), and
        // a move waiting for its transfers forever (found by the simulator).
        // A state not saved is saved with the next change; after a restart
        // gossip brings back what the disk missed.
        if let Some(view) = view {
            tracing::info!(epoch = view.epoch, ring = %format!("{:016x}", view.ring_hash), moving = view.target.is_some(), "ring changed");
            self.ring.replace(Arc::new(view));
        }
        // Stopped only after the ring that stopped us is published: whoever
        // sees "left" (GET /admin/status reads `stopped` first) then also sees
        // the ring that gives this node nothing. Marked the other way round,
        // a status between the two said "left" with the old ring's claim
        // (CI saw it).
        if let Some(why) = stopped {
            self.mark_stopped(why);
        }
        if let Some(state) = save {
            let saved = save_state(&*self.store, &state);
            self.inner.write().expect("membership lock").unsaved = saved.is_err();
            saved?;
        }
        Ok(())
    }

    /// Once only: this node stops serving. Wakes `wait_stopped`.
    fn mark_stopped(&self, why: Stopped) {
        let error = self.error_of(&why);
        let first = self.stopped.modify(|stopped| stopped.is_none() && stopped.replace(why).is_none());
        if first {
            match error {
                MembershipError::Removed { .. } => {
                    tracing::error!(node = %self.local, %error, "this node was removed from the cluster")
                }
                MembershipError::Left { .. } => tracing::info!(node = %self.local, "this node left the cluster"),
                _ => tracing::error!(node = %self.local, %error, "another process runs under this node's id"),
            }
        }
    }

    /// Partitions this node owns now.
    pub fn claim(&self) -> u32 {
        self.ring().claimed_by(&self.local)
    }

    /// Sets this node's wanted claim. Refuses a claim above the partition
    /// count, and one that would leave no member claiming anything.
    pub fn set_claim(&self, wanted: u64) -> Result<(), MembershipError> {
        if let Some(error) = self.stop_error() {
            return Err(error);
        }
        {
            let mut inner = self.inner.write().expect("membership lock");
            let max = inner.state.partitions();
            if wanted > u64::from(max) {
                return Err(MembershipError::ClaimOutOfRange { wanted, max });
            }
            let others: u64 = inner
                .state
                .members
                .values()
                .filter(|m| m.node != self.local && !m.leaving)
                .map(|m| u64::from(m.wanted_claim))
                .sum();
            if wanted + others == 0 {
                return Err(MembershipError::NoClaims);
            }
            inner.state.update_member(&self.local, |m| m.wanted_claim = wanted as u32);
        }
        self.after_change(Changes { members: true, ring: false, any: true })
    }

    pub fn members(&self) -> Vec<MemberView> {
        let now = (self.clock)();
        let inner = self.inner.read().expect("membership lock");
        let ring = &inner.state.ring.current;
        inner
            .state
            .members
            .values()
            .map(|m| MemberView {
                id: m.node.to_string(),
                address: m.address.clone(),
                cluster_address: m.cluster_address.clone(),
                status: if m.node == self.local || inner.detector.is_up(&m.node, now) { "up" } else { "down" },
                claim: ring.claimed_by(&m.node),
                wanted_claim: m.wanted_claim,
                leaving: m.leaving,
                certificate: inner.state.certificate_names.get(&m.node).cloned(),
            })
            .collect()
    }

    /// Other members and their cluster addresses, for gossip.
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        let inner = self.inner.read().expect("membership lock");
        inner
            .state
            .members
            .values()
            .filter(|m| m.node != self.local)
            .map(|m| (m.node.clone(), m.cluster_address.clone()))
            .collect()
    }

    /// What this node still has to stream for the current move.
    pub fn my_transfers(&self) -> Vec<Transfer> {
        let now = (self.clock)();
        let inner = self.inner.read().expect("membership lock");
        let up = |n: &NodeId| n == &self.local || inner.detector.is_up(n, now);
        inner.state.my_transfers(&self.local, up)
    }

    /// Every transfer of the current move not yet done by a live sender.
    pub fn pending_transfers(&self) -> Vec<Transfer> {
        let now = (self.clock)();
        let inner = self.inner.read().expect("membership lock");
        let up = |n: &NodeId| n == &self.local || inner.detector.is_up(n, now);
        inner.state.pending_transfers(up)
    }

    /// Records finished transfers in one change (one claimant step, one
    /// save); false (nothing recorded) when the move they were for is no
    /// longer the current one.
    pub fn mark_transfers_done(&self, transfers: &[Transfer]) -> Result<bool, MembershipError> {
        if self.stopped().is_some() {
            return Ok(false);
        }
        let mut recorded = false;
        {
            let mut inner = self.inner.write().expect("membership lock");
            // Every one, not up to the first recorded.
            for t in transfers {
                recorded |= inner.state.mark_transfer_done(&self.local, t);
            }
        }
        if recorded {
            self.after_change(Changes { members: true, ring: false, any: true })?;
        }
        Ok(recorded)
    }
}

/// The staged plan and what committing it would do, for `/admin/plan`.
#[derive(Debug, Clone)]
pub struct PlanSnapshot {
    pub plan: crate::core::membership::StagedPlan,
    pub departures: std::collections::BTreeMap<NodeId, crate::core::membership::Departure>,
    /// The ring now, and the one the claimant would aim for after a commit.
    pub before: Ring,
    pub after: Result<Ring, RingError>,
    pub n_val: usize,
    pub epoch: u64,
    pub moving: bool,
}

/// Leave, force-remove, replace: staged, shown, committed, cleared (the
/// rules are `core::membership::ClusterState::stage` and its neighbours).
impl Membership {
    /// Stages `change` for `node`. Force-removing a member this node sees up
    /// is refused: it is for a dead node that will not come back.
    pub fn stage(&self, node: &NodeId, change: Change) -> Result<(), MembershipError> {
        if let Some(error) = self.stop_error() {
            return Err(error);
        }
        let now = (self.clock)();
        {
            let mut inner = self.inner.write().expect("membership lock");
            if change == Change::Remove
                && node != &self.local
                && inner.state.members.contains_key(node)
                && inner.detector.is_up(node, now)
            {
                return Err(MembershipError::RemoveLiveNode { node: node.clone() });
            }
            inner.state.stage(&self.local, node, change)?;
        }
        self.after_change(Changes { members: true, ring: false, any: true })
    }

    /// Drops every staged change.
    pub fn clear_plan(&self) -> Result<(), MembershipError> {
        if let Some(error) = self.stop_error() {
            return Err(error);
        }
        self.inner.write().expect("membership lock").state.clear_plan(&self.local);
        self.after_change(Changes { members: true, ring: false, any: true })
    }

    /// Asks the claimant to commit the staged changes; returns them, for
    /// [`Membership::committed`].
    pub fn request_commit(&self) -> Result<Vec<(NodeId, Change)>, MembershipError> {
        if let Some(error) = self.stop_error() {
            return Err(error);
        }
        let staged = {
            let mut inner = self.inner.write().expect("membership lock");
            inner.state.request_commit(&self.local)?;
            inner.state.plan.staged().into_iter().collect()
        };
        self.after_change(Changes { members: true, ring: false, any: true })?;
        Ok(staged)
    }

    /// True once the claimant applied every one of `changes` (as this node
    /// has heard by gossip).
    pub fn committed(&self, changes: &[(NodeId, Change)]) -> bool {
        let inner = self.inner.read().expect("membership lock");
        let state = &inner.state;
        changes.iter().all(|(node, change)| match change {
            Change::Remove => state.removed.contains(node),
            Change::Leave | Change::Replace { .. } => state.departures.contains_key(node),
        })
    }

    pub fn plan(&self) -> PlanSnapshot {
        let inner = self.inner.read().expect("membership lock");
        let state = &inner.state;
        let preview = state.preview(&self.local);
        PlanSnapshot {
            plan: state.plan.clone(),
            departures: state.departures.clone(),
            before: state.ring.current.clone(),
            after: preview.map(|(_, after)| after),
            n_val: state.n_val,
            epoch: state.ring.epoch,
            moving: state.ring.target.is_some(),
        }
    }
}

impl Membership {
    /// A member's HTTP address, for people: ids are for machines.
    pub fn http_address(&self, node: &NodeId) -> String {
        let inner = self.inner.read().expect("membership lock");
        inner.state.members.get(node).map(|m| m.address.clone()).unwrap_or_else(|| node.to_string())
    }
}

impl Membership {
    /// The peer the gossip worker should talk to next, if a coordinator
    /// asked (it learnt that peer's ring is newer); taken once.
    pub fn take_gossip_hint(&self) -> Option<NodeId> {
        self.gossip_hint.replace(None)
    }

    /// Completes when a coordinator asks for a gossip round now.
    pub fn gossip_hinted(&self) -> impl Future<Output = ()> + Send + 'static {
        let hint = Arc::clone(&self.gossip_hint);
        async move {
            hint.wait_for(Option::is_some).await;
        }
    }

    /// Waits until the ring is at least at `epoch`, asking gossip to talk to
    /// `from` (which has it) at once rather than at the next random round.
    pub async fn catch_up(&self, from: &NodeId, epoch: u64, until: tokio::time::Instant) -> bool {
        if self.view().epoch >= epoch {
            return true;
        }
        self.gossip_hint.replace(Some(from.clone()));
        tokio::time::timeout_at(until, self.ring.wait_for(|view| view.epoch >= epoch)).await.is_ok()
    }
}

#[async_trait::async_trait]
impl Topology for Membership {
    fn view(&self) -> Arc<RingView> {
        Membership::view(self)
    }

    fn local(&self) -> &NodeId {
        Membership::local(self)
    }

    fn is_up(&self, node: &NodeId) -> bool {
        Membership::is_up(self, node)
    }

    fn http_address(&self, node: &NodeId) -> String {
        Membership::http_address(self, node)
    }

    /// Removed, or a duplicate: either way it coordinates nothing (the
    /// HTTP edge answers first, with the reason: `api::serving`).
    fn removed(&self) -> bool {
        self.stopped().is_some()
    }

    async fn catch_up(&self, from: &NodeId, epoch: u64, until: tokio::time::Instant) -> bool {
        Membership::catch_up(self, from, epoch, until).await
    }

    fn bucket_props(&self, bucket_type: &[u8], bucket: &[u8]) -> Result<BucketProps, BucketError> {
        Membership::bucket_props(self, bucket_type, bucket)
    }
}

impl AddressBook for Membership {
    fn cluster_address(&self, node: &NodeId) -> Option<String> {
        let inner = self.inner.read().expect("membership lock");
        inner.state.members.get(node).map(|m| m.cluster_address.clone())
    }
}

/// Why a removed id may not come back: it left, or it was removed.
fn removed_error(state: &ClusterState, node: NodeId) -> MembershipError {
    match state.departures.get(&node) {
        Some(d) if d.done && d.by.is_none() => MembershipError::Left { node },
        _ => MembershipError::Removed { node },
    }
}

fn defaults_of(state: &ClusterState) -> ClusterDefaults {
    ClusterDefaults { n_val: state.n_val, r: state.r, w: state.w }
}

fn view_of(state: &ClusterState) -> RingView {
    RingView {
        epoch: state.ring.epoch,
        ring_hash: state.ring.hash(),
        current: Arc::new(state.ring.current.clone()),
        target: state.ring.target.clone().map(Arc::new),
        n_val: state.n_val,
        r: state.r,
        w: state.w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    fn node(n: &str) -> NodeId {
        NodeId::new(n)
    }

    fn member(n: &str) -> Member {
        Member::new(node(n), format!("{n}:h"), format!("{n}:c"), 8, 1)
    }

    fn clock() -> u64 {
        1_000
    }

    /// Members a, b and c, as one of them sees it.
    fn cluster() -> ClusterState {
        let mut state = ClusterState::new(7, member("a"), 8, 3, 2, 2).unwrap();
        for n in ["b", "c"] {
            state.members.insert(node(n), member(n));
        }
        state
    }

    fn open(me: &str, state: ClusterState, store: &Arc<dyn Store>) -> Result<Membership, MembershipError> {
        Membership::open(member(me), state, Arc::clone(store), 5_000, Arc::new(clock))
    }

    /// c lost its disk and came back at its address as d: the view of a
    /// member that admitted d.
    fn c_replaced_by_d(state: &ClusterState) -> ClusterState {
        let mut theirs = state.clone();
        theirs.remove_member(&node("c"));
        theirs.members.insert(node("d"), Member::new(node("d"), "c:h".into(), "c:c".into(), 8, 2));
        theirs
    }

    /// A store whose metadata writes fail while `failing` is set.
    struct FlakyStore {
        inner: MemoryStore,
        failing: std::sync::atomic::AtomicBool,
    }

    impl Store for FlakyStore {
        fn engine(&self) -> &'static str {
            "flaky"
        }
        fn get(
            &self,
            p: u32,
            k: &crate::core::key::ObjectKey,
        ) -> Result<Option<crate::core::object::Object>, StorageError> {
            self.inner.get(p, k)
        }
        fn put(
            &self,
            p: u32,
            k: &crate::core::key::ObjectKey,
            o: &crate::core::object::Object,
        ) -> Result<(), StorageError> {
            self.inner.put(p, k, o)
        }
        fn put_many(&self, p: u32, o: &[crate::storage::Entry]) -> Result<(), StorageError> {
            self.inner.put_many(p, o)
        }
        fn remove(&self, p: u32, k: &crate::core::key::ObjectKey) -> Result<(), StorageError> {
            self.inner.remove(p, k)
        }
        fn scan_partition(
            &self,
            p: u32,
        ) -> Result<Box<dyn Iterator<Item = Result<crate::storage::Entry, StorageError>> + '_>, StorageError> {
            self.inner.scan_partition(p)
        }
        fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get_meta(name)
        }
        fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StorageError::Io("injected".into()));
            }
            self.inner.put_meta(name, value)
        }
        fn stats(&self) -> Result<crate::storage::StoreStats, StorageError> {
            self.inner.stats()
        }
    }

    #[test]
    fn a_ring_learnt_while_the_disk_fails_is_still_the_one_used() {
        let flaky = Arc::new(FlakyStore { inner: MemoryStore::new(), failing: Default::default() });
        let store: Arc<dyn Store> = flaky.clone();
        let c = open("c", cluster(), &store).unwrap();
        let mut theirs = c.snapshot();
        theirs.ring.epoch += 5;
        flaky.failing.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(c.merge(&theirs).is_err(), "the state could not be saved");
        assert_eq!(c.view().epoch, theirs.ring.epoch, "the merged ring is used anyway");
        flaky.failing.store(false, std::sync::atomic::Ordering::SeqCst);
        c.heartbeat().unwrap();
        assert_eq!(
            load_state(&*store).unwrap().unwrap().ring.epoch,
            theirs.ring.epoch,
            "and saved with the next change"
        );
    }

    #[test]
    fn a_peer_going_down_is_down_at_once_and_a_node_shutting_down_stops_heartbeating() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = open("a", cluster(), &store).unwrap();
        let b_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let b = open("b", a.snapshot(), &b_store).unwrap();
        a.merge(&b.snapshot()).unwrap();
        assert!(a.is_up(&node("b")));
        b.begin_shutdown();
        let last = b.local_stamp();
        b.heartbeat().unwrap();
        assert_eq!(b.local_stamp(), last, "no heartbeat once shutting down");
        assert!(a.peer_going_down(&node("b"), last));
        assert!(!a.is_up(&node("b")), "down well before the failure timeout");
        assert_eq!(a.members().iter().find(|m| m.id == "b").unwrap().status, "down");
        assert!(!a.peer_going_down(&node("a"), a.local_stamp()), "a node is never down to itself");
        assert!(a.is_up(&node("a")));
        // b starts again on its data directory: a newer record, up at once.
        let b_again = open("b", load_state(&*b_store).unwrap().unwrap(), &b_store).unwrap();
        a.merge(&b_again.snapshot()).unwrap();
        assert!(a.is_up(&node("b")));
    }

    #[test]
    fn learning_it_was_removed_marks_the_node_removed_instead_of_panicking() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let c = open("c", cluster(), &store).unwrap();
        assert!(!c.removed());
        // The old code indexed its own record here and panicked, holding
        // the write lock: every later request answered 500.
        c.merge(&c_replaced_by_d(&c.snapshot())).unwrap();
        assert!(c.removed());
        assert!(matches!(c.stop_error(), Some(MembershipError::Removed { ref node }) if node.as_str() == "c"));
        assert_eq!(c.stopped(), Some(Stopped::Removed));
        futures::executor::block_on(c.wait_stopped());
        // The lock is healthy: gossip, heartbeats and reads go on.
        c.heartbeat().unwrap();
        c.merge(&c_replaced_by_d(&cluster())).unwrap();
        assert!(c.removed(), "for good");
        let ids: Vec<String> = c.members().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["a", "b", "d"]);
        // The data directory remembers: c does not start again as c.
        let remembered = load_state(&*store).unwrap().unwrap();
        let error = open("c", remembered, &store).err().expect("a removed node must not start");
        assert!(error.to_string().contains("wipe its data directory"), "{error}");
    }

    #[test]
    fn a_node_whose_leave_finished_says_it_left_and_does_not_start_again() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let c = open("c", cluster(), &store).unwrap();
        let mut theirs = c.snapshot();
        theirs.departures.insert(node("c"), crate::core::membership::Departure { done: true, by: None, claim: 8 });
        theirs.remove_member(&node("c"));
        c.merge(&theirs).unwrap();
        assert!(c.left() && c.removed());
        assert_eq!(c.stopped(), Some(Stopped::Left));
        assert!(matches!(c.stop_error(), Some(MembershipError::Left { .. })));
        assert!(matches!(c.stage(&node("a"), Change::Leave), Err(MembershipError::Left { .. })));
        let error = open("c", load_state(&*store).unwrap().unwrap(), &store).err().expect("a left node must not start");
        assert!(error.to_string().contains("left the cluster"), "{error}");
    }

    #[test]
    fn a_state_saved_in_format_v1_still_loads() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let state = cluster();
        let v1 = StateV1 {
            cluster_id: state.cluster_id,
            n_val: state.n_val,
            r: state.r,
            w: state.w,
            members: state.members.clone(),
            removed: state.removed.clone(),
            ring: state.ring.clone(),
        };
        let mut raw = vec![STATE_FORMAT_V1];
        raw.extend(postcard::to_allocvec(&v1).unwrap());
        store.put_meta(META_CLUSTER_STATE, &raw).unwrap();
        assert_eq!(load_state(&*store).unwrap().unwrap(), state);
    }

    #[test]
    fn a_state_saved_in_format_v2_still_loads() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let state = cluster();
        let v2 = StateV2 {
            cluster_id: state.cluster_id,
            n_val: state.n_val,
            r: state.r,
            w: state.w,
            members: state.members.clone(),
            removed: state.removed.clone(),
            ring: state.ring.clone(),
            plan: state.plan.clone(),
            departures: state.departures.clone(),
        };
        let mut raw = vec![STATE_FORMAT_V2];
        raw.extend(postcard::to_allocvec(&v2).unwrap());
        store.put_meta(META_CLUSTER_STATE, &raw).unwrap();
        assert_eq!(load_state(&*store).unwrap().unwrap(), state);
    }

    #[test]
    fn a_state_saved_in_format_v3_still_loads_without_security() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut state = cluster();
        state.certificate_names.insert(node("a"), "node-a".into());
        let v3 = StateV3 {
            cluster_id: state.cluster_id,
            n_val: state.n_val,
            r: state.r,
            w: state.w,
            members: state.members.clone(),
            removed: state.removed.clone(),
            ring: state.ring.clone(),
            plan: state.plan.clone(),
            departures: state.departures.clone(),
            certificate_names: state.certificate_names.clone(),
        };
        let mut raw = vec![STATE_FORMAT_V3];
        raw.extend(postcard::to_allocvec(&v3).unwrap());
        store.put_meta(META_CLUSTER_STATE, &raw).unwrap();
        let loaded = load_state(&*store).unwrap().unwrap();
        assert_eq!(loaded, state);
        assert!(!loaded.security && loaded.tokens.is_empty());
    }

    #[test]
    fn a_state_saved_in_format_v4_still_loads_without_bucket_types() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut state = cluster();
        state.security = true;
        let v4 = StateV4 {
            cluster_id: state.cluster_id,
            n_val: state.n_val,
            r: state.r,
            w: state.w,
            members: state.members.clone(),
            removed: state.removed.clone(),
            ring: state.ring.clone(),
            plan: state.plan.clone(),
            departures: state.departures.clone(),
            certificate_names: state.certificate_names.clone(),
            security: state.security,
            tokens: state.tokens.clone(),
        };
        let mut raw = vec![STATE_FORMAT_V4];
        raw.extend(postcard::to_allocvec(&v4).unwrap());
        store.put_meta(META_CLUSTER_STATE, &raw).unwrap();
        let loaded = load_state(&*store).unwrap().unwrap();
        assert_eq!(loaded, state);
        assert!(loaded.buckets.types.is_empty() && loaded.buckets.buckets.is_empty());
    }

    #[test]
    fn bucket_types_and_props_spread_by_merge_and_are_saved() {
        let (sa, sb): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let a = open("a", cluster(), &sa).unwrap();
        let b = open("b", cluster(), &sb).unwrap();
        let props = PropsPatch::from_body(br#"{"props":{"n_val":1}}"#).unwrap();
        a.create_bucket_type("t", props).unwrap();
        assert!(matches!(a.bucket_props(b"t", b"x"), Err(BucketError::InactiveType(_))));
        assert!(a.activate_bucket_type("t").unwrap());
        assert!(matches!(b.bucket_props(b"t", b"x"), Err(BucketError::UnknownType(_))));
        b.merge(&a.snapshot()).unwrap();
        assert_eq!(b.bucket_props(b"t", b"x").unwrap().n_val, 1);
        let r_one = PropsPatch::from_body(br#"{"props":{"r":"one"}}"#).unwrap();
        b.set_bucket_props(b"t", b"x", &r_one).unwrap();
        a.merge(&b.snapshot()).unwrap();
        assert_eq!(a.bucket_props(b"t", b"x").unwrap().r, crate::core::bucket::QuorumParam::One);
        let saved = load_state(&*sa).unwrap().unwrap();
        assert_eq!(saved.buckets, a.snapshot().buckets, "saved with the state");
        assert_eq!(a.bucket_types(), vec![("default".to_owned(), true), ("t".to_owned(), true)]);
        let too_big = PropsPatch::from_body(br#"{"props":{"n_val":4}}"#).unwrap();
        let refused = a.set_bucket_props(b"default", b"x", &too_big).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::BadRequest, "{refused}");
        assert_eq!(a.update_bucket_type("nope", &r_one).unwrap_err().code(), ErrorCode::NotFound);
        assert_eq!(a.create_bucket_type("t", PropsPatch::default()).unwrap_err().code(), ErrorCode::Conflict);
    }

    #[test]
    fn tokens_spread_by_merge_and_a_view_with_other_security_is_refused() {
        let mut secured = cluster();
        secured.security = true;
        let (sa, sb): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let a = open("a", secured.clone(), &sa).unwrap();
        let b = open("b", secured, &sb).unwrap();
        let grants = vec![Grant::parse_short("read:*").unwrap()];
        a.create_token("reader", security::token_hash("tok"), grants, None).unwrap();
        let bucket = Resource::Bucket { bucket_type: b"default", bucket: b"default" };
        let hash = security::token_hash("tok");
        assert_eq!(b.authorize(&hash, Permission::Read, bucket).unwrap_err(), Refusal::Unknown);
        b.merge(&a.snapshot()).unwrap();
        assert_eq!(b.authorize(&hash, Permission::Read, bucket).unwrap(), "reader");
        assert!(load_state(&*sb).unwrap().unwrap().tokens.contains_key("reader"), "saved");
        a.revoke_token("reader").unwrap();
        b.merge(&a.snapshot()).unwrap();
        assert_eq!(b.authorize(&hash, Permission::Read, bucket).unwrap_err().reason(), "revoked");
        assert!(matches!(a.revoke_token("nobody"), Err(MembershipError::Token(TokenError::Unknown(_)))));

        let plain = open("c", cluster(), &(Arc::new(MemoryStore::new()) as Arc<dyn Store>)).unwrap();
        let refused = plain.merge(&a.snapshot()).unwrap_err();
        assert!(matches!(refused, MembershipError::SecurityMismatch { ours: false, theirs: true }), "{refused}");
        assert!(a.merge(&plain.snapshot()).is_err(), "nor the other way: gossip never turns security off");
        assert!(a.security() && !plain.security());
    }

    #[test]
    fn a_joiner_is_bound_to_its_certificate_and_cannot_come_back_with_another() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = open("a", cluster(), &store).unwrap();
        a.bind_local_certificate("node-a").unwrap();
        a.bind_local_certificate("node-a").unwrap();
        assert!(matches!(a.bind_local_certificate("other"), Err(MembershipError::Certificate(_))));
        a.admit_with_certificate(member("c"), Some("node-c")).unwrap();
        assert_eq!(a.certificate_name(&node("c")).as_deref(), Some("node-c"));
        assert_eq!(a.certificate_name(&node("a")).as_deref(), Some("node-a"));
        let error = a.admit_with_certificate(member("c"), Some("intruder")).unwrap_err();
        assert!(matches!(error, MembershipError::Certificate(_)), "{error}");
        assert_eq!(error.code(), ErrorCode::Conflict);
        assert!(error.to_string().contains("node-c") && error.to_string().contains("intruder"), "{error}");
        // The bindings are persisted with the state.
        let saved = load_state(&*store).unwrap().unwrap();
        assert_eq!(saved.certificate_names.get(&node("c")).map(String::as_str), Some("node-c"));
    }

    #[test]
    fn force_removing_a_member_seen_up_is_refused() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = open("a", cluster(), &store).unwrap();
        let error = a.stage(&node("b"), Change::Remove).unwrap_err();
        assert!(matches!(error, MembershipError::RemoveLiveNode { .. }), "{error}");
        assert_eq!(error.code(), ErrorCode::Conflict);
        assert!(a.snapshot().plan.staged().is_empty());
    }

    #[test]
    fn a_removed_node_cannot_join_again_and_no_joiner_replaces_the_seed() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = open("a", cluster(), &store).unwrap();
        a.merge(&c_replaced_by_d(&a.snapshot())).unwrap();
        assert!(!a.removed());
        let error = a.admit(member("c")).unwrap_err();
        assert!(matches!(error, MembershipError::Removed { .. }), "{error}");
        // A joiner claiming the seed's own address would have the seed
        // remove itself.
        let imposter = Member::new(node("e"), "a:h".into(), "e:c".into(), 8, 3);
        let error = a.admit(imposter).unwrap_err();
        assert!(matches!(error, MembershipError::AddressOfSeed { .. }), "{error}");
        assert!(!a.removed());
        assert!(!a.snapshot().members.contains_key(&node("e")));
    }

    /// Two processes run as c (a copied data directory): each merges what
    /// the other gossips, through the peers, as the gossip worker does.
    #[test]
    fn two_live_processes_with_one_id_are_found_and_one_stops_without_fighting() {
        let (store_1, store_2): (Arc<dyn Store>, Arc<dyn Store>) =
            (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let original = Membership::open(member("c"), cluster(), store_1, 5_000, Arc::new(clock)).unwrap();
        // The copy starts later: a higher generation (a start time).
        let copy_record = Member::new(node("c"), "copy:h".into(), "copy:c".into(), 8, 5);
        let copy = Membership::open(copy_record, cluster(), store_2, 5_000, Arc::new(clock)).unwrap();
        let mut rounds = 0;
        while original.stopped().is_none() && copy.stopped().is_none() {
            rounds += 1;
            assert!(rounds <= 10, "no verdict after {rounds} rounds of re-assertions");
            for (node, peer) in [(&original, &copy), (&copy, &original)] {
                node.heartbeat().unwrap();
                node.merge(&peer.snapshot()).unwrap();
            }
        }
        let stopped = if original.stopped().is_some() { &original } else { &copy };
        let other = stopped.duplicate_of().unwrap_or_else(|| panic!("{:?}", stopped.stopped()));
        assert!(other.address.ends_with(":h") && other.cluster_address.ends_with(":c"), "{other:?}");
        assert!(!stopped.removed());
        let error = stopped.stop_error().unwrap().to_string();
        assert!(error.contains("another process runs as node c at") && error.contains(&other.address), "{error}");
        futures::executor::block_on(stopped.wait_stopped());
        // The stopped one writes nothing more, so the other wins for good:
        // no more foreign records reach it.
        let winner = stopped.snapshot().members[&node("c")].clone();
        stopped.heartbeat().unwrap();
        assert_eq!(stopped.snapshot().members[&node("c")], winner, "a stopped node heartbeats no record");
        assert!(stopped.set_claim(1).is_err());
    }

    #[test]
    fn a_restart_and_a_stale_record_of_an_earlier_run_do_not_stop_the_node() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let first = open("c", cluster(), &store).unwrap();
        let before_restart = first.snapshot();
        drop(first);
        // The restarted node: peers still gossip the earlier run's record.
        let restarted = open("c", load_state(&*store).unwrap().unwrap(), &store).unwrap();
        for _ in 0..5 {
            restarted.merge(&before_restart).unwrap();
            restarted.heartbeat().unwrap();
        }
        assert_eq!(restarted.stopped(), None);
        // After a clock step back, a peer holds an earlier run's record above
        // ours: we re-assert over it once, and are not fooled into stopping.
        let mut stale = restarted.snapshot();
        let ahead = stale.members.get_mut(&node("c")).unwrap();
        ahead.generation += 1_000;
        ahead.address = "old:h".into();
        for _ in 0..5 {
            restarted.merge(&stale).unwrap();
            restarted.heartbeat().unwrap();
        }
        assert_eq!(restarted.stopped(), None);
        let mine = &restarted.snapshot().members[&node("c")];
        assert_eq!(mine.address, "c:h", "our record is ours again");
    }

    #[test]
    fn a_join_under_our_own_id_or_beyond_the_member_cap_is_refused() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let c = open("c", cluster(), &store).unwrap();
        let copy = Member::new(node("c"), "copy:h".into(), "copy:c".into(), 8, 9);
        let error = c.admit(copy).unwrap_err();
        assert!(matches!(error, MembershipError::JoinAsSelf { .. }), "{error}");
        assert_eq!(c.snapshot().members[&node("c")].address, "c:h", "our record stays ours");

        let mut full = cluster();
        for i in full.members.len()..MAX_MEMBERS {
            let n = format!("m{i:04}");
            full.members.insert(node(&n), Member::new(node(&n), format!("{n}:h"), format!("{n}:c"), 8, 1));
        }
        let a = open("a", full, &store).unwrap();
        let error = a.admit(member("zz")).unwrap_err();
        assert!(matches!(error, MembershipError::TooManyMembers { max: MAX_MEMBERS }), "{error}");
        assert!(a.admit(member("b")).is_ok(), "a member that rejoins is no new member");
    }
}
