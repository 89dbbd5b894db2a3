//! Changing the cluster, as Riak's `cluster plan` / `cluster commit`:
//! `POST /admin/leave` (on the node that leaves), `POST /admin/force-remove`
//! (body: the dead node's id, on any other node), `POST /admin/replace`
//! (body: `{"old": "ID", "new": "ID"}`) stage a change; `GET /admin/plan`
//! shows the staged changes and what committing them would move;
//! `POST /admin/commit` has the claimant apply them all as one ring change;
//! `DELETE /admin/plan` clears them. The rules live in `core::membership`
//! (`ClusterState::stage` and its neighbours); staged changes travel with
//! gossip, so any node shows and commits the same plan.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::core::key::NodeId;
use crate::core::membership::{Change, moves};
use crate::error::ErrorCode;

/// The largest body these endpoints read: a node id or two in JSON.
const MAX_BODY_BYTES: usize = 4096;

/// How long `POST /admin/commit` waits to hear that the claimant applied
/// the plan before answering 202 (it applies it later, once it sees a
/// majority and has been the claimant for a failure timeout).
const COMMIT_WAIT: Duration = Duration::from_secs(10);

async fn read_body(body: Body) -> Result<String, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is larger than {MAX_BODY_BYTES} bytes"))
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::bad_request("the body must be UTF-8 text"))
}

/// A node id from the wire: non-empty, printable, bounded.
fn node_id(text: &str, what: &str) -> Result<NodeId, ApiError> {
    let id = text.trim();
    if id.is_empty() {
        return Err(ApiError::bad_request(format!("{what}: a node id is required (see node_id in /admin/status)")));
    }
    if id.len() > crate::core::membership::MAX_NODE_ID_BYTES || id.chars().any(|c| c.is_control() || c == ' ') {
        return Err(ApiError::bad_request(format!("{what}: {id:?} is not a node id")));
    }
    Ok(NodeId::new(id))
}

/// `POST /admin/leave`: stages this node's leave.
pub async fn leave(State(api): State<AppState>) -> Result<Json<PlanView>, ApiError> {
    let me = api.membership.local().clone();
    api.membership.stage(&me, Change::Leave)?;
    plan(State(api)).await
}

