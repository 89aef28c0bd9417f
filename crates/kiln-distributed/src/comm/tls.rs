//! Security: TLS with mutual authentication and the shared-secret token (Dask's `Security`).
//!
//! A [`Security`] holds what one process needs: the certificate authority (CA) whose signature
//! makes a peer trusted, a certificate and key per role (scheduler, worker, client), the lowest
//! TLS version accepted, whether plain `tcp://` is refused, and an optional [`AuthToken`]. From it
//! [`Security::transport`] builds a [`Transport`] for one role: the rustls client configuration
//! for connections this process opens and the server configuration for its listener.
//!
//! Authentication is mutual: a listener asks for the peer's certificate and refuses, inside the
//! TLS handshake, one that the CA did not sign (or that has expired), before any kiln byte is
//! read. Certificates stand for roles in a cluster, not for host names (as in Dask): a
//! connecting side checks that the listener's certificate chains to the CA and is valid now, not
//! that it names the host dialled, because workers' addresses are learnt at run time.
//!
//! One crypto provider, aws-lc-rs (rustls's default): the fastest AES-GCM on this hardware
//! (VAES/AVX-512) and the provider rcgen uses here, so no second one is compiled.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use kiln_protocol::AuthToken;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The roles a process plays, each with its own certificate (Dask's `tls_scheduler_cert`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsRole {
    /// The scheduler's listener.
    Scheduler,
    /// A worker: its connection to the scheduler, its data port and its fetches from peers.
    Worker,
    /// A client: its connection to the scheduler and its fetches from workers.
    Client,
}

impl TlsRole {
    fn index(self) -> usize {
        match self {
            TlsRole::Scheduler => 0,
            TlsRole::Worker => 1,
            TlsRole::Client => 2,
        }
    }

    /// `scheduler`, `worker` or `client`.
    pub fn name(self) -> &'static str {
        match self {
            TlsRole::Scheduler => "scheduler",
            TlsRole::Worker => "worker",
            TlsRole::Client => "client",
        }
    }
}

/// The lowest TLS version a process accepts (Dask's `tls_min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

impl std::str::FromStr for TlsVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().trim_start_matches("tls").trim_start_matches(['v', ' ']) {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            _ => Err(format!("{s:?} is not a TLS version: expected 1.2 or 1.3")),
        }
    }
}

