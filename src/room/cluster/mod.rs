//! One room shared by several `serve` nodes through NATS JetStream: the
//! [`Room`] behind `serve --cluster`.
//!
//! We write no consensus of our own; JetStream gives an ordered, persistent,
//! deduplicating stream and a key-value store with compare-and-set:
//!
//! * **Order.** Every line (messages, `joined!`, `left!`) is published to
//!   one stream per room, `CHAT_<room>`; the stream's sequence number is the
//!   one global order. A sender's lines that wait behind its message in
//!   flight go out together, in one message, keeping their order. Each
//!   node reads the stream with one ordered consumer
//!   and hands each line to its participants through a local ring of shared
//!   [`Bytes`], as [`LocalRoom`](crate::room::LocalRoom) does. Every publish
//!   carries a `Nats-Msg-Id`, so a retried publish is stored once.
//! * **A newcomer's transcript** starts at the sequence the acknowledgement
//!   of its own `joined!` line returned: it subscribes to the local ring
//!   before publishing, and skips whatever came before.
//! * **Nicknames** live in the bucket `chat_<room>_nicks`, keyed by their
//!   case-insensitive form: joining is `create` (refused when the key
//!   exists), leaving is a revision-checked `delete`. Each entry names the
//!   node that holds it.
//! * **Liveness.** Each node refreshes its key in `chat_<room>_nodes`, a
//!   bucket whose entries expire after [`shared.liveness.ttl`]. Each node watches
//!   the nickname bucket; a nickname whose node's key has expired is deleted
//!   with the revision it was seen at (so exactly one node wins), and the
//!   winner publishes `<nick> left!`.
//! * **Outages.** While NATS is away a participant's line is refused with
//!   `ERROR message not sent: the room is unavailable`, delivered through
//!   its own subscription; the client library reconnects by itself, and the
//!   ordered consumer resumes after the last sequence this node delivered.
//! * **Private lines** (`/msg`) go straight to the recipient's node, after
//!   the sender's earlier lines, and are held there until the public lines
//!   said before them have been read (see [`private`] and
//!   [`Subscriber`](crate::room::Subscriber)).
//! * **A store on every node** (`serve --data`): each node keeps the room's
//!   lines in a store of its own, filled from the stream in its order and
//!   caught up from the stream on start; `/history` and `/search` answer
//!   from it (see `recording`).
//! * **Channels** are subjects of the room's stream, `chat.<room>.ch.<key>`,
//!   read by the same consumer into a ring per channel, their members
//!   entries of the nickname bucket (see `channel`).
//! * **Operators' actions** apply where they must: a kick on the node of
//!   the one put out, a mute on every node (see `orders`).
//!
//! Limits keep their per-node meaning: the participant limit counts this
//! node's participants, and the ring bounds how far each may fall behind.
//!
//! The parts, by job: [`connect`] (options, names, connecting and its error
//! texts), `publish` (the outgoing queue and per-sender publishing),
//! `deliver` (reading the stream in order, and history), `liveness` (node
//! entries, the nickname watch, taking over a dead node's nicknames),
//! [`private`] (lines for one participant on any node), `recording`
//! (this node's store), `channel` (channels), `orders` (operators'
//! kicks and mutes), `topics` (topics, kept for nodes that start later),
//! `record` and `beside` (what nodes put in NATS, and how a node checks
//! it).

mod beside;
mod channel;
pub mod connect;
mod deliver;
mod liveness;
mod orders;
pub mod private;
mod publish;
mod record;
mod recording;
mod topics;

pub use connect::{ClusterOptions, DEFAULT_NODE_TIMEOUT, default_node_name};
pub use recording::StoreOptions;

use super::backlog::{self, Backlog};
use super::directory::Directory;
use super::mailbox::{Mailbox, mailbox};
use super::{
    Departure, JoinError, Moderation, Mute, Protected, Question, Room, Said, Subscriber,
    UNAVAILABLE, WhisperError, address_private_line, admit,
};
use crate::protocol;
use crate::sync::lock;
use async_nats::jetstream::{Context as JetStream, kv, stream};
use beside::Order;
use bytes::Bytes;
use connect::Link;
use liveness::Liveness;
use publish::{JOIN_RETRY_FOR, OUTGOING_QUEUE, Queued, SenderQueue};
use record::{PrivateRecord, Record, Rejected};
use recording::Recording;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, timeout};

