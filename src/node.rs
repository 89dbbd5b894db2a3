//! The composition root: builds a node from its config, top to bottom.
//!
//! storage -> cluster state (remembered, joined, or new) -> node metadata
//! (node id, partitions, cluster secret) -> membership -> replica -> replica client (local or
//! gRPC) -> coordinator -> HTTP router; then the gRPC server, the background
//! workers (gossip, handoff) and the HTTP server, until `shutdown` resolves
//! or the node stops serving: it learns that the cluster removed it, or that
//! another live process runs under its id (then it stops the same way, and
//! `run` returns that as its error).
//! Listeners and the shutdown future are passed in, so tests bind port 0 and
//! stop nodes when they like.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::{self, Api, Limits, NodeInfo};
use crate::config::{Config, DEFAULT_PARTITIONS, StorageKind};
use crate::coordinator::{Coordinator, CoordinatorSettings};
use crate::core::context::{ClusterSecret, ContextSeal, SECRET_BYTES};
use crate::core::key::NodeId;
use crate::core::membership::{ClusterState, Member};
use crate::env::Env;
use crate::http_client::{ClientTls, FetchError};
use crate::membership::{self, Membership, MembershipError};
use crate::replica::{Replica, WriteObserver};
use crate::rpc::identity::Caller;
use crate::rpc::membership::MembershipService;
use crate::rpc::peers::{Connector, Peers};
use crate::rpc::replica_client::{GrpcReplicaClient, RoutedReplicas};
use crate::rpc::tls::{ClusterTls, HttpTls, HttpTlsFiles, TlsError, TlsFiles};
use crate::services::anti_entropy::{self, AntiEntropy, AntiEntropyWorker, LocalTrees};
use crate::services::gossip::GossipWorker;
use crate::services::handoff::{HandoffWorker, Progress};
use crate::storage::meta::{self, MetaError};
use crate::storage::{MemoryStore, RocksOptions, RocksStore, StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Membership(#[from] MembershipError),
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("cannot join the cluster through {seed}: {reason}")]
    Join { seed: String, reason: String },
    /// `-j` reached something that is neither a member's cluster port nor
    /// its HTTP port.
    #[error("-j {given}: not a Vinz Clortho member: {reason}")]
    NotMember { given: String, reason: String },
    #[error("server failed: {0}")]
    Serve(String),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("HTTP port certificate: {0}")]
    HttpTls(TlsError),
    #[error("{0}")]
    Security(String),
}

/// What a node takes from outside, chosen by whoever starts it: the real
/// world ([`Host::real`]), or the deterministic simulator's clock, random
/// source, inline blocking work and network (`tests/sim.rs`).
#[derive(Clone, Default)]
pub struct Host {
    pub env: Env,
    /// How connections to peers are opened; `None`: tonic over TCP.
    pub connector: Option<Arc<dyn Connector>>,
    /// Renders this node's `/metrics` when it records into a recorder of its
    /// own (`env.recorder`); `None`: the process-wide recorder.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The cluster port's certificates (`--tls-*`): every peer connection,
    /// accepted or dialled, is mutual TLS with them. `None`: plaintext.
    pub tls: Option<Arc<ClusterTls>>,
}

impl Host {
    pub fn real() -> Host {
        Host::default()
    }
}

/// A node's wired-up parts, before any socket.
pub struct App {
    pub router: Router,
    /// Seals contexts; the membership service hands it to joining nodes.
    pub secret: ClusterSecret,
    pub api: Arc<Api>,
    pub membership: Arc<Membership>,
    pub replica: Arc<Replica>,
    pub peers: Arc<Peers>,
    pub transfers: Progress,
    /// How the coordinator reaches replicas; hint delivery uses it too.
    pub replicas: Arc<dyn crate::coordinator::ReplicaClient>,
    /// Hints queued here per target node, for `/admin/status`.
    pub hints: crate::services::hints::HintCounts,
    /// How long a client request (and a hint delivery) may take.
    pub request_timeout: Duration,
    /// `None` when anti-entropy is off (`--anti-entropy-interval-ms 0`).
    pub anti_entropy: Option<Arc<AntiEntropy>>,
    /// `None` when tombstones are never reaped (`--tombstone-grace-ms 0`).
    pub reaper: Option<Arc<crate::services::reaper::Reaper>>,
    pub env: Env,
}

/// The two listeners of a node. The HTTP port is bound (its number is
/// known) but listens only once the node serves: until then a client's
/// connection is refused, so that it goes to another node at once (a load
/// balancer, `bench --failover`) instead of waiting while this one starts.
pub struct Listeners {
    pub http: BoundSocket,
    pub cluster: TcpListener,
}

/// A TCP socket bound to its address that does not listen yet.
pub struct BoundSocket {
    socket: tokio::net::TcpSocket,
}

