//! Attacks on the real server (in process, real TLS on 127.0.0.1) while a
//! few honest clients chat: each attack must end the attacker's connection
//! alone (or slow the attacker alone), and every honest transcript must stay
//! complete and in the one global order.
//!
//! The honest clients (`Honest`) each write numbered lines on their own
//! schedule and read everything concurrently; at the end each sends `done`,
//! and every honest client must have seen every honest line, each sender's
//! lines in the order sent, all in the same order.

use crate::harness::{Client, TestServer, WAIT};
use chatroom::protocol;
use chatroom::server::rate::RateLimit;
use chatroom::tls;
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
    ReadHalf, WriteHalf,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

type Tls<S = TcpStream> = tokio_rustls::client::TlsStream<S>;

// ---------------------------------------------------------------------------
// Plumbing: TLS connections, line reading.

async fn tcp(addr: SocketAddr) -> TcpStream {
    timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("TCP connect in time")
        .expect("TCP connect")
}

/// A TCP connection with small kernel buffers, so that a peer that does not
/// read (or a server that does not read) is felt after a few KiB.
async fn tcp_small_buffers(addr: SocketAddr, recv: Option<u32>, send: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    if let Some(size) = send {
        socket.set_send_buffer_size(size).expect("SO_SNDBUF");
    }
    timeout(WAIT, socket.connect(addr))
        .await
        .expect("TCP connect in time")
        .expect("TCP connect")
}

/// A client registered as `stuck` whose kernel takes only a few KiB before
/// it stops reading: what a participant that never reads looks like.
async fn join_stuck_reader(
    server: &TestServer,
) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = tls_over(
        tcp_small_buffers(server.addr(), Some(4096), None).await,
        server.client_tls.clone(),
    )
    .await;
    let mut stuck = Client {
        conn: chatroom::connection::Connection::new(stream, 1 << 20),
    };
    stuck.register("stuck").await;
    stuck
}

async fn tls_over<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    config: Arc<rustls::ClientConfig>,
) -> Tls<S> {
    let name = tls::server_name("127.0.0.1").expect("name");
    timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, io),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake")
}

/// Reads `\n`-terminated lines from a read half, each within [`WAIT`].
struct LineReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(read: R) -> Self {
        LineReader {
            inner: BufReader::new(read),
        }
    }

    /// `Ok(None)` at a clean end of stream (TLS: close_notify received).
    async fn next(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        let n = timeout(WAIT, self.inner.read_until(b'\n', &mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no line within WAIT"))??;
        if n == 0 {
            return Ok(None);
        }
        if buf.pop() != Some(b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a line",
            ));
        }
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "server sent invalid UTF-8"))
    }

    async fn line(&mut self) -> String {
        self.next()
            .await
            .expect("read a line")
            .expect("a line, not the end")
    }
}

/// How a transcript ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// Every honest sender's `done` arrived (the normal end).
    AllDone,
    /// The server closed the stream cleanly (TLS close_notify).
    Clean,
    /// Reading failed: reset, missing close_notify, TLS alert, timeout.
    Broken(String),
}

/// Reads everything a raw (non-TLS) socket gets until the server closes it;
/// `true` if it closed within `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads a client's lines, skipping the honest clients' chatter, until
/// `wanted` matches (returned) or the stream ends / `limit` passes (panics
/// with what was seen).
async fn next_matching<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    honest: &[String],
    limit: Duration,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let read = tokio::time::timeout_at(deadline, client.conn.read_line()).await;
        let line = match read {
            Ok(Ok(Some(line))) => String::from_utf8(line.to_vec()).expect("UTF-8"),
            other => panic!(
                "never got the expected line within {limit:?} ({}); non-chatter lines seen: {seen:?}",
                match other {
                    Err(_) => "timed out".to_string(),
                    Ok(Ok(_)) => "stream closed".to_string(),
                    Ok(Err(e)) => format!("read error: {e}"),
                }
            ),
        };
        if wanted(&line) {
            return line;
        }
        if !is_chatter(&line, honest) {
            seen.push(line);
        }
    }
}

/// Reads until the server closes the stream (or `limit` passes), skipping
/// chatter; returns the other lines and whether the close was clean.
async fn rest_until_closed<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    honest: &[String],
    limit: Duration,
) -> (Vec<String>, Result<(), String>) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, client.conn.read_line()).await {
            Err(_) => return (seen, Err(format!("still open after {limit:?}"))),
            Ok(Ok(None)) => return (seen, Ok(())),
            Ok(Err(e)) => return (seen, Err(e.to_string())),
            Ok(Ok(Some(line))) => {
                let line = String::from_utf8(line.to_vec()).expect("UTF-8");
                if !is_chatter(&line, honest) {
                    seen.push(line);
                }
            }
        }
    }
}

