//! Real multi-process clusters on 127.0.x.y: replication, quorums, siblings
//! across nodes, crashes, read repair, joins with data transfer.
//!
//! Cluster tests run one at a time (a lock): each starts several processes,
//! and this machine has two cores.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Cluster, client, status, wait_for};
use reqwest::StatusCode;
use vinzclortho::rpc::pb;
use vinzclortho::rpc::pb::replica_client::ReplicaClient;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const CTX: &str = "x-vinzclortho-context";

fn put(url: &str, value: &str) -> reqwest::blocking::Response {
    client().put(url).body(value.to_owned()).send().unwrap()
}

fn get_text(url: &str) -> (StatusCode, String) {
    let r = client().get(url).send().unwrap();
    (r.status(), r.text().unwrap())
}

/// The object one replica holds, read over gRPC (bypassing quorums).
fn replica_values(node: &common::NodeProc, key: &str, partition: u32) -> Vec<String> {
    let req = node.member_request(pb::GetRequest {
        with_history: false,
        digest: false,
        caller: None,
        partition,
        key: Some(vinzclortho::rpc::convert::key_to_pb(&vinzclortho::core::key::ObjectKey::in_default_bucket(
            key.to_owned(),
        ))),
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = ReplicaClient::connect(format!("http://{}", node.cluster)).await.unwrap();
        let object = c.get(req).await.unwrap().into_inner().object.unwrap_or_default();
        object.siblings.into_iter().map(|s| String::from_utf8(s.value.to_vec()).unwrap()).collect()
    })
}

fn partition_of(node: &common::NodeProc, key: &str) -> u32 {
    let v: serde_json::Value =
        client().get(node.url(&format!("/admin/preflist/{key}"))).send().unwrap().json().unwrap();
    v["partition"].as_u64().unwrap() as u32
}

#[test]
fn a_write_on_one_node_is_read_from_every_node() {
    let _serial = serial();
    let c = Cluster::start(11, 3);
    let r = put(&c.node(0).url("/store/greeting"), "hello");
    assert_eq!(r.status(), StatusCode::OK);
    for i in 0..3 {
        assert_eq!(get_text(&c.node(i).url("/store/greeting")), (StatusCode::OK, "hello".into()), "node {i}");
    }
    // Every node is a replica of every key with N=3 on three nodes.
    let p = partition_of(c.node(0), "greeting");
    for node in c.running() {
        wait_for("replication to every node", Duration::from_secs(10), || {
            (replica_values(node, "greeting", p) == ["hello"]).then_some(())
        });
    }
    let s = status(c.node(1)).unwrap();
    assert_eq!(s["members"].as_array().unwrap().len(), 3);
    assert_eq!(s["under_replicated"], false);
}

#[test]
fn preflist_lists_n_distinct_nodes() {
    let _serial = serial();
    let c = Cluster::start(12, 4);
    let v: serde_json::Value =
        client().get(c.node(2).url("/admin/preflist/some%20key")).send().unwrap().json().unwrap();
    let list = v["preflist"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let mut nodes: Vec<&str> = list.iter().map(|e| e["node"].as_str().unwrap()).collect();
    assert_eq!(list[0]["partition"], v["partition"]);
    assert!(list.iter().all(|e| e["primary"] == true));
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "{v}");
}

#[test]
fn concurrent_writes_through_different_nodes_become_siblings() {
    let _serial = serial();
    let c = Cluster::start(13, 3);
    assert_eq!(put(&c.node(0).url("/store/k"), "from-a").status(), StatusCode::OK);
    assert_eq!(put(&c.node(1).url("/store/k"), "from-b").status(), StatusCode::OK);
    let r = client().get(c.node(2).url("/store/k")).send().unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    let ctx = r.headers()[CTX].to_str().unwrap().to_owned();
    let body = r.text().unwrap();
    assert!(body.contains("from-a") && body.contains("from-b"), "{body}");
    // Resolving through a third node with the context leaves one value.
    let r = client().put(c.node(2).url("/store/k")).header(CTX, &ctx).body("resolved").send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for i in 0..3 {
        assert_eq!(get_text(&c.node(i).url("/store/k")), (StatusCode::OK, "resolved".into()));
    }
}

