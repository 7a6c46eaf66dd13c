//! One connection's session, once its transport is up: the NICK exchange,
//! then the chat of a registered `Participant` (its own module),
//! then its goodbye: why it ended, if there is something to tell, and
//! close_notify.
//!
//! A session is one task that owns its connection; every step borrows the
//! one [`Session`] value, and its future is boxed once, sized for it: idle
//! participants are what a big room is mostly made of.

mod participant;

use crate::connection::{Connection, ReadError};
use crate::protocol::{self, FrameError, MAX_NICK_ATTEMPTS, NickError};
use crate::room::channels::Channels;
use crate::room::{JoinError, RecvError, Room};
use crate::server::access::{self, Access, Entry, NickRefusal, Refusal};
use crate::server::admission::Admission;
use crate::server::log_limit::LogLimit;
use crate::server::metrics::{Disconnect, Metrics, Refused, Transport};
use crate::server::moderation::Moderation;
use crate::server::per_address::SourceHandle;
use crate::server::rate::RateLimit;
use crate::server::shutdown::Shutdown;
use bytes::Bytes;
use participant::Participant;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout, timeout_at};

/// The default time from accept to a registered nickname.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            rate: Some(RateLimit::default()),
            idle_timeout: None,
        }
    }
}

/// How long a session may spend on its last words (an error line, the
/// shutdown drain, close_notify) before it just closes.
const LAST_WORDS: Duration = Duration::from_secs(2);

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

    /// How `chatroom_disconnects_total` counts it. A peer that closes
    /// without TLS close_notify has left all the same (many clients just
    /// close the socket); a room that closed or let the participant go
    /// stands with a reload's refusal as kicked.
    fn counted_as(&self) -> Disconnect {
        match self {
            End::Closed | End::Quit(_) => Disconnect::Quit,
            End::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Disconnect::Quit,
            End::TooSlow => Disconnect::TooSlow,
            End::Idle => Disconnect::Idle,
            End::Refused(_) | End::RoomClosed => Disconnect::Kicked,
            End::Shutdown => Disconnect::Shutdown,
            End::LineTooLong | End::Io(_) => Disconnect::Error,
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

impl From<RecvError> for End {
    fn from(err: RecvError) -> Self {
        match err {
            RecvError::Lagged(_) => End::TooSlow,
            RecvError::Closed => End::RoomClosed,
        }
    }
}

/// What a session uses of the server: the same for every session.
pub(crate) struct Context<'a, R> {
    pub(crate) room: &'a R,
    /// The channels besides the room (`/join`).
    pub(crate) channels: &'a Channels<R>,
    /// Who may join, and who is an operator; `None`: anyone, nobody.
    pub(crate) access: Option<&'a Access>,
    /// Who is muted.
    pub(crate) moderation: &'a Moderation,
    pub(crate) limits: &'a Limits,
    /// Limits the log lines for peers that never register (anyone can open
    /// connections that stay silent).
    pub(crate) refusals: &'a LogLimit,
    pub(crate) metrics: &'a Metrics,
    /// How the participant reaches the server, as the metrics show it.
    pub(crate) transport: Transport,
}

// Not derived: a derive would ask `R: Copy`, and only the references are copied.
impl<R> Clone for Context<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Context<'_, R> {}

/// One connection's session, once its transport is up: the NICK exchange,
/// then (as a `Participant`) the chat, then its goodbye. The task that
/// runs it logs in a span that names the peer.
pub struct Session<'a, S, R> {
    conn: Connection<S>,
    server: Context<'a, R>,
    shutdown: &'a mut Shutdown,
    /// What the server counted this connection against. Its participant
    /// place is given back as the participant leaves, before the others
    /// hear `left!`, so whoever hears it can take the place at once rather
    /// than while this connection is still saying goodbye; the rest (its
    /// socket, its address's count) only once the connection is closed.
    admission: Admission,
    /// Under an access policy: which nickname the participant's certificate
    /// binds it to, and a watch on reloads that may refuse it later.
    entry: Option<Box<Entry>>,
}

