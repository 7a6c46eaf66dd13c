//! `chatroom bench` end to end: against the real server over real TLS, it
//! finds nothing wrong; against a stub that drops or swaps one line for one
//! client, it says so; and the built binary's `--spawn --json` path works.

use crate::harness::{TestServer, WAIT};
use bytes::Bytes;
use chatroom::bench::{BenchOptions, Case, ScenarioResult, Target, TlsTarget};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Small and quick: each scenario here takes well under a second.
fn quick_options(clients: usize) -> BenchOptions {
    BenchOptions {
        clients: Some(clients),
        messages: 20,
        rate: 200.0,
        duration: Duration::from_millis(500),
        senders: 2,
        concurrency: 10,
        stall_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(15),
        ..BenchOptions::default()
    }
}

async fn bench(target: &Target, case: Case, opts: &BenchOptions) -> ScenarioResult {
    tokio::time::timeout(
        opts.timeout + WAIT,
        chatroom::bench::run_scenario(target, case, opts),
    )
    .await
    .expect("the scenario ends by itself")
    .expect("the scenario runs")
}

fn assert_clean(result: &ScenarioResult) {
    assert!(result.ok, "{}: {:?}", result.scenario, result.problems);
    assert!(result.problems.is_empty());
    assert!(result.messages_sent > 0);
    assert_eq!(result.deliveries, result.expected_deliveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_passes_every_check() {
    let server = TestServer::start().await;
    let target = Target {
        addr: server.addr(),
        more_addrs: Vec::new(),
        tls: Some(TlsTarget {
            config: server.client_tls.clone(),
            server_name: chatroom::tls::server_name("127.0.0.1").expect("name"),
        }),
        // The server runs in this process, so its memory and CPU are ours.
        server_pid: Some(std::process::id()),
        spawned: false,
    };

    let fanout = bench(&target, Case::Fanout, &quick_options(5)).await;
    assert_clean(&fanout);
    assert_eq!(fanout.messages_sent, 5 * 20);
    assert_eq!(fanout.deliveries, 5 * 5 * 20);
    assert!(fanout.deliveries_per_s.is_some_and(|rate| rate > 0.0));
    assert_eq!(
        fanout.latency_us.map(|l| l.count),
        Some(fanout.deliveries),
        "one latency sample per delivery"
    );

    let latency = bench(&target, Case::Latency, &quick_options(12)).await;
    assert_clean(&latency);
    assert_eq!(latency.senders, 2);
    assert_eq!(latency.messages_sent, 100, "200 msg/s for 0.5 s");

    for resumption in [true, false] {
        let join = bench(&target, Case::Join { resumption }, &quick_options(20)).await;
        assert_clean(&join);
        assert!(join.joins_per_s.is_some());
        assert_eq!(join.handshake_us.map(|h| h.count), Some(20));
        let resumed = join.resumed_handshakes.expect("TLS counts resumptions");
        if !resumption {
            assert_eq!(resumed, 0);
        }
    }

    let idle = bench(&target, Case::Idle, &quick_options(30)).await;
    assert_clean(&idle);
    assert!(idle.server_rss_per_participant_bytes.is_some());
    assert!(idle.server_cpu_s.is_some());

    server.server.stop().await.expect("server stops");
}

/// What the stub does wrong, to the first client that joins.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Never sends it the room's 4th chat line.
    DropFourth,
    /// Sends it the room's 4th and 5th chat lines the other way round.
    SwapFourthAndFifth,
}

/// The room's order, as the stub keeps it: every member's queue, and the
/// 4th line while it is held back from the victim.
#[derive(Default)]
struct StubRoom {
    members: Vec<mpsc::UnboundedSender<Bytes>>,
    chat_lines: usize,
    held: Option<Bytes>,
}

/// A plaintext server that speaks the protocol, keeps one global order, and
/// commits `fault` against its first member.
async fn start_stub(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let room = Arc::new(Mutex::new(StubRoom::default()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(stub_session(tcp, room.clone(), fault));
        }
    });
    addr
}

