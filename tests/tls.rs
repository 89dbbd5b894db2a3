//! Mutual TLS between nodes, with real processes on 127.0.131.0/24 and
//! 127.0.132.0/24: certificates made by `vinzclortho certs`, a 3-node
//! cluster serving reads and writes over mTLS, hostile peers against a real
//! node (plaintext, no certificate, a foreign CA's, an expired one), each
//! refused during the handshake with the node's data and membership
//! unchanged, and a certificate rotated while the cluster runs.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use common::{BIN, NodeProc, client, member_request, poll, status, wait_for};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tonic::transport::Endpoint;
use vinzclortho::rpc::membership_pb as m;
use vinzclortho::rpc::membership_pb::membership_client::MembershipClient;
use vinzclortho::rpc::pb;
use vinzclortho::rpc::pb::replica_client::ReplicaClient;

const CONVERGE: Duration = Duration::from_secs(60);
/// Values are capped at 4 KiB so that the cluster port's message limit
/// (sized from the largest legal object) is a few MiB, and a message above
/// it is cheap to send.
const FAST: &[&str] =
    &["--gossip-interval-ms", "100", "--failure-timeout-ms", "1500", "-p", "16", "--max-value-bytes", "4096"];

/// `vinzclortho certs ...`, which must succeed.
fn certs(args: &[&str]) {
    let out = std::process::Command::new(BIN).arg("certs").args(args).output().unwrap();
    assert!(out.status.success(), "certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct TlsCluster {
    nodes: Vec<NodeProc>,
    dir: tempfile::TempDir,
    net: u8,
}

impl TlsCluster {
    fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// A CA, and a certificate per node named n<i> for 127.0.<net>.<i+1>;
    /// node 0 creates the cluster, the others join it. Waits until every
    /// node sees all members up.
    fn start(net: u8, n: usize) -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        certs(&["init", "--dir", certs_dir.to_str().unwrap()]);
        let mut cluster = TlsCluster { nodes: Vec::new(), dir, net };
        for i in 0..n {
            let ip = cluster.ip(i);
            certs(&["node", "--dir", certs_dir.to_str().unwrap(), "--name", &format!("n{i}"), "--host", &ip]);
            let seed = cluster.nodes.first().map(|n| n.cluster.clone());
            let node = cluster.spawn(i, seed.as_deref()).unwrap_or_else(|e| panic!("node {i}: {e}"));
            cluster.nodes.push(node);
        }
        cluster.wait_members_up();
        cluster
    }

    fn ip(&self, i: usize) -> String {
        format!("127.0.{}.{}", self.net, i + 1)
    }

    fn spawn(&self, i: usize, seed: Option<&str>) -> Result<NodeProc, String> {
        let ip = self.ip(i);
        let address = format!("{ip}:0");
        let d = self.certs_dir();
        let (ca, cert, key) = (d.join("ca.pem"), d.join(format!("n{i}.pem")), d.join(format!("n{i}.key")));
        let mut args = vec!["-a", &address, "--cluster-address", &address];
        args.extend(["--tls-ca", ca.to_str().unwrap(), "--tls-cert", cert.to_str().unwrap()]);
        args.extend(["--tls-key", key.to_str().unwrap()]);
        args.extend(FAST);
        if let Some(seed) = seed {
            args.extend(["-j", seed]);
        }
        NodeProc::try_start(&self.dir.path().join(format!("node{i}")), &args, &[])
    }

    fn wait_members_up(&self) {
        let n = self.nodes.len();
        wait_for("every node to see every member up", CONVERGE, || {
            self.nodes.iter().all(|node| members_up(node) == Some(n)).then_some(())
        });
    }
}

fn members_up(node: &NodeProc) -> Option<usize> {
    let s = status(node)?;
    Some(s["members"].as_array()?.iter().filter(|m| m["status"] == "up").count())
}

fn put(node: &NodeProc, key: &str, value: &str) {
    let response = client().put(node.url(&format!("/store/{key}"))).body(value.to_owned()).send().unwrap();
    assert!(response.status().is_success(), "PUT {key}: {}", response.status());
}

