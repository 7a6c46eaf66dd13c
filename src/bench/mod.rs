//! `chatroom bench`: load and correctness measurements of a chat server,
//! either one already running (`--addr`, `--ca`, `--server-name`, like
//! `connect`) or one it starts itself (`--spawn`).
//!
//! This module holds the options, the choice of scenarios and the run that
//! prints one report per scenario; the parts live in:
//! * [`scenario`]: running each scenario and judging it;
//! * [`channels`]: which channels the clients join (`--channels`,
//!   `--channels-each`) and whose lines each is to get;
//! * `fleet`: one scenario's clients, joined, sending and reading;
//! * [`client`]: the load-generating connections (join, read, send);
//! * [`check`]: the checker (loss, duplicates, damage, one global order);
//! * [`message`]: nicknames and self-describing message texts;
//! * [`report`]: results as a table or JSON lines;
//! * `search`: the search scenario and the store it fills;
//! * `rejoin`: every connection cut at once, and everybody back;
//! * `big`: one room filled by several bench processes, and one line to
//!   all;
//! * [`spawn`]: the child server and /proc readings.
//!
//! Scenarios are bounded in count and time, and a wrong answer fails the
//! run however fast it was.

mod big;
pub mod channels;
pub mod check;
pub mod client;
mod fleet;
pub mod message;
mod rejoin;
pub mod report;
pub mod scenario;
mod search;
pub mod spawn;

use crate::certs::{self, GenOptions};
use crate::protocol::DEFAULT_PORT;
use crate::tls;
use anyhow::{Context, Result, anyhow, bail};
pub use big::RoomPart;
use clap::{ArgGroup, Args, ValueEnum};
pub use client::TlsTarget;
pub use rejoin::Cut;
pub use report::ScenarioResult;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `chatroom bench`'s command line.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("which").required(true).args(["scenario", "all"])))]
pub struct BenchArgs {
    /// Server address, host:port (not with --spawn); several,
    /// comma-separated (the nodes of one cluster room), share the clients
    /// in turn.
    #[arg(long, default_value_t = format!("127.0.0.1:{DEFAULT_PORT}"), conflicts_with = "spawn")]
    pub addr: String,
    /// The CA certificate to trust (not with --spawn).
    #[arg(long, default_value = crate::certs::DEFAULT_CA, conflicts_with = "spawn")]
    pub ca: PathBuf,
    /// Name to check the server's certificate against. Default: the host
    /// part of (the first) --addr.
    #[arg(long, conflicts_with = "spawn")]
    pub server_name: Option<String>,
    /// Without TLS (with --spawn, the server is started with --plaintext too).
    #[arg(long)]
    pub plaintext: bool,
    /// Start a server of our own (this executable's `serve` with its
    /// defaults but the rate limit off, fresh certificates in a temporary
    /// folder), one per scenario.
    #[arg(long)]
    pub spawn: bool,
    /// With --spawn: start the server with `--data` in a fresh folder, so
    /// the run measures the server with its history store (every line
    /// committed before it is delivered); the report adds the lines the
    /// store holds at the end and its size.
    #[arg(long, requires = "spawn")]
    pub data: bool,
    /// The running server's process id, for its CPU time and memory (idle
    /// needs it without --spawn).
    #[arg(long, conflicts_with = "spawn")]
    pub server_pid: Option<u32>,
    /// Scenario to run (repeatable).
    #[arg(long, value_enum)]
    pub scenario: Vec<Scenario>,
    /// Run every scenario in turn.
    #[arg(long)]
    pub all: bool,
    /// Clients per scenario. Default: fanout 100, latency 1000, join 1000,
    /// idle 5000, search 20, rejoin 1000, big --total.
    #[arg(long)]
    pub clients: Option<usize>,
    /// fanout: messages per client; search: searches.
    #[arg(long, default_value_t = 200)]
    pub messages: u32,
    /// search: lines the spawned server's store holds before it starts.
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// latency: total messages per second, all senders together.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// latency: how long the senders send.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub duration: f64,
    /// latency: how many of the clients send.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// fanout: most of its own messages a sender has in flight (0: no
    /// limit). Default: 2048 / clients (with --channels: / the clients of
    /// its channel), between 4 and 256.
    #[arg(long)]
    pub window: Option<u32>,
    /// fanout: split the clients into N channels (`#bench0` ...; client i
    /// in channel i mod N), each client's lines going to its channel only;
    /// every line must reach every member of its channel and nobody else.
    /// Total deliveries are messages x clients x clients / N: for the same
    /// total as a one-room run, give N times its --messages.
    #[arg(long, value_name = "N")]
    pub channels: Option<usize>,
    /// idle: every client also joins the same K channels (then goes back
    /// to #lobby): the server's memory per channel membership (a server
    /// lets one join at most its --max-joined, 20 by default).
    #[arg(long, value_name = "K")]
    pub channels_each: Option<usize>,
    /// Clients joining at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Fail a scenario when no message arrives for this long.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub stall_timeout: f64,
    /// Fail a scenario that takes longer than this in all.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// rejoin: how every connection is cut: `restart` (kill the spawned
    /// server and start it again on the same port; needs --spawn, and is
    /// its default) or `connections` (the bench closes them all; the
    /// default without --spawn).
    #[arg(long, value_enum)]
    pub cut: Option<Cut>,
    /// big: the whole room's size, all bench processes together (default:
    /// --clients, one process).
    #[arg(long, value_name = "N")]
    pub total: Option<usize>,
    /// big: the token every bench process of one room is given (1 to 8
    /// lowercase letters or digits), so that they share one numbering of
    /// nicknames; needed with several processes.
    #[arg(long, value_name = "TOKEN")]
    pub run: Option<String>,
    /// big: the number of this process's first client in the whole room
    /// (its nicknames are numbered from it).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub first_client: usize,
    /// big: this process's first client sends the line every participant
    /// must get, once the room is full (one process of the room, with
    /// --first-client 0; implied with one process).
    #[arg(long)]
    pub broadcast: bool,
    /// One JSON object per scenario, one per line, instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The scenarios, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Every client sends as fast as it can: deliveries per second.
    Fanout,
    /// A few clients send at a fixed rate to many: delivery latency.
    Latency,
    /// Joining many clients, with and without TLS session resumption.
    Join,
    /// Many idle clients: the server's memory per participant.
    Idle,
    /// `/search` round trips and newcomers' joins against a store filled
    /// with --lines lines (needs --spawn).
    Search,
    /// Every connection cut at once (--cut), then everybody back with the
    /// terminal client's backoff: time until all are back, attempts.
    Rejoin,
    /// One room of --total filled by one or several bench processes (one
    /// per node), then one line to everybody: time to fill, memory per
    /// participant, time for the line to reach all.
    Big,
}

