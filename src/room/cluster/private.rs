//! Private lines (`/msg`) in a cluster room, to a participant on any node.
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
//! read the room up to that sequence (see
//! [`Subscriber`](crate::room::Subscriber)).
//!
//! Lines to another node's participant go as NATS requests, and the
//! recipient's node answers whether it took the line, so that a sender is
//! told when its message was not delivered (the recipient is not reading,
//! or has gone), as on a single server. A sender's later lines wait in its
//! queue for that answer (a round trip to the other node, at most
//! `REQUEST_TIMEOUT`), so that they too keep their order.

use super::{REQUEST_TIMEOUT, Shared};
use crate::protocol;
use crate::room::WhisperError;
use crate::sync::lock;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::timeout;

/// What the recipient's node answers a private line from another node.
const TAKEN: &[u8] = b"ok";
const NOT_READING: &[u8] = b"busy";
const NOT_HERE: &[u8] = b"gone";

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
            .map(|named| named.value.node.clone());
        let Some(node) = node else {
            return Some(WhisperError::NoSuchNick(to.to_owned()));
        };
        if self.connected_since().is_none() {
            return Some(WhisperError::Unavailable);
        }
        let subject = format!("{}.{node}", self.private_prefix);
        let request = self.client.request(subject, encode(after, key, &line));
        match timeout(REQUEST_TIMEOUT, request).await {
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

#[cfg(test)]
mod tests {
    use super::*;

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
