//! Opening a store: the checks on DIR and its files, then on the database
//! itself, and the schema of a new one.
//!
//! Everything that can refuse runs before anything is created or written:
//! the folder and the files are looked at with `lstat` (a symlink could
//! point anywhere, at any time), the database's header is read as plain
//! bytes, and SQLite is asked only to read until the database has passed.
//! A refused database is left exactly as it was.

use super::{Fsync, Options, SCHEMA_VERSION};
use crate::certs::keyfile;
use crate::protocol::channels::{LOBBY, channel_key};
use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags};
use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The database's file name in DIR; SQLite keeps its `-wal` and `-shm`
/// files beside it.
pub(super) const FILE_NAME: &str = "history.sqlite3";

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Where the header keeps `PRAGMA user_version` (four bytes, big-endian).
const USER_VERSION_OFFSET: usize = 60;

/// How the full-text indexes split text into words: one tokenizer for the
/// stored index and a search's temporary one, so that both find the same.
macro_rules! tokenizer {
    () => {
        "unicode61 remove_diacritics 2"
    };
}

/// The temporary index of a search (see [`super::Store::search`]), one
/// per connection, in memory.
const TAIL_SCHEMA: &str = concat!(
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.lines_tail USING fts5(text, tokenize = '",
    tokenizer!(),
    "');"
);

/// The schema (version [`SCHEMA_VERSION`]).
///
/// `lines.seq` is the rowid: the table is stored in the order lines were
/// said, one sequence for the whole store; each channel's lines are in
/// its own order within it. `lines.channel` is the channel a line was said
/// in (`channels.id`; 0 is `#lobby`), and `channels.key` its name folded as
/// the server folds it ([`crate::protocol::channels::channel_key`]), with
/// `name` as first stored. `kind` is 0 message, 1 action, 2 join, 3 leave,
/// and 4 to 8 an operator's action (kick, ban, mute, unmute, topic), whose
/// operator is `nick`, whose participant is `whom` (empty otherwise) and
/// whose reason, duration or topic is `text`. The full-text index takes its
/// text from `lines` (external content, so each text is stored once). It
/// holds messages and actions only, and is filled in bulk, apart from the
/// commits of lines (see [`super::Store::index`]): `state.indexed_seq` is
/// the last sequence it holds (every message and action up to it is in it;
/// `NULL`: none). A line deleted from `lines` is deleted from the index by
/// a trigger, in the same transaction, if the index holds it; the index's
/// `secure-delete` option makes that remove the words from the index
/// itself rather than mark them deleted. Lines are never changed once
/// stored. `state.last_seq` remembers the last sequence ever stored, so
/// that it survives the expiry of every line.
const SCHEMA: &str = concat!(
    "
CREATE TABLE state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER,
    indexed_seq INTEGER
);
INSERT INTO state (id, last_seq, indexed_seq) VALUES (1, NULL, NULL);
CREATE VIRTUAL TABLE lines_fts USING fts5(
    text,
    content = 'lines',
    content_rowid = 'seq',
    tokenize = '",
    tokenizer!(),
    "'
);
INSERT INTO lines_fts (lines_fts, rank) VALUES ('secure-delete', 1);
INSERT INTO lines_fts (lines_fts, rank) VALUES ('automerge', 16);
"
);

/// The tables of lines and channels, made new in version 3 (a store of
/// version 2 has its lines copied into them: see [`UPGRADE_FROM_2`]). The
/// `#lobby` row is inserted apart, with its key.
const LINES: &str = "
CREATE TABLE channels (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL
);
CREATE TABLE lines (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    kind INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 8),
    nick TEXT NOT NULL,
    text TEXT NOT NULL,
    channel INTEGER NOT NULL DEFAULT 0 REFERENCES channels (id),
    whom TEXT NOT NULL DEFAULT ''
);
";

/// What every version since 3 has on `lines`, made after its rows are
/// there: the indexes by time (expiry, export) and by channel (a channel's
/// history and search), the trigger that keeps stored lines unchanged, and
/// the one that deletes a line from the full-text index with the line, if
/// the index holds it.
const LINES_AFTER: &str = "
CREATE INDEX lines_by_time ON lines (time);
CREATE INDEX lines_by_channel ON lines (channel);
CREATE TRIGGER lines_unchanged BEFORE UPDATE ON lines BEGIN
    SELECT RAISE(ABORT, 'stored lines are never changed');
