//! The RocksDB engine: the default, durable store.
//!
//! Durability: every write goes to RocksDB's write-ahead log before it is
//! acknowledged, so it survives a crash of the process (`kill -9`). The WAL is
//! written to the OS page cache and not fsynced unless `sync_writes` is on;
//! without it a power loss or kernel crash can drop the last moments of
//! acknowledged writes on this node (other replicas still hold them).
//!
//! A full disk: RocksDB turns a write that fails with ENOSPC into a sticky
//! background error, and refuses every later write even once space is back.
//! Its cure, `DB::Resume()`, and the SstFileManager that would resume by
//! itself are not reachable from the Rust crate, so this store reopens the
//! database instead: a write that fails for lack of space marks the store
//! full, and later calls check, at most once per [`RECOVERY_INTERVAL`],
//! whether the filesystem has room again ([`space`]); if so the handle is
//! closed and opened again. The reopen replays the WAL, which holds every
//! acknowledged write; a write that failed was never acknowledged. Until
//! there is room the old handle stays open, so reads go on working and
//! writes go on failing fast.
//!
//! Locking: the handle sits behind a `RwLock`. Every call holds the read
//! lock for one RocksDB call (a scan for one batch, see [`Scan`]) and never
//! takes it again while holding it; a reopen holds the write lock. So a
//! reopen waits only for the calls in flight, and no RocksDB iterator or
//! pinned value outlives the handle it came from.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use rocksdb::{
    ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions,
};

use super::codec::{
    check_hint_value, decode_hint_key, decode_key, decode_object, decode_reaped, encode_hint_key, encode_hint_value,
    encode_key, encode_object, encode_reaped, hint_prefix, partition_prefix,
};
use super::index;
use super::listing::{self, Visit};
use super::{
    BucketCursor, BucketPage, CheckpointInfo, Entry, Hint, IndexPage, KeyPage, Reaped, StorageError, Store,
    StoreMemory, StoreStats, space,
};
use crate::core::index::IndexRequest;
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::Object;
use crate::core::ring::Partition;

const OBJECTS: &str = "objects";
const META: &str = "meta";
/// Hinted handoff's queue (see `codec` for the record format). A family of
/// its own, so object scans never meet hints; a data directory from before
/// hints gets it created, empty, when opened.
const HINTS: &str = "hints";
/// Reap records of reaped tombstones (see `codec`). A family of its own,
/// like hints: object scans (handoff, anti-entropy) never meet them, and a
/// data directory from before reaping gets it created, empty, when opened.
const REAPED: &str = "reaped";
/// Secondary-index rows (`storage::index`), written in the same batch as
/// their objects. A data directory from before 2i gets it created, empty.
const INDEX: &str = "index";
/// Every column family, in the order they are opened.
const FAMILIES: [&str; 5] = [OBJECTS, META, HINTS, REAPED, INDEX];
/// A page of hints is read in one iteration, at most this many.
const HINT_PAGE_MAX: usize = 4096;

/// How often a full store looks for free space (and reopens when it finds
/// some): often enough to take writes again soon after space returns,
/// rarely enough that a disk that stays full costs nothing.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// A scan reads at most this many objects per batch...
const SCAN_BATCH_ENTRIES: usize = 512;
/// ...and stops a batch once it holds this many bytes (a single larger
/// object is still read, alone).
const SCAN_BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct RocksOptions {
    /// fsync the WAL on every write: survives power loss, costs latency.
    pub sync_writes: bool,
    /// RocksDB options in its own option-string syntax
    /// (`compaction_style=kCompactionStyleUniversal;block_based_table_factory={block_cache=256M}`),
    /// applied over this store's defaults to the database and to each column
    /// family (`--rocksdb-options`). RocksDB parses it: an unknown option or
    /// a bad value refuses the open.
    pub tuning: Option<String>,
}

pub struct RocksStore {
    path: PathBuf,
    /// `RocksOptions::tuning`, kept for a reopen.
    tuning: Option<String>,
    write: WriteOptions,
    handle: RwLock<Handle>,
    /// A write failed for lack of space: RocksDB refuses writes until the
    /// handle is reopened.
    full: AtomicBool,
    /// Held by the one caller checking for space and reopening; the time
    /// of the last check, to space them out.
    recovery: Mutex<Option<Instant>>,
    /// Some object has (or had) index entries: writes then read the old
    /// object to replace its index rows. Until then a write that adds no
    /// entry skips that read, so a store that never uses 2i pays nothing.
    indexed: AtomicBool,
    /// Held while a checkpoint is checked and written: two at once into one
    /// directory trampled each other's `DIR.tmp` (an I/O error, a 500);
    /// one after the other, the second finds the directory and is refused.
    checkpointing: Mutex<()>,
}

