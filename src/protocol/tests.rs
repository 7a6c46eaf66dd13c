//! The protocol's pure parts: framing, parsing, lines, names.

use super::*;

fn lines(framer: &mut LineFramer) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(line) = framer.next_line().expect("within limit") {
        out.push(String::from_utf8(line.to_vec()).expect("utf-8"));
    }
    out
}

#[test]
fn frames_lines_across_chunks_and_drops_cr() {
    let mut framer = LineFramer::new(100);
    framer.extend(b"hel");
    assert!(lines(&mut framer).is_empty());
    framer.extend(b"lo\r\nwor");
    assert_eq!(lines(&mut framer), ["hello"]);
    framer.extend(b"ld\n\nlast\r");
    assert_eq!(lines(&mut framer), ["world", ""]);
    framer.extend(b"\n");
    assert_eq!(lines(&mut framer), ["last"]);
    assert_eq!(framer.buffered(), 0);
}

#[test]
fn keeps_a_lone_cr_inside_a_line() {
    let mut framer = LineFramer::new(100);
    framer.extend(b"a\rb\n");
    assert_eq!(lines(&mut framer), ["a\rb"]);
}

#[test]
fn search_lines_carry_the_utc_minute_and_the_line_as_shown() {
    let when = time::OffsetDateTime::from_unix_timestamp(1_767_225_659)
        .expect("time")
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).expect("offset"));
    let line = search_line(when, &chat_line("bob", "hi"));
    assert_eq!(line, "[search] 2026-01-01 00:00 bob: hi\n");
    assert_eq!(search_summary(0), "[search] no matches\n");
    assert_eq!(search_summary(1), "[search] 1 match\n");
    assert_eq!(search_summary(20), "[search] 20 matches\n");
}

#[test]
fn line_at_the_limit_passes_one_over_fails() {
    let mut framer = LineFramer::new(4);
    framer.extend(b"abcd\r\n");
    assert_eq!(lines(&mut framer), ["abcd"]);
    framer.extend(b"abcde\n");
    assert_eq!(framer.next_line(), Err(FrameError::TooLong));
}

#[test]
fn overlong_partial_line_fails_before_its_end() {
    let mut framer = LineFramer::new(4);
    framer.extend(b"abcd\r");
    assert_eq!(framer.next_line(), Ok(None));
    framer.extend(b"x");
    assert_eq!(framer.next_line(), Err(FrameError::TooLong));
}

#[test]
fn nickname_rules() {
    assert_eq!(validate_nickname("alice"), Ok("alice"));
    assert_eq!(validate_nickname("A-b_9"), Ok("A-b_9"));
    assert_eq!(validate_nickname(&"a".repeat(32)), Ok(&*"a".repeat(32)));
    assert_eq!(validate_nickname(""), Err(NickError::Empty));
    assert_eq!(validate_nickname(&"a".repeat(33)), Err(NickError::TooLong));
    assert_eq!(validate_nickname("9lives"), Err(NickError::BadStart));
    assert_eq!(validate_nickname("_x"), Err(NickError::BadStart));
    assert_eq!(validate_nickname("bo b"), Err(NickError::BadChar));
    assert_eq!(validate_nickname("bøb"), Err(NickError::BadChar));
    for reserved in [
        "NICK",
        "nick",
        "N1CK",
        "Error",
        "SERVER",
        "Server-",
        "SERVER_notice",
        "ERROR-1",
        "err0r",
        "serverbot",
    ] {
        assert!(
            matches!(validate_nickname(reserved), Err(NickError::Reserved(_))),
            "{reserved}"
        );
    }
    for fine in ["Nicky", "nick2", "Serve", "errand", "my-server"] {
        assert_eq!(validate_nickname(fine), Ok(fine));
    }
    assert_eq!(nick_key("BoB"), nick_key("bob"));
    assert_eq!(nick_key("aIice"), nick_key("alice"));
    assert_eq!(nick_key("a1ice"), nick_key("ALICE"));
    assert_eq!(nick_key("B0b"), nick_key("bob"));
    assert_eq!(nick_key("bob-x"), nick_key("bob_x"));
    assert_ne!(nick_key("bob"), nick_key("rob"));
}

