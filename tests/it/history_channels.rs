//! Channels on a server that keeps its lines on disk (`serve --data`), the
//! built binary with real clients over TLS: each channel's own history and
//! search, a channel's lines kept once it is empty and after a restart, the
//! export's channels, and operators' actions stored as their own kind.

use crate::harness::cli;
use crate::harness::{Client, Serve, TlsClient, WAIT};
use std::path::Path;

/// The retention line a newcomer to the room gets with the default
/// `--retain`.
const KEPT: &str = "[history] this room keeps its lines for 30 days";

/// Joins as `nick` with a client pinning `dir`'s CA; returns the client
/// once the room's history is read (up to the retention line).
async fn join(serve: &Serve, dir: &Path, nick: &str) -> TlsClient {
    let config = chatroom::tls::client_config(&dir.join("certs/ca.pem")).expect("CA");
    let mut client = Client::tls(serve.socket_addr(), config).await;
    client.register(nick).await;
    client.until(KEPT, WAIT).await;
    client
}

/// Sends `/join NAME` and reads up to the `[join]` reply; returns the
/// lines before it (the asker's own `joined!`, if new there).
async fn join_channel(client: &mut TlsClient, name: &str, reply: &str) -> Vec<String> {
    client.send(&format!("/join {name}")).await;
    client.until(reply, WAIT).await
}

