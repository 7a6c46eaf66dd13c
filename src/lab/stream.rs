//! One direction of a relayed connection, cut into the pieces a student
//! should see: TLS records (type, length, and the handshake messages of a
//! record still in the clear), or text lines. Pure: bytes in, pieces out.
//!
//! The first byte decides: a TLS connection opens with a handshake record
//! (content type 22), the chat's plaintext protocol with a letter. Once a
//! stream is TLS, each record is passed on whole, so that `drop` and
//! `replay` act on records; anything that cannot be a record header (a
//! type outside 20 to 24, a length over the protocol's limit) turns the
//! rest of the stream into raw bytes, passed on as they come.

/// The longest TLS record body the protocol allows (TLS 1.2: 2^14 plus
/// 2048 bytes of expansion), so the most a record waits for in memory.
const MAX_RECORD: usize = 16384 + 2048;
/// The longest text line kept whole; a longer one is passed on in pieces.
const MAX_LINE: usize = 16384;
/// How much of a line the relay prints.
const SHOWN_CHARS: usize = 200;

/// What a stream turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unknown,
    Tls,
    Text,
    Raw,
}

/// One piece of the stream, passed on whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) bytes: Vec<u8>,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A TLS record; `messages` names the handshake messages of a
    /// handshake record sent before this side's ChangeCipherSpec (later
    /// ones are encrypted).
    Record {
        content_type: u8,
        length: usize,
        messages: Vec<&'static str>,
    },
    /// A text line, its newline included (when it had one).
    Line,
    /// Bytes that are neither.
    Raw,
}

/// Cuts one direction of a connection into [`Piece`]s.
#[derive(Debug)]
pub(crate) struct Splitter {
    mode: Mode,
    buf: Vec<u8>,
    /// This side sent ChangeCipherSpec: its handshake records that follow
    /// (TLS 1.2's Finished) are encrypted.
    cipher_changed: bool,
}

impl Splitter {
    pub(crate) fn new() -> Splitter {
        Splitter {
            mode: Mode::Unknown,
            buf: Vec::new(),
            cipher_changed: false,
        }
    }

    /// Whether the stream is TLS (known from its first byte).
    pub(crate) fn is_tls(&self) -> bool {
        self.mode == Mode::Tls
    }

    /// Takes in `data`; returns the pieces it completed. What is left (a
    /// partial record or line) waits for more, at most one record or line.
    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<Piece> {
        self.buf.extend_from_slice(data);
        let mut pieces = Vec::new();
        while let Some(piece) = self.next_piece() {
            pieces.push(piece);
        }
        pieces
    }

    fn next_piece(&mut self) -> Option<Piece> {
        let first = *self.buf.first()?;
        if self.mode == Mode::Unknown {
            self.mode = if (20..=24).contains(&first) {
                Mode::Tls
            } else {
                Mode::Text
            };
        }
        match self.mode {
            Mode::Tls => self.next_record(),
            Mode::Text => self.next_line(),
            Mode::Unknown | Mode::Raw => Some(self.take(self.buf.len(), Kind::Raw)),
        }
    }

    fn next_record(&mut self) -> Option<Piece> {
        let header = self.buf.get(..5)?;
        let (content_type, length) = (
            header[0],
            usize::from(u16::from_be_bytes([header[3], header[4]])),
        );
        if !(20..=24).contains(&content_type) || header[1] != 3 || length > MAX_RECORD {
            self.mode = Mode::Raw;
            return Some(self.take(self.buf.len(), Kind::Raw));
        }
        if self.buf.len() < 5 + length {
            return None;
        }
        let messages = if content_type == 22 && !self.cipher_changed {
            handshake_messages(&self.buf[5..5 + length])
        } else {
            Vec::new()
        };
        if content_type == 20 {
            self.cipher_changed = true;
        }
        Some(self.take(
            5 + length,
            Kind::Record {
                content_type,
                length,
                messages,
            },
        ))
    }

    fn next_line(&mut self) -> Option<Piece> {
        match memchr::memchr(b'\n', &self.buf) {
            Some(end) => Some(self.take(end + 1, Kind::Line)),
            None if self.buf.len() >= MAX_LINE => Some(self.take(self.buf.len(), Kind::Line)),
            None => None,
        }
    }

    fn take(&mut self, len: usize, kind: Kind) -> Piece {
        let rest = self.buf.split_off(len);
        let bytes = std::mem::replace(&mut self.buf, rest);
        Piece { bytes, kind }
    }
}

/// The names of the handshake messages in a record's body, in order.
fn handshake_messages(mut body: &[u8]) -> Vec<&'static str> {
    let mut names = Vec::new();
    while body.len() >= 4 {
        names.push(handshake_name(body[0]));
        let len = usize::from(body[1]) << 16 | usize::from(body[2]) << 8 | usize::from(body[3]);
        body = body.get(4 + len..).unwrap_or_default();
    }
    names
}

