//! Search, the full-text index kept apart from the commits, and
//! retention.

use super::*;

/// Fails unless the full-text index is sound (FTS5's own
/// `integrity-check`) and holds exactly the messages and actions up to
/// `state.indexed_seq`: no more (a line deleted or never indexed) and no
/// fewer.
pub(super) fn assert_index_sound(store: &Store) {
    let conn = &store.conn;
    conn.execute(
        "INSERT INTO lines_fts (lines_fts) VALUES ('integrity-check')",
        [],
    )
    .expect("the full-text index is sound");
    conn.execute_batch(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.words USING fts5vocab(main, lines_fts, instance)",
    )
    .expect("vocabulary");
    let column = |sql: &str| -> Vec<i64> {
        let mut statement = conn.prepare(sql).expect("prepare");
        let rows = statement.query_map([], |r| r.get(0)).expect("query");
        rows.collect::<rusqlite::Result<_>>().expect("rows")
    };
    let held = column("SELECT DISTINCT doc FROM temp.words ORDER BY doc");
    let expected = column(
        "SELECT seq FROM lines WHERE kind IN (0, 1) \
         AND seq <= coalesce((SELECT indexed_seq FROM state), -1) ORDER BY seq",
    );
    assert_eq!(held, expected, "the index holds what it covers");
}

