//! The chat commands over real TLS: `/list`, `/msg`, `/me`, `/quit`,
//! `/help`, unknown commands, the `//` escape, `--history`, and that
//! commands and refused lines spend the rate limit like messages.

use crate::harness::TestServer;
use chatroom::server::rate::RateLimit;

#[tokio::test]
async fn list_help_me_and_unknown_commands() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("Bob").await;
    alice.expect("Bob joined!").await;

    // `/list` and `/help` answer the asker only.
    alice.send("/list").await;
    alice.expect("[list] 2 here: alice, Bob").await;
    bob.send("/HELP").await;
    let help: Vec<String> = {
        let mut lines = Vec::new();
        for _ in 0..chatroom::protocol::HELP.len() {
            lines.push(bob.line().await);
        }
        lines
    };
    assert_eq!(help, chatroom::protocol::HELP);
    for (line, command) in help.iter().zip([
        "/list", "/join", "/part", "/rooms", "/topic", "/msg", "/me", "/quit", "/help", "//",
    ]) {
        assert!(line.starts_with(&format!("[help] {command}")), "{line}");
    }

    // `/me` goes to everyone; an unknown command or a bad usage to the
    // sender only; `//` escapes a leading slash.
    alice.send("/me waves \u{1b}[31m").await;
    alice.send("/nick carol").await;
    alice.send("/me").await;
    alice.send("//etc/hosts is a file").await;
    alice.expect("* alice waves [31m").await;
    alice.expect("ERROR unknown command").await;
    alice.expect("ERROR usage: /me TEXT").await;
    alice.expect("alice: /etc/hosts is a file").await;
    bob.expect("* alice waves [31m").await;
    bob.expect("alice: /etc/hosts is a file").await;
    // Without a store on disk there is nothing to recall or search.
    alice.send("/history").await;
    alice.send("/search waves").await;
    alice.expect("ERROR unknown command").await;
    alice.expect("ERROR unknown command").await;
}

#[tokio::test]
async fn a_private_message_reaches_its_recipient_only_and_is_marked() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    let mut carol = server.join("carol").await;
    alice.expect("carol joined!").await;
    bob.expect("carol joined!").await;

    alice.send("/msg BOB  the key is under the mat").await;
    alice
        .expect("[private] alice -> bob: the key is under the mat")
        .await;
    bob.expect("[private] alice -> bob: the key is under the mat")
        .await;
    alice.send("/msg dave hello?").await;
    alice.expect("ERROR no such nickname \"dave\"").await;
    alice.send("/msg bob").await;
    alice.expect("ERROR usage: /msg NICK TEXT").await;

    // Carol saw none of it: her next line is the next public one.
    alice.send("public again").await;
    carol.expect("alice: public again").await;
    bob.expect("alice: public again").await;
}

#[tokio::test]
async fn quit_with_a_reason_tells_the_others_why() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    bob.send("/list").await;
    bob.send("/quit  off to lunch\u{7}").await;
    // The reply to the line before `/quit` still arrives; then the server
    // closes the session.
    assert_eq!(bob.until_closed().await, ["[list] 2 here: alice, bob"]);
    alice.expect("bob left! (off to lunch)").await;

    let mut carol = server.join("carol").await;
    alice.expect("carol joined!").await;
    carol.send("/quit").await;
    assert!(carol.until_closed().await.is_empty());
    alice.expect("carol left!").await;
    alice.send("/list").await;
    alice.expect("[list] 1 here: alice").await;
}

#[tokio::test]
async fn a_newcomer_gets_the_last_public_lines_marked_as_history() {
    let server = TestServer::start_with(|s| s.history_lines = 3).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    for text in ["one", "two", "three"] {
        alice.send(text).await;
    }
    alice.send("/me waves").await;
    alice.send("/msg bob secret").await;
    for expected in ["alice: one", "alice: two", "alice: three", "* alice waves"] {
        bob.expect(expected).await;
    }
    bob.expect("[private] alice -> bob: secret").await;

    let mut carol = server.connect().await;
    carol.expect("NICK").await;
    carol.send("carol").await;
    carol.expect("carol joined!").await;
    carol.expect("Connected to server!").await;
    // The last three public lines, marked; never the private one, never
    // the joins.
    carol.expect("[history] alice: two").await;
    carol.expect("[history] alice: three").await;
    carol.expect("[history] * alice waves").await;
    // Then live lines, unmarked.
    bob.send("welcome carol").await;
    carol.expect("bob: welcome carol").await;
}

#[tokio::test]
async fn without_history_a_newcomer_gets_live_lines_only() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    alice.send("before").await;
    alice.expect("alice: before").await;
    let mut bob = server.join("bob").await;
    alice.send("after").await;
    bob.expect("alice: after").await;
}

/// Sends `spend` (two lines that are not messages) then a message in one
/// write, with a burst of 2 and a rate so slow that no token comes back
/// during the test. If the two lines spent the burst, the message waits;
/// otherwise it is published in the same turn, before the replies go out.
async fn two_lines_then_a_message_in_one_write(spend: &[u8], reply: &str) {
    let rate = RateLimit {
        per_second: 0.01,
        burst: 2,
    };
    let server = TestServer::start_with(|s| s.limits.rate = Some(rate)).await;
    let mut watcher = server.join("watcher").await;
    let mut carol = server.join("carol").await;
    watcher.expect("carol joined!").await;
    let mut alice = server.join("alice").await;
    watcher.expect("alice joined!").await;

    let mut write = spend.to_vec();
    write.extend_from_slice(b"spoken too soon\n");
    alice.send_raw(&write).await;
    alice.expect(reply).await;
    alice.expect(reply).await;
    // Alice has been answered twice, so her message was read by now if it
    // was going to be. Carol speaks next: the watcher must hear her first.
    carol.send("marker").await;
    assert_eq!(watcher.line().await, "carol: marker");
}

#[tokio::test]
async fn commands_spend_the_rate_limit_like_messages() {
    two_lines_then_a_message_in_one_write(b"/nope\n/nope\n", "ERROR unknown command").await;
}

#[tokio::test]
async fn invalid_utf8_spends_the_rate_limit_like_messages() {
    two_lines_then_a_message_in_one_write(b"\xff\n\xfe\n", "ERROR invalid UTF-8").await;
}

#[tokio::test]
async fn a_long_list_names_the_first_and_counts_the_rest() {
    let server = TestServer::start().await;
    let total = chatroom::protocol::LIST_MAX + 3;
    let mut clients = Vec::new();
    for i in 0..total {
        clients.push(server.join(&format!("n{i:03}")).await);
    }
    let asker = clients.last_mut().expect("clients");
    asker.send("/list").await;
    let expected: Vec<String> = (0..chatroom::protocol::LIST_MAX)
        .map(|i| format!("n{i:03}"))
        .collect();
    asker
        .expect(&format!(
            "[list] {total} here: {}, and 3 more",
            expected.join(", ")
        ))
        .await;
}
