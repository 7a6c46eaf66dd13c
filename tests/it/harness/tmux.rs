//! A real terminal for `chatroom connect`: a tmux server of the test's own
//! (its own socket, killed when dropped) with one session running a plain
//! `sh`, which leaves the terminal's settings alone, so that what `stty`
//! reports there is what the client left behind.
//!
//! Needs tmux; CI installs it. Elsewhere, without tmux, a test says so and
//! passes.

use super::WAIT;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A session `chat` running `sh` in `dir`, `width` columns by `height`
    /// rows, on a server named after `name` and this process; `None` if
    /// tmux is not installed (outside CI).
    pub fn start(name: &str, dir: &Path, width: u16, height: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install tmux (see .ci/run)"
            );
            eprintln!("tmux not installed: terminal test not run");
            return None;
        }
        let tmux = Tmux {
            socket: format!("chatroom-{name}-{}", std::process::id()),
        };
        let (width, height) = (width.to_string(), height.to_string());
        let dir = dir.to_str().expect("utf-8 path");
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            &width,
            "-y",
            &height,
            "-c",
            dir,
            "sh",
        ]);
        assert!(started.status.success(), "{started:?}");
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// Types `keys` (tmux key names such as `Enter`, or text).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "chat"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// The screen as text.
    pub fn screen(&self) -> String {
        self.capture(&[])
    }

    /// The screen with its colours and effects, as escape sequences.
    pub fn coloured_screen(&self) -> String {
        self.capture(&["-e"])
    }

    fn capture(&self, options: &[&str]) -> String {
        let mut args = vec!["capture-pane", "-t", "chat", "-p"];
        args.extend_from_slice(options);
        String::from_utf8_lossy(&self.run(&args).stdout).into_owned()
    }

    /// Waits until the screen satisfies `done`; fails after [`WAIT`].
    pub async fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
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

/// The last row of `screen` that is not blank.
pub fn last_line(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}
