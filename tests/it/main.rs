//! The integration tests, as one test binary (one link of the crate): the
//! real server over real TLS on loopback, the built `chatroom` binary, a
//! real nats-server, tmux and tshark where a test needs them. `harness`
//! holds what the tests share. (The checks on the documents are
//! tests/docs_commands.rs, on their own.)
//!
//! Tests run in parallel threads of this one process; anything that would
//! change the whole process (its open-files limit, its log subscriber)
//! runs in a process of its own (see `harness::alone`).

mod harness;

mod admission;
mod adversarial;
mod backlog;
mod bench;
mod big_rooms;
mod capture;
mod cert_tooling;
mod channels;
mod chat;
mod cli;
mod client_certs;
mod client_reconnect;
mod cluster;
mod commands;
mod demo;
mod history_channels;
mod history_disk;
mod history_store;
mod key_files;
mod lab_exercises;
mod lab_handout;
mod layout;
mod lookalikes;
mod metrics;
mod mutual_tls_reload;
mod open_files;
mod operators;
mod props;
mod quiet_start;
mod reconnect_flood;
mod reload;
mod review_certs;
mod review_client;
mod room_conformance;
mod settings;
mod shutdown_drain;
mod socket_limits;
mod systemd_unit;
mod terminal;
mod tls_options;
mod tls_records;
mod tls_stream;
mod web;
