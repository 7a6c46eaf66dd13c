//! The room: who is here, and the one global order of lines everybody sees.
//!
//! Sessions talk to the room only through the [`Room`] and [`Subscription`]
//! traits. Two rooms implement them: [`LocalRoom`], held in this process's
//! memory, and [`cluster::ClusterRoom`], one room shared by several servers
//! through NATS JetStream. Both ask of a room only a few primitives (join,
//! say, depart, whisper, members, close); the chat's verbs (`publish`,
//! `act`, `leave`, `quit`) are the trait's own, written once, and so are the
//! checks a join passes ([`admit`]) and the way a private line is addressed
//! ([`address_private_line`]). Both hand their lines to participants the
//! same way:
//!
//! * [`backlog`]: one ring of recent lines, shared by every participant and
//!   bounded in bytes: a line is formatted once, stored once, and every
//!   participant reads it at its own pace by cloning a reference-counted
//!   [`Bytes`]. One that falls further behind than the ring holds learns so
//!   ([`RecvError::Lagged`]) instead of silently missing lines, and nobody
//!   ever waits for it.
//! * [`mailbox`]: lines for one participant alone (`/msg`, and a room's
//!   own error lines), a small bounded queue each.
//! * [`Subscriber`]: one participant's reading of both, which never lets a
//!   private line overtake the public lines said before it.
//! * [`directory`]: who is here by name, found in any case and lookalike,
//!   listed in alphabetical order at a cost of O(listed).
//! * [`history`]: the last public lines, for newcomers (`--history`).
//! * [`channels`]: channels beside the room (`/join #ops`), each a room
//!   of the same kind ([`Room::open_channel`]) with its own order.
//! * [`store`]: the public lines of the room and its channels on disk
//!   (SQLite), with search, retention and export.

pub mod backlog;
pub mod channels;
pub mod cluster;
mod directory;
mod durable;
pub mod history;
mod local;
pub mod mailbox;
mod recall;
pub mod store;
mod subscriber;

pub use local::{CHANNEL_BACKLOG_SHARE, LocalRoom, LocalSubscription};
pub use subscriber::Subscriber;

use crate::protocol::{self, NickError};
use bytes::Bytes;
use std::future::Future;

/// Why a nickname could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The nickname (or the same in another case) is present already.
    #[error(transparent)]
    Nick(#[from] NickError),
    /// The room holds its maximum number of participants.
    #[error("server full")]
    Full,
    /// The room is closing: the server is shutting down.
    #[error("server is shutting down")]
    Closed,
    /// A room shared with other servers cannot reach them just now.
    #[error("{UNAVAILABLE}")]
    Unavailable,
    /// The room's history store cannot take its `joined!` line.
    #[error("{STORE_UNAVAILABLE}")]
    StoreUnavailable,
}

/// Why a room that keeps its lines on disk refuses a join or a line while
/// its store fails (a full disk).
pub const STORE_UNAVAILABLE: &str = "the history store is unavailable";

/// Why a room shared with other servers refuses a join or a line while it
/// cannot reach them.
pub const UNAVAILABLE: &str = "the room is unavailable";

/// What a room without operators' commands answers them.
pub const NO_OPERATORS: &str = "operators' commands are not available on this server";

/// Whether a participant of this server may not be put out: an operator.
pub type Protected = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A mute an operator gives ([`Room::mute`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mute<'a> {
    pub nick: &'a str,
    pub by: &'a str,
    pub until: time::OffsetDateTime,
    /// The duration as the operator typed it (`10m`).
    pub typed: &'a str,
}

/// Why a private message was not delivered. The texts are what the sender
/// is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhisperError {
    /// Nobody here has that nickname.
    #[error("no such nickname \"{0}\"")]
    NoSuchNick(String),
    /// The recipient's mailbox is full.
    #[error("\"{0}\" is not reading; private message not delivered")]
    Full(String),
    /// A room shared with other servers cannot reach them just now.
    #[error("{UNAVAILABLE}; private message not delivered")]
    Unavailable,
}

/// Why a subscription yielded no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber fell so far behind that lines it never read were
    /// discarded; its session must end rather than show a gap.
    #[error("fell behind by {0} lines")]
    Lagged(u64),
    /// The room is gone.
    #[error("room closed")]
    Closed,
}