/// One scenario run as measured: `join` runs twice over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Fanout,
    Latency,
    Join { resumption: bool },
    Idle,
    Search,
    Rejoin,
    Big,
}

impl Case {
    pub fn name(self) -> String {
        match self {
            Case::Fanout => "fanout",
            Case::Latency => "latency",
            Case::Join { resumption: true } => "join",
            Case::Join { resumption: false } => "join-no-resumption",
            Case::Idle => "idle",
            Case::Search => "search",
            Case::Rejoin => "rejoin",
            Case::Big => "big",
        }
        .to_string()
    }

    /// The cases a scenario stands for (resumption only exists with TLS).
    fn of(scenario: Scenario, tls: bool) -> Vec<Case> {
        match scenario {
            Scenario::Fanout => vec![Case::Fanout],
            Scenario::Latency => vec![Case::Latency],
            Scenario::Join if tls => vec![
                Case::Join { resumption: true },
                Case::Join { resumption: false },
            ],
            // Nothing to resume without TLS: one plain `join`.
            Scenario::Join => vec![Case::Join { resumption: true }],
            Scenario::Idle => vec![Case::Idle],
            Scenario::Search => vec![Case::Search],
            Scenario::Rejoin => vec![Case::Rejoin],
            Scenario::Big => vec![Case::Big],
        }
    }
}

