//! One participant's life, once its transport is up: the NICK exchange,
//! then reading its lines and writing the room's lines to it, until it
//! leaves, misbehaves, falls too far behind, or the server stops.
//!
//! A session is one task that owns its connection. It waits with `select!`
//! on three things: a line from its peer, a line from the room, and the
//! stop signal. Writing never blocks anybody else: the room's lines wait in
//! the room's shared ring, and a session that falls further behind than the
//! ring holds is disconnected with `ERROR disconnected: too slow` instead of
//! skipping lines.

use crate::connection::{BATCH_BYTES, Connection, ReadError};
use crate::protocol::{self, Command, FrameError, Input, MAX_NICK_ATTEMPTS, NickError};
use crate::room::{JoinError, RecvError, Room, Subscription};
use crate::server::access::{self, Entry, NickRefusal, Refusal};
use crate::server::admission::Admission;
use crate::server::log_limit::LogLimit;
use crate::server::per_address::{Pace, SourceHandle};
use crate::server::rate::RateLimit;
use crate::server::shutdown::Shutdown;
use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

/// The per-connection limits a session enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest line, in bytes without terminator.
    pub max_line: usize,
    /// Time from accept to a registered nickname (TLS handshake included).
    pub handshake_timeout: Duration,
    /// Message rate per participant, or per address for an address that
    /// is not exempt (see [`per_address`](crate::server::per_address)); `None` for
    /// no limit.
    pub rate: Option<RateLimit>,
    /// Disconnect a participant that sent nothing for this long.
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: protocol::DEFAULT_MAX_LINE,
            handshake_timeout: Duration::from_secs(10),
            rate: Some(RateLimit::default()),
            idle_timeout: None,
        }
    }
}

/// How long a session may spend on its last words (an error line, the
/// shutdown drain, close_notify) before it just closes.
const LAST_WORDS: Duration = Duration::from_secs(2);

/// How many already-received lines a session handles in one turn before it
/// lets the room's lines (and other tasks) have theirs.
const LINES_PER_TURN: usize = 64;

/// How often a pending write to a stuck peer checks whether the peer has
/// fallen too far behind.
const STALL_CHECK: Duration = Duration::from_millis(250);

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The peer closed its side.
    Closed,
    /// The peer sent a line over the limit.
    LineTooLong,
    /// The peer could not keep up with the room.
    TooSlow,
    /// The peer sent nothing for the idle timeout.
    Idle,
    /// The server is stopping.
    Shutdown,
    /// Reading or writing failed (reset, TLS alert, ...).
    Io(std::io::Error),
    /// The room went away.
    RoomClosed,
    /// A reload of the access policy refused this participant.
    Refused(Refusal),
    /// The peer said `/quit`, maybe with a reason.
    Quit(Option<String>),
}

impl End {
    fn describe(&self) -> String {
        match self {
            End::Closed => "closed the connection".into(),
            End::LineTooLong => "sent a line over the limit".into(),
            End::TooSlow => "fell too far behind".into(),
            End::Idle => "was idle too long".into(),
            End::Shutdown => "server shutting down".into(),
            End::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                "closed the connection without TLS close_notify".into()
            }
            End::Io(e) => format!("connection error: {e}"),
            End::RoomClosed => "room closed".into(),
            End::Refused(refusal) => format!("refused after a reload: {refusal}"),
            End::Quit(_) => "quit".into(),
        }
    }
}

impl From<ReadError> for End {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::Frame(FrameError::TooLong) => End::LineTooLong,
            ReadError::Io(e) => End::Io(e),
        }
    }
}

/// Runs one participant's session over an established transport. `deadline`
/// is when the nickname must be settled (the handshake timeout, counted
/// from accept). `admission` is what the server counted this connection
/// against (its limits); its participant place is given back as the
/// participant leaves, before the others hear `left!`, so whoever hears it
/// can take the place at once rather than while this connection is still
/// saying goodbye; the rest (its socket, its address's count) only once the
/// connection is closed. `refusals` limits the log lines for peers that
/// never register (anyone can open connections that stay silent).
#[allow(clippy::too_many_arguments)]
pub fn run<'a, S, R>(
    conn: Connection<S>,
    peer: SocketAddr,
    room: &'a R,
    limits: &'a Limits,
    shutdown: &'a mut Shutdown,
    deadline: Instant,
    admission: Admission,
    refusals: &'a LogLimit,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
    R: Room,
{
    run_as(
        conn, peer, room, limits, shutdown, deadline, admission, None, refusals,
    )
}

