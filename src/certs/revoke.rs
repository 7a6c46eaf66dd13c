//! `certs revoke NAME`: the certificate revocation list.
//!
//! `crl.pem` is a real X.509 CRL (version 2, with the authority key
//! identifier and a CRL number, as RFC 5280 asks), signed by the CA with
//! rcgen, so openssl and rustls both read it. It is the record of what was
//! revoked: each revocation reads the serials already in it, adds one, and
//! signs the whole list again.
//!
//! Whoever reads it (`certs list`, `certs revoke`, `certs renew-crl`,
//! `serve --crl` at start and on reload) first checks that the CA signed
//! it ([`read_crl`]): a list that only bears the CA's name is refused, so a
//! forged empty list can neither pass a revoked certificate as valid nor be
//! signed again by `certs revoke` in place of the real one.

use super::{
    CA_CERT, CLIENTS_DIR, CRL, SUPERSEDED_DIR, escape, existing_ca, format_date,
    issue::client_paths, serial_hex, write_file,
};
use anyhow::{Context, Result, anyhow, bail};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use std::fmt;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long a CRL is announced to be current (its next-update date).
/// `serve` does not refuse an older CRL, but warns at start and on reload
/// when it is past that date or within [`CRL_WARN_DAYS`] of it;
/// `certs renew-crl` (or any `certs revoke`) issues a fresh one.
pub const CRL_DAYS: i64 = 365;

/// How many days before its next update `serve` starts warning about a CRL.
pub const CRL_WARN_DAYS: i64 = 30;

/// A serial number on the list, and when it was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Big-endian bytes, without a DER sign byte.
    pub serial: Vec<u8>,
    pub at: OffsetDateTime,
}

/// What `certs revoke` did.
#[derive(Debug, Clone)]
pub struct RevokeReport {
    pub name: String,
    pub serial: String,
    pub crl: PathBuf,
    pub revoked_total: usize,
    pub next_update: OffsetDateTime,
}

impl fmt::Display for RevokeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "revoked: client {} (serial {})", self.name, self.serial)?;
        writeln!(
            f,
            "CRL: {} ({} revoked in all, next update {})",
            self.crl.display(),
            self.revoked_total,
            format_date(&self.next_update)
        )?;
        write!(
            f,
            "a running server refuses it after `kill -HUP <server pid>` (serve --client-ca)"
        )
    }
}

/// Revokes client `name`'s certificate: rewrites `dir/crl.pem` with its
/// serial added.
pub fn revoke(dir: &Path, name: &str) -> Result<RevokeReport> {
    revoke_certificate(dir, name, None)
}

/// [`revoke`]; with `serial` (hex, as `certs list` prints it, colons
/// optional), the certificate of client `name` with that serial: the
/// current one, or one it replaced (kept in `clients/superseded/`), which
/// the server accepts until it is revoked.
pub fn revoke_certificate(dir: &Path, name: &str, serial: Option<&str>) -> Result<RevokeReport> {
    let (issuer, ca_pem) = existing_ca(dir)?;
    let cert_path = certificate_to_revoke(dir, name, serial)?;
    let der = CertificateDer::from_pem_file(&cert_path)
        .with_context(|| format!("cannot read {}", cert_path.display()))?;
    let serial = cert_serial(&der)?;

    let crl_path = dir.join(CRL);
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .with_context(|| format!("cannot read {}", dir.join(CA_CERT).display()))?;
    let mut revoked = if crl_path.symlink_metadata().is_ok() {
        read_crl(&crl_path, &ca_der)?.revoked
    } else {
        Vec::new()
    };
    if revoked.iter().any(|r| r.serial == serial) {
        bail!(
            "client {name}'s certificate (serial {}) is already revoked in {}",
            serial_hex(&serial),
            crl_path.display()
        );
    }
    let now = OffsetDateTime::now_utc();
    revoked.push(Revoked {
        serial: serial.clone(),
        at: now,
    });
    let next_update = sign_crl(&crl_path, &issuer, &ca_der, &revoked, now)?;
    Ok(RevokeReport {
        name: name.to_owned(),
        serial: serial_hex(&serial),
        crl: crl_path,
        revoked_total: revoked.len(),
        next_update,
    })
}

/// The file of the certificate to revoke: client `name`'s current one, or
/// the one with `serial` among it and those it replaced.
fn certificate_to_revoke(dir: &Path, name: &str, serial: Option<&str>) -> Result<PathBuf> {
    let (current, _) = client_paths(dir, name);
    let present = current.symlink_metadata().is_ok();
    let Some(serial) = serial else {
        if !present {
            bail!(
                "no client certificate {} to revoke (see `chatroom certs list`)",
                current.display()
            );
        }
        return Ok(current);
    };
    let wanted: String = serial
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if wanted.is_empty() || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("--serial {serial:?}: give the serial as `certs list` prints it (hex pairs)");
    }
    let plain = |bytes: &[u8]| serial_hex(bytes).replace(':', "");
    if present {
        let der = CertificateDer::from_pem_file(&current)
            .with_context(|| format!("cannot read {}", current.display()))?;
        if plain(&cert_serial(&der)?) == wanted {
            return Ok(current);
        }
    }
    let kept = dir
        .join(CLIENTS_DIR)
        .join(SUPERSEDED_DIR)
        .join(format!("{name}-{wanted}.pem"));
    if kept.symlink_metadata().is_ok() {
        return Ok(kept);
    }
    bail!(
        "client {name} has no certificate with serial {} (see `chatroom certs list`)",
        escape(serial)
    )
}

/// What `certs renew-crl` did.
#[derive(Debug, Clone)]
pub struct RenewReport {
    pub crl: PathBuf,
    pub revoked_total: usize,
    pub next_update: OffsetDateTime,
}

