//! The AntiEntropy gRPC service (`proto/antientropy.proto`) and its client:
//! how two replicas of a partition compare their TicTac trees
//! (`core::tictac`) top down. Thin, as every server here: requests are
//! checked and bounded, then answered by a [`TreeSource`] (the node's trees
//! and store, kept by `services::anti_entropy`); repairs themselves are
//! ordinary Replica Get/Merge calls, not part of this service.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::antientropy_pb as pb;
use super::antientropy_pb::anti_entropy_client::AntiEntropyClient as RawClient;
use super::antientropy_pb::anti_entropy_server::{AntiEntropy, AntiEntropyServer};
use super::convert::{key_from_pb, key_to_pb, required};
use super::peers::{MAX_MESSAGE_BYTES, Peers};
use super::status::{error_status, replica_error_from_status};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::ring::Partition;
use crate::core::tictac::{BRANCHES, Branch, SEGMENTS, SEGMENTS_PER_BRANCH, Segment, TicTacTree, VersionHash};
use crate::error::{ErrorCode, HasErrorCode};
use crate::replica::ReplicaError;
use crate::storage::StorageError;
use crate::telemetry::metrics;

/// Segments one `SegmentKeys` request may name: a quarter of a tree, so a
/// wiped replica's partition is listed in four rounds, each bounded.
pub const SEGMENTS_PER_REQUEST_MAX: usize = 256;
/// Keys per `SegmentKeys` message (each at most a key's bytes plus 8).
pub const KEYS_PER_MESSAGE_MAX: usize = 1024;
/// ...and no more keys once a message holds this many bytes (one long key
/// still travels, alone).
const MESSAGE_BYTES_TARGET: usize = 1024 * 1024;
/// Keys a client accepts in answer to one `SegmentKeys` request: memory
/// stays bounded whatever a peer sends.
pub const KEYS_PER_REQUEST_MAX: usize = 1 << 20;
/// How long one call of an exchange may take: the peer may have to build
/// its tree first (a scan of the partition).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a tree or a key list could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("this node does not hold partition {0} in its current ring")]
    NotHeld(Partition),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl HasErrorCode for TreeError {
    fn code(&self) -> ErrorCode {
        match self {
            TreeError::NotHeld(_) => ErrorCode::Conflict,
            TreeError::Storage(e) => e.code(),
        }
    }
}

/// What the server answers from: this node's trees and store.
#[async_trait]
pub trait TreeSource: Send + Sync + 'static {
    /// The partition's tree, built from the store first if missing or stale.
    async fn tree(&self, partition: Partition) -> Result<TicTacTree, TreeError>;
    /// Every key stored in `segments` of the partition, with its version
    /// hash, sorted by `ObjectKey` (read from the store, not the tree).
    async fn segment_keys(
        &self,
        partition: Partition,
        segments: BTreeSet<Segment>,
    ) -> Result<Vec<(ObjectKey, VersionHash)>, TreeError>;
}

pub struct AntiEntropyService {
    source: Arc<dyn TreeSource>,
    partitions: u32,
}