/// Why a [`Security`] could not be built or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A file could not be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        /// What the file was to hold ("CA file", "certificate", "private key", "token file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file (or in-memory text) does not hold what it should.
    #[error("{source_name}: {message}")]
    Pem {
        /// The file, or where the text came from.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The settings do not make a working configuration.
    #[error("{0}")]
    Config(String),
    /// rustls refused the certificates or settings.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificates could not be generated.
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain and its private key, kept with the PEM text they came from (so that
/// [`Security::write_pem_files`] can hand them to worker processes).
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

/// What a process needs to connect securely (Dask's `distributed.security.Security`).
///
/// The default is no TLS and no token: plain `tcp://`, as before.
///
/// ```
/// use kiln_distributed::comm::tls::{Security, TlsRole};
/// // An in-memory CA and one certificate for every role, for a cluster on this machine.
/// let security = Security::temporary().unwrap();
/// assert!(security.require_encryption() && security.has_certificate(TlsRole::Worker));
/// ```
#[derive(Clone, Default)]
pub struct Security {
    ca: Vec<CertificateDer<'static>>,
    ca_pem: String,
    identities: [Option<Identity>; 3],
    min_version: TlsVersion,
    require_encryption: bool,
    token: Option<AuthToken>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<&str> = [TlsRole::Scheduler, TlsRole::Worker, TlsRole::Client]
            .into_iter()
            .filter(|r| self.has_certificate(*r))
            .map(TlsRole::name)
            .collect();
        f.debug_struct("Security")
            .field("ca_certificates", &self.ca.len())
            .field("certificates_for", &roles)
            .field("min_version", &self.min_version)
            .field("require_encryption", &self.require_encryption)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

fn pem_error(source_name: &str, message: impl Into<String>) -> SecurityError {
    SecurityError::Pem { source_name: source_name.to_string(), message: message.into() }
}

fn read_file(what: &'static str, path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path).map_err(|source| SecurityError::Read { what, path: path.to_path_buf(), source })
}

impl Security {
    /// No TLS, no token.
    pub fn new() -> Security {
        Security::default()
    }

    /// A fresh in-memory CA and one certificate signed by it for every role (for
    /// `localhost` and 127.0.0.1), with encryption required: what a cluster on this machine
    /// needs (Dask's `Security.temporary()`). Nothing is written to disk.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn temporary() -> Result<Security, SecurityError> {
        let ca = CertificateAuthority::new("kiln temporary CA")?;
        let (cert_pem, key_pem) = ca.issue("kiln")?;
        let mut security = Security::new().with_ca_pem(&ca.certificate_pem(), "the temporary CA")?;
        for role in [TlsRole::Scheduler, TlsRole::Worker, TlsRole::Client] {
            security = security.with_identity_pem(role, &cert_pem, &key_pem, "the temporary certificate")?;
        }
        Ok(security.with_require_encryption(true))
    }

    /// Trusts the CA certificates in this PEM file (`--tls-ca-file`).
    ///
    /// # Errors
    /// The file cannot be read or holds no certificate.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<Security, SecurityError> {
        let path = path.as_ref();
        let pem = read_file("CA file", path)?;
        self.with_ca_pem(&pem, &path.display().to_string())
    }

    /// Trusts the CA certificates in this PEM text; `source_name` names it in errors.
    ///
    /// # Errors
    /// The text holds no certificate, or one that does not parse.
    pub fn with_ca_pem(mut self, pem: &str, source_name: &str) -> Result<Security, SecurityError> {
        let certs = parse_certificates(pem, source_name)?;
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots.add(cert.clone()).map_err(|e| pem_error(source_name, format!("not a usable CA certificate: {e}")))?;
        }
        self.ca = certs;
        self.ca_pem = pem.to_string();
        Ok(self)
    }

    /// The certificate (chain) and private key `role` presents, from PEM files
    /// (`--tls-cert`, `--tls-key`).
    ///
    /// # Errors
    /// A file cannot be read (the error names it), holds no certificate or no private key.
    pub fn with_identity_files(
        self,
        role: TlsRole,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Security, SecurityError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = read_file("certificate", cert)?;
        let key_pem = read_file("private key", key)?;
        let certs = parse_certificates(&cert_pem, &cert.display().to_string())?;
        let key_der = parse_key(&key_pem, &key.display().to_string())?;
        Ok(self.set_identity(role, Identity { chain: certs, key: key_der, cert_pem, key_pem }))
    }

    /// [`Security::with_identity_files`] from PEM text; `source_name` names it in errors.
    ///
    /// # Errors
    /// The text holds no certificate or no private key.
    pub fn with_identity_pem(
        self,
        role: TlsRole,
        cert_pem: &str,
        key_pem: &str,
        source_name: &str,
    ) -> Result<Security, SecurityError> {
        let chain = parse_certificates(cert_pem, source_name)?;
        let key = parse_key(key_pem, source_name)?;
        Ok(self
            .set_identity(role, Identity { chain, key, cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() }))
    }

    fn set_identity(mut self, role: TlsRole, identity: Identity) -> Security {
        self.identities[role.index()] = Some(identity);
        self
    }

    /// The lowest TLS version accepted (default 1.2).
    pub fn with_min_version(mut self, version: TlsVersion) -> Security {
        self.min_version = version;
        self
    }

    /// Refuse plain `tcp://`: connections to such addresses are not opened, and a listener
    /// without a certificate does not start.
    pub fn with_require_encryption(mut self, require: bool) -> Security {
        self.require_encryption = require;
        self
    }

    /// The shared secret every connection presents in its hello and every listener requires.
    pub fn with_token(mut self, token: Option<AuthToken>) -> Security {
        self.token = token;
        self
    }

    /// Reads the token from a file (`--auth-token FILE`): its contents without the trailing
    /// line break.
    ///
    /// # Errors
    /// The file cannot be read, is empty or longer than 1024 bytes.
    pub fn with_token_file(self, path: impl AsRef<Path>) -> Result<Security, SecurityError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|source| SecurityError::Read {
            what: "token file",
            path: path.to_path_buf(),
            source,
        })?;
        let token = token_from_bytes(&text).ok_or_else(|| {
            pem_error(&path.display().to_string(), "the token must be 1 to 1024 bytes (after the trailing line break)")
        })?;
        Ok(self.with_token(Some(token)))
    }

    /// Whether plain connections are refused.
    pub fn require_encryption(&self) -> bool {
        self.require_encryption
    }

    /// Whether `role` has a certificate (and so a process in that role speaks TLS).
    pub fn has_certificate(&self, role: TlsRole) -> bool {
        self.identities[role.index()].is_some()
    }

    /// Whether a CA is configured.
    pub fn has_ca(&self) -> bool {
        !self.ca.is_empty()
    }

    /// The token, if any.
    pub fn token(&self) -> Option<&AuthToken> {
        self.token.as_ref()
    }

    /// The lowest TLS version accepted.
    pub fn min_version(&self) -> TlsVersion {
        self.min_version
    }

    /// Writes the CA and `role`'s certificate and key as PEM files into `dir` (created with
    /// mode 0700, the key with 0600), for a process started with `--tls-ca-file`, `--tls-cert`
    /// and `--tls-key`; returns the three paths.
    ///
    /// # Errors
    /// No CA or no certificate for `role`, or the files cannot be written.
    pub fn write_pem_files(&self, dir: &Path, role: TlsRole) -> Result<[PathBuf; 3], SecurityError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let identity = self.identities[role.index()]
            .as_ref()
            .filter(|_| self.has_ca())
            .ok_or_else(|| SecurityError::Config(format!("no CA or no {} certificate to write", role.name())))?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SecurityError::Read { what: "file to write", path, source }
        };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        let paths = [
            dir.join("ca.pem"),
            dir.join(format!("{}-cert.pem", role.name())),
            dir.join(format!("{}-key.pem", role.name())),
        ];
        for (path, text) in paths.iter().zip([&self.ca_pem, &identity.cert_pem, &identity.key_pem]) {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io(path))?;
        }
        Ok(paths)
    }

    /// The connection settings of a process in `role`.
    ///
    /// # Errors
    /// A certificate without a CA to check peers with, a listener role without a certificate
    /// while encryption is required, or certificates rustls refuses.
    pub fn transport(&self, role: TlsRole) -> Result<Transport, SecurityError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let identity = self.identities[role.index()].as_ref();
        if identity.is_some() && !self.has_ca() {
            return Err(SecurityError::Config(format!(
                "the {} has a certificate but no CA to check its peers' with (give --tls-ca-file)",
                role.name()
            )));
        }
        let listens = matches!(role, TlsRole::Scheduler | TlsRole::Worker);
        if self.require_encryption && identity.is_none() {
            return Err(SecurityError::Config(format!(
                "encryption is required but the {} has no TLS certificate (give --tls-cert and --tls-key)",
                role.name()
            )));
        }
        if !self.has_ca() {
            return Ok(Transport {
                require_encryption: self.require_encryption,
                token: self.token.clone(),
                ..Transport::default()
            });
        }
        let mut roots = RootCertStore::empty();
        for cert in &self.ca {
            roots.add(cert.clone()).map_err(|e| SecurityError::Config(format!("CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let verifier =
            Arc::new(CaVerifier { roots: roots.clone(), algorithms: provider.signature_verification_algorithms });
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let client = match identity {
            Some(id) => client.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
            None => client.with_no_client_auth(),
        };
        let acceptor = match identity {
            Some(id) if listens => {
                let peers = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| SecurityError::Config(format!("cannot check peers' certificates: {e}")))?;
                let server = rustls::ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(versions)?
                    .with_client_cert_verifier(peers)
                    .with_single_cert(id.chain.clone(), id.key.clone_key())?;
                Some(TlsAcceptor::from(Arc::new(server)))
            }
            _ => None,
        };
        Ok(Transport {
            connector: Some(TlsConnector::from(Arc::new(client))),
            acceptor,
            require_encryption: self.require_encryption,
            token: self.token.clone(),
        })
    }
}

/// A token from a file's or variable's bytes, without a trailing line break.
pub fn token_from_bytes(bytes: &[u8]) -> Option<AuthToken> {
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    AuthToken::new(trimmed.to_vec())
}

fn parse_certificates(pem: &str, source_name: &str) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(source_name, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(source_name, "holds no certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

fn parse_key(pem: &str, source_name: &str) -> Result<PrivateKeyDer<'static>, SecurityError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            pem_error(source_name, "holds no private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)")
        }
        e => pem_error(source_name, format!("not a PEM private key: {e}")),
    })
}

