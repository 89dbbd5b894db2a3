//! An in-memory engine for tests and throwaway nodes. It stores the same
//! encoded records as RocksDB, so the codec is exercised either way; nothing
//! survives a restart.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::codec::{
    check_hint_value, decode_hint_key, decode_key, decode_object, decode_reaped, encode_hint_key, encode_hint_value,
    encode_key, encode_object, encode_reaped, hint_prefix, partition_prefix,
};
use super::listing::{self, Visit};
use super::{BucketCursor, BucketPage, Entry, Hint, KeyPage, Reaped, StorageError, Store, StoreStats};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::Object;
use crate::core::ring::Partition;

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
    hints: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    reaped: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl MemoryStore {
    /// The records of `[from, to)` in order, under the lock: a listing page
    /// is bounded (`listing`), so the lock is held briefly.
    fn visit(&self, from: &[u8], to: Option<&[u8]>, visit: Visit<'_>) -> Result<(), StorageError> {
        use std::ops::Bound;
        if to.is_some_and(|to| from >= to) {
            return Ok(());
        }
        let objects = self.objects.lock().expect("memory store lock");
        let end = to.map_or(Bound::Unbounded, Bound::Excluded);
        for (k, v) in objects.range::<[u8], _>((Bound::Included(from), end)) {
            if visit(k, v)?.is_break() {
                break;
            }
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    fn get(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Object>, StorageError> {
        let objects = self.objects.lock().expect("memory store lock");
        objects.get(&encode_key(partition, key)).map(|raw| decode_object(raw)).transpose()
    }

    fn put(&self, partition: Partition, key: &ObjectKey, object: &Object) -> Result<(), StorageError> {
        let raw = encode_object(object);
        self.objects.lock().expect("memory store lock").insert(encode_key(partition, key), raw);
        Ok(())
    }

    fn put_many(&self, partition: Partition, objects: &[(ObjectKey, Object)]) -> Result<(), StorageError> {
        let encoded: Vec<_> = objects.iter().map(|(k, o)| (encode_key(partition, k), encode_object(o))).collect();
        self.objects.lock().expect("memory store lock").extend(encoded);
        Ok(())
    }

    fn remove(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        self.objects.lock().expect("memory store lock").remove(&encode_key(partition, key));
        Ok(())
    }

    fn scan_partition(
        &self,
        partition: Partition,
    ) -> Result<Box<dyn Iterator<Item = Result<Entry, StorageError>> + '_>, StorageError> {
        // Copy the range out so the lock is not held while the caller works.
        let prefix = partition_prefix(partition);
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let objects = self.objects.lock().expect("memory store lock");
            objects
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Ok(Box::new(rows.into_iter().map(|(k, v)| Ok((decode_key(&k)?.1, decode_object(&v)?)))))
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

    fn put_hinted(
        &self,
        partition: Partition,
        key: &ObjectKey,
        object: Option<&Object>,
        target: &NodeId,
    ) -> Result<(), StorageError> {
        let hint = Hint { partition, key: key.clone(), target: target.clone() };
        // Both locks, objects first (the only order taken), so a reader
        // never sees one write without the other.
        let mut objects = self.objects.lock().expect("memory store lock");
        let mut hints = self.hints.lock().expect("memory store lock");
        if let Some(object) = object {
            objects.insert(encode_key(partition, key), encode_object(object));
        }
        hints.insert(encode_hint_key(&hint), encode_hint_value());
        Ok(())
    }

    fn hints_for(&self, partition: Partition, key: &ObjectKey) -> Result<Vec<NodeId>, StorageError> {
        let prefix = hint_prefix(partition, key);
        let hints = self.hints.lock().expect("memory store lock");
        hints
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| {
                check_hint_value(v)?;
                Ok(decode_hint_key(k)?.target)
            })
            .collect()
    }

    fn hints(&self, after: Option<&Hint>, limit: usize) -> Result<Vec<Hint>, StorageError> {
        use std::ops::Bound;
        let start = match after {
            Some(h) => Bound::Excluded(encode_hint_key(h)),
            None => Bound::Unbounded,
        };
        let hints = self.hints.lock().expect("memory store lock");
        hints
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| {
                check_hint_value(v)?;
                decode_hint_key(k)
            })
            .collect()
    }

    fn remove_hint(&self, hint: &Hint) -> Result<(), StorageError> {
        self.hints.lock().expect("memory store lock").remove(&encode_hint_key(hint));
        Ok(())
    }

    fn reap(&self, partition: Partition, key: &ObjectKey, reaped: &Reaped) -> Result<(), StorageError> {
        // Both locks, objects first (as put_hinted), so a reader never sees
        // the object gone without its record.
        let raw = encode_key(partition, key);
        let mut objects = self.objects.lock().expect("memory store lock");
        let mut records = self.reaped.lock().expect("memory store lock");
        objects.remove(&raw);
        records.insert(raw, encode_reaped(reaped));
        Ok(())
    }

    fn put_reaped(&self, partition: Partition, key: &ObjectKey, reaped: &Reaped) -> Result<(), StorageError> {
        self.reaped.lock().expect("memory store lock").insert(encode_key(partition, key), encode_reaped(reaped));
        Ok(())
    }

    fn reaped(&self, partition: Partition, key: &ObjectKey) -> Result<Option<Reaped>, StorageError> {
        let records = self.reaped.lock().expect("memory store lock");
        records.get(&encode_key(partition, key)).map(|raw| decode_reaped(raw)).transpose()
    }

    fn reaped_in(&self, partition: Partition) -> Result<Vec<(ObjectKey, Reaped)>, StorageError> {
        let prefix = partition_prefix(partition);
        let records = self.reaped.lock().expect("memory store lock");
        records
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| Ok((decode_key(k)?.1, decode_reaped(v)?)))
            .collect()
    }

    fn reaped_before(&self, before_ms: u64, limit: usize) -> Result<Vec<(Partition, ObjectKey)>, StorageError> {
        let records = self.reaped.lock().expect("memory store lock");
        let mut out = Vec::new();
        for (k, v) in records.iter() {
            if out.len() == limit {
                break;
            }
            if decode_reaped(v)?.reaped_at_ms < before_ms {
                out.push(decode_key(k)?);
            }
        }
        Ok(out)
    }

    fn remove_reaped(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        self.reaped.lock().expect("memory store lock").remove(&encode_key(partition, key));
        Ok(())
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.lock().expect("memory store lock").get(name).cloned())
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta.lock().expect("memory store lock").insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats, StorageError> {
        let objects = self.objects.lock().expect("memory store lock");
        let bytes = objects.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        Ok(StoreStats { objects: objects.len() as u64, bytes, approximate: false })
    }
}
