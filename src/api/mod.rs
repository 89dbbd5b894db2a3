//! The HTTP edge (axum). Handlers parse and validate a request, call the
//! coordinator (or membership), and shape the response; they hold no
//! distributed-systems logic of their own.
//!
//! * `store`: the original Vinz Clortho API, `/store/{key}`
//! * `listing`: Riak's bucket and key listings, `/buckets?buckets=`,
//!   `/buckets/{b}/keys?keys=` (and under `/types/{t}`, and `/riak/{b}`)
//! * `multipart`: the `multipart/mixed` body of a key's siblings, and the
//!   HTTP dates of Last-Modified
//! * `admin`: `/ping`, `/cluster/address`, `/admin/claim`, `/admin/status`, `/admin/ring`,
//!   `/admin/preflist/{key}`, `/admin/backup`
//! * `replicas`: `/admin/replicas/{key}`, every replica's own copy of a key
//! * `cluster`: leave, force-remove, replace, and the plan that commits them
//! * `metrics`: `/metrics` for Prometheus
//! * `auth`: client security, the permission each route needs
//! * `tokens`: `/admin/tokens`, client tokens and their grants
//! * `props`: Riak's bucket properties (`/types/{t}/buckets/{b}/props`,
//!   `/buckets/{b}/props`, `GET/PUT /riak/{b}`, `/types/{t}/props`) and
//!   `/admin/bucket-types`
//! * `riak`: Riak KV's HTTP API (objects, ...)
//! * `error`: how every module error becomes a status code and a message
//! * `drain`: a node shutting down refuses new requests (503, `/ping` too)
//!   and lets the ones in flight finish
//! * `openapi.json`: the OpenAPI description of every route, served at
//!   `/openapi.json`

mod admin;
mod auth;
mod cluster;
pub mod drain;
mod error;
mod listing;
mod metrics;
mod multipart;
mod props;
mod replicas;
mod riak;
mod store;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::coordinator::Coordinator;
use crate::membership::Membership;
use crate::services::handoff::Progress;
use crate::storage::Store;

/// Header carrying the causal context between a read and a write.
pub const CONTEXT_HEADER: &str = "x-vinzclortho-context";

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

/// Facts about this node shown by `/admin/status`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub cluster_address: String,
    pub partitions: u32,
    /// Whether the HTTP port speaks HTTPS (`--http-tls-cert`).
    pub http_tls: bool,
}

/// What every handler can reach.
pub struct Api {
    /// Seals the contexts this node hands out and opens the ones it gets.
    pub contexts: crate::core::context::ContextSeal,
    pub coordinator: Arc<Coordinator>,
    /// Runs listings (keys of a bucket, buckets of a type) over a covering set.
    pub coverage: Arc<crate::coordinator::coverage::Coverage>,
    pub membership: Arc<Membership>,
    pub store: Arc<dyn Store>,
    /// This node's outgoing partition transfers.
    pub transfers: Progress,
    /// Hints queued here per target node (the hint worker's last count).
    pub hints: crate::services::hints::HintCounts,
    /// Anti-entropy's progress; `None` when it is off.
    pub anti_entropy: Option<Arc<crate::services::anti_entropy::AntiEntropy>>,
    /// The tombstone reaper's counts; `None` when reaping is off.
    pub reaper: Option<Arc<crate::services::reaper::Reaper>>,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub limits: Limits,
    pub info: NodeInfo,
    /// SHA-256 of the token `/metrics` requires (`--metrics-token-file`);
    /// `None`: `/metrics` is open.
    pub metrics_token: Option<[u8; 32]>,
    /// Client security (`--security`): fixed when the cluster was created
    /// (membership refuses any view that differs), so read once, off the
    /// request path's locks.
    pub security: bool,
    /// The clock for Last-Modified, randomness, the blocking pool.
    pub env: crate::env::Env,
    /// Refuses new requests once the node is shutting down, and counts the
    /// ones in flight.
    pub drain: drain::Drain,
}

