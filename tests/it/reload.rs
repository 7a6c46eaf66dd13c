//! Reissuing the server certificate while the server runs: after
//! `gen-certs --force` and a reload (what SIGHUP does), new connections get
//! the new certificate, sessions already up carry on, and a broken pair is
//! refused while the old one stays in use; one that expires within 30 days
//! is warned about when SIGHUP installs it. A plaintext server, which has
//! no certificate, reloads its deny file on SIGHUP the same way.

use crate::harness::cli::{Running, ok};
use crate::harness::{Client, Serve, TestCerts, loopback};
use chatroom::certs::lifecycle::{self, Validity};
use chatroom::certs::{self, GenOptions};
use chatroom::server::{RunningServer, Settings};
use chatroom::tls;
use std::net::SocketAddr;

#[tokio::test]
async fn a_reloaded_certificate_reaches_new_connections_only() {
    let certs = TestCerts::new();
    let cert_path = certs.path(certs::SERVER_CERT);
    let key_path = certs.path(certs::SERVER_KEY);
    let (config, certificate) =
        tls::reloadable_server_config_with(&cert_path, &key_path, None, tls::TlsVersion::Any)
            .expect("config");
    let mut settings = Settings::new(Some(config));
    settings.limits.rate = None;
    let server = RunningServer::start(loopback(), settings)
        .await
        .expect("starts");
    let mut alice = Client::tls(server.addr, certs.client_tls()).await;
    alice.register("alice").await;
    let first = alice.presented();

    // Reissue (same CA, new key) and reload.
    certs::generate(&GenOptions {
        dir: certs.dir.path().to_path_buf(),
        extra_sans: vec!["chat.lan".into()],
        force: true,
    })
    .expect("gen-certs --force");
    certificate.reload().expect("reload");
    let on_disk = tls::load_certs(&cert_path).expect("new cert")[0].clone();
    assert_ne!(on_disk, first);
    assert_eq!(certificate.leaf(), on_disk);

    // A client of its own: one that resumed alice's TLS session would be
    // shown the certificate of that session, not a new one.
    let mut bob = Client::tls(server.addr, certs.client_tls()).await;
    bob.register("bob").await;
    assert_eq!(
        bob.presented(),
        on_disk,
        "a new connection gets the new certificate"
    );

    // Alice's session, made with the old certificate, carries on.
    alice.expect("bob joined!").await;
    alice.send("still here").await;
    alice.expect("alice: still here").await;
    bob.expect("alice: still here").await;

    // A broken pair is refused, and the current one stays.
    std::fs::write(&cert_path, "not a certificate").expect("write");
    let err = certificate
        .reload()
        .expect_err("a broken file must not load");
    assert!(format!("{err:#}").contains("server.pem"), "{err:#}");
    let mut carol = Client::tls(server.addr, certs.client_tls()).await;
    carol.register("carol").await;
    assert_eq!(carol.presented(), on_disk);
}

#[tokio::test]
async fn sighup_reloads_the_certificate_files() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let mut serve = Serve::start(dir, &[]).await;
    let before = std::fs::read(dir.join("certs/server.pem")).expect("cert");

    ok(dir, &["gen-certs", "--force", "--san", "chat.lan"]).await;
    assert_ne!(
        std::fs::read(dir.join("certs/server.pem")).expect("cert"),
        before
    );

    serve.signal("HUP").await;
    let reloaded = serve
        .wait_for_log("new connections get the reloaded certificate")
        .await;
    let new_fingerprint = {
        let pem = tls::load_certs(&dir.join("certs/server.pem")).expect("cert");
        certs::fingerprint(&pem[0])
    };
    assert!(reloaded.contains(&new_fingerprint), "{reloaded}");

    // The server is still up, and a client checking the new name joins.
    let mut client = Running::start(
        dir,
        &[
            "connect",
            "--addr",
            &serve.addr,
            "--nick",
            "dave",
            "--server-name",
            "chat.lan",
        ],
    );
    assert_eq!(client.line().await, "dave joined!");
    let (success, said) = client.end().await;
    assert!(success, "{said}");
}

