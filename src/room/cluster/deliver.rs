//! Reading the room's stream: every line in the global order, into this
//! node's ring; and a newcomer's history, read back from the stream.

use super::beside::{Order, is_channel_token};
use super::record::{Record, Rejected, line_number};
use super::{REQUEST_TIMEOUT, Shared, StoredLine};
use crate::protocol;
use crate::protocol::channels::LOBBY;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{sleep, timeout};

/// How many lines back a newcomer's history is looked for, per line wanted
/// (joins and leaves are in the stream too, and are not history).
const HISTORY_SCAN: u64 = 4;

/// Reads the room's stream in order and hands each line to this node's
/// participants, and to its store if it keeps one. Resumes after the last
/// sequence it read whenever the consumer has to be made again, and never
/// reads a sequence twice.
///
/// It starts after `last`; the lines up to `live_from` (those a node with
/// a store catches up on, said while it was away) go to the store only.
pub(super) async fn deliver(
    shared: Arc<Shared>,
    stream: stream::Stream,
    last: u64,
    live_from: u64,
) {
    let mut backoff = Duration::from_millis(100);
    let mut read = Reading {
        last,
        live_from,
        skipped: false,
    };
    let mut restored = shared.link.restored.subscribe();
    loop {
        // Every subject of the stream: the lobby's, its channels' and the
        // orders'.
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: read.last + 1,
                },
                ..Default::default()
            })
            .await;
        let messages = match consumer {
            Ok(consumer) => consumer.messages().await,
            Err(e) => {
                tracing::debug!("cannot read the room's stream yet: {e}");
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::debug!("cannot read the room's stream yet: {e}");
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        restored.mark_unchanged();
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = restored.changed() => break,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    // Start again from the last line delivered.
                    tracing::debug!("reading the room's stream: {e}");
                    break;
                }
                None => break,
            };
            let more = shared.take(&message, &mut read).await;
            if let Some(recording) = &shared.recording {
                recording.read_through(read.last);
            }
            if !more {
                return;
            }
        }
        if shared.state().closed {
            return;
        }
        sleep(backoff).await;
    }
}

/// The sequence a participant's ring numbers a line of the stream's
/// message `seq` with: the message's own for its last line, the one before
/// for the lines before it. A private line waits until its recipient has
/// read the sequence its sender's node knew of (see
/// [`Subscriber`](crate::room::Subscriber)): it must not slip in between
/// the lines of one message. And a newcomer, who sees what comes after its
/// own `joined!` (sequence J), sees every line of a message after J, since
/// J is at most one before it.
fn line_seq(seq: u64, last_of_message: bool) -> u64 {
    if last_of_message {
        seq
    } else {
        seq.saturating_sub(1)
    }
}

/// A message of the room's stream under another subject than the lobby's.
struct Beside<'a> {
    subject: &'a str,
    seq: u64,
    /// When JetStream stored it.
    time: time::OffsetDateTime,
    payload: &'a [u8],
}

/// Where [`deliver`] is in the stream.
struct Reading {
    /// The last sequence read.
    last: u64,
    /// Up to here, lines go to the store only (see [`deliver`]).
    live_from: u64,
    /// Whether a sequence the stream no longer keeps was skipped: said once.
    skipped: bool,
}

