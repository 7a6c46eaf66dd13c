//! Private messages (`/msg`): one small mailbox per participant, held by
//! the room beside its shared ring.
//!
//! A private line goes to one participant only, so it has no place in the
//! ring everybody reads. Each participant gets a bounded queue instead; its
//! subscription reads that queue along with the ring. The room keeps the
//! sending ends by nickname key, which also gives `/list` the nicknames as
//! their owners spelled them.
//!
//! A mailbox holds at most [`MAILBOX_LINES`] lines. A participant that lets
//! it fill up is not reading at all (it would have been dropped as too slow
//! long before, were the lines public); a private message to it is refused
//! and its sender told so, rather than queued without bound or lost
//! silently.

use crate::protocol;
use bytes::Bytes;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// How many private lines may wait for one participant.
pub const MAILBOX_LINES: usize = 32;

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
}

/// The sending ends of every participant's mailbox, by nickname key, in
/// the keys' order, so that `/list` reads the first names without sorting
/// or copying everybody's.
#[derive(Debug, Default)]
pub struct Mailboxes {
    boxes: BTreeMap<String, Mailbox>,
}

#[derive(Debug)]
struct Mailbox {
    /// The nickname as its owner spelled it.
    nick: String,
    sender: mpsc::Sender<Bytes>,
}

/// The receiving end of one participant's mailbox.
pub type Inbox = mpsc::Receiver<Bytes>;

impl Mailboxes {
    /// Opens `nick`'s mailbox (replacing any old one under the same key).
    pub fn open(&mut self, nick: &str) -> Inbox {
        let (sender, inbox) = mpsc::channel(MAILBOX_LINES);
        self.boxes.insert(
            protocol::nick_key(nick),
            Mailbox {
                nick: nick.to_owned(),
                sender,
            },
        );
        inbox
    }

    /// Closes `nick`'s mailbox; lines still in it are dropped with it.
    pub fn close(&mut self, nick: &str) {
        self.boxes.remove(&protocol::nick_key(nick));
    }

    /// How many mailboxes there are, and the first `max` nicknames in the
    /// order of their keys, as their owners spelled them.
    pub fn nicks(&self, max: usize) -> (usize, Vec<String>) {
        let first = self.boxes.values().take(max);
        (self.boxes.len(), first.map(|m| m.nick.clone()).collect())
    }

    /// Puts `[private] from -> to: text` in `to`'s mailbox (unless `to` is
    /// the sender, who gets the line back anyway) and returns the line, for
    /// the sender's echo. Never waits.
    pub fn deliver(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        let key = protocol::nick_key(to);
        let mailbox = self
            .boxes
            .get(&key)
            // `to` is as typed: never echo it unsanitized.
            .ok_or_else(|| WhisperError::NoSuchNick(protocol::sanitize(to).into_owned()))?;
        let line = protocol::private_line(from, &mailbox.nick, text);
        if key != protocol::nick_key(from) {
            mailbox
                .sender
                .try_send(line.clone())
                .map_err(|_| WhisperError::Full(mailbox.nick.clone()))?;
        }
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_line_reaches_its_recipient_only_and_a_full_box_refuses() {
        let mut boxes = Mailboxes::default();
        let mut alice = boxes.open("Alice");
        let mut bob = boxes.open("bob");
        let echo = boxes.deliver("bob", "ALICE", "psst").expect("delivered");
        assert_eq!(echo, "[private] bob -> Alice: psst\n");
        assert_eq!(alice.try_recv().expect("a line"), echo);
        assert!(bob.try_recv().is_err());
        // To oneself: the echo only.
        boxes.deliver("bob", "bob", "note").expect("delivered");
        assert!(bob.try_recv().is_err());
        assert_eq!(
            boxes.deliver("bob", "carol", "x"),
            Err(WhisperError::NoSuchNick("carol".into()))
        );
        assert_eq!(
            boxes.deliver("bob", "car\u{1b}[2Jol", "x"),
            Err(WhisperError::NoSuchNick("car[2Jol".into()))
        );
        for _ in 0..MAILBOX_LINES {
            boxes.deliver("bob", "Alice", "fill").expect("room left");
        }
        assert_eq!(
            boxes.deliver("bob", "Alice", "one too many"),
            Err(WhisperError::Full("Alice".into()))
        );
        assert_eq!(boxes.nicks(10), (2, vec!["Alice".into(), "bob".into()]));
        assert_eq!(boxes.nicks(1), (2, vec!["Alice".into()]));
        boxes.close("ALICE");
        assert_eq!(boxes.nicks(10), (1, vec!["bob".into()]));
    }
}
