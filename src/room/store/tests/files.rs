//! The store's files: modes, refusals before anything is changed, a full
//! disk, and the upgrade of an older store.

use super::search::{assert_index_sound, assert_morning_found};
use super::*;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_folder_is_0700_and_every_file_0600_with_the_synchronous_mode_asked() {
    let (_root, dir, mut store) = new_store();
    store.append(&morning()).expect("append");
    assert_eq!(mode(&dir), 0o700);
    let names: Vec<_> = fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    assert!(
        names.contains(&"history.sqlite3-wal".to_owned()),
        "{names:?}"
    );
    for name in names {
        assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
    }
    let synchronous = |store: &Store| -> i64 {
        store
            .conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .expect("pragma")
    };
    assert_eq!(synchronous(&store), 1, "NORMAL");
    let full = Store::open(
        &dir,
        Options {
            fsync: Fsync::Always,
            ..Options::default()
        },
    )
    .expect("open");
    assert_eq!(synchronous(&full), 2, "FULL");
    assert_eq!(synchronous(&full.try_clone().expect("clone")), 2);
}

/// The names and contents of every file under `dir`.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let bytes = if path.is_file() {
                fs::read(&path).expect("read")
            } else {
                Vec::new()
            };
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Opening `dir` is refused with `expected` in the message, and changes
/// nothing in `watched`.
fn refused(dir: &Path, watched: &Path, expected: &str) {
    let before = snapshot(watched);
    let err = Store::open(dir, creating()).expect_err("refused");
    assert!(format!("{err:#}").contains(expected), "{err:#}");
    assert_eq!(snapshot(watched), before, "nothing changed");
}

#[test]
fn symlinked_foreign_and_open_folders_and_files_are_refused_with_the_fix() {
    let root = tempfile::tempdir().expect("temp");
    let real = root.path().join("real");
    drop(Store::open(&real, creating()).expect("open"));
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    refused(&link, root.path(), "is a symlink");

    fs::set_permissions(&real, fs::Permissions::from_mode(0o750)).expect("chmod");
    refused(&real, &real, "run `chmod 700");
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).expect("chmod");

    let database = real.join("history.sqlite3");
    fs::set_permissions(&database, fs::Permissions::from_mode(0o644)).expect("chmod");
    refused(&real, &real, "run `chmod 600");
    fs::set_permissions(&database, fs::Permissions::from_mode(0o600)).expect("chmod");

    let elsewhere = root.path().join("elsewhere.sqlite3");
    fs::rename(&database, &elsewhere).expect("move");
    std::os::unix::fs::symlink(&elsewhere, &database).expect("symlink");
    refused(&real, &real, "is a symlink");
    fs::remove_file(&database).expect("unlink");
    fs::rename(&elsewhere, &database).expect("move back");
    Store::open(&real, creating()).expect("fine again");

    // SQLite's own files beside it are held to the same rules.
    let wal = real.join("history.sqlite3-wal");
    std::os::unix::fs::symlink(&elsewhere, &wal).expect("symlink");
    refused(&real, &real, "is a symlink");
    fs::remove_file(&wal).expect("unlink");
    fs::write(&wal, b"").expect("write");
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o604)).expect("chmod");
    refused(&real, &real, "history file");
    fs::remove_file(&wal).expect("unlink");

    // A folder another user owns: as root, give it away; otherwise `/`
    // is root's.
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(&real, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        refused(&real, &real, "belongs to user id 65534");
    } else {
        let err = Store::open(Path::new("/"), Options::default()).expect_err("refused");
        assert!(
            format!("{err:#}").contains("belongs to user id 0"),
            "{err:#}"
        );
    }

    let missing = root.path().join("missing");
    let err = Store::open(&missing, Options::default()).expect_err("not created");
    assert!(format!("{err:#}").contains("no history in"), "{err:#}");
    assert!(!missing.exists());
}

#[test]
fn a_file_that_is_not_a_database_or_damaged_or_newer_is_refused_unchanged() {
    let root = tempfile::tempdir().expect("temp");
    let dir = root.path().join("data");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let database = dir.join("history.sqlite3");
    let not_sqlite: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&database, &not_sqlite).expect("write");
    fs::set_permissions(&database, fs::Permissions::from_mode(0o600)).expect("chmod");
    refused(&dir, &dir, "is not a SQLite database");

    fs::remove_file(&database).expect("rm");
    let mut store = Store::open(&dir, creating()).expect("open");
    let lines: Vec<Entry> = (1..300)
        .map(|seq| entry(seq, 0, Kind::Message, "bob", "some words to fill pages"))
        .collect();
    store.append(&lines).expect("append");
    let root_page: i64 = store
        .conn
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'lines'",
            [],
            |r| r.get(0),
        )
        .expect("root page");
    let page_size: i64 = store
        .conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .expect("page size");
    drop(store);
    let good = fs::read(&database).expect("read");

    // A newer schema version, in the header.
    let mut newer = good.clone();
    newer[60..64].copy_from_slice(&7i32.to_be_bytes());
    fs::write(&database, &newer).expect("write");
    refused(&dir, &dir, "schema version 7");

    // A damaged table: its root page overwritten.
    let mut damaged = good.clone();
    let start = usize::try_from((root_page - 1) * page_size).expect("offset");
    damaged[start..start + 64].fill(0x5a);
    fs::write(&database, &damaged).expect("write");
    refused(&dir, &dir, "is damaged");

    fs::write(&database, &good).expect("write");
    Store::open(&dir, Options::default()).expect("the good one opens");

    // Someone else's SQLite database, without a schema version.
    fs::remove_file(&database).expect("rm");
    let other = Connection::open(&database).expect("sqlite");
    other
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .expect("table");
    drop(other);
    fs::set_permissions(&database, fs::Permissions::from_mode(0o600)).expect("chmod");
    refused(&dir, &dir, "not a chatroom history");
}

