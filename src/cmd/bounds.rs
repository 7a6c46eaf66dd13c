//! The allowed range of every numeric `serve` setting, and the parsers that
//! hold the command line to them.
//!
//! A setting outside its range is refused when the command line is read,
//! with the range in the message (and in `--help`, see
//! [`ranges_in_help`]), so that no value can
//! reach a clock or an allocation and fail there later: a timeout of 1e19
//! seconds, say, would overflow the first time it is added to the time of
//! day.

use crate::room::{Announce, backlog, cluster};
use crate::server::admission;
use crate::server::rate::RateLimit;
use clap::Command;
use std::ops::RangeInclusive;
use std::time::Duration;

/// A setting that can be off (`None`). Named so that clap's derive, which
/// takes a field of type `Option` for an optional flag, leaves it alone: the
/// parser itself says when it is off.
pub type OrOff<T> = Option<T>;

/// `--max-line`, bytes.
pub const MAX_LINE: RangeInclusive<usize> = 16..=1_048_576;
/// `--handshake-timeout`, seconds.
pub const HANDSHAKE_TIMEOUT: RangeInclusive<f64> = 0.1..=3600.0;
/// `--idle-timeout`, seconds (0 is off).
pub const IDLE_TIMEOUT: RangeInclusive<f64> = 0.0..=2_592_000.0;
/// `--max-participants`.
pub const MAX_PARTICIPANTS: RangeInclusive<usize> = 1..=1_000_000;
/// `--max-per-ip`.
pub const MAX_PER_IP: RangeInclusive<usize> = 1..=1_000_000;
/// `--joins-per-minute`.
pub const JOINS_PER_MINUTE: RangeInclusive<u32> = 1..=100_000;
/// `--connects-per-minute`.
pub const CONNECTS_PER_MINUTE: RangeInclusive<u32> = 1..=1_000_000;
/// `--node-timeout`, seconds.
pub const NODE_TIMEOUT: RangeInclusive<f64> = 0.5..=300.0;
/// `--rate-limit`'s rate, messages per second.
pub const RATE: RangeInclusive<f64> = 0.01..=1_000_000.0;
/// `--rate-limit`'s burst, messages.
pub const BURST: RangeInclusive<u32> = 1..=10_000_000;
/// `--history`, lines (clap's own parser checks it, and takes an `i64`
/// range).
pub const HISTORY: RangeInclusive<i64> = 0..=1000;
/// `--retain`, seconds: a second to ten years (or `forever`).
pub const RETAIN: RangeInclusive<u64> = 1..=3650 * 86_400;
/// `--announce-up-to`, participants (or `all`).
pub const ANNOUNCE_UP_TO: RangeInclusive<usize> = 0..=10_000_000;
/// `--max-channels`.
pub const MAX_CHANNELS: RangeInclusive<usize> = 0..=100_000;
/// `--max-joined`.
pub const MAX_JOINED: RangeInclusive<usize> = 0..=1000;
/// `--retain` when not given.
pub const DEFAULT_RETAIN: &str = "30d";

