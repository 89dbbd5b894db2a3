//! `-j` takes a member's HTTP address as well as its cluster address, so
//! that the original's own setup instructions (parbo/vinzclortho's README)
//! work as written: its joining nodes name the first node's HTTP address.
//!
//! * The original's session verbatim ([`SESSION`]): one node with `-p 1024`,
//!   seven joining with `-j mymachine_1:8880`, a PUT through one node and a
//!   GET through another, every answer checked. `mymachine` and
//!   `mymachine_1` are host names: the session runs in a network namespace
//!   of its own whose `/etc/netns/NS/hosts` (which `ip netns exec` mounts
//!   over `/etc/hosts`) names the namespace's address so; this needs root
//!   and `ip`, and without them the test says so and checks nothing.
//! * `-j` with an HTTP address and with a cluster address both join, and the
//!   log says which was used; over HTTPS too.
//! * `-j` at a server that is no member fails at once with one clear line.
//! * `GET /cluster/address` needs no token with `--security` on.
//!
//! Loopback nets 127.0.165.0/24 to 127.0.168.0/24; namespace `vcos<pid>`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, FAST, NodeProc, client, spawn_ready, status, wait_for};

/// The original's README session, as written there (the seven joining
/// lines, which the README writes out one by one, are all alike). The test
/// runs each line as it is, in a shell in the namespace, the nodes in the
/// background as `&` would (each once the one before it serves); between
/// the last node and the first `curl` it waits until every node knows the
/// other seven, as someone typing would.
const SESSION: &str = r#"vinzclortho -a mymachine:8880 -p 1024 &
vinzclortho -a mymachine:8881 -j mymachine_1:8880 &
vinzclortho -a mymachine:8882 -j mymachine_1:8880 &
vinzclortho -a mymachine:8883 -j mymachine_1:8880 &
vinzclortho -a mymachine:8884 -j mymachine_1:8880 &
vinzclortho -a mymachine:8885 -j mymachine_1:8880 &
vinzclortho -a mymachine:8886 -j mymachine_1:8880 &
vinzclortho -a mymachine:8887 -j mymachine_1:8880 &
curl -i -X PUT -d "testvalue" -H "X-VinzClortho-ClientID: myclientid" http://mymachine:8883/store/testkey
curl -i http://mymachine:8887/store/testkey
"#;

/// The address `mymachine` and `mymachine_1` name in the namespace: the
/// one Debian's installer gives the machine's own name in /etc/hosts
/// (127.0.1.1), on the namespace's loopback.
const MYMACHINE_IP: &str = "127.0.1.1";

