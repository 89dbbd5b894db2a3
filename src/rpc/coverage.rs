//! The Coverage gRPC service (`proto/coverage.proto`) and the coordinator's
//! [`CoverageClient`] over it: one node lists what one partition it holds
//! has for a query (a bucket's keys, a type's buckets), streamed in bounded
//! messages as the store's pages are read.
//!
//! The store is read page by page on the blocking pool ([`spawn_pages`]),
//! feeding a channel of two pages: the network's pace is the store's, and a
//! partition is never held whole. The server checks what it is asked
//! (partition in range, names of bounded length: INVALID_ARGUMENT), the
//! caller's ring (a call planned on an older ring, or another ring of the
//! same epoch, is refused with ABORTED and this node's epoch, as replica
//! calls are: the caller catches up and plans again) and that this node
//! holds the partition in its ring (FAILED_PRECONDITION otherwise: it may
//! have handed the data over). [`GrpcCoverage`] answers the local node's
//! partitions from its own store, and calls the others; a holder that
//! sends nothing for the transfer idle timeout (`Peers`) is given up on as
//! unreachable, so that another holder can answer before the deadline.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::coverage_pb as pb;
use super::coverage_pb::coverage_client::CoverageClient as RawClient;
use super::coverage_pb::coverage_server::{Coverage, CoverageServer};
use super::peers::{MAX_MESSAGE_BYTES, Peers};
use super::replica_client::caller;
use super::replica_server::stale_ring;
use super::status::{error_status, replica_error_from_status};
use crate::coordinator::coverage::{CoverageClient, CoverageQuery, NAME_MAX_BYTES, Page};
use crate::coordinator::{AddressBook, Topology};
use crate::core::index::IndexRequest;
use crate::core::key::NodeId;
use crate::core::ring::Partition;
use crate::env::{Blocking, Env};
use crate::error::ErrorCode;
use crate::replica::{CallContext, ReplicaError};
use crate::storage::{BucketCursor, StorageError, Store};
use crate::telemetry::metrics;

/// Stored objects one store page examines, and so the most keys or buckets
/// one message carries.
pub const PAGE_RECORDS: usize = 1000;
/// A page's message is split once it holds this many bytes of names (a
/// single longer name still travels, alone).
const MESSAGE_BYTES_TARGET: usize = 1024 * 1024;
/// Pages read ahead of the network.
const PAGES_AHEAD: usize = 2;

/// Reads `query`'s answer for `partition` from `store` page by page, on the
/// blocking pool (under the simulator: at once, fed from a task). Dropping
/// the receiver stops the reading at the next page; a storage error is the
/// last item.
pub fn spawn_pages(
    store: Arc<dyn Store>,
    env: &Env,
    partition: Partition,
    query: CoverageQuery,
    after: Option<Bytes>,
) -> mpsc::Receiver<Result<Page, StorageError>> {
    let (tx, rx) = mpsc::channel(PAGES_AHEAD);
    if env.blocking == Blocking::Inline {
        let mut pages = Vec::new();
        let _ = read_pages(&*store, partition, &query, after, |page| {
            let failed = page.is_err();
            pages.push(page);
            !failed
        });
        env.spawn(async move {
            for page in pages {
                if tx.send(page).await.is_err() {
                    return;
                }
            }
        });
        return rx;
    }
    tokio::task::spawn_blocking(move || {
        read_pages(&*store, partition, &query, after, |page| {
            let failed = page.is_err();
            tx.blocking_send(page).is_ok() && !failed
        });
    });
    rx
}

