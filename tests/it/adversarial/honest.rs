//! The honest clients, which chat while an attack goes on, and the checks
//! on what they saw: each writes numbered lines on its own schedule and
//! reads everything concurrently; at the end each sends `done`, and every
//! honest client must have seen every honest line, each sender's lines in
//! the order sent, all in the same order. Also how the tests read an
//! attacker's connection among the honest clients' chatter.

use crate::harness::client::TlsStream;
use crate::harness::{Client, TestServer, WAIT, tcp, tls_over};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf,
    WriteHalf,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Reads `\n`-terminated lines from a read half, each within [`WAIT`].
pub(super) struct LineReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(read: R) -> Self {
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

    pub(super) async fn line(&mut self) -> String {
        self.next()
            .await
            .expect("read a line")
            .expect("a line, not the end")
    }
}

/// How a transcript ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// Every honest sender's `done` arrived (the normal end).
    AllDone,
    /// The server closed the stream cleanly (TLS close_notify).
    Clean,
    /// Reading failed: reset, missing close_notify, TLS alert, timeout.
    Broken(String),
}

/// Reads everything a raw (non-TLS) socket gets until the server closes it;
/// `true` if it closed within `limit`.
pub(super) async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
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
pub(super) async fn next_matching<S: AsyncRead + AsyncWrite + Unpin>(
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
pub(super) async fn rest_until_closed<S: AsyncRead + AsyncWrite + Unpin>(
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
pub(super) fn is_chatter(line: &str, honest: &[String]) -> bool {
    line.split_once(": ")
        .is_some_and(|(who, _)| honest.iter().any(|h| h == who))
}

#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) clients: usize,
    pub(super) prefix: &'static str,
    /// Bytes of padding after each line's number.
    pub(super) payload: usize,
    /// Time between two lines of one client; `None`: as fast as it goes.
    pub(super) pace: Option<Duration>,
    /// Each client stops after this many lines even if not told to.
    pub(super) max_messages: usize,
    /// At most this many of a client's own lines not yet heard back: "as
    /// fast as the server takes them", the way a real client would.
    pub(super) window: Option<usize>,
    /// Read until the server closes, instead of until every `done`.
    pub(super) until_closed: bool,
}

impl Plan {
    /// Three clients, 50 short lines a second each.
    pub(super) fn few() -> Plan {
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
pub(super) struct Transcript {
    pub(super) nick: String,
    /// Every line after its own `Connected to server!`.
    pub(super) lines: Vec<String>,
    pub(super) ending: Ending,
    /// Longest time from writing one of its own lines to reading it back.
    pub(super) max_latency: Duration,
}

pub(super) struct Honest {
    pub(super) nicks: Vec<String>,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<usize>>,
    readers: Vec<JoinHandle<Transcript>>,
    /// Lines the first honest client read that no honest client said.
    events: mpsc::UnboundedReceiver<String>,
}

impl Honest {
    pub(super) async fn start(server: &TestServer, plan: Plan) -> Honest {
        Self::start_at(server.addr(), server.client_tls.clone(), plan).await
    }

    async fn start_at(addr: SocketAddr, config: Arc<rustls::ClientConfig>, plan: Plan) -> Honest {
        let nicks: Vec<String> = (0..plan.clients)
            .map(|i| format!("{}{i}", plan.prefix))
            .collect();
        let mut halves = Vec::new();
        for nick in &nicks {
            let stream = tls_over(tcp(addr).await, config.clone())
                .await
                .expect("TLS handshake");
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
    pub(super) async fn wait_for(&mut self, expected: &str) -> Vec<String> {
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
    pub(super) async fn finish(self) -> Vec<Transcript> {
        let (sent, transcripts) = self.collect().await;
        check_transcripts(&transcripts, &sent, true);
        transcripts
    }

    pub(super) async fn collect(self) -> (Vec<usize>, Vec<Transcript>) {
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
    mut write: WriteHalf<TlsStream>,
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
    mut read: LineReader<ReadHalf<TlsStream>>,
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
pub(super) fn said_by<'a>(transcript: &'a Transcript, nick: &str) -> Vec<&'a str> {
    transcript
        .lines
        .iter()
        .filter_map(|line| line.strip_prefix(nick)?.strip_prefix(": "))
        .collect()
}

/// Every honest transcript holds each honest sender's lines in the order
/// sent, without gaps; with `complete`, all of them up to `done`. And all
/// honest clients saw the honest lines in the same order.
pub(super) fn check_transcripts(transcripts: &[Transcript], sent: &[usize], complete: bool) {
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
pub(super) fn everyone_saw(transcripts: &[Transcript], line: &str) {
    for t in transcripts {
        assert!(
            t.lines.iter().any(|l| l == line),
            "{} never saw {line:?}",
            t.nick
        );
    }
}

pub(super) fn nobody_saw(transcripts: &[Transcript], bad: impl Fn(&str) -> bool, what: &str) {
    for t in transcripts {
        if let Some(line) = t.lines.iter().find(|l| bad(l)) {
            panic!("{} saw {what}: {line:?}", t.nick);
        }
    }
}