#[test]
fn writes_keep_succeeding_while_a_node_is_killed() {
    let _serial = serial();
    let mut c = Cluster::start(14, 3);
    let urls: Vec<String> = (0..2).map(|i| c.node(i).url("/store/")).collect();
    let writer = std::thread::spawn(move || {
        let http = client();
        let mut failures = Vec::new();
        for i in 0..300 {
            let url = format!("{}key{i}", urls[i % 2]);
            let r = http.put(&url).body(format!("v{i}")).send().unwrap();
            if r.status() != StatusCode::OK {
                failures.push((i, r.status(), r.text().unwrap()));
            }
        }
        failures
    });
    // Kill the third node while the writes run.
    wait_for("some writes", Duration::from_secs(20), || {
        (get_text(&c.node(0).url("/store/key20")).0 == StatusCode::OK).then_some(())
    });
    c.kill9(2);
    let failures = writer.join().unwrap();
    assert!(failures.is_empty(), "writes failed at W=2 with one node down: {failures:?}");
    for i in 0..300 {
        assert_eq!(get_text(&c.node(i % 2).url(&format!("/store/key{i}"))), (StatusCode::OK, format!("v{i}")));
    }
    // The survivors see the dead node as down.
    wait_for("node 2 marked down", Duration::from_secs(10), || {
        let s = status(c.node(0))?;
        let dead = s["members"]
            .as_array()?
            .iter()
            .find(|m| m["address"].as_str().is_some_and(|a| a.starts_with("127.0.14.3")))?
            .clone();
        (dead["status"] == "down").then_some(())
    });
}

#[test]
fn all_replicas_quorum_fails_fast_with_a_node_down() {
    let _serial = serial();
    let mut c = Cluster::start(15, 3);
    put(&c.node(0).url("/store/k"), "v");
    c.kill9(2);
    let started = Instant::now();
    let r = client().get(c.node(0).url("/store/k?r=3")).send().unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().unwrap();
    assert!(body.contains("needed 3 of 3"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "503 within the request timeout");
    let r = client().put(c.node(1).url("/store/k?w=3")).body("w").send().unwrap();
    let (status, body) = (r.status(), r.text().unwrap());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("write quorum not met"), "{body}");
    // R=2 still works. The failed write may still have landed on the two
    // live replicas (a 503 means "not acknowledged", not "not applied"), so
    // the key may now have both values as siblings.
    let (status, body) = get_text(&c.node(1).url("/store/k"));
    assert!(status == StatusCode::OK || status == StatusCode::MULTIPLE_CHOICES, "{status}: {body}");
    assert!(body.contains('v'), "{body}");
}

#[test]
fn read_repair_brings_a_restarted_node_up_to_date() {
    let _serial = serial();
    let mut c = Cluster::start(16, 3);
    let (http, cluster) = c.kill9(2);
    assert_eq!(put(&c.node(0).url("/store/missed"), "while-down").status(), StatusCode::OK);
    c.restart(2, &http, &cluster);
    c.wait_converged(Duration::from_secs(30));
    let p = partition_of(c.node(0), "missed");
    assert_eq!(c.node(2).cluster, cluster);
    assert!(replica_values(c.node(2), "missed", p).is_empty(), "the restarted node missed the write");
    // A quorum read through any node repairs the stale replica.
    assert_eq!(get_text(&c.node(0).url("/store/missed?r=3")), (StatusCode::OK, "while-down".into()));
    wait_for("read repair of node 2", Duration::from_secs(10), || {
        (replica_values(c.node(2), "missed", p) == ["while-down"]).then_some(())
    });
}

