//! Turns one client operation into replica calls and a quorum decision.
//!
//! Any node coordinates any request: it finds the key's preference list on
//! the ring, calls the replicas in parallel through [`ReplicaClient`], counts
//! answers with the pure trackers of `core::quorum`, and returns as soon as
//! R (or W) replicas answered, or as soon as that has become impossible, or
//! at the request deadline, whichever comes first. Replica calls still in
//! flight then finish in the background: a write keeps replicating, and a
//! read keeps listening so it can repair the replicas that answered late
//! with stale data.
//!
//! A write on a node that is none of the key's primaries is forwarded whole
//! to the key's first up primary, which coordinates it ([`Coordinator::write`],
//! `forward`), as Riak's put FSM does; a forwarded write is never forwarded
//! again. A write is stamped by one replica of the key (itself, when this
//! node is one); `replica` explains why any replica may stamp without
//! reissuing a dot. That replica's new object is then merged into the others. While the
//! key's partition moves to new holders, the write goes to both preference
//! lists and needs W acknowledgements from each, so reads of the new holders
//! see it after the switch (see `core::membership`).
//!
//! Sloppy quorum (Dynamo, Riak): a primary that is known down, or whose call
//! fails, hands its slot to the key's next fallback that is up
//! (`core::quorum::Fallbacks`). The fallback stores the object with a hint
//! naming the primary and delivers it later (`services::hints`); its answer
//! counts towards W, and towards R for reads (a read asks the up primaries
//! and the fallbacks standing in for the others), but never towards `?pw=`
//! or `?pr=`, which count primaries answering for themselves. Every answer
//! says how many fallbacks took part ([`Reply::fallbacks`]).
//!
//! Who stamps. One replica, as before: a primary whenever one is up (this
//! node first when it is one); a fallback only when no primary could stamp
//! (every one down or refusing at once). A fallback may: its actor is fresh
//! for its process and partition and it holds that actor's whole history
//! (`replica`'s module comment), so it never reissues a dot. Its stamp does
//! not count until the same object is merged into it with its hint, so a
//! copy that counts always has a hint. The rule that one stamper is asked
//! at a time, and a stamp whose answer was lost ends the write, is
//! unchanged.
//!
//! The coordinator knows the cluster only through [`Topology`] (a ring view
//! and a liveness check) and reaches replicas only through
//! [`ReplicaClient`], so its rules are tested in process with scripted ones.

pub mod coverage;
mod options;
mod replicas;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

pub use options::{QuorumParam, ReadOptions, WriteOptions};

use crate::core::bucket::BucketError;
pub use replicas::{AddressBook, ReplicaClient};
pub use topology::{RingView, Topology};

use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::{Mutation, Object};
use crate::core::quorum::{AfterFetchFailure, Answer, Fallbacks, Progress, ReadQuorum, Shortfall, WriteQuorum};
use crate::core::ring::{Partition, Ring};
use crate::core::vclock::VersionVector;
use crate::env::Env;
use crate::error::{ErrorCode, HasErrorCode};
use crate::replica::{CallContext, ReplicaError};
use crate::telemetry::metrics;

/// Catch-ups to a newer ring one request may make before it answers 503:
/// each waits for gossip (bounded by the request's deadline), and a healthy
/// move changes the ring a few times in a row at most.
const MAX_CATCH_UPS: usize = 4;

