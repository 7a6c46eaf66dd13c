//! Running the scenarios: a fleet of joined clients per run, its traffic,
//! and turning what the readers saw into a [`ScenarioResult`] with its
//! verdict.
//!
//! Every wait has a limit (see the `fleet` module): a run that hits
//! one fails with a sentence saying which, instead of hanging.

use super::channels::ChannelPlan;
use super::check::{self, Problem};
use super::client::{self, Pace, ReaderEnd, ReaderReport, Shared, TlsTarget};
use super::fleet::{Fleet, JOIN_TIMEOUT, JoinStats, Traffic, Waited};
use super::report::{self, ScenarioResult};
use super::spawn;
use super::{BenchOptions, Case, Target};
use anyhow::{Result, anyhow, bail};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// At most this many problems are listed; the rest are counted.
const MAX_PROBLEMS: usize = 25;

pub async fn run(target: &Target, case: Case, opts: &BenchOptions) -> Result<ScenarioResult> {
    match case {
        Case::Fanout => fanout(target, opts).await,
        Case::Latency => latency(target, opts).await,
        Case::Join { resumption } => join(target, resumption, opts).await,
        Case::Idle => idle(target, opts).await,
        Case::Search => super::search::run(target, opts).await,
        Case::Rejoin => super::rejoin::run(target, opts, None).await,
        Case::Big => super::big::run(target, opts).await,
    }
}