/// A line one of the honest clients said.
fn is_chatter(line: &str, honest: &[String]) -> bool {
    line.split_once(": ")
        .is_some_and(|(who, _)| honest.iter().any(|h| h == who))
}

// ---------------------------------------------------------------------------
// The honest clients.

#[derive(Debug, Clone)]
struct Plan {
    clients: usize,
    prefix: &'static str,
    /// Bytes of padding after each line's number.
    payload: usize,
    /// Time between two lines of one client; `None`: as fast as it goes.
    pace: Option<Duration>,
    /// Each client stops after this many lines even if not told to.
    max_messages: usize,
    /// At most this many of a client's own lines not yet heard back: "as
    /// fast as the server takes them", the way a real client would.
    window: Option<usize>,
    /// Read until the server closes, instead of until every `done`.
    until_closed: bool,
}

impl Plan {
    /// Three clients, 50 short lines a second each.
    fn few() -> Plan {
        Plan {
            clients: 3,
            prefix: "honest",
            payload: 24,
            pace: Some(Duration::from_millis(20)),
            max_messages: 2_000,
            window: None,
            until_closed: false,
        }
    }
}

#[derive(Debug)]
struct Transcript {
    nick: String,
    /// Every line after its own `Connected to server!`.
    lines: Vec<String>,
    ending: Ending,
    /// Longest time from writing one of its own lines to reading it back.
    max_latency: Duration,
}

struct Honest {
    nicks: Vec<String>,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<usize>>,
    readers: Vec<JoinHandle<Transcript>>,
    /// Lines the first honest client read that no honest client said.
    events: mpsc::UnboundedReceiver<String>,
}

impl Honest {
    async fn start(server: &TestServer, plan: Plan) -> Honest {
        Self::start_at(server.addr(), server.client_tls.clone(), plan).await
    }

    async fn start_at(addr: SocketAddr, config: Arc<rustls::ClientConfig>, plan: Plan) -> Honest {
        let nicks: Vec<String> = (0..plan.clients)
            .map(|i| format!("{}{i}", plan.prefix))
            .collect();
        let mut halves = Vec::new();
        for nick in &nicks {
            let stream = tls_over(tcp(addr).await, config.clone()).await;
            let (read, mut write) = tokio::io::split(stream);
            let mut read = LineReader::new(read);
            assert_eq!(read.line().await, "NICK");
            write
                .write_all(format!("{nick}\n").as_bytes())
                .await
                .expect("send nick");
            write.flush().await.expect("flush");
            assert_eq!(read.line().await, format!("{nick} joined!"));
            assert_eq!(read.line().await, "Connected to server!");
            halves.push((read, write));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (events_tx, events) = mpsc::unbounded_channel();
        let shared_nicks = Arc::new(nicks.clone());
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for (i, (read, write)) in halves.into_iter().enumerate() {
            let stamps = Arc::new(Mutex::new(Vec::new()));
            let (echoed_tx, echoed) = tokio::sync::watch::channel(0);
            writers.push(tokio::spawn(write_loop(
                write,
                plan.clone(),
                stop.clone(),
                stamps.clone(),
                echoed,
            )));
            readers.push(tokio::spawn(read_loop(
                read,
                shared_nicks[i].clone(),
                shared_nicks.clone(),
                stamps,
                echoed_tx,
                (i == 0).then(|| events_tx.clone()),
                plan.until_closed,
            )));
        }
        Honest {
            nicks,
            stop,
            writers,
            readers,
            events,
        }
    }

    /// Waits until the first honest client reads `expected` (a line none of
    /// the honest clients said); returns the other such lines seen meanwhile.
    async fn wait_for(&mut self, expected: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match timeout(WAIT, self.events.recv()).await {
                Ok(Some(line)) if line == expected => return seen,
                Ok(Some(line)) => seen.push(line),
                Ok(None) => panic!("honest client stopped reading before {expected:?}: {seen:?}"),
                Err(_) => panic!("honest clients never saw {expected:?} within {WAIT:?}: {seen:?}"),
            }
        }
    }