impl fmt::Display for RenewReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "CRL: {} renewed ({} revoked, next update {})",
            self.crl.display(),
            self.revoked_total,
            format_date(&self.next_update)
        )?;
        write!(
            f,
            "a running server reads it after `kill -HUP <server pid>` (serve --client-ca)"
        )
    }
}

/// Signs `dir/crl.pem` again with the same revocations, current as of now
/// for [`CRL_DAYS`], so that a CRL nobody had to add to stays current.
pub fn renew(dir: &Path) -> Result<RenewReport> {
    renew_as_of(dir, OffsetDateTime::now_utc())
}

/// [`renew`], as if it were `now` (tests make a CRL that is past its next
/// update this way).
pub fn renew_as_of(dir: &Path, now: OffsetDateTime) -> Result<RenewReport> {
    let (issuer, ca_pem) = existing_ca(dir)?;
    let crl_path = dir.join(CRL);
    if crl_path.symlink_metadata().is_err() {
        bail!(
            "no CRL {} to renew: `chatroom certs revoke NAME` makes one",
            crl_path.display()
        );
    }
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .with_context(|| format!("cannot read {}", dir.join(CA_CERT).display()))?;
    let revoked = read_crl(&crl_path, &ca_der)?.revoked;
    let next_update = sign_crl(&crl_path, &issuer, &ca_der, &revoked, now)?;
    Ok(RenewReport {
        crl: crl_path,
        revoked_total: revoked.len(),
        next_update,
    })
}

/// Writes the CRL listing `revoked` to `path`, issued `now` and current
/// for [`CRL_DAYS`]; returns its next-update date.
fn sign_crl(
    path: &Path,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    ca_der: &CertificateDer<'_>,
    revoked: &[Revoked],
    now: OffsetDateTime,
) -> Result<OffsetDateTime> {
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(CRL_DAYS),
        // Seconds since 1970: grows with every CRL, as RFC 5280 asks (a
        // CRL renewed "as of" the past is only ever made by tests).
        crl_number: SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or(1)),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&r.serial),
                revocation_time: r.at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: ca_key_identifier(ca_der)?,
    };
    let crl = params
        .signed_by(issuer)
        .context("cannot sign the revocation list")?;
    let pem = crl.pem().context("cannot encode the revocation list")?;
    write_file(path, pem.as_bytes(), 0o644)?;
    Ok(params.next_update)
}

/// A CRL read from its file and checked: issued by the CA (by name) and
/// signed with the CA's key.
#[derive(Debug, Clone)]
pub struct VerifiedCrl {
    /// The list as read, for rustls: the same bytes that were checked.
    pub der: CertificateRevocationListDer<'static>,
    pub revoked: Vec<Revoked>,
    /// When the list says the next one is due, if it says.
    pub next_update: Option<OffsetDateTime>,
}

/// Reads the CRL in `path`, refusing it unless the CA `ca` issued it: the
/// issuer's name must be the CA's, and the signature must verify with the
/// CA's public key. A name alone proves nothing: anyone can write a list
/// that names our CA; only the CA key can sign one.
pub fn read_crl(path: &Path, ca: &CertificateDer<'_>) -> Result<VerifiedCrl> {
    let der = CertificateRevocationListDer::from_pem_file(path).with_context(|| {
        format!(
            "{} is not a PEM certificate revocation list",
            path.display()
        )
    })?;
    let (_, crl) = x509_parser::parse_x509_crl(&der)
        .map_err(|e| anyhow!("{} is not a valid CRL: {e}", path.display()))?;
    check_issued_by(path, &crl, ca)?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| Revoked {
            serial: trim_sign(r.raw_serial()).to_vec(),
            at: r.revocation_date.to_datetime(),
        })
        .collect();
    let next_update = crl.next_update().map(|t| t.to_datetime());
    Ok(VerifiedCrl {
        der,
        revoked,
        next_update,
    })
}

/// Refuses `crl` (read from `path`) unless the CA `ca` issued and signed it.
fn check_issued_by(
    path: &Path,
    crl: &x509_parser::revocation_list::CertificateRevocationList<'_>,
    ca: &CertificateDer<'_>,
) -> Result<()> {
    let (_, ca) = x509_parser::parse_x509_certificate(ca)
        .map_err(|e| anyhow!("cannot parse the CA certificate: {e}"))?;
    let ca_name = escape(&ca.subject().to_string()).into_owned();
    if crl.issuer() != ca.subject() {
        bail!(
            "{} was issued by {}, not by the CA {ca_name}",
            path.display(),
            escape(&crl.issuer().to_string())
        );
    }
    crl.verify_signature(ca.public_key()).map_err(|e| {
        anyhow!(
            "{} names the CA {ca_name} as its issuer, but its signature does not verify \
             with that CA's key ({e}): it was not made by this CA, so it is refused; \
             restore the CA's own list (from a backup), or remove it and revoke again \
             with `chatroom certs revoke`",
            path.display()
        )
    })
}

/// A certificate's serial number, as big-endian bytes without a sign byte.
pub fn cert_serial(der: &[u8]) -> Result<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("not a valid X.509 certificate: {e}"))?;
    Ok(trim_sign(cert.raw_serial()).to_vec())
}

fn trim_sign(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    }
}

/// The CA's subject key identifier, which the CRL names as its authority
/// key identifier so that verifiers find the right key.
fn ca_key_identifier(ca: &[u8]) -> Result<KeyIdMethod> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(ca)
        .map_err(|e| anyhow!("cannot parse the CA certificate: {e}"))?;
    let ski = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    Ok(match ski {
        Some(id) => KeyIdMethod::PreSpecified(id),
        None => KeyIdMethod::Sha256,
    })
}