impl BoundSocket {
    /// Binds the first address `address` resolves to that can be bound, as
    /// `TcpListener::bind` does (`SO_REUSEADDR` too, so a restarted node gets
    /// its port back while old connections linger in TIME_WAIT).
    pub async fn bind(address: &str) -> std::io::Result<BoundSocket> {
        let mut last = None;
        for addr in tokio::net::lookup_host(address).await? {
            let socket =
                if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            match socket.bind(addr) {
                Ok(()) => return Ok(BoundSocket { socket }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("the address resolves to nothing")))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Starts listening (the backlog `TcpListener::bind` uses).
    pub fn listen(self) -> std::io::Result<TcpListener> {
        self.socket.listen(1024)
    }
}

impl Listeners {
    /// The HTTP address this node advertises (port 0 resolved).
    pub fn http_address(&self, config: &Config) -> String {
        match self.http.local_addr() {
            Ok(bound) => advertised(&config.address, bound),
            Err(_) => config.address.clone(),
        }
    }
}

pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    Ok(match config.storage {
        StorageKind::Memory => Arc::new(MemoryStore::new()),
        StorageKind::Rocksdb => Arc::new(RocksStore::open(
            &config.data_dir,
            &RocksOptions { sync_writes: config.sync_writes, tuning: config.rocksdb_options.clone() },
        )?),
    })
}

fn peers_for(config: &Config, host: &Host, caller: &Caller) -> Arc<Peers> {
    let connect_timeout = config.request_timeout.min(Duration::from_secs(1));
    let mut peers = Peers::new(caller, connect_timeout, config.request_timeout)
        .with_transfer_limit(config.transfer_limit_mb.saturating_mul(1_000_000));
    if let Some(tls) = &host.tls {
        peers = peers.with_tls(Arc::clone(tls));
    }
    Arc::new(match &host.connector {
        Some(connector) => peers.with_connector(Arc::clone(connector)),
        None => peers,
    })
}

/// The node's id, created with its data directory on first start, so it
/// survives restarts on other addresses and changes when the disk is wiped
/// (a node without its data is a new node).
pub fn identity(store: &dyn Store, env: &Env) -> Result<NodeId, NodeError> {
    let id = meta::load_or_init_node_id(store, env.entropy.u64())?;
    Ok(NodeId::new(format!("{id:016x}")))
}

/// What a member answers when it admits this node.
pub struct Admission {
    pub state: ClusterState,
    pub secret: ClusterSecret,
}

/// The cluster secret: the one the cluster handed us on join, else the one
/// the data directory keeps, else a new one for a new cluster.
fn cluster_secret(
    env: &Env,
    store: &dyn Store,
    joined: Option<&ClusterSecret>,
    remembered: Option<&ClusterState>,
) -> Result<ClusterSecret, NodeError> {
    if let Some(secret) = joined {
        meta::save_cluster_secret(store, secret)?;
        return Ok(secret.clone());
    }
    if let Some(secret) = meta::load_cluster_secret(store)? {
        return Ok(secret);
    }
    let secret = match remembered {
        // A data directory from a release before sealed contexts: every
        // member must derive the same secret without talking, so it comes
        // from the cluster id. Contexts stay bound to their key, but anyone
        // who knows the cluster id could forge one.
        Some(state) => {
            tracing::warn!(
                cluster = format_args!("{:016x}", state.cluster_id),
                "this data directory predates sealed contexts; using a secret derived from the cluster id \
                 (a new cluster gets a random one)"
            );
            legacy_secret(state.cluster_id)
        }
        None => ClusterSecret::from_bytes(env.entropy.bytes::<SECRET_BYTES>()),
    };
    meta::save_cluster_secret(store, &secret)?;
    Ok(secret)
}

fn legacy_secret(cluster_id: u64) -> ClusterSecret {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"vinzclortho legacy cluster secret")
        .chain_update(cluster_id.to_be_bytes())
        .finalize();
    ClusterSecret::from_bytes(digest.into())
}

