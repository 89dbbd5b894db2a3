//! What a call to a replica carries besides its arguments, and how it can
//! fail. This is the replica role's interface: the replica answers with these
//! errors, the coordinator's `ReplicaClient` returns them, and the rpc edge
//! carries both across the network. They live with the replica, below the
//! coordinator, so the replica never reaches up for its own error type.

use tokio::time::Instant;

use crate::core::key::NodeId;
use crate::error::{ErrorCode, HasErrorCode};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "the key would have {count} siblings, above the limit of {limit}; \
         read it and write back with its context to resolve them"
    )]
    TooManySiblings { count: usize, limit: usize },
    #[error("node {0} is not a member this node knows")]
    UnknownNode(NodeId),
    /// No answer. `maybe_applied`: the call went out before the connection
    /// failed or the wait ended, so the replica may have applied it; false
    /// when it certainly did not (no connection could be made, or it was
    /// never sent).
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: NodeId, reason: String, maybe_applied: bool },
    /// A remote replica answered with an error; `code` says what kind.
    #[error("node {node}: {message}")]
    Remote { node: NodeId, code: ErrorCode, message: String },
    /// The replica's ring is newer than the one the call was planned on: the
    /// coordinator may be counting holders that no longer hold the key.
    #[error("node {node} has ring epoch {epoch}, newer than the one the call was planned on")]
    StaleRing { node: NodeId, epoch: u64 },
    /// The call reached the replica after its caller had stopped waiting
    /// (a pause, a long queue): it was not applied.
    #[error("the call's deadline had passed when it was to run; it was not applied")]
    Expired,
}

impl HasErrorCode for ReplicaError {
    fn code(&self) -> ErrorCode {
        match self {
            ReplicaError::Storage(e) => e.code(),
            ReplicaError::TooManySiblings { .. } => ErrorCode::Conflict,
            ReplicaError::UnknownNode(_)
            | ReplicaError::Unreachable { .. }
            | ReplicaError::StaleRing { .. }
            | ReplicaError::Expired => ErrorCode::Unavailable,
            ReplicaError::Remote { code, .. } => *code,
        }
    }
}

/// What every replica call carries besides its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallContext {
    /// When the caller stops waiting; a replica that finds the call past it
    /// drops it rather than apply a write whose client has its answer.
    pub deadline: Instant,
    /// The ring epoch the call was planned on; a replica whose ring is newer
    /// refuses it ([`ReplicaError::StaleRing`]). 0: no fence.
    pub ring_epoch: u64,
    /// Which ring of that epoch (`RingView::ring_hash`); 0: the epoch alone.
    pub ring_hash: u64,
}

impl CallContext {
    /// No fence, the given deadline (read repair after the answer, tools).
    pub fn until(deadline: Instant) -> CallContext {
        CallContext { deadline, ring_epoch: 0, ring_hash: 0 }
    }
}
