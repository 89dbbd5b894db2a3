//! Every metric the node exports, defined in one place: names, labels, what
//! they mean, and the recorder that renders them for `/metrics`.
//!
//! Conventions: `vinzclortho_` prefix, base units (`_seconds`, `_bytes`),
//! `_total` for counters. Latencies are histograms with explicit buckets
//! (the exporter would render summaries otherwise, which cannot be summed
//! across nodes). Node identity is a label of `vinzclortho_build_info` only,
//! never of every series: Prometheus adds the scrape target's labels.

use std::sync::OnceLock;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Client requests. Labels: `api` (store), `op` (get, put, delete),
/// `outcome` (ok, not_found, bad_request, conflict, too_large, unavailable,
/// insufficient_storage, error). Requests refused by client security are
/// counted in [`HTTP_REFUSED_TOTAL`] instead: they reach no handler.
pub const REQUESTS_TOTAL: &str = "vinzclortho_requests_total";
/// Time the coordinator took to reach its quorum decision. Labels: `api`, `op`.
pub const REQUEST_DURATION_SECONDS: &str = "vinzclortho_request_duration_seconds";
/// Quorum decisions. Labels: `op` (read, write), `result` (met, failed, timeout).
pub const QUORUM_TOTAL: &str = "vinzclortho_quorum_total";
/// Replicas that had answered successfully when the quorum was decided. Label: `op`.
pub const QUORUM_REPLICAS_ANSWERED: &str = "vinzclortho_quorum_replicas_answered";
/// Siblings of each object found by a read (not-found reads excluded).
pub const READ_SIBLINGS: &str = "vinzclortho_read_siblings";
/// Objects this node stores (RocksDB: an estimate).
pub const STORED_OBJECTS: &str = "vinzclortho_stored_objects";
/// Bytes this node stores on disk and in memtables (RocksDB: an estimate).
pub const STORED_BYTES: &str = "vinzclortho_stored_bytes";
pub const STORAGE_MEMORY_BYTES: &str = "vinzclortho_storage_memory_bytes";
/// Read repairs sent to stale replicas. Label: `outcome` (ok, failed).
pub const READ_REPAIRS_TOTAL: &str = "vinzclortho_read_repairs_total";
/// Outgoing partition transfers. Labels: `kind` (move, sweep), `outcome` (ok, failed).
pub const PARTITION_TRANSFERS_TOTAL: &str = "vinzclortho_partition_transfers_total";
/// Objects sent by partition transfers. Label: `kind` (move, sweep).
pub const PARTITION_TRANSFER_OBJECTS_TOTAL: &str = "vinzclortho_partition_transfer_objects_total";
/// Bytes handed to the transport by outgoing partition transfers, as encoded
/// on the wire; its rate is the transfer throughput. Label: `kind` (move, sweep).
pub const PARTITION_TRANSFER_BYTES_TOTAL: &str = "vinzclortho_partition_transfer_bytes_total";
/// Objects deleted here after their partition was handed over.
pub const HANDOFF_DROPPED_OBJECTS_TOTAL: &str = "vinzclortho_handoff_dropped_objects_total";
/// Hints this node holds as a fallback, waiting for delivery, per target
/// node. Label: `target` (the target's HTTP address). Set after each pass of
/// the hint worker.
pub const HINTS_QUEUED: &str = "vinzclortho_hints_queued";
/// Hints delivered to their target (and deleted), or whose delivery failed
/// (kept, retried). Label: `outcome` (ok, failed).
pub const HINTS_DELIVERED_TOTAL: &str = "vinzclortho_hints_delivered_total";
/// Keys whose tombstone this node's reaper removed from every primary.
pub const TOMBSTONES_REAPED_TOTAL: &str = "vinzclortho_tombstones_reaped_total";
/// Clock entries this node's reaper moved from keys' clocks into their history records (on every primary).
pub const CLOCK_ENTRIES_PRUNED_TOTAL: &str = "vinzclortho_clock_entries_pruned_total";
/// Transfers of the current move not yet done by a live sender, cluster-wide as this node sees it.
pub const PARTITION_TRANSFERS_PENDING: &str = "vinzclortho_partition_transfers_pending";
/// Members as this node's failure detector sees them. Label: `status` (up, down).
pub const MEMBERS: &str = "vinzclortho_members";
/// Partitions this node owns.
pub const CLAIMED_PARTITIONS: &str = "vinzclortho_claimed_partitions";
/// The ring epoch this node has; equal on every node once gossip converged.
pub const RING_EPOCH: &str = "vinzclortho_ring_epoch";
/// 1 while partitions move to a new target ring, else 0.
pub const RING_MOVING: &str = "vinzclortho_ring_moving";
/// Gossip rounds. Label: `outcome` (ok, failed, refused).
pub const GOSSIP_ROUNDS_TOTAL: &str = "vinzclortho_gossip_rounds_total";
/// Internal gRPC calls made. Labels: `method` (Service/Method), `code` (OK, Unavailable, ...).
pub const GRPC_CLIENT_REQUESTS_TOTAL: &str = "vinzclortho_grpc_client_requests_total";
/// Latency of internal gRPC calls made. Label: `method`.
pub const GRPC_CLIENT_DURATION_SECONDS: &str = "vinzclortho_grpc_client_duration_seconds";
/// Encoded bytes of the answers to internal gRPC calls this node made (the
/// replica client's; what a read moves). Label: `method`.
pub const GRPC_CLIENT_RESPONSE_BYTES_TOTAL: &str = "vinzclortho_grpc_client_response_bytes_total";
/// Digest reads: replica calls of a read that asked for a copy's digest
/// instead of its value (`core::digest`).
pub const READ_DIGESTS_TOTAL: &str = "vinzclortho_read_digests_total";
/// Values a read fetched because a digest showed a copy the full answers
/// did not cover. Label: `outcome` (ok, failed).
pub const READ_VALUE_FETCHES_TOTAL: &str = "vinzclortho_read_value_fetches_total";
/// Internal gRPC calls served. Labels: `method`, `code`.
pub const GRPC_SERVER_REQUESTS_TOTAL: &str = "vinzclortho_grpc_server_requests_total";
/// Latency of internal gRPC calls served. Label: `method`.
pub const GRPC_SERVER_DURATION_SECONDS: &str = "vinzclortho_grpc_server_duration_seconds";
/// Internal gRPC calls refused before any service method ran, because they
/// did not name this node and its cluster (`rpc::identity`). Label: `reason`
/// (wrong_cluster, wrong_node, missing_identity, removed, duplicate).
pub const RPC_REFUSED_TOTAL: &str = "vinzclortho_rpc_refused_total";
/// The `reason` label values of [`RPC_REFUSED_TOTAL`].
pub const RPC_REFUSED_REASONS: [&str; 6] =
    ["wrong_cluster", "wrong_node", "missing_identity", "removed", "duplicate", "wrong_certificate"];
