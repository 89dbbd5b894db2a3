//! Riak KV's HTTP API, so that Riak applications and client libraries work
//! unchanged. Riak's own resources (`riak_kv_wm_object` and friends) are
//! the specification; where this module differs, the README's "Coming from
//! Riak" section says so.
//!
//! * `path`: which object, bucket and bucket type a Riak path names (shared
//!   with `api::auth`, so a permission is checked on exactly the bucket the
//!   handler then touches)
//! * `params`: Riak's query parameters (`r`, `w`, `returnbody`, ...)
//! * `headers`: Riak's metadata headers, vtags and ETags, sibling bodies
//! * `object`: `GET/HEAD/PUT/POST/DELETE` on an object, `POST` to a bucket
//! * `counter`: Riak's 1.4 counters (`/buckets/B/counters/K`)
//! * `index`: secondary-index (2i) queries (`/buckets/B/index/...`)
//! * `service`: `GET /`, `GET /stats`, preflists, and 501 for what is not
//!   here

pub(super) mod counter;
pub(super) mod headers;
pub(super) mod index;
pub(super) mod object;
pub(super) mod params;
pub(crate) mod path;
pub(super) mod service;

use axum::Router;
use axum::routing::{any, get};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{Method, Uri};
use axum::response::Response;

use super::{AppState, error::ApiError, listing};

/// The object routes, in all three of Riak's forms, and the listings of
/// buckets and keys (`api::listing`), whose paths a bucket POST shares.
pub(super) fn object_routes() -> Router<AppState> {
    let object =
        || get(object::get_object).put(object::put_object).post(object::put_object).delete(object::delete_object);
    Router::new()
        .route("/types/{bucket_type}/buckets/{bucket}/keys/{key}", object())
        .route("/buckets/{bucket}/keys/{key}", object())
        .route("/riak/{bucket}/{key}", object())
        .route("/types/{bucket_type}/buckets/{bucket}/keys", get(listing::keys).post(object::create_object))
        .route("/buckets/{bucket}/keys", get(listing::keys).post(object::create_object))
        .route("/riak/{bucket}", get(legacy_bucket).put(crate::api::props::props).post(object::create_object))
        .route("/buckets", get(listing::buckets))
        .route("/types/{bucket_type}/buckets", get(listing::buckets))
        .route(
            "/types/{bucket_type}/buckets/{bucket}/counters/{key}",
            get(counter::get_counter).post(counter::increment_counter),
        )
        .route("/buckets/{bucket}/counters/{key}", get(counter::get_counter).post(counter::increment_counter))
        .route("/buckets/{bucket}/index/{*rest}", get(index::query))
        .route("/types/{bucket_type}/buckets/{bucket}/index/{*rest}", get(index::query))
}

/// Riak's service resources and the refusals of what is not supported.
pub(super) fn service_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(service::resources))
        .route("/stats", get(service::stats))
        .route("/types/{bucket_type}/buckets/{bucket}/keys/{key}/preflist", get(service::preflist))
        .route("/buckets/{bucket}/keys/{key}/preflist", get(service::preflist))
        .route("/mapred", any(service::not_supported))
        .route("/search/{*rest}", any(service::not_supported))
        .route("/solr/{*rest}", any(service::not_supported))
        .route("/types/{bucket_type}/buckets/{bucket}/datatypes", any(service::not_supported))
        .route("/types/{bucket_type}/buckets/{bucket}/datatypes/{*rest}", any(service::not_supported))
        .route("/riak/{bucket}/{key}/{*walk}", any(service::not_supported))
}

/// Whether a legacy `GET /riak/B` asks for keys (`keys=true` or `stream`):
/// then it is a listing, else it reads the bucket's properties, as Riak's
/// old bucket resource answers. `api::auth` decides the same way.
pub(super) fn wants_keys(query: Option<&str>) -> bool {
    query
        .is_some_and(|q| q.split('&').filter_map(|pair| pair.split_once('=')).any(|(k, v)| k == "keys" && v != "false"))
}

/// `GET /riak/B`: keys or properties (see [`wants_keys`]). Riak may answer
/// both in one body; here `keys=` asks for the listing alone.
async fn legacy_bucket(State(api): State<AppState>, uri: Uri, request: Request) -> Result<Response, ApiError> {
    if wants_keys(uri.query()) {
        let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
        return listing::keys(State(api), uri, Query(params)).await;
    }
    crate::api::props::props(State(api), Method::GET, uri, Body::new(request.into_body())).await
}