/// What the scenarios do, apart from where the server is.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Overrides every scenario's own default number of clients.
    pub clients: Option<usize>,
    pub messages: u32,
    /// search: lines in the store before the server starts.
    pub lines: u64,
    pub size: usize,
    pub rate: f64,
    pub duration: Duration,
    pub senders: usize,
    pub window: Option<u32>,
    pub concurrency: usize,
    /// fanout: the clients split into this many channels (`None`: all in
    /// one room, `#lobby`).
    pub channels: Option<usize>,
    /// idle: channels every client joins besides `#lobby`.
    pub channels_each: usize,
    pub stall_timeout: Duration,
    pub timeout: Duration,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// rejoin: how the connections are cut (`None`: the default for where
    /// the server is).
    pub cut: Option<Cut>,
    /// big: this process's part of the room (`None`: the whole room, of
    /// `clients`, this process's alone).
    pub room: Option<RoomPart>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            clients: None,
            messages: 200,
            lines: 1_000_000,
            size: 64,
            rate: 200.0,
            duration: Duration::from_secs(5),
            senders: 10,
            window: None,
            concurrency: 100,
            channels: None,
            channels_each: 0,
            stall_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            progress: false,
            cut: None,
            room: None,
        }
    }
}

impl BenchOptions {
    pub fn from_args(args: &BenchArgs) -> Result<BenchOptions> {
        let seconds = |value: f64, what: &str| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| anyhow!("{what}: {value} is not a positive number of seconds"))
        };
        if !(message::MIN_SIZE..=crate::protocol::DEFAULT_MAX_LINE).contains(&args.size) {
            bail!(
                "--size must be between {} and {} bytes",
                message::MIN_SIZE,
                crate::protocol::DEFAULT_MAX_LINE
            );
        }
        if !(args.rate.is_finite() && args.rate > 0.0) {
            bail!("--rate must be a positive number of messages per second");
        }
        if args.messages == 0 || args.senders == 0 || args.concurrency == 0 {
            bail!("--messages, --senders and --concurrency must be at least 1");
        }
        if args.clients == Some(0) {
            bail!("--clients must be at least 1");
        }
        if args.channels == Some(0) {
            bail!("--channels must be at least 1");
        }
        let chosen = chosen_cases(args);
        if args.channels.is_some() && !chosen.contains(&Case::Fanout) {
            bail!("--channels is for the fanout scenario (--scenario fanout)");
        }
        if args.channels_each.is_some() && !chosen.contains(&Case::Idle) {
            bail!("--channels-each is for the idle scenario (--scenario idle)");
        }
        if args.cut.is_some() && !chosen.contains(&Case::Rejoin) {
            bail!("--cut is for the rejoin scenario (--scenario rejoin)");
        }
        if args.cut == Some(Cut::Restart) && !args.spawn {
            bail!("--cut restart restarts the server the bench started: add --spawn");
        }
        let room = big::part_from_args(args, chosen.contains(&Case::Big))?;
        Ok(BenchOptions {
            clients: args.clients,
            messages: args.messages,
            lines: args.lines,
            size: args.size,
            rate: args.rate,
            duration: seconds(args.duration, "--duration")?,
            senders: args.senders,
            window: args.window,
            concurrency: args.concurrency,
            channels: args.channels,
            channels_each: args.channels_each.unwrap_or(0),
            stall_timeout: seconds(args.stall_timeout, "--stall-timeout")?,
            timeout: seconds(args.timeout, "--timeout")?,
            progress: std::io::stderr().is_terminal(),
            cut: args.cut,
            room,
        })
    }

    /// How many clients `case` runs with.
    pub fn clients_for(&self, case: Case) -> usize {
        self.clients.unwrap_or(match case {
            Case::Fanout => 100,
            Case::Latency | Case::Join { .. } => 1000,
            Case::Idle => 5000,
            Case::Search => 20,
            Case::Rejoin => 1000,
            Case::Big => self.room.as_ref().map_or(1000, |room| room.total),
        })
    }
}

/// Where the server is and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// More addresses of the same room (its other nodes): clients are
    /// spread over `addr` and these in turn.
    pub more_addrs: Vec<SocketAddr>,
    /// `None`: plaintext.
    pub tls: Option<TlsTarget>,
    /// For CPU time and memory from /proc.
    pub server_pid: Option<u32>,
    /// Whether the bench started this server (and turned its rate limit off).
    pub spawned: bool,
}

