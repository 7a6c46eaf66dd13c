//! Channels of a cluster room (`/join #ops` on any node).
//!
//! A channel costs no stream, consumer or bucket of its own: its records
//! go to the room's stream under the subject `chat.<room>.ch.<channel>`
//! (the channel's key, its lookalike skeleton without the `#`: `a-z`,
//! `0-9`, `_`), which each node's one ordered consumer reads with the
//! lobby's, handing each line to that channel's ring on this node. So a
//! channel's order is the stream's order restricted to its subject, the
//! same on every node. A node with a store (`--data`) keeps every
//! channel's records in it too, each under its channel, and answers a
//! channel's `/history`, `/search` and newcomers from them (see
//! `recording`).
//!
//! Its members on every node are entries of the nickname bucket under
//! `ch.<channel>.<nick>` (a nickname key holds no dot, so they never meet
//! a nickname's entry), made at `/join` and deleted, revision-checked, at
//! `/part`, with the `joined!` and `left!` lines published by whoever made
//! or deleted them. Every node watches them ([`Registry`]): `/list`,
//! `/rooms` and a join's `[join]` line count every node's members, and a
//! channel is forgotten (its topic with it, see `topics`) once it has none
//! left on any node. A dead node's entries are taken over as its nicknames are
//! ([`take_over_channels`]).
//!
//! A member's records in a channel are published one after another, as in
//! the lobby, by a task per sender with something to publish; a join waits
//! in that queue too, so that a `/part` and a `/join` again come in order.

use super::beside::{Membership, channel_token};
use super::liveness::node_is_alive;
use super::publish::{JOIN_RETRY_FOR, OUTGOING_QUEUE};
use super::record::Record;
use super::topics::Topics;
use super::{ClusterSubscription, Holding, Member, REQUEST_TIMEOUT, Shared, StoredLine};
use crate::protocol;
use crate::room::backlog::Backlog;
use crate::room::directory::Directory;
use crate::room::mailbox::mailbox;
use crate::room::{Departure, JoinError, Moderation, Said, Subscriber, UNAVAILABLE, admit};
use crate::sync::lock;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::timeout;

/// How long a channel line whose acknowledgement did not come is
/// published again, as in the lobby.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Lines one member may have waiting in one channel behind the one in
/// flight, as in the lobby.
const SENDER_QUEUE: usize = 256;

/// The sender key of this node's own notices in a channel (no nickname
/// key is empty).
const SERVER: &str = "";

/// One channel with members on this node.
pub(super) struct Channel {
    /// Its key in subjects and bucket keys (see the module doc).
    pub(super) token: String,
    /// As spelled by its first member on this node.
    pub(super) name: Box<str>,
    subject: String,
    pub(super) state: Mutex<ChannelState>,
    /// With a store: the line number of the oldest line of the channel
    /// each member of this node (by nick key) was shown, where its next
    /// `/history` in the channel ends.
    pub(super) shown: Mutex<HashMap<String, u64>>,
    /// Per sender (nickname key), what waits behind its record in flight.
    senders: Mutex<HashMap<String, VecDeque<Work>>>,
}

pub(super) struct ChannelState {
    /// This node's members, by nickname key.
    pub(super) members: HashMap<String, Member>,
    lines: Backlog<StoredLine>,
    closed: bool,
}

/// What a sender's task does next, in the order the sender did it.
enum Work {
    Join {
        nick: String,
        quiet: bool,
        done: oneshot::Sender<Result<(u64, u64), JoinError>>,
    },
    Line {
        payload: Bytes,
        id: String,
    },
    Leave {
        nick: String,
        revision: u64,
        payload: Bytes,
    },
}

/// What this node knows of the room's channels.
pub(super) struct Registry {
    /// The bound of each channel's ring, in bytes.
    backlog: usize,
    /// Channels with members on this node, by key.
    open: Mutex<HashMap<String, Weak<Channel>>>,
    /// Every channel's members on every node, by key, as watched.
    listed: Mutex<BTreeMap<String, Listed>>,
    /// Topics by channel key (the lobby's under ""), as read from the
    /// stream and the nickname bucket; a channel's is forgotten with the
    /// channel.
    pub(super) topics: Topics,
}

struct Listed {
    /// As its first member spelled it.
    name: String,
    members: Directory<Holding>,
}