/// [`run`], under an access policy: `entry` (when given) says which
/// nickname the participant's certificate binds it to, and ends the session
/// with `ERROR certificate revoked` (or another refusal) when a reload
/// refuses it.
///
/// Not an `async fn`: one would keep a second copy of `conn` (over a
/// kilobyte with TLS) in its future for the session's whole life, as async
/// functions move their arguments into locals. Here `conn` is captured once.
#[allow(clippy::too_many_arguments)]
pub fn run_as<'a, S, R>(
    conn: Connection<S>,
    peer: SocketAddr,
    room: &'a R,
    limits: &'a Limits,
    shutdown: &'a mut Shutdown,
    deadline: Instant,
    admission: Admission,
    entry: Option<Box<Entry>>,
    refusals: &'a LogLimit,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
    R: Room,
{
    let mut conn = conn;
    async move {
        session(
            &mut conn, peer, room, limits, shutdown, deadline, admission, entry, refusals,
        )
        .await
    }
}

#[allow(clippy::too_many_arguments)]
async fn session<S, R>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    room: &R,
    limits: &Limits,
    shutdown: &mut Shutdown,
    deadline: Instant,
    mut admission: Admission,
    mut entry: Option<Box<Entry>>,
    refusals: &LogLimit,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Room,
{
    let Some((nick, subscription)) = registration(
        conn,
        peer,
        room,
        shutdown,
        deadline,
        entry.as_deref(),
        admission.source(),
        refusals,
    )
    .await
    else {
        return close(conn).await;
    };
    tracing::info!(%peer, %nick, "joined");
    // Leave the room however this session ends, panics included.
    let mut membership = Membership {
        room,
        nick: &nick,
        reason: None,
    };
    let source = admission.source();
    let mut end = tokio::select! {
        end = chat(conn, &nick, subscription, room, limits, shutdown, source) => end,
        refusal = access::refused(&mut entry, &nick) => End::Refused(refusal),
    };
    admission.release_place();
    if let End::Quit(reason) = &mut end {
        membership.reason = reason.take();
    }
    drop(membership);
    tracing::info!(%peer, %nick, "left: {}", end.describe());
    match end {
        End::LineTooLong => last_words(conn, protocol::error_line(FrameError::TooLong)).await,
        End::TooSlow => last_words(conn, protocol::error_line("disconnected: too slow")).await,
        End::Idle => last_words(conn, protocol::error_line("disconnected: idle")).await,
        End::Refused(refusal) => last_words(conn, protocol::error_line(refusal)).await,
        // Replies to lines before the `/quit` still go out.
        End::Quit(_) => {
            let _ = timeout(LAST_WORDS, conn.flush()).await;
        }
        _ => {}
    }
    close(conn).await;
}

/// The NICK exchange under the handshake deadline and the stop signal;
/// `None` (after telling the peer why, where there is something to tell)
/// when the peer did not register. A function of its own so that its
/// result's room in the session's state is not kept for the session's life.
#[allow(clippy::too_many_arguments)]
async fn registration<S, R>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    room: &R,
    shutdown: &mut Shutdown,
    deadline: Instant,
    entry: Option<&Entry>,
    source: Option<&SourceHandle>,
    refusals: &LogLimit,
) -> Option<(String, R::Subscription)>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Room,
{
    let registered = tokio::select! {
        result = tokio::time::timeout_at(deadline, register(conn, room, entry, source)) => result,
        _ = shutdown.recv() => return None,
    };
    match registered {
        Ok(Ok(joined)) => Some(joined),
        Ok(Err(end)) => {
            tracing::debug!(%peer, "not registered: {}", end.describe());
            if let End::LineTooLong = end {
                last_words(conn, protocol::error_line(FrameError::TooLong)).await;
            }
            None
        }
        Err(_elapsed) => {
            // Finishing TLS and then saying nothing costs an attacker
            // little, so these lines are limited like other refusals.
            if refusals.allow(Instant::now()) {
                tracing::info!(%peer, "no nickname within the handshake timeout");
            }
            last_words(
                conn,
                protocol::error_line("timed out waiting for a nickname"),
            )
            .await;
            None
        }
    }
}

/// Leaves the room when dropped, giving the `/quit` reason if there is one.
struct Membership<'a, R: Room> {
    room: &'a R,
    nick: &'a str,
    reason: Option<String>,
}

impl<R: Room> Drop for Membership<'_, R> {
    fn drop(&mut self) {
        match &self.reason {
            Some(reason) => self.room.quit(self.nick, reason),
            None => self.room.leave(self.nick),
        }
    }
}

