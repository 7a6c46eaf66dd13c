//! [`LocalRoom`]: the room held in this process's memory, its lines kept
//! on disk too with `serve --data`.
//!
//! One lock guards who is here, the history and the ring's writing end.
//! Putting a line in the ring under that lock is what makes a join's
//! subscription start exactly at its own announcement, and a newcomer's
//! history end exactly where its live lines begin.
//!
//! With a store ([`LocalRoom::with_store`]) each public line is queued
//! under that lock in the [`durable`] journal the room shares with its
//! channels, which numbers it; the store's writer puts it in the ring once
//! it is committed: a participant's subscription starts at its own
//! `joined!` line's number, and its history is read from the store, from
//! before that number, in its channel ([`recorded`]).

use super::backlog::{self, Backlog, Numbered, Reader};
use super::directory::Directory;
use super::durable::{self, Journal, Reading, Waiter};
use super::history::History;
use super::mailbox::{Inbox, Mailbox, mailbox};
use super::store::{Entry, Kind, Store};
use super::{
    Announce, Departure, JoinError, Moderation, Question, Room, Said, Subscriber, WhisperError,
    address_private_line, admit,
};
use crate::protocol;
use crate::protocol::channels::LOBBY;
use crate::sync::lock;
use anyhow::Context;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

mod recorded;

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
    /// Where its public lines go to be stored, with `--data`: one journal
    /// for the room and its channels.
    journal: Option<Arc<Journal>>,
    /// How newcomers read the store, with `--data`.
    reading: Option<Reading>,
    max_members: usize,
    /// Its channel's name ([`LOBBY`] for the room itself), as stored.
    channel: Arc<str>,
    /// What every line starts with: a channel's name and a space (none in
    /// the lobby).
    prefix: Option<Bytes>,
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
    /// With `--data`: the sequence of this room's last line queued for the
    /// store; a private line or a notice said now goes after it.
    last_seq: u64,
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
                    last_seq: 0,
                    shown: HashMap::new(),
                    closed: false,
                }),
                journal: None,
                reading: None,
                max_members,
                channel: Arc::from(LOBBY),
                prefix: None,
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
        shared.channel = Arc::from(name);
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
        let journal = Arc::new(Journal::new(next_seq));
        let shared = Arc::get_mut(&mut self.shared).context("the room has a store already")?;
        let state = shared.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.history = History::new(0);
        shared.reading = Some(Reading {
            reader: Arc::new(Mutex::new(reader)),
            history: state.history_lines,
            retain,
        });
        shared.journal = Some(journal.clone());
        self.writer = Some(durable::spawn(journal, store, retain)?);
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
        let Some(journal) = &self.shared.journal else {
            if matches!(kind, Kind::Message | Kind::Action) {
                state.history.push(&line);
            }
            state.lines.push(Numbered {
                seq: 0,
                bytes: line,
            });
            return;
        };
        let entry = self.entry(kind, nick, text);
        self.queue(journal, &mut state, Some(line), entry, waiter());
    }

    /// Queues `line` (`None`: stored, shown to nobody) of this room in
    /// `journal`, stored as `entry`, under the room's lock (`state`);
    /// returns its sequence.
    fn queue(
        &self,
        journal: &Journal,
        state: &mut State,
        line: Option<Bytes>,
        entry: Entry,
        waiter: Waiter,
    ) -> u64 {
        let seq = journal.push(&self.shared, line, entry, waiter);
        state.last_seq = seq;
        seq
    }

    /// Queues `line` of this room in `journal`, delivered after the lines
    /// queued before it and not stored.
    fn queue_unstored(&self, journal: &Journal, line: Option<Numbered>, waiter: Waiter) {
        journal.push_unstored(&self.shared, line, waiter);
    }

    /// What is stored of a line of this room, not concerning anybody else;
    /// the journal numbers and times it.
    fn entry(&self, kind: Kind, nick: &str, text: &str) -> Entry {
        Entry {
            seq: 0,
            time: time::OffsetDateTime::UNIX_EPOCH,
            channel: self.shared.channel.to_string(),
            kind,
            nick: nick.to_owned(),
            text: text.to_owned(),
            whom: String::new(),
        }
    }
}

