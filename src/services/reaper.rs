//! Tombstone reaping: a deleted key's tombstone is removed once every
//! primary replica holds it and the grace (`--tombstone-grace-ms`) has
//! passed, without the key ever coming back.
//!
//! Who reaps. Each partition is reaped by one node: its first primary in the
//! current ring, and only while the partition is not moving (a move's
//! target ring has other holders, and a reap made after a transfer had
//! shipped the partition's reap records would not reach them).
//! The worker walks its partitions one at a time, scans each for
//! tombstones (on the blocking pool), and for each tombstone that has been
//! the key's state for at least the grace:
//! 1. asks every primary for its copy (all must be up and answer), and goes
//!    on only if each holds exactly that tombstone (same clock, no
//!    siblings), or nothing (it may have reaped it in an earlier pass);
//! 2. tells each other primary to reap it (`Replica/Reap`), which it does
//!    only if the stored object is still exactly that tombstone, under the
//!    key's lock, leaving a reap record of its clock behind
//!    (`replica::reap`), and which answers yes as well if it had reaped it
//!    already (a record of exactly that clock); a primary with nothing and
//!    no record answers no;
//! 3. reaps it here last, once every other primary said yes. This node
//!    finds tombstones by scanning its own objects, so while its tombstone
//!    is here the key is retried in the next pass: a call lost in step 2
//!    leaves no primary holding the tombstone for good (it would never be
//!    reaped, and anti-entropy would repair it at every exchange).
//!
//! The age of a tombstone. Objects carry no deletion time (the on-disk and
//! wire formats are unchanged), so the grace is counted from when this
//! worker first saw the tombstone, with the same clock, in a scan. That
//! over-estimates nothing: a restart, a ring change that makes this node
//! first primary, or a new delete of the key (a new clock) starts the count
//! again, so a tombstone is always at least the grace old when reaped, often
//! older. The count is kept in memory for at most
//! [`TRACKED_PER_PARTITION`] tombstones per partition; the others wait for
//! a later pass.
//!
//! Why the grace, when reap records already drop stale copies: it lets
//! what is in flight for the key settle first (hints, repairs, a client
//! that read the key's context before the delete), while the record still
//! protects what arrives later. A write that lands between step 1 and 2 on
//! one primary makes that primary refuse the reap; the ones that reaped
//! merge the write onto their record (causality kept), and the next pass
//! finds no tombstone to reap.
//!
//! Clock hygiene, on the same pass. A live key whose clock has more than
//! `--max-clock-entries` entries (actors are per node run and partition,
//! so clocks grow with every restart of a coordinator) is pruned: the
//! entries of actors that dot no current sibling, smallest counter first,
//! down to the limit, move from the clock into the key's history record,
//! the record a reap leaves (`replica::reap`). Pruning is reaping of clock
//! entries: every merge and write starts from object and history
//! together, so a stale copy the removed entries covered is dropped as
//! after a reap, never kept as a sibling of the newer value. As for a reap,
//! every primary must be up and hold the same values (siblings; clocks may
//! differ after a prune that reached some of them only, see
//! [`actors_to_prune`]); each is sent `Replica/Prune(key, its own clock,
//! the actors)`, which applies it under the key's lock only if the stored
//! clock is still that one and no hint is pending for the key; the others
//! first, this node last. An actor that is
//! still some primary's current one may be pruned: its next write takes
//! its counter from the history (no dot is issued twice) and puts the
//! entry back, so a clock holds at most the limit plus the writers since
//! the last pass. History records expire after the same retention as reap
//! records.
//!
//! Pacing: one partition per `work` call, a yield between partitions, one
//! key at a time, and a rest of [`pass_interval`] between passes over all
//! partitions. Reap records past the retention (`--reaped-retention-ms`)
//! are expired at the start of each pass ([`Replica::expire_reaped`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Worker, WorkerState};
use crate::coordinator::{ReplicaClient, Topology};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::Object;
use crate::core::ring::Partition;
use crate::core::vclock::{ActorId, VersionVector};
use crate::replica::{CallContext, Replica, ReplicaError};
use crate::telemetry::metrics;