/// A network namespace with loopback up, `MYMACHINE_IP` on it, and a hosts
/// file naming it `mymachine` and `mymachine_1`; removed on drop.
struct Namespace {
    name: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let root =
            Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            return Err("not root".into());
        }
        let ns = Namespace { name: format!("vcos{}", std::process::id() % 100_000) };
        // A namespace of this name left by a killed run of this test.
        ns.remove();
        let hosts = format!("127.0.0.1 localhost\n{MYMACHINE_IP} mymachine mymachine_1\n");
        std::fs::create_dir_all(ns.etc()).map_err(|e| e.to_string())?;
        std::fs::write(ns.etc().join("hosts"), hosts).map_err(|e| e.to_string())?;
        run(&["ip", "netns", "add", &ns.name])?;
        // 127.0.0.0/8 is on loopback once it is up.
        run(&["ip", "netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn etc(&self) -> std::path::PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// `sh -c line` in the namespace, in `dir`, with the binary under test
    /// first on the PATH as `vinzclortho`.
    fn shell(&self, dir: &Path, line: &str, env: &[(&str, &str)]) -> Command {
        let bin_dir = Path::new(BIN).parent().unwrap();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, "sh", "-c", line]).current_dir(dir).env("PATH", path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn remove(&self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(self.etc());
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A node process, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `curl` line of the session, bounded in time: its output.
fn curl(ns: &Namespace, dir: &Path, line: &str) -> String {
    let line = line.replacen("curl ", "curl -sS --max-time 30 ", 1);
    let out = ns.shell(dir, &line, &[]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `/admin/status` of the node at `address`, asked inside the namespace.
fn ns_status(ns: &Namespace, dir: &Path, address: &str) -> Option<serde_json::Value> {
    let out = ns
        .shell(dir, &format!("curl -sS --max-time 10 http://{address}/admin/status"), &[])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn the_originals_setup_session_runs_verbatim() {
    let ns = match Namespace::create() {
        Ok(ns) => ns,
        Err(e) => {
            println!("original_setup: needs a network namespace of its own (root, `ip`): {e}; not run");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = SESSION.lines().collect();
    let (starts, requests): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| l.ends_with(" &"));
    assert_eq!((starts.len(), requests.len()), (8, 2));

    // `mymachine` names a loopback address, as on one Debian machine, so
    // the plaintext cluster ports need no certificates and no
    // --insecure-cluster: the lines run exactly as written.

    let mut nodes = Vec::new();
    let mut logs = Vec::new();
    for (i, line) in starts.iter().enumerate() {
        let log = dir.path().join(format!("node{i}.log"));
        let mut cmd = ns.shell(dir.path(), &format!("exec {}", line.trim_end_matches(" &")), &[]);
        cmd.stdin(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let (child, http, _) = spawn_ready(cmd, &log).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(http, format!("mymachine:888{i}"));
        nodes.push(Running(child));
        logs.push(log);
    }
    // The data directories are where the original kept them: under the
    // current directory.
    for i in 0..8 {
        assert!(dir.path().join(format!("vinzclortho-data/mymachine_888{i}")).is_dir(), "node {i}'s data");
    }
    for (i, log) in logs.iter().enumerate().skip(1) {
        let log = std::fs::read_to_string(log).unwrap();
        assert!(
            log.contains("joining through cluster address mymachine:9880 (given HTTP address mymachine_1:8880)"),
            "node {i}: {log}"
        );
    }

    // What someone typing the session waits for: every node knows the other
    // seven, up. The ring is still moving then (1024 partitions hand off
    // one at a time: minutes on two loaded cores), and the answers must be
    // right all the same.
    let addresses: Vec<String> = (0..8).map(|i| format!("mymachine:888{i}")).collect();
    let started = Instant::now();
    wait_for("every node to see the eight members up", Duration::from_secs(120), || {
        addresses
            .iter()
            .all(|address| {
                let up = ns_status(&ns, dir.path(), address).and_then(|s| {
                    let members = s["members"].as_array()?.clone();
                    Some(members.iter().filter(|m| m["status"] == "up").count())
                });
                up == Some(8)
            })
            .then_some(())
    });
    println!("original_setup: the eight members knew each other {:?} after the last start", started.elapsed());

    let put = curl(&ns, dir.path(), requests[0]);
    assert!(put.starts_with("HTTP/1.1 200 OK\r\n"), "{put}");
    let get = curl(&ns, dir.path(), requests[1]);
    assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
    let (head, body) = get.split_once("\r\n\r\n").unwrap();
    let context = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-vinzclortho-context").then(|| value.trim().to_owned())
    });
    assert!(context.is_some_and(|c| !c.is_empty()), "{head}");
    assert_eq!(body, "testvalue");
    drop(nodes);
}

/// The node's stderr so far.
fn log(node: &NodeProc) -> String {
    std::fs::read_to_string(&node.stderr_path).unwrap()
}

/// How many members `node` sees up.
fn members_up(node: &NodeProc) -> Option<usize> {
    let s = status(node)?;
    Some(s["members"].as_array()?.iter().filter(|m| m["status"] == "up").count())
}

#[test]
fn join_takes_a_members_http_address_or_its_cluster_address() {
    let dir = tempfile::tempdir().unwrap();
    let start = |i: usize, extra: &[&str]| {
        let address = format!("127.0.165.{}:0", i + 1);
        let mut args = vec!["-a", &address, "--cluster-address", &address, "--storage", "memory"];
        args.extend(FAST);
        args.extend(extra);
        NodeProc::start(&dir.path().join(format!("n{i}")), &args)
    };
    let a = start(0, &[]);
    let by_http = start(1, &["-j", &a.http]);
    let by_cluster = start(2, &["-j", &a.cluster]);
    let by_url = start(3, &["-j", &format!("http://{}/", a.http)]);
    wait_for("four members up everywhere", Duration::from_secs(60), || {
        [&a, &by_http, &by_cluster, &by_url].iter().all(|n| members_up(n) == Some(4)).then_some(())
    });
    let from_http = format!("joining through cluster address {} (given HTTP address {})", a.cluster, a.http);
    assert!(log(&by_http).contains(&from_http), "{}", log(&by_http));
    let from_url = format!("(given HTTP address http://{}/)", a.http);
    assert!(log(&by_url).contains(&from_url), "{}", log(&by_url));
    let direct = log(&by_cluster);
    assert!(direct.contains(&format!("joined through cluster address {}", a.cluster)), "{direct}");
    assert!(!direct.contains("given HTTP address"), "{direct}");
    // And the cluster they form works: written through one, read through
    // another.
    let r = client().put(by_http.url("/store/k")).body("v").send().unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(by_url.url("/store/k")).send().unwrap();
    assert_eq!((r.status().as_u16(), r.text().unwrap()), (200, "v".to_owned()));
}

/// A web server that is no member: it answers every request (HTTP/1.1 or
/// HTTP/2, so the cluster protocol's call too) with 200 and a page.
fn stranger(ip: &str) -> (String, std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let ip = ip.to_owned();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.unwrap();
            addr_tx.send(listener.local_addr().unwrap().to_string()).unwrap();
            let page = "<html>\n  <body>It works!</body>\n</html>\n";
            let app = axum::Router::new().fallback(move || async move { page });
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    (addr_rx.recv_timeout(Duration::from_secs(10)).unwrap(), thread, stop)
}

/// Starts a new node that joins through `address`, and waits for it to
/// exit (it cannot join: these tests are about how it says so).
fn join_once(address: &str, dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["-a", "127.0.166.1:0", "--storage", "memory", "-j", address])
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn join_at_a_server_that_is_no_member_fails_at_once_with_one_clear_line() {
    let (address, thread, stop) = stranger("127.0.166.9");
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = join_once(&address, dir.path());
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = format!("vinzclortho: -j {address}: not a Vinz Clortho member: ");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&line)).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    // It names what each question got: the page is no cluster address.
    assert!(lines[0].contains("/cluster/address answered 200 OK with no cluster address"), "{}", lines[0]);
    assert!(lines[0].contains("<html> <body>It works!</body> </html>"), "{}", lines[0]);
    // No retrying: one answer is enough (a member merely not up yet gets
    // ten seconds of retries, see `nobody_there_is_retried_then_refused`).
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(took < Duration::from_secs(9), "took {took:?}: {stderr}");
    let _ = stop.send(());
    thread.join().unwrap();
}

#[test]
fn nobody_there_is_retried_then_refused() {
    // A port nobody listens on: a member that is not up yet, for all the
    // node can tell. It asks for the join patience, then gives up.
    let port = std::net::TcpListener::bind("127.0.166.2:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.166.2:{port}");
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = join_once(&address, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(10), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains(&format!("vinzclortho: cannot join the cluster through {address}: ")), "{stderr}");
    assert!(!stderr.contains("not a Vinz Clortho member"), "{stderr}");
}

#[test]
fn the_cluster_address_needs_no_token_with_security_on_and_joins_work() {
    let dir = tempfile::tempdir().unwrap();
    let start = |i: usize, extra: &[&str]| {
        let address = format!("127.0.167.{}:0", i + 1);
        let mut args = vec!["-a", &address, "--cluster-address", &address, "--storage", "memory", "--security"];
        args.extend(FAST);
        args.extend(extra);
        NodeProc::start(&dir.path().join(format!("n{i}")), &args)
    };
    let a = start(0, &[]);
    // Security is on: the rest of the API wants a token.
    assert_eq!(client().get(a.url("/admin/status")).send().unwrap().status(), 401);
    let r = client().get(a.url("/cluster/address")).send().unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().unwrap();
    assert_eq!(answer["cluster_address"], a.cluster.as_str());
    let token = std::fs::read_to_string(a.data_dir.join("admin.token")).unwrap();
    let s: serde_json::Value =
        client().get(a.url("/admin/status")).bearer_auth(token.trim()).send().unwrap().json().unwrap();
    assert_eq!(answer["node_id"], s["node_id"]);
    // `/ping` stays what it was.
    assert_eq!(client().get(a.url("/ping")).send().unwrap().text().unwrap(), "OK");

    let b = start(1, &["-j", &a.http]);
    let joined = format!("joining through cluster address {} (given HTTP address {})", a.cluster, a.http);
    assert!(log(&b).contains(&joined), "{}", log(&b));
    let members = |node: &NodeProc| -> Option<usize> {
        let r = client().get(node.url("/admin/status")).bearer_auth(token.trim()).send().ok()?;
        let s: serde_json::Value = r.json().ok()?;
        Some(s["members"].as_array()?.iter().filter(|m| m["status"] == "up").count())
    };
    wait_for("both members up on both", Duration::from_secs(60), || {
        (members(&a) == Some(2) && members(&b) == Some(2)).then_some(())
    });
}

/// `vinzclortho certs ...`, which must succeed.
fn certs(args: &[&str]) {
    let out = Command::new(BIN).arg("certs").args(args).output().unwrap();
    assert!(out.status.success(), "certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn join_takes_an_https_address_trusting_the_cluster_ca() {
    // Both ports certified by the cluster's CA: mutual TLS between nodes
    // and HTTPS for clients. The joiner trusts the HTTPS port through
    // --tls-ca.
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs(&["init", "--dir", certs_dir.to_str().unwrap()]);
    let start = |i: usize, extra: &[&str]| {
        let ip = format!("127.0.168.{}", i + 1);
        let name = format!("n{i}");
        certs(&["node", "--dir", certs_dir.to_str().unwrap(), "--name", &name, "--host", &ip]);
        let file = |ext: &str| certs_dir.join(format!("{name}.{ext}")).to_str().unwrap().to_owned();
        let (ca, cert, key) = (certs_dir.join("ca.pem").to_str().unwrap().to_owned(), file("pem"), file("key"));
        let address = format!("{ip}:0");
        let mut args = vec!["-a", &address, "--cluster-address", &address, "--storage", "memory"];
        args.extend(["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
        args.extend(["--http-tls-cert", &cert, "--http-tls-key", &key]);
        args.extend(FAST);
        args.extend(extra);
        NodeProc::start(&dir.path().join(&name), &args)
    };
    let a = start(0, &[]);
    let bare = start(1, &["-j", &a.http]);
    let url = start(2, &["-j", &format!("https://{}", a.http)]);
    for (node, given) in [(&bare, a.http.clone()), (&url, format!("https://{}", a.http))] {
        let joined = format!("joining through cluster address {} (given HTTP address {given})", a.cluster);
        assert!(log(node).contains(&joined), "{}", log(node));
    }
}
