//! Channels and operators on two nodes of one room: each channel one order
//! for its members on both nodes, no line crossing channels, `/rooms` and
//! `/list` counting both nodes; a kick, a mute and a topic given on one
//! node holding on the other, a topic known to a node started after it
//! until its channel is forgotten; a killed node's members leaving its
//! channels.

use crate::harness::nats::{TAKEOVER, addr, join, node_with, path};
use crate::harness::{Client, NatsServer, Serve, TestCerts, TlsClient, WAIT};
use tokio::time::{Instant, timeout_at};

/// Sends `/join NAME` and reads the answer to the asker: its `joined!` line
/// in the channel, then the `[join]` line.
async fn join_channel(client: &mut TlsClient, name: &str) -> (String, String) {
    client.send(&format!("/join {name}")).await;
    (client.line().await, client.line().await)
}

/// Sends `command` until its first answer is `wanted` (what other nodes
/// tell by their buckets comes a little later): fails after [`WAIT`].
async fn ask_until(client: &mut TlsClient, command: &str, wanted: &[&str]) {
    let deadline = Instant::now() + WAIT;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        client.send(command).await;
        last.clear();
        for _ in 0..wanted.len() {
            last.push(client.line().await);
        }
        if last == wanted {
            return;
        }
    }
    panic!("{command}: {last:?}, not {wanted:?}");
}

/// Reads `client`'s lines until it has `n` starting with `kind`; fails on
/// a line of any channel but `member_of`.
async fn transcript(client: &mut TlsClient, member_of: &str, kind: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while seen.len() < n {
        let line = timeout_at(deadline, client.line())
            .await
            .expect("the channel's lines in time");
        assert!(
            !line.starts_with('#') || line.starts_with(member_of),
            "{line:?} reached a member of {member_of} only"
        );
        if line.starts_with(kind) {
            seen.push(line);
        }
    }
    seen
}

async fn say_lines(client: &mut TlsClient, tag: &str, n: usize) {
    let burst: String = (0..n).map(|i| format!("{tag}{i}\n")).collect();
    client.send_raw(burst.as_bytes()).await;
}

#[tokio::test]
async fn channels_keep_one_order_across_nodes_and_count_both() {
    const EACH: usize = 30;
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, two) = tokio::join!(
        node_with(&certs, &nats, "one", &[]),
        node_with(&certs, &nats, "two", &[])
    );
    let mut alice = join(&certs, &one, "alice").await;
    let mut carol = join(&certs, &one, "carol").await;
    let mut bob = join(&certs, &two, "bob").await;
    let mut dave = join(&certs, &two, "dave").await;
    for client in [&mut alice, &mut carol, &mut bob] {
        client.until("dave joined!", WAIT).await;
    }
    let joined = join_channel(&mut alice, "#ops").await;
    assert_eq!(
        joined,
        ("#ops alice joined!".into(), "[join] #ops: 1 here".into())
    );
    // On the other node, spelled otherwise: the same channel.
    let joined = join_channel(&mut bob, "#0ps").await;
    assert_eq!(joined.1, "[join] #ops: 2 here", "{joined:?}");
    alice.expect("#ops bob joined!").await;
    let joined = join_channel(&mut dave, "#dev").await;
    assert_eq!(
        joined,
        ("#dev dave joined!".into(), "[join] #dev: 1 here".into())
    );
    // A channel with members on the other node only is listed too.
    let rooms = [
        "[rooms] #lobby 4 here",
        "[rooms] #dev 1 here",
        "[rooms] #ops 2 here (current)",
    ];
    ask_until(&mut alice, "/rooms", &rooms).await;
    let joined = join_channel(&mut carol, "#dev").await;
    assert_eq!(
        joined,
        ("#dev carol joined!".into(), "[join] #dev: 2 here".into())
    );
    dave.expect("#dev carol joined!").await;

    ask_until(&mut alice, "/list", &["[list] 2 here: alice, bob"]).await;
    let rooms = [
        "[rooms] #lobby 4 here",
        "[rooms] #dev 2 here",
        "[rooms] #ops 2 here (current)",
    ];
    ask_until(&mut alice, "/rooms", &rooms).await;
    let rooms = [
        "[rooms] #lobby 4 here",
        "[rooms] #dev 2 here (current)",
        "[rooms] #ops 2 here",
    ];
    ask_until(&mut dave, "/rooms", &rooms).await;

    // Everyone at once, each in its channel, on both nodes.
    tokio::join!(
        say_lines(&mut alice, "a", EACH),
        say_lines(&mut bob, "b", EACH),
        say_lines(&mut carol, "c", EACH),
        say_lines(&mut dave, "d", EACH),
    );
    let (ops_one, ops_two, dev_one, dev_two) = tokio::join!(
        transcript(&mut alice, "#ops ", "#ops ", 2 * EACH),
        transcript(&mut bob, "#ops ", "#ops ", 2 * EACH),
        transcript(&mut carol, "#dev ", "#dev ", 2 * EACH),
        transcript(&mut dave, "#dev ", "#dev ", 2 * EACH),
    );
    assert_eq!(ops_one, ops_two, "one order in #ops on both nodes");
    assert_eq!(dev_one, dev_two, "one order in #dev on both nodes");
    for (lines, tags) in [
        (&ops_one, ["alice: a", "bob: b"]),
        (&dev_one, ["carol: c", "dave: d"]),
    ] {
        for tag in tags {
            let mine: Vec<&String> = lines.iter().filter(|l| l.contains(tag)).collect();
            let said: Vec<String> = (0..EACH).map(|i| format!("{tag}{i}")).collect();
            let mine: Vec<&str> = mine
                .iter()
                .map(|l| l.split_once(' ').expect("prefix").1)
                .collect();
            assert_eq!(mine, said, "{tag}'s lines in the order said");
        }
    }

    // Leaving a channel on one node is seen on the other, and counted.
    bob.send("/part").await;
    bob.expect("[part] #ops: you left it; now in #lobby").await;
    alice.expect("#ops bob left!").await;
    ask_until(&mut alice, "/list", &["[list] 1 here: alice"]).await;
    // A node that leaves takes its members out of its channels.
    one.signal("TERM").await;
    dave.until("#dev carol left!", WAIT).await;
    ask_until(&mut dave, "/list", &["[list] 1 here: dave"]).await;
}

