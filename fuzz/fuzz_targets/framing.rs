//! Line framing: any chunking of the same bytes yields the same lines and
//! the same error at the same place as framing the whole input at once, and
//! the buffer never grows past the limit plus one chunk.
//!
//! Input layout: byte 0 seeds the chunk sizes, byte 1 picks the line limit,
//! the rest is the stream.

#![no_main]

use chatroom::protocol::{FrameError, LineFramer};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/model.rs"]
mod model;
use model::{Framed, reference};

/// Drains every complete line; `true` once the framer reported an error.
fn drain(framer: &mut LineFramer, max_line: usize, out: &mut Framed) -> bool {
    loop {
        match framer.next_line() {
            Ok(Some(line)) => {
                assert!(line.len() <= max_line, "a line over the limit passed");
                assert!(!line.contains(&b'\n'), "a terminator inside a line");
                out.lines.push(line.to_vec());
                framer.release_if_empty();
            }
            Ok(None) => {
                assert!(
                    framer.buffered() <= max_line + 1,
                    "waiting on {} bytes with a limit of {max_line}",
                    framer.buffered()
                );
                return false;
            }
            Err(FrameError::TooLong) => {
                out.too_long = true;
                return true;
            }
        }
    }
}

fn whole(stream: &[u8], max_line: usize) -> Framed {
    let mut framer = LineFramer::new(max_line);
    let mut out = Framed {
        lines: Vec::new(),
        too_long: false,
    };
    framer.extend(stream);
    drain(&mut framer, max_line, &mut out);
    out
}

fn chunked(stream: &[u8], max_line: usize, seed: u8) -> Framed {
    let mut framer = LineFramer::new(max_line);
    let mut out = Framed {
        lines: Vec::new(),
        too_long: false,
    };
    // xorshift32: a cheap, deterministic chunk-size sequence per seed.
    let mut state = u32::from(seed) | 0x9e37_7900;
    let mut rest = stream;
    let mut use_read_buf = false;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (1 + state as usize % 48).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        // Both ways bytes get in: as a socket read would, and by `extend`.
        use_read_buf = !use_read_buf;
        if use_read_buf {
            framer.read_buf().extend_from_slice(chunk);
        } else {
            framer.extend(chunk);
        }
        assert!(framer.buffered() <= max_line + 1 + chunk.len());
        if drain(&mut framer, max_line, &mut out) {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [seed, limit, stream @ ..] = data else {
        return;
    };
    let max_line = 1 + usize::from(*limit) % 96;
    let expected = reference(stream, max_line);
    assert_eq!(whole(stream, max_line), expected, "whole input");
    assert_eq!(chunked(stream, max_line, *seed), expected, "chunked input");
});
