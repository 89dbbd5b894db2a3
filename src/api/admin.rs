//! `/ping`, `/cluster/address`, `/admin/claim`, `/admin/status`, `/admin/ring`,
//! `/admin/preflist/{key}`, `/admin/backup`.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::Uri;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::store::store_key_from;
use crate::core::key::{DEFAULT_NAMESPACE, ObjectKey};
use crate::error::ErrorCode;
use crate::membership::{MemberView, Stopped};
use crate::services::handoff::TransferProgress;
use crate::storage::{CheckpointInfo, StoreStats};

pub async fn ping() -> &'static str {
    "OK"
}

/// What `GET /cluster/address` answers: where this member's cluster port is
/// (as it advertises it to the other members), for a node started with
/// `-j` this member's HTTP address. Open without credentials, like `/ping`:
/// a joiner has none yet, and the address is no secret (every member
/// gossips it, and the cluster port checks who calls it).
#[derive(Serialize)]
pub struct ClusterAddress {
    cluster_address: String,
    node_id: String,
}

pub async fn cluster_address(State(api): State<AppState>) -> Json<ClusterAddress> {
    Json(ClusterAddress {
        cluster_address: api.info.cluster_address.clone(),
        node_id: api.membership.local().to_string(),
    })
}

/// The number of partitions this node owns, as text.
pub async fn get_claim(State(api): State<AppState>) -> String {
    api.membership.claim().to_string()
}

/// Sets the wanted claim from an integer body; answers with the partitions
/// owned afterwards (in a cluster, partitions move later, after their data).
pub async fn put_claim(State(api): State<AppState>, body: Bytes) -> Result<String, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("claim must be text"))?.trim();
    let wanted: u64 = text
        .parse()
        .map_err(|_| ApiError::bad_request(format!("claim must be a non-negative integer, got {text:?}")))?;
    api.membership.set_claim(wanted)?;
    Ok(api.membership.claim().to_string())
}

#[derive(Serialize)]
pub struct Status {
    /// This node's HTTP address.
    node: String,
    /// Whether that address speaks HTTPS only (`--http-tls-cert`).
    http_tls: bool,
    node_id: String,
    cluster_address: String,
    cluster_id: String,
    /// "serving"; "removed" once the cluster removed this node (another node
    /// replaced it); "duplicate" once it found another live process under
    /// its id. Either way it serves no data and is shutting down. "left"
    /// once a committed leave finished: it owns nothing, serves no data,
    /// and can be shut down.
    state: &'static str,
    /// True once the cluster removed this node.
    removed: bool,
    /// The HTTP address of the other process running under this node's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate_of: Option<String>,
    version: &'static str,
    partitions: u32,
    n_val: usize,
    r: usize,
    w: usize,
    /// Fewer members than N: each key is on every member, not on N nodes.
    under_replicated: bool,
    /// Client authentication (`--security`), fixed when the cluster was created.
    security: bool,
    claim: u32,
    members: Vec<MemberView>,
    ring: RingStatus,
    /// This node's outgoing partition transfers for the current move.
    transfers: Vec<TransferProgress>,
    /// Hints held here for delivery, per target node's HTTP address (as of
    /// the hint worker's last pass).
    hints: std::collections::BTreeMap<String, u64>,
    storage: StorageStatus,
    /// Exchanges, keys repaired, trees; null when anti-entropy is off.
    anti_entropy: Option<crate::services::anti_entropy::Status>,
    /// Tombstones reaped and waiting; null when reaping is off.
    reaper: Option<crate::services::reaper::Status>,
}

#[derive(Serialize)]
pub struct RingStatus {
    epoch: u64,
    /// True while partitions move to a new target ring.
    moving: bool,
    /// Transfers of the current move that live senders have not finished.
    pending_transfers: usize,
    /// Those of them this node sends (`admin transfers` estimates each
    /// sender's time left from them).
    my_pending_transfers: usize,
}

#[derive(Serialize)]
pub struct StorageStatus {
    engine: &'static str,
    #[serde(flatten)]
    stats: StoreStats,
}

