//! Command line, environment and config file, merged and validated into one
//! typed [`Config`]. The node's flags are [`NodeArgs`]; `cli` puts them on the
//! command line beside the tools' subcommands.
//!
//! Precedence, highest first: command-line flag, `VINZCLORTHO_*` environment
//! variable (clap reads both), TOML config file (`--config`), built-in
//! default. Every setting has the same name in all three places: `--n-val`,
//! `VINZCLORTHO_N_VAL`, `n_val = 3`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::core::ring::validate_partition_count;
use crate::replica::SiblingLimits;
use crate::telemetry::LogFormat;

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8880";
pub const DEFAULT_PARTITIONS: u32 = 64;
/// The cluster (gRPC) port defaults to the HTTP port plus this.
pub const CLUSTER_PORT_OFFSET: u16 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Durable storage in RocksDB under --data-dir.
    Rocksdb,
    /// Keeps nothing across restarts; for tests and experiments.
    Memory,
}

/// Options of a node. All optional here so that the config file can fill
/// what the command line and environment leave out.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeArgs {
    /// Public HTTP address to listen on, HOST:PORT [default: 127.0.0.1:8880]
    #[arg(short = 'a', long, env = "VINZCLORTHO_ADDRESS", value_name = "HOST:PORT")]
    pub address: Option<String>,

    /// Number of partitions of the ring: a power of two, fixed when the
    /// cluster is created [default: 64, or what the data directory has]
    #[arg(short = 'p', long, env = "VINZCLORTHO_PARTITIONS", value_name = "N")]
    pub partitions: Option<u32>,

    /// Any member to join, by its cluster address or its HTTP address
    /// (HOST:PORT; http://HOST:PORT or https://HOST:PORT name the HTTP port
    /// explicitly). Given an HTTP address, the node asks it for the member's
    /// cluster address (GET /cluster/address, no credentials needed; over
    /// HTTPS it trusts --tls-ca, or the system's CAs) and logs which it
    /// used. While nothing answers at ADDR a new node retries for 10 s (a
    /// restarted one asks once, then starts from what its data directory
    /// remembers); something there that is no member stops it at once with
    /// one line saying what answered. Without -j a
    /// new node starts a new cluster, and a restarted one rejoins the
    /// cluster its data directory remembers. The partition count, N, R and
    /// W of a joined cluster come from the cluster, not from this node's
    /// flags.
    #[arg(short = 'j', long, env = "VINZCLORTHO_JOIN", value_name = "ADDR")]
    pub join: Option<String>,

    /// Address for node-to-node gRPC [default: the HTTP host, port + 1000]
    #[arg(long, env = "VINZCLORTHO_CLUSTER_ADDRESS", value_name = "HOST:PORT")]
    pub cluster_address: Option<String>,

    /// Cluster address other nodes should use to reach this one, when it
    /// differs from --cluster-address (NAT, a proxy) [default: the bound
    /// --cluster-address]
    #[arg(long, env = "VINZCLORTHO_CLUSTER_ADVERTISE", value_name = "HOST:PORT")]
    pub cluster_advertise: Option<String>,

    /// Where RocksDB keeps this node's data [default: ./vinzclortho-data/HOST_PORT]
    #[arg(long, env = "VINZCLORTHO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Storage engine [default: rocksdb]
    #[arg(long, env = "VINZCLORTHO_STORAGE", value_enum)]
    pub storage: Option<StorageKind>,

    /// fsync every write before acknowledging it: survives power loss, costs
    /// latency [default: false; writes survive a process crash either way]
    #[arg(long, env = "VINZCLORTHO_SYNC_WRITES", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub sync_writes: Option<bool>,

    /// RocksDB options in RocksDB's option-string syntax, applied over this
    /// node's defaults to the database and each column family, e.g.
    /// "compaction_style=kCompactionStyleUniversal" or
    /// "block_based_table_factory={block_cache=256M;filter_policy=bloomfilter:10:false}"
    /// (docs/performance.md has what was measured); an unknown option, a
    /// bad value, or manual_wal_flush / unordered_write (they would lose or
    /// reorder acknowledged writes) stops the node at start [default: none]
    #[arg(long, env = "VINZCLORTHO_ROCKSDB_OPTIONS", value_name = "OPTIONS")]
    pub rocksdb_options: Option<String>,

    /// Replicas per key (N) [default: 3]
    #[arg(long, env = "VINZCLORTHO_N_VAL", value_name = "N")]
    pub n_val: Option<usize>,

    /// Replies a read waits for (R), at most N [default: 2]
    #[arg(short = 'r', long, env = "VINZCLORTHO_R", value_name = "R")]
    pub r: Option<usize>,

    /// Acknowledgements a write waits for (W), at most N [default: 2]
    #[arg(short = 'w', long, env = "VINZCLORTHO_W", value_name = "W")]
    pub w: Option<usize>,

    /// How long a client request waits for replicas, in milliseconds [default: 3000]
    #[arg(long, env = "VINZCLORTHO_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// How often a node gossips with a random member, in milliseconds [default: 1000]
    #[arg(long, env = "VINZCLORTHO_GOSSIP_INTERVAL_MS", value_name = "MS")]
    pub gossip_interval_ms: Option<u64>,

    /// A member whose heartbeat has not advanced for this long is considered
    /// down, in milliseconds [default: 5000]
    #[arg(long, env = "VINZCLORTHO_FAILURE_TIMEOUT_MS", value_name = "MS")]
    pub failure_timeout_ms: Option<u64>,

    /// On SIGTERM, how long requests in flight (HTTP and between nodes) may
    /// still run before they are cut, in milliseconds; new ones are refused
    /// with 503 meanwhile [default: 5000]
    #[arg(long, env = "VINZCLORTHO_SHUTDOWN_GRACE_MS", value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,

    /// Largest key accepted, in bytes; longer keys get 414 [default: 65536]
    #[arg(long, env = "VINZCLORTHO_MAX_KEY_BYTES", value_name = "BYTES")]
    pub max_key_bytes: Option<usize>,

    /// Largest value accepted, in bytes; larger bodies get 413 [default: 16777216]
    #[arg(long, env = "VINZCLORTHO_MAX_VALUE_BYTES", value_name = "BYTES")]
    pub max_value_bytes: Option<usize>,

    /// Log a warning when a key has more siblings than this [default: 25]
    #[arg(long, env = "VINZCLORTHO_SIBLINGS_WARN", value_name = "N")]
    pub siblings_warn: Option<usize>,

    /// Refuse writes that would leave a key with more siblings than this [default: 100]
    #[arg(long, env = "VINZCLORTHO_SIBLINGS_MAX", value_name = "N")]
    pub siblings_max: Option<usize>,

    /// How often this node compares one of its partitions with the other
    /// replicas and repairs what differs (active anti-entropy), in
    /// milliseconds; 0 disables it (and its hash trees) [default: 10000]
    #[arg(long, env = "VINZCLORTHO_ANTI_ENTROPY_INTERVAL_MS", value_name = "MS")]
    pub anti_entropy_interval_ms: Option<u64>,

    /// Rebuild an anti-entropy hash tree from the store once it is this old,
    /// in milliseconds [default: 3600000]
    #[arg(long, env = "VINZCLORTHO_ANTI_ENTROPY_REBUILD_INTERVAL_MS", value_name = "MS")]
    pub anti_entropy_rebuild_interval_ms: Option<u64>,

    /// Keys anti-entropy repairs per second at most, so that repairing a
    /// wiped node does not slow client requests [default: 1000]
    #[arg(long, env = "VINZCLORTHO_ANTI_ENTROPY_REPAIRS_PER_SECOND", value_name = "N")]
    pub anti_entropy_repairs_per_second: Option<u32>,

    /// Caps this node's outgoing partition transfers (moves when nodes join
    /// or leave, and handoff sweeps) at this many MB/s (10^6 bytes) in all,
    /// so moving data never starves client requests; 0 means no cap
    /// [default: 0]
    #[arg(long, env = "VINZCLORTHO_TRANSFER_LIMIT_MB", value_name = "MB")]
    pub transfer_limit_mb: Option<u64>,

    /// Repair stale replicas found by reads (read repair); false leaves
    /// repairs to anti-entropy and handoff [default: true]
    #[arg(long, env = "VINZCLORTHO_READ_REPAIR", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub read_repair: Option<bool>,

    /// How long a tombstone (a deleted key) is kept after every primary
    /// holds it before it is reaped, in milliseconds; 0 never reaps. The
    /// grace covers writes, hints and repairs still in flight for the key
    /// and clients holding its context [default: 86400000, one day]
    #[arg(long, env = "VINZCLORTHO_TOMBSTONE_GRACE_MS", value_name = "MS")]
    pub tombstone_grace_ms: Option<u64>,

    /// How long a node remembers the clock of a tombstone it reaped (and
    /// the clock entries it pruned), in milliseconds, so that a stale copy
    /// arriving later is dropped; a node away for longer must be wiped or
    /// force-removed, not brought back [default: 604800000, seven days]
    #[arg(long, env = "VINZCLORTHO_REAPED_RETENTION_MS", value_name = "MS")]
    pub reaped_retention_ms: Option<u64>,

    /// Clock hygiene: a key whose version vector has more entries than this
    /// gets its oldest entries (of actors that dot no current value) moved
    /// into a history record, kept for --reaped-retention-ms; 0 never
    /// prunes [default: 8]
    #[arg(long, env = "VINZCLORTHO_MAX_CLOCK_ENTRIES", value_name = "N")]
    pub max_clock_entries: Option<usize>,

    /// OTLP/gRPC collector to export traces to (e.g. http://127.0.0.1:4317);
    /// OTEL_EXPORTER_OTLP_ENDPOINT works too [default: none, no export]
    #[arg(long, env = "VINZCLORTHO_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Log format; the level comes from RUST_LOG (e.g. RUST_LOG=debug) [default: text]
    #[arg(long, env = "VINZCLORTHO_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// The cluster CA's certificate (PEM, from `vinzclortho certs init`):
    /// turns on mutual TLS on the cluster port, with --tls-cert and
    /// --tls-key. Peers must present a certificate it signed [default: none,
    /// plaintext, allowed only on loopback or with --insecure-cluster]
    #[arg(long, env = "VINZCLORTHO_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// This node's certificate (PEM, from `vinzclortho certs node`), signed
    /// by --tls-ca; reloaded when the file changes
    #[arg(long, env = "VINZCLORTHO_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// This node's private key (PEM); must not be world-readable (chmod
    /// 600); reloaded when the file changes
    #[arg(long, env = "VINZCLORTHO_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// This node's certificate for the HTTP port (PEM, chain first): with
    /// --http-tls-key, the HTTP port speaks HTTPS only (no plaintext on it).
    /// Clients check it against the CA that signed it (`--cacert` of the
    /// admin CLI and bench). Reloaded when the file changes [default: none,
    /// plain HTTP]
    #[arg(long, env = "VINZCLORTHO_HTTP_TLS_CERT", value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,

    /// The private key of --http-tls-cert (PEM); must not be world-readable
    /// (chmod 600); reloaded when the file changes
    #[arg(long, env = "VINZCLORTHO_HTTP_TLS_KEY", value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,

    /// Allow a plaintext cluster port on an address that is not loopback:
    /// anyone who reaches the port can then act as a member. Logs a warning
    /// [default: false]
    #[arg(long, env = "VINZCLORTHO_INSECURE_CLUSTER", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub insecure_cluster: Option<bool>,

    /// Client authentication: every HTTP request but /ping (and /metrics)
    /// needs `Authorization: Bearer TOKEN` with a grant for what it does.
    /// A cluster setting, fixed when the cluster is created: the node that
    /// creates it writes the first admin token to DATA_DIR/admin.token;
    /// every other node must be started with the same setting [default: false]
    #[arg(long, env = "VINZCLORTHO_SECURITY", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub security: Option<bool>,

    /// File holding the token /metrics requires (as `Authorization: Bearer
    /// TOKEN`), with or without --security; must not be world-readable
    /// [default: none, /metrics is open]
    #[arg(long, env = "VINZCLORTHO_METRICS_TOKEN_FILE", value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,

    /// TOML file with any of these options (keys use underscores)
    #[arg(short = 'c', long, env = "VINZCLORTHO_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub address: String,
    pub cluster_address: String,
    pub cluster_advertise: Option<String>,
    pub join: Option<String>,
    /// `None`: take the count from the data directory, or the default.
    pub partitions: Option<u32>,
    pub data_dir: PathBuf,
    pub storage: StorageKind,
    pub sync_writes: bool,
    /// Over the RocksDB engine's defaults (`--rocksdb-options`).
    pub rocksdb_options: Option<String>,
    pub n_val: usize,
    pub r: usize,
    pub w: usize,
    pub request_timeout: Duration,
    pub gossip_interval: Duration,
    pub failure_timeout: Duration,
    /// How long requests in flight may run on after SIGTERM.
    pub shutdown_grace: Duration,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub siblings: SiblingLimits,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<String>,
    /// Zero: anti-entropy is off.
    pub anti_entropy_interval: Duration,
    pub anti_entropy_rebuild_interval: Duration,
    pub anti_entropy_repairs_per_second: u32,
    /// Outgoing transfer bytes per second at most; 0: no cap.
    pub transfer_limit_mb: u64,
    pub read_repair: bool,
    /// Zero: tombstones are never reaped.
    pub tombstone_grace: Duration,
    pub reaped_retention: Duration,
    /// Zero: clocks are never pruned.
    pub max_clock_entries: usize,
    /// Mutual TLS on the cluster port; `None`: plaintext.
    pub tls: Option<TlsPaths>,
    /// Plaintext on a cluster address that is not loopback, on purpose.
    pub insecure_cluster: bool,
    /// HTTPS on the HTTP port; `None`: plain HTTP.
    pub http_tls: Option<HttpTlsPaths>,
    /// Client authentication (`--security`), for a new cluster; an existing
    /// one must match it.
    pub security: bool,
    /// The file of the token `/metrics` requires.
    pub metrics_token_file: Option<PathBuf>,
}

