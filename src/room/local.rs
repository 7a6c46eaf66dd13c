//! [`LocalRoom`]: the room held in this process's memory, its lines kept
//! on disk too with `serve --data`.
//!
//! One lock guards who is here, the history and the ring's writing end.
//! Putting a line in the ring under that lock is what makes a join's
//! subscription start exactly at its own announcement, and a newcomer's
//! history end exactly where its live lines begin.
//!
//! With a store ([`LocalRoom::with_store`]) each public line is numbered
//! under that lock and queued for the room's [`durable`] writer, which
//! puts it in the ring once it is committed: a participant's subscription
//! starts at its own `joined!` line's number, and its history is read from
//! the store, from before that number.

use super::backlog::{self, Backlog, Numbered, Reader};
use super::directory::Directory;
use super::durable::{self, Pending, Queue, Reading, Waiter};
use super::history::History;
use super::mailbox::{Inbox, Mailbox, mailbox};
use super::recall::{self, Asked};
use super::store::{Entry, Kind, Store};
use super::{
    Announce, Departure, JoinError, Notice, Question, Room, Said, Subscriber, WhisperError,
    address_private_line, admit,
};
use crate::protocol;
use crate::sync::lock;
use anyhow::Context;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// A room held in this process's memory.
#[derive(Debug)]
pub struct LocalRoom {
    shared: Arc<Shared>,
    /// The store's writer, with `--data`.
    writer: Option<JoinHandle<()>>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes the writer when lines are pending.
    pub(super) wake: Condvar,
    /// How newcomers read the store, with `--data`.
    reading: Option<Reading>,
    max_members: usize,
    /// What every line starts with: a channel's name and a space (none in
    /// the lobby).
    prefix: Option<Bytes>,
    /// The channel's name (none for the lobby).
    name: Option<Box<str>>,
    /// The bound of a channel's ring, in bytes.
    channel_backlog: usize,
}

/// A channel's ring holds by default this share of the lobby's: a server
/// of a thousand channels, each with a reader stuck at its worst, holds
/// sixteen times the lobby's bound, not a thousand times.
pub const CHANNEL_BACKLOG_SHARE: usize = 64;

#[derive(Debug)]
pub(super) struct State {
    /// Who is here, each with the room's end of its mailbox.
    pub(super) members: Directory<Mailbox>,
    /// The last public lines, for newcomers (`--history`), without a store.
    history: History,
    history_lines: usize,
    /// Up to which size joins and leaves are announced.
    announce: Announce,
    /// The ring everybody reads.
    pub(super) lines: Backlog<Numbered>,
    /// Lines waiting for the store's writer, with `--data`.
    pub(super) durable: Option<Queue>,
    /// With `--data`: the sequence of the oldest line each participant
    /// (by nick key) was shown, where its next `/history` ends.
    shown: HashMap<String, u64>,
    closed: bool,
}

/// A participant's reading of a [`LocalRoom`].
pub type LocalSubscription = Subscriber<Numbered>;

