//! The room's recent public lines, for newcomers (`serve --history N`).
//!
//! The room appends every message and `/me` action here as it puts it in
//! its ring, under the same lock, so a newcomer's copy ends exactly where
//! its live lines begin: nothing twice, nothing missed. Private lines,
//! joins and leaves are never kept.
//!
//! Each line is kept already marked `[history] `, made once when it is
//! said, and every newcomer shares one snapshot of them: a newcomer costs
//! a reference, not a copy of the history. Its [`Subscriber`] hands them
//! out through the same bounded batches as live lines.
//!
//! [`Subscriber`]: super::Subscriber

use crate::protocol;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// The last `capacity` public lines, oldest first, marked.
#[derive(Debug, Default)]
pub struct History {
    lines: VecDeque<Bytes>,
    capacity: usize,
    /// The lines as newcomers share them; made again after a change.
    snapshot: Option<Arc<[Bytes]>>,
}

impl History {
    /// Keeps the last `capacity` lines; 0 keeps none.
    pub fn new(capacity: usize) -> Self {
        History {
            lines: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            snapshot: None,
        }
    }

    /// Appends a room line (terminated), forgetting the oldest beyond the
    /// capacity.
    pub fn push(&mut self, line: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(protocol::history_line(line));
        self.snapshot = None;
    }

    /// The lines kept, oldest first, marked; shared with every newcomer
    /// until the next line is said.
    pub fn snapshot(&mut self) -> Arc<[Bytes]> {
        self.snapshot
            .get_or_insert_with(|| self.lines.iter().cloned().collect())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n_lines_marked_and_none_when_off() {
        let mut history = History::new(2);
        for line in ["a\n", "b\n", "c\n"] {
            history.push(line.as_bytes());
        }
        let first = history.snapshot();
        assert_eq!(&*first, ["[history] b\n", "[history] c\n"]);
        // Shared until the next line.
        assert!(Arc::ptr_eq(&first, &history.snapshot()));
        history.push(b"d\n");
        assert_eq!(&*history.snapshot(), ["[history] c\n", "[history] d\n"]);
        let mut off = History::new(0);
        off.push(b"a\n");
        assert!(off.snapshot().is_empty());
    }
}
