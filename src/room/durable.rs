//! The writer of a [`LocalRoom`](super::LocalRoom) that keeps its lines on
//! disk (`serve --data`), and of its channels: no participant ever
//! receives a line that is not committed to the [`Store`].
//!
//! The room and each of its channels queue their public lines in one
//! [`Journal`], under their own lock, instead of putting them in their
//! ring; the journal numbers them in one sequence, which is thus each
//! room's own order too (a room's numbers have gaps where another's lines
//! are). One thread owns the store and commits in groups: it takes
//! everything queued, appends it in one transaction, and only then puts
//! those lines in their rooms' rings (under each room's lock again, so in
//! the same order) and tells the joins among them that their `joined!`
//! line is committed. A ring thus only ever holds committed lines, and a
//! `kill -9` loses no line anyone has seen.
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
use super::local::{Shared, State};
use super::mailbox::Mailbox;
use super::store::{Entry, Store, Upkeep};
use crate::protocol;
use crate::sync::lock;
use bytes::Bytes;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// What a sender is told about a line the store could not take.
pub const NOT_SENT: &str = "message not sent: the history store is unavailable";

/// The lines of a room and of its channels on their way to the store's
/// writer, in the one order they are numbered in.
///
/// A room queues a line while it holds its own lock (so that its lines
/// are numbered in its order); the journal's lock is taken inside it,
/// never the other way round.
#[derive(Debug)]
pub(super) struct Journal {
    queue: Mutex<Queue>,
    /// Wakes the writer when lines are pending.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    /// The sequence the next line gets.
    next_seq: u64,
    /// Lines said and not yet taken by the writer, in order.
    pending: Vec<Pending>,
    /// The room is gone: the writer commits what is pending and ends, and
    /// what comes after is dropped (a join among it fails as closed).
    stop: bool,
}

/// A line waiting to be committed.
#[derive(Debug)]
struct Pending {
    /// The room (the lobby or a channel) it is delivered in.
    room: Arc<Shared>,
    /// `None` for nothing to deliver: a join or leave not announced, a
    /// ban of someone absent, or the release of a mailbox (see
    /// [`Waiter::Release`]).
    line: Option<Numbered>,
    /// What is stored; `None` for a line that is delivered only (the
    /// server's farewell, a notice).
    entry: Option<Entry>,
    waiter: Waiter,
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
#[derive(Debug, Clone)]
pub(super) struct Reading {
    /// A connection of its own (a store is one thread's at a time), shared
    /// by the room and its channels.
    pub(super) reader: Arc<Mutex<Store>>,
    /// How many lines a newcomer gets.
    pub(super) history: usize,
    /// How long the room keeps its lines (`None`: forever).
    pub(super) retain: Option<Duration>,
}

impl Journal {
    /// A journal whose first line gets sequence `next_seq`.
    pub(super) fn new(next_seq: u64) -> Journal {
        Journal {
            queue: Mutex::new(Queue {
                next_seq,
                ..Queue::default()
            }),
            wake: Condvar::new(),
        }
    }

    /// Queues `line` of `room` (`None`: stored, shown to nobody, as a join
    /// or leave not announced), stored as `entry` with its sequence and the
    /// time now, and returns that sequence.
    pub(super) fn push(
        &self,
        room: &Arc<Shared>,
        line: Option<Bytes>,
        mut entry: Entry,
        waiter: Waiter,
    ) -> u64 {
        let mut queue = lock(&self.queue);
        let seq = queue.next_seq;
        queue.next_seq += 1;
        (entry.seq, entry.time) = (seq, OffsetDateTime::now_utc());
        let pending = Pending {
            room: room.clone(),
            line: line.map(|bytes| Numbered { seq, bytes }),
            entry: Some(entry),
            waiter,
        };
        self.queue_up(queue, pending);
        seq
    }

    /// Queues `line` of `room` (already numbered), delivered in order with
    /// the lines queued before it and not stored: a notice, the farewell,
    /// the release of a mailbox.
    pub(super) fn push_unstored(&self, room: &Arc<Shared>, line: Option<Numbered>, waiter: Waiter) {
        let pending = Pending {
            room: room.clone(),
            line,
            entry: None,
            waiter,
        };
        self.queue_up(lock(&self.queue), pending);
    }