/// The arguments that make node `name` take client certificates from
/// `certs`' CA, with `operators` its operators (in a file written here)
/// and a deny file.
pub(super) fn operator_args(certs: &TestCerts, name: &str, operators: &[&str]) -> Vec<String> {
    let file = certs.path(&format!("operators-{name}.txt"));
    std::fs::write(&file, operators.join("\n") + "\n").expect("operators file");
    let deny = certs.path(&format!("denied-{name}.txt"));
    std::fs::write(&deny, "# banned\n").expect("deny file");
    let ca = certs.ca();
    [
        "--client-ca",
        path(&ca),
        "--operators",
        path(&file),
        "--deny-file",
        path(&deny),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Node `name` with client certificates from `certs`' CA, `operators` its
/// operators, and a deny file.
async fn operators_node(
    certs: &TestCerts,
    nats: &NatsServer,
    name: &str,
    operators: &[&str],
) -> Serve {
    let args = operator_args(certs, name, operators);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node_with(certs, nats, name, &args).await
}

/// `name` joins `node` with its own client certificate.
pub(super) async fn member(certs: &TestCerts, node: &Serve, name: &str) -> TlsClient {
    let (cert, key) = certs.client(name);
    let mut client = Client::tls(addr(node), certs.client_tls_as(&cert, &key)).await;
    client.register(name).await;
    client
}

#[tokio::test]
async fn an_operator_on_one_node_kicks_mutes_and_sets_topics_on_the_other() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    // Erin is an operator on node two only: node two protects her.
    let (one, two) = tokio::join!(
        operators_node(&certs, &nats, "one", &["alice"]),
        operators_node(&certs, &nats, "two", &["alice", "erin"]),
    );
    let mut alice = member(&certs, &one, "alice").await;
    let mut carol = member(&certs, &one, "carol").await;
    let mut bob = member(&certs, &two, "bob").await;
    let mut erin = member(&certs, &two, "erin").await;
    for client in [&mut alice, &mut carol, &mut bob] {
        client.until("erin joined!", WAIT).await;
    }
    join_channel(&mut alice, "#ops").await;
    let joined = join_channel(&mut bob, "#ops").await;
    assert_eq!(joined.1, "[join] #ops: 2 here");
    alice.expect("#ops bob joined!").await;

    // A mute on node one holds for bob on node two, told in his channel.
    crate::operators::mute_bob_for_ten_minutes(&mut alice, &mut bob, "#ops ").await;
    alice.send("/unmute bob").await;
    alice.expect("[mute] bob may speak again").await;
    alice.expect("#ops bob was unmuted by alice").await;
    bob.expect("#ops bob was unmuted by alice").await;
    bob.send("thanks").await;
    bob.expect("#ops bob: thanks").await;
    alice.expect("#ops bob: thanks").await;

    // A topic set on node one, seen on node two, and by a later joiner
    // there.
    alice.send("/topic deploy at noon").await;
    alice.expect("[topic] set for #ops").await;
    alice
        .expect("[topic] #ops: deploy at noon set by alice")
        .await;
    bob.expect("[topic] #ops: deploy at noon set by alice")
        .await;
    let (_, _) = join_channel(&mut erin, "#ops").await;
    erin.expect("[topic] #ops: deploy at noon").await;
    alice.expect("#ops erin joined!").await;
    bob.expect("#ops erin joined!").await;

    // Node two knows erin is an operator: not put out.
    alice.send("/kick erin").await;
    alice
        .expect("ERROR an operator cannot be kicked, banned or muted")
        .await;
    // Bob, on node two, is put out by alice on node one.
    alice.send("/kick bob spamming").await;
    let last = bob.until_closed().await;
    assert_eq!(
        last.last().map(String::as_str),
        Some("ERROR kicked by alice: spamming"),
        "{last:?}"
    );
    let mut seen = vec![alice.line().await, alice.line().await, alice.line().await];
    seen.sort();
    assert_eq!(
        seen,
        [
            "#ops bob was kicked by alice (spamming)",
            "[kick] bob is out",
            "bob was kicked by alice (spamming)",
        ]
    );
    carol.expect("bob was kicked by alice (spamming)").await;
    let mut seen = vec![erin.line().await, erin.line().await];
    seen.sort();
    assert_eq!(
        seen,
        [
            "#ops bob was kicked by alice (spamming)",
            "bob was kicked by alice (spamming)"
        ]
    );
    ask_until(&mut alice, "/list", &["[list] 2 here: alice, erin"]).await;

    // A ban from node one puts carol out and keeps her name in node one's
    // deny file.
    alice.send("/ban carol trolling").await;
    let last = carol.until_closed().await;
    assert_eq!(
        last.last().map(String::as_str),
        Some("ERROR kicked by alice: trolling")
    );
    alice.until("[ban] carol is out", WAIT).await;
    let denied = std::fs::read_to_string(certs.path("denied-one.txt")).expect("deny file");
    assert!(
        denied
            .lines()
            .any(|l| l.starts_with("carol  # banned by alice")),
        "{denied}"
    );
}

#[tokio::test]
async fn a_killed_node_s_members_leave_its_channels() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, mut two) = tokio::join!(
        node_with(&certs, &nats, "one", &[]),
        node_with(&certs, &nats, "two", &[])
    );
    let mut alice = join(&certs, &one, "alice").await;
    let mut bob = join(&certs, &two, "bob").await;
    alice.expect("bob joined!").await;
    join_channel(&mut alice, "#ops").await;
    let joined = join_channel(&mut bob, "#ops").await;
    assert_eq!(joined.1, "[join] #ops: 2 here");
    alice.expect("#ops bob joined!").await;

    two.child.start_kill().expect("kill -9");
    let killed = Instant::now();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let left = TAKEOVER.saturating_sub(killed.elapsed());
        let line = tokio::time::timeout(left, alice.line())
            .await
            .expect("bob's leaves in time");
        seen.push(line);
    }
    seen.sort();
    assert_eq!(seen, ["#ops bob left!", "bob left!"]);
    ask_until(&mut alice, "/list", &["[list] 1 here: alice"]).await;
    ask_until(
        &mut alice,
        "/rooms",
        &["[rooms] #lobby 1 here", "[rooms] #ops 1 here (current)"],
    )
    .await;
}

