//! The store on real SQLite files in temporary folders: lines, export
//! and stats here; the full-text index and retention in `search`; the
//! files, their checks and upgrades in `files`.

use super::*;
use crate::protocol::channels::LOBBY;
use bytes::Bytes;
use std::fs;
use std::os::unix::fs::PermissionsExt;

mod files;
mod search;

/// 2026-01-01T00:00:00Z.
const NEW_YEAR: i64 = 1_767_225_600;

pub(super) fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NEW_YEAR + seconds).expect("in range")
}

pub(super) fn entry(seq: u64, seconds: i64, kind: Kind, nick: &str, text: &str) -> Entry {
    Entry::new(seq, at(seconds), kind, nick, text)
}

pub(super) fn creating() -> Options {
    Options {
        create: true,
        ..Options::default()
    }
}

/// A store in a fresh folder `data` under a temporary directory.
pub(super) fn new_store() -> (tempfile::TempDir, PathBuf, Store) {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("data");
    let store = Store::open(&dir, creating()).expect("open");
    (root, dir, store)
}

/// A morning in the room: joins, messages, an action, a quit with a
/// reason and a plain leave.
pub(super) fn morning() -> Vec<Entry> {
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

pub(super) fn seqs(entries: &[Entry]) -> Vec<u64> {
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
    let recent = store.recent(LOBBY, None, 2).expect("recent");
    assert_eq!(recent, [morning()[3].clone(), morning()[4].clone()]);
    assert_eq!(
        seqs(&store.recent(LOBBY, Some(5), 10).expect("recent")),
        [2, 4]
    );
    assert_eq!(
        seqs(&store.recent(LOBBY, Some(2), 10).expect("recent")),
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
    assert_eq!(seqs(&store.recent(LOBBY, None, 10).expect("recent")), [2]);
    // A sequence beyond SQLite's integers is refused, not wrapped.
    let err = store
        .append(&[entry(u64::MAX, 0, Kind::Message, "a", "x")])
        .expect_err("too large");
    assert!(format!("{err:#}").contains("too large"), "{err:#}");
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
            .export(since, until, None, format, &mut out)
            .expect("export");
        (n, String::from_utf8(out).expect("UTF-8"))
    };
    let (n, jsonl) = export(Some(at(40)), Some(at(60)), Format::Jsonl);
    assert_eq!(n, 2);
    assert_eq!(
        jsonl,
        "{\"seq\":5,\"time\":\"2026-01-01T00:00:40.000Z\",\"kind\":\"message\",\"nick\":\"bob\",\
         \"text\":\"the café is \\\"closed\\\"\",\"channel\":\"#lobby\"}\n\
         {\"seq\":6,\"time\":\"2026-01-01T00:00:50.000Z\",\"kind\":\"leave\",\"nick\":\"bob\",\
         \"text\":\"deploy time\",\"channel\":\"#lobby\"}\n"
    );
    let (n, jsonl) = export(Some(at(70)), None, Format::Jsonl);
    assert_eq!(n, 1);
    assert_eq!(
        jsonl,
        "{\"seq\":8,\"time\":\"2026-01-01T00:01:10.250Z\",\"kind\":\"message\",\"nick\":\"eve\",\
         \"text\":\"a, \\\\b\\u001b[31m\\u202e\\udb40\\udc41\",\"channel\":\"#lobby\"}\n"
    );
    let parsed: serde_json::Value = serde_json::from_str(jsonl.trim()).expect("JSON");
    assert_eq!(parsed["text"], lines[7].text.as_str());
    let (n, csv) = export(None, Some(at(20)), Format::Csv);
    assert_eq!(n, 2);
    assert_eq!(
        csv,
        "seq,time,kind,nick,text,channel,action,whom\r\n\
         1,2026-01-01T00:00:00.000Z,join,alice,,#lobby,,\r\n\
         2,2026-01-01T00:00:10.000Z,message,alice,\"good morning, deploy at noon\",#lobby,,\r\n"
    );
    let (_, csv) = export(Some(at(40)), None, Format::Csv);
    assert!(csv.contains(
        "\r\n5,2026-01-01T00:00:40.000Z,message,bob,\"the café is \"\"closed\"\"\",#lobby,,\r\n"
    ));
    assert!(
        csv.ends_with("\r\n8,2026-01-01T00:01:10.250Z,message,eve,\"a, \\b[31m\",#lobby,,\r\n"),
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
            .export(None, None, None, Format::Csv, &mut out)
            .expect("export"),
        7
    );
    assert!(!String::from_utf8_lossy(&out).contains("uncommitted"));
    tx.commit().expect("commit");
    assert_eq!(
        reader
            .export(None, None, None, Format::Csv, &mut Vec::new())
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
