//! riak_test's verify_aae as our own test: real node processes over TCP,
//! N=3, read repair off (`--read-repair=false`) and no read in between, so
//! whatever comes back comes back through active anti-entropy alone. Each
//! replica's copy is read with the Replica gRPC Get of that node, which
//! repairs nothing.
//!
//! One cluster at a time (a lock): each starts several processes, and this
//! machine has two cores.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use common::{Cluster, FAST, NodeProc, client, poll, status, wait_for};
use vinzclortho::core::key::ObjectKey;
use vinzclortho::core::object::{Content, Mutation, Object};
use vinzclortho::rpc::convert::{key_to_pb, object_from_pb, object_to_pb};
use vinzclortho::rpc::pb;
use vinzclortho::rpc::pb::replica_client::ReplicaClient;
use vinzclortho::storage::{RocksOptions, RocksStore, Store};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Partitions of the test clusters (FAST's `-p 16`).
const PARTITIONS: u32 = 16;
const REPAIR_DEADLINE: Duration = Duration::from_secs(90);

/// FAST, anti-entropy every 300 ms, read repair off.
fn args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = FAST.to_vec();
    args.extend_from_slice(&["--read-repair=false", "--anti-entropy-interval-ms", "300"]);
    args.extend_from_slice(extra);
    args
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn key(i: usize) -> String {
    format!("aae-{i:04}")
}

fn put(node: &NodeProc, key: &str, value: &str) {
    let r = client().put(node.url(&format!("/store/{key}"))).body(value.to_owned()).send().unwrap();
    assert!(r.status().is_success(), "PUT {key}: {}", r.status());
}

/// The key's partition and its holders' HTTP addresses.
fn preflist(node: &NodeProc, key: &str) -> (u32, Vec<String>) {
    let p: serde_json::Value =
        client().get(node.url(&format!("/admin/preflist/{key}"))).send().unwrap().json().unwrap();
    let holders = p["preflist"].as_array().unwrap().iter().map(|e| e["node"].as_str().unwrap().to_owned()).collect();
    (p["partition"].as_u64().unwrap() as u32, holders)
}

/// The object `node` itself holds for `key` (empty if none), read with the
/// Replica gRPC Get (no quorum, no repair); `None` if the node did not answer.
fn copy_on(node: &NodeProc, partition: u32, key: &str) -> Option<Object> {
    let request = node.member_request(pb::GetRequest {
        with_history: false,
        digest: false,
        caller: None,
        partition,
        key: Some(key_to_pb(&ObjectKey::in_default_bucket(key.to_owned()))),
    });
    runtime().block_on(async {
        let mut c = ReplicaClient::connect(format!("http://{}", node.cluster)).await.ok()?;
        let object = c.get(request).await.ok()?.into_inner().object.unwrap_or_default();
        object_from_pb(object).ok()
    })
}

fn values(o: &Object) -> Vec<String> {
    o.siblings().iter().map(|s| String::from_utf8(s.content.value.to_vec()).unwrap()).collect()
}

/// Sends `object` to `node` alone with a Replica/Merge call (as a
/// coordinator would, to one replica only).
fn merge_into(node: &NodeProc, partition: u32, key: &str, object: &Object) {
    let request = node.member_request(pb::MergeRequest {
        caller: None,
        partition,
        key: Some(key_to_pb(&ObjectKey::in_default_bucket(key.to_owned()))),
        object: Some(object_to_pb(object)),
        ..Default::default()
    });
    runtime().block_on(async {
        let mut c = ReplicaClient::connect(format!("http://{}", node.cluster)).await.unwrap();
        c.merge(request).await.unwrap();
    });
}

fn node_at<'a>(c: &'a Cluster, http: &str) -> Option<&'a NodeProc> {
    c.running().find(|n| n.http == http)
}

/// Waits until every running holder of each key holds the same object with
/// exactly `expected` values; returns that object per key.
fn wait_replicas_agree(c: &Cluster, keys: &BTreeMap<String, Vec<String>>, what: &str) -> BTreeMap<String, Object> {
    let via = c.running().next().unwrap();
    let placement: BTreeMap<&String, (u32, Vec<String>)> = keys.keys().map(|k| (k, preflist(via, k))).collect();
    let mut agreed = BTreeMap::new();
    wait_for(what, REPAIR_DEADLINE, || {
        for (k, expected) in keys {
            if agreed.contains_key(k) {
                continue;
            }
            let (partition, holders) = &placement[k];
            let copies: Vec<Object> = holders
                .iter()
                .filter_map(|h| node_at(c, h))
                .map(|n| copy_on(n, *partition, k))
                .collect::<Option<_>>()?;
            let first = copies.first()?;
            let mut got = values(first);
            got.sort();
            if copies.iter().any(|o| o != first) || &got != expected {
                return None;
            }
            agreed.insert(k.clone(), first.clone());
        }
        Some(())
    });
    agreed
}

