//! Running the scenarios: assembling a fleet of joined clients, driving
//! their traffic, waiting (boundedly) for every delivery, and turning what
//! the readers saw into a [`ScenarioResult`] with its verdict.
//!
//! Every wait here has a limit: each join has its own timeout, deliveries
//! must keep making progress (`stall_timeout`), and the whole scenario has
//! a deadline (`timeout`). A run that hits one fails with a sentence saying
//! which, instead of hanging.

use super::check::{self, Problem, ReceiverLog};
use super::client::{self, BoxStream, Pace, ReaderEnd, ReaderReport, Shared, TlsTarget};
use super::report::{self, ScenarioResult};
use super::spawn;
use super::{BenchOptions, Case, Target};
use anyhow::{Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::WriteHalf;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long one client may take from connect to `Connected to server!`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the readers and senders get to hand back their reports once
/// told to stop.
const WIND_DOWN: Duration = Duration::from_secs(10);

/// How often waits look at the counters when nothing wakes them sooner.
const POLL: Duration = Duration::from_millis(100);

/// At most this many problems are listed; the rest are counted.
const MAX_PROBLEMS: usize = 25;

pub async fn run(target: &Target, case: Case, opts: &BenchOptions) -> Result<ScenarioResult> {
    match case {
        Case::Fanout => fanout(target, opts).await,
        Case::Latency => latency(target, opts).await,
        Case::Join { resumption } => join(target, resumption, opts).await,
        Case::Idle => idle(target, opts).await,
    }
}

async fn fanout(target: &Target, opts: &BenchOptions) -> Result<ScenarioResult> {
    let deadline = Instant::now() + opts.timeout;
    let clients = opts.clients_for(Case::Fanout);
    let shared = Arc::new(Shared::new(clients, opts.messages, opts.size));
    let mut fleet =
        Fleet::assemble(target, target.tls.clone(), &shared, clients, opts, deadline).await?;
    let window = opts.window.unwrap_or_else(|| default_window(clients));
    let cpu = CpuMeter::start(target.server_pid);
    let traffic = fleet
        .traffic(
            vec![(opts.messages, Pace::Window(window)); clients],
            opts,
            deadline,
        )
        .await;
    let (server_cpu, bench_cpu) = cpu.read();
    let reports = fleet.finish().await;

    let mut result = base_result(target, Case::Fanout, clients, clients, opts);
    result.server_cpu_s = server_cpu;
    result.bench_cpu_s = bench_cpu;
    record_traffic(&mut result, &shared, &traffic, &reports);
    result.notes.push(if window == 0 {
        "senders did not wait for their own messages to come back (--window 0)".to_string()
    } else {
        format!("each sender kept at most {window} of its own messages in flight (--window)")
    });
    judge(&mut result, target, opts, &reports, &traffic);
    if !target.spawned && result.seconds > 0.0 {
        let per_sender = f64::from(opts.messages) / result.seconds;
        if per_sender < 15.0 {
            result.notes.push(format!(
                "senders averaged {per_sender:.1} msg/s, near the server's default rate limit \
                 (10/s): this may measure the limit, not the server (--rate-limit off)"
            ));
        }
    }
    Ok(result)
}

async fn latency(target: &Target, opts: &BenchOptions) -> Result<ScenarioResult> {
    let deadline = Instant::now() + opts.timeout;
    let clients = opts.clients_for(Case::Latency);
    let senders = opts.senders.clamp(1, clients);
    let per_sender_rate = opts.rate / senders as f64;
    let interval = Duration::from_secs_f64(1.0 / per_sender_rate);
    let count = ((opts.duration.as_secs_f64() * per_sender_rate).round() as u32).max(1);
    let shared = Arc::new(Shared::new(senders, count, opts.size));
    let mut fleet =
        Fleet::assemble(target, target.tls.clone(), &shared, clients, opts, deadline).await?;
    // Senders start shortly and evenly spread over one interval, so the
    // total rate is steady rather than ten-message bursts.
    let base = Instant::now() + Duration::from_millis(50);
    let plans = (0..senders)
        .map(|i| {
            let first_at = base + interval.mul_f64(i as f64 / senders as f64);
            (count, Pace::Fixed { first_at, interval })
        })
        .collect();
    let cpu = CpuMeter::start(target.server_pid);
    let traffic = fleet.traffic(plans, opts, deadline).await;
    let (server_cpu, bench_cpu) = cpu.read();
    let reports = fleet.finish().await;

    let mut result = base_result(target, Case::Latency, clients, senders, opts);
    result.server_cpu_s = server_cpu;
    result.bench_cpu_s = bench_cpu;
    record_traffic(&mut result, &shared, &traffic, &reports);
    result.notes.push(format!(
        "{senders} senders at {:.0} msg/s in total for {:.1} s; latency counts from the \
         scheduled send time",
        opts.rate,
        opts.duration.as_secs_f64()
    ));
    judge(&mut result, target, opts, &reports, &traffic);
    Ok(result)
}

async fn join(target: &Target, resumption: bool, opts: &BenchOptions) -> Result<ScenarioResult> {
    let deadline = Instant::now() + opts.timeout;
    let clients = opts.clients_for(Case::Join { resumption });
    // A fresh session store per run, so every run starts cold the same way.
    let tls = target.tls.clone().map(|tls| {
        let mut config = (*tls.config).clone();
        config.resumption = if resumption {
            rustls::client::Resumption::in_memory_sessions(256)
        } else {
            rustls::client::Resumption::disabled()
        };
        TlsTarget {
            config: Arc::new(config),
            server_name: tls.server_name,
        }
    });
    // One message after everybody joined proves every client is still in
    // the room and in step.
    let shared = Arc::new(Shared::new(1, 1, opts.size));
    let cpu = CpuMeter::start(target.server_pid);
    let mut fleet = Fleet::assemble(target, tls, &shared, clients, opts, deadline).await?;
    let (server_cpu, bench_cpu) = cpu.read();
    let traffic = fleet
        .traffic(vec![(1, Pace::Window(0))], opts, deadline)
        .await;
    let joins = fleet.joins.clone();
    let reports = fleet.finish().await;

    let mut result = base_result(target, Case::Join { resumption }, clients, 1, opts);
    result.server_cpu_s = server_cpu;
    result.bench_cpu_s = bench_cpu;
    record_joins(&mut result, &joins, target);
    record_check(&mut result, &shared, &traffic);
    judge(&mut result, target, opts, &reports, &traffic);
    Ok(result)
}

async fn idle(target: &Target, opts: &BenchOptions) -> Result<ScenarioResult> {
    let deadline = Instant::now() + opts.timeout;
    let clients = opts.clients_for(Case::Idle);
    let pid = target.server_pid.ok_or_else(|| {
        anyhow!(
            "idle measures the server's memory: use --spawn, or give the pid of a server on \
             this machine with --server-pid"
        )
    })?;
    warm_up(target, deadline).await?;
    let before = spawn::rss_bytes(pid)?;
    let shared = Arc::new(Shared::new(1, 1, opts.size));
    let cpu = CpuMeter::start(Some(pid));
    let mut fleet =
        Fleet::assemble(target, target.tls.clone(), &shared, clients, opts, deadline).await?;
    // The check message comes after every `joined!` line in the room's one
    // order: once all have it, the server has written everything it owed.
    let traffic = fleet
        .traffic(vec![(1, Pace::Window(0))], opts, deadline)
        .await;
    let after = spawn::rss_bytes(pid)?;
    let (server_cpu, bench_cpu) = cpu.read();
    let joins = fleet.joins.clone();
    let reports = fleet.finish().await;

    let mut result = base_result(target, Case::Idle, clients, 1, opts);
    result.server_cpu_s = server_cpu;
    result.bench_cpu_s = bench_cpu;
    record_joins(&mut result, &joins, target);
    record_check(&mut result, &shared, &traffic);
    result.server_rss_before_bytes = Some(before);
    result.server_rss_after_bytes = Some(after);
    result.server_rss_per_participant_bytes =
        Some(after.saturating_sub(before) as f64 / clients as f64);
    judge(&mut result, target, opts, &reports, &traffic);
    Ok(result)
}

/// One client joins and quits before the idle scenario reads its baseline,
/// so that what a server sets up once, for its first connection (the
/// crypto library's tables, the runtime's and the allocator's first pages:
/// about 1.7 MiB of resident memory), is not counted as memory per
/// participant. Its session has ended once the server closes the
/// connection.
async fn warm_up(target: &Target, deadline: Instant) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let nick = super::message::NickScheme::new().nick(0);
    let left = deadline.saturating_duration_since(Instant::now());
    let mut joined = client::join(
        target.addr,
        target.tls.as_ref(),
        &nick,
        JOIN_TIMEOUT.min(left),
    )
    .await
    .map_err(|e| anyhow!("the warm-up client could not join: {e}"))?;
    let quit = async {
        joined.stream.write_all(b"/quit\n").await?;
        joined.stream.flush().await?;
        let mut sink = [0u8; 1024];
        while joined.stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout_at(deadline.into(), quit).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("the warm-up client could not quit: {e}"),
        Err(_) => bail!("timed out waiting for the warm-up client's session to end"),
    }
}

