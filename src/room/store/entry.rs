//! What the store keeps of a line: an [`Entry`], of a [`Kind`], and how
//! the room showed it.

use crate::protocol;
use crate::protocol::channels::LOBBY;
use bytes::Bytes;
use time::OffsetDateTime;

/// What a stored line is. Private lines are not one of them: they are
/// never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<nick>: <text>`.
    Message,
    /// `* <nick> <text>` (`/me`).
    Action,
    /// `<nick> joined!`; no text.
    Join,
    /// `<nick> left!`, or `<nick> left! (<text>)` after `/quit <text>`.
    Leave,
    /// An operator's action: `nick` is the operator, [`Entry::whom`] the
    /// participant it concerns, `text` its reason, duration or topic.
    Moderation(Action),
}

/// An operator's action, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `/kick NICK [REASON]`: `text` is the reason (empty: none).
    Kick,
    /// `/ban NICK [REASON]`: `text` is the reason (empty: none).
    Ban,
    /// `/mute NICK DURATION`: `text` is the duration as typed.
    Mute,
    /// `/unmute NICK`; no text.
    Unmute,
    /// `/topic TEXT`: `text` is the topic; no `whom`.
    Topic,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 5] = [
        Action::Kick,
        Action::Ban,
        Action::Mute,
        Action::Unmute,
        Action::Topic,
    ];

    /// Its name in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kick => "kick",
            Action::Ban => "ban",
            Action::Mute => "mute",
            Action::Unmute => "unmute",
            Action::Topic => "topic",
        }
    }
}

impl Kind {
    /// Its name in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Action => "action",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Moderation(_) => "moderation",
        }
    }

    pub(super) fn code(self) -> i64 {
        match self {
            Kind::Message => 0,
            Kind::Action => 1,
            Kind::Join => 2,
            Kind::Leave => 3,
            Kind::Moderation(action) => match action {
                Action::Kick => 4,
                Action::Ban => 5,
                Action::Mute => 6,
                Action::Unmute => 7,
                Action::Topic => 8,
            },
        }
    }

    pub(super) fn from_code(code: i64) -> Option<Kind> {
        [Kind::Message, Kind::Action, Kind::Join, Kind::Leave]
            .into_iter()
            .chain(Action::ALL.map(Kind::Moderation))
            .find(|kind| kind.code() == code)
    }
}

/// One public line of the room or of one of its channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place in the store's order, which is its channel's.
    pub seq: u64,
    /// When it was said, in UTC; stored to the millisecond.
    pub time: OffsetDateTime,
    /// The channel it was said in ([`LOBBY`] for the room itself), a name
    /// valid by [`protocol::channels::validate_channel`]; channels are
    /// told apart by their folded names, so `#0ps` is `#ops`.
    pub channel: String,
    pub kind: Kind,
    pub nick: String,
    /// Empty for a join and for a leave without a reason.
    pub text: String,
    /// Whom an operator's action concerns; empty for every other kind,
    /// and for a topic.
    pub whom: String,
}

impl Entry {
    /// A line of [`LOBBY`] that concerns nobody else.
    pub fn new(
        seq: u64,
        time: OffsetDateTime,
        kind: Kind,
        nick: impl Into<String>,
        text: impl Into<String>,
    ) -> Entry {
        Entry {
            seq,
            time,
            channel: LOBBY.to_owned(),
            kind,
            nick: nick.into(),
            text: text.into(),
            whom: String::new(),
        }
    }

    /// The line as the room showed it, terminated (a channel's with the
    /// channel's name in front), without the characters
    /// [`protocol::sanitize`] drops (the room never lets them in, but the
    /// file could have been changed by hand).
    pub fn line(&self) -> Bytes {
        self.line_in(&self.channel)
    }

    /// The line as the channel `channel` shows it: [`Entry::line`] with
    /// that name, the spelling of the channel as it is open now (a
    /// lookalike of the one stored).
    pub fn line_in(&self, channel: &str) -> Bytes {
        use protocol::moderation as m;
        let nick = protocol::sanitize(&self.nick);
        let text = protocol::sanitize(&self.text);
        let whom = protocol::sanitize(&self.whom);
        let channel = protocol::sanitize(channel);
        let reason = (!text.is_empty()).then_some(&*text);
        let line = match self.kind {
            Kind::Message => protocol::chat_line(&nick, &text),
            Kind::Action => protocol::action_line(&nick, &text),
            Kind::Join => protocol::joined_line(&nick),
            Kind::Leave if text.is_empty() => protocol::left_line(&nick),
            Kind::Leave => protocol::left_line_because(&nick, &text),
            Kind::Moderation(Action::Kick | Action::Ban) => m::kicked_line(&whom, &nick, reason),
            Kind::Moderation(Action::Mute) => m::muted_line(&whom, &nick, &text),
            Kind::Moderation(Action::Unmute) => m::unmuted_line(&whom, &nick),
            // Names its channel itself.
            Kind::Moderation(Action::Topic) => return m::topic_set_line(&channel, &text, &nick),
        };
        if protocol::channels::is_lobby(&channel) {
            return line;
        }
        let prefix = protocol::channels::channel_prefix(&channel);
        protocol::channels::in_channel(&prefix, &line)
    }
}
