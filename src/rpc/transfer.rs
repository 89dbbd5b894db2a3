//! Partition transfer: streaming every object of a partition to another node,
//! which merges each one into its replica, and before them the partition's
//! reap records (`replica::reap`), which the receiver keeps as its own.
//! Ownership handoff and hinted handoff use it to move data when the ring
//! changes or a node comes back. Merges are idempotent, so a transfer that
//! failed halfway is simply pushed again.
//!
//! The sending side is fed through a bounded channel rather than an
//! iterator: a RocksDB scan borrows the store and blocks, so it runs on the
//! blocking pool ([`spawn_scan`]) while [`push_partition`] sends batches from
//! the async side, and the channel's bound is the backpressure between disk
//! and network. A transfer takes as long as the partition is big, so it is
//! not bounded by the unary request timeout but by progress: it fails when
//! the peer has accepted no data for [`Peers::transfer_idle_timeout`] (or,
//! once everything is sent, has not answered within it). Time spent waiting
//! for our own disk does not count against the peer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{entry_from_pb, entry_to_pb, reaped_from_pb, reaped_to_pb};
use super::peers::{MAX_MESSAGE_BYTES, Peers, TransferLimit};
use super::status::replica_error_from_status;
use super::transfer_pb::transfer_client::TransferClient;
use super::transfer_pb::transfer_server::Transfer;
use super::transfer_pb::{Entry as PbEntry, PushRequest, PushResponse, ReapedEntry};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::ring::Partition;
use crate::env::{Blocking, Env};
use crate::error::HasErrorCode;
use crate::replica::{Replica, ReplicaError};
use crate::storage::{Entry, Reaped, StorageError, Store};
use crate::telemetry::metrics;

/// At most this many objects per message...
const BATCH_ENTRIES_MAX: usize = 256;
/// ...and no more objects once a message holds this many bytes (a single
/// larger object still travels, alone).
const BATCH_BYTES_TARGET: usize = 1024 * 1024;
/// Entries a scan may read ahead of the network.
const SCAN_BUFFER: usize = 2 * BATCH_ENTRIES_MAX;

/// Receives partition transfers into this node's replica.
pub struct TransferService {
    replica: Arc<Replica>,
}

impl TransferService {
    pub fn new(replica: Arc<Replica>) -> TransferService {
        TransferService { replica }
    }

    /// Merges one message: its reap records first (a stale object is then
    /// dropped onto them), then its objects. Returns the objects merged.
    async fn merge_batch(&self, partition: Partition, message: PushRequest) -> Result<u64, Status> {
        // Validate the whole batch before merging any of it.
        let reaped = message.reaped.into_iter().map(reaped_from_pb).collect::<Result<Vec<_>, Status>>()?;
        let entries = message.entries.into_iter().map(entry_from_pb).collect::<Result<Vec<_>, Status>>()?;
        let count = entries.len() as u64;
        if !reaped.is_empty() {
            self.replica.merge_reaped(partition, reaped).await?;
        }
        self.replica.merge_many(partition, entries).await?;
        Ok(count)
    }
}

#[async_trait]
impl Transfer for TransferService {
    async fn push(&self, request: Request<Streaming<PushRequest>>) -> Result<Response<PushResponse>, Status> {
        let mut messages = request.into_inner();
        let first = messages
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty transfer: the first message must name the partition"))?;
        let partition = first.partition;
        let mut merged = self.merge_batch(partition, first).await?;
        while let Some(message) = messages.message().await? {
            if message.partition != partition {
                return Err(Status::invalid_argument(format!(
                    "transfer of partition {partition} changed to partition {} mid-stream",
                    message.partition
                )));
            }
            merged += self.merge_batch(partition, message).await?;
        }
        tracing::info!(partition, merged, "received partition transfer");
        Ok(Response::new(PushResponse { merged }))
    }
}

