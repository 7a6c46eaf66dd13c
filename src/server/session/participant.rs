//! A registered participant while it chats: reading its lines and writing
//! the room's lines to it, until it leaves, misbehaves, falls too far
//! behind, or the server stops.
//!
//! It waits with `select!` on three things: a line from its peer, a line
//! from the room, and the stop signal (and a timer for its pace and idle
//! deadline); each branch calls one step below, which returns `Err` with
//! the reason when the session ends. Writing never blocks anybody else: the
//! room's lines wait in the room's shared ring, and a participant that
//! falls further behind than the ring holds is disconnected with
//! `ERROR disconnected: too slow` instead of skipping lines.

mod moderate;

use super::{Context, End, LAST_WORDS, Session};
use crate::connection::{BATCH_BYTES, Connection, ReadError};
use crate::protocol::{self, Command, Input};
use crate::room::channels::Joined;
use crate::room::mailbox::MAILBOX_LINES;
use crate::room::{Question, RecvError, Room};
use crate::server::per_address::Pace;
use crate::server::shutdown::Shutdown;
use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

/// How many already-received lines a session handles in one turn before it
/// lets the room's lines (and other tasks) have theirs.
const LINES_PER_TURN: usize = 32;

// A turn starts with room for a turn's answers in the participant's mailbox
// (see `chat`), and the room's word on a line (why it was not sent) is one
// line of it: a turn's refusals all fit.
const _: () = assert!(LINES_PER_TURN <= MAILBOX_LINES);

/// What a `/search` costs of the participant's rate, in lines: it makes
/// the server read its store, and its answer is several lines.
const SEARCH_COST: u32 = 5;

/// How often a pending write to a stuck peer checks whether the peer has
/// fallen too far behind.
const STALL_CHECK: Duration = Duration::from_millis(250);

/// How long the room's lines wait after a write that held only joins and
/// leaves. Each write costs a system call and a TLS record, and a room
/// filling up (a reconnect storm, say) would otherwise cost every
/// participant one write per join: this way it costs at most one per pace,
/// with the joins in between in one batch. What people say is never held
/// up by more than this, and only right after such a write. Short, since
/// the room's backlog must hold what the room says meanwhile, as it does
/// for a participant the scheduler leaves waiting for a moment.
const ANNOUNCEMENT_PACE: Duration = Duration::from_millis(20);

/// A registered participant while it chats: the parts of its session it
/// uses, and its own state.
pub(super) struct Participant<'s, S, R: Room> {
    conn: &'s mut Connection<S>,
    server: Context<'s, R>,
    shutdown: &'s mut Shutdown,
    nick: &'s str,
    /// Its reading of the lobby and of the channels it joined.
    subscription: Joined<'s, R>,
    pace: Pace<'s>,
    /// While set, the peer is over its rate and its socket is not read.
    paused_until: Option<Instant>,
    /// Counts from the peer's last line, not from a turn of the loop: the
    /// room's lines must not keep a silent participant alive.
    idle_deadline: Option<Instant>,
    /// The first line that did not fit in the last batch, if any: proof that
    /// this session is behind the room. While it is held, the peer's own
    /// input is left unread until the session has caught up, so a
    /// participant that cannot keep up with the room stops adding to it (TCP
    /// pushes back on it alone) instead of falling ever further behind.
    /// Holding a line, rather than a flag, guarantees that the room branch is
    /// ready at once, so reading always resumes. Otherwise reading and
    /// writing take turns at random (no `biased`): neither starves the other.
    carried: Option<Bytes>,
    /// While set, after a write of joins and leaves only, the room's lines
    /// wait (see [`ANNOUNCEMENT_PACE`]); the peer's own input ends the wait.
    room_rests_until: Option<Instant>,
    /// Whether the room's lines written since the last rest held anything
    /// but joins and leaves.
    urgent: bool,
}

impl<'s, S, R> Participant<'s, S, R>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Room,
{
    pub(super) fn new<'a: 's>(
        session: &'s mut Session<'a, S, R>,
        nick: &'s str,
        subscription: R::Subscription,
    ) -> Self {
        let Session {
            conn,
            server,
            shutdown,
            admission,
            ..
        } = session;
        Participant {
            conn,
            server: *server,
            shutdown,
            nick,
            subscription: Joined::new(subscription, server.channels, nick),
            pace: Pace::new(server.limits.rate, admission.source(), Instant::now()),
            paused_until: None,
            idle_deadline: None,
            carried: None,
            room_rests_until: None,
            urgent: false,
        }
    }