impl LocalRoom {
    /// A room for at most `max_members` participants, whose lines not yet
    /// read by everybody may take at most `backlog_bytes` (as
    /// [`backlog::cost`] counts them, and at least [`backlog::MIN_BYTES`]):
    /// how far a participant may fall behind.
    pub fn new(max_members: usize, backlog_bytes: usize) -> Self {
        LocalRoom {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    members: Directory::default(),
                    history: History::new(0),
                    history_lines: 0,
                    announce: Announce::default(),
                    lines: Backlog::new(backlog_bytes.max(backlog::MIN_BYTES)),
                    durable: None,
                    shown: HashMap::new(),
                    closed: false,
                }),
                wake: Condvar::new(),
                reading: None,
                max_members,
                prefix: None,
                name: None,
                channel_backlog: backlog_bytes / CHANNEL_BACKLOG_SHARE,
            }),
            writer: None,
        }
    }

    /// Keeps the last `lines` public lines for newcomers (0: none).
    pub fn with_history(self, lines: usize) -> Self {
        let mut state = self.state();
        state.history = History::new(lines);
        state.history_lines = lines;
        drop(state);
        self
    }

    /// Bounds the rings of its channels ([`Room::open_channel`]) to
    /// `bytes` (by default a [`CHANNEL_BACKLOG_SHARE`]th of its own). Call
    /// it before the room is shared.
    pub fn with_channel_backlog(mut self, bytes: usize) -> anyhow::Result<Self> {
        let shared = Arc::get_mut(&mut self.shared).context("the room is shared already")?;
        shared.channel_backlog = bytes;
        Ok(self)
    }

    /// Makes this room the channel `name` (already valid by
    /// [`protocol::channels::validate_channel`]): every line it shows starts
    /// with the name and a space. Call it before the room is shared.
    pub fn with_channel(mut self, name: &str) -> anyhow::Result<Self> {
        let shared = Arc::get_mut(&mut self.shared).context("the room is shared already")?;
        shared.prefix = Some(protocol::channels::channel_prefix(name));
        shared.name = Some(name.into());
        Ok(self)
    }

    /// `line` as this room shows it: with its channel's name in front.
    fn shown(&self, line: Bytes) -> Bytes {
        match &self.shared.prefix {
            None => line,
            Some(prefix) => protocol::channels::in_channel(prefix, &line),
        }
    }

    /// Announces joins and leaves as `announce` says (by default, in rooms
    /// of up to [`protocol::DEFAULT_ANNOUNCE_UP_TO`]).
    pub fn with_announce(self, announce: Announce) -> Self {
        self.state().announce = announce;
        self
    }

    /// Keeps the room's public lines in `store` (see the module doc), for
    /// `retain` (`None`: forever); newcomers get their history from it.
    /// Call it once, after [`LocalRoom::with_history`].
    pub fn with_store(mut self, store: Store, retain: Option<Duration>) -> anyhow::Result<Self> {
        let reader = store.try_clone()?;
        let next_seq = store.last_seq()?.map_or(1, |last| last + 1);
        let shared = Arc::get_mut(&mut self.shared).context("the room has a store already")?;
        let state = shared.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.history = History::new(0);
        state.durable = Some(Queue {
            next_seq,
            ..Queue::default()
        });
        shared.reading = Some(Reading {
            reader: Arc::new(Mutex::new(reader)),
            history: state.history_lines,
            retain,
        });
        self.writer = Some(durable::spawn(self.shared.clone(), store, retain)?);
        Ok(self)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Queues a public line for the writer, or, without a store, puts it
    /// in the ring (and, for a message or action, in the history).
    fn emit(
        &self,
        line: Bytes,
        kind: Kind,
        nick: &str,
        text: &str,
        waiter: impl FnOnce() -> Waiter,
    ) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        let Some(queue) = state.durable.as_mut() else {
            if matches!(kind, Kind::Message | Kind::Action) {
                state.history.push(&line);
            }
            state.lines.push(Numbered {
                seq: 0,
                bytes: line,
            });
            return;
        };
        queue.push(
            Some(line),
            |seq, time| entry(seq, time, kind, nick, text),
            waiter(),
        );
        drop(state);
        self.shared.wake.notify_one();
    }

    /// The history a newcomer whose `joined!` is line `start` gets: the
    /// stored lines before it, and how long the room keeps them; and the
    /// sequence of the oldest line in it (`start` if none).
    async fn stored_history(&self, start: u64) -> (Arc<[Bytes]>, u64) {
        let Some(reading) = &self.shared.reading else {
            return (Arc::from([]), start);
        };
        let (reader, n) = (reading.reader.clone(), reading.history);
        let read = tokio::task::spawn_blocking(move || lock(&reader).recent(Some(start), n));
        let mut oldest = start;
        let mut lines: Vec<Bytes> = match read.await {
            Ok(Ok(entries)) => {
                oldest = entries.first().map_or(start, |e| e.seq);
                entries
                    .iter()
                    .map(|e| protocol::history_line(&e.line()))
                    .collect()
            }
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "cannot read the room's history");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the room's history");
                Vec::new()
            }
        };
        lines.push(protocol::retention_line(reading.retain));
        (Arc::from(lines), oldest)
    }
}

fn entry(seq: u64, time: time::OffsetDateTime, kind: Kind, nick: &str, text: &str) -> Entry {
    Entry {
        seq,
        time,
        kind,
        nick: nick.to_owned(),
        text: text.to_owned(),
    }
}

impl Drop for LocalRoom {
    /// Lets the writer commit what is pending, and waits for it.
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        if let Some(queue) = self.state().durable.as_mut() {
            queue.stop = true;
        }
        self.shared.wake.notify_one();
        if writer.join().is_err() {
            tracing::error!("the history store's writer failed");
        }
    }
}

/// Announces a join that was not completed (its session went away while
/// it waited for the store) as a departure.
struct Unfinished<'a> {
    room: &'a LocalRoom,
    nick: Option<&'a str>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(nick) = self.nick {
            self.room.depart(nick, Departure::Left);
        }
    }
}

/// A join past the room's checks.
enum Entered {
    /// Without a store: joined.
    Joined(LocalSubscription),
    /// With one: waiting for its `joined!` line's commit.
    Queued(Box<Queued>),
}

