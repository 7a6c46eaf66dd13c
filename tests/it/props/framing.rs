//! Properties of the pure protocol code, on generated input: line framing
//! (never panics, bounded buffer, chunking-independent), sanitizing (no
//! unsafe character survives) and the nickname language.

use chatroom::protocol::{self, FrameError, Input, LineFramer, MAX_NICK_LEN, NickError};
use proptest::prelude::*;

use super::model::{Framed, documented_nickname, documented_skeleton, reference};

/// Feeds `chunks` one at a time (alternating `read_buf` and `extend`, as a
/// socket read and a test would), draining lines after each, and checks the
/// buffer bound on the way.
fn frame_chunks(chunks: &[&[u8]], max_line: usize) -> Framed {
    frame_chunks_by(chunks, max_line, |framer| {
        framer
            .next_line()
            .map(|line| line.map(|line| line.to_vec()))
    })
}

/// As [`frame_chunks`], with the lines looked at where they lie
/// ([`LineFramer::next_line_in_place`]).
fn frame_chunks_in_place(chunks: &[&[u8]], max_line: usize) -> Framed {
    frame_chunks_by(chunks, max_line, |framer| {
        framer.next_line_in_place(<[u8]>::to_vec)
    })
}

fn frame_chunks_by(
    chunks: &[&[u8]],
    max_line: usize,
    mut next: impl FnMut(&mut LineFramer) -> Result<Option<Vec<u8>>, FrameError>,
) -> Framed {
    let mut framer = LineFramer::new(max_line);
    let mut out = Framed {
        lines: Vec::new(),
        too_long: false,
    };
    for (i, chunk) in chunks.iter().enumerate() {
        if i % 2 == 0 {
            framer.read_buf().extend_from_slice(chunk);
        } else {
            framer.extend(chunk);
        }
        assert!(
            framer.buffered() <= max_line + 1 + chunk.len(),
            "buffered {} with limit {max_line} after a {}-byte chunk",
            framer.buffered(),
            chunk.len()
        );
        loop {
            match next(&mut framer) {
                Ok(Some(line)) => {
                    assert!(line.len() <= max_line);
                    assert!(!line.contains(&b'\n'));
                    out.lines.push(line);
                    framer.release_if_empty();
                }
                Ok(None) => {
                    assert!(framer.buffered() <= max_line + 1);
                    break;
                }
                Err(FrameError::TooLong) => {
                    out.too_long = true;
                    return out;
                }
            }
        }
    }
    out
}

/// Splits `stream` at the given cut points (taken modulo its length).
fn split<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            if stream.is_empty() {
                0
            } else {
                c % stream.len()
            }
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points {
        chunks.push(&stream[start..point]);
        start = point;
    }
    chunks.push(&stream[start..]);
    chunks
}

/// Byte streams rich in what matters: newlines, CRs, a few letters, and
/// arbitrary bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(b'\n'),
            2 => Just(b'\r'),
            6 => prop::sample::select(b"abc xyz".to_vec()),
            2 => any::<u8>(),
        ],
        0..400,
    )
}

/// Text that often contains the characters sanitizing is about.
fn hostile_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            2 => prop::char::range('\u{0}', '\u{1f}'),
            1 => prop::char::range('\u{7f}', '\u{9f}'),
            1 => prop::char::range('\u{2028}', '\u{206f}'),
            1 => prop_oneof![
                Just('\u{ad}'), Just('\u{61c}'), Just('\u{200b}'), Just('\u{200e}'),
                Just('\u{200f}'), Just('\u{feff}'), prop::char::range('\u{e0000}', '\u{e007f}'),
            ],
            1 => Just('\t'),
            2 => any::<char>(),
        ],
        0..64,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn framing_never_panics_on_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        max_line in 0usize..300,
    ) {
        let _ = frame_chunks(&[&bytes], max_line);
    }

    #[test]
    fn any_chunking_yields_the_same_lines_and_error(
        stream in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        max_line in 1usize..40,
    ) {
        let expected = reference(&stream, max_line);
        prop_assert_eq!(&frame_chunks(&[&stream], max_line), &expected);
        prop_assert_eq!(&frame_chunks(&split(&stream, &cuts), max_line), &expected);
        prop_assert_eq!(&frame_chunks_in_place(&split(&stream, &cuts), max_line), &expected);
        // One byte at a time, the worst case for rescanning.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&frame_chunks(&bytes, max_line), &expected);
    }

    #[test]
    fn a_long_line_fails_before_its_end_arrives(
        max_line in 1usize..200,
        extra in 2usize..100,
        chunk in 1usize..64,
    ) {
        // No newline ever comes: the framer must give up on its own, holding
        // at most the limit, the `\r` slack and one chunk.
        let stream = vec![b'a'; max_line + extra];
        let chunks: Vec<&[u8]> = stream.chunks(chunk).collect();
        let framed = frame_chunks(&chunks, max_line);
        prop_assert!(framed.too_long);
        prop_assert!(framed.lines.is_empty());
    }

    #[test]
    fn sanitized_text_holds_no_unsafe_character(text in hostile_text()) {
        let clean = protocol::sanitize(&text);
        prop_assert!(!clean.chars().any(protocol::is_unsafe_char));
        // Only unsafe characters are removed, the rest keep their order.
        let kept: String = text.chars().filter(|c| !protocol::is_unsafe_char(*c)).collect();
        prop_assert_eq!(clean.as_ref(), kept.as_str());
        let again = protocol::sanitize(&clean).into_owned();
        prop_assert_eq!(again.as_str(), clean.as_ref());
        // What gets broadcast is exactly one line.
        if let Input::Message(message) = protocol::parse_input(&text) {
            let line = protocol::chat_line("alice", &message);
            prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert!(!message.chars().any(protocol::is_unsafe_char));
        }
    }

    #[test]
    fn sanitize_bytes_handles_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let printable = protocol::sanitize_bytes(&bytes);
        prop_assert!(!printable.chars().any(protocol::is_unsafe_char));
    }

    #[test]
    fn validate_nickname_accepts_exactly_the_documented_language(
        nick in prop_oneof![
            // Mostly near the language: letters, digits, '_', '-', and a few
            // characters just outside it.
            "[A-Za-z0-9_ .\\-é]{0,36}",
            "(?i)(nick|error|server)",
            "(?i)(n[i1l|]ck|err[o0]r|server)[A-Za-z0-9_\\-]{0,4}",
            any::<String>(),
        ],
    ) {
        let verdict = protocol::validate_nickname(&nick);
        prop_assert_eq!(verdict.is_ok(), documented_nickname(&nick), "{:?} -> {:?}", nick, verdict);
        match verdict {
            Ok(accepted) => prop_assert_eq!(accepted, nick.as_str()),
            Err(NickError::Reserved(name)) => prop_assert_eq!(name, nick),
            Err(NickError::Empty) => prop_assert!(nick.is_empty()),
            Err(NickError::TooLong) => prop_assert!(nick.len() > MAX_NICK_LEN),
            Err(_) => {}
        }
    }

    #[test]
    fn nicknames_are_compared_on_the_documented_skeleton(
        a in "[A-Za-z0-9_\\-|!]{0,12}",
        b in "[AaIiLl1|!Oo0_\\-]{0,12}",
    ) {
        prop_assert_eq!(protocol::nick_key(&a), documented_skeleton(&a));
        prop_assert_eq!(protocol::nick_key(&b), documented_skeleton(&b));
    }
}
