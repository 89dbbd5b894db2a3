//! Riak objects over HTTP, as `riak_kv_wm_object` serves them.
//!
//! * `GET`/`HEAD`: 200 with the value and its headers; 300 for siblings,
//!   `multipart/mixed` when the client accepts it, else the text list of
//!   vtags (`?vtag=` picks one); 404 `not found` (with `X-Riak-Deleted` and
//!   the vclock for a deleted key); 304 for a matching `If-None-Match` or an
//!   unchanged `If-Modified-Since`.
//! * `PUT`/`POST` on a key: Content-Type required (400), `X-Riak-Vclock`
//!   (or `X-VinzClortho-Context`) as the context; 204, or with
//!   `returnbody=true` 200/300 and the object; 412 when `If-None-Match`,
//!   `If-Match` or `If-Unmodified-Since` does not hold.
//! * `POST` on a bucket: the same with a key chosen here, 201 and
//!   `Location`.
//! * `DELETE`: 204; 404 when there was nothing to delete.
//!
//! Every found object's answer carries `X-Riak-Vclock` (our sealed context
//! in standard base64; see `core::context`). A bucket with
//! `allow_mult=false` (or `last_write_wins=true`) shows one value, the
//! latest by last-modified time, and a write there replaces whatever its
//! replica holds (`Mutation::Replace`), as Riak resolves such buckets.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rand::distr::{Alphanumeric, SampleString};

use super::headers::{
    self, DELETED_HEADER, VCLOCK_HEADER, clock_etag, multipart, prefers_multipart, set_value_headers, sibling_list,
    vtag,
};
use super::params::{Params, RawParams};
use super::path::{ObjectPath, object_path};
use crate::api::store::{outcome_of, read_body, refused_in, timed_in};
use crate::api::{AppState, CONTEXT_HEADER, error::ApiError};
use crate::coordinator::CoordinatorError;
use crate::core::key::ObjectKey;
use crate::core::object::{Content, Mutation, Object, Sibling};
use crate::core::vclock::VersionVector;
use crate::error::ErrorCode;
use crate::telemetry::metrics;

/// How a bucket resolves concurrent values (its `allow_mult` and
/// `last_write_wins` properties).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    /// Siblings are kept and shown; else one value, the latest.
    pub allow_mult: bool,
}

impl Rules {
    /// The bucket's properties (`core::bucket`); an unknown or inactive
    /// bucket type is a 404 with Riak's text.
    fn of(api: &AppState, path: &ObjectPath) -> Result<Rules, ApiError> {
        let props = api.membership.bucket_props(&path.bucket_type, &path.bucket)?;
        Ok(Rules { allow_mult: props.allow_mult && !props.last_write_wins })
    }

    /// What a client sees of an object's values.
    fn visible<'a>(&self, object: &'a Object) -> Vec<&'a Sibling> {
        if self.allow_mult { object.siblings().iter().collect() } else { object.latest().into_iter().collect() }
    }

    fn put(&self, content: Content) -> Mutation {
        if self.allow_mult { Mutation::Put(content) } else { Mutation::Replace(content) }
    }
}

/// One request's object, parameters and bucket rules, checked.
pub(super) struct Request {
    pub path: ObjectPath,
    pub key: ObjectKey,
    pub params: Params,
    pub rules: Rules,
}

fn request(api: &AppState, uri: &Uri, raw: &RawParams, key: Option<Bytes>) -> Result<Request, ApiError> {
    checked_request(api, uri, object_path, raw, key)
}

