//! Text that looks like it came from someone else: lookalike nicknames,
//! nicknames that read like the server's lines, and invisible or
//! direction-changing characters, refused or stripped by the server, and
//! stripped again by the client whatever a server sends.

use crate::harness::{BIN, TestServer, WAIT};
use chatroom::protocol::sanitize;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

/// Every invisible, direction or separator character the issue names, one
/// between each pair of letters.
const HIDDEN: &str =
    "a\u{200e}b\u{200f}c\u{61c}d\u{200b}e\u{feff}f\u{2028}g\u{2029}h\u{e0041}i\u{ad}j";
const SHOWN: &str = "abcdefghij";

/// Every character and range README's protocol section and SECURITY.md
/// say the server strips, one entry per item as they name it, so that
/// narrowing `is_unsafe_char` breaks this list rather than the promise.
const DOCUMENTED: &[(&str, char, char)] = &[
    // C0 controls except tab (tab is skipped below, and checked to stay).
    ("C0 controls", '\u{0}', '\u{1f}'),
    // DEL.
    ("DEL", '\u{7f}', '\u{7f}'),
    // C1 controls.
    ("C1 controls", '\u{80}', '\u{9f}'),
    // Bidirectional overrides and embeddings, U+202A to U+202E.
    ("bidi overrides and embeddings", '\u{202a}', '\u{202e}'),
    // Bidirectional isolates, U+2066 to U+2069.
    ("bidi isolates", '\u{2066}', '\u{2069}'),
    // Left-to-right mark, U+200E.
    ("left-to-right mark", '\u{200e}', '\u{200e}'),
    // Right-to-left mark, U+200F.
    ("right-to-left mark", '\u{200f}', '\u{200f}'),
    // Arabic letter mark, U+061C.
    ("Arabic letter mark", '\u{61c}', '\u{61c}'),
    // Zero-width space, U+200B.
    ("zero-width space", '\u{200b}', '\u{200b}'),
    // Byte-order mark (zero-width no-break space), U+FEFF.
    ("byte-order mark", '\u{feff}', '\u{feff}'),
    // Soft hyphen, U+00AD.
    ("soft hyphen", '\u{ad}', '\u{ad}'),
    // Mongolian vowel separator, U+180E.
    ("Mongolian vowel separator", '\u{180e}', '\u{180e}'),
    // Word joiner and invisible operators, U+2060 to U+2064.
    (
        "word joiner and invisible operators",
        '\u{2060}',
        '\u{2064}',
    ),
    // Deprecated format controls, U+206A to U+206F.
    ("deprecated format controls", '\u{206a}', '\u{206f}'),
    // Interlinear annotation controls, U+FFF9 to U+FFFB.
    ("interlinear annotation controls", '\u{fff9}', '\u{fffb}'),
    // Tag characters, U+E0000 to U+E007F.
    ("tag characters", '\u{e0000}', '\u{e007f}'),
    // Line separator, U+2028.
    ("line separator", '\u{2028}', '\u{2028}'),
    // Paragraph separator, U+2029.
    ("paragraph separator", '\u{2029}', '\u{2029}'),
];

#[test]
fn every_documented_character_is_stripped_and_the_joiners_stay() {
    let mut checked = 0;
    for &(item, first, last) in DOCUMENTED {
        for c in (first..=last).filter(|&c| c != '\t') {
            let text = format!("a{c}b");
            assert_eq!(
                sanitize(&text),
                "ab",
                "{item}: U+{:04X} is not stripped",
                u32::from(c)
            );
            checked += 1;
        }
    }
    // Every code point of every range, not only the first of each.
    assert_eq!(
        checked,
        31 + 1 + 32 + 5 + 4 + 3 + 3 + 1 + 5 + 6 + 3 + 128 + 2
    );
    for kept in ['\t', '\u{200c}', '\u{200d}'] {
        let text = format!("a{kept}b");
        assert_eq!(sanitize(&text), text, "U+{:04X} stripped", u32::from(kept));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_strips_documented_characters_from_a_message() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    // One from each of several ranges the older tests did not reach.
    bob.send("s\u{202a}t\u{2061}r\u{180e}i\u{fffa}p\u{206b}p\u{2069}e\u{85}d")
        .await;
    alice.expect("bob: stripped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookalike_and_server_like_nicknames_are_refused() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;

    // Three strikes on one connection: a lookalike and two server-like names.
    let mut mallory = server.connect().await;
    for (nick, error) in [
        ("aIice", "ERROR nickname \"aIice\" is taken"),
        ("Server-", "ERROR nickname \"Server-\" is reserved"),
        ("ERROR-1", "ERROR nickname \"ERROR-1\" is reserved"),
    ] {
        mallory.expect("NICK").await;
        mallory.send(nick).await;
        mallory.expect(error).await;
    }
    assert_eq!(mallory.until_closed().await, Vec::<String>::new());

    let mut other = server.connect().await;
    for (nick, error) in [
        ("A1ICE", "ERROR nickname \"A1ICE\" is taken"),
        (
            "SERVER_notice",
            "ERROR nickname \"SERVER_notice\" is reserved",
        ),
    ] {
        other.expect("NICK").await;
        other.send(nick).await;
        other.expect(error).await;
    }
    // NICK is reserved as a whole name only: people are called Nicky.
    other.register("Nicky").await;
    alice.expect("Nicky joined!").await;

    // The room never heard of the refused names.
    other.send("hello").await;
    alice.expect("Nicky: hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_and_direction_characters_never_reach_the_others() {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob joined!").await;
    bob.send(HIDDEN).await;
    alice.expect(&format!("bob: {SHOWN}")).await;
    bob.expect(&format!("bob: {SHOWN}")).await;
    // A line of nothing but such characters is an empty line: not relayed.
    bob.send("\u{200b}\u{feff}\u{e0001}").await;
    bob.send("after").await;
    alice.expect("bob: after").await;
}

#[tokio::test]
async fn the_client_strips_them_too_whatever_the_server_sends() {
    // A hostile server, in plaintext so it can send anything.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hostile = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let (read, mut write) = tcp.into_split();
        write.write_all(b"NICK\n").await.expect("write");
        let nick = BufReader::new(read)
            .lines()
            .next_line()
            .await
            .expect("read")
            .expect("a nickname");
        let lines = format!("{nick} joined!\nConnected to server!\nbob: {HIDDEN}\n");
        write.write_all(lines.as_bytes()).await.expect("write");
        write.shutdown().await.expect("close");
    });
    let mut client = Command::new(BIN)
        .args(["connect", "--plaintext", "--nick", "alice", "--addr"])
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("connect starts");
    // Reads the client's screen (its stdout) until bob's line, then ends
    // its input so that it leaves.
    let stdin = client.stdin.take();
    let mut stdout = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let mut shown = Vec::new();
    let bobs = tokio::time::timeout(WAIT, async {
        while let Some(line) = stdout.next_line().await.expect("read stdout") {
            let is_bobs = line.starts_with("bob: ");
            shown.push(line.clone());
            if is_bobs {
                return line;
            }
        }
        panic!("the client printed no line of bob's: {shown:?}");
    })
    .await
    .expect("bob's line shown in time");
    assert_eq!(bobs, format!("bob: {SHOWN}"));
    drop(stdin);
    tokio::time::timeout(WAIT, client.wait())
        .await
        .expect("the client leaves at the end of its input")
        .expect("client status");
    hostile.await.expect("hostile server");
}
