//! Domain <-> protobuf conversion for the replica and transfer services.
//!
//! This is the only place where replica and transfer protobuf messages turn
//! into domain types and back, so every rule about what a peer may send us
//! lives here: a missing required field, a sibling dot with counter 0, or an
//! object whose siblings break the DVV invariants ([`Object::from_parts`]) is
//! refused with `InvalidArgument` before it reaches the replica. Outgoing
//! conversions cannot fail.

use tonic::Status;

use super::pb::coordinate_request::Mutation as PbMutation;
use super::{pb, transfer_pb};
use crate::core::digest::Digest;
use crate::core::key::ObjectKey;
use crate::core::object::{Content, Link, Metadata, Mutation, Object, Sibling};
use crate::core::vclock::{Dot, VersionVector};
use crate::storage::Reaped;

/// Unwraps a message field proto3 makes optional but we require.
pub fn required<T>(field: Option<T>, name: &str) -> Result<T, Status> {
    field.ok_or_else(|| Status::invalid_argument(format!("missing field `{name}`")))
}

pub fn key_to_pb(key: &ObjectKey) -> pb::ObjectKey {
    pb::ObjectKey { bucket_type: key.bucket_type.clone(), bucket: key.bucket.clone(), key: key.key.clone() }
}

/// Every byte string is a valid key part, so this cannot fail.
pub fn key_from_pb(key: pb::ObjectKey) -> ObjectKey {
    ObjectKey::new(key.bucket_type, key.bucket, key.key)
}

pub fn clock_to_pb(clock: &VersionVector) -> Vec<pb::ClockEntry> {
    clock.iter().map(|(actor, counter)| pb::ClockEntry { actor, counter }).collect()
}

/// A clock entry with counter 0 means "nothing seen" and is dropped; an
/// actor listed twice keeps its maximum. Both are harmless, so they are
/// accepted (`VersionVector::from_entries` normalises them).
pub fn clock_from_pb(entries: &[pb::ClockEntry]) -> VersionVector {
    VersionVector::from_entries(entries.iter().map(|e| (e.actor, e.counter)))
}

pub fn digest_to_pb(digest: &Digest) -> pb::ObjectDigest {
    pb::ObjectDigest {
        clock: clock_to_pb(digest.clock()),
        siblings: digest
            .siblings()
            .iter()
            .map(|(dot, hash)| pb::SiblingDigest { actor: dot.actor, counter: dot.counter, hash: *hash })
            .collect(),
    }
}

/// A peer's digest, checked as [`Digest::from_parts`] does (a sibling dot
/// with counter 0, twice, or outside the clock is refused).
pub fn digest_from_pb(digest: pb::ObjectDigest) -> Result<Digest, Status> {
    let siblings = digest.siblings.iter().map(|s| (Dot { actor: s.actor, counter: s.counter }, s.hash)).collect();
    Digest::from_parts(clock_from_pb(&digest.clock), siblings)
        .map_err(|e| Status::invalid_argument(format!("invalid digest: {e}")))
}

pub fn content_to_pb(content: &Content) -> pb::Put {
    pb::Put {
        content_type: content.content_type.clone(),
        last_modified_ms: content.last_modified_ms,
        value: content.value.clone(),
        meta: meta_to_pb(&content.meta),
    }
}

pub fn content_from_pb(put: pb::Put) -> Content {
    Content {
        value: put.value,
        content_type: put.content_type,
        last_modified_ms: put.last_modified_ms,
        meta: meta_from_pb(put.meta),
    }
}

/// `None` for no metadata (the common case, and what older peers send).
fn meta_to_pb(meta: &Metadata) -> Option<pb::Metadata> {
    if meta.is_empty() {
        return None;
    }
    let pairs = |pairs: &[(String, String)]| {
        pairs.iter().map(|(name, value)| pb::Pair { name: name.clone(), value: value.clone() }).collect()
    };
    Some(pb::Metadata {
        charset: meta.charset.clone(),
        content_encoding: meta.content_encoding.clone(),
        content_language: meta.content_language.clone(),
        user_meta: pairs(&meta.user_meta),
        links: meta
            .links
            .iter()
            .map(|l| pb::Link { bucket: l.bucket.clone(), key: l.key.clone(), tag: l.tag.clone() })
            .collect(),
        indexes: pairs(&meta.indexes),
    })
}

