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
//! A write is stamped by one replica of the key (itself, when this node is
//! one); `replica` explains why any replica may stamp without reissuing a
//! dot. That replica's new object is then merged into the others. While the
//! key's partition moves to new holders, the write goes to both preference
//! lists and needs W acknowledgements from each, so reads of the new holders
//! see it after the switch (see `core::membership`).
//!
//! The coordinator knows the cluster only through [`Topology`] (a ring view
//! and a liveness check) and reaches replicas only through
//! [`ReplicaClient`], so its rules are tested in process with scripted ones.

mod options;
mod replicas;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

pub use options::QuorumParam;
pub use replicas::{AddressBook, ReplicaClient};
pub use topology::{RingView, Topology};

use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::{Mutation, Object};
use crate::core::quorum::{Progress, ReadQuorum, Shortfall, WriteQuorum};
use crate::core::ring::Partition;
use crate::core::vclock::VersionVector;
use crate::env::Env;
use crate::error::{ErrorCode, HasErrorCode};
use crate::replica::{CallContext, ReplicaError};
use crate::telemetry::metrics;

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
    /// The cluster removed this node: it coordinates nothing, since its view
    /// of the ring and its data are no longer the cluster's.
    #[error(
        "node {node} was removed from the cluster: another node replaced it, so it serves no data; \
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
}

