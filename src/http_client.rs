//! The tools' HTTP client (`vinzclortho admin`, `vinzclortho bench`):
//! hyper-util's pooled client over plain TCP, or over TLS (rustls, ring)
//! for `https://` addresses. A starting node uses it too ([`fetch`]), to ask
//! the member its `-j` names over HTTP where its cluster port is.
//!
//! A node with `--http-tls-cert` speaks HTTPS only. A tool reaches it when
//! given the CA that signed that certificate (`--cacert FILE`, as curl and
//! etcdctl name it; then bare `HOST:PORT` addresses mean HTTPS) or an
//! `https://` node address (then, without `--cacert`, the system's CA
//! bundle is used). The certificate must name the host dialled (an IP or a
//! DNS name), as browsers check it.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where a system's CA bundle usually is, when `SSL_CERT_FILE` is not set
/// (Debian and Ubuntu, then Fedora and RHEL, then Alpine).
const SYSTEM_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// How a tool reaches nodes: plain HTTP, or HTTPS trusting some CAs.
#[derive(Clone)]
pub struct ClientTls {
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("https", &self.config.is_some()).finish()
    }
}

impl ClientTls {
    /// Plain HTTP only.
    pub fn plain() -> ClientTls {
        ClientTls { config: None }
    }

    /// From a tool's flags: `cacert` turns HTTPS on, trusting that CA;
    /// without it, HTTPS is on (with the system's CAs) only if one of the
    /// `addresses` says `https://`.
    pub fn from_flags<'a>(
        cacert: Option<&Path>,
        addresses: impl IntoIterator<Item = &'a str>,
    ) -> Result<ClientTls, String> {
        let roots = match cacert {
            Some(path) => roots_from(path)?,
            None if addresses.into_iter().any(|a| a.starts_with("https://")) => system_roots()?,
            None => return Ok(ClientTls::plain()),
        };
        let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The client speaks HTTP/1.1 only (hyper's http1 feature).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls { config: Some(Arc::new(config)) })
    }

    /// Whether bare `HOST:PORT` addresses mean HTTPS.
    pub fn https(&self) -> bool {
        self.config.is_some()
    }

    /// The base URL of a node: `address` as it is if it has a scheme, else
    /// with `https://` when this client speaks TLS, `http://` when not.
    pub fn base_url(&self, address: &str) -> String {
        if address.contains("://") {
            address.trim_end_matches('/').to_owned()
        } else if self.https() {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        }
    }

    /// A connector for hyper-util's client: `http://` URIs over `tcp`,
    /// `https://` ones over TLS on top of it.
    pub fn connector(&self, mut tcp: HttpConnector) -> Connector {
        tcp.enforce_http(false);
        Connector { tcp, tls: self.config.clone().map(TlsConnector::from) }
    }
}

fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let bad = |reason: String| format!("{}: {reason}", path.display());
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        roots.add(cert).map_err(|e| bad(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => vec![file.into()],
        None => SYSTEM_BUNDLES.iter().map(PathBuf::from).collect(),
    };
    match candidates.iter().find(|p| p.is_file()) {
        Some(bundle) => roots_from(bundle),
        None => Err("an https:// address needs the CA that signed the node's certificate: --cacert FILE \
                     (no system CA bundle found either)"
            .into()),
    }
}

/// Dials `http://` and `https://` URIs, for hyper-util's legacy client.
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
    tls: Option<TlsConnector>,
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<http::Uri>::poll_ready(&mut self.tcp, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let tls = self.tls.clone();
        let connecting = tower::Service::<http::Uri>::call(&mut self.tcp, uri.clone());
        Box::pin(async move {
            if !https {
                return Ok(TokioIo::new(Stream::Plain(connecting.await?.into_inner())));
            }
            // Built with an https:// address, so there is a configuration;
            // this is the guard for a URI made some other way.
            let tls = tls.ok_or("an https:// address needs --cacert FILE")?;
            let host = uri.host().ok_or("the address has no host")?;
            // An IPv6 literal comes in brackets; certificates name it without.
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let name = ServerName::try_from(host).map_err(|_| "the host is no DNS name or IP")?;
            let tcp = connecting.await?.into_inner();
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
        })
    }
}

/// A connection the [`Connector`] opened.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(tcp) => tcp.connected(),
            Stream::Tls(tls) => tls.get_ref().0.connected(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why [`fetch`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Nothing there answered: the connection was refused, the host is
    /// unreachable or its name unknown, or nothing came back in time. It may
    /// simply not be up yet.
    Unreachable(String),
    /// Something accepted the connection but gave no HTTP answer that fits
    /// (a TLS port asked in plaintext, a certificate not trusted, another
    /// protocol, a body larger than asked for).
    Broken(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(why) | FetchError::Broken(why) => f.write_str(why),
        }
    }
}

/// One `GET url` on a connection of its own: the status and at most
/// `limit` bytes of body, within `timeout`.
pub async fn fetch(
    tls: &ClientTls,
    url: &str,
    timeout: std::time::Duration,
    limit: usize,
) -> Result<(http::StatusCode, bytes::Bytes), FetchError> {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(tls.connector(HttpConnector::new()));
    let request = http::Request::get(url)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| FetchError::Broken(format!("{url}: {e}")))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            let why = format!("{url}: {}", chain(&e));
            if e.is_connect() && !connected(&e) { FetchError::Unreachable(why) } else { FetchError::Broken(why) }
        })?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| FetchError::Broken(format!("{url}: the body: {e}")))?
            .to_bytes();
        Ok((parts.status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(FetchError::Unreachable(format!("{url}: no answer within {timeout:?}"))))
}

/// Whether a connect error came after the TCP connection was made (the TLS
/// handshake failed), rather than from the connection itself (refused,
/// unreachable, a name that does not resolve).
fn connected(e: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            )
        {
            return false;
        }
        if s.to_string().contains("dns error") || s.to_string().contains("tcp connect error") {
            return false;
        }
        source = s.source();
    }
    true
}

/// An error and its causes, on one line.
fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_take_the_scheme_of_the_flags() {
        let plain = ClientTls::from_flags(None, ["127.0.0.1:8880"]).unwrap();
        assert!(!plain.https());
        assert_eq!(plain.base_url("127.0.0.1:8880"), "http://127.0.0.1:8880");
        assert_eq!(plain.base_url("https://h:1/"), "https://h:1");
        let err = ClientTls::from_flags(Some(Path::new("/nonexistent/ca.pem")), ["h:1"]).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = ClientTls::from_flags(Some(&empty), ["h:1"]).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
    }
}
