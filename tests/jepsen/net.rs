//! The network the nodes live on, and the faults it can inject.
//!
//! `Netns` (root, `ip` and `nft` available): each node in its own network
//! namespace with one veth into a bridge in the test's namespace, on
//! 198.18.N.0/24 (RFC 2544's benchmarking range: ours, and neither private
//! nor public). Node-to-node traffic goes through the delay proxy on the
//! bridge (see `proxy`), so faults are nftables rules on the bridge side:
//! packets from node `from` to node `to`'s proxy port are really dropped,
//! both ways or one way, or randomly (loss).
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
    /// Unique per run, in interface, namespace and nftables table names.
    tag: String,
    subnet: u8,
    nodes: usize,
    /// The proxy port in front of each node's cluster port.
    proxy_ports: Vec<u16>,
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
        let mut net = Network { mode, tag, subnet, nodes, proxy_ports: Vec::new() };
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

    /// Where the delay proxy listens: the bridge, or loopback.
    pub fn proxy_ip(&self) -> String {
        match self.mode {
            Mode::Netns => format!("198.18.{}.254", self.subnet),
            Mode::Loopback => format!("127.0.{}.254", self.subnet),
        }
    }

    pub fn set_proxy_ports(&mut self, ports: Vec<u16>) {
        self.proxy_ports = ports;
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
        }
        // The fault rules live on the bridge side, where every node-to-node
        // packet arrives (at the proxy).
        run(&["nft", "add", "table", "inet", &self.tag])?;
        let chain = "{ type filter hook input priority 0 ; policy accept ; }";
        run(&["nft", "add", "chain", "inet", &self.tag, "input", chain])?;
        Ok(())
    }

    fn nft(&self, rule: &str) {
        let mut args = vec!["nft"];
        args.extend(rule.split(' '));
        if let Err(e) = run(&args) {
            panic!("jepsen: {e}");
        }
    }

    /// Node `to` receives nothing from node `from` (one way): packets from
    /// `from` to `to`'s proxy port are dropped.
    pub fn drop_from(&self, to: usize, from: usize) {
        let (tag, port) = (&self.tag, self.proxy_ports[to]);
        self.nft(&format!("add rule inet {tag} input ip saddr {} tcp dport {port} drop", self.ip(from)));
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
        let (tag, port) = (&self.tag, self.proxy_ports[to]);
        for from in (0..self.nodes).filter(|f| *f != to) {
            let ip = self.ip(from);
            self.nft(&format!(
                "add rule inet {tag} input ip saddr {ip} tcp dport {port} numgen random mod 100 < {percent} drop"
            ));
        }
    }

    pub fn heal(&self) {
        if self.supports_network_faults() {
            self.nft(&format!("flush chain inet {} input", self.tag));
        }
    }

    fn teardown(&self) {
        let _ = run(&["nft", "delete", "table", "inet", &self.tag]);
        for i in 0..self.nodes {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
            // Gone with its namespace, but that may outlive the name for a
            // moment; the next run reuses the name.
            let _ = run(&["ip", "link", "del", &format!("{}h{i}", self.tag)]);
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
            let _ = run(&["nft", "delete", "table", "inet", &tag]);
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
