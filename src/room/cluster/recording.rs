//! A cluster node's own store of the room's lines (`serve --cluster
//! --data DIR`): every node keeps the same lines, filled from the stream it
//! already reads, so `/history` and `/search` answer on every node.
//!
//! The deliver loop hands each checked record, in the stream's order and
//! numbered from the stream's sequence (see `record::line_number`: a
//! message may hold several lines), to a writer thread that owns the [`Store`]
//! and appends in batches. A node does not wait for its own commit before
//! delivering a line: JetStream holds every line durably before any node
//! reads it, so a line a node has not committed yet is still in the
//! stream, and a node that stops before committing it reads it again on
//! its next start (from the message of the store's last line on). The stream stays
//! the source of the room's order; a sequence it no longer keeps (its own
//! retention) is skipped, and said once in the log.

use super::beside::{Membership, channel_token};
use super::channel::Channel;
use super::record::{Record, line_number, message_of};
use super::{Member, REQUEST_TIMEOUT, Shared};
use crate::protocol;
use crate::protocol::channels::LOBBY;
use crate::room::Question;
use crate::room::recall::{self, Asked};
use crate::room::store::{Action, Entry, Kind, Store, Upkeep};
use crate::sync::lock;
use anyhow::Context;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, watch};

/// Records read from the stream and not yet taken by the writer: past it,
/// the deliver loop waits for the writer.
const QUEUE: usize = 4096;

/// Most lines committed in one transaction.
const BATCH: usize = 1024;

/// How long the writer waits before it tries a batch the store refused
/// (a full disk) again.
const RETRY: Duration = Duration::from_secs(1);

/// A store to keep the room's lines in, and for how long.
#[derive(Debug)]
pub struct StoreOptions {
    pub store: Store,
    /// `None`: forever.
    pub retain: Option<Duration>,
}

/// What a node with a store keeps beside the room.
pub(super) struct Recording {
    /// To the writer.
    entries: mpsc::Sender<Entry>,
    /// The last line number handed to the writer.
    handed: AtomicU64,
    /// The last line number the writer is done with (stored, or stored
    /// before).
    committed: Arc<watch::Sender<u64>>,
    /// A connection of its own for newcomers' questions.
    pub(super) reader: Arc<Mutex<Store>>,
    pub(super) retain: Option<Duration>,
    /// The line number of the oldest line each participant of this node (by
    /// nick key) was shown, where its next `/history` ends.
    pub(super) shown: Mutex<HashMap<String, u64>>,
    /// The last sequence of the stream read, its lines handed to the
    /// writer; and a wake-up when it moves on, for [`Recording::settle`].
    read: AtomicU64,
    read_more: Notify,
}

