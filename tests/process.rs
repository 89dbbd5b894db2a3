//! The real binary over real sockets: durability across kill -9, startup
//! errors, signals, configuration sources.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{BIN, NodeProc, client};
use reqwest::StatusCode;

const CTX: &str = "x-vinzclortho-context";

fn context(r: &reqwest::blocking::Response) -> Option<String> {
    r.headers().get(CTX).map(|v| v.to_str().unwrap().to_owned())
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let node = NodeProc::start(&data, &["-a", "127.0.0.1:0"]);
    let http = client();
    for i in 0..200 {
        let r = http.put(node.url(&format!("/store/key{i}"))).body(format!("value{i}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Siblings and a tombstone must survive too, with their contexts.
    for v in ["left", "right"] {
        http.put(node.url("/store/siblings")).body(v).send().unwrap();
    }
    http.put(node.url("/store/deleted")).body("x").send().unwrap();
    let ctx = context(&http.get(node.url("/store/deleted")).send().unwrap()).unwrap();
    let r = http.delete(node.url("/store/deleted")).header(CTX, &ctx).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sibling_ctx = context(&http.get(node.url("/store/siblings")).send().unwrap()).unwrap();
    // The last write was acknowledged; crash right after it.
    let last = http.put(node.url("/store/last")).body("final").send().unwrap();
    assert_eq!(last.status(), StatusCode::OK);
    node.kill9();

    let node = NodeProc::start(&data, &["-a", "127.0.0.1:0"]);
    for i in 0..200 {
        let r = http.get(node.url(&format!("/store/key{i}"))).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "key{i}");
        assert_eq!(r.text().unwrap(), format!("value{i}"));
    }
    assert_eq!(http.get(node.url("/store/last")).send().unwrap().text().unwrap(), "final");
    let r = http.get(node.url("/store/siblings")).send().unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    assert_eq!(context(&r).as_deref(), Some(sibling_ctx.as_str()));
    let body = r.text().unwrap();
    assert!(body.contains("left") && body.contains("right"), "{body}");
    let r = http.get(node.url("/store/deleted")).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(context(&r).is_some(), "the tombstone's context survives");
    // The restarted node keeps stamping new versions after the old ones:
    // a write with the old context supersedes both siblings.
    let r = http.put(node.url("/store/siblings")).header(CTX, &sibling_ctx).body("one").send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(http.get(node.url("/store/siblings")).send().unwrap().text().unwrap(), "one");
}

#[test]
fn partition_count_is_fixed_by_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    NodeProc::start(&data, &["-a", "127.0.0.1:0", "-p", "128"]).kill9();
    let err = NodeProc::try_start(&data, &["-a", "127.0.0.1:0", "-p", "64"], &[]).err().unwrap();
    assert!(err.contains("created for 128 partitions"), "{err}");
    let node = NodeProc::start(&data, &["-a", "127.0.0.1:0"]);
    let status: serde_json::Value = client().get(node.url("/admin/status")).send().unwrap().json().unwrap();
    assert_eq!(status["partitions"], 128);
}

#[test]
fn bad_flags_exit_with_a_message() {
    for (args, code, needle) in [
        (&["-p", "100"][..], Some(2), "power of two"),
        (&["-a", "127.0.0.1"][..], Some(2), "HOST:PORT"),
        (&["--storage", "floppy"][..], Some(2), "floppy"),
        (&["-r", "5"][..], Some(2), "between 1 and n_val"),
        (&["-a", "127.0.0.1:0", "-j", "127.0.0.1:9"][..], Some(1), "cannot join the cluster through 127.0.0.1:9"),
        (&["--config", "/nonexistent/vc.toml"][..], Some(2), "cannot read config file"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(BIN).args(args).arg("--data-dir").arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), code, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let err = NodeProc::try_start(&dir.path().join("n"), &["-a", &addr], &[]).err().unwrap();
    assert!(err.contains("cannot listen on") && err.contains(&addr), "{err}");
}

#[test]
fn help_documents_every_option_and_its_environment_variable() {
    let out = std::process::Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--address",
        "--partitions",
        "--join",
        "--cluster-address",
        "--data-dir",
        "--storage",
        "--sync-writes",
        "--n-val",
        "--max-value-bytes",
        "--config",
        "VINZCLORTHO_ADDRESS",
        "VINZCLORTHO_N_VAL",
        "--http-tls-cert",
        "VINZCLORTHO_HTTP_TLS_KEY",
        "--shutdown-grace-ms",
        "VINZCLORTHO_SHUTDOWN_GRACE_MS",
        "serve",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn environment_and_config_file_configure_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "partitions = 16\nn_val = 5\nr = 3\n").unwrap();
    let env = [("VINZCLORTHO_W", "4"), ("VINZCLORTHO_CONFIG", file.to_str().unwrap())];
    let node = NodeProc::try_start(&dir.path().join("n"), &["-a", "127.0.0.1:0", "-r", "1"], &env).unwrap();
    let s: serde_json::Value = client().get(node.url("/admin/status")).send().unwrap().json().unwrap();
    assert_eq!((s["partitions"].as_u64(), s["n_val"].as_u64()), (Some(16), Some(5)));
    assert_eq!((s["r"].as_u64(), s["w"].as_u64()), (Some(1), Some(4)), "flag beats file, env beats default");
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&dir.path().join("n"), &["-a", "127.0.0.1:0"]);
    let status = node.signal_and_wait("TERM", Duration::from_secs(20)).expect("node exits after SIGTERM");
    assert!(status.success(), "{status}");
}