/// Adds each bounded `serve` argument's range to the end of its help, from
/// the constants above: `--help` says what the parsers check. (And the
/// default of `--max-participants`, which clap does not know: without it,
/// the open-files limit may lower it quietly.)
pub fn ranges_in_help(serve: Command) -> Command {
    let idle_days = IDLE_TIMEOUT.end() / 86_400.0;
    let rate = format!("RATE {}, BURST {}", from_to(&RATE), from_to(&BURST));
    let idle = format!("at most {}, {idle_days} days", IDLE_TIMEOUT.end());
    let backlog = format!(
        "each line counts its length plus {} bytes; at least {} KiB and four of the \
         longest lines",
        backlog::LINE_OVERHEAD,
        backlog::MIN_BYTES >> 10
    );
    let node_timeout = format!(
        "{}; default {}",
        from_to(&NODE_TIMEOUT),
        cluster::DEFAULT_NODE_TIMEOUT.as_secs_f64()
    );
    let max_participants = format!(
        "{}; by default {}, or what the open-files limit allows if fewer",
        from_to(&MAX_PARTICIPANTS),
        admission::DEFAULT_MAX_PARTICIPANTS
    );
    let ranges = [
        ("max_line", from_to(&MAX_LINE)),
        ("handshake_timeout", from_to(&HANDSHAKE_TIMEOUT)),
        ("max_participants", max_participants),
        ("max_per_ip", from_to(&MAX_PER_IP)),
        ("connects_per_minute", from_to(&CONNECTS_PER_MINUTE)),
        ("joins_per_minute", from_to(&JOINS_PER_MINUTE)),
        ("rate_limit", rate),
        ("idle_timeout", idle),
        ("backlog", backlog),
        ("history", format!("at most {}", HISTORY.end())),
        ("announce_up_to", from_to(&ANNOUNCE_UP_TO)),
        ("max_channels", from_to(&MAX_CHANNELS)),
        ("max_joined", from_to(&MAX_JOINED)),
        ("node_timeout", node_timeout),
    ];
    ranges.into_iter().fold(serve, |serve, (id, range)| {
        serve.mut_arg(id, |arg| {
            let help = format!("{} ({range})", arg.get_help().unwrap_or_default());
            match arg.get_long_help().map(|long| format!("{long} ({range})")) {
                Some(long_help) => arg.help(help).long_help(long_help),
                None => arg.help(help),
            }
        })
    })
}

fn from_to<T: std::fmt::Display>(range: &RangeInclusive<T>) -> String {
    format!("{} to {}", range.start(), range.end())
}

fn whole<T>(s: &str, range: &RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    s.trim()
        .parse::<T>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            format!(
                "expected a whole number from {} to {}",
                range.start(),
                range.end()
            )
        })
}

fn seconds(s: &str, range: &RangeInclusive<f64>) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| range.contains(v))
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| {
            format!(
                "expected a number of seconds from {} to {}",
                range.start(),
                range.end()
            )
        })
}

pub fn max_line(s: &str) -> Result<usize, String> {
    whole(s, &MAX_LINE)
}

pub fn handshake_timeout(s: &str) -> Result<Duration, String> {
    seconds(s, &HANDSHAKE_TIMEOUT)
}

/// `None` for 0 (off).
pub fn idle_timeout(s: &str) -> Result<Option<Duration>, String> {
    seconds(s, &IDLE_TIMEOUT).map(|d| (!d.is_zero()).then_some(d))
}

pub fn node_timeout(s: &str) -> Result<Duration, String> {
    seconds(s, &NODE_TIMEOUT)
}

pub fn max_participants(s: &str) -> Result<usize, String> {
    whole(s, &MAX_PARTICIPANTS)
}

pub fn max_per_ip(s: &str) -> Result<usize, String> {
    whole(s, &MAX_PER_IP)
}

pub fn joins_per_minute(s: &str) -> Result<u32, String> {
    whole(s, &JOINS_PER_MINUTE)
}

pub fn connects_per_minute(s: &str) -> Result<u32, String> {
    whole(s, &CONNECTS_PER_MINUTE)
}

/// `forever` (`None`), or a whole number of seconds, minutes, hours or
/// days (`45s`, `90m`, `12h`, `30d`) within [`RETAIN`]: how long the
/// history on disk keeps a line.
pub fn retain(s: &str) -> Result<OrOff<Duration>, String> {
    let s = s.trim();
    if s == "forever" {
        return Ok(None);
    }
    let unit = |suffix: char| -> Option<u64> {
        match suffix {
            's' => Some(1),
            'm' => Some(60),
            'h' => Some(3600),
            'd' => Some(86_400),
            _ => None,
        }
    };
    let seconds = s
        .char_indices()
        .last()
        .and_then(|(at, suffix)| Some((s[..at].parse::<u64>().ok()?, unit(suffix)?)))
        .and_then(|(count, unit)| count.checked_mul(unit))
        .filter(|seconds| RETAIN.contains(seconds));
    match seconds {
        Some(seconds) => Ok(Some(Duration::from_secs(seconds))),
        None => Err(format!(
            "expected `forever` or a whole number with a unit, s, m, h or d \
             (`30d`, `12h`), from {}s to {}d",
            RETAIN.start(),
            RETAIN.end() / 86_400
        )),
    }
}

