//! chatroom: the lab's NICK-then-broadcast chat, made to keep its promises:
//! TLS with a pinned local CA, line framing, unique nicknames, one global
//! order of lines, and a server no single connection can stall.
//!
//! Where things live:
//! * [`protocol`]: framing, nickname rules, line texts (pure, fuzzable);
//! * [`room`]: who is here and the one order of lines, behind a trait;
//! * [`backlog`]: the room's ring of recent lines, bounded in bytes;
//! * [`session`]: one participant's life (NICK, read, write, limits);
//! * [`connection`]: a stream as lines in, batched lines out;
//! * [`server`]: accept loop, admission limits, shutdown;
//! * [`shutdown`]: the stop signal as each task sees it;
//! * [`rate`]: the per-participant token bucket;
//! * [`tls`]: rustls configs, PEM loading, pinning, error explanations;
//! * [`certs`]: `gen-certs`, the local CA and server certificate;
//! * [`client`]: `connect`, the terminal client;
//! * [`console`]: the client's keyboard and screen: a line editor in a
//!   terminal, plain lines with pipes;
//! * [`cmd`]: the command line, one module per subcommand;
//! * [`bench`]: `bench`, load and correctness measurements of a server.

pub mod backlog;
pub mod bench;
pub mod certs;
pub mod client;
pub mod cmd;
pub mod connection;
pub mod console;
pub mod protocol;
pub mod rate;
pub mod room;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod tls;
