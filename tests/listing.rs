//! Bucket and key listings (`api::listing`) on real clusters larger than N:
//! complete and exactly once, tombstones hidden, streamed in JSON chunks,
//! still complete with nodes down while every partition has a live holder
//! (a clear 503 when one has none), and complete while a node joins. And on
//! one in-process node, through the router: several bucket types and
//! buckets (written through the coordinator: `/store` has one bucket), and
//! names that JSON carries only escaped, or not at all.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use clap::Parser;
use common::{Cluster, NodeProc, client, wait_for};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vinzclortho::cli::Cli;
use vinzclortho::coordinator::QuorumParam;
use vinzclortho::core::key::ObjectKey;
use vinzclortho::core::object::{Content, Mutation};
use vinzclortho::core::vclock::VersionVector;
use vinzclortho::node;
use vinzclortho::storage::MemoryStore;

/// Writes `keys` through `/store` on the cluster's nodes, from a few
/// threads, with `w=all`: a listing asks one replica per partition (r=1, as
/// Riak's), so a key is sure to be listed only once every replica has it.
/// A write refused under load is sent again (a sibling more is harmless).
fn write_keys(nodes: &[&NodeProc], keys: &[String]) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (next, node) = (&next, nodes[t % nodes.len()]);
            s.spawn(move || {
                let http = client();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = keys.get(i) else { return };
                    let put = || http.put(node.url(&format!("/store/{key}?w=all"))).body("v").send().unwrap();
                    let status = (0..5).map(|_| put().status()).find(|s| s.is_success());
                    assert!(status.is_some(), "PUT {key} with w=all failed five times");
                }
            });
        }
    });
}

fn delete_key(node: &NodeProc, key: &str) {
    let http = client();
    // A delete needs the key's context.
    let r = http.get(node.url(&format!("/store/{key}"))).send().unwrap();
    let context = r.headers()["x-vinzclortho-context"].to_str().unwrap().to_owned();
    let r = http.delete(node.url(&format!("/store/{key}"))).header("x-vinzclortho-context", context).send().unwrap();
    assert!(r.status().is_success(), "DELETE {key}: {}", r.status());
}

/// `GET path`: status, content type and body.
fn get(node: &NodeProc, path: &str) -> (u16, String, String) {
    let r = client().get(node.url(path)).timeout(Duration::from_secs(120)).send().unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, r.text().unwrap())
}

