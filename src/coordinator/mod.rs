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
//! one): dotted version vectors need the stamping actor to hold the key's
//! history. That replica's new object is then merged into the others.

mod options;
mod replicas;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

pub use options::QuorumParam;
pub use replicas::{LocalReplicas, ReplicaClient, ReplicaError};

use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::{Mutation, Object};
use crate::core::quorum::{Progress, Quorum, ReadQuorum, Shortfall};
use crate::core::ring::Partition;
use crate::core::vclock::VersionVector;
use crate::error::{ErrorCode, HasErrorCode};
use crate::membership::Membership;

/// Cluster-wide quorum defaults.
#[derive(Debug, Clone, Copy)]
pub struct QuorumSettings {
    pub n_val: usize,
    pub r: usize,
    pub w: usize,
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
}

impl HasErrorCode for CoordinatorError {
    fn code(&self) -> ErrorCode {
        match self {
            CoordinatorError::BadRequest(_) => ErrorCode::BadRequest,
            CoordinatorError::Unavailable { .. } => ErrorCode::Unavailable,
            CoordinatorError::Replica(e) => e.code(),
        }
    }
}

/// The replicas one request talks to.
struct Plan {
    partition: Partition,
    nodes: Vec<NodeId>,
    needed: usize,
}

pub struct Coordinator {
    membership: Arc<Membership>,
    replicas: Arc<dyn ReplicaClient>,
    settings: QuorumSettings,
}

impl Coordinator {
    pub fn new(membership: Arc<Membership>, replicas: Arc<dyn ReplicaClient>, settings: QuorumSettings) -> Coordinator {
        Coordinator { membership, replicas, settings }
    }

    pub fn settings(&self) -> &QuorumSettings {
        &self.settings
    }

    /// Quorum read. Returns the merge of the first R answers; an empty object
    /// means not found, a tombstone means deleted.
    pub async fn get(&self, key: &ObjectKey, r: QuorumParam) -> Result<Object, CoordinatorError> {
        let plan = self.plan(key, r, "r", self.settings.r)?;
        let deadline = Instant::now() + self.settings.timeout;
        let (tx, mut rx) = mpsc::channel(plan.nodes.len());
        let partition = plan.partition;
        for node in &plan.nodes {
            let (replicas, node, key, tx) = (Arc::clone(&self.replicas), node.clone(), key.clone(), tx.clone());
            tokio::spawn(async move {
                let reply = match timeout_at(deadline, replicas.get(&node, partition, &key)).await {
                    Ok(reply) => reply.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                };
                let _ = tx.send((node, reply)).await;
            });
        }
        drop(tx);
        let mut read = ReadQuorum::new(plan.needed, plan.nodes.len());
        loop {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some((node, reply))) => match read.record(node, reply) {
                    Progress::Met => break,
                    Progress::Failed => return Err(unavailable("read", read.quorum())),
                    Progress::Pending => {}
                },
                Ok(None) | Err(_) => return Err(unavailable("read", read.quorum())),
            }
        }
        let merged = read.merged();
        tokio::spawn(read_repair(Arc::clone(&self.replicas), plan.partition, key.clone(), read, rx));
        Ok(merged)
    }

    /// Quorum write of a new value, superseding what `context` covers.
    pub async fn put(
        &self,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: Mutation,
        w: QuorumParam,
    ) -> Result<Object, CoordinatorError> {
        let plan = self.plan(key, w, "w", self.settings.w)?;
        let deadline = Instant::now() + self.settings.timeout;
        let local = self.membership.local();
        let stamper = plan.nodes.iter().find(|n| *n == local).unwrap_or(&plan.nodes[0]).clone();
        let mut quorum = Quorum::new(plan.needed, plan.nodes.len());
        let stamped = timeout_at(deadline, self.replicas.coordinate(&stamper, plan.partition, key, context, &mutation));
        let object = match stamped.await {
            Ok(Ok(object)) => object,
            Ok(Err(e)) if e.code() != ErrorCode::Unavailable => return Err(CoordinatorError::Replica(e)),
            Ok(Err(e)) => {
                quorum.record_err(stamper, e.to_string());
                return Err(unavailable("write", &quorum));
            }
            Err(_) => return Err(unavailable("write", &quorum)),
        };
        if quorum.record_ok(stamper.clone()) == Progress::Met && plan.nodes.len() == 1 {
            return Ok(object);
        }
        let (tx, mut rx) = mpsc::channel(plan.nodes.len());
        let partition = plan.partition;
        for node in plan.nodes.iter().filter(|n| **n != stamper) {
            let (replicas, node, key, tx) = (Arc::clone(&self.replicas), node.clone(), key.clone(), tx.clone());
            let object = object.clone();
            tokio::spawn(async move {
                let reply = match timeout_at(deadline, replicas.merge(&node, partition, &key, &object)).await {
                    Ok(reply) => reply.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                };
                let _ = tx.send((node, reply)).await;
            });
        }
        drop(tx);
        while quorum.progress() == Progress::Pending {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some((node, Ok(())))) => quorum.record_ok(node),
                Ok(Some((node, Err(reason)))) => quorum.record_err(node, reason),
                Ok(None) | Err(_) => break,
            };
        }
        match quorum.progress() {
            Progress::Met => Ok(object),
            _ => Err(unavailable("write", &quorum)),
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

    fn plan(&self, key: &ObjectKey, param: QuorumParam, name: &str, default: usize) -> Result<Plan, CoordinatorError> {
        let n_val = self.settings.n_val;
        let needed = param.resolve(default, n_val).map_err(|e| CoordinatorError::BadRequest(format!("{name}={param}: {e}")))?;
        let ring = self.membership.ring();
        let partition = ring.partition_of(key);
        let nodes: Vec<NodeId> = ring.preflist(partition, n_val).into_iter().map(|e| e.node).collect();
        // A cluster smaller than N keeps the key on every node it has and
        // counts the quorum over those (flagged as under-replicated).
        let needed = needed.min(nodes.len());
        Ok(Plan { partition, nodes, needed })
    }
}

fn unavailable(op: &'static str, quorum: &Quorum) -> CoordinatorError {
    CoordinatorError::Unavailable { op, shortfall: quorum.shortfall() }
}

/// After the client has its answer: wait for the remaining replicas (each
/// call is bounded by the request deadline), then send the merged object to
/// every replica that answered with less.
async fn read_repair(
    replicas: Arc<dyn ReplicaClient>,
    partition: Partition,
    key: ObjectKey,
    mut read: ReadQuorum,
    mut rx: mpsc::Receiver<(NodeId, Result<Object, String>)>,
) {
    while let Some((node, reply)) = rx.recv().await {
        read.record(node, reply);
    }
    let merged = read.merged();
    for node in read.repairs(&merged) {
        tracing::debug!(%node, key = ?key.key, "read repair");
        if let Err(e) = replicas.merge(&node, partition, &key, &merged).await {
            tracing::warn!(%node, error = %e, "read repair failed");
        }
    }
}
