//! TLS for every connection the store opens, through rustls: `sslmode` and `sslrootcert`
//! taken from the connection string, as libpq reads them.
//!
//! | `sslmode` | encrypted | certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | - |
//! | `prefer` (default) | when the server offers TLS | nothing |
//! | `require` | always | nothing; the chain when `sslrootcert` names a file |
//! | `verify-ca` | always | the chain, to the CAs of `sslrootcert` (required) |
//! | `verify-full` | always | the chain and the host name; without `sslrootcert`, to the platform's roots |
//!
//! `sslrootcert=system` names the platform's roots and is accepted only with `verify-full`
//! (the default `sslmode` then). Over Unix sockets no TLS is used, whatever the mode.
//! The choices are recorded in `docs/adr/10-tls.md`.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::Host;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::PgError;

/// How a connection uses TLS: the `sslmode` connection option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; no certificate is checked.
    #[default]
    Prefer,
    /// TLS or no connection. The certificate is not checked, unless `sslrootcert` names a
    /// file: then its chain is, as with [`SslMode::VerifyCa`].
    Require,
    /// TLS, and the certificate chains to a CA of `sslrootcert`; its names are not checked.
    VerifyCa,
    /// TLS, the certificate chains to a trusted CA and is valid for the host name.
    VerifyFull,
}

impl SslMode {
    /// The mode's name in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = PgError;

