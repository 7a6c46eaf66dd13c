//! [`LocalRoom`]: the room held in this process's memory, one shared ring
//! of recent lines that every participant reads at its own pace.

use super::backlog::{self, Backlog};
use super::history::History;
use super::mailbox::{Inbox, Mailboxes};
use super::{JoinError, RecvError, Room, Subscription, WhisperError};
use crate::protocol::{self, NickError};
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

/// A room held in this process's memory.
#[derive(Debug)]
pub struct LocalRoom {
    state: Mutex<State>,
    max_members: usize,
}

#[derive(Debug)]
struct State {
    /// Nicknames by their case-insensitive key.
    members: HashSet<String>,
    /// Private lines, per participant (`/msg`); also who is here by name.
    mailboxes: Mailboxes,
    /// The last public lines, for newcomers (`--history`).
    history: History,
    /// The ring. Sending under the state lock is what makes a join's
    /// subscription start exactly at its own announcement.
    lines: Backlog,
    closed: bool,
}

impl LocalRoom {
    /// A room for at most `max_members` participants, whose lines not yet
    /// read by everybody may take at most `backlog_bytes` (as
    /// [`backlog::cost`] counts them, and at least [`backlog::MIN_BYTES`]):
    /// how far a participant may fall behind.
    pub fn new(max_members: usize, backlog_bytes: usize) -> Self {
        LocalRoom {
            state: Mutex::new(State {
                members: HashSet::new(),
                mailboxes: Mailboxes::default(),
                history: History::new(0),
                lines: Backlog::new(backlog_bytes.max(backlog::MIN_BYTES)),
                closed: false,
            }),
            max_members,
        }
    }

    /// Keeps the last `lines` public lines for newcomers (0: none).
    pub fn with_history(self, lines: usize) -> Self {
        self.state().history = History::new(lines);
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }
}

impl Room for LocalRoom {
    type Subscription = LocalSubscription;

    async fn join(&self, nick: &str) -> Result<LocalSubscription, JoinError> {
        let mut state = self.state();
        let key = protocol::nick_key(nick);
        if state.members.contains(&key) {
            return Err(NickError::Taken(nick.to_owned()).into());
        }
        if state.closed {
            return Err(JoinError::Closed);
        }
        if state.members.len() >= self.max_members {
            return Err(JoinError::Full);
        }
        state.members.insert(key);
        let reader = state.lines.subscribe();
        state.lines.push(protocol::joined_line(nick));
        let inbox = state.mailboxes.open(nick);
        let history = state.history.snapshot();
        Ok(LocalSubscription {
            reader,
            inbox,
            history,
        })
    }

    fn leave(&self, nick: &str) {
        self.depart(nick, protocol::left_line(nick));
    }

    fn publish(&self, nick: &str, text: &str) {
        self.say(protocol::chat_line(nick, text));
    }

    fn quit(&self, nick: &str, reason: &str) {
        self.depart(nick, protocol::left_line_because(nick, reason));
    }

    fn act(&self, nick: &str, text: &str) {
        self.say(protocol::action_line(nick, text));
    }

    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        self.state().mailboxes.deliver(from, to, text)
    }

    fn members(&self, max: usize) -> (usize, Vec<String>) {
        self.state().mailboxes.nicks(max)
    }

    fn announce(&self, line: Bytes) {
        let state = self.state();
        if !state.closed {
            state.lines.push(line);
        }
    }

    fn close(&self, farewell: Bytes) {
        let mut state = self.state();
        if !state.closed {
            state.lines.push(farewell);
            state.closed = true;
        }
    }

    fn len(&self) -> usize {
        self.state().members.len()
    }
}

impl LocalRoom {
    /// Removes `nick` and tells those who stay with `line` (`left!`).
    fn depart(&self, nick: &str, line: Bytes) {
        let mut state = self.state();
        if state.members.remove(&protocol::nick_key(nick)) {
            state.mailboxes.close(nick);
            if !state.closed {
                state.lines.push(line);
            }
        }
    }

    /// Puts a public line (message or action) in the ring and the history.
    fn say(&self, line: Bytes) {
        let mut state = self.state();
        if !state.closed {
            state.history.push(&line);
            state.lines.push(line);
        }
    }
}

/// A [`LocalRoom`] subscriber's cursor in the ring, and its mailbox.
#[derive(Debug)]
pub struct LocalSubscription {
    reader: backlog::Reader,
    /// Private lines for this participant.
    inbox: Inbox,
    /// The room's last public lines before the join, unmarked.
    history: Vec<Bytes>,
}

fn from_backlog(err: backlog::RecvError) -> RecvError {
    match err {
        backlog::RecvError::Lagged(n) => RecvError::Lagged(n),
        backlog::RecvError::Closed => RecvError::Closed,
    }
}

