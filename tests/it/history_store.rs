//! `chatroom history export/search/stats`, the built binary, against a
//! store on disk that the test fills through the library.

use crate::harness::{BIN, WAIT};
use chatroom::room::store::{Action, Entry, Kind, Options, Store};
use std::path::{Path, PathBuf};
use std::process::Output;
use time::OffsetDateTime;
use tokio::process::Command;

/// 2026-01-01T00:00:00Z.
const NEW_YEAR: i64 = 1_767_225_600;

fn entry(seq: u64, seconds: i64, kind: Kind, nick: &str, text: &str) -> Entry {
    let time = OffsetDateTime::from_unix_timestamp(NEW_YEAR + seconds).expect("time");
    Entry::new(seq, time, kind, nick, text)
}

/// A store in a fresh folder, holding a morning in the room.
fn filled() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("temp");
    let dir = root.path().join("data");
    let options = Options {
        create: true,
        ..Options::default()
    };
    let mut store = Store::open(&dir, options).expect("open");
    store
        .append(&[
            entry(1, 0, Kind::Join, "alice", ""),
            entry(2, 61, Kind::Message, "alice", "deploy at noon, ok?"),
            entry(3, 3600, Kind::Action, "bob", "starts the \"deploy\""),
            entry(
                4,
                3660,
                Kind::Message,
                "eve",
                "deploy \u{1b}[31mred\u{202e}",
            ),
            entry(5, 7200, Kind::Leave, "bob", "lunch"),
        ])
        .expect("append");
    (root, dir)
}

