//! Reconnecting buys nothing: the limits belong to the source address
//! (all its connections together, and across reconnects), not to one
//! connection. The attacker's sockets are bound to 127.0.0.2 and up, with
//! only 127.0.0.1 exempt, so the server treats them as any LAN host.
//! Nor can a flood of connections multiply the server's log lines: each
//! kind an attacker can trigger at will is written one by one only a few
//! times a second, then counted.

use crate::harness::{Client, Dial, Serve, TestServer, WAIT, local, tcp, tls_over};
use chatroom::server::log_limit::LINES_PER_INTERVAL;
use chatroom::server::rate::RateLimit;
use chatroom::tls;
use std::net::{IpAddr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn only_127_0_0_1() -> Vec<ipnet::IpNet> {
    vec!["127.0.0.1/32".parse().expect("net")]
}

/// One reconnect of the attacker: connect, join as `nick`, send `lines`
/// lines in one write, and go. Returns what the server said instead of
/// letting it join, if it did not.
async fn hit_and_run(
    server: &TestServer,
    from: IpAddr,
    nick: &str,
    lines: usize,
) -> Option<String> {
    let mut client = match server.connect_from(from, None).await {
        Ok(client) => client,
        Err(e) => return Some(format!("connection refused: {e}")),
    };
    match client.next_line().await {
        Some(line) if line == "NICK" => {}
        other => return Some(format!("{other:?}")),
    }
    client.send(nick).await;
    let answer = client.line().await;
    if answer != format!("{nick} joined!") {
        return Some(answer);
    }
    client.expect("Connected to server!").await;
    if lines > 0 {
        let flood: String = (0..lines).map(|n| format!("flood {n}\n")).collect();
        client.send_raw(flood.as_bytes()).await;
    }
    client.close().await;
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_puts_no_more_lines_on_the_room_than_one_address_may() {
    const RATE: f64 = 1.0;
    const BURST: u32 = 20;
    let server = TestServer::start_with(|s| {
        s.exempt = only_127_0_0_1();
        s.limits.rate = Some(RateLimit {
            per_second: RATE,
            burst: BURST,
        });
    })
    .await;
    // Alice (exempt) watches the room and notes when each of the
    // attacker's lines (messages, joins, leaves) arrives.
    let mut alice = server.join("alice").await;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        while let Some(line) = alice.next_line().await {
            let done = line == "bob: that was all";
            if line.starts_with("mallory") {
                let _ = seen_tx.send(Instant::now());
            }
            if done {
                break;
            }
        }
    });

    let start = Instant::now();
    let mut refusals = Vec::new();
    for n in 0..25 {
        if let Some(refusal) = hit_and_run(&server, local(2), &format!("mallory{n}"), 20).await {
            refusals.push(refusal);
        }
    }
    let mut bob = server.join("bob").await;
    bob.send("that was all").await;
    tokio::time::timeout(WAIT, watcher)
        .await
        .expect("alice saw bob's line")
        .expect("watcher");

    // However the attacker reconnects, the room gets at most one address's
    // burst plus its rate over the time since it started.
    let mut count = 0u32;
    while let Ok(at) = seen_rx.try_recv() {
        count += 1;
        let allowed = f64::from(BURST) + RATE * (at - start).as_secs_f64();
        assert!(
            f64::from(count) <= allowed + 1.0,
            "line {count} of the attacker's arrived {:?} after it started: at most {allowed:.0} allowed",
            at - start
        );
    }
    assert!(count > 0, "the attacker was not heard at all");
    assert!(
        refusals
            .iter()
            .any(|r| r.contains("too many joins from your address")),
        "no join was refused: {refusals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_per_minute_are_counted_per_address_across_reconnects() {
    let server = TestServer::start_with(|s| {
        s.exempt = only_127_0_0_1();
        s.joins_per_minute = 3;
    })
    .await;
    let mut alice = server.join("alice").await;
    for n in 0..2 {
        let nick = format!("carol{n}");
        assert_eq!(hit_and_run(&server, local(3), &nick, 0).await, None);
        alice.expect(&format!("{nick} joined!")).await;
        alice.expect(&format!("{nick} left!")).await;
    }
    // A taken nickname does not use up a join: the third still gets in.
    let mut third = server.connect_from(local(3), None).await.expect("connects");
    third.expect("NICK").await;
    third.send("alice").await;
    third.expect("ERROR nickname \"alice\" is taken").await;
    third.register("carol2").await;
    alice.expect("carol2 joined!").await;
    third.close().await;
    alice.expect("carol2 left!").await;
    // The fourth join of the minute, on a new connection, is refused.
    let mut fourth = server.connect_from(local(3), None).await.expect("connects");
    fourth.expect("NICK").await;
    fourth.send("carol3").await;
    let refusal = fourth.line().await;
    assert!(
        refusal.starts_with("ERROR too many joins from your address: try again in "),
        "{refusal}"
    );
    assert_eq!(fourth.until_closed().await, Vec::<String>::new());
    // Another address is not affected.
    let mut dave = server.connect_from(local(4), None).await.expect("connects");
    dave.register("dave").await;
    alice.expect("dave joined!").await;
}

/// Connects `count` plain TCP sockets from `from` that send nothing.
async fn silent_connections(
    addr: SocketAddr,
    from: IpAddr,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..count {
        let dial = Dial {
            from: Some(from),
            ..Dial::default()
        };
        sockets.push(dial.tcp(addr).await.expect("TCP connect"));
    }
    sockets
}

#[tokio::test]
async fn connection_attempts_over_the_rate_are_closed_before_tls_and_logged_briefly() {
    const ALLOWED: usize = 5;
    const ATTEMPTS: usize = 40;
    let tmp = tempfile::tempdir().expect("temp");
    let mut serve = Serve::start(
        tmp.path(),
        &[
            "--exempt",
            "127.0.0.1/32",
            "--connects-per-minute",
            "5",
            "--max-per-ip",
            "100",
            "--handshake-timeout",
            "60",
        ],
    )
    .await;
    let addr: SocketAddr = serve.addr.parse().expect("addr");
    let mut sockets = silent_connections(addr, local(5), ATTEMPTS).await;

    // Those over the rate are closed at once, without a word of TLS.
    for (n, socket) in sockets.iter_mut().enumerate().skip(ALLOWED) {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("attempt {n} still open"));
        assert!(matches!(read, Ok(0) | Err(_)), "attempt {n} got {read:?}");
    }
    // The first ones wait for their TLS handshake as usual.
    for (n, socket) in sockets.iter().take(ALLOWED).enumerate() {
        let mut buf = [0u8; 64];
        let read = socket.try_read(&mut buf);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "attempt {n} was not kept: {read:?}"
        );
    }
    // The refusals are logged a few at a time, then counted.
    serve
        .wait_for_log("more connections refused before the handshake")
        .await;
    let log = serve.kill_and_log().await;
    let one_by_one = log
        .lines()
        .filter(|l| l.contains("too many connection attempts from this address"))
        .count();
    assert!(
        one_by_one < ATTEMPTS - ALLOWED,
        "{one_by_one} refusals logged one by one"
    );
}