    fn from_str(value: &str) -> Result<Self, PgError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => {
                return Err(PgError::InvalidOption {
                    key: "sslmode",
                    value: value.to_owned(),
                    reason: "expected disable, prefer, require, verify-ca or verify-full",
                });
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CAs a server certificate is checked against: the `sslrootcert` connection option.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RootCert {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// The platform's trusted roots (`sslrootcert=system`).
    System,
}

/// What is wrong with the CA certificates a connection string names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootCertProblem {
    /// The file cannot be read.
    #[error("cannot read it: {0}")]
    Unreadable(#[source] std::io::Error),
    /// The file is not valid PEM.
    #[error("it is not valid PEM: {0}")]
    InvalidPem(String),
    /// The file holds no PEM certificate.
    #[error("it holds no PEM certificate")]
    NoCertificate,
    /// A certificate of the file cannot be used as a trust anchor.
    #[error("a certificate in it cannot be used as a CA: {0}")]
    Unusable(String),
    /// No root certificate of the platform could be loaded.
    #[error("no trusted root certificate of the platform could be loaded{0}")]
    NoPlatformRoots(String),
}

/// Why TLS with a server failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server answered that it does not do TLS, and the mode requires it.
    #[error("the server does not support TLS")]
    NotSupported,
    /// The certificate chains to a trusted CA but does not name the host.
    #[error("certificate is not valid for this host name{}", presented_names(.presented))]
    WrongHost {
        /// The names the certificate holds.
        presented: Vec<String>,
    },
    /// The certificate does not chain to a trusted CA.
    #[error("certificate signed by an unknown authority")]
    UnknownAuthority,
    /// The certificate is refused for another reason (expired, malformed, ...).
    #[error("invalid server certificate: {0}")]
    InvalidCertificate(String),
    /// The handshake failed for another reason.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

fn presented_names(presented: &[String]) -> String {
    if presented.is_empty() {
        return String::new();
    }
    format!(" (it names {})", presented.join(", "))
}

/// A parsed connection string: what `tokio-postgres` takes, plus `sslmode` and
/// `sslrootcert` as this crate reads them.
///
/// Both forms are accepted: `postgresql://user@host:5432/db?sslmode=verify-full&sslrootcert=/p/ca.pem`
/// and `host=db.example user=app sslmode=verify-full sslrootcert=/p/ca.pem`. Every other
/// option is `tokio-postgres`'s, including several hosts (`host=a,b`) and
/// `target_session_attrs`.
///
/// ```
/// use factum_postgres::{PgConnectOptions, RootCert, SslMode};
/// let options = PgConnectOptions::parse(
///     "postgresql://app@db.example/app?sslmode=verify-full&sslrootcert=/etc/ca.pem",
/// )?;
/// assert_eq!(options.ssl_mode(), SslMode::VerifyFull);
/// assert_eq!(options.root_cert(), Some(&RootCert::File("/etc/ca.pem".into())));
/// assert!(PgConnectOptions::parse("host=db.example sslmode=verify_full").is_err());
/// # Ok::<(), factum_postgres::PgError>(())
/// ```
#[derive(Clone, Debug)]
pub struct PgConnectOptions {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    root_cert: Option<RootCert>,
}

impl PgConnectOptions {
    /// Parses a `postgresql://` URL or a `key=value` string.
    ///
    /// Fails with [`PgError::InvalidOption`] on an unknown `sslmode`, on
    /// `sslrootcert=system` with a mode other than `verify-full`, and on `verify-ca`
    /// without `sslrootcert`; with [`PgError::InvalidUrl`] when `tokio-postgres` refuses the
    /// rest.
    pub fn parse(url: &str) -> Result<Self, PgError> {
        let split = split_tls_options(url);
        let config: tokio_postgres::Config = split.rest.parse().map_err(PgError::InvalidUrl)?;
        let root_cert = match split.root_cert.as_deref() {
            None | Some("") => None,
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
        };
        let ssl_mode = match split.ssl_mode {
            Some(mode) => mode.parse()?,
            None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if root_cert == Some(RootCert::System) && ssl_mode != SslMode::VerifyFull {
            return Err(PgError::InvalidOption {
                key: "sslrootcert",
                value: "system".to_owned(),
                reason: "the platform's roots are only used with sslmode=verify-full",
            });
        }
        if ssl_mode == SslMode::VerifyCa && root_cert.is_none() {
            return Err(PgError::InvalidOption {
                key: "sslmode",
                value: ssl_mode.as_str().to_owned(),
                reason: "verify-ca needs sslrootcert naming a PEM file of the CAs to trust",
            });
        }
        Ok(Self {
            config,
            ssl_mode,
            root_cert,
        })
    }

    /// The TLS mode.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The CAs certificates are checked against, when given.
    pub fn root_cert(&self) -> Option<&RootCert> {
        self.root_cert.as_ref()
    }

    /// The `tokio-postgres` options (hosts, user, database, ...). Its own `ssl_mode` is
    /// replaced on connecting by the one [`ssl_mode`](Self::ssl_mode) implies.
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The `tokio-postgres` options, to change (for example the database name).
    pub fn pg_config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    /// The `tokio-postgres` options with the TLS negotiation the mode asks for.
    pub(crate) fn effective_config(&self) -> tokio_postgres::Config {
        use tokio_postgres::config::SslMode as Negotiation;
        let mut config = self.config.clone();
        let hosts = config.get_hosts();
        let unix_only = !hosts.is_empty()
            && config.get_hostaddrs().is_empty()
            && hosts.iter().all(|host| matches!(host, Host::Unix(_)));
        config.ssl_mode(match self.ssl_mode {
            SslMode::Disable => Negotiation::Disable,
            // libpq does not ask for TLS on a Unix socket either.
            _ if unix_only => Negotiation::Disable,
            SslMode::Prefer => Negotiation::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Negotiation::Require,
        });
        config
    }

    /// The TLS connector of these options: reads the CA certificates now.
    pub fn connector(&self) -> Result<TlsConnector, PgError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Tls {
                host: String::new(),
                cause: TlsFailure::Handshake(e.to_string()),
            })?;
        let algorithms = provider.signature_verification_algorithms;
        let config = match (self.ssl_mode, &self.root_cert) {
            (SslMode::VerifyFull, root_cert) => builder
                .with_root_certificates(load_roots(root_cert.as_ref())?)
                .with_no_client_auth(),
            (SslMode::Require | SslMode::VerifyCa, Some(RootCert::File(path))) => {
                let roots = Some(Arc::new(load_file(path)?));
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainVerifier { roots, algorithms }))
                    .with_no_client_auth()
            }
            // `parse` refuses verify-ca without a file; prefer and require check nothing.
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainVerifier {
                    roots: None,
                    algorithms,
                }))
                .with_no_client_auth(),
        };
        Ok(TlsConnector {
            inner: MakeRustlsConnect::new(config),
        })
    }

    /// Opens one connection outside any pool, its connection driven by a task of the
    /// current Tokio runtime until the client is dropped.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        let config = self.effective_config();
        let (client, connection) = config
            .connect(self.connector()?)
            .await
            .map_err(|e| connect_error(&config, e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
        });
        Ok(client)
    }
}

impl FromStr for PgConnectOptions {
    type Err = PgError;

    fn from_str(url: &str) -> Result<Self, PgError> {
        Self::parse(url)
    }
}

/// A connection string without `sslmode` and `sslrootcert`, and their values.
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    rest: String,
    ssl_mode: Option<String>,
    root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a `key=value` string, leaving
