//! Operators bound to client certificates (`serve --client-ca ...
//! --operators FILE`): `/kick` over real mutual TLS, a non-operator
//! refused, an operator's right gone at a reload, and `--operators`
//! refused without client certificates.

use crate::harness::{Client, TestCerts, TlsClient, loopback};
use chatroom::certs;
use chatroom::server::access::{Access, AccessFiles};
use chatroom::server::{RunningServer, Settings};
use chatroom::tls;
use std::path::PathBuf;
use std::sync::Arc;

/// A server with client certificates from `certs`' CA and the operators
/// listed in the file it returns.
async fn start(certs: &TestCerts, operators: &[&str]) -> (RunningServer, Arc<Access>, PathBuf) {
    let file = certs.path("operators.txt");
    let mut listed = String::from("# who may /kick\n");
    for name in operators {
        listed.push_str(&format!("{name}\n"));
    }
    std::fs::write(&file, listed).expect("operators file");
    let access = Access::load(AccessFiles {
        client_ca: Some(certs.ca()),
        crl_if_present: Some(certs.path(certs::CRL)),
        operators: Some(file.clone()),
        ..AccessFiles::default()
    })
    .expect("access policy");
    let (config, _) = tls::reloadable_server_config_with(
        &certs.path(certs::SERVER_CERT),
        &certs.path(certs::SERVER_KEY),
        access.client_verifier(),
        tls::TlsVersion::Any,
    )
    .expect("server TLS config");
    let mut settings = Settings::new(Some(config));
    settings.limits.rate = None;
    settings.access = Some(access.clone());
    let server = RunningServer::start(loopback(), settings)
        .await
        .expect("server starts");
    (server, access, file)
}

async fn join(server: &RunningServer, certs: &TestCerts, name: &str) -> TlsClient {
    let (cert, key) = certs.client(name);
    let mut client = Client::tls(server.addr, certs.client_tls_as(&cert, &key)).await;
    client.register(name).await;
    client
}

#[tokio::test]
async fn an_operator_kicks_from_the_room_and_every_channel_and_nobody_else_can() {
    let certs = TestCerts::new();
    let (server, _access, _file) = start(&certs, &["alice", "dave"]).await;
    let mut alice = join(&server, &certs, "alice").await;
    let mut bob = join(&server, &certs, "bob").await;
    let mut carol = join(&server, &certs, "carol").await;
    let mut dave = join(&server, &certs, "dave").await;
    alice.until("dave joined!", crate::harness::WAIT).await;
    carol.expect("dave joined!").await;
    for client in [&mut alice, &mut bob] {
        client.send("/join #ops").await;
    }
    alice.expect("#ops alice joined!").await;
    alice.expect("[join] #ops: 1 here").await;
    alice.expect("#ops bob joined!").await;
    bob.until("[join] #ops: 2 here", crate::harness::WAIT).await;

    // Not an operator: nothing happens.
    carol.send("/kick bob").await;
    carol.expect("ERROR not an operator").await;
    // An operator cannot put out another.
    alice.send("/kick dave").await;
    alice.expect("ERROR an operator cannot be kicked").await;
    alice.send("/kick nobody").await;
    alice.expect("ERROR no such nickname \"nobody\"").await;

    // Found as nicknames are, spelled as its owner does.
    alice.send("/kick B0B spamming the channel").await;
    // Its last line says why, then its connection ends (it may see the
    // room's lines about it just before, as the others do).
    let last = bob.until_closed().await;
    assert_eq!(
        last.last().map(String::as_str),
        Some("ERROR kicked by alice: spamming the channel"),
        "{last:?}"
    );
    assert!(last.len() <= 3, "{last:?}");
    let mut seen = vec![alice.line().await, alice.line().await, alice.line().await];
    seen.sort();
    assert_eq!(
        seen,
        [
            "#ops bob was kicked by alice (spamming the channel)",
            "[kick] B0B is out",
            "bob was kicked by alice (spamming the channel)",
        ]
    );
    carol
        .expect("bob was kicked by alice (spamming the channel)")
        .await;
    dave.expect("bob was kicked by alice (spamming the channel)")
        .await;
    carol.send("/list").await;
    carol.expect("[list] 3 here: alice, carol, dave").await;
    alice.send("/list").await;
    alice.expect("[list] 1 here: alice").await;
}

#[tokio::test]
async fn a_reload_that_drops_an_operator_takes_the_right_at_once() {
    let certs = TestCerts::new();
    let (server, access, file) = start(&certs, &["alice"]).await;
    let mut alice = join(&server, &certs, "alice").await;
    let mut bob = join(&server, &certs, "bob").await;
    alice.expect("bob joined!").await;
    std::fs::write(&file, "# nobody\n").expect("rewrite");
    access.install(access.prepare().expect("the new policy loads"));
    alice.send("/kick bob").await;
    alice.expect("ERROR not an operator").await;
    bob.send("still here").await;
    bob.expect("bob: still here").await;
    // A file that cannot be read is not installed: the old list stays.
    std::fs::remove_file(&file).expect("rm");
    assert!(access.prepare().is_err());
}

#[tokio::test]
async fn operators_need_client_certificates() {
    let certs = TestCerts::new();
    let file = certs.path("operators.txt");
    std::fs::write(&file, "alice\n").expect("operators file");
    let refused = Access::load(AccessFiles {
        operators: Some(file.clone()),
        ..AccessFiles::default()
    })
    .expect_err("operators without client certificates");
    assert!(
        format!("{refused:#}").contains("needs --client-ca"),
        "{refused:#}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatroom"))
        .args(["serve", "--operators"])
        .arg(&file)
        .output()
        .await
        .expect("serve runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--client-ca"), "{stderr}");
}