#[tokio::test]
async fn a_node_started_after_a_mute_holds_it_too() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let one = operators_node(&certs, &nats, "one", &["alice"]).await;
    let mut alice = member(&certs, &one, "alice").await;
    let mut bob = member(&certs, &one, "bob").await;
    alice.expect("bob joined!").await;
    alice.send("/mute bob 10m").await;
    bob.until("bob was muted by alice for 10m", WAIT).await;

    // Node two starts after the mute was given; bob goes over to it.
    let two = operators_node(&certs, &nats, "two", &["alice"]).await;
    bob.send("/quit").await;
    bob.until_closed().await;
    alice.until("bob left!", WAIT).await;
    let (cert, key) = certs.issued("bob");
    let mut bob = Client::tls(addr(&two), certs.client_tls_as(&cert, &key)).await;
    bob.register("bob").await;
    bob.send("let me speak").await;
    let refused = bob.line().await;
    assert!(
        refused.starts_with("ERROR you are muted until "),
        "{refused}"
    );
    // And an unmute given now reaches it as to any node.
    alice.send("/unmute bob").await;
    alice.until("[mute] bob may speak again", WAIT).await;
    bob.until("bob was unmuted by alice", WAIT).await;
    bob.send("thanks").await;
    alice.until("bob: thanks", WAIT).await;
}

