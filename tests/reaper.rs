//! Tombstone reaping with real node processes (5 nodes, N=3, a 1.5 s
//! grace): a deleted key's tombstone leaves every primary once all of them
//! hold it and the grace has passed, never while a primary is down; and a
//! reaped key does not come back when its pre-delete copy arrives late, by
//! a direct merge or by hinted handoff. A write after the reap is a fresh
//! value. Reap records move with a partition to a node that joins. Clock
//! hygiene: clocks grown by restarts are pruned, and stale copies stay
//! superseded. Each replica's copy is read with `/admin/replicas/{key}` (no
//! quorum, no repair) and the raw copy with the Replica gRPC Get.
//!
//! One cluster at a time (a lock): five processes each, on two cores.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Cluster, FAST, NodeProc, client, status, wait_for};
use reqwest::StatusCode;
use serde_json::Value;
use vinzclortho::core::key::ObjectKey;
use vinzclortho::core::object::Object;
use vinzclortho::rpc::convert::{key_to_pb, object_from_pb, object_to_pb};
use vinzclortho::rpc::pb;
use vinzclortho::rpc::pb::replica_client::ReplicaClient;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const CTX: &str = "x-vinzclortho-context";
const GRACE: Duration = Duration::from_millis(1500);
const DEADLINE: Duration = Duration::from_secs(30);

fn args() -> Vec<&'static str> {
    let mut args = FAST.to_vec();
    args.extend_from_slice(&["--tombstone-grace-ms", "1500", "--reaped-retention-ms", "600000"]);
    args
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The key's partition and its primaries' HTTP addresses, in preference-list order.
fn preflist(node: &NodeProc, key: &str) -> (u32, Vec<String>) {
    let p: Value = client().get(node.url(&format!("/admin/preflist/{key}"))).send().unwrap().json().unwrap();
    let holders = p["preflist"].as_array().unwrap().iter().map(|e| e["node"].as_str().unwrap().to_owned()).collect();
    (p["partition"].as_u64().unwrap() as u32, holders)
}

fn index_of(c: &Cluster, http: &str) -> usize {
    c.nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.http == http)).unwrap()
}

