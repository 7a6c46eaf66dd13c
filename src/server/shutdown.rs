//! The server-wide stop signal, as each connection task sees it.
//!
//! The server holds the `broadcast::Sender`; every connection task holds a
//! [`Shutdown`] built from a receiver, and waits on it with `select!` next to
//! its own work. Sending (or dropping the sender) tells them all at once.
//! What is sent is the end of the grace period: the time by which a task
//! should have said its last words, so that a peer that is merely slow for
//! a moment still gets every line before the server goes.

use tokio::sync::broadcast;
use tokio::time::Instant;

/// Listens for the server's stop signal.
#[derive(Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    /// The end of the grace period, once the signal came with one.
    deadline: Option<Instant>,
    notify: broadcast::Receiver<Instant>,
}

impl Shutdown {
    pub fn new(notify: broadcast::Receiver<Instant>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            deadline: None,
            notify,
        }
    }

    /// The end of the grace period, once the signal has been received
    /// (`None` before, or if the sender went away without one).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Waits for the signal; returns at once if it was already received.
    /// Cancel-safe.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // A lagged or closed channel means the same thing: stop.
        self.deadline = self.notify.recv().await.ok();
        self.is_shutdown = true;
    }
}
