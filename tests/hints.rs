//! Sloppy quorum and hinted handoff on real 5-node clusters (N=3, so every
//! key has two fallbacks): a write with a primary down goes to a fallback,
//! is readable while the primary is away, survives a restart of the
//! fallback as a hint, is delivered when the primary comes back and then
//! leaves the fallback; `?pr=`/`?pw=` refuse to count fallbacks;
//! `/admin/replicas` shows each copy. Riak's riak_test `pr_pw` scenario.
//!
//! One cluster at a time (a lock): five processes each, on two cores.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Cluster, NodeProc, client, status, wait_for};
use reqwest::StatusCode;
use serde_json::Value;
use sha1::{Digest, Sha1};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const FALLBACKS: &str = "x-vinzclortho-fallbacks";
const CONVERGE: Duration = Duration::from_secs(60);

fn fallbacks(r: &reqwest::blocking::Response) -> u64 {
    r.headers().get(FALLBACKS).expect("X-VinzClortho-Fallbacks header").to_str().unwrap().parse().unwrap()
}

fn sha1_hex(value: &str) -> String {
    Sha1::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The key's primaries, as HTTP addresses, in preference-list order.
fn primaries(node: &NodeProc, key: &str) -> Vec<String> {
    let v: Value = client().get(node.url(&format!("/admin/preflist/{key}"))).send().unwrap().json().unwrap();
    v["preflist"].as_array().unwrap().iter().map(|e| e["node"].as_str().unwrap().to_owned()).collect()
}

fn index_of(c: &Cluster, http: &str) -> usize {
    c.nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.http == http)).unwrap()
}

/// Waits until `observer` sees each of `nodes` (HTTP addresses) as `state`.
fn wait_seen(observer: &NodeProc, nodes: &[String], state: &str) {
    wait_for(&format!("{} to see {nodes:?} {state}", observer.http), CONVERGE, || {
        let s = status(observer)?;
        let members = s["members"].as_array()?;
        nodes.iter().all(|n| members.iter().any(|m| m["address"] == n.as_str() && m["status"] == state)).then_some(())
    });
}

/// Hints queued on `node`, per target HTTP address.
fn hints(node: &NodeProc) -> Option<BTreeMap<String, u64>> {
    let s = status(node)?;
    let map = s["hints"].as_object()?;
    Some(map.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).filter(|(_, v)| *v > 0).collect())
}

fn replicas(node: &NodeProc, key: &str) -> Value {
    client().get(node.url(&format!("/admin/replicas/{key}"))).send().unwrap().json().unwrap()
}

/// The `/admin/replicas` entry of `http`.
fn entry<'a>(report: &'a Value, http: &str) -> &'a Value {
    report["replicas"].as_array().unwrap().iter().find(|r| r["node"] == http).unwrap_or_else(|| panic!("{report}"))
}

