//! Channels: their names, and the lines that speak of them.
//!
//! The default room is the channel `#lobby`, whose lines carry no prefix:
//! a participant that never types a channel command sees the lab's lines
//! exactly. Every other channel's lines start with its name and a space
//! (`#ops alice: deploy done`), so they can never be taken for a lobby
//! line: none of those starts with `#`.

use super::{Command, control_line, nick_key};
use bytes::{Bytes, BytesMut};

/// The default room's name.
pub const LOBBY: &str = "#lobby";

/// The longest channel name, `#` not counted.
pub const MAX_CHANNEL_LEN: usize = 32;

/// Why a channel name was refused; the text is what the asker is told.
pub const BAD_CHANNEL_NAME: &str =
    "channel name must be # then 1 to 32 of a-z, 0-9, _ and -, like #ops";

/// Checks a channel name (`#` then 1 to [`MAX_CHANNEL_LEN`] of `a-z`,
/// `0-9`, `_`, `-`) and returns it.
pub fn validate_channel(name: &str) -> Result<&str, &'static str> {
    let Some(rest) = name.strip_prefix('#') else {
        return Err(BAD_CHANNEL_NAME);
    };
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    if rest.is_empty() || rest.len() > MAX_CHANNEL_LEN || !rest.bytes().all(allowed) {
        return Err(BAD_CHANNEL_NAME);
    }
    Ok(name)
}

/// `/join`, `/part`, `/rooms` (`word` in lower case), or `None` for
/// another command word.
pub(super) fn parse<'a>(word: &str, args: &'a str) -> Option<Command<'a>> {
    let args: Vec<&str> = args.split_whitespace().collect();
    Some(match (word, &args[..]) {
        ("rooms", _) => Command::Rooms,
        ("join", [name]) => Command::Join(name),
        ("join", _) => Command::Usage("usage: /join #NAME"),
        ("part", []) => Command::Part(None),
        ("part", [name]) => Command::Part(Some(name)),
        ("part", _) => Command::Usage("usage: /part [#NAME]"),
        _ => return None,
    })
}

/// What two channel names are compared on: the lookalike skeleton
/// nicknames are compared on ([`nick_key`]), so `#0ps` is `#ops`.
pub fn channel_key(name: &str) -> String {
    nick_key(name)
}

/// Whether `name` is the default room, in any lookalike spelling.
pub fn is_lobby(name: &str) -> bool {
    channel_key(name) == channel_key(LOBBY)
}

/// `line` as a member of channel `name` reads it: `<name> <line>`.
pub fn in_channel(prefix: &[u8], line: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(prefix.len() + line.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(line);
    out.freeze()
}

/// What a channel's lines start with: its name and a space.
pub fn channel_prefix(name: &str) -> Bytes {
    Bytes::from(format!("{name} "))
}

/// To the one who joined (or switched to) a channel: `[join] #name: N here`.
pub fn join_line(name: &str, here: usize) -> Bytes {
    control_line(&format!("[join] {name}: {here} here"))
}

/// One line of the `/rooms` reply: `[rooms] #name N here`, with
/// ` (current)` for the asker's current channel.
pub fn rooms_line(name: &str, here: usize, current: bool) -> Bytes {
    let mark = if current { " (current)" } else { "" };
    control_line(&format!("[rooms] {name} {here} here{mark}"))
}

/// The `/rooms` reply's last line when it lists only the first ones.
pub fn rooms_more_line(more: usize) -> Bytes {
    control_line(&format!("[rooms] ... and {more} more"))
}

/// To the one who left a channel with `/part`, or was told its current
/// channel: `[part] #name: now in #current`.
pub fn part_line(name: &str, current: &str) -> Bytes {
    control_line(&format!("[part] {name}: you left it; now in {current}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_a_hash_and_a_few_plain_characters() {
        for good in [
            "#ops",
            "#a",
            "#release-2_0",
            &format!("#{}", "x".repeat(32)),
        ] {
            assert_eq!(validate_channel(good), Ok(good));
        }
        for bad in [
            "ops",
            "#",
            "#Ops",
            "#op s",
            "#op\u{1b}s",
            "#ops!",
            "##ops",
            "#ópera",
            &format!("#{}", "x".repeat(33)),
        ] {
            assert_eq!(validate_channel(bad), Err(BAD_CHANNEL_NAME), "{bad:?}");
        }
        assert_eq!(channel_key("#0ps"), channel_key("#ops"));
        assert_eq!(channel_key("#release_1"), channel_key("#re1ease-l"));
        assert!(is_lobby("#l0bby"));
        assert!(!is_lobby("#lobbies"));
    }

    #[test]
    fn a_channels_lines_carry_its_name() {
        let prefix = channel_prefix("#ops");
        assert_eq!(in_channel(&prefix, b"alice: hi\n"), "#ops alice: hi\n");
        assert_eq!(join_line("#ops", 3), "[join] #ops: 3 here\n");
        assert_eq!(
            rooms_line("#ops", 3, true),
            "[rooms] #ops 3 here (current)\n"
        );
        assert_eq!(rooms_more_line(4), "[rooms] ... and 4 more\n");
    }
}
