//! The built server with `--client-ca`, as an operator runs it: SIGHUP
//! reloads the certificate, the CRL and the deny file all or nothing, puts
//! a revoked participant out of the room, keeps the old configuration whole
//! when a part is broken; `connect --cert/--key` joins under the
//! certificate's name; expiry is warned about and an expired certificate
//! refused.

use crate::harness::cli::{Running, as_client, certs_folder, ok, run, write_signed_pair};
use crate::harness::{Client, Serve, WAIT};
use chatroom::certs;
use chatroom::tls;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Writes a server certificate (signed by `dir`'s CA) that expired two days
/// ago, and its key; returns its expiry.
fn expired_server_pair(dir: &Path, cert: &str, key: &str) -> time::OffsetDateTime {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(20);
    params.not_after = now - time::Duration::days(2);
    let not_after = params.not_after;
    write_signed_pair(dir, params, cert, key);
    not_after
}

/// Writes a client certificate for alice (signed by `dir`'s CA) valid only
/// from `from` to `until`, and its key (mode 0600).
fn client_pair_valid(
    dir: &Path,
    cert: &str,
    key: &str,
    from: time::OffsetDateTime,
    until: time::OffsetDateTime,
) {
    let mut params = rcgen::CertificateParams::new(vec!["alice".to_owned()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = from;
    params.not_after = until;
    write_signed_pair(dir, params, cert, key);
}

/// Runs `connect` to `addr` with `extra` arguments and no input; returns
/// its exit status and stderr.
async fn connect_with(
    dir: &Path,
    addr: &str,
    extra: &[&str],
) -> (std::process::ExitStatus, String) {
    let args = [&["connect", "--addr", addr], extra].concat();
    let out = run(dir, &args, &[]).await;
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn sighup_reloads_all_or_nothing_and_puts_revoked_participants_out() {
    let tmp = certs_folder(&["alice", "bob", "carol", "dave"]).await;
    let dir = tmp.path();
    std::fs::write(dir.join("deny.txt"), "# nobody yet\n").expect("deny file");
    let mut serve = Serve::start(
        dir,
        &["--client-ca", "certs/ca.pem", "--deny-file", "deny.txt"],
    )
    .await;
    let addr: SocketAddr = serve.addr.parse().expect("address");
    let first_cert = tls::load_certs(&dir.join("certs/server.pem")).expect("cert")[0].clone();

    let mut alice = as_client(dir, addr, "alice").await;
    alice.register("alice").await;
    let mut bob = as_client(dir, addr, "bob").await;
    bob.register("bob").await;
    let mut dave = as_client(dir, addr, "dave").await;
    dave.register("dave").await;
    alice.expect("bob joined!").await;
    alice.expect("dave joined!").await;
    bob.expect("dave joined!").await;

    // No certificate: refused at the handshake, logged with the address.
    let mut anonymous = Client::try_tls(
        addr,
        tls::client_config(&dir.join("certs/ca.pem")).expect("config"),
    )
    .await;
    if let Ok(client) = anonymous.as_mut() {
        assert_eq!(client.next_line().await, None);
    }
    let logged = serve.wait_for_log("peer sent no certificates").await;
    assert!(logged.contains("peer=127.0.0.1:"), "{logged}");

    // Revoke bob and deny dave, then reload: both are put out; alice stays.
    ok(dir, &["certs", "revoke", "bob"]).await;
    std::fs::write(dir.join("deny.txt"), "dave\n").expect("deny file");
    serve.signal("HUP").await;
    let reloaded = serve
        .wait_for_log("new connections get the reloaded certificate")
        .await;
    assert!(reloaded.contains("1 revoked, 1 denied names"), "{reloaded}");
    // Each may hear the other leave first; its own refusal is its last line.
    let bob_heard = bob.until_closed().await;
    assert_eq!(
        bob_heard.last().map(String::as_str),
        Some("ERROR certificate revoked"),
        "{bob_heard:?}"
    );
    let dave_heard = dave.until_closed().await;
    assert_eq!(
        dave_heard.last().map(String::as_str),
        Some("ERROR access denied for \"dave\""),
        "{dave_heard:?}"
    );
    let mut gone = vec![alice.line().await, alice.line().await];
    gone.sort();
    assert_eq!(gone, ["bob left!", "dave left!"]);

    // A broken CRL next to a good new server certificate: nothing changes,
    // not even the certificate.
    ok(
        dir,
        &["gen-certs", "server", "--force", "--san", "chat.lan"],
    )
    .await;
    let second_cert = tls::load_certs(&dir.join("certs/server.pem")).expect("cert")[0].clone();
    assert_ne!(second_cert, first_cert);
    std::fs::write(dir.join("certs/crl.pem"), "not a CRL").expect("break the CRL");
    std::fs::write(dir.join("deny.txt"), "").expect("deny file");
    serve.signal("HUP").await;
    let kept = serve
        .wait_for_log("nothing reloaded, keeping the old configuration whole")
        .await;
    assert!(kept.contains("crl.pem"), "{kept}");
    let carol = as_client(dir, addr, "carol").await;
    assert_eq!(carol.presented(), first_cert, "the old certificate stays");
    let mut dave = as_client(dir, addr, "dave").await;
    assert_eq!(
        dave.line().await,
        "ERROR access denied for \"dave\"",
        "the old deny list stays"
    );
    drop(carol);

    // Repaired: the new certificate reaches new connections, while alice's
    // earlier session keeps chatting.
    std::fs::remove_file(dir.join("certs/crl.pem")).expect("remove");
    ok(dir, &["certs", "revoke", "bob"]).await;
    serve.signal("HUP").await;
    serve
        .wait_for_log("new connections get the reloaded certificate")
        .await;
    let mut carol = as_client(dir, addr, "carol").await;
    assert_eq!(carol.presented(), second_cert);
    carol.register("carol").await;
    alice.expect("carol joined!").await;
    alice.send("still here").await;
    alice.expect("alice: still here").await;
    carol.expect("alice: still here").await;

    // An expired certificate is not reloaded either.
    expired_server_pair(dir, "certs/server.pem", "certs/server-key.pem");
    serve.signal("HUP").await;
    let kept = serve
        .wait_for_log("nothing reloaded, keeping the old configuration whole")
        .await;
    assert!(kept.contains("expired on"), "{kept}");
    let late = as_client(dir, addr, "carol").await;
    assert_eq!(late.presented(), second_cert);
}

#[tokio::test]
async fn connect_presents_its_certificate_and_takes_its_name() {
    let tmp = certs_folder(&["alice"]).await;
    let dir = tmp.path();
    let serve = Serve::start(dir, &["--client-ca", "certs/ca.pem"]).await;

    let mut client = Running::start(
        dir,
        &[
            "connect",
            "--addr",
            &serve.addr,
            "--cert",
            "certs/clients/alice.pem",
            "--key",
            "certs/clients/alice-key.pem",
        ],
    );
    assert_eq!(client.line().await, "alice joined!");
    let (success, said) = client.end().await;
    assert!(success, "{said}");

    // Without a certificate, connect says what is missing.
    let args = ["connect", "--addr", &serve.addr, "--nick", "mallory"];
    let out = run(dir, &args, &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server requires a client certificate: use --cert and --key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_running_out_is_warned_about_and_an_expired_one_refused() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    ok(dir, &["gen-certs", "--days", "10"]).await;
    ok(dir, &["gen-certs", "client", "alice", "--days", "5"]).await;
    let serve = Serve::start(dir, &[]).await;
    let args = [
        "connect",
        "--addr",
        &serve.addr,
        "--nick",
        "alice",
        "--cert",
        "certs/clients/alice.pem",
        "--key",
        "certs/clients/alice-key.pem",
    ];
    let out = run(dir, &args, &[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: the server's certificate expires in 9 days")
            || err.contains("warning: the server's certificate expires in 10 days"),
        "{err}"
    );
    assert!(
        err.contains("warning: your certificate certs/clients/alice.pem expires in 4 days")
            || err.contains("warning: your certificate certs/clients/alice.pem expires in 5 days"),
        "{err}"
    );
    let log = serve.kill_and_log().await;
    assert!(
        log.contains("the server certificate certs/server.pem expires in"),
        "{log}"
    );

    // An expired server certificate, made here with the CA: serve refuses
    // to start and names the dates.
    let not_after = expired_server_pair(dir, "old.pem", "old-key.pem");
    let args = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--cert",
        "old.pem",
        "--key",
        "old-key.pem",
    ];
    let out = run(dir, &args, &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server certificate old.pem expired on")
            && err.contains(&certs::format_date(&not_after)),
        "{err}"
    );
}

#[tokio::test]
async fn connect_refuses_to_present_its_certificate_outside_its_dates() {
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    let serve = Serve::start(dir, &["--client-ca", "certs/ca.pem"]).await;
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    for (cert, key, from, until, says) in [
        (
            "old.pem",
            "old-key.pem",
            now - 30 * day,
            now - 2 * day,
            "expired on",
        ),
        (
            "early.pem",
            "early-key.pem",
            now + 2 * day,
            now + 30 * day,
            "is not valid yet",
        ),
    ] {
        client_pair_valid(dir, cert, key, from, until);
        let (status, err) = connect_with(dir, &serve.addr, &["--cert", cert, "--key", key]).await;
        assert!(!status.success(), "{err}");
        assert!(
            err.contains(&format!("your certificate {cert} {says}")),
            "{err}"
        );
        assert!(err.contains(&certs::format_date(&from)), "{err}");
        assert!(err.contains(&certs::format_date(&until)), "{err}");
        // Refused before any handshake: the server never sees it, and the
        // refusal is the error, not a warning.
        assert!(!err.contains("connected to"), "{err}");
        assert!(!err.contains("warning"), "{err}");
    }
}

#[tokio::test]
async fn connect_says_when_the_server_refuses_its_certificate_as_revoked() {
    let tmp = certs_folder(&["bob"]).await;
    let dir = tmp.path();
    ok(dir, &["certs", "revoke", "bob"]).await;
    let serve = Serve::start(dir, &["--client-ca", "certs/ca.pem"]).await;
    let (status, err) = connect_with(
        dir,
        &serve.addr,
        &[
            "--cert",
            "certs/clients/bob.pem",
            "--key",
            "certs/clients/bob-key.pem",
        ],
    )
    .await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("error: the server refused your certificate: it has been revoked"),
        "{err}"
    );
}

#[tokio::test]
async fn openssl_s_client_joins_with_a_client_certificate() {
    let tmp = certs_folder(&["alice"]).await;
    let dir = tmp.path();
    let serve = Serve::start(dir, &["--client-ca", "certs/ca.pem"]).await;
    // The README's command.
    let mut openssl = Command::new("openssl")
        .args(["s_client", "-connect", &serve.addr])
        .args(["-CAfile", "certs/ca.pem", "-verify_return_error", "-quiet"])
        .args(["-cert", "certs/clients/alice.pem"])
        .args(["-key", "certs/clients/alice-key.pem"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl runs (CI installs it)");
    let mut stdin = openssl.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(openssl.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .expect("a line in time")
            .expect("read")
    };
    assert_eq!(next().await.as_deref(), Some("NICK"));
    stdin.write_all(b"alice\n").await.expect("nickname");
    assert_eq!(next().await.as_deref(), Some("alice joined!"));
    assert_eq!(next().await.as_deref(), Some("Connected to server!"));
    stdin
        .write_all(b"hello from openssl\n")
        .await
        .expect("line");
    assert_eq!(next().await.as_deref(), Some("alice: hello from openssl"));
}
