//! The I/O half of membership: holds this node's view of the cluster
//! (`core::membership::ClusterState`), applies gossip and local changes to
//! it, persists it, and publishes the ring to the coordinator and workers.
//!
//! The rules (merge, claimant, transfers, failure detection) live in the
//! pure core; this type adds a lock, a clock, the data directory and a
//! `watch` channel that wakes workers when the ring changes.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

pub use crate::coordinator::RingView;
use crate::coordinator::{AddressBook, Topology};
use crate::core::key::NodeId;
use crate::core::membership::{Changes, ClusterState, FailureDetector, Member, Transfer};
use crate::core::ring::{Planner, Ring, RingError};
use crate::error::{ErrorCode, HasErrorCode};
use crate::storage::{StorageError, Store};

const META_CLUSTER_STATE: &str = "cluster_state";
const STATE_FORMAT_V1: u8 = 1;

/// Milliseconds since the Unix epoch; passed in so tests can drive time.
pub type Clock = fn() -> u64;

pub fn system_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

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
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl HasErrorCode for MembershipError {
    fn code(&self) -> ErrorCode {
        match self {
            MembershipError::ClaimOutOfRange { .. } | MembershipError::Ring(_) => ErrorCode::BadRequest,
            MembershipError::NoClaims | MembershipError::WrongCluster { .. } => ErrorCode::Conflict,
            MembershipError::Storage(e) => e.code(),
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
}

struct Inner {
    state: ClusterState,
    detector: FailureDetector,
    planner: Planner,
}

pub struct Membership {
    local: NodeId,
    store: Arc<dyn Store>,
    clock: Clock,
    inner: RwLock<Inner>,
    ring_tx: watch::Sender<Arc<RingView>>,
}

/// The persisted cluster state of a data directory, if any.
pub fn load_state(store: &dyn Store) -> Result<Option<ClusterState>, StorageError> {
    let Some(raw) = store.get_meta(META_CLUSTER_STATE)? else { return Ok(None) };
    match raw.split_first() {
        Some((&STATE_FORMAT_V1, body)) => postcard::from_bytes(body)
            .map(Some)
            .map_err(|e| StorageError::Corrupt(format!("stored cluster state: {e}"))),
        _ => Err(StorageError::Corrupt("stored cluster state has an unknown format".into())),
    }
}

fn save_state(store: &dyn Store, state: &ClusterState) -> Result<(), StorageError> {
    let mut raw = vec![STATE_FORMAT_V1];
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
        // Our own record is ours: replace whatever the cluster remembered,
        // with a generation above it so every peer takes the new one.
        let mut me = me;
        if let Some(old) = state.members.get(&local) {
            me.generation = me.generation.max(old.generation + 1);
        }
        state.members.insert(local.clone(), me);
        let mut detector = FailureDetector::new(failure_timeout_ms);
        detector.observe(&state, clock());
        let (ring_tx, _) = watch::channel(Arc::new(view_of(&state)));
        let membership = Membership {
            local,
            store,
            clock,
            inner: RwLock::new(Inner { state, detector, planner: Planner::default() }),
            ring_tx,
        };
        membership.after_change(Changes { members: true, ring: false, any: true })?;
        Ok(membership)
    }

    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// The ring and quorum settings the data path uses now.
    pub fn view(&self) -> Arc<RingView> {
        Arc::clone(&self.ring_tx.borrow())
    }

    /// Wakes when the ring changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RingView>> {
        self.ring_tx.subscribe()
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

    /// This node is always up to itself; others per the failure detector.
    pub fn is_up(&self, node: &NodeId) -> bool {
        node == &self.local || self.inner.read().expect("membership lock").detector.is_up(node, (self.clock)())
    }

    /// One gossip round's local part: heartbeat, then the claimant's step.
    pub fn heartbeat(&self) -> Result<(), MembershipError> {
        let changes = {
            let mut inner = self.inner.write().expect("membership lock");
            inner.state.update_member(&self.local, |_| {});
            Changes { any: true, ..Changes::default() }
        };
        self.after_change(changes)
    }

    /// Merges a peer's view (gossip).
    pub fn merge(&self, theirs: &ClusterState) -> Result<Changes, MembershipError> {
        let changes = {
            let mut inner = self.inner.write().expect("membership lock");
            let ours = inner.state.cluster_id;
            if theirs.cluster_id != ours {
                return Err(MembershipError::WrongCluster { ours, theirs: theirs.cluster_id });
            }
            let mine = inner.state.members.get(&self.local).cloned();
            let changes = inner.state.merge(theirs);
            // Only this node writes its record. A peer holding a "newer" one
            // (an incarnation from before a clock step back) must not
            // replace it: re-assert ours above theirs.
            if let Some(mut mine) = mine
                && inner.state.members.get(&self.local) != Some(&mine)
            {
                let theirs = &inner.state.members[&self.local];
                mine.generation = theirs.generation + 1;
                mine.version = 0;
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
    pub fn admit(&self, mut member: Member) -> Result<ClusterState, MembershipError> {
        {
            let mut inner = self.inner.write().expect("membership lock");
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
            for old in replaced {
                tracing::warn!(old = %old, new = %member.node, address = %member.address, "member replaced by a new node at its address");
                inner.state.remove_member(&old);
            }
            let newer = inner
                .state
                .members
                .get(&member.node)
                .is_none_or(|m| (member.generation, member.version) > (m.generation, m.version));
            if newer {
                inner.state.members.insert(member.node.clone(), member);
            }
        }
        self.after_change(Changes { members: true, ring: false, any: true })?;
        Ok(self.snapshot())
    }

    /// Observes, runs the claimant step, publishes and persists as needed.
    fn after_change(&self, mut changes: Changes) -> Result<(), MembershipError> {
        let now = (self.clock)();
        let (view, save) = {
            let mut inner = self.inner.write().expect("membership lock");
            let Inner { state, detector, planner } = &mut *inner;
            detector.observe(state, now);
            let local = self.local.clone();
            let up = |n: &NodeId| n == &local || detector.is_up(n, now);
            if state.plan_ring(&self.local, up, planner) {
                changes.ring = true;
            }
            #[cfg(feature = "fault-injection")]
            if crate::faults::switch_before_data_moved() && state.force_switch(&self.local, up) {
                changes.ring = true;
            }
            let save = (changes.members || changes.ring).then(|| state.clone());
            (changes.ring.then(|| view_of(state)), save)
        };
        if let Some(state) = save {
            save_state(&*self.store, &state)?;
        }
        if let Some(view) = view {
            tracing::info!(epoch = view.epoch, moving = view.target.is_some(), "ring changed");
            self.ring_tx.send_replace(Arc::new(view));
        }
        Ok(())
    }

    /// Partitions this node owns now.
    pub fn claim(&self) -> u32 {
        self.ring().claimed_by(&self.local)
    }

    /// Sets this node's wanted claim. Refuses a claim above the partition
    /// count, and one that would leave no member claiming anything.
    pub fn set_claim(&self, wanted: u64) -> Result<(), MembershipError> {
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

    /// Records a finished transfer; false (nothing recorded) when the move
    /// it was for is no longer the current one.
    pub fn mark_transfer_done(&self, transfer: &Transfer) -> Result<bool, MembershipError> {
        let recorded = self.inner.write().expect("membership lock").state.mark_transfer_done(&self.local, transfer);
        if recorded {
            self.after_change(Changes { members: true, ring: false, any: true })?;
        }
        Ok(recorded)
    }
}

impl Membership {
    /// A member's HTTP address, for people: ids are for machines.
    pub fn http_address(&self, node: &NodeId) -> String {
        let inner = self.inner.read().expect("membership lock");
        inner.state.members.get(node).map(|m| m.address.clone()).unwrap_or_else(|| node.to_string())
    }
}

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
}

impl AddressBook for Membership {
    fn cluster_address(&self, node: &NodeId) -> Option<String> {
        let inner = self.inner.read().expect("membership lock");
        inner.state.members.get(node).map(|m| m.cluster_address.clone())
    }
}

fn view_of(state: &ClusterState) -> RingView {
    RingView {
        epoch: state.ring.epoch,
        current: Arc::new(state.ring.current.clone()),
        target: state.ring.target.clone().map(Arc::new),
        n_val: state.n_val,
        r: state.r,
        w: state.w,
    }
}
