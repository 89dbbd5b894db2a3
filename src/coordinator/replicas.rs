//! How a coordinator reaches the replicas of a key: a trait in domain types.
//! `rpc::replica_client::RoutedReplicas` implements it, calling this node's
//! replica in process and the others over gRPC; the coordinator never sees
//! transport types.

use async_trait::async_trait;

use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::{Mutation, Object};
use crate::core::ring::Partition;
use crate::core::vclock::VersionVector;
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
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: NodeId, reason: String },
    /// A remote replica answered with an error; `code` says what kind.
    #[error("node {node}: {message}")]
    Remote { node: NodeId, code: ErrorCode, message: String },
}

impl HasErrorCode for ReplicaError {
    fn code(&self) -> ErrorCode {
        match self {
            ReplicaError::Storage(e) => e.code(),
            ReplicaError::TooManySiblings { .. } => ErrorCode::Conflict,
            ReplicaError::UnknownNode(_) | ReplicaError::Unreachable { .. } => ErrorCode::Unavailable,
            ReplicaError::Remote { code, .. } => *code,
        }
    }
}

/// Where to reach a node's gRPC server; the membership implements it.
pub trait AddressBook: Send + Sync + 'static {
    fn cluster_address(&self, node: &NodeId) -> Option<String>;
}

/// The replica operations a coordinator needs, addressed by node.
#[async_trait]
pub trait ReplicaClient: Send + Sync + 'static {
    /// The node's object for `key` (empty when it has none).
    async fn get(&self, node: &NodeId, partition: Partition, key: &ObjectKey) -> Result<Object, ReplicaError>;

    /// Has `node` stamp a client write with its actor; returns the new object.
    async fn coordinate(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
    ) -> Result<Object, ReplicaError>;

    /// Has `node` merge `object` into its copy of `key`.
    async fn merge(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
    ) -> Result<(), ReplicaError>;
}
