//! A client certificate as one PKCS#12 file (`clients/NAME.p12`): its
//! certificate, the CA's and its private key, encrypted with a password,
//! which is what browsers and operating systems import. PBES2 only
//! (PBKDF2-SHA256 and AES-256-CBC, HMAC-SHA256 for the MAC): the legacy
//! RC2 and 3DES schemes are not even built in.

use super::{CA_CERT, fingerprint, issue, keyfile, write_file};
use anyhow::{Context, Result, bail};
use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// The shortest password a PKCS#12 file gets: it guards a private key
/// that may be copied anywhere.
pub const MIN_PASSWORD: usize = 8;

/// PBKDF2 rounds for the key and for the MAC: slow to guess, quick to
/// import once.
const ITERATIONS: u32 = 100_000;

/// Writes `clients/NAME.p12` in `dir` from client NAME's certificate and
/// key and the CA's certificate, encrypted with `password`, mode 0600.
pub fn write(dir: &Path, name: &str, password: &str) -> Result<PathBuf> {
    check_password(password)?;
    let (cert_path, key_path) = issue::client_paths(dir, name);
    let leaf = certificate(&cert_path)?;
    let ca = certificate(&dir.join(CA_CERT))?;
    keyfile::check_private_key(&key_path)?;
    let key = match PrivateKeyDer::from_pem_file(&key_path) {
        Ok(PrivateKeyDer::Pkcs8(key)) => key,
        Ok(_) => bail!("{} is not a PKCS#8 key", key_path.display()),
        Err(e) => bail!("cannot read {}: {e}", key_path.display()),
    };
    let key = PrivateKey::from_der(key.secret_pkcs8_der())
        .with_context(|| format!("{} is not a usable key", key_path.display()))?;
    // Binds the key to its certificate inside the file (localKeyId).
    let key_id = fingerprint(&leaf).into_bytes();
    let certs = [&leaf, &ca]
        .into_iter()
        .map(|der| Certificate::from_der(der).context("cannot encode a certificate"))
        .collect::<Result<Vec<_>>>()?;
    let chain = PrivateKeyChain::new(key_id, key, certs);
    let mut store = KeyStore::new();
    store.add_entry(name, KeyStoreEntry::PrivateKeyChain(chain));
    let bytes = store
        .writer(password)
        .encryption_iterations(ITERATIONS)
        .mac_iterations(ITERATIONS)
        .write()
        .context("cannot encode the PKCS#12 file")?;
    let path = cert_path.with_extension("p12");
    write_file(&path, &bytes, 0o600)?;
    Ok(path)
}

/// Refuses a password shorter than [`MIN_PASSWORD`] characters.
pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD {
        bail!("the .p12 password must have at least {MIN_PASSWORD} characters");
    }
    Ok(())
}

fn certificate(path: &Path) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_file(path)
        .with_context(|| format!("cannot read a certificate from {}", path.display()))
}