impl Subscription for LocalSubscription {
    async fn recv(&mut self) -> Result<Bytes, RecvError> {
        // Room lines first, so that a private line never overtakes the
        // public lines said before it. Both branches are cancel-safe.
        tokio::select! {
            biased;
            line = self.reader.recv() => line.map_err(from_backlog),
            line = self.inbox.recv() => Ok(line),
        }
    }

    fn take_history(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.history)
            .iter()
            .map(|line| protocol::history_line(line))
            .collect()
    }

    fn try_recv(&mut self) -> Result<Option<Bytes>, RecvError> {
        match self.reader.try_recv().map_err(from_backlog)? {
            Some(line) => Ok(Some(line)),
            None => Ok(self.inbox.try_recv()),
        }
    }

    fn is_lagging(&self) -> bool {
        self.reader.is_lagging()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(sub: &mut LocalSubscription) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = sub.try_recv().expect("not lagged") {
            out.push(String::from_utf8(line.to_vec()).expect("utf-8"));
        }
        out
    }

    #[tokio::test]
    async fn join_publish_leave_in_one_order() {
        let room = LocalRoom::new(10, 1 << 20);
        let mut alice = room.join("Alice").await.expect("joins");
        let mut bob = room.join("Bob").await.expect("joins");
        assert_eq!(
            room.join("bob").await.unwrap_err(),
            JoinError::Nick(NickError::Taken("bob".into()))
        );
        room.publish("Alice", "hi");
        room.leave("Bob");
        assert_eq!(
            drain(&mut alice),
            [
                "Alice joined!\n",
                "Bob joined!\n",
                "Alice: hi\n",
                "Bob left!\n"
            ]
        );
        assert_eq!(
            drain(&mut bob),
            ["Bob joined!\n", "Alice: hi\n", "Bob left!\n"]
        );
        assert_eq!(room.len(), 1);
        // The name is free again once its owner left.
        assert!(room.join("BOB").await.is_ok());
    }

    #[tokio::test]
    async fn history_ends_where_live_lines_begin_and_private_lines_stay_private() {
        let room = LocalRoom::new(10, 64).with_history(2);
        let mut alice = room.join("alice").await.expect("joins");
        assert!(alice.take_history().is_empty());
        room.publish("alice", "one");
        room.act("alice", "waves");
        room.publish("alice", "two");
        let mut bob = room.join("Bob").await.expect("joins");
        assert_eq!(
            bob.take_history(),
            ["[history] * alice waves\n", "[history] alice: two\n"]
        );
        assert!(bob.take_history().is_empty());
        assert_eq!(
            room.whisper("alice", "bob", "psst").expect("delivered"),
            "[private] alice -> Bob: psst\n"
        );
        room.publish("alice", "three");
        // Room lines are read first: a private line never overtakes one.
        assert_eq!(
            drain(&mut bob),
            [
                "Bob joined!\n",
                "alice: three\n",
                "[private] alice -> Bob: psst\n"
            ]
        );
        assert_eq!(room.members(10), (2, vec!["alice".into(), "Bob".into()]));
        room.quit("Bob", "lunch");
        assert_eq!(
            drain(&mut alice).last().map(String::as_str),
            Some("Bob left! (lunch)\n")
        );
        assert_eq!(room.members(10), (1, vec!["alice".into()]));
        assert!(matches!(
            room.whisper("alice", "bob", "gone?"),
            Err(WhisperError::NoSuchNick(_))
        ));
    }

    #[tokio::test]
    async fn full_room_refuses() {
        let room = LocalRoom::new(1, 1 << 20);
        let _a = room.join("a").await.expect("joins");
        assert_eq!(room.join("b").await.unwrap_err(), JoinError::Full);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told() {
        let room = LocalRoom::new(10, backlog::MIN_BYTES);
        let mut slow = room.join("slow").await.expect("joins");
        // Twice what the smallest backlog holds.
        for i in 0..2 * backlog::MIN_BYTES / backlog::cost(b"x: 0000\n") {
            room.publish("x", &format!("{i:04}"));
        }
        assert!(slow.is_lagging());
        assert!(matches!(slow.try_recv(), Err(RecvError::Lagged(_))));
    }

    #[tokio::test]
    async fn nothing_follows_the_farewell() {
        let room = LocalRoom::new(10, 1 << 20);
        let mut a = room.join("a").await.expect("joins");
        room.close(Bytes::from_static(b"bye\n"));
        room.publish("a", "late");
        room.leave("a");
        assert_eq!(drain(&mut a), ["a joined!\n", "bye\n"]);
        assert_eq!(room.join("b").await.unwrap_err(), JoinError::Closed);
    }
}
