//! Certificate rotation without a restart: every few seconds, load the
//! cluster TLS files again if any changed (`rpc::tls::ClusterTls`). New
//! connections, accepted and dialled, use the new certificates, and the
//! pooled connections to peers are dropped so that every peer sees the new
//! certificate at once (an accepted connection keeps the certificate it was
//! opened with until the peer reconnects). A change that does not load (a key written
//! but not yet its certificate, a key made world-readable) keeps the
//! certificates in use and is logged; the next poll tries again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Worker, WorkerState};
use crate::membership::Membership;
use crate::rpc::peers::Peers;
use crate::rpc::tls::ClusterTls;

pub struct CertificateWorker {
    tls: Arc<ClusterTls>,
    peers: Arc<Peers>,
    membership: Arc<Membership>,
    interval: Duration,
}

impl CertificateWorker {
    pub fn new(
        tls: Arc<ClusterTls>,
        peers: Arc<Peers>,
        membership: Arc<Membership>,
        interval: Duration,
    ) -> CertificateWorker {
        CertificateWorker { tls, peers, membership, interval }
    }
}

#[async_trait]
impl Worker for CertificateWorker {
    fn name(&self) -> &'static str {
        "certificates"
    }

    async fn work(&mut self) -> WorkerState {
        let files = self.tls.files();
        match self.tls.reload_if_changed() {
            Ok(true) => {
                self.peers.forget_all();
                let name = self.tls.name().unwrap_or_default();
                tracing::info!(
                    cert = %files.cert.display(),
                    name,
                    "cluster TLS certificates reloaded; new connections use them"
                );
                // The cluster bound this node's id to one name for good: a
                // certificate of another name is refused by every peer.
                if let Some(bound) = self.membership.certificate_name(self.membership.local())
                    && bound != name
                {
                    tracing::error!(
                        cert = %files.cert.display(),
                        name,
                        bound,
                        "the new certificate is named {name:?}, but this node's id is bound to {bound:?}: its peers \
                         will refuse its calls; issue it a certificate named {bound:?}"
                    );
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cluster TLS files changed but do not load; keeping the ones in use"),
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.interval).await;
    }
}
