//! Client security at the HTTP edge: one middleware that maps each request
//! to the permission and bucket it needs and asks the core
//! (`core::security::authorize`, through membership, which holds the
//! gossiped tokens) whether its bearer token has it.
//!
//! * `/ping`: open, always (load balancers, readiness probes).
//! * `/cluster/address`: open, always: a node started with `-j` this
//!   member's HTTP address asks it where the cluster port is, before it has
//!   any credential (and `-j` must keep working with `--security` on). It
//!   names the cluster address and node id every member gossips anyway.
//! * `/openapi.json`: open, always: it describes the API, not the data.
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
//!   keys (`/buckets/B/keys`, `/types/T/buckets/B/keys`, `/riak/B?keys=...`),
//!   on the type for its buckets (`/buckets`, `/types/T/buckets`).
//! * bucket properties (`.../props`, GET and PUT `/riak/B` without `keys`):
//!   GET and HEAD need read on the bucket (on the type, for
//!   `/types/T/props`), every change admin (granted on `*` only:
//!   properties change how the cluster places and counts a bucket's keys).
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
use super::riak::path::{counter_path, index_path, object_path};
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

/// What a bucket-properties request needs: read to look, admin to change.
/// `POST /riak/B` is not one: it creates an object (`api::riak`).
fn props_required(method: &Method, path: &str) -> Option<Required> {
    if *method == Method::POST && path.starts_with("/riak/") {
        return None;
    }
    let permission = match *method {
        Method::GET | Method::HEAD => Permission::Read,
        _ => Permission::Admin,
    };
    let target = match super::props::target(path)? {
        super::props::Target::Bucket { bucket_type, bucket } => Target::Bucket(bucket_type, bucket),
        // A type's props: a grant on the type (or on *).
        super::props::Target::Type(bucket_type) => Target::Type(bucket_type),
    };
    Some(Required::Grant(permission, target))
}