pub type AppState = Arc<Api>;

/// A node that stopped serving (the cluster removed it, or another live
/// process runs under its id) answers data requests with 503 and the reason,
/// until it exits: its ring and its data may no longer be the cluster's.
async fn serving(
    axum::extract::State(api): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match api.membership.stop_error() {
        Some(error) => {
            // Counted like any refused request: a node that left keeps
            // running, and its 503s are requests it answered.
            let op = match *request.method() {
                http::Method::GET | http::Method::HEAD => "get",
                http::Method::DELETE => "delete",
                _ => "put",
            };
            crate::telemetry::metrics::request_refused("store", op, "unavailable");
            ApiError::new(crate::error::ErrorCode::Unavailable, error.to_string()).into_response()
        }
        None => next.run(request).await,
    }
}

/// The OpenAPI 3.1 description of this API, written by hand;
/// tests/openapi.rs holds it to the routes below and to the statuses the
/// handlers answer.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// `GET /openapi.json`: open, like `/ping` (it describes the API, no data).
async fn openapi() -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

pub fn router(api: AppState) -> Router {
    Router::new()
        .route("/ping", get(admin::ping))
        .route("/cluster/address", get(admin::cluster_address))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics::render))
        .route("/admin/claim", get(admin::get_claim).put(admin::put_claim))
        .route("/admin/status", get(admin::status))
        .route("/admin/ring", get(admin::ring))
        .route("/admin/preflist/{*key}", get(admin::preflist))
        .route("/admin/backup", axum::routing::post(admin::backup))
        .route("/admin/replicas/{*key}", get(replicas::replicas))
        .route("/admin/leave", axum::routing::post(cluster::leave))
        .route("/admin/force-remove", axum::routing::post(cluster::force_remove))
        .route("/admin/replace", axum::routing::post(cluster::replace))
        .route("/admin/plan", get(cluster::plan).delete(cluster::clear))
        .route("/admin/commit", axum::routing::post(cluster::commit))
        .route("/admin/tokens", get(tokens::list).post(tokens::create))
        .route("/admin/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/admin/tokens/{name}/grants", axum::routing::put(tokens::set_grants))
        .route("/admin/bucket-types", get(props::list_types).post(props::create_type))
        .route("/admin/bucket-types/{name}", get(props::get_type).put(props::update_type))
        .route("/admin/bucket-types/{name}/activate", axum::routing::post(props::activate_type))
        .route("/types/{bucket_type}/buckets/{bucket}/props", axum::routing::any(props::props))
        .route("/types/{bucket_type}/props", axum::routing::any(props::props))
        .route("/buckets/{bucket}/props", axum::routing::any(props::props))
        // POST /riak/{bucket} creates an object (`riak::object_routes`).
        .route(
            "/store/{*key}",
            get(store::get_value)
                .put(store::put_value)
                .post(store::put_value)
                .delete(store::delete_value)
                .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&api), serving)),
        )
        .merge(riak::service_routes())
        .merge(riak::object_routes().route_layer(axum::middleware::from_fn_with_state(Arc::clone(&api), serving)))
        .route("/store", axum::routing::any(store::missing_key))
        .route("/store/", axum::routing::any(store::missing_key))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Before any handler, on every route and the fallbacks.
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&api), auth::guard))
        // Outside authentication: a node shutting down refuses everything
        // alike, and says no more than that.
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&api), drain::layer))
        // Bodies are size-checked by the handlers, which say what the limit is.
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(error::panic_response))
        // One span per request at info level (the default is debug, which
        // RUST_LOG=info would drop), child of the client's `traceparent`.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &http::Request<axum::body::Body>| {
            let span = tracing::info_span!(
                "http.request",
                otel.kind = "server",
                http.method = %request.method(),
                http.path = %request.uri().path(),
            );
            crate::telemetry::propagation::set_parent_from_headers(&span, request.headers());
            span
        }))
        .with_state(api)
}
