//! [`Subscriber`]: one participant's reading of the room, in either room:
//! its cursor in the shared ring, from its own `joined!` line on, and its
//! mailbox of lines for it alone.
//!
//! A private line stands outside the room's one order, yet it must never
//! overtake the public lines said before it: Alice's `look at this` and then
//! her `/msg bob what do you think?` reach Bob in that order. Room lines are
//! read first whenever both are ready. In a room shared by several servers
//! the public line goes through the broker and comes back to each server a
//! little later, while the private line goes straight to its recipient's
//! server; so each private line carries the last sequence of the room its
//! sender's server knew of when it was sent ([`Private::after`]), and the
//! subscriber holds it until it has read the room up to that sequence, for
//! at most [`HOLD_LIMIT`]. In one server's room every line has sequence 0
//! and nothing is ever held.
//!
//! A newcomer's history (`--history`) comes the same way, right after its
//! own `joined!` line: one line per read, so that the session writes it in
//! the same bounded batches as live lines, from a snapshot the newcomer
//! shares with the room. A newcomer that has not taken its history within
//! [`HISTORY_TIME`] counts as lagging, and its session ends as too slow.

use super::backlog::{self, Line};
use super::mailbox::{Inbox, Private};
use super::{RecvError, Subscription};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

/// The longest a private line waits for the room lines said before it. It
/// waits only while the recipient's server has not yet read them (a few
/// milliseconds, or an outage of the broker): past this it is delivered
/// anyway, rather than held for as long as the broker is away.
pub const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// How long a newcomer may take to read the room's history.
pub const HISTORY_TIME: Duration = Duration::from_secs(30);

/// A participant's reading of the room: see the module doc.
#[derive(Debug)]
pub struct Subscriber<L: Line = Bytes> {
    ring: backlog::Reader<L>,
    inbox: Inbox,
    /// The sequence of this participant's `joined!` line: lines before it
    /// were said before it joined.
    start: u64,
    /// The last sequence read from the ring.
    read_up_to: u64,
    /// A private line waiting for the room lines said before it, and since
    /// when.
    held: Option<Box<(Private, Instant)>>,
    /// The room's last public lines before the join, oldest first, marked,
    /// and how far they have been read; `None` once all have.
    history: Option<Box<Pending>>,
    /// Whether this participant's own `joined!` line has been read: its
    /// history comes after it.
    greeted: bool,
    /// Whether the room closed the mailbox after its last line (it put this
    /// participant out, `Room::put_out`): that line was the last, and the
    /// room's lines that came after it are not for this participant.
    put_out: bool,
}

/// History not yet read.
#[derive(Debug)]
struct Pending {
    lines: Arc<[Bytes]>,
    next: usize,
    since: Instant,
}

impl<L: Line> Subscriber<L> {
    /// Reads `ring` from sequence `start` on (0: all of it), and `inbox`;
    /// `history` (marked lines) comes right after the first line.
    pub fn new(ring: backlog::Reader<L>, inbox: Inbox, start: u64, history: Arc<[Bytes]>) -> Self {
        let history = (!history.is_empty()).then(|| {
            Box::new(Pending {
                lines: history,
                next: 0,
                since: Instant::now(),
            })
        });
        Subscriber {
            ring,
            inbox,
            start,
            read_up_to: start.saturating_sub(1),
            held: None,
            history,
            greeted: false,
            put_out: false,
        }
    }

    /// A newcomer not announced to the room (see
    /// [`Announce`](super::Announce)): its own `joined!` line and what
    /// follows it are `lines`, read first; the ring's lines from `start` on
    /// come after them.
    pub fn unannounced(
        ring: backlog::Reader<L>,
        inbox: Inbox,
        start: u64,
        lines: Arc<[Bytes]>,
    ) -> Self {
        let mut subscriber = Subscriber::new(ring, inbox, start, lines);
        subscriber.greeted = true;
        subscriber
    }

    /// The next history line, once the newcomer has read its `joined!`.
    fn next_history(&mut self) -> Option<Bytes> {
        if !self.greeted {
            return None;
        }
        let pending = self.history.as_mut()?;
        let line = pending.lines.get(pending.next).cloned();
        pending.next += 1;
        if pending.next >= pending.lines.len() {
            self.history = None;
        }
        line
    }