/// Garbage instead of a ClientHello, from an exempt address so that only
/// the handshake's log matters.
#[tokio::test]
async fn failed_handshakes_are_summarized_past_a_few_a_second() {
    const GARBAGE: usize = 40;
    let tmp = tempfile::tempdir().expect("temp");
    let mut serve = Serve::start(tmp.path(), &[]).await;
    let addr: SocketAddr = serve.addr.parse().expect("addr");
    // All at once, so that they fail within a second or two however
    // loaded the machine is.
    let mut sockets = Vec::new();
    for _ in 0..GARBAGE {
        sockets.push(tcp(addr).await);
    }
    for tcp in &mut sockets {
        use tokio::io::AsyncWriteExt;
        tcp.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
    }
    for tcp in &mut sockets {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
            .await
            .expect("the server closes a connection that is not TLS");
    }
    let mut logged = 0;
    let mut summarized = 0;
    while logged + summarized < GARBAGE {
        let line = serve.wait_for_log("TLS handshake").await;
        if line.contains("TLS handshake failed") {
            logged += 1;
        } else if let Some(n) = line
            .split("count=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            summarized += n;
        }
    }
    assert_eq!(logged + summarized, GARBAGE);
    assert!(
        summarized > 0,
        "all {logged} failures were logged one by one"
    );
}