#[tokio::test]
async fn an_operator_s_unmute_right_after_the_mute_finds_it() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, two) = tokio::join!(
        operators_node(&certs, &nats, "one", &["alice"]),
        operators_node(&certs, &nats, "two", &["alice"]),
    );
    let mut alice = member(&certs, &one, "alice").await;
    let mut bob = member(&certs, &two, "bob").await;
    alice.until("bob joined!", WAIT).await;

    // Each unmute comes before node one has read the mute before it back
    // from the stream: it still finds it. Every node applies the orders in
    // the order given, so bob ends unmuted.
    alice
        .send_raw(b"/mute bob 10m\n/unmute bob\n/mute bob 2m\n/unmute bob\n")
        .await;
    let mut answers = Vec::new();
    while answers.len() < 4 {
        let line = alice.line().await;
        if line.starts_with("[mute] ") || line.starts_with("ERROR") {
            answers.push(line);
        }
    }
    assert!(
        answers[0].starts_with("[mute] bob is muted until "),
        "{answers:?}"
    );
    assert_eq!(answers[1], "[mute] bob may speak again", "{answers:?}");
    assert!(
        answers[2].starts_with("[mute] bob is muted until "),
        "{answers:?}"
    );
    assert_eq!(answers[3], "[mute] bob may speak again", "{answers:?}");
    let told = [
        "bob was muted by alice for 10m",
        "bob was unmuted by alice",
        "bob was muted by alice for 2m",
        "bob was unmuted by alice",
    ];
    for line in told {
        bob.expect(line).await;
    }
    bob.send("thanks").await;
    bob.expect("bob: thanks").await;
    alice.until("bob: thanks", WAIT).await;
}

#[tokio::test]
async fn a_node_started_later_gets_the_topic_set_last_though_an_earlier_one_was_kept_late() {
    use crate::harness::nats::node_at;
    use crate::harness::nats::relay::Relay;
    let nats = NatsServer::start().await;
    let relay = Relay::to(&nats).await;
    let certs = TestCerts::new();
    let args = operator_args(&certs, "one", &["alice"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let one = node_at(&certs, &relay.url(), "one", &args).await;
    let two = operators_node(&certs, &nats, "two", &["bob"]).await;
    let mut alice = member(&certs, &one, "alice").await;
    let mut bob = member(&certs, &two, "bob").await;
    alice.until("bob joined!", WAIT).await;

    // Alice's topic is stored, but node one hears so only when it publishes
    // it again: it keeps it for later nodes seconds late, after Bob's.
    relay.lose_next("\"stream\":\"CHAT_lobby\"");
    alice.send("/topic first").await;
    bob.until("[topic] #lobby: first set by alice", WAIT).await;
    bob.send("/topic second").await;
    bob.until("[topic] #lobby: second set by bob", WAIT).await;
    relay.lost(WAIT).await;
    // Alice's next line goes out once her topic is kept (or not) for later
    // nodes: what they get is settled by then.
    alice.send("after").await;
    bob.until("alice: after", WAIT).await;

    let three = node_with(&certs, &nats, "three", &[]).await;
    let mut carol = join(&certs, &three, "carol").await;
    carol.send("/join #lobby").await;
    carol.expect("[join] #lobby: 3 here").await;
    carol.expect("[topic] #lobby: second").await;
}

#[tokio::test]
async fn a_room_made_before_channels_gets_their_subjects() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connects");
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "CHAT_lobby".into(),
            subjects: vec!["chat.lobby".into()],
            ..Default::default()
        })
        .await
        .expect("the room's stream as it was made before there were channels");
    let certs = TestCerts::new();
    let one = node_with(&certs, &nats, "one", &[]).await;
    let log = one.log_so_far();
    assert!(
        log.contains("added the channels' and operators' subjects to the room's stream CHAT_lobby"),
        "{log}"
    );
    let mut alice = join(&certs, &one, "alice").await;
    let joined = join_channel(&mut alice, "#ops").await;
    assert_eq!(
        joined,
        ("#ops alice joined!".into(), "[join] #ops: 1 here".into())
    );
}

