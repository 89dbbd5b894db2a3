//! Durable state of one node: objects grouped by partition, plus a little
//! node metadata. This is the only module that names RocksDB.
//!
//! Engines implement [`Store`] on top of raw ordered key/value pairs and share
//! one record format ([`codec`]): keys start with the partition so a whole
//! partition is one range scan (handoff and anti-entropy ship partitions),
//! and every value starts with a format version byte so the format can evolve.
//! `tests/storage_conformance.rs` runs one suite against every engine.
//! Beside the objects, each engine keeps the secondary index of what it
//! stores (`index`), in step with the objects in the same write.
//!
//! The trait is synchronous, and async callers mostly call it inline on the
//! async worker: a RocksDB read or an unsynced write takes microseconds, less
//! than a hand-off to tokio's blocking pool costs (see `replica`). What can
//! take long goes to the blocking pool: the replica's writes when each one
//! waits for an fsync (`--sync-writes`), partition scans
//! (`rpc::transfer::spawn_scan`), store statistics (`/metrics`,
//! `/admin/status`), and checkpoints (`/admin/backup`).

pub mod codec;
mod index;
mod listing;
pub mod memory;
pub mod meta;
pub mod rocks;
mod space;

use std::path::Path;

use crate::core::index::IndexRequest;
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::Object;
use crate::core::ring::Partition;
use crate::error::{ErrorCode, HasErrorCode};

pub use memory::MemoryStore;
pub use rocks::{RocksOptions, RocksStore};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage is out of space: {0}")]
    NoSpace(String),
    #[error("storage i/o error: {0}")]
    Io(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("record format version {found} is newer than this build understands ({supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    /// The engine cannot do what was asked (a checkpoint of the memory
    /// engine): a client error, not a failure of the store.
    #[error("{0}")]
    Unsupported(String),
    /// A checkpoint's target directory is unusable (relative, exists, not
    /// writable); says which and why.
    #[error("{0}")]
    BadTarget(String),
}

impl HasErrorCode for StorageError {
    fn code(&self) -> ErrorCode {
        match self {
            StorageError::NoSpace(_) => ErrorCode::InsufficientStorage,
            StorageError::Unsupported(_) => ErrorCode::NotImplemented,
            StorageError::BadTarget(_) => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

/// One object as found by a partition scan.
pub type Entry = (ObjectKey, Object);

/// A page of one bucket's keys in one partition (`Store::list_keys`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys of live objects, ascending; tombstones are not listed.
    pub keys: Vec<bytes::Bytes>,
    /// The last key the page examined (listed or a tombstone): the next
    /// page starts after it. `None`: the bucket's range is done.
    pub resume: Option<bytes::Bytes>,
}

/// Where a page of buckets resumes (`Store::list_buckets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketCursor {
    /// After this bucket's whole range: it was listed.
    AfterBucket(bytes::Bytes),
    /// Within this bucket, after this key: only tombstones were seen so far.
    Within { bucket: bytes::Bytes, after_key: bytes::Bytes },
}

/// A page of the distinct buckets of one type in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketPage {
    /// Buckets holding at least one live object, each once, in storage
    /// order (by length, then bytes: the codec prefixes names with it).
    pub buckets: Vec<bytes::Bytes>,
    /// Where the next page starts; `None`: the type's range is done.
    pub resume: Option<BucketCursor>,
}

/// A page of a secondary-index query in one partition (`Store::index_page`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexPage {
    /// The entries found (`core::index`: encoded term, then key), ascending.
    pub entries: Vec<bytes::Bytes>,
    /// The last entry the page examined: the next page starts after it.
    /// `None`: the query's range is done.
    pub resume: Option<bytes::Bytes>,
}

/// A fallback's note that its copy of `key` belongs to `target` (a node id)
/// too, and must be delivered there (sloppy quorum, `services::hints`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hint {
    pub partition: Partition,
    pub key: ObjectKey,
    pub target: NodeId,
}

