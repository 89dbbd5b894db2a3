//! The RocksDB engine: the default, durable store.
//!
//! Durability: every write goes to RocksDB's write-ahead log before it is
//! acknowledged, so it survives a crash of the process (`kill -9`). The WAL is
//! written to the OS page cache and not fsynced unless `sync_writes` is on;
//! without it a power loss or kernel crash can drop the last moments of
//! acknowledged writes on this node (other replicas still hold them).

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, ReadOptions, WriteOptions};

use super::codec::{decode_key, decode_object, encode_key, encode_object, partition_prefix};
use super::{Entry, StorageError, Store, StoreStats};
use crate::core::key::ObjectKey;
use crate::core::object::Object;
use crate::core::ring::Partition;

const OBJECTS: &str = "objects";
const META: &str = "meta";

#[derive(Debug, Clone, Default)]
pub struct RocksOptions {
    /// fsync the WAL on every write: survives power loss, costs latency.
    pub sync_writes: bool,
}

pub struct RocksStore {
    db: rocksdb::DB,
    write: WriteOptions,
}

impl RocksStore {
    pub fn open(path: &Path, options: &RocksOptions) -> Result<RocksStore, StorageError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StorageError::Io(format!("cannot create data directory {}: {e}", path.display())))?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        let mut objects = Options::default();
        objects.set_compression_type(DBCompressionType::Lz4);
        let families =
            vec![ColumnFamilyDescriptor::new(OBJECTS, objects), ColumnFamilyDescriptor::new(META, Options::default())];
        let db = rocksdb::DB::open_cf_descriptors(&db_opts, path, families)
            .map_err(|e| StorageError::Io(format!("cannot open RocksDB at {}: {e}", path.display())))?;
        let mut write = WriteOptions::default();
        write.set_sync(options.sync_writes);
        Ok(RocksStore { db, write })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }
}

fn map_err(e: rocksdb::Error) -> StorageError {
    let text = e.into_string();
    if text.contains("No space left on device") || text.contains("ENOSPC") {
        StorageError::NoSpace(text)
    } else {
        StorageError::Io(text)
    }
}

impl Store for RocksStore {
    fn engine(&self) -> &'static str {
        "rocksdb"
    }

    fn get(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Object>, StorageError> {
        let raw = self.db.get_pinned_cf(self.cf(OBJECTS), encode_key(partition, key)).map_err(map_err)?;
        raw.map(|r| decode_object(&r)).transpose()
    }

    fn put(&self, partition: Partition, key: &ObjectKey, object: &Object) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(self.cf(OBJECTS), encode_key(partition, key), encode_object(object), &self.write)
            .map_err(map_err)
    }

    fn remove(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        self.db.delete_cf_opt(self.cf(OBJECTS), encode_key(partition, key), &self.write).map_err(map_err)
    }

    fn scan_partition(
        &self,
        partition: Partition,
    ) -> Result<Box<dyn Iterator<Item = Result<Entry, StorageError>> + '_>, StorageError> {
        let prefix = partition_prefix(partition);
        let mut read = ReadOptions::default();
        if let Some(next) = partition.checked_add(1) {
            read.set_iterate_upper_bound(partition_prefix(next).to_vec());
        }
        let rows = self.db.iterator_cf_opt(self.cf(OBJECTS), read, IteratorMode::From(&prefix, Direction::Forward));
        Ok(Box::new(rows.map(|row| {
            let (k, v) = row.map_err(map_err)?;
            Ok((decode_key(&k)?.1, decode_object(&v)?))
        })))
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(META), name.as_bytes()).map_err(map_err)
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        // Metadata (identity, claims) is rare and precious: always fsync.
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.put_cf_opt(self.cf(META), name.as_bytes(), value, &sync).map_err(map_err)
    }

    fn stats(&self) -> Result<StoreStats, StorageError> {
        let cf = self.cf(OBJECTS);
        let int = |prop: &str| self.db.property_int_value_cf(cf, prop).map_err(map_err).map(|v| v.unwrap_or(0));
        let objects = int("rocksdb.estimate-num-keys")?;
        let bytes = int("rocksdb.total-sst-files-size")? + int("rocksdb.cur-size-all-mem-tables")?;
        Ok(StoreStats { objects, bytes, approximate: true })
    }
}
