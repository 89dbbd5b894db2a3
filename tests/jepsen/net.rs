//! The network the nodes live on, and the faults it can inject.
//!
//! `Netns` (root, `ip` and `nft` available): each node in its own network
//! namespace with one veth into a bridge in the test's namespace, on
//! 198.18.N.0/24 (RFC 2544's benchmarking range: ours, and neither private
//! nor public). Faults are nftables rules in the receiving node's namespace:
//! a real packet drop, both ways or one way, or random loss.
//!
//! `Loopback`: when namespaces are unavailable, nodes run on 127.0.N.x and
//! only process faults (crash, pause) can be injected; the run says so.
//!
//! Everything created is removed on drop, also when a test fails.

use std::process::Command;

pub enum Mode {
    Netns,
    Loopback,
}

pub struct Network {
    pub mode: Mode,
    /// Unique per run, in interface and namespace names.
    tag: String,
    subnet: u8,
    nodes: usize,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let works = |cmd: &[&str]| Command::new(cmd[0]).args(&cmd[1..]).output().is_ok_and(|o| o.status.success());
    root && works(&["ip", "-V"]) && works(&["nft", "--version"])
}

impl Network {
    /// Sets up `nodes` hosts; `subnet` keeps concurrent runs apart.
    pub fn new(nodes: usize, subnet: u8) -> Network {
        remove_leftovers();
        let tag = format!("vcj{}", std::process::id() % 100_000);
        let mode = if available() { Mode::Netns } else { Mode::Loopback };
        let mut net = Network { mode, tag, subnet, nodes };
        if matches!(net.mode, Mode::Netns)
            && let Err(e) = net.build()
        {
            eprintln!("jepsen: network namespaces unavailable ({e}); falling back to loopback");
            net.teardown();
            net.mode = Mode::Loopback;
        }
        net
    }

    pub fn describe(&self) -> String {
        match self.mode {
            Mode::Netns => format!(
                "network namespaces {}n0..{} on 198.18.{}.0/24 with nftables faults",
                self.tag,
                self.nodes - 1,
                self.subnet
            ),
            Mode::Loopback => "loopback 127.0.x.y without network faults (no root, ip or nft)".to_owned(),
        }
    }

    pub fn supports_network_faults(&self) -> bool {
        matches!(self.mode, Mode::Netns)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    pub fn ip(&self, i: usize) -> String {
        match self.mode {
            Mode::Netns => format!("198.18.{}.{}", self.subnet, i + 1),
            Mode::Loopback => format!("127.0.{}.{}", self.subnet, i + 1),
        }
    }

    /// The command prefix that runs a program on node `i`'s host.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        match self.mode {
            Mode::Netns => vec!["ip".into(), "netns".into(), "exec".into(), self.ns(i)],
            Mode::Loopback => vec![],
        }
    }

    fn build(&self) -> Result<(), String> {
        let br = self.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("198.18.{}.254/24", self.subnet), "dev", &br])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for i in 0..self.nodes {
            let (ns, host_if) = (self.ns(i), format!("{}h{i}", self.tag));
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run(&["ip", "link", "set", &host_if, "master", &br, "up"])?;
            let exec = |args: &[&str]| {
                let mut full = vec!["ip", "netns", "exec", ns.as_str()];
                full.extend_from_slice(args);
                run(&full)
            };
            exec(&["ip", "addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"])?;
            exec(&["ip", "link", "set", "eth0", "up"])?;
            exec(&["ip", "link", "set", "lo", "up"])?;
            exec(&["ip", "route", "add", "default", "via", &format!("198.18.{}.254", self.subnet)])?;
            exec(&["nft", "add", "table", "inet", "vcj"])?;
            exec(&[
                "nft",
                "add",
                "chain",
                "inet",
                "vcj",
                "input",
                "{ type filter hook input priority 0 ; policy accept ; }",
            ])?;
        }
        Ok(())
    }

    fn nft(&self, i: usize, rule: &str) {
        let ns = self.ns(i);
        let mut args = vec!["ip", "netns", "exec", ns.as_str(), "nft"];
        let owned: Vec<&str> = rule.split(' ').collect();
        args.extend(owned);
        if let Err(e) = run(&args) {
            panic!("jepsen: nft on node {i}: {e}");
        }
    }

    /// Node `to` drops every packet from node `from` (one way).
    pub fn drop_from(&self, to: usize, from: usize) {
        self.nft(to, &format!("add rule inet vcj input ip saddr {} drop", self.ip(from)));
    }

    /// Nodes in `a` and nodes in `b` cannot reach each other.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.drop_from(x, y);
                self.drop_from(y, x);
            }
        }
    }

    /// Node `to` loses `percent` % of the packets from the other nodes.
    pub fn lossy(&self, to: usize, percent: u32) {
        for from in (0..self.nodes).filter(|f| *f != to) {
            let rule =
                format!("add rule inet vcj input ip saddr {} numgen random mod 100 < {percent} drop", self.ip(from));
            self.nft(to, &rule);
        }
    }

    pub fn heal(&self) {
        if self.supports_network_faults() {
            for i in 0..self.nodes {
                self.nft(i, "flush chain inet vcj input");
            }
        }
    }

    fn teardown(&self) {
        for i in 0..self.nodes {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
    }
}

/// Namespaces and bridges of earlier runs whose process died without
/// cleaning up (killed by a timeout, say): ours by name, theirs no longer.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    let alive = |tag: &str| {
        tag.trim_start_matches("vcj").parse::<u32>().is_ok_and(|pid| {
            std::path::Path::new(&format!("/proc/{pid}")).exists() && pid % 100_000 != std::process::id() % 100_000
        })
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(tag) =
            name.strip_prefix("vcj").and_then(|rest| rest.split_once('n')).map(|(pid, _)| format!("vcj{pid}"))
            && !alive(&tag)
        {
            let _ = run(&["ip", "netns", "del", name]);
            let _ = run(&["ip", "link", "del", &format!("{tag}br")]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if matches!(self.mode, Mode::Netns) {
            self.teardown();
        }
    }
}