/// A sender's window: enough to keep the pipeline full, small enough that
/// all senders together have about 2048 lines in flight: what a client that
/// reads while it writes does. (`--window 0` floods instead; the server's
/// default backlog of 64 MiB holds such a burst too.)
fn default_window(clients: usize) -> u32 {
    (2048 / clients.max(1)).clamp(4, 256) as u32
}

fn base_result(
    target: &Target,
    case: Case,
    clients: usize,
    senders: usize,
    opts: &BenchOptions,
) -> ScenarioResult {
    let mut result = ScenarioResult::new(case.name(), target.transport(), target.spawned);
    result.clients = clients;
    result.senders = senders;
    result.message_bytes = opts.size;
    result
}

fn record_traffic(
    result: &mut ScenarioResult,
    shared: &Shared,
    traffic: &Traffic,
    reports: &[ReaderReport],
) {
    record_check(result, shared, traffic);
    result.seconds = traffic.elapsed.as_secs_f64();
    if result.seconds > 0.0 {
        result.deliveries_per_s = Some(result.deliveries as f64 / result.seconds);
    }
    result.latency_us = report::percentiles(reports.iter().map(|r| r.latencies_us.as_slice()));
}

fn record_check(result: &mut ScenarioResult, shared: &Shared, traffic: &Traffic) {
    result.messages_sent = traffic.sent.iter().map(|&n| u64::from(n)).sum();
    result.deliveries = shared.deliveries.load(Ordering::Relaxed);
    result.expected_deliveries = result.messages_sent * result.clients as u64;
}

