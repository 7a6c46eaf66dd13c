//! Lines for one participant alone in a cluster room (`/msg`, and the
//! node's own `ERROR` lines), and the participant's subscription, which
//! reads them along with the room's lines.
//!
//! A private line stands outside the room's one order, yet it must never
//! overtake the public lines said before it: Alice's `look at this` and
//! then her `/msg bob what do you think?` reach Bob in that order, on
//! whichever nodes they are. The public line goes through the stream and
//! comes back to each node a little later; the private line goes straight
//! to its recipient's node. So each private line carries the last sequence
//! of the room its sender's node knew of when it was sent (its sender's own
//! lines before it are stored by then: it waits in the sender's queue
//! behind them), and the recipient's subscription holds it until it has
//! read the room up to that sequence.
//!
//! Lines to another node's participant go as NATS requests, and the
//! recipient's node answers whether it took the line, so that a sender is
//! told when its message was not delivered (the recipient is not reading,
//! or has gone), as on a single server. A sender's later lines wait in its
//! queue for that answer (a round trip to the other node, at most
//! `REQUEST_TIMEOUT`), so that they too keep their order.

use super::{Line, Shared};
use crate::protocol;
use crate::room::WhisperError;
use crate::room::backlog;
use crate::room::{RecvError, Subscription};
use crate::sync::lock;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

/// Lines for one participant alone waiting at once; beyond, its sender is
/// told the line was not delivered (error lines are dropped).
pub(super) const PRIVATE_QUEUE: usize = 64;

/// The longest a private line waits for the room lines said before it. It
/// waits only while the recipient's node has not yet read them from the
/// stream (a few milliseconds, or an outage): past this it is delivered
/// anyway, rather than held for as long as NATS is away.
const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// What the recipient's node answers a private line from another node.
const TAKEN: &[u8] = b"ok";
const NOT_READING: &[u8] = b"busy";
const NOT_HERE: &[u8] = b"gone";

/// A line for one participant, to be read once its subscription has read
/// the room up to `after`.
#[derive(Debug)]
pub(super) struct Private {
    pub(super) after: u64,
    pub(super) line: Bytes,
}

impl Shared {
    /// Delivers `line`, a private message from this node's participant
    /// `from` (a nickname key) to `to`, on whichever node `to` is; tells
    /// `from` if it was not delivered. Runs in `from`'s queue, after its
    /// earlier lines are stored.
    pub(super) async fn send_private(&self, from: &str, to: &str, line: Bytes) {
        let after = self.known.load(Ordering::Acquire);
        let key = protocol::nick_key(to);
        let local = self.state().members.get(&key).map(|member| {
            if member.tell_after(after, line.clone()) {
                None
            } else {
                Some(WhisperError::Full(member.nick.clone()))
            }
        });
        let failed = match local {
            Some(outcome) => outcome,
            None => self.send_private_remote(after, &key, to, line).await,
        };
        if let Some(why) = failed
            && let Some(member) = self.state().members.get(from)
        {
            member.tell(protocol::error_line(why.to_string()));
        }
    }

    /// Sends a private line to the node holding `key`; what went wrong, if
    /// anything.
    async fn send_private_remote(
        &self,
        after: u64,
        key: &str,
        to: &str,
        line: Bytes,
    ) -> Option<WhisperError> {
        let node = lock(&self.directory)
            .get(key)
            .map(|(_, holder)| holder.node.clone());
        let Some(node) = node else {
            return Some(WhisperError::NoSuchNick(to.to_owned()));
        };
        if self.connected_since().is_none() {
            return Some(WhisperError::Unavailable);
        }
        let subject = format!("{}.{node}", self.private_prefix);
        let request = self.client.request(subject, encode(after, key, &line));
        match timeout(super::REQUEST_TIMEOUT, request).await {
            Ok(Ok(answer)) => match &answer.payload[..] {
                NOT_READING => Some(WhisperError::Full(to.to_owned())),
                NOT_HERE => Some(WhisperError::NoSuchNick(to.to_owned())),
                _ => None,
            },
            Ok(Err(e)) => {
                tracing::debug!("a private line was not delivered: {e}");
                Some(WhisperError::Unavailable)
            }
            Err(_) => {
                tracing::debug!("a private line was not delivered: no answer in time");
                Some(WhisperError::Unavailable)
            }
        }
    }
}

