//! Client security at the HTTP edge: one middleware that maps each request
//! to the permission and bucket it needs and asks the core
//! (`core::security::authorize`, through membership, which holds the
//! gossiped tokens) whether its bearer token has it.
//!
//! * `/ping`: open, always (load balancers, readiness probes).
//! * `/` and `/stats`: open, always: Riak's clients read both on every new
//!   connection, before any request, to find paths and detect features.
//!   They show what `/metrics` shows by default (members, request counts
//!   and times), never data.
//! * `/metrics`: open, unless the node has a metrics token
//!   (`--metrics-token-file`): then exactly that bearer token, with or
//!   without `--security`.
//! * `/store/{key}`: GET and HEAD need read, PUT and POST write, DELETE
//!   delete, on bucket `default/default` (the only bucket this API has).
//! * Riak's object paths (`/types/T/buckets/B/keys/K`, `/buckets/B/keys/K`,
//!   `/riak/B/K`, and POST to the bucket): the same, on bucket `T/B`, named
//!   by the same decoding the handler uses (`api::riak::path`); counters
//!   (`/buckets/B/counters/K`) likewise (GET read, POST write).
//! * listings (`api::listing`), GET and HEAD: list, on the bucket for its
//!   keys (`/buckets/B/keys`, `/types/T/buckets/B/keys`, `/riak/B`), on the
//!   type for its buckets (`/buckets`, `/types/T/buckets`).
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
use super::riak::path::{counter_path, object_path};
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
    Grant(Permission, Target),
}

/// What a grant is asked on, owned: names may come from the path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Cluster,
    Type(Vec<u8>),
    Bucket(Vec<u8>, Vec<u8>),
}

impl Target {
    fn resource(&self) -> Resource<'_> {
        match self {
            Target::Cluster => Resource::Cluster,
            Target::Type(t) => Resource::Type { bucket_type: t },
            Target::Bucket(t, b) => Resource::Bucket { bucket_type: t, bucket: b },
        }
    }
}

/// The permission an object request's method needs.
fn object_permission(method: &Method) -> Permission {
    match *method {
        Method::GET | Method::HEAD => Permission::Read,
        Method::DELETE => Permission::Delete,
        // PUT, POST, and methods the route refuses anyway.
        _ => Permission::Write,
    }
}

fn required(method: &Method, path: &str) -> Required {
    // Only reads list: a POST to `/buckets/B/keys` stores an object (Riak).
    if matches!(*method, Method::GET | Method::HEAD)
        && let Some(listing) = super::listing::listing_target(path)
    {
        let target = match listing {
            super::listing::Listed::Buckets { bucket_type } => Target::Type(bucket_type),
            super::listing::Listed::Keys { bucket_type, bucket } => Target::Bucket(bucket_type, bucket),
        };
        return Required::Grant(Permission::List, target);
    }
    let default = DEFAULT_NAMESPACE.as_bytes();
    match path {
        "/ping" | "/" | "/stats" => Required::Nothing,
        "/metrics" => Required::Metrics,
        _ if path == "/store" || path.starts_with("/store/") => {
            Required::Grant(object_permission(method), Target::Bucket(default.to_vec(), default.to_vec()))
        }
        _ => match object_path(path).or_else(|| counter_path(path)) {
            Some(object) => Required::Grant(
                object_permission(method),
                Target::Bucket(object.bucket_type.to_vec(), object.bucket.to_vec()),
            ),
            None => Required::Grant(Permission::Admin, Target::Cluster),
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
        Required::Grant(..) if !api.security => Ok(()),
        Required::Grant(permission, target) => security::presented(header)
            .and_then(|hash| api.membership.authorize(&hash, permission, target.resource()).map(drop)),
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
        let bucket = |t: &str, b: &str| Target::Bucket(t.as_bytes().to_vec(), b.as_bytes().to_vec());
        let default = bucket("default", "default");
        assert_eq!(store(Method::GET), Required::Grant(Permission::Read, default.clone()));
        assert_eq!(store(Method::HEAD), Required::Grant(Permission::Read, default.clone()));
        assert_eq!(store(Method::PUT), Required::Grant(Permission::Write, default.clone()));
        assert_eq!(store(Method::POST), Required::Grant(Permission::Write, default.clone()));
        assert_eq!(store(Method::DELETE), Required::Grant(Permission::Delete, default.clone()));
        assert_eq!(required(&Method::PATCH, "/store"), Required::Grant(Permission::Write, default));
        for open in ["/ping", "/", "/stats"] {
            assert_eq!(required(&Method::GET, open), Required::Nothing, "{open}");
        }
        assert_eq!(required(&Method::GET, "/metrics"), Required::Metrics);
        // Riak's object paths: the bucket as the handler decodes it.
        let riak = |m: Method, p: &str| required(&m, p);
        assert_eq!(
            riak(Method::GET, "/types/t/buckets/b%2Fc/keys/k"),
            Required::Grant(Permission::Read, bucket("t", "b/c"))
        );
        assert_eq!(
            riak(Method::PUT, "/buckets/b+c/keys/k"),
            Required::Grant(Permission::Write, bucket("default", "b c"))
        );
        assert_eq!(riak(Method::POST, "/buckets/b/keys"), Required::Grant(Permission::Write, bucket("default", "b")));
        assert_eq!(riak(Method::DELETE, "/riak/b/k"), Required::Grant(Permission::Delete, bucket("default", "b")));
        assert_eq!(
            riak(Method::POST, "/buckets/b/counters/c"),
            Required::Grant(Permission::Write, bucket("default", "b"))
        );
        assert_eq!(
            riak(Method::GET, "/types/t/buckets/b/counters/c"),
            Required::Grant(Permission::Read, bucket("t", "b"))
        );
        let admin = Required::Grant(Permission::Admin, Target::Cluster);
        for path in ["/admin/status", "/admin/claim", "/admin/replicas/k", "/admin/tokens", "/storex", "/nowhere"] {
            assert_eq!(required(&Method::GET, path), admin, "{path}");
        }
        assert_eq!(required(&Method::PUT, "/admin/claim"), admin);
    }

    #[test]
    fn listings_need_list_on_their_bucket_or_type() {
        let list = |path: &str| required(&Method::GET, path);
        let bucket = |t: &[u8], b: &[u8]| Required::Grant(Permission::List, Target::Bucket(t.to_vec(), b.to_vec()));
        let of_type = |t: &[u8]| Required::Grant(Permission::List, Target::Type(t.to_vec()));
        assert_eq!(list("/buckets"), of_type(b"default"));
        assert_eq!(list("/types/maps/buckets"), of_type(b"maps"));
        assert_eq!(list("/buckets/photos/keys"), bucket(b"default", b"photos"));
        assert_eq!(list("/types/maps/buckets/photos/keys"), bucket(b"maps", b"photos"));
        assert_eq!(list("/riak/photos"), bucket(b"default", b"photos"));
        // Names are percent-decoded to bytes, as the handlers see them.
        assert_eq!(list("/types/m%2Fx/buckets/%FF/keys"), bucket(b"m/x", b"\xff"));
        // Writing to a listing path is not listing (Riak: POST stores an object).
        assert!(!matches!(required(&Method::POST, "/buckets/photos/keys"), Required::Grant(Permission::List, _)));
        // Other shapes are not listings (object routes, props): not List.
        for path in ["/buckets/photos/keys/k", "/riak/photos/k", "/buckets/photos/props", "/types/maps"] {
            assert!(!matches!(list(path), Required::Grant(Permission::List, _)), "{path}");
        }
    }
}
