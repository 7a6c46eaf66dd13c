//! The load-generating connections: joining (TCP, TLS, NICK), the reader
//! task every client runs from the moment it joins, and the two kinds of
//! sender (as fast as a window allows, or at a fixed pace).
//!
//! Readers read continuously in their own tasks, whatever the scenario, so
//! a bench client never falls behind the server's backlog by its own fault:
//! if one is disconnected as too slow, that is the server's result to
//! report, not the bench's doing.

use super::channels::{self, ChannelPlan};
use super::check::{Delivery, ReceiverLog};
use super::message::{self, NickScheme, Stamp};
use crate::protocol::{self, LineFramer};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Longest line accepted from the server: a message line is the server's
/// line limit plus the nickname and separator.
const MAX_SERVER_LINE: usize = 64 * 1024;

/// Any stream a client talks over: TLS or bare TCP.
pub trait ChatStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ChatStream for T {}
pub type BoxStream = Box<dyn ChatStream>;

/// How to reach the server over TLS.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// A client that has joined, its stream ready to split.
pub struct Joined {
    pub stream: BoxStream,
    /// Holds whatever arrived after `Connected to server!` in the same read.
    pub framer: LineFramer,
    /// From starting to connect to the end of the TLS handshake (for
    /// plaintext, of the TCP connect).
    pub handshake: Duration,
    /// From starting to connect to `Connected to server!`.
    pub joined: Duration,
    pub resumed: bool,
}

/// Why a client could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("timed out during the {0}")]
    TimedOut(&'static str),
    #[error("the server refused {nick}: {reason}")]
    Refused { nick: String, reason: String },
    #[error("the server closed the connection during the join")]
    Closed,
    #[error("unexpected line during the join: {0:?}")]
    Unexpected(String),
    #[error("cannot talk to the server during the join: {0}")]
    Io(String),
    #[error("gave up coming back after {attempts} attempt(s); the last: {last}")]
    GaveUp { attempts: u64, last: String },
}

/// Connects, handshakes and registers as `nick`, all within `limit`.
pub async fn join(
    addr: SocketAddr,
    tls: Option<&TlsTarget>,
    nick: &str,
    limit: Duration,
) -> Result<Joined, JoinError> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| JoinError::TimedOut("TCP connect"))?
        .map_err(JoinError::Connect)?;
    // Each message is its own write; Nagle would hold it back.
    let _ = tcp.set_nodelay(true);
    let (mut stream, resumed): (BoxStream, bool) = match tls {
        None => (Box::new(tcp), false),
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            // rustls reads the socket at most 4 KiB at a time, so a 16 KiB
            // record would cost four reads; a buffer under TLS makes it one
            // read per READ_ROOM, as the plaintext reader does.
            let tcp = tokio::io::BufReader::with_capacity(READ_ROOM, tcp);
            let stream =
                tokio::time::timeout_at(deadline, connector.connect(tls.server_name.clone(), tcp))
                    .await
                    .map_err(|_| JoinError::TimedOut("TLS handshake"))?
                    .map_err(JoinError::Handshake)?;
            let resumed =
                stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            (Box::new(stream), resumed)
        }
    };
    let handshake = start.elapsed();
    let mut framer = LineFramer::new(MAX_SERVER_LINE);
    let register = async {
        expect_line(&mut stream, &mut framer, nick, protocol::NICK).await?;
        let mut answer = nick.as_bytes().to_vec();
        answer.push(b'\n');
        stream
            .write_all(&answer)
            .await
            .map_err(|e| JoinError::Io(e.to_string()))?;
        stream
            .flush()
            .await
            .map_err(|e| JoinError::Io(e.to_string()))?;
        expect_line(&mut stream, &mut framer, nick, &format!("{nick} joined!")).await?;
        expect_line(&mut stream, &mut framer, nick, protocol::CONNECTED).await
    };
    tokio::time::timeout_at(deadline, register)
        .await
        .map_err(|_| JoinError::TimedOut("NICK exchange"))??;
    Ok(Joined {
        stream,
        framer,
        handshake,
        joined: start.elapsed(),
        resumed,
    })
}

