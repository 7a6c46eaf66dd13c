//! Operators bound to client certificates (`serve --client-ca ...
//! --operators FILE`): `/kick`, `/ban`, `/mute`, `/unmute` and `/topic`
//! over real mutual TLS, a non-operator refused, an operator's right gone
//! at a reload or with its certificate, and `--operators` refused without
//! client certificates.

use crate::harness::{
    Client, TestCerts, TlsClient, WAIT, join_as_holder as join, operators_file, start_with_access,
};
use chatroom::certs;
use chatroom::server::RunningServer;
use chatroom::server::access::{Access, AccessFiles};
use std::path::PathBuf;
use std::sync::Arc;

/// A server with client certificates from `certs`' CA and the operators
/// listed in the file it returns.
async fn start(certs: &TestCerts, operators: &[&str]) -> (RunningServer, Arc<Access>, PathBuf) {
    start_denying(certs, operators, None).await
}

/// [`start`], with a `--deny-file` too.
async fn start_denying(
    certs: &TestCerts,
    operators: &[&str],
    deny_file: Option<PathBuf>,
) -> (RunningServer, Arc<Access>, PathBuf) {
    let file = operators_file(certs, operators);
    let files = AccessFiles {
        operators: Some(file.clone()),
        deny_file,
        ..AccessFiles::default()
    };
    let (server, access) = start_with_access(certs, files).await;
    (server, access, file)
}

#[tokio::test]
async fn an_operator_kicks_from_the_room_and_every_channel_and_nobody_else_can() {
    let certs = TestCerts::new();
    let (server, _access, _file) = start(&certs, &["alice", "dave"]).await;
    let mut alice = join(&server, &certs, "alice").await;
    let mut bob = join(&server, &certs, "bob").await;
    let mut carol = join(&server, &certs, "carol").await;
    let mut dave = join(&server, &certs, "dave").await;
    alice.until("dave joined!", WAIT).await;
    carol.expect("dave joined!").await;
    for client in [&mut alice, &mut bob] {
        client.send("/join #ops").await;
    }
    alice.expect("#ops alice joined!").await;
    alice.expect("[join] #ops: 1 here").await;
    alice.expect("#ops bob joined!").await;
    bob.until("[join] #ops: 2 here", WAIT).await;

    // Not an operator: nothing happens.
    carol.send("/kick bob").await;
    carol.expect("ERROR not an operator").await;
    // An operator cannot put out another.
    alice.send("/kick dave").await;
    alice
        .expect("ERROR an operator cannot be kicked, banned or muted")
        .await;
    alice.send("/kick nobody").await;
    alice.expect("ERROR no such nickname \"nobody\"").await;
    alice.send("/ban bob").await;
    alice
        .expect("ERROR /ban needs --deny-file: the server has no file to keep the name in")
        .await;

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
    assert!(
        last.iter()
            .all(|l| l.ends_with(" joined!") || l.contains("kicked by alice")),
        "{last:?}"
    );
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

#[tokio::test]
async fn mute_unmute_topic_and_ban_as_an_operator_and_not_otherwise() {
    let certs = TestCerts::new();
    let deny_file = certs.path("denied.txt");
    std::fs::write(&deny_file, "# banned names\n").expect("deny file");
    let (server, _access, operators) =
        start_denying(&certs, &["alice"], Some(deny_file.clone())).await;
    let mut alice = join(&server, &certs, "alice").await;
    let mut bob = join(&server, &certs, "bob").await;
    let mut carol = join(&server, &certs, "carol").await;
    alice.until("carol joined!", WAIT).await;
    bob.expect("carol joined!").await;
    // Anyone may ask for the topic; only an operator may set it.
    carol.send("/topic").await;
    carol.expect("[topic] #lobby has no topic").await;
    for (command, refusal) in [
        ("/mute bob 10m", "ERROR not an operator"),
        ("/topic mine now", "ERROR not an operator"),
        ("/ban bob", "ERROR not an operator"),
        ("/unmute bob", "ERROR not an operator"),
    ] {
        carol.send(command).await;
        carol.expect(refusal).await;
    }

    mute_bob_for_ten_minutes(&mut alice, &mut bob, "").await;
    // Channel commands still work; speaking in a channel does not.
    for client in [&mut alice, &mut bob] {
        client.send("/join #ops").await;
    }
    alice.until("#ops bob joined!", WAIT).await;
    bob.until("[join] #ops: 2 here", WAIT).await;
    bob.send("in #ops then").await;
    assert!(bob.line().await.starts_with("ERROR you are muted until "));
    // Lifted: said where bob is now.
    alice.send("/unmute bob").await;
    alice.expect("[mute] bob may speak again").await;
    alice.expect("#ops bob was unmuted by alice").await;
    bob.expect("#ops bob was unmuted by alice").await;
    bob.send("thanks").await;
    bob.expect("#ops bob: thanks").await;
    alice.expect("#ops bob: thanks").await;

    // A topic for #ops: its members see it set, a newcomer sees it.
    alice.send(&format!("/topic {}", "x".repeat(301))).await;
    alice.expect("ERROR a topic is at most 300 bytes").await;
    alice.send("/topic deploy at noon").await;
    alice.expect("[topic] set for #ops").await;
    alice
        .expect("[topic] #ops: deploy at noon set by alice")
        .await;
    bob.expect("[topic] #ops: deploy at noon set by alice")
        .await;
    carol.send("/join #ops").await;
    // (She saw bob's mute in the lobby, where he was then.)
    let before = carol.until("#ops carol joined!", WAIT).await;
    assert_eq!(before, ["bob was muted by alice for 10m"]);
    carol.expect("[join] #ops: 3 here").await;
    carol.expect("[topic] #ops: deploy at noon").await;
    carol.send("/topic").await;
    carol.expect("[topic] #ops: deploy at noon").await;

    // A ban puts out, keeps the name in --deny-file, and holds.
    alice.send("/ban carol trolling").await;
    let last = carol.until_closed().await;
    assert_eq!(
        last.last().map(String::as_str),
        Some("ERROR kicked by alice: trolling"),
        "{last:?}"
    );
    alice.until("[ban] carol is out", WAIT).await;
    let denied = std::fs::read_to_string(&deny_file).expect("deny file");
    assert!(
        denied
            .lines()
            .any(|l| l.starts_with("carol  # banned by alice on ") && l.ends_with(": trolling")),
        "{denied}"
    );
    assert_refused(&server, &certs, "carol").await;
    // After a restart, from the file.
    let (again, _access, _) = start_denying(&certs, &["alice"], Some(deny_file.clone())).await;
    assert_refused(&again, &certs, "carol").await;
    drop(operators);
}

/// `name`'s certificate no longer joins: the server says why and closes.
async fn assert_refused(server: &RunningServer, certs: &TestCerts, name: &str) {
    let (cert, key) = certs.issued(name);
    assert!(
        cert.exists() && key.exists(),
        "{name}'s certificate was issued"
    );
    let mut client = Client::tls(server.addr, certs.client_tls_as(&cert, &key)).await;
    let lines = client.until_closed().await;
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("ERROR access denied for \"{name}\"")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l == "NICK"), "{lines:?}");
}