/// Checks a listener's certificate against the CA and the clock, not against the host name
/// dialled (see the module's documentation).
#[derive(Debug)]
struct CaVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A certificate authority generated in memory: signs certificates that serve as both server
/// and client certificates (a role's certificate is used both ways).
pub struct CertificateAuthority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn new(common_name: &str) -> Result<CertificateAuthority, SecurityError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(CertificateAuthority { issuer })
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A new certificate and key (PEM) named `common_name`, for `localhost` and 127.0.0.1, valid
    /// from now for a year.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn issue(&self, common_name: &str) -> Result<(String, String), SecurityError> {
        let now = std::time::SystemTime::now();
        self.issue_valid(
            common_name,
            now - std::time::Duration::from_secs(3600),
            now + std::time::Duration::from_secs(365 * 86400),
        )
    }

    /// [`CertificateAuthority::issue`] with an explicit validity period (an expired
    /// certificate for a test, say).
    ///
    /// # Errors
    /// Key generation failed, or a time before 1970.
    pub fn issue_valid(
        &self,
        common_name: &str,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Result<(String, String), SecurityError> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The connection settings of one process in one role: TLS for the connections it opens and its
/// listener (when configured), whether plain connections are refused, and the token it presents
/// and requires. Cheap to clone; the default is plain TCP without a token.
#[derive(Clone, Default)]
pub struct Transport {
    pub(crate) connector: Option<TlsConnector>,
    pub(crate) acceptor: Option<TlsAcceptor>,
    pub(crate) require_encryption: bool,
    pub(crate) token: Option<AuthToken>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls_out", &self.connector.is_some())
            .field("tls_in", &self.acceptor.is_some())
            .field("require_encryption", &self.require_encryption)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Transport {
    /// Plain TCP, no token.
    pub fn plain() -> Transport {
        Transport::default()
    }

    /// The scheme of this process's listener: `tls` or `tcp`.
    pub fn listener_scheme(&self) -> &'static str {
        if self.acceptor.is_some() { "tls" } else { "tcp" }
    }

    /// Whether the listener speaks TLS.
    pub fn listens_tls(&self) -> bool {
        self.acceptor.is_some()
    }
}

/// An address's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `tcp://` or none.
    Tcp,
    /// `tls://`.
    Tls,
}