/// HTTP requests refused by client security (`api::auth`) before any
/// handler ran. Label: `reason` (missing, malformed, unknown, expired,
/// revoked: answered 401; forbidden: 403).
pub const HTTP_REFUSED_TOTAL: &str = "vinzclortho_http_refused_total";
/// TLS handshakes refused on the cluster port, before any call: label
/// `reason` (no_certificate, unknown_ca, expired, bad_certificate, not_tls,
/// peer_refused, closed, timeout, other).
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "vinzclortho_tls_handshake_failures_total";
/// TLS handshakes refused on the HTTP port (`--http-tls-cert`): label
/// `reason`, the values of [`TLS_HANDSHAKE_FAILURE_REASONS`] (a client that
/// does not trust the node's certificate shows as peer_refused, a plaintext
/// HTTP request as not_tls).
pub const HTTP_TLS_HANDSHAKE_FAILURES_TOTAL: &str = "vinzclortho_http_tls_handshake_failures_total";
/// The `reason` label values of [`TLS_HANDSHAKE_FAILURES_TOTAL`] and
/// [`HTTP_TLS_HANDSHAKE_FAILURES_TOTAL`].
pub const TLS_HANDSHAKE_FAILURE_REASONS: [&str; 9] = [
    "no_certificate",
    "unknown_ca",
    "expired",
    "bad_certificate",
    "not_tls",
    "peer_refused",
    "closed",
    "timeout",
    "other",
];
/// Replica calls this node did not run, though their identity was right:
/// `reason` expired (found past the caller's deadline, e.g. after a pause) or
/// stale_ring (planned on a ring older than this node's).
pub const REPLICA_CALLS_DROPPED_TOTAL: &str = "vinzclortho_replica_calls_dropped_total";
/// The `reason` label values of [`REPLICA_CALLS_DROPPED_TOTAL`].
pub const REPLICA_CALLS_DROPPED_REASONS: [&str; 2] = ["expired", "stale_ring"];
/// The client APIs and operations `vinzclortho_requests_total` counts.
pub const REQUEST_APIS: [&str; 2] = ["store", "riak"];
pub const REQUEST_OPS: [&str; 3] = ["get", "put", "delete"];
/// Every outcome a client request is counted under: success (`ok`, or
/// `not_found` for a read of an absent key) and one per error code
/// (`api::store::outcome_of`, which a test holds to this list).
pub const REQUEST_OUTCOMES: [&str; 12] = [
    "ok",
    "not_found",
    "bad_request",
    "precondition_failed",
    "not_implemented",
    "unauthorized",
    "forbidden",
    "conflict",
    "too_large",
    "unavailable",
    "insufficient_storage",
    "error",
];
/// Coverage query kinds (`coordinator::coverage::CoverageQuery::kind`) and
/// how a listing can end.
pub const LISTING_KINDS: [&str; 3] = ["keys", "buckets", "index"];
pub const LISTING_OUTCOMES: [&str; 4] = ["ok", "failed", "uncovered", "gone"];
/// The internal gRPC methods this node calls and serves, as the metrics
/// name them.
pub const GRPC_METHODS: [&str; 17] = [
    "Replica/Get",
    "Replica/Coordinate",
    "Replica/Merge",
    "Replica/Calls",
    "Replica/Prune",
    "Replica/Reap",
    "Forward/Write",
    "Transfer/Push",
    "Membership/Gossip",
    "Membership/Join",
    "Membership/GoingDown",
    "AntiEntropy/Branches",
    "AntiEntropy/Leaves",
    "AntiEntropy/SegmentKeys",
    "Coverage/ListKeys",
    "Coverage/ListBuckets",
    "Coverage/Index",
];
/// Always 1; labels `version`, `node_id` and `address` identify the node.
/// Anti-entropy exchanges with a peer. Labels: `outcome` (ok, failed).
pub const ANTI_ENTROPY_EXCHANGES_TOTAL: &str = "vinzclortho_anti_entropy_exchanges_total";
/// Time an anti-entropy exchange with one peer took, repairs included.
pub const ANTI_ENTROPY_EXCHANGE_DURATION_SECONDS: &str = "vinzclortho_anti_entropy_exchange_duration_seconds";
/// Keys anti-entropy found different between two replicas and merged both ways.
pub const ANTI_ENTROPY_KEYS_REPAIRED_TOTAL: &str = "vinzclortho_anti_entropy_keys_repaired_total";
/// Anti-entropy trees built from the store (at start, and periodic rebuilds).
pub const ANTI_ENTROPY_TREE_BUILDS_TOTAL: &str = "vinzclortho_anti_entropy_tree_builds_total";
/// Time to build one partition's anti-entropy tree from the store.
pub const ANTI_ENTROPY_TREE_BUILD_DURATION_SECONDS: &str = "vinzclortho_anti_entropy_tree_build_duration_seconds";
/// Listings (keys of a bucket, buckets of a type) coordinated here, by kind
/// and outcome.
pub const LISTINGS_TOTAL: &str = "vinzclortho_listings_total";
/// Keys and buckets those listings answered with, by kind.
pub const LISTED_ITEMS_TOTAL: &str = "vinzclortho_listed_items_total";
pub const BUILD_INFO: &str = "vinzclortho_build_info";