    /// Chats until the session ends; returns why.
    pub(super) async fn chat(&mut self) -> End {
        if let Err(end) = self.greet().await {
            return end;
        }
        loop {
            // What it says may be answered through its mailbox (why a
            // line was not sent): while the mailbox could not take one
            // more turn's answers, its lines go out before more is read.
            let reading = self.paused_until.is_none()
                && self.carried.is_none()
                && self.subscription.private_waiting() <= MAILBOX_LINES - LINES_PER_TURN;
            let listening = self.room_rests_until.is_none() || self.carried.is_some();
            // One timer for every deadline: each costs an idle session as
            // much memory as it is kept in.
            let timer = earliest(self.paused_until, self.idle_deadline);
            let timer = earliest(timer, self.room_rests_until);
            let turn = tokio::select! {
                _ = self.shutdown.recv() => Err(self.drain_for_shutdown().await),
                line = next_room_line(&mut self.carried, &mut self.subscription), if listening => {
                    self.write_room_lines(line).await
                }
                read = self.conn.read_line(), if reading => {
                    self.room_rests_until = None;
                    self.read_lines(read).await
                }
                _ = sleep_until_some(timer), if timer.is_some() => self.timer_fired(),
            };
            if let Err(end) = turn {
                return end;
            }
        }
    }

    /// The participant's own `joined!` line (the first its subscription
    /// holds) and `Connected to server!` right after it; then its pace and
    /// its idle clock start.
    async fn greet(&mut self) -> Result<(), End> {
        let joined = self
            .subscription
            .recv()
            .await
            .map_err(|_| End::RoomClosed)?;
        self.conn.queue(joined);
        // The room's history comes next, through the batches below.
        self.conn.queue(protocol::control_line(protocol::CONNECTED));
        self.write_out().await?;
        let now = Instant::now();
        self.paused_until = self.pace.start(now).map(|wait| later(now, wait));
        self.heard_at(Instant::now());
        Ok(())
    }

    /// Restarts the idle clock from `now`, when the peer was last heard.
    fn heard_at(&mut self, now: Instant) {
        self.idle_deadline = self
            .server
            .limits
            .idle_timeout
            .and_then(|idle| now.checked_add(idle));
    }