/// A PUT of `key` in flight: its headers promise a 10-byte body and ask
/// for `100 Continue`, which the node sends once the handler reads the
/// body; the body is not sent yet.
fn put_in_flight(node: &NodeProc, key: &str) -> TcpStream {
    let mut s = TcpStream::connect(&node.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "PUT /store/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the node closed the connection: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&head));
    s
}

/// From SIGTERM on, every new request (`/ping` too, for load balancers) is
/// answered 503 saying the node is shutting down and did nothing, while a
/// request already in flight finishes; then the node exits 0, its write on
/// disk.
#[test]
fn sigterm_refuses_new_requests_with_503_and_finishes_those_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let node = NodeProc::start(&data, &["-a", "127.0.0.1:0", "--shutdown-grace-ms", "30000"]);
    let http = client();
    assert_eq!(http.get(node.url("/ping")).send().unwrap().status(), StatusCode::OK);
    let mut in_flight = put_in_flight(&node, "slow");
    assert!(node.signal("TERM"));
    let ping = common::wait_for("/ping to answer 503", Duration::from_secs(10), || {
        let r = http.get(node.url("/ping")).send().ok()?;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    });
    assert_eq!(ping.headers()["x-vinzclortho-shutting-down"], "true");
    assert_eq!(ping.headers()["connection"], "close");
    assert!(ping.text().unwrap().contains("shutting down"));
    let refused = http.put(node.url("/store/late")).body("x").send().unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["x-vinzclortho-shutting-down"], "true");
    // The request in flight completes, and its connection is closed after.
    in_flight.write_all(b"abcdefghij").unwrap();
    let mut reply = String::new();
    in_flight.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    let mut node = node;
    let status = node.wait_exit(Duration::from_secs(30)).expect("the node exits once nothing is in flight");
    assert!(status.success(), "{status}");
    drop(node);

    let node = NodeProc::start(&data, &["-a", "127.0.0.1:0"]);
    assert_eq!(http.get(node.url("/store/slow")).send().unwrap().text().unwrap(), "abcdefghij");
    assert_eq!(
        http.get(node.url("/store/late")).send().unwrap().status(),
        StatusCode::NOT_FOUND,
        "refused: not stored"
    );
}

/// A request that never ends does not hold the node up past
/// `--shutdown-grace-ms`.
#[test]
fn shutdown_grace_bounds_a_request_that_never_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(&dir.path().join("n"), &["-a", "127.0.0.1:0", "--shutdown-grace-ms", "1000"]);
    let _stuck = put_in_flight(&node, "stuck");
    let started = std::time::Instant::now();
    assert!(node.signal("TERM"));
    // 1 s of grace; the rest is slack for a loaded machine. Without the
    // bound the node waits for the body forever.
    let status = node.wait_exit(Duration::from_secs(20)).expect("the node exits after its grace period");
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&node.stderr_path).unwrap();
    assert!(log.contains("still in flight at the end of the shutdown grace period"), "{log}");
    eprintln!("stopped {:?} after SIGTERM with a request stuck in flight", started.elapsed());
}

/// A port nobody listens on now (bound by the OS's choice, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A starting node refuses HTTP connections until it serves, so that a
/// client (a load balancer, `bench --failover`) goes to another node at once
/// instead of waiting on this one. Here the node waits for a seed that does
/// not answer (a new node keeps asking for 10 s) with its ports bound.
#[test]
fn a_starting_node_refuses_connections_until_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (http, cluster, seed) = (free_port(), free_port(), free_port());
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(BIN)
        .args(["-a", &format!("127.0.0.1:{http}"), "--cluster-address", &format!("127.0.0.1:{cluster}")])
        .args(["-j", &format!("127.0.0.1:{seed}"), "--data-dir"])
        .arg(dir.path().join("n"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Bound, and starting: it asks the seed again and again.
    common::wait_for("the node to retry its join", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).unwrap().contains("join failed; retrying").then_some(())
    });
    let connect = TcpStream::connect_timeout(&format!("127.0.0.1:{http}").parse().unwrap(), Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let error = connect.expect_err("a connection to a node that does not serve yet");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
}

/// Keys longer than a URI can carry are refused by the HTTP layer with 414.
#[test]
fn overlong_request_target_is_414_on_a_real_socket() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&dir.path().join("n"), &["-a", "127.0.0.1:0"]);
    let mut s = TcpStream::connect(&node.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let key = "k".repeat(70_000);
    write!(s, "PUT /store/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 414"), "{:.80}", reply);
    // And the node still serves.
    assert_eq!(client().get(node.url("/ping")).send().unwrap().text().unwrap(), "OK");
}

/// The one-shot tools keep the default signal handling: Ctrl-C (SIGINT)
/// ends `admin wait-healthy` at once, where the node's own handlers (which
/// drain instead) used to swallow it for the whole timeout.
#[test]
fn ctrl_c_ends_an_admin_command_at_once() {
    use std::os::unix::process::ExitStatusExt;
    // Nothing listens there: wait-healthy keeps asking until its timeout.
    let port = free_port();
    let mut child = std::process::Command::new(common::BIN)
        .args(["admin", "--node", &format!("127.0.0.1:{port}"), "wait-healthy", "--timeout", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(common::send_signal(&child, "INT"));
    let ended = common::poll(Duration::from_secs(10), Duration::from_millis(50), || child.try_wait().unwrap());
    let Some(status) = ended else {
        let _ = child.kill();
        panic!("admin wait-healthy ignored SIGINT");
    };
    assert_eq!(status.signal(), Some(2), "{status:?}");
}