END;
CREATE TRIGGER lines_unindexed AFTER DELETE ON lines
WHEN old.kind IN (0, 1) AND old.seq <= (SELECT indexed_seq FROM state) BEGIN
    INSERT INTO lines_fts (lines_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
";

/// From version 1, whose index was filled by a trigger at every insert
/// (so it holds every line stored), to version 2: the insert trigger goes,
/// and the index is marked as holding everything up to the last line.
const UPGRADE_FROM_1: &str = "
DROP TRIGGER lines_indexed;
DROP TRIGGER lines_unindexed;
ALTER TABLE state ADD COLUMN indexed_seq INTEGER;
UPDATE state SET indexed_seq = last_seq;
";

/// From version 2 (one room, `kind` 0 to 3) to version 3: SQLite cannot
/// change a table's checks in place, so the lines are copied into the new
/// table, every one as it was and in `#lobby`, under the same sequence
/// numbers: the full-text index, keyed by them, stays as it is. Dropping
/// the old table drops its triggers and indexes, made again after.
const UPGRADE_FROM_2: &str = "
ALTER TABLE lines RENAME TO lines_v2;
DROP TRIGGER IF EXISTS lines_unchanged;
DROP TRIGGER IF EXISTS lines_unindexed;
DROP INDEX IF EXISTS lines_by_time;
";

/// After [`LINES`] in an upgrade from version 2.
const COPY_FROM_2: &str = "
INSERT INTO lines (seq, time, kind, nick, text)
    SELECT seq, time, kind, nick, text FROM lines_v2 ORDER BY seq;
DROP TABLE lines_v2;
";

/// Opens (and with `options.create`, makes) the store in `dir`: see
/// [`super::Store::open`]. Returns the connection and the database's path.
pub(super) fn open(dir: &Path, options: &Options) -> Result<(Connection, PathBuf)> {
    check_or_make_dir(dir, options.create)?;
    // SQLite refuses a symlink anywhere in the path it is given (see
    // `connect`): give it the real one; DIR itself is not a symlink.
    let real_dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let path = real_dir.join(FILE_NAME);
    let fresh = check_or_make_file(&path, options.create)?;
    if !fresh {
        check_header(&path)?;
    }
    for suffix in ["-wal", "-shm"] {
        check_private_file(&sibling(&path, suffix), false)?;
    }
    let conn = connect(&path)?;
    check_database(&conn, &path)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version < SCHEMA_VERSION {
        make_or_upgrade(&conn, version).with_context(|| match version {
            0 => format!("cannot make a new history store in {}", path.display()),
            _ => format!(
                "cannot upgrade the history store {} from version {version}",
                path.display()
            ),
        })?;
        if version > 0 {
            tracing::info!(
                path = %path.display(),
                "upgraded the history store from schema version {version} to {SCHEMA_VERSION}, \
                 every line kept"
            );
        }
    }
    configure(&conn, options)
        .with_context(|| format!("cannot set up the history store {}", path.display()))?;
    Ok((conn, path))
}

/// Makes the schema in an empty database (`version` 0), or brings one of
/// an older version to [`SCHEMA_VERSION`], in one transaction: all or
/// nothing.
fn make_or_upgrade(conn: &Connection, version: i64) -> Result<()> {
    // The pages of a table dropped in an upgrade are overwritten, as those
    // of expired lines are: no copy of a line outlives its expiry in them.
    conn.pragma_update(None, "secure_delete", "ON")?;
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    match version {
        0 => tx.execute_batch(SCHEMA)?,
        1 => tx.execute_batch(&format!("{UPGRADE_FROM_1} {UPGRADE_FROM_2}"))?,
        _ => tx.execute_batch(UPGRADE_FROM_2)?,
    }
    tx.execute_batch(LINES)?;
    tx.execute(
        "INSERT INTO channels (id, key, name) VALUES (0, ?1, ?2)",
        (channel_key(LOBBY), LOBBY),
    )?;
    if version > 0 {
        tx.execute_batch(COPY_FROM_2)?;
    }
    tx.execute_batch(LINES_AFTER)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Another connection to a database [`open`] has checked.
pub(super) fn reconnect(path: &Path, options: &Options) -> Result<Connection> {
    let conn = connect(path)?;
    configure(&conn, options)
        .with_context(|| format!("cannot set up the history store {}", path.display()))?;
    Ok(conn)
}

/// `path` with `suffix` appended to its name (SQLite's `-wal`, `-shm`).
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A connection that never follows a symlink (anywhere in `path`, so a
/// file swapped for one after the checks is refused too) and never
/// creates the file (the checks above made it, with its mode).
fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags)
        .with_context(|| format!("cannot open the history store {}", path.display()))
}

/// The connection's settings, which SQLite does not keep in the file
/// (except the journal mode, set once and kept).
fn configure(conn: &Connection, options: &Options) -> Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("cannot use write-ahead logging (journal mode stays {mode})");
    }
    let synchronous = match options.fsync {
        Fsync::Normal => "NORMAL",
        Fsync::Always => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    // Deleted lines are overwritten with zeros, not merely unlinked.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A search indexes the lines the full-text index does not hold yet in
    // a temporary table of its own: in memory, never in a file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.execute_batch(TAIL_SCHEMA)?;
    if let Some(max_bytes) = options.max_bytes {
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
        let pages = max_bytes / u64::try_from(page_size.max(1))?;
        conn.pragma_update(None, "max_page_count", i64::try_from(pages.max(1))?)?;
    }
    Ok(())
}

