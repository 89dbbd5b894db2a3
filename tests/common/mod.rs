//! Real `vinzclortho` processes for integration tests: start on port 0, wait
//! for the readiness line (with a deadline), kill -9, restart on the same
//! data directory. Every process is killed when its handle drops.
//!
//! The one harness for processes and clusters: every test binary that runs
//! the real binary includes it (`mod common;`), the fault suite too
//! (`tests/jepsen/cluster.rs` starts its nodes in network namespaces through
//! [`spawn_ready`]).

#![allow(dead_code)]

pub mod https;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vinzclortho");
/// Followed by `http://` or, on a node with an HTTP certificate, `https://`.
const READY_PREFIX: &str = "vinzclortho listening on ";
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct NodeProc {
    child: Child,
    /// HOST:PORT of the HTTP API.
    pub http: String,
    /// HOST:PORT of the gRPC cluster address.
    pub cluster: String,
    pub data_dir: PathBuf,
    pub stderr_path: PathBuf,
    /// (node id, cluster id), read from `/admin/status` when first needed.
    identity: OnceLock<(String, String)>,
}

impl NodeProc {
    /// Starts a node with `args` plus `--data-dir`; waits until it serves.
    pub fn start(data_dir: &Path, args: &[&str]) -> NodeProc {
        Self::try_start(data_dir, args, &[]).unwrap_or_else(|e| panic!("node did not start: {e}"))
    }

    pub fn try_start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<NodeProc, String> {
        std::fs::create_dir_all(data_dir).unwrap();
        let stderr_path = data_dir.with_extension("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--data-dir").arg(data_dir).stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, http, cluster) = spawn_ready(cmd, &stderr_path)?;
        let data_dir = data_dir.to_owned();
        Ok(NodeProc { child, http, cluster, data_dir, stderr_path, identity: OnceLock::new() })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `message` as a raw gRPC request to this node from a member: with the
    /// identity headers (`rpc::identity`, spelled out here as the contract
    /// they are), without which the node refuses internal calls. Call it
    /// outside async code: the first call asks `/admin/status` (blocking).
    pub fn member_request<T>(&self, message: T) -> tonic::Request<T> {
        let (node_id, cluster_id) = self.identity.get_or_init(|| {
            let s = wait_for("the node's /admin/status", Duration::from_secs(10), || status(self));
            (s["node_id"].as_str().unwrap().to_owned(), s["cluster_id"].as_str().unwrap().to_owned())
        });
        member_request(message, cluster_id, node_id, "test-client")
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (e.g. "TERM") without waiting; false if the process
    /// is gone.
    pub fn signal(&self, signal: &str) -> bool {
        send_signal(&self.child, signal)
    }

    /// Sends `signal` (e.g. "TERM") and waits up to `timeout` for exit.
    pub fn signal_and_wait(mut self, signal: &str, timeout: Duration) -> Option<ExitStatus> {
        assert!(send_signal(&self.child, signal));
        self.wait_exit(timeout)
    }
}

/// `message` as a raw gRPC request from member `from` of cluster
/// `cluster_id` (hex, as `/admin/status` shows it) to node `to_node`: the
/// identity headers of `rpc::identity`, without which a node refuses
/// internal calls.
pub fn member_request<T>(message: T, cluster_id: &str, to_node: &str, from: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("vc-cluster-id", cluster_id.parse().unwrap());
    metadata.insert("vc-to-node", to_node.parse().unwrap());
    metadata.insert("vc-from-node", from.parse().unwrap());
    request
}

/// Spawns `cmd` (a `vinzclortho` node, maybe behind a wrapper such as `ip
/// netns exec`) with its stdout piped, and waits up to [`START_TIMEOUT`] for
/// the readiness line. Returns the process and the HTTP and cluster
/// addresses the line names; if the process exits first, an error with the
/// log at `log` (where the caller sent its stderr); at the deadline it is
/// killed.
pub fn spawn_ready(mut cmd: Command, log: &Path) -> Result<(Child, String, String), String> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn vinzclortho");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let rest = line.strip_prefix(READY_PREFIX);
            if let Some(rest) = rest.and_then(|r| r.strip_prefix("http://").or_else(|| r.strip_prefix("https://"))) {
                let (http, cluster) = rest.trim().split_once(" cluster=").expect("ready line names both addresses");
                let _ = tx.send((http.to_owned(), cluster.to_owned()));
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((http, cluster)) => return Ok((child, http, cluster)),
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    return Err(format!("exited with {status}: {log}"));
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    return Err("no readiness line before the deadline".into());
                }
            }
        }
    }
}

