//! What the cluster tests share: `serve --cluster` nodes on the test's
//! certificates, their participants, and reading a transcript up to a line.

use super::{Client, NatsServer, Serve, TestCerts};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpStream;
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
    let cert = certs.path(chatroom::certs::SERVER_CERT);
    let key = certs.path(chatroom::certs::SERVER_KEY);
    let mut args = vec![
        "--cert",
        path(&cert),
        "--key",
        path(&key),
        "--rate-limit",
        "off",
        "--node-name",
        name,
        "--cluster",
        url,
    ];
    args.extend(extra);
    Serve::start(certs.dir.path(), &args).await
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
