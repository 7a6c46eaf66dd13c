//! What operators (`serve --operators`) do, as lines: `/kick`, `/ban`,
//! `/mute`, `/unmute`, `/topic`, and what each tells whom.

use super::{Command, clean, control_line, error_line};
use bytes::Bytes;
use std::time::Duration;

/// The longest `/mute`.
pub const MAX_MUTE: Duration = Duration::from_secs(7 * 86_400);

/// The longest topic, in bytes.
pub const MAX_TOPIC: usize = 300;

const MUTE_USAGE: &str = "usage: /mute NICK DURATION (30s, 10m, 2h; at most 7d)";

/// The operators' commands (`word` in lower case), or `None` for another
/// command word.
pub(super) fn parse<'a>(word: &str, args: &'a str) -> Option<Command<'a>> {
    let words: Vec<&str> = args.split_whitespace().collect();
    Some(match (word, &words[..]) {
        ("ban", []) => Command::Usage("usage: /ban NICK [REASON]"),
        ("kick", []) => Command::Usage("usage: /kick NICK [REASON]"),
        ("kick" | "ban", [nick, ..]) => {
            let reason = args.trim_start().split_once(char::is_whitespace);
            Command::Kick {
                nick,
                reason: reason.and_then(|(_, reason)| clean(reason)),
                ban: word == "ban",
            }
        }
        ("mute", [nick, typed]) => match mute_duration(typed) {
            Some(duration) => Command::Mute {
                nick,
                duration,
                typed,
            },
            None => Command::Usage(MUTE_USAGE),
        },
        ("mute", _) => Command::Usage(MUTE_USAGE),
        ("unmute", [nick]) => Command::Unmute(nick),
        ("unmute", _) => Command::Usage("usage: /unmute NICK"),
        ("topic", _) => match clean(args) {
            Some(text) => Command::Topic(text),
            None => Command::ShowTopic,
        },
        _ => return None,
    })
}

/// A `/mute` duration: a whole number and a unit, `s`, `m`, `h` or `d`
/// (`30s`, `10m`, `2h`), from a second to [`MAX_MUTE`].
pub fn mute_duration(text: &str) -> Option<Duration> {
    let (at, unit) = text.char_indices().last()?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let count: u64 = text[..at].parse().ok()?;
    let duration = Duration::from_secs(count.checked_mul(unit)?);
    (!duration.is_zero() && duration <= MAX_MUTE).then_some(duration)
}

/// `<nick> was muted by <op> for <duration>`, as typed (`10m`).
pub fn muted_line(nick: &str, by: &str, duration: &str) -> Bytes {
    Bytes::from(format!("{nick} was muted by {by} for {duration}\n"))
}

/// `<nick> was unmuted by <op>`.
pub fn unmuted_line(nick: &str, by: &str) -> Bytes {
    Bytes::from(format!("{nick} was unmuted by {by}\n"))
}

/// What a muted participant's lines get: `ERROR you are muted until
/// HH:MM UTC` (with the date, when it is not today).
pub fn muted_error(until: time::OffsetDateTime, now: time::OffsetDateTime) -> Bytes {
    error_line(format!("you are muted until {}", until_text(until, now)))
}

/// `HH:MM UTC`, with the date before it when it is not `now`'s.
pub fn until_text(until: time::OffsetDateTime, now: time::OffsetDateTime) -> String {
    let until = until.to_offset(time::UtcOffset::UTC);
    let day = if until.date() == now.to_offset(time::UtcOffset::UTC).date() {
        String::new()
    } else {
        format!("{} ", until.date())
    };
    format!("{day}{:02}:{:02} UTC", until.hour(), until.minute())
}

/// `[topic] #name: TEXT set by <op>`: to a channel's members when an
/// operator sets its topic.
pub fn topic_set_line(channel: &str, topic: &str, by: &str) -> Bytes {
    control_line(&format!("[topic] {channel}: {topic} set by {by}"))
}

/// `[topic] #name: TEXT`: to whoever joins a channel that has one, or
/// asks with `/topic`.
pub fn topic_line(channel: &str, topic: &str) -> Bytes {
    control_line(&format!("[topic] {channel}: {topic}"))
}