async fn fanout(target: &Target, opts: &BenchOptions) -> Result<ScenarioResult> {
    let deadline = Instant::now() + opts.timeout;
    let clients = opts.clients_for(Case::Fanout);
    let plan = opts.channels.map_or(ChannelPlan::Lobby, ChannelPlan::Split);
    let shared = Arc::new(Shared::new(clients, opts.messages, opts.size).with_plan(plan));
    let mut fleet =
        Fleet::assemble(target, target.tls.clone(), &shared, clients, opts, deadline).await?;
    // Lines in flight are a matter of each room: a channel's senders share
    // its ring and its members' connections, not the others'.
    let members = match plan {
        ChannelPlan::Split(n) => clients.div_ceil(n.max(1)),
        ChannelPlan::Lobby | ChannelPlan::Each(_) => clients,
    };
    let window = opts.window.unwrap_or_else(|| default_window(members));
    let cpu = CpuMeter::start(target.server_pid);
    let traffic = fleet
        .traffic(
            vec![(opts.messages, Pace::Window(window)); clients],
            opts,
            deadline,
        )
        .await;
    let cpu = cpu.read();
    let reports = fleet.finish().await;

    let mut result = base_result(target, Case::Fanout, clients, clients, opts, cpu);
    record_traffic(&mut result, &shared, &traffic, &reports);
    result.notes.push(if window == 0 {
        "senders did not wait for their own messages to come back (--window 0)".to_string()
    } else {
        format!("each sender kept at most {window} of its own messages in flight (--window)")
    });
    if let Some(n) = opts.channels {
        result.channels = Some(n);
        result.notes.push(format!(
            "{clients} clients in {n} channel(s) of {} to {}, each sending to its own; every \
             line checked to reach its channel's members and nobody else",
            clients / n,
            clients.div_ceil(n)
        ));
    }
    judge(&mut result, target, opts, &reports, &traffic, plan);
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
    let cpu = cpu.read();
    let reports = fleet.finish().await;

    let mut result = base_result(target, Case::Latency, clients, senders, opts, cpu);
    record_traffic(&mut result, &shared, &traffic, &reports);
    result.notes.push(format!(
        "{senders} senders at {:.0} msg/s in total for {:.1} s; latency counts from the \
         scheduled send time",
        opts.rate,
        opts.duration.as_secs_f64()
    ));
    judge(
        &mut result,
        target,
        opts,
        &reports,
        &traffic,
        ChannelPlan::Lobby,
    );
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
    let cpu = cpu.read();
    let traffic = fleet.check_message(opts, deadline).await;
    let joins = fleet.joins.clone();
    let reports = fleet.finish().await;

    let mut result = base_result(target, Case::Join { resumption }, clients, 1, opts, cpu);
    record_joins(&mut result, &joins, target);
    record_check(&mut result, &shared, &traffic);
    judge(
        &mut result,
        target,
        opts,
        &reports,
        &traffic,
        ChannelPlan::Lobby,
    );
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
    // Every client joins the same channels, then goes back to `#lobby`,
    // where the check message goes.
    let plan = ChannelPlan::Each(opts.channels_each);
    let shared = Arc::new(Shared::new(1, 1, opts.size).with_plan(plan));
    let cpu = CpuMeter::start(Some(pid));
    let mut fleet =
        Fleet::assemble(target, target.tls.clone(), &shared, clients, opts, deadline).await?;
    // The check message comes after every `joined!` line in the room's one
    // order: once all have it, the server has written everything it owed.
    let traffic = fleet.check_message(opts, deadline).await;
    let after = spawn::rss_bytes(pid)?;
    let cpu = cpu.read();
    let joins = fleet.joins.clone();
    let reports = fleet.finish().await;

    let mut result = base_result(target, Case::Idle, clients, 1, opts, cpu);
    record_joins(&mut result, &joins, target);
    record_check(&mut result, &shared, &traffic);
    result.server_rss_before_bytes = Some(before);
    result.server_rss_after_bytes = Some(after);
    result.server_rss_per_participant_bytes =
        Some(after.saturating_sub(before) as f64 / clients as f64);
    if opts.channels_each > 0 {
        result.channels_each = Some(opts.channels_each);
        result.notes.push(format!(
            "every client joined the same {} channel(s) besides #lobby, then went back to \
             #lobby; memory per participant includes its channel memberships",
            opts.channels_each
        ));
    }
    judge(&mut result, target, opts, &reports, &traffic, plan);
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

/// A sender's window, for a room (or channel) of `members` senders:
/// enough to keep the pipeline full, small enough that its senders together
/// have about 2048 lines in flight: what a client that reads while it
/// writes does. (`--window 0` floods instead; the server's default backlog
/// of 64 MiB holds such a burst too.)
fn default_window(members: usize) -> u32 {
    (2048 / members.max(1)).clamp(4, 256) as u32
}

pub(super) fn base_result(
    target: &Target,
    case: Case,
    clients: usize,
    senders: usize,
    opts: &BenchOptions,
    cpu: CpuTimes,
) -> ScenarioResult {
    let mut result = ScenarioResult::new(case.name(), target.transport(), target.spawned);
    result.clients = clients;
    result.senders = senders;
    result.message_bytes = opts.size;
    result.server_cpu_s = cpu.server;
    result.bench_cpu_s = cpu.bench;
    result
}

pub(super) fn record_traffic(
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

pub(super) fn record_check(result: &mut ScenarioResult, shared: &Shared, traffic: &Traffic) {
    result.messages_sent = traffic.sent.iter().map(|&n| u64::from(n)).sum();
    result.deliveries = shared.deliveries.load(Ordering::Relaxed);
    result.expected_deliveries = traffic
        .sent
        .iter()
        .enumerate()
        .map(|(sender, &n)| u64::from(n) * shared.plan.audience(sender, result.clients))
        .sum();
}

pub(super) fn record_joins(result: &mut ScenarioResult, joins: &JoinStats, target: &Target) {
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
pub(super) fn judge(
    result: &mut ScenarioResult,
    target: &Target,
    opts: &BenchOptions,
    reports: &[ReaderReport],
    traffic: &Traffic,
    plan: ChannelPlan,
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
    problems.extend(check::verify_channels(&clean, &traffic.sent, plan));
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

/// CPU time of the server (if its pid is known) and of this process over
/// a phase.
pub(super) struct CpuMeter {
    server: Option<(u32, f64)>,
    bench: Option<f64>,
}

impl CpuMeter {
    pub(super) fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            server: server_pid.and_then(|pid| Some((pid, spawn::cpu_seconds(pid).ok()?))),
            bench: spawn::cpu_seconds(std::process::id()).ok(),
        }
    }

    pub(super) fn read(&self) -> CpuTimes {
        CpuTimes {
            server: self
                .server
                .and_then(|(pid, start)| Some(spawn::cpu_seconds(pid).ok()? - start)),
            bench: self
                .bench
                .and_then(|start| Some(spawn::cpu_seconds(std::process::id()).ok()? - start)),
        }
    }
}

/// CPU seconds spent over a phase; `None` where it could not be read.
pub(super) struct CpuTimes {
    pub(super) server: Option<f64>,
    pub(super) bench: Option<f64>,
}