#[test]
fn a_full_disk_refuses_the_batch_and_the_store_recovers_when_space_is_back() {
    // SQLite's `max_page_count` (Options::max_bytes) makes an insert beyond
    // it fail with SQLITE_FULL, the very error of a full disk.
    let root = tempfile::tempdir().expect("temp");
    let dir = root.path().join("data");
    let capped = Options {
        create: true,
        max_bytes: Some(256 * 1024),
        ..Options::default()
    };
    let mut store = Store::open(&dir, capped).expect("open");
    let text = "filler ".repeat(500);
    let mut seq = 0;
    let (err, refused) = loop {
        let batch: Vec<Entry> = (1..=10)
            .map(|i| entry(seq + i, 0, Kind::Message, "bob", &text))
            .collect();
        match store.append(&batch) {
            Ok(()) => seq += 10,
            Err(err) => break (err, batch),
        }
        assert!(seq < 10_000, "the cap never bit");
    };
    assert!(format!("{err:#}").contains("full"), "{err:#}");
    assert!(format!("{err:#}").contains(&format!("cannot store lines {}", seq + 1)));
    assert_eq!(store.last_seq().expect("last"), Some(seq), "all or nothing");
    assert!(store.append(&refused).is_err(), "still full");

    // Space is back.
    store
        .conn
        .pragma_update(None, "max_page_count", 1_000_000)
        .expect("raise the cap");
    store.append(&refused).expect("the next append works");
    assert_eq!(store.last_seq().expect("last"), Some(seq + 10));
    assert_eq!(store.search("filler", 1).expect("search")[0].seq, seq + 10);
    drop(store);
    Store::open(&dir, Options::default()).expect("and the database is whole");
}

/// The first version's schema, as its stores were made: the full-text
/// index was filled by a trigger at every insert.
const SCHEMA_1: &str = "
CREATE TABLE lines (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    kind INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 3),
    nick TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX lines_by_time ON lines (time);
