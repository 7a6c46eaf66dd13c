//! Shared test fixtures: certificates from the project's own gen-certs in a
//! temporary folder, the real server on 127.0.0.1:0, and real rustls (or
//! plain TCP) clients that read lines with a timeout, so a broken build
//! fails instead of hanging.
#![allow(dead_code)]

pub mod alone;
pub mod cluster;
pub mod nats_auth;
pub mod relay;

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
        Self::start_env(dir, extra, &[]).await
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

/// Client certificates from `gen-certs client`, for servers started with
/// `--client-ca` (mutual TLS).
impl TestCerts {
    /// Issues client NAME's certificate; returns its certificate and key.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        let report = certs::issue::client(self.dir.path(), name, certs::CLIENT_DAYS, false)
            .expect("gen-certs client");
        (report.cert, report.key)
    }

    /// A client config that pins this CA and presents `cert`/`key`.
    pub fn client_tls_as(&self, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
        tls::client_config_with_cert(&self.ca(), cert, key).expect("client TLS config with cert")
    }
}

/// A TLS server requiring client certificates of `certs`' CA, with the
/// CRL `certs/crl.pem` whenever it exists and `deny` refused at join.
/// Returns the server and its access policy (to reload).
pub async fn start_mutual_tls(
    certs: &TestCerts,
    deny: &[&str],
) -> (RunningServer, Arc<chatroom::server::access::Access>) {
    use chatroom::server::access::{Access, AccessFiles};
    let access = Access::load(AccessFiles {
        client_ca: Some(certs.ca()),
        crl_if_present: Some(certs.path(certs::CRL)),
        deny: deny.iter().map(|d| d.to_string()).collect(),
        ..AccessFiles::default()
    })
    .expect("access policy");
    let (config, _) = tls::reloadable_server_config_with(
        &certs.path(certs::SERVER_CERT),
        &certs.path(certs::SERVER_KEY),
        access.client_verifier(),
        tls::TlsVersion::Any,
    )
    .expect("server TLS config");
    let mut settings = Settings::new(Some(config));
    settings.limits.rate = None;
    settings.access = Some(access.clone());
    let server = RunningServer::start(loopback(), settings)
        .await
        .expect("server starts");
    (server, access)
}

/// A real nats-server with JetStream on a free loopback port and a store of
/// its own, killed when dropped. Can be stopped and started again on the
/// same port with the same store.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub store: tempfile::TempDir,
    /// More nats-server options (TLS, say).
    extra: Vec<String>,
    /// The folder of its configuration file and what that names, if any.
    pub config: Option<tempfile::TempDir>,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> NatsServer {
        Self::launch(extra.iter().map(|a| a.to_string()).collect(), None).await
    }

    /// Started with a configuration file (`-c`) as well: `write` is given
    /// a temporary folder, may put files there (an operator's JWT, say) and
    /// returns the file's text. Port, JetStream and store still come from
    /// the command line, which overrides the file.
    pub async fn start_configured(write: impl FnOnce(&Path) -> String) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("nats-server.conf");
        std::fs::write(&file, write(dir.path())).expect("write nats-server.conf");
        let extra = vec![
            "-c".to_owned(),
            file.to_str().expect("UTF-8 path").to_owned(),
        ];
        Self::launch(extra, Some(dir)).await
    }

    async fn launch(extra: Vec<String>, config: Option<tempfile::TempDir>) -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind(loopback())
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut nats = NatsServer {
            child: None,
            port,
            store,
            extra,
            config,
        };
        nats.restart().await;
        nats
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it (again) on the same port and store; returns once it says
    /// it is ready.
    pub async fn restart(&mut self) {
        self.stop().await;
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let sbin = Path::new("/usr/sbin/nats-server");
        let program = if sbin.exists() {
            sbin
        } else {
            Path::new("nats-server")
        };
        let mut child = Command::new(program)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
        // What it said on the way, to tell why if it does not get ready.
        let mut said = Vec::new();
        tokio::time::timeout(WAIT, async {
            loop {
                let Some(line) = log.next_line().await.expect("read") else {
                    panic!("nats-server exited early:\n{}", said.join("\n"));
                };
                if line.contains("Server is ready") {
                    return;
                }
                said.push(line);
            }
        })
        .await
        .expect("nats-server ready in time");
        // Keep reading, so that its log never fills the pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        self.child = Some(child);
    }
}

/// A TCP connection to `addr` from `local` (another loopback address, say
/// 127.0.0.2, to be a source the server does not exempt), with the kernel's
/// receive buffer set to `recv_buffer` bytes if given (a reader that stops
/// reading is then felt after a few KiB).
pub async fn tcp_from(
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

impl TestServer {
    /// A TLS client connected from `local` (see [`tcp_from`]), past the
    /// handshake, not yet registered.
    pub async fn connect_from(
        &self,
        local: std::net::IpAddr,
        recv_buffer: Option<u32>,
    ) -> std::io::Result<Client<tokio_rustls::client::TlsStream<TcpStream>>> {
        let tcp = tcp_from(self.addr(), Some(local), recv_buffer).await?;
        let name = tls::server_name("127.0.0.1").expect("name");
        let stream = tokio::time::timeout(
            WAIT,
            tokio_rustls::TlsConnector::from(self.client_tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
        Ok(Client {
            conn: Connection::new(stream, 1 << 20),
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads until the server closes the stream; returns the lines and
    /// whether it ended cleanly (for TLS: with close_notify). Fails the test
    /// if the stream is still open after [`WAIT`].
    pub async fn until_closed_cleanly(&mut self) -> (Vec<String>, Result<(), String>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut lines = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.conn.read_line()).await {
                Err(_) => panic!("still open after {WAIT:?}; read {} lines", lines.len()),
                Ok(Ok(None)) => return (lines, Ok(())),
                Ok(Err(e)) => return (lines, Err(e.to_string())),
                Ok(Ok(Some(line))) => {
                    lines.push(String::from_utf8(line.to_vec()).expect("server sent UTF-8"))
                }
            }
        }
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
