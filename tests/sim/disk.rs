//! A simulated disk that outlives the node processes using it, and the
//! `Store` each process incarnation opens on it.
//!
//! Durability follows RocksDB as a node configures it: a write is in the WAL
//! (the OS page cache) when `put` returns, so a process crash keeps it; it is
//! on the platter only after a sync (`put_meta` always syncs, as
//! `storage::rocks` does; the simulator also syncs now and then, as the OS
//! writes back dirty pages). A power loss drops every write since the last
//! sync. Reads and writes can fail with injected I/O errors; a write that
//! fails was not applied.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use rand::rngs::StdRng;
use vinzclortho::core::key::{NodeId, ObjectKey};
use vinzclortho::core::object::Object;
use vinzclortho::core::ring::Partition;
use vinzclortho::storage::{Entry, Hint, MemoryStore, Reaped, StorageError, Store, StoreStats};

/// What a power loss undoes: the previous state of one object, or of one
/// hint (whether it existed).
enum Undo {
    Object { partition: Partition, key: ObjectKey, previous: Option<Object> },
    Hint { hint: Hint, existed: bool },
    Reaped { partition: Partition, key: ObjectKey, previous: Option<Reaped> },
}

pub struct Disk {
    live: MemoryStore,
    /// Writes since the last sync, oldest first.
    unsynced: Mutex<Vec<Undo>>,
    /// Injected I/O errors: one in `1 / error_rate` operations fails
    /// (0: none), drawn from the run's random source.
    error_per_million: AtomicU32,
    rng: Arc<Mutex<StdRng>>,
}

impl Disk {
    pub fn new(rng: Arc<Mutex<StdRng>>) -> Arc<Disk> {
        Arc::new(Disk {
            live: MemoryStore::new(),
            unsynced: Mutex::default(),
            error_per_million: AtomicU32::new(0),
            rng,
        })
    }

    /// Everything written so far survives a power loss.
    pub fn sync(&self) {
        self.unsynced.lock().unwrap().clear();
    }

    /// Drops every write since the last sync (newest first, so each key ends
    /// as it was at the sync). Returns how many writes were lost.
    pub fn power_loss(&self) -> usize {
        let undo = std::mem::take(&mut *self.unsynced.lock().unwrap());
        let lost = undo.len();
        for u in undo.into_iter().rev() {
            let restored = match u {
                Undo::Object { partition, key, previous: Some(object) } => self.live.put(partition, &key, &object),
                Undo::Object { partition, key, previous: None } => self.live.remove(partition, &key),
                Undo::Hint { hint, existed: true } => {
                    self.live.put_hinted(hint.partition, &hint.key, None, &hint.target)
                }
                Undo::Hint { hint, existed: false } => self.live.remove_hint(&hint),
                Undo::Reaped { partition, key, previous } => {
                    // The object's own undo comes next (it was remembered
                    // first): here only the record goes back.
                    let object = self.live.get(partition, &key).expect("the memory store does not fail");
                    let restored = match previous {
                        Some(record) => self.live.reap(partition, &key, &record),
                        None => self.live.remove_reaped(partition, &key),
                    };
                    if let Some(object) = object {
                        self.live.put(partition, &key, &object).expect("the memory store does not fail");
                    }
                    restored
                }
            };
            restored.expect("the memory store does not fail");
        }
        lost
    }

    pub fn set_error_rate(&self, per_million: u32) {
        self.error_per_million.store(per_million, Ordering::Relaxed);
    }

    /// The disk's contents, for the checker (whoever is running).
    pub fn contents(&self) -> &MemoryStore {
        &self.live
    }

    fn io_error(&self) -> Result<(), StorageError> {
        let rate = self.error_per_million.load(Ordering::Relaxed);
        if rate > 0 && self.rng.lock().unwrap().random_range(0..1_000_000) < rate {
            return Err(StorageError::Io("injected disk error".into()));
        }
        Ok(())
    }

    fn remember(&self, partition: Partition, key: &ObjectKey) {
        let previous = self.live.get(partition, key).expect("the memory store does not fail");
        self.unsynced.lock().unwrap().push(Undo::Object { partition, key: key.clone(), previous });
    }

    fn remember_reaped(&self, partition: Partition, key: &ObjectKey) {
        let previous = self.live.reaped(partition, key).expect("the memory store does not fail");
        self.unsynced.lock().unwrap().push(Undo::Reaped { partition, key: key.clone(), previous });
    }