CREATE TABLE state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER
);
INSERT INTO state (id, last_seq) VALUES (1, NULL);
CREATE VIRTUAL TABLE lines_fts USING fts5(
    text,
    content = 'lines',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO lines_fts (lines_fts, rank) VALUES ('secure-delete', 1);
INSERT INTO lines_fts (lines_fts, rank) VALUES ('automerge', 16);
CREATE TRIGGER lines_indexed AFTER INSERT ON lines WHEN new.kind IN (0, 1) BEGIN
    INSERT INTO lines_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER lines_unindexed AFTER DELETE ON lines WHEN old.kind IN (0, 1) BEGIN
    INSERT INTO lines_fts (lines_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
CREATE TRIGGER lines_unchanged BEFORE UPDATE ON lines BEGIN
    SELECT RAISE(ABORT, 'stored lines are never changed');
END;
PRAGMA user_version = 1;
";

#[test]
fn a_store_of_the_first_version_is_upgraded_and_keeps_every_line() {
    let root = tempfile::tempdir().expect("temp");
    let dir = root.path().join("data");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let database = dir.join("history.sqlite3");
    let old = Connection::open(&database).expect("sqlite");
    old.execute_batch(SCHEMA_1).expect("version 1");
    for line in morning() {
        old.execute(
            "INSERT INTO lines (seq, time, kind, nick, text) VALUES (?1, ?2, ?3, ?4, ?5)",
            (
                i64::try_from(line.seq).expect("seq"),
                millis(line.time).expect("time"),
                line.kind.code(),
                &line.nick,
                &line.text,
            ),
        )
        .expect("insert");
    }
    old.execute("UPDATE state SET last_seq = 7", [])
        .expect("state");
    drop(old);
    fs::set_permissions(&database, fs::Permissions::from_mode(0o600)).expect("chmod");

    let mut store = Store::open(&dir, creating()).expect("upgraded");
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
    assert_index_sound(&store);
    assert_eq!(
        store.index(1).expect("index"),
        0,
        "version 1 indexed it all"
    );
    assert_morning_found(&store);
    store
        .append(&[entry(8, 70, Kind::Message, "carol", "deploy went fine")])
        .expect("append");
    assert_eq!(
        seqs(&store.search("deploy", 20).expect("search")),
        [8, 4, 2]
    );
    assert_eq!(store.index(1).expect("index"), 1);
    assert_eq!(store.expire(at(35)).expect("expire"), 4);
    assert_index_sound(&store);
    assert_eq!(seqs(&store.search("deploy", 20).expect("search")), [8]);
    drop(store);
    Store::open(&dir, Options::default()).expect("opens again as it is");
}

/// The second version's schema, as its stores were made: one room, the
/// full-text index filled in bulk up to `state.indexed_seq`.
const SCHEMA_2: &str = "
CREATE TABLE lines (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    kind INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 3),
    nick TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX lines_by_time ON lines (time);
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
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO lines_fts (lines_fts, rank) VALUES ('secure-delete', 1);
INSERT INTO lines_fts (lines_fts, rank) VALUES ('automerge', 16);
CREATE TRIGGER lines_unchanged BEFORE UPDATE ON lines BEGIN
    SELECT RAISE(ABORT, 'stored lines are never changed');
END;
CREATE TRIGGER lines_unindexed AFTER DELETE ON lines
WHEN old.kind IN (0, 1) AND old.seq <= (SELECT indexed_seq FROM state) BEGIN
    INSERT INTO lines_fts (lines_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
PRAGMA user_version = 2;
";

/// A store of `schema` in `DIR`, holding the morning, made as its version
/// made it (then `then`); returns its folder and DIR.
fn old_store(schema: &str, then: &str) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("temp");
    let dir = root.path().join("data");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let database = dir.join("history.sqlite3");
    let old = Connection::open(&database).expect("sqlite");
    old.execute_batch(schema).expect("the old schema");
    for line in morning() {
        old.execute(
            "INSERT INTO lines (seq, time, kind, nick, text) VALUES (?1, ?2, ?3, ?4, ?5)",
            (
                i64::try_from(line.seq).expect("seq"),
                millis(line.time).expect("time"),
                line.kind.code(),
                &line.nick,
                &line.text,
            ),
        )
        .expect("insert");
    }
    old.execute_batch(then).expect("state");
    drop(old);
    fs::set_permissions(&database, fs::Permissions::from_mode(0o600)).expect("chmod");
    (root, dir)
}

#[test]
fn a_store_of_the_second_version_is_upgraded_and_keeps_every_line_in_the_lobby() {
    // The index holds the first four lines; 5 to 7 wait for it.
    let (_root, dir) = old_store(
        SCHEMA_2,
        "INSERT INTO lines_fts (rowid, text) SELECT seq, text FROM lines \
         WHERE seq <= 4 AND kind IN (0, 1); \
         UPDATE state SET last_seq = 7, indexed_seq = 4;",
    );
    let mut store = Store::open(&dir, creating()).expect("upgraded");
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
    // Every line, as it was, in #lobby; the index where it was.
    let mut out = Vec::new();
    store
        .export(None, None, None, Format::Jsonl, &mut out)
        .expect("export");
    let exported: Vec<serde_json::Value> = String::from_utf8(out)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(exported.len(), morning().len());
    for (line, stored) in morning().iter().zip(&exported) {
        assert_eq!(stored["seq"], line.seq);
        assert_eq!(stored["kind"], line.kind.as_str());
        assert_eq!(stored["nick"], line.nick.as_str());
        assert_eq!(stored["text"], line.text.as_str());
        assert_eq!(stored["channel"], LOBBY);
    }
    assert_index_sound(&store);
    assert_morning_found(&store);
    assert_eq!(
        store.index(1).expect("index"),
        3,
        "the tail is indexed next"
    );
    assert_index_sound(&store);
    assert_morning_found(&store);
    assert_eq!(
        seqs(&store.recent(LOBBY, None, 10).expect("recent")),
        [2, 4, 5]
    );
    // The upgraded store takes lines of channels and operators' actions.
    let kick = Entry {
        channel: "#ops".to_owned(),
        whom: "mallory".to_owned(),
        ..entry(8, 70, Kind::Moderation(Action::Kick), "olga", "spam")
    };
    store.append(std::slice::from_ref(&kick)).expect("append");
    let mut out = Vec::new();
    store
        .export(None, None, Some("#0ps"), Format::Jsonl, &mut out)
        .expect("export");
    assert!(String::from_utf8_lossy(&out).contains("\"action\":\"kick\",\"whom\":\"mallory\""));
    assert_eq!(kick.line(), "#ops mallory was kicked by olga (spam)\n");
    assert_eq!(store.expire(at(35)).expect("expire"), 4);
    assert_index_sound(&store);
    drop(store);
    let again = Store::open(&dir, Options::default()).expect("opens again as it is");
    assert_eq!(again.stats().expect("stats").lines, 4);
}