/// The next line from the server during a join.
async fn read_line(
    stream: &mut BoxStream,
    framer: &mut LineFramer,
) -> Result<bytes::Bytes, JoinError> {
    loop {
        match framer.next_line() {
            Ok(Some(line)) => return Ok(line),
            Ok(None) => {}
            Err(e) => return Err(JoinError::Io(e.to_string())),
        }
        match stream.read_buf(framer.read_buf()).await {
            Ok(0) => return Err(JoinError::Closed),
            Ok(_) => {}
            Err(e) => return Err(JoinError::Io(e.to_string())),
        }
    }
}

async fn expect_line(
    stream: &mut BoxStream,
    framer: &mut LineFramer,
    nick: &str,
    expected: &str,
) -> Result<(), JoinError> {
    let line = read_line(stream, framer).await?;
    if line == expected.as_bytes() {
        return Ok(());
    }
    Err(refused_or_unexpected(&line, nick))
}

fn refused_or_unexpected(line: &[u8], nick: &str) -> JoinError {
    let text = protocol::sanitize_bytes(line);
    match text.strip_prefix(protocol::ERROR_PREFIX) {
        Some(reason) => JoinError::Refused {
            nick: nick.to_owned(),
            reason: reason.to_owned(),
        },
        None => JoinError::Unexpected(text),
    }
}

/// `/join`s each of `channels` in turn (the last one stays the current
/// one), each time waiting for the server's `[join] NAME: N here`, all
/// within `limit`. The lines that may come before an answer (others'
/// joins and leaves, room notices) are passed over: nobody sends messages
/// before every client has joined.
pub async fn enter_channels(
    joined: &mut Joined,
    nick: &str,
    channels: &[String],
    limit: Duration,
) -> Result<(), JoinError> {
    let deadline = tokio::time::Instant::now() + limit;
    for channel in channels {
        let enter = async {
            let command = format!("/join {channel}\n");
            let io = |e: std::io::Error| JoinError::Io(e.to_string());
            joined
                .stream
                .write_all(command.as_bytes())
                .await
                .map_err(io)?;
            joined.stream.flush().await.map_err(io)?;
            let answer = format!("[join] {channel}: ");
            loop {
                let line = read_line(&mut joined.stream, &mut joined.framer).await?;
                if line.starts_with(answer.as_bytes()) {
                    return Ok(());
                }
                let passing = line.ends_with(b" joined!")
                    || line.ends_with(b" left!")
                    || line.starts_with(b"[");
                if !passing {
                    return Err(refused_or_unexpected(&line, nick));
                }
            }
        };
        tokio::time::timeout_at(deadline, enter)
            .await
            .map_err(|_| JoinError::TimedOut("channel joins"))??;
    }
    Ok(())
}

/// What every reader of one scenario run shares.
#[derive(Debug)]
pub struct Shared {
    pub nicks: NickScheme,
    /// Clients `0..senders` send; every client receives from all of them,
    /// or, with channels, from those of its channel.
    pub senders: usize,
    /// Which channels the clients join, and whose lines each receives.
    pub plan: ChannelPlan,
    /// No sender sends more than this many messages.
    pub max_messages: u32,
    pub size: usize,
    /// What every timestamp in the messages counts from.
    pub clock: Clock,
    /// Messages of this run received, all clients together.
    pub deliveries: AtomicU64,
    /// Microseconds on `clock` of the latest delivery.
    pub last_delivery_us: AtomicU64,
    /// Readers that have every sender's last message, or have ended.
    pub finished: AtomicUsize,
    pub wake: Notify,
    /// The answers to `/list` the clients got: how many, and the last
    /// one's count.
    pub listed: watch::Sender<Listed>,
}

/// What `/list` said last (`[list] N here: ...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listed {
    /// Answers so far.
    pub answers: u64,
    /// The room's size in the last answer.
    pub here: usize,
}

/// Where message timestamps count from: a moment of this process, or,
/// for a run of several processes on one machine, the wall clock, so that
/// a line's time on the way can be read by a process that did not send it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    /// Microseconds of the zero before `epoch`.
    offset_us: u64,
}

impl Clock {
    /// Counting from now.
    pub fn local() -> Clock {
        Clock {
            epoch: Instant::now(),
            offset_us: 0,
        }
    }

