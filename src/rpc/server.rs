//! The node's gRPC server: which services it answers and how it listens.
//!
//! [`routes`] registers the replica and transfer services, gRPC health
//! (`grpc.health.v1`, for load balancers and `grpc_health_probe`) and server
//! reflection (so `grpcurl` works without the .proto files; both v1 and
//! v1alpha, because grpcurl 1.8.6 only asks v1alpha). It returns the builder
//! so the composition root can add more services before [`serve`]. The
//! listener, the identity the server answers for and the shutdown signal are
//! passed in, so tests bind port 0 and name their servers. Every call passes
//! the identity check (`identity::IdentityLayer`) before its service runs.
//! With certificates ([`serve_with_tls`]) only connections that completed a
//! mutual TLS handshake with a certificate of the cluster CA get that far.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tower::util::BoxCloneSyncService;

use super::FILE_DESCRIPTOR_SET;
use super::identity::{IdentityLayer, LocalIdentity};
use super::observe::ObserveLayer;
use super::pb::replica_server::ReplicaServer;
use super::peers::{Connection, ConnectionError};
use super::replica_server::ReplicaService;
use super::tls::ClusterTls;
use super::transfer::TransferService;
use super::transfer_pb::transfer_server::TransferServer;
use crate::coordinator::Topology;
use crate::replica::Replica;

/// HTTP/2 pings to clients, so a transfer from a sender that vanished does
/// not hold a stream (and the merge task) open forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams one connection may have open at once. tonic sets no limit, so a
/// peer could open streams without bound, each buffering up to the largest
/// legal message. A node needs few: one `Replica/Calls` stream per peer,
/// unary calls when a peer lacks it, transfers, anti-entropy, gossip; a
/// client at the limit waits for a stream to end instead of failing.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// The node's services. The health reporter starts with the whole server
/// (`""`) SERVING, as tonic-health does; the node sets NOT_SERVING when it
/// stops taking work. `stop` ends the long-lived replica call streams (cancel
/// it with the server's shutdown, or graceful shutdown waits for them).
/// `ring`, when given, fences replica calls planned on an older ring (see
/// `replica_server`). Replica and transfer messages above `max_message_bytes`
/// (`Config::largest_message_bytes`) are refused before they are decoded.
pub fn routes(
    replica: Arc<Replica>,
    ring: Option<Arc<dyn Topology>>,
    max_message_bytes: usize,
    stop: CancellationToken,
) -> (RoutesBuilder, HealthReporter) {
    let (health, health_service) = tonic_health::server::health_reporter();
    // The descriptor sets are compiled in: failing to read them is a build bug.
    let reflection_v1 = reflection().build_v1().expect("compiled-in descriptor sets decode");
    let reflection_v1alpha = reflection().build_v1alpha().expect("compiled-in descriptor sets decode");
    let replica_service = ReplicaServer::new(ReplicaService::new(Arc::clone(&replica), stop).with_fence(ring))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let transfer_service = TransferServer::new(TransferService::new(replica))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let mut routes = RoutesBuilder::default();
    routes
        .add_service(replica_service)
        .add_service(transfer_service)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    (routes, health)
}

/// Every service this binary defines, plus gRPC health, for reflection.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// `routes` behind the same layers as [`serve`], as a [`Connection`] that
/// takes calls in process: the simulator's network delivers to it, so the
/// identity checks, limits and codecs it runs are the ones a node runs.
pub fn in_process(routes: RoutesBuilder, local: Arc<dyn LocalIdentity>) -> Connection {
    let service =
        tower::ServiceBuilder::new().layer(ObserveLayer).layer(IdentityLayer::new(local)).service(routes.routes());
    let service = tower::ServiceExt::<http::Request<tonic::body::Body>>::map_err(service, ConnectionError::new);
    BoxCloneSyncService::new(service)
}

/// Serves `routes` on `listener` as `local` until `shutdown` completes,
/// then stops accepting and waits for in-flight calls (a long transfer
/// included); bound that wait at the caller if it matters.
pub async fn serve(
    listener: TcpListener,
    routes: RoutesBuilder,
    local: Arc<dyn LocalIdentity>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_with_tls(listener, routes, local, None, shutdown).await
}

/// [`serve`], over mutual TLS when `tls` is given: only connections whose
/// handshake presented a certificate of the cluster CA reach a service
/// (`tls::incoming`); without it, plaintext.
pub async fn serve_with_tls(
    listener: TcpListener,
    routes: RoutesBuilder,
    local: Arc<dyn LocalIdentity>,
    tls: Option<Arc<ClusterTls>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let router = Server::builder()
        // Outermost first: a refused call is still traced and counted.
        .layer(ObserveLayer)
        .layer(IdentityLayer::new(local))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_routes(routes.routes());
    match tls {
        Some(tls) => router.serve_with_incoming_shutdown(super::tls::incoming(listener, tls), shutdown).await,
        None => {
            // With an incoming stream the builder's TCP settings do not apply;
            // the stream sets them on each accepted socket.
            let incoming =
                TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(KEEPALIVE_INTERVAL));
            router.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    }
}