async fn stub_session(tcp: TcpStream, room: Arc<Mutex<StubRoom>>, fault: Fault) {
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read).lines();
    if write.write_all(b"NICK\n").await.is_err() {
        return;
    }
    let Ok(Some(nick)) = lines.next_line().await else {
        return;
    };
    let (queue, mut outbox) = mpsc::unbounded_channel::<Bytes>();
    {
        let mut room = room.lock().expect("room");
        room.members.push(queue.clone());
        let joined = Bytes::from(format!("{nick} joined!\n"));
        for member in &room.members {
            let _ = member.send(joined.clone());
        }
        let _ = queue.send(Bytes::from_static(b"Connected to server!\n"));
    }
    tokio::spawn(async move {
        while let Some(line) = outbox.recv().await {
            if write.write_all(&line).await.is_err() {
                return;
            }
        }
    });
    while let Ok(Some(text)) = lines.next_line().await {
        let line = Bytes::from(format!("{nick}: {text}\n"));
        let mut room = room.lock().expect("room");
        let number = room.chat_lines;
        room.chat_lines += 1;
        for (member, queue) in room.members.iter().enumerate() {
            let victim = member == 0;
            match (fault, number) {
                (Fault::DropFourth, 3) if victim => {}
                (Fault::SwapFourthAndFifth, 3) if victim => {}
                _ => {
                    let _ = queue.send(line.clone());
                }
            }
        }
        if let (Fault::SwapFourthAndFifth, 3) = (fault, number) {
            room.held = Some(line.clone());
        }
        if let (Fault::SwapFourthAndFifth, 4) = (fault, number)
            && let Some(held) = room.held.take()
        {
            let _ = room.members[0].send(held);
        }
    }
}

async fn bench_stub(fault: Fault) -> ScenarioResult {
    let target = Target {
        addr: start_stub(fault).await,
        more_addrs: Vec::new(),
        tls: None,
        server_pid: None,
        spawned: false,
    };
    let mut opts = quick_options(4);
    opts.messages = 10;
    bench(&target, Case::Fanout, &opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_line_is_reported_as_loss() {
    let result = bench_stub(Fault::DropFourth).await;
    assert!(!result.ok, "the bench must fail");
    assert!(
        result.problems.iter().any(|p| p.starts_with("loss:")),
        "{:?}",
        result.problems
    );
    assert_eq!(result.deliveries + 1, result.expected_deliveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_lines_are_reported_as_reordering() {
    let result = bench_stub(Fault::SwapFourthAndFifth).await;
    assert!(!result.ok, "the bench must fail");
    // Same sender: its sequence goes backwards; two senders: this client's
    // order differs from everybody else's.
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.starts_with("reordering:") || p.starts_with("order:")),
        "{:?}",
        result.problems
    );
    assert!(!result.problems.iter().any(|p| p.starts_with("loss:")));
    assert_eq!(result.deliveries, result.expected_deliveries);
}

/// Runs `chatroom bench --spawn ARGS --json` (within a minute) and returns
/// its one JSON object; the run must succeed.
async fn bench_spawn(args: &[&str]) -> serde_json::Value {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chatroom"))
            .args(["bench", "--spawn", "--json"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bench finishes in time")
    .expect("bench runs");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per scenario: {stdout}");
    serde_json::from_str(lines[0]).expect("JSON")
}

#[tokio::test]
async fn the_binary_spawns_its_own_server_and_reports_json() {
    let result = bench_spawn(&[
        "--scenario",
        "fanout",
        "--clients",
        "5",
        "--messages",
        "20",
        "--timeout",
        "30",
    ])
    .await;
    assert_eq!(result["scenario"], "fanout");
    assert_eq!(result["transport"], "tls");
    assert_eq!(result["ok"], true);
    assert_eq!(result["deliveries"], 5 * 5 * 20);
    assert_eq!(result["expected_deliveries"], 5 * 5 * 20);
    assert!(result["server_cpu_s"].is_number());
}

#[tokio::test]
async fn the_binary_spawns_a_server_with_its_history_store() {
    let result = bench_spawn(&[
        "--data",
        "--scenario",
        "fanout",
        "--clients",
        "5",
        "--messages",
        "20",
        "--timeout",
        "30",
    ])
    .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["problems"], serde_json::json!([]));
    assert_eq!(result["deliveries"], 5 * 5 * 20);
    // Every message was committed before it was delivered: the store holds
    // them all, and the five joins.
    let stored = result["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(|note| note.as_str()?.strip_prefix("history store: "))
        .find_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .expect("a note with the store's line count");
    assert!(stored >= 5 * 20 + 5, "{stored} lines stored");
}

#[tokio::test]
async fn the_search_scenario_searches_a_filled_store() {
    let result = bench_spawn(&[
        "--scenario",
        "search",
        "--lines",
        "3000",
        "--messages",
        "20",
        "--clients",
        "3",
        "--timeout",
        "30",
    ])
    .await;
    assert_eq!(result["scenario"], "search");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["latency_us"]["count"], 20, "one sample per search");
    assert_eq!(result["join_us"]["count"], 3, "one sample per newcomer");
    let notes = result["notes"].to_string();
    assert!(
        notes.contains("history store: 300"),
        "the 3000 lines and the joins are stored: {notes}"
    );
}

#[tokio::test]
async fn the_fanout_splits_its_clients_into_channels() {
    let result = bench_spawn(&[
        "--scenario",
        "fanout",
        "--clients",
        "10",
        "--channels",
        "4",
        "--messages",
        "20",
        "--timeout",
        "30",
    ])
    .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["problems"], serde_json::json!([]));
    assert_eq!(result["channels"], 4);
    assert_eq!(result["messages_sent"], 10 * 20);
    // 10 clients in 4 channels of 3, 3, 2 and 2 members: each line reaches
    // its own channel's members, and nobody else (a crossed line fails the
    // run).
    let expected = 20 * (3 * 3 + 3 * 3 + 2 * 2 + 2 * 2);
    assert_eq!(result["expected_deliveries"], expected);
    assert_eq!(result["deliveries"], expected);
    // A sender's default window is its channel's share of 2048 lines in
    // flight (2048 / 3, at most 256), not the whole run's (2048 / 10).
    let notes = result["notes"].to_string();
    assert!(
        notes.contains("kept at most 256 of its own messages in flight"),
        "{notes}"
    );
}

#[tokio::test]
async fn the_idle_scenario_joins_every_client_to_channels() {
    let result = bench_spawn(&[
        "--scenario",
        "idle",
        "--clients",
        "10",
        "--channels-each",
        "3",
        "--timeout",
        "30",
    ])
    .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["channels_each"], 3);
    // The check message, said in #lobby once everybody is back there.
    assert_eq!(result["deliveries"], 10);
    assert!(result["server_rss_per_participant_bytes"].is_number());
}

#[tokio::test]
async fn the_rejoin_scenario_brings_everybody_back_after_a_restart() {
    let result = bench_spawn(&["--scenario", "rejoin", "--clients", "20", "--timeout", "20"]).await;
    assert_eq!(result["scenario"], "rejoin");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["problems"], serde_json::json!([]));
    assert_eq!(result["cut"], "restart", "the default with --spawn");
    // Every client back once: /list counts each of them, and the one
    // message said afterwards reaches each exactly once.
    assert_eq!(result["room_size"], 20);
    assert_eq!(result["deliveries"], 20);
    assert_eq!(result["expected_deliveries"], 20);
    assert_eq!(result["back_us"]["count"], 20, "one time back per client");
    let back = result["back_s"].as_f64().expect("back_s");
    assert!(back > 0.0, "{result}");
    let attempts = result["attempts"].as_u64().expect("attempts");
    let retried = result["retried"].as_u64().expect("retried");
    assert_eq!(
        attempts,
        20 + retried,
        "each client's last attempt is its way back"
    );
    assert!(result["retried_nick_taken"].is_u64());
    assert!(result["server_cpu_s"].is_number());
    assert_eq!(
        result["resumed_handshakes"], 0,
        "a restarted server resumes nobody's session: {result}"
    );
}

