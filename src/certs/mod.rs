//! `chatroom gen-certs`: a local certificate authority and a server
//! certificate signed by it, made with rcgen.
//!
//! Clients pin the CA (`ca.pem`), not the server certificate, so the server
//! certificate can be reissued (new names, expiry) without touching any
//! client. That is why an existing CA is always reused and never silently
//! replaced, while the server certificate is replaced only on request.
//!
//! The rest of the certificate tooling lives beside this module:
//! [`issue`] (client and server certificates from the existing CA),
//! [`revoke`] (the CRL), [`inspect`] (`certs inspect` and `certs list`),
//! [`inspect_crl`] (`certs inspect crl.pem`) and
//! [`keyfile`] (the checks every private key file passes before it is used).

pub mod inspect;
pub mod inspect_crl;
pub mod issue;
pub mod keyfile;
pub mod lifecycle;
pub mod p12;
pub mod revoke;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// File names inside the certificate folder.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";
/// Client certificates: `clients/NAME.pem` and `clients/NAME-key.pem`.
pub const CLIENTS_DIR: &str = "clients";
/// Beside a certificate that `--force` replaced (`server.pem`,
/// `clients/NAME.pem`): a copy of the old one, as a record of what the CA
/// signed (`superseded/NAME-SERIAL.pem`; never its key).
pub const SUPERSEDED_DIR: &str = "superseded";
/// The certificate revocation list `certs revoke` writes.
pub const CRL: &str = "crl.pem";

/// Default certificate folder, relative to the working directory.
pub const DEFAULT_DIR: &str = "certs";

/// The CA certificate a client pins by default: [`CA_CERT`] in
/// [`DEFAULT_DIR`], where `gen-certs` and a first `serve` put it.
pub const DEFAULT_CA: &str = "certs/ca.pem";

/// Names every server certificate carries, so that loopback works whatever
/// the client types.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Default validity of the CA, in days (ten years).
pub const CA_DAYS: u32 = 3650;
/// Default validity of a server certificate, in days.
pub const SERVER_DAYS: u32 = 825;
/// Default validity of a client certificate, in days.
pub const CLIENT_DAYS: u32 = 365;
/// Longest validity `--days` accepts (about 100 years).
pub const MAX_DAYS: u32 = 36_500;

const CA_VALIDITY: Duration = Duration::days(CA_DAYS as i64);
/// Certificates start a little in the past, so that a client whose clock is
/// a few minutes behind the server's still accepts a fresh certificate.
const BACKDATE: Duration = Duration::minutes(5);

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub dir: PathBuf,
    /// Extra subject alternative names (host names or IP addresses).
    pub extra_sans: Vec<String>,
    /// Replace an existing server certificate and key.
    pub force: bool,
}

/// What was written, for the user.
#[derive(Debug, Clone)]
pub struct GenReport {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// True when an existing CA was reused.
    pub ca_reused: bool,
    /// SHA-256 of the CA certificate (DER), as colon-separated hex.
    pub ca_fingerprint: String,
    pub ca_not_after: OffsetDateTime,
    pub server_not_before: OffsetDateTime,
    pub server_not_after: OffsetDateTime,
    /// SHA-256 of the server certificate (DER).
    pub server_fingerprint: String,
    pub sans: Vec<String>,
    /// The CA key file's permission bits, as found (or made).
    pub ca_key_mode: u32,
    /// The server key file's permission bits, as made.
    pub server_key_mode: u32,
}

impl std::fmt::Display for GenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let date = format_date;
        let ca_state = if self.ca_reused { "kept" } else { "new" };
        writeln!(f, "CA certificate ({ca_state}): {}", self.ca_cert.display())?;
        writeln!(
            f,
            "CA private key ({ca_state}): {} (mode {:04o})",
            self.ca_key.display(),
            self.ca_key_mode
        )?;
        writeln!(f, "server certificate:  {}", self.server_cert.display())?;
        writeln!(
            f,
            "server private key:  {} (mode {:04o})",
            self.server_key.display(),
            self.server_key_mode
        )?;
        writeln!(f, "server names:        {}", self.sans.join(", "))?;
        writeln!(f, "CA SHA-256 fingerprint: {}", self.ca_fingerprint)?;
        writeln!(f, "CA valid until:      {}", date(&self.ca_not_after))?;
        writeln!(f, "server SHA-256 fingerprint: {}", self.server_fingerprint)?;
        write!(
            f,
            "server valid:        {} to {}",
            date(&self.server_not_before),
            date(&self.server_not_after)
        )
    }
}

