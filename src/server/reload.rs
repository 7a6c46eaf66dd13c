//! What SIGHUP reloads, and its first load at start: the server's
//! certificate and key, the client CA, the CRL and the deny list.
//!
//! A reload is all or nothing: every part is loaded and checked first, and
//! only then are they all put in force. New connections get the new ones;
//! sessions already up keep going, except participants the new policy
//! refuses (a revoked certificate, a denied name), who are disconnected. If
//! any part does not load, the old configuration stays whole.

use crate::certs::{self, GenOptions, lifecycle};
use crate::server::access::{Access, AccessFiles};
use crate::tls::{ServerCertificate, TlsVersion};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the server's certificate and key are, and the TLS versions it
/// allows.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    /// Default: `certs/server.pem`, made on a first start.
    pub cert: Option<PathBuf>,
    /// Default: `certs/server-key.pem`, made on a first start.
    pub key: Option<PathBuf>,
    pub version: TlsVersion,
}

/// Who may join, as `serve` is told: a client CA (mutual TLS), a CRL, names
/// and a file of names to refuse.
#[derive(Debug, Clone, Default)]
pub struct AccessOptions {
    pub client_ca: Option<PathBuf>,
    /// Default: `crl.pem` beside the client CA, whenever it exists.
    pub crl: Option<PathBuf>,
    pub deny: Vec<String>,
    pub deny_file: Option<PathBuf>,
    /// Client-certificate names that are operators (needs `client_ca`).
    pub operators: Option<PathBuf>,
}

/// Loads the access policy `options` ask for; `None` when they restrict
/// nothing (anyone may join, under any free nickname).
pub fn access_policy(options: AccessOptions) -> Result<Option<Arc<Access>>> {
    let AccessOptions {
        client_ca,
        crl,
        deny,
        deny_file,
        operators,
    } = options;
    let restricts = client_ca.is_some() || crl.is_some() || !deny.is_empty();
    if !restricts && deny_file.is_none() && operators.is_none() {
        return Ok(None);
    }
    let crl_if_present = match (&client_ca, &crl) {
        (Some(ca), None) => Some(
            ca.parent()
                .unwrap_or_else(|| Path::new("."))
                .join(certs::CRL),
        ),
        _ => None,
    };
    let access = Access::load(AccessFiles {
        client_ca,
        crl,
        crl_if_present,
        deny,
        deny_file,
        operators,
    })?;
    tracing::info!("access: {}", access.prepare()?.summary());
    Ok(Some(access))
}

/// The server's TLS configuration: its certificate (made with the local CA
/// on a first start, when the default files are both missing), refused if
/// it has expired or is not valid yet and warned about if it expires within
/// 30 days, and client certificates checked against `access`. Installs the
/// SIGHUP reload of the certificate and `access`.
pub fn tls(
    files: &CertificateFiles,
    access: Option<Arc<Access>>,
) -> Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = certificate_paths(files)?;
    if let Some(path) = crate::tls::key_log_file()? {
        tracing::warn!("{}", crate::tls::key_log_warning(&path));
    }
    let verifier = access.as_ref().and_then(|a| a.client_verifier());
    let (config, certificate) =
        crate::tls::reloadable_server_config_with(&cert, &key, verifier, files.version)?;
    if let Some(warning) = check_validity(&certificate)? {
        tracing::warn!("{warning}");
    }
    reload_on_hangup(Some(certificate), access)?;
    Ok(config)
}

/// Plaintext mode: says loudly what it means, and installs the SIGHUP
/// reload of `access` (without a handler SIGHUP would end the process, and
/// the deny file is still read again on it).
pub fn plaintext(access: Option<Arc<Access>>) -> Result<()> {
    tracing::warn!(
        "PLAINTEXT MODE: no TLS. Every nickname and message can be read and changed by \
         anyone on the network path. Use this only to compare with TLS in a capture."
    );
    reload_on_hangup(None, access)
}

/// The certificate and key files to load: the ones given, or the default
/// ones, which gen-certs makes first when neither exists yet.
fn certificate_paths(files: &CertificateFiles) -> Result<(PathBuf, PathBuf)> {
    let default_dir = Path::new(certs::DEFAULT_DIR);
    let cert = files
        .cert
        .clone()
        .unwrap_or_else(|| default_dir.join(certs::SERVER_CERT));
    let key = files
        .key
        .clone()
        .unwrap_or_else(|| default_dir.join(certs::SERVER_KEY));
    if files.cert.is_none() && files.key.is_none() && !cert.exists() && !key.exists() {
        tracing::info!(
            "no certificate in {}/ yet: running gen-certs first",
            default_dir.display()
        );
        let report = certs::generate(&GenOptions {
            dir: default_dir.to_path_buf(),
            extra_sans: Vec::new(),
            force: false,
        })?;
        // The CA's fingerprint, for whoever starts the server to hand out.
        println!("{report}");
    }
    Ok((cert, key))
}

/// Refuses a server certificate that has expired or is not valid yet; the
/// warning to log if it expires within 30 days.
fn check_validity(certificate: &ServerCertificate) -> Result<Option<String>> {
    let what = format!(
        "the server certificate {}",
        certificate.cert_path().display()
    );
    let validity = lifecycle::check(&certificate.leaf(), &what, time::OffsetDateTime::now_utc())?;
    Ok(validity.warning(&what))
}

/// On SIGHUP, reloads the certificate and key (none in plaintext mode) and
/// the access policy, all or nothing (see the module's header).
fn reload_on_hangup(
    certificate: Option<Arc<ServerCertificate>>,
    access: Option<Arc<Access>>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match (
                reload(certificate.as_deref(), access.as_deref()),
                &certificate,
            ) {
                (Ok(summary), Some(certificate)) => tracing::info!(
                    fingerprint = %certs::fingerprint(&certificate.leaf()),
                    "SIGHUP: new connections get the reloaded certificate{summary}"
                ),
                (Ok(_), None) if access.is_none() => tracing::info!(
                    "SIGHUP: nothing to reload (plaintext, no --deny or --deny-file)"
                ),
                (Ok(summary), None) => {
                    tracing::info!("SIGHUP: reloaded (plaintext: no certificate){summary}")
                }
                (Err(e), _) => tracing::warn!(
                    "SIGHUP: nothing reloaded, keeping the old configuration whole: {e:#}"
                ),
            }
        }
    });
    Ok(())
}

/// Loads every part, then puts them all in force; on any error, none.
fn reload(certificate: Option<&ServerCertificate>, access: Option<&Access>) -> Result<String> {
    let loaded = certificate
        .map(|certificate| -> Result<_> {
            let pair = certificate.load_again()?;
            let what = format!(
                "the server certificate {}",
                certificate.cert_path().display()
            );
            let validity = lifecycle::check(&pair.cert[0], &what, time::OffsetDateTime::now_utc())?;
            Ok((certificate, pair, what, validity))
        })
        .transpose()?;
    let prepared = access.map(Access::prepare).transpose()?;
    let summary = prepared
        .as_ref()
        .map(|p| format!("; access: {}", p.summary()))
        .unwrap_or_default();
    let warning = loaded.map(|(certificate, pair, what, validity)| {
        certificate.install(pair);
        validity.warning(&what)
    });
    if let (Some(access), Some(prepared)) = (access, prepared) {
        access.install(prepared);
    }
    if let Some(warning) = warning.flatten() {
        tracing::warn!("{warning}");
    }
    Ok(summary)
}