    /// Tells the writers to finish, collects every transcript and checks
    /// they are complete, in order and identical.
    async fn finish(self) -> Vec<Transcript> {
        let (sent, transcripts) = self.collect().await;
        check_transcripts(&transcripts, &sent, true);
        transcripts
    }

    async fn collect(self) -> (Vec<usize>, Vec<Transcript>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut sent = Vec::new();
        for writer in self.writers {
            sent.push(
                timeout(WAIT, writer)
                    .await
                    .expect("honest writer finishes")
                    .expect("writer task"),
            );
        }
        let mut transcripts = Vec::new();
        for reader in self.readers {
            transcripts.push(
                timeout(WAIT * 2, reader)
                    .await
                    .expect("honest reader finishes")
                    .expect("reader task"),
            );
        }
        (sent, transcripts)
    }
}

async fn write_loop(
    mut write: WriteHalf<Tls>,
    plan: Plan,
    stop: Arc<AtomicBool>,
    stamps: Arc<Mutex<Vec<Instant>>>,
    mut echoed: tokio::sync::watch::Receiver<usize>,
) -> usize {
    let pad = "x".repeat(plan.payload);
    let mut ticker = plan.pace.map(|pace| {
        let mut ticker = tokio::time::interval(pace);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut sent = 0;
    while sent < plan.max_messages && !stop.load(Ordering::Relaxed) {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        if let Some(window) = plan.window {
            let heard_back = echoed.wait_for(|echoed| sent < echoed + window);
            if !matches!(timeout(WAIT, heard_back).await, Ok(Ok(_))) {
                return sent;
            }
        }
        stamps.lock().expect("stamps").push(Instant::now());
        let line = format!("{sent} {pad}\n");
        if write.write_all(line.as_bytes()).await.is_err() || write.flush().await.is_err() {
            return sent;
        }
        sent += 1;
    }
    if write.write_all(b"done\n").await.is_ok() {
        let _ = write.flush().await;
    }
    sent
}

async fn read_loop(
    mut read: LineReader<ReadHalf<Tls>>,
    nick: String,
    honest: Arc<Vec<String>>,
    stamps: Arc<Mutex<Vec<Instant>>>,
    echoed: tokio::sync::watch::Sender<usize>,
    events: Option<mpsc::UnboundedSender<String>>,
    until_closed: bool,
) -> Transcript {
    let mut lines = Vec::new();
    let mut done = HashSet::new();
    let mut own = 0;
    let mut max_latency = Duration::ZERO;
    let ending = loop {
        let line = match read.next().await {
            Ok(Some(line)) => line,
            Ok(None) => break Ending::Clean,
            Err(e) => break Ending::Broken(e.to_string()),
        };
        match line
            .split_once(": ")
            .filter(|(who, _)| honest.iter().any(|h| h == who))
        {
            Some((who, "done")) => {
                done.insert(who.to_owned());
            }
            Some((who, _)) if who == nick => {
                if let Some(sent_at) = stamps.lock().expect("stamps").get(own) {
                    max_latency = max_latency.max(sent_at.elapsed());
                }
                own += 1;
                echoed.send_replace(own);
            }
            Some(_) => {}
            None => {
                if let Some(events) = &events {
                    let _ = events.send(line.clone());
                }
            }
        }
        lines.push(line);
        if !until_closed && done.len() == honest.len() {
            break Ending::AllDone;
        }
    };
    Transcript {
        nick,
        lines,
        ending,
        max_latency,
    }
}

/// The texts an honest sender's lines carry, as one reader saw them.
fn said_by<'a>(transcript: &'a Transcript, nick: &str) -> Vec<&'a str> {
    transcript
        .lines
        .iter()
        .filter_map(|line| line.strip_prefix(nick)?.strip_prefix(": "))
        .collect()
}

