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
//! partitions from its own store, and calls the others.

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
) -> mpsc::Receiver<Result<Page, StorageError>> {
    let (tx, rx) = mpsc::channel(PAGES_AHEAD);
    if env.blocking == Blocking::Inline {
        let mut pages = Vec::new();
        let _ = read_pages(&*store, partition, &query, |page| {
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
        read_pages(&*store, partition, &query, |page| {
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
    mut each: impl FnMut(Result<Page, StorageError>) -> bool,
) -> Option<()> {
    match query {
        CoverageQuery::Keys { bucket_type, bucket } => {
            let mut after: Option<Bytes> = None;
            loop {
                let page = store.list_keys(partition, bucket_type, bucket, after.as_deref(), PAGE_RECORDS);
                let (keys, resume) = match page {
                    Ok(page) => (page.keys, page.resume),
                    Err(e) => {
                        each(Err(e));
                        return None;
                    }
                };
                if !keys.is_empty() && !each(Ok(keys)) {
                    return None;
                }
                after = Some(resume?);
            }
        }
        CoverageQuery::Buckets { bucket_type } => {
            let mut from: Option<BucketCursor> = None;
            loop {
                let page = store.list_buckets(partition, bucket_type, from.as_ref(), PAGE_RECORDS);
                let (buckets, resume) = match page {
                    Ok(page) => (page.buckets, page.resume),
                    Err(e) => {
                        each(Err(e));
                        return None;
                    }
                };
                if !buckets.is_empty() && !each(Ok(buckets)) {
                    return None;
                }
                from = Some(resume?);
            }
        }
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
            metrics::replica_call_dropped("stale_ring");
            return Err(stale_ring(&view));
        }
        let local = self.topology.local();
        if !view.current.holders(partition, view.n_val).contains(local) {
            return Err(Status::new(
                ErrorCode::Conflict.grpc_code(),
                format!("node {local} does not hold partition {partition} in its ring (epoch {})", view.epoch),
            ));
        }
        let pages = spawn_pages(Arc::clone(&self.store), &self.env, partition, query);
        let stream = futures::stream::unfold(pages, |mut pages| async move {
            // A storage error is the reading's last item; the stream ends after it.
            let page = pages.recv().await?.map_err(|e| error_status(&e));
            Some((page, pages))
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

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<Self::ListKeysStream>, Status> {
        let pb::ListKeysRequest { partition, bucket_type, bucket, caller } = request.into_inner();
        let names = [("bucket type", &bucket_type), ("bucket", &bucket)];
        let stream = self.answer(
            partition,
            &names,
            caller.as_ref(),
            CoverageQuery::Keys { bucket_type: bucket_type.clone(), bucket: bucket.clone() },
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
            |buckets| pb::ListBucketsResponse { buckets },
        )?;
        Ok(Response::new(stream))
    }
}

/// The coordinator's [`CoverageClient`]: this node's partitions from its
/// own store, the others' over gRPC.
pub struct GrpcCoverage {
    peers: Arc<Peers>,
    book: Arc<dyn AddressBook>,
    local: NodeId,
    store: Arc<dyn Store>,
    env: Env,
}

impl GrpcCoverage {
    pub fn new(peers: Arc<Peers>, book: Arc<dyn AddressBook>, local: NodeId, store: Arc<dyn Store>, env: &Env) -> Self {
        GrpcCoverage { peers, book, local, store, env: env.clone() }
    }

    async fn remote(
        &self,
        node: &NodeId,
        partition: Partition,
        query: &CoverageQuery,
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
        let exchange = async {
            // Each answer is a stream of name lists; one loop reads either.
            let mut stream: Pin<Box<dyn Stream<Item = Result<Vec<Bytes>, Status>> + Send>> = match query {
                CoverageQuery::Keys { bucket_type, bucket } => {
                    let request = pb::ListKeysRequest {
                        partition,
                        bucket_type: bucket_type.clone(),
                        bucket: bucket.clone(),
                        caller,
                    };
                    let mut request = Request::new(request);
                    request.set_timeout(left);
                    let stream = client.list_keys(request).await?.into_inner();
                    Box::pin(stream.map(|m| m.map(|m| m.keys)))
                }
                CoverageQuery::Buckets { bucket_type } => {
                    let request = pb::ListBucketsRequest { partition, bucket_type: bucket_type.clone(), caller };
                    let mut request = Request::new(request);
                    request.set_timeout(left);
                    let stream = client.list_buckets(request).await?.into_inner();
                    Box::pin(stream.map(|m| m.map(|m| m.buckets)))
                }
            };
            while let Some(names) = stream.next().await {
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
        call: CallContext,
        pages: mpsc::Sender<Page>,
    ) -> Result<(), ReplicaError> {
        if *node == self.local {
            let mut local = spawn_pages(Arc::clone(&self.store), &self.env, partition, query.clone());
            while let Some(page) = local.recv().await {
                if pages.send(page?).await.is_err() {
                    break;
                }
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
        };
        let answer = self.remote(node, partition, query, call, &pages).await;
        let code = answer.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        metrics::grpc_client(method, code, started.elapsed().as_secs_f64());
        answer.map_err(|status| replica_error_from_status(node, status))
    }
}
