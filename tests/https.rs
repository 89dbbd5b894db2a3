//! HTTPS on the HTTP port (`--http-tls-cert`, `--http-tls-key`), with real
//! processes on 127.0.151.0/24 to 127.0.154.0/24 and certificates made by
//! `vinzclortho certs`: reads and writes over HTTPS (HTTP/1.1, and HTTP/2 by
//! ALPN) checked against the CA; a plaintext request and a client of another
//! CA refused and counted while the node keeps serving; stalled connections
//! that do not hold up others; a certificate rotated without a restart; the
//! admin CLI and the benchmark with `--cacert` against a 3-node cluster; and
//! the startup errors of bad certificate flags.

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::https::{Answer, request, trusting};
use common::{BIN, FAST, NodeProc, poll, wait_for};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

const CONVERGE: Duration = Duration::from_secs(60);
const REQUEST: Duration = Duration::from_secs(10);

/// `vinzclortho certs ...`, which must succeed.
fn certs(args: &[&str]) {
    let out = Command::new(BIN).arg("certs").args(args).output().unwrap();
    assert!(out.status.success(), "certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA in `dir` and a certificate `name` for `host`, signed by it.
fn ca_and_certificate(dir: &Path, name: &str, host: &str) {
    if !dir.join("ca.pem").exists() {
        certs(&["init", "--dir", dir.to_str().unwrap()]);
    }
    certs(&["node", "--dir", dir.to_str().unwrap(), "--name", name, "--host", host]);
}

fn https_args(dir: &Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned())
}

/// A node on `ip` serving HTTPS with certificate `name` of `certs_dir`.
fn start_https_node(data_dir: &Path, ip: &str, certs_dir: &Path, name: &str, extra: &[&str]) -> NodeProc {
    let address = format!("{ip}:0");
    let (cert, key) = https_args(certs_dir, name);
    let mut args = vec!["-a", &address, "--cluster-address", &address, "--storage", "memory"];
    args.extend(["--http-tls-cert", &cert, "--http-tls-key", &key]);
    args.extend(FAST);
    args.extend(extra);
    NodeProc::start(data_dir, &args)
}

/// One request without extra headers ([`common::https::request`]).
fn https(
    address: &str,
    config: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<Answer, String> {
    request(address, config, method, path, &[], body)
}

/// A GET over HTTP/2, chosen by ALPN (the client offers only h2): the
/// status and body, or what failed.
fn get_h2(address: &str, config: &Arc<rustls::ClientConfig>, path: &str) -> Result<(u16, String), String> {
    let mut config = (**config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let exchange = async {
        let tcp = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(address.rsplit_once(':').unwrap().0.to_owned()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(b"h2") {
            return Err(format!("ALPN chose {alpn:?}, not h2"));
        }
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        let uri = format!("https://{address}{path}");
        let request = http::Request::builder().uri(uri).body(Full::new(Bytes::new())).unwrap();
        let response = sender.send_request(request).await.map_err(|e| format!("exchange: {e}"))?;
        assert_eq!(response.version(), http::Version::HTTP_2);
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    runtime.block_on(async { tokio::time::timeout(REQUEST, exchange).await.unwrap_or(Err("timed out".into())) })
}

fn put(node: &NodeProc, config: &Arc<rustls::ClientConfig>, key: &str, value: &str) {
    let answer = https(&node.http, config, "PUT", &format!("/store/{key}"), value).unwrap();
    assert_eq!(answer.status, 200, "PUT {key}: {}", answer.body);
}

fn get(node: &NodeProc, config: &Arc<rustls::ClientConfig>, key: &str) -> Option<String> {
    let answer = https(&node.http, config, "GET", &format!("/store/{key}"), "").ok()?;
    (answer.status == 200).then_some(answer.body)
}

fn status(node: &NodeProc, config: &Arc<rustls::ClientConfig>) -> Option<serde_json::Value> {
    let answer = https(&node.http, config, "GET", "/admin/status", "").ok()?;
    serde_json::from_str(&answer.body).ok()
}

/// `vinzclortho_http_tls_handshake_failures_total{reason}` of a node.
fn handshake_failures(node: &NodeProc, config: &Arc<rustls::ClientConfig>, reason: &str) -> u64 {
    let metrics = https(&node.http, config, "GET", "/metrics", "").unwrap().body;
    let prefix = format!("vinzclortho_http_tls_handshake_failures_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

fn wait_counted(node: &NodeProc, config: &Arc<rustls::ClientConfig>, reason: &str, before: u64) {
    poll(REQUEST, Duration::from_millis(50), || (handshake_failures(node, config, reason) > before).then_some(()))
        .unwrap_or_else(|| panic!("no HTTP handshake failure counted with reason {reason}"));
}

#[test]
fn a_node_serves_https_only_and_refuses_plaintext_and_strangers_while_it_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let ip = "127.0.151.1";
    ca_and_certificate(&certs_dir, "web", ip);
    let node = start_https_node(&dir.path().join("node"), ip, &certs_dir, "web", &[]);
    let ours = trusting(&certs_dir.join("ca.pem"));

    put(&node, &ours, "greeting", "hello over tls");
    assert_eq!(get(&node, &ours, "greeting").as_deref(), Some("hello over tls"));
    let h2 = get_h2(&node.http, &ours, "/store/greeting").unwrap();
    assert_eq!(h2, (200, "hello over tls".to_owned()), "HTTP/2 by ALPN");
    let s = status(&node, &ours).unwrap();
    assert_eq!(s["http_tls"], true, "/admin/status says the HTTP port is TLS: {s}");
    // The advertised address stays HOST:PORT, without a scheme.
    assert_eq!(s["members"][0]["address"].as_str(), Some(node.http.as_str()));

    // A plaintext HTTP request: rustls answers with a TLS alert record
    // (content type 21) and closes; no HTTP comes back.
    let before = handshake_failures(&node, &ours, "not_tls");
    let mut plain = std::net::TcpStream::connect(&node.http).unwrap();
    plain.set_read_timeout(Some(REQUEST)).unwrap();
    plain.write_all(format!("GET /store/greeting HTTP/1.1\r\nhost: {}\r\n\r\n", node.http).as_bytes()).unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).expect("the node closes the connection");
    assert_eq!(answer.first(), Some(&21), "a TLS alert, not HTTP: {answer:?}");
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/"), "{answer:?}");
    assert!(!String::from_utf8_lossy(&answer).contains("hello"), "no data over plaintext: {answer:?}");
    wait_counted(&node, &ours, "not_tls", before);

    // A client that trusts another CA refuses the node's certificate.
    let other_dir = dir.path().join("other");
    ca_and_certificate(&other_dir, "web", ip);
    let theirs = trusting(&other_dir.join("ca.pem"));
    let before = handshake_failures(&node, &ours, "peer_refused");
    let err = https(&node.http, &theirs, "GET", "/store/greeting", "").err().expect("refused");
    assert!(err.starts_with("handshake:") && err.contains("UnknownIssuer"), "{err}");
    wait_counted(&node, &ours, "peer_refused", before);
    let log = std::fs::read_to_string(&node.stderr_path).unwrap();
    assert!(log.lines().any(|l| l.contains("HTTP port: refused a TLS handshake")), "{log}");

    // A client that connects and never speaks holds a handshake task, not
    // the accept loop: others are served meanwhile.
    // (The handshake timeout is 10 s: an answer well within it shows that
    // nobody waited for the stalled ones.)
    let stalled: Vec<_> = (0..5).map(|_| std::net::TcpStream::connect(&node.http).unwrap()).collect();
    let started = std::time::Instant::now();
    assert_eq!(get(&node, &ours, "greeting").as_deref(), Some("hello over tls"));
    assert!(started.elapsed() < Duration::from_secs(5), "served in {:?}", started.elapsed());
    drop(stalled);

    // And after all that the node still serves, reads and writes.
    put(&node, &ours, "after", "still here");
    assert_eq!(get(&node, &ours, "after").as_deref(), Some("still here"));
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let ip = "127.0.152.1";
    ca_and_certificate(&certs_dir, "web", ip);
    let node = start_https_node(&dir.path().join("node"), ip, &certs_dir, "web", &[]);
    let ours = trusting(&certs_dir.join("ca.pem"));
    put(&node, &ours, "k", "v");
    let served = https(&node.http, &ours, "GET", "/ping", "").unwrap().leaf;
    let file = |name: &str| CertificateDer::from_pem_file(certs_dir.join(name)).unwrap();
    assert_eq!(served, file("web.pem"));

    // `certs node` again: a new key pair for the same name, same CA,
    // written over the files the node was started with.
    ca_and_certificate(&certs_dir, "web", ip);
    let rotated = file("web.pem");
    assert_ne!(rotated, served);
    wait_for("the rotated certificate to be served", Duration::from_secs(30), || {
        let answer = https(&node.http, &ours, "GET", "/store/k", "").ok()?;
        assert_eq!((answer.status, answer.body.as_str()), (200, "v"), "served throughout");
        (answer.leaf == rotated).then_some(())
    });
    let log = std::fs::read_to_string(&node.stderr_path).unwrap();
    assert!(log.contains("HTTP TLS certificate reloaded"), "{log}");
    // Graceful shutdown works on the TLS port as on a plain one.
    let exit = node.signal_and_wait("TERM", Duration::from_secs(20)).expect("the node stops on SIGTERM");
    assert!(exit.success(), "{exit}");
}

fn admin(node: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("admin").arg("--node").arg(node).args(args).env_remove("VINZCLORTHO_CACERT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run vinzclortho admin")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_admin_cli_and_bench_speak_https_to_a_cluster_with_cacert() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let ca = certs_dir.join("ca.pem");
    let ca_arg = ca.to_str().unwrap();
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..3 {
        let ip = format!("127.0.153.{}", i + 1);
        let name = format!("web{i}");
        ca_and_certificate(&certs_dir, &name, &ip);
        let seed = nodes.first().map(|n| n.cluster.clone());
        let join: Vec<&str> = seed.as_deref().map(|s| vec!["-j", s]).unwrap_or_default();
        nodes.push(start_https_node(&dir.path().join(format!("node{i}")), &ip, &certs_dir, &name, &join));
    }
    let ours = trusting(&ca);
    wait_for("every node to see three members up", CONVERGE, || {
        nodes
            .iter()
            .all(|n| {
                status(n, &ours)
                    .and_then(|s| Some(s["members"].as_array()?.iter().filter(|m| m["status"] == "up").count() == 3))
                    == Some(true)
            })
            .then_some(())
    });
    put(&nodes[0], &ours, "spread", "everywhere");
    let value = wait_for("a write read on another node", CONVERGE, || get(&nodes[2], &ours, "spread"));
    assert_eq!(value, "everywhere");

    let node = nodes[0].http.as_str();
    let out = admin(node, &["--cacert", ca_arg, "status", "--json"], &[]);
    assert!(out.status.success(), "admin status: {}", text(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["http_tls"], true);
    let out = admin(node, &["status"], &[("VINZCLORTHO_CACERT", ca_arg)]);
    assert!(out.status.success(), "admin status with VINZCLORTHO_CACERT: {}", text(&out.stderr));
    assert!(text(&out.stdout).lines().any(|l| l.starts_with("https") && l.ends_with("true")), "{}", text(&out.stdout));
    // wait-healthy asks every member (at the HOST:PORT the cluster lists)
    // over HTTPS too.
    let out = admin(&format!("https://{node}"), &["--cacert", ca_arg, "wait-healthy", "--timeout", "60"], &[]);
    assert!(out.status.success(), "wait-healthy: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "healthy");

    // Without the CA: plain HTTP to a TLS port fails, with a hint.
    let out = admin(node, &["status"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--cacert"), "{}", text(&out.stderr));
    // Another CA: the node's certificate is refused.
    let other = dir.path().join("other");
    certs(&["init", "--dir", other.to_str().unwrap()]);
    let out = admin(node, &["--cacert", other.join("ca.pem").to_str().unwrap(), "status"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("UnknownIssuer"), "{}", text(&out.stderr));

    // The benchmark, a short checked run over every node.
    let all: Vec<&str> = nodes.iter().map(|n| n.http.as_str()).collect();
    let bench = |nodes: &str, extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["bench", "--nodes", nodes, "--ops", "300", "-c", "4", "--keys", "50", "--check", "--json", "-q"]);
        cmd.args(extra).env_remove("VINZCLORTHO_CACERT").output().unwrap()
    };
    let out = bench(&all.join(","), &["--cacert", ca_arg]);
    assert!(out.status.success(), "bench: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let overall = &report["overall"];
    assert_eq!(overall["ops"], 300, "{report}");
    assert_eq!(overall["errors"], 0, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");
    assert!(report["reads_checked"].as_u64().unwrap() > 0, "{report}");
    // An https:// node with the wrong CA does not get past the probe.
    let out = bench(&format!("https://{}", all[1]), &["--cacert", other.join("ca.pem").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot reach"), "{}", text(&out.stderr));
}

#[test]
fn bad_https_flags_refuse_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    ca_and_certificate(&certs_dir, "web", "127.0.154.1");
    let (cert, key) = https_args(&certs_dir, "web");
    let missing: PathBuf = certs_dir.join("missing.pem");
    let start = |tls: &[&str]| {
        let mut args = vec!["-a", "127.0.154.1:0", "--storage", "memory"];
        args.extend(tls);
        NodeProc::try_start(&dir.path().join("node"), &args, &[]).err().expect("the node must not start")
    };
    let err = start(&["--http-tls-cert", &cert]);
    assert!(err.contains("--http-tls-cert and --http-tls-key go together"), "{err}");
    let err = start(&["--http-tls-cert", missing.to_str().unwrap(), "--http-tls-key", &key]);
    assert!(err.contains("HTTP port certificate") && err.contains("missing.pem"), "{err}");
    let readable = certs_dir.join("readable.key");
    std::fs::copy(&key, &readable).unwrap();
    std::fs::set_permissions(&readable, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = start(&["--http-tls-cert", &cert, "--http-tls-key", readable.to_str().unwrap()]);
    assert!(err.contains("chmod 600") && err.contains("readable.key"), "{err}");
}