impl Registry {
    /// Channels whose rings hold `backlog` bytes each (at least the
    /// smallest ring).
    pub(super) fn new(backlog: usize) -> Registry {
        Registry {
            backlog: backlog.max(crate::room::backlog::MIN_BYTES),
            open: Mutex::default(),
            listed: Mutex::default(),
            topics: Topics::default(),
        }
    }

    /// The channel `token` if it has members on this node.
    pub(super) fn open(&self, token: &str) -> Option<Arc<Channel>> {
        lock(&self.open).get(token).and_then(Weak::upgrade)
    }

    /// Every channel with members on this node.
    pub(super) fn all_open(&self) -> Vec<Arc<Channel>> {
        lock(&self.open)
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// How many are in channel `token` on every node, and the first `max`
    /// of them in alphabetical order.
    pub(super) fn members(&self, token: &str, max: usize) -> (usize, Vec<String>) {
        lock(&self.listed)
            .get(token)
            .map_or((0, Vec::new()), |l| (l.members.len(), l.members.first(max)))
    }

    /// The size of channel `token` once `key` is in it.
    fn size_with(&self, token: &str, key: &str) -> usize {
        lock(&self.listed).get(token).map_or(1, |l| {
            l.members.len() + usize::from(!l.members.contains(key))
        })
    }

    /// Whether the watch has taken in `key`'s membership of channel
    /// `token` at `revision` (or a later one).
    fn holds(&self, token: &str, key: &str, revision: u64) -> bool {
        lock(&self.listed).get(token).is_some_and(|l| {
            l.members
                .get(key)
                .is_some_and(|named| named.value.revision >= revision)
        })
    }

    /// The channels with no member on this node, and their sizes.
    pub(super) fn elsewhere(&self) -> Vec<(String, usize)> {
        let open = lock(&self.open);
        lock(&self.listed)
            .iter()
            .filter(|(token, _)| open.get(*token).is_none_or(|c| c.strong_count() == 0))
            .map(|(_, listed)| (listed.name.clone(), listed.members.len()))
            .collect()
    }

    /// The channel `token`'s name, as spelled on the node of its first
    /// member.
    pub(super) fn spelling(&self, token: &str) -> Option<String> {
        lock(&self.listed).get(token).map(|l| l.name.clone())
    }

    /// The topic of channel `token` ("": the lobby).
    pub(super) fn topic(&self, token: &str) -> Option<String> {
        self.topics.get(token)
    }

    /// A topic record of channel `token` ("": the lobby) read from the
    /// stream.
    pub(super) fn set_topic(&self, token: &str, text: &str) {
        self.topics.read_in_stream(token, text);
    }

    /// Forgets every member: the watch starts again.
    pub(super) fn clear(&self) {
        lock(&self.listed).clear();
    }

    /// Takes in a membership entry `key` (`ch.<channel>.<nick>`) as
    /// watched at `revision`: `Some` value when put, `None` when deleted.
    pub(super) fn watched(&self, shared: &Shared, key: &str, revision: u64, put: Option<&[u8]>) {
        let mut parts = key.splitn(3, '.').skip(1);
        let (Some(token), Some(nick_key)) = (parts.next(), parts.next()) else {
            return;
        };
        let mut listed = lock(&self.listed);
        if let Some(value) = put {
            match Membership::decode(key, value) {
                Ok((token, entry)) => {
                    let channel = listed.entry(token).or_insert_with(|| Listed {
                        name: entry.channel.clone(),
                        members: Directory::default(),
                    });
                    let holding = Holding {
                        revision,
                        node: entry.node,
                    };
                    channel
                        .members
                        .insert(nick_key.to_owned(), entry.nick, holding);
                    return;
                }
                Err(why) => shared.reject(why),
            }
        }
        if let Some(channel) = listed.get_mut(token) {
            channel.members.remove(nick_key);
            if channel.members.len() == 0 {
                listed.remove(token);
                shared.forget_topic(token, revision);
            }
        }
    }

    /// Every membership entry: channel key, nickname key, revision, node
    /// and nickname.
    fn entries(&self) -> Vec<(String, String, u64, String, String)> {
        let listed = lock(&self.listed);
        let mut entries = Vec::new();
        for (token, channel) in listed.iter() {
            for (key, named) in channel.members.iter() {
                let (revision, node) = (named.value.revision, named.value.node.clone());
                entries.push((
                    token.clone(),
                    key.clone(),
                    revision,
                    node,
                    named.nick.clone(),
                ));
            }
        }
        entries
    }
}

impl Shared {
    /// The channel `name` on this node, made if it has no member here
    /// yet.
    pub(super) fn open_channel(&self, name: &str) -> Arc<Channel> {
        let token = channel_token(name);
        let mut open = lock(&self.channels.open);
        if let Some(channel) = open.get(&token).and_then(Weak::upgrade) {
            return channel;
        }
        open.retain(|_, channel| channel.strong_count() > 0);
        let channel = Arc::new(Channel {
            subject: self.channel_subject(&token),
            token: token.clone(),
            name: name.into(),
            state: Mutex::new(ChannelState {
                members: HashMap::new(),
                lines: Backlog::new(self.channels.backlog),
                closed: false,
            }),
            shown: Mutex::default(),
            senders: Mutex::default(),
        });
        open.insert(token, Arc::downgrade(&channel));
        channel
    }

