//! Mutual TLS on the cluster port (rustls, ring provider).
//!
//! A node started with `--tls-ca`, `--tls-cert` and `--tls-key` loads them
//! into a [`ClusterTls`]: a server configuration that *requires* a client
//! certificate signed by the cluster CA, and a client configuration that
//! presents the node's certificate and checks the peer's against the same
//! CA (and against the address dialled: the certificate's IP or DNS names).
//! Both sides speak only TLS: there is no plaintext fallback.
//!
//! We run the handshake ourselves rather than through tonic's
//! `ServerTlsConfig`/`ClientTlsConfig`, which are fixed when the server or
//! channel is built: here every new connection takes the configuration
//! current at that moment, so certificate files replaced on disk
//! ([`ClusterTls::reload_if_changed`], polled by `services::certificates`)
//! apply to the next handshake without a restart. Established connections
//! keep the certificate they were opened with.
//!
//! A refused handshake (no certificate, a foreign CA's, an expired one, not
//! TLS at all) is logged with its reason and counted in
//! `vinzclortho_tls_handshake_failures_total{reason}`; no service method
//! runs for it. The certificate's name (its subject common name) reaches the
//! identity check through tonic's `TlsConnectInfo` request extension
//! ([`peer_certificate_name`]).
//!
//! The HTTP port's certificate ([`HttpTls`], `--http-tls-cert`) is loaded,
//! checked and reloaded the same way, without a CA: HTTP clients present no
//! certificate. Its connections go through the same accept loop
//! ([`accept`]), counted in `vinzclortho_http_tls_handshake_failures_total`.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::telemetry::metrics;

/// A handshake not finished in this long is dropped (a peer that connects
/// and says nothing must not hold a task).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be handshaken.
const MAX_HANDSHAKES: usize = 256;
/// TCP keepalive on accepted and dialled connections, as without TLS.
const TCP_KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "{path} can be read by every user (mode {mode:03o}); a private key must not be: chmod 600 {path}",
        path = path.display()
    )]
    KeyReadable { path: PathBuf, mode: u32 },
    #[error("cannot use the certificate files: {0}")]
    Config(String),
}

/// The certificate files a node was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What changes when one of the files is replaced (a rename gives a new inode
/// even within the same mtime tick).
type Stamp = Option<(SystemTime, u64, u64)>;

struct Loaded {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// This node's certificate name (its subject common name), if any.
    name: Option<String>,
    stamps: [Stamp; 3],
}

/// The node's TLS configurations, replaced when the files change.
pub struct ClusterTls {
    files: TlsFiles,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Loads the files; fails on a missing or malformed file, a key that
    /// does not match the certificate, or a key others can read.
    pub fn load(files: TlsFiles) -> Result<ClusterTls, TlsError> {
        let loaded = load(&files)?;
        Ok(ClusterTls { files, loaded: RwLock::new(loaded) })
    }

    /// The configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.loaded.read().expect("tls lock").server)
    }

    /// The configuration for the next dialled connection.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.loaded.read().expect("tls lock").client)
    }

    /// This node's certificate name (subject common name), as loaded now.
    pub fn name(&self) -> Option<String> {
        self.loaded.read().expect("tls lock").name.clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Loads the files again if any of them changed since the last load.
    /// `Ok(true)`: new certificates apply to new connections. On an error
    /// (a half-written rotation, a key made readable) the configuration in
    /// use stays, and the next call tries again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = stamps(&self.files);
        if stamps == self.loaded.read().expect("tls lock").stamps {
            return Ok(false);
        }
        let loaded = load(&self.files)?;
        *self.loaded.write().expect("tls lock") = loaded;
        Ok(true)
    }
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.ino(), meta.len()))
}

fn stamps(files: &TlsFiles) -> [Stamp; 3] {
    [stamp(&files.ca), stamp(&files.cert), stamp(&files.key)]
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File { path: path.to_owned(), reason: e.to_string() })
}

fn bad(path: &Path, reason: String) -> TlsError {
    TlsError::File { path: path.to_owned(), reason }
}

/// A private key file, refused if users other than its owner and group
/// may read (or write) it: anyone on the host could then act as this node.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mode = std::fs::metadata(path).map_err(|e| bad(path, e.to_string()))?.mode();
    if mode & 0o007 != 0 {
        return Err(TlsError::KeyReadable { path: path.to_owned(), mode: mode & 0o777 });
    }
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| bad(path, format!("not a PEM private key: {e}")))
}