/// What each primary holds per `/admin/replicas`: `None` if it did not
/// answer, else its siblings as (deleted) flags; absent is an empty list.
fn copies(via: &NodeProc, key: &str) -> Vec<(String, Option<Vec<bool>>)> {
    let report: Value = client().get(via.url(&format!("/admin/replicas/{key}"))).send().unwrap().json().unwrap();
    report["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["primary"] == true)
        .map(|r| {
            let siblings = (r["answered"] == true)
                .then(|| r["siblings"].as_array().unwrap().iter().map(|s| s["deleted"].as_bool().unwrap()).collect());
            (r["node"].as_str().unwrap().to_owned(), siblings)
        })
        .collect()
}

fn absent_on_every_primary(via: &NodeProc, key: &str) -> bool {
    let copies = copies(via, key);
    copies.len() == 3 && copies.iter().all(|(_, s)| s.as_deref() == Some(&[]))
}

/// The object `node` itself holds (Replica gRPC Get: no quorum, no repair).
fn copy_on(node: &NodeProc, partition: u32, key: &str) -> Object {
    let request = node.member_request(pb::GetRequest {
        with_history: false,
        digest: false,
        caller: None,
        partition,
        key: Some(key_to_pb(&ObjectKey::in_default_bucket(key.to_owned()))),
    });
    runtime().block_on(async {
        let mut c = ReplicaClient::connect(format!("http://{}", node.cluster)).await.unwrap();
        object_from_pb(c.get(request).await.unwrap().into_inner().object.unwrap_or_default()).unwrap()
    })
}

/// Sends `object` to `node` alone with a Replica/Merge call, as a late
/// replica, a transfer or a fallback (`hint_target` set) would.
// `..Default::default()` keeps this compiling when the message gains fields.
#[allow(clippy::needless_update)]
fn merge_into(node: &NodeProc, partition: u32, key: &str, object: &Object, hint_target: &str) {
    let request = node.member_request(pb::MergeRequest {
        caller: None,
        partition,
        key: Some(key_to_pb(&ObjectKey::in_default_bucket(key.to_owned()))),
        object: Some(object_to_pb(object)),
        hint_target: hint_target.to_owned(),
        ..Default::default()
    });
    runtime().block_on(async {
        let mut c = ReplicaClient::connect(format!("http://{}", node.cluster)).await.unwrap();
        c.merge(request).await.unwrap();
    });
}

fn get(node: &NodeProc, key: &str) -> reqwest::blocking::Response {
    client().get(node.url(&format!("/store/{key}"))).send().unwrap()
}

fn put(node: &NodeProc, key: &str, value: &str) {
    let r = client().put(node.url(&format!("/store/{key}"))).body(value.to_owned()).send().unwrap();
    assert!(r.status().is_success(), "PUT {key}: {}", r.status());
}

fn delete(node: &NodeProc, key: &str) {
    let ctx = get(node, key).headers()[CTX].to_str().unwrap().to_owned();
    let r = client().delete(node.url(&format!("/store/{key}"))).header(CTX, ctx).send().unwrap();
    assert!(r.status().is_success(), "DELETE {key}: {}", r.status());
}

fn keys_reaped(c: &Cluster) -> u64 {
    c.running().map(|n| status(n).unwrap()["reaper"]["keys_reaped"].as_u64().unwrap()).sum()
}

#[test]
fn a_tombstone_is_reaped_from_every_primary_only_once_all_hold_it_and_never_comes_back() {
    let _serial = serial();
    let started = Instant::now();
    let mut c = Cluster::start_with(71, 5, &args());
    let key = "doomed";
    put(c.node(0), key, "v1");
    let (partition, primaries) = preflist(c.node(0), key);
    assert_eq!(primaries.len(), 3);
    let first = index_of(&c, &primaries[0]);
    let old = copy_on(c.node(first), partition, key);
    assert!(!old.siblings().is_empty(), "the first primary holds v1");

    // A primary other than the reaping one is down while the key is
    // deleted: the tombstone must outlive the grace on the others.
    let away = index_of(&c, &primaries[1]);
    let (away_http, away_cluster) = c.kill9(away);
    let via = (0..5).find(|&i| i != away && i != first).unwrap();
    wait_for("the primary to be seen down", DEADLINE, || {
        let s = status(c.node(via))?;
        let members = s["members"].as_array()?;
        members.iter().any(|m| m["address"] == away_http.as_str() && m["status"] == "down").then_some(())
    });
    delete(c.node(via), key);
    std::thread::sleep(GRACE * 3);
    let held: Vec<_> = copies(c.node(via), key).into_iter().filter(|(_, s)| s.is_some()).collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|(_, s)| s.as_deref() == Some(&[true])), "reaped while a primary was down: {held:?}");
    assert_eq!(keys_reaped(&c), 0);

    // Back: the hint brings it the tombstone, then the reaper takes the
    // tombstone from all three.
    c.restart(away, &away_http, &away_cluster);
    wait_for("the tombstone to be reaped from every primary", DEADLINE, || {
        absent_on_every_primary(c.node(via), key).then_some(())
    });
    assert_eq!(keys_reaped(&c), 1);
    assert_eq!(get(c.node(via), key).status(), StatusCode::NOT_FOUND);

    // The pre-delete copy, merged straight into every primary (a replica
    // or transfer that missed the delete): dropped, not resurrected.
    for p in &primaries {
        merge_into(c.node(index_of(&c, p)), partition, key, &old, "");
    }
    assert!(absent_on_every_primary(c.node(via), key), "{:?}", copies(c.node(via), key));
    assert_eq!(get(c.node(via), key).status(), StatusCode::NOT_FOUND);

    // The same copy held by a fallback with a hint for the first primary:
    // delivered after the reap, and dropped there too.
    let fallback = (0..5).find(|&i| !primaries.contains(&c.node(i).http)).unwrap();
    let target_id = status(c.node(first)).unwrap()["node_id"].as_str().unwrap().to_owned();
    merge_into(c.node(fallback), partition, key, &old, &target_id);
    assert!(!copy_on(c.node(fallback), partition, key).is_empty());
    // Once delivered, the fallback drops its copy (it holds no part of the key).
    wait_for("the hint to be delivered", DEADLINE, || {
        copy_on(c.node(fallback), partition, key).is_empty().then_some(())
    });
    assert!(copy_on(c.node(first), partition, key).is_empty(), "the hinted old copy came back");
    assert!(absent_on_every_primary(c.node(via), key), "{:?}", copies(c.node(via), key));
    assert_eq!(get(c.node(via), key).status(), StatusCode::NOT_FOUND);

    // A write after the reap, with no context: a fresh value, alone.
    put(c.node(via), key, "v2");
    let r = get(c.node(via), key);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().unwrap(), "v2");
    let stored = wait_for("v2 on the first primary", DEADLINE, || {
        Some(copy_on(c.node(first), partition, key)).filter(|o| !o.is_empty())
    });
    assert_eq!(stored.siblings().len(), 1);
    // It supersedes the old dots instead of reusing them: the old copy,
    // merged again, changes nothing (the old clock is in the key's record,
    // beside v2, not in v2's clock).
    assert!(!old.clock().covers(stored.siblings()[0].dot));
    merge_into(c.node(first), partition, key, &old, "");
    assert_eq!(copy_on(c.node(first), partition, key), stored);
    eprintln!("reaper test took {:?}", started.elapsed());
}