/// How long a NATS request (a key-value operation, an acknowledgement) may
/// take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A participant's reading of a cluster room.
pub type ClusterSubscription = Subscriber<StoredLine>;

/// What a nickname's entry says: who holds it, on which node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Holder {
    pub(super) node: String,
    pub(super) nick: String,
}

impl Holder {
    /// A nickname entry of the room, checked: the nickname one a join
    /// accepts, stored under its own key, and a valid node name.
    fn decode(key: &str, value: &[u8]) -> Result<Holder, Rejected> {
        let holder: Holder = serde_json::from_slice(value)
            .map_err(|_| Rejected::Malformed("not a nickname entry"))?;
        record::valid_nick(&holder.nick)?;
        if protocol::nick_key(&holder.nick) != key
            || connect::validate_node_name(&holder.node).is_err()
        {
            return Err(Rejected::Malformed("not a nickname entry"));
        }
        Ok(holder)
    }
}

/// Who holds a nickname, as the nickname bucket says: the entry's revision
/// and the holder's node.
#[derive(Debug, Clone)]
struct Holding {
    revision: u64,
    node: String,
}

/// A line of the room, with its place in the global order.
pub type StoredLine = backlog::Numbered;

/// The room as one node sees it, or one of its channels
/// ([`Room::open_channel`]).
pub struct ClusterRoom {
    shared: Arc<Shared>,
    /// The channel, for a channel's room.
    channel: Option<Arc<channel::Channel>>,
}

struct Shared {
    node: String,
    subject: String,
    /// Where lines for one participant of a node go: `<prefix>.<node>`.
    private_prefix: String,
    /// What a channel's subject starts with: `chat.<room>.ch.`.
    channel_subjects: String,
    /// Where operators' orders go: `chat.<room>.orders`.
    orders_subject: String,
    /// Whether the room's stream takes the channels' and orders' subjects
    /// (one made before it had channels does not).
    has_channels: bool,
    /// The room's channels, on this node and on every node.
    channels: channel::Registry,
    /// The operators' orders this node applies.
    orders: orders::Orders,
    lines_stream: stream::Stream,
    history: usize,
    js: JetStream,
    client: async_nats::Client,
    nicks: kv::Store,
    nodes: kv::Store,
    liveness: Liveness,
    state: Mutex<State>,
    /// Every nickname entry of the room, on every node, as watched.
    directory: Mutex<Directory<Holding>>,
    /// Counts the changes to `directory`, for whoever waits for one.
    directory_changed: watch::Sender<u64>,
    queue: mpsc::Sender<Queued>,
    link: Arc<Link>,
    in_flight: Arc<Semaphore>,
    /// Per sender (nickname key) with lines being published, what waits
    /// behind the message in flight. A sender's messages are published one
    /// after another by one task, so that a message published again after
    /// a lost acknowledgement cannot land after a later one of the same
    /// sender; what waits behind one goes out together in the next (see
    /// `record::batch`), so a sender with many lines waiting costs a
    /// fraction of a message per line. Different senders' tasks run side
    /// by side, each holding one permit at a time, so a sender that floods
    /// fills its own queue, not the node's.
    senders: Mutex<HashMap<String, SenderQueue>>,
    /// How many sender tasks run (see `Flush`).
    sending: watch::Sender<usize>,
    /// Participants' lines accepted and not yet stored or given up, on
    /// this node: at most `OUTGOING_QUEUE`.
    waiting: AtomicUsize,
    max_members: usize,
    /// Up to which size of the whole room joins and leaves are announced.
    announce: super::Announce,
    /// The highest sequence of the room's stream this node knows to be
    /// stored (read from the stream, or acknowledged to it): what a private
    /// line sent now must not overtake.
    known: AtomicU64,
    /// The longest text a record read from NATS may carry: this node's
    /// line limit (`--max-line`).
    max_line: usize,
    /// Records read from NATS that no node of this room writes, since the
    /// last report, and why the last one was dropped.
    rejected: Mutex<(u64, Option<Rejected>)>,
    /// This node's store of the room's lines, with `--data`.
    recording: Option<Recording>,
    /// Unique to this process, so message ids never repeat across restarts.
    boot: String,
    next_id: AtomicU64,
}

