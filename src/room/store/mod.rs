//! The room's public lines on disk: one SQLite database in a folder of its
//! own (DIR/history.sqlite3, in WAL mode), with a full-text index over
//! messages and actions, retention and export.
//!
//! What is stored is every public line of the room and of its channels,
//! each with its sequence number, time (UTC, to the millisecond), channel,
//! [`Kind`], nickname and text: an [`Entry`]. One sequence numbers the
//! lines of every channel, in the order they were committed, which is each
//! channel's own order: a channel's lines are those of its sequence
//! numbers, in theirs. An operator's action is a line of its own kind
//! ([`Kind::Moderation`]). There is no way to store a private line:
//! [`Kind`] has no such kind.
//!
//! * [`Store::append`] commits a batch of lines in one transaction (the
//!   writer groups what was said meanwhile, in any channel), refusing a
//!   sequence number that is not after the last one stored.
//! * [`Store::index`] adds the lines committed since it last ran to the
//!   full-text index, in one transaction. Indexing is kept apart from the
//!   commits because the index's cost is mostly per transaction, not per
//!   line (each transaction writes its words as a new segment, which
//!   later merges rewrite): a room's writer commits small groups, soon,
//!   and indexes in bulk, later (see [`Upkeep`]). A search loses nothing
//!   meanwhile: it indexes the lines past the index itself, in memory.
//! * [`Store::recent`] and [`Store::search_in`] answer newcomers,
//!   `/history` and `/search`, from one channel's messages and actions;
//!   [`Store::export`] writes lines (of every kind, of one channel or all)
//!   for records, from one read transaction (a consistent snapshot, while
//!   another process writes).
//! * [`Store::expire`] deletes old lines; the deleted text is overwritten
//!   in the files (`secure_delete`, the index's own `secure-delete`, and a
//!   checkpoint that truncates the write-ahead log).
//!
//! [`Store::open`] refuses, before creating or changing anything, a DIR or
//! database that is a symlink or another user's or open to group or
//! others, a file that is not a SQLite database, a damaged one, and one
//! written by a newer version.
//!
//! Durability: with [`Fsync::Normal`] (SQLite's `synchronous=NORMAL` in WAL
//! mode) a committed line survives a crash of the process; a power loss or
//! a crash of the operating system may lose the last commits made since
//! the log was last synced, never the database's consistency.
//! [`Fsync::Always`] (`synchronous=FULL`) syncs the log at every commit.
//!
//! A `Store` is one connection, for one thread at a time; another thread
//! takes its own with [`Store::try_clone`].

mod entry;
mod export;
mod open;
#[cfg(test)]
mod tests;
mod upkeep;

pub use entry::{Action, Entry, Kind};
pub use export::Format;
pub use upkeep::Upkeep;

use crate::protocol;
use crate::protocol::channels::channel_key;
use anyhow::{Context, Result, bail};
use rusqlite::{Connection, Row, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The schema this version writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

/// Most lines [`Store::index`] adds to the full-text index in one
/// transaction: a writer that catches up on a long tail pauses for a few
/// tens of milliseconds at a time, not for the whole tail.
const INDEX_MOST: i64 = 20_000;

/// The most bytes of words [`Store::search`] takes.
pub const MAX_SEARCH_BYTES: usize = 200;

/// How hard a commit is made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fsync {
    /// `synchronous=NORMAL`: committed lines survive a crash of the
    /// process; a power loss may lose the last ones.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is synced to the disk.
    Always,
}

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub fsync: Fsync,
    /// Make DIR and the database if they are missing (a server); without
    /// it a missing store is an error (the offline commands).
    pub create: bool,
    /// Refuse to grow the database beyond this many bytes (rounded down to
    /// whole pages, SQLite's `max_page_count`): an append beyond fails as
    /// on a full disk.
    pub max_bytes: Option<u64>,
}

/// What [`Store::stats`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Lines stored.
    pub lines: u64,
    /// The size of the database and its write-ahead log and index files.
    pub bytes: u64,
    /// The time of the oldest and the newest line stored.
    pub oldest: Option<OffsetDateTime>,
    pub newest: Option<OffsetDateTime>,
    /// The last sequence number ever stored (even if expired since).
    pub last_seq: Option<u64>,
}