fn required(method: &Method, path: &str, query: Option<&str>) -> Required {
    // Only reads list: a POST to `/buckets/B/keys` stores an object (Riak),
    // and `GET /riak/B` reads the bucket's properties unless it asks for
    // keys (`api::riak::legacy_bucket` decides the same way).
    if matches!(*method, Method::GET | Method::HEAD)
        && let Some(listing) = super::listing::listing_target(path)
        && (!path.starts_with("/riak/") || super::riak::wants_keys(query))
    {
        let target = match listing {
            super::listing::Listed::Buckets { bucket_type } => Target::Type(bucket_type),
            super::listing::Listed::Keys { bucket_type, bucket } => Target::Bucket(bucket_type, bucket),
        };
        return Required::Grant(Permission::List, target);
    }
    // A 2i query enumerates keys over a covering set, as a listing does.
    if let Some(index) = index_path(path) {
        return Required::Grant(Permission::List, Target::Bucket(index.bucket_type.to_vec(), index.bucket.to_vec()));
    }
    let default = DEFAULT_NAMESPACE.as_bytes();
    match path {
        "/ping" | "/" | "/stats" | "/cluster/address" | "/openapi.json" => Required::Nothing,
        "/metrics" => Required::Metrics,
        _ if path == "/store" || path.starts_with("/store/") => {
            Required::Grant(object_permission(method), Target::Bucket(default.to_vec(), default.to_vec()))
        }
        _ if let Some(required) = props_required(method, path) => required,
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
    let verdict = match required(request.method(), request.uri().path(), request.uri().query()) {
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
        let store = |m: Method| required(&m, "/store/some/key", None);
        let bucket = |t: &str, b: &str| Target::Bucket(t.as_bytes().to_vec(), b.as_bytes().to_vec());
        let default = bucket("default", "default");
        assert_eq!(store(Method::GET), Required::Grant(Permission::Read, default.clone()));
        assert_eq!(store(Method::HEAD), Required::Grant(Permission::Read, default.clone()));
        assert_eq!(store(Method::PUT), Required::Grant(Permission::Write, default.clone()));
        assert_eq!(store(Method::POST), Required::Grant(Permission::Write, default.clone()));
        assert_eq!(store(Method::DELETE), Required::Grant(Permission::Delete, default.clone()));
        assert_eq!(required(&Method::PATCH, "/store", None), Required::Grant(Permission::Write, default));
        for open in ["/ping", "/", "/stats", "/cluster/address", "/openapi.json"] {
            assert_eq!(required(&Method::GET, open, None), Required::Nothing, "{open}");
        }
        // Only that path: what lies beside or below it is admin's.
        for closed in ["/cluster", "/cluster/address/x", "/cluster/addresses"] {
            assert_eq!(required(&Method::GET, closed, None), Required::Grant(Permission::Admin, Target::Cluster));
        }
        assert_eq!(required(&Method::GET, "/metrics", None), Required::Metrics);
        // Riak's object paths: the bucket as the handler decodes it.
        let riak = |m: Method, p: &str| required(&m, p, None);
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
        // 2i queries list keys: `list` on the bucket queried.
        assert_eq!(
            riak(Method::GET, "/types/t/buckets/b%2Fc/index/n_int/1/2"),
            Required::Grant(Permission::List, bucket("t", "b/c"))
        );
        assert_eq!(
            riak(Method::GET, "/buckets/b/index/$bucket/b"),
            Required::Grant(Permission::List, bucket("default", "b"))
        );
        let admin = Required::Grant(Permission::Admin, Target::Cluster);
        for path in ["/admin/status", "/admin/claim", "/admin/replicas/k", "/admin/tokens", "/storex", "/nowhere"] {
            assert_eq!(required(&Method::GET, path, None), admin, "{path}");
        }
        assert_eq!(required(&Method::PUT, "/admin/claim", None), admin);
        assert_eq!(required(&Method::POST, "/admin/bucket-types", None), admin);
        // A backup writes on the node's machine: admin, like every /admin path.
        assert_eq!(required(&Method::POST, "/admin/backup", None), admin);
        // Bucket properties: read on the bucket, changes admin.
        let on = |p: Permission, t: &'static str, b: &'static str| Required::Grant(p, bucket(t, b));
        assert_eq!(required(&Method::GET, "/types/t1/buckets/b%2F1/props", None), on(Permission::Read, "t1", "b/1"));
        assert_eq!(required(&Method::PUT, "/types/t1/buckets/b/props", None), on(Permission::Admin, "t1", "b"));
        assert_eq!(required(&Method::DELETE, "/buckets/b/props", None), on(Permission::Admin, "default", "b"));
        assert_eq!(required(&Method::GET, "/riak/b", None), on(Permission::Read, "default", "b"));
        assert_eq!(
            required(&Method::GET, "/riak/b", Some("props=true&keys=false")),
            on(Permission::Read, "default", "b")
        );
        let list_b = Required::Grant(Permission::List, bucket("default", "b"));
        assert_eq!(required(&Method::GET, "/riak/b", Some("keys=stream")), list_b, "keys: a listing");
        assert_eq!(required(&Method::PUT, "/riak/b", None), on(Permission::Admin, "default", "b"));
        assert_eq!(
            required(&Method::POST, "/riak/b", None),
            on(Permission::Write, "default", "b"),
            "creates an object"
        );
        let of_type = |p: Permission| Required::Grant(p, Target::Type(b"t1".to_vec()));
        assert_eq!(required(&Method::GET, "/types/t1/props", None), of_type(Permission::Read));
        assert_eq!(required(&Method::PUT, "/types/t1/props", None), of_type(Permission::Admin));
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
        let own = security::authorize(&tokens, &hash, 0, Permission::Read, Resource::Type { bucket_type: b"t1" });
        assert!(own.is_ok(), "the type's own props");
        assert!(!may(b"t2", b"b", Permission::Read));
        assert!(!may(b"t1", b"b", Permission::Admin), "changes need admin on *");
    }

    #[test]
    fn listings_need_list_on_their_bucket_or_type() {
        let list = |path: &str| required(&Method::GET, path, None);
        let bucket = |t: &[u8], b: &[u8]| Required::Grant(Permission::List, Target::Bucket(t.to_vec(), b.to_vec()));
        let of_type = |t: &[u8]| Required::Grant(Permission::List, Target::Type(t.to_vec()));
        assert_eq!(list("/buckets"), of_type(b"default"));
        assert_eq!(list("/types/maps/buckets"), of_type(b"maps"));
        assert_eq!(list("/buckets/photos/keys"), bucket(b"default", b"photos"));
        assert_eq!(list("/types/maps/buckets/photos/keys"), bucket(b"maps", b"photos"));
        assert_eq!(required(&Method::GET, "/riak/photos", Some("keys=true")), bucket(b"default", b"photos"));
        // Names are percent-decoded to bytes, as the handlers see them.
        assert_eq!(list("/types/m%2Fx/buckets/%FF/keys"), bucket(b"m/x", b"\xff"));
        // Writing to a listing path is not listing (Riak: POST stores an object).
        assert!(!matches!(required(&Method::POST, "/buckets/photos/keys", None), Required::Grant(Permission::List, _)));
        // Other shapes are not listings (object routes, props): not List.
        for path in ["/buckets/photos/keys/k", "/riak/photos/k", "/buckets/photos/props", "/types/maps"] {
            assert!(!matches!(list(path), Required::Grant(Permission::List, _)), "{path}");
        }
    }
}