async fn history(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.arg("history").args(args).arg("--data").arg(dir);
    tokio::time::timeout(WAIT, command.output())
        .await
        .expect("finishes in time")
        .expect("runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

#[tokio::test]
async fn export_writes_exact_jsonl_and_csv_in_order_between_the_times() {
    let (_root, dir) = filled();
    let jsonl = stdout(&history(&dir, &["export"]).await);
    assert_eq!(
        jsonl,
        concat!(
            r##"{"seq":1,"time":"2026-01-01T00:00:00.000Z","kind":"join","nick":"alice","text":"","channel":"#lobby"}"##,
            "\n",
            r##"{"seq":2,"time":"2026-01-01T00:01:01.000Z","kind":"message","nick":"alice","text":"deploy at noon, ok?","channel":"#lobby"}"##,
            "\n",
            r##"{"seq":3,"time":"2026-01-01T01:00:00.000Z","kind":"action","nick":"bob","text":"starts the \"deploy\"","channel":"#lobby"}"##,
            "\n",
            r##"{"seq":4,"time":"2026-01-01T01:01:00.000Z","kind":"message","nick":"eve","text":"deploy \u001b[31mred\u202e","channel":"#lobby"}"##,
            "\n",
            r##"{"seq":5,"time":"2026-01-01T02:00:00.000Z","kind":"leave","nick":"bob","text":"lunch","channel":"#lobby"}"##,
            "\n",
        )
    );
    let csv = stdout(
        &history(
            &dir,
            &[
                "export",
                "--format",
                "csv",
                "--since",
                "2026-01-01T00:01:01Z",
                "--until",
                "2026-01-01T03:01:00+02:00",
            ],
        )
        .await,
    );
    assert_eq!(
        csv,
        "seq,time,kind,nick,text,channel,action,whom\r\n\
         2,2026-01-01T00:01:01.000Z,message,alice,\"deploy at noon, ok?\",#lobby,,\r\n\
         3,2026-01-01T01:00:00.000Z,action,bob,\"starts the \"\"deploy\"\"\",#lobby,,\r\n"
    );
    let later = stdout(&history(&dir, &["export", "--since", "2026-01-02"]).await);
    assert_eq!(later, "");
    let whole_day = stdout(&history(&dir, &["export", "--until", "2026-01-02"]).await);
    assert_eq!(whole_day.lines().count(), 5);
    let backwards = history(
        &dir,
        &["export", "--since", "2026-01-02", "--until", "2026-01-01"],
    )
    .await;
    assert!(!backwards.status.success());
    assert!(String::from_utf8_lossy(&backwards.stderr).contains("--since must be before --until"));
}

#[tokio::test]
async fn search_prints_the_lines_as_shown_newest_first_then_how_many() {
    let (_root, dir) = filled();
    let found = stdout(&history(&dir, &["search", "deploy"]).await);
    assert_eq!(
        found,
        "[search] 2026-01-01 01:01 eve: deploy [31mred\n\
         [search] 2026-01-01 01:00 * bob starts the \"deploy\"\n\
         [search] 2026-01-01 00:01 alice: deploy at noon, ok?\n\
         [search] 3 matches\n"
    );
    let one = stdout(&history(&dir, &["search", "NOON", "deploy"]).await);
    assert_eq!(
        one,
        "[search] 2026-01-01 00:01 alice: deploy at noon, ok?\n[search] 1 match\n"
    );
    let none = stdout(&history(&dir, &["search", "lunch"]).await);
    assert_eq!(
        none, "[search] no matches\n",
        "a quit reason is not a message"
    );

    for hostile in ["NEAR(", "a:b", "') OR 1=1 --", "deploy*", "\"deploy"] {
        let out = stdout(&history(&dir, &["search", hostile]).await);
        assert!(
            out.ends_with("matches\n") || out.ends_with("match\n"),
            "{hostile}: {out}"
        );
    }
    let long = "deploy ".repeat(1500);
    for (words, told) in [
        ("\"", "error: give at least one word to search for\n"),
        ("*", "error: give at least one word to search for\n"),
        (
            long.as_str(),
            "error: search words are longer than 200 bytes\n",
        ),
    ] {
        let out = history(&dir, &["search", words]).await;
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr), told);
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn stats_reports_lines_bytes_and_times_and_nothing_is_made_where_there_is_no_store() {
    let (root, dir) = filled();
    let out = stdout(&history(&dir, &["stats"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], "lines: 5");
    let bytes: u64 = lines[1]
        .strip_prefix("bytes: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(bytes >= 4096, "{out}");
    assert_eq!(lines[2], "oldest: 2026-01-01T00:00:00.000Z");
    assert_eq!(lines[3], "newest: 2026-01-01T02:00:00.000Z");

    let missing = root.path().join("missing");
    for command in ["stats", "export", "search"] {
        let mut args = vec![command];
        if command == "search" {
            args.push("x");
        }
        let out = history(&missing, &args).await;
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no history in"));
    }
    assert!(!missing.exists(), "no store is made by reading");
}

#[tokio::test]
async fn export_works_while_another_connection_holds_a_write_transaction() {
    let (_root, dir) = filled();
    let writer = rusqlite::Connection::open(dir.join("history.sqlite3")).expect("open");
    writer
        .execute_batch(
            "BEGIN IMMEDIATE; \
             INSERT INTO lines (seq, time, kind, nick, text) \
             VALUES (6, 1767240000000, 0, 'mallory', 'not committed yet');",
        )
        .expect("a write transaction");
    let during = stdout(&history(&dir, &["export", "--format", "csv"]).await);
    assert_eq!(
        during.lines().count(),
        6,
        "the header and five lines: {during}"
    );
    assert!(!during.contains("not committed"));
    let found = stdout(&history(&dir, &["search", "committed"]).await);
    assert_eq!(found, "[search] no matches\n");

    writer.execute_batch("COMMIT").expect("commit");
    let after = stdout(&history(&dir, &["export"]).await);
    assert_eq!(after.lines().count(), 6);
    assert!(after.ends_with(
        "{\"seq\":6,\"time\":\"2026-01-01T04:00:00.000Z\",\"kind\":\"message\",\"nick\":\"mallory\",\
         \"text\":\"not committed yet\",\"channel\":\"#lobby\"}\n"
    ));
}

/// Lines of `#lobby` and two channels (the first spelled `#ops`, then a
/// lookalike), and an operator's actions among them.
fn with_channels() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("temp");
    let dir = root.path().join("data");
    let options = Options {
        create: true,
        ..Options::default()
    };
    let mut store = Store::open(&dir, options).expect("open");
    let in_channel = |channel: &str, entry: Entry| Entry {
        channel: channel.to_owned(),
        ..entry
    };
    let moderation = |seq, channel: &str, action, whom: &str, text: &str| Entry {
        whom: whom.to_owned(),
        ..in_channel(
            channel,
            entry(seq, 100, Kind::Moderation(action), "olga", text),
        )
    };
    store
        .append(&[
            entry(1, 0, Kind::Message, "alice", "deploy in the lobby"),
            in_channel("#ops", entry(2, 10, Kind::Message, "bob", "deploy in ops")),
            in_channel(
                "#dev",
                entry(3, 20, Kind::Message, "carol", "deploy in dev"),
            ),
            in_channel("#0ps", entry(4, 30, Kind::Action, "bob", "deploys")),
            moderation(5, "#ops", Action::Kick, "mallory", "spam, again"),
            moderation(6, "#lobby", Action::Mute, "eve", "10m"),
            moderation(7, "#dev", Action::Topic, "", "release \"2.0\""),
        ])
        .expect("append");
    (root, dir)
}

#[tokio::test]
async fn export_says_each_lines_channel_filters_by_folded_name_and_shows_moderation() {
    let (_root, dir) = with_channels();
    let all = stdout(&history(&dir, &["export"]).await);
    let parsed: Vec<serde_json::Value> = all
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    let channels: Vec<&str> = parsed
        .iter()
        .map(|v| v["channel"].as_str().expect("a channel on every line"))
        .collect();
    // A channel is named as first stored: `#0ps` is `#ops`.
    assert_eq!(
        channels,
        ["#lobby", "#ops", "#dev", "#ops", "#ops", "#lobby", "#dev"]
    );
    assert_eq!(
        all.lines().nth(4),
        Some(
            r##"{"seq":5,"time":"2026-01-01T00:01:40.000Z","kind":"moderation","nick":"olga","text":"spam, again","channel":"#ops","action":"kick","whom":"mallory"}"##
        )
    );
    assert_eq!(
        parsed[0].get("action"),
        None,
        "only an operator's action has one"
    );

    let ops = stdout(&history(&dir, &["export", "--channel", "#0ps"]).await);
    let seqs: Vec<u64> = ops
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("JSON")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [2, 4, 5]);
    let lobby = stdout(&history(&dir, &["export", "--channel", "#l0bby", "--format", "csv"]).await);
    assert_eq!(
        lobby,
        "seq,time,kind,nick,text,channel,action,whom\r\n\
         1,2026-01-01T00:00:00.000Z,message,alice,deploy in the lobby,#lobby,,\r\n\
         6,2026-01-01T00:01:40.000Z,moderation,olga,10m,#lobby,mute,eve\r\n"
    );
    let dev = stdout(&history(&dir, &["export", "--channel", "#dev", "--format", "csv"]).await);
    assert!(
        dev.ends_with(
            "7,2026-01-01T00:01:40.000Z,moderation,olga,\"release \"\"2.0\"\"\",#dev,topic,\r\n"
        ),
        "{dev}"
    );
    let nothing = stdout(&history(&dir, &["export", "--channel", "#nowhere"]).await);
    assert_eq!(nothing, "");
    let bad = history(&dir, &["export", "--channel", "ops"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("channel name must be #"));

    // A search finds messages and actions of one channel, or of all.
    let found = stdout(&history(&dir, &["search", "--channel", "#0ps", "deploy"]).await);
    assert_eq!(
        found,
        "[search] 2026-01-01 00:00 #ops bob: deploy in ops\n[search] 1 match\n"
    );
    let everywhere = stdout(&history(&dir, &["search", "deploy"]).await);
    assert!(everywhere.ends_with("[search] 3 matches\n"), "{everywhere}");
    let spam = stdout(&history(&dir, &["search", "spam"]).await);
    assert_eq!(
        spam, "[search] no matches\n",
        "an operator's reason is not searched"
    );
}
