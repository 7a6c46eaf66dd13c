//! Channels beside the default room (`/join #ops`, `/part`, `/rooms`),
//! end to end over real TLS on loopback: each channel its own order, no
//! line crossing into another, names folded as nicknames are, limits, and
//! leaving the server leaving every channel.

use crate::harness::{TestServer, TlsClient, WAIT};

/// Sends `/join NAME` and reads the answer to the asker.
async fn join(client: &mut TlsClient, name: &str) -> String {
    client.send(&format!("/join {name}")).await;
    client.line().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_has_its_own_order_and_no_line_crosses() {
    const EACH: usize = 40;
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    let mut carol = server.join("carol").await;
    let mut dave = server.join("dave").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        client.until("dave joined!", WAIT).await;
    }
    assert_eq!(join(&mut alice, "#ops").await, "#ops alice joined!");
    alice.expect("[join] #ops: 1 here").await;
    assert_eq!(join(&mut bob, "#ops").await, "#ops bob joined!");
    bob.expect("[join] #ops: 2 here").await;
    alice.expect("#ops bob joined!").await;
    assert_eq!(join(&mut bob, "#dev").await, "#dev bob joined!");
    bob.expect("[join] #dev: 1 here").await;
    assert_eq!(join(&mut carol, "#dev").await, "#dev carol joined!");
    carol.expect("[join] #dev: 2 here").await;
    bob.expect("#dev carol joined!").await;
    // Bob's current channel is #dev: back to #ops to speak there.
    assert_eq!(join(&mut bob, "#ops").await, "[join] #ops: 2 here");

    // Alice and Bob in #ops, Carol in #dev, Dave in the lobby: all at once.
    let (a, b, c, d) = tokio::join!(
        say_lines(&mut alice, "a", EACH),
        say_lines(&mut bob, "b", EACH),
        say_lines(&mut carol, "c", EACH),
        say_lines(&mut dave, "d", EACH),
    );
    let _ = (a, b, c, d);
    let ops_alice = transcript(
        &mut alice,
        &["#ops "],
        &["#ops alice: a", "#ops bob: b"],
        2 * EACH,
    )
    .await;
    let ops_bob = transcript(
        &mut bob,
        &["#ops ", "#dev "],
        &["#ops alice: a", "#ops bob: b"],
        2 * EACH,
    )
    .await;
    assert_eq!(ops_alice, ops_bob, "one order in #ops for its members");
    let dev = transcript(&mut carol, &["#dev "], &["#dev carol: c"], EACH).await;
    assert_eq!(dev.len(), EACH);
    let lobby = transcript(&mut dave, &[], &["dave: d"], EACH).await;
    assert_eq!(lobby.len(), EACH);
}

async fn say_lines(client: &mut TlsClient, tag: &str, n: usize) {
    for i in 0..n {
        client.send(&format!("{tag}{i}")).await;
    }
}

/// Reads `client`'s lines until it has `n` that start with one of `kinds`;
/// fails on a line of any channel but those in `member_of` (every
/// participant is in the lobby, whose lines carry no `#`: those reach
/// everyone).
async fn transcript(
    client: &mut TlsClient,
    member_of: &[&str],
    kinds: &[&str],
    n: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < n {
        let line = tokio::time::timeout_at(deadline, client.line())
            .await
            .expect("the channel's lines in time");
        assert!(
            !line.starts_with('#') || member_of.iter().any(|c| line.starts_with(c)),
            "{line:?} reached a member of {member_of:?} only"
        );
        if kinds.iter().any(|kind| line.starts_with(kind)) {
            seen.push(line);
        }
    }
    seen
}

