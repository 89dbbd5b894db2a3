//! Real `vinzclortho` processes on the test network: start, crash, restart
//! on the same data directory, pause and resume, and roll a data directory
//! back to an earlier copy.

use std::path::PathBuf;
use std::process::{Child, Command};

use super::net::Network;
use crate::common::{BIN, send_signal, spawn_ready};

/// Short timeouts so that faults are noticed within a few seconds. Each node
/// also gets either its certificate (`tls`, the default) or, in plaintext,
/// [`PLAINTEXT_FLAGS`].
pub const NODE_FLAGS: &[&str] =
    &["-p", "16", "--gossip-interval-ms", "200", "--failure-timeout-ms", "2000", "--request-timeout-ms", "2000"];

/// In network namespaces the nodes listen on 198.18.x addresses (not
/// loopback), where a node without certificates refuses to start unless
/// told the cluster port may be plaintext (on a private bridge of the
/// test's own).
pub const PLAINTEXT_FLAGS: &[&str] = &["--insecure-cluster"];

/// NODE_FLAGS' `-p`.
const PARTITIONS: u32 = 16;

pub struct Node {
    pub index: usize,
    pub http: String,
    /// The advertised cluster address (the proxy in front of the node).
    pub cluster: String,
    /// Where the node's gRPC server listens.
    listen: String,
    data_dir: PathBuf,
    prefix: Vec<String>,
    env: Vec<(String, String)>,
    /// Its certificate flags (`tls::Certs::node_flags`) or [`PLAINTEXT_FLAGS`].
    security: Vec<String>,
    child: Option<Child>,
    pub paused: bool,
    /// The data directory is a tmpfs of ours (unmounted on drop).
    pub mounted: bool,
}

impl Node {
    /// Starts node `index` listening on `listen` and advertising `advertise`
    /// (its proxy); joins through `seed` (a cluster address) if given.
    /// `security`: its certificate flags, or [`PLAINTEXT_FLAGS`].
    pub fn start(
        net: &Network,
        index: usize,
        dir: &std::path::Path,
        (listen, advertise): (String, String),
        seed: Option<&str>,
        env: &[(&str, &str)],
        security: Vec<String>,
    ) -> Node {
        let ip = net.ip(index);
        let data_dir = dir.join(format!("node{index}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        // A size-capped tmpfs, so that the disk can be filled in a moment.
        let mounted = net.supports_network_faults()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=96m", "tmpfs"])
                .arg(&data_dir)
                .status()
                .is_ok_and(|s| s.success());
        let mut node = Node {
            index,
            http: format!("{ip}:0"),
            cluster: advertise,
            listen,
            data_dir,
            mounted,
            prefix: net.exec_prefix(index),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            security,
            child: None,
            paused: false,
        };
        node.spawn(seed);
        node
    }

    fn spawn(&mut self, seed: Option<&str>) {
        let mut args: Vec<String> = self.prefix.clone();
        args.push(BIN.to_owned());
        args.extend(
            ["-a", &self.http, "--cluster-address", &self.listen, "--cluster-advertise", &self.cluster]
                .map(str::to_owned),
        );
        args.extend(NODE_FLAGS.iter().map(|s| s.to_string()));
        args.extend(self.security.iter().cloned());
        args.push("--data-dir".into());
        args.push(self.data_dir.display().to_string());
        if let Some(seed) = seed {
            args.extend(["-j".to_owned(), seed.to_owned()]);
        }
        let log_path = self.data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("node log file");
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]).envs(self.env.iter().map(|(k, v)| (k, v))).stderr(log);
        let (child, http, cluster) =
            spawn_ready(cmd, &log_path).unwrap_or_else(|e| panic!("node {} did not start: {e}", self.index));
        // Restarts come back on the same addresses.
        assert_eq!(cluster, self.cluster, "the node advertises its proxy");
        self.http = http;
        self.child = Some(child);
        self.paused = false;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            send_signal(child, signal);
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running node");
        self.spawn(None);
    }

    /// The disk is lost: the data directory is emptied while the node is
    /// down.
    pub fn lose_disk(&mut self) {
        self.kill9();
        self.empty_data_dir();
    }

    /// The node's objects are lost but it keeps its identity (node id,
    /// cluster state): killed, every object of every partition deleted
    /// from its store, restarted at once. Only anti-entropy (or read
    /// repair) brings the objects back: it has no handoff to wait for.
    pub fn wipe_objects(&mut self) {
        use vinzclortho::storage::{RocksOptions, RocksStore, Store};
        self.kill9();
        {
            let store =
                RocksStore::open(&self.data_dir, &RocksOptions { sync_writes: true, ..RocksOptions::default() })
                    .expect("open the store");
            for p in 0..PARTITIONS {
                let keys: Vec<_> = store.scan_partition(p).expect("scan").map(|e| e.expect("entry").0).collect();
                for key in &keys {
                    store.remove(p, key).expect("remove an object");
                }
            }
        }
        self.spawn(None);
    }

    /// Empties the data directory (it may be a mount point, so its
    /// contents go, not itself).
    fn empty_data_dir(&self) {
        for entry in std::fs::read_dir(&self.data_dir).expect("data directory") {
            let path = entry.unwrap().path();
            if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }
                .expect("delete the data directory's contents");
        }
    }

    /// Copies the data directory to `to` as it is at one instant: the node
    /// is stopped (SIGSTOP) for the copy, as a power cut would stop it.
    pub fn snapshot(&mut self, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("snapshot directory");
        self.pause();
        let copied = Command::new("cp").arg("-a").arg(self.data_dir.join(".")).arg(to).status();
        self.resume();
        assert!(copied.is_ok_and(|s| s.success()), "copy of node {}'s data directory", self.index);
    }

    /// kill -9, then the data directory is replaced by the copy at `from`
    /// and the node restarts on it, having forgotten everything since.
    pub fn restore(&mut self, from: &std::path::Path) {
        self.kill9();
        self.empty_data_dir();
        let copied = Command::new("cp").arg("-a").arg(from.join(".")).arg(&self.data_dir).status();
        assert!(copied.is_ok_and(|s| s.success()), "restore of node {}'s data directory", self.index);
        self.spawn(None);
    }

    fn filler(&self) -> PathBuf {
        self.data_dir.join("filler")
    }

    /// Fills the node's (size-capped) disk to the last byte.
    pub fn fill_disk(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).expect("filler file");
        let chunk = vec![0u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        // The last partial megabyte too.
        while file.write_all(&chunk[..4096]).is_ok() {}
        let _ = file.sync_all();
    }

    pub fn free_disk(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    /// Starts a node whose disk was lost: a new node at the same address,
    /// joining through `seed`.
    pub fn rejoin(&mut self, seed: &str) {
        assert!(self.child.is_none(), "rejoin of a running node");
        self.spawn(Some(seed));
    }

    pub fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal("CONT");
        self.paused = false;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill9();
        if self.mounted {
            let _ = Command::new("umount").arg(&self.data_dir).status();
        }
    }
}
