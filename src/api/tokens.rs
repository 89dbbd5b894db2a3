//! Client tokens over HTTP (admin grant required, `api::auth`):
//! `POST /admin/tokens` creates one and shows it once, `GET /admin/tokens`
//! lists them (never their hashes), `DELETE /admin/tokens/{name}` revokes
//! one for good, `PUT /admin/tokens/{name}/grants` replaces its grants. The
//! rules live in `core::security`; membership keeps the records in the
//! gossiped cluster state, so a change made here takes effect on every node
//! within a few gossip rounds.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::core::security::{self, Grant, TOKEN_RANDOM_BYTES, TokenRecord};
use crate::error::ErrorCode;

/// The largest body read: a name and at most 16 grants of 256-byte scopes.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Longest lifetime a token may be given: ten years (keeps `now + s` far
/// from overflowing, and a longer one is a token that never expires).
const MAX_EXPIRES_IN_S: u64 = 10 * 365 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub permissions: Vec<String>,
    pub scope: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    grants: Vec<GrantBody>,
    expires_in_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsBody {
    grants: Vec<GrantBody>,
}

/// A token as `GET /admin/tokens` shows it: never its hash.
#[derive(Serialize)]
pub struct TokenView {
    name: String,
    grants: Vec<GrantBody>,
    /// Milliseconds since the Unix epoch; null: never.
    expires_at_ms: Option<u64>,
    expired: bool,
    revoked: bool,
}

/// `POST /admin/tokens`'s answer: the token, shown this once.
#[derive(Serialize)]
pub struct Created {
    token: String,
    #[serde(flatten)]
    view: TokenView,
}

fn view(record: &TokenRecord, now_ms: u64) -> TokenView {
    TokenView {
        name: record.name.clone(),
        grants: record
            .grants
            .iter()
            .map(|g| GrantBody {
                permissions: g.permissions.iter().map(|p| p.name().to_owned()).collect(),
                scope: g.scope.to_string(),
            })
            .collect(),
        expires_at_ms: record.expires_at_ms,
        expired: record.expired(now_ms),
        revoked: record.revoked,
    }
}

async fn parse<T: serde::de::DeserializeOwned>(body: Body, shape: &str) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is larger than {MAX_BODY_BYTES} bytes"))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the body must be {shape}: {e}")))
}

fn grants(bodies: &[GrantBody]) -> Result<Vec<Grant>, ApiError> {
    bodies
        .iter()
        .map(|g| Grant::parse(g.permissions.iter().map(String::as_str), &g.scope).map_err(ApiError::bad_request))
        .collect()
}

fn record(api: &AppState, name: &str) -> Result<TokenRecord, ApiError> {
    api.membership
        .tokens()
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no token is named {name:?}")))
}

const CREATE_SHAPE: &str = r#"{"name": "NAME", "grants": [{"permissions": ["read", "write"], "scope": "default/photos"}], "expires_in_s": 3600}"#;

/// `POST /admin/tokens`: 201 with the new token, which is never shown again.
pub async fn create(State(api): State<AppState>, body: Body) -> Result<(StatusCode, Json<Created>), ApiError> {
    let body: CreateBody = parse(body, CREATE_SHAPE).await?;
    let grants = grants(&body.grants)?;
    let now = api.env.now_ms();
    let expires_at_ms = match body.expires_in_s {
        None => None,
        Some(s) if s == 0 || s > MAX_EXPIRES_IN_S => {
            return Err(ApiError::bad_request(format!("expires_in_s must be 1 to {MAX_EXPIRES_IN_S} seconds")));
        }
        Some(s) => Some(now + s * 1000),
    };
    let token = security::new_token(api.env.entropy.bytes::<TOKEN_RANDOM_BYTES>());
    api.membership.create_token(&body.name, security::token_hash(&token), grants, expires_at_ms)?;
    tracing::info!(name = %body.name, "client token created");
    let view = view(&record(&api, &body.name)?, now);
    Ok((StatusCode::CREATED, Json(Created { token, view })))
}

/// `GET /admin/tokens`: every token (revoked ones too), without hashes.
pub async fn list(State(api): State<AppState>) -> Json<Vec<TokenView>> {
    let now = api.env.now_ms();
    Json(api.membership.tokens().iter().map(|r| view(r, now)).collect())
}

/// `DELETE /admin/tokens/{name}`: revokes it for good (its name too).
pub async fn revoke(State(api): State<AppState>, Path(name): Path<String>) -> Result<Json<TokenView>, ApiError> {
    api.membership.revoke_token(&name)?;
    tracing::info!(%name, "client token revoked");
    Ok(Json(view(&record(&api, &name)?, api.env.now_ms())))
}

/// `PUT /admin/tokens/{name}/grants`, body `{"grants": [...]}`: replaces them.
pub async fn set_grants(
    State(api): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<TokenView>, ApiError> {
    let body: GrantsBody = parse(body, r#"{"grants": [{"permissions": ["read"], "scope": "*"}]}"#).await?;
    api.membership.set_token_grants(&name, grants(&body.grants)?)?;
    tracing::info!(%name, "client token grants replaced");
    Ok(Json(view(&record(&api, &name)?, api.env.now_ms())))
}
