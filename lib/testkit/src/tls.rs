//! Certificates made for one test (rcgen, ring): a CA, and certificates it signs for servers
//! and clients, written as PEM files into a temporary directory that goes with the CA.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a TLS server needs: its certificate and key, and the CA it checks clients with.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Whether clients must present a certificate signed by `ca`.
    pub require_client_cert: bool,
}

/// A certificate authority of its own, for one test. Its files live as long as it does.
pub struct TestCa {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("name", &self.name).field("dir", &self.dir.path()).finish()
    }
}

impl TestCa {
    /// A new CA called `name`, its certificate written to `<dir>/<name>-ca.pem`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("millrace-tls-").tempdir()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?).context("making the test CA")?;
        let ca_file = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, issuer.pem())?;
        Ok(Self { name: name.to_owned(), issuer, ca_file, dir })
    }

    /// The CA's certificate (PEM).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The directory holding every file of this CA.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate signed by this CA for `names` (DNS names or IP addresses, its subject
    /// alternative names), good for a server and for a client alike, as
    /// `<dir>/<label>.pem` and `<dir>/<label>-key.pem` (mode 0600, as PostgreSQL wants).
    pub fn issue(&self, label: &str, names: &[&str]) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, label);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &*self.issuer).with_context(|| format!("issuing {label}"))?;
        let files = CertFiles {
            cert: self.dir.path().join(format!("{label}.pem")),
            key: self.dir.path().join(format!("{label}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        Ok(files)
    }

    /// A server's TLS files: a certificate for 127.0.0.1 and localhost, and this CA.
    pub fn server(&self, label: &str, require_client_cert: bool) -> anyhow::Result<ServerTls> {
        let files = self.issue(label, &["127.0.0.1", "localhost"])?;
        Ok(ServerTls { cert: files.cert, key: files.key, ca: self.ca_file.clone(), require_client_cert })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    Ok(())
}