struct State {
    /// This node's participants by nickname key.
    members: HashMap<String, Member>,
    lines: Backlog<StoredLine>,
    closed: bool,
}

struct Member {
    /// As its owner spells it.
    nick: String,
    /// The nickname entry's revision; `None` while the join is under way,
    /// and once the participant is disconnected by the room.
    revision: Option<u64>,
    /// Lines for this participant alone (private messages, why its line
    /// was not sent);
    /// `None` once it is disconnected by the room (see `Shared::kick`).
    /// Until its session leaves, its nickname stays taken on this node.
    private: Option<Mailbox>,
}

impl Member {
    /// Queues `line` (from the node itself) for this participant alone, to
    /// be read after the room lines already waiting; false if that failed.
    fn tell(&self, line: Bytes) -> bool {
        self.tell_after(0, line)
    }

    /// Queues `line` for this participant alone as its last: its mailbox
    /// closes behind it in the same step, so nothing of the room's reaches
    /// it after that line, however soon its session takes it.
    fn tell_last(&mut self, line: Bytes) {
        if let Some(private) = self.private.take() {
            private.put_last(0, line);
        }
    }

    /// Queues `line` for this participant alone, to be read once it has
    /// read the room up to sequence `after`; false if that failed.
    fn tell_after(&self, after: u64, line: Bytes) -> bool {
        self.private
            .as_ref()
            .is_some_and(|private| private.put(after, line))
    }
}

impl ClusterRoom {
    /// Once every session has left: waits (a bounded time) until their
    /// `left!` lines are stored in the room's stream and, with `--data`, in
    /// this node's store, then withdraws this node's liveness entry so that
    /// the others do not wait for it to expire.
    pub async fn finish(&self) {
        self.shared.store_last_lines().await;
        let _ = timeout(REQUEST_TIMEOUT, self.shared.nodes.delete(&self.shared.node)).await;
        let _ = timeout(REQUEST_TIMEOUT, self.shared.client.flush()).await;
    }

    /// A watch that changes whenever the room's directory (who is here, on
    /// every node, as [`Room::members`] lists them) has taken in a change of
    /// the nickname bucket: the event to wait for after a join or a leave on
    /// another node.
    pub fn directory_changes(&self) -> watch::Receiver<u64> {
        self.shared.directory_changed.subscribe()
    }

    /// Whether this node's link to NATS is up: while it is down, the room
    /// refuses joins and lines.
    pub fn is_linked(&self) -> bool {
        self.shared.connected_since().is_some()
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.shared.node
    }

