//! The broker going away under a room of `serve --cluster` nodes, each
//! test with its own real nats-server on a free loopback port: stopped and
//! restarted, stopped for longer than liveness entries live (and no node
//! then takes the others for dead), one node's link cut for longer than its liveness lasts, a
//! line lost on its way to NATS, which must neither vanish silently nor
//! land after its sender's next line, a line whose acknowledgement is lost
//! (published again, stored once, with the burst behind it sent in a few
//! messages), a burst cut by a restart of NATS, a sender flooding a
//! stalled link, whose own queue is bounded, and a node's announcement
//! whose answer is lost.

use crate::harness::nats::relay::Relay;
use crate::harness::nats::{NODE_TIMEOUT, TAKEOVER, connect, join, node, node_args, node_at};
use crate::harness::{NatsServer, Serve, TestCerts, TlsClient, WAIT};
use std::time::Duration;

/// Node one on NATS directly, node two through a relay the test controls,
/// Alice on one and Bob on two.
struct Relayed {
    certs: TestCerts,
    relay: Relay,
    one: Serve,
    two: Serve,
    alice: TlsClient,
    bob: TlsClient,
    /// Last, so that it stops after the nodes.
    _nats: NatsServer,
}

impl Relayed {
    async fn start() -> Relayed {
        let nats = NatsServer::start().await;
        let relay = Relay::to(&nats).await;
        let certs = TestCerts::new();
        let one = node(&certs, &nats, "one").await;
        let two = node_at(&certs, &relay.url(), "two", &[]).await;
        let mut alice = join(&certs, &one, "Alice").await;
        let bob = join(&certs, &two, "Bob").await;
        alice.expect("Bob joined!").await;
        Relayed {
            certs,
            relay,
            one,
            two,
            alice,
            bob,
            _nats: nats,
        }
    }
}

/// Node two's link fails and comes back; returns once the node says both.
async fn outage(relay: &Relay, two: &mut Serve) {
    relay.cut();
    two.wait_for_log("lost the NATS connection").await;
    relay.restore();
    two.wait_for_log("NATS connection restored").await;
}

#[tokio::test]
async fn a_node_whose_announcement_is_answered_too_late_asks_again_and_starts() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    // Liveness entries that outlive a timed-out request (the room's node
    // timeout is fixed by its first node).
    let lasting = |url: &str, name: &str| {
        let mut args = node_args(&certs, url, &["--node-name", name]);
        let at = args.iter().position(|a| a == "--node-timeout");
        args[at.expect("the tests' node timeout") + 1] = "30".into();
        args
    };
    let args = lasting(&nats.url(), "one");
    let one = Serve::start(
        certs.dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let mut alice = join(&certs, &one, "Alice").await;
    // Node two's liveness entry is stored, but the answer never reaches
    // it: its first try times out, and the entry it then finds is its own.
    let relay = Relay::to(&nats).await;
    relay.lose_next("\"stream\":\"KV_chat_lobby_nodes\"");
    let args = lasting(&relay.url(), "two");
    let two = Serve::start(
        certs.dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    relay.lost(WAIT).await;
    let mut bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;
    bob.send("made it").await;
    alice.expect("Bob: made it").await;
}

#[tokio::test]
async fn a_nats_restart_loses_nothing_silently_and_duplicates_nothing() {
    let mut nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (mut one, mut two) = tokio::join!(node(&certs, &nats, "one"), node(&certs, &nats, "two"));
    let mut alice = join(&certs, &one, "Alice").await;
    let mut bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;
    alice.send("before").await;
    bob.expect("Alice: before").await;
    alice.expect("Alice: before").await;

    nats.stop().await;
    one.wait_for_log("lost the NATS connection").await;
    two.wait_for_log("lost the NATS connection").await;
    alice.send("during").await;
    let refused = "ERROR message not sent: the room is unavailable";
    alice.expect(refused).await;
    // A newcomer is told too.
    let mut newcomer = connect(&certs, &one).await;
    newcomer.expect("NICK").await;
    newcomer.send("zed").await;
    newcomer.expect("ERROR the room is unavailable").await;
    newcomer.expect("NICK").await;

    nats.restart().await;
    one.wait_for_log("NATS connection restored").await;
    two.wait_for_log("NATS connection restored").await;
    // Sessions survived; lines flow again, to every node.
    alice.send("after").await;
    bob.send("me too").await;
    // Each sees both, in one order, and nothing else: the refused line was
    // not delivered after all, and nothing came twice.
    let alice_saw = [alice.line().await, alice.line().await];
    let bob_saw = [bob.line().await, bob.line().await];
    assert_eq!(alice_saw, bob_saw);
    let mut both = alice_saw.to_vec();
    both.sort();
    assert_eq!(both, ["Alice: after", "Bob: me too"]);
    alice.send("last").await;
    alice.expect("Alice: last").await;
    bob.expect("Alice: last").await;
    // The outage is logged once per node, not once per attempt.
    let log = one.kill_and_log().await;
    assert_eq!(log.matches("lost the NATS connection").count(), 1, "{log}");
}

#[tokio::test]
async fn a_burst_cut_by_a_nats_restart_arrives_in_order_once_and_what_is_not_sent_is_told() {
    let mut nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, mut two) = tokio::join!(node(&certs, &nats, "one"), node(&certs, &nats, "two"));
    let mut alice = join(&certs, &one, "Alice").await;
    let mut bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;

    // Bob's burst, NATS going while its lines are on their way, more lines
    // (each refused at once, more than a participant's mailbox holds: his
    // session reads on only as it tells him), and NATS back.
    const BEFORE: usize = 200;
    const SENT: usize = BEFORE + 150;
    for i in 0..BEFORE {
        bob.send(&format!("line {i}")).await;
    }
    alice.expect("Bob: line 0").await;
    nats.stop().await;
    two.wait_for_log("lost the NATS connection").await;
    for i in BEFORE..SENT {
        bob.send(&format!("line {i}")).await;
    }
    nats.restart().await;
    two.wait_for_log("NATS connection restored").await;
    bob.send("end").await;

    // Every line arrives once, in the order sent, the same everywhere, or
    // its sender is told it was not sent.
    let within = Duration::from_secs(40);
    let mut alice_saw = vec!["Bob: line 0".to_owned()];
    alice_saw.extend(alice.until("Bob: end", within).await);
    let bob_saw = bob.until("Bob: end", within).await;
    let (refused, bob_chat): (Vec<String>, Vec<String>) = bob_saw
        .into_iter()
        .partition(|line| line.starts_with("ERROR message not sent: "));
    assert_eq!(bob_chat, alice_saw);
    let numbers: Vec<usize> = alice_saw
        .iter()
        .map(|line| {
            line.strip_prefix("Bob: line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not one of Bob's lines: {line}"))
        })
        .collect();
    let mut sent_order = numbers.clone();
    sent_order.dedup();
    sent_order.sort_unstable();
    assert_eq!(numbers, sent_order, "in the order sent, once each");
    assert_eq!(
        numbers.len() + refused.len(),
        SENT,
        "{numbers:?} {refused:?}"
    );
}

