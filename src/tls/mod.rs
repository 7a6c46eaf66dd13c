//! TLS configuration for both ends: loading PEM files, the server's rustls
//! config (ALPN, session tickets, a certificate that can be reloaded while
//! running) and the client's, which trusts only the pinned CA and never the
//! system roots.
//!
//! PEM is read with `rustls-pki-types`' `PemObject`, the maintained
//! successor of rustls-pemfile.

mod stream;

pub use stream::{ServerStream, accept};

use crate::protocol::ALPN_CHAT;
use anyhow::{Context, Result, anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The crypto provider for both ends: rustls' default (aws-lc-rs, with the
/// post-quantum hybrid key exchange X25519MLKEM768 first), except that the
/// AES-128-GCM suites come before AES-256-GCM, in TLS 1.3 and in TLS 1.2
/// alike, as in Go's TLS stack and BoringSSL. AES-128 gives 128-bit
/// security; its 10 rounds and SHA-256 cost measurably less per chat line
/// and per handshake than AES-256's 14 and SHA-384. AES-256 and ChaCha20
/// remain allowed. (rustls picks a suite of the negotiated version, so
/// moving all AES-128 suites to the front keeps each version's order.)
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let preferred = [
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    provider
        .cipher_suites
        .sort_by_key(|suite| !preferred.contains(&suite.suite()));
    Arc::new(provider)
}

/// Which TLS versions an end allows (`--tls-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.3 and 1.2, 1.3 preferred.
    #[default]
    #[value(name = "any")]
    Any,
    /// TLS 1.2 only: the server's certificate travels in the clear, as a
    /// capture shows.
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

impl TlsVersion {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::Any => rustls::DEFAULT_VERSIONS,
            TlsVersion::Tls12 => &TLS12_ONLY,
            TlsVersion::Tls13 => &TLS13_ONLY,
        }
    }
}

/// The key log file named by `SSLKEYLOGFILE`, if it is set (and not empty),
/// once it has passed the checks of [`open_key_log`].
///
/// With it, both ends append every session's secrets to that file in the
/// NSS key log format, so that Wireshark can decrypt a capture: for
/// teaching and debugging only, since whoever holds the file can read the
/// sessions. Unset, nothing is written.
pub fn key_log_file() -> Result<Option<PathBuf>> {
    Ok(open_key_log()?.map(|(path, _)| path))
}

/// Opens `SSLKEYLOGFILE` for appending, as a private file of this user.
///
/// Whoever can read the key log reads every session, so it gets the care
/// of a private key ([`crate::certs::keyfile`]): never through a symlink
/// (`O_NOFOLLOW`: a link in a shared folder could lead the secrets into
/// someone else's file), created with mode 0600, and an existing file is
/// used only if it is a regular file of this user that group and others
/// can neither read nor write. The checks look at the file opened
/// (`fstat`), not at a name that could change in between.
fn open_key_log() -> Result<Option<(PathBuf, std::fs::File)>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let Some(path) = std::env::var_os("SSLKEYLOGFILE").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    let what = format!("the key log SSLKEYLOGFILE={}", path.display());
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        // Non-blocking: a FIFO put in its place must not hang the open
        // (it is then refused as not a regular file).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path);
    let file = match opened {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "{what} is a symlink: refusing to write TLS secrets through it, since it could \
             lead anywhere; point SSLKEYLOGFILE at a file of your own"
        ),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            bail!("{what} is not a regular file")
        }
        other => other.with_context(|| format!("cannot open {what}"))?,
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {what}"))?;
    if !meta.is_file() {
        bail!("{what} is not a regular file");
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{what} belongs to user id {}, not to this user ({me}): refusing to write TLS \
             secrets into a file another user controls; remove it or choose another path",
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} has mode {mode:04o}: group or others could read every session in it; \
             run `chmod 600 {}`, or remove it (a new key log is made with mode 0600)",
            path.display()
        );
    }
    Ok(Some((path, file)))
}

/// Writes TLS secrets to the file [`open_key_log`] opened, in the NSS key
/// log format, one whole line per write (appends from both ends sharing
/// the file do not interleave).
#[derive(Debug)]
struct KeyLogWriter(std::sync::Mutex<std::fs::File>);