impl Drop for LocalRoom {
    /// Lets the writer commit what is pending, and waits for it.
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        if let Some(journal) = &self.shared.journal {
            journal.stop();
        }
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
        let Some(journal) = &self.shared.journal else {
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
        let entry = self.entry(Kind::Join, nick, "");
        let shown = unannounced.is_none().then_some(line);
        let start = self.queue(
            journal,
            &mut state,
            shown,
            entry,
            Waiter::Join(key, committed),
        );
        drop(state);
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
        // As its owner spelled it, whoever spelled it otherwise (`/kick B0B`).
        let nick = member.nick.as_str();
        let announced = state.announce.quiet(size).is_none();
        let closed = state.closed;
        let Some(journal) = &self.shared.journal else {
            if !closed && announced {
                let line = self.shown(how.line(nick));
                state.lines.push(Numbered {
                    seq: 0,
                    bytes: line,
                });
            }
            // Its last line: nothing of the room's reaches it after that,
            // however soon its session takes it.
            if let Some(told) = told {
                member.value.put_last(0, told);
            }
            return true;
        };
        if let Some(told) = told {
            member.value.put(state.last_seq, told);
        }
        let release = Waiter::Release(member.value);
        if closed {
            // Nothing is announced; the mailbox closes after the lines
            // said before, the farewell included.
            self.queue_unstored(journal, None, release);
        } else {
            let entry = self.departure_entry(nick, how);
            let line = announced.then(|| self.shown(how.line(nick)));
            self.queue(journal, &mut state, line, entry, release);
        }
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
        let prefix = self.shared.prefix.as_deref().unwrap_or_default();
        self.emit(said.line_in(prefix, nick), kind, nick, text, waiter);
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
    fn notice(&self, line: Bytes) -> Result<(), &'static str> {
        let state = self.state();
        if state.closed {
            return Ok(());
        }
        match &self.shared.journal {
            None => state.lines.push(Numbered {
                seq: 0,
                bytes: line,
            }),
            Some(journal) => {
                let line = Numbered {
                    seq: state.last_seq,
                    bytes: line,
                };
                self.queue_unstored(journal, Some(line), Waiter::Nobody);
            }
        }
        Ok(())
    }

    /// As [`Room::notice`]; with a store, `line` is stored as `act`, and
    /// delivered once it is committed.
    fn moderated(&self, line: Option<Bytes>, act: Moderation<'_>) -> Result<(), &'static str> {
        self.moderate(line, act);
        Ok(())
    }

    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        let state = self.state();
        let found = state.members.find(to);
        let (line, deliver) = address_private_line(from, to, found.map(|n| n.nick.as_str()), text)?;
        // After the public lines said before it, committed or not yet.
        let after = state.last_seq;
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

    /// A room like this one (its limits, its [`Announce`] and history
    /// settings, its store), for the channel `name`, its ring bounded as
    /// [`LocalRoom::with_channel_backlog`] says.
    fn open_channel(&self, name: &str) -> Result<LocalRoom, &'static str> {
        self.channel_room(name).map_err(|_| "just now")
    }

    fn recorded(&self) -> bool {
        self.shared.reading.is_some()
    }

    fn backlog_bytes(&self) -> usize {
        self.state().lines.bytes()
    }

    fn ask(&self, nick: &str, question: Question<'_>) {
        self.ask_store(nick, question);
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
        match &self.shared.journal {
            None => state.lines.push(line),
            Some(journal) => self.queue_unstored(journal, Some(line), Waiter::Nobody),
        }
    }
}

#[cfg(test)]
mod tests;
