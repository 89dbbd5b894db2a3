//! `/store/{key}`: the original Vinz Clortho API.
//!
//! * `GET`: 200 with the value, its Content-Type and the context; 300 with a
//!   `multipart/mixed` body (one part per sibling) and one context covering
//!   them all; 404 when absent (with the context when deleted).
//! * `PUT` / `POST`: store the body; with a context it supersedes exactly
//!   what that context saw, without one it adds a sibling. 200 + context.
//! * `DELETE`: 200 + the tombstone's context.
//!
//! `?r=` / `?w=` override the cluster's quorum for one request; `?pr=` /
//! `?pw=` require that many primaries (fallbacks do not count). Every
//! answer from the coordinator carries `X-VinzClortho-Fallbacks`: how many
//! fallbacks took part (see `coordinator`).

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::multipart::{http_date, multipart_mixed};
use super::{AppState, CONTEXT_HEADER, error::ApiError};
use std::time::Instant;

use crate::coordinator::{CoordinatorError, QuorumParam, ReadOptions, Reply, WriteOptions};
use crate::core::context::ContextSeal;
use crate::core::key::ObjectKey;
use crate::core::object::{Content, Mutation, Object};
use crate::core::vclock::VersionVector;
use crate::env::Entropy;
use crate::error::ErrorCode;
use crate::telemetry::metrics;

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Query parameters; anything else in the query string is ignored, as Riak
/// does, but these must parse.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    r: Option<String>,
    w: Option<String>,
    pr: Option<String>,
    pw: Option<String>,
    n_val: Option<String>,
}

impl Params {
    /// N is a bucket property; the `/store` bucket does not let a request
    /// change it (a read with another N than the write would miss replicas).
    fn check(&self) -> Result<&Params, ApiError> {
        match &self.n_val {
            Some(n) => Err(ApiError::bad_request(format!(
                "query parameter n_val={n}: the default bucket's n_val is the cluster's and cannot be set per request"
            ))),
            None => Ok(self),
        }
    }

    fn r(&self) -> Result<QuorumParam, ApiError> {
        quorum_param("r", self.r.as_deref())
    }

    fn w(&self) -> Result<QuorumParam, ApiError> {
        quorum_param("w", self.w.as_deref())
    }

    fn read(&self) -> Result<ReadOptions, ApiError> {
        Ok(ReadOptions { r: self.r()?, pr: quorum_param("pr", self.pr.as_deref())?, ..ReadOptions::default() })
    }

    fn write(&self) -> Result<WriteOptions, ApiError> {
        Ok(WriteOptions { w: self.w()?, pw: quorum_param("pw", self.pw.as_deref())? })
    }
}

/// How many fallbacks took part in a read or write.
pub const FALLBACKS_HEADER: &str = "x-vinzclortho-fallbacks";

fn with_fallbacks(mut response: Response, fallbacks: usize) -> Response {
    response.headers_mut().insert(FALLBACKS_HEADER, HeaderValue::from(fallbacks));
    response
}

fn quorum_param(name: &str, value: Option<&str>) -> Result<QuorumParam, ApiError> {
    match value {
        None => Ok(QuorumParam::Default),
        Some(v) => v.parse().map_err(|e| ApiError::bad_request(format!("query parameter {name}: {e}"))),
    }
}

pub async fn get_value(
    State(api): State<AppState>,
    uri: Uri,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let (key, read) = refused("get", || Ok((store_key(&uri, api.limits.max_key_bytes)?, params.check()?.read()?)))?;
    let found = |reply: &Reply| if reply.object.siblings().is_empty() { "not_found" } else { "ok" };
    let reply = timed("get", api.coordinator.read(&key, read), found).await?;
    let response = object_response(&api.contexts, &api.env.entropy, &key, &reply.object);
    Ok(with_fallbacks(response, reply.fallbacks))
}

