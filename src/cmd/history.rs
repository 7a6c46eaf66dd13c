//! `chatroom history`: the lines of the room and its channels stored on
//! disk, offline
//! ([`crate::room::store`]): export them for records, search them, count
//! them. Each opens the store as it is (never creates one) and reads.

use crate::protocol;
use crate::room::store::{Format, Options, SearchError, Store};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(subcommand)]
    command: HistoryCommand,
}

#[derive(Subcommand, Debug)]
enum HistoryCommand {
    /// Write the stored lines in their order (each channel's own) to
    /// stdout: one JSON object per line (seq, time, kind, nick, text, channel; and action,
    /// whom for an operator's action, kind moderation), or CSV. Reads one
    /// consistent snapshot, also while a server writes.
    Export {
        #[command(flatten)]
        data: Data,
        #[command(flatten)]
        channel: ChannelArg,
        /// Only lines said at or after TIME: RFC 3339
        /// (2026-03-01T09:30:00Z) or a date (2026-03-01, its midnight UTC).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<OffsetDateTime>,
        /// Only lines said before TIME (same forms; a date stops at its
        /// midnight UTC, so the day itself is not included).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<OffsetDateTime>,
        /// jsonl or csv.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// The newest stored messages and actions (up to 20) holding every one
    /// of WORDS, of every channel (or of --channel's), as `/search` shows
    /// them, then how many.
    Search {
        #[command(flatten)]
        data: Data,
        #[command(flatten)]
        channel: ChannelArg,
        /// Plain words (at most 200 bytes in all); quotes, `*`, `:` and the
        /// like are taken as text.
        #[arg(required = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// How many lines are stored, their size on disk, and the oldest and
    /// newest line's time.
    Stats {
        #[command(flatten)]
        data: Data,
    },
}

#[derive(Args, Debug)]
struct Data {
    /// The folder that holds the history (history.sqlite3).
    #[arg(long = "data", value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Args, Debug)]
struct ChannelArg {
    /// Only the lines of this channel (#lobby: the room itself), its name
    /// folded as the server folds it (#0ps is #ops). Default: every
    /// channel's.
    #[arg(long = "channel", value_name = "NAME", value_parser = parse_channel)]
    name: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// A header row, then RFC 4180 rows.
    Csv,
}

pub fn run(args: HistoryArgs) -> Result<()> {
    let written = match args.command {
        HistoryCommand::Export {
            data,
            channel,
            since,
            until,
            format,
        } => export(&data.dir, since, until, channel.name.as_deref(), format),
        HistoryCommand::Search {
            data,
            channel,
            words,
        } => search(&data.dir, channel.name.as_deref(), &words.join(" ")),
        HistoryCommand::Stats { data } => {
            let stats = open(&data.dir)?.stats()?;
            writeln!(io::stdout().lock(), "{stats}").map_err(anyhow::Error::from)
        }
    };
    // A reader that stops early (`| head`) is no error.
    match written {
        Err(err) if is_broken_pipe(&err) => Ok(()),
        other => other,
    }
}

fn open(dir: &Path) -> Result<Store> {
    Store::open(dir, Options::default())
}

fn export(
    dir: &Path,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    channel: Option<&str>,
    format: ExportFormat,
) -> Result<()> {
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        bail!("--since must be before --until");
    }
    let format = match format {
        ExportFormat::Jsonl => Format::Jsonl,
        ExportFormat::Csv => Format::Csv,
    };
    let store = open(dir)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    store.export(since, until, channel, format, &mut out)?;
    out.flush().context("cannot write to stdout")
}

fn search(dir: &Path, channel: Option<&str>, words: &str) -> Result<()> {
    let store = open(dir)?;
    let found = match store.search_in(channel, words, protocol::SEARCH_MAX) {
        Ok(found) => found,
        Err(SearchError::Unavailable(err)) => {
            return Err(err).with_context(|| format!("cannot search {}", store.path().display()));
        }
        Err(refused) => bail!("{refused}"),
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    for entry in &found {
        out.write_all(&protocol::search_line(entry.time, &entry.line()))?;
    }
    out.write_all(&protocol::search_summary(found.len()))?;
    out.flush().context("cannot write to stdout")
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// A channel's name as the server takes it (`#` then a-z, 0-9, _ and -).
fn parse_channel(s: &str) -> Result<String, String> {
    protocol::channels::validate_channel(s)
        .map(str::to_owned)
        .map_err(str::to_owned)
}

/// RFC 3339, or a date `YYYY-MM-DD` (its first instant, UTC).
fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .or_else(|| {
            Date::parse(s, date_format)
                .ok()
                .map(|d| d.midnight().assume_utc())
        })
        .ok_or_else(|| {
            "expected a time as RFC 3339 (2026-03-01T09:30:00Z) or a date (2026-03-01)".to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_date_at_midnight_utc() {
        let t = parse_time("2026-03-01T09:30:00+02:00").expect("RFC 3339");
        assert_eq!(t.unix_timestamp(), 1_772_350_200);
        let d = parse_time("2026-03-01").expect("a date");
        assert_eq!(d.unix_timestamp(), 1_772_323_200);
        for bad in [
            "2026-3-1",
            "yesterday",
            "2026-02-30",
            "",
            "2026-03-01 09:30",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
