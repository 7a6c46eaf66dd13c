//! Publishing this node's lines to the room's stream: one queue for the
//! node, one task per sender with lines on their way (those waiting behind
//! the one in flight go out together, in one message), a bound on the
//! publishes in flight, and publishing again (under the same message id,
//! so a line is stored once) until the stream acknowledges.

use super::record::{BYTES_PER_RECORD, LINES_PER_RECORD, PrivateRecord, Record, batch};
use super::{REQUEST_TIMEOUT, Shared};
use crate::sync::lock;
use anyhow::{Result, bail};
use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, timeout};

/// How long a line whose acknowledgement did not come is published again
/// (with the same `Nats-Msg-Id`, so it is stored once) before its sender is
/// told it was not sent. Well within the stream's two-minute duplicate
/// window.
pub(super) const RETRY_FOR: Duration = Duration::from_secs(30);

/// How long a newcomer waits for its `joined!` line to be stored.
pub(super) const JOIN_RETRY_FOR: Duration = Duration::from_secs(5);

/// Participants' lines accepted on one node and not yet stored, wherever
/// they wait, beyond which a line is refused.
pub(super) const OUTGOING_QUEUE: usize = 65_536;

/// Publishes awaiting their acknowledgement on one node at once.
pub(super) const MAX_IN_FLIGHT: usize = 4096;

/// Lines one participant may have waiting behind its first line in flight
/// (whether they wait in its queue or go out in the same message);
/// beyond that its lines are refused. The rate limit keeps a participant
/// far below it.
const SENDER_QUEUE: usize = 256;

pub(super) enum Queued {
    /// A record for everybody (encoded); `from` is the sender's nickname
    /// key, if a participant of this node said it.
    Line {
        payload: Bytes,
        from: Option<String>,
    },
    /// A participant of this node left; `payload` tells the others.
    Leave {
        key: String,
        nick: String,
        revision: u64,
        payload: Bytes,
    },
    /// A private message from `from` (a nickname key of this node) to `to`
    /// (as its owner spells it): it goes after `from`'s earlier lines are
    /// stored.
    Private {
        from: String,
        to: String,
        record: PrivateRecord,
    },
    /// Answers once everything queued before it is stored (or given up).
    Flush(oneshot::Sender<()>),
}

/// One sender's work waiting for its task (see [`Shared::senders`]).
#[derive(Default)]
pub(super) struct SenderQueue {
    /// In the order the sender did it.
    waiting: VecDeque<SenderWork>,
    /// Lines taken from `waiting` into the message in flight, beyond its
    /// first: they still count against [`SENDER_QUEUE`].
    taken: usize,
}

/// What a sender's task does next, in the order the sender did it.
pub(super) enum SenderWork {
    Line {
        payload: Bytes,
        id: String,
    },
    /// A private message, sent once the lines before it are stored.
    Private {
        to: String,
        record: PrivateRecord,
    },
    /// An operator's order (`/mute`, `/unmute`), published to the orders'
    /// subject after the ones it gave before: every node applies them in
    /// the order given.
    Order {
        payload: Bytes,
        id: String,
    },
    /// An operator's `/topic`, to its channel's subject (or the lobby's),
    /// then to the bucket (see `topics`).
    Topic {
        subject: String,
        token: String,
        record: Record,
        id: String,
    },
    /// The sender left after its lines: release its nickname, and say so.
    Leave {
        nick: String,
        revision: u64,
        payload: Bytes,
    },
}

/// A record as published, under its message id.
fn publish_message(payload: &Bytes, id: &str) -> jetstream::message::PublishMessage {
    jetstream::message::PublishMessage::build()
        .payload(payload.clone())
        .message_id(id)
}