enum Handle {
    Open(rocksdb::DB),
    /// A reopen closed the old handle and could not open a new one (why);
    /// retried like a full disk.
    Closed(String),
}

impl RocksStore {
    pub fn open(path: &Path, options: &RocksOptions) -> Result<RocksStore, StorageError> {
        let tuning = options.tuning.as_deref();
        // Parsed before anything is created, so that a typo is named as
        // such, not as a failure of the database.
        refuse_unsafe(tuning)
            .and_then(|()| db_options(tuning).map_err(|e| e.into_string()))
            .map_err(|e| StorageError::Io(format!("invalid RocksDB options (--rocksdb-options): {e}")))?;
        std::fs::create_dir_all(path)
            .map_err(|e| StorageError::Io(format!("cannot create data directory {}: {e}", path.display())))?;
        let db = open_db(path, tuning)
            .map_err(|e| StorageError::Io(format!("cannot open RocksDB at {}: {e}", path.display())))?;
        let mut write = WriteOptions::default();
        write.set_sync(options.sync_writes);
        let indexed = db.iterator_cf(cf(&db, INDEX), IteratorMode::Start).next().is_some();
        Ok(RocksStore {
            path: path.to_owned(),
            tuning: options.tuning.clone(),
            write,
            handle: RwLock::new(Handle::Open(db)),
            full: AtomicBool::new(false),
            recovery: Mutex::new(None),
            indexed: AtomicBool::new(indexed),
            checkpointing: Mutex::new(()),
        })
    }

    /// Runs `op` on the open handle under the read lock, after reopening a
    /// full store if there is room again. The caller must not hold the lock.
    fn with_db<T>(&self, op: impl FnOnce(&rocksdb::DB) -> Result<T, StorageError>) -> Result<T, StorageError> {
        self.recover_if_due();
        let handle = self.handle.read().unwrap_or_else(PoisonError::into_inner);
        let result = match &*handle {
            Handle::Open(db) => op(db),
            Handle::Closed(why) => Err(classify(format!("rocksdb is closed after a failed reopen: {why}"))),
        };
        // Still under the read lock: a reopen is either done (and this call
        // failed on the new handle) or yet to come, never cleared under us.
        if let Err(StorageError::NoSpace(why)) = &result {
            self.mark_full(why);
        }
        result
    }

    /// RocksDB refused a write for lack of space (only writes do): it
    /// refuses every write from now on, until the handle is reopened.
    fn mark_full(&self, why: &str) {
        if !self.full.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                path = %self.path.display(),
                error = %why,
                "storage is out of space: writes fail until space is freed, then the database is reopened"
            );
        }
    }

    /// Reopens a full store once its filesystem has room again. One caller
    /// checks at a time, at most once per [`RECOVERY_INTERVAL`]; the others
    /// go on with the old handle (reads work, writes fail fast).
    fn recover_if_due(&self) {
        if !self.full.load(Ordering::Acquire) {
            return;
        }
        let mut last_check = match self.recovery.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if last_check.is_some_and(|at| at.elapsed() < RECOVERY_INTERVAL) {
            return;
        }
        *last_check = Some(Instant::now());
        // Another caller may have reopened between our load and the lock.
        if !self.full.load(Ordering::Acquire) {
            return;
        }
        // Close nothing until a reopen can succeed: reopening flushes what
        // it replays from the WAL, and a failed open leaves no handle.
        match space::has_room_to_reopen(&self.path) {
            Ok(true) => self.reopen(),
            Ok(false) => {}
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "cannot measure free space"),
        }
    }

    fn reopen(&self) {
        let mut handle = self.handle.write().unwrap_or_else(PoisonError::into_inner);
        // Drop the old handle first: RocksDB's LOCK file admits one handle
        // per directory. Without WAL-less writes, closing flushes nothing.
        *handle = Handle::Closed("reopen in progress".to_owned());
        match open_db(&self.path, self.tuning.as_deref()) {
            Ok(db) => {
                *handle = Handle::Open(db);
                self.full.store(false, Ordering::Release);
                tracing::info!(path = %self.path.display(), "storage has space again: database reopened, writes accepted");
            }
            Err(e) => {
                let why = e.into_string();
                tracing::error!(path = %self.path.display(), error = %why, "cannot reopen the database; retrying");
                *handle = Handle::Closed(why);
            }
        }
    }
}

