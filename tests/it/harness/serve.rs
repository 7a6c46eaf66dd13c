//! The built `chatroom` binary's `serve` as a user runs it: a child
//! process, read through its log.

use super::WAIT;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

/// The built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_chatroom");

/// A running `serve`, killed when dropped.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    stderr: Lines<BufReader<ChildStderr>>,
    /// What it logged so far, as read by `start` and `wait_for_log`.
    startup_log: Vec<String>,
}

impl Serve {
    /// `serve` on 127.0.0.1:0 in `dir` (which gets its certificates on
    /// first start) with `extra` arguments; returns once it listens.
    pub async fn start(dir: &Path, extra: &[&str]) -> Serve {
        Self::start_env(dir, extra, &[]).await
    }

    /// [`Serve::start`] with extra environment variables for the server
    /// (`SSLKEYLOGFILE`, say), and without any it would inherit from the
    /// test's own environment under the names in `envs`.
    pub async fn start_env(dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Serve {
        Self::start_at(dir, "127.0.0.1:0", extra, envs).await
    }

    /// [`Serve::start`] on `addr`: the address of a server stopped before,
    /// to start it again where its clients knew it.
    pub async fn start_on(dir: &Path, addr: &str, extra: &[&str]) -> Serve {
        Self::start_at(dir, addr, extra, &[]).await
    }

    async fn start_at(dir: &Path, addr: &str, extra: &[&str], envs: &[(&str, &str)]) -> Serve {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--addr", addr])
            .args(extra)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env_remove("SSLKEYLOGFILE")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("serve starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        // The port is known once the server says where it listens.
        let mut startup_log = Vec::new();
        let addr = tokio::time::timeout(WAIT, async {
            loop {
                let Some(line) = stderr.next_line().await.expect("read") else {
                    panic!("serve exited early:\n{}", startup_log.join("\n"));
                };
                startup_log.push(line.clone());
                if let Some(rest) = line.split("listening addr=").nth(1) {
                    return rest.split_whitespace().next().expect("address").to_owned();
                }
            }
        })
        .await
        .expect("serve listens in time");
        Serve {
            child,
            addr,
            stderr,
            startup_log,
        }
    }

    /// The address it listens on.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().expect("address")
    }

    /// Sends the server a signal, by name (`TERM`, `HUP`, ...).
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("serve is running").to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Reads the server's log until a line contains `needle`; returns it.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self
                    .stderr
                    .next_line()
                    .await
                    .expect("read")
                    .expect("serve exited early");
                let found = line.contains(needle);
                self.startup_log.push(line.clone());
                if found {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line with {needle:?} within {WAIT:?}"))
    }

    /// Stops the server and returns everything it logged.
    pub async fn kill_and_log(mut self) -> String {
        self.child.start_kill().expect("kill");
        let mut log = std::mem::take(&mut self.startup_log);
        while let Ok(Some(line)) = self.stderr.next_line().await {
            log.push(line);
        }
        log.join("\n")
    }

    /// What the server logged up to now (as far as it has been read).
    pub fn log_so_far(&self) -> String {
        self.startup_log.join("\n")
    }
}
