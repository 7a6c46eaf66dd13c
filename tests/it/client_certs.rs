//! Mutual TLS: with `--client-ca`, only holders of a client certificate
//! from that CA join, under their certificate's name; revoked ones are
//! refused at the handshake and, after a reload, put out of the room;
//! `--deny` locks a name out. Real rustls on both sides, certificates from
//! our own `gen-certs client` (the expired one made here with rcgen).

use crate::harness::{Client, TestCerts, start_mutual_tls};
use chatroom::certs;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// A client whose handshake the server must refuse: either the handshake
/// fails, or (TLS 1.3, where the client finishes first) the connection
/// ends before any line, so it never sees `NICK`.
async fn refused_at_handshake(addr: SocketAddr, config: Arc<rustls::ClientConfig>, who: &str) {
    if let Ok(mut client) = Client::try_tls(addr, config).await {
        assert_eq!(
            client.next_line().await,
            None,
            "{who}: a refused client must never see NICK"
        );
    }
}

/// A client certificate for `name` from `certs`' CA that expired yesterday.
fn expired_client(certs: &TestCerts, name: &str) -> (PathBuf, PathBuf) {
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(certs.path(certs::CA_KEY)).expect("CA key"))
            .expect("CA key PEM");
    let ca = Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(certs.ca()).expect("CA cert"),
        ca_key,
    )
    .expect("CA");
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(30);
    params.not_after = now - Duration::days(1);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("sign");
    let cert_path = certs.path(&format!("{name}-expired.pem"));
    let key_path = certs.path(&format!("{name}-expired-key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (cert_path, key_path)
}

#[tokio::test]
async fn a_client_certificate_joins_under_its_name_and_bad_ones_fail_the_handshake() {
    let certs = TestCerts::new();
    let (server, _access) = start_mutual_tls(&certs, &[]).await;
    let (alice_cert, alice_key) = certs.client("alice");
    let (bob_cert, bob_key) = certs.client("bob");
    let mut alice = Client::tls(server.addr, certs.client_tls_as(&alice_cert, &alice_key)).await;
    alice.register("alice").await;
    let mut bob = Client::tls(server.addr, certs.client_tls_as(&bob_cert, &bob_key)).await;
    bob.register("bob").await;
    alice.expect("bob joined!").await;

    let other_ca = TestCerts::new();
    let (eve_cert, eve_key) = other_ca.client("eve");
    let (dave_cert, dave_key) = expired_client(&certs, "dave");
    let server_only = (
        certs.path(certs::SERVER_CERT),
        certs.path(certs::SERVER_KEY),
    );
    let attempts = [
        ("no certificate", certs.client_tls()),
        (
            "another CA's certificate",
            tls_as(&certs, &eve_cert, &eve_key),
        ),
        (
            "an expired certificate",
            tls_as(&certs, &dave_cert, &dave_key),
        ),
        (
            "a serverAuth-only certificate",
            tls_as(&certs, &server_only.0, &server_only.1),
        ),
    ];
    for (round, (who, config)) in attempts.into_iter().enumerate() {
        refused_at_handshake(server.addr, config, who).await;
        // The room kept chatting and noticed nothing: the next line anyone
        // sees is this message, not a join.
        let text = format!("round {round}");
        alice.send(&text).await;
        alice.expect(&format!("alice: {text}")).await;
        bob.expect(&format!("alice: {text}")).await;
    }
    server.stop().await.expect("stops");
}

fn tls_as(
    certs: &TestCerts,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Arc<rustls::ClientConfig> {
    // Pins `certs`' CA (the server's), whoever signed the client's pair.
    chatroom::tls::client_config_with(
        &certs.ca(),
        chatroom::tls::TlsVersion::Any,
        Some((cert, key)),
    )
    .expect("client config")
}

#[tokio::test]
async fn the_nickname_must_be_the_certificates_and_one_certificate_joins_once() {
    let certs = TestCerts::new();
    let (server, _access) = start_mutual_tls(&certs, &[]).await;
    let (cert, key) = certs.client("alice");
    let config = certs.client_tls_as(&cert, &key);

    let mut alice = Client::tls(server.addr, config.clone()).await;
    alice.expect("NICK").await;
    alice.send("mallory").await;
    alice
        .expect("ERROR nickname must be \"alice\" (from your certificate)")
        .await;
    alice.expect("NICK").await;
    // Case-insensitively the certificate's name: joined under its spelling.
    alice.send("ALICE").await;
    alice.expect("alice joined!").await;
    alice.expect("Connected to server!").await;

    // Three wrong answers close the connection, as for any nickname.
    let mut again = Client::tls(server.addr, config.clone()).await;
    for _ in 0..3 {
        again.expect("NICK").await;
        again.send("bob").await;
        again
            .expect("ERROR nickname must be \"alice\" (from your certificate)")
            .await;
    }
    assert_eq!(again.next_line().await, None);

    // The same certificate a second time: the name is taken.
    let mut twin = Client::tls(server.addr, config).await;
    twin.expect("NICK").await;
    twin.send("alice").await;
    twin.expect("ERROR nickname \"alice\" is taken").await;

    alice.send("only one alice").await;
    alice.expect("alice: only one alice").await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_and_a_reload_puts_it_out_of_the_room() {
    let certs = TestCerts::new();
    let (server, access) = start_mutual_tls(&certs, &[]).await;
    let (alice_cert, alice_key) = certs.client("alice");
    let (bob_cert, bob_key) = certs.client("bob");
    let (carol_cert, carol_key) = certs.client("carol");
    let mut alice = Client::tls(server.addr, certs.client_tls_as(&alice_cert, &alice_key)).await;
    alice.register("alice").await;
    let bob_tls = certs.client_tls_as(&bob_cert, &bob_key);
    let mut bob = Client::tls(server.addr, bob_tls.clone()).await;
    bob.register("bob").await;
    alice.expect("bob joined!").await;

    certs::revoke::revoke(certs.dir.path(), "bob").expect("certs revoke bob");
    // Nothing changes before the reload.
    bob.send("still in").await;
    alice.expect("bob: still in").await;
    bob.expect("bob: still in").await;

    access.install(access.prepare().expect("the new CRL loads"));
    bob.expect("ERROR certificate revoked").await;
    assert_eq!(bob.next_line().await, None, "then disconnected");
    alice.expect("bob left!").await;

    // Bob cannot come back: a full handshake fails (a fresh config, with no
    // session to resume)...
    refused_at_handshake(
        server.addr,
        certs.client_tls_as(&bob_cert, &bob_key),
        "revoked bob",
    )
    .await;
    // ...and resuming his earlier TLS session (which skips certificate
    // checks) meets the CRL after the handshake.
    let mut resumed = Client::tls(server.addr, bob_tls).await;
    assert_eq!(
        resumed.conn.get_ref().get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(
        resumed.next_line().await.as_deref(),
        Some("ERROR certificate revoked"),
        "a resumed session meets the CRL too"
    );
    // Another client of the same CA still joins.
    let mut carol = Client::tls(server.addr, certs.client_tls_as(&carol_cert, &carol_key)).await;
    carol.register("carol").await;
    alice.expect("carol joined!").await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn a_denied_name_is_refused_at_join() {
    let certs = TestCerts::new();
    let (server, _access) = start_mutual_tls(&certs, &["Bob"]).await;
    let (alice_cert, alice_key) = certs.client("alice");
    let (bob_cert, bob_key) = certs.client("bob");
    let mut alice = Client::tls(server.addr, certs.client_tls_as(&alice_cert, &alice_key)).await;
    alice.register("alice").await;
    let mut bob = Client::tls(server.addr, certs.client_tls_as(&bob_cert, &bob_key)).await;
    assert_eq!(
        bob.line().await,
        "ERROR access denied for \"bob\"",
        "refused before NICK"
    );
    assert_eq!(bob.next_line().await, None);
    alice.send("nobody joined").await;
    alice.expect("alice: nobody joined").await;
    server.stop().await.expect("stops");

    // Without client certificates, --deny refuses the nickname.
    let open = crate::harness::TestServer::start_with(|settings| {
        settings.access = Some(
            chatroom::server::access::Access::load(chatroom::server::access::AccessFiles {
                deny: vec!["bob".into()],
                ..Default::default()
            })
            .expect("policy"),
        );
    })
    .await;
    let mut bob = open.connect().await;
    bob.expect("NICK").await;
    bob.send("BOB").await;
    bob.expect("ERROR access denied for \"BOB\"").await;
    assert_eq!(bob.next_line().await, None);
    open.join("alice").await;
}

#[tokio::test]
async fn a_crl_past_its_next_update_still_refuses_whom_it_names() {
    let certs = TestCerts::new();
    let (bob_cert, bob_key) = certs.client("bob");
    let (carol_cert, carol_key) = certs.client("carol");
    certs::revoke::revoke(certs.dir.path(), "bob").expect("certs revoke bob");
    // The same list, signed as if 400 days ago: due 35 days ago.
    let long_ago = OffsetDateTime::now_utc() - Duration::days(400);
    certs::revoke::renew_as_of(certs.dir.path(), long_ago).expect("renew as of then");
    let (server, _access) = start_mutual_tls(&certs, &[]).await;

    refused_at_handshake(
        server.addr,
        certs.client_tls_as(&bob_cert, &bob_key),
        "bob, named by a CRL past its next update",
    )
    .await;
    let mut carol = Client::tls(server.addr, certs.client_tls_as(&carol_cert, &carol_key)).await;
    carol.register("carol").await;
    carol.send("in").await;
    carol.expect("carol: in").await;
    server.stop().await.expect("stops");
}
