//! The writer of a [`LocalRoom`](super::LocalRoom) that keeps its lines on
//! disk (`serve --data`): no participant ever receives a line that is not
//! committed to the [`Store`].
//!
//! The room numbers each public line under its lock, in the room's order,
//! and queues it here instead of putting it in its ring. One thread owns
//! the store and commits in groups: it takes everything queued, appends it
//! in one transaction, and only then puts those lines in the ring (under
//! the room's lock again, so in the same order) and tells the joins among
//! them that their `joined!` line is committed. The ring thus only ever
//! holds committed lines, and a `kill -9` loses no line anyone has seen.
//!
//! A batch that cannot be committed (a full disk) is not delivered at
//! all: each sender of a message or action in it is told through its
//! mailbox, each join in it fails, and the outage is logged once. The next
//! batch tries again.
//!
//! Between batches it keeps the store (its [`Upkeep`]): the full-text
//! index is brought up to date in bulk, after the lines it covers were
//! delivered, and the lines older than the room's retention are deleted.

use super::backlog::Numbered;
use super::local::Shared;
use super::mailbox::Mailbox;
use super::store::{Entry, Store, Upkeep};
use crate::protocol;
use crate::sync::lock;
use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// What a sender is told about a line the store could not take.
pub const NOT_SENT: &str = "message not sent: the history store is unavailable";

/// What the room keeps under its lock for the writer.
#[derive(Debug, Default)]
pub(super) struct Queue {
    /// The sequence the next line gets.
    pub(super) next_seq: u64,
    /// Lines said and not yet taken by the writer, in the room's order.
    pub(super) pending: Vec<Pending>,
    /// The room is gone: the writer commits what is pending and ends.
    pub(super) stop: bool,
}

/// A line waiting to be committed.
#[derive(Debug)]
pub(super) struct Pending {
    /// `None` for nothing to deliver: a join or leave not announced, or
    /// the release of a mailbox (see [`Waiter::Release`]).
    pub(super) line: Option<Numbered>,
    /// What is stored; `None` for a line that is delivered only (the
    /// server's farewell).
    pub(super) entry: Option<Entry>,
    pub(super) waiter: Waiter,
}

/// Who waits on a pending line.
#[derive(Debug)]
pub(super) enum Waiter {
    /// Nobody (the farewell).
    Nobody,
    /// The mailbox of a participant who left: closed once the lines said
    /// before it left are delivered, so that its subscription sees them
    /// before it learns the mailbox is closed.
    Release(Mailbox),
    /// A message or action of the participant with this nick key: told
    /// if it cannot be stored.
    Said(String),
    /// The join of the participant with this nick key: told whether its
    /// `joined!` line is committed.
    Join(String, oneshot::Sender<bool>),
}

/// How newcomers read the store, beside the writer.
#[derive(Debug)]
pub(super) struct Reading {
    /// A connection of its own (a store is one thread's at a time).
    pub(super) reader: Arc<Mutex<Store>>,
    /// How many lines a newcomer gets.
    pub(super) history: usize,
    /// How long the room keeps its lines (`None`: forever).
    pub(super) retain: Option<Duration>,
}

impl Queue {
    /// Queues `line` (`None`: stored, shown to nobody, as a join or leave
    /// not announced), stored as `entry` made with its sequence, and
    /// returns that sequence.
    pub(super) fn push(
        &mut self,
        line: Option<Bytes>,
        entry: impl FnOnce(u64, OffsetDateTime) -> Entry,
        waiter: Waiter,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push(Pending {
            line: line.map(|bytes| Numbered { seq, bytes }),
            entry: Some(entry(seq, OffsetDateTime::now_utc())),
            waiter,
        });
        seq
    }

    /// The last sequence handed out: a private line said now goes after it.
    pub(super) fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }
}

/// Starts the writer, owning `store`.
pub(super) fn spawn(
    shared: Arc<Shared>,
    store: Store,
    retain: Option<Duration>,
) -> anyhow::Result<JoinHandle<()>> {
    use anyhow::Context;
    std::thread::Builder::new()
        .name("history-writer".into())
        .spawn(move || Writer::new(store, retain).run(&shared))
        .context("cannot start the history store's writer")
}

struct Writer {
    store: Store,
    upkeep: Upkeep,
    /// Whether the last commit failed: an outage is logged once.
    failing: bool,
}

impl Writer {
    fn new(store: Store, retain: Option<Duration>) -> Self {
        Writer {
            store,
            upkeep: Upkeep::new(retain),
            failing: false,
        }
    }

    fn run(mut self, shared: &Shared) {
        loop {
            self.upkeep.run_due(&mut self.store);
            let Some(batch) = self.take(shared) else {
                self.upkeep.finish(&mut self.store);
                return;
            };
            if !batch.is_empty() && self.commit(shared, batch) {
                self.upkeep.committed(&mut self.store);
            }
        }
    }

    /// Waits for lines (or until upkeep is due) and takes every pending
    /// one; `None` once the room is gone and nothing is pending.
    fn take(&self, shared: &Shared) -> Option<Vec<Pending>> {
        let mut state = lock(&shared.state);
        loop {
            let queue = state.durable.as_mut()?;
            if !queue.pending.is_empty() {
                return Some(std::mem::take(&mut queue.pending));
            }
            if queue.stop {
                return None;
            }
            let Some(deadline) = self.upkeep.deadline() else {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Some(Vec::new());
            }
            state = shared
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Commits `batch` in one transaction, then delivers it; or, if it
    /// cannot, tells whoever waits on it. True if it stored lines.
    fn commit(&mut self, shared: &Shared, mut batch: Vec<Pending>) -> bool {
        let entries: Vec<Entry> = batch.iter_mut().filter_map(|p| p.entry.take()).collect();
        let stored = !entries.is_empty();
        let result = if stored {
            self.store.append(&entries)
        } else {
            Ok(())
        };
        let mut state = lock(&shared.state);
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the history store works again");
                }
                for pending in batch {
                    if let Some(line) = pending.line {
                        state.lines.push(line);
                    }
                    match pending.waiter {
                        Waiter::Join(_, committed) => {
                            let _ = committed.send(true);
                        }
                        // After its line: the leaver's subscription reads
                        // everything up to it first.
                        Waiter::Release(mailbox) => drop(mailbox),
                        Waiter::Nobody | Waiter::Said(_) => {}
                    }
                }
                stored
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the history store is unavailable: lines are refused until it works again"
                    );
                }
                for pending in batch {
                    match pending.waiter {
                        Waiter::Said(key) => {
                            if let Some(sender) = state.members.get(&key) {
                                sender.value.put(0, protocol::error_line(NOT_SENT));
                            }
                        }
                        Waiter::Join(key, committed) => {
                            state.members.remove(&key);
                            let _ = committed.send(false);
                        }
                        // The farewell is not stored: it goes anyway.
                        Waiter::Nobody => {
                            if let Some(line) = pending.line {
                                state.lines.push(line);
                            }
                        }
                        Waiter::Release(mailbox) => drop(mailbox),
                    }
                }
                false
            }
        }
    }
}