    pub(super) fn channel_subject(&self, token: &str) -> String {
        format!("{}{token}", self.channel_subjects)
    }

    /// Takes one record of channel `token`'s subject, at sequence `seq`:
    /// into the channel's ring if it has members here.
    pub(super) fn take_channel_record(&self, token: &str, seq: u64, record: &Record) {
        if let Record::Topic { text, .. } = record {
            self.channels.set_topic(token, text);
        }
        let Some(channel) = self.channels.open(token) else {
            return;
        };
        if !record.is_shown() {
            return;
        }
        let bytes = record.line_in(Some(&channel.name));
        let state = lock(&channel.state);
        if !state.closed {
            state.lines.push(StoredLine { seq, bytes });
        }
    }

    /// Deletes the membership entry of `nick` (key `key`) in channel
    /// `token` if it is still at `revision`, and if so, publishes
    /// `payload` (its `left!`) in the channel. Whoever deletes it
    /// publishes it, once.
    async fn release_membership(
        &self,
        token: &str,
        key: &str,
        nick: &str,
        revision: u64,
        payload: &Bytes,
    ) -> bool {
        let entry = format!("ch.{token}.{key}");
        let deleted = self.nicks.delete_expect_revision(&entry, Some(revision));
        match timeout(REQUEST_TIMEOUT, deleted).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%nick, "channel membership not released: {e}");
                return false;
            }
            Err(_) => {
                tracing::debug!(%nick, "channel membership not released: timed out");
                return false;
            }
        }
        let id = format!("left.ch.{token}.{key}.{revision}");
        let subject = self.channel_subject(token);
        if let Err(e) = self
            .publish_stored_to(&subject, payload, &id, RETRY_FOR)
            .await
        {
            tracing::warn!(%nick, "a channel's left! line could not be stored: {e}");
        }
        true
    }
}

/// Releases the channel memberships of nodes that are gone (and this
/// node's own that no participant here holds), announcing `left!` in each
/// channel, as [`liveness`](super::liveness) does for nicknames.
pub(super) async fn take_over_channels(shared: &Arc<Shared>, alive: &mut HashMap<String, bool>) {
    for (token, key, revision, node, nick) in shared.channels.entries() {
        let orphan = if node == shared.node {
            match shared.channels.open(&token) {
                Some(channel) => lock(&channel.state)
                    .members
                    .get(&key)
                    .is_none_or(|member| member.revision.is_some_and(|r| r != revision)),
                None => true,
            }
        } else {
            !node_is_alive(shared, alive, &node).await
        };
        if !orphan {
            continue;
        }
        let quiet = shared
            .announce
            .quiet(shared.channels.size_with(&token, &key))
            .is_some();
        let left = Record::departure(&nick, Departure::Left, quiet).encode();
        if shared
            .release_membership(&token, &key, &nick, revision, &left)
            .await
        {
            tracing::info!(%nick, %node, "released a channel membership whose node is gone");
        }
    }
}

impl Channel {
    /// `line` as this channel's members read it.
    fn shown(&self, line: &[u8]) -> Bytes {
        protocol::channels::in_channel(&protocol::channels::channel_prefix(&self.name), line)
    }

    /// Tells member `key` of this node, alone, that its line was not sent.
    fn refuse_because(&self, key: &str, why: &str) {
        if let Some(member) = lock(&self.state).members.get(key) {
            member.tell(protocol::error_line(format!("message not sent: {why}")));
        }
    }