/// Reads pages until the answer is complete or `each` returns false; a
/// storage error is passed to `each` and ends the reading.
fn read_pages(
    store: &dyn Store,
    partition: Partition,
    query: &CoverageQuery,
    after: Option<Bytes>,
    mut each: impl FnMut(Result<Page, StorageError>) -> bool,
) -> Option<()> {
    match query {
        CoverageQuery::Keys { bucket_type, bucket } => drive(after, &mut each, |after: Option<&Bytes>| {
            let page = store.list_keys(partition, bucket_type, bucket, after.map(|a| a.as_ref()), PAGE_RECORDS)?;
            Ok((page.keys, page.resume))
        }),
        CoverageQuery::Buckets { bucket_type } => drive(None, &mut each, |from: Option<&BucketCursor>| {
            let page = store.list_buckets(partition, bucket_type, from, PAGE_RECORDS)?;
            Ok((page.buckets, page.resume))
        }),
        CoverageQuery::Index { request, max, .. } => {
            // Sends at most `max` entries (0 or none: all of them).
            let mut left = max.filter(|&m| m > 0).map_or(usize::MAX, |m| m as usize);
            drive(after, &mut each, |after: Option<&Bytes>| {
                let page = store.index_page(partition, request, after.map(|a| a.as_ref()), PAGE_RECORDS.min(left))?;
                let mut entries = page.entries;
                entries.truncate(left);
                left -= entries.len();
                Ok((entries, page.resume.filter(|_| left > 0)))
            })
        }
    }
}

/// The page loop every query shares: `read` turns a cursor (`None`: from
/// the start) into a page and the next cursor (`None`: done); each
/// non-empty page goes to `each` until it returns false; a storage error
/// goes to `each` and ends the loop.
fn drive<C>(
    mut from: Option<C>,
    each: &mut impl FnMut(Result<Page, StorageError>) -> bool,
    mut read: impl FnMut(Option<&C>) -> Result<(Page, Option<C>), StorageError>,
) -> Option<()> {
    loop {
        let (page, next) = match read(from.as_ref()) {
            Ok(read) => read,
            Err(e) => {
                each(Err(e));
                return None;
            }
        };
        if !page.is_empty() && !each(Ok(page)) {
            return None;
        }
        from = Some(next?);
    }
}