/// The names of a `?keys=true` (or buckets) answer, which must be a 200.
fn whole(node: &NodeProc, path: &str, field: &str) -> Vec<String> {
    let (status, content_type, body) = get(node, path);
    assert_eq!((status, content_type.as_str()), (200, "application/json"), "{path}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json[field].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect()
}

/// The names of a `?keys=stream` answer, read as Riak's Python client reads
/// it (split at each `}`); checks that it ends with an empty object.
fn streamed(node: &NodeProc, path: &str, field: &str) -> Vec<String> {
    let (status, content_type, body) = get(node, path);
    assert_eq!((status, content_type.as_str()), (200, "application/json"), "{path}: {body}");
    let mut names = Vec::new();
    let mut objects = 0;
    let mut last_empty = false;
    for chunk in body.split_inclusive('}') {
        let json: serde_json::Value = serde_json::from_str(chunk).unwrap_or_else(|e| panic!("{e}: {chunk}"));
        let page = json[field].as_array().unwrap_or_else(|| panic!("no {field}: {chunk}"));
        last_empty = page.is_empty();
        names.extend(page.iter().map(|k| k.as_str().unwrap().to_owned()));
        objects += 1;
    }
    assert!(last_empty && objects >= 1, "a stream ends with an empty object");
    names
}

/// What a listing that missed keys during the join saw: the ring before
/// it and after it, the partitions of the missing keys, and where copies of
/// the first missing key are now, so that a rare failure explains itself.
fn explain_missing(cluster: &Cluster, got: &[String], want: &BTreeSet<String>, before: &serde_json::Value) {
    let set: BTreeSet<&String> = got.iter().collect();
    let missing: Vec<&String> = want.iter().filter(|k| !set.contains(k)).collect();
    let mut partitions = BTreeMap::<u32, usize>::new();
    for key in &missing {
        let key = ObjectKey::new("default".to_owned(), "default".to_owned(), (*key).clone());
        *partitions.entry(vinzclortho::core::ring::partition_of(&key, 16)).or_default() += 1;
    }
    eprintln!("listing missed {} keys; by partition: {partitions:?}", missing.len());
    eprintln!("node 0's ring before the listing: {}", before["ring"]);
    for node in cluster.running() {
        let s = common::status(node);
        eprintln!("{} after: {}", node.http, s.map(|s| s["ring"].to_string()).unwrap_or_default());
    }
    if let Some(first) = missing.first() {
        let (_, _, report) = get(cluster.node(0), &format!("/admin/replicas/{first}"));
        eprintln!("copies of {first} now: {report}");
    }
}

/// Exactly `want`, each once.
fn assert_exactly(got: Vec<String>, want: &BTreeSet<String>, what: &str) {
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(set.len(), got.len(), "{what}: a name was listed twice");
    let missing: Vec<_> = want.difference(&set).take(5).collect();
    let extra: Vec<_> = set.difference(want).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, extra {extra:?}");
}

#[test]
fn listings_are_complete_exactly_once_and_survive_nodes_down() {
    // 8 partitions: 12,000 keys are 1,500 per partition, more than one
    // page of a holder's store (`rpc::coverage::PAGE_RECORDS`).
    let args = ["--gossip-interval-ms", "100", "--failure-timeout-ms", "1500", "-p", "8"];
    let mut cluster = Cluster::start_with(147, 5, &args);
    let nodes: Vec<&NodeProc> = cluster.running().collect();
    let keys: Vec<String> = (0..12_000).map(|i| format!("key-{i:05}")).collect();
    let started = Instant::now();
    write_keys(&nodes, &keys);
    eprintln!("wrote {} keys in {:?}", keys.len(), started.elapsed());
    let deleted: Vec<String> = keys.iter().step_by(500).cloned().collect();
    for key in &deleted {
        delete_key(nodes[1], key);
    }
    let want: BTreeSet<String> = keys.iter().filter(|k| !deleted.contains(k)).cloned().collect();

    let n0 = cluster.node(0);
    assert_exactly(whole(n0, "/buckets/default/keys?keys=true", "keys"), &want, "keys=true");
    assert_exactly(streamed(n0, "/types/default/buckets/default/keys?keys=stream", "keys"), &want, "keys=stream");
    assert_exactly(whole(cluster.node(3), "/riak/default?keys=true", "keys"), &want, "/riak keys=true");
    let default: BTreeSet<String> = ["default".to_owned()].into();
    assert_exactly(whole(n0, "/buckets?buckets=true", "buckets"), &default, "buckets=true");
    assert_exactly(streamed(n0, "/types/default/buckets?buckets=stream", "buckets"), &default, "buckets=stream");
    // Another bucket, another type: nothing stored there.
    assert!(whole(n0, "/buckets/other/keys?keys=true", "keys").is_empty());
    // A bucket type that does not exist: Riak's 404.
    let (status, _, body) = get(n0, "/types/maps/buckets?buckets=true");
    assert_eq!((status, body.as_str()), (404, "Unknown bucket type: maps\n"));

    // Riak's answers to what is not a listing request.
    assert_eq!(get(n0, "/buckets/default/keys"), (200, "application/json".into(), "{}".into()));
    assert_eq!(get(n0, "/buckets/default/keys?keys=false").2, "{}");
    let (status, _, body) = get(n0, "/buckets?buckets=yes");
    assert!(status == 400 && body.contains("buckets=true"), "{status} {body}");
    let (status, _, body) = get(n0, "/buckets/default/keys?keys=true&timeout=soon");
    assert!(status == 400 && body.contains("Bad timeout value"), "{status} {body}");

    // The holders of one partition, node 0 not among them.
    let holders: Vec<usize> = (0..)
        .find_map(|i| {
            let preflist: serde_json::Value =
                client().get(n0.url(&format!("/admin/preflist/probe{i}"))).send().unwrap().json().unwrap();
            let holders: Vec<usize> = preflist["preflist"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (0..5).find(|&n| cluster.node(n).http == e["node"].as_str().unwrap()).unwrap())
                .collect();
            (!holders.contains(&0)).then_some(holders)
        })
        .unwrap();
    assert_eq!(holders.len(), 3);
    let seen_down = |cluster: &Cluster, count: usize| {
        wait_for("nodes to be seen down", Duration::from_secs(30), || {
            let s = common::status(cluster.node(0))?;
            let down = s["members"].as_array()?.iter().filter(|m| m["status"] == "down").count();
            (down == count).then_some(())
        })
    };

    // Two of them down (N=3): every partition keeps a live holder, and a
    // listing is complete before and after the failure detector saw it.
    cluster.kill9(holders[0]);
    cluster.kill9(holders[1]);
    let n0 = cluster.node(0);
    assert_exactly(whole(n0, "/buckets/default/keys?keys=true", "keys"), &want, "keys=true, 2 down, undetected");
    seen_down(&cluster, 2);
    assert_exactly(streamed(n0, "/buckets/default/keys?keys=stream", "keys"), &want, "keys=stream, 2 down");

    // The third: that partition has no live holder, and the listing says so
    // before sending anything.
    cluster.kill9(holders[2]);
    seen_down(&cluster, 3);
    let n0 = cluster.node(0);
    for path in ["/buckets/default/keys?keys=true", "/buckets/default/keys?keys=stream", "/buckets?buckets=true"] {
        let (status, _, body) = get(n0, path);
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("no live holder"), "{path}: {body}");
    }
}

