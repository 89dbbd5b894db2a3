//! The gRPC edge over real sockets: a real `Replica` (in-memory store) served
//! on 127.0.0.1:0, called through the same clients the node uses. Peers that
//! are down or silent are real sockets too (a closed port; a listener that
//! accepts and never answers). Every wait is bounded.
//!
//! Every test server is a named node of one test cluster ([`CLUSTER`]), and
//! every client calls as a member of it: calls that do not name the node
//! they are for are refused (`rpc::identity`), as the identity tests show.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as PbServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;
use vinzclortho::coordinator::{AddressBook, ReplicaClient, RingView, Topology};
use vinzclortho::core::digest::Digest;
use vinzclortho::core::key::{NodeId, ObjectKey};
use vinzclortho::core::object::{Content, Mutation, Object};
use vinzclortho::core::quorum::Answer;
use vinzclortho::core::ring::Partition;
use vinzclortho::core::vclock::VersionVector;
use vinzclortho::env::Env;
use vinzclortho::error::{ErrorCode, HasErrorCode};
use vinzclortho::replica::{CallContext, Replica, ReplicaError, SiblingLimits};
use vinzclortho::rpc::convert::key_to_pb;
use vinzclortho::rpc::identity::{Caller, CallerHeaders, Identified, Identity, to_node_value};
use vinzclortho::rpc::peers::{PeerChannel, Peers, connection};
use vinzclortho::rpc::replica_client::{GrpcReplicaClient, RoutedReplicas};
use vinzclortho::rpc::transfer::{TransferKind, push_partition, spawn_scan};
use vinzclortho::rpc::{pb, server, transfer_pb};
use vinzclortho::storage::{Entry, MemoryStore, StorageError};

/// A replica call's context: the test's bound as its deadline, no ring fence.
fn ctx() -> CallContext {
    CallContext::until(tokio::time::Instant::now() + WAIT)
}

/// The test servers' message limit, unless a test says otherwise.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Upper bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("{what}: no result within {WAIT:?}"))
}

/// A replica on an in-memory store. (Its actors are minted per run and
/// partition, random; the `_id` only names it at the call site.)
fn replica(_id: u64, limits: SiblingLimits) -> Arc<Replica> {
    Arc::new(Replica::new(Arc::new(MemoryStore::new()), limits))
}

/// The cluster every test server belongs to and every client calls in.
const CLUSTER: u64 = 0x5eed_0000_0000_0001;

/// The node every client calls as.
fn caller() -> Caller {
    Caller::member(NodeId::new("coordinator"), CLUSTER)
}

/// A node's gRPC server on an ephemeral port; stops when dropped.
struct TestServer {
    node: NodeId,
    address: String,
    replica: Arc<Replica>,
    health: HealthReporter,
    stop: tokio_util::sync::CancellationToken,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl TestServer {
    /// Serves `replica` as node `node` of [`CLUSTER`].
    async fn start(node: &str, replica: Arc<Replica>) -> TestServer {
        TestServer::start_fenced(node, replica, None).await
    }

    /// The same, refusing replica calls planned on a ring older than `ring`'s.
    async fn start_fenced(node: &str, replica: Arc<Replica>, ring: Option<Arc<dyn Topology>>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = tokio_util::sync::CancellationToken::new();
        let (routes, health) = server::routes(Arc::clone(&replica), ring, MAX_MESSAGE_BYTES, stop.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let node = NodeId::new(node);
        let identity = Arc::new(Identity { node: node.clone(), cluster_id: CLUSTER });
        let task = tokio::spawn(server::serve(listener, routes, identity, async {
            let _ = stopped.await;
        }));
        TestServer { node, address, replica, health, stop, shutdown: Some(shutdown), task: Some(task) }
    }

    /// A plain connection for raw protocol clients: its calls carry no
    /// identity (as grpcurl's, unless told).
    async fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.address)).unwrap();
        bounded("connect", endpoint.connect()).await.unwrap()
    }

    /// A connection whose calls are made as `caller` and meant for `to`.
    async fn channel_as(&self, caller: &Caller, to: &NodeId) -> PeerChannel {
        Identified::new(connection(self.channel().await), Arc::new(CallerHeaders::new(caller)), to_node_value(to))
    }

    /// A connection as a member of the cluster, for this server's node.
    async fn member_channel(&self) -> PeerChannel {
        self.channel_as(&caller(), &self.node).await
    }

    async fn stop(mut self) {
        self.stop.cancel();
        let _ = self.shutdown.take().unwrap().send(());
        let task = self.task.take().unwrap();
        bounded("server shutdown", task).await.unwrap().unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Node name -> cluster address.
struct Book(HashMap<NodeId, String>);

impl Book {
    fn new(entries: &[(&NodeId, &str)]) -> Arc<Book> {
        Arc::new(Book(entries.iter().map(|(n, a)| ((*n).clone(), (*a).to_owned())).collect()))
    }
}

impl AddressBook for Book {
    fn cluster_address(&self, node: &NodeId) -> Option<String> {
        self.0.get(node).cloned()
    }
}

fn peers(connect_timeout_ms: u64, request_timeout_ms: u64) -> Arc<Peers> {
    Arc::new(Peers::new(
        &caller(),
        Duration::from_millis(connect_timeout_ms),
        Duration::from_millis(request_timeout_ms),
    ))
}

fn client(peers: Arc<Peers>, node: &NodeId, address: &str) -> GrpcReplicaClient {
    GrpcReplicaClient::new(peers, Book::new(&[(node, address)]))
}

fn put(value: &str) -> Mutation {
    Mutation::Put(Content {
        value: Bytes::from(value.to_owned()),
        content_type: "text/plain; charset=utf-8".into(),
        last_modified_ms: 1_700_000_000_123,
        ..Default::default()
    })
}

fn values(object: &Object) -> Vec<String> {
    object.siblings().iter().map(|s| String::from_utf8(s.content.value.to_vec()).unwrap()).collect()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("type", "bucket", name.to_owned())
}

/// A port nothing listens on: bound, read, released.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A peer that accepts TCP connections and never says a word.
async fn silent_peer() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

const P: Partition = 3;

#[tokio::test]
async fn coordinate_get_and_merge_round_trip_with_siblings_and_contexts() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let node = NodeId::new("node-1");
    let client = client(peers(1000, 5000), &node, &server.address);
    let k = key("k");
    let empty = VersionVector::new();

    let a = bounded("put a", client.coordinate(&node, P, &k, &empty, &put("a"), ctx())).await.unwrap();
    assert_eq!(values(&a), ["a"]);
    assert_eq!(a.siblings()[0].content.content_type, "text/plain; charset=utf-8");
    assert_eq!(a.siblings()[0].content.last_modified_ms, 1_700_000_000_123);
    // No context: a concurrent write, kept as a sibling.
    let ab = bounded("put b", client.coordinate(&node, P, &k, &empty, &put("b"), ctx())).await.unwrap();
    assert_eq!(values(&ab), ["a", "b"]);
    let read = bounded("get", client.get(&node, P, &k, ctx())).await.unwrap();
    assert_eq!(read, ab);
    assert_eq!(read, server.replica.get(P, k.clone()).await.unwrap(), "the client sees what the replica stores");

    // With the read's context the write supersedes both.
    let c = bounded("put c", client.coordinate(&node, P, &k, read.clock(), &put("c"), ctx())).await.unwrap();
    assert_eq!(values(&c), ["c"]);

    // A concurrent value stamped elsewhere arrives by merge and is kept.
    let mut elsewhere = Object::new();
    elsewhere.update(7, &VersionVector::new(), put("d")).unwrap();
    bounded("merge", client.merge(&node, P, &k, &elsewhere, ctx())).await.unwrap();
    let merged = bounded("get", client.get(&node, P, &k, ctx())).await.unwrap();
    assert_eq!(values(&merged), ["d", "c"], "siblings in dot order: actor 7 before the replica's random one");
    assert_eq!(merged, c.merge(&elsewhere));

    // A delete with that context leaves a tombstone that keeps the clock.
    let deleted =
        bounded("delete", client.coordinate(&node, P, &k, merged.clock(), &Mutation::Delete, ctx())).await.unwrap();
    assert!(deleted.is_tombstone());
    let read = bounded("get", client.get(&node, P, &k, ctx())).await.unwrap();
    assert!(read.is_tombstone() && read.clock().descends(merged.clock()));

    let never = bounded("get absent", client.get(&node, P, &key("absent"), ctx())).await.unwrap();
    assert!(never.is_empty());

    // A digest read answers the stored object's digest, over the stream.
    let digest = bounded("digest", client.read(&node, P, &k, true, ctx())).await.unwrap();
    assert_eq!(digest, Answer::Digest(Digest::of(&read)));
    let full = bounded("full read", client.read(&node, P, &k, false, ctx())).await.unwrap();
    assert_eq!(full, Answer::Full(read));
    let absent = bounded("digest absent", client.read(&node, P, &key("absent"), true, ctx())).await.unwrap();
    assert!(absent.is_empty(), "{absent:?}");
    server.stop().await;
}

