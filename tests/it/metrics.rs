//! `serve --metrics`: `/metrics` read as Prometheus text while a test
//! chats, the channels open and the operators' actions, `/healthz` during
//! a shutdown, and the cluster link as a gauge and a health check with a
//! real nats-server.

use crate::harness::http::{get, metrics_addr, scrape};
use crate::harness::nats::{self, NatsServer};
use crate::harness::{
    Client, Serve, TestCerts, TestServer, WAIT, join_as_holder, loopback, operators_file,
    start_with_access_and, tcp, tls_over,
};
use chatroom::server::access::AccessFiles;
use chatroom::server::metrics::{self, Metrics};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DISCONNECTS: [&str; 6] = ["quit", "too_slow", "idle", "kicked", "shutdown", "error"];
const HANDSHAKES: [&str; 6] = [
    "timeout",
    "protocol",
    "client_certificate",
    "alert",
    "closed",
    "other",
];
const REFUSALS: [&str; 3] = ["limits", "access", "revoked"];
const ACTIONS: [&str; 5] = ["kick", "ban", "mute", "unmute", "topic"];

fn labelled(name: &str, label: &str, value: &str) -> String {
    format!("{name}{{{label}=\"{value}\"}}")
}

/// Sends `/list` and reads its answer: once it comes, the session has
/// finished writing (and counting) every room line it read before.
async fn round_trip(
    client: &mut Client<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
) {
    client.send("/list").await;
    let line = client.line().await;
    assert!(line.starts_with("[list]"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_move_as_a_test_chats() {
    let tmp = tempfile::tempdir().expect("temp");
    let args = [
        "--metrics",
        "127.0.0.1:0",
        "--rate-limit",
        "off",
        "--deny",
        "mallory",
    ];
    let mut serve = Serve::start(tmp.path(), &args).await;
    let m = metrics_addr(&serve);
    assert_eq!(get(m, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(m, "/nothing").await.0, 404);

    let before = scrape(m).await;
    assert_eq!(
        before.get(&labelled("chatroom_participants", "transport", "tcp")),
        0.0
    );
    for name in ["joins", "messages", "deliveries"] {
        assert_eq!(before.get(&format!("chatroom_{name}_total")), 0.0, "{name}");
    }
    for (name, reasons) in [
        ("chatroom_disconnects_total", &DISCONNECTS[..]),
        ("chatroom_tls_handshake_failures_total", &HANDSHAKES[..]),
        ("chatroom_refusals_total", &REFUSALS[..]),
    ] {
        for reason in reasons {
            assert_eq!(before.get(&labelled(name, "reason", reason)), 0.0);
        }
    }
    before.get("chatroom_backlog_bytes");
    assert!(
        !before.0.contains_key("chatroom_cluster_link_up"),
        "no --cluster"
    );
    assert!(!before.0.contains_key("chatroom_store_lines"), "no --data");

    let addr: SocketAddr = serve.addr.parse().expect("address");
    let config = chatroom::tls::client_config(&tmp.path().join("certs/ca.pem")).expect("CA");
    let mut alice = Client::tls(addr, config.clone()).await;
    alice.register("alice").await;
    let mut bob = Client::tls(addr, config.clone()).await;
    bob.register("bob").await;
    alice.expect("bob joined!").await;
    alice.send("hello").await;
    alice.send("/me waves").await;
    for client in [&mut alice, &mut bob] {
        client.expect("alice: hello").await;
        client.expect("* alice waves").await;
        round_trip(client).await;
    }
    let chatted = scrape(m).await;
    assert_eq!(
        chatted.get(&labelled("chatroom_participants", "transport", "tcp")),
        2.0
    );
    assert_eq!(chatted.get("chatroom_joins_total"), 2.0);
    assert_eq!(chatted.get("chatroom_messages_total"), 2.0);
    // alice: bob's join, her message and her action; bob: the last two.
    assert_eq!(chatted.get("chatroom_deliveries_total"), 5.0);

    bob.send("/quit").await;
    alice.expect("bob left!").await;
    let mut mallory = Client::tls(addr, config).await;
    let said = mallory.join_lines("mallory").await;
    assert!(said.iter().any(|l| l.starts_with("ERROR")), "{said:?}");
    // Not TLS at all: an HTTP request to the chat port.
    let mut plain = tcp(addr).await;
    plain
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let _ = plain.read_to_end(&mut Vec::new()).await;
    serve.wait_for_log("TLS handshake failed").await;
    // A client pinned to another CA gives up with an alert.
    let stranger = TestCerts::new().client_tls();
    assert!(tls_over(tcp(addr).await, stranger).await.is_err());
    serve.wait_for_log("TLS handshake failed").await;

    let after = scrape(m).await;
    let expected = [
        (labelled("chatroom_participants", "transport", "tcp"), 1.0),
        (
            labelled("chatroom_disconnects_total", "reason", "quit"),
            1.0,
        ),
        (
            labelled("chatroom_disconnects_total", "reason", "error"),
            0.0,
        ),
        (labelled("chatroom_refusals_total", "reason", "access"), 1.0),
        (labelled("chatroom_refusals_total", "reason", "limits"), 0.0),
        (
            labelled(
                "chatroom_tls_handshake_failures_total",
                "reason",
                "protocol",
            ),
            1.0,
        ),
        (
            labelled("chatroom_tls_handshake_failures_total", "reason", "alert"),
            1.0,
        ),
    ];
    for (key, value) in expected {
        assert_eq!(after.get(&key), value, "{key}\n{:#?}", after.0);
    }
    assert_eq!(after.get("chatroom_joins_total"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_store_shows_its_lines_and_bytes() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let args = [
        "--metrics",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("UTF-8"),
    ];
    let serve = Serve::start(tmp.path(), &args).await;
    let m = metrics_addr(&serve);
    let before = scrape(m).await;
    assert!(before.get("chatroom_store_bytes") > 0.0);
    let lines = before.get("chatroom_store_lines");

    let addr: SocketAddr = serve.addr.parse().expect("address");
    let config = chatroom::tls::client_config(&tmp.path().join("certs/ca.pem")).expect("CA");
    let mut alice = Client::tls(addr, config).await;
    alice.join_lines("alice").await;
    alice.send("hello").await;
    // Stored before anybody sees it.
    alice.until("alice: hello", crate::harness::WAIT).await;
    // Her join and her message.
    assert!(scrape(m).await.get("chatroom_store_lines") >= lines + 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_during_shutdown() {
    let metrics = Metrics::new();
    let server = TestServer::start_with(|s| s.metrics = metrics.clone()).await;
    let m = metrics::http::start(loopback(), metrics.clone())
        .await
        .expect("metrics endpoint");
    assert_eq!(get(m, "/healthz").await, (200, "ok\n".to_owned()));
    let mut alice = server.join("alice").await;

    let stopped = tokio::spawn(server.server.stop());
    // The room's farewell comes once the server has stopped taking
    // participants.
    alice.expect(chatroom::protocol::SHUTTING_DOWN).await;
    assert_eq!(
        get(m, "/healthz").await,
        (503, "shutting down\n".to_owned())
    );
    // Her session counts its end before it closes.
    alice.until_closed().await;
    let samples = scrape(m).await;
    assert_eq!(
        samples.get(&labelled("chatroom_participants", "transport", "tcp")),
        0.0
    );
    assert_eq!(
        samples.get(&labelled(
            "chatroom_disconnects_total",
            "reason",
            "shutdown"
        )),
        1.0
    );
    tokio::time::timeout(crate::harness::WAIT, stopped)
        .await
        .expect("stops in time")
        .expect("server task")
        .expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_link_shows_in_metrics_and_health() {
    let certs = TestCerts::new();
    let mut nats = NatsServer::start().await;
    let mut node = nats::node_with(&certs, &nats, "n1", &["--metrics", "127.0.0.1:0"]).await;
    let m = metrics_addr(&node);
    assert_eq!(scrape(m).await.get("chatroom_cluster_link_up"), 1.0);
    assert_eq!(get(m, "/healthz").await, (200, "ok\n".to_owned()));

    nats.stop().await;
    node.wait_for_log("lost the NATS connection").await;
    assert_eq!(scrape(m).await.get("chatroom_cluster_link_up"), 0.0);
    let unavailable = format!("{}\n", chatroom::room::UNAVAILABLE);
    assert_eq!(get(m, "/healthz").await, (503, unavailable));

    nats.restart().await;
    node.wait_for_log("NATS connection restored").await;
    assert_eq!(scrape(m).await.get("chatroom_cluster_link_up"), 1.0);
    assert_eq!(get(m, "/healthz").await, (200, "ok\n".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_open_and_the_operators_actions_show() {
    let certs = TestCerts::new();
    let files = AccessFiles {
        operators: Some(operators_file(&certs, &["alice"])),
        ..AccessFiles::default()
    };
    let metrics = Metrics::new();
    let (server, _access) =
        start_with_access_and(&certs, files, |s| s.metrics = metrics.clone()).await;
    let m = metrics::http::start(loopback(), metrics.clone())
        .await
        .expect("metrics endpoint");
    let action = |samples: &crate::harness::http::Samples, action: &str| {
        samples.get(&labelled("chatroom_moderation_total", "action", action))
    };
    let before = scrape(m).await;
    assert_eq!(before.get("chatroom_channels"), 0.0);
    for name in ACTIONS {
        assert_eq!(action(&before, name), 0.0, "{name}");
    }

    let mut alice = join_as_holder(&server, &certs, "alice").await;
    let mut bob = join_as_holder(&server, &certs, "bob").await;
    alice.expect("bob joined!").await;
    alice.send("/join #ops").await;
    alice.until("[join] #ops: 1 here", WAIT).await;
    bob.send("/join #ops").await;
    bob.until("[join] #ops: 2 here", WAIT).await;
    bob.send("/join #dev").await;
    bob.until("[join] #dev: 1 here", WAIT).await;
    assert_eq!(scrape(m).await.get("chatroom_channels"), 2.0);

    // Refused: nothing done, nothing counted.
    bob.send("/kick alice").await;
    bob.until("ERROR not an operator", WAIT).await;
    alice.send("/topic deploy at noon").await;
    alice.until("[topic] set for #ops", WAIT).await;
    alice.send("/mute bob 10m").await;
    // Its answer names the time, after the channel's notice.
    let mut before = Vec::new();
    let answered = loop {
        let line = alice.line().await;
        if line.starts_with("[mute] bob is muted until ") {
            break true;
        }
        before.push(line);
        if before.len() == 10 {
            break false;
        }
    };
    assert!(answered, "no answer to /mute in {before:?}");
    alice.send("/unmute bob").await;
    alice.until("[mute] bob may speak again", WAIT).await;
    alice.send("/kick bob").await;
    alice.until("[kick] bob is out", WAIT).await;
    bob.until_closed().await;

    // #dev had bob alone: forgotten with him (his session leaves its
    // channels before it closes his connection); #ops keeps alice.
    let after = scrape(m).await;
    assert_eq!(after.get("chatroom_channels"), 1.0);
    for (name, done) in [
        ("kick", 1.0),
        ("ban", 0.0),
        ("mute", 1.0),
        ("unmute", 1.0),
        ("topic", 1.0),
    ] {
        assert_eq!(action(&after, name), done, "{name}");
    }
}