/// The NICK exchange: asks until a nickname is accepted, at most
/// [`MAX_NICK_ATTEMPTS`] times. A join from a counted address also needs
/// that address's allowance (see [`SourceHandle::try_join`]).
async fn register<S, R>(
    conn: &mut Connection<S>,
    room: &R,
    entry: Option<&Entry>,
    source: Option<&SourceHandle>,
) -> Result<(String, R::Subscription), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Room,
{
    let nick_prompt = protocol::control_line(protocol::NICK);
    for attempt in 1..=MAX_NICK_ATTEMPTS {
        conn.send(nick_prompt.clone()).await.map_err(End::Io)?;
        let line = conn.read_line().await?.ok_or(End::Closed)?;
        let refusal = match std::str::from_utf8(&line) {
            Err(_) => JoinError::Nick(NickError::BadChar),
            Ok(candidate) => match protocol::validate_nickname(candidate) {
                Err(e) => JoinError::Nick(e),
                Ok(nick) => match entry.map_or(Ok(nick), |entry| entry.admit_nick(nick)) {
                    Err(refusal @ NickRefusal::NotTheCertificates(_)) => {
                        conn.queue(protocol::error_line(refusal));
                        if attempt == MAX_NICK_ATTEMPTS {
                            break;
                        }
                        continue;
                    }
                    Err(NickRefusal::Refused(refusal)) => {
                        conn.queue(protocol::error_line(refusal));
                        break;
                    }
                    Ok(nick) => {
                        if let Some(source) = source
                            && let Err(wait) = source.try_join(Instant::now())
                        {
                            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                            conn.queue(protocol::error_line(format!(
                                "too many joins from your address: try again in {seconds} s"
                            )));
                            break;
                        }
                        match room.join(nick).await {
                            Ok(subscription) => return Ok((nick.to_owned(), subscription)),
                            Err(e) => {
                                if let Some(source) = source {
                                    source.undo_join(Instant::now());
                                }
                                e
                            }
                        }
                    }
                },
            },
        };
        conn.queue(protocol::error_line(&refusal));
        let final_refusal = matches!(refusal, JoinError::Full | JoinError::Closed);
        if final_refusal || attempt == MAX_NICK_ATTEMPTS {
            break;
        }
    }
    conn.flush().await.map_err(End::Io)?;
    Err(End::Closed)
}

