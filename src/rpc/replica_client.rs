//! The coordinator's [`ReplicaClient`] over the network.
//!
//! [`GrpcReplicaClient`] calls the Replica gRPC service of any node, found
//! through the [`AddressBook`]; [`RoutedReplicas`] is what a node gives its
//! coordinator: calls for itself go straight to its own [`Replica`] (no
//! serialisation, no network hop), calls for others go over gRPC. Every
//! remote call is bounded by [`Peers::unary_deadline`], and every failure
//! comes back as a [`ReplicaError`], never as a transport type.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use prost::Message as _;
use tonic::{Code, Request, Status};
use tracing::Instrument;

use super::call_stream::{self, CallStreams, Route};
use super::convert::{clock_to_pb, digest_from_pb, key_to_pb, mutation_to_pb, object_from_pb, object_to_pb, required};
use super::pb;
use super::pb::call_request::Call;
use super::pb::call_response::Result as CallResult;
use super::pb::replica_client::ReplicaClient as RawClient;
use super::peers::{MAX_MESSAGE_BYTES, PeerChannel, Peers, Unsupported};
use super::replica_server::{RING_EPOCH_HEADER, STREAM_MESSAGE_MAX_BYTES};
use super::status::replica_error_from_status;
use crate::coordinator::{AddressBook, ReplicaClient, Reply, WriteOptions};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::{Mutation, Object};
use crate::core::quorum::Answer;
use crate::core::ring::Partition;
use crate::core::vclock::{ActorId, VersionVector};
use crate::env::Env;
use crate::error::ErrorCode;
use crate::replica::{CallContext, Replica, ReplicaError};
use crate::telemetry::{metrics, propagation};

/// How long a peer that takes no forwarded writes is not asked again (it
/// may be upgraded meanwhile; a new address asks again at once).
const NO_FORWARDS_FOR: Duration = Duration::from_secs(60);

pub struct GrpcReplicaClient {
    peers: Arc<Peers>,
    book: Arc<dyn AddressBook>,
    streams: CallStreams,
    /// Peers that answered `Forward/Write` with UNIMPLEMENTED (an older
    /// version): for [`NO_FORWARDS_FOR`] a forward to them fails at once, as
    /// that answer did, instead of costing every write a round trip.
    no_forwards: Unsupported,
    /// This node's wall clock (calls carry their deadline on it), and where
    /// the tasks of its call streams record metrics.
    env: Env,
}

impl GrpcReplicaClient {
    pub fn new(peers: Arc<Peers>, book: Arc<dyn AddressBook>) -> GrpcReplicaClient {
        GrpcReplicaClient {
            peers,
            book,
            streams: CallStreams::default(),
            no_forwards: Unsupported::new(NO_FORWARDS_FOR),
            env: Env::real(),
        }
    }

    /// Runs in `env`: its clock stamps the deadlines, its recorder counts.
    pub fn with_env(mut self, env: &Env) -> GrpcReplicaClient {
        self.env = env.clone();
        self
    }

    fn address(&self, node: &NodeId) -> Result<String, ReplicaError> {
        self.book.cluster_address(node).ok_or_else(|| ReplicaError::UnknownNode(node.clone()))
    }

    fn channel(&self, node: &NodeId, address: &str) -> Result<PeerChannel, ReplicaError> {
        self.peers.channel(node, address).map_err(|e| ReplicaError::Unreachable {
            node: node.clone(),
            reason: e.to_string(),
            maybe_applied: false,
        })
    }

