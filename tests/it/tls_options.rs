//! TLS settings a student or operator chooses: `--tls-version` on both
//! ends, the key log (`SSLKEYLOGFILE`) that lets Wireshark decrypt a
//! capture, the cipher suite preference over TLS 1.2, and what the client
//! says at start about whom it talks to.

use crate::harness::{BIN, Client, Serve, TestServer, connect_once};
use chatroom::tls;
use rustls::CipherSuite;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

/// A client config with rustls' own defaults (which list AES-256-GCM
/// first), limited to `versions`: the suite chosen is the server's choice.
fn plain_rustls_client(
    server: &TestServer,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(&server.certs.ca()).expect("CA") {
        roots.add(cert).expect("CA usable");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"chat/1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn the_server_prefers_aes_128_gcm_over_tls_12_as_over_tls_13() {
    let server = TestServer::start().await;
    for (versions, expected) in [
        (
            &[&rustls::version::TLS12][..],
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            &[&rustls::version::TLS13][..],
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
    ] {
        let client = Client::tls(server.addr(), plain_rustls_client(&server, versions)).await;
        let suite = client
            .conn
            .get_ref()
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .expect("negotiated")
            .suite();
        assert_eq!(suite, expected);
    }
}

#[tokio::test]
async fn tls_version_12_on_both_ends_with_a_key_log() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let keys = dir.join("keys.log");
    let keys_env = keys.to_str().expect("utf-8 path");
    let mut serve = Serve::start_env(
        dir,
        &["--tls-version", "1.2"],
        &[("SSLKEYLOGFILE", keys_env)],
    )
    .await;
    // Each end warns that the file decrypts the session.
    assert!(
        serve
            .log_so_far()
            .contains("whoever holds that file can decrypt"),
        "{}",
        serve.log_so_far()
    );
    let (status, stdout, stderr) = connect_once(
        dir,
        &[
            "--addr",
            &serve.addr,
            "--nick",
            "alice",
            "--tls-version",
            "1.2",
        ],
        "hello\n",
        &[("SSLKEYLOGFILE", keys_env)],
    )
    .await;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("Connected to server!"), "{stdout}");
    assert!(
        stderr.contains("whoever holds that file can decrypt"),
        "{stderr}"
    );
    // Whom it talks to, once, on stderr; stdout carries only chat lines.
    assert!(stderr.contains("over TLS 1.2"), "{stderr}");
    assert!(
        stderr.contains("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        "{stderr}"
    );
    let ca_der = tls::load_certs(&dir.join("certs/server.pem")).expect("cert");
    let fingerprint = chatroom::certs::fingerprint(&ca_der[0]);
    assert!(stderr.contains(&fingerprint), "{stderr}");
    assert!(stderr.contains("valid until: 20"), "{stderr}");
    // With pipes, stdout holds the server's lines as they are: no
    // timestamps, marks or colours.
    assert!(
        stdout.starts_with("alice joined!\nConnected to server!\n"),
        "{stdout}"
    );
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    serve.wait_for_log("left").await;

    // Both ends wrote the session's secret: the TLS 1.2 master secret,
    // once by the client and once by the server, in the NSS format.
    let log = std::fs::read_to_string(&keys).expect("key log written");
    let secrets: Vec<&str> = log.lines().collect();
    assert_eq!(secrets.len(), 2, "{log}");
    assert!(
        secrets.iter().all(|l| l.starts_with("CLIENT_RANDOM ")),
        "{log}"
    );
    assert_eq!(secrets[0], secrets[1]);
    let mode = std::fs::metadata(&keys).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A 1.3-only client cannot talk to a 1.2-only server, and says why.
    let (status, _, stderr) = connect_once(
        dir,
        &[
            "--addr",
            &serve.addr,
            "--nick",
            "bob",
            "--tls-version",
            "1.3",
        ],
        "",
        &[],
    )
    .await;
    assert!(!status.success());
    assert!(stderr.contains("--tls-version"), "{stderr}");
    let _ = serve.kill_and_log().await;
}

#[tokio::test]
async fn a_tls_13_only_server_refuses_a_client_limited_to_tls_12() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let serve = Serve::start_env(dir, &["--tls-version", "1.3"], &[]).await;
    let (status, stdout, stderr) = connect_once(
        dir,
        &[
            "--addr",
            &serve.addr,
            "--nick",
            "alice",
            "--tls-version",
            "1.2",
        ],
        "",
        &[],
    )
    .await;
    assert!(!status.success(), "{stderr}");
    assert_eq!(stdout, "", "never joined");
    assert!(
        stderr.contains("the server does not allow the TLS version asked for: check --tls-version"),
        "{stderr}"
    );
    let _ = serve.kill_and_log().await;
}

/// Both ends would prefer 1.3: only the client's option makes it 1.2.
#[tokio::test]
async fn a_client_limited_to_tls_12_gets_it_from_a_server_allowing_any() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let serve = Serve::start_env(dir, &[], &[]).await;
    let (status, stdout, stderr) = connect_once(
        dir,
        &[
            "--addr",
            &serve.addr,
            "--nick",
            "alice",
            "--tls-version",
            "1.2",
        ],
        "",
        &[],
    )
    .await;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("Connected to server!"), "{stdout}");
    assert!(stderr.contains("over TLS 1.2,"), "{stderr}");
    let _ = serve.kill_and_log().await;
}

#[tokio::test]
async fn without_sslkeylogfile_nothing_is_logged_and_tls_13_is_preferred() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let serve = Serve::start_env(dir, &[], &[]).await;
    let (status, _, stderr) =
        connect_once(dir, &["--addr", &serve.addr, "--nick", "alice"], "", &[]).await;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("over TLS 1.3"), "{stderr}");
    assert!(stderr.contains("TLS13_AES_128_GCM_SHA256"), "{stderr}");
    assert!(!stderr.contains("SSLKEYLOGFILE"), "{stderr}");
    let log = serve.kill_and_log().await;
    assert!(!log.contains("SSLKEYLOGFILE"), "{log}");
    // Nothing but what serve itself makes appeared in its folder.
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["certs"]);
}

#[test]
fn tls_version_is_in_both_helps() {
    for command in ["serve", "connect"] {
        let out = std::process::Command::new(BIN)
            .args([command, "--help"])
            .output()
            .expect("runs");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--tls-version"), "{help}");
        assert!(help.contains("1.2"), "{help}");
    }
}
