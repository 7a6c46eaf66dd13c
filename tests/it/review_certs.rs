//! Certificates and revocation lists made to deceive, against the built
//! binary: a CRL with the CA's name signed by another key is refused by
//! `certs list`, `certs revoke`, `serve` and a SIGHUP reload; `certs
//! inspect` escapes what a certificate says and prints its fingerprint
//! first; a client certificate names exactly one holder; `certs list` keeps
//! every certificate the CA signed.
//!
//! The certificates come from our own `gen-certs`, the forgeries from
//! rcgen.

use crate::harness::cli::write_signed_pair;
use crate::harness::cli::{as_client, certs_folder, client_tls_for, fails, ok};
use crate::harness::{Client, Serve, TlsClient, tcp, tls_over};
use std::net::SocketAddr;
use std::path::Path;

/// An empty CRL that names `dir`'s CA as its issuer but is signed by a key
/// of its own: what someone who can write to the folder, but has not the
/// CA key, can make.
fn forged_crl(dir: &Path) -> String {
    let ca_pem = std::fs::read_to_string(dir.join("certs/ca.pem")).expect("CA");
    let other_key = rcgen::KeyPair::generate().expect("key");
    // The CA's name and key identifier, with a key that is not the CA's.
    let impostor = rcgen::Issuer::from_ca_cert_pem(&ca_pem, other_key).expect("CA");
    let now = time::OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(30),
        crl_number: rcgen::SerialNumber::from(u64::MAX / 2),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params
        .signed_by(&impostor)
        .expect("sign")
        .pem()
        .expect("PEM")
}

/// Answers NICK with `nick`; returns every line up to `Connected to
/// server!`, or up to the close if the server refused.
async fn register(client: &mut TlsClient, nick: &str) -> Vec<String> {
    let said = client.join_lines(nick).await;
    assert_eq!(said.first().map(String::as_str), Some("NICK"));
    said
}

// ---------------------------------------------------------------------------
// A CRL signed by another key than the CA's.

#[tokio::test]
async fn a_crl_signed_by_another_key_is_refused_by_list_and_revoke() {
    let tmp = certs_folder(&["alice", "bob"]).await;
    let dir = tmp.path();
    ok(dir, &["certs", "revoke", "alice"]).await;
    let crl = dir.join("certs/crl.pem");
    std::fs::write(&crl, forged_crl(dir)).expect("forge");
    let forged = std::fs::read(&crl).expect("read");

    let said = fails(dir, &["certs", "list"]).await;
    assert!(said.contains("crl.pem"), "{said}");
    assert!(said.contains("signature"), "{said}");

    let said = fails(dir, &["certs", "revoke", "bob"]).await;
    assert!(said.contains("crl.pem"), "{said}");
    assert!(said.contains("signature"), "{said}");
    assert_eq!(
        std::fs::read(&crl).expect("read"),
        forged,
        "a refused CRL is left as it was"
    );
    let said = fails(dir, &["certs", "renew-crl"]).await;
    assert!(said.contains("signature"), "{said}");
    assert_eq!(std::fs::read(&crl).expect("read"), forged);
}

