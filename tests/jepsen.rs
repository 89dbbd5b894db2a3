//! A Jepsen-style fault suite: a real cluster, concurrent clients recording
//! a history, a seeded schedule of faults (partitions both ways and one way,
//! packet loss, crashes with restarts, pauses longer than the failure
//! detector's timeout), then healing, convergence, and a checker.
//!
//! Short run (part of the test suite): `cargo test --test jepsen`.
//! Longer run: `JEPSEN_SECONDS=600 JEPSEN_SEED=42 cargo test --release --test jepsen -- --nocapture jepsen_run`.
//! Every run prints its seed, network mode and schedule; re-running with the
//! same seed replays the same schedule (timing still varies).

#[path = "jepsen/checker.rs"]
mod checker;
#[path = "jepsen/cluster.rs"]
mod cluster;
#[path = "jepsen/history.rs"]
mod history;
#[path = "jepsen/net.rs"]
mod net;
#[path = "jepsen/proxy.rs"]
mod proxy;
#[path = "jepsen/workload.rs"]
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vinzclortho::rpc::pb;
use vinzclortho::rpc::pb::replica_client::ReplicaClient;

use checker::Report;
use cluster::Node;
use history::{FaultWindow, History};
use net::Network;
use proxy::Proxy;
use workload::Client;

/// One suite run at a time: each has its own cluster and network.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone)]
enum Fault {
    /// One node cut off from the others, both ways.
    Isolate(usize),
    /// `to` drops everything from `from`.
    OneWay { to: usize, from: usize },
    /// `to` loses a share of the packets from every other node.
    Loss { to: usize, percent: u32 },
    /// kill -9, restarted on the same data directory when the window ends.
    Crash(usize),
    /// SIGSTOP for longer than the failure timeout, then SIGCONT.
    Pause(usize),
    /// kill -9, data directory deleted; the node comes back empty (a new
    /// node at the same address, replacing its old self) and rejoins.
    LostDisk(usize),
    /// The node's disk is full: writes fail (507) until space returns.
    DiskFull(usize),
    /// Node-to-node traffic to and from `node` is delayed by `delay_ms` plus
    /// up to `jitter_ms`, by the userspace proxy.
    Slow { node: usize, delay_ms: u64, jitter_ms: u64 },
}

impl Fault {
    /// Needs what only the namespaced setup has (root: nftables, tmpfs).
    fn network(&self) -> bool {
        matches!(self, Fault::Isolate(_) | Fault::OneWay { .. } | Fault::Loss { .. } | Fault::DiskFull(_))
    }
}

struct Scheduled {
    fault: Fault,
    start: Duration,
    length: Duration,
}

struct Run {
    seed: u64,
    nodes: usize,
    clients: usize,
    length: Duration,
    env: Vec<(&'static str, &'static str)>,
    subnet: u8,
    /// None: a random schedule from the seed.
    schedule: Option<Vec<Scheduled>>,
}

struct Outcome {
    history: History,
    report: Report,
    converged_after: Option<Duration>,
    network: String,
}

fn random_schedule(rng: &mut StdRng, nodes: usize, length: Duration, network_faults: bool) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let mut t = Duration::from_secs(2);
    while t + Duration::from_secs(5) < length {
        let node = rng.random_range(0..nodes);
        let other = (node + rng.random_range(1..nodes)) % nodes;
        let choice = if network_faults { rng.random_range(0..8) } else { rng.random_range(3..7) };
        let fault = match choice {
            0 => Fault::Isolate(node),
            1 => Fault::OneWay { to: node, from: other },
            2 => Fault::Loss { to: node, percent: rng.random_range(20..60) },
            3 => Fault::Crash(node),
            4 => Fault::Pause(node),
            5 => Fault::LostDisk(node),
            6 => Fault::Slow { node, delay_ms: rng.random_range(50..400), jitter_ms: rng.random_range(0..200) },
            _ => Fault::DiskFull(node),
        };
        let length = Duration::from_millis(rng.random_range(3000..5000));
        out.push(Scheduled { fault, start: t, length });
        t += length + Duration::from_millis(rng.random_range(1500..3000));
    }
    out
}

fn apply(fault: &Fault, net: &Network, proxy: &Proxy, nodes: &mut [Node]) {
    match *fault {
        Fault::Slow { node, delay_ms, jitter_ms } => proxy.set_delay(node, delay_ms, jitter_ms),
        Fault::DiskFull(i) => nodes[i].fill_disk(),
        Fault::Isolate(i) => {
            let others: Vec<usize> = (0..nodes.len()).filter(|n| *n != i).collect();
            net.partition(&[i], &others);
        }
        Fault::OneWay { to, from } => net.drop_from(to, from),
        Fault::Loss { to, percent } => net.lossy(to, percent),
        Fault::Crash(i) => nodes[i].kill9(),
        Fault::Pause(i) => nodes[i].pause(),
        Fault::LostDisk(i) => nodes[i].lose_disk(),
    }
}