impl HasErrorCode for CoordinatorError {
    fn code(&self) -> ErrorCode {
        match self {
            CoordinatorError::BadRequest(_) => ErrorCode::BadRequest,
            CoordinatorError::Unavailable { .. }
            | CoordinatorError::Removed { .. }
            | CoordinatorError::StaleRing { .. } => ErrorCode::Unavailable,
            CoordinatorError::Replica(e) => e.code(),
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
    /// The key's preference list in the target ring, while its partition
    /// moves: writes need W of these too (see `core::quorum::WriteQuorum`).
    target: Option<Vec<NodeId>>,
}

pub struct Coordinator {
    topology: Arc<dyn Topology>,
    replicas: Arc<dyn ReplicaClient>,
    settings: CoordinatorSettings,
    /// Spawns the calls of a request (their metrics are this node's).
    env: Env,
}

impl Coordinator {
    pub fn new(
        topology: Arc<dyn Topology>,
        replicas: Arc<dyn ReplicaClient>,
        settings: CoordinatorSettings,
    ) -> Coordinator {
        Coordinator { topology, replicas, settings, env: Env::real() }
    }

    /// Spawns its tasks through `env` (the node's metrics recorder).
    pub fn with_env(mut self, env: &Env) -> Coordinator {
        self.env = env.clone();
        self
    }

    /// Quorum read. Returns the merge of the first R answers; an empty object
    /// means not found, a tombstone means deleted.
    #[tracing::instrument(name = "coordinator.get", skip_all)]
    pub async fn get(&self, key: &ObjectKey, r: QuorumParam) -> Result<Object, CoordinatorError> {
        let deadline = Instant::now() + self.settings.timeout;
        match self.get_once(key, r, deadline).await {
            Err(Attempt::Stale { node, epoch }) if self.topology.catch_up(&node, epoch, deadline).await => {
                self.get_once(key, r, deadline).await.map_err(|a| self.attempt_error("read", a))
            }
            other => other.map_err(|a| self.attempt_error("read", a)),
        }
    }

    /// One read on the ring as this node sees it now.
    async fn get_once(&self, key: &ObjectKey, r: QuorumParam, deadline: Instant) -> Result<Object, Attempt> {
        let plan = self.plan(key, r, Op::Read)?;
        let call = CallContext { deadline, ring_epoch: plan.epoch, ring_hash: plan.ring_hash };
        let (tx, mut rx) = mpsc::channel(plan.nodes.len());
        let partition = plan.partition;
        let mut read = ReadQuorum::new(plan.needed, plan.nodes.len());
        for node in &plan.nodes {
            if !self.topology.is_up(node) {
                // Known down: fail its slot now instead of waiting for it.
                if read.record(node.clone(), Err("node is down".into())) == Progress::Failed {
                    return Err(Attempt::Failed(self.read_unavailable(&read)));
                }
                continue;
            }
            let (replicas, node, key, tx) = (Arc::clone(&self.replicas), node.clone(), key.clone(), tx.clone());
            self.env.spawn(
                async move {
                    let reply = match timeout_at(deadline, replicas.get(&node, partition, &key, call)).await {
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
        drop(tx);
        loop {
            match timeout_at(deadline, rx.recv()).await {
                // A replica on a newer ring: our holders may be the wrong
                // ones. Catch up rather than answer from them.
                Ok(Some((_, Err(ReplicaError::StaleRing { node, epoch })))) => {
                    return Err(Attempt::Stale { node, epoch });
                }
                Ok(Some((node, reply))) => match read.record(node, reply.map_err(|e| e.to_string())) {
                    Progress::Met => break,
                    Progress::Failed => return Err(Attempt::Failed(self.read_unavailable(&read))),
                    Progress::Pending => {}
                },
                Ok(None) | Err(_) => return Err(Attempt::Failed(self.read_unavailable(&read))),
            }
        }
        let merged = read.merged();
        metrics::quorum("read", "met", read.quorum().ok().len());
        if !merged.siblings().is_empty() {
            metrics::read_siblings(merged.siblings().len());
        }
        let repair = Repair {
            partition: plan.partition,
            ring_epoch: plan.epoch,
            ring_hash: plan.ring_hash,
            timeout: self.settings.timeout,
        };
        self.env.spawn(read_repair(Arc::clone(&self.replicas), repair, key.clone(), read, rx).in_current_span());
        Ok(merged)
    }

    /// Quorum write of a new value, superseding what `context` covers.
    #[tracing::instrument(name = "coordinator.put", skip_all)]
    pub async fn put(
        &self,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: Mutation,
        w: QuorumParam,
    ) -> Result<Object, CoordinatorError> {
        let deadline = Instant::now() + self.settings.timeout;
        let plan = self.plan(key, w, Op::Write)?;
        let stamped = match self.stamp(&plan, key, context, &mutation, deadline).await {
            // The stamper's ring is newer: nothing was stamped; catch up and
            // plan again.
            Err(Attempt::Stale { node, epoch }) if self.topology.catch_up(&node, epoch, deadline).await => {
                let plan = self.plan(key, w, Op::Write)?;
                self.stamp(&plan, key, context, &mutation, deadline).await
            }
            other => other,
        };
        let (stamper, object, quorum) = stamped.map_err(|a| self.attempt_error("write", a))?;
        #[cfg(feature = "fault-injection")]
        if crate::faults::ack_before_quorum() {
            return Ok(object);
        }
        match self.replicate(&plan, key, &object, quorum, deadline).await {
            Ok(()) => Ok(object),
            // A replica's ring is newer: the object is stamped and stored;
            // send it to the key's holders on the newer ring and count again.
            Err(Attempt::Stale { node, epoch }) if self.topology.catch_up(&node, epoch, deadline).await => {
                let plan = self.plan(key, w, Op::Write)?;
                let mut quorum = WriteQuorum::new(plan.nodes.clone(), plan.needed, plan.target.clone());
                if quorum.nodes().contains(&stamper) {
                    quorum.record_ok(stamper);
                }
                self.replicate(&plan, key, &object, quorum, deadline)
                    .await
                    .map(|()| object)
                    .map_err(|a| self.attempt_error("write", a))
            }
            Err(a) => Err(self.attempt_error("write", a)),
        }
    }

    /// Sends the stamped `object` to every node of the plan not yet counted
    /// in `quorum`, and waits until W of each ring acknowledged, or that
    /// became impossible, or the deadline.
    async fn replicate(
        &self,
        plan: &Plan,
        key: &ObjectKey,
        object: &Object,
        mut quorum: WriteQuorum,
        deadline: Instant,
    ) -> Result<(), Attempt> {
        let partition = plan.partition;
        let call = CallContext { deadline, ring_epoch: plan.epoch, ring_hash: plan.ring_hash };
        let all = quorum.nodes();
        let (tx, mut rx) = mpsc::channel(all.len().max(1));
        let others: Vec<NodeId> = all.into_iter().filter(|n| !quorum.answered(n)).collect();
        for node in others {
            if !self.topology.is_up(&node) {
                quorum.record_err(node, "node is down");
                continue;
            }
            let (replicas, key, tx) = (Arc::clone(&self.replicas), key.clone(), tx.clone());
            let object = object.clone();
            self.env.spawn(
                async move {
                    let reply = match timeout_at(deadline, replicas.merge(&node, partition, &key, &object, call)).await
                    {
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
        drop(tx);
        while quorum.progress() == Progress::Pending {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some((node, Ok(())))) => quorum.record_ok(node),
                // Our plan may name the wrong holders: stop counting it and
                // let the caller catch up and send again (the calls still in
                // flight finish on their own; merges are idempotent).
                Ok(Some((_, Err(ReplicaError::StaleRing { node, epoch })))) => {
                    return Err(Attempt::Stale { node, epoch });
                }
                Ok(Some((node, Err(e)))) => quorum.record_err(node, e.to_string()),
                Ok(None) | Err(_) => break,
            };
        }
        match quorum.progress() {
            Progress::Met => {
                metrics::quorum("write", "met", quorum.ok().len());
                Ok(())
            }
            _ => Err(Attempt::Failed(self.write_unavailable(&quorum))),
        }
    }

    /// Quorum delete. Without a context it deletes what a quorum read sees
    /// now (the client saw nothing, so "delete what is there" is the only
    /// sensible meaning); with one it deletes exactly what that context saw.
    #[tracing::instrument(name = "coordinator.delete", skip_all)]
    pub async fn delete(
        &self,
        key: &ObjectKey,
        context: Option<&VersionVector>,
        r: QuorumParam,
        w: QuorumParam,
    ) -> Result<Object, CoordinatorError> {
        let context = match context {
            Some(context) => context.clone(),
            None => {
                let current = self.get(key, r).await?;
                if current.is_empty() {
                    return Ok(current);
                }
                current.clock().clone()
            }
        };
        self.put(key, &context, Mutation::Delete, w).await
    }

    /// Has one replica of the key stamp the write: this node when it is one,
    /// else the others in preference-list order, skipping nodes known to be
    /// down; the next one only when one failed. Returns the stamper, the
    /// object and the write quorum with the stamper (and every replica that
    /// failed) recorded.
    async fn stamp(
        &self,
        plan: &Plan,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        deadline: Instant,
    ) -> Result<(NodeId, Object, WriteQuorum), Attempt> {
        let mut quorum = WriteQuorum::new(plan.nodes.clone(), plan.needed, plan.target.clone());
        let local = self.topology.local();
        let mut candidates: Vec<&NodeId> = plan.nodes.iter().filter(|n| *n == local).collect();
        candidates.extend(plan.nodes.iter().filter(|n| *n != local));
        let (up, down): (Vec<&NodeId>, Vec<&NodeId>) = candidates.into_iter().partition(|n| self.topology.is_up(n));
        for node in down {
            quorum.record_err(node.clone(), "node is down");
        }
        for node in up {
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
            let stamped = self.replicas.coordinate(node, plan.partition, key, context, mutation, call);
            match timeout_at(deadline, stamped).await {
                Ok(Ok(object)) => {
                    quorum.record_ok(node.clone());
                    return Ok((node.clone(), object, quorum));
                }
                Ok(Err(ReplicaError::StaleRing { node, epoch })) => return Err(Attempt::Stale { node, epoch }),
                // The stamp went out and its answer was lost: the replica may
                // have stamped it. A second stamper would give the write a
                // second dot, and the copy under the first would come back as
                // a sibling after a client overwrote the second (the
                // simulator found this under packet loss). The outcome is
                // unknown; the client is told so.
                Ok(Err(e @ ReplicaError::Unreachable { maybe_applied: true, .. })) => {
                    quorum.record_err(node.clone(), e.to_string());
                    break;
                }
                Ok(Err(e)) if e.code() != ErrorCode::Unavailable => {
                    return Err(Attempt::Failed(CoordinatorError::Replica(e)));
                }
                Ok(Err(e)) => {
                    tracing::debug!(%node, error = %e, "replica could not stamp the write");
                    quorum.record_err(node.clone(), e.to_string());
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
        let q = read.quorum();
        self.unavailable("read", q.progress(), q.shortfall(), q.ok().len())
    }

    fn write_unavailable(&self, quorum: &WriteQuorum) -> CoordinatorError {
        self.unavailable("write", quorum.progress(), quorum.shortfall(), quorum.ok().len())
    }

    fn plan(&self, key: &ObjectKey, param: QuorumParam, op: Op) -> Result<Plan, CoordinatorError> {
        if self.topology.removed() {
            return Err(CoordinatorError::Removed { node: self.topology.local().clone() });
        }
        let view = self.topology.view();
        let (name, default) = match op {
            Op::Read => ("r", view.r),
            Op::Write => ("w", view.w),
        };
        let n_val = view.n_val;
        let needed =
            param.resolve(default, n_val).map_err(|e| CoordinatorError::BadRequest(format!("{name}={param}: {e}")))?;
        let partition = view.current.partition_of(key);
        let nodes = view.current.holders(partition, n_val);
        let target = view.target.as_ref().map(|t| t.holders(partition, n_val)).filter(|t| *t != nodes);
        // A cluster smaller than N keeps the key on every node it has and
        // counts the quorum over those (flagged as under-replicated).
        let needed = needed.min(nodes.len());
        Ok(Plan { epoch: view.epoch, ring_hash: view.ring_hash, partition, nodes, needed, target })
    }
}

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
}

async fn read_repair(
    replicas: Arc<dyn ReplicaClient>,
    repair: Repair,
    key: ObjectKey,
    mut read: ReadQuorum,
    mut rx: mpsc::Receiver<(NodeId, Result<Object, ReplicaError>)>,
) {
    while let Some((node, reply)) = rx.recv().await {
        read.record(node, reply.map_err(|e| e.to_string()));
    }
    let merged = read.merged();
    for node in read.repairs(&merged) {
        tracing::debug!(%node, key = ?key.key, "read repair");
        let call = CallContext {
            deadline: Instant::now() + repair.timeout,
            ring_epoch: repair.ring_epoch,
            ring_hash: repair.ring_hash,
        };
        let repaired = replicas.merge(&node, repair.partition, &key, &merged, call).await;
        metrics::read_repair(repaired.is_ok());
        if let Err(e) = repaired {
            tracing::warn!(%node, error = %e, "read repair failed");
        }
    }
}