    /// One replica call: its own client span, the trace context, a bounded
    /// wait ([`Peers::unary_deadline`]) and a metric. It goes on the peer's
    /// `Replica/Calls` stream, or as a unary call (a peer without the
    /// stream, a large message).
    async fn call(
        &self,
        node: &NodeId,
        method: &'static str,
        call: Call,
        context: CallContext,
    ) -> Result<CallResult, ReplicaError> {
        // A call sent after its deadline would be applied by a replica that
        // has nobody left to answer (within the clock-skew allowance).
        if context.deadline <= Instant::now() {
            return Err(ReplicaError::Unreachable {
                node: node.clone(),
                reason: "the call's deadline passed before it was sent".into(),
                maybe_applied: false,
            });
        }
        let address = self.address(node)?;
        let route = self.streams.route(node, &address, &self.env, || self.channel(node, &address))?;
        let span = tracing::info_span!(target: crate::telemetry::RPC_SPANS, "grpc.client", otel.kind = "client", rpc.method = method, peer = %node);
        async {
            // The pool's bound for one call, or the caller's deadline if sooner.
            let deadline = self.peers.unary_deadline().min(context.deadline.saturating_duration_since(Instant::now()));
            let started = Instant::now();
            let address = address.as_str();
            let unary = |call| async move {
                let left = deadline.saturating_sub(started.elapsed());
                // The address was usable when routed; this lookup is the pool's.
                let channel = self.peers.channel(node, address).map_err(|e| Status::unavailable(e.to_string()))?;
                unary(channel, call, self.peers.request_timeout().min(left), left).await
            };
            let answer = match route {
                Route::Stream(stream) if call_len(&call) <= STREAM_MESSAGE_MAX_BYTES => {
                    // Kept until the peer is known to serve the stream, and
                    // for reads, whose answer may be "too large, ask unary".
                    let retry = (!stream.accepted() || matches!(call, Call::Get(_))).then(|| call.clone());
                    let answer = stream.call(call, propagation::current_traceparent(), deadline).await;
                    match (answer, retry) {
                        (Ok(CallResult::UseUnary(_)), Some(call)) => unary(call).await,
                        (Err(status), Some(call)) if call_stream::unsupported(&status) => {
                            tracing::info!(peer = %node, "peer has no Replica/Calls stream; using unary calls");
                            self.streams.unsupported_by(node, address);
                            unary(call).await
                        }
                        (answer, _) => answer,
                    }
                }
                _ => unary(call).await,
            };
            let answer = match answer {
                Ok(CallResult::Error(pb::CallError { code, message, ring_epoch })) => {
                    let mut status = Status::new(Code::from_i32(code), message);
                    if ring_epoch != 0 {
                        status.metadata_mut().insert(RING_EPOCH_HEADER, ring_epoch.into());
                    }
                    Err(status)
                }
                other => other,
            };
            let code = match &answer {
                Ok(result) => {
                    metrics::grpc_client_response_bytes(method, result_len(result));
                    Code::Ok
                }
                Err(status) => status.code(),
            };
            metrics::grpc_client(method, code, started.elapsed().as_secs_f64());
            answer.map_err(|status| replica_error_from_status(node, status))
        }
        .instrument(span)
        .await
    }
}

/// The encoded size of an answer: what `vinzclortho_grpc_client_response_bytes_total` counts.
fn result_len(result: &CallResult) -> usize {
    match result {
        CallResult::Get(m) => m.encoded_len(),
        CallResult::Coordinate(m) => m.encoded_len(),
        CallResult::Merge(m) => m.encoded_len(),
        CallResult::Error(m) => m.encoded_len(),
        CallResult::UseUnary(m) => m.encoded_len(),
        CallResult::Reap(m) => m.encoded_len(),
        CallResult::Prune(m) => m.encoded_len(),
    }
}

