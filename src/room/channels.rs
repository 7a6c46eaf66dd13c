//! Channels beside the default room: `/join #ops`, `/part`, `/rooms`.
//!
//! The default room is the channel `#lobby`: every participant is in it
//! from its join to its leave, and its lines carry no prefix. Every other
//! channel is a room of its own, of the lobby's kind ([`Room::open_channel`]),
//! with its own order of lines and its own members, whose lines all start
//! with its name: a line said in one never shows up in another.
//!
//! * [`Channels`]: the server's channels by name (compared on the
//!   lookalike skeleton, so `#0ps` is `#ops`), made on the first join and
//!   forgotten once the last member has left, topic included; at most
//!   `--max-channels`. A room that keeps its lines on disk keeps a
//!   channel's lines beyond that: whoever opens it again, also after a
//!   restart, gets its history.
//! * [`Joined`]: one participant's channels, its current one (where its
//!   plain lines go) and its reading of all of them as one
//!   [`Subscription`]: the lobby's lines and each channel's, each in its
//!   own order. Dropping it leaves every channel it holds.

use super::store::Action;
use super::{Departure, JoinError, Moderation, RecvError, Room, Subscription};
use crate::protocol::channels::{self as names, LOBBY};
use crate::protocol::moderation;
use crate::sync::lock;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

/// The default `--max-channels`: channels at once besides `#lobby`.
pub const DEFAULT_MAX_CHANNELS: usize = 1000;

/// The default `--max-joined`: channels one participant may be in besides
/// `#lobby`.
pub const DEFAULT_MAX_JOINED: usize = 20;

/// Most lines a participant's session takes in a row from one of its
/// subscriptions (the lobby or a channel) while others have lines waiting:
/// about one write's worth, as the ring hands them out.
const STREAK_LINES: usize = 64;

/// Most channels `/rooms` names; beyond, it says how many more.
pub const ROOMS_MAX: usize = 200;

/// Why a channel command did nothing; the text is what the asker is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("{}", names::BAD_CHANNEL_NAME)]
    Name,
    #[error("this server has {0} channels, the most it keeps: join one of them (/rooms)")]
    TooManyChannels(usize),
    #[error("you are in {0} channels, the most one may join: /part one first")]
    TooManyJoined(usize),
    #[error("{LOBBY} cannot be left: /quit leaves the server")]
    Lobby,
    #[error("you are not in {0}")]
    NotIn(String),
    /// The room has no channels ([`Room::open_channel`] says why).
    #[error("channels are not available on this server {0}")]
    Unavailable(&'static str),
    #[error("{0}")]
    Join(JoinError),
}

/// The server's channels besides `#lobby`.
pub struct Channels<R> {
    lobby: Arc<R>,
    max_channels: usize,
    max_joined: usize,
    by_key: Mutex<BTreeMap<String, Channel<R>>>,
    /// `#lobby`'s topic.
    lobby_topic: Mutex<Option<String>>,
    /// Each participant's current channel (by nick key and channel key),
    /// for those not in `#lobby`: where what is said about it goes.
    current_of: Mutex<std::collections::HashMap<String, String>>,
}

struct Channel<R> {
    /// As its first member spelled it.
    name: Arc<str>,
    room: Arc<R>,
    /// Set by an operator (`/topic`); forgotten with the channel.
    topic: Option<String>,
    /// Members, and joins under way: the channel is forgotten at 0.
    holders: usize,
}

