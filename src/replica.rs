//! The replica role of a node: what it does with a key it holds. This is
//! Riak's vnode: read a key, stamp a client write with a fresh dot, and
//! merge objects sent by other replicas. Every change is a read-modify-write
//! of one key under that key's lock.
//!
//! Which actor stamps (Riak's KV-679 class of bugs). A dot `(actor, n)` must
//! never be issued twice for one key: replicas that hold it already would
//! take the second value for the first and drop it, though it was
//! acknowledged. Stamping `n = local counter + 1` is only safe when this
//! replica holds the actor's whole history of the key. So an actor lives for
//! one process run and one partition: it is minted at random (64 bits) the
//! first time the run stamps in a partition, never persisted, and retired
//! before this replica removes any key of that partition (handoff sweep).
//! Within its life every dot it issued on a key was stamped here, on top of
//! the stored object, and nothing was removed since, so the local counter is
//! the true one. What breaks local history all starts a new actor:
//! * a restart, including one after a power loss that ate the tail of an
//!   unsynced WAL, and a data directory restored from a backup or copied to
//!   another machine (a new process: new actors);
//! * a sweep of the partition (the actor is retired first), so a coordinator
//!   still on the old ring that asks this node to stamp gets a fresh dot;
//! * a context that claims more of the actor than is stored, or a counter at
//!   its limit (only a forged context could do either): a fresh actor too.
//!
//! The price is version vectors that gain an entry per (run, partition
//! period, stamping replica) of a key; pruning them is clock hygiene's job.
//!
//! Store calls run inline on the async worker: a RocksDB read or a write to
//! the memtable and the (unsynced) WAL takes microseconds, and handing each
//! one to tokio's blocking pool cost more than the call itself (thread
//! hand-offs: 1.6-1.7x less throughput on a 3-node cluster, see
//! docs/performance.md). With `--sync-writes` every write waits for an fsync,
//! so writes go to the blocking pool then.

mod call;
mod hints;
mod reap;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::core::key::ObjectKey;
use crate::core::object::{Mutation, Object};
use crate::core::ring::Partition;
use crate::core::vclock::{ActorId, VersionVector};
use crate::env::Env;
use crate::storage::{StorageError, Store};

pub use call::{CallContext, ReplicaError};

/// Stripes of the per-key lock: enough that unrelated keys rarely wait.
const LOCK_STRIPES: usize = 1024;

fn stripe_index(key: &ObjectKey) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % LOCK_STRIPES
}

/// Sibling counts: warn above `warn`, refuse a write that would go above `max`.
#[derive(Debug, Clone, Copy)]
pub struct SiblingLimits {
    pub warn: usize,
    pub max: usize,
}

impl Default for SiblingLimits {
    fn default() -> SiblingLimits {
        SiblingLimits { warn: 25, max: 100 }
    }
}

/// Told of every change to a stored object: anti-entropy keeps its hash
/// trees this way, by deltas, never by rescanning on the write path.
pub trait WriteObserver: Send + Sync + 'static {
    /// `key` of `partition` went from `old` to `new` (an empty object is an
    /// absent key). Called once the store write returned (durable), still
    /// under the key's lock: one key's changes come in the order they were
    /// stored, and none is stored but not yet told while the lock is free
    /// ([`Replica::with_key_locked`]).
    fn changed(&self, partition: Partition, key: &ObjectKey, old: &Object, new: &Object);
}

pub struct Replica {
    store: Arc<dyn Store>,
    /// Told of every stored change (anti-entropy), if anyone listens.
    observer: Option<Arc<dyn WriteObserver>>,
    /// The actor of each partition for this run (see the module comment).
    /// Read and replaced only under a key's stripe lock of that partition,
    /// or, to retire one, before a removal under the removed key's lock.
    actors: Mutex<HashMap<Partition, ActorId>>,
    limits: SiblingLimits,
    /// Writes block for an fsync: run them on the blocking pool.
    writes_block: bool,
    /// Where blocking writes run, where fresh actors come from, where
    /// metrics go.
    env: Env,
    /// Serialises read-modify-write per key. Two concurrent writes to one key
    /// must not both read counter n and both stamp dot n+1: one value would
    /// silently replace the other.
    stripes: Box<[Mutex<()>]>,
}

impl Replica {
    pub fn new(store: Arc<dyn Store>, limits: SiblingLimits) -> Replica {
        let stripes = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Replica {
            store,
            observer: None,
            actors: Mutex::new(HashMap::new()),
            limits,
            writes_block: false,
            env: Env::real(),
            stripes,
        }
    }

    /// Sends writes to tokio's blocking pool (for stores that fsync each write).
    pub fn with_blocking_writes(mut self, writes_block: bool) -> Replica {
        self.writes_block = writes_block;
        self
    }

