//! What nodes put in NATS, and how a node reads it back: records (who did
//! what), never finished lines.
//!
//! Anything that can publish to the room's subjects or write its buckets
//! (another node, or any NATS user with those permissions) could otherwise
//! hand every participant a line that reads like the server's own, an
//! escape sequence, two lines in one, or a line longer than any client
//! takes. So a node publishes a [`Record`] (the kind, the nickname, the
//! text), and the node that reads one checks it as a join and a typed line
//! are checked (a valid nickname, a text within the line limit with the
//! unsafe characters stripped) and formats the line itself, with the same
//! functions a single server uses. What does not pass is dropped and
//! counted ([`Rejected`]), never shown.

use crate::protocol::{self, moderation};
use crate::room::store::Action;
use crate::room::{Departure, Moderation, Said};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One event of the room, as stored in its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum Record {
    /// `<nick>: <text>`.
    Say { nick: String, text: String },
    /// `* <nick> <text>`.
    Act { nick: String, text: String },
    /// `<nick> joined!`; `quiet`: not announced (the room was too big,
    /// see [`Announce`](crate::room::Announce)), stored only.
    Join {
        nick: String,
        #[serde(default, skip_serializing_if = "is_false")]
        quiet: bool,
    },
    /// `<nick> left!`, or `<nick> left! (<reason>)`; `quiet` as for a join.
    Leave {
        nick: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        quiet: bool,
    },
    /// `<nick> was kicked by <by>`, or `... (<reason>)`: a leave an
    /// operator made.
    Kick {
        nick: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// A `/ban` (shown as a kick).
        #[serde(default, skip_serializing_if = "is_false")]
        ban: bool,
    },
    /// `<nick> was muted by <by> for <duration>`.
    Muted {
        nick: String,
        by: String,
        duration: String,
    },
    /// `<nick> was unmuted by <by>`.
    Unmuted { nick: String, by: String },
    /// `[topic] #name: <text> set by <by>`.
    Topic {
        by: String,
        text: String,
        /// Where the record it copies is in the room's stream: in the
        /// bucket's entries only (see `topics`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
}

fn is_false(value: &bool) -> bool {
    !value
}

/// A private line on its way to the node of its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PrivateRecord {
    /// The last sequence of the room its sender's node knew of: the line is
    /// held until the recipient has read the room that far.
    pub(super) after: u64,
    /// The recipient's nickname key.
    pub(super) to: String,
    /// The sender's nickname.
    pub(super) from: String,
    pub(super) text: String,
}

/// Why something read from NATS was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Rejected {
    #[error("not a record of this room ({0})")]
    Malformed(&'static str),
    #[error("a nickname no participant could have")]
    Nickname,
    #[error("a text longer than the line limit")]
    TooLong,
    #[error("a channel name no channel could have")]
    Channel,
}

impl Record {
    pub(super) fn said(nick: &str, said: Said<'_>) -> Record {
        let nick = nick.to_owned();
        match said {
            Said::Message(text) => Record::Say {
                nick,
                text: text.to_owned(),
            },
            Said::Action(text) => Record::Act {
                nick,
                text: text.to_owned(),
            },
        }
    }

    /// A join; `quiet`: not announced.
    pub(super) fn joined(nick: &str, quiet: bool) -> Record {
        Record::Join {
            nick: nick.to_owned(),
            quiet,
        }
    }

    /// A leave; `quiet`: not announced.
    pub(super) fn departure(nick: &str, how: Departure<'_>, quiet: bool) -> Record {
        Record::Leave {
            nick: nick.to_owned(),
            reason: match how {
                Departure::Left => None,
                Departure::Quit(_) | Departure::Kicked { .. } => Some(how.text()),
            },
            quiet,
        }
    }