/// Wires a node around `store`, known to people by its HTTP `address`.
/// `joined` is the cluster state received when joining; without it the node
/// uses the state its data directory remembers, or starts a new one-node
/// cluster.
pub fn build(
    config: &Config,
    host: &Host,
    address: String,
    cluster_address: String,
    store: Arc<dyn Store>,
    joined: Option<Admission>,
) -> Result<App, NodeError> {
    let env = &host.env;
    // Read first: a bad file stops the node before it changes anything.
    let metrics_token = metrics_token(config.metrics_token_file.as_deref())?;
    let node = identity(&*store, env)?;
    let remembered = membership::load_state(&*store)?;
    let (joined, joined_secret) = match joined {
        Some(Admission { state, secret }) => (Some(state), Some(secret)),
        None => (None, None),
    };
    if let (Some(j), Some(r)) = (&joined, &remembered)
        && j.cluster_id != r.cluster_id
    {
        return Err(NodeError::Join {
            seed: config.join.clone().unwrap_or_default(),
            reason: format!(
                "this data directory belongs to cluster {:016x}, the seed to cluster {:016x}; \
                 start without -j or with an empty data directory",
                r.cluster_id, j.cluster_id
            ),
        });
    }
    // A joined cluster's partition count beats the flag; otherwise the flag
    // must match what the data directory was created with (meta checks).
    let requested = match &joined {
        Some(state) => {
            if config.partitions.is_some_and(|p| p != state.partitions()) {
                tracing::warn!(cluster = state.partitions(), "-p is ignored: the cluster's partition count applies");
            }
            Some(state.partitions())
        }
        None => config.partitions,
    };
    let secret = cluster_secret(env, &*store, joined_secret.as_ref(), remembered.as_ref())?;
    let known = joined.or(remembered);
    let partitions = meta::load_or_init_partitions(&*store, requested, DEFAULT_PARTITIONS)?;
    let wanted_claim = known.as_ref().and_then(|s| s.members.get(&node)).map(|m| m.wanted_claim).unwrap_or(partitions);
    let me = Member::new(node.clone(), address, cluster_address.clone(), wanted_claim, env.now_ms());
    let state = match known {
        Some(state) if state.security != config.security => {
            let (cluster, node) = if state.security { ("on", "without") } else { ("off", "with") };
            return Err(NodeError::Security(format!(
                "this node's cluster runs with client security {cluster} (fixed when it was created), and the node \
                 was started {node} --security; start it with the cluster's setting"
            )));
        }
        Some(state) => state,
        None => {
            let mut state =
                ClusterState::new(env.entropy.u64(), me.clone(), partitions, config.n_val, config.r, config.w)
                    .map_err(MembershipError::from)?;
            if config.security {
                first_admin_token(config, env, &mut state)?;
            }
            state
        }
    };
    let membership = Arc::new(Membership::open(
        me,
        state,
        Arc::clone(&store),
        config.failure_timeout.as_millis() as u64,
        env.clock.clone(),
    )?);
    // With certificates, this node's id is bound to its certificate's name
    // (if the cluster has none for it yet: a new cluster, or a joiner the
    // seed has bound already), and a certificate of another name than the
    // bound one is refused here rather than by every peer.
    if let Some(name) = host.tls.as_ref().and_then(|tls| tls.name()) {
        membership.bind_local_certificate(&name)?;
    }
    let anti_entropy =
        (!config.anti_entropy_interval.is_zero()).then(|| Arc::new(AntiEntropy::new(&anti_entropy_settings(config))));
    let observer = anti_entropy.as_ref().map(|ae| Arc::clone(&ae.trees) as Arc<dyn WriteObserver>);
    let replica = Arc::new(
        Replica::new(Arc::clone(&store), config.siblings)
            .with_blocking_writes(config.sync_writes && config.storage == StorageKind::Rocksdb)
            .with_observer(observer)
            .with_env(env),
    );
    let peers = peers_for(config, host, &Caller::member(node.clone(), membership.cluster_id()));
    let remote = GrpcReplicaClient::new(Arc::clone(&peers), membership.clone()).with_env(env);
    let replicas: Arc<dyn crate::coordinator::ReplicaClient> =
        Arc::new(RoutedReplicas::new(node, Arc::clone(&replica), remote));
    let settings = CoordinatorSettings { timeout: config.request_timeout };
    let coordinator = Arc::new(
        Coordinator::new(
            Arc::clone(&membership) as Arc<dyn crate::coordinator::Topology>,
            Arc::clone(&replicas),
            settings,
        )
        .with_env(env)
        .with_read_repair(config.read_repair),
    );
    let coverage = Arc::new(
        crate::coordinator::coverage::Coverage::new(
            Arc::clone(&membership) as Arc<dyn crate::coordinator::Topology>,
            Arc::new(crate::rpc::coverage::GrpcCoverage::new(
                Arc::clone(&peers),
                membership.clone(),
                membership.clone(),
                Arc::clone(&store),
                env,
            )),
        )
        .with_env(env),
    );
    let hints = crate::services::hints::HintCounts::default();
    // One worker reaps tombstones and prunes clocks: it runs if either is on.
    let reaper = (!config.tombstone_grace.is_zero() || config.max_clock_entries > 0)
        .then(|| Arc::new(crate::services::reaper::Reaper::default()));
    let transfers = Progress::default();
    let metrics = match &host.metrics {
        Some(handle) => handle.clone(),
        None => crate::telemetry::metrics::install(),
    };
    env.recorded(|| {
        crate::telemetry::metrics::build_info(
            &membership.local().to_string(),
            &membership.http_address(membership.local()),
        )
    });
    let api = Arc::new(Api {
        contexts: ContextSeal::new(secret.clone(), membership.cluster_id()),
        coordinator,
        coverage,
        membership: Arc::clone(&membership),
        store,
        transfers: Arc::clone(&transfers),
        hints: Arc::clone(&hints),
        anti_entropy: anti_entropy.clone(),
        reaper: reaper.clone(),
        metrics,
        limits: Limits { max_key_bytes: config.max_key_bytes, max_value_bytes: config.max_value_bytes },
        info: NodeInfo { cluster_address, partitions, http_tls: config.http_tls.is_some() },
        metrics_token,
        security: membership.security(),
        env: env.clone(),
        drain: Default::default(),
    });
    let router = api::router(Arc::clone(&api));
    Ok(App {
        router,
        secret,
        api,
        membership,
        replica,
        peers,
        transfers,
        replicas,
        hints,
        request_timeout: config.request_timeout,
        anti_entropy,
        reaper,
        env: env.clone(),
    })
}

