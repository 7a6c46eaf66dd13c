//! `gen-certs client NAME --p12`: the client certificate as a PKCS#12
//! file a browser imports, read back by openssl and by a PKCS#12 parser.

use crate::harness::cli::{fails, ok};
use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn gen_certs_client_p12_writes_the_certificate_ca_and_key_under_a_password() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    ok(d, &["gen-certs"]).await;
    std::fs::write(d.join("short"), "seven77\n").expect("write");
    let said = fails(
        d,
        &[
            "gen-certs",
            "client",
            "alice",
            "--p12",
            "--p12-password-file",
            "short",
        ],
    )
    .await;
    assert!(said.contains("at least 8 characters"), "{said}");
    assert!(!d.join("certs/clients/alice.pem").exists(), "issued anyway");

    std::fs::write(d.join("pw"), "correct horse battery\n").expect("write");
    let out = ok(
        d,
        &[
            "gen-certs",
            "client",
            "alice",
            "--p12",
            "--p12-password-file",
            "pw",
        ],
    )
    .await;
    assert!(out.contains("alice.p12"), "{out}");
    let p12 = d.join("certs/clients/alice.p12");
    let mode = std::fs::metadata(&p12).expect("p12").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let data = std::fs::read(&p12).expect("read");
    assert!(KeyStore::from_pkcs12(&data, "wrong password", Pkcs12ImportPolicy::Relaxed).is_err());
    let store = KeyStore::from_pkcs12(&data, "correct horse battery", Pkcs12ImportPolicy::Strict)
        .expect("the password opens it");
    let (_, chain) = store.private_key_chain().expect("a key and its chain");
    let cert = CertificateDer::from_pem_file(d.join("certs/clients/alice.pem")).expect("cert");
    let ca = CertificateDer::from_pem_file(d.join("certs/ca.pem")).expect("ca");
    let chain_der: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
    assert_eq!(chain_der, [cert.as_ref(), ca.as_ref()]);
    let key = match PrivateKeyDer::from_pem_file(d.join("certs/clients/alice-key.pem")) {
        Ok(PrivateKeyDer::Pkcs8(key)) => key,
        other => panic!("{other:?}"),
    };
    assert_eq!(chain.key().as_der(), key.secret_pkcs8_der());

    // openssl, another reader, opens it with the password and sees alice.
    let shown = tokio::process::Command::new("openssl")
        .args(["pkcs12", "-in"])
        .arg(&p12)
        .args(["-passin", "file:pw", "-nokeys", "-clcerts"])
        .current_dir(d)
        .output()
        .await
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        text.contains("CN = alice") || text.contains("CN=alice"),
        "{text}"
    );
}
