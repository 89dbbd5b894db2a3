//! The on-disk record format, shared by every engine.
//!
//! Key:   partition (u32 BE) | len(bucket type) (u32 BE) | bucket type |
//!        len(bucket) (u32 BE) | bucket | key
//! Value: format version (u8) | postcard-encoded `RecordV1`, or `RecordV2`
//!        when a sibling carries Riak metadata (`Metadata`): a record
//!        without any stays in format 1, readable by older releases.
//!
//! Hints (a fallback's note that a key's object belongs to another node):
//! Key:   partition (u32 BE) | len(bucket type) | bucket type | len(bucket) |
//!        bucket | len(key) (u32 BE) | key | target node id (UTF-8)
//! Value: format version (u8), nothing else yet
//!
//! A hint key starts with the object key's fields, each length-prefixed, so
//! the hints of one key are one contiguous range ([`hint_prefix`]).
//!
//! Reap records (`Store::reap`): the object's key format, in a space of
//! their own. Value: format version (u8) | postcard-encoded `ReapedV1`.
//!
//! The partition prefix makes a partition one contiguous range. The record
//! types here are separate from the in-memory `Object` so that a refactor of
//! the core cannot silently change what is on disk; a new format gets a new
//! version byte and a decoder next to the old one.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Hint, Reaped, StorageError};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::{Content, Link, Metadata, Object, Sibling};
use crate::core::ring::Partition;
use crate::core::vclock::{Dot, VersionVector};

pub const FORMAT_V1: u8 = 1;
/// Objects whose siblings carry metadata.
pub const FORMAT_V2: u8 = 2;

#[derive(Serialize, Deserialize)]
struct RecordV1 {
    clock: Vec<(u64, u64)>,
    siblings: Vec<SiblingV1>,
}

#[derive(Serialize, Deserialize)]
struct SiblingV1 {
    actor: u64,
    counter: u64,
    content_type: String,
    last_modified_ms: u64,
    value: Bytes,
}

#[derive(Serialize, Deserialize)]
struct RecordV2 {
    clock: Vec<(u64, u64)>,
    siblings: Vec<SiblingV2>,
}

#[derive(Serialize, Deserialize)]
struct SiblingV2 {
    actor: u64,
    counter: u64,
    content_type: String,
    last_modified_ms: u64,
    value: Bytes,
    meta: MetaV2,
}

#[derive(Serialize, Deserialize)]
struct MetaV2 {
    charset: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    user_meta: Vec<(String, String)>,
    /// (bucket, key, tag)
    links: Vec<(Bytes, Bytes, Bytes)>,
    indexes: Vec<(String, String)>,
}

impl MetaV2 {
    fn from_meta(meta: &Metadata) -> MetaV2 {
        MetaV2 {
            charset: meta.charset.clone(),
            content_encoding: meta.content_encoding.clone(),
            content_language: meta.content_language.clone(),
            user_meta: meta.user_meta.clone(),
            links: meta.links.iter().map(|l| (l.bucket.clone(), l.key.clone(), l.tag.clone())).collect(),
            indexes: meta.indexes.clone(),
        }
    }