/// A private line on its way between nodes: `<after>\n<key>\n<line>`.
fn encode(after: u64, key: &str, line: &[u8]) -> Bytes {
    let mut payload = Vec::with_capacity(24 + key.len() + line.len());
    payload.extend_from_slice(after.to_string().as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(key.as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(line);
    payload.into()
}

fn decode(payload: &Bytes) -> Option<(u64, &str, Bytes)> {
    let first = payload.iter().position(|&b| b == b'\n')?;
    let after = std::str::from_utf8(&payload[..first]).ok()?.parse().ok()?;
    let rest = &payload[first + 1..];
    let second = rest.iter().position(|&b| b == b'\n')?;
    let key = std::str::from_utf8(&rest[..second]).ok()?;
    let line = payload.slice(first + 1 + second + 1..);
    Some((after, key, line))
}

/// Hands private lines from other nodes to this node's participants, and
/// answers whether each was taken.
pub(super) async fn deliver_private(shared: Arc<Shared>, mut inbox: async_nats::Subscriber) {
    while let Some(message) = inbox.next().await {
        let Some((after, key, line)) = decode(&message.payload) else {
            continue;
        };
        let answer = match shared.state().members.get(key) {
            Some(member) if member.tell_after(after, line) => TAKEN,
            Some(_) => NOT_READING,
            None => NOT_HERE,
        };
        if let Some(reply) = message.reply
            && let Err(e) = shared
                .client
                .publish(reply, Bytes::from_static(answer))
                .await
        {
            tracing::debug!("cannot answer a private line: {e}");
        }
    }
}

/// A participant's cursor in its node's ring, from its own `joined!` line
/// on, and the lines meant for it alone.
pub struct ClusterSubscription {
    pub(super) receiver: backlog::Reader<Line>,
    pub(super) private: mpsc::Receiver<Private>,
    /// The sequence of this participant's `joined!` line.
    pub(super) start: u64,
    /// The last sequence read from the ring.
    pub(super) read_up_to: u64,
    /// A private line waiting for the room lines said before it, and since
    /// when.
    pub(super) held: Option<(Private, Instant)>,
    /// The room's last public lines before the join, oldest first.
    pub(super) history: Vec<Bytes>,
}

impl ClusterSubscription {
    pub(super) fn new(
        receiver: backlog::Reader<Line>,
        private: mpsc::Receiver<Private>,
        start: u64,
        history: Vec<Bytes>,
    ) -> Self {
        ClusterSubscription {
            receiver,
            private,
            start,
            read_up_to: start.saturating_sub(1),
            held: None,
            history,
        }
    }

    /// A room line read: counts it, and passes it on unless it came before
    /// this participant's `joined!`.
    fn read(&mut self, line: Line) -> Option<Bytes> {
        self.read_up_to = self.read_up_to.max(line.seq);
        (line.seq >= self.start).then_some(line.bytes)
    }

    /// The held private line, if what was said before it has been read.
    fn release(&mut self) -> Option<Bytes> {
        match &self.held {
            Some((private, _)) if private.after <= self.read_up_to => {
                self.held.take().map(|(private, _)| private.line)
            }
            _ => None,
        }
    }

    /// A private line just taken from the queue: it goes now, or is held.
    fn arrived(&mut self, private: Private) -> Option<Bytes> {
        if private.after <= self.read_up_to {
            return Some(private.line);
        }
        self.held = Some((private, Instant::now()));
        None
    }
}

fn recv_error(e: backlog::RecvError) -> RecvError {
    match e {
        backlog::RecvError::Lagged(n) => RecvError::Lagged(n),
        backlog::RecvError::Closed => RecvError::Closed,
    }
}

impl Subscription for ClusterSubscription {
    fn take_history(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.history)
            .iter()
            .map(|line| protocol::history_line(line))
            .collect()
    }

    async fn recv(&mut self) -> Result<Bytes, RecvError> {
        loop {
            if let Some(line) = self.release() {
                return Ok(line);
            }
            let held_until = self.held.as_ref().map(|(_, since)| *since + HOLD_LIMIT);
            // Room lines first, as in the single-server room: a private
            // line goes once the lines waiting before it are out.
            tokio::select! {
                biased;
                line = self.receiver.recv() => {
                    if let Some(line) = self.read(line.map_err(recv_error)?) {
                        return Ok(line);
                    }
                }
                private = self.private.recv(), if self.held.is_none() => match private {
                    Some(private) => {
                        if let Some(line) = self.arrived(private) {
                            return Ok(line);
                        }
                    }
                    // Removed from the room by it (see `Shared::kick`).
                    None => return Err(RecvError::Closed),
                },
                _ = sleep_until(held_until.unwrap_or_else(Instant::now)), if held_until.is_some() => {
                    if let Some((private, _)) = self.held.take() {
                        return Ok(private.line);
                    }
                }
            }
        }
    }

    fn try_recv(&mut self) -> Result<Option<Bytes>, RecvError> {
        loop {
            if let Some(line) = self.release() {
                return Ok(Some(line));
            }
            match self.receiver.try_recv().map_err(recv_error)? {
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
        match self.private.try_recv() {
            Ok(private) => Ok(self.arrived(private)),
            // Closed: said by the next `recv`, once what is queued is out.
            Err(mpsc::error::TryRecvError::Disconnected | mpsc::error::TryRecvError::Empty) => {
                Ok(None)
            }
        }
    }

    fn is_lagging(&self) -> bool {
        self.receiver.is_lagging()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::backlog::Backlog;

    fn line(seq: u64, text: &'static str) -> Line {
        Line {
            seq,
            bytes: Bytes::from_static(text.as_bytes()),
        }
    }

    async fn next(sub: &mut ClusterSubscription) -> Bytes {
        timeout(Duration::from_secs(60), sub.recv())
            .await
            .expect("a line in time")
            .expect("a line")
    }

    #[tokio::test(start_paused = true)]
    async fn a_private_line_waits_for_the_room_lines_said_before_it_and_no_longer() {
        let ring = Backlog::new(backlog::MIN_BYTES);
        let (private, inbox) = mpsc::channel(PRIVATE_QUEUE);
        // Joined at sequence 5.
        let mut sub = ClusterSubscription::new(ring.subscribe(), inbox, 5, Vec::new());
        ring.push(line(5, "bob joined!\n"));
        let psst = |after| Private {
            after,
            line: Bytes::from_static(b"[private] alice -> bob: psst\n"),
        };
        // Said after line 7, which this node has not read yet: held.
        private.try_send(psst(7)).expect("queued");
        assert_eq!(next(&mut sub).await, "bob joined!\n");
        assert_eq!(sub.try_recv().expect("no error"), None);
        ring.push(line(6, "alice: one\n"));
        ring.push(line(7, "alice: look\n"));
        ring.push(line(8, "carol: later\n"));
        assert_eq!(next(&mut sub).await, "alice: one\n");
        assert_eq!(next(&mut sub).await, "alice: look\n");
        assert_eq!(next(&mut sub).await, "[private] alice -> bob: psst\n");
        assert_eq!(next(&mut sub).await, "carol: later\n");

        // Said after a line this node never reads (NATS went away): it
        // goes once it has waited HOLD_LIMIT, not before.
        private.try_send(psst(100)).expect("queued");
        let started = Instant::now();
        assert_eq!(next(&mut sub).await, "[private] alice -> bob: psst\n");
        assert_eq!(started.elapsed(), HOLD_LIMIT);

        // Lines from the node itself (after 0) go after the room lines
        // already waiting.
        ring.push(line(9, "carol: again\n"));
        private
            .try_send(Private {
                after: 0,
                line: Bytes::from_static(b"ERROR x\n"),
            })
            .expect("queued");
        assert_eq!(next(&mut sub).await, "carol: again\n");
        assert_eq!(next(&mut sub).await, "ERROR x\n");
    }

    #[test]
    fn a_private_line_crosses_between_nodes_intact() {
        let line = b"[private] alice -> bob: a\nb";
        let payload = encode(42, "bob", line);
        let (after, key, decoded) = decode(&payload).expect("decodes");
        assert_eq!((after, key, &decoded[..]), (42, "bob", &line[..]));
        assert!(decode(&Bytes::from_static(b"x\nbob\nline")).is_none());
        assert!(decode(&Bytes::from_static(b"7")).is_none());
    }
}
