//! The formats of [`super::Store::export`]: one JSON object per line, or
//! CSV. Both carry the fields `seq`, `time` (RFC 3339, UTC, to the
//! millisecond), `kind`, `nick`, `text` and `channel` (`#lobby` for the
//! room itself), in that order; an operator's action (kind `moderation`)
//! has two more, `action` (kick, ban, mute, unmute, topic) and `whom`
//! (the participant it concerns; empty for a topic), and its `nick` is the
//! operator, its `text` the reason, the duration or the topic. CSV has
//! those two columns on every row, empty but for moderation. The fields
//! added over time come last, so that columns read by position keep their
//! place.

use super::{Entry, Kind};
use crate::protocol;
use std::io::{self, Write};
use time::{OffsetDateTime, UtcOffset};

/// How exported lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (JSON Lines). Strings escape, besides `"`
    /// and `\`, every character [`protocol::is_unsafe_char`] names, so the
    /// output is safe on a terminal and still says exactly what is stored.
    Jsonl,
    /// A header row, then one row per line, CRLF-terminated, fields quoted
    /// as RFC 4180 says when they hold a comma, a quote or a line break.
    /// CSV cannot escape, so the characters [`protocol::sanitize`] drops
    /// (which the room never lets into a line) are left out.
    Csv,
}

impl Format {
    pub(super) fn header(self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Format::Jsonl => Ok(()),
            Format::Csv => out.write_all(b"seq,time,kind,nick,text,channel,action,whom\r\n"),
        }
    }

    pub(super) fn write(self, entry: &Entry, out: &mut impl Write) -> io::Result<()> {
        let time = rfc3339(entry.time);
        let action = match entry.kind {
            Kind::Moderation(action) => Some(action.as_str()),
            _ => None,
        };
        match self {
            Format::Jsonl => {
                let mut line = format!(
                    "{{\"seq\":{},\"time\":\"{time}\",\"kind\":\"{}\",\"nick\":",
                    entry.seq,
                    entry.kind.as_str()
                );
                json_string(&entry.nick, &mut line);
                line.push_str(",\"text\":");
                json_string(&entry.text, &mut line);
                line.push_str(",\"channel\":");
                json_string(&entry.channel, &mut line);
                if let Some(action) = action {
                    line.push_str(&format!(",\"action\":\"{action}\",\"whom\":"));
                    json_string(&entry.whom, &mut line);
                }
                line.push_str("}\n");
                out.write_all(line.as_bytes())
            }
            Format::Csv => {
                let nick = csv_field(&entry.nick);
                let text = csv_field(&entry.text);
                let channel = csv_field(&entry.channel);
                let whom = csv_field(&entry.whom);
                let kind = entry.kind.as_str();
                let action = action.unwrap_or("");
                write!(
                    out,
                    "{},{time},{kind},{nick},{text},{channel},{action},{whom}\r\n",
                    entry.seq
                )
            }
        }
    }
}

/// `2026-03-01T09:30:00.250Z`.
pub(super) fn rfc3339(time: OffsetDateTime) -> String {
    let t = time.to_offset(UtcOffset::UTC);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        t.date(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Appends `text` as a JSON string.
fn json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || protocol::is_unsafe_char(c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `text` as one CSV field.
fn csv_field(text: &str) -> String {
    let text = protocol::sanitize(text);
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.into_owned()
    }
}
