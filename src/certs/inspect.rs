//! `certs inspect FILE` and `certs list`: what a certificate says, in the
//! terms an operator checks (names, validity and days left, usages,
//! fingerprint), for any PEM certificate; and the state of a certificate
//! folder, one line per certificate.
//!
//! Any PEM file may be inspected, a hostile one too: every text taken from
//! a certificate is escaped (`certs::escape`), and the fingerprint,
//! computed from the bytes, comes first, so that no subject can draw a
//! fake report around itself or hide the real one.

use super::revoke::{Revoked, cert_serial, read_crl};
use super::{
    CA_CERT, CLIENTS_DIR, CRL, SERVER_CERT, SUPERSEDED_DIR, days_left, escape, fingerprint,
    format_date, serial_hex,
};
use anyhow::{Context, Result, anyhow, bail};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::fmt::Write as _;
use std::path::Path;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

/// Every certificate in a PEM file, parsed back to DER.
fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{} holds no PEM certificate (no \"BEGIN CERTIFICATE\" block)",
            path.display()
        );
    }
    Ok(certs)
}

/// The report `certs inspect` prints for every certificate in `path`.
pub fn inspect(path: &Path) -> Result<String> {
    let certs = read_pem_certs(path)?;
    let now = OffsetDateTime::now_utc();
    let mut out = String::new();
    for (i, der) in certs.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
            anyhow!(
                "certificate {} in {} is not valid X.509: {e}",
                i + 1,
                path.display()
            )
        })?;
        if certs.len() > 1 {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "certificate {} of {}", i + 1, certs.len());
        }
        describe(&mut out, &cert, der, now);
    }
    Ok(out.trim_end().to_owned())
}

fn describe(out: &mut String, cert: &X509Certificate<'_>, der: &[u8], now: OffsetDateTime) {
    let validity = cert.validity();
    let (from, until) = (
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
    );
    // The fingerprint first, from the bytes themselves: whatever the text
    // fields below say, they are escaped and come after it.
    let _ = writeln!(out, "SHA-256 fingerprint: {}", fingerprint(der));
    let _ = writeln!(out, "subject:     {}", escape(&cert.subject().to_string()));
    let _ = writeln!(out, "issuer:      {}", escape(&cert.issuer().to_string()));
    let _ = writeln!(out, "serial:      {}", serial_hex(cert.raw_serial()));
    let _ = writeln!(out, "names (SAN): {}", or_none(sans(cert)));
    let _ = writeln!(
        out,
        "valid:       {} to {} ({})",
        format_date(&from),
        format_date(&until),
        remaining(from, until, now)
    );
    let _ = writeln!(out, "key:         {}", key_type(cert));
    let usages = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.to_string(),
        Ok(None) => String::new(),
        Err(e) => format!("(unreadable: {})", escape(&e.to_string())),
    };
    let _ = writeln!(out, "key usage:   {}", or_none(usages));
    let _ = writeln!(out, "ext. usage:  {}", or_none(extended_usages(cert)));
    let ca = match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => match bc.value.path_len_constraint {
            Some(len) => format!("yes (path length {len})"),
            None => "yes".to_owned(),
        },
        _ => "no".to_owned(),
    };
    let _ = writeln!(out, "CA:          {ca}");
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "(none)".to_owned()
    } else {
        text
    }
}

/// "123 days left", "EXPIRED 4 days ago" or "NOT VALID YET".
fn remaining(from: OffsetDateTime, until: OffsetDateTime, now: OffsetDateTime) -> String {
    if now < from {
        return format!("NOT VALID YET: starts in {} days", days_left(from, now));
    }
    let days = days_left(until, now);
    if now >= until {
        format!("EXPIRED {} days ago", -days)
    } else {
        format!("{days} days left")
    }
}

/// The subject alternative names, each escaped.
fn sans(cert: &X509Certificate<'_>) -> String {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return String::new();
    };
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => format!(
                    "IP:{}",
                    std::net::Ipv4Addr::from([ip[0], ip[1], ip[2], ip[3]])
                ),
                16 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(ip);
                    format!("IP:{}", std::net::Ipv6Addr::from(octets))
                }
                _ => "IP:(malformed)".to_owned(),
            },
            GeneralName::RFC822Name(mail) => format!("email:{mail}"),
            GeneralName::URI(uri) => format!("URI:{uri}"),
            other => format!("{other}"),
        })
        .map(|name| escape(&name).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_type(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::EC(point)) => match point.key_size() {
            256 => "ECDSA P-256".to_owned(),
            384 => "ECDSA P-384".to_owned(),
            521 => "ECDSA P-521".to_owned(),
            bits => format!("EC ({bits} bits)"),
        },
        Ok(PublicKey::RSA(rsa)) => format!("RSA {} bits", rsa.key_size()),
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519".to_owned(),
        _ => format!("other ({})", spki.algorithm.algorithm.to_id_string()),
    }
}

fn extended_usages(cert: &X509Certificate<'_>) -> String {
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return String::new();
    };
    let eku = eku.value;
    let mut names = Vec::new();
    for (set, name) in [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ] {
        if set {
            names.push(name.to_owned());
        }
    }
    names.extend(eku.other.iter().map(|oid| oid.to_id_string()));
    names.join(", ")
}

