//! The README's production set-up, whole, with real processes on
//! 127.0.171.0/24: a 3-node cluster with mutual TLS between nodes, HTTPS on
//! the HTTP port and `--security`, exactly the flags the README's
//! "Production: a secure cluster" section shows. The parts are tested one by
//! one elsewhere (tests/tls.rs, tests/https.rs, tests/security.rs); this
//! checks that together they serve the owner and refuse every stranger: a
//! plaintext HTTP client, an HTTPS client without a token or with one that
//! lacks the grant, a plaintext gRPC client on the cluster port; and that
//! the admin CLI drives the cluster with `--cacert` and `--token`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::https::{Answer, request, trusting};
use common::{BIN, FAST, NodeProc, wait_for};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(120);

fn certs(args: &[&str]) {
    let out = Command::new(BIN).arg("certs").args(args).output().unwrap();
    assert!(out.status.success(), "certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn call(
    node: &NodeProc,
    ca: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    request(&node.http, ca, method, path, &headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn admin(node: &NodeProc, ca: &Path, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["admin", "--node", &node.http, "--cacert", ca.to_str().unwrap()]);
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    cmd.args(args).env_remove("VINZCLORTHO_TOKEN").env_remove("VINZCLORTHO_CACERT").output().unwrap()
}

#[test]
fn the_production_setup_serves_its_owner_and_refuses_every_stranger() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs");
    certs(&["init", "--dir", d.to_str().unwrap()]);
    let ip = |i: usize| format!("127.0.171.{}", i + 1);
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..3 {
        let name = format!("node{i}");
        certs(&["node", "--dir", d.to_str().unwrap(), "--name", &name, "--host", &ip(i)]);
        let file = |ext: &str| d.join(format!("{name}.{ext}")).to_str().unwrap().to_owned();
        let (ca, cert, key) = (d.join("ca.pem").to_str().unwrap().to_owned(), file("pem"), file("key"));
        let address = format!("{}:0", ip(i));
        let mut args = vec!["-a", &address, "--cluster-address", &address, "--security"];
        args.extend(["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
        args.extend(["--http-tls-cert", &cert, "--http-tls-key", &key]);
        args.extend(FAST);
        let seed = nodes.first().map(|n| n.cluster.clone());
        if let Some(seed) = &seed {
            args.extend(["-j", seed]);
        }
        nodes.push(NodeProc::start(&dir.path().join(&name), &args));
    }
    let ca_file = d.join("ca.pem");
    let ca = trusting(&ca_file);
    let token = std::fs::read_to_string(dir.path().join("node0").join("admin.token")).unwrap();
    let token = token.trim();

    // The owner: the admin CLI over HTTPS with the admin token waits for a
    // healthy cluster, and data written through one node reads back
    // through every other.
    let healthy = admin(&nodes[0], &ca_file, Some(token), &["wait-healthy", "--timeout", "120"]);
    assert!(healthy.status.success(), "wait-healthy: {}", String::from_utf8_lossy(&healthy.stderr));
    for (i, node) in nodes.iter().enumerate() {
        let put = call(node, &ca, "PUT", &format!("/store/k{i}"), Some(token), &format!("v{i}"));
        assert_eq!(put.status, 200, "{}", put.body);
    }
    for i in 0..3 {
        let key = format!("/store/k{i}");
        let got = wait_for("a value written elsewhere", CONVERGE, || {
            let a = call(&nodes[(i + 1) % 3], &ca, "GET", &key, Some(token), "");
            (a.status == 200).then_some(a.body)
        });
        assert_eq!(got, format!("v{i}"));
    }
    let reader = call(
        &nodes[0],
        &ca,
        "POST",
        "/admin/tokens",
        Some(token),
        r#"{"name": "reader", "grants": [{"permissions": ["read"], "scope": "default/default"}]}"#,
    );
    assert_eq!(reader.status, 201, "{}", reader.body);
    let reader: Value = serde_json::from_str(&reader.body).unwrap();
    let reader = reader["token"].as_str().unwrap().to_owned();

    // Strangers, on every node.
    for node in &nodes {
        // Plain HTTP to the HTTPS port: no HTTP answer at all.
        let plain = common::client().get(format!("http://{}/store/k0", node.http)).send();
        assert!(plain.is_err() || !plain.unwrap().status().is_success(), "plain HTTP got data");
        for (who, token, method, path, want) in [
            ("no token", None, "GET", "/store/k0", 401),
            ("no token", None, "PUT", "/store/k0", 401),
            ("no token", None, "GET", "/admin/status", 401),
            ("a forged token", Some("vc1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "GET", "/store/k0", 401),
            ("a reader writing", Some(reader.as_str()), "PUT", "/store/k0", 403),
            ("a reader deleting", Some(reader.as_str()), "DELETE", "/store/k0", 403),
            ("a reader at the admin API", Some(reader.as_str()), "GET", "/admin/status", 403),
        ] {
            let answer = wait_for("the reader token to reach every node", CONVERGE, || {
                let a = call(node, &ca, method, path, token, "intruder");
                (a.status == want).then_some(a)
            });
            assert!(!answer.body.contains("intruder") && !answer.body.is_empty(), "{who}: {}", answer.body);
        }
        let read = wait_for("the reader token to reach every node", CONVERGE, || {
            let a = call(node, &ca, "GET", "/store/k0", Some(&reader), "");
            (a.status == 200).then_some(a.body)
        });
        assert_eq!(read, "v0", "the reader reads");
        // The cluster port: plaintext gRPC gets no answer from any service.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let health = runtime.block_on(async {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", node.cluster)).unwrap();
            let channel =
                endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(5)).connect_lazy();
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            tokio::time::timeout(Duration::from_secs(10), client.check(tonic_health::pb::HealthCheckRequest::default()))
                .await
                .expect("bounded")
        });
        assert!(health.is_err(), "a plaintext gRPC client was answered: {health:?}");
        // Without the token the CLI is refused too, and says so.
        let refused = admin(node, &ca_file, None, &["status"]);
        assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stdout));
    }

    // Nothing a stranger sent changed anything.
    for node in &nodes {
        for i in 0..3 {
            let a = call(node, &ca, "GET", &format!("/store/k{i}"), Some(token), "");
            assert_eq!((a.status, a.body.as_str()), (200, format!("v{i}").as_str()));
        }
    }
}
