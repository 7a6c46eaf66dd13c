//! One room across several `serve` nodes through a real nats-server
//! (JetStream), started by each test on a free loopback port: the lab's dry
//! run spread over three nodes, one order for everyone, nicknames unique
//! across nodes, a node killed outright, and `connect` given several
//! addresses. The broker's outages are in `outage`.

use crate::harness::nats::{TAKEOVER, connect, join, node, node_refused, node_with, path};
use crate::harness::{BIN, NatsServer, Serve, TestCerts, WAIT};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

#[tokio::test]
async fn the_labs_dry_run_over_three_nodes() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, two, three) = tokio::join!(
        node(&certs, &nats, "one"),
        node(&certs, &nats, "two"),
        node(&certs, &nats, "three"),
    );
    let mut alice = join(&certs, &one, "Alice").await;
    let mut bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;
    let mut charlie = join(&certs, &three, "Charlie").await;
    alice.expect("Charlie joined!").await;
    bob.expect("Charlie joined!").await;

    alice.send("Hello everyone!").await;
    for client in [&mut alice, &mut bob, &mut charlie] {
        client.expect("Alice: Hello everyone!").await;
    }
    charlie.close().await;
    alice.expect("Charlie left!").await;
    bob.expect("Charlie left!").await;

    // Nothing else was said: after the shutdown notice the transcripts end.
    // The room goes on on the other nodes, which hear Alice leave.
    one.signal("TERM").await;
    assert_eq!(alice.until_closed().await, ["Server is shutting down"]);
    bob.expect("Alice left!").await;
    two.signal("TERM").await;
    assert_eq!(bob.until_closed().await, ["Server is shutting down"]);
}

#[tokio::test]
async fn twelve_clients_on_three_nodes_see_one_order() {
    const CLIENTS: usize = 12;
    const MESSAGES: usize = 30;
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (a, b, c) = tokio::join!(
        node(&certs, &nats, "a"),
        node(&certs, &nats, "b"),
        node(&certs, &nats, "c"),
    );
    let nodes = [&a, &b, &c];
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(join(&certs, nodes[i % 3], &format!("c{i}")).await);
    }
    // Everyone at once.
    let sends = clients
        .iter_mut()
        .enumerate()
        .map(|(i, client)| async move {
            let burst: String = (0..MESSAGES).map(|m| format!("{i}.{m}\n")).collect();
            client.send_raw(burst.as_bytes()).await;
        });
    futures_util::future::join_all(sends).await;

    let reads = clients.iter_mut().map(|client| async move {
        let mut messages = Vec::new();
        while messages.len() < CLIENTS * MESSAGES {
            let line = client.line().await;
            if !line.ends_with(" joined!") {
                messages.push(line);
            }
        }
        messages
    });
    let transcripts = futures_util::future::join_all(reads).await;
    let first = &transcripts[0];
    for (i, transcript) in transcripts.iter().enumerate() {
        assert_eq!(transcript, first, "client {i} saw another order");
    }
    // Each sender's lines in its order, none missing, none twice.
    let mut next = [0usize; CLIENTS];
    for line in first {
        let (sender, text) = line.split_once(": ").expect("a message line");
        let i: usize = sender[1..].parse().expect("sender number");
        assert_eq!(text, format!("{i}.{}", next[i]), "out of order: {line}");
        next[i] += 1;
    }
    assert_eq!(next, [MESSAGES; CLIENTS]);
}

#[tokio::test]
async fn a_nickname_is_unique_across_nodes_and_freed_when_its_owner_leaves() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, two) = tokio::join!(node(&certs, &nats, "one"), node(&certs, &nats, "two"));
    let mut alice = join(&certs, &one, "Alice").await;
    let bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;

    for (node, name) in [(&two, "Bob"), (&one, "BOB"), (&two, "alice")] {
        let mut client = connect(&certs, node).await;
        client.expect("NICK").await;
        client.send(name).await;
        client
            .expect(&format!("ERROR nickname \"{name}\" is taken"))
            .await;
    }

    bob.close().await;
    alice.expect("Bob left!").await;
    // Free everywhere, in another case too.
    let bob_again = join(&certs, &one, "bOb").await;
    alice.expect("bOb joined!").await;
    bob_again.close().await;
    alice.expect("bOb left!").await;
    let _bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;
}

