//! Fanout to 100 WebSocket participants: every line reaches every one of
//! them, whole and in the room's order.

use super::port::web_server;
use crate::harness::websocket::{self, line, register, web_tls};

const LISTENERS: usize = 100;
const MESSAGES: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_a_hundred_websocket_participants_loses_nothing() {
    let (server, web) = web_server(&[]).await;
    let tls = web_tls(&server.client_tls);
    let mut listeners = Vec::with_capacity(LISTENERS);
    for i in 0..LISTENERS {
        let mut ws = websocket::open(web, tls.clone(), None).await.expect("open");
        register(&mut ws, &format!("w{i}")).await;
        listeners.push(ws);
    }
    let mut sender = server.join("sender").await;
    let started = std::time::Instant::now();
    let readers: Vec<_> = listeners
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(MESSAGES);
                while got.len() < MESSAGES {
                    let line = line(&mut ws).await.expect("a line, not the end");
                    if let Some(text) = line.strip_prefix("sender: ") {
                        got.push(text.to_owned());
                    }
                }
                got
            })
        })
        .collect();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("message {i:04}")).collect();
    for text in &expected {
        sender.send(text).await;
    }
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), expected);
    }
    eprintln!(
        "{MESSAGES} messages to {LISTENERS} WebSocket participants: {} deliveries in {:.2?}",
        MESSAGES * LISTENERS,
        started.elapsed()
    );
}
