//! Moving data when the ring changes.
//!
//! Two duties, in this order:
//! 1. *Transfers* for a move in progress: stream each partition this node
//!    must hand over (see `core::membership`) to its new holders, then report
//!    it done in this node's member record; the claimant switches the ring
//!    once every live sender is done.
//! 2. *Sweep* after the ring changed: a partition this node holds data for
//!    but is no longer a holder of (in the current ring or the target) is
//!    streamed to its current holders and then deleted here, key by key and
//!    only if unchanged since it was read. This is also the second pass that
//!    carries writes which reached this node while the first pass ran. A
//!    copy that still has hints (this node took it as a fallback) is never
//!    deleted here: it leaves once `services::hints` delivered it.
//!
//! Both ship the partition's reap records with its objects
//! (`replica::reap`): they are part of its state.
//!
//! Merges are idempotent, so repeating a transfer after a failure or a crash
//! is always safe.
//!
//! Memory stays bounded whatever the data: transfers stream from a scan, and
//! the sweep works in batches of at most [`SWEEP_BATCH_ENTRIES`] objects
//! (sent to every holder, then deleted if unchanged) before it reads more.
//! A holder that cannot be reached fails only the partitions it holds: the
//! sweep goes on with the others, and a failed transfer waits
//! [`RETRY_AFTER`] while the next ones go first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Worker, WorkerState};
use crate::coordinator::AddressBook;
use crate::core::key::{NodeId, ObjectKey};
use crate::core::membership::Transfer;
use crate::core::object::Object;
use crate::core::ring::Partition;
use crate::membership::Membership;
use crate::replica::Replica;
use crate::rpc::peers::Peers;
use crate::rpc::transfer::{Pushed, TransferKind, push_partition, push_partition_measured, spawn_scan};
use crate::storage::Reaped;
use crate::telemetry::metrics;

/// Objects the sweep holds in memory at once (one batch of a partition).
pub const SWEEP_BATCH_ENTRIES: usize = 1024;
/// ...and no more once a batch holds this many value bytes.
const SWEEP_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// A transfer that failed is tried again after this, others going first.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Partitions a node streams at once during a move. One at a time left the
/// network idle while each partition's scan started and its reap records
/// were read, and the receiver idle while the sender read; a few in flight
/// overlap those waits. Few, because each holds a scan buffer and a message
/// in memory and a receiver merges them all at once (docs/performance.md,
/// "Tuning log", step 10).
pub const TRANSFERS_IN_FLIGHT: usize = 4;
/// Transfers taken per round of the worker: the list of what is left is
/// computed once per round (it walks every partition).
const ROUND_TRANSFERS: usize = 256;
/// Finished transfers are recorded in the member record this many at a
/// time (and at the end of a round).
const RECORD_EVERY: usize = 16;

/// How one partition's outgoing transfer is going, for `/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TransferProgress {
    pub partition: Partition,
    pub to: Vec<String>,
    /// "running", "done" or "failed" (retried).
    pub state: &'static str,
    pub objects_sent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Shared with the status page: this node's transfers for the current move.
pub type Progress = Arc<Mutex<BTreeMap<Partition, TransferProgress>>>;

pub struct HandoffWorker {
    membership: Arc<Membership>,
    replica: Arc<Replica>,
    peers: Arc<Peers>,
    /// The ring version last seen, to wake when it changes.
    ring_version: u64,
    progress: Progress,
    /// Ring epoch whose sweep finished; a new epoch means sweep again.
    swept_epoch: u64,
    /// The move `progress` describes.
    progress_epoch: u64,
    /// When each partition's transfer last failed, to try others first.
    failed_at: BTreeMap<Partition, Instant>,
    /// What this node sent for the current move, for its one summary line.
    summary: MoveSummary,
}

/// A move's transfers from this node, summed for one log line when they
/// are done (each partition is logged at debug).
#[derive(Debug, Default)]
struct MoveSummary {
    started: Option<Instant>,
    partitions: u64,
    objects: u64,
    bytes: u64,
    failures: u64,
}

impl MoveSummary {
    fn add(&mut self, pushed: Pushed) {
        self.started.get_or_insert_with(Instant::now);
        self.partitions += 1;
        self.objects += pushed.objects;
        self.bytes += pushed.bytes;
    }

