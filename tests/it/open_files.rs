//! Out of file descriptors at accept (EMFILE): the server logs it, backs
//! off (the waits grow instead of spinning), keeps its participants, and
//! accepts again once descriptors are free. The connections the server
//! cannot accept are connected from sockets made beforehand, so that one
//! is always waiting in its backlog however the two sides interleave.
//! It lowers the whole process's open-files limit and sets its global log
//! subscriber, so it runs in a process of its own.

use crate::harness::alone::in_own_process;
use crate::harness::{TestServer, WAIT};
use rlimit::Resource;
use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::time::Instant;

/// Log output, one write (one event) at a time, to a channel.
struct LogLines(mpsc::Sender<(Instant, String)>);

impl Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self
            .0
            .send((Instant::now(), String::from_utf8_lossy(buf).into_owned()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

#[test]
fn out_of_descriptors_at_accept_the_server_backs_off_and_recovers() {
    in_own_process(
        concat!(
            module_path!(),
            "::out_of_descriptors_at_accept_the_server_backs_off_and_recovers"
        ),
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(backs_off_and_recovers());
        },
    );
}

async fn backs_off_and_recovers() {
    let (log_tx, log_rx) = mpsc::channel();
    let log_tx = std::sync::Mutex::new(log_tx);
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || LogLines(log_tx.lock().expect("log lock").clone()))
        .init();

    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;

    // Sockets made while descriptors are still free: connecting them later
    // needs none on this side, so each one leaves a connection waiting in
    // the server's backlog for a descriptor it cannot have.
    let waiting: Vec<TcpSocket> = (0..4)
        .map(|_| TcpSocket::new_v4().expect("a socket"))
        .collect();

    // Take every descriptor the process has left, under a low limit.
    let (soft, hard) = Resource::NOFILE.get().expect("getrlimit");
    Resource::NOFILE
        .set(open_descriptors() + 16, hard)
        .expect("setrlimit");
    let mut held = Vec::new();
    let exhausted = loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => held.push(file),
            Err(e) => break e,
        }
        assert!(held.len() < 100, "the limit did not bite");
    };
    assert_eq!(exhausted.raw_os_error(), Some(24), "{exhausted}"); // EMFILE
    let mut pending = Vec::new();
    for socket in waiting {
        let tcp = tokio::time::timeout(WAIT, socket.connect(server.addr()))
            .await
            .expect("connect timed out")
            .expect("connect into the backlog");
        pending.push(tcp);
    }

    // The server says so, and waits longer each time instead of spinning.
    let mut failures: Vec<Instant> = Vec::new();
    while failures.len() < 4 {
        let (at, line) = log_rx.recv_timeout(WAIT).expect("a log line in time");
        if line.contains("accept failed") {
            failures.push(at);
        }
    }
    for (n, pair) in failures.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let backoff = Duration::from_millis(10 << (n + 1));
        assert!(
            gap >= backoff / 2,
            "retry {n} after {gap:?}, backoff {backoff:?}"
        );
    }

    // Descriptors come back: the server accepts again, and alice never left.
    drop(held);
    drop(pending);
    Resource::NOFILE.set(soft, hard).expect("setrlimit");
    let mut bob = tokio::time::timeout(WAIT, server.connect())
        .await
        .expect("accepted again");
    bob.register("bob").await;
    alice.expect("bob joined!").await;
    bob.send("back to normal").await;
    alice.expect("bob: back to normal").await;
}