/// Scans one partition of `store` into a channel for [`push_partition`], on
/// the blocking pool (or, under the simulator, inline: the partition is read
/// at once and fed from a task). Dropping the receiver stops the scan at its
/// next entry; a scan error is sent as the last item.
pub fn spawn_scan(
    store: Arc<dyn Store>,
    partition: Partition,
    env: &Env,
) -> mpsc::Receiver<Result<Entry, StorageError>> {
    let (tx, rx) = mpsc::channel(SCAN_BUFFER);
    if env.blocking == Blocking::Inline {
        let entries: Vec<_> = match store.scan_partition(partition) {
            Ok(entries) => entries.collect(),
            Err(e) => vec![Err(e)],
        };
        env.spawn(async move {
            for entry in entries {
                let failed = entry.is_err();
                if tx.send(entry).await.is_err() || failed {
                    return;
                }
            }
        });
        return rx;
    }
    tokio::task::spawn_blocking(move || {
        let entries = match store.scan_partition(partition) {
            Ok(entries) => entries,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        for entry in entries {
            let failed = entry.is_err();
            if tx.blocking_send(entry).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Why a partition is sent: labels its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// To a new holder while the ring moves.
    Move,
    /// Data this node no longer holds, to its holders before deleting it.
    Sweep,
}

impl TransferKind {
    pub fn label(self) -> &'static str {
        match self {
            TransferKind::Move => "move",
            TransferKind::Sweep => "sweep",
        }
    }
}

/// Streams the partition's reap records `reaped` (`Store::reaped_in`), then
/// every entry received on `entries`, to `node` (at `cluster_address`) as
/// partition `partition`, and returns how many objects it merged. The
/// transfer is complete only when this returns `Ok`: the sender must close
/// the channel after the last entry; a `StorageError` received from it
/// cancels the transfer and is returned.
pub async fn push_partition(
    peers: &Peers,
    node: &NodeId,
    cluster_address: &str,
    partition: Partition,
    kind: TransferKind,
    reaped: Vec<(ObjectKey, Reaped)>,
    entries: mpsc::Receiver<Result<Entry, StorageError>>,
) -> Result<u64, ReplicaError> {
    push_partition_measured(peers, node, cluster_address, partition, kind, reaped, entries).await.map(|p| p.objects)
}

/// What one transfer sent: objects merged by the peer, bytes of messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    pub objects: u64,
    pub bytes: u64,
}

/// [`push_partition`], also counting the bytes sent (for the move's
/// summary line, `services::handoff`).
pub async fn push_partition_measured(
    peers: &Peers,
    node: &NodeId,
    cluster_address: &str,
    partition: Partition,
    kind: TransferKind,
    reaped: Vec<(ObjectKey, Reaped)>,
    entries: mpsc::Receiver<Result<Entry, StorageError>>,
) -> Result<Pushed, ReplicaError> {
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let result = async {
        let unreachable = |reason: String| ReplicaError::Unreachable { node: node.clone(), reason, maybe_applied: true };
        let channel = peers.transfer_channel(node, cluster_address).map_err(|e| unreachable(e.to_string()))?;
        let mut client = TransferClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // Waiting from the start: connecting is the peer's part too.
        progress.waiting();
        let (failed_tx, failed_rx) = oneshot::channel();
        let outgoing = Outgoing {
            partition,
            kind,
            reaped: reaped.into_iter(),
            entries,
            first: true,
            limit: peers.transfer_limit(),
            progress: Arc::clone(&progress),
            failed: Some(failed_tx),
        };
        let idle = peers.transfer_idle_timeout();
        // Returning drops the call, which resets the HTTP/2 stream: the
        // receiver sees the transfer cancelled, never a clean end.
        tokio::select! {
            biased;
            answer = client.push(outgoing.into_stream()) => {
                answer.map(|r| r.into_inner().merged).map_err(|status| replica_error_from_status(node, status))
            }
            Ok(error) = failed_rx => Err(ReplicaError::Storage(error)),
            () = progress.stalled(idle) => Err(unreachable(format!("partition transfer made no progress for {idle:?}"))),
        }
    }
    .await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(ReplicaError::Unreachable { .. } | ReplicaError::UnknownNode(_)) => tonic::Code::Unavailable,
        Err(e) => e.code().grpc_code(),
    };
    metrics::grpc_client("Transfer/Push", code, started.elapsed().as_secs_f64());
    // One line per partition at debug: a move logs its summary instead.
    if let Ok(merged) = &result {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(partition, %node, merged, elapsed_ms, "pushed partition");
    }
    result.map(|objects| Pushed { objects, bytes: progress.bytes.load(std::sync::atomic::Ordering::Relaxed) })
}

/// The sending half of one transfer, turned into the request stream.
struct Outgoing {
    partition: Partition,
    kind: TransferKind,
    /// Reap records still to send: they go first, before any object.
    reaped: std::vec::IntoIter<(ObjectKey, Reaped)>,
    entries: mpsc::Receiver<Result<Entry, StorageError>>,
    /// The first message is sent even when there are no entries: it names
    /// the partition.
    first: bool,
    /// The node's cap on transfer bytes, if any: each message waits its
    /// turn before it goes (time that counts as ours, not the peer's).
    limit: Option<Arc<TransferLimit>>,
    progress: Arc<Progress>,
    failed: Option<oneshot::Sender<StorageError>>,
}

impl Outgoing {
    fn into_stream(self) -> impl Stream<Item = PushRequest> + Send + 'static {
        futures::stream::unfold(self, |mut this| async move {
            // The transport asks for more: the peer is keeping up.
            this.progress.busy();
            let reaped: Vec<ReapedEntry> =
                this.reaped.by_ref().take(BATCH_ENTRIES_MAX).map(|(key, r)| reaped_to_pb(&key, &r)).collect();
            if !reaped.is_empty() {
                this.first = false;
                let request = PushRequest { partition: this.partition, entries: Vec::new(), reaped };
                if let Some(limit) = &this.limit {
                    limit.pace(request.encoded_len()).await;
                }
                this.progress.sent(request.encoded_len());
                metrics::partition_transfer_bytes(this.kind.label(), request.encoded_len());
                return Some((request, this));
            }
            let entries = match next_batch(&mut this.entries).await {
                Ok(entries) => entries,
                Err(error) => {
                    if let Some(failed) = this.failed.take() {
                        let _ = failed.send(error);
                    }
                    // Never end the stream cleanly: the peer would take a
                    // partial transfer for a complete one.
                    return std::future::pending().await;
                }
            };
            if entries.is_empty() && !this.first {
                this.progress.waiting();
                return None;
            }
            this.first = false;
            let request = PushRequest { partition: this.partition, entries, reaped: Vec::new() };
            if let Some(limit) = &this.limit {
                limit.pace(request.encoded_len()).await;
            }
            this.progress.waiting();
            this.progress.sent(request.encoded_len());
            metrics::partition_transfer_bytes(this.kind.label(), request.encoded_len());
            Some((request, this))
        })
    }
}