    /// Takes randomness and the blocking pool from `env` (the simulator's
    /// are seeded and inline).
    pub fn with_env(mut self, env: &Env) -> Replica {
        self.env = env.clone();
        self
    }

    /// Tells `observer` of every change this replica stores.
    pub fn with_observer(mut self, observer: Option<Arc<dyn WriteObserver>>) -> Replica {
        self.observer = observer;
        self
    }

    /// Runs `f` holding `key`'s lock: no write to the key is under way, and
    /// every stored change to it has been told to the observer. Anti-entropy
    /// reads a key this way while it rebuilds a tree. Blocking (a writer
    /// may hold the lock across an fsync): call it from blocking work.
    pub fn with_key_locked<T>(&self, key: &ObjectKey, f: impl FnOnce(&dyn Store) -> T) -> T {
        let _guard = self.stripe(key).lock().expect("key lock");
        f(&*self.store)
    }

    fn observe(&self, partition: Partition, key: &ObjectKey, old: &Object, new: &Object) {
        if let Some(observer) = &self.observer {
            observer.changed(partition, key, old, new);
        }
    }

    /// This replica's outside world: where its blocking work runs
    /// (partition scans too), where its tasks' metrics go.
    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn stripe(&self, key: &ObjectKey) -> &Mutex<()> {
        &self.stripes[stripe_index(key)]
    }

    /// The stored object, or an empty one when the key is absent.
    pub async fn get(self: &Arc<Self>, partition: Partition, key: ObjectKey) -> Result<Object, ReplicaError> {
        Ok(self.store.get(partition, &key)?.unwrap_or_default())
    }

    /// Applies a client write with this replica's actor and returns the new
    /// object, which the coordinator then sends to the other replicas.
    pub async fn coordinate(
        self: &Arc<Self>,
        partition: Partition,
        key: ObjectKey,
        context: VersionVector,
        mutation: Mutation,
    ) -> Result<Object, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let _guard = this.stripe(&key).lock().expect("key lock");
            // From the key's effective state: a reaped key from its reaped
            // tombstone, a pruned clock with its history (`replica::reap`),
            // so the actor's counter is the true one.
            let base = this.base(partition, &key)?;
            let mut object = base.effective.clone();
            let actor = this.stamping_actor(partition, &object, &context);
            let before = object.clock().clone();
            let dot = object
                .update(actor, &context, mutation)
                .map_err(|e| ReplicaError::Storage(StorageError::Io(format!("no fresh dot for the write: {e}"))))?;
            // What per-run actors are for: a dot is never issued twice for a
            // key. Neither this replica's history of the key nor the client's
            // context may already hold the new one (test builds check; the
            // simulator counts a failed check as a failed run).
            debug_assert!(
                dot.is_none_or(|d| !before.covers(d) && !context.covers(d)),
                "dot {dot:?} issued again for key {key:?}"
            );
            let count = object.siblings().len();
            if count > this.limits.max {
                return Err(ReplicaError::TooManySiblings { count, limit: this.limits.max });
            }
            if count > this.limits.warn {
                tracing::warn!(key = ?key.key, siblings = count, "key has many siblings; clients should resolve them");
            }
            if object.is_empty() || (base.stored.is_empty() && object == base.effective) {
                // A delete of a key nobody wrote, or of one already reaped
                // with nothing new: nothing to remember.
                return Ok(object);
            }
            let object = base.to_store(&object);
            this.store.put(partition, &key, &object)?;
            this.observe(partition, &key, &base.stored, &object);
            Ok(object)
        })
        .await
    }

    /// Merges an object from another replica (replication, read repair) and
    /// returns what is stored afterwards. Writes only when something changed.
    pub async fn merge(
        self: &Arc<Self>,
        partition: Partition,
        key: ObjectKey,
        incoming: Object,
    ) -> Result<Object, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let _guard = this.stripe(&key).lock().expect("key lock");
            // Onto the key's history if it has one (a reaped tombstone,
            // pruned clock entries): a stale copy is dropped, not
            // resurrected (`replica::reap`).
            let base = this.base(partition, &key)?;
            let merged = base.to_store(&base.effective.merge(&incoming));
            if merged == base.stored {
                return Ok(base.stored);
            }
            this.store.put(partition, &key, &merged)?;
            this.observe(partition, &key, &base.stored, &merged);
            Ok(merged)
        })
        .await
    }
}