    /// Adds `nick` of this node and announces it to the channel's members
    /// on every node: as the lobby's join (see [`Room::join`]), its
    /// membership in the nickname bucket instead of its nickname.
    ///
    /// [`Room::join`]: crate::room::Room::join
    pub(super) async fn join(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        nick: &str,
    ) -> Result<ClusterSubscription, JoinError> {
        let key = protocol::nick_key(nick);
        let (mailbox, inbox) = mailbox();
        let ring = {
            let mut state = lock(&self.state);
            let here = state.members.len();
            let taken = state.members.contains_key(&key);
            admit(nick, taken, state.closed, here, shared.max_members)?;
            if shared.connected_since().is_none() {
                return Err(JoinError::Unavailable);
            }
            let member = Member {
                nick: nick.to_owned(),
                revision: None,
                private: Some(mailbox),
            };
            state.members.insert(key.clone(), member);
            state.lines.subscribe()
        };
        let unannounced = shared
            .announce
            .quiet(shared.channels.size_with(&self.token, &key));
        let (done, answer) = oneshot::channel();
        let quiet = unannounced.is_some();
        let join = Work::Join {
            nick: nick.to_owned(),
            quiet,
            done,
        };
        self.queue(shared, key.clone(), join);
        let (revision, start) = match answer.await.unwrap_or(Err(JoinError::Unavailable)) {
            Ok(joined) => joined,
            Err(refused) => {
                lock(&self.state).members.remove(&key);
                return Err(refused);
            }
        };
        if let Some(member) = lock(&self.state).members.get_mut(&key) {
            member.revision = Some(revision);
        }
        // The bucket's watch gives its entries in order: once it has given
        // this one, it has given every member who joined before, and the
        // newcomer's `[join]` line counts them.
        let mut changes = shared.directory_changed.subscribe();
        let seen = async {
            while !shared.channels.holds(&self.token, &key, revision) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = timeout(REQUEST_TIMEOUT, seen).await;
        let history = shared.channel_history(self, &key, start).await;
        Ok(match unannounced {
            None => Subscriber::new(ring, inbox, start, Arc::from(history)),
            Some(notice) => {
                let own = [self.shown(&protocol::joined_line(nick)), notice];
                let lines = own.into_iter().chain(history).collect();
                Subscriber::unannounced(ring, inbox, start, lines)
            }
        })
    }

    /// Sends what `nick` said to the channel's members on every node.
    pub(super) fn say(self: &Arc<Self>, shared: &Arc<Shared>, nick: &str, said: Said<'_>) {
        let key = protocol::nick_key(nick);
        if lock(&self.state).closed {
            return;
        }
        if shared.connected_since().is_none() {
            return self.refuse_because(&key, UNAVAILABLE);
        }
        if shared.waiting.fetch_add(1, Ordering::AcqRel) >= OUTGOING_QUEUE {
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return self.refuse_because(&key, UNAVAILABLE);
        }
        let payload = Record::said(nick, said).encode();
        let id = shared.next_message_id();
        self.queue(shared, key, Work::Line { payload, id });
    }

    /// Tells the channel's members on every node of this node's operator's
    /// action `act` (if it is told as such: see [`Record::acted`]).
    pub(super) fn moderated(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        act: Moderation<'_>,
    ) -> Result<(), &'static str> {
        let Some(record) = Record::acted(act) else {
            return Ok(());
        };
        if shared.connected_since().is_none() {
            return Err(UNAVAILABLE);
        }
        if let Record::Topic { .. } = record {
            let (subject, token) = (self.subject.clone(), self.token.clone());
            shared.publish_topic(act.by, subject, token, record);
            return Ok(());
        }
        shared.waiting.fetch_add(1, Ordering::AcqRel);
        let payload = record.encode();
        let id = shared.next_message_id();
        self.queue(shared, SERVER.to_owned(), Work::Line { payload, id });
        Ok(())
    }

    /// Removes `nick` of this node and tells the channel's members how it
    /// left, once its membership is released; false if it is not here.
    pub(super) fn depart(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        nick: &str,
        how: Departure<'_>,
    ) -> bool {
        let key = protocol::nick_key(nick);
        lock(&self.shown).remove(&key);
        let Some(member) = lock(&self.state).members.remove(&key) else {
            return false;
        };
        let Some(revision) = member.revision else {
            return true;
        };
        let size = shared.channels.members(&self.token, 0).0;
        let quiet = shared.announce.quiet(size).is_some();
        let payload = Record::departed(&member.nick, how, quiet).encode();
        let leave = Work::Leave {
            nick: member.nick,
            revision,
            payload,
        };
        self.queue(shared, key, leave);
        true
    }

