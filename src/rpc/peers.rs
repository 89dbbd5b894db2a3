//! Connections to the other nodes, one pool for the whole process.
//!
//! Every call to a peer goes through here so that the rules against a dead
//! or slow peer are set once: a bounded TCP connect, a per-request timeout
//! for unary calls, HTTP/2 keepalive pings that notice a peer that vanished
//! without closing its socket, and `TCP_NODELAY` because replica calls are
//! small and latency-bound. Channels connect lazily, so creating one never
//! blocks and a node that is down costs nothing until it is called, and they
//! reconnect by themselves on the next call after a failure.
//!
//! Every channel handed out names whom its calls are for: it stamps this
//! node's identity and the target node's id on each call (`identity`), so a
//! process that now answers at a peer's old address refuses calls meant for
//! the peer instead of answering for it.
//!
//! Each address gets two channels (two HTTP/2 connections): one for unary
//! replica calls, with the request timeout, and one for partition transfers,
//! without it (a transfer takes as long as the partition is big; it is
//! bounded by a progress timeout instead, see `transfer`). Keeping bulk
//! transfers off the unary connection also keeps them from delaying client
//! reads and writes behind their data.
//!
//! How a connection is opened is the [`Connector`]'s business: TCP with the
//! rules above in a running node (mutual TLS on it when the node has
//! certificates, `tls`: then every channel, the joiner's first call,
//! transfers and anti-entropy included, presents this node's certificate
//! and checks the peer's, and there is no plaintext fallback), the simulated network under the
//! deterministic simulator (`tests/sim.rs`), which carries the same gRPC
//! messages to the same servers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use super::identity::{Caller, CallerHeaders, Identified, to_node_value};
use super::tls::{ClusterTls, TlsConnect};
use crate::core::key::NodeId;
use crate::core::rate::TokenBucket;

/// How often an HTTP/2 ping checks an idle or busy connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer fails when the peer has accepted nothing for this long.
const TRANSFER_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// Largest message a client accepts from the members it calls. Servers bound
/// what strangers can send with `Config::largest_message_bytes` (the largest
/// legal object), so a client needs no lower cap: a lower one would leave a
/// legal object that can never be replicated or transferred, as tonic's
/// default of 4 MiB would.
pub const MAX_MESSAGE_BYTES: usize = usize::MAX;

/// A connection to a peer, as a tower service: tonic's HTTP/2 channel over
/// TCP in a running node ([`TcpConnector`]), a simulated link under the
/// simulator. Cloning it is cheap and shares the connection.
pub type Connection =
    BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, ConnectionError>;

/// Peers that answered a method with UNIMPLEMENTED (an older version,
/// during a rolling upgrade), at the address they had then, and when. For
/// `for_` afterwards the method is not tried on them again, instead of
/// costing every call a round trip to learn it again; after that, or at a
/// new address, it is tried again (the peer may have been upgraded).
pub struct Unsupported {
    for_: Duration,
    peers: Mutex<HashMap<NodeId, (String, Instant)>>,
}

impl Unsupported {
    pub fn new(for_: Duration) -> Unsupported {
        Unsupported { for_, peers: Mutex::new(HashMap::new()) }
    }

    /// `node` at `address` answered UNIMPLEMENTED just now.
    pub fn record(&self, node: &NodeId, address: &str) {
        self.peers.lock().expect("unsupported lock").insert(node.clone(), (address.to_owned(), Instant::now()));
    }

    /// Whether `node` at `address` answered UNIMPLEMENTED within `for_`.
    pub fn recently(&self, node: &NodeId, address: &str) -> bool {
        self.peers
            .lock()
            .expect("unsupported lock")
            .get(node)
            .is_some_and(|(at, since)| at == address && since.elapsed() < self.for_)
    }
}

/// Why a connection failed a call. A concrete type (not a bare boxed error)
/// so that tonic's generic client futures stay `Send`; tonic still finds
/// the cause (a connect error, a status) through `source`.
#[derive(Debug)]
pub struct ConnectionError(Box<dyn std::error::Error + Send + Sync>);

impl ConnectionError {
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ConnectionError {
        ConnectionError(cause.into())
    }
}

impl std::fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A connection to one peer node: calls on it carry this node's identity and
/// the peer's id.
pub type PeerChannel = Identified<Connection>;

/// What a connection is for (each gets its own, see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Replica calls and membership: bounded by the request timeout.
    Unary,
    /// Partition transfers: no per-request timeout.
    Transfer,
}

/// Opens connections to cluster addresses; chosen at the composition root.
pub trait Connector: Send + Sync + 'static {
    /// A lazy connection to `cluster_address` (`host:port`, or a full
    /// `http://` URI): it must not block, and it reconnects by itself.
    fn connect(&self, cluster_address: &str, purpose: Purpose) -> Result<Connection, PeerError>;
}

/// Boxes a tonic channel as a [`Connection`].
pub fn connection(channel: Channel) -> Connection {
    BoxCloneSyncService::new(channel.map_err(ConnectionError::new))
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid cluster address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// Node ids come from gossip; one that is no header value cannot be called.
    #[error("node id {0:?} cannot be sent as gRPC metadata")]
    InvalidNodeId(String),
}

