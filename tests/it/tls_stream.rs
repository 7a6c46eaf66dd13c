//! The server's TLS stream (`src/tls/stream.rs`) owns its buffers and lets
//! them go when they are empty, so that an idle participant holds none
//! (docs/performance.md, "What a participant costs"). What that must not
//! change: records that arrive in pieces or several at once make the same
//! lines, a key update from the client keeps the session going both ways,
//! and the server's alerts still reach a client it refuses.

use crate::harness::{Client, TestCerts, TestServer, TlsClient, WAIT, tls_over};
use chatroom::connection::Connection;
use chatroom::tls::ServerStream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A client's socket that writes at most `piece` bytes at a time, each
/// straight out: the server gets every record in pieces.
struct Trickle {
    tcp: TcpStream,
    piece: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let piece = buf.len().min(self.piece);
        Pin::new(&mut self.tcp).poll_write(cx, &buf[..piece])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_pieces_and_many_at_once_make_the_same_lines() {
    let server = TestServer::start().await;
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let trickle = Trickle { tcp, piece: 7 };
    let stream = tls_over(trickle, server.client_tls.clone())
        .await
        .expect("a handshake sent 7 bytes at a time completes");
    let mut alice = Client::new(stream);
    alice.register("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;

    // A line of the longest length, 7 bytes a write.
    let long = "l".repeat(4000);
    alice.send(&long).await;
    assert_eq!(bob.line().await, format!("alice: {long}"));
    assert_eq!(alice.line().await, format!("alice: {long}"));

    // 30 KB in one write: two records, read by the server partly together
    // and partly across reads.
    let lines: Vec<String> = (0..100)
        .map(|n| format!("{n:03} {}", "b".repeat(290)))
        .collect();
    let batch: String = lines.iter().map(|line| format!("{line}\n")).collect();
    bob.send_raw(batch.as_bytes()).await;
    for line in &lines {
        assert_eq!(alice.line().await, format!("bob: {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_update_from_the_client_keeps_the_session_going_both_ways() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;

    // Asks the server to update its keys as well (TLS 1.3 KeyUpdate with
    // update_requested): what the server sends after it must be under its
    // new keys, and what alice sends under hers.
    let (_, tls) = alice.conn.get_mut().get_mut();
    tls.refresh_traffic_keys()
        .expect("a TLS 1.3 session can update its keys");
    alice.send("after the update").await;
    assert_eq!(bob.line().await, "alice: after the update");
    assert_eq!(alice.line().await, "alice: after the update");
    bob.send("still here").await;
    assert_eq!(alice.line().await, "bob: still here");
}

/// The server's side of one TLS connection from a real client, both past
/// the handshake, the session tickets delivered with a first line.
async fn one_connection(certs: &TestCerts) -> (Connection<ServerStream>, TlsClient) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = certs.server_tls();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        chatroom::tls::accept(tcp, config).await.expect("handshake")
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut client = Client::new(tls_over(tcp, certs.client_tls()).await.expect("handshake"));
    let stream = tokio::time::timeout(WAIT, server)
        .await
        .expect("the server's side of the handshake")
        .expect("task");
    let mut server = Connection::new(stream, 4096);
    server.send("NICK\n".into()).await.expect("send");
    client.expect("NICK").await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_never_ends_holds_one_record_at_most() {
    let certs = TestCerts::new();
    let (mut server, mut client) = one_connection(&certs).await;
    // An application-data record announced at the largest size TLS
    // allows, of which only 1000 bytes come.
    let (tcp, _) = client.conn.get_mut().get_mut();
    tcp.write_all(&[0x17, 0x03, 0x03, 0x40, 0x11])
        .await
        .expect("header");
    tcp.write_all(&[0; 1000]).await.expect("part of the record");
    // Nothing to read from it: the wait ends without a line.
    let read = tokio::time::timeout(Duration::from_millis(500), server.read_line()).await;
    assert!(
        read.is_err(),
        "a line from a record that never ended: {read:?}"
    );
    let held = server.get_ref().held_bytes();
    assert!(
        (1005..=18437).contains(&held),
        "the stream holds {held} bytes for a 1005-byte piece of one record (at most one record's room, 18,437 bytes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_makes_the_stream_hold_two_records_at_most() {
    let certs = TestCerts::new();
    let (mut server, _client) = one_connection(&certs).await;
    // The client reads nothing more: the server writes batches of lines
    // until the kernel's buffers are full and a write waits.
    let batch: String = (0..160)
        .map(|n| format!("{n:03} {}\n", "w".repeat(96)))
        .collect();
    let batch = bytes::Bytes::from(batch);
    let mut blocked = false;
    for _ in 0..4000 {
        let send = server.send(batch.clone());
        if tokio::time::timeout(Duration::from_millis(200), send)
            .await
            .is_err()
        {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "64 MB written to a peer that reads nothing");
    // More batches while the write waits: each may add to what the stream
    // holds, up to its bound.
    for _ in 0..8 {
        let send = server.send(batch.clone());
        let _ = tokio::time::timeout(Duration::from_millis(50), send).await;
    }
    let held = server.get_ref().held_bytes();
    assert!(
        held <= 2 * 18437,
        "the stream holds {held} bytes for a peer that stopped reading (two records at most)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_holds_no_buffer() {
    let certs = TestCerts::new();
    // The session tickets wait for the first line and go out with it.
    let (mut server, mut client) = one_connection(&certs).await;
    client.send(&"x".repeat(3000)).await;
    let line = tokio::time::timeout(WAIT, server.read_line())
        .await
        .expect("a line within the wait")
        .expect("read")
        .expect("a line");
    assert_eq!(line.len(), 3000);
    assert_eq!(
        server.get_ref().held_bytes(),
        0,
        "an idle connection keeps no buffer"
    );
}