impl GrpcReplicaClient {
    /// `Forward/Write` to `node`: a unary call (its answer may be a large
    /// object with siblings), bounded like every replica call, with its own
    /// span and metric.
    async fn send_forward(
        &self,
        node: &NodeId,
        message: pb::ForwardedWrite,
        context: CallContext,
    ) -> Result<Reply, ReplicaError> {
        const METHOD: &str = "Forward/Write";
        if context.deadline <= Instant::now() {
            return Err(ReplicaError::Unreachable {
                node: node.clone(),
                reason: "the call's deadline passed before it was sent".into(),
                maybe_applied: false,
            });
        }
        let address = self.address(node)?;
        let refused = |message: &str| ReplicaError::Unreachable {
            node: node.clone(),
            reason: format!("the peer takes no forwarded writes: {message}"),
            maybe_applied: false,
        };
        if self.no_forwards.recently(node, &address) {
            return Err(refused("it answered UNIMPLEMENTED within the last minute"));
        }
        let channel = self.channel(node, &address)?;
        let span = tracing::info_span!(target: crate::telemetry::RPC_SPANS, "grpc.client", otel.kind = "client", rpc.method = METHOD, peer = %node);
        async {
            let deadline = self.peers.unary_deadline().min(context.deadline.saturating_duration_since(Instant::now()));
            let started = Instant::now();
            let mut client = pb::forward_client::ForwardClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let mut request = Request::new(message);
            request.set_timeout(self.peers.request_timeout().min(deadline));
            propagation::inject_current(request.metadata_mut());
            let answer = match tokio::time::timeout(deadline, client.write(request)).await {
                Ok(answer) => answer.map(|r| r.into_inner()),
                Err(_) => Err(Status::deadline_exceeded(format!("no answer within {deadline:?}"))),
            };
            let code = match &answer {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            };
            metrics::grpc_client(METHOD, code, started.elapsed().as_secs_f64());
            let reply = answer.map_err(|status| match status.code() {
                // A peer without the Forward service (an older version
                // during a rolling upgrade) ran nothing: the caller
                // coordinates the write itself.
                Code::Unimplemented => {
                    self.no_forwards.record(node, &address);
                    refused(status.message())
                }
                _ => replica_error_from_status(node, status),
            })?;
            Ok(Reply { object: object_from_response(node, reply.object)?, fallbacks: reply.fallbacks as usize })
        }
        .instrument(span)
        .await
    }
}

fn call_len(call: &Call) -> usize {
    match call {
        Call::Get(m) => m.encoded_len(),
        Call::Coordinate(m) => m.encoded_len(),
        Call::Merge(m) => m.encoded_len(),
        Call::Reap(m) => m.encoded_len(),
        Call::Prune(m) => m.encoded_len(),
    }
}

/// What a call tells the replica about its caller: the deadline, relative
/// and on the wall clock, and the ring (epoch and hash) it was planned on.
pub(super) fn caller(context: &CallContext, now_unix_ms: u64) -> pb::Caller {
    let left = context.deadline.saturating_duration_since(Instant::now());
    pb::Caller {
        timeout_ms: (left.as_millis() as u64).max(1),
        deadline_unix_ms: now_unix_ms + left.as_millis() as u64,
        ring_epoch: context.ring_epoch,
        ring_hash: context.ring_hash,
    }
}