pub async fn status(State(api): State<AppState>) -> Result<Json<Status>, ApiError> {
    // `stopped` before the ring: a node publishes the ring that stops it
    // before it marks itself stopped, so a "left" here comes with that ring.
    let stopped = api.membership.stopped();
    let view = api.membership.view();
    let claim = view.current.claimed_by(api.membership.local());
    let store = api.store.clone();
    let stats = api
        .env
        .blocking
        .run(move || store.stats())
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
    let transfers = api.transfers.lock().expect("progress lock").values().cloned().collect();
    let hints = api.hints.lock().expect("hint counts lock").clone();
    let hints = hints.iter().map(|(node, count)| (api.membership.http_address(node), *count)).collect();
    Ok(Json(Status {
        node: api.membership.http_address(api.membership.local()),
        http_tls: api.info.http_tls,
        node_id: api.membership.local().to_string(),
        cluster_address: api.info.cluster_address.clone(),
        cluster_id: format!("{:016x}", api.membership.cluster_id()),
        state: match stopped {
            None => "serving",
            Some(Stopped::Removed) => "removed",
            Some(Stopped::Duplicate(_)) => "duplicate",
            Some(Stopped::Left) => "left",
        },
        removed: api.membership.removed(),
        duplicate_of: api.membership.duplicate_of().map(|other| other.address),
        version: env!("CARGO_PKG_VERSION"),
        partitions: api.info.partitions,
        n_val: view.n_val,
        r: view.r,
        w: view.w,
        under_replicated: view.current.members().len() < view.n_val,
        security: api.membership.security(),
        claim,
        members: api.membership.members(),
        ring: RingStatus {
            epoch: view.epoch,
            moving: view.target.is_some(),
            pending_transfers: api.membership.pending_transfers().len(),
            my_pending_transfers: api.membership.my_transfers().len(),
        },
        transfers,
        hints,
        storage: StorageStatus { engine: api.store.engine(), stats },
        anti_entropy: api.anti_entropy.as_ref().map(|ae| ae.status()),
        reaper: api.reaper.as_ref().map(|r| r.status()),
    }))
}

#[derive(Serialize)]
pub struct Preflist {
    partition: u32,
    preflist: Vec<PreflistEntry>,
}

#[derive(Serialize)]
pub struct PreflistEntry {
    /// The replica's HTTP address.
    node: String,
    node_id: String,
    partition: u32,
    primary: bool,
}

/// The key's partition and its preference list (current ring): its
/// bucket's n_val primaries, then the fallbacks. `?type=T&bucket=B` names a
/// key outside the default bucket.
pub async fn preflist(
    State(api): State<AppState>,
    uri: Uri,
    Query(params): Query<super::replicas::Params>,
) -> Result<Json<Preflist>, ApiError> {
    let in_default = store_key_from(&uri, "/admin/preflist/", api.limits.max_key_bytes)?;
    let key = ObjectKey::new(
        params.bucket_type.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        params.bucket.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        in_default.key,
    );
    let view = api.membership.view();
    // As /admin/replicas: a key of an unknown type gets the cluster's N.
    let n_val = api.coordinator.n_val_of(&key).unwrap_or(view.n_val);
    let partition = view.current.partition_of(&key);
    let preflist = view
        .current
        .preflist(partition, n_val)
        .into_iter()
        .map(|e| PreflistEntry {
            node: api.membership.http_address(&e.node),
            node_id: e.node.to_string(),
            partition: e.partition,
            primary: e.primary,
        })
        .collect();
    Ok(Json(Preflist { partition, preflist }))
}

#[derive(Serialize)]
pub struct RingOwnership {
    epoch: u64,
    partitions: u32,
    n_val: usize,
    /// True while partitions move to a new target ring.
    moving: bool,
    /// Every node that owns partitions now or after the move, by address.
    nodes: Vec<NodeOwnership>,
    /// Partitions whose holders change in the move (empty when none).
    moving_partitions: Vec<MovingPartition>,
}

#[derive(Serialize)]
pub struct NodeOwnership {
    /// The node's HTTP address.
    node: String,
    node_id: String,
    /// Partitions it owns now.
    partitions: u32,
    /// Its share of the ring now, in percent.
    share: f64,
    /// Partitions it will own once the move in progress is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    target_partitions: Option<u32>,
}