fn shas(entry: &Value) -> Vec<String> {
    entry["siblings"].as_array().unwrap().iter().map(|s| s["sha1"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_write_with_a_primary_down_goes_to_a_fallback_survives_its_restart_and_is_delivered() {
    let _serial = serial();
    let mut c = Cluster::start(111, 5);
    let key = "hinted";
    let preflist = primaries(c.node(0), key);
    assert_eq!(preflist.len(), 3);
    // The primary that goes away, and a coordinator that stays.
    let away = preflist.iter().find(|p| **p != c.node(0).http).unwrap().clone();
    let away_i = index_of(&c, &away);
    let coordinator = (0..5).find(|&i| i != away_i).unwrap();
    let (away_http, away_cluster) = c.kill9(away_i);
    wait_seen(c.node(coordinator), std::slice::from_ref(&away), "down");

    // w=all: the fallback must take part, and the answer says so.
    let url = c.node(coordinator).url(&format!("/store/{key}?w=all"));
    let r = client().put(url).body("v1").send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    assert_eq!(fallbacks(&r), 1);
    // Readable with r=all while the primary is away: the fallback counts.
    let r = client().get(c.node(coordinator).url(&format!("/store/{key}?r=all"))).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(fallbacks(&r), 1);
    assert_eq!(r.text().unwrap(), "v1");

    // /admin/replicas: the stopped primary did not answer; one fallback
    // holds v1.
    let report = replicas(c.node(coordinator), key);
    let down = entry(&report, &away);
    assert_eq!(down["primary"], true);
    assert_eq!(down["answered"], false);
    assert!(down.get("siblings").is_none() && down.get("context").is_none(), "{report}");
    let holding: Vec<String> = report["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["primary"] == false && r["answered"] == true && shas(r) == [sha1_hex("v1")])
        .map(|r| r["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(holding.len(), 1, "exactly one fallback holds the write: {report}");
    let fallback = holding[0].clone();
    assert!(!entry(&report, &fallback)["context"].as_str().unwrap().is_empty());
    let fallback_i = index_of(&c, &fallback);
    let want = BTreeMap::from([(away.clone(), 1)]);
    wait_for("the fallback's hint in /admin/status", CONVERGE, || (hints(c.node(fallback_i))? == want).then_some(()));

    // The hint survives a restart of the fallback.
    let (http, cluster) = c.kill9(fallback_i);
    c.restart(fallback_i, &http, &cluster);
    wait_for("the hint after the fallback's restart", CONVERGE, || (hints(c.node(fallback_i))? == want).then_some(()));

    // The primary comes back: the hint is delivered and deleted, and the
    // fallback drops its copy (it holds the partition in no ring).
    c.restart(away_i, &away_http, &away_cluster);
    let started = Instant::now();
    wait_for("the hint to be delivered", CONVERGE, || hints(c.node(fallback_i))?.is_empty().then_some(()));
    let report = wait_for("the primary's copy and the fallback's removal", CONVERGE, || {
        let report = replicas(c.node(coordinator), key);
        let primary = entry(&report, &away);
        let on_primary = primary["answered"] == true && shas(primary) == [sha1_hex("v1")];
        let off_fallback = shas(entry(&report, &fallback)).is_empty();
        (on_primary && off_fallback).then_some(report)
    });
    eprintln!("delivered in {:?}: {report}", started.elapsed());
    // Every primary now has v1; pr=all reads it without any fallback.
    let r = client().get(c.node(coordinator).url(&format!("/store/{key}?pr=all"))).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(fallbacks(&r), 0);
    assert_eq!(r.text().unwrap(), "v1");
}

#[test]
fn pr_and_pw_refuse_fallbacks_while_primaries_are_down() {
    let _serial = serial();
    let mut c = Cluster::start(112, 5);
    let key = "primaries";
    let preflist = primaries(c.node(0), key);
    // Two of the three primaries go away; the coordinator is a live node.
    let away: Vec<String> = preflist.iter().filter(|p| **p != c.node(0).http).take(2).cloned().collect();
    for a in &away {
        let i = index_of(&c, a);
        c.kill9(i);
    }
    let coordinator = c.node(0);
    wait_seen(coordinator, &away, "down");
    let url = |q: &str| coordinator.url(&format!("/store/{key}?{q}"));

    // Above N: 400, whatever is up.
    for q in ["pw=4", "pw=5"] {
        let r = client().put(url(q)).body("x").send().unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        assert!(r.text().unwrap().contains("above n_val"), "{q}");
    }
    let r = client().get(url("pr=4")).send().unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Two primaries needed, one is up: 503, nothing stamped.
    let r = client().put(url("pw=2")).body("refused").send().unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().unwrap();
    assert!(body.contains("needed 2 of 3 primaries"), "{body}");

    // Without pw the write succeeds through fallbacks (W=2 of which at
    // most one primary): sloppy quorum.
    let r = client().put(url("w=all")).body("v1").send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    assert_eq!(fallbacks(&r), 2);
    let r = client().get(url("r=all")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(fallbacks(&r), 2);
    let context = r.headers()["x-vinzclortho-context"].to_str().unwrap().to_owned();
    assert_eq!(r.text().unwrap(), "v1");
    let r = client().put(url("pw=1")).body("v2").header("x-vinzclortho-context", context).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "one primary is up: pw=1 is met");

    // Reads: pr=2 cannot be met, r=2 can (through fallbacks).
    let r = client().get(url("pr=2")).send().unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().unwrap().contains("primaries"));
    let r = client().get(url("r=2&pr=1")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().unwrap(), "v2");
    // The refused pw=2 write stamped nothing anywhere.
    let report = replicas(coordinator, key);
    for r in report["replicas"].as_array().unwrap() {
        if r["answered"] == true {
            assert!(!shas(r).contains(&sha1_hex("refused")), "{report}");
        }
    }
}

/// The hint on the wire: a `Merge` naming a hint target stores the object
/// (a hint for a node that holds nothing is delivered to the partition's
/// holders, here the node itself, and goes); an oversized target is refused
/// with INVALID_ARGUMENT before anything is stored.
#[test]
fn a_merge_carries_its_hint_and_a_bad_one_is_refused() {
    use vinzclortho::core::key::ObjectKey;
    use vinzclortho::rpc::convert::{key_to_pb, object_to_pb};
    use vinzclortho::rpc::pb;
    use vinzclortho::rpc::pb::replica_client::ReplicaClient;

    let _serial = serial();
    let c = Cluster::start(114, 1);
    let node = c.node(0);
    let key = ObjectKey::in_default_bucket("wire".to_owned());
    let partition: u32 = {
        let v: Value = client().get(node.url("/admin/preflist/wire")).send().unwrap().json().unwrap();
        v["partition"].as_u64().unwrap() as u32
    };
    let mut object = vinzclortho::core::object::Object::new();
    let content = vinzclortho::core::object::Content {
        value: "hinted".into(),
        content_type: "text/plain".into(),
        last_modified_ms: 0,
        ..Default::default()
    };
    object
        .update(7, &vinzclortho::core::vclock::VersionVector::new(), vinzclortho::core::object::Mutation::Put(content))
        .unwrap();
    let merge = |hint_target: String| pb::MergeRequest {
        caller: None,
        partition,
        key: Some(key_to_pb(&key)),
        object: Some(object_to_pb(&object)),
        hint_target,
    };
    let (bad, good) = (node.member_request(merge("n".repeat(65))), node.member_request(merge("elsewhere".into())));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (bad, good) = rt.block_on(async {
        let mut c = ReplicaClient::connect(format!("http://{}", node.cluster)).await.unwrap();
        (c.merge(bad).await, c.merge(good).await)
    });
    let status = bad.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("hint_target"), "{}", status.message());
    good.unwrap();
    let r = client().get(node.url("/store/wire")).send().unwrap();
    assert_eq!(r.text().unwrap(), "hinted");
    // The node holds the partition: the hint goes, the copy stays.
    wait_for("the hint to be delivered (counted in /metrics)", CONVERGE, || {
        let metrics = client().get(node.url("/metrics")).send().ok()?.text().ok()?;
        let delivered = metrics
            .lines()
            .find(|l| l.starts_with("vinzclortho_hints_delivered_total{outcome=\"ok\"}"))?
            .rsplit(' ')
            .next()?
            .parse::<f64>()
            .ok()?;
        (delivered >= 1.0 && hints(node)?.is_empty()).then_some(())
    });
    let report = replicas(node, "wire");
    assert_eq!(shas(entry(&report, &node.http)), [sha1_hex("hinted")]);
    // Another bucket: another key (its own partition), which nobody holds.
    let other = ObjectKey::new("t".to_owned(), "b".to_owned(), "wire".to_owned());
    let want = vinzclortho::core::ring::partition_of(&other, 16);
    let report: Value = client().get(node.url("/admin/replicas/wire?type=t&bucket=b")).send().unwrap().json().unwrap();
    assert_eq!(report["partition"].as_u64(), Some(u64::from(want)), "{report}");
    let mine = entry(&report, &node.http);
    assert_eq!((mine["answered"].as_bool(), mine["context"].as_str()), (Some(true), Some("")), "{report}");
    assert!(shas(mine).is_empty(), "{report}");
}

/// The hint delivery rate: a primary comes back to 20,000 hints queued for
/// it. Run with
/// `cargo test --release --test hints -- --ignored --nocapture hint_delivery_rate`.
#[test]
#[ignore]
fn hint_delivery_rate() {
    let _serial = serial();
    let mut c = Cluster::start(113, 5);
    let victim = 4;
    let (http, cluster) = c.kill9(victim);
    wait_seen(c.node(0), std::slice::from_ref(&http), "down");
    // About 3/5 of the keys have the victim as a primary: write until
    // 20,000 hints name it, from four threads.
    let target: u64 = 20_000;
    let queued = |c: &Cluster| -> u64 {
        (0..4).filter_map(|i| hints(c.node(i))).map(|h| h.get(&http).copied().unwrap_or(0)).sum()
    };
    let mut written = 0u64;
    let writers = 4;
    while queued(&c) < target {
        let batch = 2_000u64;
        std::thread::scope(|s| {
            for t in 0..writers {
                let node = c.node(t as usize);
                s.spawn(move || {
                    let client = client();
                    for i in (written + t..written + batch).step_by(writers as usize) {
                        let r = client.put(node.url(&format!("/store/rate-{i}"))).body("v").send().unwrap();
                        assert_eq!(r.status(), StatusCode::OK);
                    }
                });
            }
        });
        written += batch;
        // Let the workers count.
        std::thread::sleep(Duration::from_millis(1200));
    }
    let before = queued(&c);
    c.restart(victim, &http, &cluster);
    // From the restart (the node starts, gossip tells the fallbacks it is
    // up), and from the first delivery the fallbacks count in /metrics
    // (a page at a time) to the last hint gone: the delivery itself.
    let delivered_so_far = |c: &Cluster| -> f64 {
        (0..4)
            .filter_map(|i| client().get(c.node(i).url("/metrics")).send().ok()?.text().ok())
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.starts_with("vinzclortho_hints_delivered_total{outcome=\"ok\"}"))?
                    .rsplit(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum()
    };
    let delivered_before = delivered_so_far(&c);
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    wait_for("every hint delivered", Duration::from_secs(600), || {
        if first.is_none() && delivered_so_far(&c) > delivered_before {
            first = Some(Instant::now());
        }
        (first.is_some() && queued(&c) == 0).then_some(())
    });
    let total = started.elapsed().as_secs_f64();
    let delivering = first.map_or(total, |f| f.elapsed().as_secs_f64());
    eprintln!(
        "hint delivery: {before} hints ({written} keys written): {total:.1} s from the restart, {delivering:.1} s from \
         the first delivery counted: {:.0} keys/s",
        before as f64 / delivering
    );
}