/// Refuses a DIR that is a symlink, not a folder, someone else's, or open
/// to group or others; makes it (0700) if it is missing and `create`.
fn check_or_make_dir(dir: &Path, create: bool) -> Result<()> {
    let meta = match dir.symlink_metadata() {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound && create => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create the history folder {}", dir.display()))?;
            dir.symlink_metadata()
                .with_context(|| format!("cannot read {}", dir.display()))?
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            bail!("no history in {}: the folder does not exist", dir.display())
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", dir.display()));
        }
    };
    let d = dir.display();
    if meta.file_type().is_symlink() {
        bail!(
            "history folder {d} is a symlink: refusing to use it; give the real folder \
             (`--data \"$(readlink -f {d})\"`)"
        );
    }
    if !meta.is_dir() {
        bail!("history folder {d} is not a folder");
    }
    check_owner(dir, &meta, "history folder")?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "history folder {d} has mode {mode:04o}: group or others may reach the \
             history; run `chmod 700 {d}`"
        );
    }
    Ok(())
}

/// Checks the database file; makes it empty with mode 0600 if missing
/// and `create` (an empty file is an empty SQLite database). True if
/// it was made.
fn check_or_make_file(path: &Path, create: bool) -> Result<bool> {
    if check_private_file(path, true)? {
        return Ok(false);
    }
    if !create {
        bail!(
            "no history store in {}: {} does not exist",
            path.parent().unwrap_or(path).display(),
            path.display()
        );
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(true)
}

/// Refuses a database file (or its `-wal`, `-shm`) that is a symlink,
/// not a regular file, someone else's, or readable by group or others.
/// False if it does not exist.
fn check_private_file(path: &Path, is_database: bool) -> Result<bool> {
    match path.symlink_metadata() {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        Ok(_) => {}
    }
    let meta = keyfile::check_not_symlink(path)?;
    let what = if is_database {
        "history database"
    } else {
        "history file"
    };
    check_owner(path, &meta, what)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} {p} has mode {mode:04o}: group or others may read the history; \
             run `chmod 600 {p}`",
            p = path.display()
        );
    }
    Ok(true)
}

fn check_owner(path: &Path, meta: &std::fs::Metadata, what: &str) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{what} {p} belongs to user id {}, not to this user ({me}): refusing to use \
             a history another user controls; run `chown -R {me} {p}` if it is really yours",
            meta.uid(),
            p = path.display()
        );
    }
    Ok(())
}

/// Reads the header as plain bytes, before SQLite touches the file: not a
/// SQLite database, or one from a newer schema, is refused unchanged.
fn check_header(path: &Path) -> Result<()> {
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)
        .and_then(|file| file.take(100).read_to_end(&mut header))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if header.is_empty() {
        return Ok(());
    }
    if header.len() < 100 || !header.starts_with(SQLITE_MAGIC) {
        bail!(
            "{} is not a SQLite database: refusing to use it as the history; it is left \
             as it is: move it aside to start a new history",
            path.display()
        );
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&header[USER_VERSION_OFFSET..USER_VERSION_OFFSET + 4]);
    refuse_newer(path, i64::from(i32::from_be_bytes(version)))
}

fn refuse_newer(path: &Path, version: i64) -> Result<()> {
    if !(0..=SCHEMA_VERSION).contains(&version) {
        bail!(
            "{} holds a history of schema version {version}, which this chatroom (version \
             {SCHEMA_VERSION}) does not know: refusing to change it; run the newer chatroom, \
             or move the file aside to start a new history",
            path.display()
        );
    }
    Ok(())
}

/// Refuses, while only reading, a database that fails `quick_check`, is
/// from a newer schema, or holds something else than a history.
fn check_database(conn: &Connection, path: &Path) -> Result<()> {
    let damaged = |detail: String| {
        anyhow::anyhow!(
            "history database {} is damaged ({detail}): refusing to use it; it is left as \
             it is: move it aside to start a new history, or try `sqlite3 {} .recover`",
            path.display(),
            path.display()
        )
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|err| damaged(err.to_string()))?;
    refuse_newer(path, version)?;
    let verdict = quick_check(conn).map_err(|err| damaged(err.to_string()))?;
    if verdict != ["ok"] {
        let mut detail = verdict.into_iter().take(3).collect::<Vec<_>>().join("; ");
        detail.truncate(300);
        return Err(damaged(crate::protocol::sanitize(&detail).into_owned()));
    }
    if version == 0 {
        let tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
        if tables != 0 {
            bail!(
                "{} is a SQLite database but not a chatroom history (it has no schema \
                 version): refusing to change it; move it aside to start a new history",
                path.display()
            );
        }
    }
    Ok(())
}

fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("PRAGMA quick_check")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    rows.collect()
}