fn record_joins(result: &mut ScenarioResult, joins: &JoinStats, target: &Target) {
    result.seconds = joins.elapsed.as_secs_f64();
    if result.seconds > 0.0 {
        result.joins_per_s = Some(result.clients as f64 / result.seconds);
    }
    result.handshake_us = report::percentiles([joins.handshake_us.as_slice()]);
    result.join_us = report::percentiles([joins.join_us.as_slice()]);
    if target.tls.is_some() {
        result.resumed_handshakes = Some(joins.resumed);
    }
}

/// The verdict: how each reader ended, what the checker found, and whether
/// the run completed.
fn judge(
    result: &mut ScenarioResult,
    target: &Target,
    opts: &BenchOptions,
    reports: &[ReaderReport],
    traffic: &Traffic,
) {
    let mut problems = Vec::new();
    let mut clean = Vec::with_capacity(reports.len());
    for report in reports {
        match &report.end {
            ReaderEnd::Stopped => clean.push(report.log.clone()),
            ReaderEnd::Told(line) => problems.push(Problem::Disconnected {
                client: report.log.client,
                reason: format!("the server said {line:?}"),
            }),
            ReaderEnd::Closed => problems.push(Problem::Disconnected {
                client: report.log.client,
                reason: "the server closed the connection".into(),
            }),
            ReaderEnd::Failed(why) => problems.push(Problem::Disconnected {
                client: report.log.client,
                reason: why.clone(),
            }),
        }
    }
    for (client, reason) in &traffic.send_errors {
        problems.push(Problem::SendFailed {
            client: *client,
            reason: reason.clone(),
        });
    }
    problems.extend(check::verify(&clean, &traffic.sent));
    let hint = if target.spawned {
        ""
    } else {
        "; a running server limits each participant to 10 msg/s by default (start it with \
         --rate-limit off, or use --spawn)"
    };
    let progress = format!(
        "{} of {} deliveries",
        result.deliveries, result.expected_deliveries
    );
    match traffic.waited {
        Waited::Complete => {}
        Waited::Stalled => problems.push(Problem::Incomplete(format!(
            "deliveries stalled: nothing new for {:?} after {progress}{hint}",
            opts.stall_timeout
        ))),
        Waited::OutOfTime => problems.push(Problem::Incomplete(format!(
            "the scenario's time limit ({:?}, --timeout) ran out after {progress}{hint}",
            opts.timeout
        ))),
    }
    result.ok = problems.is_empty();
    let total = problems.len();
    result.problems = problems
        .iter()
        .take(MAX_PROBLEMS)
        .map(ToString::to_string)
        .collect();
    if total > MAX_PROBLEMS {
        result
            .problems
            .push(format!("... and {} more problems", total - MAX_PROBLEMS));
    }
}