/// Stops `serve` with SIGTERM and waits for it to exit cleanly.
async fn stop(mut serve: Serve) {
    serve.signal("TERM").await;
    let status = tokio::time::timeout(WAIT, serve.child.wait())
        .await
        .expect("serve stops in time")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

/// The `seq` and `channel` of every line `history export ARGS` writes.
async fn exported(data: &Path, args: &[&str]) -> Vec<(u64, String)> {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    cli::history(data, &all)
        .await
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
            let channel = v["channel"].as_str().expect("a channel on every line");
            (v["seq"].as_u64().expect("seq"), channel.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_each_answer_history_and_search_from_their_own_lines() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    let args = ["--data", data_arg, "--history", "2", "--rate-limit", "off"];
    let serve = Serve::start(tmp.path(), &args).await;
    let mut alice = join(&serve, tmp.path(), "alice").await;
    let mut bob = join(&serve, tmp.path(), "bob").await;
    alice.until("bob joined!", WAIT).await;
    join_channel(&mut alice, "#ops", "[join] #ops: 1 here").await;
    join_channel(&mut bob, "#dev", "[join] #dev: 1 here").await;
    for i in 1..=4 {
        alice.send(&format!("ops deploy {i}")).await;
        bob.send(&format!("dev deploy {i}")).await;
    }
    alice.until("#ops alice: ops deploy 4", WAIT).await;
    bob.until("#dev bob: dev deploy 4", WAIT).await;
    bob.send("/join #lobby").await;
    bob.until("[join] #lobby: 2 here", WAIT).await;
    bob.send("lobby deploy").await;
    alice.until("bob: lobby deploy", WAIT).await;

    // A newcomer to #ops (a lookalike name) gets #ops's last lines.
    let mut carol = join(&serve, tmp.path(), "carol").await;
    let before = join_channel(&mut carol, "#0ps", "[join] #ops: 2 here").await;
    assert_eq!(before, ["#ops carol joined!"]);
    assert_eq!(
        carol.lines(2).await,
        [
            "[history] #ops alice: ops deploy 3",
            "[history] #ops alice: ops deploy 4"
        ]
    );
    carol.send("/history 5").await;
    assert_eq!(
        carol.lines(2).await,
        [
            "[history] #ops alice: ops deploy 1",
            "[history] #ops alice: ops deploy 2"
        ]
    );
    carol.send("/search deploy").await;
    let found = carol.until("[search] 4 matches", WAIT).await;
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].ends_with(" #ops alice: ops deploy 4"), "{found:?}");
    assert!(found.iter().all(|l| l.contains(" #ops alice: ops deploy ")));

    // #dev: its own newcomer's history, its own search.
    let before = join_channel(&mut carol, "#dev", "[join] #dev: 2 here").await;
    assert_eq!(before, ["#dev carol joined!"]);
    assert_eq!(
        carol.lines(2).await,
        [
            "[history] #dev bob: dev deploy 3",
            "[history] #dev bob: dev deploy 4"
        ]
    );
    carol.send("/search deploy 2").await;
    let found = carol.until("[search] 1 match", WAIT).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with(" #dev bob: dev deploy 2"), "{found:?}");
    // The lobby's own: nothing before the lobby line she was shown on
    // joining the server, and its search.
    carol.send("/join #lobby").await;
    carol.until("[join] #lobby: 3 here", WAIT).await;
    carol.send("/history").await;
    carol.send("/search deploy").await;
    let found = carol.lines(2).await;
    assert!(found[0].ends_with(" bob: lobby deploy"), "{found:?}");
    assert_eq!(found[1], "[search] 1 match");
    stop(serve).await;

    // The export says each line's channel; --channel folds the name.
    let all = exported(&data, &[]).await;
    let ops = exported(&data, &["--channel", "#0ps"]).await;
    let dev = exported(&data, &["--channel", "#dev"]).await;
    let lobby = exported(&data, &["--channel", "#lobby"]).await;
    assert!(ops.iter().all(|(_, c)| c == "#ops"), "{ops:?}");
    assert!(dev.iter().all(|(_, c)| c == "#dev"), "{dev:?}");
    assert!(lobby.iter().all(|(_, c)| c == "#lobby"), "{lobby:?}");
    // Joins, four lines, and each leave at the stop: every line in one.
    assert_eq!(ops.len() + dev.len() + lobby.len(), all.len());
    assert!(ops.len() >= 4 + 2 && dev.len() >= 4 + 2, "{all:?}");
    let seqs: Vec<u64> = all.iter().map(|(seq, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn an_emptied_channel_keeps_its_lines_and_gives_them_after_a_restart() {
    let tmp = tempfile::tempdir().expect("temp");
    let data = tmp.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    let serve = Serve::start(tmp.path(), &["--data", data_arg]).await;
    let mut alice = join(&serve, tmp.path(), "alice").await;
    join_channel(&mut alice, "#ops", "[join] #ops: 1 here").await;
    alice.send("remember the deploy").await;
    alice.expect("#ops alice: remember the deploy").await;
    alice.send("/part").await;
    alice
        .expect("[part] #ops: you left it; now in #lobby")
        .await;
    // Forgotten as a channel: nobody is in it.
    alice.send("/rooms").await;
    alice.expect("[rooms] #lobby 1 here (current)").await;
    alice.send("still here").await;
    alice.expect("alice: still here").await;
    // Its lines are not: whoever opens it again gets them.
    join_channel(&mut alice, "#ops", "[join] #ops: 1 here").await;
    alice
        .expect("[history] #ops alice: remember the deploy")
        .await;
    alice.send("/search deploy").await;
    let found = alice.until("[search] 1 match", WAIT).await;
    assert!(found[0].ends_with(" #ops alice: remember the deploy"));
    stop(serve).await;

    let serve = Serve::start(tmp.path(), &["--data", data_arg]).await;
    let mut bob = join(&serve, tmp.path(), "bob").await;
    // Spelled otherwise now: its lines come as the channel is named now.
    let before = join_channel(&mut bob, "#0ps", "[join] #0ps: 1 here").await;
    assert_eq!(before, ["#0ps bob joined!"]);
    bob.expect("[history] #0ps alice: remember the deploy")
        .await;
    // Not in the lobby's history, nor in another channel's.
    join_channel(&mut bob, "#dev", "[join] #dev: 1 here").await;
    bob.send("/history").await;
    bob.send("/search deploy").await;
    bob.expect("[search] no matches").await;
    stop(serve).await;
    let ops = exported(&data, &["--channel", "#ops"]).await;
    assert!(ops.iter().all(|(_, c)| c == "#ops"), "{ops:?}");
}

/// Joins as `name`, presenting its client certificate from `dir`.
async fn join_as(serve: &Serve, dir: &Path, name: &str) -> TlsClient {
    let mut client = cli::as_client(dir, serve.socket_addr(), name).await;
    client.register(name).await;
    client.until(KEPT, WAIT).await;
    client
}

#[tokio::test]
async fn operators_actions_are_stored_as_moderation_where_they_were_shown() {
    let tmp = cli::certs_folder(&["olga", "mallory", "eve"]).await;
    let dir = tmp.path();
    std::fs::write(dir.join("operators.txt"), "olga\n").expect("operators");
    std::fs::write(dir.join("denied.txt"), "# banned\n").expect("deny file");
    let data = dir.join("data");
    let args = [
        "--client-ca",
        "certs/ca.pem",
        "--operators",
        "operators.txt",
        "--deny-file",
        "denied.txt",
        "--data",
        data.to_str().expect("UTF-8 path"),
    ];
    let serve = Serve::start(dir, &args).await;
    let mut olga = join_as(&serve, dir, "olga").await;
    let mut mallory = join_as(&serve, dir, "mallory").await;
    let mut eve = join_as(&serve, dir, "eve").await;
    join_channel(&mut olga, "#ops", "[join] #ops: 1 here").await;
    join_channel(&mut mallory, "#ops", "[join] #ops: 2 here").await;
    olga.send("/topic release day").await;
    olga.until("[topic] set for #ops", WAIT).await;
    olga.send("/mute eve 10m").await;
    eve.until("eve was muted by olga for 10m", WAIT).await;
    olga.send("/unmute eve").await;
    eve.until("eve was unmuted by olga", WAIT).await;
    olga.send("/kick mallory spam").await;
    olga.until("[kick] mallory is out", WAIT).await;
    mallory.until_closed().await;
    olga.send("/ban ghost").await;
    olga.until("[ban] ghost is banned", WAIT).await;
    eve.until("mallory was kicked by olga (spam)", WAIT).await;
    eve.send("/search spam").await;
    eve.expect("[search] no matches").await;
    stop(serve).await;

    let export = cli::history(&data, &["export"]).await;
    let moderation: Vec<[String; 5]> = export
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON"))
        .filter(|v| v["kind"] == "moderation")
        .map(|v| {
            let field = |name: &str| v[name].as_str().expect("a string field").to_owned();
            ["channel", "action", "nick", "whom", "text"].map(field)
        })
        .collect();
    let expected: Vec<[String; 5]> = [
        ["#ops", "topic", "olga", "", "release day"],
        ["#lobby", "mute", "olga", "eve", "10m"],
        ["#lobby", "unmute", "olga", "eve", ""],
        // Kicked out of the room and of #ops: said, and stored, in both.
        ["#lobby", "kick", "olga", "mallory", "spam"],
        ["#ops", "kick", "olga", "mallory", "spam"],
        ["#lobby", "ban", "olga", "ghost", ""],
    ]
    .into_iter()
    .map(|row| row.map(str::to_owned))
    .collect();
    assert_eq!(moderation, expected, "{export}");
    assert!(
        !export.contains("kicked by"),
        "a kick is no leave: {export}"
    );
}