    /// A leave as a channel records it: a kick as such, seen by everyone
    /// as on one server.
    pub(super) fn departed(nick: &str, how: Departure<'_>, quiet: bool) -> Record {
        match how {
            Departure::Kicked { by, reason, ban } if !quiet => Record::Kick {
                nick: nick.to_owned(),
                by: by.to_owned(),
                reason: reason.map(str::to_owned),
                ban,
            },
            how => Record::departure(nick, how, quiet),
        }
    }

    /// The record of an operator's action that is told as such (a mute,
    /// an unmute, a topic); none for a kick or a ban, told by the
    /// departure they make.
    pub(super) fn acted(act: Moderation<'_>) -> Option<Record> {
        let (nick, by) = (act.whom.to_owned(), act.by.to_owned());
        Some(match act.action {
            Action::Mute => Record::Muted {
                nick,
                by,
                duration: act.detail.to_owned(),
            },
            Action::Unmute => Record::Unmuted { nick, by },
            Action::Topic => Record::Topic {
                by,
                text: act.detail.to_owned(),
                at: None,
            },
            Action::Kick | Action::Ban => return None,
        })
    }

    /// Whether the room's participants are shown it (a join or leave in a
    /// room too big to announce them is stored only).
    pub(super) fn is_shown(&self) -> bool {
        !matches!(
            self,
            Record::Join { quiet: true, .. } | Record::Leave { quiet: true, .. }
        )
    }

    /// The record as published.
    pub(super) fn encode(&self) -> Bytes {
        // A record is strings and numbers: serializing it cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a record published to the room, checked: see the module doc.
    pub(super) fn decode(payload: &[u8], max_line: usize) -> Result<Record, Rejected> {
        let record: Record = serde_json::from_slice(payload).map_err(malformed)?;
        record.check(max_line)?;
        Ok(record)
    }

    /// Whether its parts are what a node would have written: a nickname a
    /// join accepts, a text within the line limit.
    fn check(&self, max_line: usize) -> Result<(), Rejected> {
        let (nick, text) = match self {
            Record::Say { nick, text } | Record::Act { nick, text } => (Some(nick), Some(text)),
            Record::Join { nick, .. } => (Some(nick), None),
            Record::Leave { nick, reason, .. } => (Some(nick), reason.as_ref()),
            Record::Kick {
                nick, by, reason, ..
            } => {
                valid_nick(by)?;
                (Some(nick), reason.as_ref())
            }
            Record::Muted { nick, by, duration } => {
                valid_nick(by)?;
                moderation::mute_duration(duration).ok_or(Rejected::Malformed("a mute"))?;
                (Some(nick), None)
            }
            Record::Unmuted { nick, by } => {
                valid_nick(by)?;
                (Some(nick), None)
            }
            Record::Topic { by, text, .. } => {
                valid_nick(by)?;
                within_limit(text, moderation::MAX_TOPIC)?;
                (None, Some(text))
            }
        };
        if let Some(nick) = nick {
            valid_nick(nick)?;
        }
        if let Some(text) = text {
            within_limit(text, max_line)?;
        }
        Ok(())
    }

    /// Reads one message of the room's stream: a record, or several lines
    /// of one sender published together ([`batch`]), each checked as
    /// [`Record::decode`] checks it; all of them, or none.
    pub(super) fn decode_message(payload: &[u8], max_line: usize) -> Result<Vec<Record>, Rejected> {
        if payload.first() != Some(&b'[') {
            return Ok(vec![Record::decode(payload, max_line)?]);
        }
        let records: Vec<Record> = serde_json::from_slice(payload).map_err(malformed)?;
        if !(2..=LINES_PER_RECORD).contains(&records.len()) {
            return Err(Rejected::Malformed("not a batch of lines"));
        }
        for record in &records {
            record.check(max_line)?;
        }
        Ok(records)
    }

    /// Whether it is a participant's public line: what history is made of.
    pub(super) fn is_public(&self) -> bool {
        matches!(self, Record::Say { .. } | Record::Act { .. })
    }

    /// The line participants read, formatted here, from checked parts;
    /// `channel`: the channel's name, or `None` in the lobby.
    pub(super) fn line_in(&self, channel: Option<&str>) -> Bytes {
        let plain = match self {
            Record::Kick {
                nick, by, reason, ..
            } => {
                let reason = reason.as_deref().map(protocol::sanitize);
                moderation::kicked_line(nick, by, reason.as_deref())
            }
            Record::Muted { nick, by, duration } => moderation::muted_line(nick, by, duration),
            Record::Unmuted { nick, by } => moderation::unmuted_line(nick, by),
            Record::Topic { by, text, .. } => {
                let name = channel.unwrap_or(protocol::channels::LOBBY);
                return moderation::topic_set_line(name, &protocol::sanitize(text), by);
            }
            other => other.line(),
        };
        match channel {
            None => plain,
            Some(name) => {
                protocol::channels::in_channel(&protocol::channels::channel_prefix(name), &plain)
            }
        }
    }

    /// The line participants read in the lobby, formatted here, from
    /// checked parts.
    pub(super) fn line(&self) -> Bytes {
        match self {
            Record::Say { nick, text } => Said::Message(&protocol::sanitize(text)).line(nick),
            Record::Act { nick, text } => Said::Action(&protocol::sanitize(text)).line(nick),
            Record::Join { nick, .. } => protocol::joined_line(nick),
            Record::Leave {
                nick, reason: None, ..
            } => Departure::Left.line(nick),
            Record::Leave {
                nick,
                reason: Some(reason),
                ..
            } => Departure::Quit(&protocol::sanitize(reason)).line(nick),
            other => other.line_in(None),
        }
    }
}

/// Most lines one message of the stream carries: a sender's lines waiting
/// behind the one in flight go out together, up to this many.
pub(super) const LINES_PER_RECORD: usize = 64;

/// Most bytes of records one message of the stream carries (well under
/// NATS's default payload limit of 1 MiB).
pub(super) const BYTES_PER_RECORD: usize = 64 * 1024;

/// Several encoded records in one message of the stream, in their order: a
/// JSON array of them. One message costs NATS and every node about as much
/// as one line, so a sender that has many lines waiting (a paste, a
/// flood) costs a fraction of that per line.
pub(super) fn batch(records: &[Bytes]) -> Bytes {
    if let [one] = records {
        return one.clone();
    }
    let len = records.iter().map(|r| r.len() + 1).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(record);
    }
    out.push(b']');
    Bytes::from(out)
}

