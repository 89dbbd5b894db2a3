//! The coordinator's [`ReplicaClient`] over the network.
//!
//! [`GrpcReplicaClient`] calls the Replica gRPC service of any node, found
//! through the [`AddressBook`]; [`RoutedReplicas`] is what a node gives its
//! coordinator: calls for itself go straight to its own [`Replica`] (no
//! serialisation, no network hop), calls for others go over gRPC. Every
//! remote call is bounded by [`Peers::unary_deadline`], and every failure
//! comes back as a [`ReplicaError`], never as a transport type.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert::{clock_to_pb, key_to_pb, mutation_to_pb, object_from_pb, object_to_pb, required};
use super::pb;
use super::pb::replica_client::ReplicaClient as RawClient;
use super::peers::{MAX_MESSAGE_BYTES, Peers};
use super::status::replica_error_from_status;
use crate::coordinator::{AddressBook, ReplicaClient, ReplicaError};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::{Mutation, Object};
use crate::core::ring::Partition;
use crate::core::vclock::VersionVector;
use crate::error::ErrorCode;
use crate::replica::Replica;
use crate::telemetry::{metrics, propagation};

pub struct GrpcReplicaClient {
    peers: Arc<Peers>,
    book: Arc<dyn AddressBook>,
}

impl GrpcReplicaClient {
    pub fn new(peers: Arc<Peers>, book: Arc<dyn AddressBook>) -> GrpcReplicaClient {
        GrpcReplicaClient { peers, book }
    }

    fn client(&self, node: &NodeId) -> Result<RawClient<Channel>, ReplicaError> {
        let address = self.book.cluster_address(node).ok_or_else(|| ReplicaError::UnknownNode(node.clone()))?;
        let channel = self
            .peers
            .channel(&address)
            .map_err(|e| ReplicaError::Unreachable { node: node.clone(), reason: e.to_string() })?;
        Ok(RawClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// One unary call: its own client span, the trace context and our
    /// deadline (`grpc-timeout`, so the server can drop work nobody waits
    /// for) in the request, a bounded wait, and a metric.
    async fn call<M, T, Fut>(
        &self,
        node: &NodeId,
        method: &'static str,
        message: M,
        send: impl FnOnce(Request<M>) -> Fut,
    ) -> Result<T, ReplicaError>
    where
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let span = tracing::info_span!(target: crate::telemetry::RPC_SPANS, "grpc.client", otel.kind = "client", rpc.method = method, peer = %node);
        async {
            let mut request = Request::new(message);
            request.set_timeout(self.peers.request_timeout());
            propagation::inject_current(request.metadata_mut());
            let deadline = self.peers.unary_deadline();
            let started = Instant::now();
            let answer = tokio::time::timeout(deadline, send(request)).await;
            let code = match &answer {
                Ok(Ok(_)) => tonic::Code::Ok,
                Ok(Err(status)) => status.code(),
                Err(_) => tonic::Code::DeadlineExceeded,
            };
            metrics::grpc_client(method, code, started.elapsed().as_secs_f64());
            match answer {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(replica_error_from_status(node, status)),
                Err(_) => Err(ReplicaError::Unreachable {
                    node: node.clone(),
                    reason: format!("no answer within {deadline:?}"),
                }),
            }
        }
        .instrument(span)
        .await
    }
}

/// A peer answered with a message we cannot read: its bug, not the caller's.
fn invalid_response(node: &NodeId, status: Status) -> ReplicaError {
    ReplicaError::Remote {
        node: node.clone(),
        code: ErrorCode::Internal,
        message: format!("invalid response: {}", status.message()),
    }
}

fn object_from_response(node: &NodeId, object: Option<pb::Object>) -> Result<Object, ReplicaError> {
    required(object, "object").and_then(object_from_pb).map_err(|s| invalid_response(node, s))
}

#[async_trait]
impl ReplicaClient for GrpcReplicaClient {
    async fn get(&self, node: &NodeId, partition: Partition, key: &ObjectKey) -> Result<Object, ReplicaError> {
        let mut client = self.client(node)?;
        let message = pb::GetRequest { partition, key: Some(key_to_pb(key)) };
        let response = self.call(node, "Replica/Get", message, |r| client.get(r)).await?;
        object_from_response(node, response.object)
    }

    async fn coordinate(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
    ) -> Result<Object, ReplicaError> {
        let mut client = self.client(node)?;
        let message = pb::CoordinateRequest {
            partition,
            key: Some(key_to_pb(key)),
            context: clock_to_pb(context),
            mutation: Some(mutation_to_pb(mutation)),
        };
        let response = self.call(node, "Replica/Coordinate", message, |r| client.coordinate(r)).await?;
        object_from_response(node, response.object)
    }

    async fn merge(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
    ) -> Result<(), ReplicaError> {
        let mut client = self.client(node)?;
        let message = pb::MergeRequest { partition, key: Some(key_to_pb(key)), object: Some(object_to_pb(object)) };
        self.call(node, "Replica/Merge", message, |r| client.merge(r)).await.map(|pb::MergeResponse {}| ())
    }
}

/// The replicas as a node's coordinator sees them: itself in process, the
/// others over gRPC.
pub struct RoutedReplicas {
    local_node: NodeId,
    local: Arc<Replica>,
    remote: GrpcReplicaClient,
}

impl RoutedReplicas {
    pub fn new(local_node: NodeId, local: Arc<Replica>, remote: GrpcReplicaClient) -> RoutedReplicas {
        RoutedReplicas { local_node, local, remote }
    }

    fn local(&self, node: &NodeId) -> Option<&Arc<Replica>> {
        (node == &self.local_node).then_some(&self.local)
    }
}

#[async_trait]
impl ReplicaClient for RoutedReplicas {
    async fn get(&self, node: &NodeId, partition: Partition, key: &ObjectKey) -> Result<Object, ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.get(partition, key.clone()).await,
            None => self.remote.get(node, partition, key).await,
        }
    }

    async fn coordinate(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
    ) -> Result<Object, ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.coordinate(partition, key.clone(), context.clone(), mutation.clone()).await,
            None => self.remote.coordinate(node, partition, key, context, mutation).await,
        }
    }

    async fn merge(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
    ) -> Result<(), ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.merge(partition, key.clone(), object.clone()).await.map(|_| ()),
            None => self.remote.merge(node, partition, key, object).await,
        }
    }
}
