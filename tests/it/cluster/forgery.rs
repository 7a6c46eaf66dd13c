//! What reaches participants when something other than the room's nodes
//! writes to the room's NATS subjects and buckets: a raw NATS client, as a
//! user with a foothold on NATS would use, publishes finished lines, escape
//! sequences, a line far over the limit, a nickname entry holding a line
//! break, messages of several lines with a forged one among them,
//! private payloads, and topic entries (also read by a node that starts
//! after them). Every participant gets only lines its node
//! formatted itself from checked parts: nothing merges, nothing reads like
//! the server's own, nothing raw reaches a terminal.

use crate::harness::{NatsServer, WAIT};
use async_nats::jetstream::kv;
use bytes::Bytes;
use chatroom::room::cluster::{ClusterOptions, ClusterRoom};
use chatroom::room::{Room, Subscription};
use futures_util::StreamExt;
use std::time::Duration;

const ROOM: &str = "lab";

async fn node(nats: &NatsServer, name: &str) -> ClusterRoom {
    ClusterRoom::connect(ClusterOptions {
        node_timeout: Duration::from_secs(1),
        ..ClusterOptions::new(nats.url(), ROOM.into(), name.into())
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

/// A NATS client that is not a node: it may publish anywhere.
async fn intruder(nats: &NatsServer) -> (async_nats::Client, async_nats::jetstream::Context) {
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client.clone());
    (client, js)
}

/// The room's bucket of nicknames, memberships and topics, as the
/// intruder reaches it.
async fn nick_bucket(js: &async_nats::jetstream::Context) -> async_nats::jetstream::kv::Store {
    js.get_key_value(format!("chat_{ROOM}_nicks"))
        .await
        .expect("the bucket")
}

async fn publish(js: &async_nats::jetstream::Context, payload: impl Into<Bytes>) {
    js.publish(format!("chat.{ROOM}"), payload.into())
        .await
        .expect("published")
        .await
        .expect("stored");
}

#[tokio::test]
async fn lines_published_to_the_room_by_anyone_else_are_checked_and_formatted_by_the_node() {
    let nats = NatsServer::start().await;
    let (a, b) = tokio::join!(node(&nats, "a"), node(&nats, "b"));
    let mut alice = a.join("alice").await.expect("joins");
    assert_eq!(next(&mut alice).await, "alice joined!\n");
    let mut carol = b.join("carol").await.expect("joins");
    assert_eq!(next(&mut carol).await, "carol joined!\n");
    assert_eq!(next(&mut alice).await, "carol joined!\n");
    let (_client, js) = intruder(&nats).await;

    // A finished line, three lines in one, without a final newline.
    publish(
        &js,
        "bob: hi\nServer is shutting down\n[private] bob -> carol: send me your password",
    )
    .await;
    // Not a record at all, and invalid UTF-8.
    publish(&js, &b"\xff\xfe\x1b[2J"[..]).await;
    // A record far over the line limit.
    let long = format!(
        r#"{{"kind":"say","nick":"bob","text":"{}"}}"#,
        "x".repeat(100_000)
    );
    publish(&js, long).await;
    // A record whose nickname no one could join with.
    publish(
        &js,
        r#"{"kind":"join","nick":"x\nServer is shutting down"}"#,
    )
    .await;
    publish(&js, r#"{"kind":"say","nick":"Server","text":"restarting"}"#).await;
    // Several lines in one message, one of them forged: none is shown.
    publish(
        &js,
        r#"[{"kind":"say","nick":"bob","text":"one"},{"kind":"say","nick":"Server","text":"restarting"}]"#,
    )
    .await;
    // More lines than a node puts in one message.
    let many = vec![r#"{"kind":"say","nick":"bob","text":"x"}"#; 65].join(",");
    publish(&js, format!("[{many}]")).await;
    // A well-formed record: it reads as what bob said (a NATS user can
    // post under any nickname), on one line, with escapes and direction
    // controls stripped.
    publish(
        &js,
        r#"{"kind":"say","nick":"bob","text":"hi\nServer is shutting down\u001b[2J\u001b]0;owned\u0007\u202e"}"#,
    )
    .await;
    a.publish("alice", "still here");

    for sub in [&mut alice, &mut carol] {
        assert_eq!(
            next(sub).await,
            "bob: hiServer is shutting down[2J]0;owned\n"
        );
        assert_eq!(next(sub).await, "alice: still here\n");
    }
}

#[tokio::test]
async fn a_forged_nickname_entry_never_becomes_a_line() {
    let nats = NatsServer::start().await;
    let a = node(&nats, "a").await;
    let mut alice = a.join("alice").await.expect("joins");
    assert_eq!(next(&mut alice).await, "alice joined!\n");
    let (_client, js) = intruder(&nats).await;
    let nicks = nick_bucket(&js).await;
    // Held by a node that does not exist: the take-over would announce
    // this nickname as left, were it taken as one.
    nicks
        .put(
            "evil",
            Bytes::from_static(br#"{"node":"ghost","nick":"x\nServer is shutting down"}"#),
        )
        .await
        .expect("put");
    // A valid one, so that the test sees a take-over happen at all.
    nicks
        .put(
            "mallory",
            Bytes::from_static(br#"{"node":"ghost","nick":"mallory"}"#),
        )
        .await
        .expect("put");
    assert_eq!(next(&mut alice).await, "mallory left!\n");
    a.publish("alice", "after the scan");
    assert_eq!(next(&mut alice).await, "alice: after the scan\n");
    assert_eq!(a.members(10), (1, vec!["alice".to_string()]));
}

#[tokio::test]
async fn forged_private_payloads_are_dropped_or_checked_and_hold_nothing_back() {
    let nats = NatsServer::start().await;
    let (a, b) = tokio::join!(node(&nats, "a"), node(&nats, "b"));
    let mut alice = a.join("alice").await.expect("joins");
    assert_eq!(next(&mut alice).await, "alice joined!\n");
    let mut carol = b.join("carol").await.expect("joins");
    assert_eq!(next(&mut carol).await, "carol joined!\n");
    let (client, _js) = intruder(&nats).await;
    let subject = format!("chat.{ROOM}.private.b");
    for payload in [
        &b"0\ncarol\n[private] bob -> carol: send me your password\n"[..],
        br#"{"after":0,"to":"carol","from":"Server","text":"x"}"#,
    ] {
        client
            .publish(subject.clone(), Bytes::copy_from_slice(payload))
            .await
            .expect("published");
    }
    // Well-formed, but claiming to come after a line the room will never
    // have: held no longer than the room's last line.
    let answer = client
        .request(
            subject.clone(),
            Bytes::from(format!(
                r#"{{"after":{},"to":"carol","from":"bob","text":"psst\u001b[8m"}}"#,
                u64::MAX
            )),
        )
        .await
        .expect("answered");
    assert_eq!(&answer.payload[..], b"ok");
    a.whisper("alice", "carol", "real").expect("sent");
    let quick = Duration::from_secs(3);
    for expected in [
        "[private] bob -> carol: psst[8m\n",
        "[private] alice -> carol: real\n",
    ] {
        let line = tokio::time::timeout(quick, carol.recv())
            .await
            .unwrap_or_else(|_| panic!("{expected:?} held back"))
            .expect("a line");
        assert_eq!(line, expected);
    }
}

#[tokio::test]
async fn forged_channel_records_orders_and_memberships_are_checked_too() {
    let nats = NatsServer::start().await;
    let a = node(&nats, "a").await;
    let _alice = a.join("alice").await.expect("joins");
    let ops = a.open_channel("#ops").expect("a channel");
    let mut alice = ops.join("alice").await.expect("joins #ops");
    assert_eq!(next(&mut alice).await, "#ops alice joined!\n");
    let (client, js) = intruder(&nats).await;
    let to = |subject: &str, payload: &'static str| {
        let js = js.clone();
        let subject = format!("chat.{ROOM}.{subject}");
        async move {
            js.publish(subject, Bytes::from_static(payload.as_bytes()))
                .await
                .expect("published")
                .await
                .expect("stored");
        }
    };
    // A subject no channel has, finished lines, a forged operator.
    to("ch.OPS", r#"{"kind":"say","nick":"bob","text":"x"}"#).await;
    to("ch.ops", "[topic] #ops: send me your password\n").await;
    to("ch.ops", r#"{"kind":"topic","by":"Server","text":"x"}"#).await;
    to("ch.ops", r#"{"kind":"kick","nick":"alice","by":"x y"}"#).await;
    to(
        "ch.ops",
        r#"{"kind":"muted","nick":"alice","by":"bob","duration":"forever"}"#,
    )
    .await;
    // Orders: a mute past what any operator may give, a nickname no one
    // could have, a node name that is not one.
    to("orders", r#"{"order":"mute","nick":"alice","by":"bob","until":99999999999,"typed":"10m","node":"a"}"#).await;
    to(
        "orders",
        r#"{"order":"mute","nick":"a\nb","by":"bob","until":0,"typed":"10m","node":"a"}"#,
    )
    .await;
    to(
        "orders",
        r#"{"order":"unmute","nick":"alice","by":"bob","node":"a b"}"#,
    )
    .await;
    // A membership under another key than its own.
    let nicks = nick_bucket(&js).await;
    nicks
        .put(
            "ch.ops.evil",
            Bytes::from_static(br##"{"node":"a","nick":"mallory","channel":"#ops"}"##),
        )
        .await
        .expect("put");
    // A kick with a forged operator's name is dropped, unanswered.
    client
        .publish(
            format!("chat.{ROOM}.private.a"),
            Bytes::from_static(br#"{"kick":"alice","by":"Server"}"#),
        )
        .await
        .expect("published");
    // Well-formed: read as an operator's line, escapes stripped.
    to(
        "ch.ops",
        r#"{"kind":"topic","by":"bob","text":"hi\u001b[2J\nServer"}"#,
    )
    .await;
    ops.publish("alice", "still here");
    assert_eq!(
        next(&mut alice).await,
        "[topic] #ops: hi[2JServer set by bob\n"
    );
    assert_eq!(next(&mut alice).await, "#ops alice: still here\n");
    assert_eq!(a.muted_until("alice"), None);
    assert_eq!(ops.members(10), (1, vec!["alice".to_string()]));
    assert_eq!(ops.topic().as_deref(), Some("hi[2JServer"));
}

/// Waits until `room`'s topic is `wanted`: the node takes in the bucket's
/// entries in order, each a change of its directory.
async fn until_topic(node: &ClusterRoom, room: &ClusterRoom, wanted: Option<&str>) {
    let mut changes = node.directory_changes();
    let seen = async {
        while room.topic().as_deref() != wanted {
            changes.changed().await.expect("the node watches");
        }
    };
    tokio::time::timeout(WAIT, seen)
        .await
        .unwrap_or_else(|_| panic!("topic {:?}, not {wanted:?}", room.topic()));
}

/// Node `a` with alice in the lobby and in `#ops`, and the room's bucket
/// as an intruder reaches it.
struct AliceInOps {
    a: ClusterRoom,
    lobby: <ClusterRoom as Room>::Subscription,
    ops: ClusterRoom,
    alice: <ClusterRoom as Room>::Subscription,
    nicks: kv::Store,
    _intruder: async_nats::Client,
}

async fn alice_in_ops(nats: &NatsServer) -> AliceInOps {
    let a = node(nats, "a").await;
    let mut lobby = a.join("alice").await.expect("joins");
    assert_eq!(next(&mut lobby).await, "alice joined!\n");
    let ops = a.open_channel("#ops").expect("a channel");
    let mut alice = ops.join("alice").await.expect("joins #ops");
    assert_eq!(next(&mut alice).await, "#ops alice joined!\n");
    let (client, js) = intruder(nats).await;
    let nicks = nick_bucket(&js).await;
    AliceInOps {
        a,
        lobby,
        ops,
        alice,
        nicks,
        _intruder: client,
    }
}

#[tokio::test]
async fn forged_topic_entries_are_checked_on_a_node_and_on_one_started_later() {
    let nats = NatsServer::start().await;
    let AliceInOps {
        a,
        mut lobby,
        ops,
        mut alice,
        nicks,
        _intruder,
    } = alice_in_ops(&nats).await;
    let too_long = format!(
        r#"{{"kind":"topic","by":"bob","text":"{}"}}"#,
        "x".repeat(301)
    );
    for (key, value) in [
        // Not a record, not a topic, a forged operator, over 300 bytes.
        (
            "topic.lobby",
            "[topic] #lobby: send me your password\n".to_owned(),
        ),
        (
            "topic.ops",
            r#"{"kind":"say","nick":"bob","text":"x"}"#.to_owned(),
        ),
        (
            "topic.ops",
            r#"{"kind":"topic","by":"Server","text":"x"}"#.to_owned(),
        ),
        ("topic.lobby", too_long),
        // Keys no channel has.
        (
            "topic.OPS",
            r#"{"kind":"topic","by":"bob","text":"x"}"#.to_owned(),
        ),
        (
            "topic.ops.x",
            r#"{"kind":"topic","by":"bob","text":"x"}"#.to_owned(),
        ),
        // Well-formed, for a channel with no member: deleted.
        (
            "topic.dev",
            r#"{"kind":"topic","by":"bob","text":"x"}"#.to_owned(),
        ),
        // Well-formed: escapes and line breaks stripped when shown.
        (
            "topic.ops",
            r#"{"kind":"topic","by":"bob","text":"hi\u001b[2J\nServer"}"#.to_owned(),
        ),
    ] {
        nicks.put(key, value.into()).await.expect("put");
    }
    until_topic(&a, &ops, Some("hi[2JServer")).await;
    let mut dev = nicks
        .watch_with_history("topic.dev")
        .await
        .expect("a watch");
    let deleted = async {
        while let Some(entry) = dev.next().await {
            if entry.expect("an entry").operation != kv::Operation::Put {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, deleted)
        .await
        .expect("the topic of a channel with no member is deleted");
    assert_eq!(a.topic(), None);
    ops.publish("alice", "still here");
    assert_eq!(next(&mut alice).await, "#ops alice: still here\n");

    // A node started now reads the same entries before it takes anyone in.
    let b = node(&nats, "b").await;
    assert_eq!(
        b.open_channel("#ops")
            .expect("a channel")
            .topic()
            .as_deref(),
        Some("hi[2JServer")
    );
    let dev = b.open_channel("#dev").expect("a channel");
    assert_eq!((b.topic(), dev.topic()), (None, None));
    let mut carol = b.join("carol").await.expect("joins");
    assert_eq!(next(&mut carol).await, "carol joined!\n");
    assert_eq!(next(&mut lobby).await, "carol joined!\n");
}

#[tokio::test]
async fn a_forged_topic_entry_claiming_a_later_place_keeps_no_operator_s_topic_out() {
    let nats = NatsServer::start().await;
    let AliceInOps {
        a,
        lobby: _lobby,
        ops,
        mut alice,
        nicks,
        _intruder,
    } = alice_in_ops(&nats).await;
    // A place in the stream far past its end: no node put this.
    let pinned = r#"{"kind":"topic","by":"bob","text":"pinned","at":999999999}"#;
    nicks.put("topic.ops", pinned.into()).await.expect("put");
    until_topic(&a, &ops, Some("pinned")).await;

    let act = chatroom::room::Moderation {
        action: chatroom::room::store::Action::Topic,
        by: "alice",
        whom: "",
        detail: "the real one",
    };
    ops.moderated(None, act).expect("told");
    assert_eq!(
        next(&mut alice).await,
        "[topic] #ops: the real one set by alice\n"
    );
    // Once kept in the bucket, a node started later gets it.
    let mut entries = nicks
        .watch_with_history("topic.ops")
        .await
        .expect("a watch");
    let kept = async {
        while let Some(entry) = entries.next().await {
            let entry = entry.expect("an entry");
            if entry.value.windows(12).any(|w| w == b"the real one") {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, kept)
        .await
        .expect("the operator's topic is kept for later nodes");
    let b = node(&nats, "b").await;
    let topic = b.open_channel("#ops").expect("a channel").topic();
    assert_eq!(topic.as_deref(), Some("the real one"));
}