/// 100 µs to 10 s: loopback replica calls to a stuck quorum.
const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const COUNT_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 25.0, 50.0, 100.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle. Several
/// nodes in one test process share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = build();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (a test
            // harness); rendering then shows nothing, which tests would catch.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            zero();
            metrics_process::Collector::default().describe();
            handle
        })
        .clone()
}

/// A recorder of one node's own, not installed anywhere: the simulator
/// gives one to each node it runs (`env::Env::recorder`), and renders each
/// node's `/metrics` from its handle.
pub fn node_recorder() -> (PrometheusRecorder, PrometheusHandle) {
    let recorder = build();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        zero();
    });
    (recorder, handle)
}

fn build() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(QUORUM_REPLICAS_ANSWERED.into()), COUNT_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(READ_SIBLINGS.into()), COUNT_BUCKETS))
        .expect("bucket lists are not empty")
        .build_recorder()
}

fn describe() {
    describe_counter!(REQUESTS_TOTAL, "Client requests by API, operation and outcome.");
    describe_histogram!(REQUEST_DURATION_SECONDS, Unit::Seconds, "Time to the quorum decision of client requests.");
    describe_counter!(QUORUM_TOTAL, "Quorum decisions by operation and result.");
    describe_histogram!(QUORUM_REPLICAS_ANSWERED, "Replicas that had answered when a quorum was decided.");
    describe_histogram!(READ_SIBLINGS, "Siblings per object found by reads.");
    describe_gauge!(STORED_OBJECTS, "Objects stored on this node (RocksDB: estimate).");
    describe_gauge!(STORED_BYTES, Unit::Bytes, "Bytes stored on this node (RocksDB: estimate).");
    describe_gauge!(
        STORAGE_MEMORY_BYTES,
        Unit::Bytes,
        "RocksDB's memory by part: memtables, table_readers (index and filter blocks), block_cache."
    );
    describe_counter!(READ_REPAIRS_TOTAL, "Read repairs sent to stale replicas.");
    describe_counter!(PARTITION_TRANSFERS_TOTAL, "Outgoing partition transfers.");
    describe_counter!(PARTITION_TRANSFER_OBJECTS_TOTAL, "Objects sent by partition transfers.");
    describe_counter!(PARTITION_TRANSFER_BYTES_TOTAL, Unit::Bytes, "Bytes sent by partition transfers.");
    describe_counter!(HANDOFF_DROPPED_OBJECTS_TOTAL, "Objects deleted after their partition was handed over.");
    describe_gauge!(HINTS_QUEUED, "Hints held here for delivery, by target node.");
    describe_counter!(HINTS_DELIVERED_TOTAL, "Hint deliveries by outcome.");
    describe_counter!(TOMBSTONES_REAPED_TOTAL, "Keys whose tombstone was reaped from every primary by this node.");
    describe_counter!(
        CLOCK_ENTRIES_PRUNED_TOTAL,
        "Clock entries this node's reaper moved from keys' clocks into their history records on every primary."
    );
    describe_gauge!(PARTITION_TRANSFERS_PENDING, "Transfers of the current move not yet done.");
    describe_gauge!(MEMBERS, "Cluster members by status, as this node sees them.");
    describe_gauge!(CLAIMED_PARTITIONS, "Partitions this node owns.");
    describe_gauge!(RING_EPOCH, "Ring epoch known to this node.");
    describe_gauge!(RING_MOVING, "1 while partitions move to a new ring.");
    describe_counter!(LISTINGS_TOTAL, "Key and bucket listings coordinated by this node, by kind and outcome.");
    describe_counter!(LISTED_ITEMS_TOTAL, "Keys and buckets sent by listings this node coordinated, by kind.");
    describe_counter!(GOSSIP_ROUNDS_TOTAL, "Gossip rounds by outcome.");
    describe_counter!(GRPC_CLIENT_REQUESTS_TOTAL, "Internal gRPC calls made, by method and status code.");
    describe_histogram!(GRPC_CLIENT_DURATION_SECONDS, Unit::Seconds, "Latency of internal gRPC calls made.");
    describe_counter!(
        GRPC_CLIENT_RESPONSE_BYTES_TOTAL,
        Unit::Bytes,
        "Encoded bytes of the answers to internal gRPC calls made, by method."
    );
    describe_counter!(READ_DIGESTS_TOTAL, "Replica calls of reads that asked for a digest instead of a value.");
    describe_counter!(READ_VALUE_FETCHES_TOTAL, "Values reads fetched because a digest differed, by outcome.");
    describe_counter!(GRPC_SERVER_REQUESTS_TOTAL, "Internal gRPC calls served, by method and status code.");
    describe_histogram!(GRPC_SERVER_DURATION_SECONDS, Unit::Seconds, "Latency of internal gRPC calls served.");
    describe_counter!(RPC_REFUSED_TOTAL, "Internal gRPC calls refused for a wrong or missing identity, by reason.");
    describe_counter!(
        HTTP_REFUSED_TOTAL,
        "HTTP requests refused for a missing, bad or insufficient credential, by reason."
    );
    describe_counter!(TLS_HANDSHAKE_FAILURES_TOTAL, "TLS handshakes refused on the cluster port, by reason.");
    describe_counter!(HTTP_TLS_HANDSHAKE_FAILURES_TOTAL, "TLS handshakes refused on the HTTP port, by reason.");
    describe_counter!(
        REPLICA_CALLS_DROPPED_TOTAL,
        "Replica calls not run: past their caller's deadline, or planned on an older ring."
    );
    describe_counter!(ANTI_ENTROPY_EXCHANGES_TOTAL, "Anti-entropy exchanges with a peer, by outcome.");
    describe_histogram!(
        ANTI_ENTROPY_EXCHANGE_DURATION_SECONDS,
        Unit::Seconds,
        "Time of anti-entropy exchanges with one peer, repairs included."
    );
    describe_counter!(ANTI_ENTROPY_KEYS_REPAIRED_TOTAL, "Keys anti-entropy found different and merged both ways.");
    describe_counter!(ANTI_ENTROPY_TREE_BUILDS_TOTAL, "Anti-entropy trees built from the store.");
    describe_histogram!(
        ANTI_ENTROPY_TREE_BUILD_DURATION_SECONDS,
        Unit::Seconds,
        "Time to build one partition's anti-entropy tree from the store."
    );
    describe_gauge!(BUILD_INFO, "Build and node identity; always 1.");
}

