//! Certificate rotation without a restart: every few seconds, load the
//! cluster TLS files (`rpc::tls::ClusterTls`) and the HTTP port's
//! (`rpc::tls::HttpTls`) again if any changed. New connections, accepted and
//! dialled, use the new certificates, and the pooled connections to peers
//! are dropped so that every peer sees the new certificate at once (an
//! accepted connection, cluster or HTTP, keeps the certificate it was
//! opened with until its client reconnects). A change that does not load (a
//! key written but not yet its certificate, a key made world-readable)
//! keeps the certificates in use and is logged; the next poll tries again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Worker, WorkerState};
use crate::membership::Membership;
use crate::rpc::peers::Peers;
use crate::rpc::tls::{ClusterTls, HttpTls};

pub struct CertificateWorker {
    cluster: Option<ClusterCertificates>,
    http: Option<Arc<HttpTls>>,
    interval: Duration,
}

/// The cluster port's certificates and what a reload of them touches.
struct ClusterCertificates {
    tls: Arc<ClusterTls>,
    peers: Arc<Peers>,
    membership: Arc<Membership>,
}

impl CertificateWorker {
    /// A worker that watches nothing yet: add the cluster port's
    /// certificates ([`CertificateWorker::cluster`]), the HTTP port's
    /// ([`CertificateWorker::http`]), or both.
    pub fn new(interval: Duration) -> CertificateWorker {
        CertificateWorker { cluster: None, http: None, interval }
    }

    pub fn cluster(mut self, tls: Arc<ClusterTls>, peers: Arc<Peers>, membership: Arc<Membership>) -> Self {
        self.cluster = Some(ClusterCertificates { tls, peers, membership });
        self
    }

    pub fn http(mut self, tls: Arc<HttpTls>) -> Self {
        self.http = Some(tls);
        self
    }

    /// Whether there are files to watch at all.
    pub fn watches_anything(&self) -> bool {
        self.cluster.is_some() || self.http.is_some()
    }

    fn reload_cluster(cluster: &ClusterCertificates) {
        let ClusterCertificates { tls, peers, membership } = cluster;
        let files = tls.files();
        match tls.reload_if_changed() {
            Ok(true) => {
                peers.forget_all();
                let name = tls.name().unwrap_or_default();
                tracing::info!(
                    cert = %files.cert.display(),
                    name,
                    "cluster TLS certificates reloaded; new connections use them"
                );
                // The cluster bound this node's id to one name for good: a
                // certificate of another name is refused by every peer.
                if let Some(bound) = membership.certificate_name(membership.local())
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
    }

    fn reload_http(tls: &HttpTls) {
        match tls.reload_if_changed() {
            Ok(true) => tracing::info!(
                cert = %tls.files().cert.display(),
                "HTTP TLS certificate reloaded; new connections use it"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "HTTP TLS files changed but do not load; keeping the ones in use"),
        }
    }
}

#[async_trait]
impl Worker for CertificateWorker {
    fn name(&self) -> &'static str {
        "certificates"
    }

    async fn work(&mut self) -> WorkerState {
        if let Some(cluster) = &self.cluster {
            Self::reload_cluster(cluster);
        }
        if let Some(http) = &self.http {
            Self::reload_http(http);
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.interval).await;
    }
}