/// Reap records move with their partition: keys deleted and reaped on four
/// nodes, then a fifth joins and takes partitions over; each key's
/// pre-delete copy, merged into the new holder afterwards (a replica that
/// missed the delete, back after the ring change), stays deleted there.
#[test]
fn reaped_keys_stay_deleted_on_their_partitions_new_holder_after_a_join() {
    let _serial = serial();
    let mut c = Cluster::start_with(75, 4, &args());
    let keys: Vec<String> = (0..24).map(|i| format!("moved{i}")).collect();
    let mut olds = Vec::new();
    for key in &keys {
        put(c.node(0), key, "v1");
        let (partition, primaries) = preflist(c.node(0), key);
        let first = index_of(&c, &primaries[0]);
        olds.push(wait_for("v1 on the first primary", DEADLINE, || {
            Some(copy_on(c.node(first), partition, key)).filter(|o| !o.is_empty())
        }));
        delete(c.node(0), key);
    }
    wait_for("every key reaped", DEADLINE, || keys.iter().all(|k| absent_on_every_primary(c.node(0), k)).then_some(()));

    let new = c.add();
    c.wait_converged(Duration::from_secs(60));
    let new_http = c.node(new).http.clone();
    let mut moved = 0;
    for (key, old) in keys.iter().zip(&olds) {
        let (partition, primaries) = preflist(c.node(0), key);
        if !primaries.contains(&new_http) {
            continue;
        }
        moved += 1;
        merge_into(c.node(new), partition, key, old, "");
        assert!(copy_on(c.node(new), partition, key).is_empty(), "{key} came back on the new holder");
        assert_eq!(get(c.node(new), key).status(), StatusCode::NOT_FOUND, "{key}");
    }
    assert!(moved > 0, "no key's partition moved to the new node");
}

fn put_with(node: &NodeProc, key: &str, value: &str, context: Option<&str>) {
    let mut request = client().put(node.url(&format!("/store/{key}"))).body(value.to_owned());
    if let Some(context) = context {
        request = request.header(CTX, context);
    }
    let r = request.send().unwrap();
    assert!(r.status().is_success(), "PUT {key}: {}", r.status());
}

fn context_of(node: &NodeProc, key: &str) -> String {
    get(node, key).headers()[CTX].to_str().unwrap().to_owned()
}

fn pruned_entries(c: &Cluster) -> u64 {
    c.running().map(|n| status(n).unwrap()["reaper"]["clock_entries_pruned"].as_u64().unwrap()).sum()
}

