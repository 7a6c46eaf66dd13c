//! `serve --data DIR`: the room's public lines on disk, the built binary
//! with real clients over TLS.

use crate::harness::cli;
use crate::harness::{Client, Serve, TlsClient, WAIT};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The retention line a newcomer gets with the default `--retain`.
const KEPT_30_DAYS: &str = "[history] this room keeps its lines for 30 days";

/// The retention line with `--retain 2s`.
const KEPT_2_SECONDS: &str = "[history] this room keeps its lines for 2 seconds";

/// Joins as `nick` a room with the default retention; returns the client
/// and its history.
async fn join(serve: &Serve, dir: &Path, nick: &str) -> (TlsClient, Vec<String>) {
    join_kept(serve, dir, nick, KEPT_30_DAYS).await
}

/// Joins as `nick`; returns the client and its history (the lines after
/// `Connected to server!` up to the retention line `kept`, which must come).
async fn join_kept(serve: &Serve, dir: &Path, nick: &str, kept: &str) -> (TlsClient, Vec<String>) {
    let config = chatroom::tls::client_config(&dir.join("certs/ca.pem")).expect("CA");
    let mut client = Client::tls(serve.socket_addr(), config).await;
    let lines = client.join_lines(nick).await;
    assert_eq!(
        lines,
        [
            "NICK".to_owned(),
            format!("{nick} joined!"),
            "Connected to server!".to_owned()
        ]
    );
    let history = client.until(kept, WAIT).await;
    (client, history)
}

/// Stops `serve` with SIGTERM and waits for it to exit.
async fn stop(mut serve: Serve) {
    serve.signal("TERM").await;
    let status = tokio::time::timeout(WAIT, serve.child.wait())
        .await
        .expect("serve stops in time")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

/// Every file in `dir`, with its bytes and mode.
fn files(dir: &Path) -> Vec<(String, Vec<u8>, u32)> {
    std::fs::read_dir(dir)
        .expect("read DIR")
        .map(|e| {
            let path = e.expect("entry").path();
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            let bytes = std::fs::read(&path).expect("read");
            (path.display().to_string(), bytes, mode & 0o777)
        })
        .collect()
}

#[tokio::test]
async fn public_lines_survive_a_restart_and_private_ones_are_never_stored() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    let serve = Serve::start(tmp.path(), &["--data", data_arg]).await;
    let (mut alice, lines) = join(&serve, tmp.path(), "alice").await;
    // An empty room: no history, but the newcomer is told it is recorded.
    assert!(lines.is_empty(), "{lines:?}");
    let (mut bob, _) = join(&serve, tmp.path(), "bob").await;
    alice.send("hello bob").await;
    bob.until("alice: hello bob", WAIT).await;
    bob.send("/me waves").await;
    alice.until("* bob waves", WAIT).await;
    alice.send("/msg bob the-private-xyzzy").await;
    alice.send("bye").await;
    // The private line comes after the public lines said before it; a
    // public line said after it may come first.
    let private = "[private] alice -> bob: the-private-xyzzy";
    let mut seen = bob.until("alice: bye", WAIT).await;
    if !seen.iter().any(|line| line == private) {
        seen.push(bob.line().await);
    }
    assert_eq!(seen, ["* bob waves", private]);
    alice.send("/quit lunch").await;
    bob.until("alice left! (lunch)", WAIT).await;
    stop(serve).await;

    let serve = Serve::start(tmp.path(), &["--data", data_arg]).await;
    let (_carol, lines) = join(&serve, tmp.path(), "carol").await;
    assert_eq!(
        lines,
        [
            "[history] alice: hello bob",
            "[history] * bob waves",
            "[history] alice: bye",
        ]
    );
    stop(serve).await;

    assert_eq!(
        std::fs::metadata(&data).expect("DIR").permissions().mode() & 0o777,
        0o700
    );
    let files = files(&data);
    assert!(!files.is_empty());
    for (path, bytes, mode) in &files {
        assert_eq!(*mode, 0o600, "{path}");
        assert!(
            !bytes.windows(5).any(|w| w == b"xyzzy"),
            "a private line is in {path}"
        );
    }
    // What was public is there (the search above would pass on no file).
    let all: Vec<u8> = files.into_iter().flat_map(|f| f.1).collect();
    assert!(all.windows(9).any(|w| w == b"hello bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_middle_of_a_burst_loses_no_line_anyone_received() {
    const SENDERS: usize = 20;
    const LINES: usize = 50;
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    let mut serve = Serve::start(tmp.path(), &["--data", data_arg, "--rate-limit", "off"]).await;
    let (mut reader, _) = join(&serve, tmp.path(), "reader").await;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        senders.push(join(&serve, tmp.path(), &format!("s{s}")).await.0);
    }
    for (s, sender) in senders.iter_mut().enumerate() {
        for l in 0..LINES {
            sender.conn.queue(format!("line {s}-{l}\n").into());
        }
    }
    for sender in &mut senders {
        sender.conn.flush().await.expect("send");
    }
    // What the reader has received once the burst is under way, and up to
    // the end of its connection after the kill.
    let mut received = Vec::new();
    while received.len() < SENDERS + 100 {
        received.push(reader.line().await);
    }
    serve.child.start_kill().expect("kill -9");
    serve.child.wait().await.expect("wait");
    while let Some(line) = reader.next_line().await {
        received.push(line);
    }

    let stored = cli::exported(&data).await;
    let mut last = None;
    for line in &received {
        let at: Vec<usize> = (0..stored.len()).filter(|&i| stored[i] == *line).collect();
        assert_eq!(at.len(), 1, "{line:?} is stored {} times", at.len());
        assert!(last < Some(at[0]), "{line:?} is stored out of order");
        last = Some(at[0]);
    }
    eprintln!(
        "received {} lines, {} stored of {} said",
        received.len(),
        stored.len(),
        1 + SENDERS + SENDERS * LINES
    );
}

#[tokio::test]
async fn lines_older_than_the_retention_are_gone_after_a_restart() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    let args = ["--data", data_arg, "--retain", "2s"];
    let serve = Serve::start(tmp.path(), &args).await;
    let (mut alice, _) = join_kept(&serve, tmp.path(), "alice", KEPT_2_SECONDS).await;
    alice.send("remember the zanzibar plan").await;
    alice.until("alice: remember the zanzibar plan", WAIT).await;
    stop(serve).await;
    assert!(
        cli::history(&data, &["search", "zanzibar"])
            .await
            .ends_with("1 match\n")
    );

    // What is tested is time passing: the lines must be older than the
    // retention when the server starts again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let serve = Serve::start(tmp.path(), &args).await;
    let log = serve.log_so_far();
    assert!(log.contains("expired lines past the retention"), "{log}");
    assert!(log.contains("history store opened"), "{log}");
    let (_carol, history_lines) = join_kept(&serve, tmp.path(), "carol", KEPT_2_SECONDS).await;
    assert!(history_lines.is_empty(), "{history_lines:?}");
    stop(serve).await;
    assert_eq!(
        cli::history(&data, &["search", "zanzibar"]).await,
        "[search] no matches\n"
    );
    let stored = cli::exported(&data).await;
    assert!(
        !stored
            .iter()
            .any(|line| line.contains("zanzibar") || line.starts_with("alice")),
        "{stored:?}"
    );
    for (path, bytes, _) in files(&data) {
        assert!(
            !bytes.windows(8).any(|w| w == b"zanzibar"),
            "an expired line is still in {path}"
        );
    }
}

