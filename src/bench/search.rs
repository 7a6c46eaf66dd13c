//! The `search` scenario: a store filled with `--lines` lines before the
//! server starts (through the store's own API, in large batches: the server
//! would take far longer), then newcomers join one after another (join
//! time), and the last one asks `/search` round after round (round-trip
//! latency, from sending the command to the reply's summary line).

use super::client::{self, BoxStream};
use super::report::{self, ScenarioResult};
use super::spawn;
use super::{BenchOptions, Case, Target};
use crate::protocol::{self, LineFramer};
use crate::room::store::{Entry, Kind, Options, Store};
use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Lines per transaction while filling the store.
const BATCH: u64 = 10_000;

/// Distinct topic words in the filled store: a search for one finds
/// `lines / TOPICS` lines, more than a reply shows.
const TOPICS: u64 = 1000;

/// Fills a fresh store in `dir` with `lines` chat lines, said one
/// millisecond apart up to now (well inside the server's retention).
pub fn prefill(dir: &Path, lines: u64) -> Result<()> {
    let mut store = Store::open(
        dir,
        Options {
            create: true,
            ..Options::default()
        },
    )?;
    let now = time::OffsetDateTime::now_utc();
    let mut seq = 1;
    while seq <= lines {
        let end = (seq + BATCH).min(lines + 1);
        let batch: Vec<Entry> = (seq..end)
            .map(|i| {
                Entry::new(
                    i,
                    now - time::Duration::milliseconds(i64::try_from(lines - i).unwrap_or(0)),
                    Kind::Message,
                    format!("user{}", i % 200),
                    format!(
                        "line {i} about topic{} and word{}, with some ordinary chat text",
                        i % TOPICS,
                        i % 97
                    ),
                )
            })
            .collect();
        store
            .append(&batch)
            .with_context(|| format!("cannot fill the store in {}", dir.display()))?;
        seq = end;
    }
    // As a server leaves it when it stops: every line in the index.
    while store
        .index(1)
        .with_context(|| format!("cannot index the store in {}", dir.display()))?
        > 0
    {}
    Ok(())
}

/// Joins `clients` newcomers in turn, then runs `opts.messages` searches
/// from the last one.
pub async fn run(target: &Target, opts: &BenchOptions) -> Result<ScenarioResult> {
    if !target.spawned {
        bail!("search needs --spawn: it fills the store before the server starts");
    }
    let clients = opts.clients_for(Case::Search);
    let tls = target.tls.as_ref();
    let mut joins_us = Vec::with_capacity(clients);
    let mut last = None;
    for index in 0..clients {
        let nick = format!("searcher{index}");
        let joined = client::join(target.addr_for(index), tls, &nick, opts.stall_timeout)
            .await
            .with_context(|| format!("{nick} cannot join"))?;
        joins_us.push(micros(joined.joined));
        last = Some(joined);
    }
    let joined = last.ok_or_else(|| anyhow!("search needs at least one client"))?;
    let (mut stream, mut framer) = (joined.stream, joined.framer);

    let mut result = ScenarioResult::new(Case::Search.name(), target.transport(), true);
    result.clients = clients;
    result.senders = 1;
    let mut round_trips_us = Vec::with_capacity(opts.messages as usize);
    let server_cpu = || {
        target
            .server_pid
            .and_then(|pid| spawn::cpu_seconds(pid).ok())
    };
    let cpu_before = server_cpu();
    let start = Instant::now();
    for round in 0..u64::from(opts.messages) {
        let words = format!("topic{}", round % TOPICS.min(opts.lines.max(1)));
        let sent = Instant::now();
        stream
            .write_all(format!("/search {words}\n").as_bytes())
            .await
            .context("cannot send /search")?;
        let found = summary(&mut stream, &mut framer, opts.stall_timeout).await?;
        round_trips_us.push(micros(sent.elapsed()));
        if found == 0 && opts.lines >= TOPICS {
            result.problems.push(format!(
                "/search {words} found nothing in a store that has it"
            ));
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    result.server_cpu_s = cpu_before.and_then(|before| Some(server_cpu()? - before));
    result.latency_us = report::percentiles([round_trips_us.as_slice()]);
    result.join_us = report::percentiles([joins_us.as_slice()]);
    result.ok = result.problems.is_empty();
    result.notes.push(format!(
        "latency: {} /search round trips over a store of {} lines; join: connect to the \
         greeting, {clients} newcomers in turn",
        opts.messages, opts.lines
    ));
    Ok(result)
}

/// Reads until a search reply's summary line; returns how many it found.
/// Other lines (the history replay, results) pass.
async fn summary(
    stream: &mut BoxStream,
    framer: &mut LineFramer,
    limit: Duration,
) -> Result<usize> {
    let read = async {
        loop {
            while let Some(line) = framer.next_line().context("a line from the server")? {
                let text = protocol::sanitize_bytes(&line);
                if let Some(found) = summary_count(&text) {
                    return Ok(found);
                }
                if text.starts_with(protocol::ERROR_PREFIX) {
                    bail!("the server answered /search with {text:?}");
                }
            }
            if stream
                .read_buf(framer.read_buf())
                .await
                .context("cannot read")?
                == 0
            {
                bail!("the server closed the connection during a search");
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| anyhow!("no /search reply within {limit:?}"))?
}

/// `Some(n)` for `[search] n matches`, `[search] 1 match`, `[search] no matches`.
fn summary_count(line: &str) -> Option<usize> {
    let rest = line.strip_prefix(protocol::SEARCH_PREFIX)?;
    if rest == "no matches" {
        return Some(0);
    }
    let (count, word) = rest.split_once(' ')?;
    matches!(word, "match" | "matches").then(|| count.parse().ok())?
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_lines() {
        assert_eq!(summary_count("[search] no matches"), Some(0));
        assert_eq!(summary_count("[search] 1 match"), Some(1));
        assert_eq!(summary_count("[search] 20 matches"), Some(20));
        assert_eq!(
            summary_count("[search] 2026-01-01 00:00 bob: 3 matches"),
            None
        );
        assert_eq!(summary_count("bob: [search] 3 matches"), None);
    }
}