fn heal(fault: &Fault, net: &Network, proxy: &Proxy, nodes: &mut [Node]) {
    match *fault {
        Fault::Slow { node, .. } => proxy.set_delay(node, 0, 0),
        Fault::DiskFull(i) => nodes[i].free_disk(),
        Fault::Crash(i) => nodes[i].restart(),
        Fault::Pause(i) => nodes[i].resume(),
        Fault::LostDisk(i) => {
            let seed = nodes[(i + 1) % nodes.len()].cluster.clone();
            nodes[i].rejoin(&seed);
        }
        _ => net.heal(),
    }
}

fn status(node: &Node) -> Option<serde_json::Value> {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3)).build().ok()?;
    http.get(node.url("/admin/status")).send().ok()?.json().ok()
}

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            eprintln!("jepsen: gave up waiting for {what} after {timeout:?}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_up(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| {
        status(n).is_some_and(|s| {
            let members = s["members"].as_array().cloned().unwrap_or_default();
            members.len() == nodes.len()
                && members.iter().all(|m| m["status"] == "up" && m["claim"].as_u64() > Some(0))
                && s["ring"]["moving"] == false
        })
    })
}

/// Each replica's sibling values of `key`, over gRPC (no quorum involved),
/// as a member calls node `node_id` of cluster `cluster_id` (the identity
/// headers of `rpc::identity`: a call without them is refused).
fn replica_values(
    rt: &tokio::runtime::Runtime,
    (cluster_address, node_id, cluster_id): (&str, &str, &str),
    key: &str,
    partition: u32,
) -> Option<Vec<String>> {
    rt.block_on(async {
        let connect = ReplicaClient::connect(format!("http://{cluster_address}"));
        let mut client = tokio::time::timeout(Duration::from_secs(3), connect).await.ok()?.ok()?;
        let request = pb::GetRequest {
            caller: None,
            partition,
            key: Some(vinzclortho::rpc::convert::key_to_pb(&vinzclortho::core::key::ObjectKey::in_default_bucket(
                key.to_owned(),
            ))),
        };
        let mut request = tonic::Request::new(request);
        for (name, value) in [("vc-cluster-id", cluster_id), ("vc-to-node", node_id), ("vc-from-node", "jepsen")] {
            request.metadata_mut().insert(name, value.parse().ok()?);
        }
        let reply = tokio::time::timeout(Duration::from_secs(3), client.get(request)).await.ok()?.ok()?;
        let mut values: Vec<String> = reply
            .into_inner()
            .object
            .unwrap_or_default()
            .siblings
            .into_iter()
            .map(|s| String::from_utf8_lossy(&s.value).into_owned())
            .collect();
        values.sort();
        Some(values)
    })
}

/// Reads every key with r=all (read repair fixes stale replicas) until all
/// replicas of every key hold the same values; returns the final state.
fn converge(nodes: &[Node], keys: &BTreeSet<String>, timeout: Duration) -> Option<BTreeMap<String, Vec<String>>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let by_http: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.http.as_str(), n)).collect();
    let mut round = 0;
    wait_for("every replica of every key to converge", timeout, || {
        round += 1;
        let mut state = BTreeMap::new();
        for key in keys {
            let node = &nodes[round % nodes.len()];
            let _ = http.get(node.url(&format!("/store/{key}?r=all"))).send();
            let preflist: serde_json::Value =
                http.get(node.url(&format!("/admin/preflist/{key}"))).send().ok()?.json().ok()?;
            let partition = preflist["partition"].as_u64()? as u32;
            let cluster_id = status(node)?["cluster_id"].as_str()?.to_owned();
            let mut seen: Option<Vec<String>> = None;
            for entry in preflist["preflist"].as_array()? {
                let holder = by_http.get(entry["node"].as_str()?)?;
                let to = (holder.cluster.as_str(), entry["node_id"].as_str()?, cluster_id.as_str());
                let values = replica_values(&rt, to, key, partition)?;
                match &seen {
                    Some(first) if *first != values => return None,
                    _ => seen = Some(values),
                }
            }
            state.insert(key.clone(), seen.unwrap_or_default());
        }
        Some(state)
    })
}