    /// Writes the room's lines, from `first` on, in batches of up to one
    /// TLS record, for as long as each batch leaves a full one waiting.
    /// Each batch written is counted as delivered at once: one atomic add
    /// per batch, not per line.
    async fn write_room_lines(&mut self, first: Result<Bytes, RecvError>) -> Result<(), End> {
        self.queue_room_line(first?);
        let mut lines = 1;
        loop {
            lines += self.fill_batch()?;
            self.write_out().await?;
            self.server.metrics.delivered(std::mem::take(&mut lines));
            // What waits now says whether this participant is behind: a full
            // batch (or more) that came while the last one was being
            // written. Then it writes on, its own input unread until it has
            // caught up; with less, the select takes turns again.
            if self.carried.is_none() {
                lines += self.fill_batch()?;
            }
            match self.carried.take() {
                Some(line) if self.conn.queued() == 0 => {
                    self.queue_room_line(line);
                    lines += 1;
                }
                // A full batch is queued already; `line` goes after it.
                Some(line) => self.carried = Some(line),
                None => {
                    if self.conn.queued() > 0 {
                        self.write_out().await?;
                        self.server.metrics.delivered(lines);
                    }
                    if !std::mem::take(&mut self.urgent) {
                        self.room_rests_until = Some(later(Instant::now(), ANNOUNCEMENT_PACE));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Handles the lines that arrived in the same read as `read`'s, up to a
    /// bound, before going back to the room's lines. A line is taken from
    /// the buffer only when it will be handled.
    async fn read_lines(&mut self, read: Result<Option<Bytes>, ReadError>) -> Result<(), End> {
        let first = read?.ok_or(End::Closed)?;
        let heard = Instant::now();
        self.heard_at(heard);
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(line) = next.take() {
            let cost = self.handle_line(&line).await?;
            // Every line costs a token: commands and refused lines make the
            // server work and reply just as messages do.
            for _ in 0..cost {
                self.paused_until = self.pace.spend(heard).map(|wait| later(heard, wait));
            }
            handled += 1;
            if self.paused_until.is_some() || handled == LINES_PER_TURN {
                break;
            }
            next = self.conn.buffered_line()?;
        }
        if self.conn.queued() > 0 {
            self.write_out().await?;
        }
        Ok(())
    }

    /// The idle deadline or the end of a pause came.
    fn timer_fired(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self.idle_deadline.is_some_and(|deadline| deadline <= now) {
            return Err(End::Idle);
        }
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = self.pace.resume(now).map(|wait| later(now, wait));
        }
        if self.room_rests_until.is_some_and(|until| until <= now) {
            self.room_rests_until = None;
        }
        Ok(())
    }

    /// Acts on one line from the participant, queueing the replies meant
    /// for it alone; returns what it costs of the rate, in lines. `Err` on
    /// `/quit`, with its reason.
    async fn handle_line(&mut self, line: &[u8]) -> Result<u32, End> {
        let Ok(text) = std::str::from_utf8(line) else {
            self.conn.queue(protocol::error_line("invalid UTF-8"));
            return Ok(1);
        };
        let input = protocol::parse_input(text);
        if let Input::Command(
            command @ (Command::Join(_) | Command::Part(_) | Command::Rooms | Command::ShowTopic),
        ) = input
        {
            self.channel_command(command).await;
            return Ok(1);
        }
        if let Input::Command(
            command @ (Command::Kick { .. }
            | Command::Mute { .. }
            | Command::Unmute(_)
            | Command::Topic(_)),
        ) = input
        {
            let answer = Box::pin(self.moderate(command)).await;
            self.conn.queue(answer);
            return Ok(1);
        }
        if let Input::Message(_) | Input::Command(Command::Me(_)) = &input
            && self.refused_as_muted()
        {
            return Ok(1);
        }
        let (room, nick, conn) = (self.subscription.current(), self.nick, &mut *self.conn);
        let lobby = self.server.room;
        let metrics = self.server.metrics;
        match input {
            Input::Empty => {}
            Input::Message(text) => {
                tracing::trace!(%nick, bytes = text.len(), "message");
                metrics.said();
                room.publish(nick, &text);
            }
            Input::Command(command) => match command {
                Command::List => {
                    let (total, first) = room.members(protocol::LIST_MAX);
                    conn.queue(protocol::list_line(total, &first));
                }
                Command::Msg { to, text } => match lobby.whisper(nick, to, &text) {
                    Ok(echo) => conn.queue(echo),
                    Err(e) => conn.queue(protocol::error_line(e)),
                },
                Command::Me(text) => {
                    metrics.said();
                    room.act(nick, &text)
                }
                Command::Quit(reason) => return Err(End::Quit(reason.map(|r| r.into_owned()))),
                Command::Help => self.help(),
                // From the current channel's stored lines, by its mailbox.
                Command::History(n) if room.recorded() => room.ask(nick, Question::History(n)),
                Command::Search(words) if room.recorded() => {
                    room.ask(nick, Question::Search(&words));
                    return Ok(SEARCH_COST);
                }
                Command::History(_) | Command::Search(_) => {
                    conn.queue(protocol::error_line("unknown command"))
                }
                Command::Usage(usage) => conn.queue(protocol::error_line(usage)),
                Command::Unknown => conn.queue(protocol::error_line("unknown command")),
                Command::Join(_)
                | Command::Part(_)
                | Command::Rooms
                | Command::ShowTopic
                | Command::Kick { .. }
                | Command::Mute { .. }
                | Command::Unmute(_)
                | Command::Topic(_) => {}
            },
        }
        Ok(1)
    }

    /// Whether this participant is muted now; if so, it is told until when.
    fn refused_as_muted(&mut self) -> bool {
        let until = (self.server.moderation.muted_until(self.nick))
            .or_else(|| self.server.room.muted_until(self.nick));
        let Some(until) = until else {
            return false;
        };
        let now = time::OffsetDateTime::now_utc();
        self.conn
            .queue(protocol::moderation::muted_error(until, now));
        true
    }

    /// `/join`, `/part`, `/rooms`: answered to this participant alone.
    async fn channel_command(&mut self, command: Command<'_>) {
        let answer = match command {
            // Boxed, as the join to the server's room is (see `join`).
            Command::Join(name) => Box::pin(self.subscription.join(name)).await,
            Command::Part(name) => self.subscription.part(name).map(|line| vec![line]),
            Command::ShowTopic => Ok(vec![self.subscription.topic()]),
            _ => Ok(self.subscription.rooms()),
        };
        match answer {
            Ok(lines) => lines.into_iter().for_each(|line| self.conn.queue(line)),
            Err(refused) => self.conn.queue(protocol::error_line(refused)),
        }
    }

    /// `/help`: a line per command, those of a room that keeps its lines
    /// on disk too if this one does.
    fn help(&mut self) {
        let recorded = self
            .server
            .room
            .recorded()
            .then_some(protocol::HELP_RECORDED);
        for help in protocol::HELP.iter().chain(recorded.iter().flatten()) {
            self.conn.queue(protocol::control_line(help));
        }
    }

    /// Before the participant goes: the reason its channels are told.
    pub(super) fn quitting(&mut self, reason: Option<String>) {
        self.subscription.quitting(reason);
    }

    /// Writes what is queued (see [`Participant::flush`]). A stop signal
    /// that came while the peer was slow to take its lines does not lose
    /// them (the queue is still there: flushing is cancel-safe), it turns
    /// into the shutdown drain.
    async fn write_out(&mut self) -> Result<(), End> {
        match self.flush().await {
            Err(End::Shutdown) => Err(self.drain_for_shutdown().await),
            written => written,
        }
    }

    /// Writes what is queued. While the peer does not take it, checks now
    /// and then whether it has fallen too far behind the room, and stops on
    /// the server's stop signal.
    async fn flush(&mut self) -> Result<(), End> {
        let write = self.conn.flush();
        tokio::pin!(write);
        // `biased` polls the write first, so a write that completes at once
        // (the usual case) never arms the timer below.
        loop {
            tokio::select! {
                biased;
                written = &mut write => return written.map_err(End::Io),
                _ = sleep(STALL_CHECK) => {
                    if self.subscription.is_lagging() {
                        return Err(End::TooSlow);
                    }
                }
                _ = self.shutdown.recv() => return Err(End::Shutdown),
            }
        }
    }

    /// Takes whatever else the room has waiting into the outbox, up to one
    /// full TLS record's worth, so it leaves in one write. Not one line
    /// more: a batch just over a record would leave as a full record and a
    /// tiny one, each with its own header, tag and encryption. The first
    /// line that does not fit is carried over (nothing is taken while one
    /// is). Returns how many lines it queued.
    fn fill_batch(&mut self) -> Result<u64, End> {
        let mut queued = 0;
        while self.carried.is_none() {
            match self.subscription.try_recv()? {
                Some(line) if self.conn.queued() + line.len() > BATCH_BYTES => {
                    self.carried = Some(line)
                }
                Some(line) => {
                    self.queue_room_line(line);
                    queued += 1;
                }
                None => break,
            }
        }
        Ok(queued)
    }

    /// Queues one of the room's lines, noting whether it is more than a
    /// join or a leave.
    fn queue_room_line(&mut self, line: Bytes) {
        // Once one line is more, the others need no look.
        self.urgent = self.urgent || !protocol::is_announcement(&line);
        self.conn.queue(line);
    }

    /// On shutdown: everything the room said up to its farewell line goes
    /// out, for as long as the grace period lasts (without one, for
    /// [`LAST_WORDS`]).
    async fn drain_for_shutdown(&mut self) -> End {
        if let Some(line) = self.carried.take() {
            self.conn.queue(line);
        }
        while let Ok(Some(line)) = self.subscription.try_recv() {
            self.conn.queue(line);
        }
        let deadline = self
            .shutdown
            .deadline()
            .unwrap_or_else(|| Instant::now() + LAST_WORDS);
        match timeout_at(deadline, self.conn.flush()).await {
            Ok(Ok(())) => End::Shutdown,
            Ok(Err(e)) => End::Io(e),
            Err(_) => End::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer did not take the last lines",
            )),
        }
    }
}

/// The room's next line for this session: the one carried over from the
/// last batch, or else the next from the room. Cancel-safe: the carried line
/// is only taken when this future is polled, and then it is ready at once.
async fn next_room_line<R: Room>(
    carried: &mut Option<Bytes>,
    subscription: &mut Joined<'_, R>,
) -> Result<Bytes, RecvError> {
    match carried.take() {
        Some(line) => Ok(line),
        None => subscription.recv().await,
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