/// The chat loop of a registered participant.
async fn chat<S, R>(
    conn: &mut Connection<S>,
    nick: &str,
    mut subscription: R::Subscription,
    room: &R,
    limits: &Limits,
    shutdown: &mut Shutdown,
    source: Option<&SourceHandle>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Room,
{
    // The subscription starts with our own `joined!` line; the newcomer
    // hears `Connected to server!` right after it.
    match subscription.recv().await {
        Ok(joined) => conn.queue(joined),
        Err(_) => return End::RoomClosed,
    }
    // The room's history comes next, through the batches below.
    conn.queue(protocol::control_line(protocol::CONNECTED));
    if let Err(end) = flush(conn, &subscription, shutdown).await {
        return after_flush(end, conn, None, &mut subscription, shutdown.deadline()).await;
    }

    let now = Instant::now();
    let mut pace = Pace::new(limits.rate, source, now);
    // While set, the peer is over its rate and its socket is not read.
    let mut paused_until: Option<Instant> = pace.start(now).map(|wait| later(now, wait));
    let mut last_heard = Instant::now();
    // Counts from the peer's last line, not from a turn of the loop: the
    // room's lines must not keep a silent participant alive.
    let mut idle_deadline = limits
        .idle_timeout
        .and_then(|idle| last_heard.checked_add(idle));

    // The first line that did not fit in the last batch, if any: proof that
    // this session is behind the room. While it is held, the peer's own
    // input is left unread until the session has caught up, so a
    // participant that cannot keep up with the room stops adding to it (TCP
    // pushes back on it alone) instead of falling ever further behind.
    // Holding a line, rather than a flag, guarantees that the room branch is
    // ready at once, so reading always resumes. Otherwise reading and
    // writing take turns at random (no `biased`): neither starves the other.
    let mut carried: Option<Bytes> = None;
    loop {
        tokio::select! {
            _ = shutdown.recv() => {
                let deadline = shutdown.deadline();
                return drain_for_shutdown(conn, carried.take(), &mut subscription, deadline).await;
            }
            received = next_room_line(&mut carried, &mut subscription) => {
                let first = match received {
                    Ok(line) => line,
                    Err(RecvError::Lagged(_)) => return End::TooSlow,
                    Err(RecvError::Closed) => return End::RoomClosed,
                };
                conn.queue(first);
                loop {
                    if let Err(end) = fill_batch(conn, &mut subscription, &mut carried) {
                        return end;
                    }
                    if let Err(end) = flush(conn, &subscription, shutdown).await {
                        return after_flush(end, conn, carried.take(), &mut subscription, shutdown.deadline()).await;
                    }
                    // What waits now says whether this participant is
                    // behind: a full batch (or more) that came while the
                    // last one was being written. Then it writes on, its own
                    // input unread until it has caught up; with less, the
                    // select takes turns again.
                    if carried.is_none()
                        && let Err(end) = fill_batch(conn, &mut subscription, &mut carried)
                    {
                        return end;
                    }
                    match carried.take() {
                        Some(line) if conn.queued() == 0 => conn.queue(line),
                        // A full batch is queued already; `line` goes after it.
                        Some(line) => carried = Some(line),
                        None => {
                            if conn.queued() > 0
                                && let Err(end) = flush(conn, &subscription, shutdown).await
                            {
                                return after_flush(end, conn, None, &mut subscription, shutdown.deadline()).await;
                            }
                            break;
                        }
                    }
                }
            }
            read = conn.read_line(), if paused_until.is_none() && carried.is_none() => {
                let first = match read {
                    Ok(Some(line)) => line,
                    Ok(None) => return End::Closed,
                    Err(e) => return e.into(),
                };
                last_heard = Instant::now();
                idle_deadline = limits.idle_timeout.and_then(|idle| last_heard.checked_add(idle));
                // Handle the lines that arrived in the same read, up to a
                // bound, before going back to the room's lines. A line is
                // taken from the buffer only when it will be handled.
                let mut next = Some(first);
                let mut handled = 0;
                while let Some(line) = next.take() {
                    if let Some(reason) = handle_line(&line, nick, room, conn) {
                        return End::Quit(reason);
                    }
                    // Every line costs a token: commands and refused lines
                    // make the server work and reply just as messages do.
                    paused_until = pace.spend(last_heard).map(|wait| later(last_heard, wait));
                    handled += 1;
                    if paused_until.is_some() || handled == LINES_PER_TURN {
                        break;
                    }
                    next = match conn.buffered_line() {
                        Ok(line) => line,
                        Err(e) => return e.into(),
                    };
                }
                if conn.queued() > 0
                    && let Err(end) = flush(conn, &subscription, shutdown).await
                {
                    return after_flush(end, conn, carried.take(), &mut subscription, shutdown.deadline()).await;
                }
            }
            // One timer for both deadlines: each costs an idle session as
            // much memory as it is kept in.
            _ = sleep_until_some(earliest(paused_until, idle_deadline)),
                if paused_until.is_some() || idle_deadline.is_some() =>
            {
                let now = Instant::now();
                if idle_deadline.is_some_and(|deadline| deadline <= now) {
                    return End::Idle;
                }
                if paused_until.is_some_and(|until| until <= now) {
                    paused_until = pace.resume(now).map(|wait| later(now, wait));
                }
            }
        }
    }
}

/// `wait` after `now`; a wait too long for the clock is capped at a day
/// (longer than any rate allows).
fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.min(crate::server::rate::MAX_WAIT))
        .unwrap_or(now)
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sleeps until `deadline`, or forever if there is none. Lazy: `select!`
/// builds every branch's future on every turn, disabled or not, and this
/// one costs nothing until it is first polled.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Acts on one line from a registered participant, queueing on `conn` the
/// replies meant for that participant alone. Returns `Some` on `/quit`,
/// with its reason.
fn handle_line<S, R>(
    line: &[u8],
    nick: &str,
    room: &R,
    conn: &mut Connection<S>,
) -> Option<Option<String>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Room,
{
    let Ok(text) = std::str::from_utf8(line) else {
        conn.queue(protocol::error_line("invalid UTF-8"));
        return None;
    };
    match protocol::parse_input(text) {
        Input::Empty => {}
        Input::Message(text) => {
            tracing::trace!(%nick, bytes = text.len(), "message");
            room.publish(nick, &text);
        }
        Input::Command(command) => match command {
            Command::List => {
                let (total, first) = room.members(protocol::LIST_MAX);
                conn.queue(protocol::list_line(total, &first));
            }
            Command::Msg { to, text } => match room.whisper(nick, to, &text) {
                Ok(echo) => conn.queue(echo),
                Err(e) => conn.queue(protocol::error_line(e)),
            },
            Command::Me(text) => room.act(nick, &text),
            Command::Quit(reason) => return Some(reason.map(|r| r.into_owned())),
            Command::Help => {
                for help in protocol::HELP {
                    conn.queue(protocol::control_line(help));
                }
            }
            Command::Usage(usage) => conn.queue(protocol::error_line(usage)),
            Command::Unknown => conn.queue(protocol::error_line("unknown command")),
        },
    }
    None
}