/// `POST /admin/force-remove`, body: the id of a dead member.
pub async fn force_remove(State(api): State<AppState>, body: Body) -> Result<Json<PlanView>, ApiError> {
    let node = node_id(&read_body(body).await?, "force-remove")?;
    api.membership.stage(&node, Change::Remove)?;
    plan(State(api)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceBody {
    old: String,
    new: String,
}

/// `POST /admin/replace`, body `{"old": "ID", "new": "ID"}`: `new`, a member
/// already, takes over exactly `old`'s partitions.
pub async fn replace(State(api): State<AppState>, body: Body) -> Result<Json<PlanView>, ApiError> {
    let text = read_body(body).await?;
    let parsed: ReplaceBody = serde_json::from_str(&text).map_err(|e| {
        ApiError::bad_request(format!("replace: the body must be {{\"old\": \"ID\", \"new\": \"ID\"}}: {e}"))
    })?;
    let (old, new) = (node_id(&parsed.old, "replace: old")?, node_id(&parsed.new, "replace: new")?);
    api.membership.stage(&old, Change::Replace { by: new })?;
    plan(State(api)).await
}

/// `DELETE /admin/plan`: drops every staged change.
pub async fn clear(State(api): State<AppState>) -> Result<Json<PlanView>, ApiError> {
    api.membership.clear_plan()?;
    plan(State(api)).await
}

/// `POST /admin/commit`: asks the claimant to apply the staged changes, and
/// waits (bounded) to hear it did: 200 once applied, 202 if not yet.
pub async fn commit(State(api): State<AppState>) -> Result<(StatusCode, Json<PlanView>), ApiError> {
    let staged = api.membership.request_commit()?;
    let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
    while !api.membership.committed(&staged) {
        if tokio::time::Instant::now() >= deadline {
            return Ok((StatusCode::ACCEPTED, plan(State(api)).await?));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((StatusCode::OK, plan(State(api)).await?))
}

#[derive(Serialize)]
pub struct PlanView {
    /// The staged changes, waiting for a commit.
    staged: Vec<StagedView>,
    /// A commit was asked for and the claimant has not applied it yet.
    commit_requested: bool,
    ring_epoch: u64,
    /// A move (a join, a claim change, a committed change) is running now.
    moving: bool,
    /// Per member: partitions owned now, and after the claimant's next plan
    /// with the staged changes committed.
    ownership: Vec<OwnershipView>,
    /// Partitions whose holders would change, and the copies that would be
    /// sent (one per partition and new holder).
    partitions_moving: u32,
    copies_to_send: u32,
    /// `copies_to_send` times the objects this node holds per partition: an
    /// estimate of the objects that would move.
    objects_to_move_estimate: u64,
    /// Committed leaves and replacements, running or done.
    departures: Vec<DepartureView>,
}

#[derive(Serialize)]
struct StagedView {
    node: String,
    address: String,
    /// "leave", "force-remove" or "replace".
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<String>,
}

#[derive(Serialize)]
struct OwnershipView {
    node: String,
    address: String,
    before: u32,
    after: u32,
}

#[derive(Serialize)]
struct DepartureView {
    node: String,
    /// "leaving", "left", "replacing" or "replaced".
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<String>,
}

/// `GET /admin/plan`.
pub async fn plan(State(api): State<AppState>) -> Result<Json<PlanView>, ApiError> {
    let snapshot = api.membership.plan();
    let after = snapshot.after.map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))?;
    let address = |n: &NodeId| api.membership.http_address(n);
    let staged = snapshot
        .plan
        .staged()
        .into_iter()
        .map(|(node, change)| StagedView {
            node: node.to_string(),
            address: address(&node),
            action: match change {
                Change::Leave => "leave",
                Change::Remove => "force-remove",
                Change::Replace { .. } => "replace",
            },
            by: match change {
                Change::Replace { by } => Some(by.to_string()),
                _ => None,
            },
        })
        .collect();
    let mut nodes: Vec<NodeId> = snapshot.before.members();
    nodes.extend(after.members());
    nodes.extend(api.membership.members().into_iter().map(|m| NodeId::new(m.id)));
    nodes.sort();
    nodes.dedup();
    let ownership = nodes
        .iter()
        .map(|n| OwnershipView {
            node: n.to_string(),
            address: address(n),
            before: snapshot.before.claimed_by(n),
            after: after.claimed_by(n),
        })
        .collect();
    let (partitions_moving, copies_to_send) = moves(&snapshot.before, &after, snapshot.n_val);
    let departures = snapshot
        .departures
        .iter()
        .map(|(node, d)| DepartureView {
            node: node.to_string(),
            state: match (&d.by, d.done) {
                (None, false) => "leaving",
                (None, true) => "left",
                (Some(_), false) => "replacing",
                (Some(_), true) => "replaced",
            },
            by: d.by.as_ref().map(|b| b.to_string()),
        })
        .collect();
    let objects_to_move_estimate =
        objects_per_partition(&api, &snapshot.before, snapshot.n_val).await * u64::from(copies_to_send);
    Ok(Json(PlanView {
        staged,
        commit_requested: snapshot.plan.commit_pending(),
        ring_epoch: snapshot.epoch,
        moving: snapshot.moving,
        ownership,
        partitions_moving,
        copies_to_send,
        objects_to_move_estimate,
        departures,
    }))
}

/// Objects this node stores per partition it holds (0 if it holds none or
/// its store cannot say).
async fn objects_per_partition(api: &AppState, ring: &crate::core::ring::Ring, n_val: usize) -> u64 {
    let me = api.membership.local();
    let held = (0..ring.partitions()).filter(|p| ring.holders(*p, n_val).contains(me)).count() as u64;
    let store = api.store.clone();
    let objects = match api.env.blocking.run(move || store.stats()).await {
        Ok(Ok(stats)) => stats.objects,
        _ => 0,
    };
    objects.checked_div(held).unwrap_or(0)
}
