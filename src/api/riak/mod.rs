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

pub(super) mod headers;
pub(super) mod object;
pub(super) mod params;
pub(crate) mod path;

use axum::Router;
use axum::routing::{get, post};

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
}
