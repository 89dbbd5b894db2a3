//! Client security at the HTTP edge: one middleware that maps each request
//! to the permission and bucket it needs and asks the core
//! (`core::security::authorize`, through membership, which holds the
//! gossiped tokens) whether its bearer token has it.
//!
//! * `/ping`: open, always (load balancers, readiness probes).
//! * `/metrics`: open, unless the node has a metrics token
//!   (`--metrics-token-file`): then exactly that bearer token, with or
//!   without `--security`.
//! * `/store/{key}`: GET and HEAD need read, PUT and POST write, DELETE
//!   delete, on bucket `default/default` (the only bucket this API has).
//! * bucket properties (`.../props`, `/riak/{b}`): GET and HEAD need read
//!   on the bucket (on the type, for `/types/{t}/props`), every change
//!   admin (granted on `*` only: properties change how the cluster places
//!   and counts a bucket's keys).
//! * everything else (`/admin/*`, claim changes, tokens, and unknown paths):
//!   admin, granted on `*`.
//!
//! Security off: nothing is checked but the metrics token. Every refusal is
//! a 401 (no usable credential; with `WWW-Authenticate: Bearer`) or a 403
//! (the token lacks the grant), one line saying why, counted in
//! `vinzclortho_http_refused_total{reason}`; no credential, however
//! malformed or long, gets anything else.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;

use super::AppState;
use super::error::ApiError;
use crate::core::key::DEFAULT_NAMESPACE;
use crate::core::security::{self, Permission, Refusal, Resource};
use crate::error::ErrorCode;
use crate::telemetry::metrics;

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Required {
    Nothing,
    /// The metrics token, if the node has one.
    Metrics,
    Grant(Permission, Resource<'static>),
    /// A grant on a bucket named in the path (type, bucket).
    GrantOn(Permission, Vec<u8>, Vec<u8>),
}

fn required(method: &Method, path: &str) -> Required {
    const DEFAULT_BUCKET: Resource<'static> =
        Resource::Bucket { bucket_type: DEFAULT_NAMESPACE.as_bytes(), bucket: DEFAULT_NAMESPACE.as_bytes() };
    match path {
        "/ping" => Required::Nothing,
        "/metrics" => Required::Metrics,
        _ if path == "/store" || path.starts_with("/store/") => {
            let permission = match *method {
                Method::GET | Method::HEAD => Permission::Read,
                Method::DELETE => Permission::Delete,
                // PUT, POST, and methods the route refuses anyway.
                _ => Permission::Write,
            };
            Required::Grant(permission, DEFAULT_BUCKET)
        }
        _ => match super::props::target(path) {
            Some(target) => {
                let permission = match *method {
                    Method::GET | Method::HEAD => Permission::Read,
                    _ => Permission::Admin,
                };
                match target {
                    super::props::Target::Bucket { bucket_type, bucket } => {
                        Required::GrantOn(permission, bucket_type, bucket)
                    }
                    // A type's props: a grant on the type (or on *).
                    super::props::Target::Type(bucket_type) => Required::GrantOn(permission, bucket_type, Vec::new()),
                }
            }
            None => Required::Grant(Permission::Admin, Resource::Cluster),
        },
    }
}

pub(super) async fn guard(State(api): State<AppState>, request: Request, next: Next) -> Response {
    let header = request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    let verdict = match required(request.method(), request.uri().path()) {
        Required::Nothing => Ok(()),
        Required::Metrics => match &api.metrics_token {
            None => Ok(()),
            Some(expected) => security::presented(header)
                .and_then(|hash| if hash == *expected { Ok(()) } else { Err(Refusal::Unknown) }),
        },
        Required::Grant(..) | Required::GrantOn(..) if !api.security => Ok(()),
        Required::Grant(permission, resource) => {
            security::presented(header).and_then(|hash| api.membership.authorize(&hash, permission, resource).map(drop))
        }
        Required::GrantOn(permission, bucket_type, bucket) => security::presented(header).and_then(|hash| {
            let resource = Resource::Bucket { bucket_type: &bucket_type, bucket: &bucket };
            api.membership.authorize(&hash, permission, resource).map(drop)
        }),
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            metrics::http_refused(refusal.reason());
            tracing::debug!(path = %request.uri().path(), reason = refusal.reason(), "request refused");
            let code = if refusal.unauthenticated() { ErrorCode::Unauthorized } else { ErrorCode::Forbidden };
            ApiError::new(code, refusal.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_the_permission_they_need() {
        let store = |m: Method| required(&m, "/store/some/key");
        let bucket = Resource::Bucket { bucket_type: b"default", bucket: b"default" };
        assert_eq!(store(Method::GET), Required::Grant(Permission::Read, bucket));
        assert_eq!(store(Method::HEAD), Required::Grant(Permission::Read, bucket));
        assert_eq!(store(Method::PUT), Required::Grant(Permission::Write, bucket));
        assert_eq!(store(Method::POST), Required::Grant(Permission::Write, bucket));
        assert_eq!(store(Method::DELETE), Required::Grant(Permission::Delete, bucket));
        assert_eq!(required(&Method::PATCH, "/store"), Required::Grant(Permission::Write, bucket));
        assert_eq!(required(&Method::GET, "/ping"), Required::Nothing);
        assert_eq!(required(&Method::GET, "/metrics"), Required::Metrics);
        let admin = Required::Grant(Permission::Admin, Resource::Cluster);
        for path in ["/admin/status", "/admin/claim", "/admin/replicas/k", "/admin/tokens", "/storex", "/nowhere"] {
            assert_eq!(required(&Method::GET, path), admin, "{path}");
        }
        assert_eq!(required(&Method::PUT, "/admin/claim"), admin);
        assert_eq!(required(&Method::POST, "/admin/bucket-types"), admin);
        // Bucket properties: read on the bucket, changes admin.
        let on = |p: Permission, t: &[u8], b: &[u8]| Required::GrantOn(p, t.to_vec(), b.to_vec());
        assert_eq!(required(&Method::GET, "/types/t1/buckets/b%2F1/props"), on(Permission::Read, b"t1", b"b/1"));
        assert_eq!(required(&Method::PUT, "/types/t1/buckets/b/props"), on(Permission::Admin, b"t1", b"b"));
        assert_eq!(required(&Method::DELETE, "/buckets/b/props"), on(Permission::Admin, b"default", b"b"));
        assert_eq!(required(&Method::GET, "/riak/b"), on(Permission::Read, b"default", b"b"));
        assert_eq!(required(&Method::GET, "/types/t1/props"), on(Permission::Read, b"t1", b""));
        assert_eq!(required(&Method::PUT, "/types/t1/props"), on(Permission::Admin, b"t1", b""));
    }

    #[test]
    fn a_type_grant_covers_its_buckets_props_and_its_own() {
        use crate::core::key::NodeId;
        let mut tokens = security::Tokens::new();
        let grants = vec![security::Grant::parse_short("read:t1").unwrap()];
        security::create(&mut tokens, &NodeId::new("a"), "r", security::token_hash("tok"), grants, None).unwrap();
        let hash = security::token_hash("tok");
        let may = |t: &[u8], b: &[u8], p| {
            security::authorize(&tokens, &hash, 0, p, Resource::Bucket { bucket_type: t, bucket: b }).is_ok()
        };
        assert!(may(b"t1", b"b", Permission::Read));
        assert!(may(b"t1", b"", Permission::Read), "the type's own props");
        assert!(!may(b"t2", b"b", Permission::Read));
        assert!(!may(b"t1", b"b", Permission::Admin), "changes need admin on *");
    }
}