/// One participant's view of the room's lines, in the room's order, and
/// of the private lines sent to it (`/msg`), which stand outside that order.
pub trait Subscription: Send + 'static {
    /// The next line, waiting for it: a room line, or a private line for
    /// this participant.
    fn recv(&mut self) -> impl Future<Output = Result<Bytes, RecvError>> + Send;
    /// The next line (room or private) if one is ready now.
    ///
    /// The first line is the participant's own `joined!`; right after it
    /// come the room's last public lines from before it joined (`serve
    /// --history N`), oldest first, each marked by
    /// [`protocol::history_line`], then the live lines.
    fn try_recv(&mut self) -> Result<Option<Bytes>, RecvError>;
    /// Whether lines this subscriber has not read yet are already being
    /// discarded, or it has not read the room's history in time; checked
    /// while a write to a stuck peer is pending.
    fn is_lagging(&self) -> bool;
    /// How many lines for this participant alone wait to be read (`/msg`,
    /// and the room's own lines for it, such as why a line was not sent):
    /// a session reads no more of its participant's input while so many
    /// wait that one more turn's answers might not fit in its mailbox.
    fn private_waiting(&self) -> usize;
    /// Whether the room put this participant out and the line saying why
    /// has been read: nothing more comes, from this room or any other the
    /// participant reads beside it.
    fn is_put_out(&self) -> bool;
}