/// Every honest transcript holds each honest sender's lines in the order
/// sent, without gaps; with `complete`, all of them up to `done`. And all
/// honest clients saw the honest lines in the same order.
fn check_transcripts(transcripts: &[Transcript], sent: &[usize], complete: bool) {
    let nicks: Vec<&str> = transcripts.iter().map(|t| t.nick.as_str()).collect();
    let mut first_order: Option<(&str, Vec<&String>)> = None;
    for t in transcripts {
        if complete {
            assert_eq!(
                t.ending,
                Ending::AllDone,
                "{}'s transcript ended early; its last lines: {:?}",
                t.nick,
                last_lines(&t.lines)
            );
        }
        let errors: Vec<_> = t.lines.iter().filter(|l| l.starts_with("ERROR")).collect();
        assert!(errors.is_empty(), "{} was sent {errors:?}", t.nick);
        for (k, nick) in nicks.iter().enumerate() {
            let texts = said_by(t, nick);
            for (n, text) in texts.iter().enumerate() {
                if *text == "done" {
                    assert_eq!(
                        n,
                        texts.len() - 1,
                        "{}: {nick} said more after done",
                        t.nick
                    );
                    assert_eq!(n, sent[k], "{}: {nick}'s done after {n} lines", t.nick);
                } else {
                    let number = text.split_once(' ').map(|(number, _)| number);
                    assert_eq!(
                        number,
                        Some(n.to_string().as_str()),
                        "{} saw {nick}'s lines with a gap or out of order at {n}",
                        t.nick
                    );
                }
            }
            if complete {
                assert_eq!(
                    texts.len(),
                    sent[k] + 1,
                    "{} saw {} of {nick}'s {} lines",
                    t.nick,
                    texts.len().saturating_sub(1),
                    sent[k]
                );
            }
        }
        let order: Vec<&String> = t
            .lines
            .iter()
            .filter(|l| is_chatter(l, &own(&nicks)))
            .collect();
        match &first_order {
            None => first_order = Some((&t.nick, order)),
            Some((first, expected)) => {
                let same = order.len().min(expected.len());
                assert!(
                    order[..same] == expected[..same],
                    "{} and {first} saw the honest lines in different orders",
                    t.nick
                );
                if complete {
                    assert_eq!(order.len(), expected.len());
                }
            }
        }
    }
}

fn own(nicks: &[&str]) -> Vec<String> {
    nicks.iter().map(|n| n.to_string()).collect()
}

fn last_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|l| l.chars().take(80).collect())
        .collect()
}

/// Whether every honest client saw `line`.
fn everyone_saw(transcripts: &[Transcript], line: &str) {
    for t in transcripts {
        assert!(
            t.lines.iter().any(|l| l == line),
            "{} never saw {line:?}",
            t.nick
        );
    }
}

fn nobody_saw(transcripts: &[Transcript], bad: impl Fn(&str) -> bool, what: &str) {
    for t in transcripts {
        if let Some(line) = t.lines.iter().find(|l| bad(l)) {
            panic!("{} saw {what}: {line:?}", t.nick);
        }
    }
}

// ---------------------------------------------------------------------------
// Slow and stuck clients.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_is_dropped_and_twenty_full_speed_chatters_lose_nothing() {
    let server = TestServer::start_with(|s| s.backlog = 256 * 1024).await;
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

// ---------------------------------------------------------------------------
// Handshake deadline, slowloris.

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

// ---------------------------------------------------------------------------
// Line length.

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

// ---------------------------------------------------------------------------
// Admission limits.

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

// ---------------------------------------------------------------------------
// Rate limit.

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
    let stream = tls_over(
        tcp_small_buffers(server.addr(), None, Some(4096)).await,
        server.client_tls.clone(),
    )
    .await;
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

// ---------------------------------------------------------------------------
// Idle timeout.

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

// ---------------------------------------------------------------------------
// Hostile bytes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_refused_and_control_characters_are_stripped() {
    let server = TestServer::start().await;
    let mut honest = Honest::start(&server, Plan::few()).await;
    let nicks = honest.nicks.clone();

    // A nickname that is not UTF-8 is refused like any bad nickname.
    let mut mallory = server.connect().await;
    mallory.expect("NICK").await;
    mallory.send_raw(b"m\xffallory\n").await;
    mallory
        .expect("ERROR nickname may only hold ASCII letters, digits, '_' and '-'")
        .await;
    mallory.register("mallory").await;

    // Invalid UTF-8 in a message: an error, the line dropped, the session on.
    mallory.send_raw(b"bad \xc3\x28 bytes \xff\n").await;
    let error = next_matching(&mut mallory, &nicks, WAIT, |l| !l.starts_with("honest")).await;
    assert_eq!(error, "ERROR invalid UTF-8");

    // Terminal escapes, C1 controls, DEL, a lone CR and bidi overrides go;
    // tabs stay.
    mallory
        .send("\u{1b}[2J\u{1b}]0;pwned\u{7}hi\u{202e}dlrow\u{2066}x\u{85}y\u{7f}\tz\rw\u{9b}31m")
        .await;
    let expected = "mallory: [2J]0;pwnedhidlrowxy\tzw31m";
    let echo = next_matching(&mut mallory, &nicks, WAIT, |l| l.starts_with("mallory:")).await;
    assert_eq!(echo, expected);
    // A line of nothing but controls says nothing at all.
    mallory.send("\u{1b}\u{7}\u{202e}").await;
    mallory.send("still here").await;
    let next = next_matching(&mut mallory, &nicks, WAIT, |l| l.starts_with("mallory:")).await;
    assert_eq!(next, "mallory: still here");
    honest.wait_for("mallory: still here").await;

    let transcripts = honest.finish().await;
    everyone_saw(&transcripts, expected);
    nobody_saw(&transcripts, |l| l.contains("bad"), "the invalid line");
    nobody_saw(
        &transcripts,
        |l| l.chars().any(protocol::is_unsafe_char),
        "an unsafe character",
    );
}

