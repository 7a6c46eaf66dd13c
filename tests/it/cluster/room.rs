//! The cluster room as a library, several nodes in one process against a
//! real nats-server: the operations the chat commands build on (who is
//! here, lines for one participant on another node, actions, leaving with
//! a reason, a newcomer's history read from the stream).

use crate::harness::{NatsServer, WAIT};
use bytes::Bytes;
use chatroom::room::WhisperError;
use chatroom::room::cluster::{ClusterOptions, ClusterRoom};
use chatroom::room::{Announce, Room, Subscription};

async fn node(nats: &NatsServer, name: &str, history: usize) -> ClusterRoom {
    node_announcing(nats, name, history, Announce::All).await
}

async fn node_announcing(
    nats: &NatsServer,
    name: &str,
    history: usize,
    announce: Announce,
) -> ClusterRoom {
    ClusterRoom::connect(ClusterOptions {
        max_members: 100,
        backlog: chatroom::room::backlog::MIN_BYTES,
        history,
        announce,
        ..ClusterOptions::new(nats.url(), "lab".into(), name.into())
    })
    .await
    .expect("the node joins the cluster")
}

async fn next(sub: &mut impl Subscription) -> String {
    let line = tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("a line in time")
        .expect("a line");
    String::from_utf8(line.to_vec()).expect("UTF-8")
}

/// Waits until `room` lists exactly `expected`, in alphabetical order
/// (the list follows the nickname bucket, which each node watches).
async fn members_become(room: &ClusterRoom, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    let mut changes = room.directory_changes();
    tokio::time::timeout(WAIT, async {
        while room.members(100) != (expected.len(), expected.clone()) {
            changes.changed().await.expect("the room is up");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("members never became {expected:?}: {:?}", room.members(100)));
}

#[tokio::test]
async fn members_private_lines_actions_and_reasons_across_nodes() {
    let nats = NatsServer::start().await;
    let (a, b) = tokio::join!(node(&nats, "a", 0), node(&nats, "b", 0));
    let mut alice = a.join("Alice").await.expect("joins");
    assert_eq!(next(&mut alice).await, "Alice joined!\n");
    let mut bob = b.join("Bob").await.expect("joins");
    assert_eq!(next(&mut bob).await, "Bob joined!\n");
    assert_eq!(next(&mut alice).await, "Bob joined!\n");
    members_become(&a, &["Alice", "Bob"]).await;
    members_become(&b, &["Alice", "Bob"]).await;
    // The first ones only, with the count of all.
    assert_eq!(b.members(1), (2, vec!["Alice".to_string()]));
    // Found in any case, spelled as its owner does, on either node.
    assert_eq!(a.recipient("bOB").as_deref(), Some("Bob"));
    assert_eq!(b.recipient("bob").as_deref(), Some("Bob"));
    assert_eq!(a.recipient("nobody"), None);

    // To one participant on another node, found in any case; the sender
    // gets the line back as the echo.
    let echo = a.whisper("Alice", "bOB", "psst").expect("sent");
    assert_eq!(echo, Bytes::from_static(b"[private] Alice -> Bob: psst\n"));
    assert_eq!(next(&mut bob).await, "[private] Alice -> Bob: psst\n");
    assert_eq!(
        a.whisper("Alice", "nobody", "psst"),
        Err(WhisperError::NoSuchNick("nobody".into()))
    );

    // An action is a public line like a message, in the one order.
    a.act("Alice", "waves");
    assert_eq!(next(&mut alice).await, "* Alice waves\n");
    assert_eq!(next(&mut bob).await, "* Alice waves\n");
    // Nothing private reached Alice: her next line is Bob's leaving.
    b.quit("Bob", "lunch");
    assert_eq!(next(&mut alice).await, "Bob left! (lunch)\n");
    members_become(&a, &["Alice"]).await;
    // The name is free again, on any node.
    let _bob = a.join("BOB").await.expect("joins again");
}

#[tokio::test]
async fn a_newcomer_gets_the_last_public_lines_from_the_stream() {
    let nats = NatsServer::start().await;
    let (a, b) = tokio::join!(node(&nats, "a", 0), node(&nats, "b", 2));
    let mut alice = a.join("alice").await.expect("joins");
    assert_eq!(next(&mut alice).await, "alice joined!\n");
    for text in ["one", "two", "three"] {
        a.publish("alice", text);
        assert_eq!(next(&mut alice).await, format!("alice: {text}\n"));
    }
    // Joins and leaves are not history.
    let _dave = a.join("dave").await.expect("joins");
    a.leave("dave");
    // In the stream before carol's join, as alice sees.
    assert_eq!(next(&mut alice).await, "dave joined!\n");
    assert_eq!(next(&mut alice).await, "dave left!\n");
    let mut carol = b.join("carol").await.expect("joins");
    // Right after its own `joined!`, before anything live.
    assert_eq!(next(&mut carol).await, "carol joined!\n");
    assert_eq!(next(&mut carol).await, "[history] alice: two\n");
    assert_eq!(next(&mut carol).await, "[history] alice: three\n");
    a.publish("alice", "four");
    assert_eq!(next(&mut carol).await, "alice: four\n");
}

#[tokio::test]
async fn joins_past_the_announced_size_count_the_whole_room_across_nodes() {
    let nats = NatsServer::start().await;
    let quiet_over_2 = Announce::UpTo(2);
    let (a, b) = tokio::join!(
        node_announcing(&nats, "a", 0, quiet_over_2),
        node_announcing(&nats, "b", 0, quiet_over_2)
    );
    let mut alice = a.join("Alice").await.expect("joins");
    assert_eq!(next(&mut alice).await, "Alice joined!\n");
    let mut bob = b.join("Bob").await.expect("joins");
    assert_eq!(next(&mut bob).await, "Bob joined!\n");
    assert_eq!(next(&mut alice).await, "Bob joined!\n");
    members_become(&a, &["Alice", "Bob"]).await;
    // Node a has one participant, the room two: Carol is the third.
    let mut carol = a.join("Carol").await.expect("joins");
    assert_eq!(next(&mut carol).await, "Carol joined!\n");
    assert_eq!(
        next(&mut carol).await,
        "[room] 3 here; joins and leaves are not announced in rooms over 2\n"
    );
    members_become(&b, &["Alice", "Bob", "Carol"]).await;
    a.publish("Alice", "hello");
    // Neither node showed Carol's join to anyone else.
    assert_eq!(next(&mut alice).await, "Alice: hello\n");
    assert_eq!(next(&mut bob).await, "Alice: hello\n");
    assert_eq!(next(&mut carol).await, "Alice: hello\n");
    // Nor Bob's leave, from a room of three.
    b.leave("Bob");
    members_become(&a, &["Alice", "Carol"]).await;
    a.publish("Alice", "who is here?");
    assert_eq!(next(&mut alice).await, "Alice: who is here?\n");
    assert_eq!(next(&mut carol).await, "Alice: who is here?\n");
}