impl RocksStore {
    /// The objects of `[from, to)` in order, in one iteration under the
    /// read lock: a listing page is bounded (`listing`), so it is short.
    fn visit(&self, from: &[u8], to: Option<&[u8]>, visit: Visit<'_>) -> Result<(), StorageError> {
        self.visit_in(OBJECTS, from, to, visit)
    }

    /// `visit` on the rows of one column family.
    fn visit_in(&self, family: &str, from: &[u8], to: Option<&[u8]>, visit: Visit<'_>) -> Result<(), StorageError> {
        if to.is_some_and(|to| from >= to) {
            return Ok(());
        }
        self.with_db(|db| {
            let mut read = ReadOptions::default();
            if let Some(to) = to {
                read.set_iterate_upper_bound(to.to_vec());
            }
            let mut rows = db.raw_iterator_cf_opt(cf(db, family), read);
            rows.seek(from);
            while let (Some(k), Some(v)) = (rows.key(), rows.value()) {
                if visit(k, v)?.is_break() {
                    return Ok(());
                }
                rows.next();
            }
            rows.status().map_err(map_err)
        })
    }
}

fn open_db(path: &Path, tuning: Option<&str>) -> Result<rocksdb::DB, rocksdb::Error> {
    let mut objects = Options::default();
    objects.set_compression_type(DBCompressionType::Lz4);
    let families = FAMILIES
        .into_iter()
        .map(|name| {
            let defaults = if name == OBJECTS { objects.clone() } else { Options::default() };
            Ok(ColumnFamilyDescriptor::new(name, tuned(defaults, tuning)?))
        })
        .collect::<Result<Vec<_>, rocksdb::Error>>()?;
    rocksdb::DB::open_cf_descriptors(&db_options(tuning)?, path, families)
}

/// The database's options: this store's defaults, then `tuning`.
fn db_options(tuning: Option<&str>) -> Result<Options, rocksdb::Error> {
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    tuned(db_opts, tuning)
}

/// RocksDB options that would break what this store promises, refused by
/// name: `manual_wal_flush` keeps acknowledged writes in RocksDB's buffer
/// until someone flushes it (a process crash loses them; nothing here
/// flushes), and `unordered_write` lets a read miss a write acknowledged
/// before it. Only top-level names count (a `{...}` group is skipped).
const UNSAFE_OPTIONS: [&str; 2] = ["manual_wal_flush", "unordered_write"];

