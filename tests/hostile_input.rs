//! Hostile and broken input on the public API, fuzzed with proptest: key
//! paths, listing paths and parameters, query strings, contexts, claims and the multipart decoder the
//! bench client uses. Whatever comes in, a node answers with a 2xx, 3xx or a
//! clear 4xx, never a 5xx, a panic or a hang; and a refused write changes
//! nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;
use vinzclortho::cli::Cli;
use vinzclortho::node;
use vinzclortho::storage::MemoryStore;

fn app() -> Router {
    build(&["vinzclortho", "--storage", "memory"]).0
}

/// A node built from `args`, with its resolved config.
fn build(args: &[&str]) -> (Router, vinzclortho::config::Config) {
    let config = Cli::try_parse_from(args).unwrap().node.resolve().unwrap();
    let router = node::build(
        &config,
        &node::Host::real(),
        "127.0.0.1:8880".into(),
        "127.0.0.1:9880".into(),
        Arc::new(MemoryStore::new()),
        None,
    )
    .unwrap()
    .router;
    (router, config)
}

/// A node of a new cluster with client security on (`--security`), and
/// the admin token it wrote to its data directory.
fn secure_app(dir: &std::path::Path) -> (Router, String) {
    let dir = dir.to_str().unwrap();
    let args = ["vinzclortho", "--storage", "memory", "--security", "--data-dir", dir];
    let (app, config) = build(&args);
    let token = std::fs::read_to_string(config.data_dir.join("admin.token")).unwrap().trim().to_owned();
    (app, token)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Sends one request; `None` when the request itself cannot be built (the
/// HTTP layer would refuse it before us).
fn call(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, Vec<u8>)],
    body: Vec<u8>,
) -> Option<(StatusCode, String)> {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, axum::http::HeaderValue::from_bytes(value).ok()?);
    }
    let req = req.body(Body::from(body)).ok()?;
    rt.block_on(async {
        let res = tokio::time::timeout(std::time::Duration::from_secs(10), app.clone().oneshot(req))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    })
}

fn percent_encode(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("%{b:02X}")).collect()
}