impl Recording {
    /// Starts the writer, owning `options.store`; also returns where this
    /// node reads the room's stream from: after the store's last line, or
    /// after `stream_last` (the stream's last sequence) if that is older.
    pub(super) fn start(
        options: StoreOptions,
        stream_last: u64,
    ) -> anyhow::Result<(Recording, u64)> {
        let StoreOptions { store, retain } = options;
        let reader = store.try_clone()?;
        let last = store.last_seq()?.unwrap_or(0);
        let read_from = message_of(last);
        if read_from > stream_last {
            // Its sequences are not this stream's: what the stream numbers
            // up to `last` is not stored again.
            tracing::warn!(
                stored = read_from,
                stream = stream_last,
                "this node's store holds lines past the end of the room's stream (was the \
                 stream made again?): the stream's lines up to the store's last are not stored"
            );
        }
        let (entries, queued) = mpsc::channel(QUEUE);
        let committed = Arc::new(watch::channel(last).0);
        let runtime = tokio::runtime::Handle::current();
        let writer = Writer::new(store, retain, last, committed.clone());
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer.run(&runtime, queued))
            .context("cannot start the history store's writer")?;
        let recording = Recording {
            entries,
            handed: AtomicU64::new(last),
            committed,
            reader: Arc::new(Mutex::new(reader)),
            retain,
            shown: Mutex::default(),
            read: AtomicU64::new(read_from.min(stream_last)),
            read_more: Notify::new(),
        };
        Ok((recording, read_from.min(stream_last)))
    }

    /// Hands the lines of the stream's message `seq`, published at `time`
    /// in `channel` (a valid channel name, [`LOBBY`] for the room itself),
    /// to the writer, numbered by [`line_number`]; waits while the writer
    /// is [`QUEUE`] lines behind.
    pub(super) async fn keep(
        &self,
        seq: u64,
        time: OffsetDateTime,
        channel: &str,
        records: &[Record],
    ) {
        for (i, record) in records.iter().enumerate() {
            let n = line_number(seq, i);
            let mut entry = entry(n, time, record);
            channel.clone_into(&mut entry.channel);
            // The writer ends only with the process.
            let _ = self.entries.send(entry).await;
            self.handed.store(n, Ordering::Release);
        }
    }

    /// The stream was read up to `seq`, every line of it handed to the
    /// writer.
    pub(super) fn read_through(&self, seq: u64) {
        self.read.fetch_max(seq, Ordering::AcqRel);
        self.read_more.notify_waiters();
    }

    /// Waits until the stream has been read up to `seq` and the store holds
    /// every line of it: on a stop, so that the store a node leaves behind
    /// has its own participants' last lines, `left!` included.
    pub(super) async fn settle(&self, seq: u64) {
        loop {
            let more = self.read_more.notified();
            tokio::pin!(more);
            // Registered before looking, so that a read in between wakes it.
            more.as_mut().enable();
            if self.read.load(Ordering::Acquire) >= seq {
                break;
            }
            more.await;
        }
        let handed = self.handed.load(Ordering::Acquire);
        let mut committed = self.committed.subscribe();
        let _ = committed.wait_for(|&c| c >= handed).await;
    }

    /// Where `/history` of participant `key` ends, from now on.
    pub(super) fn shown(&self, key: String, oldest: u64) {
        lock(&self.shown).insert(key, oldest);
    }
}

/// What is stored of a record: its parts as they were shown; an
/// operator's action as one server with a store keeps it (kind
/// `moderation`: the operator, whom it concerns, the reason, duration or
/// topic).
fn entry(seq: u64, time: OffsetDateTime, record: &Record) -> Entry {
    let (kind, nick, text, whom) = match record {
        Record::Say { nick, text } => (Kind::Message, nick, text.as_str(), ""),
        Record::Act { nick, text } => (Kind::Action, nick, text.as_str(), ""),
        Record::Join { nick, .. } => (Kind::Join, nick, "", ""),
        Record::Leave { nick, reason, .. } => {
            (Kind::Leave, nick, reason.as_deref().unwrap_or(""), "")
        }
        Record::Kick {
            nick,
            by,
            reason,
            ban,
        } => {
            let action = if *ban { Action::Ban } else { Action::Kick };
            let reason = reason.as_deref().unwrap_or("");
            (Kind::Moderation(action), by, reason, nick.as_str())
        }
        Record::Muted { nick, by, duration } => (
            Kind::Moderation(Action::Mute),
            by,
            duration.as_str(),
            nick.as_str(),
        ),
        Record::Unmuted { nick, by } => (Kind::Moderation(Action::Unmute), by, "", nick.as_str()),
        Record::Topic { by, text, .. } => (Kind::Moderation(Action::Topic), by, text.as_str(), ""),
    };
    let mut entry = Entry::new(
        seq,
        time,
        kind,
        nick.clone(),
        protocol::sanitize(text).into_owned(),
    );
    entry.whom = whom.to_owned();
    entry
}

impl Shared {
    /// On a stop, once this node's last lines are in the stream: waits
    /// until its store holds every line up to the stream's end, its
    /// participants' `left!` lines included (the caller bounds the wait).
    pub(super) async fn settle_store(&self) {
        let Some(recording) = &self.recording else {
            return;
        };
        // The stream's end now is past every line this node sent.
        let mut stream = self.lines_stream.clone();
        if let Ok(info) = stream.info().await {
            recording.settle(info.state.last_sequence).await;
        }
    }