impl<'a, S, R> Session<'a, S, R>
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
    R: Room,
{
    pub(crate) fn new(
        conn: Connection<S>,
        server: Context<'a, R>,
        shutdown: &'a mut Shutdown,
        admission: Admission,
        entry: Option<Box<Entry>>,
    ) -> Self {
        Session {
            conn,
            server,
            shutdown,
            admission,
            entry,
        }
    }

    /// Runs the session to its end.
    ///
    /// Not an `async fn`: one would keep a second copy of the session, and
    /// with it of the connection (over a kilobyte with TLS), in its future
    /// for the session's whole life, as async functions move their
    /// arguments into locals. Here the session is captured once, and every
    /// step below borrows it.
    #[allow(clippy::manual_async_fn)] // see above: the lint's `async fn` doubles the future
    pub(crate) fn run(mut self) -> impl Future<Output = ()> + 'a {
        async move { self.live().await }
    }

    /// Registers, chats, says goodbye.
    async fn live(&mut self) {
        let Some((nick, subscription)) = self.registration().await else {
            return self.close().await;
        };
        tracing::info!(%nick, "joined");
        let end = self.participate(&nick, subscription).await;
        tracing::info!(%nick, "left: {}", end.describe());
        self.say_why(end).await;
        self.close().await;
    }

    /// The NICK exchange under the handshake deadline (counted from
    /// accept) and the stop signal; `None` (after telling the peer why,
    /// where there is something to tell) when the peer did not register. A
    /// function of its own so that its result's room in the session's state
    /// is not kept for the session's life.
    async fn registration(&mut self) -> Option<(String, R::Subscription)> {
        let Session {
            conn,
            server,
            shutdown,
            admission,
            entry,
        } = self;
        let source = admission.source();
        let nick = register(conn, server, entry.as_deref(), source);
        let registered = tokio::select! {
            result = timeout_at(admission.deadline(), nick) => result,
            _ = shutdown.recv() => return None,
        };
        match registered {
            Ok(Ok(joined)) => Some(joined),
            Ok(Err(end)) => {
                tracing::debug!("not registered: {}", end.describe());
                if let End::LineTooLong = end {
                    self.last_words(protocol::error_line(FrameError::TooLong))
                        .await;
                }
                None
            }
            Err(_elapsed) => {
                // Finishing TLS and then saying nothing costs an attacker
                // little, so these lines are limited like other refusals.
                if self.server.refusals.allow(Instant::now()) {
                    tracing::info!("no nickname within the handshake timeout");
                }
                self.last_words(protocol::error_line("timed out waiting for a nickname"))
                    .await;
                None
            }
        }
    }

    /// A registered participant's part: chats until something ends it (a
    /// reload that refuses it included), then leaves the room, its place
    /// given back and its end counted first.
    async fn participate(&mut self, nick: &str, subscription: R::Subscription) -> End {
        let metrics = self.server.metrics;
        // Counted, and leaves the room, however this session ends, panics
        // included.
        let presence = metrics.joined(self.server.transport);
        let mut membership = Membership {
            room: self.server.room,
            nick,
            reason: None,
        };
        let mut entry = self.entry.take();
        let mut end = {
            let mut participant = Participant::new(self, nick, subscription);
            let end = tokio::select! {
                end = participant.chat() => end,
                refusal = access::refused(&mut entry, nick) => End::Refused(refusal),
            };
            if let End::Quit(reason) = &end {
                participant.quitting(reason.clone());
            }
            // Dropped here: it leaves its channels before the lobby.
            end
        };
        self.admission.release_place();
        drop(presence);
        metrics.disconnected(end.counted_as());
        if let End::Quit(reason) = &mut end {
            membership.reason = reason.take();
        }
        drop(membership);
        end
    }

    /// Tells the peer why its session ended, where there is something to
    /// tell.
    async fn say_why(&mut self, end: End) {
        let line = match end {
            End::LineTooLong => protocol::error_line(FrameError::TooLong),
            End::TooSlow => protocol::error_line("disconnected: too slow"),
            End::Idle => protocol::error_line("disconnected: idle"),
            End::Refused(refusal) => protocol::error_line(refusal),
            // Replies to lines before the `/quit` still go out.
            End::Quit(_) => {
                let _ = timeout(LAST_WORDS, self.conn.flush()).await;
                return;
            }
            _ => return,
        };
        self.last_words(line).await;
    }

    /// Sends one last line if the peer still takes it in time.
    async fn last_words(&mut self, line: Bytes) {
        self.conn.queue(line);
        let _ = timeout(LAST_WORDS, self.conn.flush()).await;
    }

    /// Closes the stream; for TLS this sends close_notify.
    async fn close(&mut self) {
        let _ = timeout(LAST_WORDS, self.conn.shutdown()).await;
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
/// [`MAX_NICK_ATTEMPTS`] times. Takes the session's parts rather than the
/// session, so that the stop signal can be watched beside it.
async fn register<S, R>(
    conn: &mut Connection<S>,
    server: &Context<'_, R>,
    entry: Option<&Entry>,
    source: Option<&SourceHandle>,
) -> Result<(String, R::Subscription), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Room,
{
    let nick_prompt = protocol::control_line(protocol::NICK);
    for _ in 0..MAX_NICK_ATTEMPTS {
        conn.send(nick_prompt.clone()).await.map_err(End::Io)?;
        let line = conn.read_line().await?.ok_or(End::Closed)?;
        match join(&line, server.room, entry, source).await {
            Ok(joined) => return Ok(joined),
            Err(refused) => {
                if let Some(why) = refused.counted {
                    server.metrics.refused(why);
                }
                conn.queue(refused.line);
                if !refused.may_retry {
                    break;
                }
            }
        }
    }
    conn.flush().await.map_err(End::Io)?;
    Err(End::Closed)
}

/// Why an answer to `NICK` did not join: the line that tells the peer, and
/// whether it may answer again.
struct NotJoined {
    line: Bytes,
    may_retry: bool,
    /// How `chatroom_refusals_total` counts it, if it does.
    counted: Option<Refused>,
}

impl NotJoined {
    fn retry(reason: impl std::fmt::Display) -> Self {
        NotJoined {
            line: protocol::error_line(reason),
            may_retry: true,
            counted: None,
        }
    }

    fn last(reason: impl std::fmt::Display) -> Self {
        NotJoined {
            line: protocol::error_line(reason),
            may_retry: false,
            counted: None,
        }
    }

    fn counted(self, why: Refused) -> Self {
        NotJoined {
            counted: Some(why),
            ..self
        }
    }
}

/// Joins the room with one answer to `NICK`, if the nickname rules, the
/// participant's certificate (`entry`), its address's allowance of joins
/// (`source`, see [`SourceHandle::try_join`]) and the room all let it.
async fn join<R: Room>(
    answer: &[u8],
    room: &R,
    entry: Option<&Entry>,
    source: Option<&SourceHandle>,
) -> Result<(String, R::Subscription), NotJoined> {
    let valid = std::str::from_utf8(answer)
        .map_err(|_| NickError::BadChar)
        .and_then(protocol::validate_nickname);
    let nick = valid.map_err(|e| NotJoined::retry(JoinError::Nick(e)))?;
    let nick = match entry.map_or(Ok(nick), |entry| entry.admit_nick(nick)) {
        Ok(nick) => nick,
        Err(refusal @ NickRefusal::NotTheCertificates(_)) => return Err(NotJoined::retry(refusal)),
        Err(NickRefusal::Refused(refusal)) => {
            let why = Refused::of(&refusal);
            return Err(NotJoined::last(refusal).counted(why));
        }
    };
    if let Some(source) = source
        && let Err(wait) = source.try_join(Instant::now())
    {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let refused = NotJoined::last(format!(
            "too many joins from your address: try again in {seconds} s"
        ));
        return Err(refused.counted(Refused::Limits));
    }
    // Boxed: a room's join can be a large future (a cluster's asks NATS
    // several things), and unboxed its state would stay in every session's
    // own future for the session's whole life.
    match Box::pin(room.join(nick)).await {
        Ok(subscription) => Ok((nick.to_owned(), subscription)),
        Err(e) => {
            if let Some(source) = source {
                source.undo_join(Instant::now());
            }
            match e {
                JoinError::Full => Err(NotJoined::last(e).counted(Refused::Limits)),
                JoinError::Closed => Err(NotJoined::last(e)),
                _ => Err(NotJoined::retry(e)),
            }
        }
    }
}