/// The certificate files of the HTTP port (no CA: clients are not asked
/// for certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate files of mutual TLS between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// The largest replica or transfer message a member legitimately sends,
    /// for a cluster with `n_val` replicas: one key's object at this node's
    /// limits (every replica may have added up to `siblings.max` siblings of
    /// `max_value_bytes` concurrently before they merged), plus a transfer
    /// batch's worth of smaller objects and room for keys and clocks. The
    /// cluster port refuses anything larger before decoding it, so a stranger
    /// cannot make a node allocate without bound. Every node must run with
    /// the same value and sibling limits, or a legal object of one could not
    /// reach another.
    pub fn largest_message_bytes(&self, n_val: usize) -> usize {
        const PER_SIBLING_BYTES: usize = 1024; // dot, content type, timestamps
        const SLACK_BYTES: usize = 4 << 20; // a transfer batch (1 MiB), clocks, framing
        let object = n_val
            .max(1)
            .saturating_mul(self.siblings.max.saturating_add(1))
            .saturating_mul(self.max_value_bytes.saturating_add(PER_SIBLING_BYTES));
        object.saturating_add(self.max_key_bytes.saturating_mul(2)).saturating_add(SLACK_BYTES)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl NodeArgs {
    /// Fills options missing here from `lower` (lower precedence).
    fn or(self, lower: NodeArgs) -> NodeArgs {
        NodeArgs {
            address: self.address.or(lower.address),
            partitions: self.partitions.or(lower.partitions),
            join: self.join.or(lower.join),
            cluster_address: self.cluster_address.or(lower.cluster_address),
            cluster_advertise: self.cluster_advertise.or(lower.cluster_advertise),
            data_dir: self.data_dir.or(lower.data_dir),
            storage: self.storage.or(lower.storage),
            sync_writes: self.sync_writes.or(lower.sync_writes),
            rocksdb_options: self.rocksdb_options.or(lower.rocksdb_options),
            n_val: self.n_val.or(lower.n_val),
            r: self.r.or(lower.r),
            w: self.w.or(lower.w),
            request_timeout_ms: self.request_timeout_ms.or(lower.request_timeout_ms),
            gossip_interval_ms: self.gossip_interval_ms.or(lower.gossip_interval_ms),
            failure_timeout_ms: self.failure_timeout_ms.or(lower.failure_timeout_ms),
            shutdown_grace_ms: self.shutdown_grace_ms.or(lower.shutdown_grace_ms),
            max_key_bytes: self.max_key_bytes.or(lower.max_key_bytes),
            max_value_bytes: self.max_value_bytes.or(lower.max_value_bytes),
            siblings_warn: self.siblings_warn.or(lower.siblings_warn),
            siblings_max: self.siblings_max.or(lower.siblings_max),
            anti_entropy_interval_ms: self.anti_entropy_interval_ms.or(lower.anti_entropy_interval_ms),
            anti_entropy_rebuild_interval_ms: self
                .anti_entropy_rebuild_interval_ms
                .or(lower.anti_entropy_rebuild_interval_ms),
            anti_entropy_repairs_per_second: self
                .anti_entropy_repairs_per_second
                .or(lower.anti_entropy_repairs_per_second),
            transfer_limit_mb: self.transfer_limit_mb.or(lower.transfer_limit_mb),
            read_repair: self.read_repair.or(lower.read_repair),
            tombstone_grace_ms: self.tombstone_grace_ms.or(lower.tombstone_grace_ms),
            reaped_retention_ms: self.reaped_retention_ms.or(lower.reaped_retention_ms),
            max_clock_entries: self.max_clock_entries.or(lower.max_clock_entries),
            log_format: self.log_format.or(lower.log_format),
            otlp_endpoint: self.otlp_endpoint.or(lower.otlp_endpoint),
            tls_ca: self.tls_ca.or(lower.tls_ca),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            insecure_cluster: self.insecure_cluster.or(lower.insecure_cluster),
            http_tls_cert: self.http_tls_cert.or(lower.http_tls_cert),
            http_tls_key: self.http_tls_key.or(lower.http_tls_key),
            security: self.security.or(lower.security),
            metrics_token_file: self.metrics_token_file.or(lower.metrics_token_file),
            config: self.config,
        }
    }

    /// Merges the config file (if any) under these options and validates.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => NodeArgs::default(),
        };
        self.or(file).validate()
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |s: String| ConfigError::Invalid(s);
        let address = self.address.unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        let (host, port) = split_host_port(&address).map_err(|e| invalid(format!("--address {address:?}: {e}")))?;
        let cluster_address = match self.cluster_address {
            Some(a) => {
                split_host_port(&a).map_err(|e| invalid(format!("--cluster-address {a:?}: {e}")))?;
                a
            }
            None => {
                let cport = if port == 0 { Some(0) } else { port.checked_add(CLUSTER_PORT_OFFSET) };
                let cport = cport.ok_or_else(|| {
                    invalid(format!("HTTP port {port} + {CLUSTER_PORT_OFFSET} is not a port; set --cluster-address"))
                })?;
                join_host_port(host, cport)
            }
        };
        if let Some(a) = &self.cluster_advertise {
            split_host_port(a).map_err(|e| invalid(format!("--cluster-advertise {a:?}: {e}")))?;
        }
        if let Some(j) = &self.join {
            parse_seed(j).map_err(|e| invalid(format!("--join {j:?}: {e}")))?;
        }
        if let Some(p) = self.partitions {
            validate_partition_count(p).map_err(|e| invalid(format!("--partitions: {e}")))?;
        }
        let n_val = self.n_val.unwrap_or(3);
        let r = self.r.unwrap_or(2.min(n_val));
        let w = self.w.unwrap_or(2.min(n_val));
        if n_val == 0 {
            return Err(invalid("--n-val must be at least 1".into()));
        }
        for (name, v) in [("r", r), ("w", w)] {
            if v == 0 || v > n_val {
                return Err(invalid(format!("--{name} {v} must be between 1 and n_val ({n_val})")));
            }
        }
        let timeout_ms = self.request_timeout_ms.unwrap_or(3000);
        if timeout_ms == 0 {
            return Err(invalid("--request-timeout-ms must be above 0".into()));
        }
        let gossip_ms = self.gossip_interval_ms.unwrap_or(1000);
        let failure_ms = self.failure_timeout_ms.unwrap_or(5000);
        if gossip_ms == 0 || failure_ms <= gossip_ms {
            return Err(invalid(format!(
                "--failure-timeout-ms ({failure_ms}) must be above --gossip-interval-ms ({gossip_ms}), which must be above 0"
            )));
        }
        let siblings = SiblingLimits { warn: self.siblings_warn.unwrap_or(25), max: self.siblings_max.unwrap_or(100) };
        if siblings.max == 0 {
            return Err(invalid("--siblings-max must be at least 1".into()));
        }
        let max_key_bytes = self.max_key_bytes.unwrap_or(64 * 1024);
        let max_value_bytes = self.max_value_bytes.unwrap_or(16 * 1024 * 1024);
        if max_key_bytes == 0 {
            return Err(invalid("--max-key-bytes must be at least 1".into()));
        }
        let rebuild_ms = self.anti_entropy_rebuild_interval_ms.unwrap_or(3_600_000);
        let repairs_per_second = self.anti_entropy_repairs_per_second.unwrap_or(1000);
        if rebuild_ms == 0 || repairs_per_second == 0 {
            return Err(invalid(
                "--anti-entropy-rebuild-interval-ms and --anti-entropy-repairs-per-second must be above 0 \
                 (--anti-entropy-interval-ms 0 turns anti-entropy off)"
                    .into(),
            ));
        }
        let grace_ms = self.tombstone_grace_ms.unwrap_or(DEFAULT_TOMBSTONE_GRACE_MS);
        let retention_ms = self.reaped_retention_ms.unwrap_or(DEFAULT_REAPED_RETENTION_MS);
        if grace_ms > 0 && retention_ms <= grace_ms {
            return Err(invalid(format!(
                "--reaped-retention-ms ({retention_ms}) must be above --tombstone-grace-ms ({grace_ms}) \
                 (--tombstone-grace-ms 0 turns reaping off)"
            )));
        }
        let tls = match (self.tls_ca, self.tls_cert, self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsPaths { ca, cert, key }),
            (None, None, None) => None,
            _ => return Err(invalid("--tls-ca, --tls-cert and --tls-key go together: give all three or none".into())),
        };
        let insecure_cluster = self.insecure_cluster.unwrap_or(false);
        if tls.is_some() && insecure_cluster {
            return Err(invalid(
                "--insecure-cluster asks for a plaintext cluster port, --tls-* for mutual TLS: give one of them".into(),
            ));
        }
        // The advertised address counts too: a loopback port behind a proxy
        // that others dial is as exposed as the proxy.
        let exposed =
            [Some(&cluster_address), self.cluster_advertise.as_ref()].into_iter().flatten().find(|a| !is_loopback(a));
        if let Some(exposed) = exposed.filter(|_| tls.is_none() && !insecure_cluster) {
            return Err(invalid(format!(
                "the cluster address {exposed} is not loopback: anyone who reaches it could act as a member. \
                 Give the node certificates (--tls-ca, --tls-cert, --tls-key; `vinzclortho certs` makes them), \
                 or --insecure-cluster to run without them anyway"
            )));
        }
        let http_tls = match (self.http_tls_cert, self.http_tls_key) {
            (Some(cert), Some(key)) => Some(HttpTlsPaths { cert, key }),
            (None, None) => None,
            _ => return Err(invalid("--http-tls-cert and --http-tls-key go together: give both or neither".into())),
        };
        let storage = self.storage.unwrap_or(StorageKind::Rocksdb);
        let rocksdb_options = self.rocksdb_options.filter(|o| !o.trim().is_empty());
        if rocksdb_options.is_some() && storage != StorageKind::Rocksdb {
            return Err(invalid("--rocksdb-options tunes the rocksdb engine; this node runs --storage memory".into()));
        }
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| Path::new("vinzclortho-data").join(format!("{}_{port}", host.replace(':', "_"))));
        Ok(Config {
            address,
            cluster_address,
            cluster_advertise: self.cluster_advertise,
            join: self.join,
            partitions: self.partitions,
            data_dir,
            storage,
            sync_writes: self.sync_writes.unwrap_or(false),
            rocksdb_options,
            n_val,
            r,
            w,
            request_timeout: Duration::from_millis(timeout_ms),
            gossip_interval: Duration::from_millis(gossip_ms),
            failure_timeout: Duration::from_millis(failure_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS)),
            max_key_bytes,
            max_value_bytes,
            siblings,
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            otlp_endpoint: self.otlp_endpoint,
            anti_entropy_interval: Duration::from_millis(self.anti_entropy_interval_ms.unwrap_or(10_000)),
            anti_entropy_rebuild_interval: Duration::from_millis(rebuild_ms),
            anti_entropy_repairs_per_second: repairs_per_second,
            transfer_limit_mb: self.transfer_limit_mb.unwrap_or(0),
            read_repair: self.read_repair.unwrap_or(true),
            tombstone_grace: Duration::from_millis(grace_ms),
            reaped_retention: Duration::from_millis(retention_ms),
            max_clock_entries: self.max_clock_entries.unwrap_or(DEFAULT_MAX_CLOCK_ENTRIES),
            tls,
            insecure_cluster,
            http_tls,
            security: self.security.unwrap_or(false),
            metrics_token_file: self.metrics_token_file,
        })
    }
}