fn anti_entropy(node: &NodeProc) -> serde_json::Value {
    status(node).expect("status")["anti_entropy"].clone()
}

/// Once the cluster agrees, several more exchange rounds repair nothing.
fn assert_idle_repairs_nothing(c: &Cluster) {
    let before: Vec<(u64, u64)> = c
        .running()
        .map(|n| {
            let ae = anti_entropy(n);
            (ae["keys_repaired"].as_u64().unwrap(), ae["exchanges"].as_u64().unwrap())
        })
        .collect();
    // Each node exchanges every partition it holds with both other holders
    // at least once more.
    let rounds = u64::from(PARTITIONS) * 2;
    wait_for("more anti-entropy exchanges", Duration::from_secs(90), || {
        c.running()
            .zip(&before)
            .all(|(n, (_, ex))| anti_entropy(n)["exchanges"].as_u64() >= Some(ex + rounds))
            .then_some(())
    });
    for (n, (repaired, _)) in c.running().zip(&before) {
        let ae = anti_entropy(n);
        assert_eq!(ae["keys_repaired"].as_u64(), Some(*repaired), "{}: repairs while idle and healthy: {ae}", n.http);
    }
}

#[test]
fn anti_entropy_alone_repairs_missed_writes_and_a_value_changed_on_one_node() {
    let _serial = serial();
    let mut c = Cluster::start_with(61, 4, &args(&[]));
    // (a) Writes made while one replica is down.
    let (http, cluster) = c.kill9(3);
    let mut expected = BTreeMap::new();
    for i in 0..120 {
        put(c.node(0), &key(i), &format!("v{i}"));
        expected.insert(key(i), vec![format!("v{i}")]);
    }
    c.restart(3, &http, &cluster);
    c.wait_converged(Duration::from_secs(60));
    let agreed = wait_replicas_agree(&c, &expected, "the restarted replica to get the writes it missed");

    // (b) A value changed on one node only: a new sibling merged into one
    // replica, as a coordinator that reached no other would leave it.
    let k = key(7);
    let (partition, holders) = preflist(c.node(0), &k);
    let mut changed = agreed[&k].clone();
    let content = Content {
        value: "only-on-one".into(),
        content_type: "text/plain".into(),
        last_modified_ms: 1,
        meta: Default::default(),
    };
    changed.update(0x5eed, &changed.clock().clone(), Mutation::Put(content)).unwrap();
    let lonely = node_at(&c, &holders[0]).unwrap();
    merge_into(lonely, partition, &k, &changed);
    assert_eq!(copy_on(lonely, partition, &k).as_ref(), Some(&changed));
    expected.insert(k.clone(), vec!["only-on-one".to_owned()]);
    let agreed = wait_replicas_agree(&c, &expected, "the change made on one node to reach the others");
    assert_eq!(agreed[&k], changed);

    let repaired: u64 = c.running().map(|n| anti_entropy(n)["keys_repaired"].as_u64().unwrap()).sum();
    assert!(repaired > 0, "anti-entropy reports no repairs");
    assert_idle_repairs_nothing(&c);
}

#[test]
fn a_node_whose_objects_were_wiped_gets_every_key_back_without_a_read() {
    let _serial = serial();
    let mut c = Cluster::start_with(62, 4, &args(&[]));
    let mut expected = BTreeMap::new();
    for i in 0..200 {
        put(c.node(i % 4), &key(i), &format!("v{i}"));
        expected.insert(key(i), vec![format!("v{i}")]);
    }
    wait_replicas_agree(&c, &expected, "the writes to reach every replica");

    // (c) The node keeps its identity (node metadata) but loses every object.
    let (http, cluster) = c.kill9(2);
    {
        let store =
            RocksStore::open(&c.data_dir(2), &RocksOptions { sync_writes: true, ..RocksOptions::default() }).unwrap();
        let mut removed = 0;
        for p in 0..PARTITIONS {
            let keys: Vec<ObjectKey> = store.scan_partition(p).unwrap().map(|e| e.unwrap().0).collect();
            for k in &keys {
                store.remove(p, k).unwrap();
            }
            removed += keys.len();
        }
        assert!(removed > 100, "node 2 held only {removed} objects");
        assert_eq!(store.stats().unwrap().objects, 0, "the objects are gone");
    }
    c.restart(2, &http, &cluster);
    c.wait_converged(Duration::from_secs(60));
    wait_replicas_agree(&c, &expected, "the wiped node to get every key back");

    // (d) Lost trees: every node restarts (trees live in memory), a value
    // changes on one node only, and the rebuilt trees still find it.
    for i in 0..4 {
        let (http, cluster) = c.kill9(i);
        c.restart(i, &http, &cluster);
    }
    c.wait_converged(Duration::from_secs(60));
    let k = key(11);
    let (partition, holders) = preflist(c.node(0), &k);
    let lonely = node_at(&c, &holders[1]).unwrap();
    let mut changed = copy_on(lonely, partition, &k).unwrap();
    let content = Content {
        value: "after-restart".into(),
        content_type: "text/plain".into(),
        last_modified_ms: 1,
        meta: Default::default(),
    };
    changed.update(0xface, &changed.clock().clone(), Mutation::Put(content)).unwrap();
    merge_into(lonely, partition, &k, &changed);
    expected.insert(k, vec!["after-restart".to_owned()]);
    wait_replicas_agree(&c, &expected, "rebuilt trees to find the change");
    for n in c.running() {
        let built = anti_entropy(n)["trees_built"].as_u64().unwrap();
        assert!(built > 0, "{}: no tree rebuilt after the restart", n.http);
    }
    assert_idle_repairs_nothing(&c);
}