    fn queue_up(&self, mut queue: std::sync::MutexGuard<'_, Queue>, pending: Pending) {
        if queue.stop {
            // Nobody commits it: dropped, it tells whoever waits.
            drop(queue);
            drop(pending);
            return;
        }
        queue.pending.push(pending);
        drop(queue);
        self.wake.notify_one();
    }

    /// Lets the writer commit what is pending and end.
    pub(super) fn stop(&self) {
        lock(&self.queue).stop = true;
        self.wake.notify_one();
    }
}

/// Starts the writer of `journal`, owning `store`.
pub(super) fn spawn(
    journal: Arc<Journal>,
    store: Store,
    retain: Option<Duration>,
) -> anyhow::Result<JoinHandle<()>> {
    use anyhow::Context;
    std::thread::Builder::new()
        .name("history-writer".into())
        .spawn(move || Writer::new(store, retain).run(&journal))
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

    fn run(mut self, journal: &Journal) {
        loop {
            self.upkeep.run_due(&mut self.store);
            let Some(batch) = self.take(journal) else {
                self.upkeep.finish(&mut self.store);
                return;
            };
            if !batch.is_empty() && self.commit(batch) {
                self.upkeep.committed(&mut self.store);
            }
        }
    }

    /// Waits for lines (or until upkeep is due) and takes every pending
    /// one; `None` once the room is gone and nothing is pending.
    fn take(&self, journal: &Journal) -> Option<Vec<Pending>> {
        let mut queue = lock(&journal.queue);
        loop {
            if !queue.pending.is_empty() {
                return Some(std::mem::take(&mut queue.pending));
            }
            if queue.stop {
                return None;
            }
            let Some(deadline) = self.upkeep.deadline() else {
                queue = journal
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Some(Vec::new());
            }
            queue = journal
                .wake
                .wait_timeout(queue, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Commits `batch` in one transaction, then delivers it; or, if it
    /// cannot, tells whoever waits on it. True if it stored lines.
    fn commit(&mut self, mut batch: Vec<Pending>) -> bool {
        let mut entries = Vec::with_capacity(batch.len());
        // Which lines are stored: one that is not (a notice) goes anyway.
        let mut stored = Vec::with_capacity(batch.len());
        for pending in &mut batch {
            stored.push(pending.entry.is_some());
            entries.extend(pending.entry.take());
        }
        let result = if entries.is_empty() {
            Ok(())
        } else {
            self.store.append(&entries)
        };
        let committed = match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the history store works again");
                }
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the history store is unavailable: lines are refused until it works again"
                    );
                }
                false
            }
        };
        // Each room's lines under its lock once, in order.
        let mut batch = batch.into_iter().zip(stored).peekable();
        while let Some((first, is_stored)) = batch.next() {
            let room = first.room.clone();
            let mut state = lock(&room.state);
            deliver(&mut state, first, committed || !is_stored);
            while let Some((next, is_stored)) = batch.next_if(|(p, _)| Arc::ptr_eq(&p.room, &room))
            {
                deliver(&mut state, next, committed || !is_stored);
            }
        }
        committed && !entries.is_empty()
    }
}

/// Delivers `pending` in its room (`state`) if it `goes` (it is committed,
/// or not meant to be stored), and tells whoever waits on it.
fn deliver(state: &mut State, pending: Pending, goes: bool) {
    if goes && let Some(line) = pending.line {
        state.lines.push(line);
    }
    match pending.waiter {
        Waiter::Join(key, committed) => {
            if !goes {
                state.members.remove(&key);
            }
            let _ = committed.send(goes);
        }
        Waiter::Said(key) if !goes => {
            if let Some(sender) = state.members.get(&key) {
                sender.value.put(0, protocol::error_line(NOT_SENT));
            }
        }
        // After its line: the leaver's subscription reads everything up
        // to it first.
        Waiter::Release(mailbox) => drop(mailbox),
        Waiter::Said(_) | Waiter::Nobody => {}
    }
}