/// What a replica keeps of a tombstone it reaped (removed once every
/// primary held it, `services::reaper`): its clock, so that a stale copy of
/// the key arriving later is recognised as already deleted and dropped
/// (`replica::reap`), and when, so that the record can expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub clock: crate::core::vclock::VersionVector,
    /// The reaping replica's wall clock, in Unix ms.
    pub reaped_at_ms: u64,
}

/// Counts for status pages and metrics; RocksDB's are estimates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub objects: u64,
    pub bytes: u64,
    /// True when the engine can only estimate (RocksDB counts overwrites
    /// still in its memtable until they are compacted).
    pub approximate: bool,
    /// The engine's own memory, by use (RocksDB; zero for the in-memory
    /// engine, whose memory is the data).
    pub memory: StoreMemory,
}

/// Where a RocksDB node's memory goes, beyond the process's own: what
/// `--rocksdb-options` tunes (docs/performance.md). Summed over the column
/// families; each family has a block cache of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreMemory {
    /// Memtables, active and waiting to be flushed.
    pub memtables: u64,
    /// Index and filter blocks of the open SST files held outside the block
    /// cache (RocksDB's default): grows with the data.
    pub table_readers: u64,
    /// Data blocks (and index and filter blocks, if tuned so) cached.
    pub block_cache: u64,
}

/// What [`Store::checkpoint`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointInfo {
    /// Files in the checkpoint directory.
    pub files: u64,
    /// Their total size. On the data directory's filesystem most of them
    /// are hard links to the node's own files, which take no new space
    /// until the node compacts its copies away.
    pub bytes: u64,
}