/// Sorted and de-duplicated as `Metadata` documents, whatever a peer sent:
/// replicas compare siblings by value, so one value's metadata must have
/// one form.
fn meta_from_pb(meta: Option<pb::Metadata>) -> Metadata {
    let Some(meta) = meta else { return Metadata::default() };
    let pairs = |pairs: Vec<pb::Pair>| {
        let mut pairs: Vec<(String, String)> = pairs.into_iter().map(|p| (p.name, p.value)).collect();
        pairs.sort();
        pairs.dedup();
        pairs
    };
    Metadata {
        charset: meta.charset,
        content_encoding: meta.content_encoding,
        content_language: meta.content_language,
        user_meta: pairs(meta.user_meta),
        links: meta.links.into_iter().map(|l| Link { bucket: l.bucket, key: l.key, tag: l.tag }).collect(),
        indexes: pairs(meta.indexes),
    }
}

pub fn mutation_to_pb(mutation: &Mutation) -> PbMutation {
    match mutation {
        Mutation::Put(content) => PbMutation::Put(content_to_pb(content)),
        Mutation::Replace(content) => PbMutation::Replace(content_to_pb(content)),
        Mutation::Increment { delta, last_modified_ms } => {
            PbMutation::Increment(pb::Increment { delta: *delta, last_modified_ms: *last_modified_ms })
        }
        Mutation::Delete => PbMutation::Delete(pb::Delete {}),
    }
}

/// `None` is a request that says neither put nor delete: refused.
pub fn mutation_from_pb(mutation: Option<PbMutation>) -> Result<Mutation, Status> {
    match required(mutation, "mutation")? {
        PbMutation::Put(put) => Ok(Mutation::Put(content_from_pb(put))),
        PbMutation::Replace(put) => Ok(Mutation::Replace(content_from_pb(put))),
        PbMutation::Increment(pb::Increment { delta, last_modified_ms }) => {
            Ok(Mutation::Increment { delta, last_modified_ms })
        }
        PbMutation::Delete(pb::Delete {}) => Ok(Mutation::Delete),
    }
}

pub fn object_to_pb(object: &Object) -> pb::Object {
    let siblings = object
        .siblings()
        .iter()
        .map(|s| pb::Sibling {
            actor: s.dot.actor,
            counter: s.dot.counter,
            content_type: s.content.content_type.clone(),
            last_modified_ms: s.content.last_modified_ms,
            value: s.content.value.clone(),
            meta: meta_to_pb(&s.content.meta),
        })
        .collect();
    pb::Object { clock: clock_to_pb(object.clock()), siblings }
}

