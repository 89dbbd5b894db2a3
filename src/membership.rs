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
    #[error(
        "node {node} was removed from the cluster: another node replaced it (one that joined at its \
         address without its data), so it serves no data; wipe its data directory to rejoin as a new node"
    )]
    Removed { node: NodeId },
    #[error("node {node} claims address {address}, which is this node's ({local})")]
    AddressOfSeed { node: NodeId, address: String, local: NodeId },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl HasErrorCode for MembershipError {
    fn code(&self) -> ErrorCode {
        match self {
            MembershipError::ClaimOutOfRange { .. } | MembershipError::Ring(_) => ErrorCode::BadRequest,
            MembershipError::NoClaims
            | MembershipError::WrongCluster { .. }
            | MembershipError::Removed { .. }
            | MembershipError::AddressOfSeed { .. } => ErrorCode::Conflict,
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
    /// True once the cluster removed this node; it never turns false.
    removed_tx: watch::Sender<bool>,
    /// A peer known to have a newer ring than ours: the gossip worker talks
    /// to it next, at once (see [`Membership::catch_up`]).
    gossip_hint: watch::Sender<Option<NodeId>>,
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
        // Rejoining under a removed id would make a member nobody listens to.
        if state.removed.contains(&local) {
            return Err(MembershipError::Removed { node: local });
        }
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
            removed_tx: watch::Sender::new(false),
            gossip_hint: watch::Sender::new(None),
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

    /// True once this node learnt that the cluster removed it.
    pub fn removed(&self) -> bool {
        *self.removed_tx.borrow()
    }

    /// Completes once this node learns that the cluster removed it.
    pub fn wait_removed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut removed = self.removed_tx.subscribe();
        async move {
            // An error means the sender is gone: nobody can remove us any more.
            if removed.wait_for(|removed| *removed).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The error a removed node stops with.
    pub fn removed_error(&self) -> MembershipError {
        MembershipError::Removed { node: self.local.clone() }
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
            // replace it: re-assert ours above theirs. No record after the
            // merge means the cluster removed us (`after_change` acts on it).
            if let Some(mut mine) = mine
                && let Some(theirs) = inner.state.members.get(&self.local)
                && theirs != &mine
            {
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
            if inner.state.removed.contains(&member.node) {
                return Err(MembershipError::Removed { node: member.node });
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
        let (view, save, removed) = {
            let mut inner = self.inner.write().expect("membership lock");
            let Inner { state, detector, planner } = &mut *inner;
            let removed = state.removed.contains(&self.local);
            detector.observe(state, now);
            let local = self.local.clone();
            let up = |n: &NodeId| n == &local || detector.is_up(n, now);
            if state.plan_ring(&self.local, up, planner) {
                changes.ring = true;
            }
            let save = (changes.members || changes.ring).then(|| state.clone());
            (changes.ring.then(|| view_of(state)), save, removed)
        };
        if removed {
            self.mark_removed();
        }
        if let Some(state) = save {
            save_state(&*self.store, &state)?;
        }
        if let Some(view) = view {
            tracing::info!(epoch = view.epoch, moving = view.target.is_some(), "ring changed");
            self.ring_tx.send_replace(Arc::new(view));
        }
        Ok(())
    }

    /// Once only: this node learnt it was removed. Wakes `wait_removed`.
    fn mark_removed(&self) {
        let first = self.removed_tx.send_if_modified(|removed| !std::mem::replace(removed, true));
        if first {
            tracing::error!(node = %self.local, error = %self.removed_error(), "this node was removed from the cluster");
        }
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

impl Membership {
    /// The peer the gossip worker should talk to next, if a coordinator
    /// asked (it learnt that peer's ring is newer); taken once.
    pub fn take_gossip_hint(&self) -> Option<NodeId> {
        self.gossip_hint.send_replace(None)
    }

    /// Completes when a coordinator asks for a gossip round now.
    pub fn gossip_hinted(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut hint = self.gossip_hint.subscribe();
        async move {
            let _ = hint.wait_for(|h| h.is_some()).await;
        }
    }

    /// Waits until the ring is at least at `epoch`, asking gossip to talk to
    /// `from` (which has it) at once rather than at the next random round.
    pub async fn catch_up(&self, from: &NodeId, epoch: u64, until: tokio::time::Instant) -> bool {
        let mut ring = self.subscribe();
        if ring.borrow().epoch >= epoch {
            return true;
        }
        self.gossip_hint.send_replace(Some(from.clone()));
        tokio::time::timeout_at(until, ring.wait_for(|view| view.epoch >= epoch)).await.is_ok_and(|r| r.is_ok())
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

    fn removed(&self) -> bool {
        Membership::removed(self)
    }

    async fn catch_up(&self, from: &NodeId, epoch: u64, until: tokio::time::Instant) -> bool {
        Membership::catch_up(self, from, epoch, until).await
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
        Membership::open(member(me), state, Arc::clone(store), 5_000, clock)
    }

    /// c lost its disk and came back at its address as d: the view of a
    /// member that admitted d.
    fn c_replaced_by_d(state: &ClusterState) -> ClusterState {
        let mut theirs = state.clone();
        theirs.remove_member(&node("c"));
        theirs.members.insert(node("d"), Member::new(node("d"), "c:h".into(), "c:c".into(), 8, 2));
        theirs
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
        assert!(matches!(c.removed_error(), MembershipError::Removed { ref node } if node.as_str() == "c"));
        futures::executor::block_on(c.wait_removed());
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
}
