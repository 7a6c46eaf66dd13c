//! The Lab's exercise 3 on integrity, through the shipped tool: `chatroom
//! lab relay` sits between Alice and the server, and the test types its
//! commands as a student would. In plaintext an injected line passes as
//! Alice's, a replayed one passes twice and a dropped one is lost without
//! a trace; over TLS the injected bytes are no valid record, a replayed or
//! missing record breaks the records' numbering, and each ends Alice's
//! session with nobody reading anything that was not hers.

use crate::harness::cli::{Running, certs_folder, connect_once, fails};
use crate::harness::{Client, Serve, TestServer, TlsClient, WAIT};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// `chatroom lab relay` to `server` on a free loopback port: the relay and
/// the address it listens on.
fn relay(server: SocketAddr) -> Relay {
    let to = server.to_string();
    let args = [
        "lab",
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        to.as_str(),
    ];
    Relay {
        running: Running::start(&std::env::temp_dir(), &args),
    }
}

struct Relay {
    running: Running,
}

impl Relay {
    /// Where it listens, from its first line.
    async fn addr(&mut self) -> SocketAddr {
        let first = self.running.line().await;
        let addr = first
            .strip_prefix("relay: listening on ")
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        addr.parse().expect("an address")
    }

    /// Reads its report until a line holds `wanted`; returns the lines up
    /// to that one.
    async fn until(&mut self, wanted: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self.running.line().await;
            seen.push(line.clone());
            if line.contains(wanted) {
                return seen;
            }
        }
    }

    async fn command(&mut self, text: &str) {
        self.running.type_line(text).await;
    }
}

/// Alice through `relay`, Bob straight to the server, both in the room,
/// in plaintext.
async fn plain_pair(
    server: &TestServer,
    relay: &mut Relay,
) -> (Client<TcpStream>, Client<TcpStream>) {
    let mut alice = Client::plain(relay.addr().await).await;
    alice.register("alice").await;
    let mut bob = Client::plain(server.addr()).await;
    bob.register("bob").await;
    alice.expect("bob joined!").await;
    (alice, bob)
}

/// [`plain_pair`] over TLS.
async fn tls_pair(server: &TestServer, relay: &mut Relay) -> (TlsClient, TlsClient) {
    let mut alice = Client::tls(relay.addr().await, server.client_tls.clone()).await;
    alice.register("alice").await;
    let bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    (alice, bob)
}

const FORGED: &str = "I resign, effective today";

#[tokio::test]
async fn in_plaintext_an_injected_line_passes_as_alices() {
    let server = TestServer::start_with(|s| s.tls = None).await;
    let mut relay = relay(server.addr());
    let (mut alice, mut bob) = plain_pair(&server, &mut relay).await;
    // The relay reads the plaintext: the server's question, Alice's name.
    let seen = relay.until("client > server: text \"alice\"").await;
    assert!(
        seen.iter()
            .any(|l| l.contains("server > client: text \"NICK\"")),
        "{seen:?}"
    );

    relay.command(&format!("inject {FORGED}")).await;
    bob.expect("alice: I resign, effective today").await;
    // Alice never typed it, yet she sees it too, under her name.
    alice.expect("alice: I resign, effective today").await;
    relay.until("INJECTED > server: 26 bytes").await;
}

#[tokio::test]
async fn over_tls_an_injected_line_ends_the_session_and_nobody_reads_it() {
    let server = TestServer::start().await;
    let mut relay = relay(server.addr());
    let (mut alice, mut bob) = tls_pair(&server, &mut relay).await;
    // The relay sees records, not text.
    let seen = relay
        .until("client > server: TLS ApplicationData record")
        .await;
    assert!(seen.iter().any(|l| l.contains("(ClientHello)")), "{seen:?}");
    assert!(seen.iter().all(|l| !l.contains("text \"")), "{seen:?}");

    relay.command(&format!("inject {FORGED}")).await;
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
    relay.until("#1 closed").await;
}

#[tokio::test]
async fn in_plaintext_a_replayed_line_passes_twice_and_a_dropped_one_is_lost() {
    let server = TestServer::start_with(|s| s.tls = None).await;
    let mut relay = relay(server.addr());
    let (mut alice, mut bob) = plain_pair(&server, &mut relay).await;

    alice.send("I pay 10 euros").await;
    bob.expect("alice: I pay 10 euros").await;
    relay
        .until("client > server: text \"I pay 10 euros\"")
        .await;
    relay.command("replay").await;
    bob.expect("alice: I pay 10 euros").await;

    relay.command("drop").await;
    relay.until("drop: the client's next line").await;
    alice.send("please ignore my last line").await;
    relay
        .until("DROPPED text \"please ignore my last line\"")
        .await;
    alice.send("bye").await;
    bob.expect("alice: bye").await;
}