fn handshake_name(kind: u8) -> &'static str {
    match kind {
        1 => "ClientHello",
        2 => "ServerHello",
        4 => "NewSessionTicket",
        8 => "EncryptedExtensions",
        11 => "Certificate",
        12 => "ServerKeyExchange",
        13 => "CertificateRequest",
        14 => "ServerHelloDone",
        15 => "CertificateVerify",
        16 => "ClientKeyExchange",
        20 => "Finished",
        _ => "unknown",
    }
}

fn record_name(content_type: u8) -> &'static str {
    match content_type {
        20 => "ChangeCipherSpec",
        21 => "Alert",
        22 => "Handshake",
        23 => "ApplicationData",
        _ => "Heartbeat",
    }
}

impl Piece {
    /// The piece as the relay prints it: a record's type and length (and
    /// its handshake messages), a line as text. Nothing from the stream
    /// reaches the terminal raw: a line's control characters and the like
    /// are shown escaped (`\x1b`), and a long line is cut.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Record {
                content_type,
                length,
                messages,
            } => {
                let mut text = format!("TLS {} record, {length} bytes", record_name(*content_type));
                if !messages.is_empty() {
                    text.push_str(&format!(" ({})", messages.join(", ")));
                }
                text
            }
            Kind::Line => {
                let line = self.bytes.strip_suffix(b"\n").unwrap_or(&self.bytes);
                let text = String::from_utf8_lossy(line);
                let mut shown: String = text.chars().take(SHOWN_CHARS).collect();
                if shown.len() < text.len() {
                    shown.push_str("...");
                }
                let shown = crate::certs::escape(&shown);
                let end = if self.bytes.ends_with(b"\n") {
                    ""
                } else {
                    ", no newline"
                };
                format!("text \"{shown}\" ({} bytes{end})", self.bytes.len())
            }
            Kind::Raw => format!("{} raw bytes", self.bytes.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(body.len()).expect("short body").to_be_bytes();
        let mut bytes = vec![content_type, 3, 3, len[0], len[1]];
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn records_come_out_whole_however_the_bytes_arrive() {
        let hello = record(22, &[1, 0, 0, 2, 0xaa, 0xbb]);
        let data = record(23, &[7; 40]);
        let stream = [hello.clone(), data.clone()].concat();
        let mut splitter = Splitter::new();
        let mut pieces = Vec::new();
        for byte in &stream {
            pieces.extend(splitter.push(std::slice::from_ref(byte)));
        }
        assert!(splitter.is_tls());
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            (pieces[0].bytes.clone(), pieces[1].bytes.clone()),
            (hello, data)
        );
        assert_eq!(
            pieces[0].describe(),
            "TLS Handshake record, 6 bytes (ClientHello)"
        );
        assert_eq!(pieces[1].describe(), "TLS ApplicationData record, 40 bytes");
    }

    #[test]
    fn a_handshake_record_after_change_cipher_spec_is_not_read() {
        let stream = [record(20, &[1]), record(22, &[1, 0, 0, 0])].concat();
        let pieces = Splitter::new().push(&stream);
        assert_eq!(pieces[1].describe(), "TLS Handshake record, 4 bytes");
    }

    #[test]
    fn text_comes_out_a_line_at_a_time_escaped() {
        let mut splitter = Splitter::new();
        assert!(splitter.push(b"NICK\nali").len() == 1);
        let pieces = splitter.push(b"ce\x1b[2J\n");
        assert!(!splitter.is_tls());
        assert_eq!(pieces[0].bytes, b"alice\x1b[2J\n");
        assert_eq!(pieces[0].describe(), "text \"alice\\x1b[2J\" (10 bytes)");
    }

    #[test]
    fn a_line_without_end_is_passed_on_in_bounded_pieces() {
        let mut splitter = Splitter::new();
        let pieces = splitter.push(&vec![b'a'; MAX_LINE + 10]);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].bytes.len(), MAX_LINE + 10);
        assert!(pieces[0].describe().ends_with("no newline)"));
        assert!(splitter.buf.is_empty());
    }

    #[test]
    fn what_cannot_be_a_record_passes_as_raw_bytes() {
        let mut splitter = Splitter::new();
        let pieces = splitter.push(&[22, 9, 9, 0, 1, 0]);
        assert_eq!(pieces[0].kind, Kind::Raw);
        assert_eq!(pieces[0].bytes.len(), 6);
        assert_eq!(splitter.push(b"more")[0].kind, Kind::Raw);
    }
}