    /// The nickname `to` (found in any case or lookalike spelling) as its
    /// owner spells it, if someone on any node holds it.
    pub fn recipient(&self, to: &str) -> Option<String> {
        let key = protocol::nick_key(to);
        if let Some(member) = self.shared.state().members.get(&key)
            && member.revision.is_some()
        {
            return Some(member.nick.clone());
        }
        lock(&self.shared.directory)
            .get(&key)
            .map(|named| named.nick.clone())
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Drops something read from NATS that no node of this room wrote
    /// (see [`record`]); counted, and reported by [`Shared::report_rejected`].
    fn reject(&self, why: Rejected) {
        tracing::debug!("dropped a record read from NATS: {why}");
        let mut rejected = lock(&self.rejected);
        rejected.0 += 1;
        rejected.1 = Some(why);
    }

    /// Logs how many records were dropped since the last report, if any:
    /// one line, however many (anyone allowed to publish to the room's
    /// subjects could otherwise flood the log).
    fn report_rejected(&self) {
        let (count, last) = std::mem::take(&mut *lock(&self.rejected));
        if let Some(last) = last {
            tracing::warn!(
                records = count,
                "dropped records read from NATS that no node of this room writes (the last: {last}): \
                 something other than the room's nodes publishes to its subjects"
            );
        }
    }

    fn connected_since(&self) -> Option<Instant> {
        *lock(&self.link.since)
    }

    /// Tells the participant `key` of this node that its line was not sent.
    fn refuse(&self, key: &str) {
        self.refuse_because(key, UNAVAILABLE);
    }

    /// Tells participant `key` its line was not sent, and why.
    fn refuse_because(&self, key: &str, why: &str) {
        if let Some(member) = self.state().members.get(key) {
            member.tell(protocol::error_line(format!("message not sent: {why}")));
        }
    }

    /// Ends the session of this node's participant `key`, telling it why.
    fn kick(&self, key: &str) {
        if let Some(member) = self.state().members.get_mut(key) {
            member.tell(protocol::error_line(
                "disconnected: this server lost the room",
            ));
            // Dropping the sender ends the subscription after that line;
            // without a revision, its leaving announces nothing.
            member.private = None;
            member.revision = None;
        }
    }

    /// Tells the others how `nick` (key `key`, its entry at `revision`),
    /// no longer a participant of this node, left, once its nickname is
    /// free.
    fn leave_lobby(&self, key: &str, nick: &str, revision: u64, how: Departure<'_>) {
        if let Some(recording) = &self.recording {
            lock(&recording.shown).remove(key);
        }
        let quiet = self.announce.quiet(lock(&self.directory).len()).is_some();
        let leave = Queued::Leave {
            key: key.to_owned(),
            nick: nick.to_owned(),
            revision,
            payload: Record::departed(nick, how, quiet).encode(),
        };
        if self.queue.try_send(leave).is_err() {
            // The queue is full or gone: the scan for orphans releases the
            // nickname instead (it is ours and nobody here holds it).
            tracing::warn!(%nick, "leave queued for the next scan");
        }
    }

    /// The whole room's size, as this node knows it, once `key` is in it.
    fn size_with(&self, key: &str) -> usize {
        let directory = lock(&self.directory);
        directory.len() + usize::from(!directory.contains(key))
    }

    /// Claims `key` for `nick` of this node in the nickname bucket; the
    /// entry's revision, or why the join is refused.
    async fn claim(&self, key: &str, nick: &str) -> Result<u64, JoinError> {
        let holder = Holder {
            node: self.node.clone(),
            nick: nick.to_owned(),
        };
        let value = serde_json::to_vec(&holder).map_err(|_| JoinError::Unavailable)?;
        match timeout(REQUEST_TIMEOUT, self.nicks.create(key, Bytes::from(value))).await {
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(protocol::NickError::Taken(nick.to_owned()).into())
            }
            Ok(Err(e)) => {
                tracing::warn!(%nick, "cannot claim the nickname: {e}");
                Err(JoinError::Unavailable)
            }
            Err(_) => {
                tracing::warn!(%nick, "cannot claim the nickname: timed out");
                Err(JoinError::Unavailable)
            }
        }
    }
}

impl Room for ClusterRoom {
    type Subscription = ClusterSubscription;