#[tokio::test]
async fn over_tls_a_replayed_or_dropped_record_ends_the_session() {
    let server = TestServer::start().await;
    for command in ["replay", "drop"] {
        let mut relay = relay(server.addr());
        let (mut alice, mut bob) = tls_pair(&server, &mut relay).await;
        alice.send("I pay 10 euros").await;
        bob.expect("alice: I pay 10 euros").await;
        alice.expect("alice: I pay 10 euros").await;
        // The line and its newline, 15 bytes, and 17 of TLS 1.3.
        relay
            .until("client > server: TLS ApplicationData record, 32 bytes")
            .await;

        relay.command(command).await;
        if command == "drop" {
            relay.until("drop: the client's next record").await;
            alice.send("please ignore my last line").await;
            relay.until("DROPPED TLS ApplicationData record").await;
            alice.send("bye").await;
        }
        // Records are numbered: one seen twice, or one missing, and the
        // next does not decrypt. The server ends the session.
        bob.expect("alice left!").await;
        let rest = tokio::time::timeout(WAIT, alice.until_closed())
            .await
            .expect("alice's connection ends");
        // Nothing of hers comes back: not the line again, nor a later one.
        assert!(rest.iter().all(|l| !l.starts_with("alice: ")), "{rest:?}");
        bob.close().await;
    }
}

#[tokio::test]
async fn the_relay_refuses_any_address_but_loopback_with_the_reason() {
    let dir = std::env::temp_dir();
    for (listen, to) in [
        ("0.0.0.0:0", "127.0.0.1:55555"),
        ("127.0.0.1:0", "192.0.2.1:55555"),
    ] {
        let stderr = fails(&dir, &["lab", "relay", "--listen", listen, "--to", to]).await;
        assert!(stderr.contains("is not a loopback address"), "{stderr}");
        assert!(
            stderr.contains("only listens on and connects to this machine"),
            "{stderr}"
        );
    }
}

/// The Lab's certificate exercise: through the relay, a client
/// certificate crosses in the clear in TLS 1.2 (the client's Certificate
/// message, readable in any capture) and encrypted in TLS 1.3, where the
/// relay sees nothing after the hellos but application data records.
#[tokio::test]
async fn a_client_certificate_crosses_in_the_clear_in_tls_1_2_not_in_1_3() {
    let tmp = certs_folder(&["alice"]).await;
    let dir = tmp.path();
    let serve = Serve::start(dir, &["--client-ca", "certs/ca.pem"]).await;
    for (version, in_clear) in [("1.2", true), ("1.3", false)] {
        let mut relay = relay(serve.socket_addr());
        let via = relay.addr().await.to_string();
        let args = [
            "--addr",
            via.as_str(),
            "--tls-version",
            version,
            "--cert",
            "certs/clients/alice.pem",
            "--key",
            "certs/clients/alice-key.pem",
        ];
        let (status, _, stderr) = connect_once(dir, &args, "hello\n", &[]).await;
        assert!(status.success(), "{stderr}");
        let seen = relay.until("#1 closed").await;
        let named = |from: &str, message: &str| {
            seen.iter().any(|l| {
                l.starts_with(&format!("#1 {from} > "))
                    && l.contains("Handshake")
                    && l.contains(message)
            })
        };
        assert_eq!(
            named("client", "(Certificate)"),
            in_clear,
            "{version}: {seen:?}"
        );
        assert_eq!(
            named("server", "Certificate,"),
            in_clear,
            "{version}: {seen:?}"
        );
        assert!(named("client", "(ClientHello)"), "{seen:?}");
    }
}

/// The answer key's relay table (docs/lab-answers.md): the lengths of
/// Alice's records and of the server's records to her over TLS 1.3, for
/// each line it lists, as the relay reports them.
#[tokio::test]
async fn the_answer_keys_relay_figures_match_a_run() {
    let server = TestServer::start().await;
    let mut relay = relay(server.addr());
    let mut alice = Client::tls(relay.addr().await, server.client_tls.clone()).await;
    alice.register("alice").await;
    let rows = crate::harness::answer_key::rows("the_answer_keys_relay_figures_match_a_run");
    for (i, row) in rows.iter().enumerate() {
        let line = match row[0].as_str() {
            "a line of 1000 x" => "x".repeat(1000),
            said => said.to_owned(),
        };
        alice.send(&line).await;
        alice.expect(&format!("alice: {line}")).await;
        // The relay reports each record before passing it on, so its
        // report of the line Alice just read is written; a command it
        // does not know is answered after it, and marks the spot.
        relay.command(&format!("mark-{i}")).await;
        let seen = relay.until(&format!("\"mark-{i}\"")).await;
        let length = |from: &str| -> String {
            let line = seen
                .iter()
                .rev()
                .find(|l| l.starts_with(&format!("#1 {from} > ")))
                .unwrap_or_else(|| panic!("no record from the {from}: {seen:?}"));
            line.rsplit(", ")
                .next()
                .expect("a length")
                .trim_end_matches(" bytes")
                .to_owned()
        };
        assert_eq!(
            (length("client"), length("server")),
            (row[1].clone(), row[2].clone()),
            "{row:?}"
        );
    }
}