pub fn max_channels(s: &str) -> Result<usize, String> {
    whole(s, &MAX_CHANNELS)
}

pub fn max_joined(s: &str) -> Result<usize, String> {
    whole(s, &MAX_JOINED)
}

/// `all`, or a whole number of participants within [`ANNOUNCE_UP_TO`].
pub fn announce_up_to(s: &str) -> Result<Announce, String> {
    if s.trim() == "all" {
        return Ok(Announce::All);
    }
    whole(s, &ANNOUNCE_UP_TO)
        .map(Announce::UpTo)
        .map_err(|e| format!("expected `all` or a number: {e}"))
}

/// `off` (`None`), `RATE` or `RATE/BURST`, each within its range.
pub fn rate_limit(s: &str) -> Result<Option<RateLimit>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    let limit: RateLimit = s.parse()?;
    if !RATE.contains(&limit.per_second) || !BURST.contains(&limit.burst) {
        return Err(format!(
            "the rate must be from {} to {} messages per second and the burst from {} to {}",
            RATE.start(),
            RATE.end(),
            BURST.start(),
            BURST.end()
        ));
    }
    Ok(Some(limit))
}

/// `--backlog` must hold a few of the longest lines (`--max-line`), or a
/// single one would push everybody who has not read the one before it out
/// of the room.
pub fn backlog(size: usize, max_line: usize) -> anyhow::Result<usize> {
    // `<nick>: <text>\n` at its longest, as the ring counts it.
    let longest = max_line
        .saturating_add(crate::protocol::MAX_NICK_LEN + 3)
        .saturating_add(backlog::LINE_OVERHEAD);
    let least = backlog::MIN_BYTES.max(longest.saturating_mul(4));
    if size < least {
        anyhow::bail!(
            "--backlog {size} bytes is too small: it must be at least {least} bytes \
             ({} KiB, and four lines of --max-line)",
            backlog::MIN_BYTES >> 10
        );
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused_with_the_range() {
        let err = handshake_timeout("1e19").unwrap_err();
        assert!(err.contains("0.1 to 3600"), "{err}");
        assert!(handshake_timeout("NaN").is_err());
        assert!(handshake_timeout("-1").is_err());
        assert_eq!(handshake_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(idle_timeout("0"), Ok(None));
        assert!(idle_timeout("inf").is_err());
        assert!(max_line("0").unwrap_err().contains("16 to 1048576"));
        assert!(max_participants("0").is_err());
        assert_eq!(max_per_ip("16"), Ok(16));
        assert_eq!(rate_limit("off"), Ok(None));
        assert!(
            rate_limit("1e-300")
                .unwrap_err()
                .contains("0.01 to 1000000")
        );
        assert!(rate_limit("10/0").is_err());
        assert!(rate_limit("10/20000000").is_err());
        assert_eq!(joins_per_minute("10"), Ok(10));
        assert_eq!(
            retain(DEFAULT_RETAIN),
            Ok(Some(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(retain("2s"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(retain("90m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(retain("12h"), Ok(Some(Duration::from_secs(43_200))));
        assert_eq!(retain("3650d"), Ok(Some(Duration::from_secs(315_360_000))));
        assert_eq!(retain("forever"), Ok(None));
        for bad in [
            "0s",
            "3651d",
            "30",
            "d",
            "-1d",
            "1.5h",
            "30 d",
            "1w",
            "99999999999999999999d",
            "",
            "ß",
        ] {
            let err = retain(bad).expect_err(bad);
            assert!(err.contains("from 1s to 3650d"), "{bad}: {err}");
        }
        assert!(connects_per_minute("0").is_err());
    }
}
