//! What the bench's nicknames and message texts look like, and how a
//! receiver reads them back.
//!
//! Every message carries its sender's sequence number, its send time and a
//! filler derived from (sender, seq). A receiver can therefore tell, from
//! one line alone, who sent it, which one it is, how long it took, and
//! whether any byte of it changed on the way, without a shared table.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Smallest `--size`: the header (sequence, timestamp, flag) must fit.
pub const MIN_SIZE: usize = 32;

/// Letters and digits the filler is made of: nothing the server sanitizes.
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The nicknames of one scenario run: `b`, a run-unique token, `x`, then the
/// client's index (e.g. `bk3z9qx12`). The token keeps two runs against the
/// same server (or a run and a previous run's departing clients) from
/// colliding on a nickname. Several bench processes filling one room
/// share a token ([`NickScheme::shared`]) and number their clients apart.
#[derive(Debug, Clone)]
pub struct NickScheme {
    prefix: String,
    /// The number of client 0: clients are numbered from here.
    first: usize,
}

impl NickScheme {
    pub fn new() -> Self {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let run = u64::from(RUNS.fetch_add(1, Ordering::Relaxed));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut token = mix(nanos ^ (u64::from(std::process::id()) << 32) ^ (run << 56));
        let mut prefix = String::from("b");
        for _ in 0..5 {
            prefix.push(char::from(ALPHABET[(token % 36) as usize]));
            token /= 36;
        }
        prefix.push('x');
        NickScheme { prefix, first: 0 }
    }

    /// The scheme of one run of several bench processes: the token `run`
    /// (1 to 8 lowercase letters or digits) given to each, this process's
    /// client 0 being number `first` of the whole run.
    pub fn shared(run: &str, first: usize) -> Result<Self, String> {
        let valid = (1..=8).contains(&run.len())
            && run
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(format!(
                "the run's token {:?} must be 1 to 8 lowercase letters or digits",
                crate::protocol::sanitize(run)
            ));
        }
        if first > 999_999_999 {
            return Err("the first client's number must be below 1,000,000,000".into());
        }
        Ok(NickScheme {
            prefix: format!("b{run}x"),
            first,
        })
    }

    pub fn nick(&self, index: usize) -> String {
        format!("{}{}", self.prefix, self.first + index)
    }

    /// The number behind one of this run's nicknames (the client's index
    /// when the process numbers from 0); `None` for anybody else's.
    pub fn index_of(&self, nick: &[u8]) -> Option<usize> {
        let digits = nick.strip_prefix(self.prefix.as_bytes())?;
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        let mut index = 0usize;
        for &digit in digits {
            if !digit.is_ascii_digit() {
                return None;
            }
            index = index * 10 + usize::from(digit - b'0');
        }
        Some(index)
    }
}

impl Default for NickScheme {
    fn default() -> Self {
        Self::new()
    }
}

/// What one message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sender's sequence number, from 0, increasing by one.
    pub seq: u32,
    /// When it was (meant to be) sent, in microseconds since the run's epoch.
    pub sent_us: u64,
    /// Whether it is the sender's last message: receivers stop waiting for
    /// a sender once they have its last one.
    pub last: bool,
}

/// Appends the message text for `stamp` from `sender`, padded to `size`
/// bytes (or the header's length, if longer), and its `\n`.
pub fn write_message(out: &mut Vec<u8>, sender: u32, stamp: Stamp, size: usize) {
    use std::io::Write;
    let start = out.len();
    let flag = if stamp.last { 'L' } else { 'M' };
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{} {} {flag} ", stamp.seq, stamp.sent_us);
    let header = out.len() - start;
    let filler = size.saturating_sub(header);
    out.reserve(filler + 1);
    push_filler(out, sender, stamp.seq, filler);
    out.push(b'\n');
}

