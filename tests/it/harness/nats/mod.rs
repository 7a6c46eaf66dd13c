//! A real nats-server for the cluster room, and the `serve --cluster`
//! nodes on it: [`NatsServer`] (JetStream on a free loopback port, a store
//! of its own), the nodes and their participants, nodes that must refuse to
//! start, NATS operator-mode credentials ([`auth`]) and a relay that makes
//! outages on purpose ([`relay`]).

pub mod auth;
pub mod relay;

use super::{BIN, Serve, TestCerts, TlsClient, WAIT, loopback};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A real nats-server with JetStream on a free loopback port and a store of
/// its own, killed when dropped. Can be stopped and started again on the
/// same port with the same store.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    /// More nats-server options (TLS, say).
    extra: Vec<String>,
    /// The folder of its configuration file and what that names, if any,
    /// kept for as long as the server may read them.
    _config: Option<tempfile::TempDir>,
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
            _config: config,
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

/// How long the issue allows for a killed node's participants to be
/// announced as left and their nicknames freed.
pub const TAKEOVER: Duration = Duration::from_secs(20);

/// The node timeout the test nodes give their rooms (`--node-timeout`):
/// short, so that the tests of dead nodes and outages wait a few seconds,
/// not the default's six and more; long enough that a busy machine does
/// not make a live node look dead.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// One `serve --cluster` process named `name`, on the certificates in `certs`.
pub async fn node(certs: &TestCerts, nats: &NatsServer, name: &str) -> Serve {
    node_with(certs, nats, name, &[]).await
}

pub async fn node_with(certs: &TestCerts, nats: &NatsServer, name: &str, extra: &[&str]) -> Serve {
    node_at(certs, &nats.url(), name, extra).await
}

/// A node whose NATS is at `url` (a relay, say).
pub async fn node_at(certs: &TestCerts, url: &str, name: &str, extra: &[&str]) -> Serve {
    let mut named = vec!["--node-name", name];
    named.extend(extra);
    let args = node_args(certs, url, &named);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Serve::start(certs.dir.path(), &args).await
}

/// `serve`'s arguments for a node on `certs` whose NATS is at `url`, with
/// `extra`: the server certificate, the rate limit off, the cluster with
/// the tests' [`NODE_TIMEOUT`].
pub fn node_args(certs: &TestCerts, url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--cert".into(),
        path(&certs.path(chatroom::certs::SERVER_CERT)).into(),
        "--key".into(),
        path(&certs.path(chatroom::certs::SERVER_KEY)).into(),
        "--rate-limit".into(),
        "off".into(),
        "--cluster".into(),
        url.into(),
        "--node-timeout".into(),
        NODE_TIMEOUT.as_secs_f64().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Runs a node that must not start; returns its stderr once it has exited
/// non-zero (within [`WAIT`]) without listening.
pub async fn node_refused(certs: &TestCerts, url: &str, extra: &[&str]) -> String {
    let run = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(node_args(certs, url, extra))
        .current_dir(certs.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .expect("exits in time")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    stderr
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

pub fn addr(node: &Serve) -> SocketAddr {
    node.addr.parse().expect("address")
}

pub async fn connect(certs: &TestCerts, node: &Serve) -> TlsClient {
    TlsClient::tls(addr(node), certs.client_tls()).await
}

pub async fn join(certs: &TestCerts, node: &Serve, nick: &str) -> TlsClient {
    let mut client = connect(certs, node).await;
    client.register(nick).await;
    client
}