/// The service, with messages above `max_message_bytes` refused undecoded.
pub fn server(
    source: Arc<dyn TreeSource>,
    partitions: u32,
    max_message_bytes: usize,
) -> AntiEntropyServer<AntiEntropyService> {
    AntiEntropyServer::new(AntiEntropyService { source, partitions })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

impl AntiEntropyService {
    fn partition(&self, partition: Partition) -> Result<Partition, Status> {
        if partition >= self.partitions {
            return Err(Status::invalid_argument(format!(
                "partition {partition} does not exist (the ring has {})",
                self.partitions
            )));
        }
        Ok(partition)
    }
}

/// Checks a list of indexes: at most `max`, each below `bound`; sorted and
/// without repeats.
fn indexes(values: &[u32], max: usize, bound: usize, what: &str) -> Result<BTreeSet<u32>, Status> {
    if values.len() > max {
        return Err(Status::invalid_argument(format!("at most {max} {what} per request, got {}", values.len())));
    }
    if let Some(v) = values.iter().find(|&&v| v as usize >= bound) {
        return Err(Status::invalid_argument(format!("{what} {v} is out of range (a tree has {bound})")));
    }
    Ok(values.iter().copied().collect())
}

type KeyStream = Pin<Box<dyn Stream<Item = Result<pb::SegmentKeysResponse, Status>> + Send>>;

#[async_trait]
impl AntiEntropy for AntiEntropyService {
    async fn branches(&self, request: Request<pb::BranchesRequest>) -> Result<Response<pb::BranchesResponse>, Status> {
        let partition = self.partition(request.into_inner().partition)?;
        let tree = self.source.tree(partition).await.map_err(|e| error_status(&e))?;
        Ok(Response::new(pb::BranchesResponse { branches: tree.branches().to_vec() }))
    }

    async fn leaves(&self, request: Request<pb::LeavesRequest>) -> Result<Response<pb::LeavesResponse>, Status> {
        let request = request.into_inner();
        let partition = self.partition(request.partition)?;
        let branches = indexes(&request.branches, BRANCHES, BRANCHES, "branches")?;
        let tree = self.source.tree(partition).await.map_err(|e| error_status(&e))?;
        let branches = branches
            .into_iter()
            .map(|branch| pb::BranchLeaves { branch, leaves: tree.branch_leaves(branch).to_vec() })
            .collect();
        Ok(Response::new(pb::LeavesResponse { branches }))
    }

    type SegmentKeysStream = KeyStream;

    async fn segment_keys(&self, request: Request<pb::SegmentKeysRequest>) -> Result<Response<KeyStream>, Status> {
        let request = request.into_inner();
        let partition = self.partition(request.partition)?;
        let segments = indexes(&request.segments, SEGMENTS_PER_REQUEST_MAX, SEGMENTS, "segments")?;
        let keys = self.source.segment_keys(partition, segments).await.map_err(|e| error_status(&e))?;
        let mut messages = Vec::new();
        let mut message = pb::SegmentKeysResponse::default();
        let mut bytes = 0;
        for (key, version) in keys {
            if message.keys.len() == KEYS_PER_MESSAGE_MAX || bytes >= MESSAGE_BYTES_TARGET {
                messages.push(Ok(std::mem::take(&mut message)));
                bytes = 0;
            }
            bytes += key.bucket_type.len() + key.bucket.len() + key.key.len() + 16;
            message.keys.push(pb::KeyVersion { key: Some(key_to_pb(&key)), version });
        }
        if !message.keys.is_empty() {
            messages.push(Ok(message));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }
}

/// Calls a peer's AntiEntropy service; every failure is a [`ReplicaError`]
/// naming the peer, as the replica client's are.
pub struct AntiEntropyClient {
    peers: Arc<Peers>,
}

impl AntiEntropyClient {
    pub fn new(peers: Arc<Peers>) -> AntiEntropyClient {
        AntiEntropyClient { peers }
    }

    fn raw(&self, node: &NodeId, address: &str) -> Result<RawClient<super::peers::PeerChannel>, ReplicaError> {
        // The transfer pool: no per-request timeout (a peer may build its
        // tree first); each call is bounded by CALL_TIMEOUT here instead.
        let channel = self.peers.transfer_channel(node, address).map_err(|e| ReplicaError::Unreachable {
            node: node.clone(),
            reason: e.to_string(),
            maybe_applied: false,
        })?;
        Ok(RawClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Runs one call with the timeout, a metric, and errors named for `node`.
    async fn bounded<T>(
        node: &NodeId,
        method: &'static str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, ReplicaError> {
        let started = Instant::now();
        let answer = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded(format!("no answer within {CALL_TIMEOUT:?}"))),
        };
        let code = answer.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        metrics::grpc_client(method, code, started.elapsed().as_secs_f64());
        answer.map_err(|status| replica_error_from_status(node, status))
    }

    /// The peer's branch hashes of `partition` ([`BRANCHES`] of them).
    pub async fn branches(&self, node: &NodeId, address: &str, partition: Partition) -> Result<Vec<u64>, ReplicaError> {
        let mut client = self.raw(node, address)?;
        let call = async { Ok(client.branches(pb::BranchesRequest { partition }).await?.into_inner().branches) };
        let branches = Self::bounded(node, "AntiEntropy/Branches", call).await?;
        if branches.len() != BRANCHES {
            return Err(invalid(node, format!("{} branches, not {BRANCHES}", branches.len())));
        }
        Ok(branches)
    }

    /// The peer's leaves of `branches` (at most [`BRANCHES`]).
    pub async fn leaves(
        &self,
        node: &NodeId,
        address: &str,
        partition: Partition,
        branches: &[Branch],
    ) -> Result<Vec<(Branch, Vec<u64>)>, ReplicaError> {
        let mut client = self.raw(node, address)?;
        let request = pb::LeavesRequest { partition, branches: branches.to_vec() };
        let call = async { Ok(client.leaves(request).await?.into_inner().branches) };
        let answer = Self::bounded(node, "AntiEntropy/Leaves", call).await?;
        let asked: BTreeSet<Branch> = branches.iter().copied().collect();
        let mut out = Vec::with_capacity(answer.len());
        for b in answer {
            if !asked.contains(&b.branch) || b.leaves.len() != SEGMENTS_PER_BRANCH {
                return Err(invalid(node, format!("branch {} with {} leaves", b.branch, b.leaves.len())));
            }
            out.push((b.branch, b.leaves));
        }
        if out.len() != asked.len() {
            return Err(invalid(node, format!("{} branches answered, {} asked", out.len(), asked.len())));
        }
        Ok(out)
    }

    /// The peer's keys of `segments` (at most [`SEGMENTS_PER_REQUEST_MAX`])
    /// with their version hashes, sorted by `ObjectKey`.
    pub async fn segment_keys(
        &self,
        node: &NodeId,
        address: &str,
        partition: Partition,
        segments: &[Segment],
    ) -> Result<Vec<(ObjectKey, VersionHash)>, ReplicaError> {
        let mut client = self.raw(node, address)?;
        let request = pb::SegmentKeysRequest { partition, segments: segments.to_vec() };
        let call = async {
            let mut stream = client.segment_keys(request).await?.into_inner();
            let mut keys: Vec<(ObjectKey, VersionHash)> = Vec::new();
            while let Some(message) = stream.message().await? {
                if keys.len() + message.keys.len() > KEYS_PER_REQUEST_MAX {
                    return Err(Status::resource_exhausted(format!("more than {KEYS_PER_REQUEST_MAX} keys")));
                }
                for entry in message.keys {
                    let key = key_from_pb(required(entry.key, "key")?);
                    // A sorted, repeat-free list is what the walk compares.
                    if keys.last().is_some_and(|(last, _)| *last >= key) {
                        return Err(Status::invalid_argument("keys out of order"));
                    }
                    keys.push((key, entry.version));
                }
            }
            Ok(keys)
        };
        Self::bounded(node, "AntiEntropy/SegmentKeys", call).await
    }
}

/// A peer answered with something no correct peer sends.
fn invalid(node: &NodeId, what: String) -> ReplicaError {
    ReplicaError::Remote { node: node.clone(), code: ErrorCode::Internal, message: format!("invalid answer: {what}") }
}

#[cfg(test)]
mod tests {
    //! The service's checks and message bounds, called directly (no socket).

    use futures::StreamExt;

    use super::*;
    use crate::core::tictac::segment_of;

    /// A partition of `keys` keys, all with version 7.
    struct Fixed {
        keys: usize,
    }

    #[async_trait]
    impl TreeSource for Fixed {
        async fn tree(&self, partition: Partition) -> Result<TicTacTree, TreeError> {
            match partition {
                3 => Err(TreeError::NotHeld(3)),
                _ => Ok(TicTacTree::new()),
            }
        }

        async fn segment_keys(
            &self,
            _partition: Partition,
            segments: BTreeSet<Segment>,
        ) -> Result<Vec<(ObjectKey, VersionHash)>, TreeError> {
            let mut keys: Vec<_> = (0..self.keys)
                .map(|i| ObjectKey::in_default_bucket(format!("k{i:06}")))
                .filter(|k| segments.contains(&segment_of(k)))
                .map(|k| (k, 7))
                .collect();
            keys.sort();
            Ok(keys)
        }
    }

    fn service(keys: usize) -> AntiEntropyService {
        AntiEntropyService { source: Arc::new(Fixed { keys }), partitions: 8 }
    }

    #[tokio::test]
    async fn bad_requests_are_invalid_arguments_with_a_reason() {
        let s = service(0);
        let e = s.branches(Request::new(pb::BranchesRequest { partition: 8 })).await.unwrap_err();
        assert_eq!((e.code(), e.message().contains("does not exist")), (tonic::Code::InvalidArgument, true), "{e:?}");
        let cases = [(vec![32], "out of range"), ((0..33).collect::<Vec<_>>(), "at most 32")];
        for (branches, needle) in cases {
            let e = s.leaves(Request::new(pb::LeavesRequest { partition: 1, branches })).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(needle), "{e:?}");
        }
        for (segments, needle) in [(vec![1024], "out of range"), ((0..257).collect::<Vec<_>>(), "at most 256")] {
            let request = pb::SegmentKeysRequest { partition: 1, segments };
            let e = s.segment_keys(Request::new(request)).await.err().expect("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(needle), "{e:?}");
        }
        // A partition this node does not hold: not an internal error.
        let e = s.branches(Request::new(pb::BranchesRequest { partition: 3 })).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Conflict.grpc_code(), "{e:?}");
    }

    #[tokio::test]
    async fn a_tree_and_long_key_lists_come_in_bounded_messages() {
        let s = service(20_000);
        let branches = s.branches(Request::new(pb::BranchesRequest { partition: 1 })).await.unwrap();
        assert_eq!(branches.into_inner().branches.len(), BRANCHES);
        let leaves = s.leaves(Request::new(pb::LeavesRequest { partition: 1, branches: vec![5, 5, 2] })).await;
        let leaves = leaves.unwrap().into_inner().branches;
        assert_eq!(leaves.iter().map(|b| b.branch).collect::<Vec<_>>(), vec![2, 5], "sorted, no repeats");
        assert!(leaves.iter().all(|b| b.leaves.len() == SEGMENTS_PER_BRANCH));
        let request = pb::SegmentKeysRequest { partition: 1, segments: (0..256).collect() };
        let messages: Vec<_> = s.segment_keys(Request::new(request)).await.unwrap().into_inner().collect().await;
        let sizes: Vec<usize> = messages.iter().map(|m| m.as_ref().unwrap().keys.len()).collect();
        assert!(sizes.len() > 1 && sizes.iter().all(|&n| 0 < n && n <= KEYS_PER_MESSAGE_MAX), "{sizes:?}");
        // About a quarter of the keys fall in a quarter of the segments.
        let total: usize = sizes.iter().sum();
        assert!((4000..6000).contains(&total), "{total}");
    }
}