/// Who is here, and the one order of lines.
///
/// An implementation provides the primitives; the chat's verbs are written
/// once, here, in terms of them.
pub trait Room: Send + Sync + 'static {
    type Subscription: Subscription;

    /// Adds `nick` (already valid by [`protocol::validate_nickname`]) and
    /// announces `<nick> joined!` to everyone. The subscription's first line
    /// is that announcement; every line after it is one everybody else sees
    /// in the same order. Refused as [`admit`] says, and, for a shared room,
    /// while it cannot reach the others.
    ///
    /// Asynchronous because a shared room has to ask its peers whether a
    /// nickname is free; the other operations only hand a line on, and a
    /// shared room can queue it.
    ///
    /// In a room too big for its [`Announce`] setting, only the newcomer
    /// gets its `joined!` line, then the notice [`Announce::quiet`] gives
    /// (before its history), and nobody is told when it leaves.
    fn join(
        &self,
        nick: &str,
    ) -> impl Future<Output = Result<Self::Subscription, JoinError>> + Send;

    /// Sends what `nick` said (a message or an action) to everyone, the
    /// sender included, in the room's order; it is part of the history
    /// newcomers get. If it cannot be sent, the sender is told with a line
    /// of its own.
    fn say(&self, nick: &str, said: Said<'_>);

    /// Removes `nick` and tells those who stay how it left; nothing if
    /// `nick` is not here.
    fn depart(&self, nick: &str, how: Departure<'_>);

    /// Sends `[private] <from> -> <to>: <text>` (`/msg`) to `to` alone,
    /// found as [`directory`] finds names (any case, lookalike letters),
    /// and returns the line, which the session echoes to the sender. Never
    /// waits: a recipient that is not reading makes it fail rather than
    /// queue without bound. A room that cannot know at once (the recipient
    /// is on another server) returns the line and tells the sender later,
    /// with the same [`WhisperError`] text as an `ERROR` line.
    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError>;

    /// How many participants are here, and the first `max` of their
    /// nicknames in alphabetical order (without regard to case), as their
    /// owners spelled them (`/list`). Costs O(`max`), not O(room).
    fn members(&self, max: usize) -> (usize, Vec<String>);

    /// Puts `nick` out of the room: `told` is the last line it receives,
    /// then its subscription ends (as when the room closes); those who stay
    /// are told `how` it left. False if `nick` is not here. A room shared
    /// with other servers puts out a participant of another server there
    /// (out of its channels on that server too, which this server's
    /// [`channels::Channels`] does not hold), and waits for its answer.
    /// Refused with the text the operator is told.
    fn put_out(
        &self,
        nick: &str,
        told: Bytes,
        how: Departure<'_>,
    ) -> impl Future<Output = Result<bool, &'static str>> + Send {
        let _ = (nick, told, how);
        std::future::ready(Err(NO_OPERATORS))
    }

    /// Sends `line` (a line of the server's, already formatted) to
    /// everyone in the room's order, as the server's own; it is not
    /// stored. A room that cannot says why (a room shared with other
    /// servers ships no finished line: it tells operators' actions from
    /// their parts, [`Room::moderated`]).
    fn notice(&self, line: Bytes) -> Result<(), &'static str> {
        let _ = line;
        Err(UNAVAILABLE)
    }

    /// Mutes `nick` until `until` on every server of a room shared with
    /// others: each refuses its lines meanwhile ([`Room::muted_until`]),
    /// and the server of `nick` tells its current channel. `None` for a
    /// room whose server keeps the mutes itself.
    fn mute(&self, mute: Mute<'_>) -> Option<Result<(), &'static str>> {
        let _ = mute;
        None
    }

    /// Lifts `nick`'s mute on every server of a room shared with others,
    /// told as [`Room::mute`] tells; whether it was muted. `None` for a
    /// room whose server keeps the mutes itself.
    fn unmute(&self, nick: &str, by: &str) -> Option<Result<bool, &'static str>> {
        let _ = (nick, by);
        None
    }

    /// Until when `nick` is muted, for a room that keeps the mutes itself
    /// ([`Room::mute`]).
    fn muted_until(&self, nick: &str) -> Option<time::OffsetDateTime> {
        let _ = nick;
        None
    }

    /// The topic the room keeps itself (shared with other servers), if it
    /// keeps one and it is set.
    fn topic(&self) -> Option<String> {
        None
    }

    /// Learns that `nick`, a participant of this server, has `channel` as
    /// its current channel now (`None`: `#lobby`): where a room shared
    /// with other servers tells what concerns it.
    fn moved(&self, nick: &str, channel: Option<&str>) {
        let _ = (nick, channel);
    }

    /// Learns who may not be put out ([`Room::put_out`]) when another
    /// server asks: the operators of this server.
    fn protect(&self, protected: Protected) {
        let _ = protected;
    }

    /// How a room shared with other servers spells the channel `name`
    /// (as its first member did, on whichever server), if it has it.
    fn channel_spelling(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }

    /// The channels a room shared with other servers knows of that have
    /// no member on this server, with how many are in each (on every
    /// server), in order of their keys.
    fn channels_elsewhere(&self) -> Vec<(String, usize)> {
        Vec::new()
    }

    /// Tells everyone of an operator's action `act` as [`Room::notice`]
    /// does, with `line` (none: nobody is told, as of a ban of someone
    /// absent); a room that keeps its lines on disk stores it, as a line
    /// of kind [`store::Kind::Moderation`], before anyone reads `line`. A
    /// room shared with other servers tells a mute, an unmute or a topic
    /// from `act`'s parts instead, on every server (a kick shows as its
    /// departure, [`Room::put_out`]). A room that cannot says why.
    fn moderated(&self, line: Option<Bytes>, act: Moderation<'_>) -> Result<(), &'static str> {
        let _ = act;
        line.map_or(Ok(()), |line| self.notice(line))
    }

    /// Sends `farewell` as the room's last line to this server's
    /// participants: after it, nobody joins here and nothing more is
    /// announced (not even who leaves).
    fn close(&self, farewell: Bytes);

    /// A new channel beside this room, of its kind, named `name` (already
    /// valid by [`protocol::channels::validate_channel`]), with nobody in
    /// it: every line it shows starts with the name. A room that keeps its
    /// lines on disk keeps the channel's there too, and gives its
    /// newcomers the channel's lines stored before (under any lookalike
    /// spelling of its name). A room that has no channels says why (the
    /// text follows "channels are not available on this server").
    fn open_channel(&self, name: &str) -> Result<Self, &'static str>
    where
        Self: Sized,
    {
        let _ = name;
        Err("of this kind")
    }

    /// Whether the room keeps its lines on disk (`serve --data`), and so
    /// answers [`Room::ask`].
    fn recorded(&self) -> bool {
        false
    }

    /// The bytes its ring of recent lines holds (see [`backlog::cost`]):
    /// for the metrics. A room without a ring holds none.
    fn backlog_bytes(&self) -> usize {
        0
    }

    /// Answers `/history` or `/search` to `nick` alone, a little later,
    /// through its mailbox, from this room's own stored lines (a channel's
    /// from the channel's). Nothing in a room that is not
    /// [`Room::recorded`].
    fn ask(&self, nick: &str, question: Question<'_>) {
        let _ = (nick, question);
    }

    /// Sends `<nick>: <text>` to everyone, the sender included.
    fn publish(&self, nick: &str, text: &str) {
        self.say(nick, Said::Message(text));
    }

    /// Sends the action `* <nick> <text>` (`/me`) to everyone; like a
    /// message, it is part of the room's order and of its history.
    fn act(&self, nick: &str, text: &str) {
        self.say(nick, Said::Action(text));
    }

    /// Removes `nick` and announces `<nick> left!` to those who stay.
    fn leave(&self, nick: &str) {
        self.depart(nick, Departure::Left);
    }

    /// Removes `nick` after `/quit REASON`: like [`Room::leave`], but those
    /// who stay receive `<nick> left! (REASON)`.
    fn quit(&self, nick: &str, reason: &str) {
        self.depart(nick, Departure::Quit(reason));
    }
}

/// What a participant says to everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said<'a> {
    /// A message: `<nick>: <text>`.
    Message(&'a str),
    /// An action (`/me`): `* <nick> <text>`.
    Action(&'a str),
}

impl Said<'_> {
    /// The room's line for it, as everybody reads it.
    pub fn line(self, nick: &str) -> Bytes {
        self.line_in(b"", nick)
    }

    /// The line as a room whose lines start with `prefix` shows it (a
    /// channel's name and a space; empty for the lobby).
    pub fn line_in(self, prefix: &[u8], nick: &str) -> Bytes {
        match self {
            Said::Message(text) => protocol::chat_line_in(prefix, nick, text),
            Said::Action(text) if prefix.is_empty() => protocol::action_line(nick, text),
            Said::Action(text) => {
                protocol::channels::in_channel(prefix, &protocol::action_line(nick, text))
            }
        }
    }
}

