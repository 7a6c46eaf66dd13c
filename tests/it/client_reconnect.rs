//! `chatroom connect` after a lost connection: back in the room by itself,
//! as the same nickname, when the server restarts (killed, or stopped with
//! its shutdown notice); never after `/quit` or a refusal of its
//! certificate; and, given several `--addr` nodes, on one picked at random
//! (so that clients spread), on another when its node is gone, and past a
//! dead first one.
//!
//! The built binary for both ends, certificates from its `gen-certs`,
//! clients with piped stdin and stdout.

use crate::harness::cli::{Running, certs_folder, ok};
use crate::harness::{Serve, TlsClient, WAIT};
use std::path::Path;

/// `connect` as `nick` to `addrs` with `extra` arguments, past `Connected
/// to server!`.
async fn join(dir: &Path, addrs: &str, nick: &str, extra: &[&str]) -> Running {
    let mut args = vec!["connect", "--addr", addrs, "--nick", nick];
    args.extend_from_slice(extra);
    let mut client = Running::start(dir, &args);
    assert_eq!(client.line().await, format!("{nick} joined!"));
    assert_eq!(client.line().await, "Connected to server!");
    client
}

/// A participant of the test's own on `serve`, to watch who joins there.
async fn watcher(dir: &Path, serve: &Serve, nick: &str) -> TlsClient {
    let config = chatroom::tls::client_config(&dir.join("certs/ca.pem")).expect("client config");
    let mut client = TlsClient::tls(serve.socket_addr(), config).await;
    client.register(nick).await;
    client
}

/// Stops `serve` and waits until it is gone; returns its address.
async fn stop(serve: Serve) -> String {
    let addr = serve.addr.clone();
    let _ = serve.kill_and_log().await;
    addr
}

#[tokio::test]
async fn connect_comes_back_as_itself_after_restarts_and_not_after_quit() {
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    let serve = Serve::start(dir, &[]).await;
    let mut alice = join(dir, &serve.addr, "alice", &[]).await;

    // Killed without a word, started again on the same address: alice is
    // back without typing anything.
    let addr = stop(serve).await;
    let mut serve = Serve::start_on(dir, &addr, &[]).await;
    assert_eq!(alice.line().await, "alice joined!");
    assert_eq!(alice.line().await, "Connected to server!");
    alice.type_line("back").await;
    assert_eq!(alice.line().await, "alice: back");

    // Stopped with its notice (an upgrade, say): back again.
    serve.signal("TERM").await;
    assert_eq!(alice.line().await, "Server is shutting down");
    tokio::time::timeout(WAIT, serve.child.wait())
        .await
        .expect("the server stops in time")
        .expect("wait");
    let serve = Serve::start_on(dir, &addr, &[]).await;
    assert_eq!(alice.line().await, "alice joined!");
    assert_eq!(alice.line().await, "Connected to server!");
    let mut bob = watcher(dir, &serve, "bob").await;
    alice.type_line("still me").await;
    assert_eq!(alice.line().await, "bob joined!");
    assert_eq!(alice.line().await, "alice: still me");
    bob.expect("alice: still me").await;

    // `/quit`: it leaves and stays gone, its stdin still open.
    alice.type_line("/quit").await;
    let (ok, said) = alice.ends().await;
    assert!(ok, "{said}");
    assert!(said.contains("you left the room"), "{said}");
    assert!(
        said.contains(
            "connection lost: the server closed it without a TLS close_notify; reconnecting in "
        ) && said.contains("(attempt 1)"),
        "{said}"
    );
    assert!(
        said.contains("connection closed by the server; reconnecting in "),
        "{said}"
    );
    bob.expect("alice left!").await;
}

#[tokio::test]
async fn a_revoked_certificate_ends_connect_instead_of_retrying() {
    let tmp = certs_folder(&["alice", "bob"]).await;
    let dir = tmp.path();
    let mutual = ["--client-ca", "certs/ca.pem"];
    let serve = Serve::start(dir, &mutual).await;
    let cert = |nick: &str| {
        [
            "--cert".to_owned(),
            format!("certs/clients/{nick}.pem"),
            "--key".to_owned(),
            format!("certs/clients/{nick}-key.pem"),
        ]
    };
    let (alice_cert, bob_cert) = (cert("alice"), cert("bob"));
    let mut alice = join(
        dir,
        &serve.addr,
        "alice",
        &alice_cert.each_ref().map(String::as_str),
    )
    .await;
    let mut bob = join(
        dir,
        &serve.addr,
        "bob",
        &bob_cert.each_ref().map(String::as_str),
    )
    .await;
    assert_eq!(alice.line().await, "bob joined!");

    // Bob's certificate is revoked while he is in: the server puts him out
    // with its reason, and he does not come back.
    ok(dir, &["certs", "revoke", "bob"]).await;
    serve.signal("HUP").await;
    assert_eq!(bob.line().await, "ERROR certificate revoked");
    let (_, said) = bob.ends().await;
    assert!(said.contains("connection closed by the server"), "{said}");
    assert!(!said.contains("reconnecting"), "{said}");
    assert_eq!(alice.line().await, "bob left!");

    // Alice's is revoked while the server is down: her attempt to come
    // back meets the refusal in the handshake, and she stops there.
    let addr = stop(serve).await;
    ok(dir, &["certs", "revoke", "alice"]).await;
    let _serve = Serve::start_on(dir, &addr, &mutual).await;
    let (success, said) = alice.ends().await;
    assert!(!success, "{said}");
    assert!(
        said.trim_end()
            .ends_with("the server refused your certificate: it has been revoked"),
        "{said}"
    );
}

