//! A connection counts against the limits until its socket is closed, not
//! only until its participant leaves: a participant that is dropped while
//! its last words are still waiting to be taken keeps its address's count
//! (its place among the participants is free at once, as before).

use crate::harness::{TestServer, local};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_connection_still_counts_against_its_address() {
    let server = TestServer::start_with(|s| {
        s.exempt = vec!["127.0.0.1/32".parse().expect("net")];
        s.max_per_ip = 1;
        s.backlog = chatroom::room::backlog::MIN_BYTES;
    })
    .await;
    let mut alice = server.join("alice").await;
    // Stuck reads nothing, and its kernel takes only a few KiB.
    let mut stuck = server
        .connect_from(local(2), Some(4096))
        .await
        .expect("stuck connects");
    stuck.register("stuck").await;
    alice.expect("stuck joined!").await;

    // Alice talks until stuck is too far behind and is dropped. Its last
    // words (ERROR disconnected: too slow) then wait on a full socket.
    let pad = "x".repeat(2000);
    let mut n = 0;
    loop {
        alice.send(&format!("{n} {pad}")).await;
        let line = alice.line().await;
        if line == "stuck left!" {
            break;
        }
        assert_eq!(line, format!("alice: {n} {pad}"));
        n += 1;
        assert!(n < 5000, "stuck was never dropped");
    }

    // Its socket is still open, so its address is still at its limit.
    let mut newcomer = server
        .connect_from(local(2), None)
        .await
        .expect("newcomer connects");
    assert_eq!(
        newcomer.until_closed().await,
        ["ERROR too many connections from your address"]
    );

    // Once stuck has read its last words and the server has closed it, the
    // address may connect again.
    let (last, _) = stuck.until_closed_cleanly().await;
    assert_eq!(
        last.last().map(String::as_str),
        Some("ERROR disconnected: too slow")
    );
    let mut again = None;
    for _ in 0..5 {
        let mut client = server.connect_from(local(2), None).await.expect("connects");
        if client.line().await == "NICK" {
            again = Some(client);
            break;
        }
    }
    let mut again = again.expect("the address may connect once stuck is closed");
    again.send("again").await;
    again.expect("again joined!").await;
    // Alice hears it after the rest of her own lines.
    loop {
        let line = alice.line().await;
        if line == "again joined!" {
            break;
        }
        assert!(line.starts_with("alice: "), "{line}");
    }
}
