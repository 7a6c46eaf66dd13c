//! What `chatroom connect` shows in a real terminal (tmux): a timestamp
//! and a mark on every line's first row, a stable colour per nickname, the
//! user's own lines, private messages and errors marked, `NO_COLOR`
//! respected, and wrapped rows visibly continuations, so that nobody can
//! pad a message into what looks like somebody else's line.
//!
//! Needs tmux; CI installs it. Elsewhere, without tmux, the tests say so
//! and pass.

use crate::harness::tmux::{Tmux, last_line};
use crate::harness::{BIN, Serve};
use chatroom::client::display::{CONTINUATION, nick_colour};
use std::path::Path;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

/// Whether `row` starts with a timestamp `HH:MM`, then ` `, `mark`, ` `
/// and `rest`.
fn is_first_row(row: &str, mark: char, rest: &str) -> bool {
    let bytes = row.as_bytes();
    row.len() > 8
        && bytes[..5].iter().enumerate().all(|(i, b)| {
            if i == 2 {
                *b == b':'
            } else {
                b.is_ascii_digit()
            }
        })
        && row[5..].starts_with(&format!(" {mark} {rest}"))
}

fn has_row(screen: &str, mark: char, rest: &str) -> bool {
    screen.lines().any(|row| is_first_row(row, mark, rest))
}

/// A participant on pipes, who speaks when told to.
struct Piped {
    _child: Child,
    says: ChildStdin,
}

async fn piped(dir: &Path, addr: &str, nick: &str) -> Piped {
    let mut child = tokio::process::Command::new(BIN)
        .args(["connect", "--addr", addr, "--nick", nick])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("client starts");
    let says = child.stdin.take().expect("stdin");
    Piped {
        _child: child,
        says,
    }
}

impl Piped {
    async fn say(&mut self, text: &str) {
        self.says
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("write");
    }
}

/// Starts alice's interactive client in the tmux session.
async fn alice_joins(tmux: &Tmux, addr: &str, env: &str) {
    let client = format!("{env} {BIN} connect --addr {addr} --nick alice; echo EXIT=$?");
    tmux.keys(&[&client, "Enter"]);
    tmux.wait_until("the welcome", |s| has_row(s, '-', "Connected to server!"))
        .await;
}

#[tokio::test]
async fn time_marks_colours_and_a_private_message_while_typing() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let Some(tmux) = Tmux::start("display", dir, 100, 40) else {
        return;
    };
    let serve = Serve::start(dir, &[]).await;
    alice_joins(&tmux, &serve.addr, "env -u NO_COLOR").await;
    // Whom it talks to, on stderr, once, before the chat.
    let screen = tmux.screen();
    assert!(screen.contains("over TLS 1.3"), "{screen}");
    assert!(screen.contains("fingerprint: "), "{screen}");
    assert!(has_row(&screen, '-', "alice joined!"), "{screen}");

    // Alice is typing when bob speaks, publicly and to her alone.
    tmux.keys(&["hel"]);
    tmux.wait_until("the typed text", |s| last_line(s) == "hel")
        .await;
    let mut bob = piped(dir, &serve.addr, "bob").await;
    bob.say("hi all").await;
    bob.say("/msg alice psst").await;
    let screen = tmux
        .wait_until("the private line", |s| {
            has_row(s, 'P', "[private] bob -> alice: psst")
        })
        .await;
    assert!(has_row(&screen, ' ', "bob: hi all"), "{screen}");
    assert!(has_row(&screen, '-', "bob joined!"), "{screen}");
    // Her unfinished line is intact below.
    assert_eq!(last_line(&screen), "hel", "{screen}");

    // She finishes it: her own line is marked; an unknown command is an
    // error, marked too.
    tmux.keys(&["lo", "Enter"]);
    tmux.wait_until("her own line", |s| has_row(s, '>', "alice: hello"))
        .await;
    tmux.keys(&["/nope", "Enter"]);
    tmux.wait_until("the error", |s| has_row(s, '!', "ERROR unknown command"))
        .await;

    // Colours: bob's name always in bob's colour, alice's own underlined,
    // the private mark and the error in theirs.
    let coloured = tmux.coloured_screen();
    // tmux writes each attribute as its own sequence, so look for the
    // colour's code right before the name.
    let bob_code = nick_colour("bob").render_fg().to_string();
    let bob_rows: Vec<&str> = coloured
        .lines()
        .filter(|l| l.contains("bob") && l.contains(": hi all"))
        .collect();
    assert_eq!(bob_rows.len(), 1, "{coloured}");
    assert!(
        bob_rows[0].contains(&format!("{bob_code}bob")),
        "{:?}",
        bob_rows[0]
    );
    let alice_row = coloured
        .lines()
        .find(|l| l.contains(": hello"))
        .expect("alice's row");
    let alice_code = format!("{}", nick_colour("alice").render_fg());
    assert!(alice_row.contains(&alice_code), "{alice_row:?}");
    assert!(alice_row.contains(";4m"), "underlined: {alice_row:?}");
    let error_row = coloured
        .lines()
        .find(|l| l.contains("ERROR unknown command"))
        .expect("error row");
    assert!(error_row.contains("\u{1b}[31m"), "red: {error_row:?}");
    let private_row = coloured
        .lines()
        .find(|l| l.contains("[private] bob -> alice: psst"))
        .expect("private row");
    // The plain space between the mark and the text resets the colour, so
    // tmux writes magenta (35) again before each.
    assert!(
        private_row.contains("\u{1b}[35mP"),
        "magenta mark: {private_row:?}"
    );
    assert!(
        private_row.contains("\u{1b}[35m[private] bob -> alice: psst"),
        "magenta text: {private_row:?}"
    );

    // When the server stops, its line is marked as the server's.
    serve.signal("TERM").await;
    tmux.wait_until("the server's farewell", |s| {
        has_row(s, '-', "Server is shutting down")
    })
    .await;
    let _ = serve.kill_and_log().await;
}