/// the rest as it was. A string that does not parse is left whole, for `tokio-postgres` to
/// report.
fn split_tls_options(url: &str) -> Split {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)
    } else {
        split_key_values(url).unwrap_or_else(|| Split {
            rest: url.to_owned(),
            ..Split::default()
        })
    }
}

fn split_url(url: &str) -> Split {
    let mut split = Split::default();
    let Some((base, query)) = url.split_once('?') else {
        split.rest = url.to_owned();
        return split;
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        match decode(key).as_str() {
            "sslmode" => split.ssl_mode = Some(decode(value)),
            "sslrootcert" => split.root_cert = Some(decode(value)),
            _ => kept.push(pair),
        }
    }
    split.rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    split
}

/// Reads `key=value` pairs as `tokio-postgres` (and libpq) does: values may be quoted with
/// `'`, and `\` escapes the next character. `None` when the string does not parse.
fn split_key_values(s: &str) -> Option<Split> {
    let mut split = Split::default();
    let mut kept: Vec<String> = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        match key.as_str() {
            "sslmode" => split.ssl_mode = Some(value),
            "sslrootcert" => split.root_cert = Some(value),
            _ => {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push(format!("{key}='{quoted}'"));
            }
        }
    }
    split.rest = kept.join(" ");
    Some(split)
}

fn root_cert_error(path: &Path, problem: RootCertProblem) -> PgError {
    PgError::RootCert {
        path: path.display().to_string(),
        problem,
    }
}

/// The CAs of a PEM file.
fn load_file(path: &Path) -> Result<RootCertStore, PgError> {
    let pem =
        std::fs::read(path).map_err(|e| root_cert_error(path, RootCertProblem::Unreadable(e)))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| root_cert_error(path, RootCertProblem::InvalidPem(e.to_string())))?;
        roots
            .add(cert)
            .map_err(|e| root_cert_error(path, RootCertProblem::Unusable(e.to_string())))?;
    }
    if roots.is_empty() {
        return Err(root_cert_error(path, RootCertProblem::NoCertificate));
    }
    Ok(roots)
}

/// The CAs of `sslrootcert`, or the platform's when it is absent or `system`.
fn load_roots(root_cert: Option<&RootCert>) -> Result<RootCertStore, PgError> {
    if let Some(RootCert::File(path)) = root_cert {
        return load_file(path);
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        let detail = if errors.is_empty() {
            String::new()
        } else {
            format!(": {}", errors.join("; "))
        };
        return Err(root_cert_error(
            Path::new("system"),
            RootCertProblem::NoPlatformRoots(detail),
        ));
    }
    Ok(roots)
}

/// Checks the chain to `roots` without the names (`verify-ca`, or `require` with a root
/// file), or nothing (`prefer`, `require`). The handshake's signatures are always checked,
/// so the server holds the key of the certificate it shows.
#[derive(Debug)]
struct ChainVerifier {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
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

/// The TLS connector of a [`PgConnectOptions`], for `tokio-postgres` and
/// `deadpool-postgres`: rustls with the checks the options' mode asks for. A failed
/// handshake reports the host and a [`TlsFailure`].
#[derive(Clone)]
pub struct TlsConnector {
    inner: MakeRustlsConnect,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl<S> MakeTlsConnect<S> for TlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = HostTlsConnect<<MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect>;
    type Error = Infallible;

    fn make_tls_connect(&mut self, host: &str) -> Result<Self::TlsConnect, Infallible> {
        let inner = match MakeTlsConnect::<S>::make_tls_connect(&mut self.inner, host) {
            Ok(inner) => inner,
            Err(never) => match never {},
        };
        Ok(HostTlsConnect {
            host: host.to_owned(),
            inner,
        })
    }
}

/// One handshake with a named host ([`TlsConnector`]).
#[derive(Debug)]
pub struct HostTlsConnect<T> {
    host: String,
    inner: T,
}

impl<S, T> TlsConnect<S> for HostTlsConnect<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
{
    type Stream = T::Stream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<T::Stream, HandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let host = self.host;
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            handshake.await.map_err(|error| HandshakeError {
                failure: classify(&*error.into()),
                host,
            })
        })
    }
}

/// A failed handshake with a host.
#[derive(Debug, thiserror::Error)]
#[error("TLS connection to `{host}` failed: {failure}")]
pub struct HandshakeError {
    /// The host name the certificate was checked against.
    pub host: String,
    /// What went wrong.
    pub failure: TlsFailure,
}

