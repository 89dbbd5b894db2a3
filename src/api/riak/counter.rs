//! Riak's 1.4 counters, as `riak_kv_wm_counter` serves them:
//! `POST /buckets/B/counters/K` with an integer body adds it (204, or 200
//! with the new value for `returnvalue=true`), `GET` answers the value as
//! text (404 when there is none). The bucket must keep siblings
//! (`allow_mult=true`): 409 otherwise, as in Riak. The counter itself is
//! `core::counter`; each increment is applied by one replica to its own
//! entry (`Mutation::Increment`), so no client context is needed.

use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::object::{checked_request, refused, timed};
use super::params::RawParams;
use super::path::counter_path;
use crate::api::{AppState, error::ApiError};
use crate::core::object::Mutation;
use crate::core::vclock::VersionVector;
use crate::error::ErrorCode;

pub async fn get_counter(
    State(api): State<AppState>,
    uri: Uri,
    Query(raw): Query<RawParams>,
) -> Result<Response, ApiError> {
    let req = refused("get", || checked_request(&api, &uri, counter_path, &raw, None))?;
    let reply = timed("get", &req.params, api.coordinator.read(&req.key, req.params.read()), |_| "ok").await?;
    Ok(match reply.object.counter() {
        Some(counter) => text(StatusCode::OK, counter.value()),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "not found\n").into_response(),
    })
}

pub async fn increment_counter(
    State(api): State<AppState>,
    uri: Uri,
    Query(raw): Query<RawParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (req, delta) = refused("put", || {
        let req = checked_request(&api, &uri, counter_path, &raw, None)?;
        let text = std::str::from_utf8(&body).unwrap_or_default().trim();
        let delta: i64 =
            text.parse().map_err(|_| ApiError::bad_request(format!("the body {text:?} is not an integer to add")))?;
        if !req.rules.allow_mult {
            return Err(ApiError::new(ErrorCode::Conflict, "Counters require bucket property 'allow_mult=true'"));
        }
        Ok((req, delta))
    })?;
    let increment = Mutation::Increment { delta, last_modified_ms: api.env.now_ms() };
    let no_context = VersionVector::new();
    let write = api.coordinator.write(&req.key, &no_context, increment, req.params.write());
    let reply = timed("put", &req.params, write, |_| "ok").await?;
    if req.params.returnvalue {
        let value = reply.object.counter().map_or(0, |c| c.value());
        return Ok(text(StatusCode::OK, value));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn text(status: StatusCode, value: i128) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], value.to_string()).into_response()
}