/// Writes what is queued. While the peer does not take it, checks now and
/// then whether it has fallen too far behind the room, and stops on the
/// server's stop signal.
async fn flush<S, Sub>(
    conn: &mut Connection<S>,
    subscription: &Sub,
    shutdown: &mut Shutdown,
) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Sub: Subscription,
{
    let write = conn.flush();
    tokio::pin!(write);
    // `biased` polls the write first, so a write that completes at once (the
    // usual case) never arms the timer below.
    loop {
        tokio::select! {
            biased;
            written = &mut write => return written.map_err(End::Io),
            _ = sleep(STALL_CHECK) => {
                if subscription.is_lagging() {
                    return Err(End::TooSlow);
                }
            }
            _ = shutdown.recv() => return Err(End::Shutdown),
        }
    }
}

/// Takes whatever else the room has waiting into the outbox, up to one full
/// TLS record's worth, so it leaves in one write. Not one line more: a
/// batch just over a record would leave as a full record and a tiny one,
/// each with its own header, tag and encryption. The first line that does
/// not fit is `carried` over (nothing is taken while one is).
fn fill_batch<S, Sub>(
    conn: &mut Connection<S>,
    subscription: &mut Sub,
    carried: &mut Option<Bytes>,
) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Sub: Subscription,
{
    while carried.is_none() {
        match subscription.try_recv() {
            Ok(Some(line)) if conn.queued() + line.len() > BATCH_BYTES => *carried = Some(line),
            Ok(Some(line)) => conn.queue(line),
            Ok(None) => break,
            Err(RecvError::Lagged(_)) => return Err(End::TooSlow),
            Err(RecvError::Closed) => return Err(End::RoomClosed),
        }
    }
    Ok(())
}

/// The room's next line for this session: the one carried over from the
/// last batch, or else the next from the room. Cancel-safe: the carried line
/// is only taken when this future is polled, and then it is ready at once.
async fn next_room_line<Sub: Subscription>(
    carried: &mut Option<Bytes>,
    subscription: &mut Sub,
) -> Result<Bytes, RecvError> {
    match carried.take() {
        Some(line) => Ok(line),
        None => subscription.recv().await,
    }
}

/// After a flush that did not finish: a stop signal that came while the
/// peer was slow to take its lines does not lose them (the queue is still
/// there: flushing is cancel-safe), it turns into the shutdown drain.
async fn after_flush<S, Sub>(
    end: End,
    conn: &mut Connection<S>,
    carried: Option<Bytes>,
    subscription: &mut Sub,
    deadline: Option<Instant>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
    Sub: Subscription,
{
    match end {
        End::Shutdown => drain_for_shutdown(conn, carried, subscription, deadline).await,
        end => end,
    }
}

/// On shutdown: everything the room said up to its farewell line goes out,
/// for as long as the grace period lasts (`deadline`; without one, for
/// [`LAST_WORDS`]).
async fn drain_for_shutdown<S, Sub>(
    conn: &mut Connection<S>,
    carried: Option<Bytes>,
    subscription: &mut Sub,
    deadline: Option<Instant>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
    Sub: Subscription,
{
    if let Some(line) = carried {
        conn.queue(line);
    }
    while let Ok(Some(line)) = subscription.try_recv() {
        conn.queue(line);
    }
    let deadline = deadline.unwrap_or_else(|| Instant::now() + LAST_WORDS);
    if let Err(e) = timeout_at(deadline, conn.flush())
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer did not take the last lines",
            ))
        })
    {
        return End::Io(e);
    }
    End::Shutdown
}

/// Sends one last line if the peer still takes it in time.
async fn last_words<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<S>, line: Bytes) {
    conn.queue(line);
    let _ = timeout(LAST_WORDS, conn.flush()).await;
}

/// Closes the stream; for TLS this sends close_notify.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<S>) {
    let _ = timeout(LAST_WORDS, conn.shutdown()).await;
}
