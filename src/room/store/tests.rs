//! The store on real SQLite files in temporary folders.

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// 2026-01-01T00:00:00Z.
const NEW_YEAR: i64 = 1_767_225_600;

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NEW_YEAR + seconds).expect("in range")
}

fn entry(seq: u64, seconds: i64, kind: Kind, nick: &str, text: &str) -> Entry {
    Entry {
        seq,
        time: at(seconds),
        kind,
        nick: nick.to_owned(),
        text: text.to_owned(),
    }
}

fn creating() -> Options {
    Options {
        create: true,
        ..Options::default()
    }
}

/// A store in a fresh folder `data` under a temporary directory.
fn new_store() -> (tempfile::TempDir, PathBuf, Store) {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("data");
    let store = Store::open(&dir, creating()).expect("open");
    (root, dir, store)
}

/// A morning in the room: joins, messages, an action, a quit with a
/// reason and a plain leave.
fn morning() -> Vec<Entry> {
    vec![
        entry(1, 0, Kind::Join, "alice", ""),
        entry(
            2,
            10,
            Kind::Message,
            "alice",
            "good morning, deploy at noon",
        ),
        entry(3, 20, Kind::Join, "bob", ""),
        entry(4, 30, Kind::Action, "bob", "waves at the deploy"),
        entry(5, 40, Kind::Message, "bob", "the café is \"closed\""),
        entry(6, 50, Kind::Leave, "bob", "deploy time"),
        entry(7, 60, Kind::Leave, "alice", ""),
    ]
}

fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

/// The room's writer and readers take a store into threads of their own.
#[test]
fn a_store_can_move_to_another_thread() {
    fn movable<T: Send + 'static>() {}
    movable::<Store>();
}

#[test]
fn lines_come_back_in_order_after_a_reopen() {
    let (_root, dir, mut store) = new_store();
    assert_eq!(store.last_seq().expect("last"), None);
    store.append(&morning()).expect("append");
    store.append(&[]).expect("an empty batch is nothing");
    drop(store);

    let store = Store::open(&dir, Options::default()).expect("reopen");
    assert_eq!(store.last_seq().expect("last"), Some(7));
    // Messages and actions only, oldest first.
    let recent = store.recent(None, 2).expect("recent");
    assert_eq!(recent, [morning()[3].clone(), morning()[4].clone()]);
    assert_eq!(seqs(&store.recent(Some(5), 10).expect("recent")), [2, 4]);
    assert_eq!(
        seqs(&store.recent(Some(2), 10).expect("recent")),
        [] as [u64; 0]
    );
    let lines: Vec<Bytes> = morning().iter().map(Entry::line).collect();
    assert_eq!(lines[1], "alice: good morning, deploy at noon\n");
    assert_eq!(lines[3], "* bob waves at the deploy\n");
    assert_eq!(lines[5], "bob left! (deploy time)\n");
    assert_eq!(lines[6], "alice left!\n");
    assert_eq!(lines[0], "alice joined!\n");
}

#[test]
fn a_sequence_not_after_the_last_refuses_the_whole_batch() {
    let (_root, _dir, mut store) = new_store();
    store.append(&morning()[..3]).expect("append");
    let err = store
        .append(&[
            entry(4, 0, Kind::Message, "a", "x"),
            entry(3, 0, Kind::Message, "a", "y"),
        ])
        .expect_err("3 is not after 4");
    assert!(
        format!("{err:#}").contains("line 3 is not after line 4"),
        "{err:#}"
    );
    let err = store
        .append(&[entry(3, 0, Kind::Message, "a", "z")])
        .expect_err("3 is stored");
    assert!(
        format!("{err:#}").contains("cannot store lines 3 to 3"),
        "{err:#}"
    );
    // Nothing of the refused batches is stored.
    assert_eq!(store.last_seq().expect("last"), Some(3));
    assert_eq!(seqs(&store.recent(None, 10).expect("recent")), [2]);
    // A sequence beyond SQLite's integers is refused, not wrapped.
    let err = store
        .append(&[entry(u64::MAX, 0, Kind::Message, "a", "x")])
        .expect_err("too large");
    assert!(format!("{err:#}").contains("too large"), "{err:#}");
}

#[test]
fn search_finds_words_newest_first_in_messages_and_actions() {
    let (_root, _dir, mut store) = new_store();
    store.append(&morning()).expect("append");
    // The quit reason (line 6) says "deploy" too, but is not a message.
    assert_eq!(seqs(&store.search("deploy", 20).expect("search")), [4, 2]);
    assert_eq!(seqs(&store.search("deploy", 1).expect("search")), [4]);
    assert_eq!(seqs(&store.search("DEPLOY noon", 20).expect("search")), [2]);
    assert_eq!(seqs(&store.search("cafe", 20).expect("search")), [5]);
    assert_eq!(seqs(&store.search("\"closed\"", 20).expect("search")), [5]);
    assert!(
        store
            .search("nothing-like-it", 20)
            .expect("search")
            .is_empty()
    );
    // Nicknames are not searched.
    assert!(store.search("alice", 20).expect("search").is_empty());
}