#[derive(Serialize)]
pub struct MovingPartition {
    partition: u32,
    /// Its holders now (HTTP addresses), in preference-list order.
    from: Vec<String>,
    /// Its holders once the move is done.
    to: Vec<String>,
}

/// Ownership of the ring as this node sees it: per node, and the partitions
/// a move in progress changes (`vinzclortho admin ring`).
pub async fn ring(State(api): State<AppState>) -> Json<RingOwnership> {
    let view = api.membership.view();
    let current = &view.current;
    let target = view.target.as_ref();
    let mut ids = current.members();
    if let Some(target) = target {
        ids.extend(target.members());
        ids.sort();
        ids.dedup();
    }
    let address = |n: &crate::core::key::NodeId| api.membership.http_address(n);
    let nodes = ids
        .iter()
        .map(|id| NodeOwnership {
            node: address(id),
            node_id: id.to_string(),
            partitions: current.claimed_by(id),
            share: 100.0 * f64::from(current.claimed_by(id)) / f64::from(current.partitions().max(1)),
            target_partitions: target.map(|t| t.claimed_by(id)),
        })
        .collect();
    let moving_partitions = target
        .map(|target| {
            (0..current.partitions())
                .filter_map(|p| {
                    let from = current.holders(p, view.n_val);
                    let to = target.holders(p, view.n_val);
                    (from != to).then(|| MovingPartition {
                        partition: p,
                        from: from.iter().map(address).collect(),
                        to: to.iter().map(address).collect(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Json(RingOwnership {
        epoch: view.epoch,
        partitions: current.partitions(),
        n_val: view.n_val,
        moving: target.is_some(),
        nodes,
        moving_partitions,
    })
}

/// `POST /admin/backup`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// A directory on the node's machine: absolute, not existing yet.
    path: String,
}

/// The longest body `/admin/backup` reads: a path of PATH_MAX, quoted.
const MAX_BACKUP_BODY: usize = 8192;

#[derive(Serialize)]
pub struct Backup {
    /// The directory written, on the node's machine.
    path: String,
    node: String,
    node_id: String,
    cluster_id: String,
    /// The ring epoch this node knew when it answered: backups of every
    /// node with one epoch were taken with one ring (the whole-cluster
    /// procedure checks it).
    ring_epoch: u64,
    engine: &'static str,
    #[serde(flatten)]
    written: CheckpointInfo,
    /// The store's object count when the backup started (an estimate:
    /// RocksDB's, as in `/admin/status`).
    objects: u64,
    /// When the backup started, in Unix ms (node's clock), and how long it
    /// took.
    started_at_ms: u64,
    took_ms: u64,
}

/// Writes a consistent snapshot of this node's data into a new directory on
/// its machine (`Store::checkpoint`, on the blocking pool: the node keeps
/// serving), and answers with what it wrote. A bad path is a 400 saying
/// why; an engine without a disk, 501.
pub async fn backup(State(api): State<AppState>, body: Bytes) -> Result<Json<Backup>, ApiError> {
    if body.len() > MAX_BACKUP_BODY {
        return Err(ApiError::bad_request(format!("a backup request is at most {MAX_BACKUP_BODY} bytes")));
    }
    let request: BackupRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("expected a JSON body {{\"path\": \"/absolute/new/directory\"}}: {e}"))
    })?;
    let path = std::path::PathBuf::from(&request.path);
    let store = api.store.clone();
    let started_at_ms = api.env.now_ms();
    let started = std::time::Instant::now();
    let (stats, written) = api
        .env
        .blocking
        .run(move || {
            let stats = store.stats()?;
            store.checkpoint(&path).map(|written| (stats, written))
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(path = %request.path, files = written.files, bytes = written.bytes, took_ms, "backup written");
    Ok(Json(Backup {
        path: request.path,
        node: api.membership.http_address(api.membership.local()),
        node_id: api.membership.local().to_string(),
        cluster_id: format!("{:016x}", api.membership.cluster_id()),
        ring_epoch: api.membership.view().epoch,
        engine: api.store.engine(),
        written,
        objects: stats.objects,
        started_at_ms,
        took_ms,
    }))
}