    /// Counting from the Unix epoch, as the system clock tells it.
    pub fn wall() -> Clock {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            epoch: Instant::now(),
            offset_us: now.as_micros() as u64,
        }
    }

    pub fn now_us(&self) -> u64 {
        self.us_at(Instant::now())
    }

    /// `at` in microseconds on this clock.
    pub fn us_at(&self, at: Instant) -> u64 {
        self.offset_us + at.saturating_duration_since(self.epoch).as_micros() as u64
    }
}

impl Shared {
    pub fn new(senders: usize, max_messages: u32, size: usize) -> Self {
        Shared {
            nicks: NickScheme::new(),
            senders,
            plan: ChannelPlan::Lobby,
            max_messages,
            size,
            clock: Clock::local(),
            deliveries: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            wake: Notify::new(),
            listed: watch::Sender::new(Listed::default()),
        }
    }

    /// The same, its nicknames from `nicks` and its timestamps on `clock`.
    pub fn named(mut self, nicks: NickScheme, clock: Clock) -> Self {
        self.nicks = nicks;
        self.clock = clock;
        self
    }

    /// The same, its clients in channels as `plan` says.
    pub fn with_plan(mut self, plan: ChannelPlan) -> Self {
        self.plan = plan;
        self
    }

    pub fn now_us(&self) -> u64 {
        self.clock.now_us()
    }
}

/// How a reader ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEnd {
    /// Told to stop at the end of the run: the only good ending.
    Stopped,
    /// The server sent an `ERROR` line (e.g. `disconnected: too slow`) or
    /// said it is shutting down.
    Told(String),
    /// The server closed the connection.
    Closed,
    /// Reading failed (reset, TLS alert, overlong line).
    Failed(String),
}

/// What a reader hands back when it ends.
#[derive(Debug)]
pub struct ReaderReport {
    pub log: ReceiverLog,
    /// Send-to-receipt time of every first delivery, in microseconds.
    pub latencies_us: Vec<u32>,
    pub end: ReaderEnd,
}

/// How much one read of a bench client may take: large, so that a TLS
/// record's worth of lines is handled per read.
const READ_ROOM: usize = 64 * 1024;