    fn failed(&mut self) {
        self.started.get_or_insert_with(Instant::now);
        self.failures += 1;
    }

    /// Logs the summary of a move this node sent anything for, and resets.
    fn log(&mut self, epoch: u64, how: &str) {
        let Some(started) = self.started else { return };
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            epoch,
            partitions = self.partitions,
            objects = self.objects,
            bytes = self.bytes,
            failed_attempts = self.failures,
            seconds = (secs * 10.0).round() / 10.0,
            "{how}: sent {} partitions ({} objects, {} bytes) in {secs:.1} s",
            self.partitions,
            self.objects,
            self.bytes,
        );
        *self = MoveSummary::default();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HandoffError(String);

impl HandoffWorker {
    pub fn new(
        membership: Arc<Membership>,
        replica: Arc<Replica>,
        peers: Arc<Peers>,
        progress: Progress,
    ) -> HandoffWorker {
        let ring_version = membership.ring_version();
        HandoffWorker {
            membership,
            replica,
            peers,
            ring_version,
            progress,
            swept_epoch: 0,
            progress_epoch: 0,
            failed_at: BTreeMap::new(),
            summary: MoveSummary::default(),
        }
    }

    fn set_progress(&self, partition: Partition, to: &[NodeId], state: &'static str, sent: u64, error: Option<String>) {
        let to = to.iter().map(|n| n.to_string()).collect();
        let entry = TransferProgress { partition, to, state, objects_sent: sent, error };
        self.progress.lock().expect("progress lock").insert(partition, entry);
    }

    /// The partition's reap records (read on the blocking pool): they move
    /// with its objects, or a stale copy could come back on the new holders.
    async fn reaped_in(&self, partition: Partition) -> Result<Vec<(ObjectKey, Reaped)>, HandoffError> {
        let store = Arc::clone(self.replica.store());
        let read = move || store.reaped_in(partition);
        self.replica
            .env()
            .blocking
            .run(read)
            .await
            .map_err(|e| HandoffError(e.to_string()))?
            .map_err(|e| HandoffError(e.to_string()))
    }

    /// Streams `partition` (its reap records, then its objects) to each of
    /// `to`; returns the objects sent.
    async fn send(&self, partition: Partition, to: &[NodeId]) -> Result<Pushed, HandoffError> {
        let mut sent = Pushed::default();
        let reaped = self.reaped_in(partition).await?;
        for node in to {
            let address =
                self.membership.cluster_address(node).ok_or_else(|| HandoffError(format!("no address for {node}")))?;
            let entries = spawn_scan(Arc::clone(self.replica.store()), partition, self.replica.env());
            let pushed = push_partition_measured(
                &self.peers,
                node,
                &address,
                partition,
                TransferKind::Move,
                reaped.clone(),
                entries,
            )
            .await
            .map_err(|e| HandoffError(format!("to {node}: {e}")))?;
            sent.objects += pushed.objects;
            sent.bytes += pushed.bytes;
        }
        Ok(sent)
    }

    async fn transfer(&mut self) -> Option<WorkerState> {
        let view = self.membership.view();
        if self.progress_epoch != view.epoch {
            // A new ring: the last move is over (done, or replaced by this one).
            self.summary.log(self.progress_epoch, "move ended");
        }
        view.target.as_ref()?;
        if self.progress_epoch != view.epoch {
            self.progress.lock().expect("progress lock").clear();
            self.progress_epoch = view.epoch;
        }
        let mine = self.membership.my_transfers();
        if mine.is_empty() {
            self.summary.log(view.epoch, "move: this node's transfers are done");
            return None;
        }
        // A transfer that failed lately waits its turn behind the others, so
        // one unreachable target does not hold up every partition.
        let now = Instant::now();
        let recent = |t: &crate::core::membership::Transfer| {
            self.failed_at.get(&t.partition).is_some_and(|at| now.duration_since(*at) < RETRY_AFTER)
        };
        let (fresh, waiting): (Vec<_>, Vec<_>) = mine.into_iter().partition(|t| !recent(t));
        let round: Vec<_> = if fresh.is_empty() { waiting.into_iter().take(1).collect() } else { fresh };
        let round: Vec<_> = round.into_iter().take(ROUND_TRANSFERS).collect();
        // The move's clock starts when its first round does, not when that
        // round's results are counted.
        self.summary.started.get_or_insert_with(Instant::now);
        let outcomes = self.run_round(round).await;
        let mut any_ok = false;
        for (transfer, outcome) in outcomes {
            let p = transfer.partition;
            match outcome {
                Ok(pushed) => {
                    any_ok = true;
                    self.failed_at.remove(&p);
                    self.summary.add(pushed);
                }
                Err(_) => {
                    self.failed_at.insert(p, Instant::now());
                    self.summary.failed();
                }
            }
        }
        Some(if any_ok { WorkerState::Busy } else { WorkerState::Idle })
    }

