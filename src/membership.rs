//! Who is in the cluster and who owns which partition, as this node sees it.
//!
//! A single node is a cluster of one: it owns every partition. The wanted
//! claim is persisted so a restart keeps it. Gossip (next) will feed other
//! members' claims in here and rebuild the ring from all of them with
//! `Ring::rebalance`.

use std::sync::{Arc, RwLock};

use crate::core::key::NodeId;
use crate::core::ring::{Claim, Ring, RingError};
use crate::error::{ErrorCode, HasErrorCode};
use crate::storage::{StorageError, Store};

const META_WANTED_CLAIM: &str = "wanted_claim";

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("claim {wanted} is out of range: a node can claim 0 to {max} partitions")]
    ClaimOutOfRange { wanted: u64, max: u32 },
    #[error("{0}")]
    Ring(#[from] RingError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl HasErrorCode for MembershipError {
    fn code(&self) -> ErrorCode {
        match self {
            MembershipError::ClaimOutOfRange { .. } => ErrorCode::BadRequest,
            MembershipError::Ring(RingError::NoClaims) => ErrorCode::Conflict,
            MembershipError::Ring(_) => ErrorCode::BadRequest,
            MembershipError::Storage(e) => e.code(),
        }
    }
}

/// One member as shown by `/admin/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    pub address: String,
    pub cluster_address: String,
    pub status: &'static str,
    /// Partitions it owns now.
    pub claim: u32,
    /// Partitions it asked for (a weight; see `core::ring::Claim`).
    pub wanted_claim: u32,
}

struct State {
    ring: Arc<Ring>,
    claims: Vec<Claim>,
}

pub struct Membership {
    local: NodeId,
    cluster_address: String,
    store: Arc<dyn Store>,
    state: RwLock<State>,
}

impl Membership {
    /// The membership of a one-node cluster; the wanted claim comes from the
    /// data directory, or is the whole ring for a new node.
    pub fn open(
        local: NodeId,
        cluster_address: String,
        partitions: u32,
        store: Arc<dyn Store>,
    ) -> Result<Membership, MembershipError> {
        let wanted = match store.get_meta(META_WANTED_CLAIM)? {
            Some(raw) => decode_claim(&raw)?,
            None => partitions,
        };
        let claims = vec![Claim { node: local.clone(), wanted }];
        // A lone node whose stored claim is 0 still has to hold the data:
        // there is nobody else. Its wish applies once others join.
        let ring = Ring::from_claims(partitions, &claims).or_else(|_| Ring::single(partitions, local.clone()))?;
        Ok(Membership { local, cluster_address, store, state: RwLock::new(State { ring: Arc::new(ring), claims }) })
    }

    pub fn local(&self) -> &NodeId {
        &self.local
    }

    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.state.read().expect("membership lock").ring)
    }

    /// Partitions this node owns now.
    pub fn claim(&self) -> u32 {
        self.ring().claimed_by(&self.local)
    }

    /// Sets this node's wanted claim and rebalances the ring. Refuses a claim
    /// that would leave no member owning partitions.
    pub fn set_claim(&self, wanted: u64) -> Result<(), MembershipError> {
        let mut state = self.state.write().expect("membership lock");
        let max = state.ring.partitions();
        if wanted > u64::from(max) {
            return Err(MembershipError::ClaimOutOfRange { wanted, max });
        }
        let wanted = wanted as u32;
        let mut claims = state.claims.clone();
        for c in claims.iter_mut().filter(|c| c.node == self.local) {
            c.wanted = wanted;
        }
        let ring = state.ring.rebalance(&claims)?;
        self.store.put_meta(META_WANTED_CLAIM, &wanted.to_be_bytes())?;
        *state = State { ring: Arc::new(ring), claims };
        Ok(())
    }

    pub fn members(&self) -> Vec<MemberView> {
        let state = self.state.read().expect("membership lock");
        state
            .claims
            .iter()
            .map(|c| MemberView {
                address: c.node.to_string(),
                cluster_address: self.cluster_address.clone(),
                status: "up",
                claim: state.ring.claimed_by(&c.node),
                wanted_claim: c.wanted,
            })
            .collect()
    }
}

fn decode_claim(raw: &[u8]) -> Result<u32, StorageError> {
    let bytes: [u8; 4] =
        raw.try_into().map_err(|_| StorageError::Corrupt(format!("stored claim has {} bytes, expected 4", raw.len())))?;
    Ok(u32::from_be_bytes(bytes))
}
