//! The texts of a server that keeps its lines on disk (`serve --data`):
//! what newcomers are told about it, and its two commands.

use super::{HISTORY_PREFIX, control_line};
use bytes::{Bytes, BytesMut};

/// The `/help` lines of a server that keeps its lines on disk (`serve
/// --data`), after [`HELP`](super::HELP)'s.
pub const HELP_RECORDED: [&str; 2] = [
    "[help] /history [N]: the N lines said before the oldest you were shown (20, at most 200)",
    "[help] /search WORDS: the last messages and actions holding every word",
];

/// Lines `/history` shows when not told how many.
pub const RECALL_DEFAULT: usize = 20;

/// Most lines one `/history` shows.
pub const RECALL_MAX: usize = 200;

/// `[history] this room keeps its lines for <how long>` (`forever` for
/// `None`): what a newcomer of a room that records its lines is told, so
/// that nobody is recorded without knowing it.
pub fn retention_line(retain: Option<std::time::Duration>) -> Bytes {
    let how_long = match retain {
        None => "forever".to_owned(),
        Some(retain) => {
            let seconds = retain.as_secs();
            let (count, unit) = [(86_400, "day"), (3600, "hour"), (60, "minute")]
                .into_iter()
                .find(|(unit, _)| seconds >= *unit && seconds % unit == 0)
                .map_or((seconds, "second"), |(size, unit)| (seconds / size, unit));
            let plural = if count == 1 { "" } else { "s" };
            format!("for {count} {unit}{plural}")
        }
    };
    Bytes::from(format!(
        "{HISTORY_PREFIX}this room keeps its lines {how_long}\n"
    ))
}

/// Prefix of a line `/search` found, and of its summary.
pub const SEARCH_PREFIX: &str = "[search] ";

/// Most lines one search shows.
pub const SEARCH_MAX: usize = 20;

/// `[search] YYYY-MM-DD HH:MM <line>`: a line a search found, said at
/// `when` (shown in UTC), `line` terminated as the room showed it.
pub fn search_line(when: time::OffsetDateTime, line: &[u8]) -> Bytes {
    let when = when.to_offset(time::UtcOffset::UTC);
    let stamp = format!(
        "{SEARCH_PREFIX}{} {:02}:{:02} ",
        when.date(),
        when.hour(),
        when.minute()
    );
    let mut marked = BytesMut::with_capacity(stamp.len() + line.len());
    marked.extend_from_slice(stamp.as_bytes());
    marked.extend_from_slice(line);
    marked.freeze()
}

/// The line after a search's results: `[search] N matches` (`1 match`),
/// or `[search] no matches`.
pub fn search_summary(found: usize) -> Bytes {
    match found {
        0 => control_line(&format!("{SEARCH_PREFIX}no matches")),
        1 => control_line(&format!("{SEARCH_PREFIX}1 match")),
        n => control_line(&format!("{SEARCH_PREFIX}{n} matches")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_is_said_in_its_largest_whole_unit() {
        let days = |n: u64| Some(std::time::Duration::from_secs(n * 86_400));
        assert_eq!(
            retention_line(days(30)),
            "[history] this room keeps its lines for 30 days\n"
        );
        assert_eq!(
            retention_line(None),
            "[history] this room keeps its lines forever\n"
        );
        assert_eq!(
            retention_line(Some(std::time::Duration::from_secs(3600))),
            "[history] this room keeps its lines for 1 hour\n"
        );
        assert_eq!(
            retention_line(Some(std::time::Duration::from_secs(90))),
            "[history] this room keeps its lines for 90 seconds\n"
        );
    }
}
