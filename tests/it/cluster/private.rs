//! Private lines (`/msg`) in a room shared by several nodes: a private
//! line never overtakes the public lines said before it, on the sender's
//! node or another; and a sender whose message could not be delivered (its
//! recipient is not reading) is told so, wherever the recipient is.

use crate::harness::nats::{addr, join, node};
use crate::harness::{Client, Dial, NatsServer, TestCerts, TlsClient, WAIT};
use tokio::time::Instant;

/// Asks `/list` until it names exactly `expected`: each node learns the
/// others' nicknames from the bucket as it watches it.
async fn until_listed(client: &mut TlsClient, expected: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        client.send("/list").await;
        let listed = client.line().await;
        if listed == expected {
            return;
        }
        // Each answer is a round trip: asking again is the wait.
        assert!(
            Instant::now() < deadline,
            "never listed {expected:?}: {listed:?}"
        );
    }
}

/// Reads until `last`; returns every line before it.
async fn transcript_until(client: &mut TlsClient, last: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = client.line().await;
        if line == last {
            return lines;
        }
        lines.push(line);
    }
}

fn position(lines: &[String], wanted: &str) -> usize {
    lines
        .iter()
        .position(|l| l == wanted)
        .unwrap_or_else(|| panic!("{wanted:?} never came: {lines:?}"))
}

#[tokio::test]
async fn a_private_line_never_overtakes_the_public_lines_said_before_it() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, two) = tokio::join!(node(&certs, &nats, "one"), node(&certs, &nats, "two"));
    let mut alice = join(&certs, &one, "alice").await;
    let mut carol = join(&certs, &one, "carol").await;
    let mut bob = join(&certs, &two, "bob").await;
    until_listed(&mut alice, "[list] 3 here: alice, bob, carol").await;

    // Each public line goes through the stream and back; each private line
    // right after it would get to its recipient first, on alice's node
    // (carol) and on the other (bob), were it not held for it.
    const ROUNDS: usize = 20;
    let mut burst = String::new();
    for i in 0..ROUNDS {
        burst.push_str(&format!(
            "public {i}\n/msg bob private {i}\n/msg carol private {i}\n"
        ));
    }
    burst.push_str("done\n");
    alice.send_raw(burst.as_bytes()).await;

    for (client, nick) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        // Every line up to `done` and the last private line, whichever
        // comes last: a public line said after a private one may overtake
        // it (only the public lines said before it may not).
        let mut lines = transcript_until(client, "alice: done").await;
        let last = format!("[private] alice -> {nick}: private {}", ROUNDS - 1);
        if !lines.contains(&last) {
            lines.extend(transcript_until(client, &last).await);
            lines.push(last);
        }
        for i in 0..ROUNDS {
            let public = position(&lines, &format!("alice: public {i}"));
            let private = position(&lines, &format!("[private] alice -> {nick}: private {i}"));
            assert!(
                public < private,
                "{nick} got private {i} before public {i}: {lines:?}"
            );
        }
        let said = lines
            .iter()
            .filter(|l| l.starts_with("alice: ") || l.starts_with("[private]"))
            .count();
        assert_eq!(said, 2 * ROUNDS, "{nick}: {lines:?}");
    }
    // The sender's own echoes came back, and no error.
    let lines = transcript_until(&mut alice, "alice: done").await;
    assert!(!lines.iter().any(|l| l.starts_with("ERROR")), "{lines:?}");
}

#[tokio::test]
async fn a_sender_is_told_when_its_recipient_is_not_reading_on_any_node() {
    let nats = NatsServer::start().await;
    let certs = TestCerts::new();
    let (one, two) = tokio::join!(node(&certs, &nats, "one"), node(&certs, &nats, "two"));
    let mut alice = join(&certs, &one, "alice").await;
    let mut carol = join(&certs, &two, "carol").await;
    // Two participants that stop reading, their kernels taking only a few
    // KiB: one on alice's node, one on the other.
    let mut stuck = Vec::new();
    for (node, nick) in [(&one, "dan"), (&two, "bob")] {
        let dial = Dial {
            recv_buffer: Some(4096),
            ..Dial::default()
        };
        let tls = dial
            .tls(addr(node), certs.client_tls())
            .await
            .expect("handshake");
        let mut client = Client::new(tls);
        client.register(nick).await;
        stuck.push(client);
    }
    until_listed(&mut alice, "[list] 4 here: alice, bob, carol, dan").await;

    let text = "x".repeat(3000);
    for nick in ["dan", "bob"] {
        let told = format!("ERROR \"{nick}\" is not reading; private message not delivered");
        let echo = format!("[private] alice -> {nick}: {text}");
        let mut refused = false;
        // Batches of 50, each closed by a public line of hers: it leaves
        // after her private lines before it have been handed over, so her
        // own queue never fills, and the recipient's fills (after its
        // kernel's buffers) with every line she sent.
        for batch in 0..40 {
            for _ in 0..50 {
                alice.send(&format!("/msg {nick} {text}")).await;
            }
            let mark = format!("mark {nick} {batch}");
            alice.send(&mark).await;
            for line in alice.until(&format!("alice: {mark}"), WAIT).await {
                if line == told {
                    refused = true;
                } else {
                    // Besides her echoes: joins, answers to `/list` from
                    // before, and the last refusals of the recipient before
                    // (told as its node answers, which may be after her
                    // public line).
                    let expected = line == echo
                        || line.ends_with(" joined!")
                        || line.starts_with("[list] ")
                        || line == "ERROR \"dan\" is not reading; private message not delivered";
                    assert!(expected, "{line}");
                }
            }
            if refused {
                break;
            }
        }
        assert!(refused, "{nick}: never refused");
    }

    // Nobody else was held up.
    carol.send("still here").await;
    alice.until("carol: still here", WAIT).await;
    drop(stuck);
}