/// `certs inspect crl.pem`, the Lab's way to read a CRL: the revoked
/// serials, and whether the signature checks against the CA: the CA beside
/// it by default, another CA given with `--ca`, and a forgery that bears
/// the CA's name but another key's signature.
#[tokio::test]
async fn inspect_reads_a_crl_and_says_whether_the_ca_signed_it() {
    let tmp = certs_folder(&["alice", "bob"]).await;
    let dir = tmp.path();
    let revoked = ok(dir, &["certs", "revoke", "bob"]).await;
    let serial = revoked
        .split("(serial ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the serial revoked");
    let report = ok(dir, &["certs", "inspect", "certs/crl.pem"]).await;
    assert!(
        report.contains("issuer:       O=chatroom, CN=chatroom local CA"),
        "{report}"
    );
    assert!(report.contains("this update:  20"), "{report}");
    assert!(report.contains("next update:  20"), "{report}");
    assert!(
        report.contains("revoked:      1 certificate(s)"),
        "{report}"
    );
    assert!(
        report.contains(&format!("  serial {serial}  revoked 20")),
        "{report}"
    );
    assert!(
        report.contains("signature:    checks against the CA in certs/ca.pem"),
        "{report}"
    );

    ok(dir, &["gen-certs", "--dir", "other"]).await;
    let other = ok(
        dir,
        &["certs", "inspect", "certs/crl.pem", "--ca", "other/ca.pem"],
    )
    .await;
    assert!(
        other.contains("signature:    DOES NOT check against the CA in other/ca.pem"),
        "{other}"
    );
    assert!(other.contains("another CA issued and signed it"), "{other}");

    std::fs::write(dir.join("forged.pem"), forged_crl(dir)).expect("forge");
    let forged = ok(
        dir,
        &["certs", "inspect", "forged.pem", "--ca", "certs/ca.pem"],
    )
    .await;
    assert!(
        forged.contains("revoked:      0 certificate(s)"),
        "{forged}"
    );
    assert!(
        forged.contains("DOES NOT check against the CA in certs/ca.pem"),
        "{forged}"
    );
    assert!(forged.contains("signed by another key"), "{forged}");
    // Without --ca and no ca.pem beside it, nothing is claimed.
    let unchecked = ok(dir, &["certs", "inspect", "forged.pem"]).await;
    assert!(
        unchecked.contains("signature:    not checked"),
        "{unchecked}"
    );
}

#[tokio::test]
async fn serve_refuses_a_forged_crl_at_start() {
    let tmp = certs_folder(&["alice"]).await;
    let dir = tmp.path();
    std::fs::write(dir.join("certs/crl.pem"), forged_crl(dir)).expect("forge");
    let said = fails(
        dir,
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--client-ca",
            "certs/ca.pem",
            "--crl",
            "certs/crl.pem",
        ],
    )
    .await;
    assert!(said.contains("crl.pem"), "{said}");
    assert!(said.contains("signature"), "{said}");
}

#[tokio::test]
async fn sighup_keeps_the_old_policy_when_the_new_crl_is_forged() {
    let tmp = certs_folder(&["alice", "bob", "carol"]).await;
    let dir = tmp.path();
    ok(dir, &["certs", "revoke", "alice"]).await;
    let mut serve = Serve::start(
        dir,
        &["--client-ca", "certs/ca.pem", "--crl", "certs/crl.pem"],
    )
    .await;
    let mut bob = as_client(dir, serve.socket_addr(), "bob").await;
    let said = register(&mut bob, "bob").await;
    assert_eq!(
        said.last().map(String::as_str),
        Some("Connected to server!")
    );

    std::fs::write(dir.join("certs/crl.pem"), forged_crl(dir)).expect("forge");
    serve.signal("HUP").await;
    let kept = serve
        .wait_for_log("nothing reloaded, keeping the old configuration whole")
        .await;
    assert!(kept.contains("signature"), "{kept}");

    // bob stays, carol still joins, alice is still refused.
    let mut carol = as_client(dir, serve.socket_addr(), "carol").await;
    let said = register(&mut carol, "carol").await;
    assert_eq!(
        said.last().map(String::as_str),
        Some("Connected to server!"),
        "{said:?}"
    );
    assert_eq!(bob.next_line().await.as_deref(), Some("carol joined!"));
    bob.send("still here").await;
    assert_eq!(carol.next_line().await.as_deref(), Some("bob: still here"));
    let alice_tls = client_tls_for(dir, "alice");
    if let Ok(stream) = tls_over(tcp(serve.socket_addr()).await, alice_tls).await {
        // TLS 1.3: the refusal arrives as an alert on the first read.
        let mut alice = Client::new(stream);
        assert_eq!(alice.next_line().await, None, "alice stays revoked");
    }
}

// ---------------------------------------------------------------------------
// What a certificate says, printed to a terminal.

/// A common name that, printed raw, draws a fake fingerprint line, hides
/// what follows (`ESC[8m`), retitles the window and reverses the text.
const HOSTILE_CN: &str =
    "mallory\nSHA-256 fingerprint: 00:11:22:33\n\u{1b}[8m\u{1b}]0;title\u{7}\u{1b}[2J\u{202e}evil";