/// A new cluster with security on: its first admin token (every permission
/// on `*`), whose hash goes into the state and which is written, once, to
/// `DATA_DIR/admin.token` (mode 0600). An existing file is never
/// overwritten: it may be the only copy of another cluster's token.
fn first_admin_token(config: &Config, env: &Env, state: &mut ClusterState) -> Result<(), NodeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    use crate::core::security;
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    let failed =
        |e: std::io::Error| NodeError::Security(format!("cannot write the admin token to {}: {e}", path.display()));
    std::fs::create_dir_all(&config.data_dir).map_err(failed)?;
    let token = security::new_token(env.entropy.bytes::<{ security::TOKEN_RANDOM_BYTES }>());
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(NodeError::Security(format!(
                "{} exists, but this node is creating a new cluster: it would be overwritten. Move it away (it \
                 belongs to the cluster this data directory held before) and start again",
                path.display()
            )));
        }
        Err(e) => return Err(failed(e)),
    };
    file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(failed)?;
    let me = state.ring.author.clone();
    security::create(
        &mut state.tokens,
        &me,
        security::ADMIN_TOKEN_NAME,
        security::token_hash(&token),
        security::admin_grants(),
        None,
    )
    .map_err(|e| NodeError::Security(e.to_string()))?;
    state.security = true;
    // The path, never the token.
    tracing::info!(path = %path.display(), "client security on: the first admin token was written to this file");
    Ok(())
}

