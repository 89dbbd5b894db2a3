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
//! * `service`: `GET /`, `GET /stats`, preflists, and 501 for what is not
//!   here

pub(super) mod counter;
pub(super) mod headers;
pub(super) mod object;
pub(super) mod params;
pub(crate) mod path;
pub(super) mod service;

use axum::Router;
use axum::routing::{any, get, post};

use super::AppState;

/// The object routes, in all three of Riak's forms.
pub(super) fn object_routes() -> Router<AppState> {
    let object =
        || get(object::get_object).put(object::put_object).post(object::put_object).delete(object::delete_object);
    Router::new()
        .route("/types/{bucket_type}/buckets/{bucket}/keys/{key}", object())
        .route("/buckets/{bucket}/keys/{key}", object())
        .route("/riak/{bucket}/{key}", object())
        .route("/types/{bucket_type}/buckets/{bucket}/keys", post(object::create_object))
        .route("/buckets/{bucket}/keys", post(object::create_object))
        .route("/riak/{bucket}", post(object::create_object))
        .route(
            "/types/{bucket_type}/buckets/{bucket}/counters/{key}",
            get(counter::get_counter).post(counter::increment_counter),
        )
        .route("/buckets/{bucket}/counters/{key}", get(counter::get_counter).post(counter::increment_counter))
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
        // Index entries are stored and returned with every value already;
        // the queries come with the coverage machinery's next use.
        .route("/buckets/{bucket}/index/{*rest}", any(service::not_supported))
        .route("/types/{bucket_type}/buckets/{bucket}/index/{*rest}", any(service::not_supported))
}