impl std::fmt::Display for Stats {
    /// `lines: N`, `bytes: N`, `oldest: TIME`, `newest: TIME` (RFC 3339,
    /// or `none`), one per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = |t: Option<OffsetDateTime>| t.map_or_else(|| "none".to_owned(), export::rfc3339);
        writeln!(f, "lines: {}", self.lines)?;
        writeln!(f, "bytes: {}", self.bytes)?;
        writeln!(f, "oldest: {}", time(self.oldest))?;
        write!(f, "newest: {}", time(self.newest))
    }
}

/// Why a search gave no answer. The texts are what the asker is told.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Nothing in WORDS to look for (no letter or digit).
    #[error("give at least one word to search for")]
    NoWords,
    /// WORDS longer than [`MAX_SEARCH_BYTES`].
    #[error("search words are longer than {MAX_SEARCH_BYTES} bytes")]
    TooLong,
    /// The database failed; the cause is for the log, not the asker.
    #[error("the history store is unavailable")]
    Unavailable(#[source] rusqlite::Error),
}

/// One room's history on disk, its channels' included.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    options: Options,
    /// The ids of the channels this connection stored lines in, by name
    /// as given.
    channel_ids: HashMap<String, i64>,
}

/// Most channel ids a connection remembers; past it, it forgets them all
/// and asks again.
const CHANNEL_IDS_KEPT: usize = 4096;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Columns of [`NAMED`] as [`entry`] reads them.
const COLUMNS: &str = "seq, time, kind, nick, text, name, whom";

/// The lines with their channels' names.
const NAMED: &str = "lines JOIN channels ON channels.id = lines.channel";

/// The id of the channel whose folded name is the parameter `?N`.
macro_rules! channel_id {
    ($n:literal) => {
        concat!("(SELECT id FROM channels WHERE key = ?", $n, ")")
    };
}

impl Store {
    /// Opens the store in `dir` (with `options.create`, making DIR 0700
    /// and the database 0600 if missing). Refuses, with how to fix it and
    /// before creating or writing anything, a DIR or database that is a
    /// symlink, belongs to another user or is open to group or others, a
    /// file that is not a SQLite database, a damaged database (`PRAGMA
    /// quick_check`), and one from a newer version; a refused database is
    /// left byte for byte as it was.
    pub fn open(dir: &Path, options: Options) -> Result<Store> {
        let (conn, path) = open::open(dir, &options)?;
        Ok(Store {
            conn,
            path,
            options,
            channel_ids: HashMap::new(),
        })
    }