/// A request on the path `parse` reads (an object's, a counter's).
pub(super) fn checked_request(
    api: &AppState,
    uri: &Uri,
    parse: fn(&str) -> Option<ObjectPath>,
    raw: &RawParams,
    key: Option<Bytes>,
) -> Result<Request, ApiError> {
    // The routes only match such paths; what fails here has an empty
    // name, which no Riak resource matches either.
    let path = parse(uri.path()).ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, format!("no such resource: {} (an empty name)", uri.path()))
    })?;
    let key = match (key, &path.key) {
        (Some(chosen), _) => chosen,
        (None, Some(key)) => key.clone(),
        (None, None) => return Err(ApiError::bad_request("missing key")),
    };
    let max = api.limits.max_key_bytes;
    for (what, name) in [("bucket type", &path.bucket_type), ("bucket", &path.bucket), ("key", &key)] {
        if name.len() > max {
            return Err(ApiError::new(
                ErrorCode::UriTooLong,
                format!("{what} is {} bytes long, above the limit of {max}", name.len()),
            ));
        }
    }
    let params = raw.parse()?;
    let rules = Rules::of(api, &path)?;
    Ok(Request { key: path.object_key(key), path, params, rules })
}

pub async fn get_object(
    State(api): State<AppState>,
    uri: Uri,
    Query(raw): Query<RawParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let req = refused("get", || request(&api, &uri, &raw, None))?;
    let read = req.params.read();
    let found = |object: &Object| if object.siblings().is_empty() { "not_found" } else { "ok" };
    let reply = timed("get", &req.params, api.coordinator.read(&req.key, read), |r| found(&r.object)).await?;
    Ok(object_response(&api, &req, &reply.object, &headers, StatusCode::OK, true))
}

pub async fn put_object(
    State(api): State<AppState>,
    uri: Uri,
    Query(raw): Query<RawParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    write(api, uri, raw, headers, body, None).await
}

/// `POST /buckets/B/keys`: a key chosen here (62 alphanumerics, as Riak's
/// `unique_id_62`), 201 with its `Location`.
pub async fn create_object(
    State(api): State<AppState>,
    uri: Uri,
    Query(raw): Query<RawParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = api.env.entropy.with(|rng| Alphanumeric.sample_string(rng, 27));
    write(api, uri, raw, headers, body, Some(Bytes::from(key))).await
}

async fn write(
    api: AppState,
    uri: Uri,
    raw: RawParams,
    headers: HeaderMap,
    body: Body,
    created: Option<Bytes>,
) -> Result<Response, ApiError> {
    // Everything cheap is checked before the body is read.
    let (req, content_type, meta, context) = refused("put", || {
        let req = request(&api, &uri, &raw, created.clone())?;
        let (content_type, charset) = headers::content_type(&headers)?;
        let meta = headers::metadata(&headers, charset, &req.path.bucket)?;
        let context = context(&api, &req.key, &headers)?.unwrap_or_default();
        Ok((req, content_type, meta, context))
    })?;
    if has_write_conditions(&headers) {
        let current = timed("get", &req.params, api.coordinator.read(&req.key, req.params.read()), |_| "ok").await?;
        check_write_conditions(&req, &current.object, &headers)
            .inspect_err(|e| metrics::request_refused("riak", "put", outcome_of(e.code())))?;
    }
    let value = read_body(body, &headers, api.limits.max_value_bytes)
        .await
        .inspect_err(|e| metrics::request_refused("riak", "put", outcome_of(e.code())))?;
    let content = Content { value, content_type, last_modified_ms: api.env.now_ms(), meta };
    let mutation = req.rules.put(content);
    let reply =
        timed("put", &req.params, api.coordinator.write(&req.key, &context, mutation, req.params.write()), |_| "ok")
            .await?;
    let mut response = if req.params.returnbody {
        let status = if created.is_some() { StatusCode::CREATED } else { StatusCode::OK };
        object_response(&api, &req, &reply.object, &headers, status, false)
    } else {
        let status = if created.is_some() { StatusCode::CREATED } else { StatusCode::NO_CONTENT };
        let mut response = status.into_response();
        set_vclock(&api, &req.key, &reply.object, response.headers_mut());
        response
    };
    if let Some(key) = &created {
        response.headers_mut().insert(header::LOCATION, header_value(&req.path.location(key)));
    }
    Ok(response)
}