impl Target {
    /// The address client number `index` connects to.
    pub fn addr_for(&self, index: usize) -> SocketAddr {
        match index % (self.more_addrs.len() + 1) {
            0 => self.addr,
            n => self.more_addrs[n - 1],
        }
    }

    pub fn transport(&self) -> &'static str {
        if self.tls.is_some() {
            "tls"
        } else {
            "plaintext"
        }
    }
}

/// Runs one scenario against `target`. `Err` means it could not run (no
/// server, a client refused at the door); whatever the server did wrong
/// while it ran is in the result's `problems`, with `ok` false.
pub async fn run_scenario(
    target: &Target,
    case: Case,
    opts: &BenchOptions,
) -> Result<ScenarioResult> {
    scenario::run(target, case, opts).await
}

/// `chatroom bench`: runs the chosen scenarios, prints a report for each,
/// and fails if any scenario failed.
pub async fn run(args: BenchArgs) -> Result<()> {
    let opts = BenchOptions::from_args(&args)?;
    let cases = chosen_cases(&args);
    let most_clients = cases
        .iter()
        .map(|&case| opts.clients_for(case))
        .max()
        .unwrap_or(0);
    let mut runner = Runner {
        fd_note: raise_open_files(most_clients)?,
        opts,
        json: args.json,
        results: Vec::with_capacity(cases.len()),
    };
    if args.spawn {
        runner.run_spawned(cases, args.plaintext, args.data).await?;
    } else {
        let target = external_target(&args).await?;
        runner.run_against(&target, cases).await?;
    }
    runner.verdict()
}

/// The cases the command line asks for, in order.
fn chosen_cases(args: &BenchArgs) -> Vec<Case> {
    let chosen = if args.all {
        vec![
            Scenario::Fanout,
            Scenario::Latency,
            Scenario::Join,
            Scenario::Idle,
        ]
    } else {
        args.scenario.clone()
    };
    chosen
        .into_iter()
        .flat_map(|s| Case::of(s, !args.plaintext))
        .collect()
}

/// One `chatroom bench` run: runs the cases, prints each report as soon as
/// it is ready, and keeps the results for the final verdict.
struct Runner {
    opts: BenchOptions,
    json: bool,
    /// What `raise_open_files` did, noted under every report.
    fd_note: String,
    results: Vec<ScenarioResult>,
}

impl Runner {
    /// Runs each case against its own freshly started server.
    async fn run_spawned(&mut self, cases: Vec<Case>, plaintext: bool, data: bool) -> Result<()> {
        // Declared first, so it is removed after every server using it has stopped.
        let workdir = spawn::Workdir::create()?;
        let tls = if plaintext {
            None
        } else {
            Some(spawned_tls(workdir.path())?)
        };
        let data_dir = data.then(|| workdir.path().join("data"));
        let search_dir = workdir.path().join("data");
        for case in cases {
            // search brings its own filled store, with or without --data.
            let data_dir = match case {
                Case::Search => Some(&search_dir),
                _ => data_dir.as_ref(),
            };
            if let Some(dir) = data_dir {
                spawn::fresh_dir(dir)?;
            }
            if case == Case::Search {
                search::prefill(&search_dir, self.opts.lines)?;
            }
            let mut server = spawn::SpawnedServer::start(
                workdir.path(),
                plaintext,
                data_dir.map(|d| d.as_path()),
            )
            .await?;
            let target = Target {
                addr: server.addr,
                more_addrs: Vec::new(),
                tls: tls.clone(),
                server_pid: Some(server.pid),
                spawned: true,
            };
            let mut result = match case {
                // rejoin restarts this server (--cut restart).
                Case::Rejoin => {
                    let run = rejoin::run(&target, &self.opts, Some(&mut server)).await;
                    self.outcome(&target, case, run)
                }
                _ => self.measure(&target, case).await,
            };
            if let Some(exit) = server.exited() {
                result.ok = false;
                result.problems.push(exit);
            }
            server.stop().await;
            if let Some(dir) = data_dir {
                // The search scenario stores nothing in its measured phase.
                let seconds = if case == Case::Search {
                    0.0
                } else {
                    result.seconds
                };
                result.notes.push(spawn::store_note(dir, seconds));
            }
            self.report(result)?;
        }
        Ok(())
    }

