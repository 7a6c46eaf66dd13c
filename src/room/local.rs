//! [`LocalRoom`]: the room held in this process's memory.
//!
//! One lock guards who is here, the history and the ring's writing end.
//! Putting a line in the ring under that lock is what makes a join's
//! subscription start exactly at its own announcement, and a newcomer's
//! history end exactly where its live lines begin.

use super::backlog::{self, Backlog};
use super::directory::Directory;
use super::history::History;
use super::mailbox::{Mailbox, mailbox};
use super::{
    Departure, JoinError, Room, Said, Subscriber, WhisperError, address_private_line, admit,
};
use crate::protocol;
use crate::sync::lock;
use bytes::Bytes;
use std::sync::{Mutex, MutexGuard};

/// A room held in this process's memory.
#[derive(Debug)]
pub struct LocalRoom {
    state: Mutex<State>,
    max_members: usize,
}

#[derive(Debug)]
struct State {
    /// Who is here, each with the room's end of its mailbox.
    members: Directory<Mailbox>,
    /// The last public lines, for newcomers (`--history`).
    history: History,
    /// The ring everybody reads.
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
                members: Directory::default(),
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
        lock(&self.state)
    }
}

impl Room for LocalRoom {
    type Subscription = Subscriber;

    async fn join(&self, nick: &str) -> Result<Subscriber, JoinError> {
        let mut state = self.state();
        let key = protocol::nick_key(nick);
        let here = state.members.len();
        admit(
            nick,
            state.members.contains(&key),
            state.closed,
            here,
            self.max_members,
        )?;
        let (mailbox, inbox) = mailbox();
        state.members.insert(key, nick.to_owned(), mailbox);
        let reader = state.lines.subscribe();
        state.lines.push(protocol::joined_line(nick));
        let history = state.history.snapshot();
        Ok(Subscriber::new(reader, inbox, 0, history))
    }

    fn say(&self, nick: &str, said: Said<'_>) {
        let line = said.line(nick);
        let mut state = self.state();
        if !state.closed {
            state.history.push(&line);
            state.lines.push(line);
        }
    }

    fn depart(&self, nick: &str, how: Departure<'_>) {
        let mut state = self.state();
        if state.members.remove(&protocol::nick_key(nick)).is_some() && !state.closed {
            state.lines.push(how.line(nick));
        }
    }

    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        let state = self.state();
        let found = state.members.find(to);
        let (line, deliver) = address_private_line(from, to, found.map(|n| n.nick.as_str()), text)?;
        if let Some(recipient) = found.filter(|_| deliver)
            && !recipient.value.put(0, line.clone())
        {
            return Err(WhisperError::Full(recipient.nick.clone()));
        }
        Ok(line)
    }

    fn members(&self, max: usize) -> (usize, Vec<String>) {
        let state = self.state();
        (state.members.len(), state.members.first(max))
    }

    fn close(&self, farewell: Bytes) {
        let mut state = self.state();
        if !state.closed {
            state.lines.push(farewell);
            state.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NickError;
    use crate::room::{RecvError, Subscription};

    fn drain(sub: &mut Subscriber) -> Vec<String> {
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
        assert_eq!(room.members(0).0, 1);
        // The name is free again once its owner left.
        assert!(room.join("BOB").await.is_ok());
    }

    #[tokio::test]
    async fn history_ends_where_live_lines_begin_and_private_lines_stay_private() {
        let room = LocalRoom::new(10, 64).with_history(2);
        let mut alice = room.join("alice").await.expect("joins");
        room.publish("alice", "one");
        room.act("alice", "waves");
        room.publish("alice", "two");
        let mut bob = room.join("Bob").await.expect("joins");
        assert_eq!(
            drain(&mut bob),
            [
                "Bob joined!\n",
                "[history] * alice waves\n",
                "[history] alice: two\n"
            ]
        );
        assert_eq!(
            room.whisper("alice", "bob", "psst").expect("delivered"),
            "[private] alice -> Bob: psst\n"
        );
        room.publish("alice", "three");
        // Room lines are read first: a private line never overtakes one.
        assert_eq!(
            drain(&mut bob),
            ["alice: three\n", "[private] alice -> Bob: psst\n"]
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