impl rustls::KeyLog for KeyLogWriter {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        use std::fmt::Write as _;
        use std::io::Write as _;
        let mut line =
            String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        for byte in client_random {
            let _ = write!(line, "{byte:02x}");
        }
        line.push(' ');
        for byte in secret {
            let _ = write!(line, "{byte:02x}");
        }
        line.push('\n');
        if let Err(e) = crate::sync::lock(&self.0).write_all(line.as_bytes()) {
            tracing::warn!("cannot write to the key log (SSLKEYLOGFILE): {e}");
        }
    }
}

/// The warning each end prints when it logs its TLS secrets.
pub fn key_log_warning(path: &Path) -> String {
    format!(
        "SSLKEYLOGFILE is set: TLS secrets are appended to {}; whoever holds that file can \
         decrypt these sessions (for Wireshark; unset it for real use)",
        path.display()
    )
}

/// Logs TLS secrets to `SSLKEYLOGFILE` if it is set ([`open_key_log`]).
fn key_log() -> Result<Option<Arc<dyn rustls::KeyLog>>> {
    Ok(open_key_log()?.map(|(_, file)| {
        Arc::new(KeyLogWriter(std::sync::Mutex::new(file))) as Arc<dyn rustls::KeyLog>
    }))
}

/// Reads every certificate in a PEM file (leaf first, then any chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

/// Reads the private key in a PEM file, refusing a symlink, a key another
/// user owns, or one that group or others can read
/// ([`crate::certs::keyfile::check_private_key`]).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    crate::certs::keyfile::check_private_key(path)?;
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a private key from {}", path.display()))
}

/// The server's TLS config: its certificate and key, ALPN `chat/1`, and
/// stateless TLS 1.3 session tickets so that returning clients skip the
/// full handshake; with the handle that swaps in a new certificate and key
/// from the same files while the server runs. It allows the TLS versions
/// `version` says, requires client certificates checked by `client_auth`
/// when given (see [`crate::server::access::Access::client_verifier`]), and
/// logs the secrets to `SSLKEYLOGFILE` when it is set.
///
/// ALPN: rustls refuses a client that offers protocols, none of them
/// `chat/1` (so a browser or another protocol's client cannot be confused
/// into talking to us), and accepts one that offers none at all (openssl
/// s_client, ncat).
pub fn reloadable_server_config_with(
    cert_path: &Path,
    key_path: &Path,
    client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    version: TlsVersion,
) -> Result<(Arc<ServerConfig>, Arc<ServerCertificate>)> {
    let certificate = Arc::new(ServerCertificate::load(cert_path, key_path)?);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(version.versions())
        .context("the crypto provider does not support that TLS version")?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certificate.clone());
    config.alpn_protocols = vec![ALPN_CHAT.to_vec()];
    if let Some(key_log) = key_log()? {
        config.key_log = key_log;
    }
    // Our preference (see `provider`), whatever order the client offers.
    config.ignore_client_order = true;
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().context("cannot set up session tickets")?;
    Ok((Arc::new(config), certificate))
}

/// The server's certificate and key, as files on disk and as the pair every
/// new handshake presents. [`ServerCertificate::reload`] swaps in what the
/// files hold now (after `gen-certs --force`, say) without a restart:
/// sessions already up keep going, new ones get the new certificate.
#[derive(Debug)]
pub struct ServerCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertificate {
    /// Loads the pair, refusing a key that does not match the certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ServerCertificate> {
        let pair = load_pair(cert_path, key_path)?;
        Ok(ServerCertificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
        })
    }

    /// Reads the files again and, if they hold a usable pair, presents it
    /// from the next handshake on. On any error the old pair stays.
    pub fn reload(&self) -> Result<()> {
        let pair = self.load_again()?;
        self.install(pair);
        Ok(())
    }

    /// Reads the files again, without presenting what they hold yet (see
    /// [`ServerCertificate::install`]), so that a reload of several parts
    /// can check them all before changing any.
    pub fn load_again(&self) -> Result<Arc<CertifiedKey>> {
        Ok(Arc::new(load_pair(&self.cert_path, &self.key_path)?))
    }

    /// Presents `pair` from the next handshake on.
    pub fn install(&self, pair: Arc<CertifiedKey>) {
        *crate::sync::write(&self.current) = pair;
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The certificate (leaf) presented now, DER.
    pub fn leaf(&self) -> CertificateDer<'static> {
        let current = crate::sync::read(&self.current);
        current.cert[0].clone()
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(crate::sync::read(&self.current).clone())
    }
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey> {
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    CertifiedKey::from_der(certs, key, &provider()).with_context(|| {
        format!(
            "{} and {} are not a matching certificate and key",
            cert_path.display(),
            key_path.display()
        )
    })
}

