//! `certs inspect crl.pem`: what a certificate revocation list says (its
//! issuer, this and next update, the serials it revokes) and whether its
//! signature checks against the CA, which is all that makes a list worth
//! believing: anyone can write one that names the CA.
//!
//! Like every inspection, any file may be read, a hostile one too: texts
//! from the list are escaped (`certs::escape`).

use super::{CA_CERT, days_left, escape, format_date, serial_hex};
use anyhow::{Context, Result, anyhow};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use x509_parser::revocation_list::CertificateRevocationList;

/// What opens a PEM revocation list.
const CRL_LABEL: &str = "-----BEGIN X509 CRL-----";

/// Whether the file at `path` holds a PEM revocation list (rather than
/// certificates).
pub fn holds_crl(path: &Path) -> Result<bool> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(memchr::memmem::find(&text, CRL_LABEL.as_bytes()).is_some())
}

/// The CA to check a list against: `ca` if given, else `ca.pem` beside the
/// list when there is one.
fn ca_for(crl: &Path, ca: Option<&Path>) -> Option<PathBuf> {
    if let Some(ca) = ca {
        return Some(ca.to_path_buf());
    }
    let beside = crl.parent().unwrap_or(Path::new(".")).join(CA_CERT);
    beside.is_file().then_some(beside)
}

/// The report `certs inspect` prints for the CRL in `path`, its signature
/// checked against the CA in `ca` (default: `ca.pem` beside it).
pub fn inspect_crl(path: &Path, ca: Option<&Path>) -> Result<String> {
    let der = CertificateRevocationListDer::from_pem_file(path).with_context(|| {
        format!(
            "{} is not a PEM certificate revocation list",
            path.display()
        )
    })?;
    let (_, crl) = x509_parser::parse_x509_crl(&der)
        .map_err(|e| anyhow!("{} is not a valid CRL: {e}", path.display()))?;
    let now = OffsetDateTime::now_utc();
    let mut out = String::new();
    let _ = writeln!(out, "CRL:          {}", path.display());
    let _ = writeln!(out, "issuer:       {}", escape(&crl.issuer().to_string()));
    let this_update = crl.last_update().to_datetime();
    let _ = writeln!(out, "this update:  {}", format_date(&this_update));
    let next = match crl.next_update().map(|t| t.to_datetime()) {
        Some(next) if next <= now => format!(
            "{} (PAST: {} days ago; `certs renew-crl` signs a current one)",
            format_date(&next),
            -days_left(next, now)
        ),
        Some(next) => format!(
            "{} ({} days left)",
            format_date(&next),
            days_left(next, now)
        ),
        None => "(none given)".to_owned(),
    };
    let _ = writeln!(out, "next update:  {next}");
    if let Some(number) = crl.crl_number() {
        let _ = writeln!(out, "CRL number:   {number}");
    }
    let revoked: Vec<_> = crl.iter_revoked_certificates().collect();
    let _ = writeln!(out, "revoked:      {} certificate(s)", revoked.len());
    for entry in revoked {
        let _ = writeln!(
            out,
            "  serial {}  revoked {}",
            serial_hex(trim_sign(entry.raw_serial())),
            format_date(&entry.revocation_date.to_datetime())
        );
    }
    let _ = writeln!(out, "signature:    {}", signature(&crl, ca_for(path, ca))?);
    Ok(out.trim_end().to_owned())
}

/// Whether the CA in `ca` issued and signed `crl`, in words.
fn signature(crl: &CertificateRevocationList<'_>, ca: Option<PathBuf>) -> Result<String> {
    let Some(ca_path) = ca else {
        return Ok("not checked: no CA to check it against (give --ca ca.pem)".to_owned());
    };
    let ca_der = CertificateDer::from_pem_file(&ca_path)
        .with_context(|| format!("cannot read the CA certificate {}", ca_path.display()))?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| anyhow!("{} is not a valid certificate: {e}", ca_path.display()))?;
    let ca_name = escape(&ca.subject().to_string()).into_owned();
    let shown = ca_path.display();
    let named = crl.issuer() == ca.subject();
    Ok(match (crl.verify_signature(ca.public_key()), named) {
        (Ok(()), true) => format!("checks against the CA in {shown} ({ca_name})"),
        (Ok(()), false) => format!(
            "made with the key of the CA in {shown}, but the list names another issuer \
             than its subject {ca_name}: a server refuses it"
        ),
        (Err(_), true) => format!(
            "DOES NOT check against the CA in {shown} ({ca_name}): the list bears that \
             CA's name but was signed by another key, so it is a forgery and a server \
             refuses it"
        ),
        (Err(_), false) => format!(
            "DOES NOT check against the CA in {shown} ({ca_name}): another CA issued \
             and signed it"
        ),
    })
}

/// A serial number's bytes without a DER sign byte.
fn trim_sign(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    }
}