impl Shared {
    /// On a stop, once every session has left: waits until this node's
    /// lines are stored in the room's stream and, with `--data`, in its
    /// store ([`Shared::settle_store`]), for as long as one request may
    /// take.
    pub(super) async fn store_last_lines(&self) {
        let (done, flushed) = oneshot::channel();
        let stored = async {
            if self.queue.send(Queued::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
            self.settle_store().await;
        };
        if timeout(REQUEST_TIMEOUT, stored).await.is_err() {
            tracing::warn!(
                "this node's last lines are not all stored yet: the room's stream keeps \
                 those it took, and this node's store reads them when it starts again"
            );
        }
    }

    pub(super) fn next_message_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}.{}.{n}", self.node, self.boot)
    }

    /// Publishes `payload` under `id` until it is stored (or found already
    /// stored), for at most `patience`; returns its sequence.
    pub(super) async fn publish_stored(
        &self,
        payload: &Bytes,
        id: &str,
        patience: Duration,
    ) -> Result<u64> {
        self.publish_stored_to(&self.subject, payload, id, patience)
            .await
    }

    /// [`Shared::publish_stored`] to `subject`: the lobby's, a channel's or
    /// the orders'. Only the lobby's sequences are what a private line
    /// waits for (see `private`).
    pub(super) async fn publish_stored_to(
        &self,
        subject: &str,
        payload: &Bytes,
        id: &str,
        patience: Duration,
    ) -> Result<u64> {
        let give_up = Instant::now() + patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.connected_since().is_some() {
                let publish = publish_message(payload, id);
                match self.js.send_publish(subject.to_owned(), publish).await {
                    Ok(ack) => match ack.await {
                        Ok(ack) if subject != self.subject => return Ok(ack.sequence),
                        Ok(ack) => {
                            self.known.fetch_max(ack.sequence, Ordering::AcqRel);
                            return Ok(ack.sequence);
                        }
                        Err(e) => tracing::debug!("publish not acknowledged: {e}"),
                    },
                    Err(e) => tracing::debug!("publish failed: {e}"),
                }
            }
            if Instant::now() + backoff > give_up {
                bail!("not stored within {patience:?}");
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Sends `line` on its way without waiting for it to be stored; a task
    /// waits for the acknowledgement, publishes again if it does not come,
    /// and tells the sender (if any) if the line could not be stored.
    /// A participant's line goes to its sender's task (see
    /// [`Shared::senders`]).
    pub(super) async fn send_line(
        self: &Arc<Self>,
        payload: Bytes,
        id: String,
        from: Option<String>,
    ) {
        if let Some(sender) = from {
            return self.queue_for_sender(sender, SenderWork::Line { payload, id });
        }
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = self
            .js
            .send_publish(self.subject.clone(), publish_message(&payload, &id))
            .await;
        let shared = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(ack) = first
                && let Ok(ack) = ack.await
            {
                shared.known.fetch_max(ack.sequence, Ordering::AcqRel);
                return;
            }
            if let Err(e) = shared.publish_stored(&payload, &id, RETRY_FOR).await {
                tracing::warn!("a line could not be stored: {e}");
            }
        });
    }

    /// Hands `work` to `sender`'s task, starting one if it has none. A line
    /// beyond what a sender may have waiting is refused (the sender is told).
    pub(super) fn queue_for_sender(self: &Arc<Self>, sender: String, work: SenderWork) {
        let mut senders = lock(&self.senders);
        if let Some(queue) = senders.get_mut(&sender) {
            let outstanding = queue.waiting.len() + queue.taken;
            // An operator's order or topic, or a leave, is never refused:
            // the operator or the leaver was already answered.
            let bounded = matches!(work, SenderWork::Line { .. } | SenderWork::Private { .. });
            if bounded && outstanding >= SENDER_QUEUE {
                drop(senders);
                if matches!(work, SenderWork::Line { .. }) {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                }
                return self.refuse_because(&sender, "too many of your lines are waiting");
            }
            queue.waiting.push_back(work);
            return;
        }
        senders.insert(sender.clone(), SenderQueue::default());
        drop(senders);
        self.sending.send_modify(|count| *count += 1);
        tokio::spawn(publish_for_sender(self.clone(), sender, work));
    }

    /// `first`, with the lines `sender` has waiting right behind it, as one
    /// message of the stream (see [`batch`]: at most [`LINES_PER_RECORD`]
    /// lines and [`BYTES_PER_RECORD`] bytes), and how many lines it holds.
    /// They keep their order, and are stored together or not at all.
    fn with_lines_waiting(&self, sender: &str, first: Bytes) -> (Bytes, usize) {
        let mut records = vec![first];
        let mut bytes = records[0].len();
        let mut senders = lock(&self.senders);
        let Some(queue) = senders.get_mut(sender) else {
            return (records.swap_remove(0), 1);
        };
        while records.len() < LINES_PER_RECORD {
            match queue.waiting.front() {
                Some(SenderWork::Line { payload, .. })
                    if bytes + payload.len() + 2 <= BYTES_PER_RECORD =>
                {
                    bytes += payload.len() + 1;
                    if let Some(SenderWork::Line { payload, .. }) = queue.waiting.pop_front() {
                        records.push(payload);
                    }
                }
                _ => break,
            }
        }
        queue.taken = records.len() - 1;
        drop(senders);
        (batch(&records), records.len())
    }

    /// Deletes the nickname entry `key` if it is still at `revision`, and
    /// if so, announces `<nick> left!`. Whoever deletes it announces it,
    /// once: its message id is the entry's revision.
    pub(super) async fn release_nickname(
        self: &Arc<Self>,
        key: &str,
        nick: &str,
        revision: u64,
        payload: Bytes,
    ) -> bool {
        match timeout(
            REQUEST_TIMEOUT,
            self.nicks.delete_expect_revision(key, Some(revision)),
        )
        .await
        {
            Ok(Ok(())) => {
                let id = format!("left.{key}.{revision}");
                self.send_line(payload, id, None).await;
                true
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::debug!(%nick, "nickname already released elsewhere");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(%nick, "cannot release the nickname yet: {e}");
                false
            }
            Err(_) => {
                tracing::warn!(%nick, "cannot release the nickname yet: timed out");
                false
            }
        }
    }
}