/// Clock hygiene on three real nodes (N=3, at most 2 clock entries): a
/// key written through each node, across restarts (a new actor per run),
/// gets its clock pruned on every primary; the first value's copy, merged
/// into each primary late, stays superseded (never a sibling); a PUT with
/// the context read before the prune still replaces the value; and the
/// clock is back within the limit afterwards.
#[test]
fn clocks_are_pruned_across_restarts_and_stale_copies_stay_superseded() {
    let _serial = serial();
    let mut args = FAST.to_vec();
    // Passes every 2 s: the context read right after the last write is
    // almost always from before the prune (checked below).
    args.extend_from_slice(&["--tombstone-grace-ms", "8000", "--reaped-retention-ms", "600000"]);
    args.extend_from_slice(&["--max-clock-entries", "2"]);
    let mut c = Cluster::start_with(74, 3, &args);
    let key = "grown";
    put_with(c.node(0), key, "v0", None);
    let (partition, primaries) = preflist(c.node(0), key);
    assert_eq!(primaries.len(), 3);
    let first = index_of(&c, &primaries[0]);
    let old = wait_for("v0 on the first primary", DEADLINE, || {
        Some(copy_on(c.node(first), partition, key)).filter(|o| !o.is_empty())
    });
    // Writes through every node, two of them restarted first: new actors.
    // The first primary's copy after each is kept, to come back late.
    let mut stale = vec![old.clone()];
    for (round, i) in [1, 2, 0, 1].into_iter().enumerate() {
        if round >= 2 {
            let (http, cluster) = c.kill9(i);
            c.restart(i, &http, &cluster);
        }
        let context = context_of(c.node(i), key);
        put_with(c.node(i), key, &format!("v{}", round + 1), Some(&context));
        stale.push(copy_on(c.node(first), partition, key));
    }
    // Read right after the last write: from before the prune, unless a
    // pass of the reaper came first (a restarted node starts one at once).
    let before_prune = context_of(c.node(2), key);

    let mut seen = String::new();
    let pruned = wait_for("the clock to be pruned on every primary", DEADLINE, || {
        // A read of every replica repairs one that missed a write while
        // its node restarted (the prune waits for identical copies).
        get(c.node(0), &format!("{key}?r=all"));
        let copies: Vec<Object> = (0..3).map(|i| copy_on(c.node(i), partition, key)).collect();
        let same = copies.windows(2).all(|w| w[0] == w[1]);
        // For a failure's diagnosis: each change of (clock sizes, pruned).
        let now = format!("{:?} {}", copies.iter().map(|o| o.clock().len()).collect::<Vec<_>>(), pruned_entries(&c));
        if now != seen {
            eprintln!("clock entries per node, entries pruned: {now}");
            seen = now;
        }
        (same && copies[0].clock().len() <= 2 && pruned_entries(&c) > 0).then(|| copies[0].clone())
    });
    assert_eq!(pruned.siblings().len(), 1);

    // Every earlier copy (v0 to v4, pruned or not) merged late into every
    // primary: superseded, never a sibling of v4.
    for i in 0..3 {
        for copy in &stale {
            merge_into(c.node(i), partition, key, copy, "");
        }
        assert_eq!(copy_on(c.node(i), partition, key), pruned, "node {i}");
    }
    let r = get(c.node(0), key);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().unwrap(), "v4");

    // A PUT with the context read before the prune replaces v4.
    put_with(c.node(1), key, "v5", Some(&before_prune));
    let r = get(c.node(0), key);
    assert_eq!(r.status(), StatusCode::OK, "v5 must replace v4, not be its sibling");
    assert_eq!(r.text().unwrap(), "v5");
    wait_for("the clock back within the limit", DEADLINE, || {
        (0..3).all(|i| copy_on(c.node(i), partition, key).clock().len() <= 2).then_some(())
    });
}

/// `Replica/Reap` refuses what it cannot act on with INVALID_ARGUMENT, and
/// reaps nothing but the exact tombstone it is told of.
#[test]
fn reap_calls_are_checked_and_reap_only_the_exact_tombstone() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&dir.path().join("node"), &["-a", "127.0.0.72:0", "--cluster-address", "127.0.0.72:0"]);
    let key = "one";
    put(&node, key, "v1");
    let (partition, _) = preflist(&node, key);
    let live = copy_on(&node, partition, key);
    let reap = |key: Option<&str>, clock: &vinzclortho::core::vclock::VersionVector| {
        #[allow(clippy::needless_update)]
        let request = node.member_request(pb::ReapRequest {
            partition,
            key: key.map(|k| key_to_pb(&ObjectKey::in_default_bucket(k.to_owned()))),
            clock: vinzclortho::rpc::convert::clock_to_pb(clock),
            caller: None,
            ..Default::default()
        });
        runtime().block_on(async {
            let mut c = ReplicaClient::connect(format!("http://{}", node.cluster)).await.unwrap();
            c.reap(request).await.map(|r| r.into_inner().reaped)
        })
    };
    let no_clock = reap(Some(key), &Default::default()).unwrap_err();
    assert_eq!(no_clock.code(), tonic::Code::InvalidArgument, "{no_clock:?}");
    let no_key = reap(None, live.clock()).unwrap_err();
    assert_eq!(no_key.code(), tonic::Code::InvalidArgument, "{no_key:?}");
    // A live value is not a tombstone: kept.
    assert!(!reap(Some(key), live.clock()).unwrap());
    assert_eq!(get(&node, key).status(), StatusCode::OK);
    delete(&node, key);
    let tombstone = copy_on(&node, partition, key);
    assert!(tombstone.is_tombstone());
    // Another clock than the stored one (a write landed since): kept.
    let other = tombstone.clock().clone().merged(&vinzclortho::core::vclock::VersionVector::from_entries([(7, 1)]));
    assert!(!reap(Some(key), &other).unwrap());
    assert!(copy_on(&node, partition, key).is_tombstone());
    assert!(reap(Some(key), tombstone.clock()).unwrap());
    assert!(copy_on(&node, partition, key).is_empty());
}