/// Flips one ciphertext byte of the next TLS application-data record it
/// writes, once armed: the server must see a record that fails to
/// authenticate.
struct Tamper {
    inner: TcpStream,
    armed: Arc<AtomicBool>,
}

impl AsyncRead for Tamper {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tamper {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // 0x17: application data; byte 5 is the first byte after the header.
        if buf.len() > 6 && buf[0] == 0x17 && self.armed.load(Ordering::SeqCst) {
            let mut bent = buf.to_vec();
            bent[5] ^= 0x01;
            let written = Pin::new(&mut self.inner).poll_write(cx, &bent);
            if matches!(written, Poll::Ready(Ok(n)) if n > 5) {
                self.armed.store(false, Ordering::SeqCst);
            }
            return written;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_transports_end_only_their_own_connection() {
    let server = TestServer::start().await;
    let mut honest = Honest::start(&server, Plan::few()).await;
    let nicks = honest.nicks.clone();

    // Not TLS at all.
    let mut garbage = tcp(server.addr()).await;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n")
        .await
        .expect("write");
    assert!(closed_within(&mut garbage, WAIT).await, "garbage kept open");

    // Half a real ClientHello, then the end of the stream.
    let mut hello = Vec::new();
    rustls::ClientConnection::new(
        server.client_tls.clone(),
        tls::server_name("127.0.0.1").expect("name"),
    )
    .expect("client")
    .write_tls(&mut hello)
    .expect("ClientHello");
    let mut truncated = tcp(server.addr()).await;
    truncated
        .write_all(&hello[..hello.len() / 2])
        .await
        .expect("write");
    truncated.shutdown().await.expect("FIN");
    assert!(
        closed_within(&mut truncated, WAIT).await,
        "truncated kept open"
    );

    // A TCP reset in the middle of a line.
    let mut resetter = server.join("resetter").await;
    honest.wait_for("resetter joined!").await;
    resetter.send_raw(b"half a li").await;
    let (tcp_stream, _) = resetter.conn.get_ref().get_ref();
    tcp_stream.set_zero_linger().expect("SO_LINGER 0");
    drop(resetter);
    honest.wait_for("resetter left!").await;

    // A record that fails to authenticate.
    let armed = Arc::new(AtomicBool::new(false));
    let tamper = Tamper {
        inner: tcp(server.addr()).await,
        armed: armed.clone(),
    };
    let mut forger = Client {
        conn: chatroom::connection::Connection::new(
            tls_over(tamper, server.client_tls.clone()).await,
            1 << 20,
        ),
    };
    forger.register("forger").await;
    honest.wait_for("forger joined!").await;
    armed.store(true, Ordering::SeqCst);
    forger.send("forged words").await;
    assert!(
        !armed.load(Ordering::SeqCst),
        "the record was not tampered with"
    );
    let (said, close) = rest_until_closed(&mut forger, &nicks, WAIT).await;
    assert!(said.is_empty(), "{said:?}");
    assert!(
        close.is_err(),
        "the server should end with an alert, not close_notify"
    );
    honest.wait_for("forger left!").await;

    // The server still takes newcomers.
    let mut after = server.join("after").await;
    after.send("all quiet?").await;
    honest.wait_for("after joined!").await;
    honest.wait_for("after: all quiet?").await;

    let transcripts = honest.finish().await;
    nobody_saw(&transcripts, |l| l.contains("half a li"), "a half line");
    nobody_saw(&transcripts, |l| l.contains("forged"), "the forged line");
}

// ---------------------------------------------------------------------------
// Shutdown.

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
    let mut serve = crate::harness::Serve::start(tmp.path(), &[]).await;
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
