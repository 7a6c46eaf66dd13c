//! The room's backlog: one ring of recent lines, shared by every
//! participant, and bounded by the memory its lines take rather than by
//! their number.
//!
//! A line is stored once, as the [`Bytes`] the room formatted, and every
//! [`Reader`] takes its own reference to it at its own pace, so a line costs
//! its memory once per room, not once per participant. The ring keeps a
//! line for as long as some reader has not read it, and no longer: an idle
//! room holds nothing, and the ring's array grows and shrinks with what it
//! holds instead of being allocated for the bound up front.
//!
//! Its bound is in bytes: each line counts its length plus
//! [`LINE_OVERHEAD`]. When a new line takes the ring past the bound, the
//! oldest lines are dropped even though some reader has not read them yet;
//! that reader then learns it fell behind ([`RecvError::Lagged`]) rather
//! than skipping lines, and nobody ever waits for it.
//!
//! Readers take up to `READ_BATCH_LINES` lines per turn of the ring's
//! lock, so a busy reader pays for the lock once per batch, not per line.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// What a line costs the backlog beyond its own bytes: its slot in the
/// ring (40 bytes, up to twice that while the ring's array grows), the
/// reference count its first sharing allocates (32 bytes), and the
/// allocator's header and rounding of the line itself (up to 24 bytes).
pub const LINE_OVERHEAD: usize = 128;

/// The default bound: 64 MiB.
pub const DEFAULT_BYTES: usize = 64 << 20;

/// The smallest bound accepted.
pub const MIN_BYTES: usize = 64 << 10;

/// At most this many lines leave the ring per turn of its lock for one
/// reader, and about this many bytes: a full write batch.
const READ_BATCH_LINES: usize = 64;
const READ_BATCH_BYTES: usize = 16 * 1024;

/// The ring's array keeps at least this many slots when it shrinks.
const MIN_SLOTS: usize = 64;

/// What `line` counts against the bound.
pub fn cost(line: &[u8]) -> usize {
    line.len() + LINE_OVERHEAD
}

/// A line as the ring holds it: cheap to clone (one per reader), and
/// weighed against the bound by [`cost`]. A room's lines are [`Bytes`];
/// a room shared through a broker keeps each line's place in its stream
/// beside it.
pub trait Line: Clone + Send + Sync + 'static {
    /// The line's text, terminator included.
    fn text(&self) -> &[u8];
    /// The line itself, as sent to participants.
    fn into_bytes(self) -> Bytes;
    /// Its place in the room's global order, for a room that numbers its
    /// lines (0 for one that does not).
    fn seq(&self) -> u64 {
        0
    }
}

impl Line for Bytes {
    fn text(&self) -> &[u8] {
        self
    }
    fn into_bytes(self) -> Bytes {
        self
    }
}

/// A line with its place in the room's global order: the lines of a room
/// that numbers them (one shared through a broker, or one that stores its
/// lines on disk).
#[derive(Debug, Clone)]
pub struct Numbered {
    pub(crate) seq: u64,
    pub(crate) bytes: Bytes,
}