/// Splits `tcp://host:port`, `tls://host:port` or `host:port` into its scheme and `host:port`.
///
/// # Errors
/// Another scheme, named in the message.
pub fn parse_address(address: &str) -> Result<(Scheme, &str), String> {
    if let Some(rest) = address.strip_prefix("tls://") {
        return Ok((Scheme::Tls, rest));
    }
    if let Some(rest) = address.strip_prefix("tcp://") {
        return Ok((Scheme::Tcp, rest));
    }
    match address.split_once("://") {
        Some((scheme, _)) => Err(format!("unsupported scheme {scheme}:// in {address:?} (use tcp:// or tls://)")),
        None => Ok((Scheme::Tcp, address)),
    }
}

/// The host of `host:port` (without IPv6 brackets), for TLS's server name.
pub(crate) fn host_of(host_port: &str) -> &str {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A connection: plain TCP or TLS over TCP. An enum rather than a boxed trait object, so
/// plain TCP costs one predictable branch per read or write call and no allocation.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS (either side of it); boxed once per connection because rustls's state is large.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// The reading half of a [`Stream`].
pub enum ReadHalf {
    /// Plain TCP: the socket's own read half, no lock.
    Tcp(OwnedReadHalf),
    /// TLS: reads and writes share the session, behind tokio's split lock.
    Tls(tokio::io::ReadHalf<Box<tokio_rustls::TlsStream<TcpStream>>>),
}

/// The writing half of a [`Stream`].
pub enum WriteHalf {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<Box<tokio_rustls::TlsStream<TcpStream>>>),
}