/// A join waiting for the store.
struct Queued {
    reader: Reader<Numbered>,
    inbox: Inbox,
    /// The sequence of its `joined!` line.
    start: u64,
    /// Word from the writer once that line is committed.
    committed: oneshot::Receiver<bool>,
    /// Not announced: its `joined!` line and the notice, for it alone.
    unannounced: Option<[Bytes; 2]>,
}

impl LocalRoom {
    /// Adds `nick` and announces it, under the room's lock.
    fn enter(&self, nick: &str) -> Result<Entered, JoinError> {
        let mut state = self.state();
        let key = protocol::nick_key(nick);
        let here = state.members.len();
        admit(
            nick,
            state.members.contains(&key),
            state.closed,
            here,
            self.shared.max_members,
        )?;
        let (mailbox, inbox) = mailbox();
        state.members.insert(key.clone(), nick.to_owned(), mailbox);
        let reader = state.lines.subscribe();
        let line = self.shown(protocol::joined_line(nick));
        let unannounced = state
            .announce
            .quiet(here + 1)
            .map(|notice| [line.clone(), notice]);
        let Some(queue) = state.durable.as_mut() else {
            let history = state.history.snapshot();
            let Some(own) = unannounced else {
                state.lines.push(Numbered {
                    seq: 0,
                    bytes: line,
                });
                return Ok(Entered::Joined(Subscriber::new(reader, inbox, 0, history)));
            };
            let lines = own.into_iter().chain(history.iter().cloned()).collect();
            return Ok(Entered::Joined(Subscriber::unannounced(
                reader, inbox, 0, lines,
            )));
        };
        let (committed, is_committed) = oneshot::channel();
        let make = |seq, time| entry(seq, time, Kind::Join, nick, "");
        let shown = unannounced.is_none().then_some(line);
        let start = queue.push(shown, make, Waiter::Join(key, committed));
        drop(state);
        self.shared.wake.notify_one();
        Ok(Entered::Queued(Box::new(Queued {
            reader,
            inbox,
            start,
            committed: is_committed,
            unannounced,
        })))
    }
}

impl LocalRoom {
    /// Removes `nick` and tells those who stay `how` it left; `told`, if
    /// any, is the last line its mailbox gives it, before it closes. False
    /// if `nick` is not here.
    fn remove(&self, nick: &str, how: Departure<'_>, told: Option<Bytes>) -> bool {
        let key = protocol::nick_key(nick);
        let mut state = self.state();
        state.shown.remove(&key);
        let size = state.members.len();
        let Some(member) = state.members.remove(&key) else {
            return false;
        };
        if let Some(told) = told {
            let after = state.durable.as_ref().map_or(0, Queue::last_seq);
            member.value.put(after, told);
        }
        // As its owner spelled it, whoever spelled it otherwise (`/kick B0B`).
        let nick = member.nick.as_str();
        let announced = state.announce.quiet(size).is_none();
        let closed = state.closed;
        let Some(queue) = state.durable.as_mut() else {
            if !closed && announced {
                let line = self.shown(how.line(nick));
                state.lines.push(Numbered {
                    seq: 0,
                    bytes: line,
                });
            }
            return true;
        };
        let release = Waiter::Release(member.value);
        if closed {
            // Nothing is announced; the mailbox closes after the lines
            // said before, the farewell included.
            queue.pending.push(Pending {
                line: None,
                entry: None,
                waiter: release,
            });
        } else {
            let text = how.text();
            let make = |seq, time| entry(seq, time, Kind::Leave, nick, &text);
            queue.push(announced.then(|| self.shown(how.line(nick))), make, release);
        }
        drop(state);
        self.shared.wake.notify_one();
        true
    }
}

impl Room for LocalRoom {
    type Subscription = LocalSubscription;

    async fn join(&self, nick: &str) -> Result<LocalSubscription, JoinError> {
        let Queued {
            reader,
            inbox,
            start,
            committed: is_committed,
            unannounced,
        } = match self.enter(nick)? {
            Entered::Joined(subscription) => return Ok(subscription),
            Entered::Queued(queued) => *queued,
        };
        let mut unfinished = Unfinished {
            room: self,
            nick: Some(nick),
        };
        match is_committed.await {
            Ok(true) => {}
            Ok(false) => {
                // The writer took it out of the room.
                unfinished.nick = None;
                return Err(JoinError::StoreUnavailable);
            }
            Err(_) => return Err(JoinError::Closed),
        }
        let (history, oldest) = self.stored_history(start).await;
        self.state().shown.insert(protocol::nick_key(nick), oldest);
        unfinished.nick = None;
        Ok(match unannounced {
            None => Subscriber::new(reader, inbox, start, history),
            Some(own) => {
                let lines = own.into_iter().chain(history.iter().cloned()).collect();
                Subscriber::unannounced(reader, inbox, start, lines)
            }
        })
    }

