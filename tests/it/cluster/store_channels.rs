//! Channels on nodes with `serve --cluster --data DIR`, with a real
//! nats-server and the built binary: every node stores every channel's
//! lines from the room's stream, `/search` and `/history` in a channel
//! answer from its own lines, a channel's newcomer gets its history from
//! the node's store, `history export --channel` reads a node's files, a
//! node that was stopped catches up on the channel lines it missed, a
//! node that starts stores a channel under its first member's spelling,
//! and operators' actions in a channel are stored as its `moderation`
//! lines.

use super::channels::{member, operator_args};
use super::store::{join_recorded, recording_node, stop};
use crate::harness::cli;
use crate::harness::nats::node_with;
use crate::harness::{NatsServer, Serve, TestCerts, TlsClient, WAIT};
use std::path::Path;

/// Sends `/join NAME` and waits for its `[join]` line, `joined`; the
/// lines before it.
async fn join_channel(client: &mut TlsClient, name: &str, joined: &str) -> Vec<String> {
    client.send(&format!("/join {name}")).await;
    client.until(joined, WAIT).await
}

#[tokio::test]
async fn each_channel_is_searched_and_exported_from_its_own_lines_on_another_node() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let tmp = tempfile::tempdir().expect("temp");
    let (data_one, data_two) = (tmp.path().join("one"), tmp.path().join("two"));
    let (one, two) = tokio::join!(
        recording_node(&certs, &nats, "one", &data_one, &[]),
        recording_node(&certs, &nats, "two", &data_two, &[])
    );
    let (mut alice, _) = join_recorded(&certs, &one, "Alice").await;
    let (mut bob, _) = join_recorded(&certs, &two, "Bob").await;
    let (mut dave, _) = join_recorded(&certs, &two, "Dave").await;
    alice.until("Dave joined!", WAIT).await;
    bob.until("Dave joined!", WAIT).await;
    join_channel(&mut alice, "#ops", "[join] #ops: 1 here").await;
    let before = join_channel(&mut bob, "#ops", "[join] #ops: 2 here").await;
    assert_eq!(before, ["#ops Bob joined!"]);
    alice.until("#ops Bob joined!", WAIT).await;

    alice.send("ops zanzibar 1").await;
    alice.send("ops zanzibar 2").await;
    dave.send("lobby zanzibar").await;
    bob.until("#ops Alice: ops zanzibar 2", WAIT).await;
    dave.until("Dave: lobby zanzibar", WAIT).await;

    // On node two, each channel's search finds its own lines alone.
    bob.send("/search zanzibar").await;
    // Bob reads the lobby's lines too: Dave's may come meanwhile.
    let found = bob.until("[search] 2 matches", WAIT).await;
    let found: Vec<_> = found
        .into_iter()
        .filter(|l| l.starts_with("[search] "))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].ends_with(" #ops Alice: ops zanzibar 2"),
        "{found:?}"
    );
    assert!(
        found[1].ends_with(" #ops Alice: ops zanzibar 1"),
        "{found:?}"
    );
    dave.send("/search zanzibar").await;
    let found = dave.until("[search] 1 match", WAIT).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with(" Dave: lobby zanzibar"), "{found:?}");

    // A newcomer to #ops on node two gets #ops's lines from its store.
    let (mut carol, _) = join_recorded(&certs, &two, "Carol").await;
    let before = join_channel(&mut carol, "#0ps", "[join] #ops: 3 here").await;
    assert_eq!(before, ["#ops Carol joined!"]);
    assert_eq!(
        carol.lines(2).await,
        [
            "[history] #ops Alice: ops zanzibar 1",
            "[history] #ops Alice: ops zanzibar 2",
        ]
    );
    carol.send("/history").await;
    carol.send("/search lobby").await;
    carol.expect("[search] no matches").await;

    // Offline, on node two's files while it runs: #ops's lines in order.
    let ops = cli::exported_with(&data_two, &["--channel", "#ops"]).await;
    assert_eq!(
        ops,
        [
            "Alice joined!",
            "Bob joined!",
            "Alice: ops zanzibar 1",
            "Alice: ops zanzibar 2",
            "Carol joined!",
        ]
    );
    let lobby = cli::exported_with(&data_two, &["--channel", "#lobby"]).await;
    assert!(
        lobby.contains(&"Dave: lobby zanzibar".to_owned()),
        "{lobby:?}"
    );
    assert!(
        !lobby.iter().any(|l| l.contains("ops zanzibar")),
        "{lobby:?}"
    );
}