#[test]
fn error_texts_are_what_users_read() {
    assert_eq!(
        error_line(NickError::Taken("bob".into())),
        "ERROR nickname \"bob\" is taken\n"
    );
    assert_eq!(chat_line("alice", "hi"), "alice: hi\n");
    assert_eq!(joined_line("alice"), "alice joined!\n");
    assert_eq!(left_line("alice"), "alice left!\n");
    assert_eq!(left_line_because("alice", "lunch"), "alice left! (lunch)\n");
    assert_eq!(action_line("alice", "waves"), "* alice waves\n");
    assert_eq!(
        private_line("alice", "bob", "psst"),
        "[private] alice -> bob: psst\n"
    );
    assert_eq!(history_line(b"alice: hi\n"), "[history] alice: hi\n");
    let names = ["Alice".to_owned(), "bob".into(), "carol".into()];
    assert_eq!(list_line(3, &names), "[list] 3 here: Alice, bob, carol\n");
    assert_eq!(
        list_line(205, &names[..2]),
        "[list] 205 here: Alice, bob, and 203 more\n"
    );
}

#[test]
fn input_classification() {
    assert_eq!(parse_input(""), Input::Empty);
    assert_eq!(parse_input("\u{1b}\u{7}"), Input::Empty);
    assert_eq!(parse_input("/nick bob"), Input::Command(Command::Unknown));
    assert_eq!(parse_input("/"), Input::Command(Command::Unknown));
    assert_eq!(parse_input("/LIST"), Input::Command(Command::List));
    assert_eq!(parse_input("/help me"), Input::Command(Command::Help));
    assert_eq!(
        parse_input("/history"),
        Input::Command(Command::History(20))
    );
    assert_eq!(
        parse_input("/HISTORY 5"),
        Input::Command(Command::History(5))
    );
    assert_eq!(
        parse_input("/history 5000"),
        Input::Command(Command::History(200))
    );
    for bad in ["/history 0", "/history x", "/history -1"] {
        assert!(
            matches!(parse_input(bad), Input::Command(Command::Usage(_))),
            "{bad}"
        );
    }
    assert_eq!(
        parse_input("/search deploy \u{1b}noon"),
        Input::Command(Command::Search("deploy noon".into()))
    );
    assert_eq!(
        parse_input("/search  "),
        Input::Command(Command::Usage("usage: /search WORDS"))
    );
    assert_eq!(
        parse_input("/msg  bob  hi \u{1b}[31mthere "),
        Input::Command(Command::Msg {
            to: "bob",
            text: "hi [31mthere".into()
        })
    );
    for usage in ["/msg bob", "/msg bob \u{7}", "/msg", "/me", "/me   "] {
        assert!(
            matches!(parse_input(usage), Input::Command(Command::Usage(_))),
            "{usage}"
        );
    }
    assert_eq!(parse_input("/quit"), Input::Command(Command::Quit(None)));
    assert_eq!(
        parse_input("/quit  lunch\u{1b} "),
        Input::Command(Command::Quit(Some("lunch".into())))
    );
    assert_eq!(parse_input("//x"), Input::Message("/x".into()));
    assert_eq!(parse_input("//"), Input::Message("/".into()));
    assert_eq!(parse_input("hi there"), Input::Message("hi there".into()));
    assert_eq!(
        parse_input("\u{1b}[2Jhi\tthere\u{9b}"),
        Input::Message("[2Jhi\tthere".into())
    );
}

#[test]
fn sanitize_strips_terminal_controls_and_bidi() {
    assert_eq!(sanitize("a\u{1b}]0;title\u{7}b"), "a]0;titleb");
    assert_eq!(sanitize("x\u{202e}y\u{2066}z"), "xyz");
    assert_eq!(
        sanitize("a\u{200e}b\u{200f}c\u{61c}d\u{200b}e\u{feff}f\u{2028}g\u{2029}h\u{e0041}i"),
        "abcdefghi"
    );
    // Joiners stay: emoji sequences and some scripts need them.
    assert_eq!(
        sanitize("\u{1f469}\u{200d}\u{1f4bb}"),
        "\u{1f469}\u{200d}\u{1f4bb}"
    );
    assert_eq!(sanitize_bytes(b"ok\xff\x1b[31m"), "ok\u{fffd}[31m");
    assert!(matches!(sanitize("plain"), std::borrow::Cow::Borrowed(_)));
    // The edges of printable ASCII: `~` and space stay, DEL goes.
    assert_eq!(sanitize(" a~\u{7f}b\u{1f}"), " a~b");
    assert_eq!(sanitize("tab\tstays"), "tab\tstays");
}