#[test]
fn hostile_searches_get_answers_or_a_clean_error() {
    let (_root, _dir, mut store) = new_store();
    store.append(&morning()).expect("append");
    store
        .append(&[entry(
            8,
            70,
            Kind::Message,
            "eve",
            "a:b NEAR(x y) * ') OR 1=1 --",
        )])
        .expect("append");
    let long = "deploy ".repeat(1500);
    let hostile = [
        "\"",
        "\"\"\"",
        "*",
        "deploy*",
        "NEAR(",
        "NEAR(deploy noon)",
        "a:b",
        "text:deploy",
        "') OR 1=1 --",
        "deploy AND OR NOT",
        "^deploy",
        "(deploy",
        "-deploy",
        "{text}: deploy",
        "\0deploy\0",
        "\u{202e}deploy",
        "'",
        ";",
        "lines_fts MATCH 'x'",
    ];
    for words in hostile {
        match store.search(words, 20) {
            Ok(_) | Err(SearchError::NoWords) => {}
            Err(err) => panic!("{words:?}: {err:?}"),
        }
    }
    assert_eq!(seqs(&store.search("deploy*", 20).expect("search")), [4, 2]);
    assert_eq!(seqs(&store.search("a:b", 20).expect("search")), [8]);
    assert_eq!(
        seqs(&store.search("') OR 1=1 --", 20).expect("search")),
        [8]
    );
    assert!(store.search("NEAR(", 20).expect("NEAR is a word").len() == 1);
    assert!(matches!(store.search("\"", 20), Err(SearchError::NoWords)));
    assert!(matches!(store.search("", 20), Err(SearchError::NoWords)));
    assert!(matches!(store.search(&long, 20), Err(SearchError::TooLong)));
    let at_most = "é".repeat(MAX_SEARCH_BYTES / 2);
    assert!(store.search(&at_most, 20).is_ok());
    assert!(matches!(
        store.search(&format!("{at_most}x"), 20),
        Err(SearchError::TooLong)
    ));
    let told = SearchError::TooLong.to_string();
    assert_eq!(told, "search words are longer than 200 bytes");
}

/// Every file in `dir`, read as bytes, holds `needle`.
fn files_hold(dir: &Path, needle: &str) -> Vec<String> {
    let mut holding = Vec::new();
    for file in fs::read_dir(dir).expect("read dir") {
        let path = file.expect("entry").path();
        let bytes = fs::read(&path).expect("read");
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            holding.push(path.display().to_string());
        }
    }
    holding
}

#[test]
fn expired_lines_are_gone_from_answers_and_from_the_files() {
    let (_root, dir, mut store) = new_store();
    let mut lines = vec![
        entry(1, 0, Kind::Message, "alice", "zanzibarquokka secret plans"),
        entry(2, 1, Kind::Action, "alice", "hides the xylophonequince"),
    ];
    // Enough lines for the index and the table to span several pages.
    lines.extend((3..400).map(|seq| entry(seq, 100, Kind::Message, "bob", "keep this walrusline")));
    store.append(&lines).expect("append");
    assert!(store.checkpoint().expect("checkpoint"));
    assert!(
        !files_hold(&dir, "zanzibarquokka").is_empty(),
        "the test can see text"
    );

    assert_eq!(store.expire(at(50)).expect("expire"), 2);
    assert_eq!(store.expire(at(50)).expect("expire again"), 0);
    assert!(
        store
            .search("zanzibarquokka", 20)
            .expect("search")
            .is_empty()
    );
    assert!(
        store
            .search("xylophonequince", 20)
            .expect("search")
            .is_empty()
    );
    assert_eq!(store.recent(None, 1000).expect("recent").len(), 397);
    let mut out = Vec::new();
    store
        .export(None, None, Format::Jsonl, &mut out)
        .expect("export");
    assert!(!String::from_utf8_lossy(&out).contains("zanzibar"));
    assert!(store.checkpoint().expect("checkpoint"));
    for gone in ["zanzibarquokka", "xylophonequince", "secret plans"] {
        assert_eq!(files_hold(&dir, gone), [] as [String; 0], "{gone}");
    }
    assert!(!files_hold(&dir, "walrusline").is_empty());
    // The sequence goes on after its lines expired.
    assert_eq!(store.last_seq().expect("last"), Some(399));
    let stats = store.stats().expect("stats");
    assert_eq!(stats.lines, 397);
    assert_eq!(stats.oldest, Some(at(100)));
    assert_eq!(stats.newest, Some(at(100)));
}

