//! Active anti-entropy: replicas of a partition compare their TicTac trees
//! (`core::tictac`) and repair every key that differs, so that a replica
//! that missed writes (it was down, a message was lost, its disk was wiped)
//! catches up without anyone reading the key.
//!
//! Every `--anti-entropy-interval-ms` the worker takes the next partition
//! this node holds in the current ring (round robin; a partition that moves
//! to other holders is left to handoff) and exchanges with each other
//! holder that is up, one at a time: branch hashes first, then the leaves
//! of differing branches, then the key lists of differing segments, and
//! each differing key is repaired by merging both ways (the peer's copy
//! merged here through the replica, the result merged into the peer with a
//! Replica/Merge call). Merges are idempotent, so repairing a key that did
//! not really differ (a write in flight, a false difference) is harmless.
//! A key of a bucket whose n_val is below the cluster's is repaired only
//! towards those of the two nodes among its first n_val holders (see
//! `exchange`).
//! Repairs are paced (`--anti-entropy-repairs-per-second`) so an exchange
//! after a disk loss does not crowd out client requests. Every divergence
//! among current holders is so repaired within about interval x partitions
//! held (plus the repair time).
//!
//! Trees are kept by [`Trees`] (see `trees` for how writes and rebuilds
//! interleave); the AntiEntropy gRPC service answers peers from them
//! ([`LocalTrees`]).

mod trees;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::time::Instant;

pub use trees::Trees;

use super::{Worker, WorkerState};
use crate::coordinator::{AddressBook, ReplicaClient};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::ring::Partition;
use crate::core::tictac::{self, Segment, TicTacTree, VersionHash};
use crate::membership::Membership;
use crate::replica::{CallContext, Replica, ReplicaError};
use crate::rpc::anti_entropy::{AntiEntropyClient, SEGMENTS_PER_REQUEST_MAX, TreeError, TreeSource};
use crate::rpc::peers::Peers;
use crate::rpc::replica_client::GrpcReplicaClient;
use crate::storage::StorageError;
use crate::telemetry::metrics;

/// How anti-entropy runs (from the config).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Between two partitions' exchanges.
    pub interval: Duration,
    /// A tree older than this is rebuilt from the store before use.
    pub rebuild_after: Duration,
    /// Keys repaired per second at most.
    pub repairs_per_second: u32,
}

/// Anti-entropy's state shared by the worker, the gRPC service, the write
/// path (the trees observe writes) and `/admin/status`.
pub struct AntiEntropy {
    pub trees: Arc<Trees>,
    exchanges: AtomicU64,
    exchanges_failed: AtomicU64,
    keys_repaired: AtomicU64,
    last_exchange: Mutex<Option<Instant>>,
}

/// Anti-entropy's progress as `/admin/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Exchanges with a peer that completed (trees compared, keys repaired).
    pub exchanges: u64,
    pub exchanges_failed: u64,
    /// Keys found different and merged both ways.
    pub keys_repaired: u64,
    /// Since the last completed exchange; absent before the first.
    pub last_exchange_ms_ago: Option<u64>,
    /// Trees built from the store since the node started.
    pub trees_built: u64,
    /// Partitions with a tree in memory.
    pub trees: usize,
}

impl AntiEntropy {
    pub fn new(settings: &Settings) -> AntiEntropy {
        AntiEntropy {
            trees: Arc::new(Trees::new(settings.rebuild_after)),
            exchanges: AtomicU64::new(0),
            exchanges_failed: AtomicU64::new(0),
            keys_repaired: AtomicU64::new(0),
            last_exchange: Mutex::new(None),
        }
    }

    pub fn status(&self) -> Status {
        let last = *self.last_exchange.lock().expect("status lock");
        Status {
            exchanges: self.exchanges.load(Ordering::Relaxed),
            exchanges_failed: self.exchanges_failed.load(Ordering::Relaxed),
            keys_repaired: self.keys_repaired.load(Ordering::Relaxed),
            last_exchange_ms_ago: last.map(|t| t.elapsed().as_millis() as u64),
            trees_built: self.trees.builds(),
            trees: self.trees.count(),
        }
    }
}

/// Whether this node holds `partition` in the current ring and keeps it in
/// the target (a partition on the move is handoff's business).
fn settled_holders(membership: &Membership, partition: Partition) -> Option<Vec<NodeId>> {
    let view = membership.view();
    let holders = view.current.holders(partition, view.n_val);
    if !holders.contains(membership.local()) {
        return None;
    }
    if let Some(target) = &view.target
        && target.holders(partition, view.n_val) != holders
    {
        return None;
    }
    Some(holders)
}

/// What the AntiEntropy gRPC service answers from.
pub struct LocalTrees {
    anti_entropy: Arc<AntiEntropy>,
    replica: Arc<Replica>,
    membership: Arc<Membership>,
}

