//! How a coordinator reaches the replicas of a key: a trait in domain types.
//! `rpc::replica_client::RoutedReplicas` implements it, calling this node's
//! replica in process and the others over gRPC; the coordinator never sees
//! transport types.

use async_trait::async_trait;

use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::{Mutation, Object};
use crate::core::quorum::Answer;
use crate::core::ring::Partition;
use crate::core::vclock::{ActorId, VersionVector};
use crate::replica::{CallContext, ReplicaError};

use super::{Reply, WriteOptions};

/// Where to reach a node's gRPC server; the membership implements it.
pub trait AddressBook: Send + Sync + 'static {
    fn cluster_address(&self, node: &NodeId) -> Option<String>;
}

/// The replica operations a coordinator needs, addressed by node.
#[async_trait]
pub trait ReplicaClient: Send + Sync + 'static {
    /// The node's object for `key` (empty when it has none).
    async fn get(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        call: CallContext,
    ) -> Result<Object, ReplicaError>;

    /// The node's object for `key`, or with `digest` only its digest
    /// (`core::digest`: a read that needs no value from this replica). A
    /// client or replica that cannot give digests answers with the object,
    /// which the read treats as any full answer.
    async fn read(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        digest: bool,
        call: CallContext,
    ) -> Result<Answer, ReplicaError> {
        let _ = digest;
        self.get(node, partition, key, call).await.map(Answer::Full)
    }

    /// The node's effective object for `key`: its stored one with the key's
    /// history record put back into the clock (`replica::reap`). A client
    /// that cannot ask for it gets the stored object.
    async fn get_with_history(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        self.get(node, partition, key, call).await
    }

    /// Has `node` stamp a client write with a fresh dot; returns the new object.
    async fn coordinate(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        call: CallContext,
    ) -> Result<Object, ReplicaError>;

    /// Has `node`, a replica of `key`, coordinate a client write whole (the
    /// write is forwarded, and `node` never forwards it again): it stamps,
    /// merges into the others and counts the quorum, and its answer is the
    /// write's. A client that cannot forward (a scripted one in tests)
    /// answers that nothing was sent, so the caller coordinates itself.
    #[allow(clippy::too_many_arguments)]
    async fn forward_write(
        &self,
        node: &NodeId,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        options: WriteOptions,
        call: CallContext,
    ) -> Result<Reply, ReplicaError> {
        let _ = (key, context, mutation, options, call);
        Err(ReplicaError::Unreachable {
            node: node.clone(),
            reason: "this client does not forward writes".into(),
            maybe_applied: false,
        })
    }

    /// Has `node` merge `object` into its copy of `key`.
    async fn merge(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        call: CallContext,
    ) -> Result<(), ReplicaError>;

    /// Has `node`, a fallback standing in for `target`, merge `object` and
    /// keep a hint to deliver it to `target` (sloppy quorum). A client that
    /// cannot carry hints (a scripted one in tests) merges plainly.
    async fn merge_hinted(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        target: &NodeId,
        call: CallContext,
    ) -> Result<(), ReplicaError> {
        let _ = target;
        self.merge(node, partition, key, object, call).await
    }

    /// Has `node` reap `key` if it still holds exactly the tombstone with
    /// `clock` (`replica::reap`); true if it did. The tombstone reaper's
    /// call; a client that cannot carry it (a scripted one in tests) never
    /// reaps.
    async fn reap(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        clock: &VersionVector,
        call: CallContext,
    ) -> Result<bool, ReplicaError> {
        let _ = (node, partition, key, clock, call);
        Ok(false)
    }

    /// Has `node` move the entries of `actors` from `key`'s clock into its
    /// history record if its clock is still exactly `clock`
    /// (`Replica::prune`); true if it did, or had. A client that cannot
    /// carry it never prunes.
    async fn prune(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        clock: &VersionVector,
        actors: &[ActorId],
        call: CallContext,
    ) -> Result<bool, ReplicaError> {
        let _ = (node, partition, key, clock, actors, call);
        Ok(false)
    }
}