/// One certificate of a folder, as `certs list` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// `ca`, `server` or `client`.
    pub kind: &'static str,
    /// Its common name (else the file's), escaped (`certs::escape`).
    pub name: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
    pub days_left: i64,
    pub revoked: bool,
    /// Replaced by a newer certificate (`--force`), kept in `superseded/`
    /// as a record. Until it is revoked, the server still accepts it.
    pub replaced: bool,
}

/// The CA, the server certificate and each client certificate in `dir`,
/// with the ones they replaced (kept in `superseded/`), and whether the
/// folder's CRL revokes each.
pub fn list(dir: &Path) -> Result<Vec<Listed>> {
    let ca_path = dir.join(CA_CERT);
    if ca_path.symlink_metadata().is_err() {
        bail!(
            "no {} in {}/: run `chatroom gen-certs` first",
            CA_CERT,
            dir.display()
        );
    }
    let crl_path = dir.join(CRL);
    let revoked: Vec<Revoked> = if crl_path.symlink_metadata().is_ok() {
        // Only a list the CA signed says who is revoked: a forged one could
        // show a revoked certificate as valid.
        let ca = read_pem_certs(&ca_path)?.remove(0);
        read_crl(&crl_path, &ca)?.revoked
    } else {
        Vec::new()
    };
    let now = OffsetDateTime::now_utc();
    let entry = |kind, path: &Path, fallback: &str, replaced| {
        listed_entry(kind, path, fallback, replaced, &revoked, now)
    };
    let mut listed = vec![entry("ca", &ca_path, "CA", false)?];
    for (stem, path) in certificate_files(&dir.join(SUPERSEDED_DIR))? {
        listed.push(entry("server", &path, &stem, true)?);
    }
    let server = dir.join(SERVER_CERT);
    if server.symlink_metadata().is_ok() {
        listed.push(entry("server", &server, "server", false)?);
    }
    let clients = dir.join(CLIENTS_DIR);
    let mut issued = Vec::new();
    for (name, path) in certificate_files(&clients)? {
        issued.push(entry("client", &path, &name, false)?);
    }
    for (stem, path) in certificate_files(&clients.join(SUPERSEDED_DIR))? {
        issued.push(entry("client", &path, &stem, true)?);
    }
    // Each name's certificates together, the ones it replaced first.
    issued.sort_by(|a, b| {
        (a.name.to_ascii_lowercase(), !a.replaced, a.not_after).cmp(&(
            b.name.to_ascii_lowercase(),
            !b.replaced,
            b.not_after,
        ))
    });
    listed.extend(issued);
    Ok(listed)
}

/// The certificate files (`*.pem`, not `*-key.pem`) in `folder`, if it
/// exists, by name: `(file name without .pem, path)`.
fn certificate_files(folder: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read {}", folder.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let stem = file.strip_suffix(".pem")?;
            (!stem.ends_with("-key")).then(|| (stem.to_owned(), entry.path()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The [`Listed`] line of the certificate in `path`.
fn listed_entry(
    kind: &'static str,
    path: &Path,
    fallback: &str,
    replaced: bool,
    revoked: &[Revoked],
    now: OffsetDateTime,
) -> Result<Listed> {
    let der = read_pem_certs(path)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("{} is not valid X.509: {e}", path.display()))?;
    let serial = cert_serial(&der)?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or(fallback);
    let not_after = cert.validity().not_after.to_datetime();
    Ok(Listed {
        kind,
        // A common name (or a file name) can hold anything.
        name: escape(name).into_owned(),
        serial: serial_hex(&serial),
        not_after,
        days_left: days_left(not_after, now),
        revoked: revoked.iter().any(|r| r.serial == serial),
        replaced,
    })
}

/// [`list`] as the table `certs list` prints.
pub fn list_table(dir: &Path) -> Result<String> {
    let listed = list(dir)?;
    let width = listed
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<6}  {:<width$}  {:<47}  {:<20}  {:>9}  STATUS\n",
        "KIND", "NAME", "SERIAL", "EXPIRES", "DAYS LEFT"
    );
    for l in &listed {
        let status = if l.revoked {
            "REVOKED"
        } else if l.replaced {
            "replaced"
        } else if l.days_left < 0 {
            "EXPIRED"
        } else {
            "valid"
        };
        let _ = writeln!(
            out,
            "{:<6}  {:<width$}  {:<47}  {:<20}  {:>9}  {status}",
            l.kind,
            l.name,
            l.serial,
            format_date(&l.not_after),
            l.days_left
        );
    }
    Ok(out.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn days_left_expired_and_not_yet_valid_read_plainly() {
        let now = OffsetDateTime::now_utc();
        let day = Duration::days(1);
        assert_eq!(
            remaining(now - day, now + 10 * day + Duration::hours(1), now),
            "10 days left"
        );
        assert_eq!(
            remaining(now - 9 * day, now - 4 * day, now),
            "EXPIRED 4 days ago"
        );
        assert_eq!(
            remaining(now + 2 * day + Duration::hours(1), now + 9 * day, now),
            "NOT VALID YET: starts in 2 days"
        );
    }
}
