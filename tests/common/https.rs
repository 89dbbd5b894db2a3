//! HTTPS for tests: a rustls client that trusts one CA, and one request
//! over a fresh connection (HTTP/1.1), bounded in time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use tokio::net::TcpStream;

const REQUEST: Duration = Duration::from_secs(10);

/// A client configuration that trusts `ca` alone.
pub fn trusting(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// What an HTTPS exchange gave: the status, the body and the certificate
/// the node presented.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub leaf: CertificateDer<'static>,
}

/// One request over a fresh TLS connection to `address` (HOST:PORT), with
/// `headers`, the node's certificate checked against `config`'s CA and the
/// host; bounded in time. An error says what failed (connect, handshake,
/// exchange).
pub fn request(
    address: &str,
    config: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let exchange = async {
        let tcp = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
        let host = address.rsplit_once(':').unwrap().0.to_owned();
        let name = ServerName::try_from(host).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("http: {e}"))?;
        tokio::spawn(conn);
        let mut request = http::Request::builder().method(method).uri(path).header("host", address);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = sender.send_request(request).await.map_err(|e| format!("exchange: {e}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok(Answer { status, body: String::from_utf8_lossy(&body).into_owned(), leaf })
    };
    runtime.block_on(async { tokio::time::timeout(REQUEST, exchange).await.unwrap_or(Err("timed out".into())) })
}