/// A certificate chain file, the leaf first.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(bad(path, "holds no certificate".into()));
    }
    Ok(chain)
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    // Stamps first: a file replaced while we read it is read again next time.
    let stamps = stamps(files);
    let key = read_key(&files.key)?;
    let ca_pem = read(&files.ca)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| bad(&files.ca, format!("not a PEM certificate: {e}")))?;
        roots.add(cert).map_err(|e| bad(&files.ca, format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad(&files.ca, "holds no certificate".into()));
    }
    let chain = read_chain(&files.cert)?;
    let leaf = &chain[0];
    let name = certificate_name(leaf);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots);
    let config = |e: rustls::Error| TlsError::Config(e.to_string());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // Say so when the node's own certificate would be refused by its peers
    // (another CA's, expired): it still loads, as the operator asked, but
    // the log names the cause of the refusals to come.
    if let Err(e) = verifier.verify_client_cert(leaf, &chain[1..], UnixTime::now()) {
        tracing::warn!(
            cert = %files.cert.display(),
            ca = %files.ca.display(),
            error = %e,
            "this node's certificate does not verify against the cluster CA: peers will refuse it"
        );
    }
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            TlsError::Config(format!("{} and {} do not go together: {e}", files.cert.display(), files.key.display()))
        })?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            TlsError::Config(format!("{} and {} do not go together: {e}", files.cert.display(), files.key.display()))
        })?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded { server: Arc::new(server), client: Arc::new(client), name, stamps })
}

/// The HTTP port's certificate files (`--http-tls-cert`, `--http-tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS on the HTTP port: a server configuration that asks clients for no
/// certificate (TLS here lets clients check the node and keeps the traffic
/// private; who a client is, is the HTTP layer's business), replaced when
/// the files change, like [`ClusterTls`]. It offers HTTP/2 and HTTP/1.1 by
/// ALPN.
pub struct HttpTls {
    files: HttpTlsFiles,
    loaded: RwLock<(Arc<ServerConfig>, [Stamp; 2])>,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl HttpTls {
    /// Loads the files; fails on a missing or malformed file, a key that
    /// does not match the certificate, or a key others can read.
    pub fn load(files: HttpTlsFiles) -> Result<HttpTls, TlsError> {
        let loaded = load_http(&files)?;
        Ok(HttpTls { files, loaded: RwLock::new(loaded) })
    }

    /// The configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.loaded.read().expect("tls lock").0)
    }

    pub fn files(&self) -> &HttpTlsFiles {
        &self.files
    }

    /// As [`ClusterTls::reload_if_changed`]: `Ok(true)` when new files
    /// loaded; on an error the configuration in use stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = [stamp(&self.files.cert), stamp(&self.files.key)];
        if stamps == self.loaded.read().expect("tls lock").1 {
            return Ok(false);
        }
        let loaded = load_http(&self.files)?;
        *self.loaded.write().expect("tls lock") = loaded;
        Ok(true)
    }
}

fn load_http(files: &HttpTlsFiles) -> Result<(Arc<ServerConfig>, [Stamp; 2]), TlsError> {
    let stamps = [stamp(&files.cert), stamp(&files.key)];
    let key = read_key(&files.key)?;
    let chain = read_chain(&files.cert)?;
    let mut server = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::Config(format!("{} and {} do not go together: {e}", files.cert.display(), files.key.display()))
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(server), stamps))
}

/// A certificate's name: its subject common name, if it has one.
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    crate::core::x509::common_name(cert)
}

/// The name of the certificate a call's peer presented, when the call came
/// over TLS; `None` over plaintext (or from a certificate without a name).
pub fn peer_certificate_name(extensions: &http::Extensions) -> Option<String> {
    let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    certificate_name(certs.first()?)
}

/// Whether a call came over TLS (its peer then presented a verified
/// certificate: the handshake requires one).
pub fn over_tls(extensions: &http::Extensions) -> bool {
    extensions.get::<TlsConnectInfo<TcpConnectInfo>>().is_some()
}

/// The remote address of a call, over TLS or not.
pub fn remote_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    match extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        Some(info) => info.get_ref().remote_addr(),
        None => extensions.get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr),
    }
}