/// Names the cause of a failed handshake.
fn classify(error: &(dyn StdError + 'static)) -> TlsFailure {
    let Some(tls) = rustls_error(error) else {
        return TlsFailure::Handshake(error.to_string());
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => {
            TlsFailure::WrongHost { presented: vec![] }
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => TlsFailure::WrongHost {
            presented: presented.iter().map(|name| plain_name(name)).collect(),
        },
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            TlsFailure::UnknownAuthority
        }
        rustls::Error::InvalidCertificate(other) => {
            TlsFailure::InvalidCertificate(other.to_string())
        }
        other => TlsFailure::Handshake(other.to_string()),
    }
}

/// `DnsName("localhost")` as `localhost`, `IpAddress(127.0.0.1)` as `127.0.0.1`.
fn plain_name(name: &str) -> String {
    let inner = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        });
    inner.unwrap_or(name).to_owned()
}

/// The rustls error in a chain, also inside an `io::Error` (which hides it from `source`).
fn rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = error.source();
    }
    None
}

/// The typed error of a failed connection attempt.
pub(crate) fn connect_error(
    config: &tokio_postgres::Config,
    error: tokio_postgres::Error,
) -> PgError {
    let mut current = error.source();
    while let Some(cause) = current {
        if let Some(handshake) = cause.downcast_ref::<HandshakeError>() {
            return PgError::Tls {
                host: handshake.host.clone(),
                cause: handshake.failure.clone(),
            };
        }
        // `tokio-postgres` reports a server's refusal of TLS as text only.
        if cause.to_string() == "server does not support TLS" {
            return PgError::Tls {
                host: hosts(config),
                cause: TlsFailure::NotSupported,
            };
        }
        current = cause.source();
    }
    PgError::Connect {
        reason: describe(&error),
        source: Box::new(error),
    }
}

/// The typed error of a pool that could not open its first connection.
pub(crate) fn pool_error(
    config: &tokio_postgres::Config,
    error: deadpool_postgres::PoolError,
) -> PgError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => connect_error(config, error),
        other => PgError::Connect {
            reason: other.to_string(),
            source: Box::new(other),
        },
    }
}

/// The hosts of a configuration, for messages.
fn hosts(config: &tokio_postgres::Config) -> String {
    let names: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    names.join(",")
}