/// Up to which size a room tells everybody of joins and leaves (`serve
/// --announce-up-to`): past it, filling a room of N would cost N²/2
/// deliveries of `joined!` lines, and a reconnect storm as many again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Every join and leave, at any size.
    All,
    /// Only in rooms of at most this many participants.
    UpTo(usize),
}

impl Default for Announce {
    fn default() -> Self {
        Announce::UpTo(protocol::DEFAULT_ANNOUNCE_UP_TO)
    }
}

impl Announce {
    /// Whether the join or leave of one of `size` participants (counting
    /// the one who joins or leaves) is told to everybody; if not, what the
    /// one who joins is told instead.
    pub fn quiet(self, size: usize) -> Option<Bytes> {
        match self {
            Announce::UpTo(up_to) if size > up_to => Some(protocol::quiet_room_line(size, up_to)),
            _ => None,
        }
    }
}

/// What a participant asks of a room's stored lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question<'a> {
    /// `/history N`: the N public lines before the oldest it was shown.
    History(usize),
    /// `/search WORDS`.
    Search(&'a str),
}

/// An operator's action, as a room that keeps its lines stores it
/// ([`Room::moderated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moderation<'a> {
    pub action: store::Action,
    /// The operator.
    pub by: &'a str,
    /// Whom it concerns; empty for a topic.
    pub whom: &'a str,
    /// The reason, the duration as typed, or the topic; empty for none.
    pub detail: &'a str,
}

/// How a participant left the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure<'a> {
    /// It closed its connection, or was put out: `<nick> left!`.
    Left,
    /// It said `/quit REASON`: `<nick> left! (REASON)`.
    Quit(&'a str),
    /// An operator put it out (`/kick`, or `/ban`: `ban`): `<nick> was
    /// kicked by <by>`, or `... (REASON)`.
    Kicked {
        by: &'a str,
        reason: Option<&'a str>,
        ban: bool,
    },
}

impl Departure<'_> {
    /// The room's line for it, as those who stay read it.
    pub fn line(self, nick: &str) -> Bytes {
        match self {
            Departure::Left => protocol::left_line(nick),
            Departure::Quit(reason) => protocol::left_line_because(nick, reason),
            Departure::Kicked { by, reason, .. } => {
                protocol::moderation::kicked_line(nick, by, reason)
            }
        }
    }

    /// The leave's text: the `/quit` reason, or who kicked it and why (a
    /// room that keeps its lines stores a kick as an operator's action
    /// instead, [`store::Kind::Moderation`]).
    pub fn text(self) -> String {
        match self {
            Departure::Left => String::new(),
            Departure::Quit(reason) => reason.to_owned(),
            Departure::Kicked {
                by, reason: None, ..
            } => format!("kicked by {by}"),
            Departure::Kicked {
                by,
                reason: Some(reason),
                ..
            } => format!("kicked by {by}: {reason}"),
        }
    }
}

/// The checks every join passes, in this order: the nickname is free (no
/// participant holds it in any case or lookalike spelling: `taken`), the
/// room is open, and it has a place left.
pub fn admit(
    nick: &str,
    taken: bool,
    closed: bool,
    here: usize,
    max: usize,
) -> Result<(), JoinError> {
    if taken {
        return Err(NickError::Taken(nick.to_owned()).into());
    }
    if closed {
        return Err(JoinError::Closed);
    }
    if here >= max {
        return Err(JoinError::Full);
    }
    Ok(())
}

/// A private line from `from` to the participant found for `to` (`found`:
/// its nickname as its owner spells it, if anyone holds `to`), and whether
/// it must be delivered: a line to oneself is delivered by its echo alone.
pub fn address_private_line(
    from: &str,
    to: &str,
    found: Option<&str>,
    text: &str,
) -> Result<(Bytes, bool), WhisperError> {
    // `to` is as typed: never echo it unsanitized.
    let recipient =
        found.ok_or_else(|| WhisperError::NoSuchNick(protocol::sanitize(to).into_owned()))?;
    let line = protocol::private_line(from, recipient, text);
    let to_someone_else = protocol::nick_key(recipient) != protocol::nick_key(from);
    Ok((line, to_someone_else))
}

impl From<backlog::RecvError> for RecvError {
    fn from(err: backlog::RecvError) -> Self {
        match err {
            backlog::RecvError::Lagged(n) => RecvError::Lagged(n),
            backlog::RecvError::Closed => RecvError::Closed,
        }
    }
}
