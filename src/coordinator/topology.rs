//! What a coordinator needs to know about the cluster, and nothing more: the
//! ring (and the move in progress), which node it runs on, who is up, and
//! how to name a node for people. `membership::Membership` implements it in
//! a running node; tests give the coordinator a scripted one.

use std::sync::Arc;

use crate::core::key::NodeId;
use crate::core::ring::Ring;

/// The ring and quorum settings the data path uses, swapped atomically.
#[derive(Debug, Clone)]
pub struct RingView {
    pub epoch: u64,
    pub current: Arc<Ring>,
    /// The ring data is moving to, while a move is in progress.
    pub target: Option<Arc<Ring>>,
    pub n_val: usize,
    pub r: usize,
    pub w: usize,
}

pub trait Topology: Send + Sync + 'static {
    /// The ring as this node sees it now.
    fn view(&self) -> Arc<RingView>;

    /// The node this coordinator runs on.
    fn local(&self) -> &NodeId;

    /// The failure detector's verdict (a node is always up to itself).
    fn is_up(&self, node: &NodeId) -> bool;

    /// A node's HTTP address, for messages to people.
    fn http_address(&self, node: &NodeId) -> String;

    /// True once the cluster removed this node (another node replaced it):
    /// its ring and data are no longer the cluster's, so it coordinates
    /// nothing.
    fn removed(&self) -> bool {
        false
    }
}
