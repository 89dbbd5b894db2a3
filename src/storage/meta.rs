//! Node metadata kept next to the objects: the record format, the actor id
//! this data directory stamps versions with (which is also the node's id),
//! and the partition count the data was laid out for.

use super::codec::FORMAT_V1;
use super::{StorageError, Store};
use crate::core::vclock::ActorId;

const FORMAT: &str = "format";
const ACTOR: &str = "actor";
const PARTITIONS: &str = "partitions";

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

/// The data directory's actor id, created on first start. `new_actor` is
/// used only for a new directory: a wiped disk must never reuse an old actor
/// (see `core::vclock`), and the node id derived from it changes with it.
pub fn load_or_init_actor(store: &dyn Store, new_actor: ActorId) -> Result<ActorId, MetaError> {
    match store.get_meta(FORMAT)? {
        None => store.put_meta(FORMAT, &[FORMAT_V1])?,
        Some(v) if v == [FORMAT_V1] => {}
        Some(v) => return Err(MetaError::Format { found: v.first().copied().unwrap_or(0) }),
    }
    match store.get_meta(ACTOR)? {
        Some(raw) => Ok(u64::from_be_bytes(fixed(&raw, ACTOR)?)),
        None => {
            store.put_meta(ACTOR, &new_actor.to_be_bytes())?;
            Ok(new_actor)
        }
    }
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