/// Makes (or reuses) the CA and makes the server certificate in `opts.dir`.
pub fn generate(opts: &GenOptions) -> Result<GenReport> {
    generate_for(opts, SERVER_DAYS)
}

/// [`generate`], with a server certificate valid for `server_days`.
pub fn generate_for(opts: &GenOptions, server_days: u32) -> Result<GenReport> {
    check_days(server_days)?;
    let dir = &opts.dir;
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create certificate folder {}", dir.display()))?;
    let path = |name: &str| dir.join(name);
    let (ca_cert_path, ca_key_path) = (path(CA_CERT), path(CA_KEY));
    let (server_cert_path, server_key_path) = (path(SERVER_CERT), path(SERVER_KEY));

    if !opts.force {
        for existing in [&server_cert_path, &server_key_path] {
            if existing.exists() {
                bail!(
                    "{} already exists; run gen-certs with --force to replace the server \
                     certificate and key (the CA is kept, so pinned clients keep working)",
                    existing.display()
                );
            }
        }
    }
    let sans = server_sans(&opts.extra_sans);
    // Check names before anything is written.
    let mut server_params = CertificateParams::new(sans.clone())
        .context("invalid --san: give a DNS name or an IP address")?;

    let now = OffsetDateTime::now_utc();
    let (ca, ca_cert_pem, ca_reused) = ca_to_sign_with(&ca_cert_path, &ca_key_path, now)?;

    server_params.distinguished_name = name("chatroom server");
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    server_params.not_before = now - BACKDATE;
    server_params.not_after = now + Duration::days(i64::from(server_days));
    server_params.serial_number = Some(random_serial()?);
    let server_key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("cannot generate the server key")?;
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .context("cannot sign the server certificate")?;
    issue::keep_superseded(&server_cert_path)?;
    write_file(
        &server_key_path,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&server_cert_path, server_cert.pem().as_bytes(), 0o644)?;

    let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .context("cannot read back the CA certificate")?;
    let ca_not_after = not_after(&ca_der)?;
    let ca_key_mode = keyfile::mode_of(&ca_key_path)?;
    let server_key_mode = keyfile::mode_of(&server_key_path)?;
    Ok(GenReport {
        ca_cert: ca_cert_path,
        ca_key: ca_key_path,
        server_cert: server_cert_path,
        server_key: server_key_path,
        ca_reused,
        ca_fingerprint: fingerprint(&ca_der),
        ca_not_after,
        server_not_before: server_params.not_before,
        server_not_after: server_params.not_after,
        server_fingerprint: fingerprint(server_cert.der()),
        sans,
        ca_key_mode,
        server_key_mode,
    })
}

/// The CA in `cert_path` and `key_path` (reused: clients pinning it keep
/// working), or a new one when neither file is there; refused when only
/// one of them is. Returns the CA, its certificate as PEM, and whether it
/// was reused.
fn ca_to_sign_with(
    ca_cert_path: &Path,
    ca_key_path: &Path,
    now: OffsetDateTime,
) -> Result<(Issuer<'static, KeyPair>, String, bool)> {
    let present = |p: &Path| p.symlink_metadata().is_ok();
    match (present(ca_cert_path), present(ca_key_path)) {
        (true, true) => {
            let (issuer, pem) = load_ca(ca_cert_path, ca_key_path)?;
            Ok((issuer, pem, true))
        }
        (false, false) => {
            let (issuer, pem) = new_ca(now)?;
            write_file(ca_key_path, issuer.key().serialize_pem().as_bytes(), 0o600)?;
            write_file(ca_cert_path, pem.as_bytes(), 0o644)?;
            Ok((issuer, pem, false))
        }
        (cert, _) => {
            let (present, missing) = if cert {
                (ca_cert_path, ca_key_path)
            } else {
                (ca_key_path, ca_cert_path)
            };
            bail!(
                "{} exists but {} does not: restore the missing file, or move both away to \
                 make a new CA (clients pinning the old one will then need the new ca.pem)",
                present.display(),
                missing.display()
            );
        }
    }
}

pub(crate) fn server_sans(extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
    for san in extra {
        if !sans.iter().any(|s| s.eq_ignore_ascii_case(san)) {
            sans.push(san.clone());
        }
    }
    sans
}

