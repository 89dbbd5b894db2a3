//! Riak's bucket properties over HTTP (`riak_kv_wm_props`), and the admin
//! routes for bucket types (`riak-admin bucket-type`):
//!
//! * `GET /types/{t}/buckets/{b}/props`, `/buckets/{b}/props` (type
//!   `default`) and the legacy `GET /riak/{b}`: `{"props": {...}}`, 200.
//! * `PUT` of the same (and `POST`, as Riak takes both): `{"props": {...}}`
//!   sets those properties of the bucket, 204; a bad body or value is a 400
//!   whose body names each bad property (`{"n_val":"not_integer"}`, as
//!   Riak's); an unknown or inactive type a 404.
//! * `DELETE` of the same: the bucket goes back to its type's properties,
//!   204.
//! * `GET /types/{t}/props`: the type's properties; `PUT` updates some of
//!   them (204; n_val is fixed once the type is active), as Riak's
//!   `riak_kv_wm_bucket_type`. Types are not created over this API (nor in
//!   Riak): `POST /admin/bucket-types` (the CLI's `bucket-type create`)
//!   does, then `.../activate`.
//!
//! Names in paths are percent-encoded bytes, decoded here (a bucket name
//! need not be UTF-8).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::core::bucket::{BucketError, BucketProps, DEFAULT_TYPE, PropsError, PropsPatch};
use crate::error::ErrorCode;

/// A props body larger than this is refused (Riak's props are a few
/// hundred bytes; ours are bounded at `core::bucket::MAX_PROPS_BYTES`
/// once parsed).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a props path names: a bucket of a type, or a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    Bucket { bucket_type: Vec<u8>, bucket: Vec<u8> },
    Type(Vec<u8>),
}

fn decode(part: &str) -> Vec<u8> {
    percent_decode_str(part).collect()
}

/// The bucket or type a props path names, if it is one.
pub(super) fn target(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    match parts.as_slice() {
        ["types", t, "buckets", b, "props"] if !t.is_empty() && !b.is_empty() => {
            Some(Target::Bucket { bucket_type: decode(t), bucket: decode(b) })
        }
        ["buckets", b, "props"] if !b.is_empty() => {
            Some(Target::Bucket { bucket_type: DEFAULT_TYPE.as_bytes().to_vec(), bucket: decode(b) })
        }
        ["riak", b] if !b.is_empty() => {
            Some(Target::Bucket { bucket_type: DEFAULT_TYPE.as_bytes().to_vec(), bucket: decode(b) })
        }
        ["types", t, "props"] if !t.is_empty() => Some(Target::Type(decode(t))),
        _ => None,
    }
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    (status, [(http::header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// A 400 as Riak's: the bad properties and why, as JSON.
fn refused(e: &PropsError) -> Response {
    crate::telemetry::metrics::request_refused("props", "put", "bad_request");
    (StatusCode::BAD_REQUEST, [(http::header::CONTENT_TYPE, "application/json")], format!("{}\n", e.to_json()))
        .into_response()
}

fn props_json(api: &AppState, name: &[u8], bucket_type: &[u8], props: &BucketProps) -> serde_json::Value {
    let name = String::from_utf8_lossy(name);
    let claimant = api.membership.claimant().map(|n| api.membership.http_address(&n)).unwrap_or_default();
    let typed = (bucket_type != DEFAULT_TYPE.as_bytes()).then(|| String::from_utf8_lossy(bucket_type).into_owned());
    let for_type = typed.as_deref().map(|t| (t, true, claimant.as_str()));
    json!({ "props": props.to_json(&name, for_type) })
}

/// Every method of every props route.
pub async fn props(State(api): State<AppState>, method: Method, uri: Uri, body: Body) -> Result<Response, ApiError> {
    let target = target(uri.path()).ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such resource"))?;
    match (target, method) {
        (Target::Type(t), Method::GET | Method::HEAD) => {
            let name =
                std::str::from_utf8(&t).map_err(|_| BucketError::UnknownType(String::from_utf8_lossy(&t).into()))?;
            let (props, active) =
                api.membership.bucket_type(name).ok_or_else(|| BucketError::UnknownType(name.to_owned()))?;
            let claimant = api.membership.claimant().map(|n| api.membership.http_address(&n)).unwrap_or_default();
            let for_type = (name != DEFAULT_TYPE).then_some((name, active, claimant.as_str()));
            Ok(json_response(StatusCode::OK, json!({ "props": props.to_json(name, for_type) })))
        }
        // As Riak's riak_kv_wm_bucket_type: an existing type's properties
        // may be updated over HTTP (the Python client's
        // BucketType.set_properties), never a type created.
        (Target::Type(t), Method::PUT | Method::POST) => {
            let name = String::from_utf8(t)
                .map_err(|e| BucketError::UnknownType(String::from_utf8_lossy(e.as_bytes()).into()))?;
            let body = read_body(body).await?;
            let patch = match PropsPatch::from_body(&body) {
                Ok(patch) => patch,
                Err(e) => return Ok(refused(&e)),
            };
            match api.membership.update_bucket_type(&name, &patch) {
                Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(crate::membership::MembershipError::Bucket(crate::core::bucket::BucketEditError::Props(e))) => {
                    Ok(refused(&e))
                }
                Err(crate::membership::MembershipError::Bucket(crate::core::bucket::BucketEditError::NoSuchType(
                    t,
                ))) => Err(BucketError::UnknownType(t).into()),
                Err(e) => Err(e.into()),
            }
        }
        (Target::Bucket { bucket_type, bucket }, Method::GET | Method::HEAD) => {
            let props = api.membership.bucket_props(&bucket_type, &bucket)?;
            Ok(json_response(StatusCode::OK, props_json(&api, &bucket, &bucket_type, &props)))
        }
        (Target::Bucket { bucket_type, bucket }, Method::PUT | Method::POST) => {
            let body = read_body(body).await?;
            let patch = match PropsPatch::from_body(&body) {
                Ok(patch) => patch,
                Err(e) => return Ok(refused(&e)),
            };
            match api.membership.set_bucket_props(&bucket_type, &bucket, &patch) {
                Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(crate::membership::MembershipError::Bucket(crate::core::bucket::BucketEditError::Props(e))) => {
                    Ok(refused(&e))
                }
                Err(e) => Err(e.into()),
            }
        }
        (Target::Bucket { bucket_type, bucket }, Method::DELETE) => {
            api.membership.reset_bucket_props(&bucket_type, &bucket)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (_, method) => Ok(super::error::method_not_allowed(method, uri).await),
    }
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, format!("a props body above {MAX_BODY_BYTES} bytes")))
}

/// `POST /admin/bucket-types`: `{"name": NAME, "props": {...}}`.
#[derive(Debug, Deserialize)]
pub struct CreateType {
    name: String,
    #[serde(default)]
    props: serde_json::Map<String, serde_json::Value>,
}

/// One bucket type as the admin routes show it.
#[derive(Debug, Serialize)]
pub struct TypeView {
    name: String,
    active: bool,
    props: serde_json::Value,
}

fn patch_of(props: &serde_json::Map<String, serde_json::Value>) -> Result<PropsPatch, ApiError> {
    PropsPatch::from_json(props).map_err(|e| ApiError::bad_request(format!("bad properties: {e}")))
}

fn type_view(api: &AppState, name: &str) -> Result<TypeView, ApiError> {
    let (props, active) = api
        .membership
        .bucket_type(name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("bucket type {name} does not exist")))?;
    let claimant = api.membership.claimant().map(|n| api.membership.http_address(&n)).unwrap_or_default();
    let for_type = (name != DEFAULT_TYPE).then_some((name, active, claimant.as_str()));
    Ok(TypeView { name: name.to_owned(), active, props: props.to_json(name, for_type) })
}

/// `GET /admin/bucket-types`: every type, `default` first.
pub async fn list_types(State(api): State<AppState>) -> Json<Vec<TypeView>> {
    let views = api.membership.bucket_types().into_iter().filter_map(|(name, _)| type_view(&api, &name).ok());
    Json(views.collect())
}

/// `POST /admin/bucket-types`: creates an inactive type, 201.
pub async fn create_type(State(api): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let request: CreateType = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"name\": NAME, \"props\": {{...}}}}: {e}")))?;
    api.membership.create_bucket_type(&request.name, patch_of(&request.props)?)?;
    Ok((StatusCode::CREATED, Json(type_view(&api, &request.name)?)).into_response())
}

