//! Hinted handoff: a fallback delivers the copies it holds for other nodes.
//!
//! Under sloppy quorum (`coordinator`) a fallback stores a write together
//! with a hint naming the primary it stood in for (`replica::hints`, one
//! store write, so hints survive a restart). This worker walks the hint
//! queue in pages, and for every hint whose owner the failure detector says
//! is up, merges the local copy into the owner (idempotent) and deletes the
//! hint only after the owner acknowledged, and only if the copy did not
//! change meanwhile (else it is delivered again next pass).
//!
//! Whom a hint goes to. Its owner while the owner still holds the key's
//! partition (in the current or the target ring). If the ring changed since
//! (the owner left, was force-removed or replaced), the partition's current
//! holders get the copy instead, every one of them: the hint is done only
//! once all acknowledged, so a write acknowledged through a fallback during
//! a move still ends up on the new holders (see `core::quorum::WriteQuorum`).
//!
//! The local copy. Once no hint for a key remains and this node holds the
//! key's partition in neither ring, the copy is removed if unchanged since
//! it was read (`Replica::remove_if_unchanged`, which also retires the
//! partition's actor, so a later stamp here cannot reissue a dot). The
//! handoff sweep (`services::handoff`) agrees: it never removes a copy that
//! still has hints (the same `remove_if_unchanged` refuses), so a hinted
//! copy leaves only through delivery, and a delivered one may leave through
//! either; the sweep's own streaming to the holders is harmless extra.
//!
//! Client requests come first: at most [`DELIVERIES_IN_FLIGHT`] merges are
//! in flight at once, the queue is read a page ([`HINT_PAGE`]) at a time,
//! and the worker yields between pages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use tokio::time::Instant;

use super::{Worker, WorkerState};
use crate::coordinator::{ReplicaClient, Topology};
use crate::core::key::NodeId;
use crate::core::object::Object;
use crate::replica::{CallContext, Replica, ReplicaError};
use crate::storage::Hint;
use crate::telemetry::metrics;

/// Hints read from the store at once.
pub const HINT_PAGE: usize = 256;
/// Deliveries (one key to its targets each) running at once.
pub const DELIVERIES_IN_FLIGHT: usize = 16;
/// How long the worker rests between passes over the queue.
const PASS_INTERVAL: Duration = Duration::from_millis(500);

/// Hints queued on this node per target node, as of the last pass; shared
/// with `/admin/status`.
pub type HintCounts = Arc<Mutex<BTreeMap<NodeId, u64>>>;

pub struct HintsWorker {
    topology: Arc<dyn Topology>,
    replica: Arc<Replica>,
    replicas: Arc<dyn ReplicaClient>,
    counts: HintCounts,
    /// How long one delivery may take.
    timeout: Duration,
    /// Targets whose gauge was set last pass, to zero the ones now empty.
    published: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

impl HintsWorker {
    pub fn new(
        topology: Arc<dyn Topology>,
        replica: Arc<Replica>,
        replicas: Arc<dyn ReplicaClient>,
        counts: HintCounts,
        timeout: Duration,
    ) -> HintsWorker {
        HintsWorker { topology, replica, replicas, counts, timeout, published: Vec::new() }
    }

    /// Where `hint` goes now: its owner while it holds the partition, else
    /// the partition's current holders (this node excluded: it has the
    /// copy). `None` while one of them is down: try again later.
    fn targets(&self, hint: &Hint) -> Option<Vec<NodeId>> {
        let view = self.topology.view();
        let n_val = self.n_val(hint);
        let current = view.current.holders(hint.partition, n_val);
        let incoming = view.target.as_ref().map(|t| t.holders(hint.partition, n_val)).unwrap_or_default();
        let local = self.topology.local();
        let targets: Vec<NodeId> = if current.contains(&hint.target) || incoming.contains(&hint.target) {
            vec![hint.target.clone()]
        } else {
            current.into_iter().collect()
        };
        let targets: Vec<NodeId> = targets.into_iter().filter(|t| t != local).collect();
        targets.iter().all(|t| self.topology.is_up(t)).then_some(targets)
    }

    /// Whether this node holds `hint`'s partition in either ring.
    fn holds(&self, hint: &Hint) -> bool {
        let view = self.topology.view();
        let local = self.topology.local();
        let n_val = self.n_val(hint);
        view.current.holders(hint.partition, n_val).contains(local)
            || view.target.as_ref().is_some_and(|t| t.holders(hint.partition, n_val).contains(local))
    }

    /// How many replicas the hint's key has: its bucket's n_val (a key of a
    /// bucket with n_val 1 is held by one node; a fallback that is another
    /// holder of the partition must hand it back, not keep it).
    fn n_val(&self, hint: &Hint) -> usize {
        let n_val = self.topology.view().n_val;
        let props = self.topology.bucket_props(&hint.key.bucket_type, &hint.key.bucket);
        props.map_or(n_val, |p| p.n_val.clamp(1, n_val))
    }

