//! The room in memory, through the trait the sessions use.

use super::*;
use crate::protocol::NickError;
use crate::room::{RecvError, Subscription};

fn drain(sub: &mut LocalSubscription) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(line) = sub.try_recv().expect("not lagged") {
        out.push(String::from_utf8(line.to_vec()).expect("utf-8"));
    }
    out
}

#[tokio::test]
async fn join_publish_leave_in_one_order() {
    let room = LocalRoom::new(10, 1 << 20);
    let mut alice = room.join("Alice").await.expect("joins");
    let mut bob = room.join("Bob").await.expect("joins");
    assert_eq!(
        room.join("bob").await.unwrap_err(),
        JoinError::Nick(NickError::Taken("bob".into()))
    );
    room.publish("Alice", "hi");
    room.leave("Bob");
    assert_eq!(
        drain(&mut alice),
        [
            "Alice joined!\n",
            "Bob joined!\n",
            "Alice: hi\n",
            "Bob left!\n"
        ]
    );
    assert_eq!(
        drain(&mut bob),
        ["Bob joined!\n", "Alice: hi\n", "Bob left!\n"]
    );
    assert_eq!(room.members(0).0, 1);
    // The name is free again once its owner left.
    assert!(room.join("BOB").await.is_ok());
}

#[tokio::test]
async fn history_ends_where_live_lines_begin_and_private_lines_stay_private() {
    let room = LocalRoom::new(10, 64).with_history(2);
    let mut alice = room.join("alice").await.expect("joins");
    room.publish("alice", "one");
    room.act("alice", "waves");
    room.publish("alice", "two");
    let mut bob = room.join("Bob").await.expect("joins");
    assert_eq!(
        drain(&mut bob),
        [
            "Bob joined!\n",
            "[history] * alice waves\n",
            "[history] alice: two\n"
        ]
    );
    assert_eq!(
        room.whisper("alice", "bob", "psst").expect("delivered"),
        "[private] alice -> Bob: psst\n"
    );
    room.publish("alice", "three");
    // Room lines are read first: a private line never overtakes one.
    assert_eq!(
        drain(&mut bob),
        ["alice: three\n", "[private] alice -> Bob: psst\n"]
    );
    assert_eq!(room.members(10), (2, vec!["alice".into(), "Bob".into()]));
    room.quit("Bob", "lunch");
    assert_eq!(
        drain(&mut alice).last().map(String::as_str),
        Some("Bob left! (lunch)\n")
    );
    assert_eq!(room.members(10), (1, vec!["alice".into()]));
    assert!(matches!(
        room.whisper("alice", "bob", "gone?"),
        Err(WhisperError::NoSuchNick(_))
    ));
}

#[tokio::test]
async fn full_room_refuses() {
    let room = LocalRoom::new(1, 1 << 20);
    let _a = room.join("a").await.expect("joins");
    assert_eq!(room.join("b").await.unwrap_err(), JoinError::Full);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told() {
    let room = LocalRoom::new(10, backlog::MIN_BYTES);
    let mut slow = room.join("slow").await.expect("joins");
    // Twice what the smallest backlog holds.
    for i in 0..2 * backlog::MIN_BYTES / backlog::cost(b"x: 0000\n") {
        room.publish("x", &format!("{i:04}"));
    }
    assert!(slow.is_lagging());
    assert!(matches!(slow.try_recv(), Err(RecvError::Lagged(_))));
}

#[tokio::test]
async fn nothing_follows_the_farewell() {
    let room = LocalRoom::new(10, 1 << 20);
    let mut a = room.join("a").await.expect("joins");
    room.close(Bytes::from_static(b"bye\n"));
    room.publish("a", "late");
    room.leave("a");
    assert_eq!(drain(&mut a), ["a joined!\n", "bye\n"]);
    assert_eq!(room.join("b").await.unwrap_err(), JoinError::Closed);
}