/// One call as a unary gRPC request, with `grpc-timeout` so that the server
/// can drop work nobody waits for.
async fn unary(
    channel: PeerChannel,
    call: Call,
    request_timeout: Duration,
    deadline: Duration,
) -> Result<CallResult, Status> {
    let mut client = RawClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    fn request<M>(message: M, timeout: Duration) -> Request<M> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        propagation::inject_current(request.metadata_mut());
        request
    }
    let exchange = async {
        Ok(match call {
            Call::Get(m) => CallResult::Get(client.get(request(m, request_timeout)).await?.into_inner()),
            Call::Coordinate(m) => {
                CallResult::Coordinate(client.coordinate(request(m, request_timeout)).await?.into_inner())
            }
            Call::Merge(m) => CallResult::Merge(client.merge(request(m, request_timeout)).await?.into_inner()),
            Call::Reap(m) => CallResult::Reap(client.reap(request(m, request_timeout)).await?.into_inner()),
            Call::Prune(m) => CallResult::Prune(client.prune(request(m, request_timeout)).await?.into_inner()),
        })
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(Status::deadline_exceeded(format!("no answer within {deadline:?}"))),
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

fn unexpected(node: &NodeId, method: &str) -> ReplicaError {
    invalid_response(node, Status::internal(format!("the answer to {method} is of another call")))
}

/// The object of an answer to a full read; a digest there is a peer's
/// mistake.
fn full(node: &NodeId, answer: Answer) -> Result<Object, ReplicaError> {
    match answer {
        Answer::Full(object) => Ok(object),
        Answer::Digest(_) => Err(unexpected(node, "Replica/Get")),
    }
}

#[async_trait]
impl ReplicaClient for GrpcReplicaClient {
    async fn get(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        self.send_get(node, partition, key, false, false, call).await.and_then(|answer| full(node, answer))
    }

    async fn read(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        digest: bool,
        call: CallContext,
    ) -> Result<Answer, ReplicaError> {
        self.send_get(node, partition, key, false, digest, call).await
    }

    async fn get_with_history(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        self.send_get(node, partition, key, true, false, call).await.and_then(|answer| full(node, answer))
    }

    async fn coordinate(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        let message = pb::CoordinateRequest {
            partition,
            key: Some(key_to_pb(key)),
            context: clock_to_pb(context),
            mutation: Some(mutation_to_pb(mutation)),
            caller: Some(caller(&call, self.env.now_ms())),
        };
        match self.call(node, "Replica/Coordinate", Call::Coordinate(message), call).await? {
            CallResult::Coordinate(response) => object_from_response(node, response.object),
            _ => Err(unexpected(node, "Replica/Coordinate")),
        }
    }

    async fn forward_write(
        &self,
        node: &NodeId,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        options: WriteOptions,
        call: CallContext,
    ) -> Result<Reply, ReplicaError> {
        let write = pb::CoordinateRequest {
            partition: 0,
            key: Some(key_to_pb(key)),
            context: clock_to_pb(context),
            mutation: Some(mutation_to_pb(mutation)),
            caller: Some(caller(&call, self.env.now_ms())),
        };
        let message = pb::ForwardedWrite { write: Some(write), w: options.w.to_string(), pw: options.pw.to_string() };
        self.send_forward(node, message, call).await
    }

    async fn merge(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        call: CallContext,
    ) -> Result<(), ReplicaError> {
        self.send_merge(node, partition, key, object, None, call).await
    }

    async fn merge_hinted(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        target: &NodeId,
        call: CallContext,
    ) -> Result<(), ReplicaError> {
        self.send_merge(node, partition, key, object, Some(target), call).await
    }

    async fn reap(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        clock: &VersionVector,
        call: CallContext,
    ) -> Result<bool, ReplicaError> {
        let message = pb::ReapRequest {
            partition,
            key: Some(key_to_pb(key)),
            clock: clock_to_pb(clock),
            caller: Some(caller(&call, self.env.now_ms())),
        };
        match self.call(node, "Replica/Reap", Call::Reap(message), call).await? {
            CallResult::Reap(response) => Ok(response.reaped),
            _ => Err(unexpected(node, "Replica/Reap")),
        }
    }

    async fn prune(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        clock: &VersionVector,
        actors: &[ActorId],
        call: CallContext,
    ) -> Result<bool, ReplicaError> {
        let message = pb::PruneRequest {
            partition,
            key: Some(key_to_pb(key)),
            clock: clock_to_pb(clock),
            actors: actors.to_vec(),
            caller: Some(caller(&call, self.env.now_ms())),
        };
        match self.call(node, "Replica/Prune", Call::Prune(message), call).await? {
            CallResult::Prune(response) => Ok(response.pruned),
            _ => Err(unexpected(node, "Replica/Prune")),
        }
    }
}

impl GrpcReplicaClient {
    async fn send_get(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        with_history: bool,
        digest: bool,
        call: CallContext,
    ) -> Result<Answer, ReplicaError> {
        let message = pb::GetRequest {
            partition,
            key: Some(key_to_pb(key)),
            with_history,
            caller: Some(caller(&call, self.env.now_ms())),
            digest,
        };
        match self.call(node, "Replica/Get", Call::Get(message), call).await? {
            // A digest only when asked for one; an older peer answers a
            // digest request with the object, a full answer.
            CallResult::Get(pb::GetResponse { digest: Some(d), .. }) if digest => {
                digest_from_pb(d).map(Answer::Digest).map_err(|s| invalid_response(node, s))
            }
            CallResult::Get(response) => object_from_response(node, response.object).map(Answer::Full),
            _ => Err(unexpected(node, "Replica/Get")),
        }
    }

    async fn send_merge(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        hint: Option<&NodeId>,
        call: CallContext,
    ) -> Result<(), ReplicaError> {
        let message = pb::MergeRequest {
            partition,
            key: Some(key_to_pb(key)),
            object: Some(object_to_pb(object)),
            hint_target: hint.map(|t| t.to_string()).unwrap_or_default(),
            caller: Some(caller(&call, self.env.now_ms())),
        };
        match self.call(node, "Replica/Merge", Call::Merge(message), call).await? {
            CallResult::Merge(pb::MergeResponse {}) => Ok(()),
            _ => Err(unexpected(node, "Replica/Merge")),
        }
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
    async fn get(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.get(partition, key.clone()).await,
            None => self.remote.get(node, partition, key, call).await,
        }
    }

    /// This node's own copy is read in process, where a digest would save
    /// no bytes: it always answers in full.
    async fn read(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        digest: bool,
        call: CallContext,
    ) -> Result<Answer, ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.get(partition, key.clone()).await.map(Answer::Full),
            None => self.remote.read(node, partition, key, digest, call).await,
        }
    }

    async fn get_with_history(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.effective(partition, key.clone()).await,
            None => self.remote.get_with_history(node, partition, key, call).await,
        }
    }

    async fn coordinate(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        // In process: the coordinator's ring is this node's, and it is
        // waiting right here.
        match self.local(node) {
            Some(replica) => replica.coordinate(partition, key.clone(), context.clone(), mutation.clone()).await,
            None => self.remote.coordinate(node, partition, key, context, mutation, call).await,
        }
    }

    async fn forward_write(
        &self,
        node: &NodeId,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        options: WriteOptions,
        call: CallContext,
    ) -> Result<Reply, ReplicaError> {
        // Never to itself: the coordinator forwards only when this node is
        // not a replica, and would then coordinate it here anyway.
        if self.local(node).is_some() {
            return Err(ReplicaError::Unreachable {
                node: node.clone(),
                reason: "a write is not forwarded to the node it is on".into(),
                maybe_applied: false,
            });
        }
        self.remote.forward_write(node, key, context, mutation, options, call).await
    }

    async fn merge(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        call: CallContext,
    ) -> Result<(), ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.merge(partition, key.clone(), object.clone()).await.map(|_| ()),
            None => self.remote.merge(node, partition, key, object, call).await,
        }
    }

    async fn merge_hinted(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        target: &NodeId,
        call: CallContext,
    ) -> Result<(), ReplicaError> {
        match self.local(node) {
            Some(replica) => {
                replica.merge_hinted(partition, key.clone(), object.clone(), target.clone()).await.map(|_| ())
            }
            None => self.remote.merge_hinted(node, partition, key, object, target, call).await,
        }
    }

    async fn reap(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        clock: &VersionVector,
        call: CallContext,
    ) -> Result<bool, ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.reap(partition, key.clone(), clock.clone()).await,
            None => self.remote.reap(node, partition, key, clock, call).await,
        }
    }

    async fn prune(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        clock: &VersionVector,
        actors: &[ActorId],
        call: CallContext,
    ) -> Result<bool, ReplicaError> {
        match self.local(node) {
            Some(replica) => replica.prune(partition, key.clone(), clock.clone(), actors.to_vec()).await,
            None => self.remote.prune(node, partition, key, clock, actors, call).await,
        }
    }
}
