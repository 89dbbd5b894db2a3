//! Bucket types and bucket properties on a real cluster of 4 nodes: types
//! created and activated with the admin CLI, properties over Riak's HTTP
//! routes (round trip, 400 and 404), gossip to every node, a restart, and
//! a bucket's n_val placing its keys on exactly that many nodes, through
//! anti-entropy rounds, the reaper and hinted handoff too, and n_val=1 keys
//! found after a node joins.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, Cluster, FAST, NodeProc, client, wait_for};
use serde_json::{Value, json};
use vinzclortho::core::key::ObjectKey;
use vinzclortho::core::object::{Content, Mutation, Object};
use vinzclortho::rpc::convert::{key_to_pb, object_to_pb};
use vinzclortho::rpc::pb;
use vinzclortho::rpc::pb::replica_client::ReplicaClient;

const NET: u8 = 41;
const DEADLINE: Duration = Duration::from_secs(30);

fn admin(node: &NodeProc, args: &[&str]) -> Output {
    Command::new(BIN).arg("admin").arg("--node").arg(&node.http).args(args).output().expect("run vinzclortho admin")
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn get(node: &NodeProc, path: &str) -> (u16, String) {
    let r = client().get(node.url(path)).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn send(node: &NodeProc, method: reqwest::Method, path: &str, body: &str) -> (u16, String) {
    let r = client()
        .request(method, node.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// The props a node shows for `path`, once `check` holds on every node.
fn wait_props_everywhere(c: &Cluster, path: &str, check: impl Fn(&Value) -> bool) {
    for node in c.running() {
        wait_for(&format!("{path} on {}", node.http), DEADLINE, || {
            let (status, body) = get(node, path);
            let props: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && check(&props["props"])).then_some(())
        });
    }
}

/// How many nodes hold `key` (of bucket default/default), by
/// `/admin/replicas`: nodes that answered with a sibling.
fn holders(node: &NodeProc, key: &str) -> usize {
    let (status, body) = get(node, &format!("/admin/replicas/{key}"));
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    report["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["answered"] == true && r["siblings"].as_array().is_some_and(|s| !s.is_empty()))
        .count()
}

fn put_value(node: &NodeProc, key: &str, value: &str) {
    let r = client().put(node.url(&format!("/store/{key}"))).body(value.to_owned()).send().unwrap();
    assert!(r.status().is_success(), "PUT {key}: {}", r.status());
}

fn get_value(node: &NodeProc, key: &str) -> String {
    let r = client().get(node.url(&format!("/store/{key}"))).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET {key}");
    r.text().unwrap()
}

/// Sends `object` for `key` (of default/default) to `node` alone, with a
/// Replica/Merge call.
fn merge_into(node: &NodeProc, partition: u32, key: &str, object: &Object) {
    let request = node.member_request(pb::MergeRequest {
        caller: None,
        partition,
        key: Some(key_to_pb(&ObjectKey::in_default_bucket(key.to_owned()))),
        object: Some(object_to_pb(object)),
        ..Default::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut c = ReplicaClient::connect(format!("http://{}", node.cluster)).await.unwrap();
        c.merge(request).await.unwrap();
    });
}

#[test]
fn bucket_types_and_props_spread_persist_and_place_keys_on_n_val_nodes() {
    let mut args = FAST.to_vec();
    args.extend_from_slice(&[
        "--anti-entropy-interval-ms",
        "100",
        "--read-repair=false",
        "--tombstone-grace-ms",
        "1500",
    ]);
    let mut c = Cluster::start_with(NET, 4, &args);
    let (n0, n1) = (c.node(0), c.node(1));

    // A type is created inactive, unusable until activated.
    let created = admin(n0, &["bucket-type", "create", "t1", r#"{"props":{"n_val":2,"allow_mult":false}}"#]);
    assert_eq!(created.status.code(), Some(0), "{}", out(&created));
    assert!(out(&created).contains("t1 created"), "{}", out(&created));
    let listed = admin(n0, &["bucket-type", "list"]);
    assert!(out(&listed).contains("default (active)") && out(&listed).contains("t1 (not active)"), "{}", out(&listed));
    let (status, body) = get(n0, "/types/t1/buckets/b/props");
    assert_eq!(status, 404, "inactive: {body}");
    assert!(body.contains("Unknown bucket type: t1"), "{body}");
    let activated = admin(n0, &["bucket-type", "activate", "t1"]);
    assert_eq!(activated.status.code(), Some(0), "{}", out(&activated));
    assert!(out(&activated).contains("t1 has been activated"));
    wait_props_everywhere(&c, "/types/t1/props", |p| {
        p["active"] == true && p["n_val"] == 2 && p["allow_mult"] == false
    });
    let status = admin(n1, &["--json", "bucket-type", "status", "t1"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|_| panic!("{}", out(&status)));
    assert_eq!((status["active"].clone(), status["props"]["n_val"].clone()), (json!(true), json!(2)));

    // Bad properties exit 2 (checked by the CLI, or a 400 from the node);
    // the cluster's other refusals 1.
    assert_eq!(admin(n0, &["bucket-type", "create", "t2", r#"{"props":{"n_val":0}}"#]).status.code(), Some(2));
    assert_eq!(admin(n0, &["bucket-type", "create", "t2", "not json"]).status.code(), Some(2));
    let too_many = admin(n0, &["bucket-type", "create", "t2", r#"{"props":{"n_val":9}}"#]);
    assert_eq!(too_many.status.code(), Some(2), "{}", out(&too_many));
    assert!(out(&too_many).contains("n_val"), "{}", out(&too_many));
    let n_val_change = admin(n0, &["bucket-type", "update", "t1", r#"{"props":{"n_val":3}}"#]);
    assert_eq!(n_val_change.status.code(), Some(2), "an active type keeps its n_val: {}", out(&n_val_change));
    assert!(out(&n_val_change).contains("cannot be modified"), "{}", out(&n_val_change));
    let again = admin(n0, &["bucket-type", "create", "t1", "{\"props\":{}}"]);
    assert_eq!(again.status.code(), Some(1), "an active type exists: {}", out(&again));
    let update = admin(n0, &["bucket-type", "update", "t1", r#"{"props":{"r":"one"}}"#]);
    assert_eq!(update.status.code(), Some(0), "{}", out(&update));
    assert_eq!(admin(n0, &["bucket-type", "activate", "nope"]).status.code(), Some(1));
    // A type's props over HTTP, as Riak's clients update them (never create).
    // (Each type is one last-writer-wins register: an edit made through
    // another node before this one heard of the last would replace it.)
    wait_props_everywhere(&c, "/types/t1/props", |p| p["r"] == "one");
    let (status, body) = send(n1, reqwest::Method::PUT, "/types/t1/props", r#"{"props":{"pw":1,"n_val":2}}"#);
    assert_eq!(status, 204, "{body}");
    wait_props_everywhere(&c, "/types/t1/props", |p| p["pw"] == 1 && p["r"] == "one");
    let (status, body) = send(n1, reqwest::Method::PUT, "/types/t1/props", r#"{"props":{"n_val":1}}"#);
    assert_eq!(status, 400, "n_val fixed once active: {body}");
    assert!(body.contains("n_val"), "{body}");
    assert_eq!(send(n1, reqwest::Method::PUT, "/types/nope/props", r#"{"props":{}}"#).0, 404);

    // Bucket props: set on one node, seen on every node, reset.
    let (status, body) =
        send(n0, reqwest::Method::PUT, "/types/t1/buckets/b/props", r#"{"props":{"allow_mult":true,"w":1}}"#);
    assert_eq!(status, 204, "{body}");
    wait_props_everywhere(&c, "/types/t1/buckets/b/props", |p| {
        p["allow_mult"] == true && p["w"] == 1 && p["r"] == "one" && p["n_val"] == 2 && p["name"] == "b"
    });
    let (status, _) = send(n1, reqwest::Method::DELETE, "/types/t1/buckets/b/props", "");
    assert_eq!(status, 204);
    wait_props_everywhere(&c, "/types/t1/buckets/b/props", |p| p["allow_mult"] == false && p["w"] == "quorum");

    // Objects of the type follow its props: allow_mult=false keeps one
    // value of two blind writes (Riak's object routes); an unknown or an
    // inactive type is a 404 with Riak's text.
    for value in ["one", "two"] {
        let r = client()
            .put(n0.url("/types/t1/buckets/b/keys/k"))
            .header("content-type", "text/plain")
            .body(value)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "PUT {value}");
    }
    let r = client().get(n1.url("/types/t1/buckets/b/keys/k")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "one value, no siblings");
    assert_eq!(r.text().unwrap(), "two");
    assert!(admin(n0, &["bucket-type", "create", "t3", "{\"props\":{}}"]).status.success());
    for path in ["/types/nope/buckets/b/keys/k", "/types/t3/buckets/b/keys/k"] {
        let r = client().get(n0.url(path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        assert!(r.text().unwrap().contains("Unknown bucket type"), "{path}");
    }

    // Bad input: 400 naming the property; unknown type: 404.
    for (body, named) in [
        ("not json", "body"),
        (r#"{"n_val":2}"#, "body"),
        (r#"{"props":{"n_val":"two"}}"#, "n_val"),
        (r#"{"props":{"allow_mult":"perhaps"}}"#, "allow_mult"),
        (r#"{"props":{"r":0}}"#, "\"r\""),
        (r#"{"props":{"n_val":5}}"#, "n_val"),
    ] {
        let (status, text) = send(n0, reqwest::Method::PUT, "/buckets/b/props", body);
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(named), "{body}: {text}");
    }
    let (status, text) = send(n0, reqwest::Method::PUT, "/types/nope/buckets/b/props", r#"{"props":{}}"#);
    assert_eq!(status, 404, "{text}");
    assert_eq!(get(n0, "/types/nope/props").0, 404);
    // The default type's defaults, as Riak shows them (but allow_mult).
    let (status, body) = get(n0, "/buckets/other/props");
    assert_eq!(status, 200);
    let props: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(props["props"]["n_val"], 3);
    assert_eq!(props["props"]["allow_mult"], true);
    assert_eq!(props["props"]["r"], "quorum");
    assert_eq!(props["props"]["pr"], 0);

    // n_val=2 then n_val=1 on the /store bucket (default/default).
    let mut keys = Vec::new();
    for n_val in [2u64, 1] {
        let body = format!(r#"{{"props":{{"n_val":{n_val}}}}}"#);
        let (status, text) = send(c.node(2), reqwest::Method::PUT, "/buckets/default/props", &body);
        assert_eq!(status, 204, "{text}");
        wait_props_everywhere(&c, "/buckets/default/props", |p| p["n_val"] == n_val);
        keys = (0..12).map(|i| format!("n{n_val}-{i}")).collect::<Vec<String>>();
        for (i, key) in keys.iter().enumerate() {
            put_value(c.node(i % 4), key, key);
        }
        for key in &keys {
            assert_eq!(get_value(c.node(3), key), *key);
            assert_eq!(holders(c.node(0), key), n_val as usize, "{key} right after the write");
        }
        // Anti-entropy runs every 100 ms over 16 partitions: give it a few
        // full rounds, and the keys must not spread.
        let rounds = std::time::Instant::now() + Duration::from_secs(6);
        while std::time::Instant::now() < rounds {
            for key in &keys {
                assert_eq!(holders(c.node(1), key), n_val as usize, "{key} after anti-entropy");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let preflist: Value = serde_json::from_str(&get(c.node(0), &format!("/admin/preflist/{}", keys[0])).1).unwrap();
        assert_eq!(preflist["preflist"].as_array().unwrap().len(), n_val as usize, "{preflist}");
    }

    // A deleted n_val=1 key: its tombstone is on its one primary, which
    // reaps it (it does not wait for the partition's other holders).
    let deleted = &keys[0];
    let r = client().delete(c.node(1).url(&format!("/store/{deleted}"))).send().unwrap();
    assert!(r.status().is_success(), "DELETE {deleted}: {}", r.status());
    let reaped = || -> u64 { c.running().filter_map(|n| common::status(n)?["reaper"]["keys_reaped"].as_u64()).sum() };
    wait_for("the n_val=1 tombstone to be reaped", Duration::from_secs(30), || {
        (reaped() >= 1 && holders(c.node(0), deleted) == 0).then_some(())
    });

    // A write of an n_val=1 key while its primary is down goes to a
    // fallback (the partition's next holder); once the primary is back the
    // hint is delivered and the fallback drops its copy: one copy again.
    let (key, index) = (0..100)
        .map(|i| format!("hinted-{i}"))
        .find_map(|key| {
            let preflist: Value = serde_json::from_str(&get(c.node(0), &format!("/admin/preflist/{key}")).1).ok()?;
            let primary = preflist["preflist"][0]["node"].as_str()?.to_owned();
            let index = (1..4).find(|i| c.node(*i).http == primary)?;
            Some((key, index))
        })
        .expect("a key whose primary is not node 0");
    let (http, cluster) = c.kill9(index);
    put_value(c.node(0), &key, &key);
    c.restart(index, &http, &cluster);
    wait_for("the hint to be delivered and the fallback's copy dropped", Duration::from_secs(60), || {
        let report: Value = serde_json::from_str(&get(c.node(0), &format!("/admin/replicas/{key}")).1).ok()?;
        let copies: Vec<&Value> = report["replicas"]
            .as_array()?
            .iter()
            .filter(|r| r["siblings"].as_array().is_some_and(|s| !s.is_empty()))
            .collect();
        (copies.len() == 1 && copies[0]["primary"] == true).then_some(())
    });
    assert_eq!(get_value(c.node(0), &key), key);

    // A copy of an n_val=1 key on the partition's second holder only (as a
    // ring change can leave one): anti-entropy brings it to the key's
    // holder, where reads look for it.
    let report: Value = serde_json::from_str(&get(c.node(0), "/admin/replicas/planted").1).unwrap();
    let second = report["replicas"].as_array().unwrap().iter().find(|r| r["primary"] == false).unwrap();
    let second = c.running().find(|n| n.http == second["node"].as_str().unwrap()).unwrap();
    let mut planted = Object::default();
    let content = Content {
        value: "planted".into(),
        content_type: "text/plain".into(),
        last_modified_ms: 1,
        meta: Default::default(),
    };
    planted.update(0x5eed, &planted.clock().clone(), Mutation::Put(content)).unwrap();
    merge_into(second, report["partition"].as_u64().unwrap() as u32, "planted", &planted);
    wait_for("the planted copy to reach its holder", Duration::from_secs(30), || {
        let r = client().get(c.node(0).url("/store/planted")).send().ok()?;
        (r.status().as_u16() == 200 && r.text().ok()? == "planted").then_some(())
    });

    // A node joins: partitions move for the cluster's N, and anti-entropy
    // brings each n_val=1 key to its (maybe new) first holder, where reads
    // look for it.
    c.add();
    c.wait_converged(Duration::from_secs(120));
    for key in &keys[1..] {
        wait_for(&format!("{key} readable after the join"), Duration::from_secs(60), || {
            let r = client().get(c.node(4).url(&format!("/store/{key}"))).send().ok()?;
            (r.status().as_u16() == 200 && r.text().ok()? == *key).then_some(())
        });
    }

    // A restart keeps types and props (saved with the cluster state).
    let (http, cluster) = c.kill9(3);
    c.restart(3, &http, &cluster);
    let restarted = c.node(3);
    let (status, body) = get(restarted, "/types/t1/props");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""active":true"#), "{body}");
    let (_, body) = get(restarted, "/buckets/default/props");
    assert!(body.contains(r#""n_val":1"#), "{body}");
}