    fn say(&self, nick: &str, said: Said<'_>) {
        let (kind, text) = match said {
            Said::Message(text) => (Kind::Message, text),
            Said::Action(text) => (Kind::Action, text),
        };
        // The waiter (who to tell if the line cannot be stored) is made
        // only with a store: without one, a message costs no more than it
        // takes to put it in the ring.
        let waiter = || Waiter::Said(protocol::nick_key(nick));
        self.emit(self.shown(said.line(nick)), kind, nick, text, waiter);
    }

    fn depart(&self, nick: &str, how: Departure<'_>) {
        self.remove(nick, how, None);
    }

    async fn put_out(
        &self,
        nick: &str,
        told: Bytes,
        how: Departure<'_>,
    ) -> Result<bool, &'static str> {
        Ok(self.remove(nick, how, Some(told)))
    }

    /// In the ring after the lines said before it; with a store, delivered
    /// once those are committed, and not stored itself (as the farewell).
    fn notice(&self, notice: Notice<'_>) -> Result<(), &'static str> {
        let line = notice.line(self.shared.name.as_deref());
        let mut state = self.state();
        if state.closed {
            return Ok(());
        }
        match state.durable.as_mut() {
            None => state.lines.push(Numbered {
                seq: 0,
                bytes: line,
            }),
            Some(queue) => {
                let seq = queue.last_seq();
                queue.pending.push(Pending {
                    line: Some(Numbered { seq, bytes: line }),
                    entry: None,
                    waiter: Waiter::Nobody,
                });
                drop(state);
                self.shared.wake.notify_one();
            }
        }
        Ok(())
    }

    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        let state = self.state();
        let found = state.members.find(to);
        let (line, deliver) = address_private_line(from, to, found.map(|n| n.nick.as_str()), text)?;
        // After the public lines said before it, committed or not yet.
        let after = state.durable.as_ref().map_or(0, Queue::last_seq);
        if let Some(recipient) = found.filter(|_| deliver)
            && !recipient.value.put(after, line.clone())
        {
            return Err(WhisperError::Full(recipient.nick.clone()));
        }
        Ok(line)
    }

    fn members(&self, max: usize) -> (usize, Vec<String>) {
        let state = self.state();
        (state.members.len(), state.members.first(max))
    }

    /// A room like this one (its limits, its [`Announce`] setting), for
    /// the channel `name`, its ring bounded as
    /// [`LocalRoom::with_channel_backlog`] says; none beside a room that
    /// keeps its lines on disk.
    fn open_channel(&self, name: &str) -> Result<LocalRoom, &'static str> {
        if self.shared.reading.is_some() {
            return Err("with --data yet");
        }
        LocalRoom::new(self.shared.max_members, self.shared.channel_backlog)
            .with_announce(self.state().announce)
            .with_channel(name)
            .map_err(|_| "just now")
    }

    fn recorded(&self) -> bool {
        self.shared.reading.is_some()
    }

    fn backlog_bytes(&self) -> usize {
        self.state().lines.bytes()
    }

    fn ask(&self, nick: &str, question: Question<'_>) {
        let Some(reading) = &self.shared.reading else {
            return;
        };
        let key = protocol::nick_key(nick);
        let asked = match question {
            Question::History(n) => {
                let Some(&before) = self.state().shown.get(&key) else {
                    return;
                };
                Asked::History { n, before }
            }
            Question::Search(words) => Asked::Search(words.to_owned()),
        };
        let (shared, reader) = (self.shared.clone(), reading.reader.clone());
        tokio::task::spawn_blocking(move || {
            let (lines, oldest) = recall::answer(&reader, &asked);
            let mut state = lock(&shared.state);
            if let Some(oldest) = oldest
                && let Some(shown) = state.shown.get_mut(&key)
            {
                *shown = (*shown).min(oldest);
            }
            if let Some(asker) = state.members.get(&key) {
                // A participant that lets its mailbox fill is not reading:
                // the rest of its answer is not kept for it.
                for chunk in recall::chunks(lines) {
                    if !asker.value.put(0, chunk) {
                        break;
                    }
                }
            }
        });
    }

    fn close(&self, farewell: Bytes) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        state.closed = true;
        // Last, after every line said before it; never stored.
        let line = Numbered {
            seq: u64::MAX,
            bytes: farewell,
        };
        match state.durable.as_mut() {
            None => state.lines.push(line),
            Some(queue) => {
                queue.pending.push(Pending {
                    line: Some(line),
                    entry: None,
                    waiter: Waiter::Nobody,
                });
                drop(state);
                self.shared.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests;