/// Tombstones of one partition whose age is tracked at once.
pub const TRACKED_PER_PARTITION: usize = 10_000;
/// Reap records expired per store call.
const EXPIRE_PAGE: usize = 1024;
/// Keys of one partition pruned per pass at most; the rest wait for the next.
pub const PRUNED_PER_PASS: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How old a tombstone must be; zero never reaps.
    pub grace: Duration,
    /// How long reap records (and history records) are kept.
    pub retention: Duration,
    /// Clocks with more entries are pruned down to this; zero never prunes.
    pub max_clock_entries: usize,
    /// How long one replica call may take.
    pub timeout: Duration,
}

/// How long the worker rests between passes: a quarter of the grace, so a
/// tombstone is reaped within about 1.25 graces, between 100 ms (tests) and
/// a minute; a minute when it only prunes.
pub fn pass_interval(grace: Duration) -> Duration {
    if grace.is_zero() {
        return Duration::from_secs(60);
    }
    (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// The reaper's counts, shared with `/admin/status`.
#[derive(Debug, Default)]
pub struct Reaper {
    keys_reaped: AtomicU64,
    waiting: AtomicU64,
    records_expired: AtomicU64,
    keys_pruned: AtomicU64,
    entries_pruned: AtomicU64,
}

/// What `/admin/status` shows of the reaper.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Keys whose tombstone this node reaped from every primary.
    pub keys_reaped: u64,
    /// Tombstones of this node's partitions still within their grace, as
    /// of the last scan of each.
    pub tombstones_waiting: u64,
    /// Reap and history records dropped after the retention.
    pub records_expired: u64,
    /// Keys whose clock this node pruned on every primary.
    pub keys_pruned: u64,
    /// Clock entries those prunes moved into history records.
    pub clock_entries_pruned: u64,
}

impl Reaper {
    pub fn status(&self) -> Status {
        Status {
            keys_reaped: self.keys_reaped.load(Ordering::Relaxed),
            tombstones_waiting: self.waiting.load(Ordering::Relaxed),
            records_expired: self.records_expired.load(Ordering::Relaxed),
            keys_pruned: self.keys_pruned.load(Ordering::Relaxed),
            clock_entries_pruned: self.entries_pruned.load(Ordering::Relaxed),
        }
    }
}

pub struct ReaperWorker {
    reaper: Arc<Reaper>,
    topology: Arc<dyn Topology>,
    replica: Arc<Replica>,
    replicas: Arc<dyn ReplicaClient>,
    settings: Settings,
    /// The partition the next `work` call looks at.
    next: Partition,
    /// Per partition: tombstone key -> (its clock, when first seen, Unix ms).
    seen: HashMap<Partition, HashMap<ObjectKey, (VersionVector, u64)>>,
}

#[derive(Debug, thiserror::Error)]
enum ReapError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("scan failed: {0}")]
    Scan(String),
}

impl ReaperWorker {
    pub fn new(
        reaper: Arc<Reaper>,
        topology: Arc<dyn Topology>,
        replica: Arc<Replica>,
        replicas: Arc<dyn ReplicaClient>,
        settings: Settings,
    ) -> ReaperWorker {
        ReaperWorker { reaper, topology, replica, replicas, settings, next: 0, seen: HashMap::new() }
    }

    /// The primaries of `partition` if this node reaps it: it is the first
    /// of them and the partition is not moving.
    fn primaries(&self, partition: Partition) -> Option<Vec<NodeId>> {
        let view = self.topology.view();
        let holders = view.current.holders(partition, view.n_val);
        if holders.first() != Some(self.topology.local()) || holders.len() < view.n_val {
            return None;
        }
        if let Some(target) = &view.target
            && target.holders(partition, view.n_val) != holders
        {
            return None;
        }
        Some(holders)
    }