impl Line for Numbered {
    fn text(&self) -> &[u8] {
        &self.bytes
    }
    fn into_bytes(self) -> Bytes {
        self.bytes
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// Why a reader got no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The reader fell so far behind that lines it never read were dropped
    /// to keep the bound; its next read starts after them.
    #[error("fell behind by {0} lines")]
    Lagged(u64),
    /// The writing end is gone and every line was read.
    #[error("backlog closed")]
    Closed,
}

/// The writing end: one per room. Dropping it closes the backlog.
#[derive(Debug)]
pub struct Backlog<L = Bytes> {
    shared: Arc<Shared<L>>,
}

/// One reader's cursor in the ring.
#[derive(Debug)]
pub struct Reader<L = Bytes> {
    shared: Arc<Shared<L>>,
    cursor: Cursor<L>,
}

#[derive(Debug)]
struct Shared<L> {
    ring: Mutex<Ring<L>>,
    /// The number the next line will have: readers that are at it have
    /// nothing to read, and find out without taking the lock.
    tail: AtomicU64,
    closed: AtomicBool,
    /// Woken on every new line (and on close).
    arrived: Notify,
    limit: usize,
}

#[derive(Debug)]
struct Ring<L> {
    lines: VecDeque<Entry<L>>,
    /// The number of `lines[0]`; line numbers only grow.
    head: u64,
    /// What the lines held count against the bound.
    bytes: usize,
    readers: usize,
}

#[derive(Debug)]
struct Entry<L> {
    line: L,
    /// What it counts against the bound ([`cost`]).
    weight: usize,
    /// Readers that have not read it yet; at 0 it is dropped.
    unread: usize,
}

#[derive(Debug)]
struct Cursor<L> {
    /// The number of the next line this reader takes from the ring.
    next: u64,
    /// Lines taken from the ring in the last batch and not handed out yet.
    /// Empty (and without an allocation) between bursts.
    taken: VecDeque<L>,
}

impl<L: Line> Backlog<L> {
    /// A backlog whose lines count at most `limit` bytes (see [`cost`]).
    /// Nothing is allocated for them until they come.
    pub fn new(limit: usize) -> Backlog<L> {
        Backlog {
            shared: Arc::new(Shared {
                ring: Mutex::new(Ring {
                    lines: VecDeque::new(),
                    head: 0,
                    bytes: 0,
                    readers: 0,
                }),
                tail: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                arrived: Notify::new(),
                limit,
            }),
        }
    }

    /// A reader whose first line is the next one pushed.
    pub fn subscribe(&self) -> Reader<L> {
        let mut ring = self.shared.ring();
        ring.readers += 1;
        let next = ring.tail();
        drop(ring);
        Reader {
            shared: self.shared.clone(),
            cursor: Cursor {
                next,
                taken: VecDeque::new(),
            },
        }
    }

    /// Appends `line` for every current reader, dropping the oldest lines
    /// if it takes the ring past its bound. With no readers it goes nowhere.
    pub fn push(&self, line: L) {
        let mut ring = self.shared.ring();
        if ring.readers == 0 {
            return;
        }
        let weight = cost(line.text());
        ring.bytes += weight;
        let unread = ring.readers;
        ring.lines.push_back(Entry {
            line,
            weight,
            unread,
        });
        // The newest line always stays: the bound holds several lines.
        while ring.bytes > self.shared.limit && ring.lines.len() > 1 {
            ring.pop_front();
        }
        self.shared.tail.store(ring.tail(), Ordering::Release);
        drop(ring);
        self.shared.arrived.notify_waiters();
    }

    /// The bytes the lines held count (see [`cost`]).
    pub fn bytes(&self) -> usize {
        self.shared.ring().bytes
    }

    /// How many lines are held.
    pub fn len(&self) -> usize {
        self.shared.ring().lines.len()
    }

    /// Whether no line is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }
}

impl<L> Drop for Backlog<L> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.arrived.notify_waiters();
    }
}

impl<L: Line> Reader<L> {
    /// The next line, waiting for it.
    pub async fn recv(&mut self) -> Result<L, RecvError> {
        let Reader { shared, cursor } = self;
        loop {
            if let Some(line) = cursor.try_recv(shared)? {
                return Ok(line);
            }
            // Registered before looking again, so that a line pushed in
            // between wakes it.
            let arrived = shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(line) = cursor.try_recv(shared)? {
                return Ok(line);
            }
            arrived.await;
        }
    }

    /// The next line if there is one now.
    pub fn try_recv(&mut self) -> Result<Option<L>, RecvError> {
        self.cursor.try_recv(&self.shared)
    }

    /// Whether lines this reader has not taken yet were already dropped.
    pub fn is_lagging(&self) -> bool {
        self.cursor.next < self.shared.ring().head
    }
}

impl<L> Drop for Reader<L> {
    fn drop(&mut self) {
        let mut ring = self.shared.ring();
        ring.readers -= 1;
        let start = self.cursor.next.saturating_sub(ring.head) as usize;
        for entry in ring.lines.range_mut(start..) {
            entry.unread -= 1;
        }
        ring.drop_read();
    }
}

