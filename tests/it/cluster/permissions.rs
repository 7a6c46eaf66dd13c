//! The least-privilege NATS permissions of docs/cluster.md, tried on a
//! real nats-server in operator mode: the users' JWTs carry exactly the
//! permissions of docs/nats/chat-node-permissions.json (the file the doc
//! shows), made for room `lab`; two nodes with them share the room (lines,
//! `/msg`, `/list`, history, a killed node's participants announced as
//! left; channels, a mute and a kick across nodes) and NATS refuses none
//! of their operations; a node of room `lab`
//! with the credentials of room `other` is refused at start, and says why.

use crate::harness::nats::auth::Secured;
use crate::harness::nats::{TAKEOVER, connect, join, node_at, node_refused, path};
use crate::harness::{Client, Serve, TestCerts, WAIT};
use serde_json::Value;
use std::path::Path;
use tokio::time::Instant;

/// The permissions file docs/cluster.md shows, for room `lab`.
const PERMISSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/nats/chat-node-permissions.json"
);

/// What a node logs for each operation NATS refuses it.
const REFUSED: &str = "NATS refused this node";

/// The documented permissions, for room `room`: each subject with the
/// example's room name `lab` replaced.
fn permissions(room: &str) -> Value {
    let text = std::fs::read_to_string(PERMISSIONS).expect("read the permissions file");
    let mut permissions: Value = serde_json::from_str(&text).expect("the permissions are JSON");
    for list in ["pub", "sub"] {
        let subjects = permissions[list]["allow"]
            .as_array_mut()
            .expect("an allow list");
        for subject in subjects {
            let text = subject.as_str().expect("a subject").replace("lab", room);
            *subject = Value::String(text);
        }
    }
    permissions
}

/// The subjects of one allow list (`pub` or `sub`) of `permissions`.
fn subjects(permissions: &Value, list: &str) -> Vec<String> {
    permissions[list]["allow"]
        .as_array()
        .expect("an allow list")
        .iter()
        .map(|s| s.as_str().expect("a subject").to_owned())
        .collect()
}

/// Node `name` of room `room`, logging in with `creds`, listening.
async fn node(secured: &Secured, certs: &TestCerts, name: &str, room: &str, creds: &Path) -> Serve {
    node_with(secured, certs, name, room, creds, &[]).await
}

/// [`node`], with `extra` arguments.
async fn node_with(
    secured: &Secured,
    certs: &TestCerts,
    name: &str,
    room: &str,
    creds: &Path,
    extra: &[&str],
) -> Serve {
    let mut args = vec![
        "--cluster-room",
        room,
        "--cluster-creds",
        path(creds),
        "--history",
        "1",
    ];
    args.extend(extra);
    node_at(certs, &secured.nats.url(), name, &args).await
}

#[tokio::test]
async fn channels_and_operators_need_nothing_more_than_the_documented_permissions() {
    let secured = Secured::start().await;
    let certs = TestCerts::new();
    let one_creds = secured.creds_with("lab-one", permissions("lab"));
    let two_creds = secured.creds_with("lab-two", permissions("lab"));
    let operators = certs.path("operators.txt");
    std::fs::write(&operators, "alice\n").expect("operators file");
    let ca = certs.ca();
    let mutual = ["--client-ca", path(&ca), "--operators", path(&operators)];
    let (one, two) = tokio::join!(
        node_with(&secured, &certs, "one", "lab", &one_creds, &mutual),
        node_with(&secured, &certs, "two", "lab", &two_creds, &mutual),
    );
    let member = |node: &Serve, name: &str| {
        let (cert, key) = certs.client(name);
        let config = certs.client_tls_as(&cert, &key);
        let addr = crate::harness::nats::addr(node);
        let name = name.to_owned();
        async move {
            let mut client = Client::tls(addr, config).await;
            client.register(&name).await;
            client
        }
    };
    let mut alice = member(&one, "alice").await;
    let mut bob = member(&two, "bob").await;
    alice.expect("bob joined!").await;
    // A channel across both nodes: its subject, its memberships.
    alice.send("/join #ops").await;
    alice.expect("#ops alice joined!").await;
    alice.expect("[join] #ops: 1 here").await;
    bob.send("/join #ops").await;
    bob.expect("#ops bob joined!").await;
    bob.expect("[join] #ops: 2 here").await;
    alice.expect("#ops bob joined!").await;
    bob.send("in ops").await;
    bob.expect("#ops bob: in ops").await;
    alice.expect("#ops bob: in ops").await;
    // An order, and a kick from one node to the other.
    alice.send("/mute bob 1m").await;
    alice
        .until("#ops bob was muted by alice for 1m", WAIT)
        .await;
    bob.expect("#ops bob was muted by alice for 1m").await;
    alice.send("/unmute bob").await;
    bob.until("#ops bob was unmuted by alice", WAIT).await;
    // A topic, kept in the nickname bucket too.
    alice.send("/topic deploy").await;
    alice.until("[topic] #ops: deploy set by alice", WAIT).await;
    bob.until("[topic] #ops: deploy set by alice", WAIT).await;
    alice.send("/kick bob").await;
    let last = bob.until_closed().await;
    assert_eq!(
        last.last().map(String::as_str),
        Some("ERROR kicked by alice")
    );
    alice.until("#ops bob was kicked by alice", WAIT).await;

    let (one_log, two_log) = (one.kill_and_log().await, two.kill_and_log().await);
    for log in [one_log, two_log] {
        assert!(!log.contains(REFUSED), "{log}");
        assert!(!log.contains("does not take the subjects"), "{log}");
        assert!(!log.contains("is not kept"), "{log}");
    }
}

