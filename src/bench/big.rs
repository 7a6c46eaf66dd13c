//! The big scenario: one room filled by one or several bench processes
//! (each has its own open-files limit; one per node of a `--cluster`
//! room), then one line to everybody.
//!
//! Each process joins its clients to its `--addr`, numbered in one
//! numbering shared through `--run` and `--first-client`, then asks `/list`
//! (which counts the whole cluster room) until the room holds `--total`.
//! The process with `--broadcast` then sends one line from its first
//! client, and every process waits until each of its clients has it. The
//! line carries its sending time on the machine's wall clock, so each
//! process can tell how long it took to reach its own clients.

use super::channels::ChannelPlan;
use super::client::{Clock, Shared};
use super::fleet::Fleet;
use super::message::NickScheme;
use super::report::{self, ScenarioResult};
use super::scenario::{self, CpuMeter};
use super::spawn;
use super::{BenchArgs, BenchOptions, Case, Target};
use anyhow::{Result, bail};
use std::sync::Arc;
use std::time::Instant;

/// This process's part of a room filled by several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPart {
    /// The whole room's size.
    pub total: usize,
    /// The token every process of the room shares (`None`: one process,
    /// a token of its own).
    pub run: Option<String>,
    /// The number of this process's first client in the whole room.
    pub first: usize,
    /// Whether this process sends the line.
    pub broadcast: bool,
}

/// The big scenario's options from the command line, checked; `None` when
/// it is not chosen and none of them is given.
pub(super) fn part_from_args(args: &BenchArgs, chosen: bool) -> Result<Option<RoomPart>> {
    let given =
        args.total.is_some() || args.run.is_some() || args.first_client > 0 || args.broadcast;
    if !chosen {
        if given {
            bail!("--total, --run, --first-client and --broadcast are for --scenario big");
        }
        return Ok(None);
    }
    let total = args.total.or(args.clients).unwrap_or(1000);
    let clients = args.clients.unwrap_or(total);
    if total == 0 || clients == 0 {
        bail!("--total and --clients must be at least 1");
    }
    if args.first_client + clients > total {
        bail!(
            "--first-client {} and --clients {clients} go past the room's --total {total}",
            args.first_client
        );
    }
    let alone = clients == total;
    if !alone && args.run.is_none() {
        bail!(
            "a room of {total} filled by several bench processes ({clients} here) needs the same \
             --run TOKEN for each"
        );
    }
    if let Some(run) = &args.run {
        NickScheme::shared(run, args.first_client).map_err(|e| anyhow::anyhow!("--run: {e}"))?;
    }
    let broadcast = args.broadcast || alone;
    if broadcast && args.first_client != 0 {
        bail!(
            "--broadcast is for the process whose clients start the numbering (--first-client 0)"
        );
    }
    Ok(Some(RoomPart {
        total,
        run: args.run.clone(),
        first: args.first_client,
        broadcast,
    }))
}

/// Runs this process's part of the big scenario against `target`.
pub(super) async fn run(target: &Target, opts: &BenchOptions) -> Result<ScenarioResult> {
    let deadline = Instant::now() + opts.timeout;
    let clients = opts.clients_for(Case::Big);
    let part = opts.room.clone().unwrap_or(RoomPart {
        total: clients,
        run: None,
        first: 0,
        broadcast: true,
    });
    let nicks = match &part.run {
        Some(run) => NickScheme::shared(run, part.first).map_err(anyhow::Error::msg)?,
        None => NickScheme::new(),
    };
    let shared = Arc::new(Shared::new(1, 1, opts.size).named(nicks, Clock::wall()));
    let rss = |pid: u32| spawn::rss_bytes(pid).ok();
    let rss_before = target.server_pid.and_then(rss);
    let cpu = CpuMeter::start(target.server_pid);
    let started_us = shared.now_us();
    let mut fleet =
        Fleet::assemble(target, target.tls.clone(), &shared, clients, opts, deadline).await?;
    let listed = fleet.await_room(part.total, opts, deadline).await?;
    let full_us = shared.now_us();
    let rss_after = target.server_pid.and_then(rss);
    let traffic = if part.broadcast {
        fleet.check_message(opts, deadline).await
    } else {
        let mut traffic = fleet.traffic(Vec::new(), opts, deadline).await;
        // Another process sends it: one line, from the room's client 0.
        traffic.sent = vec![1];
        traffic
    };
    let cpu = cpu.read();
    let joins = fleet.joins.clone();
    let reports = fleet.finish().await;

    let senders = usize::from(part.broadcast);
    let mut result = scenario::base_result(target, Case::Big, clients, senders, opts, cpu);
    scenario::record_joins(&mut result, &joins, target);
    scenario::record_check(&mut result, &shared, &traffic);
    result.latency_us = report::percentiles(reports.iter().map(|r| r.latencies_us.as_slice()));
    result.broadcast_s = result.latency_us.map(|p| p.max as f64 / 1e6);
    record_room(&mut result, &shared, &part, listed, started_us..full_us);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        result.server_rss_before_bytes = Some(before);
        result.server_rss_after_bytes = Some(after);
        result.server_rss_per_participant_bytes =
            Some(after.saturating_sub(before) as f64 / clients as f64);
    }
    scenario::judge(
        &mut result,
        target,
        opts,
        &reports,
        &traffic,
        ChannelPlan::Lobby,
    );
    Ok(result)
}

/// The room's size as `/list` told it (`listed`), and how long it took
/// to be full: from this process's start until `/list` said so (the end
/// of `filling`), or until the line was sent if it came first (the line is
/// sent once the room is full).
fn record_room(
    result: &mut ScenarioResult,
    shared: &Shared,
    part: &RoomPart,
    listed: Option<usize>,
    filling: std::ops::Range<u64>,
) {
    result.room_size = listed;
    result.room_total = Some(part.total);
    let sent_us = result.latency_us.map(|p| {
        let last = shared
            .last_delivery_us
            .load(std::sync::atomic::Ordering::Relaxed);
        last.saturating_sub(p.max)
    });
    let full_us = match listed {
        Some(_) => Some(filling.end),
        None => sent_us,
    };
    result.fill_s = full_us.map(|full| full.saturating_sub(filling.start) as f64 / 1e6);
    if listed.is_none() {
        result.notes.push(
            "the line came before /list counted the whole room here: the room was full when \
             it was sent, which is when it counts as full"
                .to_owned(),
        );
    }
    let clients = result.clients;
    result.notes.push(format!(
        "clients {} to {} of a room of {}, {} process sent the line; its time is on this \
         machine's wall clock, from its sending to each client's receipt",
        part.first,
        part.first + clients.saturating_sub(1),
        part.total,
        if part.broadcast { "this" } else { "another" },
    ));
}