    /// Runs each case against a server that is already running.
    async fn run_against(&mut self, target: &Target, cases: Vec<Case>) -> Result<()> {
        for case in cases {
            let result = self.measure(target, case).await;
            self.report(result)?;
        }
        Ok(())
    }

    /// Runs one case; one that could not run is a failed result, so the
    /// cases after it still run.
    async fn measure(&self, target: &Target, case: Case) -> ScenarioResult {
        let run = run_scenario(target, case, &self.opts).await;
        self.outcome(target, case, run)
    }

    fn outcome(&self, target: &Target, case: Case, run: Result<ScenarioResult>) -> ScenarioResult {
        run.unwrap_or_else(|e| {
            ScenarioResult::failed(
                case.name(),
                target.transport(),
                target.spawned,
                format!("{e:#}"),
            )
        })
    }

    fn report(&mut self, mut result: ScenarioResult) -> Result<()> {
        result.notes.push(self.fd_note.clone());
        emit(&result, self.json)?;
        self.results.push(result);
        Ok(())
    }

    /// Fails, naming them, if any scenario failed.
    fn verdict(&self) -> Result<()> {
        let failed: Vec<&str> = self
            .results
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.scenario.as_str())
            .collect();
        if !failed.is_empty() {
            bail!(
                "{} of {} scenario(s) failed: {}",
                failed.len(),
                self.results.len(),
                failed.join(", ")
            );
        }
        Ok(())
    }
}

/// Fresh certificates in `workdir` for the spawned servers, and how the
/// clients trust them.
fn spawned_tls(workdir: &Path) -> Result<TlsTarget> {
    let dir = workdir.join(certs::DEFAULT_DIR);
    certs::generate(&GenOptions {
        dir: dir.clone(),
        extra_sans: Vec::new(),
        force: false,
    })
    .context("cannot make certificates for the spawned server")?;
    Ok(TlsTarget {
        config: tls::client_config(&dir.join(certs::CA_CERT))?,
        server_name: tls::server_name("127.0.0.1")?,
    })
}

async fn external_target(args: &BenchArgs) -> Result<Target> {
    let mut addrs = Vec::new();
    for one in args
        .addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let addr = tokio::net::lookup_host(one)
            .await
            .with_context(|| format!("cannot resolve {one}"))?
            .next()
            .ok_or_else(|| anyhow!("{one} resolves to no address"))?;
        addrs.push(addr);
    }
    if addrs.is_empty() {
        bail!("--addr: no address given");
    }
    let addr = addrs.remove(0);
    let first = args.addr.split(',').next().unwrap_or_default().trim();
    let tls = if args.plaintext {
        None
    } else {
        let name = args
            .server_name
            .clone()
            .unwrap_or_else(|| crate::client::host_of(first).to_owned());
        Some(TlsTarget {
            config: tls::client_config(&args.ca)?,
            server_name: tls::server_name(&name)?,
        })
    };
    Ok(Target {
        addr,
        more_addrs: addrs,
        tls,
        server_pid: args.server_pid,
        spawned: false,
    })
}

/// Each client is one open file: raises this process's limit to its hard
/// limit and refuses a run that cannot fit under it.
fn raise_open_files(clients: usize) -> Result<String> {
    /// Files the process needs besides its clients (runtime, child pipes).
    const SPARE: u64 = 64;
    let needed = clients as u64 + SPARE;
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .context("cannot read or raise the open-files limit")?;
    if limit < needed {
        bail!(
            "{clients} clients need about {needed} open files, but this process may open only \
             {limit} (its hard limit): raise it (ulimit -Hn, or LimitNOFILE), use fewer \
             --clients, or fill one room from several bench processes (--scenario big \
             --total)"
        );
    }
    Ok(format!(
        "open-files limit of this process raised to {limit}"
    ))
}

fn emit(result: &ScenarioResult, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", report::json_line(result))
    } else {
        writeln!(out, "{}", report::table(result))
    }
    .and_then(|()| out.flush())
    .context("cannot write the report to stdout")
}
