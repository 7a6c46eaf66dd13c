//! The server: from an accepted socket to a participant in the room.
//!
//! The listener accepts and admits connections (open sockets, participants,
//! [`per_address`] limits), runs the TLS handshake under a deadline and
//! hands each connection to its [`session`]. [`access`] says who may join
//! (client certificates, the CRL, denied names); [`rate`] is the token
//! bucket every participant's lines spend; [`log_limit`] keeps refusals
//! from flooding the log; [`shutdown`] is the stop signal as each task sees
//! it (given on SIGINT or SIGTERM); [`reload`] loads the certificate and the access policy at start and
//! again on SIGHUP; [`metrics`] counts what operations watch (`serve
//! --metrics`); [`web`] is `serve --web`, the browser's door: the chat
//! page and a WebSocket into the same sessions.

pub mod access;
pub mod admission;
mod listener;
pub mod log_limit;
pub mod metrics;
pub mod moderation;
pub mod per_address;
pub mod rate;
pub mod reload;
pub mod session;
pub mod shutdown;
pub mod web;

pub use listener::{RunningServer, Server, Settings};
