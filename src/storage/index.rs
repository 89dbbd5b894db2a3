//! Secondary indexes on any engine that keeps an ordered index keyspace
//! beside its objects.
//!
//! Every index entry of a stored object (`core::index::object_entries`) is
//! one row of the index keyspace: `index_prefix(partition, type, bucket,
//! field) ++ entry`, with an empty value. Rows sort by (term, key) within a
//! field, so a query is one range read. Engines keep the rows in step with
//! the objects in the same write (a RocksDB batch, one lock for the memory
//! engine): a write replaces the object's rows with the new object's, so a
//! query never finds an entry its object no longer has. Callers serialise
//! the writes of one key (the replica's key locks), which keeps the
//! read-old, write-new step of an engine atomic per key.
//!
//! `$key` and `$bucket` queries read the objects themselves. Like listing
//! pages, a page examines at most `limit` rows.

use std::ops::ControlFlow;

use bytes::Bytes;

use super::codec::{bucket_prefix, decode_object, index_prefix, prefix_end};
use super::listing::VisitRange;
use super::{IndexPage, StorageError};
use crate::core::index::{IndexQuery, IndexRequest, encode_term, object_entries};
use crate::core::key::ObjectKey;
use crate::core::object::Object;
use crate::core::ring::Partition;

/// The index rows of `object` stored under `key`, sorted.
pub(super) fn rows(partition: Partition, key: &ObjectKey, object: Option<&Object>) -> Vec<Vec<u8>> {
    let Some(object) = object else { return Vec::new() };
    let mut rows: Vec<Vec<u8>> = object_entries(object, &key.key)
        .into_iter()
        .map(|(field, entry)| {
            let mut row = index_prefix(partition, &key.bucket_type, &key.bucket, &field);
            row.extend_from_slice(&entry);
            row
        })
        .collect();
    rows.sort();
    rows
}

/// What changes in the index when a key's rows go from `old` to `new`
/// (both sorted): (rows to delete, rows to put).
pub(super) fn changes(old: Vec<Vec<u8>>, new: Vec<Vec<u8>>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let gone = old.iter().filter(|r| new.binary_search(r).is_err()).cloned().collect();
    let added = new.iter().filter(|r| old.binary_search(r).is_err()).cloned().collect();
    (gone, added)
}

/// `after` moved one past itself: the next entry to read.
fn past(prefix: &[u8], after: &[u8]) -> Vec<u8> {
    let mut at = prefix.to_vec();
    at.extend_from_slice(after);
    at.push(0);
    at
}

/// One page of `request` in `partition`, after the entry `after`.
/// `objects` reads the object keyspace, `index` the index keyspace.
pub(super) fn page(
    objects: VisitRange<'_>,
    index: VisitRange<'_>,
    partition: Partition,
    request: &IndexRequest,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<IndexPage, StorageError> {
    let limit = limit.max(1);
    let bucket = bucket_prefix(partition, &request.bucket_type, &request.bucket);
    let (prefix, from, to, visit, live) = match &request.query {
        IndexQuery::Bucket => (bucket.clone(), bucket.clone(), prefix_end(&bucket), objects, true),
        IndexQuery::Keys { start, end } => {
            let mut from = bucket.clone();
            from.extend_from_slice(start);
            (bucket.clone(), from, Some(past(&bucket, end)), objects, true)
        }
        IndexQuery::Field { field, start, end } => {
            let prefix = index_prefix(partition, &request.bucket_type, &request.bucket, field);
            let mut from = prefix.clone();
            from.extend_from_slice(&encode_term(start));
            let mut last = prefix.clone();
            last.extend_from_slice(&encode_term(end));
            (prefix, from, prefix_end(&last), index, false)
        }
    };
    let from = match after {
        Some(after) => from.max(past(&prefix, after)),
        None => from,
    };
    let mut page = IndexPage::default();
    if to.as_ref().is_some_and(|to| from >= *to) {
        return Ok(page);
    }
    let mut examined = 0;
    visit(&from, to.as_deref(), &mut |raw, value| {
        let entry = &raw[prefix.len()..];
        let wanted = request.matches(entry) && (!live || !decode_object(value)?.is_tombstone());
        if wanted {
            page.entries.push(Bytes::copy_from_slice(entry));
        }
        examined += 1;
        if examined == limit {
            page.resume = Some(Bytes::copy_from_slice(entry));
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(page)
}

/// The same page computed from the objects alone (the trait's default, for
/// wrappers that keep no index; and the reference the conformance suite
/// holds engines to): reads the whole bucket.
pub(super) fn page_from_objects(
    objects: VisitRange<'_>,
    partition: Partition,
    request: &IndexRequest,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<IndexPage, StorageError> {
    let Some(field) = request.query.field() else {
        return page(objects, objects, partition, request, after, limit);
    };
    let bucket = bucket_prefix(partition, &request.bucket_type, &request.bucket);
    let mut found = Vec::new();
    objects(&bucket, prefix_end(&bucket).as_deref(), &mut |raw, value| {
        let key = &raw[bucket.len()..];
        for (f, entry) in object_entries(&decode_object(value)?, key) {
            if f == field && request.query.covers(&entry) && request.matches(&entry) {
                found.push(Bytes::from(entry));
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    found.sort();
    found.retain(|e| after.is_none_or(|after| e.as_ref() > after));
    let limit = limit.max(1);
    let resume = (found.len() > limit).then(|| found[limit - 1].clone());
    found.truncate(limit);
    Ok(IndexPage { entries: found, resume })
}
