//! `chatroom connect` in a real terminal (tmux): the nickname prompt, and a
//! line received while the user is typing printed above the line being
//! typed, which stays intact; lines typed ahead, faster than each is sent,
//! all sent in order; and when the server goes, the client says so and
//! leaves the terminal as it found it.
//!
//! Needs tmux; CI installs it. Elsewhere, without tmux, the test says so and
//! passes.

use crate::harness::{BIN, Serve, WAIT};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A tmux server of the test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "chat"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-t", "chat", "-p"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `done`; fails after WAIT.
    async fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let polled = tokio::time::timeout(WAIT, async {
            loop {
                tick.tick().await;
                let screen = self.screen();
                if done(&screen) {
                    return screen;
                }
            }
        })
        .await;
        polled.unwrap_or_else(|_| panic!("screen never showed {what}:\n{}", self.screen()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn last_line(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

#[tokio::test]
async fn typing_survives_incoming_lines_and_the_terminal_is_restored() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tmux (see .ci/run)"
        );
        eprintln!("tmux not installed: terminal test not run");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let serve = Serve::start(dir, &[]).await;
    let tmux = Tmux {
        socket: format!("chatroom-test-{}", std::process::id()),
    };
    // A plain sh, which leaves the terminal's settings alone, so that what
    // `stty` reports at the end is what the client left behind.
    let dir_arg = dir.to_str().expect("utf-8 path");
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "chat",
        "-x",
        "100",
        "-y",
        "30",
        "-c",
        dir_arg,
        "sh",
    ]);
    assert!(started.status.success(), "{started:?}");
    let client = format!("{BIN} connect --addr {}; echo EXIT=$?", serve.addr);
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
    let rest = tokio::time::timeout(WAIT, async {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = bob_hears.next_line().await {
            if let Some(text) = line.strip_prefix("alice: ") {
                rest.push(text.to_owned());
                if text == "three" {
                    break;
                }
            }
        }
        rest
    })
    .await
    .unwrap_or_else(|_| panic!("bob never heard \"three\":\n{}", tmux.screen()));
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
