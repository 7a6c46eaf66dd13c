//! What a browser participant costs the server beside a TCP one, idle: the
//! resident memory of `serve --web` per registered, silent participant of
//! each kind, measured on the built binary.

use crate::harness::browser::web_addr;
use crate::harness::websocket::{self, web_tls};
use crate::harness::{Client, Serve, TestCerts};
use std::net::SocketAddr;

/// Participants of each kind: enough for a per-participant figure well
/// above the allocator's noise.
const EACH: usize = 300;

/// The server's resident memory, in bytes.
fn rss(serve: &Serve) -> u64 {
    let pid = serve.child.id().expect("serve runs");
    chatroom::bench::spawn::rss_bytes(pid).expect("VmRSS")
}

#[tokio::test]
async fn an_idle_websocket_participant_costs_at_most_one_and_a_half_tcp_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = TestCerts::new();
    std::fs::create_dir(dir.path().join("certs")).expect("mkdir");
    for name in ["ca.pem", "server.pem", "server-key.pem"] {
        std::fs::copy(certs.path(name), dir.path().join("certs").join(name)).expect("copy");
    }
    // Its log only as far as the address: nobody reads the rest, and a
    // line per join would fill the pipe.
    let quiet = [("RUST_LOG", "warn,chatroom::cmd::serve=info")];
    let mut serve = Serve::start_env(dir.path(), &["--web", "127.0.0.1:0"], &quiet).await;
    let web: SocketAddr = web_addr(&mut serve).await.parse().expect("address");
    let tcp_tls = certs.client_tls();
    // What the server sets up once, for its first connection of each kind.
    let mut warm = Client::tls(serve.socket_addr(), tcp_tls.clone()).await;
    warm.register("warm").await;
    let mut warm_ws = websocket::open(web, web_tls(&tcp_tls), None)
        .await
        .expect("ws");
    websocket::register(&mut warm_ws, "warmweb").await;

    let before = rss(&serve);
    let mut tcp = Vec::with_capacity(EACH);
    for i in 0..EACH {
        let mut client = Client::tls(serve.socket_addr(), tcp_tls.clone()).await;
        client.register(&format!("t{i}")).await;
        tcp.push(client);
    }
    let after_tcp = rss(&serve);
    let mut ws = Vec::with_capacity(EACH);
    for i in 0..EACH {
        let mut client = websocket::open(web, web_tls(&tcp_tls), None)
            .await
            .expect("ws");
        websocket::register(&mut client, &format!("w{i}")).await;
        ws.push(client);
    }
    let after_ws = rss(&serve);
    let per_tcp = (after_tcp - before) as f64 / EACH as f64 / 1024.0;
    let per_ws = (after_ws - after_tcp) as f64 / EACH as f64 / 1024.0;
    eprintln!(
        "idle server memory per participant: TCP {per_tcp:.1} KiB, WebSocket {per_ws:.1} KiB, \
         ratio {:.2}",
        per_ws / per_tcp
    );
    assert!(
        per_ws <= 1.5 * per_tcp,
        "TCP {per_tcp:.1} KiB, WebSocket {per_ws:.1} KiB"
    );
}