    /// Answers `/history` or `/search` to `nick` of this node, in the room
    /// or in `channel`, through its mailbox, from that channel's stored
    /// lines alone, once the store holds every line handed to it so far
    /// (so that whatever the asker has been shown is there), or after
    /// [`REQUEST_TIMEOUT`] if the store is failing.
    pub(super) fn ask(
        self: Arc<Self>,
        channel: Option<Arc<Channel>>,
        nick: &str,
        question: Question<'_>,
    ) {
        let Some(recording) = &self.recording else {
            return;
        };
        let key = protocol::nick_key(nick);
        let asked = match question {
            Question::History(n) => {
                let shown = channel.as_ref().map_or(&recording.shown, |c| &c.shown);
                let Some(&before) = lock(shown).get(&key) else {
                    return;
                };
                Asked::History { n, before }
            }
            Question::Search(words) => Asked::Search(words.to_owned()),
        };
        let target = recording.handed.load(Ordering::Acquire);
        let mut committed = recording.committed.subscribe();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(REQUEST_TIMEOUT, committed.wait_for(|&c| c >= target)).await;
            let _ = tokio::task::spawn_blocking(move || {
                self.answer(channel.as_deref(), &key, &asked);
            })
            .await;
        });
    }

    /// Reads the answer from the store and tells it to participant `key`
    /// (a member of `channel`, if given).
    fn answer(&self, channel: Option<&Channel>, key: &str, asked: &Asked) {
        let Some(recording) = &self.recording else {
            return;
        };
        let name = channel.map_or(LOBBY, |c| &*c.name);
        let (lines, oldest) = recall::answer_in(&recording.reader, name, asked);
        let shown = channel.map_or(&recording.shown, |c| &c.shown);
        if let Some(oldest) = oldest
            && let Some(shown) = lock(shown).get_mut(key)
        {
            *shown = (*shown).min(oldest);
        }
        // A participant that lets its mailbox fill is not reading: the
        // rest of its answer is not kept for it.
        let tell = |asker: &Member| {
            for chunk in recall::chunks(lines) {
                if !asker.tell(chunk) {
                    break;
                }
            }
        };
        match channel {
            None => self.state().members.get(key).map(tell),
            Some(channel) => lock(&channel.state).members.get(key).map(tell),
        };
    }

    /// The history of `channel` for its newcomer `key`, whose `joined!` is
    /// the stream's message `start`: the last [`Shared::history`] messages
    /// and actions of the channel stored before it, as one server gives a
    /// channel's newcomer (read once the store holds the `joined!` line
    /// itself, or after [`REQUEST_TIMEOUT`] if it is failing); and where
    /// the newcomer's `/history` in the channel goes on.
    pub(super) async fn channel_history(
        &self,
        channel: &Channel,
        key: &str,
        start: u64,
    ) -> Vec<Bytes> {
        let Some(recording) = &self.recording else {
            return Vec::new();
        };
        let joined = line_number(start, 0);
        let mut oldest = joined;
        let mut lines = Vec::new();
        if self.history > 0 {
            let mut committed = recording.committed.subscribe();
            let _ =
                tokio::time::timeout(REQUEST_TIMEOUT, committed.wait_for(|&c| c >= joined)).await;
            let (reader, name, n) = (recording.reader.clone(), channel.name.clone(), self.history);
            let read =
                tokio::task::spawn_blocking(move || lock(&reader).recent(&name, Some(joined), n));
            match read.await {
                Ok(Ok(entries)) => {
                    oldest = entries.first().map_or(joined, |e| e.seq);
                    lines = entries
                        .iter()
                        .map(|e| protocol::history_line(&e.line_in(&channel.name)))
                        .collect();
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = format!("{e:#}"), "cannot read a channel's history");
                }
                Err(e) => tracing::warn!(error = %e, "cannot read a channel's history"),
            }
        }
        lock(&channel.shown).insert(key.to_owned(), oldest);
        lines
    }

    /// The name channel `token`'s lines are stored under: as its first
    /// member spelled it, or its key with a `#` (a valid name of the
    /// same channel) if this node does not know that. A node reads the
    /// memberships before the stream, so one catching up knows the
    /// spelling of every channel that has members; a channel's first
    /// `joined!` (`record`) may come before the watch has its membership,
    /// which is then read from the bucket.
    pub(super) async fn stored_name(&self, token: &str, record: &Record) -> String {
        let known = self
            .channels
            .spelling(token)
            .or_else(|| self.channels.open(token).map(|c| c.name.to_string()));
        let known = match (known, record) {
            (Some(name), _) => Some(name),
            (None, Record::Join { nick, .. }) => self.spelled_by(token, nick).await,
            (None, _) => None,
        };
        known
            .filter(|name| {
                protocol::channels::validate_channel(name).is_ok() && channel_token(name) == token
            })
            .unwrap_or_else(|| format!("#{token}"))
    }

    /// Channel `token`'s name as spelled in `nick`'s membership entry, if
    /// it holds one (checked as the watch checks it).
    async fn spelled_by(&self, token: &str, nick: &str) -> Option<String> {
        let key = format!("ch.{token}.{}", protocol::nick_key(nick));
        let entry = tokio::time::timeout(REQUEST_TIMEOUT, self.nicks.entry(key.as_str()))
            .await
            .ok()?
            .ok()??;
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            return None;
        }
        Membership::decode(&key, &entry.value)
            .ok()
            .map(|(_, membership)| membership.channel)
    }
}

