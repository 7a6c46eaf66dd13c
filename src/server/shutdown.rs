//! The server-wide stop signal, as each connection task sees it.
//!
//! The server holds the `broadcast::Sender`; every connection task holds a
//! [`Shutdown`] built from a receiver, and waits on it with `select!` next to
//! its own work. Sending (or dropping the sender) tells them all at once.
//! What is sent is the end of the grace period: the time by which a task
//! should have said its last words, so that a peer that is merely slow for
//! a moment still gets every line before the server goes.

use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// How long shutdown waits for sessions to say goodbye, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

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

/// Completes on SIGINT or SIGTERM: how `serve` is stopped gracefully.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot listen for SIGINT/SIGTERM: {e}; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