impl Shared {
    /// Takes one message of the room's stream: to the store, if this node
    /// keeps one, and to the ring; false once the room is closed.
    async fn take(self: &Arc<Self>, message: &jetstream::Message, read: &mut Reading) -> bool {
        let Ok(info) = message.info() else {
            return true;
        };
        let seq = info.stream_sequence;
        if seq <= read.last {
            return true;
        }
        if seq > read.last + 1
            && self.recording.is_some()
            && !std::mem::replace(&mut read.skipped, true)
        {
            tracing::warn!(
                from = read.last + 1,
                to = seq - 1,
                "the room's stream no longer keeps these lines (its retention): \
                 this node's store goes without them"
            );
        }
        read.last = seq;
        // A node that keeps a store reads on after its farewell, into the
        // store only, until it stops: its participants' `left!` lines come
        // back after it (see `ClusterRoom::finish`).
        if message.subject.as_str() != self.subject {
            let closed = self.state().closed;
            let live = seq > read.live_from && !closed;
            let beside = Beside {
                subject: message.subject.as_str(),
                seq,
                time: info.published,
                payload: &message.payload,
            };
            self.take_beside(beside, live).await;
            return !closed || self.recording.is_some();
        }
        self.known.fetch_max(seq, Ordering::AcqRel);
        let records = match Record::decode_message(&message.payload, self.max_line) {
            Ok(records) => records,
            Err(why) => {
                self.reject(why);
                return true;
            }
        };
        for record in &records {
            if let Record::Topic { text, .. } = record {
                self.channels.set_topic("", text);
            }
        }
        // Not waiting for the commit: the stream holds the line already,
        // and a node that stops before committing it reads it again.
        if let Some(recording) = &self.recording {
            recording.keep(seq, info.published, LOBBY, &records).await;
        }
        if seq <= read.live_from {
            return true;
        }
        // Formatted here, into lines of their own (which keep nothing of
        // the client's read buffer alive).
        let last = records.len() - 1;
        let lines: Vec<StoredLine> = records
            .iter()
            .enumerate()
            .filter(|(_, record)| record.is_shown())
            .map(|(i, record)| StoredLine {
                seq: line_seq(seq, i == last),
                bytes: record.line(),
            })
            .collect();
        let state = self.state();
        if state.closed {
            return self.recording.is_some();
        }
        // No receivers is fine: nobody here to tell.
        for line in lines {
            state.lines.push(line);
        }
        true
    }

    /// Takes a message of a channel's subject, or an order: a channel's
    /// record to this node's store (if it keeps one) and, if `live`, to
    /// the channel's ring; an order, if `live`, applied.
    async fn take_beside(self: &Arc<Self>, beside: Beside<'_>, live: bool) {
        if beside.subject == self.orders_subject {
            if live {
                match Order::decode(beside.payload) {
                    Ok(order) => self.take_order(order),
                    Err(why) => self.reject(why),
                }
            }
            return;
        }
        let token = beside.subject.strip_prefix(self.channel_subjects.as_str());
        let Some(token) = token.filter(|token| is_channel_token(token)) else {
            return self.reject(Rejected::Channel);
        };
        let record = match Record::decode(beside.payload, self.max_line) {
            Ok(record) => record,
            Err(why) => return self.reject(why),
        };
        // As the lobby's: not waiting for the commit.
        if let Some(recording) = &self.recording {
            let name = self.stored_name(token, &record).await;
            let records = std::slice::from_ref(&record);
            recording
                .keep(beside.seq, beside.time, &name, records)
                .await;
        }
        if live {
            self.take_channel_record(token, beside.seq, &record);
        }
    }

    /// The last [`Shared::history`] public lines before sequence `before`,
    /// marked as history, oldest first, read from the stream (within a
    /// bounded look back and time; fewer, or none, otherwise); and the
    /// oldest one's number in a node's store ([`line_number`]; that of
    /// `before`'s first line if none), where its `/history` goes on.
    pub(super) async fn read_history(&self, before: u64) -> (Vec<Bytes>, u64) {
        let wanted = self.history;
        let none = line_number(before, 0);
        if wanted == 0 || before <= 1 {
            return (Vec::new(), none);
        }
        let from = before
            .saturating_sub(HISTORY_SCAN.saturating_mul(wanted as u64))
            .max(1);
        let read = async {
            let mut kept = VecDeque::with_capacity(wanted);
            let consumer = self
                .lines_stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: self.subject.clone(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            while let Some(message) = messages.next().await {
                let message = message?;
                let seq = message.info().map_err(anyhow::Error::msg)?.stream_sequence;
                if seq >= before {
                    break;
                }
                // What does not decode was counted once already, when the
                // stream was read live.
                let records = Record::decode_message(&message.payload, self.max_line);
                for (i, record) in records.iter().flatten().enumerate() {
                    if !record.is_public() {
                        continue;
                    }
                    if kept.len() == wanted {
                        kept.pop_front();
                    }
                    let line = protocol::history_line(&record.line());
                    kept.push_back((line_number(seq, i), line));
                }
            }
            anyhow::Ok(kept)
        };
        match timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(kept)) => {
                let oldest = kept.front().map_or(none, |(n, _)| *n);
                (kept.into_iter().map(|(_, line)| line).collect(), oldest)
            }
            Ok(Err(e)) => {
                tracing::warn!("no history for a newcomer: {e:#}");
                (Vec::new(), none)
            }
            Err(_) => {
                tracing::warn!("no history for a newcomer: timed out");
                (Vec::new(), none)
            }
        }
    }
}