struct Writer {
    store: Store,
    committed: Arc<watch::Sender<u64>>,
    upkeep: Upkeep,
    /// The last line number stored: what comes again is not stored twice.
    stored: u64,
    /// Whether the last commit failed: an outage is logged once.
    failing: bool,
}

impl Writer {
    fn new(
        store: Store,
        retain: Option<Duration>,
        stored: u64,
        committed: Arc<watch::Sender<u64>>,
    ) -> Self {
        Writer {
            store,
            committed,
            upkeep: Upkeep::new(retain),
            stored,
            failing: false,
        }
    }

    fn run(mut self, runtime: &tokio::runtime::Handle, mut queued: mpsc::Receiver<Entry>) {
        let mut batch: Vec<Entry> = Vec::new();
        loop {
            self.upkeep.run_due(&mut self.store);
            if batch.is_empty() {
                let wait = self.upkeep.deadline().map_or(Duration::MAX, |due| {
                    due.saturating_duration_since(Instant::now())
                });
                // Made inside the runtime: a timer needs its context.
                let next =
                    runtime.block_on(async { tokio::time::timeout(wait, queued.recv()).await });
                match next {
                    Ok(Some(entry)) => batch.push(entry),
                    Ok(None) => {
                        self.upkeep.finish(&mut self.store);
                        return;
                    }
                    Err(_) => continue,
                }
            }
            while batch.len() < BATCH {
                match queued.try_recv() {
                    Ok(entry) => batch.push(entry),
                    Err(_) => break,
                }
            }
            let through = batch.last().map_or(0, |entry| entry.seq);
            batch.retain(|entry| entry.seq > self.stored);
            if self.commit(&batch) {
                if !batch.is_empty() {
                    self.upkeep.committed(&mut self.store);
                }
                batch.clear();
                self.committed.send_if_modified(|c| {
                    let later = through > *c;
                    *c = (*c).max(through);
                    later
                });
            } else {
                std::thread::sleep(RETRY);
            }
        }
    }

    /// Appends `batch`; false if the store refused it (it is tried again).
    fn commit(&mut self, batch: &[Entry]) -> bool {
        let Some(last) = batch.last() else {
            return true;
        };
        match self.store.append(batch) {
            Ok(()) => {
                self.stored = last.seq;
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the history store works again");
                }
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the history store is unavailable: the room's lines are kept for it \
                         until it works again"
                    );
                }
                false
            }
        }
    }
}
