//! `chatroom connect` in a real terminal (tmux): the nickname prompt, and a
//! line received while the user is typing printed above the line being
//! typed, which stays intact; lines typed ahead, faster than each is sent,
//! all sent in order; and when the server goes, the client says so and
//! leaves the terminal as it found it.
//!
//! Needs tmux; CI installs it. Elsewhere, without tmux, the test says so and
//! passes.

use crate::harness::tmux::{Tmux, last_line};
use crate::harness::{BIN, Serve, WAIT};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test]
async fn typing_survives_incoming_lines_and_the_terminal_is_restored() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let Some(tmux) = Tmux::start("typing", dir, 100, 30) else {
        return;
    };
    let serve = Serve::start(dir, &[]).await;
    // Without reconnecting, so that the server's end is the client's.
    let client = format!(
        "{BIN} connect --no-reconnect --addr {}; echo EXIT=$?",
        serve.addr
    );
    tmux.keys(&[&client, "Enter"]);

    tmux.wait_until("the nickname prompt", |s| {
        last_line(s) == "Choose your nickname:"
    })
    .await;
    tmux.keys(&["alice", "Enter"]);
    tmux.wait_until("the welcome", |s| s.contains("Connected to server!"))
        .await;

    // Alice starts typing; bob speaks before she is done.
    tmux.keys(&["hel"]);
    tmux.wait_until("the typed text", |s| last_line(s) == "hel")
        .await;
    let mut bob = tokio::process::Command::new(BIN)
        .args(["connect", "--addr", &serve.addr, "--nick", "bob"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bob starts");
    let mut bob_says = bob.stdin.take().expect("stdin");
    let mut bob_hears = BufReader::new(bob.stdout.take().expect("stdout")).lines();
    bob_says.write_all(b"hi from bob\n").await.expect("write");

    // Bob's line appears above alice's unfinished line, which is intact.
    let screen = tmux
        .wait_until("bob's line", |s| s.contains("bob: hi from bob"))
        .await;
    assert_eq!(last_line(&screen), "hel", "{screen}");

    // She finishes the line she was typing, and it is sent whole.
    tmux.keys(&["lo", "Enter"]);
    tmux.wait_until("her message", |s| s.contains("alice: hello"))
        .await;
    let heard = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = bob_hears.next_line().await {
            if line == "alice: hello" {
                return true;
            }
        }
        false
    })
    .await
    .expect("bob hears alice in time");
    assert!(heard);

    // Typeahead: three lines typed faster than each is sent all arrive, in
    // order. The keys reach the terminal in one burst, so the line editor
    // reads them in one go and must keep what follows the first Enter.
    tmux.keys(&["one", "Enter", "two", "Enter", "three", "Enter"]);
    let mut heard = Vec::new();
    let told = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = bob_hears.next_line().await {
            let three = line == "alice: three";
            heard.push(line);
            if three {
                break;
            }
        }
    })
    .await;
    assert!(
        told.is_ok(),
        "bob never heard \"three\"; he heard {heard:?}; alice's screen:\n{}",
        tmux.screen()
    );
    let rest: Vec<&str> = heard
        .iter()
        .filter_map(|line| line.strip_prefix("alice: "))
        .collect();
    assert_eq!(rest, ["one", "two", "three"]);
    drop(bob_says);

    // The server stops: the client shows why, waits for Enter, exits 0, and
    // leaves the terminal with echo on.
    serve.signal("TERM").await;
    let screen = tmux
        .wait_until("the notice", |s| s.contains("press Enter to leave"))
        .await;
    assert!(screen.contains("Server is shutting down"), "{screen}");
    tmux.keys(&["Enter"]);
    tmux.wait_until("a clean exit", |s| s.contains("EXIT=0"))
        .await;
    tmux.keys(&[
        "stty -a | grep -c -- ' echo ' | sed 's/^/echo-lines=/'",
        "Enter",
    ]);
    tmux.wait_until("echo on", |s| s.lines().any(|l| l == "echo-lines=1"))
        .await;
    let _ = serve.kill_and_log().await;
}

/// A sent line shows once, as the server's echo marked as one's own, not
/// also as typed; when the server restarts, the client says so and is back
/// in the room without a keystroke, its line editor still working.
#[tokio::test]
async fn a_sent_line_shows_once_and_a_restart_needs_no_keystroke() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let Some(tmux) = Tmux::start("echo", dir, 100, 30) else {
        return;
    };
    let serve = Serve::start(dir, &[]).await;
    let client = format!(
        "NO_COLOR=1 {BIN} connect --addr {} --nick alice; echo EXIT=$?",
        serve.addr
    );
    tmux.keys(&[&client, "Enter"]);
    tmux.wait_until("the welcome", |s| s.contains("Connected to server!"))
        .await;
    tmux.keys(&["hello", "Enter"]);
    let screen = tmux
        .wait_until("the echo", |s| s.contains("alice: hello"))
        .await;
    assert_eq!(screen.matches("hello").count(), 1, "{screen}");
    assert!(screen.lines().all(|row| row.trim() != "hello"), "{screen}");
    // A long line, wrapped by the editor over two rows, goes whole too.
    let long = "x".repeat(150);
    tmux.keys(&[&long, "Enter"]);
    let screen = tmux
        .wait_until("the long echo", |s| s.contains("alice: xxxx"))
        .await;
    assert!(
        screen.lines().all(|row| !row.starts_with("xxxx")),
        "{screen}"
    );

    let addr = serve.addr.clone();
    let _ = serve.kill_and_log().await;
    tmux.wait_until("the notice", |s| s.contains("reconnecting in"))
        .await;
    let serve = Serve::start_on(dir, &addr, &[]).await;
    tmux.wait_until("the second welcome", |s| {
        s.matches("Connected to server!").count() == 2
    })
    .await;
    tmux.keys(&["again", "Enter"]);
    let screen = tmux
        .wait_until("the echo", |s| s.contains("alice: again"))
        .await;
    assert_eq!(screen.matches("again").count(), 1, "{screen}");
    tmux.keys(&["/quit", "Enter"]);
    tmux.wait_until("a clean exit", |s| s.lines().any(|l| l == "EXIT=0"))
        .await;
    let _ = serve.kill_and_log().await;
}