/// Rebuilds and validates an object a peer sent. An invalid one would break
/// merge's laws on this replica (two values under one dot, a value its own
/// clock says was superseded), so it is refused rather than stored.
pub fn object_from_pb(object: pb::Object) -> Result<Object, Status> {
    let clock = clock_from_pb(&object.clock);
    let siblings = object
        .siblings
        .into_iter()
        .map(|s| {
            if s.counter == 0 {
                return Err(Status::invalid_argument(format!(
                    "invalid object: sibling of actor {} has counter 0",
                    s.actor
                )));
            }
            let content = Content {
                value: s.value,
                content_type: s.content_type,
                last_modified_ms: s.last_modified_ms,
                meta: meta_from_pb(s.meta),
            };
            Ok(Sibling { dot: Dot { actor: s.actor, counter: s.counter }, content })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Object::from_parts(clock, siblings).map_err(|e| Status::invalid_argument(format!("invalid object: {e}")))
}

pub fn entry_to_pb(key: &ObjectKey, object: &Object) -> transfer_pb::Entry {
    transfer_pb::Entry { key: Some(key_to_pb(key)), object: Some(object_to_pb(object)) }
}

pub fn entry_from_pb(entry: transfer_pb::Entry) -> Result<(ObjectKey, Object), Status> {
    let key = key_from_pb(required(entry.key, "entry.key")?);
    let object = object_from_pb(required(entry.object, "entry.object")?)?;
    Ok((key, object))
}

pub fn reaped_to_pb(key: &ObjectKey, reaped: &Reaped) -> transfer_pb::ReapedEntry {
    transfer_pb::ReapedEntry {
        key: Some(key_to_pb(key)),
        clock: clock_to_pb(&reaped.clock),
        reaped_at_ms: reaped.reaped_at_ms,
    }
}

/// A reap record without a clock would protect nothing: refused.
pub fn reaped_from_pb(entry: transfer_pb::ReapedEntry) -> Result<(ObjectKey, Reaped), Status> {
    let key = key_from_pb(required(entry.key, "reaped.key")?);
    let clock = clock_from_pb(&entry.clock);
    if clock.is_empty() {
        return Err(Status::invalid_argument("reap record without a clock"));
    }
    Ok((key, Reaped { clock, reaped_at_ms: entry.reaped_at_ms }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..12)
    }

    fn arb_key() -> impl Strategy<Value = ObjectKey> {
        (arb_bytes(), arb_bytes(), arb_bytes()).prop_map(|(t, b, k)| ObjectKey::new(t, b, k))
    }

    /// Metadata in its normal form (pairs sorted and unique).
    fn arb_meta() -> impl Strategy<Value = Metadata> {
        let text = || proptest::option::of("[a-z0-9-]{0,8}");
        let pairs = || proptest::collection::btree_set(("[a-z_]{1,6}", "[ -~]{0,6}"), 0..3);
        let link = (arb_bytes(), arb_bytes(), arb_bytes()).prop_map(|(b, k, t)| Link {
            bucket: b.into(),
            key: k.into(),
            tag: t.into(),
        });
        (text(), text(), text(), pairs(), proptest::collection::vec(link, 0..3), pairs()).prop_map(
            |(charset, content_encoding, content_language, user_meta, links, indexes)| Metadata {
                charset,
                content_encoding,
                content_language,
                user_meta: user_meta.into_iter().collect(),
                links,
                indexes: indexes.into_iter().collect(),
            },
        )
    }

    fn arb_content() -> impl Strategy<Value = Content> {
        (arb_bytes(), "[a-z/+-]{0,20}", any::<u64>(), arb_meta()).prop_map(
            |(value, content_type, last_modified_ms, meta)| Content {
                value: Bytes::from(value),
                content_type,
                last_modified_ms,
                meta,
            },
        )
    }

    fn arb_clock() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..6, 0u64..8), 0..6).prop_map(VersionVector::from_entries)
    }

    /// Valid objects only: built by the domain's own operations.
    fn arb_object() -> impl Strategy<Value = Object> {
        let write = (1u64..4, arb_clock(), proptest::option::of(arb_content()));
        proptest::collection::vec(write, 0..8).prop_map(|writes| {
            let mut object = Object::new();
            for (actor, context, content) in writes {
                let mutation = content.map_or(Mutation::Delete, Mutation::Put);
                object.update(actor, &context, mutation).expect("small counters");
            }
            object
        })
    }

    #[test]
    fn a_digest_round_trips_and_a_bad_one_is_refused() {
        let mut object = Object::new();
        object
            .update(
                3,
                &VersionVector::new(),
                Mutation::Put(Content { value: Bytes::from_static(b"v"), ..Default::default() }),
            )
            .unwrap();
        let digest = Digest::of(&object);
        assert_eq!(digest_from_pb(digest_to_pb(&digest)).unwrap(), digest);
        // A sibling its clock does not cover, one with counter 0, and a
        // dot twice: a peer's digest is input, refused with a reason.
        for siblings in [
            vec![pb::SiblingDigest { actor: 3, counter: 2, hash: 0 }],
            vec![pb::SiblingDigest { actor: 3, counter: 0, hash: 0 }],
            vec![
                pb::SiblingDigest { actor: 3, counter: 1, hash: 0 },
                pb::SiblingDigest { actor: 3, counter: 1, hash: 1 },
            ],
        ] {
            let bad = pb::ObjectDigest { clock: vec![pb::ClockEntry { actor: 3, counter: 1 }], siblings };
            let status = digest_from_pb(bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with("invalid digest"), "{}", status.message());
        }
    }

    proptest! {
        #[test]
        fn key_round_trips(key in arb_key()) {
            prop_assert_eq!(key_from_pb(key_to_pb(&key)), key);
        }

        #[test]
        fn clock_round_trips(clock in arb_clock()) {
            prop_assert_eq!(clock_from_pb(&clock_to_pb(&clock)), clock);
        }

        #[test]
        fn mutation_round_trips(content in proptest::option::of(arb_content()), kind in 0u8..3, delta: i64) {
            let mutation = match (content, kind) {
                (None, _) => Mutation::Delete,
                (Some(c), 0) => Mutation::Put(c),
                (Some(c), 1) => Mutation::Replace(c),
                (Some(c), _) => Mutation::Increment { delta, last_modified_ms: c.last_modified_ms },
            };
            prop_assert_eq!(mutation_from_pb(Some(mutation_to_pb(&mutation))).unwrap(), mutation);
        }

        #[test]
        fn object_round_trips(object in arb_object()) {
            prop_assert_eq!(object_from_pb(object_to_pb(&object)).unwrap(), object);
        }

        #[test]
        fn entry_round_trips(key in arb_key(), object in arb_object()) {
            prop_assert_eq!(entry_from_pb(entry_to_pb(&key, &object)).unwrap(), (key, object));
        }
    }

    fn sibling(actor: u64, counter: u64) -> pb::Sibling {
        pb::Sibling {
            actor,
            counter,
            content_type: "text/plain".into(),
            last_modified_ms: 0,
            value: Bytes::from_static(b"v"),
            meta: None,
        }
    }

    fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, needle: &str) {
        let status = result.expect_err("should be refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(needle), "{:?} lacks {needle:?}", status.message());
    }

    #[test]
    fn invalid_objects_are_refused() {
        let clock = vec![pb::ClockEntry { actor: 1, counter: 2 }];
        let uncovered = pb::Object { clock: clock.clone(), siblings: vec![sibling(1, 3)] };
        assert_invalid(object_from_pb(uncovered), "not covered");
        let shared_dot = pb::Object { clock: clock.clone(), siblings: vec![sibling(1, 2), sibling(1, 2)] };
        assert_invalid(object_from_pb(shared_dot), "share dot");
        let zero = pb::Object { clock, siblings: vec![sibling(1, 0)] };
        assert_invalid(object_from_pb(zero), "counter 0");
    }

    #[test]
    fn siblings_arrive_in_any_order() {
        let clock = vec![pb::ClockEntry { actor: 1, counter: 2 }, pb::ClockEntry { actor: 2, counter: 1 }];
        let object = pb::Object { clock, siblings: vec![sibling(2, 1), sibling(1, 2)] };
        let object = object_from_pb(object).unwrap();
        let dots: Vec<Dot> = object.siblings().iter().map(|s| s.dot).collect();
        assert_eq!(dots, [Dot::new(1, 2), Dot::new(2, 1)]);
    }

    #[test]
    fn missing_fields_are_refused() {
        assert_invalid(mutation_from_pb(None), "mutation");
        assert_invalid(required(None::<pb::ObjectKey>, "key"), "key");
        let no_object = transfer_pb::Entry { key: Some(pb::ObjectKey::default()), object: None };
        assert_invalid(entry_from_pb(no_object), "entry.object");
    }
}