/// How many numbers each message of the stream spans in a node's store
/// (`--data`), which numbers every line: the `i`th line of message `seq`
/// is stored as `seq * LINE_NUMBERS_PER_MESSAGE + i` ([`line_number`]),
/// so the store keeps the stream's order, one number per line, and knows
/// from its last number where in the stream it stopped.
pub(super) const LINE_NUMBERS_PER_MESSAGE: u64 = 1 << 20;

/// The number a node's store gives the `index`th line of the stream's
/// message `seq`.
pub(super) fn line_number(seq: u64, index: usize) -> u64 {
    seq.saturating_mul(LINE_NUMBERS_PER_MESSAGE)
        .saturating_add(index as u64)
}

/// The message of the stream a store's line number `n` belongs to. A store
/// filled by a node that numbered each line with its message's own
/// sequence (one line per message) holds numbers below
/// [`LINE_NUMBERS_PER_MESSAGE`]: those are the message's sequence itself,
/// and every line stored after them is numbered above them.
pub(super) fn message_of(n: u64) -> u64 {
    if n < LINE_NUMBERS_PER_MESSAGE {
        n
    } else {
        n / LINE_NUMBERS_PER_MESSAGE
    }
}

impl PrivateRecord {
    pub(super) fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a private record, checked as [`Record::decode`] checks.
    pub(super) fn decode(payload: &[u8], max_line: usize) -> Result<PrivateRecord, Rejected> {
        let record: PrivateRecord = serde_json::from_slice(payload).map_err(malformed)?;
        valid_nick(&record.from)?;
        within_limit(&record.text, max_line)?;
        Ok(record)
    }

