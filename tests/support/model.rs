//! Plain models of the protocol's rules, written out the obvious way, for
//! the property tests (tests/it/props/framing.rs) and the fuzz targets (fuzz/)
//! to hold the real code against. Included by path from both.
#![allow(dead_code)]

use chatroom::protocol::MAX_NICK_LEN;

/// What a framer produced: the lines, then whether it stopped on an error.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed {
    pub lines: Vec<Vec<u8>>,
    pub too_long: bool,
}

/// The framing rules written out plainly: `\n` ends a line, one `\r`
/// before it is dropped, a line (or a partial one beyond the `\r` slack)
/// over the limit is an error.
pub fn reference(stream: &[u8], max_line: usize) -> Framed {
    let mut lines = Vec::new();
    let mut rest = stream;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > max_line {
            return Framed {
                lines,
                too_long: true,
            };
        }
        lines.push(line.to_vec());
        rest = &rest[end + 1..];
    }
    Framed {
        lines,
        too_long: rest.len() > max_line + 1,
    }
}

/// The documented skeleton nicknames are compared on: lower case, then
/// `i`, `1`, `|` and `!` read as `l`, `0` as `o`, `-` as `_`.
pub fn documented_skeleton(nick: &str) -> String {
    nick.to_ascii_lowercase()
        .replace(['i', '1', '|', '!'], "l")
        .replace('0', "o")
        .replace('-', "_")
}

/// The documented nickname language: 1 to 32 ASCII letters, digits, `_` or
/// `-`, starting with a letter; its skeleton is not NICK's and does not
/// start with server's or error's.
pub fn documented_nickname(nick: &str) -> bool {
    let bytes = nick.as_bytes();
    let skeleton = documented_skeleton(nick);
    !bytes.is_empty()
        && bytes.len() <= MAX_NICK_LEN
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        && skeleton != "nlck"
        && !skeleton.starts_with("server")
        && !skeleton.starts_with("error")
}