#[test]
fn without_anti_entropy_and_read_repair_a_divergence_stays() {
    // The control: the same change with anti-entropy off is never repaired,
    // so what the tests above see is anti-entropy's doing.
    let _serial = serial();
    let c = Cluster::start_with(63, 3, &[FAST, &["--read-repair=false", "--anti-entropy-interval-ms", "0"]].concat());
    assert!(anti_entropy(c.node(0)).is_null(), "anti-entropy is off");
    put(c.node(0), "k", "v1");
    let (partition, holders) = preflist(c.node(0), "k");
    let nodes: Vec<&NodeProc> = holders.iter().map(|h| node_at(&c, h).unwrap()).collect();
    let first = wait_for("the write on every replica", Duration::from_secs(10), || {
        let copies: Vec<Object> = nodes.iter().map(|n| copy_on(n, partition, "k")).collect::<Option<_>>()?;
        copies.iter().all(|o| o == &copies[0] && !o.is_empty()).then(|| copies[0].clone())
    });
    let mut changed = first.clone();
    let content = Content {
        value: "v2".into(),
        content_type: "text/plain".into(),
        last_modified_ms: 1,
        meta: Default::default(),
    };
    changed.update(0xbeef, &first.clock().clone(), Mutation::Put(content)).unwrap();
    merge_into(nodes[0], partition, "k", &changed);
    // A quorum read answers (it merges) but repairs nothing.
    let r = client().get(c.node(0).url("/store/k")).send().unwrap();
    assert!(r.status().is_success());
    let healed = poll(Duration::from_secs(5), Duration::from_millis(200), || {
        nodes[1..].iter().all(|n| copy_on(n, partition, "k").as_ref() == Some(&changed)).then_some(())
    });
    assert!(healed.is_none(), "the divergence was repaired with anti-entropy and read repair off");
}