#[test]
fn a_listing_during_a_join_misses_no_key() {
    let mut cluster = Cluster::start(148, 4);
    coverage_calls_need_an_identity_and_sane_arguments(cluster.node(1));
    let nodes: Vec<&NodeProc> = cluster.running().collect();
    let keys: Vec<String> = (0..3000).map(|i| format!("j{i:04}")).collect();
    write_keys(&nodes, &keys);
    let want: BTreeSet<String> = keys.iter().cloned().collect();
    cluster.add();
    // List until the move is over, from a node that was there before.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut listings, mut during_move) = (0, 0);
    loop {
        let before = common::status(cluster.node(0)).unwrap();
        let moving = before["ring"]["moving"] == true;
        let n0 = cluster.node(0);
        let got = streamed(n0, "/buckets/default/keys?keys=stream", "keys");
        if got.len() != want.len() {
            explain_missing(&cluster, &got, &want, &before);
        }
        assert_exactly(got, &want, "during the join");
        listings += 1;
        during_move += usize::from(moving);
        let s = common::status(n0).unwrap();
        let members_up = s["members"].as_array().unwrap().iter().filter(|m| m["status"] == "up").count();
        if listings >= 3 && s["ring"]["moving"] == false && members_up == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the join did not finish in time");
    }
    cluster.wait_converged(Duration::from_secs(120));
    let newcomer = cluster.node(4);
    assert_exactly(whole(newcomer, "/buckets/default/keys?keys=true", "keys"), &want, "after the join");
    eprintln!("{listings} listings during the join, {during_move} of them started while partitions moved");
}

/// `GET uri` through the router: status and body, or the body's error.
async fn route(app: &axum::Router, uri: &str) -> (u16, Result<Bytes, String>) {
    let request = axum::http::Request::get(uri).body(Body::empty()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), app.clone().oneshot(request))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| e.to_string());
    (status, body)
}

fn json(body: &Result<Bytes, String>) -> serde_json::Value {
    serde_json::from_slice(body.as_ref().unwrap()).unwrap()
}

