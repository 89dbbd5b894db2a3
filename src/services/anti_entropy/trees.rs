//! This node's TicTac trees (`core::tictac`), one per partition, in memory:
//! kept exact by the replica's write observer, built from the store when
//! missing (after a start) or old (a periodic rebuild catches whatever could
//! have slipped past: a bug, a disk that lost a write).
//!
//! A build scans the partition (on the blocking pool) while writes go on,
//! and must end with exactly the tree of the store, with no snapshot to read
//! from. The scan is only used to enumerate keys, in the store's key order
//! (that of the encoded keys, `storage::codec::encode_key`, which is not
//! `ObjectKey`'s: parts are length-prefixed): each key it
//! yields is read again under the key's lock ([`Replica::with_key_locked`]),
//! and the observer is told of every change under that same lock, so each
//! key's hash enters the new tree at one precise point among its writes.
//! The build keeps a cursor (the last key it added) and a `pending` set:
//! * a write to a key at or below the cursor, not pending, was already
//!   added with the value before this write: its delta applies;
//! * a write to a key above the cursor will be read later, by the scan if
//!   it yields the key, else (created after the scan passed it) at the end,
//!   when every pending key is read under its lock and added; so it is
//!   marked pending, and pending keys take no deltas.
//!
//! So a write racing a build is never lost nor counted twice. The tree in
//! use before the build (if any) keeps taking deltas and answering
//! exchanges until the new one replaces it. If a tree is wrong anyway, the
//! damage is bounded: a false difference costs a key-list comparison and
//! idempotent merges; a missed one lasts until the next periodic rebuild.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::key::ObjectKey;
use crate::core::object::Object;
use crate::core::ring::Partition;
use crate::core::tictac::{Change, Segment, TicTacTree, VersionHash, segment_of, version_hash};
use crate::replica::{Replica, WriteObserver};
use crate::storage::StorageError;
use crate::storage::codec::encode_key;
use crate::telemetry::metrics;

/// Every partition tree of this node.
pub struct Trees {
    slots: Mutex<BTreeMap<Partition, Slot>>,
    /// One build at a time: a build reads a whole partition.
    building: tokio::sync::Mutex<()>,
    /// A tree older than this is rebuilt before it is used.
    rebuild_after: Duration,
    builds: AtomicU64,
}

#[derive(Default)]
struct Slot {
    ready: Option<Ready>,
    build: Option<Build>,
}

struct Ready {
    tree: TicTacTree,
    built_at: Instant,
}

/// A build in progress (see the module comment).
#[derive(Default)]
struct Build {
    tree: TicTacTree,
    cursor: Cursor,
    pending: HashSet<ObjectKey>,
}

#[derive(Default)]
enum Cursor {
    /// Nothing added yet.
    #[default]
    Start,
    /// The last key the scan added, encoded as the store orders it.
    At(Vec<u8>),
    /// The scan is over: every key not pending is in the tree.
    End,
}

impl Cursor {
    /// Whether the scan has passed `key` of `partition` (scan order).
    fn passed(&self, partition: Partition, key: &ObjectKey) -> bool {
        match self {
            Cursor::Start => false,
            Cursor::At(last) => encode_key(partition, key) <= *last,
            Cursor::End => true,
        }
    }
}

impl WriteObserver for Trees {
    fn changed(&self, partition: Partition, key: &ObjectKey, old: &Object, new: &Object) {
        let change = Change::new(key, old, new);
        if change.delta == 0 {
            return;
        }
        let mut slots = self.slots.lock().expect("trees lock");
        let Some(slot) = slots.get_mut(&partition) else { return };
        if let Some(ready) = &mut slot.ready {
            ready.tree.apply(change);
        }
        if let Some(build) = &mut slot.build {
            if build.pending.contains(key) {
                // Read at the end of the build, with this write in it.
            } else if build.cursor.passed(partition, key) {
                build.tree.apply(change);
            } else {
                build.pending.insert(key.clone());
            }
        }
    }
}

impl Trees {
    pub fn new(rebuild_after: Duration) -> Trees {
        Trees {
            slots: Mutex::default(),
            building: tokio::sync::Mutex::new(()),
            rebuild_after,
            builds: AtomicU64::new(0),
        }
    }

    /// Trees built since the node started.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// Partitions with a usable tree.
    pub fn count(&self) -> usize {
        self.slots.lock().expect("trees lock").values().filter(|s| s.ready.is_some()).count()
    }

    /// Drops the trees of partitions `keep` rejects (no longer held): they
    /// would only take memory, and are rebuilt if the partition comes back.
    pub fn retain(&self, keep: impl Fn(Partition) -> bool) {
        let mut slots = self.slots.lock().expect("trees lock");
        slots.retain(|p, slot| slot.build.is_some() || keep(*p));
    }

