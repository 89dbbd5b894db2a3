//! Restarts clients do not notice: a node stopped with SIGTERM tells its
//! peers at once, and a rolling restart of every node of a cluster under
//! the load generator (`vinzclortho bench --failover`) fails no request and
//! loses no acknowledged write.
//!
//! The rolling restart's short form runs 10 s of load without restarts,
//! then load while each node in turn is stopped, restarted and waited for,
//! with 3 s of load between restarts (about 15 s). A longer one:
//! `ROLLING_RESTART_ROUNDS=5 cargo test --test rolling_restart -- --nocapture`
//! (every node restarted five times); it prints the latencies of both runs
//! (docs/performance.md has measured ones).

mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Cluster, status, wait_for};
use serde_json::Value;
use vinzclortho::core::membership::PROTOCOL_VERSION;
use vinzclortho::rpc::membership_pb as m;

/// A member's status as `node`'s failure detector sees it.
fn member_status(node: &common::NodeProc, address: &str) -> Option<String> {
    let s = status(node)?;
    let member = s["members"].as_array()?.iter().find(|m| m["address"] == address)?.clone();
    Some(member["status"].as_str()?.to_owned())
}

/// With a failure timeout of 20 s, a node stopped with SIGTERM is seen down
/// by the others well before it (its going-down notice), and up again as
/// soon as it is back; a notice one member sends about another is refused.
/// (A longer timeout only makes the cluster slower to form: its claimant
/// waits that long before it plans the ring.)
#[test]
fn a_node_stopped_with_sigterm_is_seen_down_at_once_and_up_when_back() {
    let args = ["--gossip-interval-ms", "100", "--failure-timeout-ms", "20000", "-p", "16"];
    let mut c = Cluster::start_with(207, 3, &args);
    let node2 = c.nodes[2].take().unwrap();
    let (http, cluster) = (node2.http.clone(), node2.cluster.clone());
    let stopped_at = Instant::now();
    let exit = node2.signal_and_wait("TERM", Duration::from_secs(30)).expect("node 2 stops on SIGTERM");
    assert!(exit.success(), "{exit}");
    for i in [0, 1] {
        wait_for("the others to see node 2 down", Duration::from_secs(10), || {
            (member_status(c.node(i), &http)? == "down").then_some(())
        });
    }
    let seen_down = stopped_at.elapsed();
    assert!(seen_down < Duration::from_secs(10), "{seen_down:?}: that is the failure timeout, not the notice");

    // Only a node itself may say it goes down.
    let (node1_id, cluster_id) = {
        let s = status(c.node(1)).unwrap();
        (s["node_id"].as_str().unwrap().to_owned(), s["cluster_id"].as_str().unwrap().to_owned())
    };
    let node0_id = status(c.node(0)).unwrap()["node_id"].as_str().unwrap().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(async {
        let mut client =
            m::membership_client::MembershipClient::connect(format!("http://{}", c.node(0).cluster)).await.unwrap();
        let notice = m::GoingDownRequest {
            protocol_version: PROTOCOL_VERSION,
            node: node1_id.clone(),
            generation: u64::MAX,
            version: 0,
        };
        client.going_down(common::member_request(notice, &cluster_id, &node0_id, "someone-else")).await
    });
    let refused = refused.expect_err("a notice about another node");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(member_status(c.node(0), &c.node(1).http).as_deref(), Some("up"));

    let restarted_at = Instant::now();
    c.restart(2, &http, &cluster);
    for i in [0, 1] {
        wait_for("the others to see node 2 up again", Duration::from_secs(30), || {
            (member_status(c.node(i), &http)? == "up").then_some(())
        });
    }
    eprintln!("node 2 seen down {seen_down:?} after SIGTERM, up {:?} after its restart", restarted_at.elapsed());
}

