//! Gossip: every interval, heartbeat, then exchange whole cluster states
//! with one random member (push-pull). Rounds to a dead or slow peer are
//! bounded by the gossip timeout; failures are logged, never fatal.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::seq::IndexedRandom;

use super::{Worker, WorkerState};
use crate::env::Entropy;
use crate::membership::Membership;
use crate::rpc::membership::gossip;
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
