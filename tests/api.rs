//! The HTTP API driven through the router, without sockets: a whole node
//! (coordinator, replica, in-memory storage) behind `Router::oneshot`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use tower::ServiceExt;
use vinzclortho::cli::Cli;
use vinzclortho::node;
use vinzclortho::storage::MemoryStore;

const CTX: &str = "x-vinzclortho-context";

fn app(extra: &[&str]) -> Router {
    let args = ["vinzclortho", "--storage", "memory"].iter().chain(extra).copied();
    let config = Cli::try_parse_from(args).unwrap().node.resolve().unwrap();
    let store = Arc::new(MemoryStore::new());
    node::build(&config, &node::Host::real(), "127.0.0.1:8880".into(), "127.0.0.1:9880".into(), store, None)
        .unwrap()
        .router
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn context(&self) -> Option<String> {
        self.headers.get(CTX).map(|v| v.to_str().unwrap().to_owned())
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
    }
}

async fn call(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app.clone().oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body }
}

async fn get(app: &Router, uri: &str) -> Reply {
    call(app, "GET", uri, &[], Body::empty()).await
}

async fn put(app: &Router, uri: &str, value: &str, headers: &[(&str, &str)]) -> Reply {
    call(app, "PUT", uri, headers, value.to_owned()).await
}

/// The parts of a 300 response, as (content type, value), via a real
/// multipart parser.
async fn parts(reply: &Reply) -> Vec<(String, String)> {
    assert_eq!(reply.status, StatusCode::MULTIPLE_CHOICES);
    let ct = reply.header("content-type");
    assert!(ct.starts_with("multipart/mixed; boundary="), "{ct}");
    let boundary = ct.split_once("boundary=").unwrap().1.to_owned();
    let stream = futures::stream::once({
        let body = reply.body.clone();
        async move { Ok::<_, std::io::Error>(body) }
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    while let Some(field) = multipart.next_field().await.unwrap() {
        let ct = field.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        assert!(field.headers().contains_key("last-modified"));
        out.push((ct, field.text().await.unwrap()));
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_original_example_works_verbatim() {
    let app = app(&[]);
    let r = put(&app, "/store/testkey", "testvalue", &[("X-VinzClortho-ClientID", "myclientid")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.context().is_some(), "PUT returns the new context");
    let r = get(&app, "/store/testkey").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "testvalue");
    assert!(r.context().is_some());
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert!(r.headers.contains_key("last-modified"));
}

#[tokio::test]
async fn content_type_is_kept_and_post_is_put() {
    let app = app(&[]);
    let r = call(&app, "POST", "/store/k", &[("content-type", "application/json")], "{}").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&app, "/store/k").await;
    assert_eq!((r.header("content-type"), r.text().as_str()), ("application/json", "{}"));
}

#[tokio::test]
async fn writes_without_context_become_siblings_and_a_context_resolves_them() {
    let app = app(&[]);
    put(&app, "/store/k", "one", &[("content-type", "text/plain")]).await;
    put(&app, "/store/k", "two", &[("content-type", "text/html")]).await;
    let r = get(&app, "/store/k").await;
    assert_eq!(
        parts(&r).await,
        vec![("text/html".to_owned(), "two".to_owned()), ("text/plain".to_owned(), "one".to_owned())]
    );
    let ctx = r.context().expect("one context covers all siblings");
    let w = put(&app, "/store/k", "merged", &[(CTX, &ctx)]).await;
    assert_eq!(w.status, StatusCode::OK);
    let r = get(&app, "/store/k").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "merged"));
}

#[tokio::test]
async fn a_context_supersedes_exactly_what_its_read_saw() {
    let app = app(&[]);
    put(&app, "/store/k", "v1", &[]).await;
    let seen = get(&app, "/store/k").await.context().unwrap();
    // Another client writes after our read, without a context.
    put(&app, "/store/k", "v2", &[]).await;
    // Our write replaces v1 (which we saw) but must keep v2 (which we did not).
    put(&app, "/store/k", "v3", &[(CTX, &seen)]).await;
    let values: Vec<String> = parts(&get(&app, "/store/k").await).await.into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["v2", "v3"]);
}