/// Reads `serve`'s log until it accounts for `events` refusals with a
/// reason, each either logged one by one (a line containing `one_by_one`)
/// or counted in a summary; returns how many of each.
async fn refusals_with_a_reason(
    serve: &mut Serve,
    one_by_one: &str,
    events: usize,
) -> (usize, usize) {
    let mut logged = 0;
    let mut summarized = 0;
    while logged + summarized < events {
        let line = serve.wait_for_log("").await;
        if line.contains(one_by_one) {
            logged += 1;
        } else if line.contains("more connections refused with a reason") {
            summarized += line
                .split("count=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("a summary without its count: {line}"));
        }
    }
    assert_eq!(logged + summarized, events, "more lines than events");
    (logged, summarized)
}

/// Finishing TLS and then never answering NICK costs an attacker one
/// handshake; the server's line about each such connection must not cost
/// a line of log each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_give_a_nickname_are_summarized_past_a_few_a_second() {
    const SILENT: usize = 30;
    let tmp = tempfile::tempdir().expect("temp");
    // Long enough for all the handshakes to finish on a loaded machine,
    // short enough for the test.
    let mut serve = Serve::start(tmp.path(), &["--handshake-timeout", "3"]).await;
    let addr: SocketAddr = serve.addr.parse().expect("addr");
    let config = tls::client_config(&tmp.path().join("certs/ca.pem")).expect("client config");
    // Every TCP connection first, so that they are accepted (and their
    // deadlines counted) within moments of each other and time out
    // together, in one of the limiter's intervals; then the handshakes,
    // all at once.
    let mut sockets = Vec::new();
    for _ in 0..SILENT {
        sockets.push(tcp(addr).await);
    }
    let mut silent = tokio::task::JoinSet::new();
    for tcp in sockets {
        let config = config.clone();
        silent.spawn(async move {
            let stream = tls_over(tcp, config).await.expect("TLS handshake");
            let mut client = Client::new(stream);
            client.expect("NICK").await;
            client.until_closed().await
        });
    }
    while let Some(said) = silent.join_next().await {
        assert_eq!(
            said.expect("silent client"),
            ["ERROR timed out waiting for a nickname"]
        );
    }
    let (logged, summarized) = refusals_with_a_reason(
        &mut serve,
        "no nickname within the handshake timeout",
        SILENT,
    )
    .await;
    // They all timed out within a second of the first, over three seconds
    // after the server started: one interval of the limiter.
    assert!(
        logged <= LINES_PER_INTERVAL as usize,
        "{logged} of {SILENT} logged one by one"
    );
    assert_eq!(summarized, SILENT - logged);
}

/// Refusals that tell the client why ("too many connections from your
/// address", "server full") are logged at accept, before any TLS: a burst
/// of TCP connections is enough to make them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_with_a_reason_are_summarized_past_a_few_a_second() {
    const REFUSED: usize = 30;
    let tmp = tempfile::tempdir().expect("temp");
    let mut serve = Serve::start(
        tmp.path(),
        &[
            "--exempt",
            "127.0.0.1/32",
            "--max-per-ip",
            "1",
            "--handshake-timeout",
            "60",
        ],
    )
    .await;
    let addr: SocketAddr = serve.addr.parse().expect("addr");
    // The one connection 127.0.0.6 may have (accepted first: the listen
    // queue is in order), then those over its limit.
    let _kept = silent_connections(addr, local(6), 1).await;
    let _refused = silent_connections(addr, local(6), REFUSED).await;
    let (logged, summarized) = refusals_with_a_reason(
        &mut serve,
        "refused: too many connections from this address",
        REFUSED,
    )
    .await;
    // The burst may straddle two of the limiter's intervals (the first
    // one starts with the server).
    assert!(
        logged <= 2 * LINES_PER_INTERVAL as usize,
        "{logged} of {REFUSED} logged one by one"
    );
    assert!(
        summarized > 0,
        "all {logged} refusals were logged one by one"
    );
}
