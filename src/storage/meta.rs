//! Node metadata kept next to the objects: the record format, the node's id
//! (created with the data directory), the partition count the data was laid
//! out for, and the cluster secret that seals contexts.
//!
//! The node id is stored under the name `actor` for compatibility: it was
//! once also the actor that stamped versions. Actors are now minted per
//! process run and partition (see `replica`), never stored.

use super::codec::FORMAT_V1;
use super::{StorageError, Store};
use crate::core::context::ClusterSecret;

const FORMAT: &str = "format";
const NODE_ID: &str = "actor";
const PARTITIONS: &str = "partitions";
const CLUSTER_SECRET: &str = "cluster_secret";

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(
        "the data directory was created for {stored} partitions, but {requested} were asked for; \
         the partition count is fixed when a cluster is created (drop -p to use {stored})"
    )]
    PartitionMismatch { stored: u32, requested: u32 },
    #[error("the data directory has format {found}, this build reads format {FORMAT_V1}")]
    Format { found: u8 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The data directory's node id, created on first start. `new_id` is used
/// only for a new directory: a node whose disk was wiped is a new node.
pub fn load_or_init_node_id(store: &dyn Store, new_id: u64) -> Result<u64, MetaError> {
    match store.get_meta(FORMAT)? {
        None => store.put_meta(FORMAT, &[FORMAT_V1])?,
        Some(v) if v == [FORMAT_V1] => {}
        Some(v) => return Err(MetaError::Format { found: v.first().copied().unwrap_or(0) }),
    }
    match store.get_meta(NODE_ID)? {
        Some(raw) => Ok(u64::from_be_bytes(fixed(&raw, NODE_ID)?)),
        None => {
            store.put_meta(NODE_ID, &new_id.to_be_bytes())?;
            Ok(new_id)
        }
    }
}

/// The cluster secret this data directory keeps, if any.
pub fn load_cluster_secret(store: &dyn Store) -> Result<Option<ClusterSecret>, MetaError> {
    match store.get_meta(CLUSTER_SECRET)? {
        None => Ok(None),
        Some(raw) => Ok(Some(
            ClusterSecret::try_from_slice(&raw)
                .ok_or_else(|| StorageError::Corrupt(format!("metadata {CLUSTER_SECRET} has {} bytes", raw.len())))?,
        )),
    }
}

pub fn save_cluster_secret(store: &dyn Store, secret: &ClusterSecret) -> Result<(), MetaError> {
    Ok(store.put_meta(CLUSTER_SECRET, secret.as_bytes())?)
}

/// The partition count of the data directory. `requested` is the `-p` flag
/// or the joined cluster's count, if any; `default` applies to a new
/// directory without one.
pub fn load_or_init_partitions(store: &dyn Store, requested: Option<u32>, default: u32) -> Result<u32, MetaError> {
    match store.get_meta(PARTITIONS)? {
        Some(raw) => {
            let stored = u32::from_be_bytes(fixed(&raw, PARTITIONS)?);
            if let Some(requested) = requested.filter(|r| *r != stored) {
                return Err(MetaError::PartitionMismatch { stored, requested });
            }
            Ok(stored)
        }
        None => {
            let p = requested.unwrap_or(default);
            store.put_meta(PARTITIONS, &p.to_be_bytes())?;
            Ok(p)
        }
    }
}

fn fixed<const N: usize>(raw: &[u8], name: &str) -> Result<[u8; N], StorageError> {
    raw.try_into().map_err(|_| StorageError::Corrupt(format!("metadata {name} has {} bytes, expected {N}", raw.len())))
}