#[tokio::test]
async fn an_operator_whose_certificate_is_revoked_loses_the_right_with_the_room() {
    let certs = TestCerts::new();
    let (server, access, _file) = start(&certs, &["alice"]).await;
    let mut alice = join(&server, &certs, "alice").await;
    let mut bob = join(&server, &certs, "bob").await;
    alice.expect("bob joined!").await;
    certs::revoke::revoke(&certs.path(""), "alice").expect("certs revoke alice");
    access.install(access.prepare().expect("the new CRL loads"));
    // Put out at once, before it could use the right again.
    alice.expect("ERROR certificate revoked").await;
    assert_eq!(alice.next_line().await, None, "then disconnected");
    bob.expect("alice left!").await;
    // Still listed in --operators, yet its certificate no longer joins.
    let (cert, key) = certs.issued("alice");
    if let Ok(mut again) = Client::try_tls(server.addr, certs.client_tls_as(&cert, &key)).await {
        let lines = again.until_closed().await;
        assert!(!lines.iter().any(|l| l == "NICK"), "{lines:?}");
    }
}

/// Operator alice mutes bob for 10 minutes where both are (`prefix`: ""
/// in the lobby, "#ops " in a channel): alice is told until when, the
/// channel hears it, and bob's next line is refused with the time.
pub async fn mute_bob_for_ten_minutes(alice: &mut TlsClient, bob: &mut TlsClient, prefix: &str) {
    let notice = format!("{prefix}bob was muted by alice for 10m");
    alice.send("/mute bob 10m").await;
    let answer = alice.until(&notice, WAIT).await;
    assert!(
        answer
            .iter()
            .any(|l| l.starts_with("[mute] bob is muted until ")),
        "{answer:?}"
    );
    bob.expect(&notice).await;
    bob.send("let me speak").await;
    let refused = bob.line().await;
    assert!(
        refused.starts_with("ERROR you are muted until "),
        "{refused}"
    );
    assert!(refused.ends_with(" UTC"), "{refused}");
}