    /// Delivers one hint; true once it is gone.
    async fn deliver(&self, hint: Hint, targets: Vec<NodeId>) -> Result<bool, DeliveryError> {
        let object: Object = self.replica.store().get(hint.partition, &hint.key)?.unwrap_or_default();
        let deadline = Instant::now() + self.timeout;
        // Unfenced (epoch 0), like a repair: the merge is idempotent and the
        // targets were chosen on this node's newest ring.
        let call = CallContext::until(deadline);
        for target in &targets {
            let merged = self.replicas.merge(target, hint.partition, &hint.key, &object, call);
            match tokio::time::timeout_at(deadline, merged).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(DeliveryError::Replica(ReplicaError::Unreachable {
                        node: target.clone(),
                        reason: "timed out".into(),
                        maybe_applied: true,
                    }));
                }
            }
        }
        let (partition, key) = (hint.partition, hint.key.clone());
        if !self.replica.hint_delivered(hint.clone(), object.clone()).await? {
            return Ok(false);
        }
        if self.replica.store().hints_for(partition, &key)?.is_empty() && !self.holds(&hint) && !object.is_empty() {
            self.replica.remove_if_unchanged(partition, key, object).await?;
        }
        Ok(true)
    }

    /// One pass over the queue: deliver what can be, count what is left.
    async fn pass(&mut self) -> Result<(usize, usize), DeliveryError> {
        let mut counts: BTreeMap<NodeId, u64> = BTreeMap::new();
        let (mut delivered, mut failed) = (0, 0);
        let mut after: Option<Hint> = None;
        loop {
            let page = self.replica.store().hints(after.as_ref(), HINT_PAGE)?;
            let Some(last) = page.last().cloned() else { break };
            let full = page.len() == HINT_PAGE;
            let mut work = Vec::new();
            for hint in page {
                if &hint.target == self.topology.local() {
                    // A hint for ourselves (the ring moved the key here):
                    // this node has the copy.
                    self.replica.store().remove_hint(&hint)?;
                    continue;
                }
                match self.targets(&hint) {
                    Some(targets) => work.push((hint, targets)),
                    None => *counts.entry(hint.target.clone()).or_default() += 1,
                }
            }
            let this = &*self;
            let results: Vec<(Hint, Result<bool, DeliveryError>)> = stream::iter(work)
                .map(|(hint, targets)| async move { (hint.clone(), this.deliver(hint, targets).await) })
                .buffer_unordered(DELIVERIES_IN_FLIGHT)
                .collect()
                .await;
            let (mut page_delivered, mut page_failed) = (0, 0);
            for (hint, result) in results {
                match result {
                    Ok(true) => page_delivered += 1,
                    Ok(false) => *counts.entry(hint.target).or_default() += 1,
                    Err(e) => {
                        page_failed += 1;
                        tracing::debug!(target_node = %hint.target, error = %e, "hint delivery failed; will retry");
                        *counts.entry(hint.target).or_default() += 1;
                    }
                }
            }
            // Counted a page at a time, so the rate shows while a pass runs.
            metrics::hints_delivered(page_delivered, page_failed);
            delivered += page_delivered as usize;
            failed += page_failed as usize;
            if !full {
                break;
            }
            after = Some(last);
            // Let client requests in between pages.
            tokio::task::yield_now().await;
        }
        self.publish(counts);
        Ok((delivered, failed))
    }

    /// Sets the gauge for every target with hints, and to 0 for every other
    /// member of the ring: a panel then shows a target's queue drain to 0
    /// instead of a series that was never there.
    fn publish(&mut self, counts: BTreeMap<NodeId, u64>) {
        let mut published = Vec::new();
        let local = self.topology.local().clone();
        let others = self.topology.view().current.members().into_iter().filter(|n| *n != local);
        let mut all: BTreeMap<NodeId, u64> = others.map(|n| (n, 0)).collect();
        all.extend(counts.iter().map(|(n, c)| (n.clone(), *c)));
        for (node, count) in &all {
            let address = self.topology.http_address(node);
            metrics::hints_queued(&address, *count);
            published.push(address);
        }
        for gone in self.published.iter().filter(|a| !published.contains(a)) {
            metrics::hints_queued(gone, 0);
        }
        self.published = published;
        *self.counts.lock().expect("hint counts lock") = counts;
    }
}

#[async_trait]
impl Worker for HintsWorker {
    fn name(&self) -> &'static str {
        "hints"
    }

    async fn work(&mut self) -> WorkerState {
        match self.pass().await {
            Ok((delivered, failed)) => {
                if delivered > 0 {
                    tracing::info!(delivered, failed, "hints delivered");
                }
                // More may have become deliverable while this pass ran.
                if delivered > 0 { WorkerState::Busy } else { WorkerState::Idle }
            }
            Err(e) => {
                tracing::warn!(error = %e, "hint delivery pass failed; will retry");
                WorkerState::Idle
            }
        }
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(PASS_INTERVAL).await;
    }
}