/// Sends `signal` ("TERM", "STOP", "CONT") to `child`; false if `kill`
/// failed (the process is gone).
pub fn send_signal(child: &Child, signal: &str) -> bool {
    Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().is_ok_and(|s| s.success())
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that never waits forever.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Polls `check` until it returns `Some`, or panics with `what` at the
/// deadline. The only way tests wait for the cluster: never a bare sleep.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(timeout, Duration::from_millis(50), check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Calls `check` every `every` until it returns `Some`; `None` once
/// `timeout` has passed.
pub fn poll<T>(timeout: Duration, every: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// `/admin/status` of a node, if it answers.
pub fn status(node: &NodeProc) -> Option<serde_json::Value> {
    status_at(&node.http, Duration::from_secs(5))
}

/// `/admin/status` of the node serving HTTP at `http` (HOST:PORT), if it
/// answers within `timeout`.
pub fn status_at(http: &str, timeout: Duration) -> Option<serde_json::Value> {
    let r = client().get(format!("http://{http}/admin/status")).timeout(timeout).send().ok()?;
    r.json().ok()
}

/// Fast gossip so tests converge in seconds.
pub const FAST: &[&str] = &["--gossip-interval-ms", "100", "--failure-timeout-ms", "1500", "-p", "16"];

/// A cluster of real processes, node i on 127.0.<net>.<i+1>.
pub struct Cluster {
    pub nodes: Vec<Option<NodeProc>>,
    pub dir: tempfile::TempDir,
    net: u8,
    args: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes (the first creates the cluster, the others join it)
    /// and waits until every node sees every member up and the same ring.
    pub fn start(net: u8, n: usize) -> Cluster {
        Self::start_with(net, n, FAST)
    }

    /// The same with other node flags than [`FAST`].
    pub fn start_with(net: u8, n: usize, args: &[&str]) -> Cluster {
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut dir = tempfile::tempdir().unwrap();
        // To read the nodes' logs (`nodeN.stderr.log`) after a failure.
        if std::env::var_os("VC_KEEP_TEST_DATA").is_some() {
            dir.disable_cleanup(true);
            eprintln!("VC_KEEP_TEST_DATA: keeping {}", dir.path().display());
        }
        let mut c = Cluster { nodes: Vec::new(), dir, net, args };
        for _ in 0..n {
            c.add();
        }
        c.wait_converged(Duration::from_secs(120));
        c
    }

    pub fn ip(&self, i: usize) -> String {
        format!("127.0.{}.{}", self.net, i + 1)
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}"))
    }

    /// Starts one more node that joins through node 0 (or creates the
    /// cluster if it is the first).
    pub fn add(&mut self) -> usize {
        let i = self.nodes.len();
        let ip = self.ip(i);
        let (http, cluster) = (format!("{ip}:0"), format!("{ip}:0"));
        let mut args = vec!["-a", &http, "--cluster-address", &cluster];
        args.extend(self.args.iter().map(String::as_str));
        let seed = self.nodes.first().and_then(|n| n.as_ref()).map(|n| n.cluster.clone());
        if let Some(seed) = &seed {
            args.extend_from_slice(&["-j", seed]);
        }
        let node = NodeProc::start(&self.data_dir(i), &args);
        self.nodes.push(Some(node));
        i
    }

    pub fn node(&self, i: usize) -> &NodeProc {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn kill9(&mut self, i: usize) -> (String, String) {
        let node = self.nodes[i].take().expect("node is running");
        let addrs = (node.http.clone(), node.cluster.clone());
        node.kill9();
        addrs
    }

    /// Restarts node i on its old addresses and data directory.
    pub fn restart(&mut self, i: usize, http: &str, cluster: &str) {
        let mut args = vec!["-a", http, "--cluster-address", cluster];
        args.extend(self.args.iter().map(String::as_str));
        self.nodes[i] = Some(NodeProc::start(&self.data_dir(i), &args));
    }

    /// Node i lost its disk: its data directory is deleted, and it comes
    /// back on its old addresses, joining through node `seed`.
    pub fn wipe_and_rejoin(&mut self, i: usize, seed: usize) {
        let (http, cluster) = self.kill9(i);
        std::fs::remove_dir_all(self.data_dir(i)).unwrap();
        let seed = self.node(seed).cluster.clone();
        let mut args = vec!["-a", http.as_str(), "--cluster-address", cluster.as_str(), "-j", seed.as_str()];
        args.extend(self.args.iter().map(String::as_str));
        self.nodes[i] = Some(NodeProc::start(&self.data_dir(i), &args));
    }

    pub fn running(&self) -> impl Iterator<Item = &NodeProc> {
        self.nodes.iter().flatten()
    }

    /// Every running node sees every running node up and owning partitions,
    /// the same ring epoch, and no move in progress.
    pub fn wait_converged(&self, timeout: Duration) {
        let expected: Vec<String> = self.running().map(|n| n.http.clone()).collect();
        wait_for("the cluster to converge", timeout, || {
            let mut epochs = Vec::new();
            for node in self.running() {
                let s = status(node)?;
                // Up, and owning partitions (so the claimant's move is over).
                let up: Vec<String> = s["members"]
                    .as_array()?
                    .iter()
                    .filter(|m| m["status"] == "up" && m["claim"].as_u64() > Some(0))
                    .map(|m| m["address"].as_str().unwrap().to_owned())
                    .collect();
                if !expected.iter().all(|e| up.contains(e)) || s["ring"]["moving"] != false {
                    return None;
                }
                if s["members"].as_array()?.len() < expected.len() {
                    return None;
                }
                epochs.push(s["ring"]["epoch"].as_u64()?);
            }
            epochs.windows(2).all(|w| w[0] == w[1]).then_some(())
        });
    }
}
