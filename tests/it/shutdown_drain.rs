//! A participant that stops reading for a moment while the server stops
//! still gets every line the room accepted, then the farewell and a clean
//! close: the stop signal does not cut short a write that was waiting for
//! it, as long as the grace period lasts.

use crate::harness::TestServer;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_pausing_at_shutdown_still_gets_every_line_and_the_farewell() {
    const LINES: usize = 1500;
    const PER_WRITE: usize = 50;
    let server = TestServer::start_with(|s| s.shutdown_grace = Duration::from_secs(8)).await;
    // Bob's kernel takes only a few KiB, and bob reads nothing until the
    // server is stopping: his session is then in the middle of a write.
    let mut bob = server
        .connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), Some(4096))
        .await
        .expect("bob connects");
    bob.register("bob").await;
    let mut alice = server.join("alice").await;

    // 6 MB, more than the kernel buffers between the server and bob hold.
    let pad = "p".repeat(4000);
    let mut expected = vec!["alice joined!".to_string()];
    for batch in 0..LINES / PER_WRITE {
        let range = batch * PER_WRITE..(batch + 1) * PER_WRITE;
        let text: String = range.clone().map(|n| format!("{n} {pad}\n")).collect();
        alice.send_raw(text.as_bytes()).await;
        for n in range {
            let line = format!("alice: {n} {pad}");
            assert_eq!(alice.line().await, line);
            expected.push(line);
        }
    }
    expected.push("Server is shutting down".to_string());

    let TestServer { server, certs, .. } = server;
    let stop = tokio::spawn(server.stop());
    // The pause under test: bob is slow for a moment, well within the
    // grace period, after the stop signal went out.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (said, close) = bob.until_closed_cleanly().await;
    assert_eq!(said.len(), expected.len(), "bob got {} lines", said.len());
    assert!(said == expected, "bob's lines differ from the room's");
    assert_eq!(close, Ok(()), "bob's stream did not end with close_notify");
    let (alice_said, _) = alice.until_closed_cleanly().await;
    assert_eq!(alice_said, ["Server is shutting down"]);
    stop.await.expect("stop task").expect("clean stop");
    drop(certs);
}