/// `GET /admin/bucket-types/{name}`.
pub async fn get_type(State(api): State<AppState>, uri: Uri) -> Result<Json<TypeView>, ApiError> {
    let name = admin_type_name(&uri)?;
    Ok(Json(type_view(&api, &name)?))
}

/// `PUT /admin/bucket-types/{name}`: `{"props": {...}}` updates the type.
pub async fn update_type(State(api): State<AppState>, uri: Uri, body: Body) -> Result<Json<TypeView>, ApiError> {
    let name = admin_type_name(&uri)?;
    let body = read_body(body).await?;
    let patch = PropsPatch::from_body(&body).map_err(|e| ApiError::bad_request(format!("bad properties: {e}")))?;
    api.membership.update_bucket_type(&name, &patch)?;
    Ok(Json(type_view(&api, &name)?))
}

/// `POST /admin/bucket-types/{name}/activate`.
pub async fn activate_type(State(api): State<AppState>, uri: Uri) -> Result<Json<TypeView>, ApiError> {
    let name = admin_type_name(&uri)?;
    api.membership.activate_bucket_type(&name)?;
    Ok(Json(type_view(&api, &name)?))
}

fn admin_type_name(uri: &Uri) -> Result<String, ApiError> {
    let rest = uri.path().strip_prefix("/admin/bucket-types/").unwrap_or_default();
    let name = rest.strip_suffix("/activate").unwrap_or(rest);
    String::from_utf8(decode(name)).map_err(|_| ApiError::bad_request("a bucket type name is UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_paths_name_their_bucket_or_type() {
        let bucket = |t: &[u8], b: &[u8]| Some(Target::Bucket { bucket_type: t.to_vec(), bucket: b.to_vec() });
        assert_eq!(target("/types/t1/buckets/b%2F1/props"), bucket(b"t1", b"b/1"));
        assert_eq!(target("/buckets/%FF/props"), bucket(b"default", b"\xff"));
        assert_eq!(target("/riak/photos"), bucket(b"default", b"photos"));
        assert_eq!(target("/types/t1/props"), Some(Target::Type(b"t1".to_vec())));
        for other in ["/types//props", "/buckets/b/keys/k", "/riak/b/k", "/types/t/buckets/b", "/store/x", "/riak/"] {
            assert_eq!(target(other), None, "{other}");
        }
    }
}