    /// A room line read: counts it, and passes it on unless it came before
    /// this participant's `joined!`.
    fn read(&mut self, line: L) -> Option<Bytes> {
        let seq = line.seq();
        self.read_up_to = self.read_up_to.max(seq);
        let line = (seq >= self.start).then(|| line.into_bytes());
        self.greeted |= line.is_some();
        line
    }

    /// The held private line, if what was said before it has been read.
    fn due(&mut self) -> Option<Bytes> {
        match &self.held {
            Some(held) if held.0.after <= self.read_up_to => {
                let line = self.held.take().map(|h| h.0.line);
                line.map(|line| self.private_out(line))
            }
            _ => None,
        }
    }

    /// A private line just taken from the mailbox: it goes now, or is held.
    fn arrived(&mut self, private: Private) -> Option<Bytes> {
        if private.after <= self.read_up_to {
            return Some(self.private_out(private.line));
        }
        self.held = Some(Box::new((private, Instant::now())));
        None
    }

    /// A private line on its way out; if the room closed the mailbox
    /// behind it, nothing comes after it.
    fn private_out(&mut self, line: Bytes) -> Bytes {
        self.put_out = self.held.is_none() && self.inbox.is_finished();
        line
    }
}

impl<L: Line> Subscription for Subscriber<L> {
    async fn recv(&mut self) -> Result<Bytes, RecvError> {
        if self.put_out {
            return Err(RecvError::Closed);
        }
        if let Some(line) = self.next_history() {
            return Ok(line);
        }
        loop {
            if let Some(line) = self.due() {
                return Ok(line);
            }
            // Made (and boxed) only while a private line is held: a
            // participant waits in every room it is in, one wait per
            // channel, and each wait would otherwise carry a timer.
            let mut hold = self
                .held
                .as_ref()
                .map(|held| Box::pin(sleep_until(held.1 + HOLD_LIMIT)));
            // Room lines first, so that a private line goes once the lines
            // waiting before it are out. Every branch is cancel-safe.
            tokio::select! {
                biased;
                line = self.ring.recv() => {
                    if let Some(line) = self.read(line?) {
                        return Ok(line);
                    }
                }
                private = self.inbox.recv(), if self.held.is_none() => match private {
                    Some(private) => {
                        if let Some(line) = self.arrived(private) {
                            return Ok(line);
                        }
                    }
                    // The room closed this participant's mailbox: it was
                    // put out (see `ClusterRoom`'s kick), or it left.
                    None => return Err(RecvError::Closed),
                },
                _ = async { if let Some(hold) = hold.as_mut() { hold.await } }, if hold.is_some() => {
                    if let Some(held) = self.held.take() {
                        return Ok(self.private_out(held.0.line));
                    }
                }
            }
        }
    }

    fn try_recv(&mut self) -> Result<Option<Bytes>, RecvError> {
        // Said by the next `recv`, as a closed mailbox is.
        if self.put_out {
            return Ok(None);
        }
        if let Some(line) = self.next_history() {
            return Ok(Some(line));
        }
        loop {
            if let Some(line) = self.due() {
                return Ok(Some(line));
            }
            match self.ring.try_recv()? {
                Some(line) => {
                    if let Some(line) = self.read(line) {
                        return Ok(Some(line));
                    }
                }
                None => break,
            }
        }
        if self.held.is_some() {
            return Ok(None);
        }
        // A closed mailbox is said by the next `recv`, once what is queued
        // is out.
        Ok(self
            .inbox
            .try_recv()
            .and_then(|private| self.arrived(private)))
    }

    fn private_waiting(&self) -> usize {
        self.inbox.len()
    }

    fn is_put_out(&self) -> bool {
        self.put_out
    }

