//! The texts of a server that keeps its lines on disk (`serve --data`):
//! what newcomers are told about it, and its two commands.

use super::HISTORY_PREFIX;
use bytes::Bytes;

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