#[tokio::test]
async fn nodes_with_the_documented_permissions_share_the_room() {
    let secured = Secured::start().await;
    let certs = TestCerts::new();
    let one_creds = secured.creds_with("lab-one", permissions("lab"));
    let two_creds = secured.creds_with("lab-two", permissions("lab"));
    let (one, two) = tokio::join!(
        node(&secured, &certs, "one", "lab", &one_creds),
        node(&secured, &certs, "two", "lab", &two_creds),
    );
    let mut alice = join(&certs, &one, "Alice").await;
    let mut bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;

    alice.send("hello, lab").await;
    alice.expect("Alice: hello, lab").await;
    bob.expect("Alice: hello, lab").await;

    // A private line crosses nodes (a NATS request, answered under the
    // user's response permission), both ways.
    bob.send("/msg alice psst").await;
    bob.expect("[private] Bob -> Alice: psst").await;
    alice.expect("[private] Bob -> Alice: psst").await;
    alice.send("/msg Bob back").await;
    alice.expect("[private] Alice -> Bob: back").await;
    bob.expect("[private] Alice -> Bob: back").await;

    // Each node learns the other's nicknames by watching the bucket: ask
    // until both are listed (each answer is a round trip).
    let mut listed = String::new();
    for _ in 0..50 {
        bob.send("/list").await;
        listed = bob.line().await;
        if listed == "[list] 2 here: Alice, Bob" {
            break;
        }
    }
    assert_eq!(listed, "[list] 2 here: Alice, Bob");

    // History is read from the stream by a consumer of its own.
    let mut carol = connect(&certs, &two).await;
    carol.expect("NICK").await;
    carol.send("Carol").await;
    carol.expect("Carol joined!").await;
    carol.expect("Connected to server!").await;
    carol.expect("[history] Alice: hello, lab").await;
    alice.expect("Carol joined!").await;
    bob.expect("Carol joined!").await;

    // Node one dies: node two sees its liveness entry expire and takes
    // Alice's nickname back (a revision-checked delete), announcing her.
    let killed = Instant::now();
    let one_log = one.kill_and_log().await;
    for client in [&mut bob, &mut carol] {
        let left = TAKEOVER.saturating_sub(killed.elapsed());
        let before = client.until("Alice left!", left).await;
        assert!(before.is_empty(), "{before:?}");
    }
    let _alice = join(&certs, &two, "Alice").await;
    bob.expect("Alice joined!").await;

    // NATS refused neither node anything: each refusal is logged.
    let two_log = two.kill_and_log().await;
    for log in [one_log, two_log] {
        assert!(!log.contains(REFUSED), "{log}");
    }
}

#[tokio::test]
async fn a_node_with_another_room_s_credentials_is_refused_and_says_so() {
    let secured = Secured::start().await;
    let certs = TestCerts::new();
    let other = secured.creds_with("other-one", permissions("other"));
    // They are good credentials, for their own room.
    let own_room = node(&secured, &certs, "one", "other", &other).await;
    let own_log = own_room.kill_and_log().await;
    assert!(!own_log.contains(REFUSED), "{own_log}");

    let args = ["--cluster-room", "lab", "--cluster-creds", path(&other)];
    let stderr = node_refused(&certs, &secured.nats.url(), &args).await;
    let line = error_line(&stderr);
    // Which refused operation NATS reports first is its affair: the line
    // names the room, the violation and what to do.
    let start = "error: NATS refused this node access to room \"lab\": Permissions Violation for ";
    let end = format!(
        " (the credentials in {} do not allow the room's stream CHAT_lab and buckets \
         chat_lab_nicks, chat_lab_nodes: see docs/cluster.md for the permissions a node needs)",
        other.display()
    );
    assert!(line.starts_with(start) && line.ends_with(&end), "{stderr}");
    let violation = &line[start.len()..line.len() - end.len()];
    assert!(violation.contains("lab"), "{violation}");
}

#[test]
fn the_permissions_name_one_room_and_the_doc_shows_them() {
    let lab = permissions("lab");
    let other = permissions("other");
    let text = |p: &Value| serde_json::to_string(p).expect("JSON");
    assert!(!text(&other).contains("lab"), "{}", text(&other));
    // Nothing but the room's own names, and no subject open to all rooms.
    for subject in subjects(&lab, "pub").iter().chain(&subjects(&lab, "sub")) {
        assert!(subject.contains("lab"), "{subject}");
    }
    assert_eq!(lab["resp"], serde_json::json!({ "max": 1 }));

    // docs/cluster.md gives the same permissions as an `nsc` command.
    let mut command = String::from("nsc add user --account CHAT --name lab-node \\\n");
    for subject in subjects(&lab, "pub") {
        command.push_str(&format!("  --allow-pub '{subject}' \\\n"));
    }
    for subject in subjects(&lab, "sub") {
        command.push_str(&format!("  --allow-sub '{subject}' \\\n"));
    }
    command.push_str("  --allow-pub-response 1\n");
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cluster.md"))
        .expect("read docs/cluster.md");
    assert!(doc.contains(&command), "docs/cluster.md lacks:\n{command}");
    assert!(doc.contains("nats/chat-node-permissions.json"));
}

/// The one line of `stderr` that reports the error the node exits with.
fn error_line(stderr: &str) -> &str {
    let mut lines = stderr.lines().filter(|l| l.starts_with("error: "));
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert_eq!(lines.next(), None, "{stderr}");
    line
}
