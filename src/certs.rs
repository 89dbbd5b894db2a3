//! `vinzclortho certs`: the certificates of mutual TLS between nodes.
//!
//! * `certs init --dir DIR` creates the cluster's CA: `DIR/ca.pem` (give it to
//!   every node as `--tls-ca`) and `DIR/ca.key` (keep it off the nodes: it
//!   signs new members).
//! * `certs node --dir DIR --name NAME --host HOST...` creates a node's
//!   certificate signed by that CA: `DIR/NAME.pem` and `DIR/NAME.key`. NAME is
//!   the certificate's subject common name, which the cluster binds to the
//!   node's id when it joins (`rpc::tls`); every HOST (an IP address or a DNS
//!   name) is a subject alternative name, checked by peers against the
//!   address they dial. Running it again for the same NAME replaces the
//!   files (atomically): that is how a certificate is rotated, and a running
//!   node picks the new files up by itself.
//!
//! Private keys are written 0600: a node refuses a key others can read.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, UnixTime};

/// The CA's files in `--dir`.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
/// How long a CA is valid: long, because replacing it means new certificates
/// for every node.
const CA_DAYS: u64 = 3650;
/// Certificates are valid from an hour ago: peers' clocks differ a little.
const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
/// The CA's subject common name, before a random suffix: each cluster's CA
/// has a name of its own, so a peer told "another CA's certificate" sees an
/// unknown issuer rather than a bad signature from a namesake.
const CA_NAME: &str = "Vinz Clortho cluster CA";

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the cluster's certificate authority: DIR/ca.pem and DIR/ca.key.
    /// Refuses to overwrite an existing CA.
    Init {
        /// Where to write the CA's files (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Create a node certificate signed by the CA in DIR: DIR/NAME.pem and
    /// DIR/NAME.key (replaced if they exist: that is a rotation).
    Node {
        /// The directory of `certs init`; the node's files go there too.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The certificate's name (subject common name): the cluster binds
        /// it to the node's id when the node joins. Letters, digits, '.',
        /// '-' and '_'.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// An address peers reach the node at: an IP address or a DNS name
        /// (repeat for several). Peers check it against the address they dial.
        #[arg(long = "host", value_name = "HOST", required = true, num_args = 1..)]
        hosts: Vec<String>,
        /// How long the certificate is valid, in days.
        #[arg(long, value_name = "DAYS", default_value_t = 365)]
        days: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot create the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

pub fn main(args: CertsArgs) -> ExitCode {
    let result = match args.command {
        CertsCommand::Init { dir } => init(&dir),
        CertsCommand::Node { dir, name, hosts, days } => node(&dir, &name, &hosts, days),
    };
    match result {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(CertsError::Invalid(reason)) => {
            eprintln!("vinzclortho certs: {reason}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("vinzclortho certs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Creates the CA in `dir`; returns the files written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, CertsError> {
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(CertsError::Invalid(format!(
                "{} exists; a cluster has one CA (remove it first to start a new one, and issue every node a new \
                 certificate)",
                path.display()
            )));
        }
    }
    create_dir(dir)?;
    let key = KeyPair::generate()?;
    let mut params = ca_params(&format!("{CA_NAME} {:016x}", rand::random::<u64>()));
    valid_for(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&cert_path, cert.pem().as_bytes(), false)?;
    Ok(vec![cert_path, key_path])
}

/// The CA's subject (its common name alone) and usages: signing a node
/// certificate rebuilds the issuer from them, with the name read back from
/// ca.pem, and the CA's key (the issuer name must be the CA's subject byte
/// for byte; the key identifier comes from the key); the result is checked
/// against ca.pem.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name_of(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Creates node `name`'s certificate for `hosts`, signed by the CA in `dir`.
pub fn node(dir: &Path, name: &str, hosts: &[String], days: u32) -> Result<Vec<PathBuf>, CertsError> {
    check_name(name)?;
    if name == "ca" {
        return Err(CertsError::Invalid("--name ca would overwrite the CA's files; choose another name".into()));
    }
    if days == 0 {
        return Err(CertsError::Invalid("--days must be at least 1".into()));
    }
    let now = std::time::SystemTime::now();
    let (not_before, not_after) = (now - HOUR, now + std::time::Duration::from_secs(86_400 * u64::from(days)));
    let (cert, key) = issue(dir, name, hosts, not_before, not_after)?;
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    // Key first: a node that reloads between the two writes sees the old
    // certificate with a new key, fails to load the pair, and keeps the
    // pair it had until the certificate follows.
    write_file(&key_path, key.as_bytes(), true)?;
    write_file(&cert_path, cert.as_bytes(), false)?;
    Ok(vec![cert_path, key_path])
}

/// A node certificate and its key (PEM), signed by the CA in `dir`, valid
/// from `not_before` to `not_after`; written nowhere. `node` writes them;
/// tests make expired ones.
pub fn issue(
    dir: &Path,
    name: &str,
    hosts: &[String],
    not_before: std::time::SystemTime,
    not_after: std::time::SystemTime,
) -> Result<(String, String), CertsError> {
    let mut sans = Vec::with_capacity(hosts.len());
    for host in hosts {
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.clone().try_into().map_err(|_| CertsError::Invalid(format!("--host {host:?} is no DNS name")))?,
            ),
        });
    }
    let ca_cert = read_text(&dir.join(CA_CERT_FILE))?;
    let ca_key = KeyPair::from_pem(&read_text(&dir.join(CA_KEY_FILE))?)?;
    let ca_der = CertificateDer::from_pem_slice(ca_cert.as_bytes()).map_err(|e| {
        CertsError::Invalid(format!("{}: not a PEM certificate: {e}", dir.join(CA_CERT_FILE).display()))
    })?;
    let ca_name = crate::core::x509::common_name(&ca_der).ok_or_else(|| {
        CertsError::Invalid(format!("{} has no common name; was it made by `vinzclortho certs init`?", CA_CERT_FILE))
    })?;
    let issuer = Issuer::new(ca_params(&ca_name), ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name_of(name);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Each node is a server to its peers and a client of them.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params.signed_by(&key, &issuer)?;
    // Checked within its validity, so that a test's expired certificate is
    // checked too.
    let within = not_before + not_after.duration_since(not_before).unwrap_or_default() / 2;
    verify(&ca_cert, cert.der(), within).map_err(|e| {
        CertsError::Invalid(format!(
            "the new certificate does not verify against {} ({e}): was that CA made by `vinzclortho certs init`, \
             with {} beside it?",
            dir.join(CA_CERT_FILE).display(),
            CA_KEY_FILE
        ))
    })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Whether `cert` chains to the CA in `ca_pem` at time `at`, as a peer checks it.
pub fn verify(ca_pem: &str, cert: &CertificateDer<'_>, at: std::time::SystemTime) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let at = UnixTime::since_unix_epoch(at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default());
    verifier.verify_client_cert(cert, &[], at).map(|_| ()).map_err(|e| e.to_string())
}

/// A certificate name becomes a file name and a log field: keep it plain.
fn check_name(name: &str) -> Result<(), CertsError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.len() > 64 || !name.chars().all(plain) || name.starts_with('.') {
        return Err(CertsError::Invalid(format!(
            "--name {name:?}: use 1 to 64 letters, digits, '.', '-' or '_' (not starting with '.')"
        )));
    }
    Ok(())
}

fn name_of(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Valid from an hour ago (clocks of peers differ a little) for `days`.
fn valid_for(params: &mut CertificateParams, days: u64) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - HOUR).into();
    params.not_after = (now + std::time::Duration::from_secs(86_400 * days)).into();
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|e| CertsError::Io { path: dir.to_owned(), reason: e.to_string() })
}