#[tokio::test]
async fn sighup_reloads_a_plaintext_servers_deny_file() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let deny = dir.join("deny.txt");
    std::fs::write(&deny, "# nobody yet\n").expect("deny file");
    let mut serve = Serve::start(dir, &["--plaintext", "--deny-file", "deny.txt"]).await;
    let addr: SocketAddr = serve.addr.parse().expect("address");
    let mut alice = Client::plain(addr).await;
    alice.register("alice").await;
    let mut dave = Client::plain(addr).await;
    dave.register("dave").await;
    alice.expect("dave joined!").await;

    std::fs::write(&deny, "dave\n").expect("deny file");
    serve.signal("HUP").await;
    let reloaded = serve.wait_for_log("SIGHUP: reloaded").await;
    assert!(reloaded.contains("0 revoked, 1 denied names"), "{reloaded}");
    let dave_heard = dave.until_closed().await;
    assert_eq!(
        dave_heard.last().map(String::as_str),
        Some("ERROR access denied for \"dave\""),
        "{dave_heard:?}"
    );
    alice.expect("dave left!").await;

    // Still up: dave is refused at NICK, and alice chats with a newcomer.
    let mut dave = Client::plain(addr).await;
    dave.expect("NICK").await;
    dave.send("dave").await;
    assert_eq!(
        dave.until_closed().await,
        ["ERROR access denied for \"dave\""]
    );
    let mut carol = Client::plain(addr).await;
    carol.register("carol").await;
    alice.expect("carol joined!").await;
    alice.send("still here").await;
    alice.expect("alice: still here").await;
    carol.expect("alice: still here").await;

    // A deny file that cannot be read: the old list stays whole.
    std::fs::remove_file(&deny).expect("remove");
    serve.signal("HUP").await;
    let kept = serve
        .wait_for_log("nothing reloaded, keeping the old configuration whole")
        .await;
    assert!(kept.contains("deny.txt"), "{kept}");
    let mut dave = Client::plain(addr).await;
    dave.expect("NICK").await;
    dave.send("dave").await;
    assert_eq!(
        dave.until_closed().await,
        ["ERROR access denied for \"dave\""]
    );
    assert!(
        serve.child.try_wait().expect("try_wait").is_none(),
        "serve is still running"
    );
}

#[tokio::test]
async fn sighup_warns_about_a_reloaded_certificate_that_expires_soon() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let mut serve = Serve::start(dir, &[]).await;
    let fresh = serve.log_so_far();
    assert!(fresh.contains("listening"), "{fresh}");
    assert!(!fresh.contains("expires in"), "{fresh}");

    ok(dir, &["gen-certs", "server", "--force", "--days", "10"]).await;
    let leaf = tls::load_certs(&dir.join("certs/server.pem")).expect("cert")[0].clone();
    let now = time::OffsetDateTime::now_utc();
    let Ok(Validity::ExpiresSoon { not_after, .. }) = lifecycle::check(&leaf, "it", now) else {
        panic!("gen-certs --days 10 made a certificate that is not due soon");
    };

    serve.signal("HUP").await;
    let warned = serve
        .wait_for_log("the server certificate certs/server.pem expires in")
        .await;
    assert!(warned.contains("WARN"), "{warned}");
    assert!(
        warned.contains("expires in 9 days") || warned.contains("expires in 10 days"),
        "{warned}"
    );
    assert!(
        warned.contains(&format!(
            "({}): reissue it soon",
            certs::format_date(&not_after)
        )),
        "{warned}"
    );
    // A warning, not a refusal: the certificate is in force.
    let reloaded = serve
        .wait_for_log("new connections get the reloaded certificate")
        .await;
    assert!(reloaded.contains(&certs::fingerprint(&leaf)), "{reloaded}");
}