impl<R: Room> Channels<R> {
    pub fn new(lobby: Arc<R>, max_channels: usize, max_joined: usize) -> Self {
        Channels {
            lobby,
            max_channels,
            max_joined,
            by_key: Mutex::new(BTreeMap::new()),
            lobby_topic: Mutex::new(None),
            current_of: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// How many channels this server holds besides `#lobby`: those with a
    /// member here, or a join under way (what `--max-channels` bounds).
    pub fn open_here(&self) -> usize {
        lock(&self.by_key).len()
    }

    /// Sends a line about `nick` (`line` as the lobby shows it), an
    /// operator's action `act`, to the members of its current channel, in
    /// that channel's form ([`Room::moderated`]: stored there, with a
    /// store).
    pub fn notice_about(
        &self,
        nick: &str,
        line: &[u8],
        act: Moderation<'_>,
    ) -> Result<(), &'static str> {
        let current = lock(&self.current_of)
            .get(&crate::protocol::nick_key(nick))
            .cloned();
        let channel = current.and_then(|key| {
            let by_key = lock(&self.by_key);
            by_key.get(&key).map(|c| (c.name.clone(), c.room.clone()))
        });
        match channel {
            None => self
                .lobby
                .moderated(Some(Bytes::copy_from_slice(line)), act),
            Some((name, room)) => {
                let line = names::in_channel(&names::channel_prefix(&name), line);
                room.moderated(Some(line), act)
            }
        }
    }

    /// Sets the topic of the channel `current` (`None`: `#lobby`) and tells
    /// its members, `[topic] #name: TEXT set by <by>` ([`Room::moderated`]:
    /// stored in that channel, with a store).
    pub fn set_topic(
        &self,
        current: Option<&str>,
        topic: &str,
        by: &str,
    ) -> Result<(), &'static str> {
        let act = Moderation {
            action: Action::Topic,
            by,
            whom: "",
            detail: topic,
        };
        let Some(name) = current else {
            *lock(&self.lobby_topic) = Some(topic.to_owned());
            return self
                .lobby
                .moderated(Some(moderation::topic_set_line(LOBBY, topic, by)), act);
        };
        let room = {
            let mut by_key = lock(&self.by_key);
            let Some(channel) = by_key.get_mut(&names::channel_key(name)) else {
                return Ok(());
            };
            channel.topic = Some(topic.to_owned());
            channel.room.clone()
        };
        room.moderated(Some(moderation::topic_set_line(name, topic, by)), act)
    }

    /// The topic of `#lobby` (`None`) or of the channel `name`, if set:
    /// the room's own, if it keeps one (shared with other servers).
    fn topic(&self, name: Option<&str>) -> Option<String> {
        match name {
            None => self
                .lobby
                .topic()
                .or_else(|| lock(&self.lobby_topic).clone()),
            Some(name) => {
                let (room, topic) = {
                    let by_key = lock(&self.by_key);
                    let channel = by_key.get(&names::channel_key(name))?;
                    (channel.room.clone(), channel.topic.clone())
                };
                room.topic().or(topic)
            }
        }
    }

    /// Remembers `nick`'s current channel (`None`: `#lobby`).
    fn set_current(&self, nick: &str, channel: Option<&str>) {
        let mut current_of = lock(&self.current_of);
        let key = crate::protocol::nick_key(nick);
        match channel {
            None => current_of.remove(&key),
            Some(name) => current_of.insert(key, names::channel_key(name)),
        };
        drop(current_of);
        self.lobby.moved(nick, channel);
    }

    /// A place in channel `name` (made if new): its name as spelled by its
    /// first member, its key, and its room.
    fn hold(&self, name: &str) -> Result<(Arc<str>, String, Arc<R>), ChannelError> {
        let key = names::channel_key(name);
        let mut by_key = lock(&self.by_key);
        if let Some(channel) = by_key.get_mut(&key) {
            channel.holders += 1;
            return Ok((channel.name.clone(), key, channel.room.clone()));
        }
        if by_key.len() >= self.max_channels {
            return Err(ChannelError::TooManyChannels(self.max_channels));
        }
        let spelled = self.lobby.channel_spelling(name);
        let name = spelled.as_deref().unwrap_or(name);
        let room = Arc::new(
            self.lobby
                .open_channel(name)
                .map_err(ChannelError::Unavailable)?,
        );
        let name: Arc<str> = Arc::from(name);
        let channel = Channel {
            name: name.clone(),
            room: room.clone(),
            topic: None,
            holders: 1,
        };
        by_key.insert(key.clone(), channel);
        Ok((name, key, room))
    }

    /// Gives back a place [`Channels::hold`] took; the last one forgets
    /// the channel.
    fn release(&self, key: &str) {
        let mut by_key = lock(&self.by_key);
        if let Some(channel) = by_key.get_mut(key) {
            channel.holders = channel.holders.saturating_sub(1);
            if channel.holders == 0 {
                by_key.remove(key);
            }
        }
    }