    /// The primaries of one key of the partition: the first n_val of them,
    /// n_val its bucket's (this node, the first, among them).
    fn key_primaries<'a>(&self, primaries: &'a [NodeId], key: &ObjectKey) -> &'a [NodeId] {
        let n_val = self.topology.bucket_props(&key.bucket_type, &key.bucket).map_or(primaries.len(), |p| p.n_val);
        &primaries[..n_val.clamp(1, primaries.len())]
    }

    /// The tombstones of `partition` (at most [`TRACKED_PER_PARTITION`]),
    /// and its live keys whose clock is above the limit (at most
    /// [`PRUNED_PER_PASS`]), read on the blocking pool.
    async fn tombstones(&self, partition: Partition) -> Result<Scanned, ReapError> {
        let store = Arc::clone(self.replica.store());
        let reap = !self.settings.grace.is_zero();
        let limit = self.settings.max_clock_entries;
        let scan = move || -> Result<Scanned, crate::storage::StorageError> {
            let mut out = Scanned::default();
            for row in store.scan_partition(partition)? {
                let (key, object) = row?;
                if object.is_tombstone() {
                    if reap && out.tombstones.len() < TRACKED_PER_PARTITION {
                        out.tombstones.push((key, object.clock().clone()));
                    }
                } else if limit > 0 && object.clock().len() > limit && out.grown.len() < PRUNED_PER_PASS {
                    out.grown.push((key, object));
                }
                if out.tombstones.len() == TRACKED_PER_PARTITION && out.grown.len() == PRUNED_PER_PASS {
                    break;
                }
            }
            Ok(out)
        };
        let env = self.replica.env().clone();
        env.blocking.run(scan).await.map_err(|e| ReapError::Scan(e.to_string()))?.map_err(ReapError::from)
    }

    /// One partition: track its tombstones' ages, reap the old enough ones,
    /// prune the clocks above the limit. Returns how many keys were reaped.
    async fn partition(&mut self, partition: Partition) -> Result<u64, ReapError> {
        let Some(primaries) = self.primaries(partition) else {
            self.seen.remove(&partition);
            return Ok(0);
        };
        let now = self.replica.env().now_ms();
        let Scanned { tombstones: found, grown } = self.tombstones(partition).await?;
        let (mut keys_pruned, mut entries_pruned) = (0, 0);
        for (key, object) in grown {
            if !primaries.iter().all(|p| self.topology.is_up(p)) {
                break;
            }
            let primaries = self.key_primaries(&primaries, &key);
            match self.prune(partition, &key, &object, primaries).await {
                Ok(0) => {}
                Ok(entries) => {
                    keys_pruned += 1;
                    entries_pruned += entries;
                }
                Err(e) => tracing::debug!(partition, error = %e, "clock not pruned; will retry"),
            }
        }
        if keys_pruned > 0 {
            self.reaper.keys_pruned.fetch_add(keys_pruned, Ordering::Relaxed);
            self.reaper.entries_pruned.fetch_add(entries_pruned, Ordering::Relaxed);
            metrics::clock_entries_pruned(entries_pruned);
            tracing::info!(partition, keys = keys_pruned, entries = entries_pruned, "clocks pruned");
        }
        let before = self.seen.remove(&partition).unwrap_or_default();
        let mut tracked = HashMap::with_capacity(found.len());
        let grace_ms = self.settings.grace.as_millis() as u64;
        let mut due = Vec::new();
        for (key, clock) in found {
            let first_seen = match before.get(&key) {
                Some((seen_clock, at)) if *seen_clock == clock => *at,
                _ => now,
            };
            if now.saturating_sub(first_seen) >= grace_ms {
                due.push((key.clone(), clock.clone()));
            }
            tracked.insert(key, (clock, first_seen));
        }
        let mut reaped = 0;
        for (key, clock) in due {
            if !primaries.iter().all(|p| self.topology.is_up(p)) {
                break;
            }
            let primaries = self.key_primaries(&primaries, &key);
            match self.reap(partition, &key, &clock, primaries).await {
                Ok(true) => {
                    tracked.remove(&key);
                    reaped += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(partition, error = %e, "tombstone not reaped; will retry"),
            }
        }
        self.seen.insert(partition, tracked);
        Ok(reaped)
    }

    /// Reaps one key from every primary if each holds exactly the tombstone
    /// with `clock` (or reaped it already); true once every primary has.
    /// This node (the first of `primaries`) reaps last.
    async fn reap(
        &self,
        partition: Partition,
        key: &ObjectKey,
        clock: &VersionVector,
        primaries: &[NodeId],
    ) -> Result<bool, ReapError> {
        let tombstone = Object::tombstone(clock.clone());
        // Unfenced (epoch 0): the reap itself checks the stored object, and
        // a replica that is no longer a holder has nothing to reap.
        let call = || CallContext::until(Instant::now() + self.settings.timeout);
        for node in primaries {
            let copy = self.replicas.get(node, partition, key, call()).await?;
            if copy != tombstone && !copy.is_empty() {
                return Ok(false);
            }
        }
        let (me, others) = primaries.split_first().expect("a partition has primaries");
        for node in others {
            if !self.replicas.reap(node, partition, key, clock, call()).await? {
                return Ok(false);
            }
        }
        Ok(self.replicas.reap(me, partition, key, clock, call()).await?)
    }

    /// Prunes `key`'s clock (`object` as this node holds it) on every
    /// primary if each holds the same values; returns how many actors'
    /// entries went (0: not pruned). Clocks may differ where an earlier
    /// prune reached some primaries only (a lost call, a write stamped by
    /// one that missed it): the actors are chosen on the union of the
    /// copies' clocks, plus every actor whose entry differs between copies,
    /// so that every primary ends with the same clock; each is told its own
    /// clock as the expected one. This node (the first of `primaries`)
    /// prunes last, so a call lost on the way leaves it above the limit and
    /// the key is tried again next pass.
    async fn prune(
        &self,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        primaries: &[NodeId],
    ) -> Result<u64, ReapError> {
        let call = || CallContext::until(Instant::now() + self.settings.timeout);
        let mut copies = Vec::with_capacity(primaries.len());
        for node in primaries {
            let copy = self.replicas.get(node, partition, key, call()).await?;
            // Another value on some primary (a write in flight, a stale
            // copy): a pruned clock sent there would not cover it.
            if copy.siblings() != object.siblings() {
                return Ok(0);
            }
            copies.push(copy);
        }
        let actors = actors_to_prune(&copies, self.settings.max_clock_entries);
        if actors.is_empty() {
            return Ok(0);
        }
        let order = (1..primaries.len()).chain([0]);
        for i in order {
            if !self.replicas.prune(&primaries[i], partition, key, copies[i].clock(), &actors, call()).await? {
                return Ok(0);
            }
        }
        Ok(actors.len() as u64)
    }

    async fn expire(&self) -> Result<(), ReapError> {
        let now = self.replica.env().now_ms();
        let before = now.saturating_sub(self.settings.retention.as_millis() as u64);
        loop {
            let expired = self.replica.expire_reaped(before, EXPIRE_PAGE).await?;
            self.reaper.records_expired.fetch_add(expired as u64, Ordering::Relaxed);
            if expired < EXPIRE_PAGE {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }
}

/// What a partition scan found.
#[derive(Default)]
struct Scanned {
    /// Tombstones and their clocks.
    tombstones: Vec<(ObjectKey, VersionVector)>,
    /// Live keys whose clock is above the limit.
    grown: Vec<(ObjectKey, Object)>,
}

/// The actors to prune from `object`'s clock to bring it down to `limit`
/// entries: those that dot no sibling (a sibling's dot stays covered by
/// the object's own clock), smallest counter first (the oldest writes,
/// most likely of runs that ended). Fewer when siblings hold more.
pub fn prunable(object: &Object, limit: usize) -> Vec<ActorId> {
    let excess = object.clock().len().saturating_sub(limit);
    let mut candidates: Vec<(u64, ActorId)> = object
        .clock()
        .iter()
        .filter(|&(actor, _)| object.siblings().iter().all(|s| s.dot.actor != actor))
        .map(|(actor, counter)| (counter, actor))
        .collect();
    candidates.sort_unstable();
    candidates.into_iter().take(excess).map(|(_, actor)| actor).collect()
}

/// What to prune from `copies` (the primaries' objects of one key, with
/// the same siblings): down to `limit` entries of the union of their
/// clocks ([`prunable`]), and every actor (dotting no sibling) whose entry
/// differs between copies, so that every copy ends with the same clock.
pub fn actors_to_prune(copies: &[Object], limit: usize) -> Vec<ActorId> {
    let Some(first) = copies.first() else { return Vec::new() };
    let union = copies.iter().fold(VersionVector::new(), |u, c| u.merged(c.clock()));
    let Ok(joined) = Object::from_parts(union.clone(), first.siblings().to_vec()) else { return Vec::new() };
    let mut actors = prunable(&joined, limit);
    for (actor, counter) in union.iter() {
        let differs = copies.iter().any(|c| c.clock().get(actor) != counter);
        let dots = first.siblings().iter().any(|s| s.dot.actor == actor);
        if differs && !dots && !actors.contains(&actor) {
            actors.push(actor);
        }
    }
    actors
}

#[async_trait]
impl Worker for ReaperWorker {
    fn name(&self) -> &'static str {
        "reaper"
    }

    async fn work(&mut self) -> WorkerState {
        let partitions = self.topology.view().current.partitions();
        if self.next >= partitions {
            self.next = 0;
        }
        if self.next == 0
            && let Err(e) = self.expire().await
        {
            tracing::warn!(error = %e, "expiring reap records failed; will retry");
        }
        let partition = self.next;
        match self.partition(partition).await {
            Ok(0) => {}
            Ok(keys) => {
                self.reaper.keys_reaped.fetch_add(keys, Ordering::Relaxed);
                metrics::tombstones_reaped(keys);
                tracing::info!(partition, keys, "tombstones reaped");
            }
            Err(e) => tracing::warn!(partition, error = %e, "reaping a partition failed; will retry"),
        }
        self.next = partition + 1;
        if self.next < partitions {
            // Client requests first: most partitions cost no await at all.
            tokio::task::yield_now().await;
            return WorkerState::Busy;
        }
        let waiting: usize = self.seen.values().map(HashMap::len).sum();
        self.reaper.waiting.store(waiting as u64, Ordering::Relaxed);
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(pass_interval(self.settings.grace)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::coordinator::RingView;
    use crate::core::object::{Content, Mutation};
    use crate::core::ring::Ring;
    use crate::replica::SiblingLimits;
    use crate::storage::MemoryStore;

    const P: Partition = 0;

    fn node(name: &str) -> NodeId {
        NodeId::new(name)
    }

    /// Three in-process replicas; a reap call to `lose_reap_to` fails once.
    struct Local {
        replicas: HashMap<NodeId, Arc<Replica>>,
        lose_reap_to: Mutex<Option<NodeId>>,
    }

    #[async_trait]
    impl ReplicaClient for Local {
        async fn get(&self, n: &NodeId, p: Partition, k: &ObjectKey, _: CallContext) -> Result<Object, ReplicaError> {
            self.replicas[n].get(p, k.clone()).await
        }

        async fn coordinate(
            &self,
            n: &NodeId,
            p: Partition,
            k: &ObjectKey,
            context: &VersionVector,
            mutation: &Mutation,
            _: CallContext,
        ) -> Result<Object, ReplicaError> {
            self.replicas[n].coordinate(p, k.clone(), context.clone(), mutation.clone()).await
        }

        async fn merge(
            &self,
            n: &NodeId,
            p: Partition,
            k: &ObjectKey,
            o: &Object,
            _: CallContext,
        ) -> Result<(), ReplicaError> {
            self.replicas[n].merge(p, k.clone(), o.clone()).await.map(|_| ())
        }

        async fn reap(
            &self,
            n: &NodeId,
            p: Partition,
            k: &ObjectKey,
            clock: &VersionVector,
            _: CallContext,
        ) -> Result<bool, ReplicaError> {
            if self.lose_reap_to.lock().unwrap().take_if(|lost| lost == n).is_some() {
                return Err(ReplicaError::Unreachable { node: n.clone(), reason: "lost".into(), maybe_applied: false });
            }
            self.replicas[n].reap(p, k.clone(), clock.clone()).await
        }
    }

    struct Fixed(Arc<RingView>, NodeId);

    #[async_trait]
    impl Topology for Fixed {
        fn view(&self) -> Arc<RingView> {
            Arc::clone(&self.0)
        }
        fn local(&self) -> &NodeId {
            &self.1
        }
        fn is_up(&self, _: &NodeId) -> bool {
            true
        }
        fn http_address(&self, node: &NodeId) -> String {
            node.to_string()
        }
        async fn catch_up(&self, _: &NodeId, _: u64, _: Instant) -> bool {
            true
        }
    }

    #[test]
    fn pruning_takes_the_oldest_entries_that_dot_no_sibling_down_to_the_limit() {
        let mut o = Object::new();
        let put = |v: &str| {
            Mutation::Put(Content {
                value: v.to_owned().into(),
                content_type: "t".into(),
                last_modified_ms: 0,
                meta: Default::default(),
            })
        };
        // Actor 9 wrote three times, 5 twice, 7 and 8 once; 8 wrote last.
        for actor in [9, 9, 5, 9, 5, 7, 8] {
            let context = o.clock().clone();
            o.update(actor, &context, put("v")).unwrap();
        }
        // A blind write by 7: two siblings, of 7 and 8.
        o.update(7, &VersionVector::new(), put("w")).unwrap();
        assert_eq!(o.clock().len(), 4);
        assert_eq!(prunable(&o, 4), Vec::<ActorId>::new());
        assert_eq!(prunable(&o, 3), vec![5]);
        // Never 7 or 8: they dot the siblings, whatever the limit.
        assert_eq!(prunable(&o, 0), vec![5, 9]);
    }

    #[test]
    fn a_prune_that_reached_some_primaries_only_converges() {
        let mut full = Object::new();
        let put = |v: &str| {
            Mutation::Put(Content {
                value: v.to_owned().into(),
                content_type: "t".into(),
                last_modified_ms: 0,
                meta: Default::default(),
            })
        };
        for actor in [1, 2, 3, 4, 5] {
            let context = full.clock().clone();
            full.update(actor, &context, put("v")).unwrap();
        }
        // One primary pruned actors 1 and 2 earlier; the others missed it.
        let (partly, _) = full.pruned(&[1, 2]).unwrap();
        let copies = [full.clone(), partly.clone(), full.clone()];
        let mut actors = actors_to_prune(&copies, 2);
        actors.sort_unstable();
        assert_eq!(actors, vec![1, 2, 3]);
        let ends: Vec<_> = copies.iter().map(|c| c.pruned(&actors).unwrap().0).collect();
        assert!(ends.iter().all(|e| e == &ends[0] && e.clock().len() == 2), "{ends:?}");
        // Within the limit but apart: still brought together.
        let (two, _) = full.pruned(&[1, 2, 3]).unwrap();
        let (one, _) = full.pruned(&[1, 2]).unwrap();
        assert_eq!(actors_to_prune(&[two.clone(), one], 5), vec![3]);
        assert!(actors_to_prune(&[two.clone(), two], 5).is_empty());
    }

    #[tokio::test]
    async fn a_reap_call_lost_midway_is_retried_until_every_primary_reaped() {
        let names = [node("a"), node("b"), node("c")];
        let owners = (0..8).map(|i| names[i % 3].clone()).collect();
        let ring = Arc::new(Ring::from_owners(owners).unwrap());
        assert_eq!(ring.holders(P, 3), names);
        let view = Arc::new(RingView { epoch: 1, ring_hash: 0, current: ring, target: None, n_val: 3, r: 2, w: 2 });
        let replicas: HashMap<NodeId, Arc<Replica>> = names
            .iter()
            .map(|n| (n.clone(), Arc::new(Replica::new(Arc::new(MemoryStore::new()), SiblingLimits::default()))))
            .collect();
        let client = Arc::new(Local { replicas: replicas.clone(), lose_reap_to: Mutex::new(Some(node("c"))) });

        let key = ObjectKey::in_default_bucket("k");
        let put = Mutation::Put(Content {
            value: "v1".into(),
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            meta: Default::default(),
        });
        let v1 = replicas[&names[0]].coordinate(P, key.clone(), VersionVector::new(), put).await.unwrap();
        let tomb = replicas[&names[0]].coordinate(P, key.clone(), v1.clock().clone(), Mutation::Delete).await.unwrap();
        for n in &names[1..] {
            replicas[n].merge(P, key.clone(), tomb.clone()).await.unwrap();
        }

        let settings = Settings {
            // The shortest grace (zero turns reaping off): passes 2 ms apart.
            grace: Duration::from_millis(1),
            retention: Duration::from_secs(3600),
            max_clock_entries: 0,
            timeout: Duration::from_secs(1),
        };
        let mut worker = ReaperWorker::new(
            Arc::default(),
            Arc::new(Fixed(view, node("a"))),
            Arc::clone(&replicas[&names[0]]),
            client,
            settings,
        );
        // The first pass loses its call to c; the next ones must finish the
        // job, though b has reaped already.
        for _ in 0..4 {
            let _ = worker.partition(P).await;
            // Real time for the grace to pass (the replicas' clock is the wall clock).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for n in &names {
            let store = replicas[n].store();
            assert_eq!(store.get(P, &key).unwrap(), None, "{n} still holds the tombstone");
            assert_eq!(store.reaped(P, &key).unwrap().map(|r| r.clock), Some(tomb.clock().clone()), "{n}");
        }
    }
}