impl Replica {
    /// Merges a batch of objects of one partition (a partition transfer's
    /// message) and writes what changed in one store write: one WAL record
    /// (and one fsync with --sync-writes) instead of one per key. Holds the
    /// batch's key locks, taken in stripe order (every other path holds one
    /// lock at a time, so this cannot deadlock). Returns how many changed.
    pub async fn merge_many(
        self: &Arc<Self>,
        partition: Partition,
        entries: Vec<(ObjectKey, Object)>,
    ) -> Result<usize, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            // One key twice in a batch: merge the incoming copies first.
            let mut incoming: HashMap<ObjectKey, Object> = HashMap::with_capacity(entries.len());
            for (key, object) in entries {
                match incoming.entry(key) {
                    Entry::Occupied(mut e) => {
                        let merged = e.get().merge(&object);
                        e.insert(merged);
                    }
                    Entry::Vacant(e) => {
                        e.insert(object);
                    }
                }
            }
            let mut stripes: Vec<usize> = incoming.keys().map(stripe_index).collect();
            stripes.sort_unstable();
            stripes.dedup();
            let _guards: Vec<_> = stripes.iter().map(|&i| this.stripes[i].lock().expect("key lock")).collect();
            let mut changed = Vec::new();
            let mut olds = Vec::new();
            for (key, object) in incoming {
                let base = this.base(partition, &key)?;
                let merged = base.to_store(&base.effective.merge(&object));
                if merged != base.stored {
                    changed.push((key, merged));
                    if this.observer.is_some() {
                        olds.push(base.stored);
                    }
                }
            }
            this.store.put_many(partition, &changed)?;
            for ((key, new), old) in changed.iter().zip(&olds) {
                this.observe(partition, key, old, new);
            }
            Ok(changed.len())
        })
        .await
    }

    /// Drops `key` if it still holds exactly `expected`: a write that landed
    /// after `expected` was read (and shipped elsewhere) is never dropped,
    /// nor a copy whose hints are not delivered yet (`services::hints`
    /// removes it once they are).
    pub async fn remove_if_unchanged(
        self: &Arc<Self>,
        partition: Partition,
        key: ObjectKey,
        expected: Object,
    ) -> Result<bool, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let _guard = this.stripe(&key).lock().expect("key lock");
            match this.store.get(partition, &key)? {
                Some(current) if current == expected && this.store.hints_for(partition, &key)?.is_empty() => {
                    // The actor's history of this key leaves with it.
                    this.retire_actor(partition);
                    this.store.remove(partition, &key)?;
                    this.observe(partition, &key, &current, &Object::new());
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }
}

impl Replica {
    /// The actor to stamp a write on `stored` with (under the key's lock).
    /// The partition's actor of this run, unless the write's context knows
    /// more of it than is stored or its counter is spent: then local history
    /// is not the whole history, and a fresh actor replaces it.
    fn stamping_actor(&self, partition: Partition, stored: &Object, context: &VersionVector) -> ActorId {
        #[cfg(feature = "fault-injection")]
        if let Some(actor) = crate::faults::reuse_actor(&*self.store) {
            return actor;
        }
        let mut actors = self.actors.lock().expect("actors lock");
        if let Some(&actor) = actors.get(&partition) {
            let local = stored.clock().get(actor);
            if context.get(actor) <= local && local < u64::MAX {
                return actor;
            }
            tracing::warn!(
                partition,
                actor = format_args!("{actor:016x}"),
                "a context claims more of this replica's actor than it stored; stamping with a fresh actor"
            );
        }
        let actor = loop {
            let candidate: ActorId = self.env.entropy.u64();
            // Never one the key has seen (2^-64, but cheap to rule out).
            if stored.clock().get(candidate) == 0 && context.get(candidate) == 0 {
                break candidate;
            }
        };
        actors.insert(partition, actor);
        actor
    }

    /// Stops stamping with the partition's current actor; called before a
    /// key of the partition is removed.
    fn retire_actor(&self, partition: Partition) {
        self.actors.lock().expect("actors lock").remove(&partition);
    }

    /// Runs a read-modify-write inline, or on the blocking pool when writes
    /// wait for an fsync.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ReplicaError> + Send + 'static,
    ) -> Result<T, ReplicaError> {
        if !self.writes_block {
            return f();
        }
        self.env.blocking.run(f).await.map_err(|e| ReplicaError::Storage(StorageError::Io(e.to_string())))?
    }
}

#[cfg(test)]
mod tests {
    //! Dot uniqueness when local history goes away (Riak's KV-679): each
    //! case is a way the old node-wide actor reissued a dot that another
    //! replica already held for a different value, which then dropped the
    //! new, acknowledged value as already seen.

    use std::collections::BTreeSet;

    use super::*;
    use crate::core::object::Content;
    use crate::storage::MemoryStore;

    const P: Partition = 3;

    pub(super) fn replica_on(store: Arc<dyn Store>) -> Arc<Replica> {
        Arc::new(Replica::new(store, SiblingLimits::default()))
    }

    pub(super) fn replica() -> Arc<Replica> {
        replica_on(Arc::new(MemoryStore::new()))
    }