#[test]
fn exports_are_exact_jsonl_and_csv_in_order_within_the_times() {
    let (_root, _dir, mut store) = new_store();
    let mut lines = morning();
    lines.push(Entry {
        time: at(70) + time::Duration::milliseconds(250),
        ..entry(
            8,
            0,
            Kind::Message,
            "eve",
            "a, \\b\u{1b}[31m\u{202e}\u{e0041}",
        )
    });
    store.append(&lines).expect("append");
    let export = |since, until, format| {
        let mut out = Vec::new();
        let n = store
            .export(since, until, format, &mut out)
            .expect("export");
        (n, String::from_utf8(out).expect("UTF-8"))
    };
    let (n, jsonl) = export(Some(at(40)), Some(at(60)), Format::Jsonl);
    assert_eq!(n, 2);
    assert_eq!(
        jsonl,
        "{\"seq\":5,\"time\":\"2026-01-01T00:00:40.000Z\",\"kind\":\"message\",\"nick\":\"bob\",\
         \"text\":\"the café is \\\"closed\\\"\"}\n\
         {\"seq\":6,\"time\":\"2026-01-01T00:00:50.000Z\",\"kind\":\"leave\",\"nick\":\"bob\",\
         \"text\":\"deploy time\"}\n"
    );
    let (n, jsonl) = export(Some(at(70)), None, Format::Jsonl);
    assert_eq!(n, 1);
    assert_eq!(
        jsonl,
        "{\"seq\":8,\"time\":\"2026-01-01T00:01:10.250Z\",\"kind\":\"message\",\"nick\":\"eve\",\
         \"text\":\"a, \\\\b\\u001b[31m\\u202e\\udb40\\udc41\"}\n"
    );
    let parsed: serde_json::Value = serde_json::from_str(jsonl.trim()).expect("JSON");
    assert_eq!(parsed["text"], lines[7].text.as_str());
    let (n, csv) = export(None, Some(at(20)), Format::Csv);
    assert_eq!(n, 2);
    assert_eq!(
        csv,
        "seq,time,kind,nick,text\r\n\
         1,2026-01-01T00:00:00.000Z,join,alice,\r\n\
         2,2026-01-01T00:00:10.000Z,message,alice,\"good morning, deploy at noon\"\r\n"
    );
    let (_, csv) = export(Some(at(40)), None, Format::Csv);
    assert!(
        csv.contains(
            "\r\n5,2026-01-01T00:00:40.000Z,message,bob,\"the café is \"\"closed\"\"\"\r\n"
        )
    );
    assert!(
        csv.ends_with("\r\n8,2026-01-01T00:01:10.250Z,message,eve,\"a, \\b[31m\"\r\n"),
        "{csv}"
    );
    let (n, all) = export(None, None, Format::Jsonl);
    assert_eq!((n, all.lines().count()), (8, 8));
}

#[test]
fn an_export_reads_one_snapshot_while_another_connection_writes() {
    let (_root, _dir, mut store) = new_store();
    store.append(&morning()).expect("append");
    let mut writer = store.try_clone().expect("clone");
    let reader = store.try_clone().expect("clone");
    // A write transaction is open (not committed) while the export runs.
    let tx = writer
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("begin");
    tx.execute(
        "INSERT INTO lines (seq, time, kind, nick, text) VALUES (8, 0, 0, 'x', 'uncommitted')",
        [],
    )
    .expect("insert");
    let mut out = Vec::new();
    assert_eq!(
        reader
            .export(None, None, Format::Csv, &mut out)
            .expect("export"),
        7
    );
    assert!(!String::from_utf8_lossy(&out).contains("uncommitted"));
    tx.commit().expect("commit");
    assert_eq!(
        reader
            .export(None, None, Format::Csv, &mut Vec::new())
            .expect("export"),
        8
    );
    drop(writer);
    store
        .append(&[entry(9, 0, Kind::Message, "x", "y")])
        .expect("append");
}

#[test]
fn stats_count_lines_bytes_and_times() {
    let (_root, _dir, mut store) = new_store();
    let empty = store.stats().expect("stats");
    assert_eq!(
        (empty.lines, empty.oldest, empty.newest, empty.last_seq),
        (0, None, None, None)
    );
    store.append(&morning()).expect("append");
    let stats = store.stats().expect("stats");
    assert_eq!(stats.lines, 7);
    assert_eq!(stats.oldest, Some(at(0)));
    assert_eq!(stats.newest, Some(at(60)));
    assert_eq!(stats.last_seq, Some(7));
    let on_disk: u64 = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| open::sibling(store.path(), s).metadata().ok())
        .map(|m| m.len())
        .sum();
    assert_eq!(stats.bytes, on_disk);
    assert!(stats.bytes > 0);
}

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
