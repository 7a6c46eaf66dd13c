//! `chatroom lab`: the attacker's tools for the classroom, kept to this
//! machine. [`relay`] is a man in the middle between a client and the
//! server on loopback addresses: it shows what passes both ways (text
//! lines as text, TLS records as type and length, [`stream`]) and, on
//! command, injects a line, drops or replays one of the client's records,
//! so that a student sees what TLS does to each (docs/lab.md, exercise 3).
//! [`console`] reads those commands and prints the report.

pub mod console;
pub mod relay;
mod stream;
