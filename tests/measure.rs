//! Measurements for the README, not pass/fail tests (they are ignored by
//! default). Run them on a release build:
//!
//!     cargo test --release --test measure -- --ignored --nocapture --test-threads 1
//!
//! Gossip uses the defaults a user gets (1 s interval, 5 s failure timeout).

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, client, status, wait_for};

const DEFAULTS: &[&str] = &["-p", "64"];

/// Waits until every running node lists a member for which `member` holds.
fn every_node_sees(c: &Cluster, what: &str, member: impl Fn(&serde_json::Value) -> bool) {
    wait_for(what, Duration::from_secs(120), || {
        c.running()
            .all(|node| status(node).is_some_and(|s| s["members"].as_array().unwrap().iter().any(&member)))
            .then_some(())
    });
}

/// Time for one change (a claim set on the last node) to reach every node,
/// and for a new node to be seen up everywhere.
fn gossip_convergence(n: usize, net: u8) {
    let started = Instant::now();
    let mut c = Cluster::start_with(net, n, DEFAULTS);
    let formed = started.elapsed();
    let last = c.node(n - 1).http.clone();
    let t0 = Instant::now();
    let r = client().put(c.node(n - 1).url("/admin/claim")).body("32").send().unwrap();
    assert!(r.status().is_success());
    every_node_sees(&c, "the claim to reach every node", |m| m["address"] == last.as_str() && m["wanted_claim"] == 32);
    let change = t0.elapsed();
    let t1 = Instant::now();
    let joiner = c.add();
    let joiner_addr = c.node(joiner).http.clone();
    every_node_sees(&c, "the joiner to be up everywhere", |m| {
        m["address"] == joiner_addr.as_str() && m["status"] == "up"
    });
    let join = t1.elapsed();
    println!(
        "gossip n={n}: cluster formed (sequential joins, data moves settled) in {:.1} s; \
         a claim change reached all nodes in {:.2} s; a new member was seen up by all in {:.2} s",
        formed.as_secs_f64(),
        change.as_secs_f64(),
        join.as_secs_f64()
    );
}

#[test]
#[ignore]
fn measure_gossip_convergence_3_8_32() {
    gossip_convergence(3, 41);
    gossip_convergence(8, 42);
    gossip_convergence(32, 43);
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[test]
#[ignore]
fn measure_put_get_latency_3_nodes() {
    let c = Cluster::start_with(44, 3, DEFAULTS);
    let http = client();
    let value = "x".repeat(100);
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for i in 0..2000 {
        let node = c.node(i % 3);
        let t = Instant::now();
        let r = http.put(node.url(&format!("/store/k{i}"))).body(value.clone()).send().unwrap();
        puts.push(t.elapsed());
        assert!(r.status().is_success());
        let t = Instant::now();
        let r = http.get(c.node((i + 1) % 3).url(&format!("/store/k{i}"))).send().unwrap();
        let _ = r.bytes().unwrap();
        gets.push(t.elapsed());
    }
    puts.sort();
    gets.sort();
    for (name, d) in [("PUT", &puts), ("GET", &gets)] {
        println!(
            "3 nodes, one client, sequential, 100-byte values, N=3 R=2 W=2: {name} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(d, 0.5),
            percentile(d, 0.99),
            percentile(d, 1.0)
        );
    }
}
