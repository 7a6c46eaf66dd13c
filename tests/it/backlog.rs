//! The room's backlog, bounded by memory: a burst of small lines at the
//! server's defaults loses nobody, and however far a reader falls behind,
//! the lines waiting for it cost the server at most `--backlog` bytes (plus
//! a stated constant), measured from /proc.
//!
//! A participant that is behind has its own input left unread until it has
//! caught up.
//!
//! (That a participant which never reads is still disconnected once it is
//! `--backlog` behind, while the others lose nothing, is the stuck-reader
//! test in `adversarial`.)

use crate::harness::{Client, Serve, TestServer, WAIT, stuck_reader};
use chatroom::bench::{BenchOptions, Case, Target, TlsTarget};
use std::net::SocketAddr;
use std::time::Duration;

/// The burst: 100 participants each send 200 lines of 64 bytes as
/// fast as TCP takes them, without waiting for their own lines to come back
/// (`bench --scenario fanout --window 0`), against a server with its
/// defaults (rate limit off). The bench's clients check that each of them
/// got all 20,000 lines, intact, once each, in the one order, and that
/// nobody was disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_small_lines_at_the_defaults_reaches_every_participant() {
    let server = TestServer::start().await;
    let target = Target {
        addr: server.addr(),
        more_addrs: Vec::new(),
        tls: Some(TlsTarget {
            config: server.client_tls.clone(),
            server_name: chatroom::tls::server_name("127.0.0.1").expect("name"),
        }),
        server_pid: None,
        spawned: false,
    };
    let opts = BenchOptions {
        clients: Some(100),
        messages: 200,
        size: 64,
        window: Some(0),
        stall_timeout: WAIT,
        timeout: Duration::from_secs(60),
        ..BenchOptions::default()
    };
    let result = tokio::time::timeout(
        opts.timeout + WAIT,
        chatroom::bench::run_scenario(&target, Case::Fanout, &opts),
    )
    .await
    .expect("the burst ends by itself")
    .expect("the burst runs");
    assert!(
        result.ok,
        "lines lost or participants dropped: {:?}",
        result.problems
    );
    assert_eq!(result.messages_sent, 100 * 200);
    assert_eq!(
        result.deliveries,
        100 * 100 * 200,
        "every participant got all 20,000 lines"
    );
    assert_eq!(result.deliveries, result.expected_deliveries);
    server.server.stop().await.expect("server stops");
}

/// The memory bound, measured. A server with `--backlog 16MiB`; one
/// participant that never reads (its kernel takes a few KiB, then nothing),
/// and one that sends the longest lines the server allows (4096 bytes) and
/// reads them back, until the one that never reads has been dropped for
/// falling behind: by then the ring was full and kept at its bound. The
/// server's peak resident memory (VmHWM) above what it used before the
/// flood must be within the bound plus a constant, and at least half the
/// bound (or the ring never filled, and the test would prove nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_holds_the_server_to_its_bound_in_memory() {
    const BOUND: u64 = 16 << 20;
    /// Beyond the ring: the sessions' write batches and TLS buffers, the
    /// allocator's own bookkeeping, and what the test's few connections
    /// cost the server.
    const CONSTANT: u64 = 8 << 20;
    let tmp = tempfile::tempdir().expect("temp");
    let serve = Serve::start(tmp.path(), &["--backlog", "16MiB", "--rate-limit", "off"]).await;
    let pid = serve.child.id().expect("serve runs");
    let addr: SocketAddr = serve.addr.parse().expect("address");
    let config = chatroom::tls::client_config(&tmp.path().join("certs/ca.pem")).expect("CA");

    let mut stuck = stuck_reader(addr, config.clone()).await;
    stuck.register("stuck").await;
    let mut writer = Client::tls(addr, config).await;
    writer.register("writer").await;
    let before = proc_status_kib(pid, "VmRSS:") * 1024;

    let text = "m".repeat(chatroom::protocol::DEFAULT_MAX_LINE);
    // Three times the bound, in rounds of 32 lines, each read back before
    // the next round; the flood stops once `stuck` has been dropped.
    let most = 3 * BOUND as usize / text.len();
    let mut sent = 0;
    let mut stuck_left = false;
    while !stuck_left && sent < most {
        for _ in 0..32 {
            writer.conn.queue(format!("{text}\n").into());
        }
        writer.conn.flush().await.expect("send");
        let mut echoed = 0;
        while echoed < 32 {
            let line = writer.line().await;
            if line == "stuck left!" {
                stuck_left = true;
            } else {
                assert!(line.starts_with("writer: mmm"), "{line:.40}");
                echoed += 1;
            }
        }
        sent += 32;
    }
    assert!(
        stuck_left,
        "the participant that never reads was not dropped"
    );
    let peak = proc_status_kib(pid, "VmHWM:") * 1024;
    let grew = peak.saturating_sub(before);
    eprintln!(
        "{sent} lines of {} bytes; resident before {} KiB, peak {} KiB: {} KiB more, bound {} KiB",
        text.len(),
        before / 1024,
        peak / 1024,
        grew / 1024,
        BOUND / 1024
    );
    assert!(
        grew <= BOUND + CONSTANT,
        "the server grew by {grew} bytes, beyond the bound {BOUND} plus {CONSTANT}"
    );
    assert!(
        grew >= BOUND / 2,
        "the server grew by only {grew} bytes: the ring never filled"
    );

    // The one that never read was told why, after an unbroken prefix.
    let said = tokio::time::timeout(WAIT, stuck.until_closed())
        .await
        .expect("the stuck reader's stream ends");
    assert_eq!(
        said.last().map(String::as_str),
        Some("ERROR disconnected: too slow")
    );
    assert!(
        said[..said.len() - 1]
            .iter()
            .all(|line| line == "writer joined!" || line.starts_with("writer: mmm"))
    );
    writer.close().await;
    drop(serve);
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// `--backlog` takes a size in bytes or binary units, and refuses what it
/// cannot honour with a reason, before listening.
/// A participant that is behind the room has its own lines left unread
/// until it has caught up: it slows itself down, not the room. Bob reads
/// the room in small steps while far behind; after each step alice's probe
/// comes back to her before anything of bob's, though his line waits in
/// his socket all along; once he has read everything, it is read and said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_behind_the_room_is_not_read_until_it_catches_up() {
    let server = TestServer::start_with(|s| {
        s.limits.rate = None;
        s.backlog = 32 << 20;
        s.exempt = vec!["127.0.0.0/8".parse().expect("net")];
    })
    .await;
    let mut alice = server.join("alice").await;
    let mut bob = server
        .connect_from("127.0.0.2".parse().expect("ip"), Some(4096))
        .await
        .expect("bob connects");
    bob.register("bob").await;
    alice.expect("bob joined!").await;

    // Far more than the kernel's buffers on both sides of bob's socket
    // take (the server's grows up to 4 MiB): his session is behind, by far.
    const FLOOD: usize = 3000;
    let text = "x".repeat(4000);
    for i in 0..FLOOD {
        alice.send(&format!("{i} {text}")).await;
        alice.expect(&format!("alice: {i} {text}")).await;
    }
    bob.send("hi").await;

    // Each step lets bob's session write many batches, and so turn its
    // loop many times, each time with room lines still waiting for him.
    // (The kernel wakes a writer only once a good part of its buffer is
    // free: a step is a few hundred lines.)
    let mut read = 0;
    for probe in 0..4 {
        for _ in 0..400 {
            assert_eq!(bob.line().await, format!("alice: {read} {text}"));
            read += 1;
        }
        alice.send(&format!("probe {probe}")).await;
        assert_eq!(
            alice.line().await,
            format!("alice: probe {probe}"),
            "bob's line was read while he was {} lines behind",
            FLOOD - read
        );
    }
    // Caught up, bob is read again.
    while read < FLOOD {
        assert_eq!(bob.line().await, format!("alice: {read} {text}"));
        read += 1;
    }
    alice.expect("bob: hi").await;
}

