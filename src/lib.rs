//! chatroom: the lab's NICK-then-broadcast chat, made to keep its promises:
//! TLS with a pinned local CA, line framing, unique nicknames, one global
//! order of lines, and a server no single connection can stall.
//!
//! # Layout
//!
//! Each folder is a layer; a module only uses the layers below it.
//!
//! * [`cmd`]: the command line, one module per subcommand; it parses
//!   arguments and calls the layers below, nothing more.
//! * [`bench`](mod@crate::bench): `chatroom bench`, load and correctness
//!   measurements of a running server.
//! * [`client`]: `chatroom connect`, the terminal client: its console
//!   (keyboard and screen), its display (time, marks, colours), and its
//!   way back after a lost connection (a node among several, backoff).
//! * [`lab`]: `chatroom lab relay`, the classroom's man in the middle on
//!   loopback addresses: it shows and tampers with what passes.
//! * [`server`]: from an accepted socket to a participant: the listener
//!   and its admission limits, who may join ([`server::access`]), rate and
//!   per-address limits, shutdown, [`server::session`], one
//!   participant's life, [`server::metrics`], what operations watch, and
//!   [`server::web`], the chat page and its WebSocket (the same sessions,
//!   over HTTPS).
//! * [`room`]: who is here and the one order of lines, behind the
//!   [`room::Room`] trait: [`room::LocalRoom`] in this process's memory, or
//!   [`room::cluster::ClusterRoom`] shared by several servers through NATS
//!   JetStream; the shared ring of recent lines ([`room::backlog`]),
//!   private mailboxes and history, and the room's lines on disk
//!   ([`room::store`]).
//! * [`tls`], [`connection`], [`certs`]: rustls configurations for both
//!   ends, and the server's TLS stream that holds no buffer while idle; one
//!   stream as lines in and batched lines out; the local CA,
//!   issuing, revocation and inspection of certificates.
//! * [`protocol`]: the pure rules: framing, nicknames, sanitizing, and the
//!   exact texts of every line. No I/O; fuzzed.
//!
//! # The path of a line
//!
//! The [`server::Server`]'s listener accepts a socket, counts it against
//! the limits and runs the TLS handshake; the connection's
//! [`server::session::Session`] asks `NICK`, joins the room and then reads
//! the participant's lines through its [`connection::Connection`]. A message
//! goes to [`room::Room::publish`], which formats it once
//! ([`protocol::chat_line`]) and puts it in the room's ring (or, in a
//! cluster, publishes it to the room's stream and puts it in the ring when
//! it comes back in the global order). Every session reads the ring through
//! its [`room::Subscription`] at its own pace and writes what it read in
//! batches of up to one TLS record.

pub mod bench;
pub mod certs;
pub mod client;
pub mod cmd;
pub mod connection;
pub mod lab;
pub mod protocol;
pub mod room;
pub mod server;
pub mod tls;

/// Locks that keep going after a panic elsewhere. Every value kept behind
/// our locks is changed by single inserts, removes or assignments, so it is
/// whole whatever panicked while holding it; refusing it forever (the
/// standard library's poisoning) would turn one bug into a dead server.
pub(crate) mod sync {
    use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

    /// Locks `mutex`, poisoned or not.
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads `lock`, poisoned or not.
    pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
        lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `lock`, poisoned or not.
    pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
        lock.write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