    async fn join(&self, nick: &str) -> Result<ClusterSubscription, JoinError> {
        if let Some(channel) = &self.channel {
            return channel.join(&self.shared, nick).await;
        }
        let shared = &self.shared;
        let key = protocol::nick_key(nick);
        let (mailbox, inbox) = mailbox();
        {
            let mut state = shared.state();
            let here = state.members.len();
            admit(
                nick,
                state.members.contains_key(&key),
                state.closed,
                here,
                shared.max_members,
            )?;
            if shared.connected_since().is_none() {
                return Err(JoinError::Unavailable);
            }
            let member = Member {
                revision: None,
                nick: nick.to_owned(),
                private: Some(mailbox),
            };
            state.members.insert(key.clone(), member);
        }
        // Whatever goes wrong below gives the place back.
        let revision = match shared.claim(&key, nick).await {
            Ok(revision) => revision,
            Err(refused) => {
                shared.state().members.remove(&key);
                return Err(refused);
            }
        };
        let ring = {
            let mut state = shared.state();
            if let Some(member) = state.members.get_mut(&key) {
                member.revision = Some(revision);
            }
            state.lines.subscribe()
        };
        let id = format!("joined.{key}.{revision}");
        let unannounced = shared.announce.quiet(shared.size_with(&key));
        let record = Record::joined(nick, unannounced.is_some());
        match shared
            .publish_stored(&record.encode(), &id, JOIN_RETRY_FOR)
            .await
        {
            Ok(start) => {
                let (mut history, oldest) = shared.read_history(start).await;
                if let Some(recording) = &shared.recording {
                    recording.shown(key, oldest);
                    history.push(protocol::retention_line(recording.retain));
                }
                Ok(match unannounced {
                    None => Subscriber::new(ring, inbox, start, Arc::from(history)),
                    Some(notice) => {
                        let own = [protocol::joined_line(nick), notice];
                        let lines = own.into_iter().chain(history).collect();
                        Subscriber::unannounced(ring, inbox, start, lines)
                    }
                })
            }
            Err(e) => {
                tracing::warn!(%nick, "cannot announce the newcomer: {e}");
                shared.state().members.remove(&key);
                let _ = timeout(
                    REQUEST_TIMEOUT,
                    shared.nicks.delete_expect_revision(&key, Some(revision)),
                )
                .await;
                Err(JoinError::Unavailable)
            }
        }
    }

    /// Sends a participant's public line (a message, an action) to
    /// everyone, in the room's order and history; if it cannot be
    /// published, its sender is told so.
    fn say(&self, nick: &str, said: Said<'_>) {
        if let Some(channel) = &self.channel {
            return channel.say(&self.shared, nick, said);
        }
        let key = protocol::nick_key(nick);
        if self.shared.state().closed {
            return;
        }
        if self.shared.connected_since().is_none() {
            return self.shared.refuse(&key);
        }
        // Counted from here until stored or given up, wherever it waits:
        // the node's queue, or its sender's.
        if self.shared.waiting.fetch_add(1, Ordering::AcqRel) >= OUTGOING_QUEUE {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return self.shared.refuse(&key);
        }
        let public = Queued::Line {
            payload: Record::said(nick, said).encode(),
            from: Some(key.clone()),
        };
        if self.shared.queue.try_send(public).is_err() {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            self.shared.refuse(&key);
        }
    }

    /// Removes `nick` of this node and tells the others how it left, once
    /// its nickname is free.
    fn depart(&self, nick: &str, how: Departure<'_>) {
        if let Some(channel) = &self.channel {
            channel.depart(&self.shared, nick, how);
            return;
        }
        let key = protocol::nick_key(nick);
        if let Some(recording) = &self.shared.recording {
            lock(&recording.shown).remove(&key);
        }
        let Some(member) = self.shared.state().members.remove(&key) else {
            return;
        };
        let Some(revision) = member.revision else {
            return;
        };
        self.shared.leave_lobby(&key, nick, revision, how);
    }