impl Stream {
    /// Splits the connection for a reader task and a writer task.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// Bytes this process read from and wrote to its kiln connections (all of them: scheduler,
/// peers, clients), counted where every read and write passes. The counters are process-wide:
/// a worker process reports its own traffic; workers running as threads of one process share
/// them. TLS connections are counted in plaintext bytes.
static NETWORK_READ: AtomicU64 = AtomicU64::new(0);
static NETWORK_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Bytes read and written on this process's kiln connections since it started.
pub fn network_bytes() -> (u64, u64) {
    (NETWORK_READ.load(Ordering::Relaxed), NETWORK_WRITTEN.load(Ordering::Relaxed))
}

fn count_written(result: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
    if let Poll::Ready(Ok(n)) = result {
        NETWORK_WRITTEN.fetch_add(n as u64, Ordering::Relaxed);
    }
    result
}

macro_rules! dispatch_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                let before = buf.filled().len();
                let result = match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                };
                NETWORK_READ.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
                result
            }
        }
    };
}

macro_rules! dispatch_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
                count_written(match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                })
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                count_written(match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                })
            }
            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Tcp(s) => s.is_write_vectored(),
                    Self::Tls(s) => s.is_write_vectored(),
                }
            }
        }
    };
}

dispatch_read!(Stream);
dispatch_read!(ReadHalf);
dispatch_write!(Stream);
dispatch_write!(WriteHalf);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_or_without_a_scheme() {
        assert_eq!(parse_address("tls://h:1"), Ok((Scheme::Tls, "h:1")));
        assert_eq!(parse_address("tcp://h:1"), Ok((Scheme::Tcp, "h:1")));
        assert_eq!(parse_address("h:1"), Ok((Scheme::Tcp, "h:1")));
        assert!(parse_address("http://h:1").unwrap_err().contains("unsupported scheme http://"));
        assert_eq!(host_of("[::1]:8786"), "::1");
        assert_eq!(host_of("10.0.0.1:8786"), "10.0.0.1");
    }

    #[test]
    fn versions_parse() {
        assert_eq!("1.3".parse::<TlsVersion>(), Ok(TlsVersion::V1_3));
        assert_eq!("TLSv1.2".parse::<TlsVersion>(), Ok(TlsVersion::V1_2));
        assert!("1.1".parse::<TlsVersion>().is_err());
    }

    #[test]
    fn a_missing_key_file_is_named_and_a_certificate_needs_a_ca() {
        let dir = std::env::temp_dir().join(format!("kiln-tls-unit-{}", std::process::id()));
        let security = Security::temporary().unwrap();
        let [ca, cert, _key] = security.write_pem_files(&dir, TlsRole::Worker).unwrap();
        let missing = dir.join("nope.pem");
        let err = Security::new().with_identity_files(TlsRole::Worker, &cert, &missing).unwrap_err();
        assert!(err.to_string().starts_with(&format!("cannot read the private key {}", missing.display())), "{err}");
        // A certificate given as the key: named, and says what was expected.
        let err = Security::new().with_identity_files(TlsRole::Worker, &cert, &cert).unwrap_err();
        assert!(err.to_string().contains("holds no private key"), "{err}");
        let err = Security::new().with_ca_file(dir.join("ca-missing.pem")).unwrap_err();
        assert!(err.to_string().contains("cannot read the CA file"), "{err}");
        let no_ca = Security::new().with_identity_files(TlsRole::Worker, &cert, dir.join("worker-key.pem")).unwrap();
        assert!(no_ca.transport(TlsRole::Worker).unwrap_err().to_string().contains("no CA"));
        let required = Security::new().with_ca_file(&ca).unwrap().with_require_encryption(true);
        assert!(required.transport(TlsRole::Scheduler).unwrap_err().to_string().contains("no TLS certificate"));
        assert!(security.transport(TlsRole::Client).unwrap().connector.is_some());
        assert!(!format!("{security:?}").contains("PRIVATE"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