#[tokio::test]
async fn a_node_back_from_a_stop_has_the_channel_lines_it_missed_once() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("two");
    let one = node_with(&certs, &nats, "one", &[]).await;
    let two = recording_node(&certs, &nats, "two", &data, &[]).await;
    let mut alice = crate::harness::nats::join(&certs, &one, "Alice").await;
    let (mut bob, _) = join_recorded(&certs, &two, "Bob").await;
    alice.until("Bob joined!", WAIT).await;
    join_channel(&mut alice, "#ops", "[join] #ops: 1 here").await;
    join_channel(&mut bob, "#ops", "[join] #ops: 2 here").await;
    alice.until("#ops Bob joined!", WAIT).await;
    alice.send("before").await;
    bob.until("#ops Alice: before", WAIT).await;
    bob.send("/quit").await;
    alice.until("#ops Bob left!", WAIT).await;
    stop(two).await;

    for n in 1..=3 {
        alice.send(&format!("missed {n}")).await;
        alice.until(&format!("#ops Alice: missed {n}"), WAIT).await;
    }
    let two = recording_node(&certs, &nats, "two", &data, &[]).await;
    let (mut carol, _) = join_recorded(&certs, &two, "Carol").await;
    join_channel(&mut carol, "#ops", "[join] #ops: 2 here").await;
    assert_eq!(
        carol.lines(4).await,
        [
            "[history] #ops Alice: before",
            "[history] #ops Alice: missed 1",
            "[history] #ops Alice: missed 2",
            "[history] #ops Alice: missed 3",
        ]
    );
    // Read while node two runs: the history came once the store held
    // Carol's `joined!`, and with it every line before it, each once.
    assert_eq!(
        cli::exported_with(&data, &["--channel", "#ops"]).await,
        [
            "Alice joined!",
            "Bob joined!",
            "Alice: before",
            "Bob left!",
            "Alice: missed 1",
            "Alice: missed 2",
            "Alice: missed 3",
            "Carol joined!",
        ]
    );
    // Nothing more came with the history: the next line is this one.
    carol.send("and now").await;
    carol.expect("#ops Carol: and now").await;
}

#[tokio::test]
async fn a_node_stopped_keeps_the_last_lines_of_every_channel_its_participants_were_in() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("one");
    let one = recording_node(&certs, &nats, "one", &data, &[]).await;
    let (mut alice, _) = join_recorded(&certs, &one, "Alice").await;
    join_channel(&mut alice, "#ops", "[join] #ops: 1 here").await;
    join_channel(&mut alice, "#dev", "[join] #dev: 1 here").await;
    alice.send("shipping").await;
    alice.until("#dev Alice: shipping", WAIT).await;

    // Her `left!` lines, one for the lobby and one per channel, are sent
    // as the node stops; the node reads them back into its store before
    // it is gone, not only when it starts again.
    stop(one).await;
    assert_eq!(
        cli::exported_with(&data, &["--channel", "#lobby"]).await,
        ["Alice joined!", "Alice left!"]
    );
    assert_eq!(
        cli::exported_with(&data, &["--channel", "#ops"]).await,
        ["Alice joined!", "Alice left!"]
    );
    assert_eq!(
        cli::exported_with(&data, &["--channel", "#dev"]).await,
        ["Alice joined!", "Alice: shipping", "Alice left!"]
    );
}

/// A node keeping its lines in `data`, whose operators are `operators`.
async fn operators_node(
    certs: &TestCerts,
    nats: &NatsServer,
    name: &str,
    data: &Path,
    operators: &[&str],
) -> Serve {
    let args = operator_args(certs, name, operators);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    recording_node(certs, nats, name, data, &args).await
}