/// Up to one batch of whatever the scan has ready; waits only for the first
/// entry. Empty when the channel is closed.
async fn next_batch(entries: &mut mpsc::Receiver<Result<Entry, StorageError>>) -> Result<Vec<PbEntry>, StorageError> {
    let mut batch = Vec::new();
    let Some(first) = entries.recv().await else {
        return Ok(batch);
    };
    let (key, object) = first?;
    batch.push(entry_to_pb(&key, &object));
    let mut bytes = batch[0].encoded_len();
    while batch.len() < BATCH_ENTRIES_MAX && bytes < BATCH_BYTES_TARGET {
        let Ok(entry) = entries.try_recv() else { break };
        let (key, object) = entry?;
        let entry = entry_to_pb(&key, &object);
        bytes += entry.encoded_len();
        batch.push(entry);
    }
    Ok(batch)
}

/// Whether the peer is holding up a transfer, and since when.
#[derive(Default)]
struct Progress {
    /// `Some(t)`: since `t` we have had data (or, at the end, the request)
    /// for the peer and it has not asked for more. `None`: we are reading
    /// our own store.
    waiting_since: Mutex<Option<Instant>>,
    /// Bytes of the messages handed to the transport.
    bytes: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn sent(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn busy(&self) {
        *self.waiting_since.lock().expect("progress lock") = None;
    }

    fn waiting(&self) {
        *self.waiting_since.lock().expect("progress lock") = Some(Instant::now());
    }

    /// Completes once the peer has held us up for `idle` in one stretch.
    async fn stalled(&self, idle: Duration) {
        loop {
            let since = *self.waiting_since.lock().expect("progress lock");
            match since {
                Some(t) if t.elapsed() >= idle => return,
                Some(t) => tokio::time::sleep_until(t + idle).await,
                None => tokio::time::sleep(idle / 4).await,
            }
        }
    }
}