#[tokio::test]
async fn after_a_long_outage_no_node_takes_the_others_for_dead() {
    let mut nats = NatsServer::start().await;
    let certs = TestCerts::new();
    // Each node says (at debug level) when it has looked for nodes gone.
    let scans = [("RUST_LOG", "info,chatroom::room::cluster=debug")];
    let (certs_ref, url) = (&certs, nats.url());
    let start = |name: &'static str| {
        let args = node_args(certs_ref, &url, &["--node-name", name]);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Serve::start_env(certs_ref.dir.path(), &args, &scans).await
        }
    };
    let (mut one, mut two) = tokio::join!(start("one"), start("two"));
    let mut alice = join(&certs, &one, "Alice").await;
    let mut bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;

    // Down for longer than a liveness entry lives: when NATS is back, every
    // node's entry has expired, and the nodes come back one by one.
    nats.stop().await;
    one.wait_for_log("lost the NATS connection").await;
    two.wait_for_log("lost the NATS connection").await;
    tokio::time::sleep(NODE_TIMEOUT + Duration::from_secs(1)).await;
    nats.restart().await;
    for node in [&mut one, &mut two] {
        node.wait_for_log("NATS connection restored").await;
    }
    // Each node's first look after the outage comes once the others have
    // had time to refresh their entries: nobody is announced as left.
    for node in [&mut one, &mut two] {
        node.wait_for_log("looked for nodes that are gone").await;
    }
    alice.send("still here").await;
    assert_eq!(
        bob.until("Alice: still here", WAIT).await,
        Vec::<String>::new()
    );
    assert_eq!(
        alice.until("Alice: still here", WAIT).await,
        Vec::<String>::new()
    );
    bob.send("me too").await;
    alice.expect("Bob: me too").await;
}

#[tokio::test]
async fn a_node_cut_off_from_nats_for_long_has_its_participants_leave_once() {
    let mut relayed = Relayed::start().await;
    let Relayed {
        certs,
        relay,
        one,
        two,
        alice,
        bob,
        ..
    } = &mut relayed;

    relay.cut();
    two.wait_for_log("lost the NATS connection").await;
    bob.send("anyone?").await;
    bob.expect("ERROR message not sent: the room is unavailable")
        .await;
    // The other node gives Bob up, and his name can be taken.
    assert_eq!(
        alice.until("Bob left!", TAKEOVER).await,
        Vec::<String>::new()
    );
    let _new_bob = join(certs, one, "bob").await;
    alice.expect("bob joined!").await;

    // Back on NATS, the node ends Bob's session rather than let two
    // participants answer to one name. Before that, Bob may see what the
    // room saw meanwhile, in its order.
    relay.restore();
    two.wait_for_log("NATS connection restored").await;
    let mut transcript = bob.until_closed().await;
    assert_eq!(
        transcript.pop().as_deref(),
        Some("ERROR disconnected: this server lost the room")
    );
    assert!(
        ["Bob left!", "bob joined!"]
            .starts_with(&transcript.iter().map(String::as_str).collect::<Vec<_>>()),
        "{transcript:?}"
    );
    alice.send("end").await;
    alice.expect("Alice: end").await;
}