/// Runs `vinzclortho bench` (the same binary) against every node of `c`
/// and returns its JSON report.
fn bench(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let nodes: Vec<String> = c.running().map(|n| n.http.clone()).collect();
    let out = std::process::Command::new(common::BIN)
        .args(["bench", "--nodes", &nodes.join(","), "--json", "-q", "--seed", "1"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Kills node `i`, deletes every object from its store (its identity
/// stays), restarts it; returns how many objects it held.
fn wipe_objects(c: &mut Cluster, i: usize, partitions: u32) -> usize {
    let (http, cluster) = c.kill9(i);
    let mut removed = 0;
    {
        let store =
            RocksStore::open(&c.data_dir(i), &RocksOptions { sync_writes: false, ..RocksOptions::default() }).unwrap();
        for p in 0..partitions {
            let keys: Vec<ObjectKey> = store.scan_partition(p).unwrap().map(|e| e.unwrap().0).collect();
            for k in &keys {
                store.remove(p, k).unwrap();
            }
            removed += keys.len();
        }
    }
    c.restart(i, &http, &cluster);
    removed
}

/// Objects node `i` holds, counted exactly (it is stopped for the count
/// and restarted).
fn count_objects(c: &mut Cluster, i: usize, partitions: u32) -> usize {
    let (http, cluster) = c.kill9(i);
    let count = {
        let store =
            RocksStore::open(&c.data_dir(i), &RocksOptions { sync_writes: false, ..RocksOptions::default() }).unwrap();
        (0..partitions).map(|p| store.scan_partition(p).unwrap().count()).sum()
    };
    c.restart(i, &http, &cluster);
    count
}

fn latency(report: &serde_json::Value) -> String {
    let o = &report["overall"];
    format!(
        "{:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
        o["ops_per_s"].as_f64().unwrap(),
        o["latency_ms"]["p50"].as_f64().unwrap(),
        o["latency_ms"]["p99"].as_f64().unwrap(),
        o["errors"]
    )
}

/// The measurement docs/performance.md records (not a timed test):
/// a 3-node cluster (N=3: every node holds every key) with 100,000 keys,
/// read repair off; one node's objects are deleted (identity kept) and the
/// time until anti-entropy alone has put all 100,000 back is measured;
/// then request latency with `vinzclortho bench` while idle and while
/// anti-entropy repairs a second wipe.
///
/// `AAE_INTERVAL_MS=1000 AAE_KEYS=100000 cargo test --release --test anti_entropy -- --ignored --nocapture measure`
#[test]
#[ignore]
fn measure_wiped_node_repair_and_latency() {
    let _serial = serial();
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (keys, interval_ms, repairs) =
        (env("AAE_KEYS", 100_000), env("AAE_INTERVAL_MS", 1000), env("AAE_REPAIRS_PER_SECOND", 1000));
    const P: u32 = 64;
    let (interval, repairs) = (interval_ms.to_string(), repairs.to_string());
    let args = [
        "-p",
        "64",
        "--gossip-interval-ms",
        "200",
        "--failure-timeout-ms",
        "2000",
        "--read-repair=false",
        "--anti-entropy-interval-ms",
        &interval,
        "--anti-entropy-repairs-per-second",
        &repairs,
    ];
    let mut c = Cluster::start_with(64, 3, &args);
    let keys_arg = keys.to_string();
    let preload = bench(&c, &["--keys", &keys_arg, "--preload", "--ops", "1", "--mix", "read=100"]);
    println!("measure: preloaded {keys} keys in {:.1} s", preload["preload"]["elapsed_s"].as_f64().unwrap());
    let held = count_objects(&mut c, 2, P);
    assert_eq!(held as u64, keys, "node 2 holds every key before the wipe");
    c.wait_converged(Duration::from_secs(60));

    // Repair time, no load.
    let removed = wipe_objects(&mut c, 2, P);
    let started = std::time::Instant::now();
    c.wait_converged(Duration::from_secs(60));
    // Done when node 2's object count (a RocksDB estimate) is back, or,
    // should the estimate lag, once repairs stopped for 10 s; the exact
    // count below says which.
    let (mut last, mut last_change) = (0, std::time::Instant::now());
    let repair_s = wait_for("node 2 to hold every key again", Duration::from_secs(3600), || {
        let objects = status(c.node(2))?["storage"]["objects"].as_u64()?;
        let repaired: u64 = c.running().filter_map(|n| anti_entropy(n)["keys_repaired"].as_u64()).sum();
        if repaired != last {
            (last, last_change) = (repaired, std::time::Instant::now());
        }
        if objects >= keys {
            return Some(started.elapsed().as_secs_f64());
        }
        (repaired > 0 && last_change.elapsed() > Duration::from_secs(10)).then(|| (last_change - started).as_secs_f64())
    });
    let repaired: u64 = c.running().map(|n| anti_entropy(n)["keys_repaired"].as_u64().unwrap()).sum();
    let back = count_objects(&mut c, 2, P);
    println!(
        "measure: wiped {removed} objects; anti-entropy alone put back {back} in {repair_s:.1} s \
         (interval {interval_ms} ms, {P} partitions, {repairs} repairs/s per node; {repaired} key repairs in all)"
    );
    c.wait_converged(Duration::from_secs(60));

    // Latency idle, then during the repair of another wipe, three times in
    // turn (this machine is shared: alternating shows what is noise).
    let load = ["--duration", "15", "-c", "16", "--keys", &keys_arg, "--mix", "read=90,write=10"];
    let repaired =
        |c: &Cluster| -> u64 { c.running().map(|n| anti_entropy(n)["keys_repaired"].as_u64().unwrap()).sum() };
    for round in 1..=3 {
        let idle = bench(&c, &load);
        println!("measure: round {round} idle:                {}", latency(&idle));
        wipe_objects(&mut c, 2, P);
        c.wait_converged(Duration::from_secs(60));
        let before = repaired(&c);
        let during = bench(&c, &load);
        let meanwhile = repaired(&c) - before;
        println!(
            "measure: round {round} during anti-entropy: {} ({meanwhile} keys repaired meanwhile)",
            latency(&during)
        );
        wait_for("the repair to finish", Duration::from_secs(3600), || {
            let objects = status(c.node(2))?["storage"]["objects"].as_u64()?;
            (objects >= keys).then_some(())
        });
    }
}