    fn is_lagging(&self) -> bool {
        self.ring.is_lagging()
            || self
                .history
                .as_ref()
                .is_some_and(|pending| pending.since.elapsed() > HISTORY_TIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::backlog::Backlog;
    use crate::room::mailbox::mailbox;
    use tokio::time::timeout;

    /// A numbered line, as a room shared through a broker keeps them.
    #[derive(Clone)]
    struct Numbered(u64, &'static str);

    impl Line for Numbered {
        fn text(&self) -> &[u8] {
            self.1.as_bytes()
        }
        fn into_bytes(self) -> Bytes {
            Bytes::from_static(self.1.as_bytes())
        }
        fn seq(&self) -> u64 {
            self.0
        }
    }

    async fn next<L: Line>(sub: &mut Subscriber<L>) -> Bytes {
        timeout(Duration::from_secs(60), sub.recv())
            .await
            .expect("a line in time")
            .expect("a line")
    }

    #[tokio::test(start_paused = true)]
    async fn a_private_line_waits_for_the_room_lines_said_before_it_and_no_longer() {
        let ring = Backlog::new(backlog::MIN_BYTES);
        let (mailbox, inbox) = mailbox();
        // Joined at sequence 5.
        let mut sub = Subscriber::new(ring.subscribe(), inbox, 5, Arc::from([]));
        ring.push(Numbered(5, "bob joined!\n"));
        let psst = Bytes::from_static(b"[private] alice -> bob: psst\n");
        // Said after line 7, which this server has not read yet: held.
        assert!(mailbox.put(7, psst.clone()));
        assert_eq!(next(&mut sub).await, "bob joined!\n");
        assert_eq!(sub.try_recv().expect("no error"), None);
        ring.push(Numbered(6, "alice: one\n"));
        ring.push(Numbered(7, "alice: look\n"));
        ring.push(Numbered(8, "carol: later\n"));
        assert_eq!(next(&mut sub).await, "alice: one\n");
        assert_eq!(next(&mut sub).await, "alice: look\n");
        assert_eq!(next(&mut sub).await, psst);
        assert_eq!(next(&mut sub).await, "carol: later\n");

        // Said after a line this server never reads (the broker went away):
        // it goes once it has waited HOLD_LIMIT, not before.
        assert!(mailbox.put(100, psst.clone()));
        let started = Instant::now();
        assert_eq!(next(&mut sub).await, psst);
        assert_eq!(started.elapsed(), HOLD_LIMIT);

        // Lines from the room itself (after 0) go after the room lines
        // already waiting.
        ring.push(Numbered(9, "carol: again\n"));
        assert!(mailbox.put(0, Bytes::from_static(b"ERROR x\n")));
        assert_eq!(next(&mut sub).await, "carol: again\n");
        assert_eq!(next(&mut sub).await, "ERROR x\n");

        // A closed mailbox ends the subscription.
        drop(mailbox);
        assert_eq!(sub.recv().await, Err(RecvError::Closed));
    }

    #[tokio::test]
    async fn the_line_a_room_closes_the_mailbox_behind_is_the_last() {
        let ring = Backlog::new(backlog::MIN_BYTES);
        let (mailbox, inbox) = mailbox();
        let mut sub = Subscriber::new(ring.subscribe(), inbox, 1, Arc::from([]));
        ring.push(Numbered(1, "carol joined!\n"));
        assert_eq!(next(&mut sub).await, "carol joined!\n");
        // Put out: told why, the mailbox closing behind it in the same
        // step; the room's line about it comes a moment later, and is not
        // hers to read, however soon she took the first.
        mailbox.put_last(0, Bytes::from_static(b"ERROR kicked by alice\n"));
        assert_eq!(next(&mut sub).await, "ERROR kicked by alice\n");
        ring.push(Numbered(2, "carol was kicked by alice\n"));
        assert_eq!(sub.try_recv(), Ok(None));
        assert_eq!(sub.recv().await, Err(RecvError::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn history_comes_after_the_join_one_line_at_a_time_and_only_for_so_long() {
        let ring = Backlog::new(backlog::MIN_BYTES);
        let (_mailbox, inbox) = mailbox();
        let history: Arc<[Bytes]> = Arc::from([
            Bytes::from_static(b"[history] a: 1\n"),
            Bytes::from_static(b"[history] a: 2\n"),
        ]);
        let mut sub = Subscriber::new(ring.subscribe(), inbox, 0, history);
        ring.push(Bytes::from_static(b"bob joined!\n"));
        ring.push(Bytes::from_static(b"a: 3\n"));
        assert_eq!(next(&mut sub).await, "bob joined!\n");
        assert_eq!(
            sub.try_recv(),
            Ok(Some(Bytes::from_static(b"[history] a: 1\n")))
        );
        // A newcomer that does not take the rest in time is lagging.
        assert!(!sub.is_lagging());
        tokio::time::advance(HISTORY_TIME + Duration::from_secs(1)).await;
        assert!(sub.is_lagging());
        assert_eq!(next(&mut sub).await, "[history] a: 2\n");
        assert!(!sub.is_lagging());
        assert_eq!(next(&mut sub).await, "a: 3\n");
    }
}