    /// Sends `round`'s partitions, [`TRANSFERS_IN_FLIGHT`] at a time, and
    /// records the finished ones in this node's member record a group at a
    /// time: recording runs the membership's whole change path (claimant
    /// step, state save, gossip), so once per partition it was most of a
    /// small partition's cost. Returns each transfer's outcome.
    async fn run_round(&self, round: Vec<Transfer>) -> Vec<(Transfer, Result<Pushed, HandoffError>)> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut queue = round.into_iter();
        let mut running = FuturesUnordered::new();
        let mut outcomes = Vec::new();
        let mut unrecorded: Vec<(Transfer, u64)> = Vec::new();
        let epoch = self.membership.view().epoch;
        loop {
            // A new ring (another target, or the switch) ends the round:
            // what is left to send is computed again.
            while running.len() < TRANSFERS_IN_FLIGHT && self.membership.view().epoch == epoch {
                let Some(transfer) = queue.next() else { break };
                self.set_progress(transfer.partition, &transfer.to, "running", 0, None);
                running.push(async move {
                    let outcome = self.send(transfer.partition, &transfer.to).await;
                    (transfer, outcome)
                });
            }
            let Some((transfer, outcome)) = running.next().await else { break };
            let (p, to) = (transfer.partition, &transfer.to);
            match &outcome {
                Ok(pushed) => {
                    metrics::partition_transfer("move", true, pushed.objects);
                    tracing::debug!(partition = p, to = ?to, objects = pushed.objects, bytes = pushed.bytes, "partition transferred");
                    unrecorded.push((transfer.clone(), pushed.objects));
                }
                Err(e) => {
                    metrics::partition_transfer("move", false, 0);
                    tracing::warn!(partition = p, error = %e, "partition transfer failed; will retry");
                    self.set_progress(p, to, "failed", 0, Some(e.to_string()));
                }
            }
            outcomes.push((transfer, outcome));
            if unrecorded.len() >= RECORD_EVERY {
                self.record(std::mem::take(&mut unrecorded));
            }
        }
        self.record(unrecorded);
        outcomes
    }

    /// Records finished transfers (one membership change for all of them)
    /// and shows them done.
    fn record(&self, done: Vec<(Transfer, u64)>) {
        if done.is_empty() {
            return;
        }
        let transfers: Vec<Transfer> = done.iter().map(|(t, _)| t.clone()).collect();
        match self.membership.mark_transfers_done(&transfers) {
            Ok(true) => {
                for (t, sent) in &done {
                    self.set_progress(t.partition, &t.to, "done", *sent, None);
                }
            }
            // The target changed while they streamed: the new move's
            // transfers start over.
            Ok(false) => tracing::info!(partitions = done.len(), "the move changed during the transfers; not recorded"),
            Err(e) => tracing::warn!(error = %e, "cannot record transfers"),
        }
    }