    fn into_meta(self) -> Metadata {
        Metadata {
            charset: self.charset,
            content_encoding: self.content_encoding,
            content_language: self.content_language,
            user_meta: self.user_meta,
            links: self.links.into_iter().map(|(bucket, key, tag)| Link { bucket, key, tag }).collect(),
            indexes: self.indexes,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ReapedV1 {
    clock: Vec<(u64, u64)>,
    reaped_at_ms: u64,
}

pub fn encode_reaped(reaped: &Reaped) -> Vec<u8> {
    let record = ReapedV1 { clock: reaped.clock.iter().collect(), reaped_at_ms: reaped.reaped_at_ms };
    let mut out = vec![FORMAT_V1];
    postcard::to_io(&record, &mut out).expect("writing to a Vec cannot fail");
    out
}

pub fn decode_reaped(raw: &[u8]) -> Result<Reaped, StorageError> {
    let (&version, body) = raw.split_first().ok_or_else(|| StorageError::Corrupt("empty reap record".into()))?;
    if version != FORMAT_V1 {
        return Err(StorageError::UnsupportedVersion { found: version, supported: FORMAT_V1 });
    }
    let record: ReapedV1 = take_all(body, "reap record v1")?;
    Ok(Reaped { clock: VersionVector::from_entries(record.clock), reaped_at_ms: record.reaped_at_ms })
}

pub fn encode_key(partition: Partition, key: &ObjectKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.bucket_type.len() + key.bucket.len() + key.key.len());
    out.extend_from_slice(&partition.to_be_bytes());
    for part in [&key.bucket_type, &key.bucket] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&key.key);
    out
}

/// Everything a hint key holds before the target: one key's hint range.
pub fn hint_prefix(partition: Partition, key: &ObjectKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + key.bucket_type.len() + key.bucket.len() + key.key.len());
    out.extend_from_slice(&partition.to_be_bytes());
    for part in [&key.bucket_type, &key.bucket, &key.key] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

pub fn encode_hint_key(hint: &Hint) -> Vec<u8> {
    let mut out = hint_prefix(hint.partition, &hint.key);
    out.extend_from_slice(hint.target.as_str().as_bytes());
    out
}

pub fn decode_hint_key(raw: &[u8]) -> Result<Hint, StorageError> {
    let corrupt = || StorageError::Corrupt(format!("hint key of {} bytes is truncated", raw.len()));
    let (partition, mut rest) = split_u32(raw).ok_or_else(corrupt)?;
    let mut parts = [Bytes::new(), Bytes::new(), Bytes::new()];
    for part in &mut parts {
        let (len, tail) = split_u32(rest).ok_or_else(corrupt)?;
        let len = len as usize;
        if tail.len() < len {
            return Err(corrupt());
        }
        *part = Bytes::copy_from_slice(&tail[..len]);
        rest = &tail[len..];
    }
    let target = std::str::from_utf8(rest).map_err(|_| StorageError::Corrupt("hint target is not UTF-8".into()))?;
    if target.is_empty() {
        return Err(corrupt());
    }
    let [bucket_type, bucket, key] = parts;
    Ok(Hint { partition, key: ObjectKey { bucket_type, bucket, key }, target: NodeId::new(target) })
}

/// A hint's value: only the version byte for now.
pub fn encode_hint_value() -> Vec<u8> {
    vec![FORMAT_V1]
}

pub fn check_hint_value(raw: &[u8]) -> Result<(), StorageError> {
    match raw.first() {
        Some(&FORMAT_V1) => Ok(()),
        Some(&found) => Err(StorageError::UnsupportedVersion { found, supported: FORMAT_V1 }),
        None => Err(StorageError::Corrupt("empty hint record".into())),
    }
}

/// The first key of a partition's range.
pub fn partition_prefix(partition: Partition) -> [u8; 4] {
    partition.to_be_bytes()
}

/// The start of one bucket type's range in a partition: every key of the
/// type's buckets starts with it.
pub fn type_prefix(partition: Partition, bucket_type: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + bucket_type.len());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&(bucket_type.len() as u32).to_be_bytes());
    out.extend_from_slice(bucket_type);
    out
}

/// The start of one bucket's range in a partition: the bucket's keys are
/// the contiguous range of keys starting with it.
pub fn bucket_prefix(partition: Partition, bucket_type: &[u8], bucket: &[u8]) -> Vec<u8> {
    let mut out = type_prefix(partition, bucket_type);
    out.extend_from_slice(&(bucket.len() as u32).to_be_bytes());
    out.extend_from_slice(bucket);
    out
}

/// The start of one index field's range of one bucket in a partition, in
/// the index keyspace: its rows are this prefix followed by an entry
/// (`core::index`: the encoded term, then the key).
pub fn index_prefix(partition: Partition, bucket_type: &[u8], bucket: &[u8], field: &str) -> Vec<u8> {
    let mut out = bucket_prefix(partition, bucket_type, bucket);
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field.as_bytes());
    out
}

/// The smallest key above every key that starts with `prefix` (the end of
/// its range, exclusive); `None` when there is none (all bytes 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub fn decode_key(raw: &[u8]) -> Result<(Partition, ObjectKey), StorageError> {
    let corrupt = || StorageError::Corrupt(format!("object key of {} bytes is truncated", raw.len()));
    let (partition, mut rest) = split_u32(raw).ok_or_else(corrupt)?;
    let mut parts = [Bytes::new(), Bytes::new()];
    for part in &mut parts {
        let (len, tail) = split_u32(rest).ok_or_else(corrupt)?;
        let len = len as usize;
        if tail.len() < len {
            return Err(corrupt());
        }
        *part = Bytes::copy_from_slice(&tail[..len]);
        rest = &tail[len..];
    }
    let [bucket_type, bucket] = parts;
    Ok((partition, ObjectKey { bucket_type, bucket, key: Bytes::copy_from_slice(rest) }))
}