/// One sender's task: publishes its lines one after another, each once
/// the previous one is stored or given up, holding one permit at a time;
/// ends when nothing waits.
async fn publish_for_sender(shared: Arc<Shared>, sender: String, first: SenderWork) {
    let mut next = Some(first);
    while let Some(work) = next.take() {
        match work {
            SenderWork::Line { payload, id } => {
                let (payload, lines) = shared.with_lines_waiting(&sender, payload);
                // The semaphore is never closed; if it were, publishing on
                // without a permit beats leaving the queue unserved.
                let permit = shared.in_flight.clone().acquire_owned().await.ok();
                if let Err(e) = shared.publish_stored(&payload, &id, RETRY_FOR).await {
                    tracing::warn!(lines, "lines could not be stored: {e}");
                    for _ in 0..lines {
                        shared.refuse(&sender);
                    }
                }
                drop(permit);
                shared.waiting.fetch_sub(lines, Ordering::AcqRel);
            }
            SenderWork::Private { to, record } => {
                shared.send_private(&sender, &to, record).await;
            }
            SenderWork::Topic {
                subject,
                token,
                record,
                id,
            } => shared.store_topic(&subject, &token, record, &id).await,
            SenderWork::Order { payload, id } => {
                let subject = shared.orders_subject.clone();
                let stored = shared.publish_stored_to(&subject, &payload, &id, RETRY_FOR);
                if let Err(e) = stored.await {
                    tracing::warn!("an operator's order could not be stored: {e}");
                }
            }
            SenderWork::Leave {
                nick,
                revision,
                payload,
            } => {
                shared
                    .release_nickname(&sender, &nick, revision, payload)
                    .await;
            }
        }
        let mut senders = lock(&shared.senders);
        next = senders.get_mut(&sender).and_then(|queue| {
            queue.taken = 0;
            queue.waiting.pop_front()
        });
        if next.is_none() {
            senders.remove(&sender);
        }
    }
    shared.sending.send_modify(|count| *count -= 1);
}

/// Publishes this node's lines in the order they were queued.
pub(super) async fn publish_queue(shared: Arc<Shared>, mut queue: mpsc::Receiver<Queued>) {
    while let Some(queued) = queue.recv().await {
        match queued {
            Queued::Line { payload, from } => {
                let id = shared.next_message_id();
                shared.send_line(payload, id, from).await;
            }
            Queued::Leave {
                key,
                nick,
                revision,
                payload,
            } => {
                if lock(&shared.senders).contains_key(&key) {
                    // Its last lines are still being published: it leaves
                    // after them, without holding up the other senders.
                    let leave = SenderWork::Leave {
                        nick,
                        revision,
                        payload,
                    };
                    shared.queue_for_sender(key, leave);
                } else {
                    shared
                        .release_nickname(&key, &nick, revision, payload)
                        .await;
                }
            }
            Queued::Private { from, to, record } => {
                shared.queue_for_sender(from, SenderWork::Private { to, record });
            }
            Queued::Flush(done) => {
                let mut sending = shared.sending.subscribe();
                let _ = sending.wait_for(|count| *count == 0).await;
                let all = MAX_IN_FLIGHT as u32;
                if let Ok(permits) = shared.in_flight.acquire_many(all).await {
                    drop(permits);
                }
                let _ = done.send(());
            }
        }
    }
}