/// One joined client as the scenario holds it.
struct Member {
    /// Lent to the client's sender task while it sends.
    write: Option<WriteHalf<BoxStream>>,
    own_echo: watch::Receiver<u32>,
    reader: JoinHandle<ReaderReport>,
}

/// How the joins went.
#[derive(Debug, Clone, Default)]
struct JoinStats {
    handshake_us: Vec<u32>,
    join_us: Vec<u32>,
    resumed: usize,
    elapsed: Duration,
}

/// Every client of one scenario, joined, each with its reader running.
struct Fleet {
    members: Vec<Member>,
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
    joins: JoinStats,
}

/// What a traffic phase produced.
struct Traffic {
    /// Messages each sender sent.
    sent: Vec<u32>,
    send_errors: Vec<(usize, String)>,
    waited: Waited,
    /// From the start of sending to the last delivery.
    elapsed: Duration,
}

enum Waited {
    Complete,
    Stalled,
    OutOfTime,
}

impl Fleet {
    /// Joins `clients` clients, `opts.concurrency` at a time. Each starts
    /// reading the moment it has joined, since the `joined!` lines of the
    /// clients after it start arriving at once.
    async fn assemble(
        target: &Target,
        tls: Option<TlsTarget>,
        shared: &Arc<Shared>,
        clients: usize,
        opts: &BenchOptions,
        deadline: Instant,
    ) -> Result<Fleet> {
        let (stop, stop_rx) = watch::channel(false);
        let joiner = Joiner {
            target,
            tls,
            shared,
            stop: stop_rx,
        };
        let mut roster = Roster::new(clients, opts.progress);
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        let mut next = 0;
        while roster.done < clients {
            while next < clients && tasks.len() < opts.concurrency.max(1) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!(
                        "the scenario's time limit ({:?}, --timeout) ran out while joining: \
                         {} of {clients} joined",
                        opts.timeout,
                        roster.done
                    );
                }
                tasks.spawn(joiner.join(next, JOIN_TIMEOUT.min(left)));
                next += 1;
            }
            let Some(finished) = tasks.join_next().await else {
                break;
            };
            // On an error, dropping `stop` and the roster's members ends
            // the readers and closes every connection made so far.
            roster.admit(finished)?;
        }
        let (members, joins) = roster.close(started.elapsed())?;
        Ok(Fleet {
            members,
            stop,
            shared: shared.clone(),
            joins,
        })
    }

    /// Starts one sender per plan (client `i` follows `plans[i]`) and waits
    /// until every reader has every sender's last message, deliveries stall,
    /// or the deadline passes.
    async fn traffic(
        &mut self,
        plans: Vec<(u32, Pace)>,
        opts: &BenchOptions,
        deadline: Instant,
    ) -> Traffic {
        let start_us = self.shared.now_us();
        let mut senders = Vec::with_capacity(plans.len());
        let mut send_errors = Vec::new();
        for (index, (count, pace)) in plans.into_iter().enumerate() {
            let Some(mut write) = self.members.get_mut(index).and_then(|m| m.write.take()) else {
                send_errors.push((index, "no such client to send from".to_string()));
                continue;
            };
            let sender = client::Sender {
                index: index as u32,
                count,
                pace,
                size: self.shared.size,
                epoch: self.shared.epoch,
                own_echo: self.members[index].own_echo.clone(),
                stop: self.stop.subscribe(),
            };
            senders.push((
                index,
                tokio::spawn(async move {
                    let report = sender.send(&mut write).await;
                    (write, report)
                }),
            ));
        }
        let waited = self.await_readers(opts, deadline).await;
        if !matches!(waited, Waited::Complete) {
            self.stop.send_replace(true);
        }
        let mut sent = vec![0; senders.len()];
        let wind_down = tokio::time::Instant::now() + WIND_DOWN;
        for (index, task) in senders {
            match tokio::time::timeout_at(wind_down, task).await {
                Ok(Ok((write, report))) => {
                    self.members[index].write = Some(write);
                    sent[index] = report.sent;
                    if let Some(e) = report.error {
                        send_errors.push((index, e));
                    }
                }
                Ok(Err(e)) => send_errors.push((index, format!("sender task failed: {e}"))),
                Err(_) => send_errors.push((index, "sender did not stop".into())),
            }
        }
        let last_us = self.shared.last_delivery_us.load(Ordering::Relaxed);
        Traffic {
            sent,
            send_errors,
            waited,
            elapsed: Duration::from_micros(last_us.saturating_sub(start_us)),
        }
    }

    async fn await_readers(&self, opts: &BenchOptions, deadline: Instant) -> Waited {
        let clients = self.members.len();
        let shared = &self.shared;
        let progress = Progress::new(opts.progress, 0, "delivering");
        let mut last_count = shared.deliveries.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        loop {
            if shared.finished.load(Ordering::Relaxed) >= clients {
                progress.finish();
                return Waited::Complete;
            }
            let now = Instant::now();
            let count = shared.deliveries.load(Ordering::Relaxed);
            progress.set(count);
            if count != last_count {
                (last_count, last_change) = (count, now);
            } else if now.duration_since(last_change) >= opts.stall_timeout {
                progress.finish();
                return Waited::Stalled;
            }
            if now >= deadline {
                progress.finish();
                return Waited::OutOfTime;
            }
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Stops every reader and collects what each saw; the connections
    /// close as the fleet goes.
    async fn finish(self) -> Vec<ReaderReport> {
        self.stop.send_replace(true);
        let wind_down = tokio::time::Instant::now() + WIND_DOWN;
        let mut reports = Vec::with_capacity(self.members.len());
        for (client, member) in self.members.into_iter().enumerate() {
            let end = match tokio::time::timeout_at(wind_down, member.reader).await {
                Ok(Ok(report)) => {
                    reports.push(report);
                    continue;
                }
                Ok(Err(e)) => format!("reader task failed: {e}"),
                Err(_) => "reader did not stop".to_string(),
            };
            reports.push(ReaderReport {
                log: ReceiverLog::new(client, self.shared.senders, self.shared.max_messages),
                latencies_us: Vec::new(),
                end: ReaderEnd::Failed(end),
            });
        }
        reports
    }
}

/// What every join of one fleet shares: where to connect and how, and
/// what its reader needs.
struct Joiner<'a> {
    target: &'a Target,
    tls: Option<TlsTarget>,
    shared: &'a Arc<Shared>,
    stop: watch::Receiver<bool>,
}