/// Registers every counter, gauge and histogram at 0 for its known label
/// values, so dashboards show 0 rather than "no data" before the first
/// event (Prometheus' "avoid missing metrics"). Histograms registered this
/// way render with empty buckets.
fn zero() {
    for api in REQUEST_APIS {
        for op in REQUEST_OPS {
            for outcome in REQUEST_OUTCOMES {
                counter!(REQUESTS_TOTAL, "api" => api, "op" => op, "outcome" => outcome).increment(0);
            }
            let _ = histogram!(REQUEST_DURATION_SECONDS, "api" => api, "op" => op);
        }
    }
    for (op, results) in
        [("read", &["met", "failed", "timeout", "not_found"][..]), ("write", &["met", "failed", "timeout"])]
    {
        for &result in results {
            counter!(QUORUM_TOTAL, "op" => op, "result" => result).increment(0);
        }
        let _ = histogram!(QUORUM_REPLICAS_ANSWERED, "op" => op);
    }
    let _ = histogram!(READ_SIBLINGS);
    for kind in LISTING_KINDS {
        for outcome in LISTING_OUTCOMES {
            counter!(LISTINGS_TOTAL, "kind" => kind, "outcome" => outcome).increment(0);
        }
        counter!(LISTED_ITEMS_TOTAL, "kind" => kind).increment(0);
    }
    for method in GRPC_METHODS {
        counter!(GRPC_CLIENT_REQUESTS_TOTAL, "method" => method, "code" => "OK").increment(0);
        counter!(GRPC_SERVER_REQUESTS_TOTAL, "method" => method, "code" => "OK").increment(0);
        counter!(GRPC_CLIENT_RESPONSE_BYTES_TOTAL, "method" => method).increment(0);
        let _ = histogram!(GRPC_CLIENT_DURATION_SECONDS, "method" => method);
        let _ = histogram!(GRPC_SERVER_DURATION_SECONDS, "method" => method);
    }
    let _ = histogram!(ANTI_ENTROPY_EXCHANGE_DURATION_SECONDS);
    let _ = histogram!(ANTI_ENTROPY_TREE_BUILD_DURATION_SECONDS);
    for status in ["up", "down"] {
        gauge!(MEMBERS, "status" => status).set(0.0);
    }
    counter!(READ_DIGESTS_TOTAL).increment(0);
    for outcome in ["ok", "failed"] {
        counter!(READ_REPAIRS_TOTAL, "outcome" => outcome).increment(0);
        counter!(READ_VALUE_FETCHES_TOTAL, "outcome" => outcome).increment(0);
        for kind in ["move", "sweep"] {
            counter!(PARTITION_TRANSFERS_TOTAL, "kind" => kind, "outcome" => outcome).increment(0);
        }
    }
    for kind in ["move", "sweep"] {
        counter!(PARTITION_TRANSFER_OBJECTS_TOTAL, "kind" => kind).increment(0);
    }
    for kind in ["move", "sweep"] {
        counter!(PARTITION_TRANSFER_BYTES_TOTAL, "kind" => kind).increment(0);
    }
    counter!(HANDOFF_DROPPED_OBJECTS_TOTAL).increment(0);
    for outcome in ["ok", "failed"] {
        counter!(HINTS_DELIVERED_TOTAL, "outcome" => outcome).increment(0);
    }
    for outcome in ["ok", "failed"] {
        counter!(ANTI_ENTROPY_EXCHANGES_TOTAL, "outcome" => outcome).increment(0);
    }
    counter!(ANTI_ENTROPY_KEYS_REPAIRED_TOTAL).increment(0);
    counter!(TOMBSTONES_REAPED_TOTAL).increment(0);
    counter!(CLOCK_ENTRIES_PRUNED_TOTAL).increment(0);
    counter!(ANTI_ENTROPY_TREE_BUILDS_TOTAL).increment(0);
    for outcome in ["ok", "failed", "refused"] {
        counter!(GOSSIP_ROUNDS_TOTAL, "outcome" => outcome).increment(0);
    }
    // A refusal is rare and alarming: a panel should show 0 until then.
    for reason in RPC_REFUSED_REASONS {
        counter!(RPC_REFUSED_TOTAL, "reason" => reason).increment(0);
    }
    for reason in TLS_HANDSHAKE_FAILURE_REASONS {
        counter!(TLS_HANDSHAKE_FAILURES_TOTAL, "reason" => reason).increment(0);
        counter!(HTTP_TLS_HANDSHAKE_FAILURES_TOTAL, "reason" => reason).increment(0);
    }
    for reason in crate::core::security::Refusal::REASONS {
        counter!(HTTP_REFUSED_TOTAL, "reason" => reason).increment(0);
    }
    for reason in REPLICA_CALLS_DROPPED_REASONS {
        counter!(REPLICA_CALLS_DROPPED_TOTAL, "reason" => reason).increment(0);
    }
}