#[test]
fn a_fourth_node_joins_takes_partitions_and_keeps_every_key_readable() {
    let _serial = serial();
    let mut c = Cluster::start(17, 3);
    for i in 0..200 {
        assert_eq!(put(&c.node(i % 3).url(&format!("/store/k{i}")), &format!("v{i}")).status(), StatusCode::OK);
    }
    // Read and write continuously while the fourth node joins and data moves.
    let urls: Vec<String> = (0..3).map(|i| c.node(i).url("/store/")).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, urls) = (stop.clone(), urls.clone());
        std::thread::spawn(move || {
            let http = client();
            let (mut acked, mut failed) = (Vec::new(), 0);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http.put(format!("{}during{i}", urls[i % 3])).body(format!("d{i}")).send().unwrap();
                if r.status() == StatusCode::OK {
                    acked.push(i)
                } else {
                    failed += 1
                }
                i += 1;
            }
            (acked, failed)
        })
    };
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let http = client();
            let (mut reads, mut bad) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = reads % 200;
                let r = http.get(format!("{}k{i}", urls[reads % 3])).send().unwrap();
                let status = r.status();
                let body = r.text().unwrap();
                if status != StatusCode::OK || body != format!("v{i}") {
                    bad.push((i, status, body));
                }
                reads += 1;
            }
            (reads, bad)
        })
    };
    let d = c.add();
    c.wait_converged(Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, bad) = reader.join().unwrap();
    assert!(
        bad.is_empty(),
        "{} of {reads} reads during the join were wrong: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let (acked, failed) = writer.join().unwrap();
    assert_eq!(failed, 0, "writes failed during the join");
    assert!(acked.len() > 10, "only {} writes during the join", acked.len());
    // Replica by replica (through gRPC, which bypasses quorums), every write
    // acknowledged during the move is on at least W = 2 of its holders in
    // the new ring without help from read repair: the copy to incoming
    // holders and the handoff sweep carry writes that raced with the
    // transfer. The third copy is best effort (a merge that misses its
    // deadline under load is dropped) until anti-entropy exists.
    let holders_with = |i: usize| -> Option<(usize, usize)> {
        let key = format!("during{i}");
        let v: serde_json::Value =
            client().get(c.node(0).url(&format!("/admin/preflist/{key}"))).send().ok()?.json().ok()?;
        let p = v["partition"].as_u64()? as u32;
        let entries = v["preflist"].as_array()?;
        let mut with = 0;
        for entry in entries {
            let holder = c.running().find(|n| entry["node"] == n.http.as_str())?;
            with += usize::from(replica_values(holder, &key, p) == [format!("d{i}")]);
        }
        Some((with, entries.len()))
    };
    wait_for("W holders of every write made during the move", Duration::from_secs(20), || {
        acked.iter().all(|&i| holders_with(i).is_some_and(|(with, _)| with >= 2)).then_some(())
    });
    // Every write acknowledged during the move is readable from every node,
    // the newcomer included, once the move is over.
    for i in &acked {
        for n in 0..4 {
            assert_eq!(
                get_text(&c.node(n).url(&format!("/store/during{i}"))),
                (StatusCode::OK, format!("d{i}")),
                "during{i} via {n}"
            );
        }
    }
    // Those reads repaired any holder the third copy missed.
    wait_for("every holder to have every write made during the move", Duration::from_secs(20), || {
        acked.iter().all(|&i| holders_with(i).is_some_and(|(with, all)| with == all)).then_some(())
    });
    let s = status(c.node(d)).unwrap();
    assert_eq!(s["claim"], 4, "16 partitions over 4 nodes");
    // The move is logged as one summary line per sending node, not a line
    // per partition (those are at debug).
    let mut summarised = 0;
    for n in 0..3 {
        let log = std::fs::read_to_string(&c.node(n).stderr_path).unwrap();
        for per_partition in ["partition transferred", "pushed partition"] {
            assert!(!log.contains(per_partition), "node {n} logged {per_partition:?} at info:\n{log}");
        }
        // Each join of the cluster's formation was a move too: one line each.
        let summaries: Vec<&str> = log.lines().filter(|l| l.contains("move: this node's transfers are done")).collect();
        let epochs: std::collections::BTreeSet<&str> =
            summaries.iter().filter_map(|l| l.split_whitespace().find(|w| w.starts_with("epoch="))).collect();
        assert_eq!(epochs.len(), summaries.len(), "node {n}: one summary per move: {summaries:?}");
        summarised += summaries.iter().filter(|l| !l.contains("(0 objects") && l.contains(" bytes) in ")).count();
    }
    assert!(summarised >= 1, "the nodes that sent objects to the newcomer say so");
    for i in 0..200 {
        for n in 0..4 {
            assert_eq!(
                get_text(&c.node(n).url(&format!("/store/k{i}"))),
                (StatusCode::OK, format!("v{i}")),
                "k{i} via {n}"
            );
        }
    }
    // The newcomer holds the keys of its partitions itself.
    let holding = (0..200)
        .filter(|i| {
            let key = format!("k{i}");
            let p = partition_of(c.node(0), &key);
            !replica_values(c.node(d), &key, p).is_empty()
        })
        .count();
    // N=3 over 4 nodes: each holds about 3/4 of the keys (a ring that
    // crowded one node's partitions together once gave the newcomer all).
    assert!((115..=185).contains(&holding), "node 3 holds {holding} of 200 keys (expected about 150)");
    // The old holders counted what they sent: objects, and bytes on the wire
    // (each object carries at least its key, value and clock).
    let counter = |n: usize, name: &str| -> f64 {
        let text = client().get(c.node(n).url("/metrics")).send().unwrap().text().unwrap();
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    let objects: f64 = (0..3).map(|n| counter(n, "vinzclortho_partition_transfer_objects_total{kind=\"move\"}")).sum();
    let bytes: f64 = (0..3).map(|n| counter(n, "vinzclortho_partition_transfer_bytes_total{kind=\"move\"}")).sum();
    assert!(objects >= holding as f64, "{objects} objects moved, but node 3 holds {holding} keys");
    assert!(bytes >= objects * 8.0, "{bytes} bytes sent for {objects} objects");
}

#[test]
fn eight_nodes_converge() {
    let _serial = serial();
    let started = Instant::now();
    let c = Cluster::start(18, 8);
    let took = started.elapsed();
    eprintln!("8 nodes started and converged in {took:?}");
    let claims: Vec<u64> = c.running().map(|n| status(n).unwrap()["claim"].as_u64().unwrap()).collect();
    assert_eq!(claims.iter().sum::<u64>(), 16);
    assert!(claims.iter().all(|c| *c == 2), "{claims:?}");
    put(&c.node(7).url("/store/x"), "y");
    assert_eq!(get_text(&c.node(0).url("/store/x")), (StatusCode::OK, "y".into()));
}

#[test]
fn a_peer_of_another_protocol_version_or_cluster_is_refused() {
    let _serial = serial();
    let c = Cluster::start(20, 1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    use vinzclortho::rpc::membership_pb as m;
    let node = c.node(0);
    // Warm the identity headers outside async code (they ask /admin/status).
    let _ = node.member_request(());
    rt.block_on(async {
        let mut client =
            m::membership_client::MembershipClient::connect(format!("http://{}", c.node(0).cluster)).await.unwrap();
        // GetState is read-only: operators call it without identity headers.
        let state = client.get_state(m::GetStateRequest {}).await.unwrap().into_inner().state.unwrap();
        let err = client
            .gossip(node.member_request(m::GossipRequest {
                protocol_version: 99,
                from: "x".into(),
                state: Some(state.clone()),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("protocol 99"), "{}", err.message());
        let mut other = state.clone();
        other.cluster_id ^= 1;
        let err = client
            .gossip(node.member_request(m::GossipRequest { protocol_version: 1, from: "x".into(), state: Some(other) }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("cluster"), "{}", err.message());
        // Gossip that names no cluster and no node is refused before it is read.
        let bare = m::GossipRequest { protocol_version: 1, from: "x".into(), state: Some(state) };
        let err = client.gossip(bare).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("vc-cluster-id"), "{}", err.message());
    });
}

#[test]
fn a_claim_of_zero_moves_a_nodes_data_away_and_keeps_every_key() {
    let _serial = serial();
    let c = Cluster::start(21, 4);
    for i in 0..150 {
        assert_eq!(put(&c.node(i % 4).url(&format!("/store/c{i}")), &format!("v{i}")).status(), StatusCode::OK);
    }
    let r = client().put(c.node(3).url("/admin/claim")).body("0").send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_for("node 3 to own nothing", Duration::from_secs(60), || {
        c.running()
            .all(|n| {
                status(n).is_some_and(|s| {
                    s["ring"]["moving"] == false
                        && s["members"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|m| m["address"] == c.node(3).http.as_str() && m["claim"] == 0)
                })
            })
            .then_some(())
    });
    assert_eq!(client().get(c.node(3).url("/admin/claim")).send().unwrap().text().unwrap(), "0");
    // Its data was handed over and then dropped: it holds no key now.
    wait_for("node 3 to drop the data it no longer holds", Duration::from_secs(30), || {
        (0..150)
            .all(|i| {
                let key = format!("c{i}");
                replica_values(c.node(3), &key, partition_of(c.node(0), &key)).is_empty()
            })
            .then_some(())
    });
    // Every key is on its three holders, and reads through any node (node 3
    // included: it still coordinates) see it.
    for i in 0..150 {
        let key = format!("c{i}");
        let v: serde_json::Value =
            client().get(c.node(0).url(&format!("/admin/preflist/{key}"))).send().unwrap().json().unwrap();
        let p = v["partition"].as_u64().unwrap() as u32;
        for entry in v["preflist"].as_array().unwrap() {
            let holder = c.running().find(|n| entry["node"] == n.http.as_str()).unwrap();
            assert_eq!(replica_values(holder, &key, p), [format!("v{i}")], "{key} on {}", holder.http);
        }
        for n in 0..4 {
            assert_eq!(get_text(&c.node(n).url(&format!("/store/{key}"))), (StatusCode::OK, format!("v{i}")));
        }
    }
}

#[test]
fn a_node_that_lost_its_disk_rejoins_replaces_itself_and_gets_its_data_back() {
    let _serial = serial();
    let mut c = Cluster::start(22, 3);
    for i in 0..100 {
        assert_eq!(put(&c.node(i % 3).url(&format!("/store/d{i}")), &format!("v{i}")).status(), StatusCode::OK);
    }
    let old_id = status(c.node(2)).unwrap()["node_id"].as_str().unwrap().to_owned();
    c.wipe_and_rejoin(2, 0);
    c.wait_converged(Duration::from_secs(60));
    let s = status(c.node(0)).unwrap();
    let ids: Vec<&str> = s["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "the old incarnation was replaced, not added to: {ids:?}");
    assert!(!ids.contains(&old_id.as_str()), "{old_id} still a member");
    // The new node holds every key again (N=3 on 3 nodes), sent by the
    // nodes that kept theirs, without any read.
    wait_for("the replacement to hold every key", Duration::from_secs(30), || {
        (0..100)
            .all(|i| {
                let key = format!("d{i}");
                replica_values(c.node(2), &key, partition_of(c.node(0), &key)) == [format!("v{i}")]
            })
            .then_some(())
    });
}

#[test]
fn a_replaced_node_that_comes_back_stops_with_a_clear_error() {
    let _serial = serial();
    let mut c = Cluster::start(23, 3);
    let old_id = status(c.node(2)).unwrap()["node_id"].as_str().unwrap().to_owned();
    // Node 2 goes down and is replaced: a new node (an empty data
    // directory, so a new id) joins at its addresses. Its old disk is kept.
    let (http, cluster) = c.kill9(2);
    let kept = c.dir.path().join("node2-kept");
    std::fs::rename(c.data_dir(2), &kept).unwrap();
    let seed = c.node(0).cluster.clone();
    let mut args = vec!["-a", http.as_str(), "--cluster-address", cluster.as_str(), "-j", seed.as_str()];
    args.extend_from_slice(common::FAST);
    c.nodes[2] = Some(common::NodeProc::start(&c.data_dir(2), &args));
    c.wait_converged(Duration::from_secs(60));

    // The old node comes back with its disk, elsewhere; gossip tells it the
    // cluster removed it. It must stop with a clear error, not panic.
    let mut args = vec!["-a", "127.0.23.9:0", "--cluster-address", "127.0.23.9:0"];
    args.extend_from_slice(common::FAST);
    let (exit, log) = match common::NodeProc::try_start(&kept, &args, &[]) {
        Ok(mut old) => {
            let exit = old.wait_exit(Duration::from_secs(30)).expect("the removed node exits by itself");
            (exit.to_string(), std::fs::read_to_string(&old.stderr_path).unwrap())
        }
        // It may learn it before it prints its readiness line.
        Err(log) => ("before readiness".to_owned(), log),
    };
    assert!(!exit.contains("exit status: 0"), "exited {exit}:\n{log}");
    assert!(log.contains(&format!("node {old_id} was removed from the cluster")), "{exit}:\n{log}");
    assert!(log.contains("wipe its data directory"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // The cluster is untouched: three members, the old id not among them.
    c.wait_converged(Duration::from_secs(30));
    let s = status(c.node(0)).unwrap();
    let ids: Vec<&str> = s["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&old_id.as_str()), "{old_id} came back: {ids:?}");
}

#[test]
fn a_copied_data_directory_is_found_and_one_of_the_two_processes_stops() {
    let _serial = serial();
    let mut c = Cluster::start(24, 3);
    for i in 0..30 {
        assert_eq!(put(&c.node(i % 3).url(&format!("/store/k{i}")), &format!("v{i}")).status(), StatusCode::OK);
    }
    let id = status(c.node(2)).unwrap()["node_id"].as_str().unwrap().to_owned();
    // Node 2 stops cleanly; its data directory is copied (a backup, a
    // cloned VM); node 2 comes back, and the copy starts elsewhere. The copy
    // joins nothing: its directory remembers the cluster.
    let node2 = c.nodes[2].take().unwrap();
    let (http, cluster) = (node2.http.clone(), node2.cluster.clone());
    let exit = node2.signal_and_wait("TERM", Duration::from_secs(30)).expect("node 2 stops on SIGTERM");
    assert!(exit.success(), "{exit}");
    let copy_dir = c.dir.path().join("node2-copy");
    let copied = std::process::Command::new("cp").arg("-a").arg(c.data_dir(2)).arg(&copy_dir).status().unwrap();
    assert!(copied.success());
    c.restart(2, &http, &cluster);
    let mut args = vec!["-a", "127.0.24.9:0", "--cluster-address", "127.0.24.9:0"];
    args.extend_from_slice(common::FAST);
    let mut copy = common::NodeProc::try_start(&copy_dir, &args, &[]).expect("the copy starts");

    // Gossip brings each one's record to the other; within a bounded time
    // at least one of them must see another live process and stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (exit, log) = loop {
        if let Some(exit) = copy.wait_exit(Duration::from_millis(100)) {
            break (exit, std::fs::read_to_string(&copy.stderr_path).unwrap());
        }
        let original = c.nodes[2].as_mut().unwrap();
        if let Some(exit) = original.wait_exit(Duration::from_millis(100)) {
            break (exit, std::fs::read_to_string(&original.stderr_path).unwrap());
        }
        assert!(Instant::now() < deadline, "two processes ran as node {id} for a minute, neither stopped");
    };
    assert!(!exit.success(), "exited {exit}:\n{log}");
    assert!(log.contains(&format!("another process runs as node {id} at 127.0.24.")), "{exit}:\n{log}");
    assert!(log.contains("wipe the copy's data directory"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // Nodes 0 and 1 keep serving reads and writes (N=3, R=W=2).
    for i in 0..30 {
        let url = c.node(i % 2).url(&format!("/store/k{i}"));
        assert_eq!(get_text(&url), (StatusCode::OK, format!("v{i}")), "k{i}");
    }
    for i in 0..10 {
        assert_eq!(put(&c.node(i % 2).url(&format!("/store/after{i}")), "w").status(), StatusCode::OK, "after{i}");
        assert_eq!(get_text(&c.node((i + 1) % 2).url(&format!("/store/after{i}"))), (StatusCode::OK, "w".to_owned()));
    }
}

/// Issue 10, calls that outlive their caller: a replica paused while a
/// coordinator waits for its stamp does not, when it resumes, apply the
/// stamp of a write whose client was told 503 seconds ago. Five nodes, so
/// the coordinator is not a replica of the key and must ask one to stamp.
#[test]
fn a_paused_stamper_does_not_apply_a_write_its_client_was_refused() {
    let _one = serial();
    let cluster = Cluster::start(24, 5);
    let coordinator = cluster.node(0);
    // A key that node 0 does not hold, and its first replica.
    let (key, first) = (0..200)
        .map(|i| format!("paused-{i}"))
        .find_map(|key| {
            let v: serde_json::Value =
                client().get(coordinator.url(&format!("/admin/preflist/{key}"))).send().ok()?.json().ok()?;
            let nodes: Vec<String> =
                v["preflist"].as_array()?.iter().map(|e| e["node"].as_str().unwrap().to_owned()).collect();
            (!nodes.contains(&coordinator.http)).then(|| (key, nodes[0].clone()))
        })
        .expect("a key node 0 does not hold");
    let first = cluster.running().find(|n| n.http == first).expect("the first replica runs");
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &first.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let r = put(&coordinator.url(&format!("/store/{key}")), "v");
    let took = started.elapsed();
    // The fault window: resume well after the request deadline (3 s) plus
    // the clock-skew allowance (1 s), so the queued stamp is expired.
    std::thread::sleep(Duration::from_millis(5500).saturating_sub(took));
    signal("-CONT");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "the paused stamper answered? {:?}", r.text());
    let partition = partition_of(coordinator, &key);
    // Up again as the resumed node and the coordinator both see it (a read
    // with r=all fails fast while the coordinator still thinks it down).
    for node in [first, coordinator] {
        wait_for("the paused node to be up again", Duration::from_secs(20), || {
            common::status(node)
                .filter(|s| s["members"].as_array().is_some_and(|m| m.iter().all(|m| m["status"] == "up")))
        });
    }
    // Give the resumed node every chance to run what it had queued: its
    // own answer to a fresh read is the proof (calls are served in order
    // of arrival on its stream, and the read comes after). A 503 only says
    // the call stream to it was still being re-opened: ask again.
    let url = coordinator.url(&format!("/store/{key}?r=all"));
    let status = wait_for("an answer from all three replicas", Duration::from_secs(20), || {
        let (status, _) = get_text(&url);
        (status != StatusCode::SERVICE_UNAVAILABLE).then_some(status)
    });
    assert_eq!(status, StatusCode::NOT_FOUND, "the refused write was applied late");
    for node in cluster.running() {
        assert!(replica_values(node, &key, partition).is_empty(), "{} applied the late stamp", node.http);
    }
}

/// A node restarted with the flags it was first started with (`-j` and its
/// seed) comes back while that seed is down: its data directory knows the
/// cluster, and gossip finds the other members. It used to retry the seed
/// for 10 s and exit (the simulator found restarts failing this way).
#[test]
fn a_restarted_node_comes_back_while_its_seed_is_down() {
    let _serial = serial();
    let mut c = Cluster::start(25, 3);
    let seed = c.node(0).cluster.clone();
    c.kill9(0);
    let (http, cluster) = c.kill9(2);
    let mut args = vec!["-a", http.as_str(), "--cluster-address", cluster.as_str(), "-j", seed.as_str()];
    args.extend_from_slice(common::FAST);
    c.nodes[2] = Some(common::NodeProc::start(&c.data_dir(2), &args));
    // With nodes 1 and 2 up, W=2 holds for every key (3 nodes, N=3).
    wait_for("a write through the restarted node", Duration::from_secs(30), || {
        (put(&c.node(2).url("/store/after-restart"), "v").status() == StatusCode::OK).then_some(())
    });
    assert_eq!(get_text(&c.node(1).url("/store/after-restart")), (StatusCode::OK, "v".into()));
}
