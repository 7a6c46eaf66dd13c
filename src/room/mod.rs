//! The room: who is here, and the one global order of lines everybody sees.
//!
//! Sessions talk to the room only through the [`Room`] and [`Subscription`]
//! traits, so that another implementation (say, one room shared by several
//! servers through a message broker) can replace [`LocalRoom`] without
//! touching sessions or TLS.
//!
//! [`LocalRoom`] keeps the order in one shared ring of recent lines (the
//! room's [`Backlog`]): a line is formatted once, stored once, and every
//! subscriber reads it at its own pace by cloning a reference-counted
//! [`Bytes`]. The ring's bound, in bytes, limits how far any subscriber may
//! fall behind; one that falls further learns so ([`RecvError::Lagged`])
//! instead of silently missing lines, and nobody ever waits for it.

pub mod backlog;
pub mod cluster;
pub mod history;
mod local;
pub mod mailbox;

pub use local::{LocalRoom, LocalSubscription};

use crate::protocol::NickError;
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
}

/// Why a room shared with other servers refuses a join or a line while it
/// cannot reach them.
pub const UNAVAILABLE: &str = "the room is unavailable";

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
    fn try_recv(&mut self) -> Result<Option<Bytes>, RecvError>;
    /// The room's last public lines from before this participant joined
    /// (`serve --history N`), oldest first, each already marked by
    /// [`protocol::history_line`]; empty when history is off, and after the
    /// first call. The session sends them right after `Connected to server!`.
    fn take_history(&mut self) -> Vec<Bytes>;
    /// Whether lines this subscriber has not read yet are already being
    /// discarded; checked while a write to a stuck peer is pending.
    fn is_lagging(&self) -> bool;
}

/// Who is here, and the one order of lines.
pub trait Room: Send + Sync + 'static {
    type Subscription: Subscription;

    /// Adds `nick` (already valid by [`protocol::validate_nickname`]) and
    /// announces `<nick> joined!` to everyone. The subscription's first line
    /// is that announcement; every line after it is one everybody else sees
    /// in the same order.
    ///
    /// Asynchronous because a shared room has to ask its peers whether a
    /// nickname is free; the other operations only hand a line on, and a
    /// shared room can queue it.
    fn join(
        &self,
        nick: &str,
    ) -> impl Future<Output = Result<Self::Subscription, JoinError>> + Send;

    /// Removes `nick` and announces `<nick> left!` to those who stay.
    fn leave(&self, nick: &str);

    /// Sends `<nick>: <text>` to everyone, the sender included.
    fn publish(&self, nick: &str, text: &str);

    /// Removes `nick` after `/quit REASON`: like [`Room::leave`], but those
    /// who stay receive `<nick> left! (REASON)`.
    fn quit(&self, nick: &str, reason: &str);

    /// Sends the action `* <nick> <text>` (`/me`) to everyone; like a
    /// message, it is part of the room's order and of its history.
    fn act(&self, nick: &str, text: &str);

    /// Sends `[private] <from> -> <to>: <text>` (`/msg`) to `to` alone,
    /// found without regard to case, and returns the line, which the
    /// session echoes to the sender. Never waits: a recipient that is not
    /// reading makes it fail rather than queue without bound.
    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError>;

    /// How many participants are here, and the first `max` of their
    /// nicknames in alphabetical order (without regard to case), as their
    /// owners spelled them (`/list`). Costs O(`max`), not O(room).
    fn members(&self, max: usize) -> (usize, Vec<String>);

    /// Sends a server line (already terminated) to everyone.
    fn announce(&self, line: Bytes);

    /// Sends `farewell` as the room's last line: after it, nobody joins and
    /// nothing more is announced (not even who leaves).
    fn close(&self, farewell: Bytes);

    /// How many participants are here.
    fn len(&self) -> usize;

    /// Whether nobody is here.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