/// Long enough for a client request at the default request timeout (3 s)
/// to finish, short enough for a rolling restart not to wait on stragglers.
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 5000;
/// A day: long enough for a failed node to be noticed and repaired (its
/// hints delivered, anti-entropy run) and for clients holding the deleted
/// key's context to have used it, short enough that deletes free space.
const DEFAULT_TOMBSTONE_GRACE_MS: u64 = 24 * 3600 * 1000;
/// A week: how long a node may be away and still come back with its data.
const DEFAULT_REAPED_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// Room for the N primaries' current actors and a few restarts' worth.
const DEFAULT_MAX_CLOCK_ENTRIES: usize = 8;

fn read_file(path: &Path) -> Result<NodeArgs, ConfigError> {
    let file_err = |reason: String| ConfigError::File { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| file_err(e.to_string()))
}

/// Splits "host:port" (or "[v6]:port"); the host may be a name.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let port = port.parse::<u16>().map_err(|_| format!("{port:?} is not a port number"))?;
    Ok((host, port))
}

/// What `-j` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed<'a> {
    /// `HOST:PORT`: a member's cluster address, or its HTTP address (the
    /// node tries the cluster protocol first).
    Either(&'a str),
    /// `http://HOST:PORT` or `https://HOST:PORT`: a member's HTTP address.
    Http { https: bool, address: &'a str },
}

/// Reads a `-j` value: `HOST:PORT`, or one with an `http://` or `https://`
/// scheme (a trailing `/` is allowed there, as URLs are often written).
pub fn parse_seed(s: &str) -> Result<Seed<'_>, String> {
    let (https, rest) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(rest), _) => (Some(false), rest),
        (_, Some(rest)) => (Some(true), rest),
        _ if s.contains("://") => return Err("the only schemes are http:// and https://".into()),
        _ => (None, s),
    };
    let address = match https {
        Some(_) => rest.strip_suffix('/').unwrap_or(rest),
        None => rest,
    };
    split_host_port(address)?;
    Ok(match https {
        Some(https) => Seed::Http { https, address },
        None => Seed::Either(address),
    })
}

