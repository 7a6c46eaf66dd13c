//! Log lines that an attacker could otherwise multiply at will (a failed
//! TLS handshake, a refused connection attempt): at most a few a second are
//! written one by one; the rest are counted and summarized once per
//! second, so the log says how many without growing with the attack.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Lines written one by one per interval, before counting starts.
pub const LINES_PER_INTERVAL: u32 = 5;

/// The interval.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One kind of log line, limited.
#[derive(Debug)]
pub struct LogLimit {
    what: &'static str,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    interval_start: Instant,
    written: u32,
    suppressed: u64,
}

impl LogLimit {
    /// `what` names the events in the summary ("failed TLS handshakes").
    pub fn new(what: &'static str) -> Self {
        LogLimit {
            what,
            state: Mutex::new(State {
                interval_start: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether one more line of this kind may be written now; if not, it
    /// is counted for the next summary.
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = crate::sync::lock(&self.state);
        if now.saturating_duration_since(state.interval_start) >= INTERVAL {
            state.interval_start = now;
            state.written = 0;
        }
        if state.written < LINES_PER_INTERVAL {
            state.written += 1;
            true
        } else {
            state.suppressed += 1;
            false
        }
    }

    /// How many lines were held back since the last summary; logs the
    /// summary if there were any. Called once per [`INTERVAL`].
    pub fn summarize(&self) -> u64 {
        let suppressed = {
            let mut state = crate::sync::lock(&self.state);
            std::mem::take(&mut state.suppressed)
        };
        if suppressed > 0 {
            tracing::info!(
                count = suppressed,
                "{suppressed} more {} in the last second (not logged one by one)",
                self.what
            );
        }
        suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_per_interval_then_counted() {
        let limit = LogLimit::new("things happened");
        let start = Instant::now();
        let allowed = (0..100).filter(|_| limit.allow(start)).count();
        assert_eq!(allowed, LINES_PER_INTERVAL as usize);
        assert_eq!(limit.summarize(), 100 - u64::from(LINES_PER_INTERVAL));
        assert_eq!(limit.summarize(), 0);
        assert!(limit.allow(start + INTERVAL));
    }
}
