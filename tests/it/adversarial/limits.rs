//! The limits an attacker meets while honest clients chat: the handshake
//! deadline against a thousand silent connections, the line length, the
//! participant and per-address caps, and the rate limit, which holds a
//! flooder back through TCP alone.

use super::honest::{
    Honest, LineReader, Plan, Transcript, closed_within, everyone_saw, is_chatter, next_matching,
    nobody_saw, rest_until_closed,
};
use crate::harness::{Dial, TestServer, WAIT, tcp};
use chatroom::server::rate::RateLimit;
use std::io;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_do_not_delay_a_real_client() {
    const IDLE: usize = 1000;
    let handshake_timeout = Duration::from_secs(4);
    let server = TestServer::start_with(|s| s.limits.handshake_timeout = handshake_timeout).await;
    let mut honest = Honest::start(&server, Plan::few()).await;

    // Half send nothing at all, half the first bytes of a ClientHello.
    let first_opened = Instant::now();
    let mut idle = Vec::new();
    for i in 0..IDLE {
        let mut tcp = tcp(server.addr()).await;
        if i % 2 == 1 {
            tcp.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
        }
        idle.push((tcp, Instant::now()));
    }
    // And one that completes TLS but never answers NICK.
    let mut mute = server.connect().await;
    let mute_since = Instant::now();
    mute.expect("NICK").await;

    let asked = Instant::now();
    let mut real = server.join("latecomer").await;
    let took = asked.elapsed();
    eprintln!(
        "{IDLE} idle connections opened in {:?}; a real client registered in {took:?}",
        asked - first_opened
    );
    // None of the idle ones was dropped yet: the real client got in while
    // they were all still holding their connections.
    for (tcp, _) in &idle {
        let mut probe = [0u8; 1];
        assert_eq!(
            tcp.try_read(&mut probe).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "an idle connection was closed before the real client got in"
        );
    }
    real.send("made it").await;
    next_matching(&mut real, &honest.nicks, WAIT, |l| {
        l == "latecomer: made it"
    })
    .await;
    honest.wait_for("latecomer joined!").await;
    honest.wait_for("latecomer: made it").await;

    // Then every idle connection is closed, none before its deadline.
    for (mut tcp, opened) in idle {
        assert!(
            closed_within(&mut tcp, handshake_timeout + WAIT).await,
            "an idle connection was never closed"
        );
        let lived = opened.elapsed();
        assert!(
            lived + Duration::from_millis(50) >= handshake_timeout,
            "closed after {lived:?}"
        );
    }
    let (said, close) = rest_until_closed(&mut mute, &honest.nicks, WAIT).await;
    assert_eq!(said, ["ERROR timed out waiting for a nickname"]);
    assert!(close.is_ok(), "{close:?}");
    assert!(mute_since.elapsed() + Duration::from_millis(50) >= handshake_timeout);

    honest.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_lines_get_an_error_and_close_only_that_connection() {
    let server = TestServer::start_with(|s| s.limits.max_line = 200).await;
    let mut honest = Honest::start(&server, Plan::few()).await;

    // One byte over, as a whole line.
    let mut over = server.join("over").await;
    honest.wait_for("over joined!").await;
    over.send(&"y".repeat(201)).await;
    let (said, close) = rest_until_closed(&mut over, &honest.nicks, WAIT).await;
    assert_eq!(said, ["ERROR line too long"]);
    assert!(close.is_ok(), "{close:?}");
    honest.wait_for("over left!").await;

    // A line exactly at the limit is fine.
    let mut exact = server.join("exact").await;
    exact.send(&"z".repeat(200)).await;
    let echo = next_matching(&mut exact, &honest.nicks, WAIT, |l| l.starts_with("exact:")).await;
    assert_eq!(echo, format!("exact: {}", "z".repeat(200)));

    // A 64 KiB blob with no newline at all.
    let mut blob = server.join("blob").await;
    blob.send_raw(&vec![b'b'; 64 * 1024]).await;
    let (said, close) = rest_until_closed(&mut blob, &honest.nicks, WAIT).await;
    assert_eq!(said, ["ERROR line too long"], "close: {close:?}");

    // An overlong nickname line, before joining.
    let mut nick = server.connect().await;
    nick.expect("NICK").await;
    nick.send(&"n".repeat(300)).await;
    assert_eq!(nick.until_closed().await, ["ERROR line too long"]);

    let transcripts = honest.finish().await;
    everyone_saw(&transcripts, "blob left!");
    nobody_saw(
        &transcripts,
        |l| l.contains("yyyy") || l.contains("bbbb"),
        "an overlong line",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_participants_a_newcomer_hears_server_full() {
    // Three honest clients and one more make four.
    let server = TestServer::start_with(|s| s.max_participants = 4).await;
    let mut honest = Honest::start(&server, Plan::few()).await;
    let mut fourth = server.join("fourth").await;
    honest.wait_for("fourth joined!").await;

    for _ in 0..3 {
        let mut fifth = server.connect().await;
        assert_eq!(fifth.until_closed().await, ["ERROR server full"]);
    }
    // Once somebody leaves, there is room again.
    let _ = fourth.conn.shutdown().await;
    let _ = rest_until_closed(&mut fourth, &honest.nicks, WAIT).await;
    // The place is given back before the others hear `left!`, so whoever
    // hears it can take it at once.
    honest.wait_for("fourth left!").await;
    let mut newcomer = server.join("newcomer").await;
    newcomer.send("hello").await;
    honest.wait_for("newcomer: hello").await;

    honest.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_per_ip_the_extra_connection_is_refused() {
    let server = TestServer::start_with(|s| {
        s.max_per_ip = 5;
        s.exempt = Vec::new();
    })
    .await;
    let mut honest = Honest::start(&server, Plan::few()).await;
    // Two more from the same address: one joined, one still at NICK (a
    // connection counts from accept, not from joining).
    let mut joined = server.join("joined").await;
    let mut pending = server.connect().await;
    pending.expect("NICK").await;

    let mut sixth = server.connect().await;
    assert_eq!(
        sixth.until_closed().await,
        ["ERROR too many connections from your address"]
    );

    let _ = joined.conn.shutdown().await;
    let _ = rest_until_closed(&mut joined, &honest.nicks, WAIT).await;
    honest.wait_for("joined left!").await;
    // The address's count falls once the server has closed joined's socket,
    // a moment after joined saw it close (a closing socket still counts).
    // A newcomer refused in that moment is told so, and asks again once the
    // refusal's own connection is closed: paced by the server, no timer.
    let mut again = None;
    for _ in 0..20 {
        let mut client = server.connect().await;
        match client.line().await.as_str() {
            "NICK" => {
                again = Some(client);
                break;
            }
            "ERROR too many connections from your address" => {
                let _ = client.until_closed().await;
            }
            other => panic!("unexpected greeting {other:?}"),
        }
    }
    let mut again = again.expect("a place within 20 tries");
    again.send("again").await;
    again.expect("again joined!").await;
    again.expect("Connected to server!").await;
    again.send("back in").await;
    honest.wait_for("again: back in").await;
    pending.send("pending").await;
    pending.expect("pending joined!").await;
    pending.expect("Connected to server!").await;

    honest.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_held_back_by_tcp_loses_nothing_and_slows_nobody() {
    const FLOOD: usize = 500;
    let rate = RateLimit {
        per_second: 200.0,
        burst: 10,
    };
    let server = TestServer::start_with(|s| s.limits.rate = Some(rate)).await;
    let mut honest = Honest::start(&server, Plan::few()).await;

    // The flooder writes 500 lines of 1 KiB as fast as TCP takes them, and
    // reads its echoes at the same time.
    // Its kernel takes only a few KiB at a time from it, so that a server
    // that does not read is felt at once.
    let dial = Dial {
        send_buffer: Some(4096),
        ..Dial::default()
    };
    let stream = dial
        .tls(server.addr(), server.client_tls.clone())
        .await
        .expect("TLS handshake");
    let (read, mut write) = tokio::io::split(stream);
    let mut read = LineReader::new(read);
    assert_eq!(read.line().await, "NICK");
    write.write_all(b"flooder\n").await.expect("nick");
    write.flush().await.expect("flush");
    assert_eq!(read.line().await, "flooder joined!");
    assert_eq!(read.line().await, "Connected to server!");
    honest.wait_for("flooder joined!").await;

    let pad = "f".repeat(1000);
    let writer = tokio::spawn(async move {
        for n in 0..FLOOD {
            write
                .write_all(format!("{n} {pad}\n").as_bytes())
                .await
                .expect("flooder writes");
        }
        write.flush().await.expect("flush");
        write
    });
    let honest_nicks = honest.nicks.clone();
    let (first_echo_tx, first_echo) = tokio::sync::oneshot::channel();
    let echo_reader = tokio::spawn(async move {
        let mut first_echo_tx = Some(first_echo_tx);
        let mut lines = Vec::new();
        while lines.len() < FLOOD {
            let line = read.line().await;
            if let Some(text) = line.strip_prefix("flooder: ") {
                if let Some(tx) = first_echo_tx.take() {
                    let _ = tx.send(Instant::now());
                }
                lines.push(text.split_once(' ').expect("number").0.to_owned());
            } else {
                assert!(
                    is_chatter(&line, &honest_nicks) || !line.starts_with("ERROR"),
                    "{line}"
                );
            }
        }
        (lines, Instant::now())
    });

    // While the flood is on, a newcomer's line goes straight through.
    let flood_started = timeout(WAIT, first_echo)
        .await
        .expect("flood echoes")
        .expect("echo");
    let mut probe = server.join("probe").await;
    let asked = Instant::now();
    probe.send("am I slowed?").await;
    next_matching(&mut probe, &honest.nicks, WAIT, |l| {
        l == "probe: am I slowed?"
    })
    .await;
    let probe_took = asked.elapsed();
    let flooder_still_writing = !writer.is_finished();

    let (echoed, flood_ended) = timeout(WAIT * 2, echo_reader)
        .await
        .expect("whole flood echoed in time")
        .expect("echo reader");
    let _write = writer.await.expect("writer");
    let expected: Vec<String> = (0..FLOOD).map(|n| n.to_string()).collect();
    assert!(echoed == expected, "flooder's lines lost or reordered");
    let flood_took = flood_ended - flood_started;
    eprintln!("flood of {FLOOD} lines took {flood_took:?}; probe round trip {probe_took:?}");
    // It was throttled to its rate (a lower bound, robust to slow machines)...
    let minimum =
        Duration::from_secs_f64((FLOOD as f64 - 2.0 * f64::from(rate.burst)) / rate.per_second);
    assert!(
        flood_took >= minimum,
        "flood took {flood_took:?}, less than {minimum:?}"
    );
    // ...by TCP: the server was not reading while the probe got through.
    assert!(
        flooder_still_writing,
        "the flooder's writes were never held back"
    );

    let transcripts = honest.finish().await;
    // Honest lines kept flowing between the flooder's first and last lines.
    let t = &transcripts[0];
    let first = t
        .lines
        .iter()
        .position(|l| l.starts_with("flooder: 0 "))
        .unwrap();
    let last = t
        .lines
        .iter()
        .position(|l| l.starts_with(&format!("flooder: {} ", FLOOD - 1)))
        .unwrap();
    let between = t.lines[first..last]
        .iter()
        .filter(|l| is_chatter(l, &honest_names(&transcripts)))
        .count();
    assert!(between > 0, "no honest line got through during the flood");
    let probe_at = t
        .lines
        .iter()
        .position(|l| l == "probe: am I slowed?")
        .unwrap();
    assert!(probe_at < last, "the probe waited for the flood to end");
}

fn honest_names(transcripts: &[Transcript]) -> Vec<String> {
    transcripts.iter().map(|t| t.nick.clone()).collect()
}