    /// Hands over and drops data of partitions this node no longer holds.
    /// A partition that fails (a holder unreachable) is left for the next
    /// sweep; the others go on.
    async fn sweep(&mut self) -> Result<(), HandoffError> {
        let view = self.membership.view();
        let me = self.membership.local().clone();
        let mut failures = Vec::new();
        let (started, mut swept, mut objects) = (Instant::now(), 0, 0);
        for p in 0..view.current.partitions() {
            let holders = view.current.holders(p, view.n_val);
            let incoming = view.target.as_ref().is_some_and(|t| t.holders(p, view.n_val).contains(&me));
            if holders.contains(&me) || incoming {
                continue;
            }
            match self.sweep_partition(p, &holders).await {
                Ok(0) => {}
                Ok(dropped) => {
                    (swept, objects) = (swept + 1, objects + dropped);
                    tracing::debug!(partition = p, objects = dropped, to = ?holders, "handed over data this node no longer holds");
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "handoff sweep of a partition failed; will retry");
                    failures.push(p);
                }
            }
        }
        if swept > 0 {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                partitions = swept,
                objects,
                failed = failures.len(),
                "handed over and dropped {objects} objects of {swept} partitions this node no longer holds in {secs:.1} s"
            );
        }
        match failures.as_slice() {
            [] => Ok(()),
            failed => Err(HandoffError(format!("{} partitions could not be handed over: {failed:?}", failed.len()))),
        }
    }

    /// Sweeps one partition a batch at a time: each batch goes to every
    /// holder, then each of its keys is dropped here if unchanged since it
    /// was read (a write that landed since is kept, and sent next time).
    async fn sweep_partition(&self, p: Partition, holders: &[NodeId]) -> Result<u64, HandoffError> {
        let mut scan = spawn_scan(Arc::clone(self.replica.store()), p, self.replica.env());
        let mut dropped = 0;
        // The reap records go with the first batch (they stay here until
        // they expire: harmless, and still true).
        let mut reaped = Some(self.reaped_in(p).await?);
        loop {
            let batch = next_batch(&mut scan).await?;
            let records = reaped.take().unwrap_or_default();
            if batch.is_empty() && records.is_empty() {
                break;
            }
            for node in holders {
                let address = self
                    .membership
                    .cluster_address(node)
                    .ok_or_else(|| HandoffError(format!("no address for {node}")))?;
                let (tx, rx) = mpsc::channel(batch.len().max(1));
                for entry in &batch {
                    let _ = tx.try_send(Ok(entry.clone()));
                }
                drop(tx);
                let pushed =
                    push_partition(&self.peers, node, &address, p, TransferKind::Sweep, records.clone(), rx).await;
                metrics::partition_transfer("sweep", pushed.is_ok(), *pushed.as_ref().unwrap_or(&0));
                pushed.map_err(|e| HandoffError(format!("partition {p} to {node}: {e}")))?;
            }
            let mut batch_dropped = 0;
            for (key, object) in batch {
                if self.replica.remove_if_unchanged(p, key, object).await.map_err(|e| HandoffError(e.to_string()))? {
                    batch_dropped += 1;
                }
            }
            metrics::handoff_dropped(batch_dropped);
            dropped += batch_dropped;
        }
        Ok(dropped)
    }
}

/// Up to [`SWEEP_BATCH_ENTRIES`] objects (or [`SWEEP_BATCH_BYTES`]) from a
/// partition scan; empty when the scan is over.
async fn next_batch(
    scan: &mut mpsc::Receiver<Result<(ObjectKey, Object), crate::storage::StorageError>>,
) -> Result<Vec<(ObjectKey, Object)>, HandoffError> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while batch.len() < SWEEP_BATCH_ENTRIES && bytes < SWEEP_BATCH_BYTES {
        match scan.recv().await {
            Some(Ok(entry)) => {
                bytes += entry.1.value_bytes();
                batch.push(entry);
            }
            Some(Err(e)) => return Err(HandoffError(e.to_string())),
            None => break,
        }
    }
    Ok(batch)
}

#[async_trait]
impl Worker for HandoffWorker {
    fn name(&self) -> &'static str {
        "handoff"
    }

    async fn work(&mut self) -> WorkerState {
        if let Some(state) = self.transfer().await {
            return state;
        }
        let epoch = self.membership.view().epoch;
        if epoch != self.swept_epoch {
            match self.sweep().await {
                Ok(()) => self.swept_epoch = epoch,
                Err(e) => tracing::warn!(error = %e, "handoff sweep failed; will retry"),
            }
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        // Wake on a ring change, and poll anyway: transfer duties also
        // depend on other members' records, which gossip updates.
        let changed = self.membership.ring_changed(self.ring_version);
        if let Ok(version) = tokio::time::timeout(Duration::from_millis(500), changed).await {
            self.ring_version = version;
        }
    }
}