/// A connection error's message: the server's own for a database error, the whole chain
/// otherwise.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut message = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        current = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, Option<String>, Option<String>) {
        let split = split_tls_options(url);
        (split.rest, split.ssl_mode, split.root_cert)
    }

    #[test]
    fn urls_give_up_their_tls_options() {
        assert_eq!(
            split("postgresql://u@h:5433/db?sslmode=verify-full&sslrootcert=%2Fp%2Fca.pem"),
            (
                "postgresql://u@h:5433/db".to_owned(),
                Some("verify-full".to_owned()),
                Some("/p/ca.pem".to_owned())
            )
        );
        assert_eq!(
            split(
                "postgres://a,b/db?connect_timeout=5&sslmode=require&target_session_attrs=read-write"
            ),
            (
                "postgres://a,b/db?connect_timeout=5&target_session_attrs=read-write".to_owned(),
                Some("require".to_owned()),
                None
            )
        );
        assert_eq!(split("postgresql://h/db").0, "postgresql://h/db");
    }

    #[test]
    fn key_values_give_up_their_tls_options() {
        let (rest, mode, root) = split(
            "host=a,b  user = 'o\\'brien' password='p w\\\\' sslmode=verify-ca \
             sslrootcert='/my certs/ca.pem' target_session_attrs=read-write",
        );
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/my certs/ca.pem"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_user(), Some("o'brien"));
        assert_eq!(config.get_password(), Some(&b"p w\\"[..]));
        assert_eq!(
            config.get_hosts(),
            &[Host::Tcp("a".into()), Host::Tcp("b".into())]
        );
        assert_eq!(
            config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
    }

    #[test]
    fn both_forms_parse_to_the_same_options() {
        for url in [
            "postgresql://app@db.example:6432/orders?sslmode=verify-full&sslrootcert=/p/ca.pem",
            "host=db.example port=6432 user=app dbname=orders sslmode=verify-full sslrootcert=/p/ca.pem",
        ] {
            let options = PgConnectOptions::parse(url).unwrap();
            assert_eq!(options.ssl_mode(), SslMode::VerifyFull, "{url}");
            assert_eq!(
                options.root_cert(),
                Some(&RootCert::File("/p/ca.pem".into())),
                "{url}"
            );
            let config = options.effective_config();
            assert_eq!(config.get_hosts(), &[Host::Tcp("db.example".into())]);
            assert_eq!(config.get_ports(), &[6432]);
            assert_eq!(config.get_user(), Some("app"));
            assert_eq!(config.get_dbname(), Some("orders"));
            assert_eq!(
                config.get_ssl_mode(),
                tokio_postgres::config::SslMode::Require
            );
        }
    }

    #[test]
    fn modes_and_defaults() {
        let mode = |url: &str| PgConnectOptions::parse(url).unwrap().ssl_mode();
        assert_eq!(mode("host=h"), SslMode::Prefer);
        assert_eq!(mode("host=h sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("postgresql://h/db?sslmode=prefer"), SslMode::Prefer);
        assert_eq!(mode("postgresql://h/db?sslmode=require"), SslMode::Require);
        assert_eq!(mode("host=h sslrootcert=system"), SslMode::VerifyFull);
        assert_eq!(mode("host=h sslrootcert=/ca.pem"), SslMode::Prefer);
        let negotiation = |url: &str| {
            PgConnectOptions::parse(url)
                .unwrap()
                .effective_config()
                .get_ssl_mode()
        };
        use tokio_postgres::config::SslMode as N;
        assert_eq!(negotiation("host=h sslmode=disable"), N::Disable);
        assert_eq!(negotiation("host=h"), N::Prefer);
        assert_eq!(
            negotiation("host=h sslmode=verify-ca sslrootcert=/c"),
            N::Require
        );
        // No TLS over a Unix socket, as libpq.
        assert_eq!(
            negotiation("host=/run/postgresql sslmode=require"),
            N::Disable
        );
    }

    #[test]
    fn unknown_modes_are_named() {
        for url in [
            "host=h sslmode=verify_full",
            "postgresql://h/db?sslmode=allow",
            "postgresql://h/db?sslmode=",
        ] {
            let err = PgConnectOptions::parse(url).unwrap_err();
            let PgError::InvalidOption { key, value, .. } = &err else {
                panic!("{url}: {err:?}");
            };
            assert_eq!(*key, "sslmode");
            assert!(url.ends_with(&format!("sslmode={value}")), "{url}: {value}");
            let message = err.to_string();
            assert!(message.contains(&format!("`sslmode={value}`")), "{message}");
            assert!(message.contains("verify-full"), "{message}");
        }
    }

    #[test]
    fn inconsistent_root_options_are_refused() {
        let err = PgConnectOptions::parse("host=h sslmode=verify-ca").unwrap_err();
        assert!(
            matches!(err, PgError::InvalidOption { key: "sslmode", ref value, .. } if value == "verify-ca"),
            "{err:?}"
        );
        let err = PgConnectOptions::parse("host=h sslmode=require sslrootcert=system").unwrap_err();
        assert!(
            matches!(
                err,
                PgError::InvalidOption {
                    key: "sslrootcert",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_strings_are_reported_by_tokio_postgres() {
        for url in [
            "host='unterminated sslmode=require",
            "host sslmode=require",
            "host=h nonsense=1",
            "postgresql://h/db?nonsense=1&sslmode=require",
        ] {
            let err = PgConnectOptions::parse(url).unwrap_err();
            assert!(matches!(err, PgError::InvalidUrl(_)), "{url}: {err:?}");
        }
    }

    #[test]
    fn root_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("factum-roots-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64 !\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let problem = |path: &Path| {
            let url = format!(
                "host=h sslmode=verify-full sslrootcert='{}'",
                path.display()
            );
            match PgConnectOptions::parse(&url).unwrap().connector() {
                Err(PgError::RootCert {
                    path: named,
                    problem,
                }) => {
                    assert_eq!(named, path.display().to_string());
                    problem
                }
                other => panic!("{}: {other:?}", path.display()),
            }
        };
        assert!(matches!(problem(&missing), RootCertProblem::Unreadable(_)));
        assert!(matches!(problem(&empty), RootCertProblem::NoCertificate));
        assert!(matches!(problem(&broken), RootCertProblem::InvalidPem(_)));
        assert!(matches!(problem(&garbage), RootCertProblem::Unusable(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn certificate_names_are_shown_plainly() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("other"), "other");
        let failure = TlsFailure::WrongHost {
            presented: vec!["localhost".into(), "127.0.0.1".into()],
        };
        assert_eq!(
            failure.to_string(),
            "certificate is not valid for this host name (it names localhost, 127.0.0.1)"
        );
    }
}
