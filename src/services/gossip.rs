//! Gossip: every interval, heartbeat, then exchange whole cluster states
//! with one random member (push-pull). Rounds to a dead or slow peer are
//! bounded by the gossip timeout; failures are logged, never fatal.
//!
//! And the one message that cannot wait for a round: a node shutting down
//! tells every peer at once ([`announce_going_down`]), so that they route
//! around it now rather than after the failure timeout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::seq::IndexedRandom;

use super::{Worker, WorkerState};
use crate::env::Entropy;
use crate::membership::Membership;
use crate::rpc::membership::{going_down, gossip};
use crate::rpc::peers::Peers;
use crate::telemetry::metrics;

pub struct GossipWorker {
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    interval: Duration,
    entropy: Entropy,
}

impl GossipWorker {
    pub fn new(membership: Arc<Membership>, peers: Arc<Peers>, interval: Duration, entropy: Entropy) -> GossipWorker {
        GossipWorker { membership, peers, interval, entropy }
    }

    async fn round(&self) {
        if let Err(e) = self.membership.heartbeat() {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        let peers = self.membership.peers();
        // A coordinator that met a newer ring asks for that peer first.
        let hinted = self.membership.take_gossip_hint().and_then(|h| peers.iter().find(|(n, _)| *n == h).cloned());
        let Some((node, address)) = hinted.or_else(|| self.entropy.with(|rng| peers.choose(rng).cloned())) else {
            return;
        };
        let channel = match self.peers.channel(&node, &address) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!(%node, %address, error = %e, "bad peer address");
                return;
            }
        };
        let state = self.membership.snapshot();
        match tokio::time::timeout(
            self.interval.max(Duration::from_secs(1)),
            gossip(channel, self.membership.local(), &state),
        )
        .await
        {
            Ok(Ok(theirs)) => match self.membership.merge(&theirs) {
                Ok(_) => metrics::gossip_round("ok"),
                Err(e) => {
                    metrics::gossip_round("refused");
                    tracing::warn!(%node, error = %e, "refused gossip reply");
                }
            },
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                metrics::gossip_round("refused");
                tracing::warn!(%node, error = %status.message(), "peer refused gossip");
            }
            Ok(Err(status)) => {
                metrics::gossip_round("failed");
                tracing::debug!(%node, error = %status.message(), "gossip failed");
            }
            Err(_) => {
                metrics::gossip_round("failed");
                tracing::debug!(%node, "gossip timed out");
            }
        }
    }
}

#[async_trait]
impl Worker for GossipWorker {
    fn name(&self) -> &'static str {
        "gossip"
    }

    async fn work(&mut self) -> WorkerState {
        self.round().await;
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        // The interval, or sooner when a coordinator needs a newer ring.
        tokio::select! {
            biased;
            () = tokio::time::sleep(self.interval) => {}
            () = self.membership.gossip_hinted() => {}
        }
    }
}

/// Tells every peer, all at once, that this node is going down (a clean
/// shutdown), with its record as it stops (`Membership::local_stamp`):
/// each peer treats it as down from then on, until it starts again. Call it
/// after [`Membership::begin_shutdown`] and once the gossip worker stopped,
/// so that no later heartbeat reads as a new life. Best effort and bounded
/// by `within`: a peer that misses the notice finds out by its failure
/// detector. Returns how many peers took it, and of how many.
pub async fn announce_going_down(membership: &Membership, peers: &Peers, within: Duration) -> (usize, usize) {
    let me = membership.local().clone();
    let stamp = membership.local_stamp();
    let targets = membership.peers();
    let calls = targets.iter().map(|(node, address)| {
        let channel = peers.channel(node, address);
        let me = &me;
        async move {
            let channel = channel.map_err(|e| e.to_string())?;
            match tokio::time::timeout(within, going_down(channel, me, stamp)).await {
                Ok(Ok(taken)) => Ok(taken),
                Ok(Err(status)) => Err(status.message().to_owned()),
                Err(_) => Err("no answer in time".to_owned()),
            }
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut told = 0;
    for ((node, address), result) in targets.iter().zip(results) {
        match result {
            Ok(true) => told += 1,
            Ok(false) => tracing::debug!(%node, %address, "peer did not take the going-down notice"),
            Err(error) => tracing::debug!(%node, %address, %error, "going-down notice not delivered"),
        }
    }
    (told, targets.len())
}