pub async fn delete_object(
    State(api): State<AppState>,
    uri: Uri,
    Query(raw): Query<RawParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (req, context) = refused("delete", || {
        let req = request(&api, &uri, &raw, None)?;
        let context = context(&api, &req.key, &headers)?;
        Ok((req, context))
    })?;
    let (read, write) = req.params.delete();
    // Riak reads first and answers 404 when there is nothing to delete.
    let current = timed("get", &req.params, api.coordinator.read(&req.key, read), |_| "ok").await?;
    if current.object.siblings().is_empty() {
        metrics::request_refused("riak", "delete", "not_found");
        return Ok(not_found(&api, &req.key, &current.object));
    }
    let context = context.unwrap_or_else(|| current.object.clock().clone());
    timed("delete", &req.params, api.coordinator.remove(&req.key, Some(&context), read, write), |_| "ok").await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The answer for an object: a read's, or a write's with `returnbody`
/// (`status` is then 200 or 201; a read's conditions are not checked).
fn object_response(
    api: &AppState,
    req: &Request,
    object: &Object,
    headers: &HeaderMap,
    status: StatusCode,
    read: bool,
) -> Response {
    if object.siblings().is_empty() {
        return not_found(api, &req.key, object);
    }
    let visible = req.rules.visible(object);
    let chosen: Vec<&Sibling> = match &req.params.vtag {
        Some(wanted) => visible.into_iter().filter(|s| vtag(s.dot) == *wanted).take(1).collect(),
        None => visible,
    };
    let (scheme, bucket) = (req.path.scheme, &req.path.bucket[..]);
    let mut response = match chosen.as_slice() {
        [] => return not_found(api, &req.key, &Object::new()),
        [one] => {
            let etag = vtag(one.dot);
            if read && not_modified(headers, &etag, one.content.last_modified_ms) {
                let mut response = StatusCode::NOT_MODIFIED.into_response();
                response.headers_mut().insert(header::ETAG, header_value(&format!("\"{etag}\"")));
                set_vclock(api, &req.key, object, response.headers_mut());
                return response;
            }
            let mut response = (status, Body::from(one.content.value.clone())).into_response();
            set_value_headers(response.headers_mut(), scheme, bucket, one);
            response
        }
        many => {
            let etag = clock_etag(object.clock());
            let newest = many.iter().map(|s| s.content.last_modified_ms).max().unwrap_or_default();
            if read && not_modified(headers, &etag, newest) {
                let mut response = StatusCode::NOT_MODIFIED.into_response();
                set_vclock(api, &req.key, object, response.headers_mut());
                return response;
            }
            let (content_type, body) = if prefers_multipart(headers) {
                multipart(scheme, bucket, many, &api.env.entropy)
            } else {
                ("text/plain".to_owned(), sibling_list(many).into_bytes())
            };
            let mut response = (StatusCode::MULTIPLE_CHOICES, Body::from(body)).into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, header_value(&content_type));
            h.insert(header::ETAG, header_value(&format!("\"{etag}\"")));
            h.insert(header::LAST_MODIFIED, header_value(&crate::api::multipart::http_date(newest)));
            response
        }
    };
    set_vclock(api, &req.key, object, response.headers_mut());
    response
}

/// 404 `not found`; for a deleted key with its vclock and
/// `X-Riak-Deleted: true`, as Riak answers with `deletedvclock`.
fn not_found(api: &AppState, key: &ObjectKey, object: &Object) -> Response {
    let mut response = (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "not found\n").into_response();
    if object.is_tombstone() {
        response.headers_mut().insert(DELETED_HEADER, HeaderValue::from_static("true"));
        set_vclock(api, key, object, response.headers_mut());
    }
    response
}

fn set_vclock(api: &AppState, key: &ObjectKey, object: &Object, headers: &mut HeaderMap) {
    if !object.is_empty() {
        headers.insert(VCLOCK_HEADER, header_value(&api.contexts.seal_standard(key, object.clock())));
    }
}