/// Why a handshake failed: the `reason` label of the metric.
pub fn failure_reason(error: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    if error.kind() == io::ErrorKind::UnexpectedEof {
        return "closed";
    }
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            "expired"
        }
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
            "unknown_ca"
        }
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::InvalidMessage(_) | Error::InappropriateMessage { .. }) => "not_tls",
        Some(Error::AlertReceived(_)) => "peer_refused",
        _ => "other",
    }
}

/// Accepted connections on `listener`, each past a TLS handshake with the
/// configuration current when it was accepted. Refused handshakes are
/// logged and counted here; the stream yields only good connections. It
/// ends accepting when dropped (the server stopped).
pub fn incoming(listener: TcpListener, tls: Arc<ClusterTls>) -> Incoming {
    Incoming(accept(listener, Port::Cluster, move || tls.server_config()))
}

/// Which port a handshake failed on: its log line and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Cluster,
    Http,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Cluster => "cluster port",
            Port::Http => "HTTP port",
        }
    }
}

/// The accept loop behind [`incoming`], for either port: every accepted
/// connection is handshaken in a task of its own (bounded in time and in
/// number), so a slow or hostile client never holds up the next accept;
/// good connections come out of the channel, which stops the loop when it
/// is dropped.
pub fn accept(
    listener: TcpListener,
    port: Port,
    config: impl Fn() -> Arc<ServerConfig> + Send + 'static,
) -> mpsc::Receiver<tokio_rustls::server::TlsStream<TcpStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => break,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "{}: accept failed", port.name());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else { break };
            set_socket_options(&stream);
            let acceptor = TlsAcceptor::from(config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(stream).await;
                    }
                    Ok(Err(e)) => handshake_refused(port, remote, failure_reason(&e), &e.to_string()),
                    Err(_) => handshake_refused(port, remote, "timeout", "no handshake within 10 s"),
                }
            });
        }
    });
    rx
}

fn handshake_refused(port: Port, remote: SocketAddr, reason: &'static str, error: &str) {
    let port_name = port.name();
    if reason == "closed" {
        // A connection closed before it said anything: a TCP health check
        // or port scan, every few seconds perhaps. Counted, not a warning.
        tracing::debug!(%remote, reason, error, "{port_name}: connection closed before a TLS handshake");
    } else {
        tracing::warn!(%remote, reason, error, "{port_name}: refused a TLS handshake");
    }
    match port {
        Port::Cluster => metrics::tls_handshake_failed(reason),
        Port::Http => metrics::http_tls_handshake_failed(reason),
    }
}