#[tokio::test]
async fn no_color_keeps_time_and_marks_without_escapes() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let Some(tmux) = Tmux::start("nocolor", dir, 100, 40) else {
        return;
    };
    let serve = Serve::start(dir, &[]).await;
    alice_joins(&tmux, &serve.addr, "NO_COLOR=1").await;
    let mut bob = piped(dir, &serve.addr, "bob").await;
    bob.say("/msg alice psst").await;
    bob.say("/me waves").await;
    tmux.wait_until("bob's lines", |s| has_row(s, ' ', "* bob waves"))
        .await;
    let coloured = tmux.coloured_screen();
    assert!(!coloured.contains('\u{1b}'), "{coloured:?}");
    assert!(has_row(&coloured, 'P', "[private] bob -> alice: psst"));

    // `/quit` ends the client at once, without waiting for Enter.
    tmux.keys(&["/quit gone fishing", "Enter"]);
    let screen = tmux
        .wait_until("a clean exit", |s| s.lines().any(|l| l == "EXIT=0"))
        .await;
    assert!(screen.contains("you left the room"), "{screen}");
    let _ = serve.kill_and_log().await;
}

#[tokio::test]
async fn padding_a_message_to_the_width_cannot_forge_another_line() {
    const WIDTH: usize = 60;
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let Some(tmux) = Tmux::start("wrap", dir, WIDTH as u16, 40) else {
        return;
    };
    let serve = Serve::start(dir, &[]).await;
    alice_joins(&tmux, &serve.addr, "").await;
    let mut mallory = piped(dir, &serve.addr, "mallory").await;
    tmux.wait_until("mallory's join", |s| has_row(s, '-', "mallory joined!"))
        .await;
    // Padded so that, wrapped by the terminal, the text would start a row.
    for pad in [WIDTH - "mallory: x".len(), WIDTH - 8 - "mallory: x".len()] {
        let forged = format!(
            "x{}bob: meeting moved, new server is 10.0.0.66",
            " ".repeat(pad)
        );
        mallory.say(&forged).await;
    }
    tmux.wait_until("the padded lines", |s| {
        s.matches("bob: meeting moved").count() == 2
    })
    .await;
    let mut bob = piped(dir, &serve.addr, "bob").await;
    tmux.wait_until("bob's join", |s| has_row(s, '-', "bob joined!"))
        .await;
    bob.say("the real bob").await;
    let screen = tmux
        .wait_until("bob's real line", |s| has_row(s, ' ', "bob: the real bob"))
        .await;
    let forged_rows: Vec<&str> = screen
        .lines()
        .filter(|row| row.contains("bob: meeting moved"))
        .collect();
    assert_eq!(forged_rows.len(), 2, "{screen}");
    for row in forged_rows {
        assert!(row.starts_with(CONTINUATION), "{row:?} in\n{screen}");
    }
    // The only rows that start like bob's lines are bob's.
    let bobs: Vec<&str> = screen
        .lines()
        .filter(|row| row.trim_start().starts_with("bob:") || has_row(row, ' ', "bob:"))
        .collect();
    assert_eq!(bobs.len(), 1, "{screen}");
    assert!(has_row(bobs[0], ' ', "bob: the real bob"));
    let _ = serve.kill_and_log().await;
}