fn run(config: Run) -> Outcome {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut net = Network::new(config.nodes, config.subnet);
    let dir = tempfile::tempdir().unwrap();
    println!("jepsen: seed {} on {}", config.seed, net.describe());
    // Every node listens on a fixed port of its own address and advertises
    // its proxy, through which all node-to-node traffic flows.
    let listen: Vec<String> = (0..config.nodes).map(|i| format!("{}:9080", net.ip(i))).collect();
    let proxy = Proxy::start(&net.proxy_ip(), &listen);
    net.set_proxy_ports(proxy.addresses.iter().map(|a| a.rsplit_once(':').unwrap().1.parse().unwrap()).collect());
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..config.nodes {
        let seed = nodes.first().map(|n: &Node| n.cluster.clone());
        let (listen, advertise) = (listen[i].clone(), proxy.addresses[i].clone());
        nodes.push(Node::start(&net, i, dir.path(), listen, advertise, seed.as_deref(), &config.env));
    }
    wait_for("the cluster to form", Duration::from_secs(60), || all_up(&nodes).then_some(()))
        .expect("the cluster formed");
    let schedule = config
        .schedule
        .unwrap_or_else(|| random_schedule(&mut rng, config.nodes, config.length, net.supports_network_faults()));
    for s in &schedule {
        println!("jepsen: at {:>5.1}s for {:.1}s: {:?}", s.start.as_secs_f64(), s.length.as_secs_f64(), s.fault);
    }

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let addresses: Vec<String> = nodes.iter().map(|n| n.http.clone()).collect();
    let clients: Vec<_> = (0..config.clients)
        .map(|c| {
            let (stop, addresses) = (stop.clone(), addresses.clone());
            let mut client = Client::new(c, config.seed, addresses, started);
            std::thread::spawn(move || {
                client.run(stop);
                client.ops
            })
        })
        .collect();

    // The schedule is the experiment's clock: sleeping until the next fault
    // is the point here, not a way to wait for a condition.
    let mut faults = Vec::new();
    for s in &schedule {
        if s.fault.network() && !net.supports_network_faults() {
            continue;
        }
        std::thread::sleep(s.start.saturating_sub(started.elapsed()));
        let from = started.elapsed();
        apply(&s.fault, &net, &proxy, &mut nodes);
        std::thread::sleep(s.length);
        heal(&s.fault, &net, &proxy, &mut nodes);
        let minority = match s.fault {
            Fault::Isolate(i) | Fault::Crash(i) | Fault::Pause(i) | Fault::LostDisk(i) => vec![i],
            _ => vec![],
        };
        let loses_data = matches!(s.fault, Fault::LostDisk(_));
        // A rejoined node gets its data back over time (transfers, read
        // repair): reads may miss a write until then, so the window that
        // excuses read-your-writes lasts until the cluster has settled.
        let end = if loses_data {
            wait_for("the rejoined node to settle", Duration::from_secs(60), || all_up(&nodes).then_some(()));
            started.elapsed()
        } else {
            started.elapsed()
        };
        faults.push(FaultWindow { name: format!("{:?}", s.fault), start: from, end, loses_data, minority });
    }
    std::thread::sleep(config.length.saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let mut ops: Vec<history::Op> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    ops.sort_by_key(|op| op.start);

    // Heal everything, then wait for membership and for every replica.
    net.heal();
    proxy.clear();
    for n in nodes.iter_mut() {
        if n.paused {
            n.resume();
        }
        if !n.running() {
            n.restart();
        }
    }
    let healed = Instant::now();
    wait_for("all members up after healing", Duration::from_secs(60), || all_up(&nodes).then_some(()));
    let keys: BTreeSet<String> = ops.iter().map(|op| op.key.clone()).collect();
    let final_state = converge(&nodes, &keys, Duration::from_secs(60));
    let converged_after = final_state.as_ref().map(|_| healed.elapsed());
    for f in &faults {
        println!("jepsen: applied {} from {:.1}s to {:.1}s", f.name, f.start.as_secs_f64(), f.end.as_secs_f64());
    }
    let history = History { ops, faults, final_state: final_state.unwrap_or_default() };
    let report = checker::check(&history);
    print_report(&report, converged_after);
    Outcome { history, report, converged_after, network: net.describe() }
}

fn print_report(r: &Report, converged_after: Option<Duration>) {
    println!(
        "jepsen: {} operations, {} acknowledged, {} unknown; {} acknowledged writes, {} lost; \
         {} phantom values; {} read-your-writes violations; {} keys with siblings (max {}); \
         converged {} after healing; availability during faults {}, majority side {}",
        r.ops,
        r.acknowledged,
        r.unknown,
        r.acknowledged_writes,
        r.lost.len(),
        r.phantoms.len(),
        r.ryw_violations.len(),
        r.keys_with_siblings,
        r.max_siblings,
        converged_after.map_or("NOT".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
        r.availability_during_faults.map_or("-".to_owned(), |a| format!("{:.1}%", a * 100.0)),
        r.majority_availability.map_or("-".to_owned(), |a| format!("{:.1}%", a * 100.0)),
    );
    for line in r.lost.iter().chain(&r.phantoms).chain(&r.ryw_violations).take(10) {
        println!("jepsen:   {line}");
    }
}

fn seed() -> u64 {
    std::env::var("JEPSEN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000
    })
}

fn seconds(default: u64) -> Duration {
    Duration::from_secs(std::env::var("JEPSEN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default))
}

/// The suite's main run: random faults, correct build.
#[test]
fn jepsen_run() {
    let outcome =
        run(Run { seed: seed(), nodes: 3, clients: 6, length: seconds(30), env: vec![], subnet: 77, schedule: None });
    let r = &outcome.report;
    assert!(r.acknowledged_writes > 50, "too few acknowledged writes to judge: {r:?}");
    assert!(outcome.converged_after.is_some(), "replicas did not converge after healing ({})", outcome.network);
    assert!(r.lost.is_empty(), "acknowledged writes lost: {:?}", r.lost);
    assert!(r.phantoms.is_empty(), "phantom values: {:?}", r.phantoms);
    assert!(r.ryw_violations.is_empty(), "read-your-writes violations: {:?}", r.ryw_violations);
}

/// Every kind of fault once, in a fixed schedule, so each is exercised in
/// every run whatever the random seed picks: no acknowledged write lost, no
/// phantom, read-your-writes, convergence.
#[test]
fn every_kind_of_fault_once() {
    let at = |ms: u64| Duration::from_millis(ms);
    let faults = [
        Fault::Isolate(0),
        Fault::OneWay { to: 1, from: 2 },
        Fault::Loss { to: 2, percent: 40 },
        Fault::Slow { node: 0, delay_ms: 300, jitter_ms: 150 },
        Fault::Crash(1),
        Fault::Pause(2),
        Fault::LostDisk(1),
        Fault::DiskFull(0),
    ];
    let schedule = faults.into_iter().enumerate().map(|(i, fault)| Scheduled {
        fault,
        start: at(2000 + 4000 * i as u64),
        length: at(2500),
    });
    let outcome = run(Run {
        seed: 99,
        nodes: 3,
        clients: 6,
        length: at(35_000),
        env: vec![],
        subnet: 79,
        schedule: Some(schedule.collect()),
    });
    let r = &outcome.report;
    assert!(outcome.converged_after.is_some(), "replicas did not converge after healing");
    assert!(r.lost.is_empty(), "acknowledged writes lost: {:?}", r.lost);
    assert!(r.phantoms.is_empty(), "phantom values: {:?}", r.phantoms);
    assert!(r.ryw_violations.is_empty(), "read-your-writes violations: {:?}", r.ryw_violations);
    // The partition was real: once the failure detector had time to notice
    // (the cut node cannot reach W=2), no write through node 0 succeeded.
    if outcome.network.starts_with("network namespaces") {
        let window = &outcome.history.faults[0];
        let settled = window.start + Duration::from_millis(500);
        let through_cut_node = outcome
            .history
            .ops
            .iter()
            .filter(|op| op.node == 0 && op.start >= settled && op.end <= window.end)
            .filter(|op| matches!(op.kind, history::Kind::Write { .. }))
            .collect::<Vec<_>>();
        assert!(!through_cut_node.is_empty(), "no writes through the cut node to judge");
        assert!(
            through_cut_node.iter().all(|op| op.outcome != history::Outcome::Ok(vec![])),
            "a write through the cut-off node was acknowledged: the partition did not drop packets"
        );
    }
}

/// The checker must catch a build that acknowledges writes before W
/// replicas have them (compiled in test builds only, switched on here).
#[test]
fn a_build_that_acknowledges_before_its_quorum_is_caught() {
    let outcome = run(Run {
        seed: 7,
        nodes: 3,
        clients: 6,
        length: Duration::from_secs(12),
        env: vec![("VINZCLORTHO_FAULT", "ack-before-quorum")],
        subnet: 78,
        schedule: Some(vec![Scheduled {
            fault: Fault::Crash(0),
            start: Duration::from_secs(4),
            length: Duration::from_secs(3),
        }]),
    });
    assert!(!outcome.report.valid(), "the checker accepted a broken build: {:?}", outcome.report);
}
