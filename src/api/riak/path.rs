//! Riak's resource paths, decoded to raw bytes.
//!
//! Segments are decoded as Riak's `mochiweb_util:unquote` does (Riak's
//! `http_url_encoding = on`): `%XX` escapes and `+` as a space, since
//! Riak's clients quote names with `quote_plus`. Decoding yields bytes, so a
//! key need not be UTF-8. Names are never empty.
//!
//! * `/types/T/buckets/B/keys/K` (bucket type T)
//! * `/buckets/B/keys/K` (bucket type `default`)
//! * `/riak/B/K` (the legacy form, type `default`)
//!
//! and the same without the key, for POST with a server-chosen key.

use bytes::Bytes;

use crate::core::key::{DEFAULT_NAMESPACE, ObjectKey};

/// Which of Riak's URL schemes a request used; answers (Location, Link)
/// are written in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `/riak/B/K`
    Legacy,
    /// `/buckets/B/keys/K`
    Buckets,
    /// `/types/T/buckets/B/keys/K`
    Types,
}

/// An object path, or a bucket's path when the key is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    pub scheme: Scheme,
    pub bucket_type: Bytes,
    pub bucket: Bytes,
    pub key: Option<Bytes>,
}

impl ObjectPath {
    pub fn object_key(&self, key: Bytes) -> ObjectKey {
        ObjectKey { bucket_type: self.bucket_type.clone(), bucket: self.bucket.clone(), key }
    }

    /// The path of `key` in this bucket, in this request's scheme (for
    /// `Location`), each name quoted as Riak quotes it.
    pub fn location(&self, key: &[u8]) -> String {
        let (b, k) = (quote(&self.bucket), quote(key));
        match self.scheme {
            Scheme::Legacy => format!("/riak/{b}/{k}"),
            Scheme::Buckets => format!("/buckets/{b}/keys/{k}"),
            Scheme::Types => format!("/types/{}/buckets/{b}/keys/{k}", quote(&self.bucket_type)),
        }
    }
}

/// Parses an object or bucket-POST path; `None` when `path` is not one.
pub fn object_path(path: &str) -> Option<ObjectPath> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let default = || Bytes::from_static(DEFAULT_NAMESPACE.as_bytes());
    let (scheme, bucket_type, bucket, key) = match segments.as_slice() {
        ["types", t, "buckets", b, "keys", k] => (Scheme::Types, name(t)?, name(b)?, Some(name(k)?)),
        ["types", t, "buckets", b, "keys"] => (Scheme::Types, name(t)?, name(b)?, None),
        ["buckets", b, "keys", k] => (Scheme::Buckets, default(), name(b)?, Some(name(k)?)),
        ["buckets", b, "keys"] => (Scheme::Buckets, default(), name(b)?, None),
        ["riak", b, k] => (Scheme::Legacy, default(), name(b)?, Some(name(k)?)),
        ["riak", b] => (Scheme::Legacy, default(), name(b)?, None),
        _ => return None,
    };
    Some(ObjectPath { scheme, bucket_type, bucket, key })
}

/// Parses a counter path, `/buckets/B/counters/K` or
/// `/types/T/buckets/B/counters/K` (Riak's 1.4 counters).
pub fn counter_path(path: &str) -> Option<ObjectPath> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (scheme, bucket_type, bucket, key) = match segments.as_slice() {
        ["types", t, "buckets", b, "counters", k] => (Scheme::Types, name(t)?, name(b)?, name(k)?),
        ["buckets", b, "counters", k] => {
            (Scheme::Buckets, Bytes::from_static(DEFAULT_NAMESPACE.as_bytes()), name(b)?, name(k)?)
        }
        _ => return None,
    };
    Some(ObjectPath { scheme, bucket_type, bucket, key: Some(key) })
}

/// A secondary-index query's path (`api::riak::index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPath {
    pub bucket_type: Bytes,
    pub bucket: Bytes,
    /// The index name, decoded (`$key`, `$bucket`, `NAME_bin`, `NAME_int`).
    pub field: Vec<u8>,
    /// The decoded segments after it: the query's terms (may be empty).
    pub terms: Vec<Vec<u8>>,
}