/// Counts a client request refused before it reached the coordinator (a
/// bad key, context, parameter or body): no quorum, so no latency sample.
pub fn request_refused(api: &'static str, op: &'static str, outcome: &'static str) {
    counter!(REQUESTS_TOTAL, "api" => api, "op" => op, "outcome" => outcome).increment(1);
}

/// Sets the build-info gauge for this node.
pub fn build_info(node_id: &str, address: &str) {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "node_id" => node_id.to_owned(), "address" => address.to_owned())
        .set(1.0);
}

/// Records a client request's outcome and its time to the quorum decision.
pub fn request(api: &'static str, op: &'static str, outcome: &'static str, seconds: f64) {
    counter!(REQUESTS_TOTAL, "api" => api, "op" => op, "outcome" => outcome).increment(1);
    histogram!(REQUEST_DURATION_SECONDS, "api" => api, "op" => op).record(seconds);
}

/// A listing ended: `kind` keys or buckets, `outcome` ok, failed or gone
/// (the client stopped reading).
pub fn listing(kind: &'static str, outcome: &'static str) {
    counter!(LISTINGS_TOTAL, "kind" => kind, "outcome" => outcome).increment(1);
}

/// Items a listing sent on.
pub fn listed(kind: &'static str, count: usize) {
    counter!(LISTED_ITEMS_TOTAL, "kind" => kind).increment(count as u64);
}