/// What a sender is told about a line the store could not take.
const NOT_SENT: &str = "ERROR message not sent: the history store is unavailable";

#[tokio::test]
async fn a_full_store_refuses_lines_tells_their_senders_and_recovers() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    let args = [
        "--data",
        data_arg,
        "--data-max-bytes",
        "128KiB",
        "--rate-limit",
        "off",
    ];
    let serve = Serve::start(tmp.path(), &args).await;
    let (mut alice, _) = join(&serve, tmp.path(), "alice").await;
    let (mut bob, _) = join(&serve, tmp.path(), "bob").await;
    alice.expect("bob joined!").await;
    // Lines of 1,500 bytes until one is refused: two fit in a page of the
    // table, so the page it was refused after has about a thousand bytes
    // left, room for a short line.
    let mut refused = None;
    for i in 0..2000 {
        let text = format!("w{i:05}x {}", "z".repeat(1492));
        alice.send(&text).await;
        let answer = alice.line().await;
        if answer == NOT_SENT {
            refused = Some(i);
            break;
        }
        assert_eq!(answer, format!("alice: {text}"));
    }
    let refused = refused.expect("the store filled up");
    // Refused again, logged once.
    for _ in 0..3 {
        alice.send(&"y".repeat(2000)).await;
        alice.expect(NOT_SENT).await;
    }
    // A short line still fits: the next batch that can be stored is.
    alice.send("still here").await;
    alice.expect("alice: still here").await;
    let seen = bob.until("alice: still here", WAIT).await;
    assert!(
        !seen
            .iter()
            .any(|line| line.contains(&format!("w{refused:05}x ")))
    );
    assert!(!seen.iter().any(|line| line.contains("yyy")));
    assert_eq!(seen.len(), refused, "bob got the lines stored, no other");
    // Short lines until none fits; then a join is refused too, and may be
    // tried again.
    let mut short = 0;
    loop {
        short += 1;
        assert!(short < 1000, "the store never filled up");
        alice.send(&format!("short {short}")).await;
        if alice.line().await == NOT_SENT {
            break;
        }
    }
    // A join stores less than a message: newcomers until one is refused,
    // which may answer NICK again.
    let config = chatroom::tls::client_config(&tmp.path().join("certs/ca.pem")).expect("CA");
    let mut joined = Vec::new();
    let refused_join = loop {
        assert!(joined.len() < 200, "every join fitted");
        let mut newcomer = Client::tls(serve.socket_addr(), config.clone()).await;
        newcomer.expect("NICK").await;
        newcomer.send(&format!("n{}", joined.len())).await;
        let answer = newcomer.line().await;
        if answer == "ERROR the history store is unavailable" {
            break newcomer;
        }
        assert_eq!(answer, format!("n{} joined!", joined.len()));
        joined.push(newcomer);
    };
    let mut refused_join = refused_join;
    refused_join.expect("NICK").await;
    // The server is alive: what needs no store still works.
    alice.send("/list").await;
    let list = loop {
        let line = alice.line().await;
        if line.starts_with("[list] ") {
            break line;
        }
        assert!(line.ends_with(" joined!"), "{line}");
    };
    assert!(list.contains("alice, bob"), "{list}");
    let log = serve.kill_and_log().await;
    let first_outage = log
        .split("the history store works again")
        .next()
        .expect("a first part");
    let logged = first_outage.matches("the history store is unavailable: lines are refused");
    assert_eq!(logged.count(), 1, "once per outage:\n{log}");
    assert!(log.contains("the history store works again"), "{log}");
}