impl LocalTrees {
    pub fn new(anti_entropy: Arc<AntiEntropy>, replica: Arc<Replica>, membership: Arc<Membership>) -> LocalTrees {
        LocalTrees { anti_entropy, replica, membership }
    }

    fn check(&self, partition: Partition) -> Result<(), TreeError> {
        let view = self.membership.view();
        match view.current.holders(partition, view.n_val).contains(self.membership.local()) {
            true => Ok(()),
            false => Err(TreeError::NotHeld(partition)),
        }
    }
}

#[async_trait]
impl TreeSource for LocalTrees {
    async fn tree(&self, partition: Partition) -> Result<TicTacTree, TreeError> {
        self.check(partition)?;
        Ok(self.anti_entropy.trees.tree(&self.replica, partition).await?)
    }

    async fn segment_keys(
        &self,
        partition: Partition,
        segments: BTreeSet<Segment>,
    ) -> Result<Vec<(ObjectKey, VersionHash)>, TreeError> {
        self.check(partition)?;
        Ok(Trees::segment_keys(&self.replica, partition, segments).await?)
    }
}

#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("{0}")]
    Replica(#[from] ReplicaError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("peer sent a malformed tree: {0}")]
    Malformed(String),
    #[error("no address for {0}")]
    NoAddress(NodeId),
}

/// Spaces repairs at least `1 / rate` apart.
struct Pace {
    every: Duration,
    next: Instant,
}

impl Pace {
    fn new(per_second: u32) -> Pace {
        Pace { every: Duration::from_secs(1) / per_second.max(1), next: Instant::now() }
    }

    async fn wait(&mut self) {
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        // No credit for idle time: a burst after a quiet hour is paced too.
        self.next = self.next.max(now) + self.every;
    }
}

pub struct AntiEntropyWorker {
    anti_entropy: Arc<AntiEntropy>,
    membership: Arc<Membership>,
    replica: Arc<Replica>,
    peers: Arc<Peers>,
    trees_client: AntiEntropyClient,
    replicas: GrpcReplicaClient,
    settings: Settings,
    /// The partition to consider next (round robin).
    next: Partition,
    pace: Pace,
    /// When each peer's failed exchange was last logged as a warning: a
    /// peer that keeps failing (down for long, or running with
    /// anti-entropy off, which answers UNIMPLEMENTED) is warned about once
    /// a minute, not once per partition per interval.
    warned: HashMap<NodeId, Instant>,
}