/// Reads a message text back; `None` if it is not exactly what `sender`
/// would have sent with that header (a changed byte, a cut, an addition).
pub fn read_message(text: &[u8], sender: u32, size: usize) -> Option<Stamp> {
    let mut fields = text.splitn(4, |&b| b == b' ');
    let seq = parse_decimal(fields.next()?)?;
    let sent_us = parse_decimal(fields.next()?)?;
    let last = match fields.next()? {
        b"L" => true,
        b"M" => false,
        _ => return None,
    };
    let filler = fields.next()?;
    let header = text.len() - filler.len();
    if filler.len() != size.saturating_sub(header) {
        return None;
    }
    let seq = u32::try_from(seq).ok()?;
    // Compared as it is generated, eight bytes at a time as one integer:
    // this runs once per delivery.
    let mut words = filler_words(sender, seq);
    let mut chunks = filler.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let expected = words.next().map(u64::from_ne_bytes);
        let got = <[u8; 8]>::try_from(chunk).ok().map(u64::from_ne_bytes);
        if got != expected {
            return None;
        }
    }
    let rest = chunks.remainder();
    let intact = rest.is_empty() || words.next().is_some_and(|word| word[..rest.len()] == *rest);
    intact.then_some(Stamp { seq, sent_us, last })
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

fn push_filler(out: &mut Vec<u8>, sender: u32, seq: u32, len: usize) {
    let end = out.len() + len;
    for word in filler_words(sender, seq).take(len.div_ceil(8)) {
        out.extend_from_slice(&word);
    }
    out.truncate(end);
}

/// The endless filler of one message: one word of eight letters or digits,
/// drawn from sender and sequence number, repeated. Any changed byte breaks
/// the repetition, and any piece of another message brings another word;
/// receivers check it with one integer comparison per eight bytes, which
/// matters at millions of deliveries a second.
fn filler_words(sender: u32, seq: u32) -> impl Iterator<Item = [u8; 8]> {
    let seed = (u64::from(sender) << 32) | u64::from(seq);
    let bits = mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
    let mut word = [0u8; 8];
    for (i, byte) in word.iter_mut().enumerate() {
        *byte = ALPHABET[((bits >> (8 * i)) % 36) as usize];
    }
    std::iter::repeat(word)
}

/// splitmix64's finalizer: a cheap, well-mixed 64-bit permutation, used for
/// the filler and for the receivers' order hash chains.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_and_any_change_is_caught() {
        let stamp = Stamp {
            seq: 41,
            sent_us: 123_456,
            last: true,
        };
        let mut line = Vec::new();
        write_message(&mut line, 7, stamp, 64);
        assert_eq!(line.len(), 65);
        let text = &line[..64];
        assert_eq!(read_message(text, 7, 64), Some(stamp));
        assert_eq!(read_message(text, 8, 64), None, "another sender's filler");
        assert_eq!(read_message(&text[..63], 7, 64), None, "cut");
        let mut changed = text.to_vec();
        changed[50] = if changed[50] == b'a' { b'b' } else { b'a' };
        assert_eq!(read_message(&changed, 7, 64), None, "changed byte");
    }

    #[test]
    fn nicknames_are_valid_and_map_back_to_indexes() {
        let scheme = NickScheme::new();
        let nick = scheme.nick(1234);
        assert!(crate::protocol::validate_nickname(&nick).is_ok());
        assert_eq!(scheme.index_of(nick.as_bytes()), Some(1234));
        assert_eq!(scheme.index_of(b"alice"), None);
        assert_ne!(NickScheme::new().nick(0), scheme.nick(0));

        let second = NickScheme::shared("r1", 500).expect("valid token");
        assert_eq!(second.nick(0), "br1x500");
        let first = NickScheme::shared("r1", 0).expect("valid token");
        assert_eq!(first.index_of(second.nick(7).as_bytes()), Some(507));
        assert_eq!(second.index_of(b"br1x0"), Some(0), "one numbering");
        assert!(NickScheme::shared("R1", 0).is_err());
        assert!(NickScheme::shared("", 0).is_err());
        assert!(NickScheme::shared("123456789", 0).is_err());
    }
}