impl<L: Line> Cursor<L> {
    fn try_recv(&mut self, shared: &Shared<L>) -> Result<Option<L>, RecvError> {
        if let Some(line) = self.taken.pop_front() {
            if self.taken.is_empty() {
                self.taken = VecDeque::new();
            }
            return Ok(Some(line));
        }
        // `closed` first: once it is set, no line comes after `tail`.
        let closed = shared.closed.load(Ordering::Acquire);
        if self.next == shared.tail.load(Ordering::Acquire) {
            return if closed {
                Err(RecvError::Closed)
            } else {
                Ok(None)
            };
        }
        let mut ring = shared.ring();
        if self.next < ring.head {
            let missed = ring.head - self.next;
            self.next = ring.head;
            return Err(RecvError::Lagged(missed));
        }
        let start = (self.next - ring.head) as usize;
        let end = ring.lines.len().min(start + READ_BATCH_LINES);
        if end - start > 1 {
            // One allocation for the batch, rather than one per doubling.
            self.taken.reserve_exact(end - start - 1);
        }
        let mut first = None;
        let mut bytes = 0;
        let mut taken = start;
        for entry in ring.lines.range_mut(start..end) {
            if bytes >= READ_BATCH_BYTES {
                break;
            }
            entry.unread -= 1;
            bytes += entry.line.text().len();
            taken += 1;
            match first {
                None => first = Some(entry.line.clone()),
                Some(_) => self.taken.push_back(entry.line.clone()),
            }
        }
        self.next += (taken - start) as u64;
        if start == 0 {
            ring.drop_read();
        }
        Ok(first)
    }
}

impl<L> Shared<L> {
    fn ring(&self) -> MutexGuard<'_, Ring<L>> {
        crate::sync::lock(&self.ring)
    }
}

impl<L> Ring<L> {
    fn tail(&self) -> u64 {
        self.head + self.lines.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.lines.pop_front() {
            self.bytes -= entry.weight;
            self.head += 1;
        }
    }