/// Settings of this node's coordinator; N, R and W come from the cluster.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorSettings {
    /// How long a client request may wait for replicas.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{op} quorum not met: {shortfall}")]
    Unavailable { op: &'static str, shortfall: Shortfall },
    /// The stamping replica refused the write (too many siblings, disk full).
    #[error(transparent)]
    Replica(ReplicaError),
    /// This node left the cluster, or the cluster removed it: it coordinates
    /// nothing, since its view of the ring and its data are no longer the
    /// cluster's.
    #[error(
        "node {node} left the cluster or was removed from it, so it serves no data; \
         use another node"
    )]
    Removed { node: NodeId },
    /// A replica's ring was newer than this node's, and this node did not
    /// catch up before the deadline.
    #[error(
        "{op} refused: node {node} is on ring epoch {epoch}, newer than this node's, and this node \
         did not catch up in time; retry"
    )]
    StaleRing { op: &'static str, node: NodeId, epoch: u64 },
    /// The key's bucket type is unknown or not active.
    #[error(transparent)]
    Bucket(#[from] BucketError),
}

/// Why a forwarded write failed ([`Coordinator::write_forwarded`]).
#[derive(Debug, thiserror::Error)]
pub enum ForwardedError {
    /// Refused before anything was stamped or sent (this node stopped
    /// serving, or the request is bad): the forwarder may coordinate the
    /// write itself without risking a second copy of it.
    #[error(transparent)]
    NotStarted(CoordinatorError),
    /// Failed once under way: parts of it may have been applied.
    #[error(transparent)]
    Failed(CoordinatorError),
}

impl ForwardedError {
    pub fn error(&self) -> &CoordinatorError {
        match self {
            ForwardedError::NotStarted(e) | ForwardedError::Failed(e) => e,
        }
    }
}

impl HasErrorCode for ForwardedError {
    fn code(&self) -> ErrorCode {
        self.error().code()
    }
}

impl HasErrorCode for CoordinatorError {
    fn code(&self) -> ErrorCode {
        match self {
            CoordinatorError::BadRequest(_) => ErrorCode::BadRequest,
            CoordinatorError::Unavailable { .. }
            | CoordinatorError::Removed { .. }
            | CoordinatorError::StaleRing { .. } => ErrorCode::Unavailable,
            CoordinatorError::Replica(e) => e.code(),
            CoordinatorError::Bucket(e) => e.code(),
        }
    }
}

/// The replicas one request talks to.
struct Plan {
    /// The ring epoch it was made on; replicas on a newer ring refuse it.
    epoch: u64,
    /// Which ring of that epoch (`RingView::ring_hash`).
    ring_hash: u64,
    partition: Partition,
    /// The key's preference list (current ring).
    nodes: Vec<NodeId>,
    needed: usize,
    /// `?pr=` / `?pw=`: primaries that must answer for themselves.
    primaries: usize,
    /// The key's preference list in the target ring, while its partition
    /// moves: writes need W of these too (see `core::quorum::WriteQuorum`).
    target: Option<Vec<NodeId>>,
    /// The ring fallbacks come from (the current one).
    ring: Arc<Ring>,
    n_val: usize,
    /// The bucket's notfound_ok and basic_quorum (reads).
    notfound_ok: bool,
    basic_quorum: bool,
}

impl Plan {
    /// The key's fallbacks, found only when a primary is missing (the walk
    /// covers the whole ring); never one of the plan's own nodes.
    fn sloppy(&self) -> Sloppy {
        Sloppy { fallbacks: None }
    }

    fn fallbacks(&self) -> Fallbacks {
        let candidates = self.ring.fallbacks(self.partition, self.n_val).into_iter().map(|e| e.node).collect();
        let mut own = self.nodes.clone();
        own.extend(self.target.iter().flatten().cloned());
        Fallbacks::new(candidates, &own)
    }
}

/// A request's fallbacks, found when first needed.
struct Sloppy {
    fallbacks: Option<Fallbacks>,
}

impl Sloppy {
    /// The next up fallback for the slot of `node`.
    fn take(&mut self, plan: &Plan, node: &NodeId, topology: &dyn Topology) -> Option<NodeId> {
        self.fallbacks.get_or_insert_with(|| plan.fallbacks()).take(node, |n| topology.is_up(n))
    }

    /// The primary `node` stands in for, if it is a fallback.
    fn stands_for(&self, node: &NodeId) -> Option<NodeId> {
        self.fallbacks.as_ref().and_then(|f| f.stands_for(node).cloned())
    }

    fn snapshot(&self) -> Fallbacks {
        self.fallbacks.clone().unwrap_or_default()
    }
}

/// What a read or write answered, and how many fallbacks took part (the
/// `X-VinzClortho-Fallbacks` header): with one, R + W > N no longer
/// promises that a read sees the latest acknowledged write.
#[derive(Debug, Clone)]
pub struct Reply {
    pub object: Object,
    pub fallbacks: usize,
}

/// One replica's own copy of a key, as `/admin/replicas` shows it.
#[derive(Debug)]
pub struct ReplicaCopy {
    pub node: NodeId,
    pub primary: bool,
    /// The copy (empty when the node has none), or why it did not answer.
    pub answer: Result<Object, String>,
}

/// Every copy of a key on its preference list, primaries and fallbacks.
#[derive(Debug)]
pub struct ReplicasReport {
    pub partition: Partition,
    pub replicas: Vec<ReplicaCopy>,
}

pub struct Coordinator {
    topology: Arc<dyn Topology>,
    replicas: Arc<dyn ReplicaClient>,
    settings: CoordinatorSettings,
    /// Spawns the calls of a request (their metrics are this node's).
    env: Env,
    /// False (`--read-repair=false`): reads repair nothing, so tests can
    /// show that anti-entropy alone repairs.
    read_repair: bool,
}

impl Coordinator {
    pub fn new(
        topology: Arc<dyn Topology>,
        replicas: Arc<dyn ReplicaClient>,
        settings: CoordinatorSettings,
    ) -> Coordinator {
        Coordinator { topology, replicas, settings, env: Env::real(), read_repair: true }
    }

    /// Whether reads repair the replicas they found stale (default: yes).
    pub fn with_read_repair(mut self, read_repair: bool) -> Coordinator {
        self.read_repair = read_repair;
        self
    }

    /// Spawns its tasks through `env` (the node's metrics recorder).
    pub fn with_env(mut self, env: &Env) -> Coordinator {
        self.env = env.clone();
        self
    }

    /// Quorum read. Returns the merge of the first R answers; an empty object
    /// means not found, a tombstone means deleted.
    pub async fn get(&self, key: &ObjectKey, r: QuorumParam) -> Result<Object, CoordinatorError> {
        self.read(key, ReadOptions { r, ..ReadOptions::default() }).await.map(|reply| reply.object)
    }

    /// Quorum read with every option; says how many fallbacks answered.
    #[tracing::instrument(name = "coordinator.get", skip_all)]
    pub async fn read(&self, key: &ObjectKey, options: ReadOptions) -> Result<Reply, CoordinatorError> {
        let deadline = Instant::now() + self.settings.timeout;
        let mut catch_ups = 0;
        loop {
            match self.get_once(key, options, deadline).await {
                Err(Attempt::Stale { node, epoch }) if self.caught_up(&mut catch_ups, &node, epoch, deadline).await => {
                }
                other => return other.map_err(|a| self.attempt_error("read", a)),
            }
        }
    }

    /// After a replica refused a call planned on an older ring: waits until
    /// this node has that replica's ring (or the deadline), at most
    /// [`MAX_CATCH_UPS`] times per request; true if the request may be
    /// planned again. More than once, because the ring can move again while
    /// this node catches up (a join's switch and a leaver's removal come in
    /// quick succession), and a request that gave up after one catch-up
    /// answered 503 in the middle of a healthy move.
    async fn caught_up(&self, catch_ups: &mut usize, node: &NodeId, epoch: u64, deadline: Instant) -> bool {
        if *catch_ups >= MAX_CATCH_UPS {
            return false;
        }
        *catch_ups += 1;
        self.topology.catch_up(node, epoch, deadline).await
    }

    /// Spawns one read of `node`'s copy (with `digest`, of its digest); its
    /// answer comes back on `tx`.
    fn spawn_get(
        &self,
        node: NodeId,
        digest: bool,
        partition: Partition,
        key: &ObjectKey,
        call: CallContext,
        tx: &ReadTx,
    ) {
        if digest {
            metrics::read_digest();
        }
        let (replicas, key, tx) = (Arc::clone(&self.replicas), key.clone(), tx.clone());
        let deadline = call.deadline;
        self.env.spawn(
            async move {
                let reply = match timeout_at(deadline, replicas.read(&node, partition, &key, digest, call)).await {
                    Ok(reply) => reply,
                    Err(_) => Err(ReplicaError::Unreachable {
                        node: node.clone(),
                        reason: "timed out".into(),
                        maybe_applied: true,
                    }),
                };
                let _ = tx.send((node, reply)).await;
            }
            .in_current_span(),
        );
    }

    /// The R slots of a read asked for their value (the others for a
    /// digest): this node first when it is one, then the up primaries in
    /// plan order, then the down ones (whose fallbacks will answer).
    fn full_value_slots(&self, plan: &Plan) -> Vec<NodeId> {
        let local = self.topology.local();
        let up = |n: &&NodeId| self.topology.is_up(n);
        let mut order: Vec<&NodeId> = plan.nodes.iter().filter(|n| *n == local).filter(up).collect();
        order.extend(plan.nodes.iter().filter(|n| *n != local).filter(up));
        order.extend(plan.nodes.iter().filter(|n| !up(n)));
        order.into_iter().take(plan.needed).cloned().collect()
    }

    /// One read on the ring as this node sees it now: the up primaries, and
    /// for each primary that is down or fails, the next fallback.
    ///
    /// Digest reads (Riak's HEAD requests): R replicas are asked for their
    /// copy (this node first when it is one, then the others in plan order,
    /// up ones first) and the rest for a digest (`core::digest`), so a read
    /// moves about one copy's bytes per value instead of N. A fallback is
    /// asked what its primary's slot was. Answers count towards R either
    /// way; before answering, the copies whose digest the merge of the full
    /// copies does not cover are fetched (`ReadQuorum::fetches`), so the
    /// client gets the merge of every answer, as when all were full. A
    /// full-value replica that fails leaves its slot to a fallback as
    /// before, and a digest replica whose copy is needed is fetched; if that
    /// fetch fails, a fallback is asked for its copy in the slot's place.
    async fn get_once(&self, key: &ObjectKey, options: ReadOptions, deadline: Instant) -> Result<Reply, Attempt> {
        let plan = self.plan(key, options.r, options.pr, Op::Read)?;
        let call = CallContext { deadline, ring_epoch: plan.epoch, ring_hash: plan.ring_hash };
        let (tx, mut rx) = mpsc::channel(plan.nodes.len());
        let partition = plan.partition;
        // A request's notfound_ok/basic_quorum, else its bucket's.
        let mut read = ReadQuorum::with_primaries(plan.needed, plan.nodes.len(), plan.primaries).with_notfound_rules(
            options.notfound_ok.unwrap_or(plan.notfound_ok),
            options.basic_quorum.unwrap_or(plan.basic_quorum),
        );
        let full = self.full_value_slots(&plan);
        let digest = |slot: &NodeId| !full.contains(slot);
        let mut sloppy = plan.sloppy();
        let mut in_flight = 0usize;
        for node in &plan.nodes {
            if self.topology.is_up(node) {
                self.spawn_get(node.clone(), digest(node), partition, key, call, &tx);
                in_flight += 1;
                continue;
            }
            // Known down: a fallback now instead of waiting for it.
            match sloppy.take(&plan, node, &*self.topology) {
                Some(fallback) => {
                    read.record_primary_failed(node, "node is down");
                    self.spawn_get(fallback, digest(node), partition, key, call, &tx);
                    in_flight += 1;
                }
                None => {
                    read.record(node.clone(), Err("node is down".into()));
                }
            }
            if read.progress() == Progress::Failed {
                return Err(Attempt::Failed(self.read_unavailable(&read)));
            }
        }
        // Replicas whose value is being fetched after they gave a digest.
        let mut fetching: Vec<NodeId> = Vec::new();
        loop {
            while (read.progress() == Progress::Pending || !fetching.is_empty()) && in_flight > 0 {
                let (node, reply) = match timeout_at(deadline, rx.recv()).await {
                    Ok(Some(answer)) => answer,
                    Ok(None) | Err(_) => break,
                };
                in_flight -= 1;
                if let Some(at) = fetching.iter().position(|n| *n == node) {
                    fetching.remove(at);
                    let fetched = match reply {
                        Err(ReplicaError::StaleRing { node, epoch }) => return Err(Attempt::Stale { node, epoch }),
                        Ok(Answer::Full(object)) => Ok(object),
                        Ok(Answer::Digest(_)) => Err("it answered a value fetch with a digest".to_owned()),
                        Err(e) => Err(e.to_string()),
                    };
                    metrics::read_value_fetch(fetched.is_ok());
                    match fetched {
                        Ok(object) => read.record_fetched(&node, object),
                        // Its answer is taken back; the next fallback is
                        // asked for its copy in the slot's place, as for a
                        // replica that fails outright.
                        Err(reason) => match sloppy.take(&plan, &node, &*self.topology) {
                            Some(fallback) => {
                                read.fetch_failed(&node, &reason, AfterFetchFailure::FallbackAsked);
                                self.spawn_get(fallback, false, partition, key, call, &tx);
                                in_flight += 1;
                            }
                            None => {
                                read.fetch_failed(&node, &reason, AfterFetchFailure::SlotLost);
                            }
                        },
                    }
                    continue;
                }
                let slot = sloppy.stands_for(&node);
                match reply {
                    // A replica on a newer ring: our holders may be the wrong
                    // ones. Catch up rather than answer from them.
                    Err(ReplicaError::StaleRing { node, epoch }) => return Err(Attempt::Stale { node, epoch }),
                    Ok(answer) => match &slot {
                        Some(primary) => read.record_fallback_answer(node, primary, Ok(answer)),
                        None => read.record_answer(node, Ok(answer)),
                    },
                    Err(e) => {
                        let primary = slot.clone().unwrap_or_else(|| node.clone());
                        match sloppy.take(&plan, &primary, &*self.topology) {
                            Some(fallback) => {
                                if slot.is_none() {
                                    read.record_primary_failed(&node, &e.to_string());
                                }
                                self.spawn_get(fallback, digest(&primary), partition, key, call, &tx);
                                in_flight += 1;
                                read.progress()
                            }
                            None if slot.is_some() => read.record_fallback(node, &primary, Err(e.to_string())),
                            None => read.record(node, Err(e.to_string())),
                        }
                    }
                };
            }
            if read.progress() != Progress::Met || !fetching.is_empty() {
                break;
            }
            let fetches = read.fetches();
            if fetches.is_empty() {
                break;
            }
            for node in fetches {
                self.spawn_get(node.clone(), false, partition, key, call, &tx);
                in_flight += 1;
                fetching.push(node);
            }
        }
        drop(tx);
        if read.not_found() {
            // Riak's notfound_ok=false: enough replicas had nothing.
            metrics::quorum("read", "not_found", read.quorum().ok().len());
            return Ok(Reply { object: Object::new(), fallbacks: read.fallbacks() });
        }
        // A value still being fetched at the deadline: the answer would not
        // be the merge of what the replicas answered.
        if read.progress() != Progress::Met || !fetching.is_empty() {
            return Err(Attempt::Failed(self.read_unavailable(&read)));
        }
        let merged = read.merged();
        let fallbacks = read.fallbacks();
        metrics::quorum("read", "met", read.quorum().ok().len());
        if !merged.siblings().is_empty() {
            metrics::read_siblings(merged.siblings().len());
        }
        let repair = Repair {
            partition: plan.partition,
            ring_epoch: plan.epoch,
            ring_hash: plan.ring_hash,
            timeout: self.settings.timeout,
            fallbacks: sloppy.snapshot(),
        };
        if self.read_repair {
            self.env.spawn(read_repair(Arc::clone(&self.replicas), repair, key.clone(), read, rx).in_current_span());
        }
        Ok(Reply { object: merged, fallbacks })
    }

    /// Quorum write of a new value, superseding what `context` covers.
    pub async fn put(
        &self,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: Mutation,
        w: QuorumParam,
    ) -> Result<Object, CoordinatorError> {
        let options = WriteOptions { w, ..WriteOptions::default() };
        self.write(key, context, mutation, options).await.map(|reply| reply.object)
    }

    /// Quorum write with every option; says how many fallbacks acknowledged.
    #[tracing::instrument(name = "coordinator.put", skip_all)]
    pub async fn write(
        &self,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: Mutation,
        options: WriteOptions,
    ) -> Result<Reply, CoordinatorError> {
        let deadline = Instant::now() + self.settings.timeout;
        let plan = self.plan(key, options.w, options.pw, Op::Write)?;
        self.write_planned(plan, key, context, mutation, options, deadline, true).await
    }

    /// A write another node forwarded here ([`ReplicaClient::forward_write`]):
    /// coordinated by this node whatever its ring says, until `deadline` (the
    /// forwarder's, capped by this node's timeout), and never forwarded
    /// again, so two nodes that disagree on the ring cannot pass it back and
    /// forth. The error says whether this node did anything, so that a write
    /// refused before it started (this node left the cluster since the
    /// forwarder chose it) can be coordinated by the forwarder instead.
    #[tracing::instrument(name = "coordinator.forwarded_put", skip_all)]
    pub async fn write_forwarded(
        &self,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: Mutation,
        options: WriteOptions,
        deadline: Instant,
    ) -> Result<Reply, ForwardedError> {
        let deadline = deadline.min(Instant::now() + self.settings.timeout);
        let plan = self.plan(key, options.w, options.pw, Op::Write).map_err(ForwardedError::NotStarted)?;
        self.write_planned(plan, key, context, mutation, options, deadline, false).await.map_err(ForwardedError::Failed)
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_planned(
        &self,
        mut plan: Plan,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: Mutation,
        options: WriteOptions,
        deadline: Instant,
        may_forward: bool,
    ) -> Result<Reply, CoordinatorError> {
        let mut catch_ups = 0;
        if may_forward
            && let Some(answer) =
                self.forward(key, context, &mutation, options, &mut plan, &mut catch_ups, deadline).await
        {
            return answer;
        }
        let mut sloppy = plan.sloppy();
        let stamped = loop {
            match self.stamp(&plan, &mut sloppy, key, context, &mutation, deadline).await {
                // The stamper's ring is newer: nothing was stamped; catch up
                // and plan again (the object then goes to the new plan's
                // nodes).
                Err(Attempt::Stale { node, epoch }) if self.caught_up(&mut catch_ups, &node, epoch, deadline).await => {
                    plan = self.plan(key, options.w, options.pw, Op::Write)?;
                    sloppy = plan.sloppy();
                }
                other => break other,
            }
        };
        let Stamped { stamper, object, mut quorum, mut by_fallback } =
            stamped.map_err(|a| self.attempt_error("write", a))?;
        #[cfg(feature = "fault-injection")]
        if crate::faults::ack_before_quorum() {
            return Ok(Reply { object, fallbacks: 0 });
        }
        loop {
            match self.replicate(&plan, &mut sloppy, key, &object, quorum, by_fallback.take(), deadline).await {
                Ok(fallbacks) => return Ok(Reply { object, fallbacks }),
                // A replica's ring is newer: the object is stamped and
                // stored; send it to the key's holders on the newer ring and
                // count again.
                Err(Attempt::Stale { node, epoch }) if self.caught_up(&mut catch_ups, &node, epoch, deadline).await => {
                    plan = self.plan(key, options.w, options.pw, Op::Write)?;
                    sloppy = plan.sloppy();
                    quorum = WriteQuorum::with_primaries(
                        plan.nodes.clone(),
                        plan.needed,
                        plan.target.clone(),
                        plan.primaries,
                    );
                    if quorum.nodes().contains(&stamper) {
                        quorum.record_ok(stamper.clone());
                    }
                }
                Err(a) => return Err(self.attempt_error("write", a)),
            }
        }
    }

    /// Forwards the write whole to the key's first up primary when this node
    /// is none of its primaries, as Riak's put FSM does (while the key's
    /// partition moves, the first that holds it on both rings): that replica stamps
    /// it locally and merges it into the others, so the write costs this
    /// node one call instead of a remote stamp plus a merge per other
    /// replica. `None`: coordinate it here on `plan` (possibly replanned
    /// after a catch-up), because this node is a primary, or no primary is
    /// up (a fallback coordinates, as before), or the forward certainly was
    /// not applied (no connection could be made). A forward whose answer
    /// was lost may have been stamped: like a lost stamp, it ends the write
    /// with a 503 rather than have another node stamp it a second time.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        options: WriteOptions,
        plan: &mut Plan,
        catch_ups: &mut usize,
        deadline: Instant,
    ) -> Option<Result<Reply, CoordinatorError>> {
        loop {
            if plan.nodes.contains(self.topology.local()) {
                return None;
            }
            // What this node would refuse before stamping (too few primaries
            // up for `?pw=`, as it sees them), it refuses without forwarding:
            // the receiver may not have seen them down yet, and would stamp.
            let (quorum, _) = self.quorum_before_stamp(plan);
            if quorum.progress() == Progress::Failed {
                return Some(Err(self.write_unavailable(&quorum)));
            }
            // While the key's partition moves, only to a node that holds it
            // on both rings: one that is handing it off (leaving, say) may
            // stop serving half way through the write.
            let stays = |n: &NodeId| plan.target.as_ref().is_none_or(|target| target.contains(n));
            let to = plan.nodes.iter().find(|n| self.topology.is_up(n) && stays(n))?.clone();
            // The receiver is fenced by this plan's ring, as a stamp is.
            let call = CallContext { deadline, ring_epoch: plan.epoch, ring_hash: plan.ring_hash };
            let span = tracing::info_span!("coordinator.forward", node = %to);
            let forwarded = self.replicas.forward_write(&to, key, context, mutation, options, call).instrument(span);
            let answer = timeout_at(deadline, forwarded).await.unwrap_or_else(|_| {
                Err(ReplicaError::Unreachable {
                    node: to.clone(),
                    reason: "no answer to the forwarded write before the deadline".into(),
                    maybe_applied: true,
                })
            });
            match answer {
                Ok(reply) => return Some(Ok(reply)),
                // The receiver's ring is newer: nothing was done; catch up
                // and plan again (this node may now be a primary).
                Err(ReplicaError::StaleRing { node, epoch }) => {
                    if !self.caught_up(catch_ups, &node, epoch, deadline).await {
                        return Some(Err(self.attempt_error("write", Attempt::Stale { node, epoch })));
                    }
                    match self.plan(key, options.w, options.pw, Op::Write) {
                        Ok(next) => *plan = next,
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(e @ (ReplicaError::Unreachable { maybe_applied: false, .. } | ReplicaError::UnknownNode(_))) => {
                    tracing::debug!(node = %to, error = %e, "write not forwarded; coordinating it here");
                    return None;
                }
                // The receiver's answer (a 503 for its quorum, a 409 for
                // siblings, ...), or no answer after the write went out.
                Err(e) => {
                    if e.code() == ErrorCode::Unavailable {
                        metrics::quorum("write", "failed", 0);
                    }
                    return Some(Err(CoordinatorError::Replica(e)));
                }
            }
        }
    }

    /// Spawns one merge into `node` (with a hint when it is a fallback for
    /// the primary `hint`); its answer comes back on `tx`.
    #[allow(clippy::too_many_arguments)]
    fn spawn_merge(
        &self,
        node: NodeId,
        hint: Option<NodeId>,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        call: CallContext,
        tx: &WriteTx,
    ) {
        let (replicas, key, tx, object) = (Arc::clone(&self.replicas), key.clone(), tx.clone(), object.clone());
        let deadline = call.deadline;
        self.env.spawn(
            async move {
                let merged = async {
                    match &hint {
                        Some(target) => replicas.merge_hinted(&node, partition, &key, &object, target, call).await,
                        None => replicas.merge(&node, partition, &key, &object, call).await,
                    }
                };
                let reply = match timeout_at(deadline, merged).await {
                    Ok(reply) => reply,
                    Err(_) => Err(ReplicaError::Unreachable {
                        node: node.clone(),
                        reason: "timed out".into(),
                        maybe_applied: true,
                    }),
                };
                let _ = tx.send((node, hint, reply)).await;
            }
            .in_current_span(),
        );
    }

    /// Sends the stamped `object` to every node of the plan not yet counted
    /// in `quorum` (a fallback for each that is down or fails, and to the
    /// fallback that stamped it, with its hint), and waits until W of each
    /// ring acknowledged, or that became impossible, or the deadline.
    /// Returns how many fallbacks acknowledged.
    #[allow(clippy::too_many_arguments)]
    async fn replicate(
        &self,
        plan: &Plan,
        sloppy: &mut Sloppy,
        key: &ObjectKey,
        object: &Object,
        mut quorum: WriteQuorum,
        by_fallback: Option<(NodeId, NodeId)>,
        deadline: Instant,
    ) -> Result<usize, Attempt> {
        let partition = plan.partition;
        let call = CallContext { deadline, ring_epoch: plan.epoch, ring_hash: plan.ring_hash };
        let all = quorum.nodes();
        let (tx, mut rx) = mpsc::channel(all.len().max(1));
        let mut in_flight = 0usize;
        let stamped_slot = by_fallback.as_ref().map(|(_, primary)| primary.clone());
        if let Some((fallback, primary)) = by_fallback {
            self.spawn_merge(fallback, Some(primary), partition, key, object, call, &tx);
            in_flight += 1;
        }
        let others: Vec<NodeId> =
            all.into_iter().filter(|n| !quorum.answered(n) && stamped_slot.as_ref() != Some(n)).collect();
        for node in others {
            if self.topology.is_up(&node) {
                self.spawn_merge(node, None, partition, key, object, call, &tx);
                in_flight += 1;
            } else if let Some(fallback) = sloppy.take(plan, &node, &*self.topology) {
                quorum.record_primary_failed(&node, "node is down");
                self.spawn_merge(fallback, Some(node), partition, key, object, call, &tx);
                in_flight += 1;
            } else {
                quorum.record_err(node, "node is down");
            }
        }
        while quorum.progress() == Progress::Pending && in_flight > 0 {
            let (node, hint, reply) = match timeout_at(deadline, rx.recv()).await {
                Ok(Some(answer)) => answer,
                Ok(None) | Err(_) => break,
            };
            in_flight -= 1;
            match (reply, hint) {
                (Ok(()), None) => quorum.record_ok(node),
                (Ok(()), Some(primary)) => quorum.record_fallback_ok(node, &primary),
                // Our plan may name the wrong holders: stop counting it and
                // let the caller catch up and send again (the calls still in
                // flight finish on their own; merges are idempotent).
                (Err(ReplicaError::StaleRing { node, epoch }), _) => return Err(Attempt::Stale { node, epoch }),
                // A failed merge hands its slot to the next fallback. Sending
                // the same object twice is harmless (merges are idempotent,
                // and no new dot is made), so even a merge that may have
                // been applied can be.
                (Err(e), hint) => {
                    let primary = hint.clone().unwrap_or_else(|| node.clone());
                    let reason = e.to_string();
                    match sloppy.take(plan, &primary, &*self.topology) {
                        Some(fallback) => {
                            if hint.is_none() {
                                quorum.record_primary_failed(&node, &reason);
                            }
                            self.spawn_merge(fallback, Some(primary), partition, key, object, call, &tx);
                            in_flight += 1;
                            quorum.progress()
                        }
                        None if hint.is_some() => quorum.record_err(primary, format!("{reason} (fallback {node})")),
                        None => quorum.record_err(node, reason),
                    }
                }
            };
        }
        match quorum.progress() {
            Progress::Met => {
                metrics::quorum("write", "met", quorum.ok().len());
                Ok(quorum.fallbacks())
            }
            _ => Err(Attempt::Failed(self.write_unavailable(&quorum))),
        }
    }

    /// Quorum delete. Without a context it deletes what a quorum read sees
    /// now (the client saw nothing, so "delete what is there" is the only
    /// sensible meaning); with one it deletes exactly what that context saw.
    pub async fn delete(
        &self,
        key: &ObjectKey,
        context: Option<&VersionVector>,
        r: QuorumParam,
        w: QuorumParam,
    ) -> Result<Object, CoordinatorError> {
        let (read, write) =
            (ReadOptions { r, ..ReadOptions::default() }, WriteOptions { w, ..WriteOptions::default() });
        self.remove(key, context, read, write).await.map(|reply| reply.object)
    }

    /// Quorum delete with every option; the fallbacks counted are the
    /// read's and the write's.
    #[tracing::instrument(name = "coordinator.delete", skip_all)]
    pub async fn remove(
        &self,
        key: &ObjectKey,
        context: Option<&VersionVector>,
        read: ReadOptions,
        write: WriteOptions,
    ) -> Result<Reply, CoordinatorError> {
        let (context, read_fallbacks) = match context {
            Some(context) => (context.clone(), 0),
            None => {
                // The read half of a delete defaults to the bucket's rw
                // (Riak's), not its r.
                let mut read = read;
                if read.r == QuorumParam::Default {
                    read.r = self.topology.bucket_props(&key.bucket_type, &key.bucket)?.rw;
                }
                let current = self.read(key, read).await?;
                if current.object.is_empty() {
                    return Ok(current);
                }
                (current.object.clock().clone(), current.fallbacks)
            }
        };
        let reply = self.write(key, &context, Mutation::Delete, write).await?;
        Ok(Reply { fallbacks: reply.fallbacks + read_fallbacks, ..reply })
    }

    /// Every copy of `key` on its preference list, primaries then fallbacks,
    /// each node asked for its own (no quorum, no repair; unfenced, like a
    /// tool). A node that does not answer within the request timeout, or is
    /// known down, is reported with the reason.
    pub async fn replicas(&self, key: &ObjectKey) -> ReplicasReport {
        let view = self.topology.view();
        let partition = view.current.partition_of(key);
        // The bucket's n_val primaries; a diagnostic, so a key of an unknown
        // or inactive type is shown with the cluster's N, not refused.
        let n_val = self.n_val_of(key).unwrap_or(view.n_val);
        let primaries = view.current.holders(partition, n_val);
        let fallbacks = view.current.fallbacks(partition, n_val).into_iter().map(|e| e.node);
        let nodes: Vec<(NodeId, bool)> =
            primaries.into_iter().map(|n| (n, true)).chain(fallbacks.map(|n| (n, false))).collect();
        let call = CallContext::until(Instant::now() + self.settings.timeout);
        let asks = nodes.into_iter().map(|(node, primary)| {
            let replicas = Arc::clone(&self.replicas);
            let up = self.topology.is_up(&node);
            async move {
                let answer = if up {
                    match timeout_at(call.deadline, replicas.get(&node, partition, key, call)).await {
                        Ok(reply) => reply.map_err(|e| e.to_string()),
                        Err(_) => Err("timed out".to_owned()),
                    }
                } else {
                    Err("node is down".to_owned())
                };
                ReplicaCopy { node, primary, answer }
            }
        });
        ReplicasReport { partition, replicas: futures::future::join_all(asks).await }
    }

    /// How many replicas `key` has: its bucket's n_val, at most the
    /// cluster's (it is placed on the first n_val of the cluster's holders).
    pub fn n_val_of(&self, key: &ObjectKey) -> Result<usize, CoordinatorError> {
        let props = self.topology.bucket_props(&key.bucket_type, &key.bucket)?;
        Ok(props.n_val.clamp(1, self.topology.view().n_val))
    }

    /// The write's quorum before anything is stamped, with every primary
    /// this node sees down recorded as failed, and those primaries: a
    /// primary that is down keeps its slot open for a fallback, but is lost
    /// for `?pw=`, so the write fails now, before anything is stamped, when
    /// too few primaries are left for it (`Progress::Failed`).
    fn quorum_before_stamp(&self, plan: &Plan) -> (WriteQuorum, Vec<NodeId>) {
        let mut quorum =
            WriteQuorum::with_primaries(plan.nodes.clone(), plan.needed, plan.target.clone(), plan.primaries);
        let down: Vec<NodeId> = plan.nodes.iter().filter(|n| !self.topology.is_up(n)).cloned().collect();
        for node in &down {
            quorum.record_primary_failed(node, "node is down");
        }
        (quorum, down)
    }

    /// Has one replica of the key stamp the write: this node when it is one,
    /// else the other primaries in preference-list order, skipping nodes
    /// known to be down; the next one only when one failed. When no primary
    /// could stamp, a fallback does (see the module comment). Returns the
    /// stamper, the object and the write quorum with the stamper (and every
    /// replica that failed) recorded; a fallback stamper is not counted yet.
    async fn stamp(
        &self,
        plan: &Plan,
        sloppy: &mut Sloppy,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        deadline: Instant,
    ) -> Result<Stamped, Attempt> {
        let (mut quorum, mut failed) = self.quorum_before_stamp(plan);
        if quorum.progress() == Progress::Failed {
            return Err(Attempt::Failed(self.write_unavailable(&quorum)));
        }
        let local = self.topology.local();
        let mut candidates: Vec<&NodeId> = plan.nodes.iter().filter(|n| *n == local).collect();
        candidates.extend(plan.nodes.iter().filter(|n| *n != local));
        let up: Vec<&NodeId> = candidates.into_iter().filter(|n| self.topology.is_up(n)).collect();
        let mut stampers: Vec<(NodeId, Option<NodeId>)> = up.into_iter().map(|n| (n.clone(), None)).collect();
        let mut next = 0;
        loop {
            if next == stampers.len() {
                // No primary could stamp: the next fallback for the first
                // primary that could not, while `?pw=` still allows it.
                let Some(slot) = failed.first().cloned() else { break };
                if quorum.progress() == Progress::Failed {
                    break;
                }
                let Some(fallback) = sloppy.take(plan, &slot, &*self.topology) else { break };
                stampers.push((fallback, Some(slot)));
            }
            let (node, stands_for) = stampers[next].clone();
            next += 1;
            // Nothing is sent once the deadline passed: a stamp that lands
            // after the client was told 503 is a write nobody waits for.
            if Instant::now() >= deadline {
                break;
            }
            // The stamper gets the whole time left. Moving on from a replica
            // that is merely slow would have a second replica stamp the same
            // write: if the first still applies it, the value comes back as a
            // second sibling after a client overwrote it (the fault suite saw
            // exactly that under packet loss). A replica that fails fast, or
            // is known down, hands over at once; one that is silent until the
            // deadline drops the call when it finally reads it.
            let call = CallContext { deadline, ring_epoch: plan.epoch, ring_hash: plan.ring_hash };
            let stamped = self.replicas.coordinate(&node, plan.partition, key, context, mutation, call);
            let slot = stands_for.clone().unwrap_or_else(|| node.clone());
            match timeout_at(deadline, stamped).await {
                Ok(Ok(object)) => {
                    let by_fallback = match stands_for {
                        // Counted once its hint is stored (`replicate`).
                        Some(primary) => Some((node.clone(), primary)),
                        None => {
                            quorum.record_ok(node.clone());
                            None
                        }
                    };
                    return Ok(Stamped { stamper: node, object, quorum, by_fallback });
                }
                Ok(Err(ReplicaError::StaleRing { node, epoch })) => return Err(Attempt::Stale { node, epoch }),
                // The stamp went out and its answer was lost: the replica may
                // have stamped it. A second stamper would give the write a
                // second dot, and the copy under the first would come back as
                // a sibling after a client overwrote the second (the
                // simulator found this under packet loss). The outcome is
                // unknown; the client is told so.
                Ok(Err(e @ ReplicaError::Unreachable { maybe_applied: true, .. })) => {
                    quorum.record_err(slot, e.to_string());
                    break;
                }
                Ok(Err(e)) if e.code() != ErrorCode::Unavailable => {
                    return Err(Attempt::Failed(CoordinatorError::Replica(e)));
                }
                Ok(Err(e)) => {
                    tracing::debug!(%node, error = %e, "replica could not stamp the write");
                    if stands_for.is_none() {
                        quorum.record_primary_failed(&node, &e.to_string());
                        failed.push(node);
                    }
                }
                Err(_) => break,
            }
        }
        Err(Attempt::Failed(self.write_unavailable(&quorum)))
    }

    /// What a failed attempt tells the client.
    fn attempt_error(&self, op: &'static str, attempt: Attempt) -> CoordinatorError {
        match attempt {
            Attempt::Failed(e) => e,
            Attempt::Stale { node, epoch } => {
                metrics::quorum(op, "failed", 0);
                CoordinatorError::StaleRing { op, node: NodeId::new(self.topology.http_address(&node)), epoch }
            }
        }
    }

    /// A 503 naming replicas by their HTTP addresses; counted as a failed
    /// quorum, or a timed-out one when replicas were still silent.
    fn unavailable(&self, op: &'static str, progress: Progress, shortfall: Shortfall, ok: usize) -> CoordinatorError {
        let result = if progress == Progress::Failed { "failed" } else { "timeout" };
        metrics::quorum(op, result, ok);
        let shortfall = shortfall.rename(|n| NodeId::new(self.topology.http_address(n)));
        CoordinatorError::Unavailable { op, shortfall }
    }

    fn read_unavailable(&self, read: &ReadQuorum) -> CoordinatorError {
        self.unavailable("read", read.progress(), read.shortfall(), read.quorum().ok().len())
    }

    fn write_unavailable(&self, quorum: &WriteQuorum) -> CoordinatorError {
        self.unavailable("write", quorum.progress(), quorum.shortfall(), quorum.ok().len())
    }

    fn plan(
        &self,
        key: &ObjectKey,
        param: QuorumParam,
        primaries: QuorumParam,
        op: Op,
    ) -> Result<Plan, CoordinatorError> {
        if self.topology.removed() {
            return Err(CoordinatorError::Removed { node: self.topology.local().clone() });
        }
        let view = self.topology.view();
        // The bucket's properties: its n_val places the key on the first
        // n_val holders of the cluster's preference list, and its r/w/pr/pw
        // stand in for a request's `default` (they are the cluster's R and
        // W unless the bucket or its type sets them).
        let props = self.topology.bucket_props(&key.bucket_type, &key.bucket)?;
        let n_val = props.n_val.clamp(1, view.n_val);
        let (name, primaries_name, default, bucket_count, bucket_primaries) = match op {
            Op::Read => ("r", "pr", view.r, props.r, props.pr),
            Op::Write => ("w", "pw", view.w, props.w, props.pw),
        };
        // A request's own value above n_val is a client error; a bucket's
        // (or the cluster's) default above this bucket's n_val is capped,
        // so that a bucket with a small n_val works with every default.
        let bad =
            |name: &str, param: QuorumParam, e: String| CoordinatorError::BadRequest(format!("{name}={param}: {e}"));
        let needed = match param {
            QuorumParam::Default => bucket_count.resolve(default, view.n_val).map(|c| c.min(n_val)),
            explicit => explicit.resolve(default, n_val),
        }
        .map_err(|e| bad(name, param, e))?;
        let primaries_needed = match primaries {
            QuorumParam::Default => bucket_primaries.resolve_primaries(view.n_val).map(|c| c.min(n_val)),
            explicit => explicit.resolve_primaries(n_val),
        }
        .map_err(|e| bad(primaries_name, primaries, e))?;
        let partition = view.current.partition_of(key);
        let nodes = view.current.holders(partition, n_val);
        let target = view.target.as_ref().map(|t| t.holders(partition, n_val)).filter(|t| *t != nodes);
        // A cluster smaller than N keeps the key on every node it has and
        // counts the quorum over those (flagged as under-replicated).
        let needed = needed.min(nodes.len());
        let primaries = primaries_needed.min(nodes.len());
        Ok(Plan {
            epoch: view.epoch,
            ring_hash: view.ring_hash,
            partition,
            nodes,
            needed,
            primaries,
            target,
            ring: Arc::clone(&view.current),
            n_val,
            notfound_ok: props.notfound_ok,
            basic_quorum: props.basic_quorum,
        })
    }
}

/// A write stamped by one replica: the stamper, the object, the quorum so
/// far, and (fallback, primary) when a fallback stamped it in a primary's
/// place.
struct Stamped {
    stamper: NodeId,
    object: Object,
    quorum: WriteQuorum,
    by_fallback: Option<(NodeId, NodeId)>,
}

/// Where the answers of a read's replica calls arrive.
type ReadTx = mpsc::Sender<(NodeId, Result<Answer, ReplicaError>)>;
/// Where the answers of a write's merges arrive, each with the primary its
/// node stood in for.
type WriteTx = mpsc::Sender<(NodeId, Option<NodeId>, Result<(), ReplicaError>)>;

/// Why one attempt at an operation did not succeed.
enum Attempt {
    Failed(CoordinatorError),
    /// A replica has a newer ring (epoch `epoch`) than this node.
    Stale {
        node: NodeId,
        epoch: u64,
    },
}

impl From<CoordinatorError> for Attempt {
    fn from(e: CoordinatorError) -> Attempt {
        Attempt::Failed(e)
    }
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

/// After the client has its answer: wait for the remaining replicas (each
/// call is bounded by the request deadline), then send the merged object to
/// every replica that answered with less.
/// Where a read repair goes: the read's partition and ring, and how long
/// each repair may take (it starts after the client's deadline may be over).
struct Repair {
    partition: Partition,
    ring_epoch: u64,
    ring_hash: u64,
    timeout: std::time::Duration,
    /// Which late answers come from fallbacks (never repaired).
    fallbacks: Fallbacks,
}

async fn read_repair(
    replicas: Arc<dyn ReplicaClient>,
    repair: Repair,
    key: ObjectKey,
    mut read: ReadQuorum,
    mut rx: mpsc::Receiver<(NodeId, Result<Answer, ReplicaError>)>,
) {
    // Late answers: a late digest that shows a newer copy makes its replica
    // a repair target, and its value joins the repair through the history
    // fetch below, as a late full answer would.
    while let Some((node, reply)) = rx.recv().await {
        let reply = reply.map_err(|e| e.to_string());
        match repair.fallbacks.stands_for(&node) {
            Some(primary) => read.record_fallback_answer(node.clone(), &primary.clone(), reply),
            None => read.record_answer(node, reply),
        };
    }
    let merged = read.merged();
    let call = || CallContext {
        deadline: Instant::now() + repair.timeout,
        ring_epoch: repair.ring_epoch,
        ring_hash: repair.ring_hash,
    };
    let mut targets = read.repairs(&merged);
    if targets.is_empty() {
        return;
    }
    // The replies are stored objects, whose clocks may be pruned (clock
    // hygiene, `replica::reap`): a primary that lacks a key's history (it
    // lost a prune to a power loss) and holds a value the others
    // superseded would keep it for good if only sent those. The primaries
    // to repair (those that answered with less) are the ones that may hold
    // a history that covers such a value: their effective objects (with
    // the history) join the repair, and it goes to every primary whose
    // reply holds less than that join.
    let mut full = merged.clone();
    for node in &targets {
        if let Ok(object) = replicas.get_with_history(node, repair.partition, &key, call()).await {
            full = full.merge(&object);
        }
    }
    if full != merged {
        for node in read.primaries_answered() {
            if !targets.contains(&node) {
                targets.push(node);
            }
        }
    }
    for node in targets {
        tracing::debug!(%node, key = ?key.key, "read repair");
        let repaired = replicas.merge(&node, repair.partition, &key, &full, call()).await;
        metrics::read_repair(repaired.is_ok());
        if let Err(e) = repaired {
            tracing::warn!(%node, error = %e, "read repair failed");
        }
    }
}