fn read_text(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|e| CertsError::Io {
        path: path.to_owned(),
        reason: format!("{e} (run `vinzclortho certs init --dir DIR` first)"),
    })
}

/// Writes `path` atomically (a temporary file, then a rename), `0600` for a
/// private key: the key is never readable by others, not even for a moment.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertsError> {
    let io = |e: std::io::Error| CertsError::Io { path: path.to_owned(), reason: e.to_string() };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(if private { 0o600 } else { 0o644 });
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn init_then_node_writes_a_ca_and_a_signed_node_pair_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let err = init(dir.path()).unwrap_err().to_string();
        assert!(err.contains("exists"), "{err}");
        let written = node(dir.path(), "n1", &["127.0.0.1".into(), "node1.example".into()], 30).unwrap();
        assert_eq!(written, vec![dir.path().join("n1.pem"), dir.path().join("n1.key")]);
        for key in ["ca.key", "n1.key"] {
            let mode = std::fs::metadata(dir.path().join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let pem = std::fs::read(dir.path().join("n1.pem")).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(crate::core::x509::common_name(&der).as_deref(), Some("n1"));
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        let now = std::time::SystemTime::now();
        verify(&ca, &der, now).unwrap();
        // Another CA's certificate does not verify against this one.
        let other = tempfile::tempdir().unwrap();
        init(other.path()).unwrap();
        let foreign = std::fs::read_to_string(other.path().join("ca.pem")).unwrap();
        let err = verify(&foreign, &der, now).unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        // A rotation: the same name again replaces the pair.
        node(dir.path(), "n1", &["127.0.0.1".into()], 30).unwrap();
        assert_ne!(std::fs::read(dir.path().join("n1.pem")).unwrap(), pem);
    }

    #[test]
    fn bad_names_and_a_missing_ca_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", "../x", "a b", "ca", ".hidden"] {
            assert!(node(dir.path(), name, &["127.0.0.1".into()], 1).is_err(), "{name:?}");
        }
        let err = node(dir.path(), "n1", &["127.0.0.1".into()], 1).unwrap_err().to_string();
        assert!(err.contains("certs init"), "{err}");
    }
}
