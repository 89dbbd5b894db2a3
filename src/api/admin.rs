//! `/ping`, `/admin/claim`, `/admin/status`.

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::membership::MemberView;
use crate::storage::StoreStats;

pub async fn ping() -> &'static str {
    "OK"
}

/// The number of partitions this node owns, as text.
pub async fn get_claim(State(api): State<AppState>) -> String {
    api.membership.claim().to_string()
}

/// Sets the wanted claim from an integer body; answers with the partitions
/// owned afterwards.
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
    node: String,
    cluster_address: String,
    version: &'static str,
    partitions: u32,
    n_val: usize,
    r: usize,
    w: usize,
    /// Fewer members than N: each key is on every member, not on N nodes.
    under_replicated: bool,
    claim: u32,
    members: Vec<MemberView>,
    storage: StorageStatus,
}

#[derive(Serialize)]
pub struct StorageStatus {
    engine: &'static str,
    #[serde(flatten)]
    stats: StoreStats,
}

pub async fn status(State(api): State<AppState>) -> Result<Json<Status>, ApiError> {
    let settings = api.coordinator.settings();
    let members = api.membership.members();
    let store = api.store.clone();
    let stats = tokio::task::spawn_blocking(move || store.stats())
        .await
        .map_err(|e| ApiError::new(crate::error::ErrorCode::Internal, e.to_string()))??;
    Ok(Json(Status {
        node: api.membership.local().to_string(),
        cluster_address: api.info.cluster_address.clone(),
        version: env!("CARGO_PKG_VERSION"),
        partitions: api.info.partitions,
        n_val: settings.n_val,
        r: settings.r,
        w: settings.w,
        under_replicated: api.membership.ring().members().len() < settings.n_val,
        claim: api.membership.claim(),
        members,
        storage: StorageStatus { engine: api.store.engine(), stats },
    }))
}