    /// Puts `nick` out of the server's room (see [`Room::put_out`]) and of
    /// every channel it is in, each told `how`; false if it is not here.
    pub async fn put_out(
        &self,
        nick: &str,
        told: Bytes,
        how: Departure<'_>,
    ) -> Result<bool, &'static str> {
        let rooms: Vec<Arc<R>> = lock(&self.by_key)
            .values()
            .map(|c| c.room.clone())
            .collect();
        if !self.lobby.put_out(nick, told, how).await? {
            return Ok(false);
        }
        for room in rooms {
            room.depart(nick, how);
        }
        Ok(true)
    }

    /// The channels with how many are in each, `#lobby` first, the others
    /// in order of their keys (those of this server, and those the room
    /// knows of elsewhere); at most `max`, and how many there are.
    pub fn list(&self, max: usize) -> (Vec<(Arc<str>, usize)>, usize) {
        let mut all: BTreeMap<String, (Arc<str>, usize)> = lock(&self.by_key)
            .iter()
            .map(|(key, channel)| {
                (
                    key.clone(),
                    (channel.name.clone(), channel.room.members(0).0),
                )
            })
            .collect();
        for (name, here) in self.lobby.channels_elsewhere() {
            all.entry(names::channel_key(&name))
                .or_insert_with(|| (Arc::from(name), here));
        }
        let lobby = (Arc::from(LOBBY), self.lobby.members(0).0);
        let total = all.len() + 1;
        let listed = std::iter::once(lobby)
            .chain(all.into_values())
            .take(max)
            .collect();
        (listed, total)
    }
}

/// One channel a participant is in. A participant may be in many, so it
/// keeps no more than it needs: its key is made from its name when asked.
struct InChannel<R: Room> {
    name: Arc<str>,
    room: Arc<R>,
    subscription: R::Subscription,
}

impl<R: Room> InChannel<R> {
    fn key(&self) -> String {
        names::channel_key(&self.name)
    }
}

/// One participant's channels: see the module doc.
pub struct Joined<'c, R: Room> {
    lobby: R::Subscription,
    channels: &'c Channels<R>,
    nick: &'c str,
    /// Channels besides `#lobby`, in the order joined.
    joined: Vec<InChannel<R>>,
    /// Where plain lines go: an index in `joined`, or `None` for `#lobby`.
    current: Option<usize>,
    /// Whose lines are read first next (an index as in `recv_any`; the
    /// lobby's if it is past the last): no channel starves the others.
    turn: usize,
    /// Lines `try_recv` took in a row from `turn`'s subscription.
    streak: usize,
    /// The `/quit` reason every channel is told, once it is known.
    reason: Option<String>,
}

impl<'c, R: Room> Joined<'c, R> {
    /// A participant in `#lobby` only, reading it through `lobby`.
    pub fn new(lobby: R::Subscription, channels: &'c Channels<R>, nick: &'c str) -> Self {
        Joined {
            lobby,
            channels,
            nick,
            joined: Vec::new(),
            current: None,
            turn: 0,
            streak: 0,
            reason: None,
        }
    }

    /// The room plain lines, `/me` and `/list` go to.
    pub fn current(&self) -> &R {
        match self.current {
            Some(at) => &self.joined[at].room,
            None => &self.channels.lobby,
        }
    }

    /// `/join NAME`: joins the channel (made if new) and makes it the
    /// current one; of a channel already joined, only the latter. Returns
    /// the lines for the asker: its own `joined!` line in the channel (read
    /// here, so that it comes before the reply) and the reply.
    pub async fn join(&mut self, name: &str) -> Result<Vec<Bytes>, ChannelError> {
        let name = names::validate_channel(name).map_err(|_| ChannelError::Name)?;
        if names::is_lobby(name) {
            self.make_current(None);
            let here = self.channels.lobby.members(0).0;
            return Ok(self.with_topic(names::join_line(LOBBY, here)));
        }
        let key = names::channel_key(name);
        if let Some(at) = self.joined.iter().position(|c| c.key() == key) {
            self.make_current(Some(at));
            let channel = &self.joined[at];
            let line = names::join_line(&channel.name, channel.room.members(0).0);
            return Ok(self.with_topic(line));
        }
        if self.joined.len() >= self.channels.max_joined {
            return Err(ChannelError::TooManyJoined(self.channels.max_joined));
        }
        let (name, key, room) = self.channels.hold(name)?;
        debug_assert_eq!(names::channel_key(&name), key);
        let mut subscription = match room.join(self.nick).await {
            Ok(subscription) => subscription,
            Err(e) => {
                self.channels.release(&key);
                return Err(ChannelError::Join(e));
            }
        };
        // Its own `joined!` first, as every member sees it, then the reply.
        let joined = subscription.recv().await;
        let here = room.members(0).0;
        // One slot more, not twice as many: a participant in 20 channels
        // holds 20 slots, not 32.
        self.joined.reserve_exact(1);
        self.joined.push(InChannel {
            name: name.clone(),
            room,
            subscription,
        });
        self.make_current(Some(self.joined.len() - 1));
        let joined = joined.map_err(|_| ChannelError::Join(JoinError::Closed))?;
        let mut lines = vec![joined];
        lines.extend(self.with_topic(names::join_line(&name, here)));
        Ok(lines)
    }

