//! Lines for one participant alone: private messages (`/msg`) and a room's
//! own error lines for it. One small mailbox per participant, held by the
//! room beside its shared ring.
//!
//! A private line goes to one participant only, so it has no place in the
//! ring everybody reads. Each participant gets a bounded queue instead; its
//! [`Subscriber`](super::Subscriber) reads that queue along with the ring.
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

use crate::sync::lock;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// How many lines may wait for one participant, in either room.
pub const MAILBOX_LINES: usize = 64;

/// A line for one participant, to be read once its subscriber has read the
/// room up to sequence `after` (0 for a room without sequences, and for a
/// room's own lines: at once).
#[derive(Debug)]
pub struct Private {
    pub after: u64,
    pub line: Bytes,
}

/// The room's end of a participant's mailbox. Dropping it closes the
/// mailbox: its owner reads what is in it, then learns it is closed.
#[derive(Debug)]
pub struct Mailbox(Arc<Shared>);

/// The participant's end of its mailbox.
#[derive(Debug)]
pub struct Inbox(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// How many lines `queue` holds, kept under its lock and read without
    /// it: a subscriber looks at its mailbox for every line it reads from
    /// a room, and a participant in several rooms (channels) finds most of
    /// them empty; that look takes no lock.
    queued: AtomicUsize,
    arrived: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    lines: VecDeque<Private>,
    closed: bool,
}

/// A new mailbox's two ends.
pub fn mailbox() -> (Mailbox, Inbox) {
    let shared = Arc::new(Shared::default());
    (Mailbox(shared.clone()), Inbox(shared))
}

impl Mailbox {
    /// Puts `line` in the mailbox, to be read after the room's line
    /// `after`; false (and nothing queued) if the mailbox is full.
    pub fn put(&self, after: u64, line: Bytes) -> bool {
        let mut queue = lock(&self.0.queue);
        if queue.lines.len() >= MAILBOX_LINES {
            return false;
        }
        queue.lines.push_back(Private { after, line });
        self.0.queued.store(queue.lines.len(), Ordering::Release);
        drop(queue);
        self.0.arrived.notify_one();
        true
    }

    /// Puts `line` in the mailbox as its last, and closes it in the same
    /// step: whoever takes that line sees nothing can come after it (see
    /// [`Inbox::is_finished`]). It goes in even if the mailbox is full.
    pub fn put_last(self, after: u64, line: Bytes) {
        let mut queue = lock(&self.0.queue);
        queue.lines.push_back(Private { after, line });
        queue.closed = true;
        self.0.queued.store(queue.lines.len(), Ordering::Release);
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        lock(&self.0.queue).closed = true;
        self.0.arrived.notify_one();
    }
}

impl Inbox {
    /// The next line, waiting for one; `None` once the mailbox is closed
    /// and empty. Cancel-safe: a line is only taken from the queue when it
    /// is returned.
    pub async fn recv(&mut self) -> Option<Private> {
        loop {
            // Registered before looking, so a line put in right after the
            // look still wakes us (`notify_one` keeps a permit).
            let arrived = self.0.arrived.notified();
            {
                let mut queue = lock(&self.0.queue);
                if let Some(private) = queue.lines.pop_front() {
                    self.0.queued.store(queue.lines.len(), Ordering::Release);
                    return Some(private);
                }
                if queue.closed {
                    return None;
                }
            }
            arrived.await;
        }
    }

    /// The next line if one is waiting.
    /// How many lines wait in it.
    pub fn len(&self) -> usize {
        self.0.queued.load(Ordering::Acquire)
    }

    /// Whether no line waits in it.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the room closed the mailbox and every line in it has been
    /// taken: nothing more will come.
    pub fn is_finished(&self) -> bool {
        let queue = lock(&self.0.queue);
        queue.closed && queue.lines.is_empty()
    }

    pub fn try_recv(&mut self) -> Option<Private> {
        // A line put in at this moment is found by the next look, or by
        // `recv`, which its `put` wakes.
        if self.0.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = lock(&self.0.queue);
        let private = queue.lines.pop_front();
        self.0.queued.store(queue.lines.len(), Ordering::Release);
        private
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recv_wakes_for_a_line_put_in_while_it_waits() {
        let (mailbox, mut inbox) = mailbox();
        let waiting = tokio::spawn(async move { inbox.recv().await.map(|p| p.line) });
        tokio::task::yield_now().await;
        assert!(mailbox.put(0, Bytes::from_static(b"late\n")));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken in time")
            .expect("task");
        assert_eq!(got.as_deref(), Some(&b"late\n"[..]));
    }

    #[tokio::test]
    async fn a_full_mailbox_refuses_and_a_closed_one_ends_after_its_lines() {
        let (mailbox, mut inbox) = mailbox();
        for _ in 0..MAILBOX_LINES {
            assert!(mailbox.put(0, Bytes::from_static(b"fill\n")));
        }
        assert!(!mailbox.put(0, Bytes::from_static(b"one too many\n")));
        assert!(inbox.try_recv().is_some());
        assert!(mailbox.put(7, Bytes::from_static(b"room again\n")));
        drop(mailbox);
        let mut left = 0;
        while let Some(private) = inbox.recv().await {
            left += 1;
            if left == MAILBOX_LINES {
                assert_eq!(private.after, 7);
            }
        }
        assert_eq!(left, MAILBOX_LINES);
    }

    #[tokio::test]
    async fn a_last_line_goes_in_even_when_full_and_nothing_follows_it() {
        let (mailbox, mut inbox) = mailbox();
        for _ in 0..MAILBOX_LINES {
            assert!(mailbox.put(0, Bytes::from_static(b"fill\n")));
        }
        mailbox.put_last(0, Bytes::from_static(b"ERROR kicked\n"));
        let mut last = None;
        for _ in 0..=MAILBOX_LINES {
            assert!(!inbox.is_finished(), "lines are left");
            last = inbox.recv().await;
        }
        assert_eq!(
            last.map(|p| p.line),
            Some(Bytes::from_static(b"ERROR kicked\n"))
        );
        assert!(inbox.is_finished(), "closed with its last line taken");
        assert!(inbox.recv().await.is_none());
    }
}
