//! The README's Lab exercise on integrity: an attacker on the path slips
//! a line of its own into Alice's stream. In plaintext the server believes
//! it and everybody reads it as Alice's; over TLS the same bytes are not a
//! valid record, so the server ends Alice's session and nobody reads them.
//! (The exercise does it with a crafted TCP segment; here a relay between
//! Alice and the server inserts the bytes, which is the same thing to the
//! server.)

use crate::harness::{Client, TestServer, WAIT};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const FORGED: &[u8] = b"I resign, effective today\n";

/// A relay on 127.0.0.1 to `server`, for one connection, that writes what
/// it is sent on the returned channel into the stream towards the server,
/// between Alice's own bytes.
async fn relay(server: SocketAddr) -> (SocketAddr, mpsc::Sender<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (inject, mut injected) = mpsc::channel::<Vec<u8>>(1);
    tokio::spawn(async move {
        let (alice, _) = listener.accept().await.expect("accept");
        let upstream = TcpStream::connect(server).await.expect("connect");
        let (mut alice_read, mut alice_write) = alice.into_split();
        let (mut server_read, mut server_write) = upstream.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut alice_write).await;
        });
        let mut buf = vec![0; 4096];
        loop {
            tokio::select! {
                read = alice_read.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                },
                Some(bytes) = injected.recv() => {
                    if server_write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    (addr, inject)
}

#[tokio::test]
async fn in_plaintext_an_injected_line_passes_as_alices() {
    let server = TestServer::start_with(|s| s.tls = None).await;
    let (via, inject) = relay(server.addr()).await;
    let mut alice = Client::plain(via).await;
    alice.register("alice").await;
    let mut bob = Client::plain(server.addr()).await;
    bob.register("bob").await;
    alice.expect("bob joined!").await;

    inject.send(FORGED.to_vec()).await.expect("relay runs");
    bob.expect("alice: I resign, effective today").await;
    // Alice never typed it, yet she sees it too, under her name.
    alice.expect("alice: I resign, effective today").await;
}

#[tokio::test]
async fn over_tls_an_injected_line_ends_the_session_and_nobody_reads_it() {
    let server = TestServer::start().await;
    let (via, inject) = relay(server.addr()).await;
    let mut alice = Client::tls(via, server.client_tls.clone()).await;
    alice.register("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;

    inject.send(FORGED.to_vec()).await.expect("relay runs");
    // The server cannot decrypt the bytes as a record: it ends the
    // session, and the others hear that alice left, not the forged text.
    bob.expect("alice left!").await;
    bob.send("still here").await;
    bob.expect("bob: still here").await;
    // Alice's connection is over.
    let rest = tokio::time::timeout(WAIT, alice.until_closed())
        .await
        .expect("alice's connection ends");
    assert!(rest.iter().all(|l| !l.contains("I resign")), "{rest:?}");
}
