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
//!
//! A mailbox is a queue and a wake-up under one small allocation, and its
//! queue takes no memory while it is empty: most participants never get a
//! private line, and an idle participant's memory is what a big room is
//! mostly made of.

use super::WhisperError;
use crate::protocol;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// How many private lines may wait for one participant.
pub const MAILBOX_LINES: usize = 32;

/// The sending ends of every participant's mailbox, by `list_key`, in
/// that key's order, so that `/list` reads the first names without sorting
/// or copying everybody's.
#[derive(Debug, Default)]
pub struct Mailboxes {
    boxes: BTreeMap<String, Mailbox>,
}

#[derive(Debug)]
struct Mailbox {
    /// The nickname as its owner spelled it.
    nick: String,
    shared: Arc<Shared>,
}

/// What the room and the owner's subscription share.
#[derive(Debug, Default)]
struct Shared {
    lines: Mutex<VecDeque<Bytes>>,
    arrived: Notify,
}

impl Shared {
    fn lines(&self) -> std::sync::MutexGuard<'_, VecDeque<Bytes>> {
        crate::sync::lock(&self.lines)
    }
}

/// The receiving end of one participant's mailbox.
#[derive(Debug)]
pub struct Inbox(Arc<Shared>);

impl Inbox {
    /// The next private line, waiting for one. Cancel-safe: a line is only
    /// taken from the queue when it is returned.
    pub async fn recv(&mut self) -> Bytes {
        loop {
            // Registered before looking, so a line put in right after the
            // look still wakes us (`notify_one` keeps a permit).
            let arrived = self.0.arrived.notified();
            if let Some(line) = self.0.lines().pop_front() {
                return line;
            }
            arrived.await;
        }
    }

    /// The next private line if one is waiting.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.0.lines().pop_front()
    }
}

/// A mailbox's key: the nickname without regard to case, so that `/list`
/// is in alphabetical order. Unique among members, because the room already
/// refuses any two nicknames with the same [`protocol::nick_key`] (a coarser
/// folding: case and lookalike letters).
fn list_key(nick: &str) -> String {
    nick.to_ascii_lowercase()
}

impl Mailboxes {
    /// Opens `nick`'s mailbox (replacing any old one under the same key).
    pub fn open(&mut self, nick: &str) -> Inbox {
        let shared = Arc::new(Shared::default());
        self.boxes.insert(
            list_key(nick),
            Mailbox {
                nick: nick.to_owned(),
                shared: shared.clone(),
            },
        );
        Inbox(shared)
    }

    /// Closes `nick`'s mailbox; lines still in it are dropped with it.
    pub fn close(&mut self, nick: &str) {
        self.boxes.remove(&list_key(nick));
    }

    /// How many mailboxes there are, and the first `max` nicknames in
    /// alphabetical order (without regard to case), as their owners spelled
    /// them.
    pub fn nicks(&self, max: usize) -> (usize, Vec<String>) {
        let first = self.boxes.values().take(max);
        (self.boxes.len(), first.map(|m| m.nick.clone()).collect())
    }

    /// Puts `[private] from -> to: text` in `to`'s mailbox (unless `to` is
    /// the sender, who gets the line back anyway) and returns the line, for
    /// the sender's echo. Never waits.
    pub fn deliver(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        let key = list_key(to);
        let mailbox = self
            .boxes
            .get(&key)
            // `to` is as typed: never echo it unsanitized.
            .ok_or_else(|| WhisperError::NoSuchNick(protocol::sanitize(to).into_owned()))?;
        let line = protocol::private_line(from, &mailbox.nick, text);
        if key != list_key(from) {
            let mut lines = mailbox.shared.lines();
            if lines.len() >= MAILBOX_LINES {
                return Err(WhisperError::Full(mailbox.nick.clone()));
            }
            lines.push_back(line.clone());
            drop(lines);
            mailbox.shared.arrived.notify_one();
        }
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recv_wakes_for_a_line_put_in_while_it_waits() {
        let mut boxes = Mailboxes::default();
        let mut alice = boxes.open("alice");
        let waiting = tokio::spawn(async move { alice.recv().await });
        tokio::task::yield_now().await;
        let line = boxes.deliver("bob", "alice", "late").expect("delivered");
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken in time")
            .expect("task");
        assert_eq!(got, line);
    }

    #[test]
    fn a_private_line_reaches_its_recipient_only_and_a_full_box_refuses() {
        let mut boxes = Mailboxes::default();
        let mut alice = boxes.open("Alice");
        let mut bob = boxes.open("bob");
        let echo = boxes.deliver("bob", "ALICE", "psst").expect("delivered");
        assert_eq!(echo, "[private] bob -> Alice: psst\n");
        assert_eq!(alice.try_recv().expect("a line"), echo);
        assert!(bob.try_recv().is_none());
        // To oneself: the echo only.
        boxes.deliver("bob", "bob", "note").expect("delivered");
        assert!(bob.try_recv().is_none());
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