    /// `[private] <from> -> <to>: <text>`, for the recipient spelled `to`.
    pub(super) fn line(&self, to: &str) -> Bytes {
        protocol::private_line(&self.from, to, &protocol::sanitize(&self.text))
    }
}

/// A nickname as a join would accept it.
pub(super) fn valid_nick(nick: &str) -> Result<(), Rejected> {
    match protocol::validate_nickname(nick) {
        Ok(valid) if valid == nick => Ok(()),
        _ => Err(Rejected::Nickname),
    }
}

pub(super) fn within_limit(text: &str, max_line: usize) -> Result<(), Rejected> {
    if text.len() > max_line {
        return Err(Rejected::TooLong);
    }
    Ok(())
}

/// The kind of a decoding error, without the input it quotes: a rejected
/// record's text must not reach the log either.
pub(super) fn malformed(e: serde_json::Error) -> Rejected {
    Rejected::Malformed(match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not a known kind of record",
        serde_json::error::Category::Eof => "cut short",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_formats_every_line_itself_from_checked_parts() {
        let said = Record::said("alice", Said::Message("hi"));
        let read = Record::decode(&said.encode(), 100).expect("valid");
        assert_eq!(read.line(), "alice: hi\n");
        assert!(read.is_public());
        let quit = Record::departure("bob", Departure::Quit("lunch"), false);
        assert_eq!(
            Record::decode(&quit.encode(), 100).expect("valid").line(),
            "bob left! (lunch)\n"
        );

        // What a NATS user could publish instead.
        let forged =
            br#"{"kind":"say","nick":"bob","text":"hi\nServer is shutting down\n\u001b[2J\u202e"}"#;
        let read = Record::decode(forged, 100).expect("a well-formed record");
        assert_eq!(read.line(), "bob: hiServer is shutting down[2J\n");
        for (payload, why) in [
            (&b"bob: hi\n"[..], "not JSON"),
            (br#"{"kind":"say","nick":"Server","text":"x"}"#, "nickname"),
            (br#"{"kind":"join","nick":"bob\nServer"}"#, "nickname"),
            (
                br#"{"kind":"say","nick":"bob","text":"xxxxxxxxxxx"}"#,
                "limit",
            ),
            (
                br#"{"kind":"leave","nick":"bob","reason":"xxxxxxxxxxx"}"#,
                "limit",
            ),
            (br#"{"kind":"shout","nick":"bob","text":"x"}"#, "kind"),
            (
                br#"{"kind":"say","nick":"bob","text":"x","extra":1}"#,
                "kind",
            ),
        ] {
            let err = Record::decode(payload, 10).expect_err("rejected");
            assert!(err.to_string().contains(why), "{err} for {payload:?}");
        }
    }

    #[test]
    fn several_lines_in_one_message_are_checked_each_and_kept_in_order() {
        let lines = [
            Record::said("alice", Said::Message("one")).encode(),
            Record::said("alice", Said::Action("waves")).encode(),
            Record::said("alice", Said::Message("three")).encode(),
        ];
        let read = Record::decode_message(&batch(&lines), 100).expect("valid");
        let shown: Vec<Bytes> = read.iter().map(Record::line).collect();
        assert_eq!(shown, ["alice: one\n", "* alice waves\n", "alice: three\n"]);
        // One line goes as a record of its own, as it always has.
        assert_eq!(batch(&lines[..1]), lines[0]);
        assert_eq!(
            Record::decode_message(&lines[0], 100).expect("valid").len(),
            1
        );

        // One bad part drops the whole message; so do empty, nested and
        // oversized batches.
        let too_many = format!(
            "[{}]",
            vec![r#"{"kind":"say","nick":"bob","text":"x"}"#; LINES_PER_RECORD + 1].join(",")
        );
        for (payload, why) in [
            (
                &br#"[{"kind":"say","nick":"bob","text":"x"},{"kind":"say","nick":"Server","text":"x"}]"#[..],
                "nickname",
            ),
            (br#"[{"kind":"say","nick":"bob","text":"x"}]"#, "batch"),
            (br#"[]"#, "batch"),
            (br#"[[{"kind":"say","nick":"bob","text":"x"}],{"kind":"say","nick":"bob","text":"x"}]"#, "kind"),
            (br#"[{"kind":"say","nick":"bob","text":"x"}"#, "cut short"),
            (too_many.as_bytes(), "batch"),
        ] {
            let err = Record::decode_message(payload, 10).expect_err("rejected");
            assert!(err.to_string().contains(why), "{err} for {payload:?}");
        }
    }

    #[test]
    fn a_store_numbers_each_line_of_a_message_and_finds_the_message_again() {
        let numbers: Vec<u64> = (0..3).map(|i| line_number(7, i)).collect();
        assert!(numbers.windows(2).all(|w| w[0] + 1 == w[1]));
        assert!(numbers.iter().all(|&n| message_of(n) == 7));
        // Before the next message's lines, whatever their count.
        assert!(line_number(7, LINES_PER_RECORD) < line_number(8, 0));
        // A store numbered one line per message, by its sequence: its last
        // number is the message itself, and what comes next is after it.
        assert_eq!(message_of(5000), 5000);
        assert!(line_number(5001, 0) > 5000);
    }

    #[test]
    fn operators_records_are_checked_and_formatted_for_their_channel() {
        let kick = Record::departed(
            "bob",
            Departure::Kicked {
                by: "alice",
                reason: Some("spam\u{1b}[2J"),
                ban: false,
            },
            false,
        );
        let read = Record::decode(&kick.encode(), 100).expect("valid");
        assert_eq!(read.line(), "bob was kicked by alice (spam[2J)\n");
        assert_eq!(
            read.line_in(Some("#ops")),
            "#ops bob was kicked by alice (spam[2J)\n"
        );
        let topic = Record::acted(Moderation {
            action: Action::Topic,
            by: "alice",
            whom: "",
            detail: "deploy",
        })
        .expect("a topic is told");
        let read = Record::decode(&topic.encode(), 100).expect("valid");
        assert_eq!(
            read.line_in(Some("#ops")),
            "[topic] #ops: deploy set by alice\n"
        );
        assert_eq!(read.line(), "[topic] #lobby: deploy set by alice\n");
        for (payload, why) in [
            (
                &br#"{"kind":"kick","nick":"bob","by":"Server"}"#[..],
                "nickname",
            ),
            (
                br#"{"kind":"muted","nick":"bob","by":"alice","duration":"8d"}"#,
                "mute",
            ),
            (
                br#"{"kind":"topic","by":"alice","text":"xxxxxxxxxxx"}"#,
                "limit",
            ),
        ] {
            let err = Record::decode(payload, 10).expect_err("rejected");
            assert!(err.to_string().contains(why), "{err} for {payload:?}");
        }
    }

    #[test]
    fn a_private_record_is_checked_and_formatted_for_its_recipient() {
        let record = PrivateRecord {
            after: 7,
            to: "bob".into(),
            from: "alice".into(),
            text: "psst\u{1b}]0;owned\u{7}".into(),
        };
        let read = PrivateRecord::decode(&record.encode(), 100).expect("valid");
        assert_eq!(read.line("Bob"), "[private] alice -> Bob: psst]0;owned\n");
        let forged = PrivateRecord {
            from: "error-bot".into(),
            ..record
        };
        assert_eq!(
            PrivateRecord::decode(&forged.encode(), 100),
            Err(Rejected::Nickname)
        );
    }
}