fn set_socket_options(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// The stream [`incoming`] returns, for tonic's `serve_with_incoming`.
pub struct Incoming(mpsc::Receiver<tokio_rustls::server::TlsStream<TcpStream>>);

impl Stream for Incoming {
    type Item = Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

/// Dials peers over TLS, for tonic's `connect_with_connector_lazy`: the
/// handshake presents this node's current certificate and checks the peer's
/// against the CA and the dialled host.
#[derive(Clone)]
pub struct TlsConnect {
    tls: Arc<ClusterTls>,
}

impl TlsConnect {
    pub fn new(tls: Arc<ClusterTls>) -> TlsConnect {
        TlsConnect { tls }
    }
}

type Dialled = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<http::Uri> for TlsConnect {
    type Response = Dialled;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Dialled>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.client_config();
        Box::pin(async move {
            let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            // An IPv6 literal comes in brackets; certificates name it without.
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let name = ServerName::try_from(host.clone()).map_err(|_| invalid("host is no DNS name or IP"))?;
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            set_socket_options(&stream);
            let stream = TlsConnector::from(config).connect(name, stream).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A CA in `dir` (ca.pem, and its key kept in memory only).
    struct Ca {
        dir: tempfile::TempDir,
        key: rcgen::KeyPair,
        params: rcgen::CertificateParams,
    }

    impl Ca {
        fn new() -> Ca {
            let dir = tempfile::tempdir().unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
            std::fs::write(dir.path().join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
            Ca { dir, key, params }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes `name`.pem and `name`.key (0600), a new pair each time.
        fn node(&self, name: &str) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
            let cert = params.signed_by(&key, &issuer).unwrap();
            let key_path = self.path().join(format!("{name}.key"));
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(self.path().join(format!("{name}.pem")), cert.pem()).unwrap();
        }
    }

    fn certs_dir() -> Ca {
        let ca = Ca::new();
        ca.node("n1");
        ca
    }

    fn files(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) }
    }

    #[test]
    fn loads_a_pair_of_the_ca_and_names_it() {
        let dir = certs_dir();
        let tls = ClusterTls::load(files(dir.path(), "n1")).unwrap();
        assert_eq!(tls.name().as_deref(), Some("n1"));
        assert_eq!(tls.server_config().alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed");
    }

    #[test]
    fn a_world_readable_key_a_missing_file_or_a_key_of_another_certificate_is_refused() {
        let dir = certs_dir();
        dir.node("n2");
        let key = dir.path().join("n1.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
        let err = ClusterTls::load(files(dir.path(), "n1")).unwrap_err();
        assert!(matches!(err, TlsError::KeyReadable { mode: 0o604, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        ClusterTls::load(files(dir.path(), "n1")).expect("readable by the group only is allowed");

        let mut mismatched = files(dir.path(), "n1");
        mismatched.key = dir.path().join("n2.key");
        let err = ClusterTls::load(mismatched).unwrap_err().to_string();
        assert!(err.contains("do not go together"), "{err}");
        let err = ClusterTls::load(files(dir.path(), "missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_bad_change_keeps_the_certificates_in_use() {
        let dir = certs_dir();
        let tls = ClusterTls::load(files(dir.path(), "n1")).unwrap();
        let before = tls.server_config();
        // A rotation: the same name, a new pair.
        dir.node("n1");
        assert!(tls.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.server_config()), "new connections get the new certificate");
        // Half a rotation: a certificate whose key is not there yet.
        let in_use = tls.server_config();
        std::fs::write(dir.path().join("n1.pem"), b"not a certificate").unwrap();
        assert!(tls.reload_if_changed().is_err());
        assert!(Arc::ptr_eq(&in_use, &tls.server_config()), "the certificates in use stay");
        dir.node("n1");
        assert!(tls.reload_if_changed().unwrap(), "the next poll loads the completed rotation");
    }

    #[test]
    fn the_http_certificate_loads_without_a_ca_reloads_and_refuses_a_readable_key() {
        let dir = certs_dir();
        let http = |name: &str| HttpTlsFiles {
            cert: dir.path().join(format!("{name}.pem")),
            key: dir.path().join(format!("{name}.key")),
        };
        let tls = HttpTls::load(http("n1")).unwrap();
        assert_eq!(tls.server_config().alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed");
        let before = tls.server_config();
        dir.node("n1");
        assert!(tls.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.server_config()), "new connections get the new certificate");
        // A rotation whose key came out world-readable.
        dir.node("n1");
        let key = dir.path().join("n1.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let in_use = tls.server_config();
        assert!(matches!(tls.reload_if_changed(), Err(TlsError::KeyReadable { .. })));
        assert!(Arc::ptr_eq(&in_use, &tls.server_config()), "the certificate in use stays");
        let err = HttpTls::load(http("n1")).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let err = HttpTls::load(http("missing")).unwrap_err().to_string();
        assert!(err.contains("missing.key") && err.contains("No such file"), "{err}");
    }

    #[test]
    fn handshake_errors_map_to_their_reasons() {
        use rustls::{CertificateError, Error};
        let wrap = |e: Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (wrap(Error::NoCertificatesPresented), "no_certificate"),
            (wrap(Error::InvalidCertificate(CertificateError::Expired)), "expired"),
            (wrap(Error::InvalidCertificate(CertificateError::UnknownIssuer)), "unknown_ca"),
            (wrap(Error::InvalidCertificate(CertificateError::BadSignature)), "unknown_ca"),
            (wrap(Error::InvalidCertificate(CertificateError::NotValidForName)), "bad_certificate"),
            (wrap(Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)), "not_tls"),
            (wrap(Error::AlertReceived(rustls::AlertDescription::BadCertificate)), "peer_refused"),
            (io::Error::from(io::ErrorKind::UnexpectedEof), "closed"),
            (io::Error::from(io::ErrorKind::ConnectionReset), "other"),
        ];
        for (error, reason) in cases {
            assert_eq!(failure_reason(&error), reason, "{error}");
            assert!(metrics::TLS_HANDSHAKE_FAILURE_REASONS.contains(&reason), "{reason} is registered");
        }
    }
}