/// A self-signed certificate whose subject (and so issuer) and DNS name
/// carry [`HOSTILE_CN`]; returns its PEM and DER.
fn hostile_certificate() -> (String, Vec<u8>) {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, HOSTILE_CN);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "\u{1b}]0;owned\u{7}");
    params.subject_alt_names = vec![rcgen::SanType::DnsName(
        "a\u{1b}[8m.example".try_into().expect("IA5"),
    )];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("sign");
    (cert.pem(), cert.der().to_vec())
}

/// Fails on any byte that a terminal acts on: C0 controls but the line
/// feed, DEL, C1 controls and the bidirectional controls.
fn assert_inert(text: &str) {
    for (i, c) in text.char_indices() {
        let bad = (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        assert!(!bad, "control {c:?} at byte {i} in:\n{text}");
    }
}

#[tokio::test]
async fn inspect_escapes_certificate_text_and_prints_the_fingerprint_first() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let (pem, der) = hostile_certificate();
    std::fs::write(dir.join("hostile.pem"), pem).expect("write");
    let out = ok(dir, &["certs", "inspect", "hostile.pem"]).await;
    assert_inert(&out);
    let real = chatroom::certs::fingerprint(&der);
    let fingerprints: Vec<&str> = out
        .lines()
        .filter(|line| line.starts_with("SHA-256 fingerprint:"))
        .collect();
    assert_eq!(
        fingerprints,
        [format!("SHA-256 fingerprint: {real}")],
        "{out}"
    );
    assert!(
        out.starts_with(&format!("SHA-256 fingerprint: {real}\n")),
        "the fingerprint comes first:\n{out}"
    );
    // Escaped, not dropped: an inspector sees what is there.
    assert!(
        out.contains(r"mallory\nSHA-256 fingerprint: 00:11:22:33\n\x1b[8m"),
        "{out}"
    );
    assert!(out.contains(r"\x1b]0;title\x07"), "{out}");
    assert!(out.contains(r"\u{202e}evil"), "{out}");
    assert!(out.contains(r"DNS:a\x1b[8m.example"), "{out}");
}

#[tokio::test]
async fn certs_list_escapes_the_names_of_the_certificates_it_lists() {
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    let (pem, _) = hostile_certificate();
    std::fs::create_dir_all(dir.join("certs/clients")).expect("mkdir");
    std::fs::write(dir.join("certs/clients/mallory.pem"), pem).expect("write");
    let out = ok(dir, &["certs", "list"]).await;
    assert_inert(&out);
    assert!(out.contains(r"mallory\nSHA-256"), "{out}");
}

// ---------------------------------------------------------------------------
// The one name a client certificate binds its holder to.

/// Signs `params` (a client certificate) with `dir`'s CA for a fresh key,
/// written as `certs/clients/FILE.pem` and `FILE-key.pem` (mode 0600).
fn write_client_pair(dir: &Path, mut params: rcgen::CertificateParams, file: &str) {
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    write_signed_pair(
        dir,
        params,
        &format!("certs/clients/{file}.pem"),
        &format!("certs/clients/{file}-key.pem"),
    );
}

/// A client certificate's parameters: DNS names `sans`, common names `cns`
/// (the first as a CN, the others under the same OID as further CNs).
fn client_params(cns: &[&str], sans: &[&str]) -> rcgen::CertificateParams {
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (i, cn) in cns.iter().enumerate() {
        // rcgen keeps one value per type: a second CN goes in under the
        // CN's own OID as a type of its own.
        let kind = if i == 0 {
            rcgen::DnType::CommonName
        } else {
            rcgen::DnType::CustomDnType(vec![2, 5, 4, 3])
        };
        params.distinguished_name.push(kind, *cn);
    }
    params
}

/// What the server says to a client presenting `certs/clients/FILE.pem`
/// and answering `NICK` with `nick`, up to its close or its welcome.
async fn join_with(dir: &Path, addr: SocketAddr, file: &str, nick: &str) -> Vec<String> {
    as_client(dir, addr, file).await.join_lines(nick).await
}

