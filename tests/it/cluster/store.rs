//! `serve --cluster --data DIR`: each node keeps its own store of the
//! room's lines, filled from the room's stream, with a real nats-server
//! and the built binary; `/search` and `/history` answer on every node,
//! and a node that was stopped catches up on return; a burst sent as a
//! few messages of several lines is stored line by line, once.

use crate::harness::cli;
use crate::harness::nats::relay::Relay;
use crate::harness::nats::{join, node_at, node_with};
use crate::harness::{NatsServer, Serve, TestCerts, TlsClient, WAIT};
use std::path::Path;
use std::time::Duration;

/// The retention line a newcomer gets with the default `--retain`.
const KEPT_30_DAYS: &str = "[history] this room keeps its lines for 30 days";

/// A node named `name` keeping its lines in `data`, with `extra`.
pub(super) async fn recording_node(
    certs: &TestCerts,
    nats: &NatsServer,
    name: &str,
    data: &Path,
    extra: &[&str],
) -> Serve {
    let mut args = vec!["--data", data.to_str().expect("UTF-8 path")];
    args.extend(extra);
    node_with(certs, nats, name, &args).await
}

/// Joins `node` as `nick`; returns once the retention line has come, and
/// the history lines before it.
pub(super) async fn join_recorded(
    certs: &TestCerts,
    node: &Serve,
    nick: &str,
) -> (TlsClient, Vec<String>) {
    let mut client = join(certs, node, nick).await;
    let history = client.until(KEPT_30_DAYS, WAIT).await;
    (client, history)
}

/// Stops `node` with SIGTERM and waits for it to exit.
pub(super) async fn stop(mut node: Serve) {
    node.signal("TERM").await;
    let status = tokio::time::timeout(WAIT, node.child.wait())
        .await
        .expect("the node stops in time")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_line_said_on_one_node_is_found_on_another() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let tmp = tempfile::tempdir().expect("temp");
    let (data_one, data_two) = (tmp.path().join("one"), tmp.path().join("two"));
    let (one, two) = tokio::join!(
        recording_node(&certs, &nats, "one", &data_one, &[]),
        recording_node(&certs, &nats, "two", &data_two, &[])
    );
    let (mut alice, history) = join_recorded(&certs, &one, "Alice").await;
    assert!(history.is_empty(), "{history:?}");
    let (mut bob, _) = join_recorded(&certs, &two, "Bob").await;
    alice.until("Bob joined!", WAIT).await;
    alice.send("remember the zanzibar plan").await;
    bob.expect("Alice: remember the zanzibar plan").await;

    bob.send("/search zanzibar").await;
    let found = bob.line().await;
    assert!(found.starts_with("[search] "), "{found}");
    assert!(
        found.ends_with(" Alice: remember the zanzibar plan"),
        "{found}"
    );
    bob.expect("[search] 1 match").await;
    // Offline, on node two's files, while it runs.
    let offline = cli::history(&data_two, &["search", "zanzibar"]).await;
    assert!(
        offline.contains("Alice: remember the zanzibar plan"),
        "{offline}"
    );
    assert!(offline.ends_with("1 match\n"), "{offline}");
    // A newcomer on node two gets the line as history, with the retention.
    let (_carol, history) = join_recorded(&certs, &two, "Carol").await;
    assert_eq!(history, ["[history] Alice: remember the zanzibar plan"]);
}

#[tokio::test]
async fn a_node_back_from_a_stop_has_the_lines_it_missed_once_in_order() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("two");
    // Node two gives newcomers no history of their own: what `/history`
    // answers is then all read from its store.
    let history_off = ["--history", "0"];
    let one = node_with(&certs, &nats, "one", &[]).await;
    let two = recording_node(&certs, &nats, "two", &data, &history_off).await;
    let mut alice = join(&certs, &one, "Alice").await;
    let (mut bob, _) = join_recorded(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;
    alice.send("before").await;
    bob.expect("Alice: before").await;
    bob.send("/quit later").await;
    alice.expect("Alice: before").await;
    alice.expect("Bob left! (later)").await;
    stop(two).await;

    for n in 1..=3 {
        alice.send(&format!("missed {n}")).await;
        alice.expect(&format!("Alice: missed {n}")).await;
    }
    let two = recording_node(&certs, &nats, "two", &data, &history_off).await;
    let (mut carol, history) = join_recorded(&certs, &two, "Carol").await;
    assert!(history.is_empty(), "{history:?}");
    carol.send("/history").await;
    let mut answer = Vec::new();
    for _ in 0..4 {
        answer.push(carol.line().await);
    }
    assert_eq!(
        answer,
        [
            "[history] Alice: before",
            "[history] Alice: missed 1",
            "[history] Alice: missed 2",
            "[history] Alice: missed 3",
        ]
    );
    // Read while node two runs: the answer above came once the store
    // held every line the node had read, Carol's join included.
    assert_eq!(
        cli::exported(&data).await,
        [
            "Alice joined!",
            "Bob joined!",
            "Alice: before",
            "Bob left! (later)",
            "Alice: missed 1",
            "Alice: missed 2",
            "Alice: missed 3",
            "Carol joined!",
        ]
    );
    // Nothing more came with the answer: the next line is this one.
    carol.send("and now").await;
    carol.expect("Carol: and now").await;
}

#[tokio::test]
async fn a_burst_sent_as_a_few_messages_is_stored_line_by_line_once_across_a_restart() {
    let nats = NatsServer::start().await;
    let relay = Relay::to(&nats).await;
    let certs = TestCerts::new();
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("one");
    let args = [
        "--data",
        data.to_str().expect("UTF-8 path"),
        "--history",
        "0",
    ];
    let one = node_at(&certs, &relay.url(), "one", &args).await;
    let (mut alice, _) = join_recorded(&certs, &one, "Alice").await;

    // The first line's acknowledgement is lost: the rest of the burst
    // waits behind it, and goes out several lines to a message.
    relay.lose_next("\"stream\":\"CHAT_");
    const SENT: usize = 150;
    for i in 0..SENT {
        alice.send(&format!("line {i}")).await;
    }
    relay.lost(WAIT).await;
    let last = format!("Alice: line {}", SENT - 1);
    alice.until(&last, Duration::from_secs(30)).await;
    let mut expected = vec!["Alice joined!".to_owned()];
    expected.extend((0..SENT).map(|i| format!("Alice: line {i}")));
    stop(one).await;
    expected.push("Alice left!".to_owned());
    assert_eq!(cli::exported(&data).await, expected);

    // Back from a stop, the node reads the stream on from where its store
    // ends: nothing stored twice, and `/history` pages through the lines
    // of one message as through any others.
    let one = node_at(&certs, &relay.url(), "one", &args).await;
    let (mut bob, _) = join_recorded(&certs, &one, "Bob").await;
    bob.send("/history 3").await;
    for i in SENT - 3..SENT {
        bob.expect(&format!("[history] Alice: line {i}")).await;
    }
    bob.send("/history 2").await;
    for i in SENT - 5..SENT - 3 {
        bob.expect(&format!("[history] Alice: line {i}")).await;
    }
    expected.push("Bob joined!".to_owned());
    assert_eq!(cli::exported(&data).await, expected);
}
