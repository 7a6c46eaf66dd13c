//! What the cluster tests share: `serve --cluster` nodes on the test's
//! certificates (and nodes that must refuse to start), their participants,
//! and reading a transcript up to a line.

use super::{BIN, Client, NatsServer, Serve, TestCerts, WAIT};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::Instant;

pub type TlsClient = Client<tokio_rustls::client::TlsStream<TcpStream>>;

/// How long the issue allows for a killed node's participants to be
/// announced as left and their nicknames freed.
pub const TAKEOVER: Duration = Duration::from_secs(20);

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
/// `extra`: the server certificate, the rate limit off, the cluster.
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
    Client::tls(addr(node), certs.client_tls()).await
}

pub async fn join(certs: &TestCerts, node: &Serve, nick: &str) -> TlsClient {
    let mut client = connect(certs, node).await;
    client.register(nick).await;
    client
}

/// Reads lines until `wanted` arrives, within `within`; returns the lines
/// before it.
pub async fn until(client: &mut TlsClient, wanted: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    loop {
        let line = tokio::time::timeout_at(deadline, client.conn.read_line())
            .await
            .unwrap_or_else(|_| panic!("no {wanted:?} within {within:?}; got {before:?}"))
            .expect("read")
            .expect("a line, not the end");
        let line = String::from_utf8(line.to_vec()).expect("UTF-8");
        if line == wanted {
            return before;
        }
        before.push(line);
    }
}
