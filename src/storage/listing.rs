//! Listing a bucket's keys and a type's buckets in one partition, in
//! bounded pages, on any engine that can visit a key range in order.
//!
//! A bucket's keys in a partition are one contiguous range
//! (`codec::bucket_prefix`), so a page of keys is one range read. The
//! buckets of a type are found without reading every key: once a bucket is
//! known to hold a live object, the read jumps past the bucket's range.
//! Tombstones (objects without siblings) are not listed, and a bucket that
//! holds only tombstones is not either. Every page examines at most `limit`
//! records, tombstones included, so a page's work is bounded even when it
//! finds nothing to list; its cursor says where the next one starts.

use std::ops::ControlFlow;

use bytes::Bytes;

use super::codec::{bucket_prefix, decode_key, decode_object, prefix_end, type_prefix};
use super::{BucketCursor, BucketPage, KeyPage, StorageError};
use crate::core::ring::Partition;

/// Visits the records of `[from, to)` in key order (`to`: `None` for no
/// bound) until the visitor breaks; what an engine provides.
pub(super) type Visit<'v> = &'v mut dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, StorageError>;

/// An engine's range read: `[from, to)` through a visitor.
pub(super) type VisitRange<'r> = &'r dyn Fn(&[u8], Option<&[u8]>, Visit<'_>) -> Result<(), StorageError>;

/// The key right after `key` in byte order: `key` followed by a zero byte.
fn after(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.extend_from_slice(key);
    out.push(0);
    out
}

fn live(value: &[u8]) -> Result<bool, StorageError> {
    Ok(!decode_object(value)?.is_tombstone())
}

/// Up to `limit` records of one bucket's range after `after_key`.
pub(super) fn list_keys(
    visit_range: VisitRange<'_>,
    partition: Partition,
    bucket_type: &[u8],
    bucket: &[u8],
    after_key: Option<&[u8]>,
    limit: usize,
) -> Result<KeyPage, StorageError> {
    let limit = limit.max(1);
    let prefix = bucket_prefix(partition, bucket_type, bucket);
    let end = prefix_end(&prefix);
    let from = match after_key {
        Some(key) => {
            let mut from = prefix.clone();
            from.extend_from_slice(&after(key));
            from
        }
        None => prefix.clone(),
    };
    let mut page = KeyPage::default();
    let mut examined = 0;
    visit_range(&from, end.as_deref(), &mut |raw_key, value| {
        let key = &raw_key[prefix.len()..];
        if live(value)? {
            page.keys.push(Bytes::copy_from_slice(key));
        }
        examined += 1;
        if examined == limit {
            page.resume = Some(Bytes::copy_from_slice(key));
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(page)
}

/// Up to `limit` records' worth of the distinct buckets of one type.
pub(super) fn list_buckets(
    visit_range: VisitRange<'_>,
    partition: Partition,
    bucket_type: &[u8],
    from: Option<&BucketCursor>,
    limit: usize,
) -> Result<BucketPage, StorageError> {
    let limit = limit.max(1);
    let type_start = type_prefix(partition, bucket_type);
    let type_end = prefix_end(&type_start);
    let mut position = match from {
        None => Some(type_start.clone()),
        Some(BucketCursor::AfterBucket(bucket)) => prefix_end(&bucket_prefix(partition, bucket_type, bucket)),
        Some(BucketCursor::Within { bucket, after_key }) => {
            let mut at = bucket_prefix(partition, bucket_type, bucket);
            at.extend_from_slice(&after(after_key));
            Some(at)
        }
    };
    let mut page = BucketPage::default();
    let mut examined = 0;
    while let Some(at) = position.take() {
        if type_end.as_ref().is_some_and(|end| at >= *end) {
            break;
        }
        // What stopped this range read: a live bucket, or the page's budget.
        let mut found: Option<Bytes> = None;
        visit_range(&at, type_end.as_deref(), &mut |raw_key, value| {
            let (_, key) = decode_key(raw_key)?;
            examined += 1;
            if live(value)? {
                found = Some(key.bucket);
                return Ok(ControlFlow::Break(()));
            }
            if examined >= limit {
                page.resume = Some(BucketCursor::Within { bucket: key.bucket, after_key: key.key });
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        match found {
            Some(bucket) => {
                position = prefix_end(&bucket_prefix(partition, bucket_type, &bucket));
                if examined >= limit {
                    // Jump past it on the next page; the bucket is listed.
                    page.resume = position.is_some().then(|| BucketCursor::AfterBucket(bucket.clone()));
                    position = None;
                }
                page.buckets.push(bucket);
            }
            None => break,
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_after_another_sorts_right_after_it() {
        assert!(after(b"a").as_slice() > b"a".as_slice());
        assert!(after(b"a").as_slice() < b"a\x00\x00".as_slice());
        assert!(after(b"a").as_slice() < b"b".as_slice());
    }
}