pub async fn put_value(
    State(api): State<AppState>,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Everything cheap is checked before the body is read.
    let (key, context, w, content_type) = refused("put", || {
        let content_type = match headers.get(header::CONTENT_TYPE) {
            None => DEFAULT_CONTENT_TYPE.to_owned(),
            Some(v) => v.to_str().map_err(|_| ApiError::bad_request("Content-Type is not valid text"))?.to_owned(),
        };
        let key = store_key(&uri, api.limits.max_key_bytes)?;
        Ok((
            key.clone(),
            context_header(&api.contexts, &key, &headers)?.unwrap_or_default(),
            params.check()?.write()?,
            content_type,
        ))
    })?;
    let value = read_body(body, &headers, api.limits.max_value_bytes).await.inspect_err(|e| {
        metrics::request_refused("store", "put", outcome_of(e.code()));
    })?;
    let content = Content { value, content_type, last_modified_ms: api.env.now_ms(), meta: Default::default() };
    let reply = timed("put", api.coordinator.write(&key, &context, Mutation::Put(content), w), |_| "ok").await?;
    let response = with_context(&api.contexts, &key, StatusCode::OK, &reply.object, Body::empty());
    Ok(with_fallbacks(response, reply.fallbacks))
}

pub async fn delete_value(
    State(api): State<AppState>,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (key, context, r, w) = refused("delete", || {
        let params = params.check()?;
        let key = store_key(&uri, api.limits.max_key_bytes)?;
        let context = context_header(&api.contexts, &key, &headers)?;
        Ok((key, context, params.read()?, params.write()?))
    })?;
    let reply = timed("delete", api.coordinator.remove(&key, context.as_ref(), r, w), |_| "ok").await?;
    let response = with_context(&api.contexts, &key, StatusCode::OK, &reply.object, Body::empty());
    Ok(with_fallbacks(response, reply.fallbacks))
}

/// Validation before the coordinator: a refusal is counted (no latency).
fn refused<T>(op: &'static str, validate: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    refused_in("store", op, validate)
}

async fn timed<T>(
    op: &'static str,
    operation: impl Future<Output = Result<T, CoordinatorError>>,
    success: impl FnOnce(&T) -> &'static str,
) -> Result<T, ApiError> {
    timed_in("store", op, None, operation, success).await
}

/// A request of client API `api` refused before the coordinator: counted,
/// with no latency.
pub(super) fn refused_in<T>(
    api: &'static str,
    op: &'static str,
    validate: impl FnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    validate().inspect_err(|e| metrics::request_refused(api, op, outcome_of(e.code())))
}

/// Runs one coordinator operation of client API `api`, within `limit` if
/// the request set one (Riak's `timeout`; the node's own bound applies
/// anyway), and records its outcome and its time to the quorum decision
/// (parsing and body transfer excluded).
pub(super) async fn timed_in<T>(
    api: &'static str,
    op: &'static str,
    limit: Option<std::time::Duration>,
    operation: impl Future<Output = Result<T, CoordinatorError>>,
    success: impl FnOnce(&T) -> &'static str,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let result = match limit {
        None => operation.await.map_err(ApiError::from),
        Some(limit) => match tokio::time::timeout(limit, operation).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(_) => Err(ApiError::new(ErrorCode::Unavailable, "request timed out")),
        },
    };
    let outcome = match &result {
        Ok(value) => success(value),
        Err(e) => outcome_of(e.code()),
    };
    metrics::request(api, op, outcome, started.elapsed().as_secs_f64());
    result
}

pub(super) fn outcome_of(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest | ErrorCode::UriTooLong | ErrorCode::UnsupportedMediaType => "bad_request",
        ErrorCode::PreconditionFailed => "precondition_failed",
        ErrorCode::NotImplemented => "not_implemented",
        // Refused by `api::auth` before any handler; listed for completeness.
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::NotFound => "not_found",
        ErrorCode::Conflict => "conflict",
        ErrorCode::PayloadTooLarge => "too_large",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::InsufficientStorage => "insufficient_storage",
        ErrorCode::Internal => "error",
    }
}

pub async fn missing_key() -> ApiError {
    ApiError::bad_request("missing key: use /store/{key}")
}

