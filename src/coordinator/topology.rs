//! What a coordinator needs to know about the cluster, and nothing more: the
//! ring (and the move in progress), which node it runs on, who is up, and
//! how to name a node for people. `membership::Membership` implements it in
//! a running node; tests give the coordinator a scripted one.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::core::bucket::{BucketError, BucketProps, ClusterDefaults};
use crate::core::key::NodeId;
use crate::core::ring::Ring;
use crate::error::{ErrorCode, HasErrorCode};

/// An unknown or inactive bucket type: 404, as in Riak.
impl HasErrorCode for BucketError {
    fn code(&self) -> ErrorCode {
        ErrorCode::NotFound
    }
}

/// The ring and quorum settings the data path uses, swapped atomically.
#[derive(Debug, Clone)]
pub struct RingView {
    pub epoch: u64,
    /// Names this ring among rings of the same epoch (a hash of its author,
    /// `core::membership::RingState::hash`); 0: not known (tests, tools).
    pub ring_hash: u64,
    pub current: Arc<Ring>,
    /// The ring data is moving to, while a move is in progress.
    pub target: Option<Arc<Ring>>,
    pub n_val: usize,
    pub r: usize,
    pub w: usize,
}

impl RingView {
    /// Whether a replica with this view serves a call planned on the ring
    /// `(epoch, ring_hash)` (epoch 0: unfenced, for tools and repair; hash
    /// 0: a caller that names the epoch only). A coordinator behind this
    /// view's last ring change (a target set, or a switch) may count holders
    /// that no longer hold the key, or not know that a write needs the new
    /// holders too: an acknowledgement it got from us could then be one the
    /// next ring does not have. It must catch up first. The same holds for a
    /// coordinator on *another* ring of this epoch (two claimants that raced;
    /// gossip keeps one of them): its holders may be the wrong ones, so it is
    /// refused too, until gossip settles which ring is the cluster's.
    pub fn serves(&self, epoch: u64, ring_hash: u64) -> bool {
        epoch == 0
            || epoch > self.epoch
            || (epoch == self.epoch && (ring_hash == 0 || self.ring_hash == 0 || ring_hash == self.ring_hash))
    }
}

#[async_trait]
pub trait Topology: Send + Sync + 'static {
    /// The ring as this node sees it now.
    fn view(&self) -> Arc<RingView>;

    /// The node this coordinator runs on.
    fn local(&self) -> &NodeId;

    /// The failure detector's verdict (a node is always up to itself).
    fn is_up(&self, node: &NodeId) -> bool;

    /// A node's HTTP address, for messages to people.
    fn http_address(&self, node: &NodeId) -> String;

    /// True once this node left the cluster or the cluster removed it:
    /// its ring and data are no longer the cluster's, so it coordinates
    /// nothing.
    fn removed(&self) -> bool {
        false
    }

    /// Waits until this node's ring is at least at `epoch` (learnt from
    /// `from`, which has it), or until `until`; true if it got there.
    async fn catch_up(&self, from: &NodeId, epoch: u64, until: Instant) -> bool;

    /// The properties of a bucket (`core::bucket`): its n_val places its
    /// keys, its r/w/pr/pw are a request's defaults. Without bucket types
    /// (test topologies and tools) every bucket, of any type, has the
    /// default type's properties.
    fn bucket_props(&self, _bucket_type: &[u8], _bucket: &[u8]) -> Result<BucketProps, BucketError> {
        let view = self.view();
        Ok(BucketProps::defaults(ClusterDefaults { n_val: view.n_val, r: view.r, w: view.w }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(epoch: u64, ring_hash: u64) -> RingView {
        let current = Arc::new(Ring::single(8, NodeId::new("a")).unwrap());
        RingView { epoch, ring_hash, current, target: None, n_val: 3, r: 2, w: 2 }
    }

    #[test]
    fn a_call_is_served_only_on_this_ring_or_a_newer_one() {
        let v = view(5, 77);
        assert!(v.serves(5, 77), "the same ring");
        assert!(v.serves(6, 12), "a newer ring");
        assert!(!v.serves(4, 77), "an older ring");
        assert!(!v.serves(5, 78), "another ring of the same epoch (two claimants raced)");
        assert!(v.serves(0, 0), "unfenced");
        assert!(v.serves(5, 0), "a caller that names the epoch only (older peers, tools)");
    }
}