/// The client's TLS config: trusts exactly the certificates in `ca` (the
/// pinned CA), offers ALPN `chat/1`, and resumes sessions by default.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    client_config_with(ca, TlsVersion::Any, None)
}

/// [`client_config`] for the given TLS versions, with a client certificate
/// and key (`identity`) if given, logging the secrets to `SSLKEYLOGFILE`
/// when it is set.
pub fn client_config_with(
    ca: &Path,
    version: TlsVersion,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for ca_cert in load_certs(ca).context("cannot load the pinned CA (--ca)")? {
        roots
            .add(ca_cert)
            .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(version.versions())
        .context("the crypto provider does not support that TLS version")?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = load_certs(cert).context("cannot load the client certificate (--cert)")?;
            let key_der = load_key(key).context("cannot load the client key (--key)")?;
            builder
                .with_client_auth_cert(chain, key_der)
                .with_context(|| {
                    format!(
                        "{} and {} are not a matching certificate and key",
                        cert.display(),
                        key.display()
                    )
                })?
        }
    };
    config.alpn_protocols = vec![ALPN_CHAT.to_vec()];
    if let Some(key_log) = key_log()? {
        config.key_log = key_log;
    }
    Ok(Arc::new(config))
}

/// The name to check the server's certificate against: a DNS name or an IP
/// address (checked against the certificate's IP SANs).
pub fn server_name(name: &str) -> Result<ServerName<'static>> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| anyhow!("{name:?} is neither a valid host name nor an IP address"))
}

/// Explains a failed client handshake in one line: what failed and what to
/// check. `ca` and `name` are what the client used.
pub fn explain_handshake_error(err: &std::io::Error, ca: &Path, name: &str) -> String {
    use rustls::{CertificateError, Error as TlsError};
    let tls = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>());
    let ca = ca.display();
    match tls {
        Some(TlsError::InvalidCertificate(cert_err)) => match cert_err {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's certificate is not signed by the pinned CA {ca}: check --ca, \
                 or that the server uses a certificate made by that CA (gen-certs)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the server's certificate is not valid for {name:?}: check --server-name, \
                 or reissue it with `chatroom gen-certs --force --san {name}`"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired: reissue it with `chatroom gen-certs --force`"
                    .to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet: check both machines' clocks".to_string()
            }
            other => format!(
                "the server's certificate was refused: {}",
                crate::certs::escape(&other.to_string())
            ),
        },
        Some(TlsError::AlertReceived(rustls::AlertDescription::ProtocolVersion))
        | Some(TlsError::PeerIncompatible(_)) => {
            "the server does not allow the TLS version asked for: check --tls-version \
             (the server may allow only 1.2 or only 1.3)"
                .to_string()
        }
        Some(TlsError::NoApplicationProtocol) => {
            "the server does not speak chat/1 (ALPN): is this a chatroom server?".to_string()
        }
        Some(TlsError::InvalidMessage(_)) | Some(TlsError::InappropriateMessage { .. }) => {
            "the server did not answer with TLS: is it running with --plaintext?".to_string()
        }
        // Errors may quote what the server sent: escaped.
        Some(other) => format!(
            "TLS handshake failed: {}",
            crate::certs::escape(&other.to_string())
        ),
        None if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the TLS handshake: is it a chatroom \
             server, and does it use TLS?"
                .to_string()
        }
        None => format!("TLS handshake failed: {err}"),
    }
}