/// The key is everything after `/store/`, percent-decoded to raw bytes (so
/// `%2F` and `%00` are ordinary key bytes).
fn store_key(uri: &Uri, max_key_bytes: usize) -> Result<ObjectKey, ApiError> {
    store_key_from(uri, "/store/", max_key_bytes)
}

/// The key after `prefix` in the path, in the default bucket.
pub(super) fn store_key_from(uri: &Uri, prefix: &str, max_key_bytes: usize) -> Result<ObjectKey, ApiError> {
    let encoded = uri.path().strip_prefix(prefix).unwrap_or_default();
    let key: Vec<u8> = percent_decode_str(encoded).collect();
    if key.is_empty() {
        return Err(ApiError::bad_request(format!("missing key: use {prefix}{{key}}")));
    }
    if key.len() > max_key_bytes {
        return Err(ApiError::new(
            ErrorCode::UriTooLong,
            format!("key is {} bytes long, above the limit of {max_key_bytes}", key.len()),
        ));
    }
    Ok(ObjectKey::in_default_bucket(key))
}

/// The context a client sent, opened for `key`: a forged, edited or
/// misplaced one is a 400 (see `core::context`), never applied.
fn context_header(seal: &ContextSeal, key: &ObjectKey, headers: &HeaderMap) -> Result<Option<VersionVector>, ApiError> {
    let Some(raw) = headers.get(CONTEXT_HEADER) else { return Ok(None) };
    let text = raw.to_str().map_err(|_| ApiError::bad_request("X-VinzClortho-Context is not valid text"))?;
    seal.open(key, text).map(Some).map_err(|e| ApiError::bad_request(format!("invalid X-VinzClortho-Context: {e}")))
}

/// Reads at most `max` bytes; refuses early when Content-Length says more.
pub(super) async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, ApiError> {
    let too_large = |len: Option<u64>| {
        let size = len.map(|l| format!("{l} bytes")).unwrap_or_else(|| "larger".to_owned());
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("value is {size}, above the limit of {max} bytes; nothing was stored"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large(declared));
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large(None)),
        Err(e) => Err(ApiError::bad_request(format!("could not read the request body: {e}"))),
    }
}

/// The response to a read: 404, 200 or 300 depending on the siblings.
fn object_response(seal: &ContextSeal, entropy: &Entropy, key: &ObjectKey, object: &Object) -> Response {
    if object.is_empty() {
        return ApiError::new(ErrorCode::NotFound, "not found").into_response();
    }
    match object.siblings() {
        [] => {
            // A 404 like any other (`ApiError`): a line of text, with its context.
            let body = Body::from("not found (deleted)\n");
            let mut response = with_context(seal, key, StatusCode::NOT_FOUND, object, body);
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            response
        }
        [only] => {
            let mut response = with_context(seal, key, StatusCode::OK, object, Body::from(only.content.value.clone()));
            set_content_headers(response.headers_mut(), &only.content);
            response
        }
        many => {
            let (content_type, body) = multipart_mixed(many, entropy);
            let mut response = with_context(seal, key, StatusCode::MULTIPLE_CHOICES, object, Body::from(body));
            response.headers_mut().insert(header::CONTENT_TYPE, header_value(&content_type));
            response
        }
    }
}

fn with_context(seal: &ContextSeal, key: &ObjectKey, status: StatusCode, object: &Object, body: Body) -> Response {
    let mut response = (status, body).into_response();
    if !object.is_empty() {
        let token = seal.seal(key, object.clock());
        response.headers_mut().insert(CONTEXT_HEADER, header_value(&token));
    }
    response
}

pub(super) fn set_content_headers(headers: &mut HeaderMap, content: &Content) {
    headers.insert(header::CONTENT_TYPE, header_value(&content.content_type));
    headers.insert(header::LAST_MODIFIED, header_value(&http_date(content.last_modified_ms)));
}

/// Stored Content-Types were valid header text when they arrived.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CONTENT_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_one_the_metrics_export_from_the_start() {
        for code in ErrorCode::ALL {
            let outcome = outcome_of(code);
            assert!(metrics::REQUEST_OUTCOMES.contains(&outcome), "{code:?} -> {outcome}");
        }
    }
}