/// A port nobody listens on.
fn dead_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string()
}

#[tokio::test]
async fn connect_passes_a_dead_first_node_and_moves_when_its_node_goes() {
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    let one = Serve::start(dir, &[]).await;
    let two = Serve::start(dir, &[]).await;
    let mut on_one = watcher(dir, &one, "one").await;
    let mut on_two = watcher(dir, &two, "two").await;

    let first_dead = format!("{},{}", dead_address(), one.addr);
    let carol = join(dir, &first_dead, "carol", &[]).await;
    on_one.expect("carol joined!").await;
    let (ok, said) = carol.end().await;
    assert!(ok, "{said}");
    on_one.expect("carol left!").await;

    let both = format!("{},{}", one.addr, two.addr);
    let _alice = join(dir, &both, "alice", &[]).await;
    let landed_on_one = tokio::select! {
        line = on_one.line() => { assert_eq!(line, "alice joined!"); true }
        line = on_two.line() => { assert_eq!(line, "alice joined!"); false }
    };
    // Her node goes; she comes back on the other.
    let (gone, mut other) = if landed_on_one {
        (one, on_two)
    } else {
        (two, on_one)
    };
    stop(gone).await;
    other.expect("alice joined!").await;
}

#[tokio::test]
async fn clients_given_two_nodes_spread_over_both() {
    const CLIENTS: usize = 20;
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    let one = Serve::start(dir, &[]).await;
    let two = Serve::start(dir, &[]).await;
    let mut on_one = watcher(dir, &one, "one").await;
    let mut on_two = watcher(dir, &two, "two").await;
    let both = format!("{},{}", one.addr, two.addr);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(join(dir, &both, &format!("c{i}"), &[]).await);
    }
    // Each joined exactly one of the two; both got some (all on one node
    // has a chance of 2^-19).
    let (mut joined_one, mut joined_two) = (0, 0);
    while joined_one + joined_two < CLIENTS {
        tokio::select! {
            line = on_one.line() => { assert!(line.ends_with(" joined!"), "{line}"); joined_one += 1 }
            line = on_two.line() => { assert!(line.ends_with(" joined!"), "{line}"); joined_two += 1 }
        }
    }
    assert!(
        joined_one > 0 && joined_two > 0,
        "{joined_one} and {joined_two}"
    );
}

/// Answers one connection of a stand-in server: `NICK`, the nickname
/// (which must be `alice`), then `reply`; returns the stream.
async fn answer(listener: &tokio::net::TcpListener, reply: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the client comes in time")
        .expect("accept");
    tcp.write_all(b"NICK\n").await.expect("write");
    let mut nick = [0u8; 6];
    tcp.read_exact(&mut nick).await.expect("nick");
    assert_eq!(&nick, b"alice\n");
    tcp.write_all(reply.as_bytes()).await.expect("write");
    tcp
}

/// The nickname still held by the lost session is retried, not given up;
/// a kick ends the client. A stand-in server (plaintext), to hold the
/// nickname and kick exactly when the test says, which the real one
/// cannot be made to do on cue.
#[tokio::test]
async fn a_nickname_still_taken_is_retried_and_a_kick_is_final() {
    let tmp = tempfile::tempdir().expect("temp");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let args = ["connect", "--addr", &addr, "--plaintext", "--nick", "alice"];
    let mut alice = Running::start(tmp.path(), &args);
    let welcome = "alice joined!\nConnected to server!\n";
    let first = answer(&listener, welcome).await;
    assert_eq!(alice.line().await, "alice joined!");
    assert_eq!(alice.line().await, "Connected to server!");
    drop(first);
    let taken = answer(&listener, "ERROR nickname \"alice\" is taken\nNICK\n").await;
    let mut back = answer(&listener, welcome).await;
    drop(taken);
    assert_eq!(alice.line().await, "alice joined!");
    assert_eq!(alice.line().await, "Connected to server!");
    tokio::io::AsyncWriteExt::write_all(&mut back, b"ERROR kicked: enough\n")
        .await
        .expect("write");
    drop(back);
    assert_eq!(alice.line().await, "ERROR kicked: enough");
    let (ok, said) = alice.ends().await;
    assert!(ok, "{said}");
    assert!(
        said.contains("the server refused: nickname \"alice\" is taken; reconnecting in "),
        "{said}"
    );
    assert!(
        said.trim_end().ends_with("connection closed by the server"),
        "{said}"
    );
}