/// A node's durable object store. Every call is blocking.
pub trait Store: Send + Sync + 'static {
    /// Which engine this is, for status output.
    fn engine(&self) -> &'static str;

    fn get(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Object>, StorageError>;

    /// Replaces the stored object. Durable (in the WAL) when it returns.
    fn put(&self, partition: Partition, key: &ObjectKey, object: &Object) -> Result<(), StorageError>;

    /// Replaces several objects of one partition in one write: all or none,
    /// durable together (RocksDB: one write batch, one WAL record).
    /// Partition transfers land this way.
    fn put_many(&self, partition: Partition, objects: &[(ObjectKey, Object)]) -> Result<(), StorageError>;

    /// Removes the key physically (after handoff, or when reaping tombstones).
    fn remove(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError>;

    /// Every object of one partition, in key order, each key at most once.
    /// Not necessarily a snapshot: a key written or removed while the scan
    /// runs may or may not be seen (RocksDB reads in batches).
    fn scan_partition(
        &self,
        partition: Partition,
    ) -> Result<Box<dyn Iterator<Item = Result<Entry, StorageError>> + '_>, StorageError>;

    /// One page of the keys of bucket `bucket_type`/`bucket` in `partition`,
    /// ascending, starting after `after` (from the first when `None`). The
    /// page examines at most `limit` stored objects (at least one),
    /// tombstones included, and lists the live ones. Not a snapshot: a key
    /// written between pages may or may not be seen. The default reads the
    /// partition through `scan_partition` (for test wrappers); engines seek.
    fn list_keys(
        &self,
        partition: Partition,
        bucket_type: &[u8],
        bucket: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KeyPage, StorageError> {
        listing::list_keys(
            &|from, to, visit| scan_visit(self, partition, from, to, visit),
            partition,
            bucket_type,
            bucket,
            after,
            limit,
        )
    }

    /// One page of the distinct buckets of `bucket_type` in `partition` that
    /// hold a live object, ascending, from `from` (the first when `None`).
    /// A bucket with a live object costs one record read; only tombstones
    /// are read one by one, at most `limit` per page.
    fn list_buckets(
        &self,
        partition: Partition,
        bucket_type: &[u8],
        from: Option<&BucketCursor>,
        limit: usize,
    ) -> Result<BucketPage, StorageError> {
        listing::list_buckets(
            &|start, to, visit| scan_visit(self, partition, start, to, visit),
            partition,
            bucket_type,
            from,
            limit,
        )
    }

    /// One page of a secondary-index query in `partition`: its entries
    /// (`core::index`) in ascending order, after the entry `after` (from
    /// the first when `None`), examining at most `limit` rows (at least
    /// one). An entry is listed only while its object has it: every write
    /// of an object replaces its index rows in the same write. Not a
    /// snapshot between pages. The default computes the page from the
    /// bucket's objects (for test wrappers); engines read their index.
    fn index_page(
        &self,
        partition: Partition,
        request: &IndexRequest,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<IndexPage, StorageError> {
        index::page_from_objects(
            &|from, to, visit| scan_visit(self, partition, from, to, visit),
            partition,
            request,
            after,
            limit,
        )
    }

    // Hinted handoff's durable queue. Every engine implements these (the
    // conformance suite checks both); the defaults describe a store that
    // keeps no hints, for test wrappers that never take one.

    /// Stores a hint that `target` should get `key`, together with the
    /// object when one is given (one write: all or none, durable together).
    /// Storing a hint that exists already changes nothing.
    fn put_hinted(
        &self,
        _partition: Partition,
        _key: &ObjectKey,
        _object: Option<&Object>,
        _target: &NodeId,
    ) -> Result<(), StorageError> {
        Err(StorageError::Io(format!("the {} store keeps no hints", self.engine())))
    }

    /// The targets of the hints stored for one key.
    fn hints_for(&self, _partition: Partition, _key: &ObjectKey) -> Result<Vec<NodeId>, StorageError> {
        Ok(Vec::new())
    }

    /// Up to `limit` hints in (partition, key, target) order, starting after
    /// `after` (from the first when `None`): a bounded page of the queue.
    fn hints(&self, _after: Option<&Hint>, _limit: usize) -> Result<Vec<Hint>, StorageError> {
        Ok(Vec::new())
    }

    /// Drops one hint (absent: nothing happens). Durable when it returns.
    fn remove_hint(&self, _hint: &Hint) -> Result<(), StorageError> {
        Ok(())
    }

    // Reaped tombstones (`replica::reap`). Every engine implements these
    // (the conformance suite checks both); the defaults describe a store
    // that never reaps, for test wrappers.

    /// Removes the key's object and stores `reaped` for it, in one write
    /// (all or none, durable together).
    fn reap(&self, _partition: Partition, _key: &ObjectKey, _reaped: &Reaped) -> Result<(), StorageError> {
        Err(StorageError::Io(format!("the {} store does not reap tombstones", self.engine())))
    }

    /// Stores (replaces) the key's record and leaves its object alone: a
    /// history record beside a live object (clock pruning), or a record a
    /// transfer brought. Durable when it returns.
    fn put_reaped(&self, _partition: Partition, _key: &ObjectKey, _reaped: &Reaped) -> Result<(), StorageError> {
        Err(StorageError::Io(format!("the {} store does not reap tombstones", self.engine())))
    }

    /// The record of a reaped tombstone of this key, if one is kept.
    fn reaped(&self, _partition: Partition, _key: &ObjectKey) -> Result<Option<Reaped>, StorageError> {
        Ok(None)
    }

    /// Every reap record of one partition, in key order: what a partition
    /// transfer ships with the objects (records are few: tombstones reaped
    /// within the retention).
    fn reaped_in(&self, _partition: Partition) -> Result<Vec<(ObjectKey, Reaped)>, StorageError> {
        Ok(Vec::new())
    }

    /// Up to `limit` reap records whose `reaped_at_ms` is below `before_ms`,
    /// in (partition, key) order: what is due to expire.
    fn reaped_before(&self, _before_ms: u64, _limit: usize) -> Result<Vec<(Partition, ObjectKey)>, StorageError> {
        Ok(Vec::new())
    }

    /// Drops a reap record (absent: nothing happens).
    fn remove_reaped(&self, _partition: Partition, _key: &ObjectKey) -> Result<(), StorageError> {
        Ok(())
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError>;

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError>;

    fn stats(&self) -> Result<StoreStats, StorageError>;

    /// Writes a consistent snapshot of everything the store holds (objects,
    /// index rows, hints, reap records, metadata) into `dir`, a new
    /// directory given as an absolute path, while the store keeps serving.
    /// The snapshot is a data directory the same engine opens as it is: a
    /// backup. Refused with `BadTarget` (and nothing written) when `dir` is
    /// relative, exists, lies inside the store's own directory, or cannot
    /// be created; with `Unsupported` by an engine that keeps nothing on
    /// disk (the default).
    fn checkpoint(&self, _dir: &Path) -> Result<CheckpointInfo, StorageError> {
        Err(StorageError::Unsupported(format!(
            "the {} engine keeps its data in memory only: there is nothing to back up (backups need \
             --storage rocksdb)",
            self.engine()
        )))
    }

    /// Makes every write so far durable on disk, for a clean shutdown
    /// (RocksDB: an fsync of its write-ahead log). Writes survive a crash of
    /// the process without it; with it, what the OS still buffered survives
    /// a power loss too (`--sync-writes` does this on every write).
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Checks a checkpoint's target before anything is written, so that every
/// operator mistake is a clear refusal: `dir` must be absolute (it names a
/// directory on the node's machine, not the client's), must not exist (a
/// backup never mixes with older files), must not be inside `data_dir`
/// (restoring replaces that directory), and must be creatable: its parent
/// must exist and take a new directory, which is tried (and undone).
fn check_checkpoint_target(dir: &Path, data_dir: &Path) -> Result<(), StorageError> {
    let shown = dir.display();
    if !dir.is_absolute() {
        return Err(StorageError::BadTarget(format!(
            "backup path {shown:?} is not absolute: it names a directory on the node's machine, so give it in full"
        )));
    }
    if dir.symlink_metadata().is_ok() {
        return Err(StorageError::BadTarget(format!(
            "backup path {shown} exists already: a backup goes into a new directory"
        )));
    }
    // RocksDB builds the checkpoint in DIR.tmp and renames it: one left by
    // an interrupted backup would make it fail.
    let mut tmp = dir.as_os_str().to_owned();
    tmp.push(".tmp");
    if Path::new(&tmp).symlink_metadata().is_ok() {
        return Err(StorageError::BadTarget(format!(
            "{} exists (left by an interrupted backup?): remove it first",
            Path::new(&tmp).display()
        )));
    }
    let Some(parent) = dir.parent() else {
        return Err(StorageError::BadTarget(format!("backup path {shown} has no parent directory")));
    };
    let parent = parent
        .canonicalize()
        .map_err(|e| StorageError::BadTarget(format!("cannot write backup path {shown}: {}: {e}", parent.display())))?;
    if let Ok(data_dir) = data_dir.canonicalize()
        && parent.starts_with(&data_dir)
    {
        return Err(StorageError::BadTarget(format!(
            "backup path {shown} is inside the data directory {}: restoring replaces that directory, so keep \
             backups elsewhere",
            data_dir.display()
        )));
    }
    std::fs::create_dir(dir)
        .and_then(|()| std::fs::remove_dir(dir))
        .map_err(|e| StorageError::BadTarget(format!("cannot write backup path {shown}: {e}")))
}

/// The files in a directory (a checkpoint is flat) and their total size.
fn measure_dir(dir: &Path) -> Result<CheckpointInfo, StorageError> {
    let failed = |e: std::io::Error| StorageError::Io(format!("cannot list {}: {e}", dir.display()));
    let mut info = CheckpointInfo::default();
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let meta = entry.map_err(failed)?.metadata().map_err(failed)?;
        if meta.is_file() {
            info.files += 1;
            info.bytes += meta.len();
        }
    }
    Ok(info)
}

/// `listing`'s range visit on top of `scan_partition`: reads the partition
/// from its start and re-encodes each key (the trait's default, for
/// wrappers; engines seek instead).
fn scan_visit<S: Store + ?Sized>(
    store: &S,
    partition: Partition,
    from: &[u8],
    to: Option<&[u8]>,
    visit: listing::Visit<'_>,
) -> Result<(), StorageError> {
    for entry in store.scan_partition(partition)? {
        let (key, object) = entry?;
        let raw = codec::encode_key(partition, &key);
        if raw.as_slice() < from {
            continue;
        }
        if to.is_some_and(|to| raw.as_slice() >= to) {
            break;
        }
        if visit(&raw, &codec::encode_object(&object))?.is_break() {
            break;
        }
    }
    Ok(())
}
