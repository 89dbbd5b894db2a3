//! The replica role of a node: what it does with a key it holds. This is
//! Riak's vnode: read a key, stamp a client write with this node's actor, and
//! merge objects sent by other replicas. Every change is a read-modify-write
//! of one key under that key's lock.
//!
//! Store calls run inline on the async worker: a RocksDB read or a write to
//! the memtable and the (unsynced) WAL takes microseconds, and handing each
//! one to tokio's blocking pool cost more than the call itself (thread
//! hand-offs: 1.6-1.7x less throughput on a 3-node cluster, see
//! docs/performance.md). With `--sync-writes` every write waits for an fsync,
//! so writes go to the blocking pool then.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::coordinator::ReplicaError;
use crate::core::key::ObjectKey;
use crate::core::object::{Mutation, Object};
use crate::core::ring::Partition;
use crate::core::vclock::{ActorId, VersionVector};
use crate::storage::{StorageError, Store};

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

pub struct Replica {
    store: Arc<dyn Store>,
    actor: ActorId,
    limits: SiblingLimits,
    /// Writes block for an fsync: run them on the blocking pool.
    writes_block: bool,
    /// Serialises read-modify-write per key. Two concurrent writes to one key
    /// must not both read counter n and both stamp dot n+1: one value would
    /// silently replace the other.
    stripes: Box<[Mutex<()>]>,
}

impl Replica {
    pub fn new(store: Arc<dyn Store>, actor: ActorId, limits: SiblingLimits) -> Replica {
        let stripes = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Replica { store, actor, limits, writes_block: false, stripes }
    }

    /// Sends writes to tokio's blocking pool (for stores that fsync each write).
    pub fn with_blocking_writes(mut self, writes_block: bool) -> Replica {
        self.writes_block = writes_block;
        self
    }

    pub fn actor(&self) -> ActorId {
        self.actor
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
            let mut object = this.store.get(partition, &key)?.unwrap_or_default();
            object.update(this.actor, &context, mutation);
            let count = object.siblings().len();
            if count > this.limits.max {
                return Err(ReplicaError::TooManySiblings { count, limit: this.limits.max });
            }
            if count > this.limits.warn {
                tracing::warn!(key = ?key.key, siblings = count, "key has many siblings; clients should resolve them");
            }
            if object.is_empty() {
                // A delete of a key nobody wrote: nothing to remember.
                return Ok(object);
            }
            this.store.put(partition, &key, &object)?;
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
            let current = this.store.get(partition, &key)?.unwrap_or_default();
            let merged = current.merge(&incoming);
            if merged != current {
                this.store.put(partition, &key, &merged)?;
            }
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
            for (key, object) in incoming {
                let current = this.store.get(partition, &key)?.unwrap_or_default();
                let merged = current.merge(&object);
                if merged != current {
                    changed.push((key, merged));
                }
            }
            this.store.put_many(partition, &changed)?;
            Ok(changed.len())
        })
        .await
    }

    /// Drops `key` if it still holds exactly `expected`: a write that landed
    /// after `expected` was read (and shipped elsewhere) is never dropped.
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
                Some(current) if current == expected => {
                    this.store.remove(partition, &key)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }
}

impl Replica {
    /// Runs a read-modify-write inline, or on the blocking pool when writes
    /// wait for an fsync.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ReplicaError> + Send + 'static,
    ) -> Result<T, ReplicaError> {
        if !self.writes_block {
            return f();
        }
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ReplicaError::Storage(StorageError::Io(format!("storage task failed: {e}"))))?
    }
}