    /// After the room's farewell: nothing more is shown here.
    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
    }

    /// Hands `work` to `sender`'s task, starting one if it has none.
    fn queue(self: &Arc<Self>, shared: &Arc<Shared>, sender: String, work: Work) {
        let mut senders = lock(&self.senders);
        if let Some(waiting) = senders.get_mut(&sender) {
            if matches!(work, Work::Line { .. }) && waiting.len() >= SENDER_QUEUE {
                drop(senders);
                shared.waiting.fetch_sub(1, Ordering::AcqRel);
                return self.refuse_because(&sender, "too many of your lines are waiting");
            }
            waiting.push_back(work);
            return;
        }
        senders.insert(sender.clone(), VecDeque::new());
        drop(senders);
        // Counted where the node's flush (on shutdown) waits for them.
        shared.sending.send_modify(|count| *count += 1);
        tokio::spawn(publish_for_sender(
            shared.clone(),
            self.clone(),
            sender,
            work,
        ));
    }

    /// Does one piece of `sender`'s work.
    async fn work(&self, shared: &Shared, sender: &str, work: Work) {
        match work {
            Work::Join { nick, quiet, done } => {
                let _ = done.send(self.claim(shared, sender, &nick, quiet).await);
            }
            Work::Line { payload, id } => {
                let permit = shared.in_flight.clone().acquire_owned().await.ok();
                let stored = shared
                    .publish_stored_to(&self.subject, &payload, &id, RETRY_FOR)
                    .await;
                if let Err(e) = stored {
                    tracing::warn!("a channel's line could not be stored: {e}");
                    self.refuse_because(sender, UNAVAILABLE);
                }
                drop(permit);
                shared.waiting.fetch_sub(1, Ordering::AcqRel);
            }
            Work::Leave {
                nick,
                revision,
                payload,
            } => {
                shared
                    .release_membership(&self.token, sender, &nick, revision, &payload)
                    .await;
            }
        }
    }

    /// Puts `nick`'s membership in the bucket and publishes its `joined!`
    /// line; the entry's revision and the line's sequence.
    async fn claim(
        &self,
        shared: &Shared,
        key: &str,
        nick: &str,
        quiet: bool,
    ) -> Result<(u64, u64), JoinError> {
        let entry = Membership {
            node: shared.node.clone(),
            nick: nick.to_owned(),
            channel: self.name.to_string(),
        };
        let value = serde_json::to_vec(&entry).map_err(|_| JoinError::Unavailable)?;
        let bucket_key = format!("ch.{}.{key}", self.token);
        // A put, not a create: the nickname is this participant's across
        // the room, so an entry left under it is a leftover of its own.
        let put = shared.nicks.put(&bucket_key, Bytes::from(value));
        let revision = match timeout(REQUEST_TIMEOUT, put).await {
            Ok(Ok(revision)) => revision,
            Ok(Err(e)) => {
                tracing::warn!(%nick, "cannot join a channel: {e}");
                return Err(JoinError::Unavailable);
            }
            Err(_) => {
                tracing::warn!(%nick, "cannot join a channel: timed out");
                return Err(JoinError::Unavailable);
            }
        };
        let id = format!("joined.ch.{}.{key}.{revision}", self.token);
        let payload = Record::joined(nick, quiet).encode();
        match (shared)
            .publish_stored_to(&self.subject, &payload, &id, JOIN_RETRY_FOR)
            .await
        {
            Ok(start) => Ok((revision, start)),
            Err(e) => {
                tracing::warn!(%nick, "cannot announce a channel's newcomer: {e}");
                let delete = shared
                    .nicks
                    .delete_expect_revision(&bucket_key, Some(revision));
                let _ = timeout(REQUEST_TIMEOUT, delete).await;
                Err(JoinError::Unavailable)
            }
        }
    }
}

/// One sender's task in one channel: its work one piece after another;
/// ends when nothing waits.
async fn publish_for_sender(
    shared: Arc<Shared>,
    channel: Arc<Channel>,
    sender: String,
    first: Work,
) {
    let mut next = Some(first);
    while let Some(work) = next.take() {
        channel.work(&shared, &sender, work).await;
        let mut senders = lock(&channel.senders);
        next = senders.get_mut(&sender).and_then(VecDeque::pop_front);
        if next.is_none() {
            senders.remove(&sender);
        }
    }
    shared.sending.send_modify(|count| *count -= 1);
}
