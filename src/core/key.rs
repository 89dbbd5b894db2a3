//! Names: which key an object lives under, and which node holds it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// The bucket type and bucket used by the original `/store/{key}` API.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A key in its namespace, as Riak names objects: (bucket type, bucket, key).
/// All three are arbitrary bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub bucket_type: Bytes,
    pub bucket: Bytes,
    pub key: Bytes,
}

impl ObjectKey {
    pub fn new(bucket_type: impl Into<Bytes>, bucket: impl Into<Bytes>, key: impl Into<Bytes>) -> ObjectKey {
        ObjectKey { bucket_type: bucket_type.into(), bucket: bucket.into(), key: key.into() }
    }

    /// `/store/{key}`: the key in bucket `default` of bucket type `default`.
    pub fn in_default_bucket(key: impl Into<Bytes>) -> ObjectKey {
        ObjectKey::new(DEFAULT_NAMESPACE, DEFAULT_NAMESPACE, key)
    }

    /// The bytes the ring hashes. Length prefixes keep ("ab","c") and
    /// ("a","bc") apart.
    pub fn hash_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.bucket_type.len() + self.bucket.len() + self.key.len());
        for part in [&self.bucket_type, &self.bucket] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&self.key);
        out
    }
}

/// A cluster member's name: the HTTP address it advertises (as the original
/// Vinz Clortho named nodes). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn new(name: impl AsRef<str>) -> NodeId {
        NodeId(Arc::from(name.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Serialized as a plain string (persisted cluster state).
impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        String::deserialize(d).map(NodeId::new)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