/// A page as messages of at most [`MESSAGE_BYTES_TARGET`] bytes of names.
fn split(page: Page) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut current: Vec<Bytes> = Vec::new();
    let mut bytes = 0;
    for name in page {
        if !current.is_empty() && bytes + name.len() > MESSAGE_BYTES_TARGET {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += name.len();
        current.push(name);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `Ok` while `local` holds `partition` in its current ring; else the
/// stale-ring refusal (ABORTED with this node's epoch).
fn still_holds(topology: &dyn Topology, local: &NodeId, partition: Partition) -> Result<(), Status> {
    let view = topology.view();
    if view.current.holders(partition, view.n_val).contains(local) { Ok(()) } else { Err(stale_ring(&view)) }
}

pub struct CoverageService {
    store: Arc<dyn Store>,
    topology: Arc<dyn Topology>,
    env: Env,
}

/// The service, with messages above `max_message_bytes` refused undecoded.
pub fn server(
    store: Arc<dyn Store>,
    topology: Arc<dyn Topology>,
    env: &Env,
    max_message_bytes: usize,
) -> CoverageServer<CoverageService> {
    CoverageServer::new(CoverageService { store, topology, env: env.clone() })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

type Messages<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

impl CoverageService {
    /// Checks a request; the query's pages, as a stream of messages.
    fn answer<M: Send + 'static>(
        &self,
        partition: Partition,
        names: &[(&str, &Bytes)],
        caller: Option<&super::pb::Caller>,
        query: CoverageQuery,
        after: Option<Bytes>,
        message: fn(Vec<Bytes>) -> M,
    ) -> Result<Messages<M>, Status> {
        let view = self.topology.view();
        let partitions = view.current.partitions();
        if partition >= partitions {
            return Err(Status::invalid_argument(format!(
                "partition {partition} does not exist (the ring has {partitions})"
            )));
        }
        for (what, name) in names {
            if name.len() > NAME_MAX_BYTES {
                return Err(Status::invalid_argument(format!(
                    "{what} is {} bytes long, above the limit of {NAME_MAX_BYTES}",
                    name.len()
                )));
            }
        }
        if let Some(caller) = caller
            && !view.serves(caller.ring_epoch, caller.ring_hash)
        {
            return Err(stale_ring(&view));
        }
        let local = self.topology.local();
        if !view.current.holders(partition, view.n_val).contains(local) {
            return Err(Status::new(
                ErrorCode::Conflict.grpc_code(),
                format!("node {local} does not hold partition {partition} in its ring (epoch {})", view.epoch),
            ));
        }
        let pages = spawn_pages(Arc::clone(&self.store), &self.env, partition, query, after);
        let (topology, local) = (Arc::clone(&self.topology), local.clone());
        let stream = futures::stream::unfold(Some(pages), move |pages| {
            let (topology, local) = (Arc::clone(&topology), local.clone());
            async move {
                let mut pages = pages?;
                match pages.recv().await {
                    // A storage error is the reading's last item.
                    Some(page) => Some((page.map_err(|e| error_status(&e)), Some(pages))),
                    // Read to the end: complete only if this node still holds
                    // the partition (else handoff may have swept keys from
                    // under the reading; the caller plans it again).
                    None => match still_holds(&*topology, &local, partition) {
                        Ok(()) => None,
                        Err(status) => Some((Err(status), None)),
                    },
                }
            }
        })
        .flat_map(move |page| {
            let messages: Vec<Result<M, Status>> = match page {
                Ok(page) => split(page).into_iter().map(|names| Ok(message(names))).collect(),
                Err(status) => vec![Err(status)],
            };
            futures::stream::iter(messages)
        });
        Ok(Box::pin(stream))
    }
}

#[async_trait]
impl Coverage for CoverageService {
    type ListKeysStream = Messages<pb::ListKeysResponse>;
    type ListBucketsStream = Messages<pb::ListBucketsResponse>;
    type IndexStream = Messages<pb::IndexResponse>;

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<Self::ListKeysStream>, Status> {
        let pb::ListKeysRequest { partition, bucket_type, bucket, after, caller } = request.into_inner();
        // `after` is a key: bounded by the message size alone, as keys are.
        let names = [("bucket type", &bucket_type), ("bucket", &bucket)];
        let stream = self.answer(
            partition,
            &names,
            caller.as_ref(),
            CoverageQuery::Keys { bucket_type: bucket_type.clone(), bucket: bucket.clone() },
            after,
            |keys| pb::ListKeysResponse { keys },
        )?;
        Ok(Response::new(stream))
    }

    async fn list_buckets(
        &self,
        request: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<Self::ListBucketsStream>, Status> {
        let pb::ListBucketsRequest { partition, bucket_type, caller } = request.into_inner();
        let stream = self.answer(
            partition,
            &[("bucket type", &bucket_type)],
            caller.as_ref(),
            CoverageQuery::Buckets { bucket_type: bucket_type.clone() },
            None,
            |buckets| pb::ListBucketsResponse { buckets },
        )?;
        Ok(Response::new(stream))
    }

    async fn index(&self, request: Request<pb::IndexRequest>) -> Result<Response<Self::IndexStream>, Status> {
        let pb::IndexRequest {
            partition,
            bucket_type,
            bucket,
            field,
            start,
            end,
            term_regex,
            after,
            max_results,
            caller,
        } = request.into_inner();
        let names = [("bucket type", &bucket_type), ("bucket", &bucket)];
        // Checked before the regex is compiled: the names are bounded first.
        for (what, name) in names {
            if name.len() > NAME_MAX_BYTES {
                return Err(Status::invalid_argument(format!(
                    "{what} is {} bytes long, above the limit of {NAME_MAX_BYTES}",
                    name.len()
                )));
            }
        }
        let request =
            IndexRequest::new(bucket_type.clone(), bucket.clone(), &field, &start, &end, term_regex.as_deref())
                .map_err(Status::invalid_argument)?;
        let query = CoverageQuery::Index { request, after: None, max: Some(max_results) };
        let stream =
            self.answer(partition, &names, caller.as_ref(), query, after, |entries| pb::IndexResponse { entries })?;
        Ok(Response::new(stream))
    }
}

/// The coordinator's [`CoverageClient`]: this node's partitions from its
/// own store, the others' over gRPC.
pub struct GrpcCoverage {
    peers: Arc<Peers>,
    book: Arc<dyn AddressBook>,
    /// This node's ring: its own partitions are read from `store` while it
    /// holds them.
    topology: Arc<dyn Topology>,
    store: Arc<dyn Store>,
    env: Env,
}

impl GrpcCoverage {
    pub fn new(
        peers: Arc<Peers>,
        book: Arc<dyn AddressBook>,
        topology: Arc<dyn Topology>,
        store: Arc<dyn Store>,
        env: &Env,
    ) -> Self {
        GrpcCoverage { peers, book, topology, store, env: env.clone() }
    }

    async fn remote(
        &self,
        node: &NodeId,
        partition: Partition,
        query: &CoverageQuery,
        after: Option<Bytes>,
        call: CallContext,
        pages: &mpsc::Sender<Page>,
    ) -> Result<(), Status> {
        let address = self.book.cluster_address(node).ok_or_else(|| Status::not_found("unknown node"))?;
        // The transfer pool: no per-request timeout; the listing's deadline
        // bounds the call instead.
        let channel = self.peers.transfer_channel(node, &address).map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = RawClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let caller = Some(caller(&call, self.env.now_ms()));
        let left = call.deadline.saturating_duration_since(Instant::now());
        // A holder that stops sending (paused, wedged) is given up on after
        // this long without a message, not only at the listing's deadline:
        // before its first page another holder can still answer instead.
        let idle = self.peers.transfer_idle_timeout();
        let silent = || Status::unavailable(format!("the holder sent nothing for {idle:?}"));
        let exchange = async {
            // Each answer is a stream of name lists; one loop reads either.
            let mut stream: Pin<Box<dyn Stream<Item = Result<Vec<Bytes>, Status>> + Send>> = match query {
                CoverageQuery::Keys { bucket_type, bucket } => {
                    let request = pb::ListKeysRequest {
                        partition,
                        bucket_type: bucket_type.clone(),
                        bucket: bucket.clone(),
                        after,
                        caller,
                    };
                    let mut request = Request::new(request);
                    request.set_timeout(left);
                    let answer = tokio::time::timeout(idle, client.list_keys(request)).await;
                    let stream = answer.map_err(|_| silent())??.into_inner();
                    Box::pin(stream.map(|m| m.map(|m| m.keys)))
                }
                CoverageQuery::Buckets { bucket_type } => {
                    let request = pb::ListBucketsRequest { partition, bucket_type: bucket_type.clone(), caller };
                    let mut request = Request::new(request);
                    request.set_timeout(left);
                    let answer = tokio::time::timeout(idle, client.list_buckets(request)).await;
                    let stream = answer.map_err(|_| silent())??.into_inner();
                    Box::pin(stream.map(|m| m.map(|m| m.buckets)))
                }
                CoverageQuery::Index { request, after: start_after, max } => {
                    let (field, start, end) = request.query.to_parts();
                    let request = pb::IndexRequest {
                        partition,
                        bucket_type: request.bucket_type.clone(),
                        bucket: request.bucket.clone(),
                        field,
                        start,
                        end,
                        term_regex: request.term_regex.as_ref().map(|r| r.as_str().to_owned()),
                        // A resumed partition goes on after the last entry
                        // passed on; a fresh one after the continuation.
                        after: after.or_else(|| start_after.clone()),
                        max_results: max.unwrap_or(0),
                        caller,
                    };
                    let mut request = Request::new(request);
                    request.set_timeout(left);
                    let answer = tokio::time::timeout(idle, client.index(request)).await;
                    let stream = answer.map_err(|_| silent())??.into_inner();
                    Box::pin(stream.map(|m| m.map(|m| m.entries)))
                }
            };
            while let Some(names) = tokio::time::timeout(idle, stream.next()).await.map_err(|_| silent())? {
                let names = names?;
                if names.len() > PAGE_RECORDS {
                    return Err(Status::internal(format!(
                        "invalid answer: {} names in one message, at most {PAGE_RECORDS}",
                        names.len()
                    )));
                }
                if pages.send(names).await.is_err() {
                    // The listing ended: dropping the stream cancels the call.
                    return Ok(());
                }
            }
            Ok(())
        };
        match tokio::time::timeout_at(call.deadline, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded(format!("no complete answer within {left:?}"))),
        }
    }
}

#[async_trait]
impl CoverageClient for GrpcCoverage {
    async fn query(
        &self,
        node: &NodeId,
        partition: Partition,
        query: &CoverageQuery,
        after: Option<Bytes>,
        call: CallContext,
        pages: mpsc::Sender<Page>,
    ) -> Result<(), ReplicaError> {
        let local = self.topology.local();
        if node == local {
            let mut read = spawn_pages(Arc::clone(&self.store), &self.env, partition, query.clone(), after);
            while let Some(page) = read.recv().await {
                if pages.send(page?).await.is_err() {
                    return Ok(());
                }
            }
            // As a remote holder does: complete only if still held.
            let view = self.topology.view();
            if !view.current.holders(partition, view.n_val).contains(local) {
                return Err(ReplicaError::StaleRing { node: local.clone(), epoch: view.epoch });
            }
            return Ok(());
        }
        if self.book.cluster_address(node).is_none() {
            return Err(ReplicaError::UnknownNode(node.clone()));
        }
        let started = Instant::now();
        let method = match query {
            CoverageQuery::Keys { .. } => "Coverage/ListKeys",
            CoverageQuery::Buckets { .. } => "Coverage/ListBuckets",
            CoverageQuery::Index { .. } => "Coverage/Index",
        };
        let answer = self.remote(node, partition, query, after, call, &pages).await;
        let code = answer.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        metrics::grpc_client(method, code, started.elapsed().as_secs_f64());
        answer.map_err(|status| replica_error_from_status(node, status))
    }
}

#[cfg(test)]
mod tests {
    //! The service's checks and message bounds, called directly (no socket).

    use futures::StreamExt;

    use super::*;
    use crate::coordinator::RingView;
    use crate::core::key::ObjectKey;
    use crate::core::object::{Content, Mutation, Object};
    use crate::core::ring::Ring;
    use crate::core::vclock::VersionVector;
    use crate::storage::MemoryStore;

    /// Node `a` alone holds every partition of an 8-partition ring, epoch 5
    /// (until a test moves the ring on).
    struct Alone {
        view: std::sync::Mutex<Arc<RingView>>,
        local: NodeId,
    }

    #[async_trait]
    impl Topology for Alone {
        fn view(&self) -> Arc<RingView> {
            Arc::clone(&self.view.lock().unwrap())
        }
        fn local(&self) -> &NodeId {
            &self.local
        }
        fn is_up(&self, _node: &NodeId) -> bool {
            true
        }
        fn http_address(&self, node: &NodeId) -> String {
            node.to_string()
        }
        async fn catch_up(&self, _from: &NodeId, _epoch: u64, _until: Instant) -> bool {
            false
        }
    }

    fn service(local: &str, keys: usize) -> CoverageService {
        service_on(local, keys).0
    }

    /// The service, and its topology (to move the ring on).
    fn service_on(local: &str, keys: usize) -> (CoverageService, Arc<Alone>) {
        let store = MemoryStore::new();
        let content = Content {
            value: Bytes::from("v"),
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            meta: Default::default(),
        };
        let mut object = Object::new();
        object.update(1, &VersionVector::new(), Mutation::Put(content)).unwrap();
        for i in 0..keys {
            store.put(3, &ObjectKey::new("t", "b", format!("k{i:05}")), &object).unwrap();
        }
        let current = Arc::new(Ring::single(8, NodeId::new("a")).unwrap());
        let view = Arc::new(RingView { epoch: 5, ring_hash: 9, current, target: None, n_val: 3, r: 2, w: 2 });
        let topology = Arc::new(Alone { view: std::sync::Mutex::new(view), local: NodeId::new(local) });
        let service = CoverageService { store: Arc::new(store), topology: topology.clone(), env: Env::real() };
        (service, topology)
    }

    fn keys_request(partition: Partition, bucket: Bytes, epoch: u64, hash: u64) -> Request<pb::ListKeysRequest> {
        let caller =
            super::super::pb::Caller { timeout_ms: 1000, deadline_unix_ms: 0, ring_epoch: epoch, ring_hash: hash };
        Request::new(pb::ListKeysRequest {
            partition,
            bucket_type: Bytes::from("t"),
            bucket,
            after: None,
            caller: Some(caller),
        })
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_a_reason() {
        let s = service("a", 0);
        let cases = [
            (keys_request(8, Bytes::from("b"), 5, 9), tonic::Code::InvalidArgument, "does not exist"),
            (keys_request(1, Bytes::from(vec![b'x'; NAME_MAX_BYTES + 1]), 5, 9), tonic::Code::InvalidArgument, "limit"),
            // Planned on an older ring, or another ring of this epoch.
            (keys_request(1, Bytes::from("b"), 4, 9), tonic::Code::Aborted, "older ring"),
            (keys_request(1, Bytes::from("b"), 5, 8), tonic::Code::Aborted, "older ring"),
        ];
        for (request, code, needle) in cases {
            let e = s.list_keys(request).await.err().expect("refused");
            assert_eq!(e.code(), code, "{e:?}");
            assert!(e.message().contains(needle), "{e:?}");
        }
        // A node that does not hold the partition says so.
        let e = service("z", 0).list_keys(keys_request(1, Bytes::from("b"), 5, 9)).await.err().expect("refused");
        assert_eq!(e.code(), ErrorCode::Conflict.grpc_code(), "{e:?}");
    }

    #[tokio::test]
    async fn a_partition_streams_in_bounded_messages() {
        let s = service("a", 2500);
        let messages: Vec<_> =
            s.list_keys(keys_request(3, Bytes::from("b"), 5, 9)).await.unwrap().into_inner().collect().await;
        let sizes: Vec<usize> = messages.iter().map(|m| m.as_ref().unwrap().keys.len()).collect();
        assert!(sizes.len() >= 3 && sizes.iter().all(|&n| 0 < n && n <= PAGE_RECORDS), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 2500);
        let request =
            Request::new(pb::ListBucketsRequest { partition: 3, bucket_type: Bytes::from("t"), caller: None });
        let buckets: Vec<_> = s.list_buckets(request).await.unwrap().into_inner().collect().await;
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].as_ref().unwrap().buckets, vec![Bytes::from("b")]);
    }

    fn index_request(field: &str, start: &str, end: &str, regex: Option<&str>, max: u32) -> Request<pb::IndexRequest> {
        Request::new(pb::IndexRequest {
            partition: 3,
            bucket_type: Bytes::from("t"),
            bucket: Bytes::from("b"),
            field: field.into(),
            start: Bytes::copy_from_slice(start.as_bytes()),
            end: Bytes::copy_from_slice(end.as_bytes()),
            term_regex: regex.map(str::to_owned),
            after: None,
            max_results: max,
            caller: None,
        })
    }

    #[tokio::test]
    async fn index_queries_are_checked_bounded_and_cut_at_max_results() {
        let s = service("a", 2500);
        let keys = |messages: Vec<Result<pb::IndexResponse, Status>>| -> Vec<Vec<Bytes>> {
            messages.into_iter().map(|m| m.unwrap().entries).collect()
        };
        let all = keys(s.index(index_request("$bucket", "", "", None, 0)).await.unwrap().into_inner().collect().await);
        assert!(all.iter().all(|m| !m.is_empty() && m.len() <= PAGE_RECORDS));
        assert_eq!(all.iter().map(Vec::len).sum::<usize>(), 2500);
        let cut =
            keys(s.index(index_request("$bucket", "", "", None, 1200)).await.unwrap().into_inner().collect().await);
        assert_eq!(cut.iter().map(Vec::len).sum::<usize>(), 1200, "at most max_results entries");
        let range = keys(
            s.index(index_request("$key", "k00010", "k00019", Some("9$"), 0))
                .await
                .unwrap()
                .into_inner()
                .collect()
                .await,
        );
        assert_eq!(range, vec![vec![Bytes::from("k00019")]]);
        for (field, start, regex, says) in [
            ("n_int", "1", Some("1"), "integer"),
            ("n_bin", "a", Some("("), "regular expression"),
            ("n", "a", None, "Invalid field name"),
            ("n_int", "one", None, "Could not parse"),
        ] {
            let e = s.index(index_request(field, start, start, regex, 0)).await.err().expect("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(says), "{}", e.message());
        }
    }

    /// A holder that takes calls and never answers them (paused, wedged).
    struct Silent;

    #[async_trait]
    impl Coverage for Silent {
        type ListKeysStream = Messages<pb::ListKeysResponse>;
        type ListBucketsStream = Messages<pb::ListBucketsResponse>;
        type IndexStream = Messages<pb::IndexResponse>;

        async fn index(&self, _: Request<pb::IndexRequest>) -> Result<Response<Self::IndexStream>, Status> {
            std::future::pending().await
        }

        async fn list_keys(&self, _: Request<pb::ListKeysRequest>) -> Result<Response<Self::ListKeysStream>, Status> {
            Ok(Response::new(Box::pin(futures::stream::pending())))
        }

        async fn list_buckets(
            &self,
            _: Request<pb::ListBucketsRequest>,
        ) -> Result<Response<Self::ListBucketsStream>, Status> {
            std::future::pending().await
        }
    }

    struct Book(String);

    impl AddressBook for Book {
        fn cluster_address(&self, _node: &NodeId) -> Option<String> {
            Some(self.0.clone())
        }
    }

    #[tokio::test]
    async fn a_holder_that_stops_sending_is_given_up_on_before_the_deadline() {
        use crate::rpc::identity::{Caller, Identity};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(CoverageServer::new(Silent));
        let identity = Arc::new(Identity { node: NodeId::new("silent"), cluster_id: 7 });
        let stop = tokio_util::sync::CancellationToken::new();
        let server =
            tokio::spawn(super::super::server::serve(listener, routes, identity, stop.clone().cancelled_owned()));
        let idle = std::time::Duration::from_millis(300);
        let caller = Caller::member(NodeId::new("me"), 7);
        let peers = Peers::new(&caller, std::time::Duration::from_secs(1), std::time::Duration::from_secs(1))
            .with_transfer_idle_timeout(idle);
        let me = service_on("me", 0).1;
        let client =
            GrpcCoverage::new(Arc::new(peers), Arc::new(Book(address)), me, Arc::new(MemoryStore::new()), &Env::real());
        let call =
            CallContext { deadline: Instant::now() + std::time::Duration::from_secs(30), ring_epoch: 0, ring_hash: 0 };
        for query in [
            CoverageQuery::Keys { bucket_type: Bytes::from("t"), bucket: Bytes::from("b") },
            CoverageQuery::Buckets { bucket_type: Bytes::from("t") },
        ] {
            let started = Instant::now();
            let (tx, _rx) = mpsc::channel(1);
            let e = client.query(&NodeId::new("silent"), 0, &query, None, call, tx).await.unwrap_err();
            assert!(matches!(e, ReplicaError::Unreachable { .. }), "{e}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "given up on after {:?}",
                started.elapsed()
            );
        }
        stop.cancel();
        let _ = server.await;
    }

    #[tokio::test]
    async fn a_listing_resumes_after_a_key_and_ends_aborted_if_the_partition_left_meanwhile() {
        let (s, topology) = service_on("a", 2500);
        let mut request = keys_request(3, Bytes::from("b"), 5, 9);
        request.get_mut().after = Some(Bytes::from("k01999"));
        let messages: Vec<_> = s.list_keys(request).await.unwrap().into_inner().collect().await;
        let keys: Vec<Bytes> = messages.into_iter().flat_map(|m| m.unwrap().keys).collect();
        assert_eq!(keys.len(), 500);
        assert_eq!(keys[0], Bytes::from("k02000"));

        // The ring moves on while the partition is read: node b holds it now.
        let stream = s.list_keys(keys_request(3, Bytes::from("b"), 5, 9)).await.unwrap().into_inner();
        let current = Arc::new(Ring::single(8, NodeId::new("b")).unwrap());
        *topology.view.lock().unwrap() =
            Arc::new(RingView { epoch: 6, ring_hash: 1, current, target: None, n_val: 3, r: 2, w: 2 });
        let messages: Vec<_> = stream.collect().await;
        let last = messages.last().unwrap().as_ref().unwrap_err();
        assert_eq!(last.code(), tonic::Code::Aborted, "{last:?}");
        let e = replica_error_from_status(&NodeId::new("a"), last.clone());
        assert!(matches!(e, ReplicaError::StaleRing { epoch: 6, .. }), "{e}");
    }

    #[test]
    fn pages_split_by_bytes_but_a_long_name_travels_alone() {
        let big = Bytes::from(vec![b'x'; MESSAGE_BYTES_TARGET]);
        let parts = split(vec![Bytes::from("a"), big.clone(), Bytes::from("b")]);
        assert_eq!(parts, vec![vec![Bytes::from("a")], vec![big], vec![Bytes::from("b")]]);
        assert!(split(Vec::new()).is_empty());
    }
}
