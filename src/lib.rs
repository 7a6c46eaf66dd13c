//! chatroom: the lab's NICK-then-broadcast chat, made to keep its promises:
//! TLS with a pinned local CA, line framing, unique nicknames, one global
//! order of lines, and a server no single connection can stall.
//!
//! Where things live:
//! * [`protocol`]: framing, nickname rules, line texts (pure, fuzzable);
//! * [`room`]: who is here and the one order of lines, behind a trait;
//! * [`backlog`]: the room's ring of recent lines, bounded in bytes;
//! * [`backplane`]: the same room shared by several servers through NATS
//!   JetStream (`serve --cluster`);
//! * [`mailbox`], [`history`]: private messages (`/msg`) and the lines kept
//!   for newcomers (`--history`), held by the room beside its ring;
//! * [`session`]: one participant's life (NICK, read, write, limits);
//! * [`connection`]: a stream as lines in, batched lines out;
//! * [`server`]: accept loop, admission limits, shutdown;
//! * [`shutdown`]: the stop signal as each task sees it;
//! * [`rate`]: the token bucket;
//! * [`per_address`]: limits per source address, shared by all of its
//!   connections and outliving them (attempts, joins, messages);
//! * [`admission`]: what an admitted connection holds against the limits;
//! * [`log_limit`]: log lines that could flood, summarized past a few a
//!   second;
//! * [`tls`]: rustls configs, PEM loading, pinning, error explanations;
//! * [`certs`]: `gen-certs` and `certs`: the local CA, server and client
//!   certificates, revocation, inspection;
//! * [`access`]: who may join: client certificates, the CRL, denied names,
//!   reloaded on SIGHUP;
//! * [`client`]: `connect`, the terminal client;
//! * [`console`]: the client's keyboard and screen: a line editor in a
//!   terminal, plain lines with pipes;
//! * [`display`]: how the client shows a line in a terminal: time, marks,
//!   colours, continuation rows;
//! * [`cmd`]: the command line, one module per subcommand;
//! * [`bench`](mod@crate::bench): `bench`, load and correctness measurements of a server.

pub mod access;
pub mod admission;
pub mod backlog;
pub mod backplane;
pub mod bench;
pub mod certs;
pub mod client;
pub mod cmd;
pub mod connection;
pub mod console;
pub mod display;
pub mod history;
pub mod log_limit;
pub mod mailbox;
pub mod per_address;
pub mod protocol;
pub mod rate;
pub mod room;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod tls;
