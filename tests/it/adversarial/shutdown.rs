//! Stopping the server: every accepted line is delivered, then the
//! farewell and close_notify, within the grace period whatever a stuck
//! client does; SIGTERM and SIGINT stop the binary the same way.

use super::honest::{Ending, Honest, Plan, check_transcripts, next_matching, rest_until_closed};
use super::join_stuck_reader;
use crate::harness::{Client, Serve, TestServer, WAIT};
use chatroom::tls;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{Instant, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_delivers_accepted_lines_then_the_farewell_and_close_notify() {
    let grace = Duration::from_secs(3);
    let server = TestServer::start_with(|s| s.shutdown_grace = grace).await;
    let honest = Honest::start(
        &server,
        Plan {
            until_closed: true,
            ..Plan::few()
        },
    )
    .await;
    let nicks = honest.nicks.clone();
    // Bob joins and then reads nothing until the server has stopped.
    let mut bob = server.join("bob").await;
    let mut alice = server.join("alice").await;
    // Each line accepted (alice hears it back) before the next; bob's copies
    // pile up unread.
    for n in 0..200 {
        alice.send(&format!("last {n}")).await;
        let echo = format!("alice: last {n}");
        next_matching(&mut alice, &nicks, WAIT, |l| l == echo).await;
    }

    let stopping = Instant::now();
    let TestServer { server, certs, .. } = server;
    let stop = tokio::spawn(server.stop());

    let (bob_said, bob_close) = rest_until_closed(&mut bob, &nicks, WAIT).await;
    let (alice_said, alice_close) = rest_until_closed(&mut alice, &nicks, WAIT).await;
    timeout(grace + Duration::from_secs(2), stop)
        .await
        .expect("stop returns within the grace period")
        .expect("stop task")
        .expect("clean stop");
    let stopped_in = stopping.elapsed();
    drop(certs);

    let mut expected: Vec<String> = vec!["alice joined!".into()];
    expected.extend((0..200).map(|n| format!("alice: last {n}")));
    expected.push("Server is shutting down".into());
    assert_eq!(bob_said, expected);
    assert_eq!(
        bob_close,
        Ok(()),
        "bob's stream did not end with close_notify"
    );
    assert_eq!(alice_said, ["Server is shutting down"]);
    assert_eq!(alice_close, Ok(()));
    eprintln!("stopped in {stopped_in:?}");

    // The chatters, interrupted mid-conversation, all heard the same lines
    // up to the farewell, and the farewell last, with a clean close.
    let (sent, transcripts) = honest.collect().await;
    check_transcripts(&transcripts, &sent, false);
    for t in &transcripts {
        assert_eq!(t.ending, Ending::Clean, "{}", t.nick);
        assert_eq!(
            t.lines.last().map(String::as_str),
            Some("Server is shutting down"),
            "{}",
            t.nick
        );
        assert!(t.lines.iter().any(|l| l == "alice: last 199"), "{}", t.nick);
    }
    let first = &transcripts[0].lines;
    let from = first.iter().position(|l| l == "alice joined!").unwrap();
    for t in &transcripts[1..] {
        let at = t.lines.iter().position(|l| l == "alice joined!").unwrap();
        assert!(
            t.lines[at..] == first[from..],
            "{} heard another ending",
            t.nick
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_does_not_wait_for_a_stuck_client_beyond_the_grace_period() {
    let grace = Duration::from_secs(1);
    let server = TestServer::start_with(|s| s.shutdown_grace = grace).await;
    let stuck = join_stuck_reader(&server).await;
    let mut alice = server.join("alice").await;
    // 6 MB the stuck client never reads: more than the kernel buffers
    // between them hold, so its session is blocked writing when the stop
    // comes. One line at a time (each heard back before the next).
    let pad = "s".repeat(4000);
    for n in 0..1500 {
        alice.send(&format!("{n} {pad}")).await;
        let echo = format!("alice: {n} ");
        next_matching(&mut alice, &[], WAIT, |l| l.starts_with(&echo)).await;
    }
    let stopping = Instant::now();
    let stop = tokio::spawn(server.server.stop());
    let (said, close) = rest_until_closed(&mut alice, &[], WAIT).await;
    assert_eq!(said, ["Server is shutting down"]);
    assert_eq!(close, Ok(()));
    timeout(grace + Duration::from_secs(2), stop)
        .await
        .expect("stop returns soon after the grace period")
        .expect("stop task")
        .expect("clean stop");
    eprintln!("stopped in {:?} with a stuck client", stopping.elapsed());
    drop(stuck);
}

#[tokio::test]
async fn sigterm_stops_the_binary_with_status_zero_after_saying_goodbye() {
    stops_with_status_zero_after_saying_goodbye("TERM").await;
}

/// Ctrl-C in the server's terminal: the same graceful stop as SIGTERM.
#[tokio::test]
async fn sigint_stops_the_binary_with_status_zero_after_saying_goodbye() {
    stops_with_status_zero_after_saying_goodbye("INT").await;
}

/// Runs the built server with two participants, sends it `signal` (by
/// name) and checks the graceful stop: the line said before it, the
/// farewell, close_notify, exit status 0.
async fn stops_with_status_zero_after_saying_goodbye(signal: &str) {
    let tmp = tempfile::tempdir().expect("temp");
    let mut serve = Serve::start(tmp.path(), &[]).await;
    let addr: SocketAddr = serve.addr.parse().expect("addr");
    let config = tls::client_config(&tmp.path().join("certs/ca.pem")).expect("client config");
    let mut alice = Client::tls(addr, config.clone()).await;
    alice.register("alice").await;
    let mut bob = Client::tls(addr, config).await;
    bob.register("bob").await;
    alice.expect("bob joined!").await;
    alice.send("before the signal").await;
    alice.expect("alice: before the signal").await;

    serve.signal(signal).await;

    let (bob_said, bob_close) = rest_until_closed(&mut bob, &[], WAIT).await;
    assert_eq!(
        bob_said,
        ["alice: before the signal", "Server is shutting down"]
    );
    assert_eq!(bob_close, Ok(()));
    let (alice_said, _) = rest_until_closed(&mut alice, &[], WAIT).await;
    assert_eq!(alice_said, ["Server is shutting down"]);
    let status = timeout(WAIT, serve.child.wait())
        .await
        .expect("serve exits in time")
        .expect("wait");
    let log = serve.kill_and_log().await;
    assert_eq!(
        status.code(),
        Some(0),
        "serve exited with {status} on SIG{signal}; log: {log:#?}"
    );
}