/// `[topic] #name has no topic`: to whoever asks a channel without one.
/// No colon after the name, so that no topic's text reads the same.
pub fn no_topic_line(channel: &str) -> Bytes {
    control_line(&format!("[topic] {channel} has no topic"))
}

/// What an operator is told when it tries to put out or mute another.
pub const OPERATOR_PROTECTED: &str = "an operator cannot be kicked, banned or muted";

/// What a non-operator is told when it tries an operator's command.
pub const NOT_AN_OPERATOR: &str = "not an operator";

/// `<nick> was kicked by <op>`, or `... (<reason>)`: what the channels the
/// participant was in see instead of its `left!`.
pub fn kicked_line(nick: &str, by: &str, reason: Option<&str>) -> Bytes {
    match reason {
        None => Bytes::from(format!("{nick} was kicked by {by}\n")),
        Some(reason) => Bytes::from(format!("{nick} was kicked by {by} ({reason})\n")),
    }
}

/// `ERROR kicked by <op>`, or `...: <reason>`: the last line the
/// participant put out receives.
pub fn kicked_error(by: &str, reason: Option<&str>) -> Bytes {
    match reason {
        None => error_line(format!("kicked by {by}")),
        Some(reason) => error_line(format!("kicked by {by}: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_reads_the_same_for_everyone() {
        assert_eq!(
            kicked_line("bob", "alice", None),
            "bob was kicked by alice\n"
        );
        assert_eq!(
            kicked_line("bob", "alice", Some("spam")),
            "bob was kicked by alice (spam)\n"
        );
        assert_eq!(kicked_error("alice", None), "ERROR kicked by alice\n");
        assert_eq!(
            kicked_error("alice", Some("spam")),
            "ERROR kicked by alice: spam\n"
        );
    }

    #[test]
    fn mute_durations_are_a_number_and_a_unit_up_to_a_week() {
        assert_eq!(mute_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(mute_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(mute_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(mute_duration("7d"), Some(MAX_MUTE));
        for bad in [
            "",
            "0s",
            "8d",
            "169h",
            "10",
            "m",
            "-5m",
            "1.5h",
            "1é",
            "99999999999999999999d",
        ] {
            assert_eq!(mute_duration(bad), None, "{bad:?}");
        }
        let now = time::macros::datetime!(2026-03-01 09:00 UTC);
        assert_eq!(
            muted_error(now + time::Duration::minutes(90), now),
            "ERROR you are muted until 10:30 UTC\n"
        );
        assert_eq!(
            muted_error(now + time::Duration::days(2), now),
            "ERROR you are muted until 2026-03-03 09:00 UTC\n"
        );
    }

    #[test]
    fn operators_commands_parse_or_say_their_usage() {
        use crate::protocol::{Input, parse_input};
        let command = |line| match parse_input(line) {
            Input::Command(command) => command,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(
            command("/KICK bob spamming  the channel"),
            Command::Kick {
                nick: "bob",
                reason: Some("spamming  the channel".into()),
                ban: false
            }
        );
        assert_eq!(
            command("/ban bob"),
            Command::Kick {
                nick: "bob",
                reason: None,
                ban: true
            }
        );
        assert_eq!(
            command("/mute bob 10m"),
            Command::Mute {
                nick: "bob",
                duration: Duration::from_secs(600),
                typed: "10m"
            }
        );
        assert_eq!(command("/unmute bob"), Command::Unmute("bob"));
        assert_eq!(
            command("/topic deploy \u{1b}[2Jat noon"),
            Command::Topic("deploy [2Jat noon".into())
        );
        assert_eq!(command("/ban"), Command::Usage("usage: /ban NICK [REASON]"));
        assert_eq!(
            command("/kick"),
            Command::Usage("usage: /kick NICK [REASON]")
        );
        assert_eq!(command("/mute bob 8d"), Command::Usage(MUTE_USAGE));
        assert_eq!(command("/mute bob"), Command::Usage(MUTE_USAGE));
        assert_eq!(command("/topic"), Command::ShowTopic);
        assert_eq!(command("/topic \u{7} \u{1b}"), Command::ShowTopic);
    }
}
