//! Reading the room's stream: every line in the global order, into this
//! node's ring; and a newcomer's history, read back from the stream.

use super::record::Record;
use super::{REQUEST_TIMEOUT, Shared, StoredLine};
use crate::protocol;
use async_nats::jetstream::{consumer, stream};
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
/// participants. Resumes after the last sequence it delivered whenever the
/// consumer has to be made again, and never delivers a sequence twice.
pub(super) async fn deliver(shared: Arc<Shared>, stream: stream::Stream, mut last: u64) {
    let mut backoff = Duration::from_millis(100);
    let mut restored = shared.link.restored.subscribe();
    loop {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: shared.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
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
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            if seq <= last {
                continue;
            }
            last = seq;
            shared.known.fetch_max(seq, Ordering::AcqRel);
            // Formatted here, into a line of its own (which keeps nothing
            // of the client's read buffer alive).
            let bytes = match Record::decode(&message.payload, shared.max_line) {
                Ok(record) => record.line(),
                Err(why) => {
                    shared.reject(why);
                    continue;
                }
            };
            let state = shared.state();
            if state.closed {
                return;
            }
            // No receivers is fine: nobody here to tell.
            state.lines.push(StoredLine { seq, bytes });
        }
        if shared.state().closed {
            return;
        }
        sleep(backoff).await;
    }
}

impl Shared {
    /// The last [`Shared::history`] public lines before sequence `before`,
    /// marked as history, oldest first, read from the stream (within a bounded look back and
    /// time; fewer, or none, otherwise).
    pub(super) async fn read_history(&self, before: u64) -> Arc<[Bytes]> {
        let wanted = self.history;
        if wanted == 0 || before <= 1 {
            return Arc::from([]);
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
                match Record::decode(&message.payload, self.max_line) {
                    Ok(record) if record.is_public() => {
                        if kept.len() == wanted {
                            kept.pop_front();
                        }
                        kept.push_back(protocol::history_line(&record.line()));
                    }
                    Ok(_) => {}
                    // Counted once already, when the stream was read live.
                    Err(_) => {}
                }
            }
            anyhow::Ok(kept.into_iter().collect())
        };
        match timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(lines)) => lines,
            Ok(Err(e)) => {
                tracing::warn!("no history for a newcomer: {e:#}");
                Arc::from([])
            }
            Err(_) => {
                tracing::warn!("no history for a newcomer: timed out");
                Arc::from([])
            }
        }
    }
}