#[tokio::test]
async fn a_killed_node_s_participants_leave_and_the_others_chat_on() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, mut two, three) = tokio::join!(
        node(&certs, &nats, "one"),
        node(&certs, &nats, "two"),
        node(&certs, &nats, "three"),
    );
    let mut alice = join(&certs, &one, "Alice").await;
    let mut bob = join(&certs, &two, "Bob").await;
    let mut carol = join(&certs, &three, "Carol").await;
    alice.expect("Bob joined!").await;
    alice.expect("Carol joined!").await;
    bob.expect("Carol joined!").await;
    bob.send("mid-sentence").await;
    for client in [&mut alice, &mut carol] {
        client.expect("Bob: mid-sentence").await;
    }

    two.child.start_kill().expect("kill -9");
    let killed = Instant::now();
    // The others keep chatting without a gap.
    for i in 0..5 {
        alice.send(&format!("still here {i}")).await;
        carol.expect(&format!("Alice: still here {i}")).await;
    }
    for client in [&mut alice, &mut carol] {
        let left = TAKEOVER.saturating_sub(killed.elapsed());
        let before = client.until("Bob left!", left).await;
        assert!(
            before.iter().all(|l| l.starts_with("Alice: still here")),
            "{before:?}"
        );
    }
    // The name is free at once, and everyone hears the newcomer.
    let _bob = join(&certs, &three, "Bob").await;
    alice.expect("Bob joined!").await;
    carol.expect("Bob joined!").await;
    assert!(killed.elapsed() < TAKEOVER, "took {:?}", killed.elapsed());
    // Exactly one node announced it.
    alice.send("end").await;
    alice.expect("Alice: end").await;
    carol.expect("Alice: end").await;
}

#[tokio::test]
async fn a_node_that_cannot_reach_nats_says_so_and_exits() {
    let nats = NatsServer::start().await;
    let port = nats.port;
    drop(nats);
    let certs = TestCerts::new();
    let url = format!("nats://127.0.0.1:{port}");
    let stderr = node_refused(&certs, &url, &[]).await;
    assert!(
        stderr.contains(&format!("cannot reach NATS at {url}")),
        "{stderr}"
    );
    // The cause, once.
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test]
async fn connect_tries_the_next_address() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let one = node(&certs, &nats, "one").await;
    let mut alice = join(&certs, &one, "alice").await;
    // A port nobody listens on, first.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let addrs = format!("{dead},{}", one.addr);
    let mut client = Command::new(BIN)
        .args(["connect", "--addr", &addrs, "--nick", "bob", "--ca"])
        .arg(certs.ca())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("connect starts");
    let mut stdout = BufReader::new(client.stdout.take().expect("stdout")).lines();
    for expected in ["bob joined!", "Connected to server!"] {
        let line = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a line");
        assert_eq!(line, expected);
    }
    alice.expect("bob joined!").await;
    let stdin = client.stdin.as_mut().expect("stdin");
    stdin.write_all(b"hi\n").await.expect("write");
    stdin.flush().await.expect("flush");
    alice.expect("bob: hi").await;
}

