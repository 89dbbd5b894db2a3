//! Writes that land on a node holding no replica of their key, on real
//! clusters larger than N: the node forwards the write whole to a primary
//! (one call), which coordinates it; and `bench --route preflist` sends
//! every request to a primary of its key, so no write is forwarded or
//! stamped remotely at all. The forwarding rules themselves (first up
//! primary, a lost answer is a 503 and never a second stamp, a refused
//! forward is coordinated locally, a move's two rings) are in
//! tests/coordinator.rs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Cluster, NodeProc, client};

/// `vinzclortho_grpc_client_requests_total` of `node` for the methods that
/// `accept` takes, summed over codes.
fn client_calls(node: &NodeProc, accept: impl Fn(&str) -> bool) -> f64 {
    let text = client().get(node.url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .filter(|l| l.starts_with("vinzclortho_grpc_client_requests_total{"))
        .filter_map(|l| {
            let method = l.split("method=\"").nth(1)?.split('"').next()?;
            accept(method).then(|| l.rsplit(' ').next()?.parse::<f64>().ok())?
        })
        .sum()
}

fn replica_calls(node: &NodeProc) -> f64 {
    client_calls(node, |m| m.starts_with("Replica/") || m.starts_with("Forward/"))
}

/// HTTP addresses of the key's primaries, as `/admin/preflist` names them.
fn primaries(node: &NodeProc, key: &str) -> Vec<String> {
    let list: serde_json::Value =
        client().get(node.url(&format!("/admin/preflist/{key}"))).send().unwrap().json().unwrap();
    list["preflist"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["primary"] == true)
        .map(|e| e["node"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_put_through_a_node_that_is_no_replica_is_one_forwarded_call_and_lands_on_every_holder() {
    let c = Cluster::start(209, 5);
    let entry = c.node(0);
    let key = (0..).map(|i| format!("fw-{i}")).find(|k| !primaries(entry, k).contains(&entry.http)).unwrap();
    let holders = primaries(entry, &key);
    assert_eq!(holders.len(), 3);

    let before = (replica_calls(entry), client_calls(entry, |m| m == "Forward/Write"));
    let put = client().put(entry.url(&format!("/store/{key}"))).body("forwarded").send().unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    assert_eq!(put.headers().get("x-vinzclortho-fallbacks").map(|v| v.to_str().unwrap()), Some("0"));
    let after = (replica_calls(entry), client_calls(entry, |m| m == "Forward/Write"));
    assert_eq!(after.0 - before.0, 1.0, "one outgoing replica call from the node that is no replica");
    assert_eq!(after.1 - before.1, 1.0, "and it is the forward");

    // The receiver merged it into the others before W=2 was met; the third
    // copy follows at once.
    common::wait_for("the value on every holder", Duration::from_secs(10), || {
        let report: serde_json::Value =
            client().get(entry.url(&format!("/admin/replicas/{key}"))).send().ok()?.json().ok()?;
        let copies: Vec<&serde_json::Value> =
            report["replicas"].as_array()?.iter().filter(|r| r["primary"] == true).collect();
        let one_value = |r: &&serde_json::Value| r["siblings"].as_array().is_some_and(|s| s.len() == 1);
        (copies.len() == 3 && copies.iter().all(one_value)).then_some(())
    });
    let read = client().get(entry.url(&format!("/store/{key}"))).send().unwrap();
    assert_eq!(read.text().unwrap(), "forwarded");
}

/// Writes forwarded or stamped remotely, over every node.
fn remote_coordinations(c: &Cluster) -> f64 {
    c.running().map(|n| client_calls(n, |m| m == "Forward/Write" || m == "Replica/Coordinate")).sum()
}

fn bench(c: &Cluster, route: &str) {
    let nodes: Vec<String> = c.running().map(|n| n.http.clone()).collect();
    let out = Command::new(BIN)
        .args(["bench", "--nodes", &nodes.join(","), "--route", route, "--ops", "200", "--keys", "50"])
        .args(["--mix", "read=50,write=50", "-c", "4", "-q", "--json", "--timeout-ms", "20000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "bench --route {route}: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["overall"]["errors"], 0, "{report}");
}

#[test]
fn bench_route_preflist_sends_every_request_to_a_replica_of_its_key() {
    let c = Cluster::start(210, 5);
    let before = remote_coordinations(&c);
    bench(&c, "preflist");
    assert_eq!(remote_coordinations(&c), before, "every write landed on a primary, which stamped it itself");
    // Round robin over 5 nodes puts 2 of 5 writes on a node that is no
    // replica: those are forwarded.
    bench(&c, "any");
    assert!(remote_coordinations(&c) > before, "round robin forwards some writes");
}