/// Records a quorum decision.
pub fn quorum(op: &'static str, result: &'static str, answered: usize) {
    counter!(QUORUM_TOTAL, "op" => op, "result" => result).increment(1);
    histogram!(QUORUM_REPLICAS_ANSWERED, "op" => op).record(answered as f64);
}

pub fn read_siblings(count: usize) {
    histogram!(READ_SIBLINGS).record(count as f64);
}

/// A read asked a replica for a digest.
pub fn read_digest() {
    counter!(READ_DIGESTS_TOTAL).increment(1);
}

/// A read fetched the value behind a digest.
pub fn read_value_fetch(ok: bool) {
    counter!(READ_VALUE_FETCHES_TOTAL, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

pub fn read_repair(ok: bool) {
    counter!(READ_REPAIRS_TOTAL, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

pub fn partition_transfer(kind: &'static str, ok: bool, objects: u64) {
    counter!(PARTITION_TRANSFERS_TOTAL, "kind" => kind, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
    counter!(PARTITION_TRANSFER_OBJECTS_TOTAL, "kind" => kind).increment(objects);
}

/// One batch of a partition transfer went to the transport.
pub fn partition_transfer_bytes(kind: &'static str, bytes: usize) {
    counter!(PARTITION_TRANSFER_BYTES_TOTAL, "kind" => kind).increment(bytes as u64);
}

pub fn handoff_dropped(objects: u64) {
    counter!(HANDOFF_DROPPED_OBJECTS_TOTAL).increment(objects);
}

pub fn hints_queued(target: &str, count: u64) {
    gauge!(HINTS_QUEUED, "target" => target.to_owned()).set(count as f64);
}

pub fn hints_delivered(ok: u64, failed: u64) {
    counter!(HINTS_DELIVERED_TOTAL, "outcome" => "ok").increment(ok);
    counter!(HINTS_DELIVERED_TOTAL, "outcome" => "failed").increment(failed);
}

pub fn tombstones_reaped(keys: u64) {
    counter!(TOMBSTONES_REAPED_TOTAL).increment(keys);
}

/// The reaper pruned this many clock entries (of one partition's keys).
pub fn clock_entries_pruned(entries: u64) {
    counter!(CLOCK_ENTRIES_PRUNED_TOTAL).increment(entries);
}

/// One anti-entropy exchange with a peer ended.
pub fn anti_entropy_exchange(ok: bool, seconds: f64) {
    counter!(ANTI_ENTROPY_EXCHANGES_TOTAL, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
    histogram!(ANTI_ENTROPY_EXCHANGE_DURATION_SECONDS).record(seconds);
}

pub fn anti_entropy_key_repaired() {
    counter!(ANTI_ENTROPY_KEYS_REPAIRED_TOTAL).increment(1);
}

pub fn anti_entropy_tree_built(seconds: f64) {
    counter!(ANTI_ENTROPY_TREE_BUILDS_TOTAL).increment(1);
    histogram!(ANTI_ENTROPY_TREE_BUILD_DURATION_SECONDS).record(seconds);
}

pub fn gossip_round(outcome: &'static str) {
    counter!(GOSSIP_ROUNDS_TOTAL, "outcome" => outcome).increment(1);
}

/// An internal gRPC call made by this node.
pub fn grpc_client(method: &'static str, code: tonic::Code, seconds: f64) {
    counter!(GRPC_CLIENT_REQUESTS_TOTAL, "method" => method, "code" => code_name(code)).increment(1);
    histogram!(GRPC_CLIENT_DURATION_SECONDS, "method" => method).record(seconds);
}

/// The answer to an internal gRPC call made by this node was `bytes` long.
pub fn grpc_client_response_bytes(method: &'static str, bytes: usize) {
    counter!(GRPC_CLIENT_RESPONSE_BYTES_TOTAL, "method" => method).increment(bytes as u64);
}

/// An internal gRPC call served by this node.
/// `method` is a `&'static str` on the hot path (no allocation per call).
pub fn grpc_server(method: impl Into<metrics::SharedString>, code: &'static str, seconds: f64) {
    let method = method.into();
    counter!(GRPC_SERVER_REQUESTS_TOTAL, "method" => method.clone(), "code" => code).increment(1);
    histogram!(GRPC_SERVER_DURATION_SECONDS, "method" => method).record(seconds);
}

/// An internal gRPC call refused by the identity check.
pub fn replica_call_dropped(reason: &'static str) {
    counter!(REPLICA_CALLS_DROPPED_TOTAL, "reason" => reason).increment(1);
}

pub fn rpc_refused(reason: &'static str) {
    counter!(RPC_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Counts an HTTP request refused by client security.
pub fn http_refused(reason: &'static str) {
    counter!(HTTP_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Counts a refused TLS handshake on the cluster port.
pub fn tls_handshake_failed(reason: &'static str) {
    counter!(TLS_HANDSHAKE_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// Counts a refused TLS handshake on the HTTP port.
pub fn http_tls_handshake_failed(reason: &'static str) {
    counter!(HTTP_TLS_HANDSHAKE_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// Gauges that describe state rather than events, set just before a scrape.
pub struct Snapshot {
    pub stored_objects: u64,
    pub stored_bytes: u64,
    /// RocksDB's memtables, table readers and block caches, in bytes.
    pub storage_memtables: u64,
    pub storage_table_readers: u64,
    pub storage_block_cache: u64,
    pub members_up: usize,
    pub members_down: usize,
    pub claimed_partitions: u32,
    pub ring_epoch: u64,
    pub ring_moving: bool,
    pub transfers_pending: usize,
}

pub fn set_snapshot(s: &Snapshot) {
    gauge!(STORED_OBJECTS).set(s.stored_objects as f64);
    gauge!(STORED_BYTES).set(s.stored_bytes as f64);
    for (part, bytes) in [
        ("memtables", s.storage_memtables),
        ("table_readers", s.storage_table_readers),
        ("block_cache", s.storage_block_cache),
    ] {
        gauge!(STORAGE_MEMORY_BYTES, "part" => part).set(bytes as f64);
    }
    gauge!(MEMBERS, "status" => "up").set(s.members_up as f64);
    gauge!(MEMBERS, "status" => "down").set(s.members_down as f64);
    gauge!(CLAIMED_PARTITIONS).set(f64::from(s.claimed_partitions));
    gauge!(RING_EPOCH).set(s.ring_epoch as f64);
    gauge!(RING_MOVING).set(if s.ring_moving { 1.0 } else { 0.0 });
    gauge!(PARTITION_TRANSFERS_PENDING).set(s.transfers_pending as f64);
    metrics_process::Collector::default().collect();
}

/// The canonical gRPC code names (as in `grpc-status` documentation).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method name the gRPC clients record is in [`GRPC_METHODS`].
    #[test]
    fn the_grpc_methods_list_names_every_method_called() {
        let sources = [
            include_str!("../rpc/replica_client.rs"),
            include_str!("../rpc/membership.rs"),
            include_str!("../rpc/anti_entropy.rs"),
            include_str!("../rpc/coverage.rs"),
            include_str!("../rpc/transfer.rs"),
        ];
        let name =
            regex::Regex::new(r#""((?:Replica|Forward|Membership|AntiEntropy|Coverage|Transfer)/[A-Za-z]+)""#).unwrap();
        let mut seen = 0;
        for source in sources {
            for found in name.captures_iter(source) {
                seen += 1;
                assert!(GRPC_METHODS.contains(&&found[1]), "{} is not in GRPC_METHODS", &found[1]);
            }
        }
        assert!(seen >= GRPC_METHODS.len(), "the sources name the methods");
    }

    #[test]
    fn every_metric_is_exported_from_the_start_for_its_known_labels() {
        let (_recorder, handle) = node_recorder();
        let text = handle.render();
        for series in [
            r#"vinzclortho_requests_total{api="riak",op="delete",outcome="unavailable"} 0"#,
            r#"vinzclortho_requests_total{api="store",op="get",outcome="not_found"} 0"#,
            r#"vinzclortho_request_duration_seconds_count{api="store",op="put"} 0"#,
            r#"vinzclortho_quorum_total{op="read",result="not_found"} 0"#,
            r#"vinzclortho_quorum_replicas_answered_count{op="write"} 0"#,
            r#"vinzclortho_read_siblings_count 0"#,
            r#"vinzclortho_listings_total{kind="index",outcome="ok"} 0"#,
            r#"vinzclortho_listed_items_total{kind="keys"} 0"#,
            r#"vinzclortho_grpc_client_requests_total{method="Replica/Get",code="OK"} 0"#,
            r#"vinzclortho_grpc_server_duration_seconds_count{method="Coverage/Index"} 0"#,
            r#"vinzclortho_anti_entropy_exchange_duration_seconds_count 0"#,
            r#"vinzclortho_members{status="down"} 0"#,
            r#"vinzclortho_grpc_client_response_bytes_total{method="Replica/Get"} 0"#,
            r#"vinzclortho_read_digests_total 0"#,
            r#"vinzclortho_read_value_fetches_total{outcome="failed"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == series), "missing from the start: {series}");
        }
    }
}