#[tokio::test]
async fn the_link_to_nats_can_be_tls_with_a_pinned_ca_and_must_be() {
    // The NATS server presents a certificate from gen-certs (for
    // 127.0.0.1); the nodes trust that CA alone.
    let nats_certs = TestCerts::new();
    let cert = nats_certs.path(chatroom::certs::SERVER_CERT);
    let key = nats_certs.path(chatroom::certs::SERVER_KEY);
    let nats =
        NatsServer::start_with(&["--tls", "--tlscert", path(&cert), "--tlskey", path(&key)]).await;
    let certs = TestCerts::new();
    let ca = nats_certs.ca();
    let with_ca = ["--cluster-ca", path(&ca)];
    let (one, two) = tokio::join!(
        node_with(&certs, &nats, "one", &with_ca),
        node_with(&certs, &nats, "two", &with_ca),
    );
    let mut alice = join(&certs, &one, "alice").await;
    let mut bob = join(&certs, &two, "bob").await;
    alice.expect("bob joined!").await;
    bob.send("over TLS").await;
    alice.expect("bob: over TLS").await;

    // Another CA: the node refuses the NATS server and exits non-zero.
    let other = TestCerts::new();
    let stderr = node_refused(&certs, &nats.url(), &["--cluster-ca", path(&other.ca())]).await;
    assert!(stderr.contains("cannot reach NATS"), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");

    // With --cluster-ca the link must be TLS: a NATS server that speaks
    // plain NATS is refused, never used in the clear.
    let plain = NatsServer::start().await;
    let stderr = node_refused(&certs, &plain.url(), &with_ca).await;
    assert!(
        stderr.contains(&format!(
            "error: NATS at {} does not answer in TLS, and with --cluster-ca {} the link to \
             NATS must be TLS",
            plain.url(),
            ca.display()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn two_live_nodes_cannot_share_a_name() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let _first = node(&certs, &nats, "twin").await;
    let stderr = node_refused(&certs, &nats.url(), &["--node-name", "twin"]).await;
    assert!(
        stderr.contains("a node named \"twin\" is already in room \"lobby\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn connect_names_every_address_it_tried() {
    let certs = TestCerts::new();
    let dead: Vec<String> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .to_string()
        })
        .collect();
    let run = Command::new(BIN)
        .args(["connect", "--addr", &dead.join(","), "--nick", "x", "--ca"])
        .arg(certs.ca())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .expect("exits in time")
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to any of"), "{stderr}");
    for addr in &dead {
        assert!(stderr.contains(addr.as_str()), "{stderr}");
    }
}

#[tokio::test]
async fn a_node_given_several_nats_addresses_uses_one_that_answers() {
    let nats = NatsServer::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let certs = TestCerts::new();
    let cert = certs.path(chatroom::certs::SERVER_CERT);
    let key = certs.path(chatroom::certs::SERVER_KEY);
    let urls = format!("nats://{dead},{}", nats.url());
    let one = Serve::start(
        certs.dir.path(),
        &[
            "--cert",
            path(&cert),
            "--key",
            path(&key),
            "--cluster",
            &urls,
        ],
    )
    .await;
    let two = node(&certs, &nats, "two").await;
    let mut alice = join(&certs, &one, "alice").await;
    let mut bob = join(&certs, &two, "bob").await;
    alice.expect("bob joined!").await;
    alice.send("via either").await;
    bob.expect("alice: via either").await;
}

#[tokio::test]
async fn chat_commands_and_history_work_across_nodes() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, two) = tokio::join!(
        node_with(&certs, &nats, "one", &["--history", "1"]),
        node_with(&certs, &nats, "two", &["--history", "1"]),
    );
    let mut alice = join(&certs, &one, "Alice").await;
    let mut bob = join(&certs, &two, "Bob").await;
    alice.expect("Bob joined!").await;

    // An action is a public line, in the one order, on every node.
    alice.send("/me waves").await;
    alice.expect("* Alice waves").await;
    bob.expect("* Alice waves").await;

    // A private line crosses nodes to its recipient alone (named in any
    // case), and comes back to its sender.
    bob.send("/msg alice psst").await;
    bob.expect("[private] Bob -> Alice: psst").await;
    alice.expect("[private] Bob -> Alice: psst").await;
    bob.send("/msg nobody hi").await;
    bob.expect("ERROR no such nickname \"nobody\"").await;

    // `/list` names everybody in the room, on every node, in alphabetical
    // order. Each node learns the others' nicknames from the bucket as it
    // watches it, so ask until both are there (each answer is a round trip).
    let mut listed = String::new();
    for _ in 0..50 {
        bob.send("/list").await;
        listed = bob.line().await;
        if listed == "[list] 2 here: Alice, Bob" {
            break;
        }
    }
    assert_eq!(listed, "[list] 2 here: Alice, Bob");

    // A newcomer on either node gets the last public line, from the stream,
    // marked as history; then `/quit` with a reason reaches the others.
    let mut carol = connect(&certs, &one).await;
    carol.expect("NICK").await;
    carol.send("Carol").await;
    carol.expect("Carol joined!").await;
    carol.expect("Connected to server!").await;
    carol.expect("[history] * Alice waves").await;
    alice.expect("Carol joined!").await;
    bob.expect("Carol joined!").await;
    carol.send("/quit lunch").await;
    alice.expect("Carol left! (lunch)").await;
    bob.expect("Carol left! (lunch)").await;
}
