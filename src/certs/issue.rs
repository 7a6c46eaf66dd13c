//! `gen-certs client NAME` and `gen-certs server`: certificates signed by
//! the CA already in the folder.
//!
//! A client certificate names its holder (common name and DNS SAN, both
//! NAME, which follows the nickname rules) and may only authenticate a
//! client (extended key usage clientAuth). The issued client certificates
//! are the files in `clients/`: listing and revocation read them there, so
//! there is no separate index to fall out of step. A certificate replaced
//! with `--force` moves to `clients/superseded/` (the server's to
//! `superseded/`), its key discarded, so the record of what the CA signed
//! stays whole ([`keep_superseded`]).

use super::{
    BACKDATE, CLIENTS_DIR, SERVER_CERT, SERVER_KEY, SUPERSEDED_DIR, check_days, existing_ca,
    fingerprint, format_date, keyfile, name, random_serial, serial_hex, server_sans, write_file,
};
use anyhow::{Context, Result, bail};
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::pem::PemObject;
use std::fmt;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// What was issued, for the user.
#[derive(Debug, Clone)]
pub struct IssueReport {
    /// "client alice" or "server".
    pub what: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub key_mode: u32,
    pub serial: String,
    pub fingerprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub names: Vec<String>,
}

impl fmt::Display for IssueReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} certificate: {}", self.what, self.cert.display())?;
        writeln!(
            f,
            "{} private key: {} (mode {:04o})",
            self.what,
            self.key.display(),
            self.key_mode
        )?;
        writeln!(f, "names:         {}", self.names.join(", "))?;
        writeln!(f, "serial:        {}", self.serial)?;
        writeln!(f, "SHA-256 fingerprint: {}", self.fingerprint)?;
        write!(
            f,
            "valid:         {} to {}",
            format_date(&self.not_before),
            format_date(&self.not_after)
        )
    }
}

/// The certificate and key paths of client `name` in `dir`.
pub fn client_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let clients = dir.join(CLIENTS_DIR);
    (
        clients.join(format!("{name}.pem")),
        clients.join(format!("{name}-key.pem")),
    )
}

/// Issues a client certificate for `name`, valid for `days`, into
/// `dir/clients/`.
pub fn client(dir: &Path, name: &str, days: u32, force: bool) -> Result<IssueReport> {
    crate::protocol::validate_nickname(name)
        .map_err(|e| anyhow::anyhow!("{name:?} cannot be a client name: {e}"))?;
    if name.to_ascii_lowercase().ends_with("-key") {
        // NAME-key.pem is where client NAME's key goes.
        bail!("{name:?} cannot be a client name: it may not end in \"-key\"");
    }
    check_days(days)?;
    let (ca, _) = existing_ca(dir)?;
    let (cert_path, key_path) = client_paths(dir, name);
    if let Some(other) = case_variant(dir, name) {
        bail!(
            "client {other:?} already exists, and nicknames ignore case: \
             use that name (with --force to reissue it)"
        );
    }
    if !force {
        refuse_existing(&[&cert_path, &key_path], "client certificate")?;
    }
    std::fs::create_dir_all(dir.join(CLIENTS_DIR))
        .with_context(|| format!("cannot create {}", dir.join(CLIENTS_DIR).display()))?;

    let mut params = CertificateParams::default();
    params.subject_alt_names =
        vec![SanType::DnsName(name.try_into().with_context(|| {
            format!("{name:?} is not usable as a DNS name")
        })?)];
    params.distinguished_name = super::name(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(
        params,
        &ca,
        days,
        &cert_path,
        &key_path,
        format!("client {name}"),
        vec![name.to_owned()],
    )
}

/// Reissues the server certificate alone, with the existing CA.
pub fn server(dir: &Path, extra_sans: &[String], days: u32, force: bool) -> Result<IssueReport> {
    check_days(days)?;
    let (cert_path, key_path) = (dir.join(SERVER_CERT), dir.join(SERVER_KEY));
    let sans = server_sans(extra_sans);
    let mut params = CertificateParams::new(sans.clone())
        .context("invalid --san: give a DNS name or an IP address")?;
    let (ca, _) = existing_ca(dir)?;
    if !force {
        refuse_existing(&[&cert_path, &key_path], "server certificate")?;
    }
    params.distinguished_name = name("chatroom server");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(
        params,
        &ca,
        days,
        &cert_path,
        &key_path,
        "server".into(),
        sans,
    )
}

/// Another client whose name differs from `name` only in case.
fn case_variant(dir: &Path, name: &str) -> Option<String> {
    let entries = std::fs::read_dir(dir.join(CLIENTS_DIR)).ok()?;
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|file| file.strip_suffix(".pem").map(str::to_owned))
        .find(|stem| stem != name && stem.eq_ignore_ascii_case(name))
}

fn refuse_existing(paths: &[&Path], what: &str) -> Result<()> {
    for path in paths {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; add --force to replace the {what} and its key",
                path.display()
            );
        }
    }
    Ok(())
}

/// Before `--force` replaces the certificate in `cert_path`, keeps a copy
/// of it in `superseded/` beside it, named after its serial in hex
/// (`superseded/bob-4f1a...pem`), so that `certs list` still
/// shows every certificate the CA signed: an audit needs the replaced ones,
/// revoked or not. Only the certificate is kept, never its key. A file that
/// is not a certificate was never signed by anyone, and is not kept.
pub(crate) fn keep_superseded(cert_path: &Path) -> Result<()> {
    if cert_path.symlink_metadata().is_err() {
        return Ok(());
    }
    keyfile::check_not_symlink(cert_path)?;
    let Ok(der) = rustls_pki_types::CertificateDer::from_pem_file(cert_path) else {
        return Ok(());
    };
    let Ok(serial) = super::revoke::cert_serial(&der) else {
        return Ok(());
    };
    let folder = cert_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(SUPERSEDED_DIR);
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let stem = cert_path
        .file_stem()
        .map_or_else(|| "certificate".into(), |s| s.to_string_lossy());
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    let contents =
        std::fs::read(cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
    write_file(&folder.join(format!("{stem}-{hex}.pem")), &contents, 0o644)
}

fn sign(
    mut params: CertificateParams,
    ca: &rcgen::Issuer<'static, KeyPair>,
    days: u32,
    cert_path: &Path,
    key_path: &Path,
    what: String,
    names: Vec<String>,
) -> Result<IssueReport> {
    let now = OffsetDateTime::now_utc();
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
    let serial = random_serial()?;
    params.serial_number = Some(serial.clone());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("cannot generate a key")?;
    let cert = params
        .signed_by(&key, ca)
        .with_context(|| format!("cannot sign the {what} certificate"))?;
    keep_superseded(cert_path)?;
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(IssueReport {
        what,
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        key_mode: keyfile::mode_of(key_path)?,
        serial: serial_hex(serial.as_ref()),
        fingerprint: fingerprint(cert.der()),
        not_before: params.not_before,
        not_after: params.not_after,
        names,
    })
}