    /// Drops the lines at the front that everybody has read, and gives
    /// back the array's room once most of it is unused.
    fn drop_read(&mut self) {
        while self.lines.front().is_some_and(|entry| entry.unread == 0) {
            self.pop_front();
        }
        let capacity = self.lines.capacity();
        if capacity > MIN_SLOTS && self.lines.len() * 4 <= capacity {
            self.lines.shrink_to((self.lines.len() * 2).max(MIN_SLOTS));
        }
    }
}

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{0:?} is not a size: give a number of bytes, or a number with KiB, MiB or GiB")]
    Invalid(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a size: plain bytes (`65536`), or a whole number with a binary
/// unit (`512KiB`, `64MiB`, `1GiB`; `B` for bytes). Decimal units (`MB`)
/// are refused rather than guessed at.
pub fn parse_size(text: &str) -> Result<usize, SizeError> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let invalid = || SizeError::Invalid(text.to_owned());
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(invalid()),
    };
    let number: usize = number.parse().map_err(|_| invalid())?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| SizeError::TooLarge(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Bytes {
        Bytes::from(format!("{text}\n"))
    }

    fn drain(reader: &mut Reader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = reader.try_recv().expect("not lagged") {
            out.push(String::from_utf8(line.to_vec()).expect("utf-8"));
        }
        out
    }

    #[test]
    fn every_reader_gets_every_line_from_its_start_in_order() {
        let backlog = Backlog::new(1 << 20);
        let mut a = backlog.subscribe();
        backlog.push(line("1"));
        let mut b = backlog.subscribe();
        for i in 2..=200 {
            backlog.push(line(&i.to_string()));
        }
        let all: Vec<String> = (1..=200).map(|i| format!("{i}\n")).collect();
        assert_eq!(drain(&mut a), all);
        assert_eq!(drain(&mut b), all[1..]);
    }

    #[test]
    fn lines_everybody_read_are_let_go() {
        let backlog = Backlog::new(1 << 20);
        let mut a = backlog.subscribe();
        let mut b = backlog.subscribe();
        for i in 0..1000 {
            backlog.push(line(&i.to_string()));
        }
        assert_eq!(backlog.len(), 1000);
        drain(&mut a);
        assert_eq!(backlog.len(), 1000, "b has read none");
        drain(&mut b);
        assert!(backlog.is_empty());
        assert_eq!(backlog.bytes(), 0);
        // A reader that leaves stops holding lines back.
        backlog.push(line("x"));
        drop(a);
        assert_eq!(backlog.len(), 1);
        drop(b);
        assert!(backlog.is_empty());
        // Nobody to read it: not kept.
        backlog.push(line("y"));
        assert!(backlog.is_empty());
    }

    #[test]
    fn the_bound_is_in_bytes_and_a_reader_past_it_is_told() {
        let text = "x".repeat(1000);
        let per_line = cost(&line(&text));
        let backlog = Backlog::new(10 * per_line);
        let mut slow = backlog.subscribe();
        let mut fast = backlog.subscribe();
        for _ in 0..10 {
            backlog.push(line(&text));
            assert!(fast.try_recv().expect("fast keeps up").is_some());
        }
        assert!(!slow.is_lagging(), "exactly at the bound");
        assert_eq!(backlog.bytes(), 10 * per_line);
        backlog.push(line(&text));
        assert!(backlog.bytes() <= backlog.limit());
        assert!(slow.is_lagging());
        assert_eq!(slow.try_recv(), Err(RecvError::Lagged(1)));
        // Small lines: many more fit in the same bound.
        let small = Backlog::new(10 * per_line);
        let _reader = small.subscribe();
        for i in 0..60 {
            small.push(line(&i.to_string()));
        }
        assert_eq!(small.len(), 60);
    }

    #[test]
    fn a_reader_takes_its_lines_in_batches_without_a_gap() {
        let backlog = Backlog::new(1 << 20);
        let mut reader = backlog.subscribe();
        for i in 0..READ_BATCH_LINES * 3 + 5 {
            backlog.push(line(&i.to_string()));
        }
        assert_eq!(reader.try_recv().expect("a line"), Some(line("0")));
        // One batch left the ring at once.
        assert_eq!(backlog.len(), READ_BATCH_LINES * 2 + 5);
        let rest = drain(&mut reader);
        assert_eq!(rest.len(), READ_BATCH_LINES * 3 + 4);
        assert_eq!(rest[0], "1\n");
        assert!(backlog.is_empty());
    }

    #[tokio::test]
    async fn recv_waits_for_the_next_line_and_sees_the_close() {
        let backlog = Backlog::new(1 << 20);
        let mut reader = backlog.subscribe();
        let waiting = tokio::spawn(async move {
            let first = reader.recv().await;
            let end = reader.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        backlog.push(line("hello"));
        drop(backlog);
        let (first, end) = waiting.await.expect("task");
        assert_eq!(first, Ok(line("hello")));
        assert_eq!(end, Err(RecvError::Closed));
    }

    /// One writer and several readers on two threads, with a bound small
    /// enough that readers fall behind: each sees the lines in order, and
    /// any lines it misses are exactly what `Lagged` says.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_see_no_silent_gap() {
        const LINES: u64 = 20_000;
        let backlog: Backlog = Backlog::new(64 * cost(b"12345\n"));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let mut reader = backlog.subscribe();
                tokio::spawn(async move {
                    let (mut expected, mut lagged) = (0u64, 0u64);
                    loop {
                        match reader.recv().await {
                            Ok(line) => {
                                let text = std::str::from_utf8(&line).expect("utf-8");
                                let n: u64 = text.trim_end().parse().expect("a number");
                                assert_eq!(n, expected, "a gap nobody was told of");
                                expected += 1;
                            }
                            Err(RecvError::Lagged(missed)) => {
                                expected += missed;
                                lagged += missed;
                            }
                            Err(RecvError::Closed) => return (expected, lagged),
                        }
                        // Now and then a slow turn, so the bound is felt.
                        if expected % 1000 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let writer = tokio::spawn(async move {
            for n in 0..LINES {
                backlog.push(line(&n.to_string()));
                if n % 97 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            drop(backlog);
        });
        writer.await.expect("writer");
        for reader in readers {
            let (seen_up_to, _lagged) = reader.await.expect("reader");
            assert_eq!(seen_up_to, LINES, "every line read or accounted for");
        }
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        for bad in ["", "MiB", "64MB", "64M", "1.5MiB", "-1", "64mib", "0x10"] {
            assert!(
                matches!(parse_size(bad), Err(SizeError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            parse_size("99999999999999999999GiB"),
            Err(SizeError::Invalid(_) | SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_size("17179869184GiB"),
            Err(SizeError::TooLarge(_))
        ));
    }
}
