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

use super::beside::KickRecord;
use super::record::PrivateRecord;
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
    /// Delivers `record`, a private message from this node's participant
    /// `from` (a nickname key) to `to` (as its owner spells it), on
    /// whichever node `to` is; tells `from` if it was not delivered. Runs in
    /// `from`'s queue, after its earlier lines are stored.
    pub(super) async fn send_private(&self, from: &str, to: &str, mut record: PrivateRecord) {
        record.after = self.known.load(Ordering::Acquire);
        let local = self.state().members.get(&record.to).map(|member| {
            if member.tell_after(record.after, record.line(&member.nick)) {
                None
            } else {
                Some(WhisperError::Full(member.nick.clone()))
            }
        });
        let failed = match local {
            Some(outcome) => outcome,
            None => self.send_private_remote(&record, to).await,
        };
        if let Some(why) = failed
            && let Some(member) = self.state().members.get(from)
        {
            member.tell(protocol::error_line(why.to_string()));
        }
    }

    /// Sends a private record to the node holding its recipient; what went
    /// wrong, if anything.
    async fn send_private_remote(&self, record: &PrivateRecord, to: &str) -> Option<WhisperError> {
        let node = lock(&self.directory)
            .get(&record.to)
            .map(|named| named.value.node.clone());
        let Some(node) = node else {
            return Some(WhisperError::NoSuchNick(to.to_owned()));
        };
        if self.connected_since().is_none() {
            return Some(WhisperError::Unavailable);
        }
        let subject = format!("{}.{node}", self.private_prefix);
        let request = self.client.request(subject, record.encode());
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

    /// The sequence a private line from another node may wait for: what it
    /// says, but never beyond what the room's stream holds, so that a
    /// forged one cannot hold real private lines back.
    async fn bounded_after(&self, after: u64) -> u64 {
        if after <= self.known.load(Ordering::Acquire) {
            return after;
        }
        let mut stream = self.lines_stream.clone();
        match timeout(REQUEST_TIMEOUT, stream.info()).await {
            Ok(Ok(info)) => after.min(info.state.last_sequence),
            _ => self.known.load(Ordering::Acquire),
        }
    }
}

/// Hands private lines from other nodes to this node's participants, and
/// answers whether each was taken.
pub(super) async fn deliver_private(shared: Arc<Shared>, mut inbox: async_nats::Subscriber) {
    while let Some(message) = inbox.next().await {
        let answer = match PrivateRecord::decode(&message.payload, shared.max_line) {
            Ok(record) => {
                let after = shared.bounded_after(record.after).await;
                match shared.state().members.get(&record.to) {
                    Some(member) if member.tell_after(after, record.line(&member.nick)) => TAKEN,
                    Some(_) => NOT_READING,
                    None => NOT_HERE,
                }
            }
            // An operator's kick from another node comes the same way.
            Err(why) => match KickRecord::decode(&message.payload, shared.max_line) {
                Ok(kick) => shared.kicked_from_elsewhere(&kick),
                Err(_) => {
                    shared.reject(why);
                    continue;
                }
            },
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