#[tokio::test]
async fn part_rooms_and_list_speak_of_the_current_channel() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    assert_eq!(join(&mut alice, "#ops").await, "#ops alice joined!");
    alice.expect("[join] #ops: 1 here").await;
    // A lookalike name is the same channel, spelled as its first member did.
    assert_eq!(join(&mut bob, "#0ps").await, "#ops bob joined!");
    bob.expect("[join] #ops: 2 here").await;
    alice.expect("#ops bob joined!").await;
    assert_eq!(join(&mut bob, "#dev").await, "#dev bob joined!");
    bob.expect("[join] #dev: 1 here").await;

    bob.send("/rooms").await;
    bob.expect("[rooms] #lobby 2 here").await;
    bob.expect("[rooms] #dev 1 here (current)").await;
    bob.expect("[rooms] #ops 2 here").await;
    bob.send("/list").await;
    bob.expect("[list] 1 here: bob").await;
    alice.send("/list").await;
    alice.expect("[list] 2 here: alice, bob").await;
    alice.send("/me waves").await;
    alice.expect("#ops * alice waves").await;
    bob.expect("#ops * alice waves").await;

    // Leaving the current channel falls back to the lobby.
    bob.send("/part").await;
    bob.expect("[part] #dev: you left it; now in #lobby").await;
    bob.send("in the lobby").await;
    bob.expect("bob: in the lobby").await;
    alice.expect("bob: in the lobby").await;
    bob.send("/part #ops").await;
    bob.expect("[part] #ops: you left it; now in #lobby").await;
    alice.expect("#ops bob left!").await;
    for (command, refusal) in [
        (
            "/part",
            "ERROR #lobby cannot be left: /quit leaves the server",
        ),
        (
            "/part #lobby",
            "ERROR #lobby cannot be left: /quit leaves the server",
        ),
        ("/part #ops", "ERROR you are not in #ops"),
        (
            "/join ops",
            "ERROR channel name must be # then 1 to 32 of a-z, 0-9, _ and -, like #ops",
        ),
        (
            "/join #Ops!",
            "ERROR channel name must be # then 1 to 32 of a-z, 0-9, _ and -, like #ops",
        ),
        ("/join", "ERROR usage: /join #NAME"),
    ] {
        bob.send(command).await;
        bob.expect(refusal).await;
    }
    // #dev was forgotten with its last member.
    bob.send("/rooms").await;
    bob.expect("[rooms] #lobby 2 here (current)").await;
    bob.expect("[rooms] #ops 1 here").await;
    bob.send("/list").await;
    bob.expect("[list] 2 here: alice, bob").await;
}

#[tokio::test]
async fn leaving_the_server_leaves_every_channel() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    for name in ["#ops", "#dev"] {
        assert_eq!(
            join(&mut alice, name).await,
            format!("{name} alice joined!")
        );
        alice.line().await;
        assert_eq!(join(&mut bob, name).await, format!("{name} bob joined!"));
        bob.line().await;
        alice.expect(&format!("{name} bob joined!")).await;
    }
    bob.send("/quit lunch").await;
    let mut seen = vec![alice.line().await, alice.line().await, alice.line().await];
    seen.sort();
    assert_eq!(
        seen,
        [
            "#dev bob left! (lunch)",
            "#ops bob left! (lunch)",
            "bob left! (lunch)"
        ]
    );
}

#[tokio::test]
async fn the_limits_refuse_with_a_clear_error() {
    let server = TestServer::start_with(|settings| {
        settings.max_channels = 2;
        settings.max_joined = 1;
    })
    .await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    assert_eq!(join(&mut alice, "#one").await, "#one alice joined!");
    alice.line().await;
    assert_eq!(
        join(&mut alice, "#two").await,
        "ERROR you are in 1 channels, the most one may join: /part one first"
    );
    assert_eq!(join(&mut bob, "#two").await, "#two bob joined!");
    bob.line().await;
    let mut carol = server.join("carol").await;
    assert_eq!(join(&mut carol, "#one").await, "#one carol joined!");
    carol.line().await;
    alice.expect("carol joined!").await;
    alice.expect("#one carol joined!").await;
    // #one stays while Carol is in it: two channels still.
    alice.send("/part").await;
    alice.line().await;
    assert_eq!(
        join(&mut alice, "#three").await,
        "ERROR this server has 2 channels, the most it keeps: join one of them (/rooms)"
    );
    // A channel already there may still be joined.
    assert_eq!(join(&mut alice, "#two").await, "#two alice joined!");
}

#[tokio::test]
async fn with_history_a_newcomer_to_a_channel_gets_that_channels_last_lines() {
    let server = TestServer::start_with(|settings| settings.history_lines = 2).await;
    let mut alice = server.join("alice").await;
    assert_eq!(join(&mut alice, "#ops").await, "#ops alice joined!");
    alice.expect("[join] #ops: 1 here").await;
    for line in ["one", "two", "three"] {
        alice.send(line).await;
        alice.expect(&format!("#ops alice: {line}")).await;
    }
    alice.send("/join #lobby").await;
    alice.expect("[join] #lobby: 1 here").await;
    alice.send("in the lobby").await;
    alice.expect("alice: in the lobby").await;
    let mut bob = server.join("bob").await;
    bob.expect("[history] alice: in the lobby").await;
    assert_eq!(join(&mut bob, "#0ps").await, "#ops bob joined!");
    bob.expect("[join] #ops: 2 here").await;
    bob.expect("[history] #ops alice: two").await;
    bob.expect("[history] #ops alice: three").await;
    bob.send("/join #dev").await;
    bob.expect("#dev bob joined!").await;
    bob.expect("[join] #dev: 1 here").await;
    // Nothing of #ops or the lobby: the next line is bob's own.
    bob.send("first in dev").await;
    bob.expect("#dev bob: first in dev").await;
}