/// Starts the reader of client `client`. It counts and checks every line
/// until `stop` turns true, and publishes how many of its own messages came
/// back through `own_echo` (the senders' window).
pub fn spawn_reader(
    client: usize,
    mut read: ReadHalf<BoxStream>,
    mut framer: LineFramer,
    shared: Arc<Shared>,
    own_echo: watch::Sender<u32>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<ReaderReport> {
    tokio::spawn(async move {
        let mut reader = Reader {
            client,
            channel: shared.plan.channel_of(client),
            log: ReceiverLog::new(client, shared.senders, shared.max_messages)
                .in_channel(shared.plan),
            latencies_us: Vec::new(),
            finished: false,
            own_echo,
        };
        let end = loop {
            // Every line of one read arrived at the same moment.
            let now_us = shared.now_us();
            let mut fresh = 0u64;
            let ended = loop {
                match framer.next_line_in_place(|line| reader.handle(line, now_us, &shared)) {
                    Ok(Some(Ok(counted))) => fresh += counted,
                    Ok(Some(Err(end))) => break Some(end),
                    Ok(None) => break None,
                    Err(e) => break Some(ReaderEnd::Failed(e.to_string())),
                }
            };
            if fresh > 0 {
                shared.deliveries.fetch_add(fresh, Ordering::Relaxed);
                shared.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
            }
            if !reader.finished && reader.log.all_ended() {
                reader.finish(&shared);
            }
            if let Some(end) = ended {
                break end;
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => break ReaderEnd::Stopped,
                read = read.read_buf(framer.read_buf_with_room(READ_ROOM)) => match read {
                    Ok(0) => break ReaderEnd::Closed,
                    Ok(_) => {}
                    Err(e) => break ReaderEnd::Failed(e.to_string()),
                },
            }
        };
        if !reader.finished {
            reader.finish(&shared);
        }
        ReaderReport {
            log: reader.log,
            latencies_us: reader.latencies_us,
            end,
        }
    })
}

struct Reader {
    client: usize,
    /// The channel it talks and listens in (`None`: `#lobby`), worked out
    /// once rather than for every line.
    channel: Option<usize>,
    log: ReceiverLog,
    latencies_us: Vec<u32>,
    finished: bool,
    own_echo: watch::Sender<u32>,
}

impl Reader {
    /// Handles one line; `Ok(1)` for a message of this run, `Ok(0)` for
    /// anything harmless, `Err` when the server ended this client.
    fn handle(&mut self, line: &[u8], now_us: u64, shared: &Shared) -> Result<u64, ReaderEnd> {
        let (channel, line) = match shared.plan {
            ChannelPlan::Lobby => (None, line),
            plan => match channels::split_prefix(line) {
                Some((channel, rest))
                    if channel.is_none()
                        || channel == self.channel
                        || plan.may_hear(self.client, channel) =>
                {
                    (channel, rest)
                }
                _ => {
                    self.log.record_crossed(|| excerpt(line));
                    return Ok(0);
                }
            },
        };
        // A nickname holds no ':', so the first one ends it.
        if let Some(split) =
            memchr::memchr(b':', line).filter(|&at| line.get(at + 1) == Some(&b' '))
        {
            let (nick, text) = (&line[..split], &line[split + 2..]);
            // One of ours (the common case, checked first: it is cheap), or
            // somebody else chatting on a shared server.
            if let Some(sender) = shared.nicks.index_of(nick) {
                // Said in another channel than the sender's, or heard by a
                // client that is not to hear it (one whose channel is not
                // the sender's).
                if channel != shared.plan.channel_of(sender) || channel != self.channel {
                    self.log.record_crossed(|| excerpt(line));
                    return Ok(0);
                }
                self.message(sender, text, line, now_us, shared);
                return Ok(1);
            }
            if looks_like_nick(nick) {
                return Ok(0);
            }
        }
        if line.starts_with(protocol::ERROR_PREFIX.as_bytes())
            || line == protocol::SHUTTING_DOWN.as_bytes()
        {
            return Err(ReaderEnd::Told(protocol::sanitize_bytes(line)));
        }
        if let Some(here) = listed_count(line) {
            shared.listed.send_modify(|listed| {
                listed.answers += 1;
                listed.here = here;
            });
            return Ok(0);
        }
        // A server with a history store replays the room's recent lines to
        // a newcomer, marked: they were said before this client joined, so
        // they are not deliveries of this run. A newcomer to a room too big
        // to announce joins is told so (`[room] N here; ...`).
        if line.ends_with(b" joined!")
            || line.ends_with(b" left!")
            || line.starts_with(protocol::HISTORY_PREFIX.as_bytes())
            || line.starts_with(QUIET_ROOM_PREFIX)
        {
            return Ok(0);
        }
        self.log.record_corrupt(|| excerpt(line));
        Ok(0)
    }

    fn message(&mut self, sender: usize, text: &[u8], line: &[u8], now_us: u64, shared: &Shared) {
        let stamp = u32::try_from(sender)
            .ok()
            .and_then(|s| message::read_message(text, s, shared.size));
        let delivery = stamp.and_then(|stamp| Some((stamp, self.log.record(sender, stamp)?)));
        match delivery {
            Some((stamp, Delivery::First)) => {
                let latency = now_us.saturating_sub(stamp.sent_us);
                self.latencies_us
                    .push(u32::try_from(latency).unwrap_or(u32::MAX));
                if sender == self.client {
                    self.own_echo.send_replace(stamp.seq + 1);
                }
            }
            Some((_, Delivery::Repeat)) => {}
            None => self.log.record_corrupt(|| excerpt(line)),
        }
    }

    fn finish(&mut self, shared: &Shared) {
        self.finished = true;
        shared.finished.fetch_add(1, Ordering::Relaxed);
        shared.wake.notify_one();
    }
}

/// How [`protocol::quiet_room_line`] starts.
const QUIET_ROOM_PREFIX: &[u8] = b"[room] ";

/// The count in an answer to `/list` (`[list] N here: ...`).
fn listed_count(line: &[u8]) -> Option<usize> {
    let rest = line.strip_prefix(b"[list] ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 || !rest[digits..].starts_with(b" here") {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn looks_like_nick(nick: &[u8]) -> bool {
    std::str::from_utf8(nick).is_ok_and(|nick| protocol::validate_nickname(nick).is_ok())
}

/// A damaged line, made safe to print and short enough for a report.
fn excerpt(line: &[u8]) -> String {
    const KEEP: usize = 80;
    let text = protocol::sanitize_bytes(line);
    match text.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// What a sender did.
#[derive(Debug, Clone)]
pub struct SenderReport {
    pub sent: u32,
    pub error: Option<String>,
}

/// How a sender paces itself.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as it can, with at most `window` of its own messages not yet
    /// back from the server (0: no limit).
    Window(u32),
    /// One message every `interval`, the first at `first_at`. The timestamp
    /// is the scheduled time, not the actual one, so a sender that falls
    /// behind shows up as latency instead of hiding it (coordinated
    /// omission).
    Fixed {
        first_at: Instant,
        interval: Duration,
    },
}

/// One sender's part in a traffic phase: which client it is, what it
/// sends and how fast.
pub struct Sender {
    /// The sending client's index, as its messages carry it.
    pub index: u32,
    pub count: u32,
    pub pace: Pace,
    pub size: usize,
    /// What message timestamps count from.
    pub clock: Clock,
    /// How many of its own messages its reader has seen come back.
    pub own_echo: watch::Receiver<u32>,
    pub stop: watch::Receiver<bool>,
}

impl Sender {
    /// Sends `count` messages over `write`, the last one flagged, unless
    /// `stop` turns true first.
    pub async fn send(mut self, write: &mut WriteHalf<BoxStream>) -> SenderReport {
        let mut line = Vec::with_capacity(self.size + 32);
        for seq in 0..self.count {
            let sent_us = match self.wait_turn(seq).await {
                Ok(sent_us) => sent_us,
                Err(report) => return report,
            };
            line.clear();
            let stamp = Stamp {
                seq,
                sent_us,
                last: seq + 1 == self.count,
            };
            message::write_message(&mut line, self.index, stamp, self.size);
            let write_line = async {
                write.write_all(&line).await?;
                write.flush().await
            };
            tokio::select! {
                _ = self.stop.wait_for(|stopped| *stopped) => return stopped(seq),
                written = write_line => {
                    if let Err(e) = written {
                        return failed(seq, e.to_string());
                    }
                }
            }
        }
        SenderReport {
            sent: self.count,
            error: None,
        }
    }

    /// Waits until message `seq` is due by the pace, and gives its
    /// timestamp; `Err` with the final report if the sender must end first.
    async fn wait_turn(&mut self, seq: u32) -> Result<u64, SenderReport> {
        match self.pace {
            Pace::Window(window) => {
                if window > 0 {
                    let room = |echoed: &u32| seq < echoed.saturating_add(window);
                    tokio::select! {
                        _ = self.stop.wait_for(|stopped| *stopped) => return Err(stopped(seq)),
                        echo = self.own_echo.wait_for(room) => {
                            if echo.is_err() {
                                return Err(failed(seq, "its reader ended".into()));
                            }
                        }
                    }
                }
                Ok(self.clock.now_us())
            }
            Pace::Fixed { first_at, interval } => {
                let due = first_at + interval * seq;
                tokio::select! {
                    _ = self.stop.wait_for(|stopped| *stopped) => return Err(stopped(seq)),
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
                Ok(self.clock.us_at(due))
            }
        }
    }
}

fn stopped(sent: u32) -> SenderReport {
    SenderReport { sent, error: None }
}

fn failed(sent: u32, reason: String) -> SenderReport {
    SenderReport {
        sent,
        error: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_quiet_room_notice() {
        assert!(protocol::quiet_room_line(1001, 1000).starts_with(QUIET_ROOM_PREFIX));
    }

    #[test]
    fn reads_the_count_of_a_list_answer() {
        let names = ["a".to_string(), "b".to_string()];
        assert_eq!(
            listed_count(&protocol::list_line(50_000, &names)),
            Some(50_000)
        );
        assert_eq!(listed_count(b"[list] here"), None);
        assert_eq!(listed_count(b"[lists] 3 here"), None);
    }
}
