//! Slow, stuck and silent participants among honest chatters: a stuck
//! reader is dropped and nobody else loses a line, a burst in one write
//! arrives whole, a lone speaker of long lines keeps being read, and a
//! participant that says nothing is disconnected as idle.

use super::honest::{Honest, Plan, next_matching, rest_until_closed, said_by};
use super::join_stuck_reader;
use crate::harness::{TestServer, WAIT};
use std::time::Duration;
use tokio::time::{Instant, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_is_dropped_and_twenty_full_speed_chatters_lose_nothing() {
    // A backlog far below the 16 MiB the chatters say, so the stuck reader
    // is dropped early; and four times what an honest chatter may have
    // unread when a loaded machine leaves it unscheduled for a moment.
    let server = TestServer::start_with(|s| s.backlog = 1024 * 1024).await;
    let mut honest = Honest::start(
        &server,
        Plan {
            clients: 20,
            prefix: "c",
            payload: 2048,
            pace: None,
            max_messages: 400,
            window: Some(4),
            until_closed: false,
        },
    )
    .await;
    // It joins, then never reads again; a small receive buffer makes its
    // kernel stop taking bytes after a few KiB.
    let mut stuck = join_stuck_reader(&server).await;

    let seen = honest.wait_for("stuck left!").await;
    assert!(
        !seen.iter().any(|l| l.ends_with(" left!")),
        "an honest client was dropped: {seen:?}"
    );
    let transcripts = timeout(WAIT * 3, honest.finish())
        .await
        .expect("chatters finish");
    let worst = transcripts.iter().map(|t| t.max_latency).max().unwrap();
    eprintln!(
        "20 chatters x {} lines of 2 KiB; worst echo latency {worst:?}",
        said_by(&transcripts[0], "c0").len() - 1
    );
    assert!(worst < WAIT, "an honest line took {worst:?}");

    // Whatever the stuck client finally reads is an unbroken prefix of the
    // room's order from its join on: it was cut off, never shown a gap.
    let reference = &transcripts[0].lines;
    let start = reference
        .iter()
        .position(|l| l == "stuck joined!")
        .expect("stuck joined")
        + 1;
    let mut got = Vec::new();
    while let Ok(Some(line)) = timeout(WAIT, stuck.conn.read_line())
        .await
        .expect("stuck client's stream ends")
    {
        got.push(String::from_utf8(line.to_vec()).expect("UTF-8"));
    }
    if got.last().is_some_and(|l| l.starts_with("ERROR")) {
        assert_eq!(got.pop().as_deref(), Some("ERROR disconnected: too slow"));
    }
    assert!(
        got.len() < reference.len() - start,
        "stuck client got everything"
    );
    assert!(
        got[..] == reference[start..start + got.len()],
        "the stuck client's lines are not a prefix of the room's order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_lines_in_one_write_arrives_whole_and_in_order() {
    const BURST: usize = 300;
    let server = TestServer::start().await;
    let mut honest = Honest::start(&server, Plan::few()).await;
    let mut burster = server.join("burster").await;
    // Three hundred short lines, pipelined in a single write.
    let mut burst = Vec::new();
    for n in 0..BURST {
        burst.extend_from_slice(format!("b{n}\n").as_bytes());
    }
    burster.send_raw(&burst).await;
    burster.send("end of burst").await;
    let mut echoed = Vec::new();
    loop {
        let line = next_matching(&mut burster, &honest.nicks, WAIT, |l| {
            l.starts_with("burster: ")
        })
        .await;
        if line == "burster: end of burst" {
            break;
        }
        echoed.push(line["burster: ".len()..].to_owned());
    }
    let expected: Vec<String> = (0..BURST).map(|n| format!("b{n}")).collect();
    let missing: Vec<&String> = expected.iter().filter(|l| !echoed.contains(l)).collect();
    assert!(
        missing.is_empty(),
        "lines of the burst never arrived: {missing:?}"
    );
    assert_eq!(echoed, expected, "the burst arrived out of order");
    honest.wait_for("burster: end of burst").await;
    let transcripts = honest.finish().await;
    for t in &transcripts {
        let heard: Vec<&str> = said_by(t, "burster");
        assert_eq!(
            heard.len(),
            BURST + 1,
            "{} heard {} of the burst's lines",
            t.nick,
            heard.len()
        );
    }
}

/// No honest chatter here on purpose: anybody else's line would wake the
/// session up and hide the problem.
#[tokio::test]
async fn a_lone_speaker_of_long_lines_keeps_being_read() {
    let server = TestServer::start_with(|s| s.limits.max_line = 32 * 1024).await;
    let mut alice = server.join("alice").await;
    // One line whose echo alone fills a whole 16 KiB write batch, with
    // nothing waiting behind it.
    let long = "a".repeat(20_000);
    alice.send(&long).await;
    assert_eq!(alice.line().await, format!("alice: {long}"));
    alice.send("are you still reading me?").await;
    alice.expect("alice: are you still reading me?").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_participant_in_a_busy_room_is_disconnected_as_idle() {
    let idle = Duration::from_secs(1);
    let server = TestServer::start_with(|s| s.limits.idle_timeout = Some(idle)).await;
    // The honest clients speak every 20 ms, so they are never idle.
    let mut honest = Honest::start(&server, Plan::few()).await;
    let mut lurker = server.join("lurker").await;
    let since = Instant::now();
    let line = next_matching(&mut lurker, &honest.nicks, idle + WAIT, |l| {
        l.starts_with("ERROR")
    })
    .await;
    assert_eq!(line, "ERROR disconnected: idle");
    assert!(since.elapsed() + Duration::from_millis(50) >= idle);
    let (said, _) = rest_until_closed(&mut lurker, &honest.nicks, WAIT).await;
    assert!(said.is_empty(), "{said:?}");
    honest.wait_for("lurker joined!").await;
    honest.wait_for("lurker left!").await;
    honest.finish().await;
}

#[tokio::test]
async fn a_silent_participant_in_a_quiet_room_is_disconnected_as_idle() {
    let idle = Duration::from_millis(500);
    let server = TestServer::start_with(|s| s.limits.idle_timeout = Some(idle)).await;
    let mut quiet = server.join("quiet").await;
    let since = Instant::now();
    assert_eq!(quiet.line().await, "ERROR disconnected: idle");
    assert!(since.elapsed() + Duration::from_millis(50) >= idle);
    assert!(quiet.until_closed().await.is_empty());
}
