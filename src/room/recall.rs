//! `/history` and `/search` in a room that keeps its lines on disk: the
//! answers, read from the store on a connection of their own, away from
//! the room's lock and from the async runtime's threads.

use super::store::{SearchError, Store};
use crate::connection::BATCH_BYTES;
use crate::protocol;
use crate::sync::lock;
use bytes::{Bytes, BytesMut};
use std::sync::Mutex;

/// A question, owned, to be answered on another thread.
#[derive(Debug)]
pub(super) enum Asked {
    /// `/history N`, before the sequence `before` (the oldest line shown).
    History { n: usize, before: u64 },
    /// `/search WORDS`.
    Search(String),
}

/// The answer's lines, from the lines of `channel` alone, as the channel
/// shows them, and for `/history` the sequence of the oldest line it
/// shows.
pub(super) fn answer_in(
    reader: &Mutex<Store>,
    channel: &str,
    asked: &Asked,
) -> (Vec<Bytes>, Option<u64>) {
    let store = lock(reader);
    match asked {
        Asked::History { n, before } => match store.recent(channel, Some(*before), *n) {
            Ok(entries) => {
                let oldest = entries.first().map(|e| e.seq);
                let lines = entries
                    .iter()
                    .map(|e| protocol::history_line(&e.line_in(channel)))
                    .collect();
                (lines, oldest)
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "cannot read the room's history");
                (vec![unavailable()], None)
            }
        },
        Asked::Search(words) => match store.search_in(Some(channel), words, protocol::SEARCH_MAX) {
            Ok(found) => {
                let mut lines: Vec<Bytes> = found
                    .iter()
                    .map(|e| protocol::search_line(e.time, &e.line_in(channel)))
                    .collect();
                lines.push(protocol::search_summary(found.len()));
                (lines, None)
            }
            Err(SearchError::Unavailable(e)) => {
                tracing::warn!(error = %e, "cannot search the room's history");
                (vec![unavailable()], None)
            }
            Err(refused) => (vec![protocol::error_line(refused)], None),
        },
    }
}

fn unavailable() -> Bytes {
    protocol::error_line(super::STORE_UNAVAILABLE)
}

/// `lines` joined into chunks of about one write batch each, so that a
/// long answer takes a few places in a mailbox, not one per line.
pub(super) fn chunks(lines: Vec<Bytes>) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut chunk = BytesMut::new();
    for line in lines {
        if !chunk.is_empty() && chunk.len() + line.len() > BATCH_BYTES {
            chunks.push(chunk.split().freeze());
        }
        chunk.extend_from_slice(&line);
    }
    if !chunk.is_empty() {
        chunks.push(chunk.freeze());
    }
    chunks
}
