//! An in-memory engine for tests and throwaway nodes. It stores the same
//! encoded records as RocksDB, so the codec is exercised either way; nothing
//! survives a restart.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::codec::{
    check_hint_value, decode_hint_key, decode_key, decode_object, decode_reaped, encode_hint_key, encode_hint_value,
    encode_key, encode_object, encode_reaped, hint_prefix, partition_prefix,
};
use super::index;
use super::listing::{self, Visit};
use super::{BucketCursor, BucketPage, Entry, Hint, IndexPage, KeyPage, Reaped, StorageError, Store, StoreStats};
use crate::core::index::IndexRequest;
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::Object;
use crate::core::ring::Partition;

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
    hints: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    reaped: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Secondary-index rows (`storage::index`), empty values. Locked after
    /// `objects` when both are held.
    index: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl MemoryStore {
    /// The objects of `[from, to)` in order, under the lock: a listing page
    /// is bounded (`listing`), so the lock is held briefly.
    fn visit(&self, from: &[u8], to: Option<&[u8]>, visit: Visit<'_>) -> Result<(), StorageError> {
        Self::visit_in(&self.objects, from, to, visit)
    }

    /// The rows of `[from, to)` of one map, in order, under its lock.
    fn visit_in(
        map: &Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
        from: &[u8],
        to: Option<&[u8]>,
        visit: Visit<'_>,
    ) -> Result<(), StorageError> {
        use std::ops::Bound;
        if to.is_some_and(|to| from >= to) {
            return Ok(());
        }
        let rows = map.lock().expect("memory store lock");
        let end = to.map_or(Bound::Unbounded, Bound::Excluded);
        for (k, v) in rows.range::<[u8], _>((Bound::Included(from), end)) {
            if visit(k, v)?.is_break() {
                break;
            }
        }
        Ok(())
    }
}

impl MemoryStore {
    /// Replaces (`None`: removes) one object and its index rows; the caller
    /// holds the objects lock.
    fn replace(
        &self,
        objects: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        partition: Partition,
        key: &ObjectKey,
        new: Option<&Object>,
    ) -> Result<(), StorageError> {
        let raw = encode_key(partition, key);
        let old = objects.get(&raw).map(|v| decode_object(v)).transpose()?;
        let (gone, added) = index::changes(index::rows(partition, key, old.as_ref()), index::rows(partition, key, new));
        if !gone.is_empty() || !added.is_empty() {
            let mut rows = self.index.lock().expect("memory store lock");
            for row in gone {
                rows.remove(&row);
            }
            rows.extend(added.into_iter().map(|row| (row, Vec::new())));
        }
        match new {
            Some(object) => objects.insert(raw, encode_object(object)),
            None => objects.remove(&raw),
        };
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
        let mut objects = self.objects.lock().expect("memory store lock");
        self.replace(&mut objects, partition, key, Some(object))
    }

    fn put_many(&self, partition: Partition, batch: &[(ObjectKey, Object)]) -> Result<(), StorageError> {
        let mut objects = self.objects.lock().expect("memory store lock");
        // Decode every old record first: a corrupt one fails the whole
        // batch before anything is written (all or none).
        for (key, _) in batch {
            objects.get(&encode_key(partition, key)).map(|v| decode_object(v)).transpose()?;
        }
        for (key, object) in batch {
            self.replace(&mut objects, partition, key, Some(object))?;
        }
        Ok(())
    }

    fn remove(&self, partition: Partition, key: &ObjectKey) -> Result<(), StorageError> {
        let mut objects = self.objects.lock().expect("memory store lock");
        self.replace(&mut objects, partition, key, None)
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

    fn index_page(
        &self,
        partition: Partition,
        request: &IndexRequest,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<IndexPage, StorageError> {
        index::page(
            &|from, to, visit| self.visit(from, to, visit),
            &|from, to, visit| Self::visit_in(&self.index, from, to, visit),
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
        // Both locks, objects first (the only order taken), so a reader
        // never sees one write without the other.
        let mut objects = self.objects.lock().expect("memory store lock");
        let mut hints = self.hints.lock().expect("memory store lock");
        if let Some(object) = object {
            self.replace(&mut objects, partition, key, Some(object))?;
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
        self.replace(&mut objects, partition, key, None)?;
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
        Ok(StoreStats { objects: objects.len() as u64, bytes, approximate: false, memory: Default::default() })
    }
}