    /// The tree of `partition` as it is now, if there is one younger than
    /// `max_age`.
    fn fresh(&self, partition: Partition, max_age: Duration) -> Option<TicTacTree> {
        let slots = self.slots.lock().expect("trees lock");
        let ready = slots.get(&partition)?.ready.as_ref()?;
        (ready.built_at.elapsed() < max_age).then(|| ready.tree.clone())
    }

    /// The tree of `partition`, built from `replica`'s store first if
    /// missing or older than the rebuild interval.
    pub async fn tree(
        self: &Arc<Self>,
        replica: &Arc<Replica>,
        partition: Partition,
    ) -> Result<TicTacTree, StorageError> {
        if let Some(tree) = self.fresh(partition, self.rebuild_after) {
            return Ok(tree);
        }
        let _one = self.building.lock().await;
        if let Some(tree) = self.fresh(partition, self.rebuild_after) {
            return Ok(tree);
        }
        let started = Instant::now();
        let (this, owner) = (Arc::clone(self), Arc::clone(replica));
        let built = replica
            .env()
            .blocking
            .run(move || this.build(&owner, partition))
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?;
        let tree = built.inspect_err(|_| self.abandon(partition))?;
        self.builds.fetch_add(1, Ordering::Relaxed);
        metrics::anti_entropy_tree_built(started.elapsed().as_secs_f64());
        tracing::debug!(partition, elapsed_ms = started.elapsed().as_millis() as u64, "anti-entropy tree built");
        Ok(tree)
    }

    fn abandon(&self, partition: Partition) {
        if let Some(slot) = self.slots.lock().expect("trees lock").get_mut(&partition) {
            slot.build = None;
        }
    }

    /// Builds `partition`'s tree from the store (blocking; see the module
    /// comment) and installs it.
    fn build(&self, replica: &Replica, partition: Partition) -> Result<TicTacTree, StorageError> {
        self.slots.lock().expect("trees lock").entry(partition).or_default().build = Some(Build::default());
        for entry in replica.store().scan_partition(partition)? {
            let (key, _) = entry?;
            self.add_locked(replica, partition, key, true)?;
        }
        self.with_build(partition, |build| build.cursor = Cursor::End)?;
        // No key becomes pending now; each one left is read under its lock.
        while let Some(key) = self.with_build(partition, |build| build.pending.iter().next().cloned())? {
            self.add_locked(replica, partition, key, false)?;
        }
        let mut slots = self.slots.lock().expect("trees lock");
        let slot = slots.entry(partition).or_default();
        let build = slot.build.take().ok_or_else(|| abandoned(partition))?;
        slot.ready = Some(Ready { tree: build.tree.clone(), built_at: Instant::now() });
        Ok(build.tree)
    }

    /// Reads `key` under its lock and adds it to the build: from the scan
    /// (`scanned`: it moves the cursor), or a pending key at the end.
    fn add_locked(
        &self,
        replica: &Replica,
        partition: Partition,
        key: ObjectKey,
        scanned: bool,
    ) -> Result<(), StorageError> {
        replica.with_key_locked(&key, |store| {
            let current = store.get(partition, &key)?.unwrap_or_default();
            let change = Change::new(&key, &Object::new(), &current);
            self.with_build(partition, |build| {
                let was_pending = build.pending.remove(&key);
                if scanned || was_pending {
                    build.tree.apply(change);
                }
                if scanned {
                    build.cursor = Cursor::At(encode_key(partition, &key));
                }
            })
        })
    }

    fn with_build<T>(&self, partition: Partition, f: impl FnOnce(&mut Build) -> T) -> Result<T, StorageError> {
        let mut slots = self.slots.lock().expect("trees lock");
        let build = slots.get_mut(&partition).and_then(|s| s.build.as_mut()).ok_or_else(|| abandoned(partition))?;
        Ok(f(build))
    }

    /// Every key stored in `segments` of `partition` with its version hash,
    /// sorted by `ObjectKey` (what `tictac::differing_keys` compares; the
    /// scan's order is the store's): a scan on the blocking pool.
    pub async fn segment_keys(
        replica: &Arc<Replica>,
        partition: Partition,
        segments: BTreeSet<Segment>,
    ) -> Result<Vec<(ObjectKey, VersionHash)>, StorageError> {
        let store = Arc::clone(replica.store());
        let scan = move || -> Result<Vec<(ObjectKey, VersionHash)>, StorageError> {
            let mut keys = Vec::new();
            for entry in store.scan_partition(partition)? {
                let (key, object) = entry?;
                if segments.contains(&segment_of(&key)) {
                    keys.push((key, version_hash(&object)));
                }
            }
            keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            Ok(keys)
        };
        replica.env().blocking.run(scan).await.map_err(|e| StorageError::Io(e.to_string()))?
    }
}

fn abandoned(partition: Partition) -> StorageError {
    StorageError::Io(format!("the anti-entropy tree build of partition {partition} was abandoned"))
}