fn split_u32(raw: &[u8]) -> Option<(u32, &[u8])> {
    let (head, tail) = raw.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), tail))
}

pub fn encode_object(object: &Object) -> Vec<u8> {
    if object.siblings().iter().any(|s| !s.content.meta.is_empty()) {
        return encode_v2(object);
    }
    let record = RecordV1 {
        clock: object.clock().iter().collect(),
        siblings: object
            .siblings()
            .iter()
            .map(|s| SiblingV1 {
                actor: s.dot.actor,
                counter: s.dot.counter,
                content_type: s.content.content_type.clone(),
                last_modified_ms: s.content.last_modified_ms,
                value: s.content.value.clone(),
            })
            .collect(),
    };
    let mut out = Vec::with_capacity(32 + object.value_bytes());
    out.push(FORMAT_V1);
    postcard::to_io(&record, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn encode_v2(object: &Object) -> Vec<u8> {
    let record = RecordV2 {
        clock: object.clock().iter().collect(),
        siblings: object
            .siblings()
            .iter()
            .map(|s| SiblingV2 {
                actor: s.dot.actor,
                counter: s.dot.counter,
                content_type: s.content.content_type.clone(),
                last_modified_ms: s.content.last_modified_ms,
                value: s.content.value.clone(),
                meta: MetaV2::from_meta(&s.content.meta),
            })
            .collect(),
    };
    let mut out = Vec::with_capacity(64 + object.value_bytes());
    out.push(FORMAT_V2);
    postcard::to_io(&record, &mut out).expect("writing to a Vec cannot fail");
    out
}

pub fn decode_object(raw: &[u8]) -> Result<Object, StorageError> {
    let (&version, body) = raw.split_first().ok_or_else(|| StorageError::Corrupt("empty record".into()))?;
    match version {
        FORMAT_V1 => decode_v1(body),
        FORMAT_V2 => decode_v2(body),
        found => Err(StorageError::UnsupportedVersion { found, supported: FORMAT_V2 }),
    }
}

fn decode_v2(body: &[u8]) -> Result<Object, StorageError> {
    let record: RecordV2 = take_all(body, "record v2")?;
    let siblings = record.siblings.into_iter().map(|s| {
        let content = Content {
            value: s.value,
            content_type: s.content_type,
            last_modified_ms: s.last_modified_ms,
            meta: s.meta.into_meta(),
        };
        Sibling { dot: Dot { actor: s.actor, counter: s.counter }, content }
    });
    Object::from_parts(VersionVector::from_entries(record.clock), siblings.collect()).map_err(StorageError::Corrupt)
}

fn decode_v1(body: &[u8]) -> Result<Object, StorageError> {
    let record: RecordV1 = take_all(body, "record v1")?;
    let siblings = record.siblings.into_iter().map(|s| {
        let content = Content {
            value: s.value,
            content_type: s.content_type,
            last_modified_ms: s.last_modified_ms,
            meta: Metadata::default(),
        };
        Sibling { dot: Dot { actor: s.actor, counter: s.counter }, content }
    });
    Object::from_parts(VersionVector::from_entries(record.clock), siblings.collect()).map_err(StorageError::Corrupt)
}

/// One postcard record that must fill `body` exactly.
fn take_all<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, StorageError> {
    let (record, rest): (T, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))?;
    if !rest.is_empty() {
        return Err(StorageError::Corrupt(format!("{what} has {} trailing bytes", rest.len())));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::object::Mutation;

    #[test]
    fn keys_round_trip_and_sort_by_partition() {
        let k = ObjectKey::new("t", "b\0", &b"\xff key"[..]);
        let raw = encode_key(7, &k);
        assert_eq!(decode_key(&raw).unwrap(), (7, k.clone()));
        assert!(encode_key(6, &k) < raw && raw < encode_key(8, &ObjectKey::new("", "", "")));
        assert!(raw.starts_with(&partition_prefix(7)));
        assert!(decode_key(&raw[..6]).is_err());
    }

    #[test]
    fn bucket_ranges_hold_exactly_their_keys() {
        let inside = encode_key(7, &ObjectKey::new("t", "b", &b"\xff\xff"[..]));
        let prefix = bucket_prefix(7, b"t", b"b");
        let end = prefix_end(&prefix).unwrap();
        assert!(inside.starts_with(&prefix) && inside < end);
        assert!(encode_key(7, &ObjectKey::new("t", "b", "")) >= prefix);
        // A bucket whose name extends this one's is another range.
        assert!(encode_key(7, &ObjectKey::new("t", "bb", "")) >= end);
        assert!(encode_key(7, &ObjectKey::new("t", "a", "zzz")) < prefix);
        assert!(inside.starts_with(&type_prefix(7, b"t")));
        assert!(!encode_key(7, &ObjectKey::new("tt", "b", "k")).starts_with(&type_prefix(7, b"t")));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }

    #[test]
    fn hint_keys_round_trip_and_group_by_key() {
        let k = ObjectKey::new("t", "b", &b"k\0"[..]);
        let hint = Hint { partition: 7, key: k.clone(), target: NodeId::new("0123abcd") };
        let raw = encode_hint_key(&hint);
        assert_eq!(decode_hint_key(&raw).unwrap(), hint);
        assert!(raw.starts_with(&hint_prefix(7, &k)));
        // A key that extends another is not in its range.
        let longer = ObjectKey::new("t", "b", &b"k\0x"[..]);
        assert!(!hint_prefix(7, &longer).starts_with(&hint_prefix(7, &k)));
        assert!(decode_hint_key(&raw[..raw.len() - 8]).is_err());
        check_hint_value(&encode_hint_value()).unwrap();
        assert!(check_hint_value(&[9]).is_err());
    }

    #[test]
    fn objects_round_trip_with_version_byte() {
        let mut o = Object::new();
        let c = Content {
            value: Bytes::from_static(b"v"),
            content_type: "a/b".into(),
            last_modified_ms: 42,
            meta: Default::default(),
        };
        o.update(9, &VersionVector::new(), Mutation::Put(c.clone())).unwrap();
        o.update(9, &VersionVector::new(), Mutation::Put(c)).unwrap();
        let raw = encode_object(&o);
        assert_eq!(raw[0], FORMAT_V1);
        assert_eq!(decode_object(&raw).unwrap(), o);
        // Metadata on any sibling: format 2, round trip included.
        let meta = Metadata {
            charset: Some("utf-8".into()),
            user_meta: vec![("a".into(), "b".into())],
            links: vec![Link { bucket: "b".into(), key: "k".into(), tag: "t".into() }],
            indexes: vec![("x_int".into(), "7".into())],
            ..Default::default()
        };
        let c = Content { value: Bytes::from_static(b"w"), content_type: "a/b".into(), last_modified_ms: 43, meta };
        o.update(9, &VersionVector::new(), Mutation::Put(c)).unwrap();
        let raw = encode_object(&o);
        assert_eq!(raw[0], FORMAT_V2);
        assert_eq!(decode_object(&raw).unwrap(), o);
        assert!(decode_object(&raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn reap_records_round_trip_with_version_byte() {
        let reaped = Reaped { clock: VersionVector::from_entries([(3, 4), (9, 1)]), reaped_at_ms: 77 };
        let raw = encode_reaped(&reaped);
        assert_eq!(raw[0], FORMAT_V1);
        assert_eq!(decode_reaped(&raw).unwrap(), reaped);
        assert!(matches!(decode_reaped(&[2]), Err(StorageError::UnsupportedVersion { found: 2, .. })));
        assert!(decode_reaped(&[]).is_err());
        assert!(decode_reaped(&raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors() {
        assert!(matches!(decode_object(&[3, 0]), Err(StorageError::UnsupportedVersion { found: 3, .. })));
        assert!(matches!(decode_object(&[]), Err(StorageError::Corrupt(_))));
        assert!(matches!(decode_object(&[1, 0xff, 0xff]), Err(StorageError::Corrupt(_))));
        let mut raw = encode_object(&Object::new());
        raw.push(0);
        assert!(matches!(decode_object(&raw), Err(StorageError::Corrupt(_))));
    }
}