fn refuse_unsafe(tuning: Option<&str>) -> Result<(), String> {
    let Some(tuning) = tuning else { return Ok(()) };
    let (mut depth, mut start) = (0usize, 0usize);
    let mut names = Vec::new();
    for (i, c) in tuning.char_indices().chain([(tuning.len(), ';')]) {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => {
                names.push(tuning[start..i].split('=').next().unwrap_or_default().trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    match names.into_iter().find(|name| UNSAFE_OPTIONS.contains(name)) {
        Some(name) => Err(format!("{name} is not allowed: acknowledged writes could be lost or read out of order")),
        None => Ok(()),
    }
}

/// `defaults` with the operator's option string applied over them. The
/// string may mix database and column-family options: RocksDB's `Options`
/// holds both, and each open takes the part it uses.
fn tuned(mut defaults: Options, tuning: Option<&str>) -> Result<Options, rocksdb::Error> {
    match tuning.map(str::trim).filter(|t| !t.is_empty()) {
        Some(tuning) => defaults.get_options_from_string(tuning),
        None => Ok(defaults),
    }
}

fn cf<'a>(db: &'a rocksdb::DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column families are created at open")
}

fn map_err(e: rocksdb::Error) -> StorageError {
    classify(e.into_string())
}

fn classify(text: String) -> StorageError {
    if text.contains("No space left on device") || text.contains("ENOSPC") {
        StorageError::NoSpace(text)
    } else {
        StorageError::Io(text)
    }
}

impl RocksStore {
    /// Adds the write of `key`'s object (`None`: its removal) to `batch`,
    /// with the index rows that change. The caller holds the key's lock
    /// (`storage::index`), so the old object read here is the one replaced.
    fn stage(
        &self,
        db: &rocksdb::DB,
        batch: &mut WriteBatch,
        partition: Partition,
        key: &ObjectKey,
        new: Option<&Object>,
    ) -> Result<(), StorageError> {
        let raw = encode_key(partition, key);
        let rows = index::rows(partition, key, new);
        if !rows.is_empty() {
            self.indexed.store(true, Ordering::Release);
        }
        if self.indexed.load(Ordering::Acquire) {
            let old = db.get_pinned_cf(cf(db, OBJECTS), &raw).map_err(map_err)?;
            let old = old.map(|r| decode_object(&r)).transpose()?;
            let (gone, added) = index::changes(index::rows(partition, key, old.as_ref()), rows);
            let family = cf(db, INDEX);
            for row in gone {
                batch.delete_cf(family, row);
            }
            for row in added {
                batch.put_cf(family, row, []);
            }
        }
        match new {
            Some(object) => batch.put_cf(cf(db, OBJECTS), raw, encode_object(object)),
            None => batch.delete_cf(cf(db, OBJECTS), raw),
        }
        Ok(())
    }

    /// One object's change (and its index rows) in one write.
    fn write_one(&self, partition: Partition, key: &ObjectKey, new: Option<&Object>) -> Result<(), StorageError> {
        self.with_db(|db| {
            let mut batch = WriteBatch::default();
            self.stage(db, &mut batch, partition, key, new)?;
            db.write_opt(batch, &self.write).map_err(map_err)
        })
    }
}

impl Store for RocksStore {
    fn engine(&self) -> &'static str {
        "rocksdb"
    }

    fn get(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Object>, StorageError> {
        self.with_db(|db| {
            let raw = db.get_pinned_cf(cf(db, OBJECTS), encode_key(partition, key)).map_err(map_err)?;
            raw.map(|r| decode_object(&r)).transpose()
        })
    }

    fn put(&self, partition: Partition, key: &ObjectKey, object: &Object) -> Result<(), StorageError> {
        self.write_one(partition, key, Some(object))
    }

    fn put_many(&self, partition: Partition, objects: &[(ObjectKey, Object)]) -> Result<(), StorageError> {
        if objects.is_empty() {
            return Ok(());
        }
        self.with_db(|db| {
            let mut batch = WriteBatch::default();
            for (key, object) in objects {
                self.stage(db, &mut batch, partition, key, Some(object))?;
            }
            db.write_opt(batch, &self.write).map_err(map_err)
        })
    }

    fn remove(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        self.write_one(partition, key, None)
    }

    fn scan_partition(
        &self,
        partition: Partition,
    ) -> Result<Box<dyn Iterator<Item = Result<Entry, StorageError>> + '_>, StorageError> {
        Ok(Box::new(Scan::new(self, partition)))
    }

    fn list_keys(
        &self,
        partition: Partition,
        bucket_type: &[u8],
        bucket: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KeyPage, StorageError> {
        listing::list_keys(&|from, to, visit| self.visit(from, to, visit), partition, bucket_type, bucket, after, limit)
    }

    fn list_buckets(
        &self,
        partition: Partition,
        bucket_type: &[u8],
        from: Option<&BucketCursor>,
        limit: usize,
    ) -> Result<BucketPage, StorageError> {
        listing::list_buckets(&|start, to, visit| self.visit(start, to, visit), partition, bucket_type, from, limit)
    }

    fn index_page(
        &self,
        partition: Partition,
        request: &IndexRequest,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<IndexPage, StorageError> {
        index::page(
            &|from, to, visit| self.visit(from, to, visit),
            &|from, to, visit| self.visit_in(INDEX, from, to, visit),
            partition,
            request,
            after,
            limit,
        )
    }

    fn put_hinted(
        &self,
        partition: Partition,
        key: &ObjectKey,
        object: Option<&Object>,
        target: &NodeId,
    ) -> Result<(), StorageError> {
        let hint = Hint { partition, key: key.clone(), target: target.clone() };
        self.with_db(|db| {
            let mut batch = WriteBatch::default();
            if let Some(object) = object {
                self.stage(db, &mut batch, partition, key, Some(object))?;
            }
            batch.put_cf(cf(db, HINTS), encode_hint_key(&hint), encode_hint_value());
            db.write_opt(batch, &self.write).map_err(map_err)
        })
    }

    fn hints_for(&self, partition: Partition, key: &ObjectKey) -> Result<Vec<NodeId>, StorageError> {
        let prefix = hint_prefix(partition, key);
        self.with_db(|db| {
            let mut out = Vec::new();
            for row in db.iterator_cf(cf(db, HINTS), IteratorMode::From(&prefix, Direction::Forward)) {
                let (k, v) = row.map_err(map_err)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                check_hint_value(&v)?;
                out.push(decode_hint_key(&k)?.target);
            }
            Ok(out)
        })
    }

    fn hints(&self, after: Option<&Hint>, limit: usize) -> Result<Vec<Hint>, StorageError> {
        let limit = limit.min(HINT_PAGE_MAX);
        let from = after.map(encode_hint_key);
        self.with_db(|db| {
            let mode = match &from {
                Some(from) => IteratorMode::From(from, Direction::Forward),
                None => IteratorMode::Start,
            };
            let mut out = Vec::new();
            for row in db.iterator_cf(cf(db, HINTS), mode) {
                let (k, v) = row.map_err(map_err)?;
                if from.as_deref() == Some(&*k) {
                    continue;
                }
                if out.len() == limit {
                    break;
                }
                check_hint_value(&v)?;
                out.push(decode_hint_key(&k)?);
            }
            Ok(out)
        })
    }

    fn remove_hint(&self, hint: &Hint) -> Result<(), StorageError> {
        let key = encode_hint_key(hint);
        self.with_db(|db| db.delete_cf_opt(cf(db, HINTS), key, &self.write).map_err(map_err))
    }

    fn reap(&self, partition: Partition, key: &ObjectKey, reaped: &Reaped) -> Result<(), StorageError> {
        let (raw, value) = (encode_key(partition, key), encode_reaped(reaped));
        self.with_db(|db| {
            let mut batch = WriteBatch::default();
            self.stage(db, &mut batch, partition, key, None)?;
            batch.put_cf(cf(db, REAPED), &raw, value);
            db.write_opt(batch, &self.write).map_err(map_err)
        })
    }

    fn put_reaped(&self, partition: Partition, key: &ObjectKey, reaped: &Reaped) -> Result<(), StorageError> {
        let (raw, value) = (encode_key(partition, key), encode_reaped(reaped));
        self.with_db(|db| db.put_cf_opt(cf(db, REAPED), raw, value, &self.write).map_err(map_err))
    }

    fn reaped(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Reaped>, StorageError> {
        self.with_db(|db| {
            let raw = db.get_pinned_cf(cf(db, REAPED), encode_key(partition, key)).map_err(map_err)?;
            raw.map(|r| decode_reaped(&r)).transpose()
        })
    }

    fn reaped_in(&self, partition: Partition) -> Result<Vec<(ObjectKey, Reaped)>, StorageError> {
        let prefix = partition_prefix(partition);
        self.with_db(|db| {
            let mut out = Vec::new();
            for row in db.iterator_cf(cf(db, REAPED), IteratorMode::From(&prefix, Direction::Forward)) {
                let (k, v) = row.map_err(map_err)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                out.push((decode_key(&k)?.1, decode_reaped(&v)?));
            }
            Ok(out)
        })
    }

    fn reaped_before(&self, before_ms: u64, limit: usize) -> Result<Vec<(Partition, ObjectKey)>, StorageError> {
        // One iteration over the whole family: records are few (tombstones
        // reaped within the retention) and small.
        self.with_db(|db| {
            let mut out = Vec::new();
            for row in db.iterator_cf(cf(db, REAPED), IteratorMode::Start) {
                if out.len() == limit {
                    break;
                }
                let (k, v) = row.map_err(map_err)?;
                if decode_reaped(&v)?.reaped_at_ms < before_ms {
                    out.push(decode_key(&k)?);
                }
            }
            Ok(out)
        })
    }

    fn remove_reaped(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        let raw = encode_key(partition, key);
        self.with_db(|db| db.delete_cf_opt(cf(db, REAPED), raw, &self.write).map_err(map_err))
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.with_db(|db| db.get_cf(cf(db, META), name.as_bytes()).map_err(map_err))
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        // Metadata (identity, claims) is rare and precious: always fsync.
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.with_db(|db| db.put_cf_opt(cf(db, META), name.as_bytes(), value, &sync).map_err(map_err))
    }

    fn stats(&self) -> Result<StoreStats, StorageError> {
        self.with_db(|db| {
            let objects_cf = cf(db, OBJECTS);
            let int = |prop: &str| db.property_int_value_cf(objects_cf, prop).map_err(map_err).map(|v| v.unwrap_or(0));
            let objects = int("rocksdb.estimate-num-keys")?;
            let bytes = int("rocksdb.total-sst-files-size")? + int("rocksdb.cur-size-all-mem-tables")?;
            let mut memory = StoreMemory::default();
            for family in FAMILIES {
                let int = |prop: &str| db.property_int_value_cf(cf(db, family), prop).map_err(map_err);
                memory.memtables += int("rocksdb.cur-size-all-mem-tables")?.unwrap_or(0);
                memory.table_readers += int("rocksdb.estimate-table-readers-mem")?.unwrap_or(0);
                memory.block_cache += int("rocksdb.block-cache-usage")?.unwrap_or(0);
            }
            Ok(StoreStats { objects, bytes, approximate: true, memory })
        })
    }

    /// RocksDB's checkpoint: it flushes the memtables, then hard-links the
    /// SST files into `dir` (copies them on another filesystem) with a new
    /// MANIFEST and the live WAL, all as of one sequence number, across every
    /// column family: a consistent data directory, taken without stopping
    /// writes. It holds the metadata too (node id, partition count, cluster
    /// secret and state), so a node started on it is this node, as of now.
    fn checkpoint(&self, dir: &Path) -> Result<CheckpointInfo, StorageError> {
        let _one_at_a_time = self.checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
        super::check_checkpoint_target(dir, &self.path)?;
        // The outcome is returned inside Ok: `with_db` would take a full
        // target filesystem for a full store and start reopening it.
        let created = self.with_db(|db| {
            Ok(rocksdb::checkpoint::Checkpoint::new(db).and_then(|checkpoint| checkpoint.create_checkpoint(dir)))
        })?;
        created.map_err(|e| match classify(e.into_string()) {
            StorageError::Io(why) => StorageError::Io(format!("checkpoint into {} failed: {why}", dir.display())),
            full => full,
        })?;
        super::measure_dir(dir)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.with_db(|db| db.flush_wal(true).map_err(map_err))
    }
}

/// A partition scan read in batches, each under the read lock for one short
/// RocksDB iteration, resuming after the last key read. No iterator
/// lives between batches, so a reopen can happen mid-scan. The price: a scan
/// is not a snapshot. A key written or removed while it runs may or may not
/// be seen; every key is still seen at most once, in key order.
struct Scan<'a> {
    store: &'a RocksStore,
    partition: Partition,
    /// Where the next batch starts: the partition's first key, then the
    /// last key read (skipped if it is still there).
    resume: Vec<u8>,
    started: bool,
    rows: VecDeque<RawRow>,
    /// The partition's end was reached, or a batch failed.
    done: bool,
}

/// A key and value as RocksDB returns them, not yet decoded.
type RawRow = (Box<[u8]>, Box<[u8]>);

impl<'a> Scan<'a> {
    fn new(store: &'a RocksStore, partition: Partition) -> Scan<'a> {
        let resume = partition_prefix(partition).to_vec();
        Scan { store, partition, resume, started: false, rows: VecDeque::new(), done: false }
    }

    fn read_batch(&mut self) -> Result<(), StorageError> {
        let (rows, more) = self.store.with_db(|db| {
            let mut read = ReadOptions::default();
            if let Some(next) = self.partition.checked_add(1) {
                read.set_iterate_upper_bound(partition_prefix(next).to_vec());
            }
            let from = IteratorMode::From(&self.resume, Direction::Forward);
            let mut rows = Vec::new();
            let mut bytes = 0;
            for row in db.iterator_cf_opt(cf(db, OBJECTS), read, from) {
                let (k, v) = row.map_err(map_err)?;
                if self.started && *k == *self.resume {
                    continue;
                }
                bytes += k.len() + v.len();
                rows.push((k, v));
                if rows.len() == SCAN_BATCH_ENTRIES || bytes >= SCAN_BATCH_BYTES {
                    return Ok((rows, true));
                }
            }
            Ok((rows, false))
        })?;
        if let Some((last, _)) = rows.last() {
            self.resume = last.to_vec();
            self.started = true;
        }
        self.done = !more;
        self.rows.extend(rows);
        Ok(())
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<Entry, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rows.is_empty()
            && !self.done
            && let Err(e) = self.read_batch()
        {
            self.done = true;
            return Some(Err(e));
        }
        let (k, v) = self.rows.pop_front()?;
        Some(decode_key(&k).and_then(|(_, key)| Ok((key, decode_object(&v)?))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;

    use super::*;
    use crate::core::object::{Content, Mutation};
    use crate::core::vclock::VersionVector;

    fn object(value: &str) -> Object {
        let content = Content {
            value: Bytes::from(value.to_owned()),
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            meta: Default::default(),
        };
        let mut o = Object::new();
        o.update(1, &VersionVector::new(), Mutation::Put(content)).unwrap();
        o
    }

    fn key(i: usize) -> ObjectKey {
        ObjectKey::in_default_bucket(format!("k{i:05}"))
    }

    fn open(dir: &Path) -> RocksStore {
        RocksStore::open(dir, &RocksOptions::default()).unwrap()
    }

    #[test]
    fn scan_resumes_across_batches_changes_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let count = 2 * SCAN_BATCH_ENTRIES + 300;
        for i in 0..count {
            store.put(7, &key(i), &object("v")).unwrap();
        }
        // Neighbours the scan must not wander into.
        store.put(6, &key(1), &object("before")).unwrap();
        store.put(8, &key(1), &object("after")).unwrap();

        let mut scan = store.scan_partition(7).unwrap();
        let first: Vec<ObjectKey> = scan.by_ref().take(SCAN_BATCH_ENTRIES + 88).map(|row| row.unwrap().0).collect();
        // Mid-scan: the last key read (the end of the second batch, where
        // the third resumes) is gone, one key ahead is gone and one is new,
        // and the database is reopened under the scan.
        store.remove(7, &key(2 * SCAN_BATCH_ENTRIES - 1)).unwrap();
        let (gone, new) = (count - 10, count + 5);
        store.remove(7, &key(gone)).unwrap();
        store.put(7, &key(new), &object("new")).unwrap();
        store.reopen();
        let rest: Vec<ObjectKey> = scan.map(|row| row.unwrap().0).collect();

        // The removed resume key was read before it went: still returned.
        let want: Vec<ObjectKey> = (0..count).filter(|&i| i != gone).chain([new]).map(key).collect();
        assert_eq!([first, rest].concat(), want);
    }

    #[test]
    fn scan_of_the_last_partition_has_no_upper_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.put(u32::MAX - 1, &key(1), &object("no")).unwrap();
        store.put(u32::MAX, &key(2), &object("yes")).unwrap();
        let keys: Vec<ObjectKey> = store.scan_partition(u32::MAX).unwrap().map(|row| row.unwrap().0).collect();
        assert_eq!(keys, vec![key(2)]);
    }

    /// Reopens while threads read and write: every call waits for the
    /// reopen, none fails, none deadlocks, every write is there after.
    #[test]
    fn reopen_is_safe_under_concurrent_calls() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let written = AtomicUsize::new(0);
        let writers_done = AtomicUsize::new(0);
        const WRITERS: usize = 3;
        const WRITES_PER_WRITER: usize = 300;
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (store, written, writers_done) = (&store, &written, &writers_done);
                s.spawn(move || {
                    for i in 0..WRITES_PER_WRITER {
                        let k = key(w * WRITES_PER_WRITER + i);
                        store.put(1, &k, &object("v")).unwrap();
                        assert_eq!(store.get(1, &k).unwrap(), Some(object("v")));
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    writers_done.fetch_add(1, Ordering::Relaxed);
                });
            }
            s.spawn(|| {
                while writers_done.load(Ordering::Relaxed) < WRITERS {
                    for row in store.scan_partition(1).unwrap() {
                        row.unwrap();
                    }
                    store.stats().unwrap();
                }
            });
            let mut reopens = 0;
            while writers_done.load(Ordering::Relaxed) < WRITERS {
                store.reopen();
                reopens += 1;
            }
            assert!(reopens > 0);
        });
        assert_eq!(written.load(Ordering::Relaxed), WRITERS * WRITES_PER_WRITER);
        drop(store);
        let store = open(dir.path());
        let keys = store.scan_partition(1).unwrap().count();
        assert_eq!(keys, WRITERS * WRITES_PER_WRITER);
    }
}