#[tokio::test]
async fn the_rejoin_scenario_can_cut_the_connections_instead() {
    let result = bench_spawn(&[
        "--scenario",
        "rejoin",
        "--cut",
        "connections",
        "--clients",
        "20",
        "--timeout",
        "20",
    ])
    .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["cut"], "connections");
    assert_eq!(result["room_size"], 20);
    assert_eq!(result["deliveries"], 20);
    assert_eq!(result["back_us"]["count"], 20);
}

/// Runs `chatroom bench ARGS` (within `WAIT`) and returns whether it
/// succeeded, its stdout and its stderr.
async fn bench_run(args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chatroom"))
            .arg("bench")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bench finishes in time")
    .expect("bench runs");
    (
        output.status.success(),
        String::from_utf8(output.stdout).expect("UTF-8"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The nodes of one cluster room on a fresh nats-server, and the
/// certificates their clients trust.
struct TwoNodes {
    _nats: crate::harness::nats::NatsServer,
    certs: crate::harness::TestCerts,
    nodes: [crate::harness::serve::Serve; 2],
}

impl TwoNodes {
    async fn start() -> TwoNodes {
        use crate::harness::nats::{NatsServer, node};
        let nats = NatsServer::start().await;
        let certs = crate::harness::TestCerts::new();
        let nodes = [
            node(&certs, &nats, "n1").await,
            node(&certs, &nats, "n2").await,
        ];
        TwoNodes {
            _nats: nats,
            certs,
            nodes,
        }
    }

    /// `bench --scenario big` for the clients `10 * i ..` of a room of 20
    /// on node `i`, as run `run`; the first process sends the line.
    fn part(&self, i: usize, run: &str) -> Vec<String> {
        let node = &self.nodes[i];
        let pid = node.child.id().expect("node runs").to_string();
        let ca = self.certs.ca().to_str().expect("UTF-8 path").to_owned();
        let mut args: Vec<String> = [
            "--addr",
            &node.addr,
            "--ca",
            &ca,
            "--server-pid",
            &pid,
            "--scenario",
            "big",
            "--total",
            "20",
            "--clients",
            "10",
            "--run",
            run,
            "--stall-timeout",
            "5",
            "--timeout",
            "20",
            "--json",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(["--first-client".to_owned(), (10 * i).to_string()]);
        if i == 0 {
            args.push("--broadcast".to_owned());
        }
        args
    }

    /// Runs both parts at once: the first as run `first`, the second as
    /// run `second`.
    async fn run(&self, first: &str, second: &str) -> [(bool, String, String); 2] {
        let (first, second) = (self.part(0, first), self.part(1, second));
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        let second: Vec<&str> = second.iter().map(String::as_str).collect();
        let runs = tokio::join!(bench_run(&first), bench_run(&second));
        [runs.0, runs.1]
    }
}

/// One room on two `serve --cluster` nodes, filled by two bench processes
/// of 10 clients each, one per node; the first sends the line, and every
/// client of both must get it exactly once.
#[tokio::test]
async fn two_bench_processes_fill_one_room_on_two_nodes() {
    let cluster = TwoNodes::start().await;
    for (i, (ok, stdout, stderr)) in cluster.run("tbig", "tbig").await.into_iter().enumerate() {
        assert!(ok, "bench {i} failed: {stdout}\n{stderr}");
        let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert_eq!(result["scenario"], "big");
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["problems"], serde_json::json!([]));
        assert_eq!(result["clients"], 10);
        assert_eq!(result["room_total"], 20);
        // Every client of this process got the one line, once.
        assert_eq!(result["deliveries"], 10, "{result}");
        assert_eq!(result["expected_deliveries"], 10);
        assert_eq!(result["latency_us"]["count"], 10);
        assert!(result["broadcast_s"].is_number(), "{result}");
        assert!(result["fill_s"].is_number(), "{result}");
        assert!(result["server_rss_after_bytes"].is_u64(), "{result}");
        assert_eq!(result["senders"], u64::from(i == 0));
    }
}

/// A process of another run (another numbering of nicknames) does not
/// take the room's line for the one it waits for: it fails, saying so.
#[tokio::test]
async fn a_process_that_never_gets_the_line_fails() {
    let cluster = TwoNodes::start().await;
    let [(sent, ..), (ok, stdout, stderr)] = cluster.run("tbig", "tother").await;
    assert!(sent, "the process that sends the line has it");
    assert!(!ok, "{stdout}\n{stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(result["ok"], false);
    assert_eq!(result["deliveries"], 0, "{result}");
    // Waiting for the line, or still for the whole room if the sender's
    // process left before this one saw it full: either way it says why.
    let problems = result["problems"].to_string();
    assert!(
        problems.contains("stalled") || problems.contains("stopped growing"),
        "{result}"
    );
}

#[tokio::test]
async fn the_new_scenarios_refuse_what_cannot_work() {
    for (args, said) in [
        (
            &[
                "--scenario",
                "big",
                "--total",
                "20",
                "--clients",
                "10",
                "--spawn",
            ][..],
            "needs the same --run TOKEN",
        ),
        (
            &[
                "--scenario",
                "big",
                "--total",
                "20",
                "--clients",
                "10",
                "--run",
                "x",
                "--first-client",
                "10",
                "--broadcast",
                "--spawn",
            ][..],
            "--first-client 0",
        ),
        (
            &[
                "--scenario",
                "rejoin",
                "--cut",
                "restart",
                "--addr",
                "127.0.0.1:9",
            ][..],
            "add --spawn",
        ),
        (
            &["--scenario", "fanout", "--cut", "connections", "--spawn"][..],
            "--cut is for",
        ),
        // More clients than any process may open files: refused before
        // anything starts (Linux caps the open-files limit below 2^31).
        (
            &["--scenario", "rejoin", "--clients", "4000000000", "--spawn"][..],
            "open files, but this process may open only",
        ),
    ] {
        let (ok, _, stderr) = bench_run(args).await;
        assert!(!ok, "{args:?} must fail");
        let stderr = stderr.replace("\n", " ");
        assert!(
            stderr.contains(&said.replace("\n", " ")),
            "{args:?}: {stderr}"
        );
    }
}