    /// `reply`, then the current channel's topic if it has one.
    fn with_topic(&self, reply: Bytes) -> Vec<Bytes> {
        let topic = self
            .current_topic()
            .map(|topic| moderation::topic_line(self.current_name(), &topic));
        std::iter::once(reply).chain(topic).collect()
    }

    /// `/topic`: the current channel's topic, or that it has none.
    pub fn topic(&self) -> Bytes {
        match self.current_topic() {
            Some(topic) => moderation::topic_line(self.current_name(), &topic),
            None => moderation::no_topic_line(self.current_name()),
        }
    }

    fn current_topic(&self) -> Option<String> {
        let name = self.current.map(|at| &*self.joined[at].name);
        self.channels.topic(name)
    }

    /// Makes `at` (an index in `joined`; `None`: `#lobby`) the current
    /// channel, and tells the server's channels.
    fn make_current(&mut self, at: Option<usize>) {
        self.current = at;
        let name = at.map(|at| &*self.joined[at].name);
        self.channels.set_current(self.nick, name);
    }

    /// The current channel, `None` for `#lobby`: where `/topic` goes.
    pub fn current_channel(&self) -> Option<&str> {
        self.current.map(|at| &*self.joined[at].name)
    }

    /// `/part [NAME]`: leaves the channel (the current one by default);
    /// the current channel falls back to `#lobby`. Returns the reply.
    pub fn part(&mut self, name: Option<&str>) -> Result<Bytes, ChannelError> {
        let at = match name {
            None => self.current.ok_or(ChannelError::Lobby)?,
            Some(name) => {
                let name = names::validate_channel(name).map_err(|_| ChannelError::Name)?;
                if names::is_lobby(name) {
                    return Err(ChannelError::Lobby);
                }
                let key = names::channel_key(name);
                self.joined
                    .iter()
                    .position(|c| c.key() == key)
                    .ok_or_else(|| ChannelError::NotIn(name.to_owned()))?
            }
        };
        let channel = self.joined.remove(at);
        self.leave(&channel, Departure::Left);
        self.after_removing(at);
        Ok(names::part_line(&channel.name, self.current_name()))
    }

    /// The current channel's name.
    pub fn current_name(&self) -> &str {
        self.current.map_or(LOBBY, |at| &self.joined[at].name)
    }

    /// `/rooms`: one line per channel, the current one marked.
    pub fn rooms(&self) -> Vec<Bytes> {
        let (listed, total) = self.channels.list(ROOMS_MAX);
        let current = self.current_name();
        let mut lines: Vec<Bytes> = listed
            .iter()
            .map(|(name, here)| {
                let is_current = names::channel_key(name) == names::channel_key(current);
                names::rooms_line(name, *here, is_current)
            })
            .collect();
        if total > listed.len() {
            lines.push(names::rooms_more_line(total - listed.len()));
        }
        lines
    }

    /// What every channel is told when this participant leaves the
    /// server: `left!`, with this reason.
    pub fn quitting(&mut self, reason: Option<String>) {
        self.reason = reason;
    }

    fn leave(&self, channel: &InChannel<R>, how: Departure<'_>) {
        channel.room.depart(self.nick, how);
        self.channels.release(&channel.key());
    }

    /// A channel whose room closed this participant's subscription (it was
    /// put out of it): forgotten, the rest read on.
    fn closed(&mut self, at: usize) {
        let channel = self.joined.remove(at);
        self.channels.release(&channel.key());
        self.after_removing(at);
    }

    /// The current channel once `joined[at]` is gone: `#lobby` if it was
    /// that one.
    fn after_removing(&mut self, at: usize) {
        let current = match self.current {
            Some(current) if current == at => None,
            Some(current) if current > at => Some(current - 1),
            other => other,
        };
        self.make_current(current);
    }
}

