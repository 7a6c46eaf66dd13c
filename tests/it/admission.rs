//! Admission: a participant's place is free again before the others hear it
//! leave, even while its socket still says its last words; the open
//! sockets are capped, whatever they are doing, and a connection beyond
//! the cap is closed at once without touching anyone's chat; and the cap
//! and `--max-participants` follow the open-files limit.

use crate::harness::{BIN, Client, TestServer, WAIT, local, tcp};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_is_free_before_the_others_hear_its_participant_leave() {
    let server = TestServer::start_with(|s| {
        s.max_participants = 2;
        s.backlog = chatroom::room::backlog::MIN_BYTES;
        s.limits.rate = None;
    })
    .await;
    let mut alice = server.join("alice").await;
    // Bob reads nothing, and his kernel takes only a few KiB: once he is
    // dropped as too slow, his socket spends its last words on an error
    // line it cannot deliver, for a while.
    let mut bob = server
        .connect_from(local(2), Some(4096))
        .await
        .expect("bob connects");
    bob.register("bob").await;
    alice.expect("bob joined!").await;

    // One line at a time, each once the last has come back: bob's session
    // keeps up until his socket is full, and only then falls behind, so
    // that when he is dropped his last words cannot be written either.
    let text = "x".repeat(4000);
    let echo = format!("alice: {text}");
    let mut left = false;
    for _ in 0..3000 {
        alice.send(&text).await;
        loop {
            let line = alice.line().await;
            if line == echo {
                break;
            }
            left |= line == "bob left!";
        }
        if left {
            break;
        }
    }
    assert!(left, "bob was never dropped");
    // Whoever hears `left!` can take the place at once: bob's socket is
    // still open (its last words wait), yet his place is free.
    let mut carol = server.connect().await;
    carol.expect("NICK").await;
    carol.send("carol").await;
    assert_eq!(carol.line().await, "carol joined!");
    carol.expect("Connected to server!").await;
    drop(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_beyond_the_cap_are_closed_at_once_and_the_chat_goes_on() {
    // Places to spare, but three sockets in all (the cap `serve` derives
    // from the open-files limit, see the next test).
    let server = TestServer::start_with(|s| {
        s.max_participants = 10;
        s.max_sockets = Some(3);
        s.exempt = vec!["127.0.0.0/8".parse().expect("net")];
    })
    .await;
    let mut alice = server.join("alice").await;
    // Two more sockets that never start TLS: each is a handshake the
    // server waits for, and counts.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tcp(server.addr()).await);
    }
    // The fourth is closed at once: end of stream, no handshake.
    let mut beyond = tcp(server.addr()).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, beyond.read(&mut byte))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The two were accepted and are still waiting (nothing to read, not
    // closed), and alice chats on.
    for tcp in &held {
        match tcp.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a held socket was closed or answered: {other:?}"),
        }
    }
    alice.send("still here").await;
    alice.expect("alice: still here").await;

    // Sockets given back make room again, once the server has seen them
    // close.
    drop(held);
    let mut bob = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(mut bob) = Client::try_tls(server.addr(), server.client_tls.clone()).await
                && bob.next_line().await.as_deref() == Some("NICK")
            {
                return bob;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("room again in time");
    bob.send("bob").await;
    alice.expect("bob joined!").await;
}

#[tokio::test]
async fn max_participants_is_lowered_to_what_the_open_files_limit_allows() {
    let dir = tempfile::tempdir().expect("temp");
    // 1000 descriptors: a reserve of 32 and one in 16 (62) leave 906
    // sockets, of which 64 are for refusals: 842 participants.
    let mut serve = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 1000 && exec {BIN} serve --plaintext --addr 127.0.0.1:0 \
             --max-participants 50000"
        ))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut log = BufReader::new(serve.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = log.next_line().await {
            let listening = line.contains("listening");
            seen.push(line);
            if listening {
                return;
            }
        }
    })
    .await
    .expect("the server starts in time");
    let said = |text: &str| seen.iter().any(|line| line.contains(text));
    assert!(said("open_files=1000 sockets=906"), "{seen:?}");
    assert!(
        said(
            "--max-participants 50000 exceeds what the open-files limit (1000) allows: \
             using 842"
        ),
        "{seen:?}"
    );
    let _ = serve.kill().await;
}