pub(crate) fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "chatroom");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn new_ca(now: OffsetDateTime) -> Result<(Issuer<'static, KeyPair>, String)> {
    let mut params = CertificateParams::default();
    // A random tag makes every CA's name its own, so that a certificate from
    // another chatroom CA is reported as "unknown issuer", not as a bad
    // signature from a CA of the same name.
    let mut tag = [0u8; 4];
    aws_lc_rs::rand::fill(&mut tag).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    params.distinguished_name = name(&format!("chatroom local CA {tag}"));
    // Path length 0: this CA signs server certificates, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial()?);
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("cannot generate the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot self-sign the CA certificate")?;
    Ok((Issuer::new(params, key), cert.pem()))
}

/// Reads an existing CA, after checking both files with `lstat`: no
/// symlinks, and a key that only its owner (this user) can read.
pub(crate) fn load_ca(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Issuer<'static, KeyPair>, String)> {
    keyfile::check_not_symlink(cert_path)?;
    keyfile::check_private_key(key_path)?;
    let cert_pem = fs::read_to_string(cert_path)
        .with_context(|| format!("cannot read CA certificate {}", cert_path.display()))?;
    let key_pem = fs::read_to_string(key_path)
        .with_context(|| format!("cannot read CA key {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
        .with_context(|| format!("{} is not a PEM CA certificate", cert_path.display()))?;
    Ok((issuer, cert_pem))
}

/// Writes `contents` to `path` with `mode`, atomically: into a new file in
/// the same folder, created with that mode (so a key is never readable by
/// others, not even for an instant), then renamed over the target.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have removed bits we asked for; it never adds any.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn not_after(der: &[u8]) -> Result<OffsetDateTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("cannot parse the CA certificate: {e}"))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// A random 128-bit serial number, positive and without a leading zero
/// byte: every certificate gets its own, so that a CRL can name it.
pub fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Text taken from a certificate or a CRL (a subject, an issuer, a name),
/// made safe to print: every character the chat's sanitizer would drop
/// ([`crate::protocol::is_unsafe_char`]: controls, bidirectional
/// overrides, invisible marks) is shown as an escape instead (`\n`,
/// `\x1b`, `\u{202e}`), and a backslash as `\\`. Stripping would hide
/// from an inspector what the certificate holds; escaped, it shows, and no
/// text in it can pass for an escape or move the cursor.
pub(crate) fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    let needs = |c: char| matches!(c, '\\' | '\t') || crate::protocol::is_unsafe_char(c);
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if !needs(c) => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A serial number as printed everywhere: lower-case hex pairs with colons,
/// as openssl and `certs list` show it.
pub fn serial_hex(bytes: &[u8]) -> String {
    // DER may carry a leading zero byte to keep the number positive.
    let trimmed = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    };
    trimmed
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A date as every report prints it: `2027-03-01 09:30 UTC`.
pub fn format_date(t: &OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute())
}

/// Whole days from now until `t`, negative once past.
pub fn days_left(t: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (t - now).whole_days()
}

/// Refuses a `--days` of 0 or beyond [`MAX_DAYS`].
pub fn check_days(days: u32) -> Result<()> {
    if days == 0 || days > MAX_DAYS {
        bail!("--days {days}: give a number of days from 1 to {MAX_DAYS}");
    }
    Ok(())
}

/// The CA of the folder `dir`, or an error saying to make one first.
pub(crate) fn existing_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String)> {
    let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if cert.symlink_metadata().is_err() || key.symlink_metadata().is_err() {
        bail!(
            "no CA in {}/ ({} and {} are needed): run `chatroom gen-certs` first",
            dir.display(),
            CA_CERT,
            CA_KEY
        );
    }
    load_ca(&cert, &key)
}

#[cfg(test)]
mod tests {
    use super::{CA_CERT, DEFAULT_CA, DEFAULT_DIR, escape};
    use std::path::Path;

    #[test]
    fn the_default_ca_is_the_ca_certificate_in_the_default_folder() {
        assert_eq!(Path::new(DEFAULT_CA), Path::new(DEFAULT_DIR).join(CA_CERT));
    }

    #[test]
    fn escape_shows_controls_and_backslashes_and_keeps_the_rest() {
        assert!(matches!(
            escape("O=chatroom, CN=bob"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape("a\nb\u{1b}[8m\u{7}\t\u{202e}é\\x"),
            r"a\nb\x1b[8m\x07\t\u{202e}é\\x"
        );
        assert_eq!(escape("\u{9b}\u{feff}"), r"\x9b\u{feff}");
    }
}