/// The morning's searches, whatever part of it the index holds.
pub(super) fn assert_morning_found(store: &Store) {
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
fn search_finds_words_newest_first_in_messages_and_actions() {
    let (_root, _dir, mut store) = new_store();
    let morning = morning();
    store.append(&morning[..3]).expect("append");
    // Nothing indexed yet: the search indexes the lines itself.
    assert_eq!(seqs(&store.search("deploy", 20).expect("search")), [2]);
    assert_eq!(store.index(4).expect("index"), 0, "fewer than asked");
    assert_eq!(store.index(1).expect("index"), 3);
    store.append(&morning[3..]).expect("append");
    // Half of the morning in the index, half past it.
    assert_morning_found(&store);
    assert_eq!(store.index(1).expect("index"), 4);
    assert_eq!(store.index(1).expect("index"), 0, "nothing left");
    assert_morning_found(&store);
    assert_index_sound(&store);
    // A search's own index is gone with its transaction.
    let tail: i64 = store
        .conn
        .query_row("SELECT count(*) FROM temp.lines_tail", [], |r| r.get(0))
        .expect("count");
    assert_eq!(tail, 0);
}

#[test]
fn lines_indexed_in_bulk_are_all_found_and_the_index_stays_sound() {
    let (_root, _dir, mut store) = new_store();
    let mut covered = 0;
    for batch in 0..250u64 {
        let lines: Vec<Entry> = (1..=10)
            .map(|i| {
                let seq = batch * 10 + i;
                entry(
                    seq,
                    0,
                    Kind::Message,
                    "bob",
                    &format!("line w{seq} of the flood"),
                )
            })
            .collect();
        store.append(&lines).expect("append");
        let now = store.index(upkeep::INDEX_BATCH).expect("index");
        assert!(now == 0 || now >= upkeep::INDEX_BATCH, "indexed {now}");
        covered += now;
    }
    assert_eq!(covered, 2000, "two bulks of a thousand");
    for seq in [1, 999, 1000, 1001, 2000, 2001, 2500] {
        let found = store.search(&format!("w{seq}"), 20).expect("search");
        assert_eq!(seqs(&found), [seq], "w{seq}");
    }
    assert_eq!(store.search("flood", 3).expect("search").len(), 3);
    assert_eq!(
        seqs(&store.search("flood", 3).expect("search")),
        [2500, 2499, 2498]
    );
    assert_index_sound(&store);
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
pub(super) fn files_hold(dir: &Path, needle: &str) -> Vec<String> {
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
    store.index(1).expect("index");
    // An old line the index does not hold yet expires too.
    store
        .append(&[entry(400, 2, Kind::Message, "carol", "quagmirevelvet")])
        .expect("append");
    assert!(store.checkpoint().expect("checkpoint"));
    assert!(
        !files_hold(&dir, "zanzibarquokka").is_empty(),
        "the test can see text"
    );

    assert_eq!(store.expire(at(50)).expect("expire"), 3);
    assert_eq!(store.expire(at(50)).expect("expire again"), 0);
    assert_index_sound(&store);
    assert_eq!(store.index(1).expect("index the rest"), 1);
    assert_index_sound(&store);
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
    assert_eq!(store.recent(LOBBY, None, 1000).expect("recent").len(), 397);
    let mut out = Vec::new();
    store
        .export(None, None, None, Format::Jsonl, &mut out)
        .expect("export");
    assert!(!String::from_utf8_lossy(&out).contains("zanzibar"));
    assert!(store.checkpoint().expect("checkpoint"));
    for gone in [
        "zanzibarquokka",
        "xylophonequince",
        "secret plans",
        "quagmirevelvet",
    ] {
        assert_eq!(files_hold(&dir, gone), [] as [String; 0], "{gone}");
    }
    assert!(!files_hold(&dir, "walrusline").is_empty());
    // The sequence goes on after its lines expired.
    assert_eq!(store.last_seq().expect("last"), Some(400));
    let stats = store.stats().expect("stats");
    assert_eq!(stats.lines, 397);
    assert_eq!(stats.oldest, Some(at(100)));
    assert_eq!(stats.newest, Some(at(100)));
}

/// Sequence numbers the full-text index covers.
fn indexed(store: &Store) -> Option<i64> {
    store
        .conn
        .query_row("SELECT indexed_seq FROM state", [], |r| r.get(0))
        .expect("state")
}

#[test]
fn a_writer_indexes_a_thousand_lines_at_once_and_a_crash_tail_at_start() {
    let (_root, _dir, mut store) = new_store();
    let flood = |from: u64, to: u64| -> Vec<Entry> {
        (from..to)
            .map(|seq| entry(seq, 0, Kind::Message, "bob", &format!("w{seq}")))
            .collect()
    };
    // What a crashed server left: stored, never indexed. A writer's
    // upkeep indexes it first thing.
    store.append(&flood(1, 11)).expect("append");
    let mut upkeep = Upkeep::new(None);
    assert_eq!(indexed(&store), None);
    upkeep.run_due(&mut store);
    assert_eq!(indexed(&store), Some(10));
    // Fewer than a thousand waiting after a commit: not yet.
    store.append(&flood(11, 1000)).expect("append");
    upkeep.committed(&mut store);
    assert_eq!(indexed(&store), Some(10));
    // A thousand: at once.
    store.append(&flood(1000, 1011)).expect("append");
    upkeep.committed(&mut store);
    assert_eq!(indexed(&store), Some(1010));
    // The rest when the writer ends.
    store.append(&flood(1011, 1020)).expect("append");
    upkeep.committed(&mut store);
    upkeep.finish(&mut store);
    assert_eq!(indexed(&store), Some(1019));
    assert_index_sound(&store);
}

#[test]
fn a_writer_expires_old_lines_every_minute_while_it_runs() {
    let (_root, _dir, mut store) = new_store();
    let mut upkeep = Upkeep::new(Some(std::time::Duration::from_secs(3600)));
    let start = std::time::Instant::now();
    let now = OffsetDateTime::now_utc();
    let said = |seq: u64, ago: i64, text: &str| {
        Entry::new(
            seq,
            now - time::Duration::seconds(ago),
            Kind::Message,
            "bob",
            text,
        )
    };
    store
        .append(&[said(1, 7200, "twohoursago"), said(2, 60, "aminuteago")])
        .expect("append");
    upkeep.run_due_at(&mut store, start + upkeep::EXPIRY_INTERVAL / 2);
    assert_eq!(store.stats().expect("stats").lines, 2, "not a minute yet");
    upkeep.run_due_at(&mut store, start + upkeep::EXPIRY_INTERVAL);
    assert_eq!(seqs(&store.recent(LOBBY, None, 10).expect("recent")), [2]);
    assert!(store.search("twohoursago", 20).expect("search").is_empty());
    store.append(&[said(3, 7200, "latecomer")]).expect("append");
    upkeep.run_due_at(&mut store, start + upkeep::EXPIRY_INTERVAL * 3 / 2);
    assert_eq!(store.stats().expect("stats").lines, 2, "the next minute");
    upkeep.run_due_at(&mut store, start + upkeep::EXPIRY_INTERVAL * 2);
    assert_eq!(seqs(&store.recent(LOBBY, None, 10).expect("recent")), [2]);
    assert_index_sound(&store);
}

#[test]
fn each_channel_has_its_own_history_and_search_indexed_or_not() {
    let (_root, _dir, mut store) = new_store();
    let said = |seq, channel: &str, text: &str| Entry {
        channel: channel.to_owned(),
        ..entry(seq, 0, Kind::Message, "bob", text)
    };
    let lines = [
        said(1, LOBBY, "deploy lobby one"),
        said(2, "#ops", "deploy ops one"),
        said(3, "#dev", "deploy dev one"),
        said(4, "#0ps", "deploy ops two"),
        said(5, LOBBY, "deploy lobby two"),
        Entry {
            whom: "eve".to_owned(),
            kind: Kind::Moderation(Action::Mute),
            ..said(6, "#ops", "deploy reason")
        },
    ];
    store.append(&lines).expect("append");
    for indexed in [false, true] {
        if indexed {
            assert_eq!(store.index(1).expect("index"), 6);
        }
        let found = |channel| seqs(&store.search_in(channel, "deploy", 20).expect("search"));
        assert_eq!(found(Some("#ops")), [4, 2], "indexed: {indexed}");
        assert_eq!(found(Some("#l0bby")), [5, 1], "indexed: {indexed}");
        assert_eq!(found(Some("#dev")), [3], "indexed: {indexed}");
        assert_eq!(found(Some("#none")), [] as [u64; 0], "indexed: {indexed}");
        assert_eq!(found(None), [5, 4, 3, 2, 1], "indexed: {indexed}");
        // The newest of a channel, however many newer lines others have.
        let newest = store.search_in(Some("#dev"), "deploy", 1).expect("search");
        assert_eq!(seqs(&newest), [3]);
        assert_eq!(newest[0].line(), "#dev bob: deploy dev one\n");
    }
    assert_eq!(
        seqs(&store.recent("#ops", None, 10).expect("recent")),
        [2, 4]
    );
    assert_eq!(
        seqs(&store.recent("#ops", Some(4), 10).expect("recent")),
        [2]
    );
    assert_eq!(seqs(&store.recent(LOBBY, None, 1).expect("recent")), [5]);
    let ops = store.recent("#0ps", None, 10).expect("recent");
    assert_eq!(ops[1].channel, "#ops", "named as first stored");
    assert_index_sound(&store);
    // A channel name the server would refuse is refused, and nothing of
    // its batch is stored.
    let err = store
        .append(&[said(7, LOBBY, "fine"), said(8, "ops", "bad")])
        .expect_err("refused");
    assert!(format!("{err:#}").contains("not valid"), "{err:#}");
    assert_eq!(store.last_seq().expect("last"), Some(6));
}