/// A client that joined, with its reader running, and how long it took.
struct NewMember {
    index: usize,
    member: Member,
    handshake: Duration,
    joined: Duration,
    resumed: bool,
}

/// A client that could not join: its index, nickname and why.
type JoinFailure = (usize, String, client::JoinError);

impl Joiner<'_> {
    /// The join of client `index`, within `limit`, ready to spawn.
    fn join(
        &self,
        index: usize,
        limit: Duration,
    ) -> impl Future<Output = Result<NewMember, JoinFailure>> + Send + 'static {
        let nick = self.shared.nicks.nick(index);
        let addr = self.target.addr_for(index);
        let (tls, shared, stop) = (self.tls.clone(), self.shared.clone(), self.stop.clone());
        async move {
            let joined = client::join(addr, tls.as_ref(), &nick, limit)
                .await
                .map_err(|e| (index, nick, e))?;
            let (read, write) = tokio::io::split(joined.stream);
            let (echo_tx, own_echo) = watch::channel(0);
            let reader = client::spawn_reader(index, read, joined.framer, shared, echo_tx, stop);
            Ok(NewMember {
                index,
                member: Member {
                    write: Some(write),
                    own_echo,
                    reader,
                },
                handshake: joined.handshake,
                joined: joined.joined,
                resumed: joined.resumed,
            })
        }
    }
}