/// `vinzclortho bench` running in the background.
struct Bench {
    child: Child,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn start(args: &[&str]) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = Command::new(BIN)
            .arg("bench")
            .args(args)
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        Bench { child, stdout, stderr, _dir: dir }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit` for the bench to end; its report.
    fn report(mut self, limit: Duration) -> Value {
        let status: ExitStatus = wait_for("the bench to end", limit, || self.child.try_wait().unwrap());
        let stdout = std::fs::read_to_string(&self.stdout).unwrap();
        assert!(status.success(), "bench failed ({status}): {}\n{stdout}", self.stderr());
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// No failed request, no mismatched read, every key read back.
fn assert_clean(report: &Value, what: &str) {
    assert_eq!(report["overall"]["errors"], 0, "{what}: {}", report["overall"]);
    assert_eq!(report["mismatches"], 0, "{what}: {}", report["mismatch_examples"]);
    let verify = &report["verify"];
    assert_eq!(verify["errors"], 0, "{what}: {verify}");
    assert_eq!(verify["mismatches"], 0, "{what}: {}", verify["mismatch_examples"]);
    assert_eq!(verify["keys"], report["keys"], "{what}: every key is read back");
    assert!(report["overall"]["ops"].as_u64().unwrap() > 0, "{what}: {report}");
}

/// Every node of a 3-node cluster restarted in turn under load: SIGTERM,
/// exit 0, restart on its data directory, `admin wait-healthy` (every
/// member up everywhere, no hint waiting), next. The bench sends to all
/// three with --failover and checks every read; at the end it reads every
/// key back with r=all.
#[test]
fn a_rolling_restart_under_load_fails_no_request_and_loses_no_write() {
    let rounds: usize = std::env::var("ROLLING_RESTART_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let mut c = Cluster::start(208, 3);
    let nodes: Vec<String> = c.running().map(|n| n.http.clone()).collect();
    let nodes = nodes.join(",");
    let load = |duration: &str| {
        let args = [
            "--nodes",
            &nodes,
            "--duration",
            duration,
            "-c",
            "8",
            "--keys",
            "800",
            "--mix",
            "read=50,write=50",
            "--check",
            "--verify",
            "--failover",
            "--json",
        ];
        Bench::start(&args)
    };

    // The same load without restarts first, for the p99 to compare with.
    let steady = load("10").report(Duration::from_secs(120));
    assert_clean(&steady, "without restarts");

    // Until stopped (SIGTERM ends the run and the bench still reports).
    let mut bench = load("3600");
    // The bench prints a progress line a second while it runs.
    let seconds_of_load = |bench: &Bench, n: usize| {
        let from = bench.stderr().matches("bench run:").count();
        wait_for("load to run", Duration::from_secs(60), || {
            (bench.stderr().matches("bench run:").count() >= from + n).then_some(())
        });
    };
    let started = Instant::now();
    for round in 0..rounds {
        for i in 0..3 {
            // A few seconds of load on the whole cluster between restarts.
            seconds_of_load(&bench, 3);
            let node = c.nodes[i].take().unwrap();
            let (http, cluster) = (node.http.clone(), node.cluster.clone());
            let exit = node.signal_and_wait("TERM", Duration::from_secs(30)).expect("the node stops on SIGTERM");
            assert!(exit.success(), "round {round}, node {i}: {exit}");
            c.restart(i, &http, &cluster);
            let healthy = Command::new(BIN)
                .args(["admin", "wait-healthy", "--timeout", "120", "--node", &http])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(healthy.success(), "round {round}: node {i} back, but the cluster is not healthy");
            assert!(bench.running(), "the load ended during the restarts: {}", bench.stderr());
        }
    }
    seconds_of_load(&bench, 3);
    let restarts = started.elapsed();
    assert!(common::send_signal(&bench.child, "TERM"));
    let rolling = bench.report(Duration::from_secs(300));
    assert_clean(&rolling, "during the rolling restart");
    assert!(rolling["failovers"].as_u64().unwrap() > 0, "the restarts were met by the load: {rolling}");
    println!(
        "rolling restart of 3 nodes x {rounds}, {restarts:.1?} of load: {} ops, {} sent on to another node, 0 errors; \
         latency {}; without restarts (10 s): {} ops, latency {}",
        rolling["overall"]["ops"],
        rolling["failovers"],
        rolling["overall"]["latency_ms"],
        steady["overall"]["ops"],
        steady["overall"]["latency_ms"],
    );
}
