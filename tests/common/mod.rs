//! Shared test fixtures: certificates from the project's own gen-certs in a
//! temporary folder, the real server on 127.0.0.1:0, and real rustls (or
//! plain TCP) clients that read lines with a timeout, so a broken build
//! fails instead of hanging.
#![allow(dead_code)]

use bytes::Bytes;
use chatroom::certs::{self, GenOptions};
use chatroom::connection::Connection;
use chatroom::server::{RunningServer, Settings};
use chatroom::tls;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, Command};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A certificate folder made by `gen-certs`.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn new() -> TestCerts {
        let dir = tempfile::tempdir().expect("temp dir");
        certs::generate(&GenOptions {
            dir: dir.path().to_path_buf(),
            extra_sans: Vec::new(),
            force: false,
        })
        .expect("gen-certs");
        TestCerts { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path(certs::CA_CERT)
    }

    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        tls::server_config(
            &self.path(certs::SERVER_CERT),
            &self.path(certs::SERVER_KEY),
        )
        .expect("server TLS config")
    }

    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        tls::client_config(&self.ca()).expect("client TLS config")
    }
}

/// A TLS server on an ephemeral loopback port, with its certificates.
pub struct TestServer {
    pub server: RunningServer,
    pub certs: TestCerts,
    pub client_tls: Arc<rustls::ClientConfig>,
}

impl TestServer {
    /// Default settings, except that tests chat faster than people.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let certs = TestCerts::new();
        let mut settings = Settings::new(Some(certs.server_tls()));
        settings.limits.rate = None;
        adjust(&mut settings);
        let server = RunningServer::start(loopback(), settings)
            .await
            .expect("server starts");
        let client_tls = certs.client_tls();
        TestServer {
            server,
            certs,
            client_tls,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// A TLS client, connected and past the handshake, not yet registered.
    pub async fn connect(&self) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
        Client::tls(self.addr(), self.client_tls.clone()).await
    }

    /// A TLS client that has joined as `nick` (its join lines consumed).
    pub async fn join(&self, nick: &str) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut client = self.connect().await;
        client.register(nick).await;
        client
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A line-reading chat client over any stream.
pub struct Client<S> {
    pub conn: Connection<S>,
}

impl Client<tokio_rustls::client::TlsStream<TcpStream>> {
    pub async fn tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        Self::try_tls(addr, config).await.expect("TLS handshake")
    }

    pub async fn try_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let name = tls::server_name("127.0.0.1").expect("name");
        let stream = tokio::time::timeout(
            WAIT,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
        Ok(Client {
            conn: Connection::new(stream, 1 << 20),
        })
    }
}

impl Client<TcpStream> {
    pub async fn plain(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Client {
            conn: Connection::new(tcp, 1 << 20),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// The next line, or `None` if the server closed the connection.
    /// Fails the test if nothing comes within [`WAIT`].
    pub async fn next_line(&mut self) -> Option<String> {
        match tokio::time::timeout(WAIT, self.conn.read_line()).await {
            Err(_) => panic!("no line from the server within {WAIT:?}"),
            Ok(Ok(Some(line))) => {
                Some(String::from_utf8(line.to_vec()).expect("server sent UTF-8"))
            }
            Ok(Ok(None)) => None,
            // A reset or a missing close_notify also ends the stream.
            Ok(Err(_)) => None,
        }
    }

    pub async fn line(&mut self) -> String {
        self.next_line()
            .await
            .expect("a line, not the end of the stream")
    }

    pub async fn expect(&mut self, expected: &str) {
        assert_eq!(self.line().await, expected);
    }

    /// Reads until the server closes; returns what it said on the way.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.next_line().await {
            lines.push(line);
        }
        lines
    }

    pub async fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.conn
            .send(Bytes::copy_from_slice(bytes))
            .await
            .expect("send");
    }

    /// Answers NICK with `nick` and reads the join lines.
    pub async fn register(&mut self, nick: &str) {
        self.expect("NICK").await;
        self.send(nick).await;
        self.expect(&format!("{nick} joined!")).await;
        self.expect("Connected to server!").await;
    }

    pub async fn close(mut self) {
        let _ = self.conn.shutdown().await;
    }
}

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
    pub async fn start(dir: &Path, extra: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("serve starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        // The port is known once the server says where it listens.
        let mut startup_log = Vec::new();
        let addr = tokio::time::timeout(WAIT, async {
            loop {
                let line = stderr
                    .next_line()
                    .await
                    .expect("read")
                    .expect("serve exited early");
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
}

impl Serve {
    /// [`Serve::start`] with extra environment variables for the server
    /// (`SSLKEYLOGFILE`, say), and without any it would inherit from the
    /// test's own environment under the names in `envs`.
    pub async fn start_env(dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Serve {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--addr", "127.0.0.1:0"])
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
        let mut startup_log = Vec::new();
        let addr = tokio::time::timeout(WAIT, async {
            loop {
                let line = stderr
                    .next_line()
                    .await
                    .expect("read")
                    .expect("serve exited early");
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

    /// What the server logged up to now (as far as it has been read).
    pub fn log_so_far(&self) -> String {
        self.startup_log.join("\n")
    }
}

/// Runs `connect` with `args`, feeding it `stdin` (then its end), with
/// the extra environment `envs` and no inherited `SSLKEYLOGFILE`; returns
/// its exit status, stdout and stderr. Fails the test after [`WAIT`].
pub async fn connect_once(
    dir: &Path,
    args: &[&str],
    stdin: &str,
    envs: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(BIN)
        .arg("connect")
        .args(args)
        .current_dir(dir)
        .env_remove("SSLKEYLOGFILE")
        .env_remove("NO_COLOR")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("connect starts");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("connect ends in time")
        .expect("connect runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