#[tokio::test]
async fn a_client_certificate_must_name_exactly_one_holder() {
    let tmp = certs_folder(&["carol"]).await;
    let dir = tmp.path();
    // Two common names: tools disagree on which one counts.
    write_client_pair(dir, client_params(&["alice", "bob"], &[]), "two-cns");
    // A DNS name that is not the common name.
    write_client_pair(dir, client_params(&["alice"], &["bob"]), "san-differs");
    // A common name that is not a plain string (BMPString), beside a DNS
    // name that a lenient reader would fall back to.
    let mut bmp = client_params(&[], &["alice"]);
    bmp.distinguished_name.push(
        rcgen::DnType::CommonName,
        rcgen::DnValue::BmpString("mallory".try_into().expect("BMP")),
    );
    write_client_pair(dir, bmp, "bmp-cn");

    let serve = Serve::start(dir, &["--client-ca", "certs/ca.pem"]).await;
    for (file, nick, reason) in [
        ("two-cns", "alice", "2 common names"),
        ("san-differs", "alice", "differs from its common name"),
        ("bmp-cn", "alice", "BMPString"),
    ] {
        let said = join_with(dir, serve.socket_addr(), file, nick).await;
        let last = said.last().map(String::as_str).unwrap_or_default();
        assert!(
            last.starts_with("ERROR certificate refused: ") && last.contains(reason),
            "{file}: {said:?}"
        );
    }
    // A certificate from gen-certs joins under its name.
    let said = join_with(dir, serve.socket_addr(), "carol", "carol").await;
    assert_eq!(
        said.last().map(String::as_str),
        Some("Connected to server!"),
        "{said:?}"
    );
}

// ---------------------------------------------------------------------------
// The record of every certificate the CA signed.

/// The STATUS of each `certs list` row of client `name`, sorted.
fn statuses(list: &str, name: &str) -> Vec<String> {
    let mut found: Vec<String> = list
        .lines()
        .filter(|line| {
            let mut columns = line.split_whitespace();
            columns.next() == Some("client") && columns.next() == Some(name)
        })
        .map(|line| {
            line.split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn reissued_client_certificates_stay_on_the_record() {
    let tmp = certs_folder(&["bob", "carol"]).await;
    let dir = tmp.path();
    ok(dir, &["certs", "revoke", "bob"]).await;
    ok(dir, &["gen-certs", "client", "bob", "--force"]).await;
    ok(dir, &["gen-certs", "client", "carol", "--force"]).await;

    let list = ok(dir, &["certs", "list"]).await;
    assert_eq!(statuses(&list, "bob"), ["REVOKED", "valid"], "{list}");
    assert_eq!(statuses(&list, "carol"), ["replaced", "valid"], "{list}");
    // The record holds certificates, never their keys.
    let kept: Vec<String> = std::fs::read_dir(dir.join("certs/clients/superseded"))
        .expect("a folder of superseded certificates")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for file in &kept {
        let text =
            std::fs::read_to_string(dir.join("certs/clients/superseded").join(file)).expect("read");
        assert!(text.contains("BEGIN CERTIFICATE"), "{file}");
        assert!(!text.contains("PRIVATE KEY"), "{file}");
    }

    // A replaced certificate is still the CA's: it can be revoked by its
    // serial, as the list prints it.
    let serial = list
        .lines()
        .find(|line| line.starts_with("client  carol") && line.ends_with("replaced"))
        .and_then(|line| line.split_whitespace().nth(2))
        .expect("carol's replaced certificate")
        .to_owned();
    ok(dir, &["certs", "revoke", "carol", "--serial", &serial]).await;
    let list = ok(dir, &["certs", "list"]).await;
    assert_eq!(statuses(&list, "carol"), ["REVOKED", "valid"], "{list}");
    let said = fails(dir, &["certs", "revoke", "carol", "--serial", "ab:cd"]).await;
    assert!(said.contains("no certificate with serial ab:cd"), "{said}");
}