#[tokio::test]
async fn deletes_leave_a_tombstone_whose_context_a_later_put_supersedes() {
    let app = app(&[]);
    put(&app, "/store/k", "v", &[]).await;
    let ctx = get(&app, "/store/k").await.context().unwrap();
    let d = call(&app, "DELETE", "/store/k", &[(CTX, &ctx)], Body::empty()).await;
    assert_eq!(d.status, StatusCode::OK);
    let r = get(&app, "/store/k").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // As every other error: a text body says so (openapi.json lists text/plain).
    assert_eq!((r.header("content-type"), r.text().as_str()), ("text/plain; charset=utf-8", "not found (deleted)\n"));
    let tomb = r.context().expect("a deleted key still returns its context");
    put(&app, "/store/k", "back", &[(CTX, &tomb)]).await;
    let r = get(&app, "/store/k").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "back"));
}

#[tokio::test]
async fn delete_without_context_removes_what_is_there() {
    let app = app(&[]);
    put(&app, "/store/k", "a", &[]).await;
    put(&app, "/store/k", "b", &[]).await;
    assert_eq!(call(&app, "DELETE", "/store/k", &[], Body::empty()).await.status, StatusCode::OK);
    assert_eq!(get(&app, "/store/k").await.status, StatusCode::NOT_FOUND);
    // Deleting a key that never existed is fine and stores nothing.
    let r = call(&app, "DELETE", "/store/never", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&app, "/store/never").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.context(), None, "a key never written has no context");
}

