//! Mutual TLS between the nodes, the fault suite's default (`JEPSEN_TLS=0`
//! runs the nodes in plaintext with `--insecure-cluster` instead).
//!
//! Each run makes its own CA and certificates with `vinzclortho certs`, in
//! the run's temporary directory but outside every node's data directory:
//! a lost disk or a restored snapshot keeps the node's certificate, as an
//! operator's would. Peers dial a node through its delay proxy (`proxy`),
//! so each node's certificate names the proxy's address as well as the
//! node's own: the address check then tells no node from another, which
//! the cluster's binding of certificate names to node ids does (every
//! node has a name of its own, `n<slot>`). The harness itself reads
//! replicas over gRPC with a certificate of the same CA, named `jepsen`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use vinzclortho::rpc::pb;
use vinzclortho::rpc::pb::replica_client::ReplicaClient;
use vinzclortho::rpc::tls::{ClusterTls, TlsConnect, TlsFiles};

use crate::common::{self, BIN};

/// True unless `JEPSEN_TLS=0`.
pub fn enabled() -> bool {
    std::env::var("JEPSEN_TLS").map_or(true, |v| v != "0")
}

/// The run's CA and certificates.
pub struct Certs {
    dir: PathBuf,
    /// The harness's own client configuration (certificate `jepsen`).
    client: Arc<ClusterTls>,
}

fn certs(args: &[&str]) {
    let out = Command::new(BIN).arg("certs").args(args).output().expect("run vinzclortho certs");
    assert!(out.status.success(), "vinzclortho certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Certs {
    /// A CA in `dir`, a certificate `n<i>` for each slot's host (`hosts[i]`)
    /// and the proxy's address `proxy_ip`, and the harness's own.
    pub fn create(dir: &Path, hosts: &[String], proxy_ip: &str) -> Certs {
        let d = dir.to_str().expect("a UTF-8 path");
        certs(&["init", "--dir", d]);
        for (i, host) in hosts.iter().enumerate() {
            certs(&["node", "--dir", d, "--name", &format!("n{i}"), "--host", host, "--host", proxy_ip]);
        }
        certs(&["node", "--dir", d, "--name", "jepsen", "--host", proxy_ip]);
        let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("jepsen.pem"), key: dir.join("jepsen.key") };
        let client = Arc::new(ClusterTls::load(files).expect("the harness's certificate loads"));
        Certs { dir: dir.to_owned(), client }
    }

    /// The flags that give node `slot` its certificate.
    pub fn node_flags(&self, slot: usize) -> Vec<String> {
        let file = |name: String| self.dir.join(name).display().to_string();
        vec![
            "--tls-ca".into(),
            file("ca.pem".into()),
            "--tls-cert".into(),
            file(format!("n{slot}.pem")),
            "--tls-key".into(),
            file(format!("n{slot}.key")),
        ]
    }

    /// A channel to a node's cluster address over mutual TLS (lazy: the
    /// handshake comes with the first call).
    pub fn channel(&self, cluster_address: &str) -> Channel {
        let endpoint = Endpoint::from_shared(format!("http://{cluster_address}")).expect("an endpoint");
        endpoint
            .connect_timeout(Duration::from_secs(3))
            .connect_with_connector_lazy(TlsConnect::new(Arc::clone(&self.client)))
    }
}

/// `vinzclortho_tls_handshake_failures_total{reason}` of the node at `http`.
fn handshake_failures(http: &str, reason: &str) -> Option<u64> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let text = client.get(format!("http://{http}/metrics")).send().ok()?.text().ok()?;
    let prefix = format!("vinzclortho_tls_handshake_failures_total{{reason=\"{reason}\"}} ");
    Some(
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse::<f64>().unwrap_or(0.0) as u64),
    )
}

/// Proof that the nodes really speak TLS: a plaintext gRPC call to the node
/// at `cluster_address` (HTTP at `http`) fails at the transport, and the
/// node counts a refused handshake (`not_tls`). Panics otherwise.
pub fn assert_plaintext_refused(cluster_address: &str, http: &str) {
    let before = handshake_failures(http, "not_tls").expect("the node's /metrics");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = rt.block_on(async {
        let endpoint = Endpoint::from_shared(format!("http://{cluster_address}")).unwrap();
        let channel = endpoint.connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(3)).connect_lazy();
        // No identity headers: were the call to reach a service, the identity
        // check would refuse it, with a `vc-refused` header.
        let mut client = ReplicaClient::new(channel);
        tokio::time::timeout(Duration::from_secs(10), client.get(pb::GetRequest::default()))
            .await
            .expect("the call ends within its deadline")
    });
    let status = result.expect_err("a plaintext call to a node with certificates must fail");
    assert!(status.metadata().get("vc-refused").is_none(), "a plaintext call reached the node's services: {status:?}");
    common::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (handshake_failures(http, "not_tls")? > before).then_some(())
    })
    .unwrap_or_else(|| panic!("the node at {cluster_address} counted no refused plaintext handshake ({status:?})"));
}