/// The file a new cluster with security on writes its first admin token to.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The hash of the token in `--metrics-token-file`, read once at start: the
/// file must exist, hold one word and not be world-readable.
fn metrics_token(path: Option<&std::path::Path>) -> Result<Option<[u8; 32]>, NodeError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = path else { return Ok(None) };
    let bad = |why: String| NodeError::Security(format!("--metrics-token-file {}: {why}", path.display()));
    let metadata = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if metadata.permissions().mode() & 0o004 != 0 {
        return Err(bad("the file is world-readable; chmod 600 it".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the file must hold one token: one word of visible ASCII".into()));
    }
    Ok(Some(crate::core::security::token_hash(token)))
}

fn anti_entropy_settings(config: &Config) -> anti_entropy::Settings {
    anti_entropy::Settings {
        interval: config.anti_entropy_interval,
        rebuild_after: config.anti_entropy_rebuild_interval,
        repairs_per_second: config.anti_entropy_repairs_per_second,
    }
}

/// Binds the HTTP and cluster addresses from the config (the HTTP port
/// listens only once the node serves: [`Listeners`]).
pub async fn bind(config: &Config) -> Result<Listeners, NodeError> {
    let failed =
        |address: &str, e: std::io::Error| NodeError::Listen { address: address.to_owned(), reason: e.to_string() };
    let http = BoundSocket::bind(&config.address).await.map_err(|e| failed(&config.address, e))?;
    let cluster = TcpListener::bind(&config.cluster_address).await.map_err(|e| failed(&config.cluster_address, e))?;
    Ok(Listeners { http, cluster })
}

/// How long a new node keeps asking its seed to admit it (the seed may be
/// starting too).
const JOIN_PATIENCE: Duration = Duration::from_secs(10);

/// The largest `/cluster/address` answer read: a few addresses' worth.
const CLUSTER_ADDRESS_BYTES: usize = 64 * 1024;

/// Why a join failed: the seed refused us (it answered), or nobody answered.
struct JoinFailed {
    error: NodeError,
    answered: bool,
}

/// Asks the member `-j` names (`given`) to admit us, retrying for `patience`
/// while nobody answers there.
///
/// `given` may be a member's cluster address or its HTTP address (`-j`
/// of the original's setup is the first node's HTTP address). A bare
/// `HOST:PORT` is tried with the cluster protocol first; if what answers is
/// no member's cluster port, the same address is asked over HTTP (then
/// HTTPS) for `/cluster/address`, and the join goes there. Something that
/// answers neither as a member's cluster port nor as its HTTP port stops the
/// node at once ([`NodeError::NotMember`]): retrying would not change it.
/// The simulator's network carries the cluster protocol only, so there the
/// HTTP question is never asked.
async fn join(
    config: &Config,
    host: &Host,
    given: &str,
    me: &Member,
    patience: Duration,
) -> Result<Admission, JoinFailed> {
    let seed = crate::config::parse_seed(given)
        .map_err(|reason| JoinFailed { error: NodeError::Join { seed: given.to_owned(), reason }, answered: true })?;
    let peers = peers_for(config, host, &Caller::joining(me.node.clone()));
    let deadline = tokio::time::Instant::now() + patience;
    let may_ask_http = host.connector.is_none();
    // The cluster address to join through, once known: `given` itself for a
    // bare address (until the cluster protocol proves it is not one), the
    // one the member's HTTP port named after that.
    let mut through: Option<String> = match seed {
        crate::config::Seed::Either(address) => Some(address.to_owned()),
        crate::config::Seed::Http { .. } => None,
    };
    let mut asked_http = false;
    loop {
        let failed = |seed: String, reason: String, answered: bool| JoinFailed {
            error: NodeError::Join { seed, reason },
            answered,
        };
        // Whether to ask `given` over HTTP now, and why the cluster protocol
        // failed there (for the message if HTTP fails too).
        let mut ask_http = !asked_http && may_ask_http;
        let mut grpc_failure: Option<String> = None;
        if let Some(cluster_address) = through.clone() {
            let named = if asked_http {
                format!("{cluster_address} (named by the HTTP address {given})")
            } else {
                cluster_address.clone()
            };
            let attempt = async {
                let channel = peers.seed_channel(&cluster_address).map_err(|e| (e.to_string(), None))?;
                crate::rpc::membership::join_with_security(channel, me, config.security)
                    .await
                    .map_err(|s| (describe_join_error(&s), Some(s)))
            };
            let reason = match tokio::time::timeout(config.request_timeout, attempt).await {
                Ok(Ok((state, secret))) => {
                    if asked_http {
                        tracing::info!("joined through cluster address {cluster_address} (given HTTP address {given})");
                    } else {
                        tracing::info!("joined through cluster address {cluster_address}");
                    }
                    return Ok(Admission { state, secret });
                }
                Ok(Err((reason, Some(status)))) => {
                    // What is no member's cluster port also "answers" (no
                    // such service, a body that is no gRPC): maybe its HTTP
                    // port. Any other answer is a member's refusal
                    // (another cluster's security setting, a protocol
                    // version it does not speak...), final.
                    let not_a_cluster_port = matches!(
                        status.code(),
                        tonic::Code::Unimplemented | tonic::Code::Internal | tonic::Code::Unknown
                    );
                    if answered(&status) && !(ask_http && not_a_cluster_port) {
                        return Err(failed(named, reason, true));
                    }
                    // A member's cluster port that left the cluster: no
                    // HTTP port to ask, and as good as nobody (`answered`).
                    ask_http &= !seed_gone(&status);
                    reason
                }
                Ok(Err((reason, None))) => reason,
                Err(_) => "timed out".to_owned(),
            };
            if ask_http {
                grpc_failure = Some(reason);
            } else if tokio::time::Instant::now() >= deadline {
                return Err(failed(named, reason, false));
            } else {
                tracing::warn!(seed = %named, %reason, "join failed; retrying");
            }
        }
        if ask_http {
            match ask_cluster_address(config, seed).await {
                Ok(found) => {
                    tracing::info!(
                        node = %found.node_id,
                        "joining through cluster address {} (given HTTP address {given})",
                        found.cluster_address
                    );
                    through = Some(found.cluster_address);
                    asked_http = true;
                    // Straight to the cluster address: the member is up.
                    continue;
                }
                Err(FetchError::Broken(http)) => {
                    let reason = match &grpc_failure {
                        Some(grpc) => format!("as a cluster address: {grpc}; as an HTTP address: {http}"),
                        None => http,
                    };
                    let error = NodeError::NotMember { given: given.to_owned(), reason: one_line(&reason) };
                    return Err(JoinFailed { error, answered: true });
                }
                Err(FetchError::Unreachable(http)) => {
                    let reason = grpc_failure.unwrap_or(http);
                    if tokio::time::Instant::now() >= deadline {
                        return Err(failed(given.to_owned(), reason, false));
                    }
                    tracing::warn!(seed = %given, %reason, "join failed; retrying");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `text` with its whitespace runs (newlines too) made single spaces: what
/// a stranger answered, quoted in the one line that stops the node.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A member's answer to `GET /cluster/address`.
#[derive(serde::Deserialize)]
struct ClusterAddressAnswer {
    cluster_address: String,
    node_id: String,
}

/// Asks the HTTP port at the `-j` address where the member's cluster port
/// is. A bare address is asked over plain HTTP first and, if what answers
/// speaks no HTTP (a TLS port), over HTTPS, trusting the cluster CA
/// (`--tls-ca`) when the node has one, else the system's CAs. An answer
/// that is not a member's (another server, a member of a release without
/// the route) is [`FetchError::Broken`].
async fn ask_cluster_address(
    config: &Config,
    seed: crate::config::Seed<'_>,
) -> Result<ClusterAddressAnswer, FetchError> {
    let (address, schemes): (&str, &[bool]) = match seed {
        crate::config::Seed::Either(address) => (address, &[false, true]),
        crate::config::Seed::Http { https, address } => (address, if https { &[true] } else { &[false] }),
    };
    let timeout = config.request_timeout;
    let mut failures = Vec::new();
    for &https in schemes {
        let tls = if https {
            let ca = config.tls.as_ref().map(|t| t.ca.as_path());
            match ClientTls::from_flags(ca, ["https://"]) {
                Ok(tls) => tls,
                Err(e) => {
                    failures.push(format!("over HTTPS: {e}"));
                    break;
                }
            }
        } else {
            ClientTls::plain()
        };
        let url = format!("{}://{address}/cluster/address", if https { "https" } else { "http" });
        let answer = match crate::http_client::fetch(&tls, &url, timeout, CLUSTER_ADDRESS_BYTES).await {
            Ok(answer) => answer,
            // Nobody there: HTTPS would find nobody either.
            Err(FetchError::Unreachable(why)) if failures.is_empty() => return Err(FetchError::Unreachable(why)),
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        // An HTTP answer: a member's, or not; HTTPS would not change that.
        return cluster_address_from(&url, answer).map_err(FetchError::Broken);
    }
    Err(FetchError::Broken(failures.join("; ")))
}

/// A member's `/cluster/address` answer, checked: what a stranger says is
/// not dialled unless it is a `HOST:PORT`.
fn cluster_address_from(
    url: &str,
    (status, body): (http::StatusCode, bytes::Bytes),
) -> Result<ClusterAddressAnswer, String> {
    let text = one_line(&String::from_utf8_lossy(&body));
    let text: String = text.chars().take(200).collect();
    if !status.is_success() {
        return Err(format!("GET {url} answered {status}: {text}"));
    }
    let answer: ClusterAddressAnswer = serde_json::from_slice(&body)
        .map_err(|e| format!("GET {url} answered {status} with no cluster address ({e}): {text}"))?;
    crate::config::split_host_port(&answer.cluster_address)
        .map_err(|e| format!("GET {url} named the cluster address {:?}: {e}", answer.cluster_address))?;
    Ok(answer)
}

/// Whether the seed itself answered (a refusal), rather than nobody. A seed
/// that is no member any more (it left, was removed, or is a duplicate)
/// speaks for no cluster: as good as nobody, so a restarting node falls back
/// on what its data directory remembers (the simulator found nodes that
/// could not restart after their seed left).
fn answered(status: &tonic::Status) -> bool {
    !seed_gone(status)
        && !matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        )
}

/// Whether the seed is a member that left the cluster (removed, or a
/// duplicate of another process).
fn seed_gone(status: &tonic::Status) -> bool {
    let refused_for = status.metadata().get(crate::rpc::identity::REFUSED_HEADER).and_then(|v| v.to_str().ok());
    matches!(refused_for, Some("removed" | "duplicate"))
}

fn describe_join_error(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unimplemented => {
            format!("it is not a Vinz Clortho cluster address (no membership service): {}", status.message())
        }
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal => {
            format!("no member answers there: {}", status.message())
        }
        _ => status.message().to_owned(),
    }
}

/// Opens the node on `store`: joins the cluster first when the config names
/// a seed (`-j`), then wires it up ([`build`]). A node whose data directory
/// already belongs to a cluster asks the seed once and, if it does not
/// answer, starts from what the directory remembers: a restart must not
/// depend on one particular member being up (the simulator found nodes
/// that could not come back while their seed was down).
pub async fn start(
    config: &Config,
    host: &Host,
    address: String,
    cluster_address: String,
    store: Arc<dyn Store>,
) -> Result<App, NodeError> {
    let node = identity(&*store, &host.env)?;
    let remembered = membership::load_state(&*store)?;
    let joined = match &config.join {
        Some(seed) => {
            // A rejoining node keeps the claim it had; a new one asks for the
            // default (above the partition count means an equal share).
            let claim =
                remembered.as_ref().and_then(|s| s.members.get(&node).map(|m| m.wanted_claim)).unwrap_or(u32::MAX);
            let me = Member::new(node.clone(), address.clone(), cluster_address.clone(), claim, host.env.now_ms());
            let patience = if remembered.is_some() { Duration::ZERO } else { JOIN_PATIENCE };
            match join(config, host, seed, &me, patience).await {
                Ok(admission) => Some(admission),
                Err(JoinFailed { error, answered: false }) if remembered.is_some() => {
                    tracing::warn!(
                        %seed,
                        %error,
                        "the seed did not admit us; starting from the cluster this data directory remembers \
                         (gossip finds the other members)"
                    );
                    None
                }
                Err(JoinFailed { error, .. }) => return Err(error),
            }
        }
        None => None,
    };
    build(config, host, address, cluster_address, store, joined)
}

/// The node's gRPC services: replica and transfer (fenced by the ring),
/// membership, coverage (listings, fenced too), anti-entropy (when on),
/// health and reflection. The health reporter starts SERVING; `stop` ends
/// open replica call streams.
pub fn grpc_routes(config: &Config, app: &App, stop: CancellationToken) -> (RoutesBuilder, HealthReporter) {
    let fence: Arc<dyn crate::coordinator::Topology> = app.membership.clone();
    let max_message_bytes = config.largest_message_bytes(app.membership.view().n_val);
    let (mut routes, health) =
        crate::rpc::server::routes(Arc::clone(&app.replica), Some(fence), max_message_bytes, stop);
    let membership = MembershipService::new(Arc::clone(&app.membership), app.secret.clone());
    routes.add_service(crate::rpc::membership::server(membership, app.api.info.partitions));
    routes.add_service(crate::rpc::coverage::server(
        Arc::clone(&app.api.store),
        app.membership.clone(),
        &app.env,
        max_message_bytes,
    ));
    routes.add_service(crate::rpc::forward::server(
        Arc::clone(&app.api.coordinator),
        app.membership.clone(),
        &app.env,
        max_message_bytes,
    ));
    if let Some(ae) = &app.anti_entropy {
        let trees = LocalTrees::new(Arc::clone(ae), Arc::clone(&app.replica), Arc::clone(&app.membership));
        routes.add_service(crate::rpc::anti_entropy::server(
            Arc::new(trees),
            app.api.info.partitions,
            max_message_bytes,
        ));
    }
    (routes, health)
}

/// Starts the background workers (gossip, handoff, hints, anti-entropy, the
/// tombstone reaper) until `cancel` fires.
pub fn spawn_workers(config: &Config, app: &App, cancel: &CancellationToken) -> Vec<JoinHandle<()>> {
    let gossip = GossipWorker::new(
        Arc::clone(&app.membership),
        Arc::clone(&app.peers),
        config.gossip_interval,
        app.env.entropy.clone(),
    );
    let handoff = HandoffWorker::new(
        Arc::clone(&app.membership),
        Arc::clone(&app.replica),
        Arc::clone(&app.peers),
        Arc::clone(&app.transfers),
    );
    let hints = crate::services::hints::HintsWorker::new(
        Arc::clone(&app.membership) as Arc<dyn crate::coordinator::Topology>,
        Arc::clone(&app.replica),
        Arc::clone(&app.replicas),
        Arc::clone(&app.hints),
        app.request_timeout,
    );
    let mut workers = vec![
        crate::services::spawn(gossip, cancel.clone(), &app.env),
        crate::services::spawn(handoff, cancel.clone(), &app.env),
        crate::services::spawn(hints, cancel.clone(), &app.env),
    ];
    if let Some(ae) = &app.anti_entropy {
        let worker = AntiEntropyWorker::new(
            Arc::clone(ae),
            Arc::clone(&app.membership),
            Arc::clone(&app.replica),
            Arc::clone(&app.peers),
            anti_entropy_settings(config),
        );
        workers.push(crate::services::spawn(worker, cancel.clone(), &app.env));
    }
    if let Some(reaper) = &app.reaper {
        let settings = crate::services::reaper::Settings {
            grace: config.tombstone_grace,
            retention: config.reaped_retention,
            max_clock_entries: config.max_clock_entries,
            timeout: app.request_timeout,
        };
        let worker = crate::services::reaper::ReaperWorker::new(
            Arc::clone(reaper),
            Arc::clone(&app.membership) as Arc<dyn crate::coordinator::Topology>,
            Arc::clone(&app.replica),
            Arc::clone(&app.replicas),
            settings,
        );
        workers.push(crate::services::spawn(worker, cancel.clone(), &app.env));
    }
    workers
}

/// How often the certificate files are checked for a rotation.
const CERTIFICATE_POLL: Duration = Duration::from_secs(2);

/// The cluster port's certificates, when the config names them; a plaintext
/// port off loopback (`--insecure-cluster`, config checks the rest) is
/// logged as the risk it is.
pub fn cluster_tls(config: &Config) -> Result<Option<Arc<ClusterTls>>, NodeError> {
    let Some(paths) = &config.tls else {
        let advertised = config.cluster_advertise.as_deref().unwrap_or(&config.cluster_address);
        if config.insecure_cluster
            && !(crate::config::is_loopback(&config.cluster_address) && crate::config::is_loopback(advertised))
        {
            tracing::warn!(
                cluster_address = %config.cluster_address,
                "--insecure-cluster: the cluster port is plaintext on an address that is not loopback; anyone who \
                 reaches it can act as a member (read and overwrite data, change the ring)"
            );
        }
        return Ok(None);
    };
    let files = TlsFiles { ca: paths.ca.clone(), cert: paths.cert.clone(), key: paths.key.clone() };
    let tls = ClusterTls::load(files)?;
    tracing::info!(
        ca = %paths.ca.display(),
        cert = %paths.cert.display(),
        name = tls.name().as_deref().unwrap_or(""),
        "cluster port: mutual TLS"
    );
    Ok(Some(Arc::new(tls)))
}

/// The HTTP port's certificate, when the config names one.
pub fn http_tls(config: &Config) -> Result<Option<Arc<HttpTls>>, NodeError> {
    let Some(paths) = &config.http_tls else { return Ok(None) };
    let tls =
        HttpTls::load(HttpTlsFiles { cert: paths.cert.clone(), key: paths.key.clone() }).map_err(NodeError::HttpTls)?;
    tracing::info!(cert = %paths.cert.display(), "HTTP port: HTTPS only");
    Ok(Some(Arc::new(tls)))
}

/// How long a node shutting down waits for its peers to take its
/// going-down notice (all are told at once).
const GOING_DOWN_NOTICE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs a node on `listeners` until `shutdown` resolves (or the node stops
/// serving), then shuts it down cleanly:
///
/// 1. health NOT_SERVING, and every new HTTP request, `/ping` included, is
///    answered 503 (`api::drain`) while those in flight go on; no more
///    heartbeats, the workers stop;
/// 2. meanwhile every peer is told this node is going down
///    (`services::gossip::announce_going_down`), so they route around it
///    now rather than after the failure timeout;
/// 3. once no HTTP request is left, or `--shutdown-grace-ms` after the
///    signal, the HTTP port closes; calls between nodes still in flight get
///    what is left of the grace period;
/// 4. the store is flushed (`Store::flush`), and `run` returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let cluster_bound: SocketAddr = listeners.cluster.local_addr().map_err(|e| NodeError::Serve(e.to_string()))?;
    let address = listeners.http_address(&config);
    let cluster_address =
        config.cluster_advertise.clone().unwrap_or_else(|| advertised(&config.cluster_address, cluster_bound));
    let tls = cluster_tls(&config)?;
    let https = http_tls(&config)?;
    let store = open_store(&config)?;
    let host = Host { tls: tls.clone(), ..Host::real() };
    let app = start(&config, &host, address.clone(), cluster_address.clone(), store).await?;
    let node = app.membership.local().clone();
    // Workers stop first; the gRPC server (and its open replica call
    // streams) only after the HTTP requests in flight, which may need peers.
    let cancel = CancellationToken::new();
    let stop_grpc = CancellationToken::new();

    let (routes, health) = grpc_routes(&config, &app, stop_grpc.clone());
    // NOT_SERVING until the workers run, and again from shutdown on.
    health.set_service_status("", ServingStatus::NotServing).await;
    let grpc = tokio::spawn(crate::rpc::server::serve_with_tls(
        listeners.cluster,
        routes,
        app.membership.clone(),
        tls.clone(),
        stop_grpc.clone().cancelled_owned(),
    ));
    let mut workers = spawn_workers(&config, &app, &cancel);
    let mut reload = crate::services::certificates::CertificateWorker::new(CERTIFICATE_POLL);
    if let Some(tls) = tls {
        reload = reload.cluster(tls, Arc::clone(&app.peers), Arc::clone(&app.membership));
    }
    if let Some(https) = &https {
        reload = reload.http(Arc::clone(https));
    }
    if reload.watches_anything() {
        workers.push(crate::services::spawn(reload, cancel.clone(), &app.env));
    }
    health.set_service_status("", ServingStatus::Serving).await;

    tracing::info!(
        %node,
        %address,
        %cluster_address,
        partitions = app.api.info.partitions,
        storage = app.api.store.engine(),
        data_dir = %config.data_dir.display(),
        "node started"
    );
    let listener =
        listeners.http.listen().map_err(|e| NodeError::Listen { address: address.clone(), reason: e.to_string() })?;
    // One line on stdout for scripts and tests that wait for readiness.
    let scheme = if https.is_some() { "https" } else { "http" };
    println!("vinzclortho listening on {scheme}://{address} cluster={cluster_address}");
    let close_http = CancellationToken::new();
    let mut http =
        tokio::spawn(crate::https::serve(listener, https, app.router.clone(), close_http.clone().cancelled_owned()));
    let stopped = app.membership.wait_stopped();
    let ended_early = tokio::select! {
        () = shutdown => None,
        () = stopped => None,
        served = &mut http => Some(served),
    };

    // 1. Refuse new work; let what is in flight go on.
    let grace = config.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(%node, grace_ms = grace.as_millis() as u64, "shutting down: new requests refused, those in flight finish");
    health.set_service_status("", ServingStatus::NotServing).await;
    app.membership.begin_shutdown();
    app.api.drain.begin();
    cancel.cancel();
    // 2. Tell the peers, while the requests in flight finish. A node the
    // cluster removed, or that found another process under its id, speaks
    // for no one: it says nothing.
    let announce = async {
        if app.membership.stopped().is_none() {
            let (told, peers) =
                crate::services::gossip::announce_going_down(&app.membership, &app.peers, GOING_DOWN_NOTICE_TIMEOUT)
                    .await;
            tracing::info!(told, peers, "told the peers this node is going down");
        }
    };
    let drained = tokio::time::timeout_at(deadline, app.api.drain.drained());
    let workers_done = tokio::time::timeout_at(deadline, futures::future::join_all(workers));
    let ((), drained, _) = tokio::join!(announce, drained, workers_done);
    if drained.is_err() {
        tracing::warn!(
            in_flight = app.api.drain.in_flight(),
            "HTTP requests still in flight at the end of the shutdown grace period are cut"
        );
    }
    // 3. Close the HTTP port (and the idle connections), then the cluster
    // port; merges are idempotent, so a transfer cut here is repeated later.
    close_http.cancel();
    let served = match ended_early {
        Some(served) => served,
        None => match tokio::time::timeout_at(deadline, &mut http).await {
            Ok(served) => served,
            Err(_) => {
                http.abort();
                Ok(Ok(()))
            }
        },
    };
    stop_grpc.cancel();
    let _ = tokio::time::timeout_at(deadline, grpc).await;
    // 4. What the OS still buffers goes to disk.
    let store = Arc::clone(&app.api.store);
    match tokio::task::spawn_blocking(move || store.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing the store at shutdown failed"),
        Err(e) => tracing::warn!(error = %e, "flushing the store at shutdown failed"),
    }
    served.map_err(|e| NodeError::Serve(e.to_string()))?.map_err(|e| NodeError::Serve(e.to_string()))?;
    // A node that left was asked to go: its shutdown is a clean one.
    if let Some(error) = app.membership.stop_error()
        && !app.membership.left()
    {
        return Err(error.into());
    }
    tracing::info!(%node, "node stopped");
    Ok(())
}

/// The name a node advertises: the configured address, except that port 0
/// becomes the port the OS picked.
fn advertised(configured: &str, bound: SocketAddr) -> String {
    match configured.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{}", bound.port()),
        _ => configured.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_members_cluster_address_answer_is_dialled() {
        let url = "http://h:8880/cluster/address";
        let answer = |status: u16, body: &str| {
            cluster_address_from(
                url,
                (http::StatusCode::from_u16(status).unwrap(), bytes::Bytes::from(body.to_owned())),
            )
        };
        let ok = answer(200, r#"{"cluster_address": "h:9880", "node_id": "00ff"}"#).unwrap();
        assert_eq!((ok.cluster_address.as_str(), ok.node_id.as_str()), ("h:9880", "00ff"));
        let err = answer(404, "<html>\n  <p>Not Found</p>\n</html>").err().unwrap();
        assert_eq!(err, "GET http://h:8880/cluster/address answered 404 Not Found: <html> <p>Not Found</p> </html>");
        let err = answer(200, "It works!").err().unwrap();
        assert!(err.contains("answered 200 OK with no cluster address") && err.ends_with(": It works!"), "{err}");
        let err = answer(200, r#"{"cluster_address": "no port", "node_id": "x"}"#).err().unwrap();
        assert!(err.contains(r#"named the cluster address "no port""#), "{err}");
        let err = answer(200, r#"{"cluster_address": 7}"#).err().unwrap();
        assert!(err.contains("no cluster address"), "{err}");
        // A stranger's page is quoted short.
        let err = answer(500, &"x".repeat(10_000)).err().unwrap();
        assert!(err.len() < 300, "{}", err.len());
    }
}