#[tokio::test]
async fn history_and_search_answer_the_asker_from_the_store() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    let args = [
        "--data",
        data_arg,
        "--history",
        "3",
        "--rate-limit",
        "off",
        "--fsync",
        "always",
    ];
    let serve = Serve::start(tmp.path(), &args).await;
    let (mut alice, _) = join(&serve, tmp.path(), "alice").await;
    alice.send("deploy at noon, ok?").await;
    for i in 1..=30 {
        alice.send(&format!("line {i}")).await;
    }
    alice.send("/me starts the deploy").await;
    alice.until("* alice starts the deploy", WAIT).await;
    let (mut bob, history) = join(&serve, tmp.path(), "bob").await;
    assert_eq!(
        history,
        [
            "[history] alice: line 29",
            "[history] alice: line 30",
            "[history] * alice starts the deploy"
        ]
    );
    alice.send("/msg bob the secret deploy").await;
    bob.expect("[private] alice -> bob: the secret deploy")
        .await;

    // Before the oldest line shown, and before that the next time.
    bob.send("/history 2").await;
    bob.expect("[history] alice: line 27").await;
    bob.expect("[history] alice: line 28").await;
    bob.send("/history").await;
    let mut earlier = Vec::new();
    for _ in 0..20 {
        earlier.push(bob.line().await);
    }
    assert_eq!(earlier[0], "[history] alice: line 7");
    assert_eq!(earlier[19], "[history] alice: line 26");
    bob.send("/history 200").await;
    let mut first = Vec::new();
    for _ in 0..7 {
        first.push(bob.line().await);
    }
    assert_eq!(first[0], "[history] alice: deploy at noon, ok?");
    assert_eq!(first[6], "[history] alice: line 6");

    // Newest first; a private line is never found.
    bob.send("/search DEPLOY").await;
    let found = bob.line().await;
    assert!(found.starts_with("[search] 20"), "{found}");
    assert!(found.ends_with(" * alice starts the deploy"), "{found}");
    let found = bob.line().await;
    assert!(found.ends_with(" alice: deploy at noon, ok?"), "{found}");
    bob.expect("[search] 2 matches").await;
    bob.send("/search secret").await;
    bob.expect("[search] no matches").await;
    for hostile in ["') OR 1=1 --", "NEAR(deploy", "a:b deploy*", "\"deploy"] {
        bob.send(&format!("/search {hostile}")).await;
        // Found lines, then how many: never an error.
        for _ in 0..=20 {
            let answer = bob.line().await;
            assert!(answer.starts_with("[search] "), "{hostile}: {answer}");
            if answer.ends_with("match") || answer.ends_with("matches") {
                break;
            }
        }
    }
    bob.send("/search \"*\"").await;
    bob.expect("ERROR give at least one word to search for")
        .await;
    bob.send(&format!("/search {}", "deploy ".repeat(40))).await;
    bob.expect("ERROR search words are longer than 200 bytes")
        .await;
    bob.send("/help").await;
    let help = bob
        .until("[help] //TEXT: send a message that starts with /", WAIT)
        .await;
    assert_eq!(help.len(), chatroom::protocol::HELP.len() - 1, "{help:?}");
    let more = [bob.line().await, bob.line().await];
    assert!(more[0].starts_with("[help] /history [N]"), "{more:?}");
    assert!(more[1].starts_with("[help] /search WORDS"), "{more:?}");
    stop(serve).await;
}

#[tokio::test]
async fn a_search_spends_the_rate_of_several_lines() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    // One line a second, five at once: a search takes the whole burst.
    let args = ["--data", data_arg, "--rate-limit", "1/5"];
    let serve = Serve::start(tmp.path(), &args).await;
    let (mut alice, _) = join(&serve, tmp.path(), "alice").await;
    let sent = std::time::Instant::now();
    alice.send("/search anything").await;
    alice.send("hello").await;
    alice.expect("[search] no matches").await;
    alice.expect("alice: hello").await;
    // The message waited for a token the search had spent.
    let waited = sent.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(500),
        "{waited:?}"
    );
    stop(serve).await;
}
