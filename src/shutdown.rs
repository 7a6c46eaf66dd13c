//! The server-wide stop signal, as each connection task sees it.
//!
//! The server holds the `broadcast::Sender`; every connection task holds a
//! [`Shutdown`] built from a receiver, and waits on it with `select!` next to
//! its own work. Sending (or dropping the sender) tells them all at once.

use tokio::sync::broadcast;

/// Listens for the server's stop signal.
#[derive(Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    pub fn new(notify: broadcast::Receiver<()>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    /// Whether the signal has been received.
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits for the signal; returns at once if it was already received.
    /// Cancel-safe.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // A lagged or closed channel means the same thing: stop.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
