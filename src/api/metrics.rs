//! `GET /metrics`: Prometheus text format. State gauges (storage, members,
//! ring) are refreshed right before rendering; event counters and
//! histograms are recorded where the events happen.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use super::error::ApiError;
use crate::error::ErrorCode;
use crate::telemetry::metrics::{self, Snapshot};

pub async fn render(State(api): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let store = api.store.clone();
    let stats = api
        .env
        .blocking
        .run(move || store.stats())
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
    let members = api.membership.members();
    let up = members.iter().filter(|m| m.status == "up").count();
    let view = api.membership.view();
    metrics::set_snapshot(&Snapshot {
        stored_objects: stats.objects,
        stored_bytes: stats.bytes,
        storage_memtables: stats.memory.memtables,
        storage_table_readers: stats.memory.table_readers,
        storage_block_cache: stats.memory.block_cache,
        members_up: up,
        members_down: members.len() - up,
        claimed_partitions: api.membership.claim(),
        ring_epoch: view.epoch,
        ring_moving: view.target.is_some(),
        transfers_pending: api.membership.pending_transfers().len(),
    });
    api.metrics.run_upkeep();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], api.metrics.render()))
}