#[tokio::test]
async fn operators_actions_in_a_channel_are_stored_as_moderation_of_that_channel() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let tmp = tempfile::tempdir().expect("temp");
    let (data_one, data_two) = (tmp.path().join("one"), tmp.path().join("two"));
    let (one, two) = tokio::join!(
        operators_node(&certs, &nats, "one", &data_one, &["alice"]),
        operators_node(&certs, &nats, "two", &data_two, &["alice"]),
    );
    let mut alice = member(&certs, &one, "alice").await;
    let mut bob = member(&certs, &two, "bob").await;
    let mut carol = member(&certs, &two, "carol").await;
    alice.until("carol joined!", WAIT).await;
    join_channel(&mut alice, "#ops", "[join] #ops: 1 here").await;
    join_channel(&mut bob, "#ops", "[join] #ops: 2 here").await;
    join_channel(&mut carol, "#ops", "[join] #ops: 3 here").await;
    alice.until("#ops carol joined!", WAIT).await;

    alice.send("/topic release day").await;
    carol
        .until("[topic] #ops: release day set by alice", WAIT)
        .await;
    alice.send("/mute bob 10m").await;
    carol
        .until("#ops bob was muted by alice for 10m", WAIT)
        .await;
    alice.send("/unmute bob").await;
    carol.until("#ops bob was unmuted by alice", WAIT).await;
    alice.send("/kick bob spam").await;
    bob.until_closed().await;
    carol
        .until("#ops bob was kicked by alice (spam)", WAIT)
        .await;
    // Answered once node two's store holds every line it has read.
    carol.send("/search spam").await;
    carol.until("[search] no matches", WAIT).await;

    let export = cli::history(&data_two, &["export", "--channel", "#ops"]).await;
    let moderation: Vec<[String; 5]> = export
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON"))
        .filter(|v| v["kind"] == "moderation")
        .map(|v| {
            let field = |name: &str| v[name].as_str().expect("a string field").to_owned();
            ["channel", "action", "nick", "whom", "text"].map(field)
        })
        .collect();
    let expected = [
        ["#ops", "topic", "alice", "", "release day"],
        ["#ops", "mute", "alice", "bob", "10m"],
        ["#ops", "unmute", "alice", "bob", ""],
        ["#ops", "kick", "alice", "bob", "spam"],
    ]
    .map(|row| row.map(str::to_owned));
    assert_eq!(moderation, expected, "{export}");
}

#[tokio::test]
async fn a_node_catching_up_stores_a_channel_as_its_first_member_spelled_it() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("two");
    let one = node_with(&certs, &nats, "one", &[]).await;
    let mut alice = crate::harness::nats::join(&certs, &one, "Alice").await;
    // Its key is `dev_ops`: a node that did not know the spelling would
    // store it as `#dev_ops`.
    join_channel(&mut alice, "#dev-ops", "[join] #dev-ops: 1 here").await;
    alice.send("said before").await;
    alice.until("#dev-ops Alice: said before", WAIT).await;

    // Node two starts after: it catches up on the stream, which its
    // store had none of.
    let two = recording_node(&certs, &nats, "two", &data, &[]).await;
    let (mut bob, _) = join_recorded(&certs, &two, "Bob").await;
    join_channel(&mut bob, "#dev-ops", "[join] #dev-ops: 2 here").await;
    bob.send("/search before").await;
    bob.until("[search] 1 match", WAIT).await;
    let export = cli::history(&data, &["export", "--channel", "#dev-ops"]).await;
    let channels: Vec<(String, String)> = export
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON"))
        .map(|v| {
            let field = |name: &str| v[name].as_str().expect("a string field").to_owned();
            (field("channel"), field("text"))
        })
        .collect();
    assert!(
        channels.iter().any(|(_, text)| text == "said before"),
        "{export}"
    );
    assert!(
        channels.iter().all(|(channel, _)| channel == "#dev-ops"),
        "{export}"
    );
}