#[cfg(test)]
mod tests {
    //! Builds racing writes end with the tree of the store.

    use std::collections::BTreeMap;

    use super::*;
    use crate::core::object::{Content, Mutation};
    use crate::core::vclock::VersionVector;
    use crate::replica::SiblingLimits;
    use crate::storage::MemoryStore;

    const P: Partition = 5;

    fn put(v: &str) -> Mutation {
        Mutation::Put(Content {
            value: v.to_owned().into(),
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            meta: Default::default(),
        })
    }

    fn setup() -> (Arc<Trees>, Arc<Replica>) {
        let trees = Arc::new(Trees::new(Duration::from_secs(3600)));
        let observer: Arc<dyn WriteObserver> = trees.clone();
        let replica = Arc::new(
            Replica::new(Arc::new(MemoryStore::new()), SiblingLimits::default()).with_observer(Some(observer)),
        );
        (trees, replica)
    }

    fn store_tree(replica: &Replica) -> TicTacTree {
        let mut tree = TicTacTree::new();
        for entry in replica.store().scan_partition(P).unwrap() {
            let (k, o) = entry.unwrap();
            tree.add(&k, &o);
        }
        tree
    }

    /// Keys in bucket types of different lengths: the store scans in the
    /// order of its encoded keys (length-prefixed parts), not in
    /// `ObjectKey`'s order, and a build must not mistake one for the other.
    fn key(i: u32) -> ObjectKey {
        let bucket_type = ["b", "aa", "c"][(i % 3) as usize];
        ObjectKey::new(bucket_type, "default", format!("k{i:03}"))
    }

    #[tokio::test]
    async fn writes_after_a_build_keep_the_tree_exact() {
        let (trees, replica) = setup();
        for i in 0..50 {
            replica.coordinate(P, key(i), VersionVector::new(), put("a")).await.unwrap();
        }
        assert_eq!(trees.tree(&replica, P).await.unwrap(), store_tree(&replica));
        assert_eq!(trees.builds(), 1);
        // Every write path: stamp, merge, batch merge, removal.
        let v = replica.coordinate(P, key(1), VersionVector::new(), put("b")).await.unwrap();
        let other = Arc::new(Replica::new(Arc::new(MemoryStore::new()), SiblingLimits::default()));
        let theirs = other.coordinate(P, key(2), VersionVector::new(), put("c")).await.unwrap();
        replica.merge(P, key(2), theirs.clone()).await.unwrap();
        replica.merge_many(P, vec![(key(3), theirs.clone()), (key(99), theirs)]).await.unwrap();
        assert!(replica.remove_if_unchanged(P, key(1), v).await.unwrap());
        assert_eq!(trees.tree(&replica, P).await.unwrap(), store_tree(&replica));
        assert_eq!(trees.builds(), 1, "a fresh tree is used, not rebuilt");
    }

    #[tokio::test]
    async fn segment_keys_come_sorted_as_the_walk_compares_them() {
        let (_, replica) = setup();
        for i in 0..60 {
            replica.coordinate(P, key(i), VersionVector::new(), put("a")).await.unwrap();
        }
        let every: BTreeSet<Segment> = (0..crate::core::tictac::SEGMENTS as u32).collect();
        let keys = Trees::segment_keys(&replica, P, every).await.unwrap();
        assert_eq!(keys.len(), 60);
        assert!(keys.windows(2).all(|w| w[0].0 < w[1].0), "not in ObjectKey order");
    }

    #[test]
    fn a_build_racing_writes_ends_with_the_tree_of_the_store() {
        // Writes interleaved with a build at every step of its scan: keys
        // behind the cursor, ahead of it, created after the scan passed
        // them, and removed. The build runs on one thread, writers on others.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            for round in 0..20 {
                let (trees, replica) = setup();
                for i in (0..400).step_by(2) {
                    replica.coordinate(P, key(i), VersionVector::new(), put("a")).await.unwrap();
                }
                let writer = {
                    let replica = Arc::clone(&replica);
                    tokio::spawn(async move {
                        let mut clocks: BTreeMap<u32, Object> = BTreeMap::new();
                        for n in 0..2000u32 {
                            let i = (n * 7919 + round) % 400;
                            if n % 5 == 0
                                && let Some(o) = clocks.remove(&i)
                            {
                                replica.remove_if_unchanged(P, key(i), o).await.unwrap();
                                continue;
                            }
                            let o = replica.coordinate(P, key(i), VersionVector::new(), put("w")).await.unwrap();
                            clocks.insert(i, o);
                            if n % 64 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    })
                };
                let built = trees.tree(&replica, P).await.unwrap();
                writer.await.unwrap();
                let _ = built;
                let now = trees.fresh(P, Duration::MAX).unwrap();
                assert_eq!(now, store_tree(&replica), "round {round}: the tree drifted from the store");
            }
        });
    }
}
