//! Hostile bytes: invalid UTF-8, control characters, and transports that
//! break (not TLS, a truncated ClientHello, a reset mid-line, a record that
//! fails to authenticate) end only their own connection.

use super::honest::{
    Honest, Plan, closed_within, everyone_saw, next_matching, nobody_saw, rest_until_closed,
};
use crate::harness::{Client, TestServer, WAIT, tcp, tls_over};
use chatroom::protocol;
use chatroom::tls;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_refused_and_control_characters_are_stripped() {
    let server = TestServer::start().await;
    let mut honest = Honest::start(&server, Plan::few()).await;
    let nicks = honest.nicks.clone();

    // A nickname that is not UTF-8 is refused like any bad nickname.
    let mut mallory = server.connect().await;
    mallory.expect("NICK").await;
    mallory.send_raw(b"m\xffallory\n").await;
    mallory
        .expect("ERROR nickname may only hold ASCII letters, digits, '_' and '-'")
        .await;
    mallory.register("mallory").await;

    // Invalid UTF-8 in a message: an error, the line dropped, the session on.
    mallory.send_raw(b"bad \xc3\x28 bytes \xff\n").await;
    let error = next_matching(&mut mallory, &nicks, WAIT, |l| !l.starts_with("honest")).await;
    assert_eq!(error, "ERROR invalid UTF-8");

    // Terminal escapes, C1 controls, DEL, a lone CR and bidi overrides go;
    // tabs stay.
    mallory
        .send("\u{1b}[2J\u{1b}]0;pwned\u{7}hi\u{202e}dlrow\u{2066}x\u{85}y\u{7f}\tz\rw\u{9b}31m")
        .await;
    let expected = "mallory: [2J]0;pwnedhidlrowxy\tzw31m";
    let echo = next_matching(&mut mallory, &nicks, WAIT, |l| l.starts_with("mallory:")).await;
    assert_eq!(echo, expected);
    // A line of nothing but controls says nothing at all.
    mallory.send("\u{1b}\u{7}\u{202e}").await;
    mallory.send("still here").await;
    let next = next_matching(&mut mallory, &nicks, WAIT, |l| l.starts_with("mallory:")).await;
    assert_eq!(next, "mallory: still here");
    honest.wait_for("mallory: still here").await;

    let transcripts = honest.finish().await;
    everyone_saw(&transcripts, expected);
    nobody_saw(&transcripts, |l| l.contains("bad"), "the invalid line");
    nobody_saw(
        &transcripts,
        |l| l.chars().any(protocol::is_unsafe_char),
        "an unsafe character",
    );
}

/// Flips one ciphertext byte of the next TLS application-data record it
/// writes, once armed: the server must see a record that fails to
/// authenticate.
struct Tamper {
    inner: TcpStream,
    armed: Arc<AtomicBool>,
}

impl AsyncRead for Tamper {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tamper {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // 0x17: application data; byte 5 is the first byte after the header.
        if buf.len() > 6 && buf[0] == 0x17 && self.armed.load(Ordering::SeqCst) {
            let mut bent = buf.to_vec();
            bent[5] ^= 0x01;
            let written = Pin::new(&mut self.inner).poll_write(cx, &bent);
            if matches!(written, Poll::Ready(Ok(n)) if n > 5) {
                self.armed.store(false, Ordering::SeqCst);
            }
            return written;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_transports_end_only_their_own_connection() {
    let server = TestServer::start().await;
    let mut honest = Honest::start(&server, Plan::few()).await;
    let nicks = honest.nicks.clone();

    // Not TLS at all.
    let mut garbage = tcp(server.addr()).await;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n")
        .await
        .expect("write");
    assert!(closed_within(&mut garbage, WAIT).await, "garbage kept open");

    // Half a real ClientHello, then the end of the stream.
    let mut hello = Vec::new();
    rustls::ClientConnection::new(
        server.client_tls.clone(),
        tls::server_name("127.0.0.1").expect("name"),
    )
    .expect("client")
    .write_tls(&mut hello)
    .expect("ClientHello");
    let mut truncated = tcp(server.addr()).await;
    truncated
        .write_all(&hello[..hello.len() / 2])
        .await
        .expect("write");
    truncated.shutdown().await.expect("FIN");
    assert!(
        closed_within(&mut truncated, WAIT).await,
        "truncated kept open"
    );

    // A TCP reset in the middle of a line.
    let mut resetter = server.join("resetter").await;
    honest.wait_for("resetter joined!").await;
    resetter.send_raw(b"half a li").await;
    let (tcp_stream, _) = resetter.conn.get_ref().get_ref();
    tcp_stream.set_zero_linger().expect("SO_LINGER 0");
    drop(resetter);
    honest.wait_for("resetter left!").await;

    // A record that fails to authenticate.
    let armed = Arc::new(AtomicBool::new(false));
    let tamper = Tamper {
        inner: tcp(server.addr()).await,
        armed: armed.clone(),
    };
    let tampered = tls_over(tamper, server.client_tls.clone())
        .await
        .expect("TLS handshake");
    let mut forger = Client::new(tampered);
    forger.register("forger").await;
    honest.wait_for("forger joined!").await;
    armed.store(true, Ordering::SeqCst);
    forger.send("forged words").await;
    assert!(
        !armed.load(Ordering::SeqCst),
        "the record was not tampered with"
    );
    let (said, close) = rest_until_closed(&mut forger, &nicks, WAIT).await;
    assert!(said.is_empty(), "{said:?}");
    assert!(
        close.is_err(),
        "the server should end with an alert, not close_notify"
    );
    honest.wait_for("forger left!").await;

    // The server still takes newcomers.
    let mut after = server.join("after").await;
    after.send("all quiet?").await;
    honest.wait_for("after joined!").await;
    honest.wait_for("after: all quiet?").await;

    let transcripts = honest.finish().await;
    nobody_saw(&transcripts, |l| l.contains("half a li"), "a half line");
    nobody_saw(&transcripts, |l| l.contains("forged"), "the forged line");
}