#[tokio::test]
async fn keys_are_percent_decoded_bytes() {
    let app = app(&[]);
    put(&app, "/store/%00%FF%2Fa%20b", "binary", &[]).await;
    put(&app, "/store/a/b", "slash", &[]).await;
    assert_eq!(get(&app, "/store/%00%ff%2fa%20b").await.text(), "binary");
    assert_eq!(get(&app, "/store/a%2Fb").await.text(), "slash", "%2F and / name the same key");
    assert_eq!(get(&app, "/store/a").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_and_oversized_contexts_are_400() {
    let app = app(&[]);
    put(&app, "/store/k", "v", &[]).await;
    let huge = "A".repeat(10_000);
    for bad in ["not base64!", "AQAB", "Ag", "", huge.as_str()] {
        let r = put(&app, "/store/k", "x", &[(CTX, bad)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:.20}");
        assert!(r.text().contains("X-VinzClortho-Context"), "{}", r.text());
        let d = call(&app, "DELETE", "/store/k", &[(CTX, bad)], Body::empty()).await;
        assert_eq!(d.status, StatusCode::BAD_REQUEST);
    }
    // Nothing was written by the refused requests.
    assert_eq!(get(&app, "/store/k").await.text(), "v");
}

/// The attack reproduced from outside: a context naming the node's actor
/// with counter `u64::MAX` made that PUT and every later one answer 200 while
/// the key read 404. Contexts are sealed now: an edited or unsealed one is a
/// 400 and changes nothing, and the key keeps working.
#[tokio::test]
async fn a_forged_context_is_refused_and_the_key_keeps_working() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = app(&[]);
    let first = put(&app, "/store/k", "v1", &[]).await;
    let ctx = first.context().unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&ctx).unwrap();
    let actor = raw[1..9].to_vec();
    // The real token with its counter raised to u64::MAX, tag kept.
    let mut raised = raw.clone();
    raised[9..17].copy_from_slice(&u64::MAX.to_be_bytes());
    // The same claim in the unsealed layout older releases accepted.
    let legacy = [[1u8].as_slice(), &actor, &u64::MAX.to_be_bytes()].concat();
    for forged in [URL_SAFE_NO_PAD.encode(&raised), URL_SAFE_NO_PAD.encode(&legacy)] {
        let r = put(&app, "/store/k", "v2", &[(CTX, &forged)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert!(r.text().contains("X-VinzClortho-Context"), "{}", r.text());
        let d = call(&app, "DELETE", "/store/k", &[(CTX, &forged)], Body::empty()).await;
        assert_eq!(d.status, StatusCode::BAD_REQUEST);
        let g = get(&app, "/store/k").await;
        assert_eq!((g.status, g.text()), (StatusCode::OK, "v1".to_owned()), "a refused write changed the key");
    }
    // Later writes, with the real context and without one, land.
    let r = put(&app, "/store/k", "v3", &[(CTX, &ctx)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(get(&app, "/store/k").await.text(), "v3");
    put(&app, "/store/k", "v4", &[]).await;
    let both = get(&app, "/store/k").await;
    let mut values: Vec<String> = parts(&both).await.into_iter().map(|(_, v)| v).collect();
    values.sort();
    assert_eq!(values, ["v3", "v4"]);
}

#[tokio::test]
async fn a_context_from_another_key_or_cluster_is_refused() {
    let app = app(&[]);
    let a = put(&app, "/store/a", "va", &[]).await.context().unwrap();
    put(&app, "/store/b", "vb", &[]).await;
    let r = put(&app, "/store/b", "x", &[(CTX, &a)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("not issued for this key"), "{}", r.text());
    assert_eq!(get(&app, "/store/b").await.text(), "vb");
    // Another cluster (another secret and id) does not take our tokens.
    let other = app_with_other_cluster();
    put(&other, "/store/a", "v", &[]).await;
    let r = put(&other, "/store/a", "x", &[(CTX, &a)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// The cluster secret that seals contexts is never shown: not in
/// `/admin/status`, not in the state `Membership/GetState` and gossip send.
#[tokio::test]
async fn the_cluster_secret_is_in_no_status_and_no_gossiped_state() {
    use base64::Engine;
    use prost::Message;
    let config = Cli::try_parse_from(["vinzclortho", "--storage", "memory"]).unwrap().node.resolve().unwrap();
    let built = node::build(
        &config,
        &node::Host::real(),
        "127.0.0.1:8880".into(),
        "127.0.0.1:9880".into(),
        Arc::new(MemoryStore::new()),
        None,
    )
    .unwrap();
    let secret = built.secret.as_bytes().to_vec();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = [
        base64::engine::general_purpose::STANDARD.encode(&secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret),
    ];
    let status = get(&built.router, "/admin/status").await.text();
    for shown in [hex.as_str(), &b64[0], &b64[1]] {
        assert!(!status.to_lowercase().contains(&shown.to_lowercase()), "the secret is in /admin/status");
    }
    let gossiped = vinzclortho::rpc::membership::state_to_pb(&built.membership.snapshot()).encode_to_vec();
    assert!(!gossiped.windows(secret.len()).any(|w| w == secret.as_slice()), "the secret is in the gossiped state");
}

fn app_with_other_cluster() -> Router {
    // Every node::build without a data directory creates a new cluster,
    // with a random id and secret.
    app(&[])
}

#[tokio::test]
async fn oversized_keys_are_414_and_oversized_values_413_and_nothing_is_stored() {
    let app = app(&["--max-key-bytes", "16", "--max-value-bytes", "1024"]);
    let r = put(&app, &format!("/store/{}", "k".repeat(17)), "v", &[]).await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    assert!(r.text().contains("above the limit of 16"), "{}", r.text());
    // 16 bytes after decoding is fine even if the encoded path is longer.
    assert_eq!(put(&app, &format!("/store/{}", "%41".repeat(16)), "v", &[]).await.status, StatusCode::OK);

    let big = "x".repeat(1025);
    let r = put(&app, "/store/big", &big, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("limit of 1024 bytes"), "{}", r.text());
    // Same without a Content-Length: a streamed body is cut at the limit.
    let chunks = vec![Ok::<_, std::io::Error>(Bytes::from(big.clone()))];
    let streamed = Body::from_stream(futures::stream::iter(chunks));
    let r = call(&app, "PUT", "/store/big", &[], streamed).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(get(&app, "/store/big").await.status, StatusCode::NOT_FOUND);
    assert_eq!(put(&app, "/store/big", &big[..1024], &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn default_limits_are_64k_keys_and_16m_values() {
    // Longer keys do not fit in a URI at all (the HTTP layer answers 414
    // itself; tests/process.rs checks that on a real socket).
    let app = app(&[]);
    let long_key = "k".repeat(60_000);
    assert_eq!(put(&app, &format!("/store/{long_key}"), "v", &[]).await.status, StatusCode::OK);
    assert_eq!(get(&app, &format!("/store/{long_key}")).await.text(), "v");
    let r = call(&app, "PUT", "/store/k", &[("content-length", "16777217")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn quorum_parameters_are_validated() {
    let app = app(&[]);
    for (uri, needle) in [
        ("/store/k?r=abc", "query parameter r"),
        ("/store/k?r=0", "at least 1"),
        ("/store/k?r=4", "above n_val=3"),
        ("/store/k?r=-1", "query parameter r"),
        ("/store/k?n_val=1", "cannot be set per request"),
    ] {
        let r = get(&app, uri).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(r.text().contains(needle), "{uri}: {}", r.text());
    }
    let r = put(&app, "/store/k?w=7", "v", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(get(&app, "/store/k").await.status, StatusCode::NOT_FOUND, "a refused write stores nothing");
    // Valid values work on a single node: the quorum counts over the one replica.
    for q in ["1", "3", "one", "quorum", "all", "default"] {
        assert_eq!(put(&app, &format!("/store/k?w={q}"), "v", &[]).await.status, StatusCode::OK, "w={q}");
        let status = get(&app, &format!("/store/k?r={q}")).await.status;
        assert!(status == StatusCode::OK || status == StatusCode::MULTIPLE_CHOICES, "r={q}: {status}");
    }
    let ctx = get(&app, "/store/k?r=all").await.context().unwrap();
    put(&app, "/store/k?w=all", "final", &[(CTX, &ctx)]).await;
    assert_eq!(get(&app, "/store/k?r=3").await.text(), "final");
}

#[tokio::test]
async fn sibling_limit_refuses_the_write_that_would_exceed_it() {
    let app = app(&["--siblings-max", "3"]);
    for v in ["a", "b", "c"] {
        assert_eq!(put(&app, "/store/k", v, &[]).await.status, StatusCode::OK);
    }
    let r = put(&app, "/store/k", "d", &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("siblings") && r.text().contains("limit of 3"), "{}", r.text());
    assert_eq!(parts(&get(&app, "/store/k").await).await.len(), 3, "the refused value was not stored");
    // Resolving with the context is always allowed.
    let ctx = get(&app, "/store/k").await.context().unwrap();
    assert_eq!(put(&app, "/store/k", "resolved", &[(CTX, &ctx)]).await.status, StatusCode::OK);
    assert_eq!(get(&app, "/store/k").await.text(), "resolved");
}

#[tokio::test]
async fn claim_is_read_and_set_as_text() {
    let app = app(&["-p", "32"]);
    assert_eq!(get(&app, "/admin/claim").await.text(), "32");
    for (body, status, needle) in [
        ("abc", StatusCode::BAD_REQUEST, "non-negative integer"),
        ("-1", StatusCode::BAD_REQUEST, "non-negative integer"),
        ("", StatusCode::BAD_REQUEST, "non-negative integer"),
        ("33", StatusCode::BAD_REQUEST, "0 to 32"),
        ("99999999999999999999", StatusCode::BAD_REQUEST, "non-negative integer"),
        ("0", StatusCode::CONFLICT, "at least one claim"),
    ] {
        let r = call(&app, "PUT", "/admin/claim", &[], body.to_owned()).await;
        assert_eq!(r.status, status, "{body:?}: {}", r.text());
        assert!(r.text().contains(needle), "{body:?}: {}", r.text());
    }
    let r = call(&app, "PUT", "/admin/claim", &[], "16\n").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "32"), "a lone node owns the whole ring");
    let status: serde_json::Value = serde_json::from_slice(&get(&app, "/admin/status").await.body).unwrap();
    assert_eq!(status["members"][0]["wanted_claim"], 16);
}

#[tokio::test]
async fn ping_and_status() {
    let app = app(&["-p", "128"]);
    let r = get(&app, "/ping").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "OK"));
    put(&app, "/store/a", "1", &[]).await;
    let r = get(&app, "/admin/status").await;
    assert_eq!(r.header("content-type"), "application/json");
    let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(s["node"], "127.0.0.1:8880");
    assert_eq!(s["cluster_address"], "127.0.0.1:9880");
    assert_eq!(s["partitions"], 128);
    assert_eq!((s["n_val"].as_u64(), s["r"].as_u64(), s["w"].as_u64()), (Some(3), Some(2), Some(2)));
    assert_eq!(s["under_replicated"], true);
    assert_eq!(s["members"][0]["status"], "up");
    assert_eq!(s["members"][0]["claim"], 128);
    assert_eq!(s["storage"]["engine"], "memory");
    assert_eq!(s["storage"]["objects"], 1);
}

#[tokio::test]
async fn unknown_routes_methods_and_missing_keys_get_clear_errors() {
    let app = app(&[]);
    let r = get(&app, "/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("no such resource"));
    let r = call(&app, "PATCH", "/store/k", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.header("allow").contains("PUT"));
    for uri in ["/store", "/store/"] {
        let r = get(&app, uri).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(r.text().contains("missing key"));
    }
    // A Content-Type that is not text (obs-text bytes) is refused, not stored.
    let req = Request::put("/store/ct")
        .header(header::CONTENT_TYPE, axum::http::HeaderValue::from_bytes(b"caf\xe9").unwrap())
        .body(Body::from("v"))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(get(&app, "/store/ct").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_node_the_cluster_removed_answers_503_and_says_so() {
    use vinzclortho::core::key::NodeId;
    use vinzclortho::core::membership::Member;
    let config = Cli::try_parse_from(["vinzclortho", "--storage", "memory"]).unwrap().node.resolve().unwrap();
    let store = Arc::new(MemoryStore::new());
    let app = node::build(&config, &node::Host::real(), "127.0.0.1:8880".into(), "127.0.0.1:9880".into(), store, None)
        .unwrap();
    assert_eq!(put(&app.router, "/store/k", "v", &[]).await.status, StatusCode::OK);

    // Gossip says another node replaced this one (it joined at this
    // node's address without its data).
    let mut theirs = app.membership.snapshot();
    theirs.remove_member(app.membership.local());
    let replacement = Member::new(NodeId::new("replacement"), "127.0.0.1:8880".into(), "127.0.0.1:9880".into(), 64, 2);
    theirs.members.insert(replacement.node.clone(), replacement);
    app.membership.merge(&theirs).unwrap();

    for (method, body) in [("GET", ""), ("PUT", "w"), ("DELETE", "")] {
        let reply = call(&app.router, method, "/store/k", &[], body.to_owned()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{method}: {}", reply.text());
        assert!(reply.text().contains("was removed from the cluster"), "{method}: {}", reply.text());
    }
    let reply = get(&app.router, "/admin/status").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let status: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(status["removed"], true, "{status}");
    assert_eq!(status["state"], "removed", "{status}");
}

#[tokio::test]
async fn a_node_that_found_another_process_under_its_id_answers_503_and_says_so() {
    let config = Cli::try_parse_from(["vinzclortho", "--storage", "memory"]).unwrap().node.resolve().unwrap();
    let store = Arc::new(MemoryStore::new());
    let app = node::build(&config, &node::Host::real(), "127.0.0.1:8881".into(), "127.0.0.1:9881".into(), store, None)
        .unwrap();
    assert_eq!(put(&app.router, "/store/k", "v", &[]).await.status, StatusCode::OK);

    // Another process with a copy of the data directory keeps re-asserting
    // its record for this id above ours, as gossip brings ours to it.
    let me = app.membership.local().clone();
    for _ in 0..3 {
        let mut theirs = app.membership.snapshot();
        let record = theirs.members.get_mut(&me).unwrap();
        record.generation += 1;
        record.version = 0;
        record.address = "10.0.0.9:8080".into();
        record.cluster_address = "10.0.0.9:9080".into();
        app.membership.merge(&theirs).unwrap();
    }

    for (method, body) in [("GET", ""), ("PUT", "w"), ("DELETE", "")] {
        let reply = call(&app.router, method, "/store/k", &[], body.to_owned()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{method}: {}", reply.text());
        assert!(
            reply.text().contains(&format!("another process runs as node {me} at 10.0.0.9:8080")),
            "{method}: {}",
            reply.text()
        );
    }
    let reply = get(&app.router, "/admin/status").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let status: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(status["state"], "duplicate", "{status}");
    assert_eq!(status["duplicate_of"], "10.0.0.9:8080", "{status}");
    assert_eq!(status["removed"], false, "{status}");
}