/// Whether a `host:port` only listens on loopback: 127.0.0.0/8, ::1,
/// localhost, or a name that resolves to loopback addresses only. A name
/// that resolves to anything else (or not at all) may be a shared
/// interface; 0.0.0.0 is every interface.
pub fn is_loopback(address: &str) -> bool {
    let Ok((host, port)) = split_host_port(address) else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) if host.eq_ignore_ascii_case("localhost") => true,
        // A name is loopback when it names only loopback addresses, as
        // Debian names the machine itself (127.0.1.1 in /etc/hosts): the
        // original's `-a mymachine:8880` then needs no certificates on one
        // machine. Resolved once, at start-up, as the node then binds it.
        Err(_) => {
            use std::net::ToSocketAddrs;
            let resolved: Vec<std::net::SocketAddr> =
                (host, port).to_socket_addrs().map(Iterator::collect).unwrap_or_default();
            !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback())
        }
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The node's flags alone; `cli::Cli` adds the subcommands.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let flags = Flags::try_parse_from(std::iter::once("vinzclortho").chain(args.iter().copied())).unwrap();
        flags.node.resolve()
    }

    #[test]
    fn defaults_and_seed_compatible_flags() {
        let c = parse(&["-a", "mymachine:8880", "-p", "1024", "--insecure-cluster"]).unwrap();
        assert_eq!(c.address, "mymachine:8880");
        assert_eq!(c.cluster_address, "mymachine:9880");
        assert_eq!(c.partitions, Some(1024));
        assert_eq!((c.n_val, c.r, c.w), (3, 2, 2));
        assert_eq!(c.storage, StorageKind::Rocksdb);
        assert_eq!(c.data_dir, Path::new("vinzclortho-data/mymachine_8880"));
        let c = parse(&[]).unwrap();
        assert_eq!(c.address, DEFAULT_ADDRESS);
        assert_eq!(c.partitions, None);
        assert_eq!(c.anti_entropy_interval, Duration::from_secs(10));
        assert!(c.read_repair);
    }

    #[test]
    fn join_takes_either_port_bare_or_an_http_url() {
        assert_eq!(parse_seed("mymachine_1:8880"), Ok(Seed::Either("mymachine_1:8880")));
        assert_eq!(parse_seed("http://h:8880"), Ok(Seed::Http { https: false, address: "h:8880" }));
        assert_eq!(parse_seed("https://h:8880/"), Ok(Seed::Http { https: true, address: "h:8880" }));
        assert_eq!(parse_seed("[::1]:9880"), Ok(Seed::Either("[::1]:9880")));
        for bad in ["h", "http://h", "ftp://h:1", "https://:1", "h:port", "http://h:1/x"] {
            assert!(parse_seed(bad).is_err(), "{bad}");
        }
        let c = parse(&["-a", "127.0.0.1:8881", "-j", "http://127.0.0.1:8880"]).unwrap();
        assert_eq!(c.join.as_deref(), Some("http://127.0.0.1:8880"));
        let err = parse(&["-a", "127.0.0.1:8881", "-j", "grpc://127.0.0.1:9880"]).unwrap_err().to_string();
        assert!(err.contains("--join") && err.contains("http:// and https://"), "{err}");
    }

    #[test]
    fn tombstone_grace_and_reaped_retention() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.tombstone_grace, Duration::from_secs(86_400));
        assert_eq!(c.reaped_retention, Duration::from_secs(7 * 86_400));
        let c = parse(&["--tombstone-grace-ms", "0"]).unwrap();
        assert!(c.tombstone_grace.is_zero(), "0 never reaps");
        let c = parse(&["--tombstone-grace-ms", "2000", "--reaped-retention-ms", "60000"]).unwrap();
        assert_eq!((c.tombstone_grace, c.reaped_retention), (Duration::from_secs(2), Duration::from_secs(60)));
        let err = parse(&["--tombstone-grace-ms", "5000", "--reaped-retention-ms", "5000"]).unwrap_err().to_string();
        assert!(err.contains("must be above --tombstone-grace-ms"), "{err}");
        assert_eq!(parse(&[]).unwrap().max_clock_entries, 8);
        assert_eq!(parse(&["--max-clock-entries", "0"]).unwrap().max_clock_entries, 0, "0 never prunes");
    }

    #[test]
    fn anti_entropy_and_read_repair_switches() {
        let c = parse(&["--anti-entropy-interval-ms", "0", "--read-repair=false"]).unwrap();
        assert!(c.anti_entropy_interval.is_zero(), "0 turns anti-entropy off");
        assert!(!c.read_repair);
        let c = parse(&["--read-repair", "--anti-entropy-repairs-per-second", "5"]).unwrap();
        assert!(c.read_repair);
        assert_eq!(c.anti_entropy_repairs_per_second, 5);
        let err = parse(&["--anti-entropy-repairs-per-second", "0"]).unwrap_err().to_string();
        assert!(err.contains("above 0"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "anti_entropy_interval_ms = 2000\nread_repair = false\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.anti_entropy_interval, Duration::from_secs(2));
        assert!(!c.read_repair);
    }

    #[test]
    fn rocksdb_options_from_flag_and_file_and_only_for_rocksdb() {
        assert_eq!(parse(&[]).unwrap().rocksdb_options, None);
        let tuning = "compaction_style=kCompactionStyleUniversal";
        assert_eq!(parse(&["--rocksdb-options", tuning]).unwrap().rocksdb_options.as_deref(), Some(tuning));
        assert_eq!(parse(&["--rocksdb-options", "  "]).unwrap().rocksdb_options, None, "blank means none");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "rocksdb_options = \"write_buffer_size=32M\"\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.rocksdb_options.as_deref(), Some("write_buffer_size=32M"));
        let err = parse(&["--storage", "memory", "--rocksdb-options", tuning]).unwrap_err().to_string();
        assert!(err.contains("--rocksdb-options") && err.contains("memory"), "{err}");
    }

    #[test]
    fn transfer_limit_from_flag_and_file() {
        assert_eq!(parse(&[]).unwrap().transfer_limit_mb, 0, "no cap by default");
        assert_eq!(parse(&["--transfer-limit-mb", "40"]).unwrap().transfer_limit_mb, 40);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "transfer_limit_mb = 7\n").unwrap();
        assert_eq!(parse(&["--config", path.to_str().unwrap()]).unwrap().transfer_limit_mb, 7);
        assert_eq!(
            parse(&["--config", path.to_str().unwrap(), "--transfer-limit-mb", "0"]).unwrap().transfer_limit_mb,
            0
        );
    }

    #[test]
    fn security_and_the_metrics_token_file_from_flags_and_file() {
        let c = parse(&[]).unwrap();
        assert!(!c.security, "off by default: the dev cluster needs no setup");
        assert_eq!(c.metrics_token_file, None);
        let c = parse(&["--security", "--metrics-token-file", "/etc/m.token"]).unwrap();
        assert!(c.security);
        assert_eq!(c.metrics_token_file.as_deref(), Some(Path::new("/etc/m.token")));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "security = true\nmetrics_token_file = \"/m\"\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert!(c.security);
        assert_eq!(c.metrics_token_file.as_deref(), Some(Path::new("/m")));
        assert!(!parse(&["--config", path.to_str().unwrap(), "--security=false"]).unwrap().security, "flags win");
    }

    #[test]
    fn a_cluster_port_off_loopback_needs_certificates_or_insecure_cluster() {
        let c = parse(&["-a", "127.0.0.5:8880"]).unwrap();
        assert_eq!((c.tls.clone(), c.insecure_cluster), (None, false));
        for address in ["[::1]:8880", "localhost:8880"] {
            assert!(parse(&["-a", address]).is_ok(), "{address}");
        }
        // A name that the resolver maps to loopback only (Debian's own
        // host name, 127.0.1.1) is loopback; one it cannot resolve is not.
        assert!(is_loopback("localhost.:9880") || std::net::ToSocketAddrs::to_socket_addrs("localhost.:9880").is_err());
        assert!(!is_loopback("no-such-host.invalid:9880"));
        for address in ["10.1.2.3:8880", "0.0.0.0:8880", "node1.example:8880"] {
            let err = parse(&["-a", address]).unwrap_err().to_string();
            assert!(err.contains("is not loopback") && err.contains("--insecure-cluster"), "{address}: {err}");
            assert!(parse(&["-a", address, "--insecure-cluster"]).is_ok(), "{address}");
        }
        let err = parse(&["-a", "127.0.0.5:8880", "--cluster-advertise", "10.1.2.3:9880"]).unwrap_err().to_string();
        assert!(err.contains("10.1.2.3:9880 is not loopback"), "{err}");
        let tls = ["--tls-ca", "ca.pem", "--tls-cert", "n1.pem", "--tls-key", "n1.key"];
        let c = parse(&[&["-a", "10.1.2.3:8880"][..], &tls[..]].concat()).unwrap();
        let expected = TlsPaths { ca: "ca.pem".into(), cert: "n1.pem".into(), key: "n1.key".into() };
        assert_eq!(c.tls, Some(expected.clone()));
        let err = parse(&[&tls[..], &["--insecure-cluster"][..]].concat()).unwrap_err().to_string();
        assert!(err.contains("give one of them"), "{err}");
        // The config file takes the same keys; a partial set is refused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "tls_ca = \"ca.pem\"\ntls_cert = \"n1.pem\"\ntls_key = \"n1.key\"\n").unwrap();
        assert_eq!(parse(&["--config", path.to_str().unwrap()]).unwrap().tls, Some(expected));
        std::fs::write(&path, "tls_ca = \"ca.pem\"\n").unwrap();
        let err = parse(&["--config", path.to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        // The three may come from different places (flag, environment, file).
        std::fs::write(&path, "tls_cert = \"n1.pem\"\ntls_key = \"n1.key\"\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap(), "--tls-ca", "ca.pem"]).unwrap();
        assert_eq!(c.tls.map(|t| t.ca), Some("ca.pem".into()));
    }

    #[test]
    fn https_takes_a_certificate_and_its_key_from_flags_or_the_file() {
        assert_eq!(parse(&[]).unwrap().http_tls, None);
        let c = parse(&["--http-tls-cert", "web.pem", "--http-tls-key", "web.key"]).unwrap();
        let expected = HttpTlsPaths { cert: "web.pem".into(), key: "web.key".into() };
        assert_eq!(c.http_tls, Some(expected.clone()));
        for half in [&["--http-tls-cert", "web.pem"][..], &["--http-tls-key", "web.key"][..]] {
            let err = parse(half).unwrap_err().to_string();
            assert!(err.contains("--http-tls-cert and --http-tls-key go together"), "{half:?}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "http_tls_cert = \"web.pem\"\nhttp_tls_key = \"web.key\"\n").unwrap();
        assert_eq!(parse(&["--config", path.to_str().unwrap()]).unwrap().http_tls, Some(expected));
        // Independent of the cluster port's certificates.
        assert_eq!(parse(&["--config", path.to_str().unwrap()]).unwrap().tls, None);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (args, needle) in [
            (&["-p", "100"][..], "power of two"),
            (&["-a", "nohost"][..], "HOST:PORT"),
            (&["-a", "h:99999"][..], "not a port"),
            (&["-a", "h:65000"][..], "set --cluster-address"),
            (&["--n-val", "3", "-r", "4"][..], "between 1 and n_val"),
            (&["-w", "0"][..], "between 1 and n_val"),
            (&["--n-val", "0"][..], "at least 1"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn file_fills_what_flags_leave_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "address = \"127.0.0.9:7000\"\nn_val = 5\nr = 3\nstorage = \"memory\"\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap(), "-r", "1"]).unwrap();
        assert_eq!(c.address, "127.0.0.9:7000");
        assert_eq!((c.n_val, c.r, c.w), (5, 1, 2));
        assert_eq!(c.storage, StorageKind::Memory);
        std::fs::write(&path, "adress = \"x\"\n").unwrap();
        let err = parse(&["--config", path.to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