#[tokio::test]
async fn a_line_lost_on_its_way_to_nats_never_lands_after_its_senders_next_line() {
    let mut relayed = Relayed::start().await;
    let Relayed {
        relay,
        two,
        alice,
        bob,
        ..
    } = &mut relayed;

    // Bob's line leaves his node and is lost on the way to NATS; then the
    // link fails, and comes back.
    relay.swallow();
    bob.send("first").await;
    // The node publishes a record (who said what), not the line.
    relay
        .swallowed(r#""nick":"Bob","text":"first""#, WAIT)
        .await;
    outage(relay, two).await;

    // His next line comes after it, everywhere: the lost one is published
    // again before it (it is not refused: NATS is back well within the
    // time a line is retried).
    bob.send("second").await;
    let within = Duration::from_secs(30);
    assert_eq!(alice.until("Bob: second", within).await, ["Bob: first"]);
    assert_eq!(bob.until("Bob: second", within).await, ["Bob: first"]);
    // And nothing twice: the next line is the next one sent.
    bob.send("third").await;
    alice.expect("Bob: third").await;
    bob.expect("Bob: third").await;
}

#[tokio::test]
async fn a_line_whose_acknowledgement_is_lost_is_stored_once() {
    let mut relayed = Relayed::start().await;
    let Relayed {
        relay, alice, bob, ..
    } = &mut relayed;

    // Bob's line is stored, but its acknowledgement never reaches his node,
    // whose link stays up: the node publishes it again, with the same
    // message id, and NATS keeps the first copy only.
    relay.lose_next("\"stream\":\"CHAT_");
    bob.send("once").await;
    relay.lost(WAIT).await;
    bob.send("after").await;
    let within = Duration::from_secs(30);
    assert_eq!(alice.until("Bob: after", within).await, ["Bob: once"]);
    assert_eq!(bob.until("Bob: after", within).await, ["Bob: once"]);
}

#[tokio::test]
async fn a_burst_goes_out_in_a_few_messages_in_order_once_though_an_acknowledgement_is_lost() {
    let mut relayed = Relayed::start().await;
    let Relayed {
        relay,
        alice,
        bob,
        _nats: nats,
        ..
    } = &mut relayed;

    // The acknowledgement of Bob's first line never reaches his node, which
    // publishes it again; the rest of his burst waits behind it meanwhile.
    relay.lose_next("\"stream\":\"CHAT_");
    const SENT: usize = 200;
    for i in 0..SENT {
        bob.send(&format!("line {i}")).await;
    }
    relay.lost(WAIT).await;
    let last = format!("Bob: line {}", SENT - 1);
    let expected: Vec<String> = (0..SENT - 1).map(|i| format!("Bob: line {i}")).collect();
    let within = Duration::from_secs(30);
    assert_eq!(alice.until(&last, within).await, expected);
    assert_eq!(bob.until(&last, within).await, expected);

    // What waited went out together: the room's stream holds the two
    // joins and a few messages of up to 64 lines, not one message per
    // line.
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("CHAT_lobby")
        .await
        .expect("the room's stream");
    let messages = stream.info().await.expect("stream info").state.messages;
    assert!(
        (2 + (SENT as u64).div_ceil(64)..=20).contains(&messages),
        "{messages} messages for {SENT} lines"
    );
}

#[tokio::test]
async fn a_sender_flooding_a_stalled_link_is_told_and_what_was_queued_keeps_its_order() {
    // The nodes run with `--rate-limit off`: nothing but the room's own
    // bound stops Bob.
    let mut relayed = Relayed::start().await;
    let Relayed {
        relay,
        two,
        alice,
        bob,
        ..
    } = &mut relayed;

    // NATS stops answering Bob's node: his first line is in flight, the
    // next 256 wait behind it, and the rest are refused, to him alone.
    relay.swallow();
    const SENT: usize = 300;
    const QUEUED: usize = 1 + 256;
    for i in 0..SENT {
        bob.send(&format!("line {i}")).await;
    }
    let refused = "ERROR message not sent: too many of your lines are waiting";
    for _ in QUEUED..SENT {
        bob.expect(refused).await;
    }
    outage(relay, two).await;

    // What was queued arrives everywhere, once, in the order sent...
    let last = format!("Bob: line {}", QUEUED - 1);
    let expected: Vec<String> = (0..QUEUED - 1).map(|i| format!("Bob: line {i}")).collect();
    let within = Duration::from_secs(30);
    assert_eq!(alice.until(&last, within).await, expected);
    assert_eq!(bob.until(&last, within).await, expected);
    // ...and the refused lines never do: Bob's next line is the next one.
    bob.send("after").await;
    alice.expect("Bob: after").await;
    bob.expect("Bob: after").await;
}