/// The fleet as it joins: each member in its client's slot, in whatever
/// order the joins finish, and the join timings.
struct Roster {
    slots: Vec<Option<Member>>,
    joins: JoinStats,
    done: usize,
    progress: Progress,
}

impl Roster {
    fn new(clients: usize, progress: bool) -> Roster {
        Roster {
            slots: (0..clients).map(|_| None).collect(),
            joins: JoinStats {
                handshake_us: Vec::with_capacity(clients),
                join_us: Vec::with_capacity(clients),
                ..JoinStats::default()
            },
            done: 0,
            progress: Progress::new(progress, clients as u64, "joining"),
        }
    }

    /// Takes in one finished join; any failure fails the whole fleet.
    fn admit(
        &mut self,
        finished: Result<Result<NewMember, JoinFailure>, tokio::task::JoinError>,
    ) -> Result<()> {
        let new = match finished {
            Ok(Ok(new)) => new,
            Ok(Err((index, nick, e))) => bail!(
                "client {index} ({nick}) could not join ({} had): {e}",
                self.done
            ),
            Err(e) => bail!("a joining task failed: {e}"),
        };
        self.slots[new.index] = Some(new.member);
        self.joins.handshake_us.push(micros(new.handshake));
        self.joins.join_us.push(micros(new.joined));
        self.joins.resumed += usize::from(new.resumed);
        self.done += 1;
        self.progress.set(self.done as u64);
        Ok(())
    }

    /// The members in client order, once every client has joined.
    fn close(mut self, elapsed: Duration) -> Result<(Vec<Member>, JoinStats)> {
        self.joins.elapsed = elapsed;
        self.progress.finish();
        let clients = self.slots.len();
        let members = self.slots.into_iter().flatten().collect::<Vec<_>>();
        if members.len() != clients {
            bail!("only {} of {clients} clients joined", members.len());
        }
        Ok((members, self.joins))
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// CPU time of the server (if its pid is known) and of this process over
/// a phase.
struct CpuMeter {
    server: Option<(u32, f64)>,
    bench: Option<f64>,
}

impl CpuMeter {
    fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            server: server_pid.and_then(|pid| Some((pid, spawn::cpu_seconds(pid).ok()?))),
            bench: spawn::cpu_seconds(std::process::id()).ok(),
        }
    }

    fn read(&self) -> (Option<f64>, Option<f64>) {
        let server = self
            .server
            .and_then(|(pid, start)| Some(spawn::cpu_seconds(pid).ok()? - start));
        let bench = self
            .bench
            .and_then(|start| Some(spawn::cpu_seconds(std::process::id()).ok()? - start));
        (server, bench)
    }
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(enabled: bool, len: u64, what: &str) -> Progress {
        if !enabled {
            return Progress(None);
        }
        let len = (len > 0).then_some(len);
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
        let template = if len.is_some() {
            "{msg:>10} [{bar:30}] {pos}/{len} {elapsed}"
        } else {
            "{msg:>10} {pos} {per_sec} {elapsed}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(what.to_owned());
        Progress(Some(bar))
    }

    fn set(&self, position: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(position);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