impl<R: Room> Drop for Joined<'_, R> {
    /// Leaves every channel, however the session ends.
    fn drop(&mut self) {
        let how = match &self.reason {
            Some(reason) => Departure::Quit(reason),
            None => Departure::Left,
        };
        for channel in &self.joined {
            self.leave(channel, how);
        }
        if self.current.is_some() {
            self.channels.set_current(self.nick, None);
        }
    }
}

type Recv<'a> = Pin<Box<dyn Future<Output = Result<Bytes, RecvError>> + Send + 'a>>;

/// The participant's reading of the lobby and its channels, as one
/// [`Subscription`] reads one room: each channel's lines in its order.
impl<R: Room> Joined<'_, R> {
    /// The next line of any of them, waiting for one.
    pub async fn recv(&mut self) -> Result<Bytes, RecvError> {
        loop {
            if self.joined.is_empty() || self.lobby.is_put_out() {
                return self.lobby.recv().await;
            }
            match self.recv_any().await {
                (at, Err(RecvError::Closed)) if at > 0 => self.closed(at - 1),
                (_, line) => return line,
            }
        }
    }

    /// The next line of any of them, and whose (0: the lobby's, then
    /// `joined`'s in order). It counts in the streak as `try_recv`'s do.
    async fn recv_any(&mut self) -> (usize, Result<Bytes, RecvError>) {
        let count = self.joined.len() + 1;
        let start = if self.turn < count { self.turn } else { 0 };
        let mut waiting: Vec<Recv<'_>> = std::iter::once(Box::pin(self.lobby.recv()) as Recv<'_>)
            .chain(
                self.joined
                    .iter_mut()
                    .map(|c| Box::pin(c.subscription.recv()) as Recv<'_>),
            )
            .collect();
        // Every subscription's `recv` is cancel-safe: the ones that lose
        // lose no line.
        let (at, line) = std::future::poll_fn(|cx| {
            for k in 0..count {
                let at = (start + k) % count;
                if let Poll::Ready(line) = waiting[at].as_mut().poll(cx) {
                    return Poll::Ready((at, line));
                }
            }
            Poll::Pending
        })
        .await;
        drop(waiting);
        self.took_from(at, start, count);
        (at, line)
    }

    /// The next line of any of them, if one is ready now. A session calls
    /// this once per line of the batch it writes, so it goes on reading
    /// where the last line came from, for up to [`STREAK_LINES`] lines,
    /// instead of asking every subscription (mostly the quiet lobby) in
    /// turn for every line; past that the next one is asked first.
    pub fn try_recv(&mut self) -> Result<Option<Bytes>, RecvError> {
        // Put out of the server (kicked, banned): the line saying why was
        // its last, whatever its channels still hold about it.
        if self.joined.is_empty() || self.lobby.is_put_out() {
            return self.lobby.try_recv();
        }
        let count = self.joined.len() + 1;
        // No division on this path: it runs once per line written.
        let start = if self.turn < count { self.turn } else { 0 };
        let mut at = start;
        loop {
            let line = match at {
                0 => self.lobby.try_recv()?,
                _ => match self.joined[at - 1].subscription.try_recv() {
                    Err(RecvError::Closed) => {
                        self.closed(at - 1);
                        self.streak = 0;
                        return self.try_recv();
                    }
                    line => line?,
                },
            };
            if line.is_some() {
                self.took_from(at, start, count);
                return Ok(line);
            }
            at += 1;
            if at == count {
                at = 0;
            }
            if at == start {
                return Ok(None);
            }
        }
    }

    /// Counts a line taken from subscription `at` of `count`, having
    /// started at `start`: the next read starts there again, until its
    /// streak is long enough to let the next one go first.
    fn took_from(&mut self, at: usize, start: usize, count: usize) {
        if at != start {
            self.streak = 0;
        }
        self.streak += 1;
        self.turn = at;
        if self.streak >= STREAK_LINES {
            self.streak = 0;
            self.turn = if at + 1 < count { at + 1 } else { 0 };
        }
    }

    /// The most lines for this participant alone waiting in one of them
    /// (see [`Subscription::private_waiting`]): each has its own mailbox.
    pub fn private_waiting(&self) -> usize {
        self.joined
            .iter()
            .map(|c| c.subscription.private_waiting())
            .fold(self.lobby.private_waiting(), usize::max)
    }

    /// Whether any of them finds this participant too far behind.
    pub fn is_lagging(&self) -> bool {
        self.lobby.is_lagging() || self.joined.iter().any(|c| c.subscription.is_lagging())
    }
}

#[cfg(test)]
mod tests;