fn get(node: &NodeProc, key: &str) -> Option<String> {
    let response = client().get(node.url(&format!("/store/{key}"))).send().ok()?;
    response.status().is_success().then(|| response.text().unwrap())
}

/// The member ids a node knows, sorted.
fn member_ids(node: &NodeProc) -> Vec<String> {
    let s = status(node).expect("status");
    let mut ids: Vec<String> =
        s["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// A sample of `/metrics`, 0 if absent.
fn counter(node: &NodeProc, metric: &str, reason: &str) -> u64 {
    let text = client().get(node.url("/metrics")).send().unwrap().text().unwrap();
    let prefix = format!("{metric}{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

fn handshake_failures(node: &NodeProc, reason: &str) -> u64 {
    counter(node, "vinzclortho_tls_handshake_failures_total", reason)
}

fn read_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).unwrap().collect::<Result<_, _>>().unwrap()
}

fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca) {
        roots.add(cert).unwrap();
    }
    roots
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts `ca` and presents `identity` (certificate and key
/// PEM files), or nothing.
fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    let mut config = match identity {
        Some((cert, key)) => {
            builder.with_client_auth_cert(read_certs(cert), PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Dials over TLS with a fixed client configuration (the test's own
/// rustls client, not the node's connector).
#[derive(Clone)]
struct Dial(Arc<rustls::ClientConfig>);

impl tower::Service<http::Uri> for Dial {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = Arc::clone(&self.0);
        Box::pin(async move {
            let host = uri.host().unwrap().to_owned();
            let stream = TcpStream::connect((host.as_str(), uri.port_u16().unwrap())).await?;
            let name = ServerName::try_from(host).unwrap();
            Ok(TokioIo::new(tokio_rustls::TlsConnector::from(config).connect(name, stream).await?))
        })
    }
}

/// A `Replica/Merge` that would add a sibling "intruder" to `key` if it were
/// run, as member `from` of the node's cluster.
fn hostile_merge(node: &NodeProc, key: &str, from: &str) -> tonic::Request<pb::MergeRequest> {
    let s = status(node).unwrap();
    let (to, cluster) = (s["node_id"].as_str().unwrap(), s["cluster_id"].as_str().unwrap());
    let object = pb::Object {
        clock: vec![pb::ClockEntry { actor: 0xbad, counter: 1 }],
        siblings: vec![pb::Sibling {
            actor: 0xbad,
            counter: 1,
            content_type: "text/plain".into(),
            last_modified_ms: 1,
            value: b"intruder".to_vec().into(),
            meta: None,
        }],
    };
    let key = pb::ObjectKey {
        bucket_type: b"default".to_vec().into(),
        bucket: b"default".to_vec().into(),
        key: key.as_bytes().to_vec().into(),
    };
    member_request(
        pb::MergeRequest { partition: 0, key: Some(key), object: Some(object), ..Default::default() },
        cluster,
        to,
        from,
    )
}

/// Sends `request` to `cluster_address` through `dial` (plaintext when
/// `None`); returns the call's error, which must come.
async fn refused_call(
    cluster_address: &str,
    dial: Option<Dial>,
    request: tonic::Request<pb::MergeRequest>,
) -> tonic::Status {
    let endpoint = Endpoint::from_shared(format!("http://{cluster_address}")).unwrap();
    let endpoint = endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(5));
    let channel = match dial {
        Some(dial) => endpoint.connect_with_connector_lazy(dial),
        None => endpoint.connect_lazy(),
    };
    let result = tokio::time::timeout(Duration::from_secs(10), ReplicaClient::new(channel).merge(request))
        .await
        .expect("the call ends within its deadline");
    result.expect_err("a stranger's call must be refused")
}

#[test]
fn a_three_node_cluster_serves_over_mutual_tls_and_refuses_strangers_during_the_handshake() {
    let cluster = TlsCluster::start(131, 3);
    let [n0, n1, n2] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    for i in 0..20 {
        put(&cluster.nodes[i % 3], &format!("k{i}"), &format!("v{i}"));
    }
    for i in 0..20 {
        let key = format!("k{i}");
        let value = wait_for("a value written on another node", CONVERGE, || get(&cluster.nodes[(i + 1) % 3], &key));
        assert_eq!(value, format!("v{i}"));
    }
    let members_before = member_ids(n0);
    assert_eq!(members_before.len(), 3);

    // Strangers, each with a certificate file of its own kind.
    let d = cluster.certs_dir();
    let ca = d.join("ca.pem");
    let foreign_dir = cluster.dir.path().join("foreign");
    certs(&["init", "--dir", foreign_dir.to_str().unwrap()]);
    certs(&["node", "--dir", foreign_dir.to_str().unwrap(), "--name", "n1", "--host", &cluster.ip(1)]);
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let (expired_pem, expired_key) =
        vinzclortho::certs::issue(&d, "n1", &[cluster.ip(1)], now - 30 * day, now - day).unwrap();
    let expired = (d.join("expired.pem"), d.join("expired.key"));
    std::fs::write(&expired.0, expired_pem).unwrap();
    std::fs::write(&expired.1, expired_key).unwrap();
    let foreign = (foreign_dir.join("n1.pem"), foreign_dir.join("n1.key"));
    let n1_id = status(n1).unwrap()["node_id"].as_str().unwrap().to_owned();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cases: [(&str, Option<Dial>, &str); 4] = [
        ("a plaintext gRPC client", None, "not_tls"),
        ("a TLS client without a certificate", Some(Dial(client_config(&ca, None))), "no_certificate"),
        (
            "a client with a foreign CA's certificate",
            Some(Dial(client_config(&ca, Some((&foreign.0, &foreign.1))))),
            "unknown_ca",
        ),
        (
            "a client with an expired certificate of the cluster CA",
            Some(Dial(client_config(&ca, Some((&expired.0, &expired.1))))),
            "expired",
        ),
    ];
    for (who, dial, reason) in cases {
        let before = handshake_failures(n2, reason);
        let request = hostile_merge(n2, "k0", &n1_id);
        let status = runtime.block_on(refused_call(&n2.cluster, dial, request));
        // No service answered: the connection itself failed. tonic's code
        // for that varies with when the cut came (Unavailable for a failed
        // connect; Unknown, Cancelled or Internal for a plaintext request
        // answered with a TLS alert); its source is a transport error.
        let transport = std::error::Error::source(&status)
            .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some());
        assert!(transport, "{who}: not a transport error: {status:?}");
        assert!(status.metadata().get("vc-refused").is_none(), "{who}: reached the identity check: {status:?}");
        poll(Duration::from_secs(10), Duration::from_millis(50), || {
            (handshake_failures(n2, reason) > before).then_some(())
        })
        .unwrap_or_else(|| panic!("{who}: no handshake failure counted with reason {reason}"));
        let log = std::fs::read_to_string(&n2.stderr_path).unwrap();
        assert!(
            log.lines().any(|l| l.contains("refused a TLS handshake") && l.contains(reason)),
            "{who}: no log line naming {reason}:\n{log}"
        );
        // Nothing changed: the data and the members read back the same.
        for node in [n0, n1, n2] {
            assert_eq!(get(node, "k0").as_deref(), Some("v0"), "{who}");
            assert_eq!(member_ids(node), members_before, "{who}");
        }
    }

    // Valid certificates of the cluster CA that claim another node's id
    // (vc-from-node): n2 knows which certificate name each member uses,
    // from their joins, and refuses the call before the service runs.
    let s = status(n2).unwrap();
    let bound: Vec<(String, String)> = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m["certificate"].as_str().unwrap_or("").to_owned()))
        .collect();
    for (i, node) in [n0, n1, n2].iter().enumerate() {
        let id = status(node).unwrap()["node_id"].as_str().unwrap().to_owned();
        assert!(bound.contains(&(id, format!("n{i}"))), "n{i} is bound to its certificate: {bound:?}");
    }
    certs(&["node", "--dir", d.to_str().unwrap(), "--name", "intruder", "--host", "127.0.0.1"]);
    let n0_id = status(n0).unwrap()["node_id"].as_str().unwrap().to_owned();
    let impostors = [
        ("a cluster certificate of another name claiming n1", "intruder", n1_id.clone()),
        ("n0's own certificate claiming n1", "n0", n1_id.clone()),
        ("n1's own certificate claiming n0", "n1", n0_id),
    ];
    for (who, cert, claimed) in impostors {
        let before = counter(n2, "vinzclortho_rpc_refused_total", "wrong_certificate");
        let identity = (d.join(format!("{cert}.pem")), d.join(format!("{cert}.key")));
        let dial = Dial(client_config(&ca, Some((&identity.0, &identity.1))));
        let request = hostile_merge(n2, "k0", &claimed);
        let status = runtime.block_on(refused_call(&n2.cluster, Some(dial), request));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{who}: {status:?}");
        let reason = status.metadata().get("vc-refused").and_then(|v| v.to_str().ok());
        assert_eq!(reason, Some("wrong_certificate"), "{who}: {status:?}");
        assert!(
            status.message().contains(&format!("{cert:?}")),
            "{who}: the refusal names the certificate: {status:?}"
        );
        assert_eq!(counter(n2, "vinzclortho_rpc_refused_total", "wrong_certificate"), before + 1, "{who}");
        for node in [n0, n1, n2] {
            assert_eq!(get(node, "k0").as_deref(), Some("v0"), "{who}");
            assert_eq!(member_ids(node), members_before, "{who}");
        }
    }

    // A member's own certificate opens the door: the same client code with
    // n0's certificate reaches the service (and the call is checked there).
    let member = Dial(client_config(&ca, Some((&d.join("n0.pem"), &d.join("n0.key")))));
    let endpoint = Endpoint::from_shared(format!("http://{}", n2.cluster)).unwrap();

    // Behind the door, a member is still not trusted with everything: a
    // message above the largest legal one is refused before it is decoded,
    // and gossip carrying another cluster's state (replayed, or forged with
    // a ring epoch that would win every merge and n1 in the removed set) is
    // refused whichever cluster id its headers name.
    let n0_id = status(n0).unwrap()["node_id"].as_str().unwrap().to_owned();
    let mut oversized = hostile_merge(n2, "k0", &n0_id);
    oversized.get_mut().object.as_mut().unwrap().siblings[0].value = vec![b'x'; 16 << 20].into();
    let status_oversized = runtime.block_on(refused_call(&n2.cluster, Some(member.clone()), oversized));
    assert!(
        matches!(status_oversized.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted),
        "an oversized merge from a member: {status_oversized:?}"
    );
    let s2 = status(n2).unwrap();
    let (cluster_id, n2_id) = (s2["cluster_id"].as_str().unwrap().to_owned(), s2["node_id"].as_str().unwrap());
    let epoch_before = s2["ring"]["epoch"].as_u64().unwrap();
    let state = runtime.block_on(async {
        let channel = endpoint.clone().connect_with_connector_lazy(member.clone());
        let mut client = MembershipClient::new(channel);
        let request = member_request(m::GetStateRequest {}, &cluster_id, n2_id, &n0_id);
        tokio::time::timeout(Duration::from_secs(10), client.get_state(request)).await.expect("in time")
    });
    let mut foreign_state = state.expect("a member may read the state").into_inner().state.unwrap();
    foreign_state.cluster_id ^= 1;
    foreign_state.ring.as_mut().unwrap().epoch = u64::MAX;
    foreign_state.removed.push(n1_id.clone());
    let foreign_cluster = format!("{:016x}", foreign_state.cluster_id);
    for (who, header_cluster) in [
        ("gossip of another cluster under this cluster's id", cluster_id.as_str()),
        ("gossip of another cluster under its own id", foreign_cluster.as_str()),
    ] {
        let gossip = m::GossipRequest {
            protocol_version: vinzclortho::core::membership::PROTOCOL_VERSION,
            from: n0_id.clone(),
            state: Some(foreign_state.clone()),
        };
        let refused = runtime.block_on(async {
            let channel = endpoint.clone().connect_with_connector_lazy(member.clone());
            let mut client = MembershipClient::new(channel);
            let request = member_request(gossip, header_cluster, n2_id, &n0_id);
            tokio::time::timeout(Duration::from_secs(10), client.gossip(request)).await.expect("in time")
        });
        let status = refused.expect_err(who);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{who}: {status:?}");
        assert!(status.message().contains("cluster"), "{who}: the refusal says why: {status:?}");
    }
    for node in [n0, n1, n2] {
        assert_eq!(get(node, "k0").as_deref(), Some("v0"), "after the hostile member calls");
        assert_eq!(member_ids(node), members_before, "after the hostile member calls");
        let epoch = status(node).unwrap()["ring"]["epoch"].as_u64().unwrap();
        assert!(epoch < u64::MAX && epoch <= epoch_before + 1, "the ring did not take the forged epoch: {epoch}");
    }
    let health = runtime.block_on(async {
        let channel = endpoint.connect_with_connector_lazy(member);
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        tokio::time::timeout(Duration::from_secs(10), health.check(tonic_health::pb::HealthCheckRequest::default()))
            .await
            .expect("in time")
    });
    assert_eq!(
        health.unwrap().into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // grpcurl, as an operator would call it: plaintext is refused, the
    // cluster CA and a node's certificate get an answer.
    let grpcurl = |args: &[&str]| std::process::Command::new("grpcurl").args(args).output();
    if let Ok(plain) = grpcurl(&["-plaintext", "-max-time", "5", &n2.cluster, "grpc.health.v1.Health/Check"]) {
        assert!(!plain.status.success(), "plaintext grpcurl got an answer");
        let (cert, key) = (d.join("n0.pem"), d.join("n0.key"));
        let tls = grpcurl(&[
            "-cacert",
            ca.to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-max-time",
            "5",
            &n2.cluster,
            "grpc.health.v1.Health/Check",
        ])
        .unwrap();
        let out = String::from_utf8_lossy(&tls.stdout);
        assert!(tls.status.success() && out.contains("SERVING"), "{out} {}", String::from_utf8_lossy(&tls.stderr));
    } else {
        eprintln!("grpcurl not installed (./scripts/ensure-deps installs it): its two calls were not made");
    }
}

#[test]
fn a_node_refuses_to_start_with_a_world_readable_key_or_plaintext_off_loopback() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs");
    certs(&["init", "--dir", d.to_str().unwrap()]);
    certs(&["node", "--dir", d.to_str().unwrap(), "--name", "n0", "--host", "127.0.133.1"]);
    let key = d.join("n0.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ca, cert) = (d.join("ca.pem"), d.join("n0.pem"));
    let args = [
        "-a",
        "127.0.133.1:0",
        "--cluster-address",
        "127.0.133.1:0",
        "--tls-ca",
        ca.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let err = NodeProc::try_start(&dir.path().join("node0"), &args, &[]).err().expect("refused to start");
    assert!(err.contains("can be read by every user") && err.contains("chmod 600"), "{err}");

    // Off loopback without certificates: refused before binding anything.
    let out = std::process::Command::new(BIN)
        .args(["-a", "127.0.133.1:0", "--cluster-address", "0.0.0.0:0", "--storage", "memory"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not loopback") && stderr.contains("--insecure-cluster"), "{stderr}");
}

#[test]
fn a_rotated_certificate_is_used_without_a_restart_and_a_foreign_one_is_refused_by_peers() {
    let cluster = TlsCluster::start(132, 3);
    let [n0, n1, _] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let d = cluster.certs_dir();
    let n1_cert = d.join("n1.pem");
    let old = std::fs::read(&n1_cert).unwrap();
    // Rotate n1 to a new certificate of the same CA while writes go on.
    certs(&["node", "--dir", d.to_str().unwrap(), "--name", "n1", "--host", &cluster.ip(1)]);
    assert_ne!(std::fs::read(&n1_cert).unwrap(), old);
    let reloaded = |node: &NodeProc| {
        let log = std::fs::read_to_string(&node.stderr_path).unwrap();
        log.matches("cluster TLS certificates reloaded").count()
    };
    let mut i = 0;
    wait_for("n1 to reload its certificate", Duration::from_secs(30), || {
        put(n1, &format!("r{i}"), "during");
        i += 1;
        (reloaded(n1) >= 1).then_some(())
    });
    // After the reload n1 dials its peers afresh with the new certificate:
    // writes through it (W=2 needs a peer) and reads elsewhere keep working.
    for j in 0..20 {
        put(n1, &format!("after{j}"), "rotated");
    }
    for j in 0..20 {
        let key = format!("after{j}");
        assert_eq!(wait_for("a write through n1 read on n0", CONVERGE, || get(n0, &key)), "rotated");
    }
    assert_eq!(members_up(n0), Some(3));

    // Now n1 gets a certificate of another CA: its peers refuse it.
    let foreign_dir = cluster.dir.path().join("foreign");
    certs(&["init", "--dir", foreign_dir.to_str().unwrap()]);
    certs(&["node", "--dir", foreign_dir.to_str().unwrap(), "--name", "n1", "--host", &cluster.ip(1)]);
    let refused_before: u64 = [0, 2].iter().map(|&p| handshake_failures(&cluster.nodes[p], "unknown_ca")).sum();
    std::fs::copy(foreign_dir.join("n1.key"), d.join("n1.key")).unwrap();
    std::fs::copy(foreign_dir.join("n1.pem"), &n1_cert).unwrap();
    wait_for("n1 to reload the foreign certificate", Duration::from_secs(30), || (reloaded(n1) >= 2).then_some(()));
    wait_for("n1's peers to refuse its new certificate", CONVERGE, || {
        // n1 keeps calling its peers (gossip); each new connection is refused.
        let refused: u64 = [0, 2].iter().map(|&p| handshake_failures(&cluster.nodes[p], "unknown_ca")).sum();
        (refused > refused_before).then_some(())
    });
    let log = std::fs::read_to_string(&cluster.nodes[1].stderr_path).unwrap();
    assert!(log.contains("does not verify against the cluster CA"), "n1 says why its peers refuse it:\n{log}");
    // The others still serve: a write through n0 is read back on n2.
    put(n0, "still", "served");
    assert_eq!(wait_for("n2 to serve", CONVERGE, || get(&cluster.nodes[2], "still")), "served");

    // n2 rotated to a certificate of the right CA but another name: its id
    // stays bound to "n2", so n0 refuses its calls, and n2 says why.
    let n2 = &cluster.nodes[2];
    let renamed_dir = cluster.dir.path().join("renamed");
    std::fs::create_dir_all(&renamed_dir).unwrap();
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(d.join(file), renamed_dir.join(file)).unwrap();
    }
    certs(&["node", "--dir", renamed_dir.to_str().unwrap(), "--name", "renamed", "--host", &cluster.ip(2)]);
    let refused_before = counter(n0, "vinzclortho_rpc_refused_total", "wrong_certificate");
    std::fs::copy(renamed_dir.join("renamed.key"), d.join("n2.key")).unwrap();
    std::fs::copy(renamed_dir.join("renamed.pem"), d.join("n2.pem")).unwrap();
    wait_for("n0 to refuse n2's renamed certificate", CONVERGE, || {
        (counter(n0, "vinzclortho_rpc_refused_total", "wrong_certificate") > refused_before).then_some(())
    });
    let log = std::fs::read_to_string(&n2.stderr_path).unwrap();
    assert!(log.contains("this node's id is bound to"), "n2 says its certificate has the wrong name:\n{log}");
}