    fn remember_hint(&self, hint: Hint) {
        let existed = self.live.hints_for(hint.partition, &hint.key).expect("the memory store does not fail");
        let existed = existed.contains(&hint.target);
        self.unsynced.lock().unwrap().push(Undo::Hint { hint, existed });
    }
}

/// One process incarnation's view of its disk: it stops working the moment
/// the process is gone, so tasks the dead process left behind cannot write.
pub struct SimStore {
    disk: Arc<Disk>,
    alive: AtomicBool,
}

impl SimStore {
    pub fn open(disk: &Arc<Disk>) -> Arc<SimStore> {
        Arc::new(SimStore { disk: Arc::clone(disk), alive: AtomicBool::new(true) })
    }

    pub fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StorageError> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(StorageError::Io("the process is gone".into()));
        }
        self.disk.io_error()
    }
}

impl Store for SimStore {
    fn engine(&self) -> &'static str {
        "simulated"
    }

    fn get(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Object>, StorageError> {
        self.check()?;
        self.disk.live.get(partition, key)
    }

    fn put(&self, partition: Partition, key: &ObjectKey, object: &Object) -> Result<(), StorageError> {
        self.check()?;
        self.disk.remember(partition, key);
        self.disk.live.put(partition, key, object)
    }

    fn put_many(&self, partition: Partition, objects: &[(ObjectKey, Object)]) -> Result<(), StorageError> {
        self.check()?;
        for (key, _) in objects {
            self.disk.remember(partition, key);
        }
        self.disk.live.put_many(partition, objects)
    }

    fn remove(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        self.check()?;
        self.disk.remember(partition, key);
        self.disk.live.remove(partition, key)
    }

    fn scan_partition(
        &self,
        partition: Partition,
    ) -> Result<Box<dyn Iterator<Item = Result<Entry, StorageError>> + '_>, StorageError> {
        self.check()?;
        self.disk.live.scan_partition(partition)
    }

    fn put_hinted(
        &self,
        partition: Partition,
        key: &ObjectKey,
        object: Option<&Object>,
        target: &NodeId,
    ) -> Result<(), StorageError> {
        self.check()?;
        if object.is_some() {
            self.disk.remember(partition, key);
        }
        self.disk.remember_hint(Hint { partition, key: key.clone(), target: target.clone() });
        self.disk.live.put_hinted(partition, key, object, target)
    }

    fn hints_for(&self, partition: Partition, key: &ObjectKey) -> Result<Vec<NodeId>, StorageError> {
        self.check()?;
        self.disk.live.hints_for(partition, key)
    }

    fn hints(&self, after: Option<&Hint>, limit: usize) -> Result<Vec<Hint>, StorageError> {
        self.check()?;
        self.disk.live.hints(after, limit)
    }

    fn remove_hint(&self, hint: &Hint) -> Result<(), StorageError> {
        self.check()?;
        self.disk.remember_hint(hint.clone());
        self.disk.live.remove_hint(hint)
    }

    fn reap(&self, partition: Partition, key: &ObjectKey, reaped: &Reaped) -> Result<(), StorageError> {
        self.check()?;
        self.disk.remember(partition, key);
        self.disk.remember_reaped(partition, key);
        self.disk.live.reap(partition, key, reaped)
    }

    fn put_reaped(&self, partition: Partition, key: &ObjectKey, reaped: &Reaped) -> Result<(), StorageError> {
        self.check()?;
        self.disk.remember_reaped(partition, key);
        self.disk.live.put_reaped(partition, key, reaped)
    }

    fn reaped(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Reaped>, StorageError> {
        self.check()?;
        self.disk.live.reaped(partition, key)
    }

    fn reaped_in(&self, partition: Partition) -> Result<Vec<(ObjectKey, Reaped)>, StorageError> {
        self.check()?;
        self.disk.live.reaped_in(partition)
    }

    fn reaped_before(&self, before_ms: u64, limit: usize) -> Result<Vec<(Partition, ObjectKey)>, StorageError> {
        self.check()?;
        self.disk.live.reaped_before(before_ms, limit)
    }

    fn remove_reaped(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        self.check()?;
        self.disk.remember_reaped(partition, key);
        self.disk.live.remove_reaped(partition, key)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.check()?;
        self.disk.live.get_meta(name)
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.check()?;
        self.disk.live.put_meta(name, value)?;
        // Synced, and with it every WAL record before it.
        self.disk.sync();
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats, StorageError> {
        self.check()?;
        self.disk.live.stats()
    }
}