    pub(super) fn key() -> ObjectKey {
        ObjectKey::in_default_bucket("k")
    }

    pub(super) fn put(v: &str) -> Mutation {
        Mutation::Put(Content {
            value: v.to_owned().into(),
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            meta: Default::default(),
        })
    }

    pub(super) fn values(o: &Object) -> BTreeSet<String> {
        o.siblings().iter().map(|s| String::from_utf8(s.content.value.to_vec()).unwrap()).collect()
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_swept_key_is_stamped_with_a_fresh_dot() {
        // A node hands the partition off and sweeps it; a coordinator still on
        // the old ring then asks it to stamp a blind write to the same key.
        let (a, b) = (replica(), replica());
        let v1 = a.coordinate(P, key(), VersionVector::new(), put("v1")).await.unwrap();
        b.merge(P, key(), v1.clone()).await.unwrap();
        assert!(a.remove_if_unchanged(P, key(), v1).await.unwrap());
        let v2 = a.coordinate(P, key(), VersionVector::new(), put("v2")).await.unwrap();
        let on_b = b.merge(P, key(), v2).await.unwrap();
        assert_eq!(values(&on_b), set(&["v1", "v2"]), "the acknowledged v2 was dropped as already seen");
    }

    #[tokio::test]
    async fn a_restart_on_older_data_never_reissues_a_dot() {
        // Power loss ate the tail of the unsynced WAL (or the data directory
        // was restored from a backup, or copied): the node comes back with
        // v1 but without v2, which another replica holds.
        let a_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (a, b) = (replica_on(Arc::clone(&a_store)), replica());
        let v1 = a.coordinate(P, key(), VersionVector::new(), put("v1")).await.unwrap();
        b.merge(P, key(), v1.clone()).await.unwrap();
        let v2 = a.coordinate(P, key(), v1.clock().clone(), put("v2")).await.unwrap();
        b.merge(P, key(), v2).await.unwrap();

        let restored: Arc<dyn Store> = Arc::new(MemoryStore::new());
        restored.put(P, &key(), &v1).unwrap();
        for name in ["format", "actor", "partitions"] {
            if let Some(v) = a_store.get_meta(name).unwrap() {
                restored.put_meta(name, &v).unwrap();
            }
        }
        let a = replica_on(restored);
        // A client still holding v1's context writes v3.
        let v3 = a.coordinate(P, key(), v1.clock().clone(), put("v3")).await.unwrap();
        let on_b = b.merge(P, key(), v3).await.unwrap();
        assert_eq!(values(&on_b), set(&["v2", "v3"]), "v3 reused v2's dot and was dropped");
    }

    #[tokio::test]
    async fn a_context_beyond_local_history_or_at_the_limit_takes_a_fresh_actor() {
        let a = replica();
        let v1 = a.coordinate(P, key(), VersionVector::new(), put("v1")).await.unwrap();
        let actor = v1.siblings()[0].dot.actor;
        // u64::MAX for the real actor: an overflow (a panic under the key
        // lock) before; now a fresh actor stamps it.
        let forged = VersionVector::from_entries([(actor, u64::MAX)]);
        let v2 = a.coordinate(P, key(), forged, put("v2")).await.unwrap();
        assert_eq!(values(&v2), set(&["v2"]));
        assert_ne!(v2.siblings()[0].dot.actor, actor);
        // The key keeps working: a blind write is a sibling, not lost.
        let v3 = a.coordinate(P, key(), VersionVector::new(), put("v3")).await.unwrap();
        assert_eq!(values(&v3), set(&["v2", "v3"]));
        // A context that knows more of the actor than is stored (history
        // lost here, seen by a client) also moves to a fresh actor.
        let b = replica();
        let w1 = b.coordinate(P, key(), VersionVector::new(), put("w1")).await.unwrap();
        let b_actor = w1.siblings()[0].dot.actor;
        let ahead = VersionVector::from_entries([(b_actor, 5)]);
        let w2 = b.coordinate(P, key(), ahead, put("w2")).await.unwrap();
        assert!(w2.siblings().iter().all(|s| s.dot.actor != b_actor));
    }

    #[tokio::test]
    async fn one_run_keeps_one_actor_per_partition() {
        // The common path does not grow version vectors: successive writes
        // in a partition share the run's actor.
        let a = replica();
        let v1 = a.coordinate(P, key(), VersionVector::new(), put("v1")).await.unwrap();
        let v2 = a.coordinate(P, key(), v1.clock().clone(), put("v2")).await.unwrap();
        let other = a.coordinate(P, ObjectKey::in_default_bucket("j"), VersionVector::new(), put("x")).await.unwrap();
        assert_eq!(v2.clock().len(), 1);
        assert_eq!(other.siblings()[0].dot.actor, v2.siblings()[0].dot.actor);
    }
}
