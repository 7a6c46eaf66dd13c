//! The room's recent public lines, for newcomers (`serve --history N`).
//!
//! The room appends every message and `/me` action here as it puts it in
//! its ring, under the same lock, so a newcomer's copy ends exactly where
//! its live lines begin: nothing twice, nothing missed. Private lines,
//! joins and leaves are never kept. The lines are the ring's own
//! reference-counted [`Bytes`], so keeping them copies nothing; memory stays
//! bounded by N lines of at most the line limit each.

use bytes::Bytes;
use std::collections::VecDeque;

/// The last `capacity` public lines, oldest first.
#[derive(Debug, Default)]
pub struct History {
    lines: VecDeque<Bytes>,
    capacity: usize,
}

impl History {
    /// Keeps the last `capacity` lines; 0 keeps none.
    pub fn new(capacity: usize) -> Self {
        History {
            lines: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    /// Appends a line, forgetting the oldest beyond the capacity.
    pub fn push(&mut self, line: &Bytes) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line.clone());
    }

    /// The lines kept, oldest first (unmarked: see
    /// [`crate::protocol::history_line`]).
    pub fn snapshot(&self) -> Vec<Bytes> {
        self.lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n_lines_and_none_when_off() {
        let mut history = History::new(2);
        for line in ["a\n", "b\n", "c\n"] {
            history.push(&Bytes::from(line));
        }
        assert_eq!(history.snapshot(), ["b\n", "c\n"]);
        let mut off = History::new(0);
        off.push(&Bytes::from("a\n"));
        assert!(off.snapshot().is_empty());
    }
}