#[tokio::test]
async fn serve_refuses_a_backlog_it_cannot_honour() {
    let tmp = tempfile::tempdir().expect("temp");
    for (args, reason) in [
        (&["--backlog", "64MB"][..], "is not a size"),
        (&["--backlog", "1KiB"], "--backlog 1024 bytes is too small"),
        // Four of the longest lines must fit.
        (
            &["--backlog", "64KiB", "--max-line", "65536"],
            "four lines of --max-line",
        ),
    ] {
        let out = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new(crate::harness::BIN)
                .args(["serve", "--addr", "127.0.0.1:0", "--plaintext"])
                .args(args)
                .current_dir(tmp.path())
                .output(),
        )
        .await
        .expect("serve ends in time")
        .expect("serve runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

/// The room's history is shared, not copied per newcomer: a server keeping
/// 200 lines of 64,000 bytes (12.5 MiB) takes 20 newcomers that never read
/// a byte, each of which has the whole history due, and its resident memory
/// grows by a fraction of one history, not twenty (each newcomer holds at
/// most one write batch of it, and a reference to the room's copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_newcomers_share_the_history_instead_of_copying_it() {
    const LINES: usize = 200;
    const NEWCOMERS: usize = 20;
    let tmp = tempfile::tempdir().expect("temp");
    let serve = Serve::start(
        tmp.path(),
        &[
            "--max-line",
            "65000",
            "--history",
            "200",
            "--rate-limit",
            "off",
        ],
    )
    .await;
    let pid = serve.child.id().expect("serve runs");
    let addr: SocketAddr = serve.addr.parse().expect("address");
    let config = chatroom::tls::client_config(&tmp.path().join("certs/ca.pem")).expect("CA");
    let mut writer = Client::tls(addr, config.clone()).await;
    writer.register("writer").await;
    let text = "h".repeat(64_000);
    for _ in 0..LINES / 20 {
        for _ in 0..20 {
            writer.conn.queue(format!("{text}\n").into());
        }
        writer.conn.flush().await.expect("send");
        for _ in 0..20 {
            assert!(writer.line().await.starts_with("writer: hhh"));
        }
    }
    let history = (LINES * text.len()) as u64;
    let before = proc_status_kib(pid, "VmRSS:") * 1024;

    let mut silent = Vec::new();
    for i in 0..NEWCOMERS {
        let mut newcomer = stuck_reader(addr, config.clone()).await;
        newcomer.register(&format!("silent{i}")).await;
        silent.push(newcomer);
    }
    for i in 0..NEWCOMERS {
        writer.expect(&format!("silent{i} joined!")).await;
    }
    // A round trip through the room after the last join: every newcomer's
    // session has had its turn to start on the history.
    writer.send("after").await;
    writer.expect("writer: after").await;
    let after = proc_status_kib(pid, "VmRSS:") * 1024;
    let grew = after.saturating_sub(before);
    eprintln!(
        "history {} KiB; resident before {} KiB, after {NEWCOMERS} silent newcomers {} KiB",
        history / 1024,
        before / 1024,
        after / 1024
    );
    assert!(
        grew < history / 2,
        "{NEWCOMERS} silent newcomers grew the server by {grew} bytes, for a history of {history}"
    );
    drop(silent);
    writer.close().await;
    drop(serve);
}
