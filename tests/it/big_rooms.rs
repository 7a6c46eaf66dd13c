//! `serve --announce-up-to N`: in a room of more than N participants, joins
//! and leaves are told to nobody but the newcomer, who is told why; the
//! built binary with real clients over TLS. (Both rooms' behaviour is in
//! `room_conformance.rs`.)

use crate::harness::{Client, Serve, TlsClient, WAIT};
use std::path::Path;

async fn join(serve: &Serve, dir: &Path, nick: &str) -> TlsClient {
    let config = chatroom::tls::client_config(&dir.join("certs/ca.pem")).expect("CA");
    let mut client = Client::tls(serve.socket_addr(), config).await;
    let lines = client.join_lines(nick).await;
    assert_eq!(
        lines,
        [
            "NICK".to_owned(),
            format!("{nick} joined!"),
            "Connected to server!".to_owned()
        ]
    );
    client
}

#[tokio::test]
async fn past_the_announced_size_only_the_newcomer_sees_its_join() {
    let tmp = tempfile::tempdir().expect("temp");
    let serve = Serve::start(tmp.path(), &["--announce-up-to", "3"]).await;
    let mut alice = join(&serve, tmp.path(), "alice").await;
    let mut bob = join(&serve, tmp.path(), "bob").await;
    let mut carol = join(&serve, tmp.path(), "carol").await;
    alice.expect("bob joined!").await;
    alice.expect("carol joined!").await;
    bob.expect("carol joined!").await;
    // The fourth and fifth: their own lines, and why nobody else hears.
    let mut dave = join(&serve, tmp.path(), "dave").await;
    dave.expect("[room] 4 here; joins and leaves are not announced in rooms over 3")
        .await;
    let mut erin = join(&serve, tmp.path(), "erin").await;
    erin.expect("[room] 5 here; joins and leaves are not announced in rooms over 3")
        .await;
    // /list counts everyone.
    dave.send("/list").await;
    dave.expect("[list] 5 here: alice, bob, carol, dave, erin")
        .await;
    erin.close().await;
    dave.close().await;
    // Until the server has seen both go: the room is three again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dave and erin never left"
        );
        carol.send("/list").await;
        let list = carol.line().await;
        if list == "[list] 3 here: alice, bob, carol" {
            break;
        }
        assert!(list.starts_with("[list] "), "{list}");
    }
    carol.send("still three?").await;
    // What the first three saw: no join, no leave of the other two.
    for client in [&mut alice, &mut bob] {
        let seen = client.until("carol: still three?", WAIT).await;
        assert!(
            seen.iter()
                .all(|line| !line.contains("dave") && !line.contains("erin")),
            "{seen:?}"
        );
    }
    carol.expect("carol: still three?").await;
    // In a room of three again, a leave is announced.
    carol.close().await;
    alice.expect("carol left!").await;
    bob.expect("carol left!").await;
}