/// The context a write or delete carries: `X-Riak-Vclock`, or ours. A
/// forged, edited or misplaced one is a 400 (see `core::context`).
fn context(api: &AppState, key: &ObjectKey, headers: &HeaderMap) -> Result<Option<VersionVector>, ApiError> {
    let Some((name, raw)) = [VCLOCK_HEADER, CONTEXT_HEADER].into_iter().find_map(|n| Some((n, headers.get(n)?))) else {
        return Ok(None);
    };
    let text = raw.to_str().map_err(|_| ApiError::bad_request(format!("{name} is not valid text")))?;
    api.contexts.open(key, text).map(Some).map_err(|e| ApiError::bad_request(format!("invalid {name}: {e}")))
}

/// A GET's `If-None-Match` (an ETag list or `*`) or `If-Modified-Since`
/// says the client's copy is current. `If-None-Match` wins when both are
/// sent (RFC 9110 13.1.3).
fn not_modified(headers: &HeaderMap, etag: &str, last_modified_ms: u64) -> bool {
    if let Some(list) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return etag_matches(list, etag);
    }
    match headers.get(header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok()) {
        Some(since) => seconds(last_modified_ms) <= unix_seconds(since),
        None => false,
    }
}

fn has_write_conditions(headers: &HeaderMap) -> bool {
    [header::IF_MATCH, header::IF_NONE_MATCH, header::IF_UNMODIFIED_SINCE].iter().any(|h| headers.contains_key(h))
}

/// A write's preconditions against the object as it is now: 412 when one
/// does not hold.
fn check_write_conditions(req: &Request, current: &Object, headers: &HeaderMap) -> Result<(), ApiError> {
    let visible = req.rules.visible(current);
    let etag = match visible.as_slice() {
        [] => None,
        [one] => Some(vtag(one.dot)),
        _ => Some(clock_etag(current.clock())),
    };
    let failed = |what: &str| Err(ApiError::new(ErrorCode::PreconditionFailed, format!("{what} does not hold")));
    let text = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(list) = text(header::IF_MATCH)
        && !etag.as_deref().is_some_and(|etag| etag_matches(list, etag))
    {
        return failed("If-Match");
    }
    if let Some(list) = text(header::IF_NONE_MATCH)
        && etag.as_deref().is_some_and(|etag| etag_matches(list, etag))
    {
        return failed("If-None-Match");
    }
    if let Some(since) = text(header::IF_UNMODIFIED_SINCE).and_then(|t| httpdate::parse_http_date(t).ok()) {
        let newest = visible.iter().map(|s| s.content.last_modified_ms).max();
        if newest.is_some_and(|ms| seconds(ms) > unix_seconds(since)) {
            return failed("If-Unmodified-Since");
        }
    }
    Ok(())
}

/// Whether an `If-Match`/`If-None-Match` list names `etag` (or is `*`).
/// Weak tags compare by their opaque part.
fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == etag)
}

fn seconds(ms: u64) -> u64 {
    ms / 1000
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(super) fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// Validation before the coordinator: a refusal is counted (no latency).
pub(super) fn refused<T>(op: &'static str, validate: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    refused_in("riak", op, validate)
}

/// One coordinator operation within the request's `timeout`, measured.
pub(super) async fn timed<T>(
    op: &'static str,
    params: &Params,
    operation: impl Future<Output = Result<T, CoordinatorError>>,
    success: impl FnOnce(&T) -> &'static str,
) -> Result<T, ApiError> {
    timed_in("riak", op, params.timeout, operation, success).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("\"x\", W/\"abc\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
    }

    #[test]
    fn if_modified_since_compares_whole_seconds() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("Thu, 01 Jan 1970 00:00:10 GMT"));
        assert!(not_modified(&h, "e", 10_999));
        assert!(!not_modified(&h, "e", 11_000));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!not_modified(&h, "e", 0), "If-None-Match decides when both are sent");
    }
}