/// tonic over TCP, with the connection rules of the module comment; over
/// mutual TLS when `tls` is set.
pub struct TcpConnector {
    connect_timeout: Duration,
    request_timeout: Duration,
    tls: Option<Arc<ClusterTls>>,
}

impl Connector for TcpConnector {
    fn connect(&self, cluster_address: &str, purpose: Purpose) -> Result<Connection, PeerError> {
        let endpoint = self.endpoint(cluster_address)?;
        let endpoint = match purpose {
            Purpose::Unary => endpoint.timeout(self.request_timeout),
            Purpose::Transfer => endpoint,
        };
        // Lazy: never blocks, and a down peer only costs when called. With
        // TLS, our connector dials and handshakes (tonic's own TLS config
        // would freeze the certificates for the channel's life); the
        // endpoint's connect timeout still bounds it, and the `http://` URI
        // only tells hyper where to dial.
        Ok(connection(match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(TlsConnect::new(Arc::clone(tls))),
            None => endpoint.connect_lazy(),
        }))
    }
}

impl TcpConnector {
    fn endpoint(&self, cluster_address: &str) -> Result<Endpoint, PeerError> {
        let invalid = |reason: String| PeerError::InvalidAddress { address: cluster_address.to_owned(), reason };
        let uri = if cluster_address.contains("://") {
            cluster_address.to_owned()
        } else {
            format!("http://{cluster_address}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| invalid(e.to_string()))?;
        let (host, port) = (endpoint.uri().host(), endpoint.uri().port_u16());
        if host.is_none_or(str::is_empty) || port.is_none() {
            return Err(invalid("expected host:port".into()));
        }
        Ok(endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }
}

/// This node's cap on outgoing transfer bytes (`--transfer-limit-mb`):
/// one bucket ([`TokenBucket`]) for every transfer stream it sends, moves
/// and sweeps alike, so partitions in flight at once share the cap.
pub struct TransferLimit {
    bucket: Mutex<TokenBucket>,
    origin: tokio::time::Instant,
}

impl TransferLimit {
    /// A cap of `bytes_per_second` (above 0).
    pub fn new(bytes_per_second: u64) -> TransferLimit {
        TransferLimit { bucket: Mutex::new(TokenBucket::new(bytes_per_second, 0)), origin: tokio::time::Instant::now() }
    }

    /// Waits until `bytes` more may be sent.
    pub(super) async fn pace(&self, bytes: usize) {
        let now = self.origin.elapsed().as_nanos() as u64;
        let wait = self.bucket.lock().expect("transfer limit lock").take(bytes as u64, now);
        if wait > 0 {
            tokio::time::sleep(Duration::from_nanos(wait)).await;
        }
    }
}

pub struct Peers {
    caller: Arc<CallerHeaders>,
    connect_timeout: Duration,
    request_timeout: Duration,
    transfer_idle_timeout: Duration,
    transfer_limit: Option<Arc<TransferLimit>>,
    connector: Arc<dyn Connector>,
    unary: Mutex<HashMap<String, Connection>>,
    transfer: Mutex<HashMap<String, Connection>>,
}

impl Peers {
    /// Calls are made as `caller`; `connect_timeout` bounds a TCP connect;
    /// `request_timeout` bounds each unary call once sent.
    pub fn new(caller: &Caller, connect_timeout: Duration, request_timeout: Duration) -> Peers {
        assert!(!connect_timeout.is_zero() && !request_timeout.is_zero(), "peer timeouts must be positive");
        Peers {
            caller: Arc::new(CallerHeaders::new(caller)),
            connect_timeout,
            request_timeout,
            transfer_idle_timeout: TRANSFER_IDLE_TIMEOUT_DEFAULT,
            transfer_limit: None,
            connector: Arc::new(TcpConnector { connect_timeout, request_timeout, tls: None }),
            unary: Mutex::default(),
            transfer: Mutex::default(),
        }
    }

    /// Connects over mutual TLS with `tls`'s current certificates.
    pub fn with_tls(mut self, tls: Arc<ClusterTls>) -> Peers {
        let (connect_timeout, request_timeout) = (self.connect_timeout, self.request_timeout);
        self.connector = Arc::new(TcpConnector { connect_timeout, request_timeout, tls: Some(tls) });
        self
    }

    /// Connects through `connector` instead of TCP (the simulator's network).
    pub fn with_connector(mut self, connector: Arc<dyn Connector>) -> Peers {
        self.connector = connector;
        self
    }

    /// How long a partition transfer may go without the peer accepting more
    /// data (or, once all is sent, without its answer) before it fails.
    pub fn with_transfer_idle_timeout(mut self, idle: Duration) -> Peers {
        assert!(!idle.is_zero(), "the transfer idle timeout must be positive");
        self.transfer_idle_timeout = idle;
        self
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Caps every partition transfer this node sends at `bytes_per_second`
    /// in all (`--transfer-limit-mb`); 0: no cap.
    pub fn with_transfer_limit(mut self, bytes_per_second: u64) -> Peers {
        self.transfer_limit = (bytes_per_second > 0).then(|| Arc::new(TransferLimit::new(bytes_per_second)));
        self
    }

    pub fn transfer_limit(&self) -> Option<Arc<TransferLimit>> {
        self.transfer_limit.clone()
    }

    pub fn transfer_idle_timeout(&self) -> Duration {
        self.transfer_idle_timeout
    }

    /// The longest a unary call can take: connecting, then the request.
    /// Clients also bound each call by this, so that no path inside the
    /// transport (say a handshake that never completes) can hang it.
    pub fn unary_deadline(&self) -> Duration {
        self.connect_timeout + self.request_timeout
    }

    /// The connection for unary calls to `node`, served at `cluster_address`
    /// (`host:port`, or a full `http://` URI).
    pub fn channel(&self, node: &NodeId, cluster_address: &str) -> Result<PeerChannel, PeerError> {
        let connection = self.pooled(&self.unary, cluster_address, Purpose::Unary)?;
        self.identified(node, connection)
    }

    /// The connection for partition transfers to `node`: no per-request timeout.
    pub fn transfer_channel(&self, node: &NodeId, cluster_address: &str) -> Result<PeerChannel, PeerError> {
        let connection = self.pooled(&self.transfer, cluster_address, Purpose::Transfer)?;
        self.identified(node, connection)
    }

    /// The connection to a seed, for joining: a seed is known by its address
    /// alone, and a joiner has no cluster id yet, so these calls name only
    /// their caller (the server accepts that for `Membership/Join` only).
    pub fn seed_channel(&self, cluster_address: &str) -> Result<PeerChannel, PeerError> {
        let connection = self.pooled(&self.unary, cluster_address, Purpose::Unary)?;
        Ok(Identified::new(connection, Arc::clone(&self.caller), None))
    }

    fn identified(&self, node: &NodeId, connection: Connection) -> Result<PeerChannel, PeerError> {
        let to = to_node_value(node).ok_or_else(|| PeerError::InvalidNodeId(node.to_string()))?;
        Ok(Identified::new(connection, Arc::clone(&self.caller), Some(to)))
    }

    /// Drops the connections to an address (a node that left): they close
    /// once in-flight calls finish.
    pub fn forget(&self, cluster_address: &str) {
        self.unary.lock().expect("peers lock").remove(cluster_address);
        self.transfer.lock().expect("peers lock").remove(cluster_address);
    }

    /// Drops every pooled connection: the next call to each peer opens a new
    /// one (after a certificate rotation, so that it presents the new
    /// certificate). Calls in flight finish on the old connections.
    pub fn forget_all(&self) {
        self.unary.lock().expect("peers lock").clear();
        self.transfer.lock().expect("peers lock").clear();
    }

    fn pooled(
        &self,
        pool: &Mutex<HashMap<String, Connection>>,
        cluster_address: &str,
        purpose: Purpose,
    ) -> Result<Connection, PeerError> {
        let mut pool = pool.lock().expect("peers lock");
        if let Some(connection) = pool.get(cluster_address) {
            return Ok(connection.clone());
        }
        let connection = self.connector.connect(cluster_address, purpose)?;
        pool.insert(cluster_address.to_owned(), connection.clone());
        Ok(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Peers {
        Peers::new(&Caller::member(NodeId::new("me"), 7), Duration::from_secs(1), Duration::from_secs(2))
    }

    fn peer() -> NodeId {
        NodeId::new("peer")
    }

    #[tokio::test]
    async fn invalid_addresses_and_node_ids_are_errors() {
        let peers = peers();
        for address in ["", "not an address", "127.0.0.1", "http://", "127.0.0.1:notaport", ":7000"] {
            assert!(peers.channel(&peer(), address).is_err(), "{address:?} was accepted");
            assert!(peers.transfer_channel(&peer(), address).is_err(), "{address:?} was accepted");
            assert!(peers.seed_channel(address).is_err(), "{address:?} was accepted");
        }
        let error = peers.channel(&NodeId::new("line\nbreak"), "127.0.0.1:7000").unwrap_err();
        assert!(matches!(error, PeerError::InvalidNodeId(_)), "{error:?}");
    }

    #[tokio::test]
    async fn valid_addresses_get_a_lazy_channel() {
        let peers = peers();
        for address in ["127.0.0.1:7000", "localhost:7000", "[::1]:7000", "http://10.0.0.1:7000"] {
            assert!(peers.channel(&peer(), address).is_ok(), "{address:?} was refused");
            assert!(peers.transfer_channel(&peer(), address).is_ok(), "{address:?} was refused");
        }
        assert_eq!(peers.unary.lock().unwrap().len(), 4);
        peers.channel(&NodeId::new("another"), "127.0.0.1:7000").unwrap();
        assert_eq!(peers.unary.lock().unwrap().len(), 4, "a second call reuses the channel, whoever it is for");
        peers.forget("127.0.0.1:7000");
        assert_eq!(peers.unary.lock().unwrap().len(), 3);
        assert_eq!(peers.transfer.lock().unwrap().len(), 3);
    }
}