/// Waits until entry `key` of the room's bucket (room `lobby`, the nodes'
/// default) is deleted.
async fn until_deleted(nats: &NatsServer, key: &str) {
    use futures_util::StreamExt;
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let nicks = async_nats::jetstream::new(client)
        .get_key_value("chat_lobby_nicks")
        .await
        .expect("the room's bucket");
    let mut watch = nicks.watch_with_history(key).await.expect("a watch");
    let deleted = async {
        while let Some(entry) = watch.next().await {
            if entry.expect("an entry").operation != async_nats::jetstream::kv::Operation::Put {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, deleted)
        .await
        .unwrap_or_else(|_| panic!("{key} is not deleted from the bucket"));
}

#[tokio::test]
async fn a_node_started_after_a_topic_was_set_knows_it_until_the_channel_is_forgotten() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let one = operators_node(&certs, &nats, "one", &["alice"]).await;
    let mut alice = member(&certs, &one, "alice").await;
    alice.send("/topic welcome all").await;
    alice.expect("[topic] set for #lobby").await;
    alice
        .expect("[topic] #lobby: welcome all set by alice")
        .await;
    join_channel(&mut alice, "#ops").await;
    alice.send("/topic deploy at noon").await;
    alice.expect("[topic] set for #ops").await;
    alice
        .expect("[topic] #ops: deploy at noon set by alice")
        .await;

    // Node two starts after both topics were set: its members get them.
    let two = node_with(&certs, &nats, "two", &[]).await;
    let mut bob = join(&certs, &two, "bob").await;
    let joined = join_channel(&mut bob, "#ops").await;
    assert_eq!(joined.1, "[join] #ops: 2 here", "{joined:?}");
    bob.expect("[topic] #ops: deploy at noon").await;
    bob.send("/topic").await;
    bob.expect("[topic] #ops: deploy at noon").await;
    bob.send("/join #lobby").await;
    bob.expect("[join] #lobby: 2 here").await;
    bob.expect("[topic] #lobby: welcome all").await;

    // Once #ops has no member on any node, its topic is forgotten, also
    // by a node started after that.
    alice.until("#ops bob joined!", WAIT).await;
    bob.send("/part #ops").await;
    bob.expect("[part] #ops: you left it; now in #lobby").await;
    // The lobby's `bob joined!` has its own order, and may come after.
    alice.until("#ops bob left!", WAIT).await;
    alice.send("/part").await;
    alice
        .expect("[part] #ops: you left it; now in #lobby")
        .await;
    until_deleted(&nats, "topic.ops").await;
    let three = node_with(&certs, &nats, "three", &[]).await;
    let mut carol = join(&certs, &three, "carol").await;
    let joined = join_channel(&mut carol, "#ops").await;
    assert_eq!(joined.1, "[join] #ops: 1 here", "{joined:?}");
    carol.send("/topic").await;
    carol.expect("[topic] #ops has no topic").await;
    carol.send("/list").await;
    carol.expect("[list] 1 here: carol").await;
    carol.send("/join #lobby").await;
    carol.expect("[join] #lobby: 3 here").await;
    carol.expect("[topic] #lobby: welcome all").await;
}