#[tokio::test]
async fn too_many_siblings_comes_back_as_a_conflict() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits { warn: 1, max: 2 })).await;
    let node = NodeId::new("node-1");
    let client = client(peers(1000, 5000), &node, &server.address);
    let (k, empty) = (key("crowded"), VersionVector::new());
    for value in ["a", "b"] {
        bounded("put", client.coordinate(&node, P, &k, &empty, &put(value), ctx())).await.unwrap();
    }
    let error = bounded("third put", client.coordinate(&node, P, &k, &empty, &put("c"), ctx())).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Conflict, "{error:?}");
    assert_eq!(error.code().http_status(), 409);
    match &error {
        ReplicaError::Remote { node: n, message, .. } => {
            assert_eq!(n, &node);
            assert!(message.contains("siblings"), "{message}");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let mut raw = pb::replica_client::ReplicaClient::new(server.member_channel().await);
    let key = Some(pb::ObjectKey { bucket_type: "t".into(), bucket: "b".into(), key: "k".into() });

    let no_mutation =
        pb::CoordinateRequest { caller: None, partition: P, key: key.clone(), context: vec![], mutation: None };
    let status = bounded("coordinate", raw.coordinate(no_mutation)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("mutation"), "{}", status.message());

    let uncovered = pb::Object {
        clock: vec![pb::ClockEntry { actor: 1, counter: 1 }],
        siblings: vec![pb::Sibling { actor: 1, counter: 2, ..Default::default() }],
    };
    let status = bounded(
        "merge",
        raw.merge(pb::MergeRequest {
            caller: None,
            partition: P,
            key,
            object: Some(uncovered),
            hint_target: String::new(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("invalid object"), "{}", status.message());

    let status = bounded(
        "get",
        raw.get(pb::GetRequest { with_history: false, digest: false, caller: None, partition: P, key: None }),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // A digest request is checked like any Get.
    let status = bounded(
        "digest",
        raw.get(pb::GetRequest { with_history: true, digest: true, caller: None, partition: P, key: None }),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("key"), "{}", status.message());
    // Nothing was stored by the refused merge.
    assert!(server.replica.get(P, ObjectKey::new("t", "b", "k")).await.unwrap().is_empty());
}

/// A raw `Replica/Calls` stream: requests in, answers out.
async fn raw_stream(server: &TestServer) -> (mpsc::Sender<pb::CallRequest>, tonic::Streaming<pb::CallResponse>) {
    let mut raw = pb::replica_client::ReplicaClient::new(server.member_channel().await);
    let (tx, rx) = mpsc::channel(16);
    let answers = bounded("open stream", raw.calls(tokio_stream::wrappers::ReceiverStream::new(rx))).await.unwrap();
    (tx, answers.into_inner())
}

#[tokio::test]
async fn malformed_calls_on_the_stream_fail_alone_and_the_stream_goes_on() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let (tx, mut answers) = raw_stream(&server).await;
    let key = Some(pb::ObjectKey { bucket_type: "t".into(), bucket: "b".into(), key: "k".into() });
    let call = |id, call| pb::CallRequest { id, traceparent: String::new(), call };
    use pb::call_request::Call;
    use pb::call_response::Result as R;
    tx.send(call(7, None)).await.unwrap();
    let no_mutation =
        pb::CoordinateRequest { caller: None, partition: P, key: key.clone(), context: vec![], mutation: None };
    tx.send(call(8, Some(Call::Coordinate(no_mutation)))).await.unwrap();
    tx.send(call(
        9,
        Some(Call::Get(pb::GetRequest { with_history: false, digest: false, caller: None, partition: P, key: None })),
    ))
    .await
    .unwrap();
    let write = pb::CoordinateRequest {
        caller: None,
        partition: P,
        key: key.clone(),
        context: vec![],
        mutation: Some(pb::coordinate_request::Mutation::Put(pb::Put {
            content_type: "text/plain".into(),
            last_modified_ms: 1,
            value: "v".into(),
            meta: None,
        })),
    };
    tx.send(call(10, Some(Call::Coordinate(write)))).await.unwrap();
    tx.send(call(
        11,
        Some(Call::Get(pb::GetRequest { with_history: false, digest: false, caller: None, partition: P, key })),
    ))
    .await
    .unwrap();
    drop(tx); // closing our side ends the stream once all are answered
    let mut by_id = HashMap::new();
    while let Some(answer) = bounded("answer", answers.message()).await.unwrap() {
        by_id.insert(answer.id, answer.result.unwrap());
    }
    assert_eq!(by_id.len(), 5, "{by_id:?}");
    for (id, mentions) in [(7, "without a call"), (8, "mutation"), (9, "key")] {
        match &by_id[&id] {
            R::Error(e) => {
                assert_eq!(e.code, tonic::Code::InvalidArgument as i32, "call {id}: {e:?}");
                assert!(e.message.contains(mentions), "call {id}: {e:?}");
            }
            other => panic!("call {id}: expected an error, got {other:?}"),
        }
    }
    assert!(matches!(&by_id[&10], R::Coordinate(_)), "{:?}", by_id[&10]);
    // Answered in any order, but each after what came before it on the
    // stream had been started: the read of call 11 may or may not see 10.
    assert!(matches!(&by_id[&11], R::Get(_)), "{:?}", by_id[&11]);
    assert_eq!(values(&server.replica.get(P, ObjectKey::new("t", "b", "k")).await.unwrap()), ["v"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_share_a_stream_and_each_gets_its_own_answer() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let node = NodeId::new("node-1");
    let client = Arc::new(client(peers(1000, 5000), &node, &server.address));
    let empty = VersionVector::new();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let (client, node, empty) = (Arc::clone(&client), node.clone(), empty.clone());
        tasks.push(tokio::spawn(async move {
            let k = key(&format!("k{i}"));
            let written = client.coordinate(&node, P, &k, &empty, &put(&format!("v{i}")), ctx()).await.unwrap();
            assert_eq!(values(&written), [format!("v{i}")]);
            let read = client.get(&node, P, &k, ctx()).await.unwrap();
            assert_eq!(read, written, "key k{i}");
        }));
    }
    for task in tasks {
        bounded("call", task).await.unwrap();
    }
    for i in 0..500 {
        assert_eq!(values(&server.replica.get(P, key(&format!("k{i}"))).await.unwrap()), [format!("v{i}")]);
    }
}

#[tokio::test]
async fn a_batch_merge_keeps_concurrent_values_and_folds_duplicate_keys() {
    let replica = replica(42, SiblingLimits::default());
    let empty = VersionVector::new();
    // Stored here: a, and b superseded nowhere yet.
    let a = replica.coordinate(P, key("a"), empty.clone(), put("a-local")).await.unwrap();
    let stamped = |actor: u64, value: &str| {
        let mut o = Object::new();
        o.update(actor, &VersionVector::new(), put(value)).unwrap();
        o
    };
    let batch = vec![
        (key("a"), stamped(7, "a-remote")), // concurrent with a-local: both kept
        (key("a"), a.clone()),              // what we have: no change by itself
        (key("b"), stamped(7, "b1")),
        (key("b"), stamped(8, "b2")), // the same key twice: both values kept
        (key("c"), stamped(9, "c")),
    ];
    let changed = bounded("merge_many", replica.merge_many(P, batch)).await.unwrap();
    assert_eq!(changed, 3, "a, b and c changed");
    assert_eq!(values(&replica.get(P, key("a")).await.unwrap()), ["a-remote", "a-local"]);
    assert_eq!(values(&replica.get(P, key("b")).await.unwrap()), ["b1", "b2"]);
    assert_eq!(values(&replica.get(P, key("c")).await.unwrap()), ["c"]);
    // The same batch again changes nothing (merges are idempotent).
    let again = vec![(key("c"), stamped(9, "c")), (key("b"), stamped(8, "b2"))];
    assert_eq!(bounded("merge_many again", replica.merge_many(P, again)).await.unwrap(), 0);
}

/// Our replica service behind a wrapper that counts the unary calls it
/// gets (the stream's calls are not counted) and, as a peer of an older
/// version would, can refuse `Replica/Calls`.
struct WrappedPeer {
    inner: vinzclortho::rpc::replica_server::ReplicaService,
    unary: Arc<std::sync::atomic::AtomicUsize>,
    has_calls: bool,
}

impl WrappedPeer {
    /// Serves `replica` this way on 127.0.0.1; returns the address, the
    /// unary call counter and the server task.
    async fn start(
        replica: &Arc<Replica>,
        has_calls: bool,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>, JoinHandle<Result<(), tonic::transport::Error>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let unary = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let inner = vinzclortho::rpc::replica_server::ReplicaService::new(
            Arc::clone(replica),
            tokio_util::sync::CancellationToken::new(),
        );
        let service =
            pb::replica_server::ReplicaServer::new(WrappedPeer { inner, unary: Arc::clone(&unary), has_calls })
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (address, unary, server)
    }

    fn count(&self) {
        self.unary.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl pb::replica_server::Replica for WrappedPeer {
    async fn get(&self, r: tonic::Request<pb::GetRequest>) -> Result<tonic::Response<pb::GetResponse>, tonic::Status> {
        self.count();
        self.inner.get(r).await
    }
    async fn coordinate(
        &self,
        r: tonic::Request<pb::CoordinateRequest>,
    ) -> Result<tonic::Response<pb::CoordinateResponse>, tonic::Status> {
        self.count();
        self.inner.coordinate(r).await
    }
    async fn merge(
        &self,
        r: tonic::Request<pb::MergeRequest>,
    ) -> Result<tonic::Response<pb::MergeResponse>, tonic::Status> {
        self.count();
        self.inner.merge(r).await
    }
    async fn reap(
        &self,
        r: tonic::Request<pb::ReapRequest>,
    ) -> Result<tonic::Response<pb::ReapResponse>, tonic::Status> {
        self.count();
        self.inner.reap(r).await
    }
    async fn prune(
        &self,
        r: tonic::Request<pb::PruneRequest>,
    ) -> Result<tonic::Response<pb::PruneResponse>, tonic::Status> {
        self.count();
        self.inner.prune(r).await
    }
    type CallsStream = <vinzclortho::rpc::replica_server::ReplicaService as pb::replica_server::Replica>::CallsStream;
    async fn calls(
        &self,
        r: tonic::Request<tonic::Streaming<pb::CallRequest>>,
    ) -> Result<tonic::Response<Self::CallsStream>, tonic::Status> {
        if !self.has_calls {
            return Err(tonic::Status::unimplemented("unknown method Calls"));
        }
        self.inner.calls(r).await
    }
}

#[tokio::test]
async fn a_peer_without_the_call_stream_gets_unary_calls() {
    let replica = replica(42, SiblingLimits::default());
    let (address, unary, server) = WrappedPeer::start(&replica, false).await;
    let node = NodeId::new("old");
    let client = client(peers(1000, 5000), &node, &address);
    let empty = VersionVector::new();
    // The first call finds out (and is not lost), the others go unary.
    for i in 0..3 {
        let k = key(&format!("k{i}"));
        let written = bounded("put", client.coordinate(&node, P, &k, &empty, &put("v"), ctx())).await.unwrap();
        assert_eq!(values(&written), ["v"], "call {i}");
        assert_eq!(bounded("get", client.get(&node, P, &k, ctx())).await.unwrap(), written, "call {i}");
        assert_eq!(values(&replica.get(P, k).await.unwrap()), ["v"]);
    }
    assert_eq!(unary.load(std::sync::atomic::Ordering::SeqCst), 6, "every call went unary");
    server.abort();
}

/// A peer without the Forward service (an older version during a rolling
/// upgrade) answers UNIMPLEMENTED: the write is not applied and the caller
/// coordinates it itself. Asked once: later forwards to it within the
/// minute fail the same way at once, without another call to it.
#[tokio::test]
async fn a_peer_without_forwarded_writes_is_asked_once() {
    let replica = replica(42, SiblingLimits::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let forwards = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let inner = vinzclortho::rpc::replica_server::ReplicaService::new(
        Arc::clone(&replica),
        tokio_util::sync::CancellationToken::new(),
    );
    let counted = Arc::clone(&forwards);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .trace_fn(move |request| {
                if request.uri().path().contains("Forward") {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                tracing::Span::none()
            })
            .add_service(pb::replica_server::ReplicaServer::new(WrappedPeer {
                inner,
                unary: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                has_calls: true,
            }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let node = NodeId::new("old");
    let client = client(peers(1000, 5000), &node, &address);
    for i in 0..3 {
        let k = key(&format!("k{i}"));
        let options = vinzclortho::coordinator::WriteOptions::default();
        let refused =
            bounded("forward", client.forward_write(&node, &k, &VersionVector::new(), &put("v"), options, ctx()))
                .await
                .unwrap_err();
        assert!(
            matches!(&refused, ReplicaError::Unreachable { maybe_applied: false, reason, .. } if reason.contains("no forwarded writes")),
            "write {i}: {refused:?}"
        );
        assert!(replica.get(P, k).await.unwrap().is_empty(), "write {i} was not applied");
    }
    assert_eq!(forwards.load(std::sync::atomic::Ordering::SeqCst), 1, "only the first forward reached the peer");
    // Its replica service is still called as before.
    let k = key("direct");
    let written =
        bounded("put", client.coordinate(&node, P, &k, &VersionVector::new(), &put("v"), ctx())).await.unwrap();
    assert_eq!(values(&written), ["v"]);
    server.abort();
}

#[tokio::test]
async fn large_values_travel_as_unary_calls_and_small_ones_on_the_stream() {
    let replica = replica(42, SiblingLimits::default());
    let (address, unary, server) = WrappedPeer::start(&replica, true).await;
    let unary_calls = || unary.load(std::sync::atomic::Ordering::SeqCst);
    let node = NodeId::new("peer");
    let client = client(peers(1000, 5000), &node, &address);
    let empty = VersionVector::new();
    let small = key("small");
    let written = bounded("small put", client.coordinate(&node, P, &small, &empty, &put("v"), ctx())).await.unwrap();
    assert_eq!(bounded("small get", client.get(&node, P, &small, ctx())).await.unwrap(), written);
    assert_eq!(unary_calls(), 0, "small calls go on the stream");

    // 1 MiB: the write goes unary; the read is answered "use unary" on the
    // stream and asked again.
    let big_value = "x".repeat(1 << 20);
    let big = key("big");
    let written = bounded("big put", client.coordinate(&node, P, &big, &empty, &put(&big_value), ctx())).await.unwrap();
    assert_eq!(unary_calls(), 1, "the large write went unary");
    let read = bounded("big get", client.get(&node, P, &big, ctx())).await.unwrap();
    assert_eq!(read, written);
    assert_eq!(values(&read), [big_value]);
    assert_eq!(unary_calls(), 2, "the large read was asked again, unary");
    server.abort();
}

#[tokio::test]
async fn a_restarted_peer_gets_a_new_stream() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let address = server.address.clone();
    let node = NodeId::new("node-1");
    let client = client(peers(1000, 2000), &node, &address);
    let empty = VersionVector::new();
    bounded("put", client.coordinate(&node, P, &key("a"), &empty, &put("a"), ctx())).await.unwrap();
    server.stop().await;
    let error = bounded("get while down", client.get(&node, P, &key("a"), ctx())).await.unwrap_err();
    assert!(matches!(error, ReplicaError::Unreachable { .. }), "{error:?}");
    // The same address again, a new process (an empty store).
    let listener = TcpListener::bind(&address).await.unwrap();
    let again = replica(43, SiblingLimits::default());
    let (routes, _health) =
        server::routes(Arc::clone(&again), None, MAX_MESSAGE_BYTES, tokio_util::sync::CancellationToken::new());
    let identity = Arc::new(Identity { node: node.clone(), cluster_id: CLUSTER });
    let task = tokio::spawn(server::serve(listener, routes, identity, std::future::pending()));
    let written = bounded("put after restart", client.coordinate(&node, P, &key("b"), &empty, &put("b"), ctx())).await;
    let written = written.unwrap_or_else(|e| panic!("the first call after the restart failed: {e:?}"));
    assert_eq!(values(&written), ["b"]);
    assert_eq!(values(&again.get(P, key("b")).await.unwrap()), ["b"]);
    task.abort();
}

#[tokio::test]
async fn unknown_node_and_bad_address_fail_without_network() {
    let peers = peers(1000, 1000);
    let (known, bad) = (NodeId::new("bad-address"), NodeId::new("stranger"));
    let client = GrpcReplicaClient::new(peers, Book::new(&[(&known, "not an address")]));
    let error = bounded("get", client.get(&bad, P, &key("k"), ctx())).await.unwrap_err();
    assert!(matches!(error, ReplicaError::UnknownNode(ref n) if n == &bad), "{error:?}");
    let error = bounded("get", client.get(&known, P, &key("k"), ctx())).await.unwrap_err();
    assert!(matches!(error, ReplicaError::Unreachable { .. }), "{error:?}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable_quickly() {
    let address = closed_port().await;
    let node = NodeId::new("down");
    let client = client(peers(1000, 2000), &node, &address);
    let started = Instant::now();
    let error = bounded("get", client.get(&node, P, &key("k"), ctx())).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(error, ReplicaError::Unreachable { ref node, .. } if node.as_str() == "down"), "{error:?}");
    assert_eq!(error.code(), ErrorCode::Unavailable);
    // Nothing reached the peer: a coordinator may hand a stamp to another.
    assert!(matches!(error, ReplicaError::Unreachable { maybe_applied: false, .. }), "{error:?}");
}

#[tokio::test]
async fn a_silent_peer_costs_at_most_the_request_timeout() {
    let (address, _peer) = silent_peer().await;
    let node = NodeId::new("silent");
    let request_timeout = Duration::from_millis(500);
    let client = client(peers(1000, 500), &node, &address);
    for call in 0..2 {
        let started = Instant::now();
        let error = bounded("get", client.get(&node, P, &key("k"), ctx())).await.unwrap_err();
        let elapsed = started.elapsed();
        // The call went out: the peer may yet apply it.
        assert!(matches!(error, ReplicaError::Unreachable { maybe_applied: true, .. }), "call {call}: {error:?}");
        assert!(elapsed >= request_timeout / 2, "call {call} failed suspiciously fast: {elapsed:?} {error:?}");
        assert!(elapsed < Duration::from_secs(3), "call {call} took {elapsed:?}");
    }
}

#[tokio::test]
async fn routed_replicas_serve_the_local_node_in_process() {
    let server = TestServer::start("other", replica(42, SiblingLimits::default())).await;
    let (me, other) = (NodeId::new("me"), NodeId::new("other"));
    // If a call for `me` went over the network it would fail: nothing
    // listens at its address.
    let book = Book::new(&[(&me, &closed_port().await), (&other, &server.address)]);
    let local = replica(1, SiblingLimits::default());
    let routed = RoutedReplicas::new(me.clone(), Arc::clone(&local), GrpcReplicaClient::new(peers(1000, 5000), book));
    let (k, empty) = (key("k"), VersionVector::new());

    let mine = bounded("local put", routed.coordinate(&me, P, &k, &empty, &put("local"), ctx())).await.unwrap();
    assert_eq!(local.get(P, k.clone()).await.unwrap(), mine);
    bounded("remote merge", routed.merge(&other, P, &k, &mine, ctx())).await.unwrap();
    assert_eq!(server.replica.get(P, k.clone()).await.unwrap(), mine);
    let theirs =
        bounded("remote put", routed.coordinate(&other, P, &k, mine.clock(), &put("remote"), ctx())).await.unwrap();
    bounded("local merge", routed.merge(&me, P, &k, &theirs, ctx())).await.unwrap();
    assert_eq!(values(&bounded("local get", routed.get(&me, P, &k, ctx())).await.unwrap()), ["remote"]);
    assert_eq!(bounded("remote get", routed.get(&other, P, &k, ctx())).await.unwrap(), theirs);
}

/// 1000 objects in partition `P` (some with siblings, one deleted) and a few
/// in partition `P + 1`.
async fn populated_source() -> Arc<Replica> {
    let source = replica(1, SiblingLimits::default());
    let empty = VersionVector::new();
    for i in 0..1000 {
        let object =
            source.coordinate(P, key(&format!("k{i:04}")), empty.clone(), put(&format!("v{i}"))).await.unwrap();
        if i % 10 == 0 {
            source.coordinate(P, key(&format!("k{i:04}")), empty.clone(), put("sibling")).await.unwrap();
        }
        if i == 7 {
            source.coordinate(P, key("k0007"), object.clock().clone(), Mutation::Delete).await.unwrap();
        }
    }
    for i in 0..5 {
        source.coordinate(P + 1, key(&format!("other{i}")), empty.clone(), put("x")).await.unwrap();
    }
    source
}

async fn assert_same_partition(source: &Arc<Replica>, target: &Arc<Replica>, partition: Partition) {
    for i in 0..1000 {
        let k = key(&format!("k{i:04}"));
        let expected = source.get(partition, k.clone()).await.unwrap();
        assert!(!expected.is_empty());
        assert_eq!(target.get(partition, k).await.unwrap(), expected, "key {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_partition_lands_every_object_and_is_idempotent() {
    let source = populated_source().await;
    let server = TestServer::start("target", replica(42, SiblingLimits::default())).await;
    let peers = peers(1000, 2000);
    let node = NodeId::new("target");

    let scan = spawn_scan(Arc::clone(source.store()), P, &Env::real());
    let merged =
        bounded("push", push_partition(&peers, &node, &server.address, P, TransferKind::Move, Vec::new(), scan))
            .await
            .unwrap();
    assert_eq!(merged, 1000);
    assert_same_partition(&source, &server.replica, P).await;
    assert!(server.replica.get(P + 1, key("other0")).await.unwrap().is_empty(), "only the named partition moves");

    // The target takes a write of its own; a second push merges, it does
    // not overwrite, and changes nothing else.
    let own = server.replica.coordinate(P, key("k0001"), VersionVector::new(), put("target's own")).await.unwrap();
    let scan = spawn_scan(Arc::clone(source.store()), P, &Env::real());
    let merged =
        bounded("push again", push_partition(&peers, &node, &server.address, P, TransferKind::Move, Vec::new(), scan))
            .await
            .unwrap();
    assert_eq!(merged, 1000);
    let k1 = server.replica.get(P, key("k0001")).await.unwrap();
    assert_eq!(k1, own, "the target's concurrent write survives");
    let mut both = values(&k1);
    both.sort();
    assert_eq!(both, ["target's own", "v1"], "siblings in dot order; actors are random, so compare as a set");

    // An empty partition is a transfer of nothing, not an error.
    let scan = spawn_scan(Arc::clone(source.store()), 9, &Env::real());
    assert_eq!(
        bounded("push empty", push_partition(&peers, &node, &server.address, 9, TransferKind::Move, Vec::new(), scan))
            .await
            .unwrap(),
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_transfer_outlasts_the_request_timeout_while_our_disk_is_slow() {
    let server = TestServer::start("t", replica(42, SiblingLimits::default())).await;
    // Unary calls would be cut after 100 ms and a stalled peer after 300 ms;
    // this transfer takes over a second because the sender is slow, which
    // is neither.
    let peers = Peers::new(&caller(), Duration::from_secs(1), Duration::from_millis(100))
        .with_transfer_idle_timeout(Duration::from_millis(300));
    let (tx, rx) = mpsc::channel::<Result<Entry, StorageError>>(4);
    let producer = tokio::spawn(async move {
        for i in 0..20 {
            if i == 10 {
                // A slow disk, simulated: not a synchronisation.
                tokio::time::sleep(Duration::from_millis(1200)).await;
            }
            let mut object = Object::new();
            object.update(1, &VersionVector::new(), put(&format!("v{i}"))).unwrap();
            tx.send(Ok((key(&format!("slow{i}")), object))).await.unwrap();
        }
    });
    let started = Instant::now();
    let merged = bounded(
        "push",
        push_partition(&peers, &NodeId::new("t"), &server.address, P, TransferKind::Move, Vec::new(), rx),
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1200));
    assert_eq!(merged, 20);
    producer.await.unwrap();
    assert_eq!(values(&server.replica.get(P, key("slow19")).await.unwrap()), ["v19"]);
}

#[tokio::test]
async fn a_transfer_to_a_silent_peer_fails_after_the_idle_timeout() {
    let (address, _peer) = silent_peer().await;
    let peers = Peers::new(&caller(), Duration::from_secs(1), Duration::from_millis(200))
        .with_transfer_idle_timeout(Duration::from_millis(500));
    let source = populated_source().await;
    let started = Instant::now();
    let scan = spawn_scan(Arc::clone(source.store()), P, &Env::real());
    let error = bounded(
        "push",
        push_partition(&peers, &NodeId::new("silent"), &address, P, TransferKind::Move, Vec::new(), scan),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ReplicaError::Unreachable { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_scan_error_cancels_the_transfer() {
    let server = TestServer::start("t", replica(42, SiblingLimits::default())).await;
    let peers = peers(1000, 1000);
    let (tx, rx) = mpsc::channel::<Result<Entry, StorageError>>(4);
    let mut object = Object::new();
    object.update(1, &VersionVector::new(), put("v")).unwrap();
    tx.send(Ok((key("before"), object))).await.unwrap();
    tx.send(Err(StorageError::Corrupt("bad record".into()))).await.unwrap();
    // The sender stays open: only the error may end this transfer.
    let error = bounded(
        "push",
        push_partition(&peers, &NodeId::new("t"), &server.address, P, TransferKind::Move, Vec::new(), rx),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ReplicaError::Storage(StorageError::Corrupt(_))), "{error:?}");
    drop(tx);
}

fn push_request(partition: Partition, entries: Vec<transfer_pb::Entry>) -> transfer_pb::PushRequest {
    transfer_pb::PushRequest { partition, entries, reaped: Vec::new() }
}

fn reaped_request(entry: transfer_pb::ReapedEntry) -> transfer_pb::PushRequest {
    transfer_pb::PushRequest { partition: 1, entries: Vec::new(), reaped: vec![entry] }
}

/// The gap reap records had: they stayed on the replicas that reaped, so a
/// partition's new holders after a ring change took a late pre-delete copy
/// of a reaped key as new. They move with the partition now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_records_move_with_the_partition_and_stale_copies_stay_dead_there() {
    let source = populated_source().await;
    let (gone, late) = (key("k0001"), key("k0002"));
    let mut stale = Vec::new();
    for k in [&gone, &late] {
        let v1 = source.get(P, k.clone()).await.unwrap();
        let tomb = source.coordinate(P, k.clone(), v1.clock().clone(), Mutation::Delete).await.unwrap();
        assert!(source.reap(P, k.clone(), tomb.clock().clone()).await.unwrap());
        stale.push(v1);
    }
    // The new holder already got `late`'s pre-delete copy (a hint, a
    // coordinator on the old ring) before the partition moves to it.
    let server = TestServer::start("target", replica(42, SiblingLimits::default())).await;
    server.replica.merge(P, late.clone(), stale[1].clone()).await.unwrap();

    let reaped = source.store().reaped_in(P).unwrap();
    assert_eq!(reaped.len(), 2);
    let scan = spawn_scan(Arc::clone(source.store()), P, &Env::real());
    let node = NodeId::new("target");
    let merged = bounded(
        "push",
        push_partition(&peers(1000, 2000), &node, &server.address, P, TransferKind::Move, reaped, scan),
    )
    .await
    .unwrap();
    assert_eq!(merged, 998, "objects only: the two reaped keys travel as records");
    let target = &server.replica;
    assert_eq!(target.store().reaped(P, &gone).unwrap(), source.store().reaped(P, &gone).unwrap());
    let late_there = target.get(P, late.clone()).await.unwrap();
    assert!(late_there.is_empty(), "the record deleted the copy it covered: {late_there:?}");
    assert!(target.store().reaped(P, &late).unwrap().is_some());

    // A replica that missed the delete comes back and repairs the new
    // holder with its pre-delete copy: it stays deleted there.
    for (k, old) in [&gone, &late].into_iter().zip(&stale) {
        target.merge(P, k.clone(), old.clone()).await.unwrap();
        assert!(values(&target.get(P, k.clone()).await.unwrap()).is_empty(), "{k:?} came back");
    }
    assert_eq!(target.merge_many(P, vec![(gone.clone(), stale[0].clone())]).await.unwrap(), 0);
    assert!(target.get(P, gone.clone()).await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn malformed_transfer_streams_are_invalid_arguments() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let mut raw = transfer_pb::transfer_client::TransferClient::new(server.member_channel().await);
    let cases: [(&str, Vec<transfer_pb::PushRequest>); 5] = [
        ("empty transfer", vec![]),
        ("changed to partition", vec![push_request(1, vec![]), push_request(2, vec![])]),
        ("entry.key", vec![push_request(1, vec![transfer_pb::Entry { key: None, object: None }])]),
        ("reaped.key", vec![reaped_request(transfer_pb::ReapedEntry { key: None, clock: vec![], reaped_at_ms: 1 })]),
        (
            "reap record without a clock",
            vec![reaped_request(transfer_pb::ReapedEntry {
                key: Some(key_to_pb(&key("k"))),
                clock: vec![pb::ClockEntry { actor: 7, counter: 0 }],
                reaped_at_ms: 1,
            })],
        ),
    ];
    for (expected, messages) in cases {
        let status = bounded("push", raw.push(futures::stream::iter(messages))).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{expected}: {status:?}");
        assert!(status.message().contains(expected), "{expected}: {status:?}");
    }
}

const EXPECTED_SERVICES: [&str; 3] =
    ["vinzclortho.replica.v1.Replica", "vinzclortho.transfer.v1.Transfer", "grpc.health.v1.Health"];

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    // Without identity headers, as grpcurl calls it.
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let symbol = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "vinzclortho.transfer.v1.Transfer".into(),
        )),
    };
    let mut replies = bounded("reflect", client.server_reflection_info(futures::stream::iter([list, symbol])))
        .await
        .unwrap()
        .into_inner();
    let names = match bounded("reply", replies.message()).await.unwrap().unwrap().message_response.unwrap() {
        v1::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected reply {other:?}"),
    };
    for service in EXPECTED_SERVICES.iter().chain(&["grpc.reflection.v1.ServerReflection"]) {
        assert!(names.iter().any(|n| n == service), "v1 lists {names:?}, not {service}");
    }
    match bounded("reply", replies.message()).await.unwrap().unwrap().message_response.unwrap() {
        v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files) => {
            assert!(!files.file_descriptor_proto.is_empty())
        }
        other => panic!("unexpected reply {other:?}"),
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let list = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        bounded("reflect", client.server_reflection_info(futures::stream::iter([list]))).await.unwrap().into_inner();
    let names = match bounded("reply", replies.message()).await.unwrap().unwrap().message_response.unwrap() {
        v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected reply {other:?}"),
    };
    for service in EXPECTED_SERVICES {
        assert!(names.iter().any(|n| n == service), "v1alpha lists {names:?}, not {service}");
    }
}

#[tokio::test]
async fn health_reports_what_the_node_sets() {
    // Without identity headers, as load balancers call it.
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let mut client = HealthClient::new(server.channel().await);
    let check = || HealthCheckRequest { service: String::new() };
    for (set, expected) in
        [(ServingStatus::NotServing, PbServingStatus::NotServing), (ServingStatus::Serving, PbServingStatus::Serving)]
    {
        server.health.set_service_status("", set).await;
        let reply = bounded("check", client.check(check())).await.unwrap().into_inner();
        assert_eq!(reply.status, expected as i32);
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Identity: every call names the cluster and the node it is for.

/// The refusals counted so far for `reason` (in this process: the tests
/// share one recorder, so tests compare before and after).
fn refused(reason: &str) -> f64 {
    let text = vinzclortho::telemetry::metrics::install().render();
    let series = format!("vinzclortho_rpc_refused_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.trim().parse().unwrap())
}

fn assert_refused(status: &tonic::Status, mentions: &[&str]) {
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    for m in mentions {
        assert!(status.message().contains(m), "{:?} does not mention {m:?}", status.message());
    }
}

/// What grpcurl would send to delete a key: an empty object whose clock
/// covers the stored version. Accepted, it leaves a tombstone.
fn covering_tombstone(stored: &Object) -> pb::Object {
    pb::Object { clock: vinzclortho::rpc::convert::clock_to_pb(stored.clock()), siblings: vec![] }
}

#[tokio::test]
async fn a_merge_without_identity_is_refused_and_the_key_is_unchanged() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let k = key("precious");
    let stored = server.replica.coordinate(P, k.clone(), VersionVector::new(), put("v")).await.unwrap();
    let merge = || pb::MergeRequest {
        caller: None,
        partition: P,
        key: Some(vinzclortho::rpc::convert::key_to_pb(&k)),
        object: Some(covering_tombstone(&stored)),
        hint_target: String::new(),
    };

    // No metadata at all, as `grpcurl -d ... Replica/Merge` sends it.
    let mut bare = pb::replica_client::ReplicaClient::new(server.channel().await);
    let before = refused("missing_identity");
    let status = bounded("merge", bare.merge(merge())).await.unwrap_err();
    assert_refused(&status, &["vc-cluster-id", "vc-to-node", "vc-from-node", "node-1"]);
    assert!(refused("missing_identity") > before, "the refusal is counted");
    // Nor on the stream, which is refused as a whole.
    let (tx, rx) = mpsc::channel(1);
    let status = bounded("calls", bare.calls(tokio_stream::wrappers::ReceiverStream::new(rx))).await.unwrap_err();
    assert_refused(&status, &["vc-cluster-id"]);
    drop(tx);
    assert_eq!(server.replica.get(P, k.clone()).await.unwrap(), stored, "the key is unchanged");

    // The same merge from a member, meant for this node, is what deletes.
    let mut member = pb::replica_client::ReplicaClient::new(server.member_channel().await);
    bounded("merge", member.merge(merge())).await.unwrap();
    assert!(server.replica.get(P, k).await.unwrap().is_tombstone(), "the call refused above would have deleted");
}

#[tokio::test]
async fn a_call_for_another_cluster_is_refused() {
    let server = TestServer::start("node-1", replica(42, SiblingLimits::default())).await;
    let k = key("k");
    let stored = server.replica.coordinate(P, k.clone(), VersionVector::new(), put("v")).await.unwrap();
    let stranger = Caller::member(NodeId::new("stranger"), CLUSTER ^ 1);

    let mut raw = pb::replica_client::ReplicaClient::new(server.channel_as(&stranger, &server.node).await);
    let merge = pb::MergeRequest {
        caller: None,
        partition: P,
        key: Some(vinzclortho::rpc::convert::key_to_pb(&k)),
        object: Some(covering_tombstone(&stored)),
        hint_target: String::new(),
    };
    let before = refused("wrong_cluster");
    let status = bounded("merge", raw.merge(merge)).await.unwrap_err();
    assert_refused(&status, &[&format!("{CLUSTER:016x}"), &format!("{:016x}", CLUSTER ^ 1)]);
    assert!(refused("wrong_cluster") > before, "the refusal is counted");

    // The node's own client, configured for the other cluster: no write
    // lands, and the coordinator sees the node as not reached.
    let peers = Arc::new(Peers::new(&stranger, Duration::from_secs(1), Duration::from_secs(5)));
    let client = client(peers, &server.node, &server.address);
    let error = bounded("put", client.coordinate(&server.node, P, &k, &VersionVector::new(), &put("w"), ctx()))
        .await
        .unwrap_err();
    assert!(matches!(error, ReplicaError::Unreachable { .. }), "{error:?}");
    assert_eq!(server.replica.get(P, k).await.unwrap(), stored, "the key is unchanged");
}

#[tokio::test]
async fn a_call_meant_for_another_node_is_refused_and_counted() {
    // "new" answers at the address "old" had (a reused address).
    let server = TestServer::start("new", replica(42, SiblingLimits::default())).await;
    let old = NodeId::new("old");
    let k = key("k");
    let before = refused("wrong_node");

    // Unary, raw.
    let mut raw = pb::replica_client::ReplicaClient::new(server.channel_as(&caller(), &old).await);
    let get = pb::GetRequest {
        with_history: false,
        digest: false,
        caller: None,
        partition: P,
        key: Some(vinzclortho::rpc::convert::key_to_pb(&k)),
    };
    let status = bounded("get", raw.get(get)).await.unwrap_err();
    assert_refused(&status, &["new", "\"old\"", "vc-to-node"]);

    // The coordinator's client (the Calls stream, then unary fallbacks).
    let client = client(peers(1000, 5000), &old, &server.address);
    let empty = VersionVector::new();
    let error = bounded("put", client.coordinate(&old, P, &k, &empty, &put("v"), ctx())).await.unwrap_err();
    assert!(matches!(error, ReplicaError::Unreachable { ref node, .. } if node == &old), "{error:?}");
    let mut object = Object::new();
    object.update(7, &empty, put("v")).unwrap();
    let error = bounded("merge", client.merge(&old, P, &k, &object, ctx())).await.unwrap_err();
    assert!(matches!(error, ReplicaError::Unreachable { .. }), "{error:?}");

    // A partition transfer.
    let (tx, rx) = mpsc::channel::<Result<Entry, StorageError>>(1);
    tx.send(Ok((k.clone(), object))).await.unwrap();
    drop(tx);
    let error = bounded(
        "push",
        push_partition(&peers(1000, 5000), &old, &server.address, P, TransferKind::Move, Vec::new(), rx),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ReplicaError::Unreachable { .. }), "{error:?}");

    assert!(server.replica.get(P, k).await.unwrap().is_empty(), "nothing was stored for the old node");
    assert!(refused("wrong_node") >= before + 4.0, "every refusal is counted");
}

#[tokio::test]
async fn two_node_ids_at_one_address_do_not_count_one_copy_twice() {
    use vinzclortho::coordinator::{Coordinator, CoordinatorSettings, QuorumParam};
    use vinzclortho::core::membership::{ClusterState, Member};
    use vinzclortho::core::ring::Ring;
    use vinzclortho::env::system_clock;
    use vinzclortho::membership::Membership;

    // a and b hold every key (N=2, W=2); b's address was reused by a's
    // process, so both names lead to one replica.
    let server = TestServer::start("a", replica(42, SiblingLimits::default())).await;
    let (a, b, me) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("coordinator"));
    let member = |n: &NodeId, cluster_address: &str| {
        Member::new(n.clone(), format!("{n}:http"), cluster_address.to_owned(), 1, system_clock())
    };
    let mut state = ClusterState::new(CLUSTER, member(&a, &server.address), 2, 2, 2, 2).unwrap();
    state.members.insert(b.clone(), member(&b, &server.address));
    state.ring.current = Ring::from_owners(vec![a.clone(), b.clone()]).unwrap();
    let membership = Arc::new(
        Membership::open(
            member(&me, &closed_port().await),
            state,
            Arc::new(MemoryStore::new()),
            60_000,
            Arc::new(system_clock),
        )
        .unwrap(),
    );
    let remote = GrpcReplicaClient::new(peers(1000, 5000), membership.clone());
    let replicas = Arc::new(RoutedReplicas::new(me, replica(1, SiblingLimits::default()), remote));
    let settings = CoordinatorSettings { timeout: Duration::from_secs(5) };
    let coordinator = Coordinator::new(membership.clone(), replicas, settings);
    // The key's bucket type must exist and be active (`core::bucket`).
    membership.create_bucket_type("type", Default::default()).unwrap();
    membership.activate_bucket_type("type").unwrap();

    let k = key("k");
    let holders = membership.view().current.holders(membership.view().current.partition_of(&k), 2);
    assert_eq!(holders.len(), 2, "{holders:?}");
    let error =
        bounded("put", coordinator.put(&k, &VersionVector::new(), put("v"), QuorumParam::Default)).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Unavailable, "one physical copy is not W=2: {error}");
    // The one process holds at most one copy, stamped once.
    let partition = membership.view().current.partition_of(&k);
    let held = server.replica.get(partition, k).await.unwrap();
    assert!(values(&held).len() <= 1, "{held:?}");
}

/// A cluster state as large as a legal one gets with 2^17 partitions: five
/// members with 16-hex-digit ids (as `node::identity` makes them), a move in
/// progress (two full rings) and every member's `transfers_done` full.
fn large_moving_state(members: &[NodeId]) -> vinzclortho::core::membership::ClusterState {
    use vinzclortho::core::membership::{ClusterState, Member};
    use vinzclortho::core::ring::Ring;
    const PARTITIONS: u32 = 1 << 17;
    let member = |node: &NodeId| {
        let mut m = Member::new(node.clone(), format!("{node}:h"), format!("{node}:c"), PARTITIONS, 1);
        m.transfers_epoch = 1;
        m.transfers_done = (0..PARTITIONS).collect();
        m
    };
    let mut state = ClusterState::new(CLUSTER, member(&members[0]), PARTITIONS, 3, 2, 2).unwrap();
    for node in &members[1..] {
        state.members.insert(node.clone(), member(node));
    }
    let owners = (0..PARTITIONS as usize).map(|p| members[p % members.len()].clone()).collect();
    state.ring.target = Some(Ring::from_owners(owners).unwrap());
    state.ring.target_epoch = state.ring.epoch;
    state
}

/// A node's membership service, built as `node::run` builds it, serving
/// `state` as `me` on 127.0.0.1:0. Returns its address and a stop switch.
async fn membership_server(
    me: vinzclortho::core::membership::Member,
    state: vinzclortho::core::membership::ClusterState,
) -> (String, tokio_util::sync::CancellationToken, JoinHandle<Result<(), tonic::transport::Error>>) {
    membership_server_on(me, state, Arc::new(MemoryStore::new())).await
}

/// [`membership_server`] keeping its state in `store`.
async fn membership_server_on(
    me: vinzclortho::core::membership::Member,
    state: vinzclortho::core::membership::ClusterState,
    store: Arc<dyn vinzclortho::storage::Store>,
) -> (String, tokio_util::sync::CancellationToken, JoinHandle<Result<(), tonic::transport::Error>>) {
    use vinzclortho::env::system_clock;
    use vinzclortho::membership::Membership;
    use vinzclortho::rpc::membership::{self, MembershipService};
    let partitions = state.partitions();
    let membership = Arc::new(Membership::open(me, state, store, 5_000, Arc::new(system_clock)).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let (mut routes, _health) =
        server::routes(replica(1, SiblingLimits::default()), None, MAX_MESSAGE_BYTES, stop.clone());
    let secret = vinzclortho::core::context::ClusterSecret::from_bytes([7; 32]);
    let service = MembershipService::new(Arc::clone(&membership), secret);
    routes.add_service(membership::server(service, partitions));
    let served = tokio::spawn(server::serve(listener, routes, membership, stop.clone().cancelled_owned()));
    (address, stop, served)
}

/// tonic's default 4 MiB message limit stopped gossip in a large cluster
/// while partitions moved (two rings of 2^17 ids and the transfer reports
/// are ~7 MB): every round failed and the move never completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_2_17_partitions_gossips_while_it_moves() {
    use vinzclortho::core::membership::Member;
    use vinzclortho::rpc::membership::gossip;

    let members: Vec<NodeId> = (1..=5).map(|i| NodeId::new(format!("00000000000000a{i}"))).collect();
    let state = large_moving_state(&members);
    // The server is not the claimant (the smallest id), so its ring stays
    // as given.
    let server_node = members[2].clone();
    let me = Member::new(server_node.clone(), "a3:h".into(), "a3:c".into(), state.partitions(), 2);
    let (address, stop, served) = membership_server(me, state.clone()).await;

    let from = members[1].clone();
    let peers = Peers::new(&Caller::member(from.clone(), CLUSTER), Duration::from_secs(1), Duration::from_secs(20));
    let channel = peers.channel(&server_node, &address).unwrap();
    let theirs = bounded("gossip", gossip(channel, &from, &state)).await.expect("a legal state gossips");
    assert_eq!(theirs.ring, state.ring, "the server took the moving ring and sent it back");
    assert_eq!(theirs.members[&from].transfers_done.len(), 1 << 17);
    stop.cancel();
    bounded("server shutdown", served).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_join_names_its_caller_and_bad_joins_are_refused() {
    use vinzclortho::core::membership::{ClusterState, Member};
    use vinzclortho::rpc::membership::join;

    let seed = NodeId::new("00000000000000a1");
    let record = |node: &NodeId| Member::new(node.clone(), format!("{node}:h"), format!("{node}:c"), 8, 1);
    let state = ClusterState::new(CLUSTER, record(&seed), 8, 3, 2, 2).unwrap();
    let (address, stop, served) = membership_server(record(&seed), state).await;
    let seed_channel = |caller: &NodeId| {
        Peers::new(&Caller::joining(caller.clone()), Duration::from_secs(1), Duration::from_secs(5))
            .seed_channel(&address)
            .unwrap()
    };

    let joiner = NodeId::new("00000000000000b1");
    let (state, _secret) = bounded("join", join(seed_channel(&joiner), &record(&joiner))).await.unwrap();
    assert!(state.members.contains_key(&joiner));
    // The seed channel names its caller (vc-from-node): a join for another
    // node than the caller is refused.
    let other = NodeId::new("00000000000000b2");
    let status = bounded("join", join(seed_channel(&joiner), &record(&other))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("vc-from-node"), "{}", status.message());
    // A joiner under the seed's own id has a copy of its data directory.
    let status = bounded("join", join(seed_channel(&seed), &record(&seed))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("copied data directory"), "{}", status.message());
    // Ids from the wire are bounded.
    let long = NodeId::new("b".repeat(65));
    let status = bounded("join", join(seed_channel(&long), &record(&long))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A Join is open to strangers: its body is capped before it is
    // decoded, far below what gossip between members may carry.
    let big = NodeId::new("00000000000000b3");
    let mut bloated = record(&big);
    bloated.transfers_done = (0..100_000).collect();
    let status = bounded("join", join(seed_channel(&big), &bloated)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("a join request is at most"), "{}", status.message());
    let (state, _) = bounded("join", join(seed_channel(&other), &record(&other))).await.unwrap();
    assert!(!state.members.contains_key(&big), "a bloated join was admitted");
    stop.cancel();
    bounded("server shutdown", served).await.unwrap().unwrap();
}

/// An in-memory store whose metadata writes fail once `failing` is set,
/// with an error that names a path, as a failing disk's does.
#[derive(Default)]
struct FailingMeta {
    inner: MemoryStore,
    failing: std::sync::atomic::AtomicBool,
}

const SECRET_DETAIL: &str = "/var/lib/vinzclortho/secret-path";

impl vinzclortho::storage::Store for FailingMeta {
    fn engine(&self) -> &'static str {
        "failing-meta"
    }
    fn get(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Object>, StorageError> {
        self.inner.get(partition, key)
    }
    fn put(&self, partition: Partition, key: &ObjectKey, object: &Object) -> Result<(), StorageError> {
        self.inner.put(partition, key, object)
    }
    fn put_many(&self, partition: Partition, objects: &[(ObjectKey, Object)]) -> Result<(), StorageError> {
        self.inner.put_many(partition, objects)
    }
    fn remove(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        self.inner.remove(partition, key)
    }
    fn scan_partition(
        &self,
        partition: Partition,
    ) -> Result<Box<dyn Iterator<Item = Result<Entry, StorageError>> + '_>, StorageError> {
        self.inner.scan_partition(partition)
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get_meta(name)
    }
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StorageError::Io(format!("write {SECRET_DETAIL}: input/output error")));
        }
        self.inner.put_meta(name, value)
    }
    fn stats(&self) -> Result<vinzclortho::storage::StoreStats, StorageError> {
        self.inner.stats()
    }
}

/// A storage failure inside a membership call answers the peer as an
/// internal error without its details, through the one error mapping every
/// gRPC server uses (`rpc::status::error_status`); the details stay in the
/// answering node's log.
#[tokio::test]
async fn a_storage_failure_in_a_membership_call_does_not_reach_the_peer() {
    use vinzclortho::core::membership::{ClusterState, Member};
    use vinzclortho::rpc::membership::join;

    let seed = NodeId::new("00000000000000a1");
    let record = |node: &NodeId| Member::new(node.clone(), format!("{node}:h"), format!("{node}:c"), 8, 1);
    let state = ClusterState::new(CLUSTER, record(&seed), 8, 3, 2, 2).unwrap();
    let store = Arc::new(FailingMeta::default());
    let (address, stop, served) = membership_server_on(record(&seed), state, store.clone()).await;
    store.failing.store(true, std::sync::atomic::Ordering::SeqCst);

    let joiner = NodeId::new("00000000000000b1");
    let channel = Peers::new(&Caller::joining(joiner.clone()), Duration::from_secs(1), Duration::from_secs(5))
        .seed_channel(&address)
        .unwrap();
    // Admitting the joiner changes the members, which are saved: the save fails.
    let status = bounded("join", join(channel, &record(&joiner))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert!(!status.message().contains("secret-path"), "storage details reached the peer: {}", status.message());
    assert!(!status.message().contains("input/output"), "storage details reached the peer: {}", status.message());
    assert!(status.message().contains("log"), "the answer says where the details are: {}", status.message());
    stop.cancel();
    bounded("server shutdown", served).await.unwrap().unwrap();
}

/// A ring view fixed at one epoch: what the replica's fence compares with.
struct FixedRing {
    view: Arc<RingView>,
    local: NodeId,
}

impl FixedRing {
    fn at(epoch: u64) -> Arc<dyn Topology> {
        let ring = Arc::new(vinzclortho::core::ring::Ring::single(8, NodeId::new("node-1")).unwrap());
        let view = RingView { epoch, ring_hash: 42, current: ring, target: None, n_val: 3, r: 2, w: 2 };
        Arc::new(FixedRing { view: Arc::new(view), local: NodeId::new("node-1") })
    }
}

#[async_trait::async_trait]
impl Topology for FixedRing {
    fn view(&self) -> Arc<RingView> {
        Arc::clone(&self.view)
    }
    fn local(&self) -> &NodeId {
        &self.local
    }
    fn is_up(&self, _: &NodeId) -> bool {
        true
    }
    fn http_address(&self, node: &NodeId) -> String {
        node.to_string()
    }
    async fn catch_up(&self, _: &NodeId, _: u64, _: tokio::time::Instant) -> bool {
        false
    }
}

/// Issue 10, quorums that stop overlapping: a coordinator behind this
/// node's ring may count holders that moved; its calls are refused with this
/// node's epoch, on the stream and unary, and change nothing.
#[tokio::test]
async fn a_call_planned_on_an_older_ring_is_refused_with_the_newer_epoch() {
    let server = TestServer::start_fenced("node-1", replica(1, SiblingLimits::default()), Some(FixedRing::at(5))).await;
    let client = client(peers(1000, 5000), &server.node, &server.address);
    let k = key("fenced");
    let planned_on =
        |epoch| CallContext { deadline: tokio::time::Instant::now() + WAIT, ring_epoch: epoch, ring_hash: 42 };
    let refused =
        bounded("stale write", client.coordinate(&server.node, P, &k, &VersionVector::new(), &put("a"), planned_on(3)))
            .await
            .unwrap_err();
    assert!(matches!(refused, ReplicaError::StaleRing { epoch: 5, .. }), "{refused:?}");
    let refused = bounded("stale read", client.get(&server.node, P, &k, planned_on(4))).await.unwrap_err();
    assert!(matches!(refused, ReplicaError::StaleRing { epoch: 5, .. }), "{refused:?}");
    assert!(server.replica.get(P, k.clone()).await.unwrap().is_empty(), "a refused write changed the key");
    // Unary, as an older peer or a tool would call: ABORTED with the epoch.
    let mut raw = pb::replica_client::ReplicaClient::new(server.member_channel().await);
    let stale = pb::Caller { ring_epoch: 2, ..Default::default() };
    let status = bounded(
        "unary",
        raw.get(pb::GetRequest {
            with_history: false,
            digest: false,
            caller: Some(stale),
            partition: P,
            key: Some(vinzclortho::rpc::convert::key_to_pb(&k)),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(status.metadata().get("vc-ring-epoch").unwrap(), "5");
    // Planned on this ring (or newer), or unfenced: served.
    for epoch in [5, 6, 0] {
        bounded(
            "current write",
            client.coordinate(&server.node, P, &k, &VersionVector::new(), &put("b"), planned_on(epoch)),
        )
        .await
        .unwrap();
    }
    assert_eq!(values(&server.replica.get(P, k.clone()).await.unwrap()).len(), 3);
    // Planned on another ring of this epoch (two claimants raced): refused
    // like an older one, and nothing is written.
    let other_ring = CallContext { ring_hash: 43, ..planned_on(5) };
    let refused =
        bounded("other ring", client.coordinate(&server.node, P, &k, &VersionVector::new(), &put("c"), other_ring))
            .await
            .unwrap_err();
    assert!(matches!(refused, ReplicaError::StaleRing { epoch: 5, .. }), "{refused:?}");
    assert_eq!(values(&server.replica.get(P, k).await.unwrap()).len(), 3, "a refused write changed the key");
}

/// Issue 10, calls that outlive their caller: a call that reaches a replica
/// after its caller's deadline (it queued while the node was paused) is not
/// applied, unary or on the stream.
#[tokio::test]
async fn a_call_found_past_its_deadline_is_not_applied() {
    let server = TestServer::start("node-1", replica(1, SiblingLimits::default())).await;
    let k = key("late");
    let now_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let long_ago = pb::Caller { deadline_unix_ms: now_unix_ms - 5_000, timeout_ms: 3_000, ..Default::default() };
    let write = |caller: pb::Caller| pb::CoordinateRequest {
        caller: Some(caller),
        partition: P,
        key: Some(vinzclortho::rpc::convert::key_to_pb(&k)),
        context: vec![],
        mutation: Some(pb::coordinate_request::Mutation::Put(pb::Put {
            content_type: "text/plain".into(),
            last_modified_ms: 1,
            value: "late".into(),
            meta: None,
        })),
    };
    let mut raw = pb::replica_client::ReplicaClient::new(server.member_channel().await);
    let status = bounded("unary", raw.coordinate(write(long_ago))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("deadline"), "{status:?}");
    let (tx, mut answers) = raw_stream(&server).await;
    let call = pb::CallRequest {
        id: 1,
        traceparent: String::new(),
        call: Some(pb::call_request::Call::Coordinate(write(long_ago))),
    };
    tx.send(call).await.unwrap();
    match bounded("answer", answers.message()).await.unwrap().unwrap().result.unwrap() {
        pb::call_response::Result::Error(e) => assert_eq!(e.code, tonic::Code::Unavailable as i32, "{e:?}"),
        other => panic!("a late call was applied: {other:?}"),
    }
    assert!(server.replica.get(P, k.clone()).await.unwrap().is_empty(), "a late write was applied");
    // In time: applied.
    let in_time = pb::Caller { deadline_unix_ms: now_unix_ms + 10_000, timeout_ms: 10_000, ..Default::default() };
    bounded("unary in time", raw.coordinate(write(in_time))).await.unwrap();
    assert_eq!(values(&server.replica.get(P, k).await.unwrap()), ["late"]);
}

/// Issue 10, hostile input: a message above the largest legal one (here a
/// node whose limits make that 64 KiB) is refused before it is decoded, and
/// changes nothing; a legal one is served.
#[tokio::test]
async fn an_oversized_message_is_refused_and_changes_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let replica = replica(1, SiblingLimits::default());
    let (routes, _health) =
        server::routes(Arc::clone(&replica), None, 64 * 1024, tokio_util::sync::CancellationToken::new());
    let node = NodeId::new("node-1");
    let identity = Arc::new(Identity { node: node.clone(), cluster_id: CLUSTER });
    let task = tokio::spawn(server::serve(listener, routes, identity, std::future::pending()));
    let channel = Identified::new(
        bounded("connect", Endpoint::from_shared(format!("http://{address}")).unwrap().connect()).await.unwrap(),
        Arc::new(CallerHeaders::new(&caller())),
        to_node_value(&node),
    );
    let mut raw = pb::replica_client::ReplicaClient::new(channel);
    let k = key("big");
    let object = |bytes: usize| {
        let mut o = Object::new();
        o.update(7, &VersionVector::new(), put(&"x".repeat(bytes))).unwrap();
        vinzclortho::rpc::convert::object_to_pb(&o)
    };
    let merge = |bytes| pb::MergeRequest {
        caller: None,
        partition: P,
        key: Some(vinzclortho::rpc::convert::key_to_pb(&k)),
        object: Some(object(bytes)),
        hint_target: String::new(),
    };
    let status = bounded("oversized merge", raw.merge(merge(1 << 20))).await.unwrap_err();
    assert!(matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{status:?}");
    assert!(replica.get(P, k.clone()).await.unwrap().is_empty(), "an oversized message changed the key");
    bounded("legal merge", raw.merge(merge(1024))).await.unwrap();
    assert_eq!(replica.get(P, k).await.unwrap().siblings().len(), 1);
    task.abort();
}

/// Issue 13, limits on every stream: the cluster port tells each connection
/// how many streams it may open at once. Without the setting (tonic's
/// default) a peer could open streams without bound, each buffering up to
/// the largest legal message.
#[tokio::test]
async fn the_cluster_port_caps_the_streams_of_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (routes, _health) = server::routes(
        replica(1, SiblingLimits::default()),
        None,
        MAX_MESSAGE_BYTES,
        tokio_util::sync::CancellationToken::new(),
    );
    let identity = Arc::new(Identity { node: NodeId::new("node-1"), cluster_id: CLUSTER });
    let task = tokio::spawn(server::serve(listener, routes, identity, std::future::pending()));
    let tcp = bounded("connect", tokio::net::TcpStream::connect(address)).await.unwrap();
    let (_send, mut connection) = bounded("handshake", h2::client::handshake(tcp)).await.unwrap();
    // Until the server's SETTINGS arrive, h2 assumes no limit.
    let limit = bounded("the server's SETTINGS", async {
        loop {
            tokio::select! {
                ended = &mut connection => panic!("the connection ended: {ended:?}"),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            if connection.max_concurrent_send_streams() != usize::MAX {
                break connection.max_concurrent_send_streams();
            }
        }
    })
    .await;
    assert_eq!(limit, server::MAX_STREAMS_PER_CONNECTION as usize);
    task.abort();
}
