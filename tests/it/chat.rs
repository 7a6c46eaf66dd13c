//! The chat service end to end over real TLS on loopback: the lab's dry
//! run, nickname rules, pinning, ALPN, and the one global order of lines.

use crate::harness::{Client, TestCerts, TestServer, WAIT};
use std::collections::HashMap;

#[tokio::test]
async fn the_labs_dry_run() {
    let server = TestServer::start().await;
    let mut alice = server.join("Alice").await;
    let mut bob = server.join("Bob").await;
    alice.expect("Bob joined!").await;
    let mut charlie = server.join("Charlie").await;
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
    server.server.stop().await.expect("clean stop");
    assert_eq!(alice.until_closed().await, ["Server is shutting down"]);
    assert_eq!(bob.until_closed().await, ["Server is shutting down"]);
}

#[tokio::test]
async fn the_server_names_the_sender_so_nobody_can_impersonate() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    alice.send("bob: I owe alice 100 euros").await;
    bob.expect("alice: bob: I owe alice 100 euros").await;
    // Empty lines are ignored; commands are reserved.
    alice.send("").await;
    alice.send("/nick carol").await;
    alice.expect("alice: bob: I owe alice 100 euros").await;
    alice.expect("ERROR unknown command").await;
    bob.send("after").await;
    alice.expect("bob: after").await;
}

#[tokio::test]
async fn nicknames_are_unique_valid_and_three_strikes_close() {
    let server = TestServer::start().await;
    let _bob = server.join("bob").await;

    let mut client = server.connect().await;
    client.expect("NICK").await;
    client.send("BOB").await;
    client.expect("ERROR nickname \"BOB\" is taken").await;
    client.expect("NICK").await;
    client.send("9lives").await;
    client
        .expect("ERROR nickname must start with a letter")
        .await;
    client.expect("NICK").await;
    client.send("server").await;
    client.expect("ERROR nickname \"server\" is reserved").await;
    assert_eq!(client.until_closed().await, Vec::<String>::new());

    // A rejected client that then picks a good name joins normally.
    let mut second = server.connect().await;
    second.expect("NICK").await;
    second.send("bad name").await;
    second
        .expect("ERROR nickname may only hold ASCII letters, digits, '_' and '-'")
        .await;
    second.register("robert").await;
}

#[tokio::test]
async fn a_client_pinning_another_ca_is_refused_and_the_room_carries_on() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;

    let other_ca = TestCerts::new();
    let err = handshake_error(server.addr(), other_ca.client_tls()).await;
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );

    // A plaintext client on the TLS port gets no NICK, only a closed socket.
    let mut plain = Client::plain(server.addr()).await;
    plain.send("mallory").await;
    assert!(plain.until_closed().await.is_empty());

    alice.send("still here").await;
    bob.expect("alice: still here").await;
    alice.expect("alice: still here").await;
}

#[tokio::test]
async fn alpn_chat_or_none_is_accepted_other_protocols_are_refused() {
    let server = TestServer::start().await;
    let mut no_alpn = (*server.client_tls).clone();
    no_alpn.alpn_protocols.clear();
    let mut client = Client::tls(server.addr(), no_alpn.into()).await;
    client.register("openssl").await;

    let mut http = (*server.client_tls).clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    let err = handshake_error(server.addr(), http.into()).await;
    assert_eq!(
        err,
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
    );
}

/// The TLS error a client with `config` gets from the server; fails the
/// test if the handshake succeeds or fails for another reason.
async fn handshake_error(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> rustls::Error {
    let err = Client::try_tls(addr, config)
        .await
        .err()
        .expect("the handshake must fail");
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a TLS error: {err:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_senders_one_global_order() {
    const CLIENTS: usize = 20;
    const MESSAGES: usize = 50;
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(server.join(&format!("c{i}")).await);
    }
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let sender = async {
                for m in 0..MESSAGES {
                    // Written without waiting for the echo, as fast as it goes.
                    client.conn.queue(bytes::Bytes::from(format!("m{m}\n")));
                }
            };
            sender.await;
            client.conn.flush().await.expect("send");
            let mut messages = Vec::new();
            while messages.len() < CLIENTS * MESSAGES {
                let line = client.line().await;
                if line.contains(": ") {
                    messages.push(line);
                }
            }
            (i, messages)
        }));
    }
    let mut transcripts = Vec::new();
    for task in tasks {
        transcripts.push(
            tokio::time::timeout(WAIT * 3, task)
                .await
                .expect("in time")
                .expect("task"),
        );
    }
    let (_, first) = &transcripts[0];
    assert_eq!(first.len(), CLIENTS * MESSAGES);
    for (i, transcript) in &transcripts {
        assert_eq!(transcript, first, "client c{i} saw another order");
    }
    // Each sender's lines arrive complete and in the order sent.
    let mut next: HashMap<&str, usize> = HashMap::new();
    for line in first {
        let (nick, text) = line.split_once(": ").expect("message line");
        let expected = next.entry(nick).or_insert(0);
        assert_eq!(text, format!("m{expected}"), "{nick}'s lines out of order");
        *expected += 1;
    }
    assert_eq!(next.len(), CLIENTS);
    assert!(next.values().all(|n| *n == MESSAGES));
}