    /// Another connection to the same store, for another thread (a reader
    /// beside the room's writer); the checks [`Store::open`] made are not
    /// made again.
    pub fn try_clone(&self) -> Result<Store> {
        Ok(Store {
            conn: open::reconnect(&self.path, &self.options)?,
            path: self.path.clone(),
            options: self.options.clone(),
            channel_ids: HashMap::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `lines`, in order, in one transaction: all or none. Refuses
    /// the batch if a line's sequence number is not greater than the one
    /// before it (or than the last stored, even if expired since). A full
    /// disk (or [`Options::max_bytes`]) and I/O errors are errors too; the
    /// store takes the next batch as soon as the cause is gone.
    pub fn append(&mut self, lines: &[Entry]) -> Result<()> {
        let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
            return Ok(());
        };
        self.write_batch(lines).with_context(|| {
            format!(
                "cannot store lines {} to {} in {}",
                first.seq,
                last.seq,
                self.path.display()
            )
        })
    }

    fn write_batch(&mut self, lines: &[Entry]) -> Result<()> {
        // Ids of channels first stored in this batch are remembered only
        // once it is committed: a rolled back batch takes them back.
        let mut made: HashMap<String, i64> = HashMap::new();
        let known = &self.channel_ids;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut last: Option<i64> = tx.query_row("SELECT last_seq FROM state", [], |r| r.get(0))?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO lines (seq, time, kind, nick, text, channel, whom) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for line in lines {
                let seq = i64::try_from(line.seq)
                    .with_context(|| format!("sequence number {} is too large", line.seq))?;
                if let Some(last) = last.filter(|&last| seq <= last) {
                    bail!("line {seq} is not after line {last}, the last one stored");
                }
                let time = millis(line.time)?;
                let channel = match known.get(&line.channel).or(made.get(&line.channel)) {
                    Some(&id) => id,
                    None => {
                        let id = stored_channel(&tx, &line.channel)?;
                        made.insert(line.channel.clone(), id);
                        id
                    }
                };
                let (nick, text) = (&line.nick, &line.text);
                insert.execute((seq, time, line.kind.code(), nick, text, channel, &line.whom))?;
                last = Some(seq);
            }
        }
        tx.execute("UPDATE state SET last_seq = ?1", [last])?;
        tx.commit()?;
        if self.channel_ids.len() + made.len() > CHANNEL_IDS_KEPT {
            self.channel_ids.clear();
        }
        self.channel_ids.extend(made);
        Ok(())
    }

    /// The last sequence number ever stored; `None` if none was.
    pub fn last_seq(&self) -> Result<Option<u64>> {
        let last: Option<i64> = self
            .conn
            .query_row("SELECT last_seq FROM state", [], |r| r.get(0))
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        last.map(u64::try_from)
            .transpose()
            .context("a negative sequence number is stored")
    }

    /// The last `n` messages and actions of `channel` (any spelling of its
    /// name) before sequence `before` (or the very last ones), oldest
    /// first: a newcomer's history, `/history`.
    pub fn recent(&self, channel: &str, before: Option<u64>, n: usize) -> Result<Vec<Entry>> {
        let before = before.map_or(i64::MAX, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
        let sql = format!(
            "SELECT {COLUMNS} FROM {NAMED} WHERE lines.channel = {} AND seq < ?1 \
             AND kind IN (0, 1) ORDER BY seq DESC LIMIT ?2",
            channel_id!(3)
        );
        let mut lines = self
            .query(&sql, (before, limit(n), channel_key(channel)))
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        lines.reverse();
        Ok(lines)
    }

    /// Adds to the full-text index the messages and actions stored since
    /// it last ran, if there are at least `at_least` sequence numbers of
    /// them (and at most [`INDEX_MOST`] at a time), in one transaction;
    /// returns how many sequence numbers it covered (0: it did nothing).
    pub fn index(&mut self, at_least: u64) -> Result<u64> {
        let run = |conn: &mut Connection| -> Result<u64> {
            // Where the index ends: before the first line if it holds none.
            let (last, indexed): (Option<i64>, Option<i64>) = conn.query_row(
                "SELECT last_seq, coalesce(indexed_seq, (SELECT min(seq) - 1 FROM lines)) \
                 FROM state",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (Some(last), Some(from)) = (last, indexed) else {
                return Ok(0);
            };
            let behind = u64::try_from(last - from).unwrap_or(0);
            if behind == 0 || behind < at_least {
                return Ok(0);
            }
            let through = last.min(from.saturating_add(INDEX_MOST));
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO lines_fts (rowid, text) SELECT seq, text FROM lines \
                 WHERE seq > ?1 AND seq <= ?2 AND kind IN (0, 1) ORDER BY seq",
                (from, through),
            )?;
            tx.execute("UPDATE state SET indexed_seq = ?1", [through])?;
            tx.commit()?;
            Ok(u64::try_from(through - from)?)
        };
        run(&mut self.conn).with_context(|| {
            format!(
                "cannot update the full-text index of {}",
                self.path.display()
            )
        })
    }

    /// Up to `limit` messages and actions of any channel holding every
    /// word of `words`, newest first: [`Store::search_in`] every channel.
    pub fn search(&self, words: &str, limit: usize) -> Result<Vec<Entry>, SearchError> {
        self.search_in(None, words, limit)
    }

    /// Up to `limit` messages and actions of `channel` (any spelling of
    /// its name; `None`: of every channel) holding every word of `words`,
    /// newest first. The words are taken as plain words: nothing of the
    /// index's query syntax passes through (see [`match_expression`]).
    /// Joins, leaves and operators' actions are not searched.
    ///
    /// The lines the full-text index does not hold yet (see
    /// [`Store::index`]) are indexed for this search alone, in a temporary
    /// table in memory, inside the search's own read transaction: its
    /// rollback empties the table again, and the stored index and the
    /// lines past it are read from one snapshot.
    pub fn search_in(
        &self,
        channel: Option<&str>,
        words: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, SearchError> {
        if words.len() > MAX_SEARCH_BYTES {
            return Err(SearchError::TooLong);
        }
        let expression = match_expression(words).ok_or(SearchError::NoWords)?;
        let limit = self::limit(limit);
        let key = channel.map(channel_key);
        // The newest matches of the index, of the channel asked: the index
        // gives them newest first, each looked up in `lines` for its
        // channel (CROSS JOIN: the index stays the outer loop).
        let indexed = match key {
            None => "SELECT rowid FROM lines_fts WHERE lines_fts MATCH ?1",
            Some(_) => concat!(
                "SELECT lines_fts.rowid AS rowid FROM lines_fts CROSS JOIN lines \
                 ON lines.seq = lines_fts.rowid WHERE lines_fts MATCH ?1 AND lines.channel = ",
                channel_id!(3)
            ),
        };
        let run = || -> rusqlite::Result<Vec<Entry>> {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute(
                concat!(
                    "INSERT INTO temp.lines_tail (rowid, text) SELECT seq, text FROM lines \
                     WHERE seq > coalesce((SELECT indexed_seq FROM state), -1) \
                     AND kind IN (0, 1) AND (?1 IS NULL OR channel = ",
                    channel_id!(1),
                    ")"
                ),
                [&key],
            )?;
            let sql = format!(
                "SELECT {COLUMNS} FROM {NAMED} WHERE seq IN \
                 (SELECT rowid FROM ({indexed} ORDER BY rowid DESC LIMIT ?2) \
                  UNION ALL SELECT rowid FROM temp.lines_tail WHERE lines_tail MATCH ?1) \
                 AND (?3 IS NULL OR lines.channel = {}) \
                 ORDER BY seq DESC LIMIT ?2",
                channel_id!(3)
            );
            let mut statement = tx.prepare_cached(&sql)?;
            let rows = statement.query_map((expression, limit, &key), entry)?;
            rows.collect()
        };
        run().map_err(SearchError::Unavailable)
    }

    /// Deletes every line said before `older_than`, its words in the index
    /// included, and returns how many. The deleted text is overwritten in
    /// the database, and the write-ahead log is emptied (see
    /// [`Store::checkpoint`]) so that no copy stays in it.
    pub fn expire(&mut self, older_than: OffsetDateTime) -> Result<u64> {
        let cutoff = millis(older_than)?;
        let deleted = self
            .conn
            .execute("DELETE FROM lines WHERE time < ?1", [cutoff])
            .with_context(|| format!("cannot expire lines in {}", self.path.display()))?;
        if deleted > 0 {
            self.checkpoint()?;
        }
        Ok(deleted as u64)
    }

    /// Copies the write-ahead log into the database and truncates it to
    /// nothing. False if a reader's snapshot kept it from finishing: the
    /// next checkpoint (SQLite makes one every thousand pages) completes it.
    pub fn checkpoint(&self) -> Result<bool> {
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .with_context(|| format!("cannot checkpoint {}", self.path.display()))?;
        Ok(busy == 0)
    }

    /// How many lines, how many bytes on disk, and the oldest and newest
    /// times.
    pub fn stats(&self) -> Result<Stats> {
        let read = || -> Result<Stats> {
            let tx = self.conn.unchecked_transaction()?;
            let (lines, oldest, newest): (i64, Option<i64>, Option<i64>) = tx.query_row(
                "SELECT count(*), min(time), max(time) FROM lines",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
            let last_seq: Option<i64> =
                tx.query_row("SELECT last_seq FROM state", [], |r| r.get(0))?;
            Ok(Stats {
                lines: u64::try_from(lines)?,
                bytes: self.bytes()?,
                oldest: oldest.map(from_millis).transpose()?,
                newest: newest.map(from_millis).transpose()?,
                last_seq: last_seq.map(u64::try_from).transpose()?,
            })
        };
        read().with_context(|| format!("cannot read {}", self.path.display()))
    }

    /// The size of the database's files.
    fn bytes(&self) -> Result<u64> {
        let mut total = 0;
        for suffix in ["", "-wal", "-shm"] {
            match open::sibling(&self.path, suffix).symlink_metadata() {
                Ok(meta) => total += meta.len(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(total)
    }

    /// Writes the lines said from `since` (included) to `until` (excluded)
    /// in `channel` (any spelling of its name; `None`: in every channel)
    /// to `out` in the store's order (each channel's), as `format` says,
    /// and returns how many. Reads one snapshot: lines stored meanwhile,
    /// by this process or another, are not half in it.
    pub fn export(
        &self,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
        channel: Option<&str>,
        format: Format,
        out: &mut impl std::io::Write,
    ) -> Result<u64> {
        let since = since.map(millis).transpose()?.unwrap_or(i64::MIN);
        let until = until.map(millis).transpose()?.unwrap_or(i64::MAX);
        let key = channel.map(channel_key);
        let tx = self.conn.unchecked_transaction()?;
        let mut statement = tx.prepare(&format!(
            "SELECT {COLUMNS} FROM {NAMED} WHERE time >= ?1 AND time < ?2 \
             AND (?3 IS NULL OR channels.key = ?3) ORDER BY seq"
        ))?;
        let mut rows = statement.query((since, until, key))?;
        let mut count = 0;
        format.header(out)?;
        while let Some(row) = rows
            .next()
            .with_context(|| format!("cannot read {}", self.path.display()))?
        {
            format.write(&entry(row)?, out)?;
            count += 1;
        }
        Ok(count)
    }

    fn query(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<Entry>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let rows = statement.query_map(params, entry)?;
        rows.collect()
    }
}

/// A full-text query matching lines that hold every word of `words`, or
/// `None` if there is no word in it. Each whitespace-separated word
/// becomes an FTS5 string (a phrase), with control characters dropped and
/// `"` doubled: inside a string, FTS5 syntax (`*`, `NEAR(`, `:`, `AND`,
/// `^`, parentheses) is plain text, which the index's tokenizer splits as
/// it split the stored lines (`a:b` is the phrase `a b`). Words with no
/// letter or digit would be empty phrases and are left out.
fn match_expression(words: &str) -> Option<String> {
    let phrases: Vec<String> = words
        .split_whitespace()
        .filter(|word| word.chars().any(char::is_alphanumeric))
        .map(|word| {
            let clean: String = word.chars().filter(|c| !c.is_control()).collect();
            format!("\"{}\"", clean.replace('"', "\"\""))
        })
        .collect();
    (!phrases.is_empty()).then(|| phrases.join(" "))
}

/// A row of [`COLUMNS`] as an entry; a value no version of the store
/// writes is a conversion error.
fn entry(row: &Row<'_>) -> rusqlite::Result<Entry> {
    let invalid = |index: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Integer,
            what.to_owned().into(),
        )
    };
    let seq: i64 = row.get(0)?;
    let time: i64 = row.get(1)?;
    let kind: i64 = row.get(2)?;
    Ok(Entry {
        seq: u64::try_from(seq).map_err(|_| invalid(0, "negative sequence number"))?,
        time: from_millis(time).map_err(|_| invalid(1, "time out of range"))?,
        channel: row.get(5)?,
        kind: Kind::from_code(kind).ok_or_else(|| invalid(2, "unknown kind of line"))?,
        nick: row.get(3)?,
        text: row.get(4)?,
        whom: row.get(6)?,
    })
}

/// The id of the channel `name` (valid by
/// [`protocol::channels::validate_channel`]), stored first if it is new
/// (under this spelling, which exports show from then on).
fn stored_channel(conn: &Connection, name: &str) -> Result<i64> {
    if protocol::channels::validate_channel(name).is_err() {
        bail!(
            "channel name {:?} is not valid",
            protocol::sanitize(name).into_owned()
        );
    }
    let key = channel_key(name);
    conn.execute(
        "INSERT INTO channels (key, name) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        (&key, name),
    )?;
    let id = conn.query_row("SELECT id FROM channels WHERE key = ?1", [&key], |r| {
        r.get(0)
    })?;
    Ok(id)
}

/// Milliseconds since 1970 (UTC), as stored.
fn millis(time: OffsetDateTime) -> Result<i64> {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000)
        .with_context(|| format!("time {time} is out of range"))
}

fn from_millis(millis: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .with_context(|| format!("stored time {millis} is out of range"))
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