fn assert_not_5xx(what: &str, answer: Option<(StatusCode, String)>) {
    if let Some((status, body)) = answer {
        assert!(!status.is_server_error(), "{what}: {status} {body}");
        if status.is_client_error() {
            assert!(!body.trim().is_empty(), "{what}: a {status} must say what was wrong");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_key_path_is_answered_without_a_server_error(raw in proptest::collection::vec(any::<u8>(), 0..80), literal in "[ -~]{0,40}") {
        let (rt, app) = (runtime(), app());
        for path in [format!("/store/{}", percent_encode(&raw)), format!("/store/{literal}"), format!("/admin/preflist/{}", percent_encode(&raw))] {
            for method in ["GET", "PUT", "DELETE", "POST"] {
                assert_not_5xx(&format!("{method} {path}"), call(&rt, &app, method, &path, &[], b"v".to_vec()));
            }
        }
    }

    #[test]
    fn any_listing_path_or_parameter_is_answered_without_a_server_error(raw in proptest::collection::vec(any::<u8>(), 0..40), value in "[ -~]{0,20}") {
        let (rt, app) = (runtime(), app());
        assert_eq!(call(&rt, &app, "PUT", "/store/k", &[], b"v".to_vec()).unwrap().0, StatusCode::OK);
        let name = percent_encode(&raw);
        let value = value.replace(' ', "+").replace('#', "%23");
        for path in [
            format!("/buckets/{name}/keys?keys={value}"),
            format!("/types/{name}/buckets/{name}/keys?keys=true"),
            format!("/types/{name}/buckets?buckets={value}"),
            format!("/riak/{name}?keys=stream"),
            // Never an integer: a timeout of 0 ms is a legitimate 503.
            format!("/buckets?buckets=true&timeout=x{value}"),
        ] {
            // GET only: a HEAD is the same handler, and its refusals have no body to check.
            assert_not_5xx(&format!("GET {path}"), call(&rt, &app, "GET", &path, &[], Vec::new()));
        }
    }

    #[test]
    fn any_query_string_is_answered_without_a_server_error(query in "[ -~]{0,60}") {
        let (rt, app) = (runtime(), app());
        let uri = format!("/store/k?{}", query.replace(' ', "+").replace('#', "%23"));
        for method in ["GET", "PUT", "DELETE"] {
            assert_not_5xx(&format!("{method} {uri}"), call(&rt, &app, method, &uri, &[], b"v".to_vec()));
        }
    }

    #[test]
    fn any_context_header_is_refused_or_honoured_and_a_refusal_changes_nothing(header in proptest::collection::vec(any::<u8>(), 0..200), text in "[A-Za-z0-9_-]{0,120}") {
        let (rt, app) = (runtime(), app());
        assert_eq!(call(&rt, &app, "PUT", "/store/k", &[], b"first".to_vec()).unwrap().0, StatusCode::OK);
        for value in [header.clone(), text.clone().into_bytes()] {
            let answer = call(&rt, &app, "PUT", "/store/k", &[("x-vinzclortho-context", value.clone())], b"second".to_vec());
            assert_not_5xx("PUT with a context", answer.clone());
            if let Some((status, _)) = answer {
                // Only a context this cluster sealed for this key is taken;
                // nothing random is.
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
            }
            let answer = call(&rt, &app, "DELETE", "/store/k", &[("x-vinzclortho-context", value)], Vec::new());
            assert_not_5xx("DELETE with a context", answer);
        }
        let (status, body) = call(&rt, &app, "GET", "/store/k", &[], Vec::new()).unwrap();
        prop_assert_eq!((status, body.as_str()), (StatusCode::OK, "first"));
    }

    #[test]
    fn any_claim_body_is_answered_without_a_server_error(body in proptest::collection::vec(any::<u8>(), 0..40), number in any::<i128>()) {
        let (rt, app) = (runtime(), app());
        for body in [body, number.to_string().into_bytes(), format!(" {number}\n").into_bytes()] {
            assert_not_5xx("PUT /admin/claim", call(&rt, &app, "PUT", "/admin/claim", &[], body));
        }
        // The node still serves, with some claim.
        let (status, claim) = call(&rt, &app, "GET", "/admin/claim", &[], Vec::new()).unwrap();
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert!(claim.trim().parse::<u32>().is_ok());
    }

    /// Bucket properties: any path bytes, any body (raw, or JSON with any
    /// values under "props"), through every props route: a 2xx, 400 or
    /// 404, never a 5xx; and the bucket's n_val stays in 1..=N.
    #[test]
    fn any_props_request_is_answered_without_a_server_error(
        raw in proptest::collection::vec(any::<u8>(), 0..40),
        body in proptest::collection::vec(any::<u8>(), 0..60),
        name in "[a-z_]{1,12}",
        value in prop_oneof![Just("1".to_owned()), Just("0".to_owned()), Just("9".to_owned()), Just("\"all\"".to_owned()), Just("true".to_owned()), Just("null".to_owned()), Just("[1]".to_owned()), Just("-3".to_owned()), Just("1e400".to_owned())],
    ) {
        let (rt, app) = (runtime(), app());
        let json = format!(r#"{{"props":{{"{name}":{value},"n_val":{value}}}}}"#).into_bytes();
        let bucket = percent_encode(&raw);
        for path in [format!("/buckets/{bucket}/props"), format!("/types/{bucket}/buckets/b/props"), format!("/types/{bucket}/props"), format!("/riak/{bucket}"), "/buckets/b/props".to_owned()] {
            for method in ["GET", "PUT", "POST", "DELETE"] {
                for body in [body.clone(), json.clone()] {
                    assert_not_5xx(&format!("{method} {path}"), call(&rt, &app, method, &path, &[], body));
                }
            }
        }
        let (status, props) = call(&rt, &app, "GET", "/buckets/b/props", &[], Vec::new()).unwrap();
        prop_assert_eq!(status, StatusCode::OK);
        let props: serde_json::Value = serde_json::from_str(&props).unwrap();
        let n_val = props["props"]["n_val"].as_u64().unwrap();
        prop_assert!((1..=3).contains(&n_val), "{}", props);
    }

    /// With security on, no Authorization header but the right one gets in:
    /// whatever comes, 401, never a 5xx, and nothing changes.
    #[test]
    fn any_authorization_header_is_refused_with_401_and_changes_nothing(raw in proptest::collection::vec(any::<u8>(), 0..1200), word in "[!-~]{0,64}") {
        let dir = tempfile::tempdir().unwrap();
        let (rt, (app, admin)) = (runtime(), secure_app(dir.path()));
        let bearer = |t: &str| ("authorization", format!("Bearer {t}").into_bytes());
        assert_eq!(call(&rt, &app, "PUT", "/store/k", &[bearer(&admin)], b"first".to_vec()).unwrap().0, StatusCode::OK);
        for value in [raw.clone(), format!("Bearer {word}").into_bytes(), format!("bearer {}", String::from_utf8_lossy(&raw)).into_bytes()] {
            for (method, path) in [("GET", "/store/k"), ("PUT", "/store/k"), ("DELETE", "/store/k"), ("GET", "/admin/status"), ("POST", "/admin/tokens")] {
                let answer = call(&rt, &app, method, path, &[("authorization", value.clone())], b"evil".to_vec());
                assert_not_5xx(&format!("{method} {path}"), answer.clone());
                if let Some((status, _)) = answer {
                    prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {}", method, path);
                }
            }
        }
        let (status, body) = call(&rt, &app, "GET", "/store/k", &[bearer(&admin)], Vec::new()).unwrap();
        prop_assert_eq!((status, body.as_str()), (StatusCode::OK, "first"));
        prop_assert_eq!(call(&rt, &app, "GET", "/ping", &[("authorization", raw)], Vec::new()).map(|a| a.0).unwrap_or(StatusCode::OK), StatusCode::OK);
    }

    /// Riak's object paths and headers: random names in every path form,
    /// random metadata, links, index entries, conditions and vclocks. No
    /// 5xx whatever comes; a refused write stores nothing.
    #[test]
    fn any_riak_request_is_answered_without_a_server_error(
        raw in proptest::collection::vec(any::<u8>(), 0..40),
        literal in "[ -~]{0,30}",
        headers in proptest::collection::vec((0usize..10, proptest::collection::vec(any::<u8>(), 0..60)), 0..6),
        query in "[ -~]{0,40}",
    ) {
        const NAMES: [&str; 10] = [
            "content-type", "x-riak-vclock", "x-riak-meta-m", "x-riak-index-i_int", "x-riak-index-i_bin",
            "link", "if-match", "if-none-match", "if-unmodified-since", "accept",
        ];
        let (rt, app) = (runtime(), app());
        let headers: Vec<(&str, Vec<u8>)> = headers.into_iter().map(|(i, v)| (NAMES[i], v)).collect();
        let query = query.replace(' ', "+").replace('#', "%23");
        let key = percent_encode(&raw);
        for path in [
            format!("/buckets/b/keys/{key}?{query}"),
            format!("/types/default/buckets/{key}/keys/k?{query}"),
            format!("/riak/b/{literal}"),
            format!("/buckets/b/keys?{query}"),
            format!("/buckets/b/counters/{key}?{query}"),
            format!("/buckets/b/keys/{key}/preflist"),
        ] {
            for method in ["GET", "PUT", "POST", "DELETE", "HEAD"] {
                // 501 is the deliberate answer to what is not supported
                // (here: a `/riak/B/K/...` link walk, when the name has a /).
                // A HEAD answer has no body to say why.
                let answer = call(&rt, &app, method, &path, &headers, raw.clone())
                    .filter(|(status, _)| *status != StatusCode::NOT_IMPLEMENTED)
                    .map(|(status, body)| if method == "HEAD" { (status, "(HEAD)".to_owned()) } else { (status, body) });
                assert_not_5xx(&format!("{method} {path}"), answer);
            }
        }
        // 2i queries with random fields, terms, continuations and
        // parameters, on a bucket whose one object carries random index
        // headers (its keys are text: a key that is not UTF-8 cannot be
        // a JSON string, a deliberate 500 as in listings).
        let mut with = headers.clone();
        with.push(("content-type", b"text/plain".to_vec()));
        let _ = call(&rt, &app, "PUT", "/buckets/ix/keys/k", &with, b"v".to_vec());
        for path in [
            format!("/buckets/ix/index/{key}/{literal}?{query}"),
            format!("/buckets/ix/index/i_int/{key}/{key}?{query}"),
            format!("/types/default/buckets/ix/index/i_bin/{literal}?return_terms=true&{query}"),
            format!("/buckets/ix/index/$key/{key}?max_results=1&continuation={literal}&{query}"),
            format!("/buckets/ix/index/i_bin/a/z?term_regex={key}&stream=true&{query}"),
            format!("/buckets/ix/index/$bucket/ix?max_results={literal}&{query}"),
        ] {
            assert_not_5xx(&format!("GET {path}"), call(&rt, &app, "GET", &path, &[], Vec::new()));
        }
        // A write refused for its headers leaves the key as it was.
        let path = "/buckets/b/keys/fixed";
        let plain = [("content-type", b"text/plain".to_vec())];
        prop_assert_eq!(call(&rt, &app, "PUT", path, &plain, b"first".to_vec()).unwrap().0, StatusCode::NO_CONTENT);
        let mut with = headers.clone();
        with.push(("content-type", b"text/plain".to_vec()));
        if let Some((status, _)) = call(&rt, &app, "PUT", path, &with, b"second".to_vec())
            && status.is_client_error()
        {
            let (status, body) = call(&rt, &app, "GET", path, &[], Vec::new()).unwrap();
            prop_assert_eq!((status, body.as_str()), (StatusCode::OK, "first"));
        }
    }

    #[test]
    fn the_multipart_decoder_never_panics(content_type in "[ -~]{0,80}", body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = vinzclortho::bench::target::multipart_values(&content_type, &body);
        let _ = vinzclortho::bench::target::multipart_values("multipart/mixed; boundary=b", &body);
    }
}