/// Parses `/buckets/B/index/FIELD/...` or `/types/T/buckets/B/index/FIELD/...`.
pub fn index_path(path: &str) -> Option<IndexPath> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (bucket_type, bucket, field, terms) = match segments.as_slice() {
        ["types", t, "buckets", b, "index", field, terms @ ..] => (name(t)?, name(b)?, field, terms),
        ["buckets", b, "index", field, terms @ ..] => {
            (Bytes::from_static(DEFAULT_NAMESPACE.as_bytes()), name(b)?, field, terms)
        }
        _ => return None,
    };
    let terms = terms.iter().map(|t| unquote(t)).collect();
    Some(IndexPath { bucket_type, bucket, field: unquote(field), terms })
}

/// One decoded, non-empty path segment.
pub fn name(segment: &str) -> Option<Bytes> {
    let decoded = unquote(segment);
    (!decoded.is_empty()).then(|| Bytes::from(decoded))
}

/// `%XX` escapes and `+` as a space, as `mochiweb_util:unquote`; a `%` not
/// followed by two hex digits stays as it is.
pub fn unquote(segment: &str) -> Vec<u8> {
    let raw = segment.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() && hex(raw[i + 1]).is_some() && hex(raw[i + 2]).is_some() => {
                out.push(hex(raw[i + 1]).unwrap() << 4 | hex(raw[i + 2]).unwrap());
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Quotes a name for a path as Riak's `mochiweb_util:quote_plus` does:
/// letters, digits and `.-~_` stay, a space is `+`, the rest `%XX`.
pub fn quote(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'~' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_schemes() {
        let p = object_path("/types/maps/buckets/b%2Fx/keys/a+b%00").unwrap();
        assert_eq!(p.scheme, Scheme::Types);
        assert_eq!((&p.bucket_type[..], &p.bucket[..]), (&b"maps"[..], &b"b/x"[..]));
        assert_eq!(p.key.as_deref(), Some(&b"a b\0"[..]));
        let p = object_path("/buckets/b/keys/k").unwrap();
        assert_eq!(
            (p.scheme, &p.bucket_type[..], p.key.as_deref()),
            (Scheme::Buckets, &b"default"[..], Some(&b"k"[..]))
        );
        let p = object_path("/riak/b/k").unwrap();
        assert_eq!((p.scheme, &p.bucket[..]), (Scheme::Legacy, &b"b"[..]));
        assert_eq!(object_path("/buckets/b/keys").unwrap().key, None);
        assert_eq!(object_path("/riak/b").unwrap().key, None);
        for bad in ["/buckets//keys/k", "/buckets/b/keys/", "/types//buckets/b/keys/k", "/store/k", "/buckets/b/props"]
        {
            assert_eq!(object_path(bad), None, "{bad}");
        }
        assert_eq!(object_path("/buckets/b/keys/k").unwrap().location(b"new key/1"), "/buckets/b/keys/new+key%2F1");
        assert_eq!(object_path("/types/t/buckets/b/keys").unwrap().location(b"k"), "/types/t/buckets/b/keys/k");
        assert_eq!(object_path("/riak/b").unwrap().location(b"k"), "/riak/b/k");
        let c = counter_path("/types/t/buckets/b/counters/c+1").unwrap();
        assert_eq!((&c.bucket_type[..], c.key.as_deref()), (&b"t"[..], Some(&b"c 1"[..])));
        assert_eq!(counter_path("/buckets/b/counters/c").unwrap().bucket_type, "default");
        assert_eq!(counter_path("/buckets/b/keys/c"), None);
    }

    #[test]
    fn unquote_keeps_broken_escapes() {
        assert_eq!(unquote("100%"), b"100%");
        assert_eq!(unquote("%4"), b"%4");
        assert_eq!(unquote("%zz%41"), b"%zzA");
        assert_eq!(unquote("%ff"), b"\xff");
    }

    proptest! {
        #[test]
        fn quote_round_trips(name in proptest::collection::vec(any::<u8>(), 1..24)) {
            let quoted = quote(&name);
            prop_assert!(!quoted.contains('/'));
            prop_assert_eq!(unquote(&quoted), name);
        }
    }
}