#[tokio::test]
async fn types_buckets_and_odd_names_are_listed_on_one_node() {
    let config = Cli::try_parse_from(["vinzclortho", "--storage", "memory"]).unwrap().node.resolve().unwrap();
    let host = node::Host::real();
    let store = std::sync::Arc::new(MemoryStore::new());
    let app = node::build(&config, &host, "127.0.0.1:8880".into(), "127.0.0.1:9880".into(), store, None).unwrap();
    let coordinator = &app.api.coordinator;
    // The type some keys below live in (an unknown type is refused).
    app.api.membership.create_bucket_type("maps", Default::default()).unwrap();
    app.api.membership.activate_bucket_type("maps").unwrap();
    let content = Content {
        value: Bytes::from("v"),
        content_type: "text/plain".into(),
        last_modified_ms: 1,
        meta: Default::default(),
    };
    let put = |t: &'static str, b: &'static str, k: &'static [u8]| {
        let key = ObjectKey::new(t, b, k);
        let mutation = Mutation::Put(content.clone());
        async move { coordinator.put(&key, &VersionVector::new(), mutation, QuorumParam::Default).await.unwrap() }
    };
    for key in [&b"a"[..], "b{c}\"d\"".as_bytes(), "ünï".as_bytes()] {
        put("default", "photos", key).await;
    }
    put("default", "docs", b"gone").await;
    put("maps", "m{1}", b"k").await;
    put("default", "bin", b"\xff\xfe").await;
    let gone = ObjectKey::new("default", "docs", "gone");
    coordinator.delete(&gone, None, QuorumParam::Default, QuorumParam::Default).await.unwrap();

    let (status, body) = route(&app.router, "/buckets/photos/keys?keys=true").await;
    assert_eq!(status, 200);
    let mut keys: Vec<String> =
        json(&body)["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b{c}\"d\"", "ünï"]);
    let text = String::from_utf8(body.unwrap().to_vec()).unwrap();
    assert_eq!(text.matches('}').count(), 1, "braces in names are escaped: {text}");

    // A bucket holding only a tombstone is not listed; other types apart.
    let (status, body) = route(&app.router, "/buckets?buckets=true").await;
    assert_eq!(status, 200);
    let mut buckets: Vec<String> =
        json(&body)["buckets"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_owned()).collect();
    buckets.sort();
    assert_eq!(buckets, ["bin", "photos"]);
    let (_, body) = route(&app.router, "/types/maps/buckets?buckets=stream").await;
    let text = String::from_utf8(body.unwrap().to_vec()).unwrap();
    let objects: Vec<serde_json::Value> =
        text.split_inclusive('}').map(|chunk| serde_json::from_str(chunk).unwrap()).collect();
    assert_eq!(objects.first().unwrap()["buckets"][0], "m{1}");
    assert_eq!(objects.last().unwrap()["buckets"].as_array().unwrap().len(), 0);
    let (_, body) = route(&app.router, "/types/maps/buckets/m%7B1%7D/keys?keys=true").await;
    assert_eq!(json(&body)["keys"], serde_json::json!(["k"]));
    assert_eq!(json(&route(&app.router, "/buckets/docs/keys?keys=true").await.1)["keys"], serde_json::json!([]));

    // A key that is not UTF-8: as in Riak, the listing fails (500), and a
    // streamed one ends with an error object.
    let (status, _) = route(&app.router, "/buckets/bin/keys?keys=true").await;
    assert_eq!(status, 500);
    let (status, body) = route(&app.router, "/buckets/bin/keys?keys=stream").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.unwrap().to_vec()).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.split_inclusive('}').next_back().unwrap()).unwrap();
    assert!(last["error"].is_string(), "{text}");
}

/// The Coverage gRPC service of a real node: refused without the identity
/// headers (as every internal call), INVALID_ARGUMENT for a partition the
/// ring does not have.
fn coverage_calls_need_an_identity_and_sane_arguments(node: &NodeProc) {
    use vinzclortho::rpc::coverage_pb::ListKeysRequest;
    use vinzclortho::rpc::coverage_pb::coverage_client::CoverageClient;
    let request = |partition| ListKeysRequest {
        partition,
        bucket_type: Bytes::from("default"),
        bucket: Bytes::from("default"),
        after: None,
        caller: None,
    };
    let (bare, out_of_range) = (tonic::Request::new(request(0)), node.member_request(request(1 << 20)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = CoverageClient::connect(format!("http://{}", node.cluster)).await.unwrap();
        let e = client.list_keys(bare).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        let e = client.list_keys(out_of_range).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("does not exist"), "{e:?}");
    });
}