/// How often the same peer's failed exchanges are logged as warnings.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl AntiEntropyWorker {
    pub fn new(
        anti_entropy: Arc<AntiEntropy>,
        membership: Arc<Membership>,
        replica: Arc<Replica>,
        peers: Arc<Peers>,
        settings: Settings,
    ) -> AntiEntropyWorker {
        let replicas = GrpcReplicaClient::new(Arc::clone(&peers), membership.clone()).with_env(replica.env());
        AntiEntropyWorker {
            anti_entropy,
            trees_client: AntiEntropyClient::new(Arc::clone(&peers)),
            replicas,
            membership,
            replica,
            peers,
            pace: Pace::new(settings.repairs_per_second),
            warned: HashMap::new(),
            settings,
            next: 0,
        }
    }

    /// The next settled partition this node holds, with its holders.
    fn pick(&mut self) -> Option<(Partition, Vec<NodeId>)> {
        let partitions = self.membership.view().current.partitions();
        for i in 0..partitions {
            let p = (self.next + i) % partitions;
            if let Some(holders) = settled_holders(&self.membership, p) {
                self.next = (p + 1) % partitions;
                return Some((p, holders));
            }
        }
        None
    }

    /// Compares `partition` with `peer` and repairs what differs; returns
    /// the keys repaired.
    async fn exchange(&mut self, partition: Partition, peer: &NodeId, ring: (u64, u64)) -> Result<u64, ExchangeError> {
        let address = self.membership.cluster_address(peer).ok_or_else(|| ExchangeError::NoAddress(peer.clone()))?;
        let mine = self.anti_entropy.trees.tree(&self.replica, partition).await?;
        let theirs = self.trees_client.branches(peer, &address, partition).await?;
        let branches = tictac::differing_branches(mine.branches(), &theirs).map_err(ExchangeError::Malformed)?;
        if branches.is_empty() {
            return Ok(0);
        }
        let mut segments = Vec::new();
        for (branch, leaves) in self.trees_client.leaves(peer, &address, partition, &branches).await? {
            let differing = tictac::differing_segments(branch, mine.branch_leaves(branch), &leaves);
            segments.extend(differing.map_err(ExchangeError::Malformed)?);
        }
        let mut repaired = 0;
        for chunk in segments.chunks(SEGMENTS_PER_REQUEST_MAX) {
            let ours = Trees::segment_keys(&self.replica, partition, chunk.iter().copied().collect()).await?;
            let theirs = self.trees_client.segment_keys(peer, &address, partition, chunk).await?;
            for key in tictac::differing_keys(&ours, &theirs) {
                // A key of a bucket with a smaller n_val lives on the first
                // n_val holders only: it is repaired towards those of the two
                // that are among them, never copied to one beyond them. A
                // copy beyond them (from a ring change: moves hand whole
                // partitions over for the cluster's N) reaches the key's
                // holders so, and stays (harmless: no request reads it).
                let towards = self.key_holders(partition, peer, &key);
                if towards == (false, false) {
                    continue;
                }
                self.repair(partition, peer, key, ring, towards).await?;
                repaired += 1;
                self.anti_entropy.keys_repaired.fetch_add(1, Ordering::Relaxed);
                metrics::anti_entropy_key_repaired();
            }
        }
        if repaired == 0 {
            // The trees differed, the stores did not: a write in flight, or
            // a tree gone wrong (the periodic rebuild mends it).
            tracing::debug!(partition, %peer, segments = segments.len(), "anti-entropy trees differed, keys did not");
        }
        Ok(repaired)
    }

    /// Whether this node, and whether `peer`, is among `key`'s replicas:
    /// the first n_val holders of its partition, n_val its bucket's.
    fn key_holders(&self, partition: Partition, peer: &NodeId, key: &ObjectKey) -> (bool, bool) {
        let view = self.membership.view();
        let n_val = self.membership.bucket_props(&key.bucket_type, &key.bucket).map_or(view.n_val, |p| p.n_val);
        let holders = view.current.holders(partition, n_val.clamp(1, view.n_val));
        (holders.contains(self.membership.local()), holders.contains(peer))
    }

    /// Merges `key` with `peer`, paced: into this node if it is one of the
    /// key's replicas (`here`), into the peer if it is (`there`).
    async fn repair(
        &mut self,
        partition: Partition,
        peer: &NodeId,
        key: ObjectKey,
        (ring_epoch, ring_hash): (u64, u64),
        (here, there): (bool, bool),
    ) -> Result<(), ReplicaError> {
        self.pace.wait().await;
        // Fenced by the ring: a peer on a newer ring refuses, and the
        // exchange stops until this node catches up.
        let call = || CallContext { deadline: Instant::now() + self.peers.unary_deadline(), ring_epoch, ring_hash };
        // Effective objects both ways (with each side's history of pruned
        // clock entries): a side that lacks the history (a prune lost to a
        // power loss) and holds a value it superseded learns so; stored
        // objects alone would leave it a sibling there for good.
        let theirs = self.replicas.get_with_history(peer, partition, &key, call()).await?;
        if here {
            self.replica.merge(partition, key.clone(), theirs.clone()).await?;
        }
        let ours = self.replica.effective(partition, key.clone()).await?;
        if there && ours != theirs && !ours.is_empty() {
            self.replicas.merge(peer, partition, &key, &ours, call()).await?;
        }
        tracing::debug!(partition, %peer, key = ?key.key, "anti-entropy repaired a key");
        Ok(())
    }
}

#[async_trait]
impl Worker for AntiEntropyWorker {
    fn name(&self) -> &'static str {
        "anti-entropy"
    }

    async fn work(&mut self) -> WorkerState {
        let membership = Arc::clone(&self.membership);
        self.anti_entropy.trees.retain(|p| settled_holders(&membership, p).is_some());
        let Some((partition, holders)) = self.pick() else { return WorkerState::Idle };
        let view = self.membership.view();
        let ring = (view.epoch, view.ring_hash);
        let me = self.membership.local().clone();
        let peers: Vec<NodeId> = holders.into_iter().filter(|n| *n != me && self.membership.is_up(n)).collect();
        for peer in &peers {
            let started = Instant::now();
            let outcome = self.exchange(partition, peer, ring).await;
            metrics::anti_entropy_exchange(outcome.is_ok(), started.elapsed().as_secs_f64());
            match outcome {
                Ok(repaired) => {
                    self.anti_entropy.exchanges.fetch_add(1, Ordering::Relaxed);
                    *self.anti_entropy.last_exchange.lock().expect("status lock") = Some(Instant::now());
                    if repaired > 0 {
                        tracing::info!(partition, %peer, repaired, "anti-entropy exchange repaired keys");
                    }
                }
                Err(e) => {
                    self.anti_entropy.exchanges_failed.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    if self.warned.get(peer).is_none_or(|at| now.duration_since(*at) >= WARN_EVERY) {
                        self.warned.insert(peer.clone(), now);
                        tracing::warn!(partition, %peer, error = %e, "anti-entropy exchange failed; the partition comes round again (further failures with this peer are logged at debug for a minute)");
                    } else {
                        tracing::debug!(partition, %peer, error = %e, "anti-entropy exchange failed");
                    }
                }
            }
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.settings.interval).await;
    }
}