    /// The private line goes through its sender's queue, after the lines
    /// the sender said before it; if it cannot be delivered (the recipient
    /// is not reading, or left meanwhile), the sender is told so then.
    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        let found = self.recipient(to);
        let (line, deliver) = address_private_line(from, to, found.as_deref(), text)?;
        let Some(recipient) = found.filter(|_| deliver) else {
            return Ok(line);
        };
        if self.shared.connected_since().is_none() {
            return Err(WhisperError::Unavailable);
        }
        let record = PrivateRecord {
            after: 0,
            to: protocol::nick_key(&recipient),
            from: from.to_owned(),
            text: text.to_owned(),
        };
        let private = Queued::Private {
            from: protocol::nick_key(from),
            to: recipient,
            record,
        };
        self.shared
            .queue
            .try_send(private)
            .map_err(|_| WhisperError::Unavailable)?;
        Ok(line)
    }

    /// Everybody in the room (or the channel) on every node, from the
    /// nickname bucket as watched.
    fn members(&self, max: usize) -> (usize, Vec<String>) {
        if let Some(channel) = &self.channel {
            return self.shared.channels.members(&channel.token, max);
        }
        let directory = lock(&self.shared.directory);
        (directory.len(), directory.first(max))
    }

    async fn put_out(
        &self,
        nick: &str,
        told: Bytes,
        how: Departure<'_>,
    ) -> Result<bool, &'static str> {
        match &self.channel {
            Some(channel) => Ok(channel.depart(&self.shared, nick, how)),
            None => self.put_out_anywhere(nick, told, how).await,
        }
    }

    /// Told from `act`'s parts on every node (`line` is this node's
    /// own formatting, which no record carries).
    fn moderated(&self, line: Option<Bytes>, act: Moderation<'_>) -> Result<(), &'static str> {
        let _ = line;
        match &self.channel {
            Some(channel) => channel.moderated(&self.shared, act),
            None => self.shared.lobby_moderated(act),
        }
    }

    /// An order every node applies; in a room whose stream has no orders'
    /// subject, this node's server keeps the mute.
    fn mute(&self, mute: Mute<'_>) -> Option<Result<(), &'static str>> {
        let shared = self.shared.has_channels;
        shared.then(|| self.give_order(self.mute_order(mute)))
    }

    fn unmute(&self, nick: &str, by: &str) -> Option<Result<bool, &'static str>> {
        if !self.shared.has_channels {
            return None;
        }
        if self.shared.orders.muted_until(nick).is_none() {
            return Some(Ok(false));
        }
        let (nick, by, node) = (nick.to_owned(), by.to_owned(), self.shared.node.clone());
        Some(
            self.give_order(Order::Unmute { nick, by, node })
                .map(|()| true),
        )
    }

    fn muted_until(&self, nick: &str) -> Option<time::OffsetDateTime> {
        self.shared.orders.muted_until(nick)
    }

    fn topic(&self) -> Option<String> {
        let token = self.channel.as_ref().map_or("", |c| c.token.as_str());
        self.shared.channels.topic(token)
    }

    fn moved(&self, nick: &str, channel: Option<&str>) {
        let mut current = lock(&self.shared.orders.current);
        match channel {
            None => current.remove(&protocol::nick_key(nick)),
            Some(name) => current.insert(protocol::nick_key(nick), beside::channel_token(name)),
        };
    }

    fn protect(&self, protected: Protected) {
        *lock(&self.shared.orders.protected) = Some(protected);
    }

    fn channel_spelling(&self, name: &str) -> Option<String> {
        self.shared.channels.spelling(&beside::channel_token(name))
    }

    fn channels_elsewhere(&self) -> Vec<(String, usize)> {
        self.shared.channels.elsewhere()
    }

    /// The channel `name` on this node: its lines in the room's stream
    /// under a subject of its own (see [`channel`]).
    fn open_channel(&self, name: &str) -> Result<ClusterRoom, &'static str> {
        if !self.shared.has_channels {
            return Err("in this room: its stream was made without the channels' subjects");
        }
        Ok(ClusterRoom {
            shared: self.shared.clone(),
            channel: Some(self.shared.open_channel(name)),
        })
    }

    fn recorded(&self) -> bool {
        self.shared.recording.is_some()
    }

    fn backlog_bytes(&self) -> usize {
        self.shared.state().lines.bytes()
    }

    /// Answers from this node's own store (see [`recording`]), from the
    /// lines of the room or of this channel, once it holds every line this
    /// node has read so far.
    fn ask(&self, nick: &str, question: Question<'_>) {
        let channel = self.channel.clone();
        self.shared.clone().ask(channel, nick, question);
    }

    /// Says `farewell` to this node's participants only: the room goes on
    /// on the other nodes, which hear this node's participants leave.
    fn close(&self, farewell: Bytes) {
        if let Some(channel) = &self.channel {
            return channel.close();
        }
        let mut state = self.shared.state();
        if !state.closed {
            state.lines.push(StoredLine {
                seq: u64::MAX,
                bytes: farewell,
            });
            state.closed = true;
        }
    }
}
