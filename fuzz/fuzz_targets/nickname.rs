//! Nickname rules and text sanitizing on arbitrary input: nothing panics,
//! the nickname check accepts exactly the documented language, sanitized
//! text holds no unsafe character, and a chat line built from a valid
//! nickname and sanitized text is exactly one line.

#![no_main]

use chatroom::protocol::{self, Command, Input, NickError};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/model.rs"]
mod model;
use model::documented_nickname as documented;

fuzz_target!(|data: &[u8]| {
    let printable = protocol::sanitize_bytes(data);
    assert!(!printable.chars().any(protocol::is_unsafe_char));

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(protocol::nick_key(text), model::documented_skeleton(text));
    match protocol::validate_nickname(text) {
        Ok(nick) => {
            assert!(documented(text), "accepted {text:?}");
            assert_eq!(nick, text);
            assert_eq!(protocol::nick_key(nick), model::documented_skeleton(text));
        }
        Err(e) => {
            assert!(!documented(text), "refused {text:?}: {e}");
            // Every refusal has a reason a user can read on one line.
            let reason = protocol::error_line(&e);
            assert_eq!(reason.iter().filter(|&&b| b == b'\n').count(), 1);
            if let NickError::Reserved(n) | NickError::Taken(n) = e {
                assert_eq!(n, text);
            }
        }
    }

    let clean = protocol::sanitize(text);
    assert!(!clean.chars().any(protocol::is_unsafe_char));
    assert_eq!(protocol::sanitize(&clean), clean, "sanitize is idempotent");
    let mut kept = text.chars().filter(|c| !protocol::is_unsafe_char(*c));
    assert!(clean.chars().eq(&mut kept), "only unsafe characters go");

    match protocol::parse_input(text) {
        Input::Empty => assert!(clean.is_empty()),
        Input::Command(command) => {
            assert!(text.starts_with('/') && !text.starts_with("//"));
            // Every line a command makes is one safe line. (A private line
            // names its recipient as registered, not as typed.)
            let line = match command {
                Command::Msg { text, .. } => Some(protocol::private_line("alice", "bob", &text)),
                Command::Me(text) => Some(protocol::action_line("alice", &text)),
                Command::Quit(Some(reason)) => Some(protocol::left_line_because("alice", &reason)),
                _ => None,
            };
            if let Some(line) = line {
                assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
                assert!(line.ends_with(b"\n"));
                let body = std::str::from_utf8(&line).expect("utf-8");
                assert!(!body.trim_end_matches('\n').chars().any(protocol::is_unsafe_char));
            }
        }
        Input::Message(message) => {
            assert!(!message.is_empty() && !message.chars().any(protocol::is_unsafe_char));
            let line = protocol::chat_line("alice", &message);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(line.ends_with(b"\n"));
        }
    }
});
