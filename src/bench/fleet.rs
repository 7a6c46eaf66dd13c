//! The clients of one scenario as a fleet: joining them (boundedly many
//! at a time), running their senders, waiting for every delivery, and
//! collecting what each reader saw.
//!
//! Every wait here has a limit: each join has its own timeout, deliveries
//! must keep making progress (`stall_timeout`), and the whole scenario has
//! a deadline (`timeout`).

use super::check::ReceiverLog;
use super::client::{self, BoxStream, Pace, ReaderEnd, ReaderReport, Shared, TlsTarget};
use super::{BenchOptions, Target};
use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::WriteHalf;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long one client may take from connect to `Connected to server!`.
pub(super) const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the readers and senders get to hand back their reports once
/// told to stop.
const WIND_DOWN: Duration = Duration::from_secs(10);

/// How often waits look at the counters when nothing wakes them sooner.
const POLL: Duration = Duration::from_millis(100);

/// How often the wait for a full room asks `/list`: a few lines a second
/// at most, well under a server's default rate limit.
const LIST_EVERY: Duration = Duration::from_millis(250);

/// How long one `/list` may take to be answered.
const LIST_WAIT: Duration = Duration::from_secs(10);

/// One joined client as the fleet holds it.
struct Member {
    /// Lent to the client's sender task while it sends.
    write: Option<WriteHalf<BoxStream>>,
    own_echo: watch::Receiver<u32>,
    reader: JoinHandle<ReaderReport>,
}

/// How the joins went.
#[derive(Debug, Clone, Default)]
pub(super) struct JoinStats {
    pub(super) handshake_us: Vec<u32>,
    pub(super) join_us: Vec<u32>,
    pub(super) resumed: usize,
    pub(super) elapsed: Duration,
    /// Coming back after a cut: each client's time from the cut to its
    /// `joined!`, and the attempts of all together.
    pub(super) back_us: Vec<u32>,
    pub(super) tries: Tries,
}

/// The attempts of clients coming back after a cut.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tries {
    pub(super) attempts: u64,
    /// Attempts refused or failed, and tried again.
    pub(super) failed: u64,
    /// Of those, refused because the nickname was still taken (by the
    /// session that was cut, not yet gone).
    pub(super) taken: u64,
}

/// Every client of one scenario, joined, each with its reader running.
pub(super) struct Fleet {
    members: Vec<Member>,
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
    pub(super) joins: JoinStats,
}

/// What a traffic phase produced.
pub(super) struct Traffic {
    /// Messages each sender sent.
    pub(super) sent: Vec<u32>,
    pub(super) send_errors: Vec<(usize, String)>,
    pub(super) waited: Waited,
    /// From the start of sending to the last delivery.
    pub(super) elapsed: Duration,
}

/// How the wait for the deliveries ended.
pub(super) enum Waited {
    Complete,
    Stalled,
    OutOfTime,
}

impl Fleet {
    /// Joins `clients` clients, `opts.concurrency` at a time. Each starts
    /// reading the moment it has joined, since the `joined!` lines of the
    /// clients after it start arriving at once.
    pub(super) async fn assemble(
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
            cut: None,
        };
        Self::gather(joiner, stop, clients, opts, deadline).await
    }

    /// Brings back `clients` clients (as `shared`'s nicknames) after their
    /// connections were cut at `cut`: all at once, each after the
    /// terminal client's backoff and trying again as it does, until the
    /// deadline.
    pub(super) async fn reassemble(
        target: &Target,
        tls: Option<TlsTarget>,
        shared: &Arc<Shared>,
        clients: usize,
        opts: &BenchOptions,
        deadline: Instant,
        cut: Instant,
    ) -> Result<Fleet> {
        let (stop, stop_rx) = watch::channel(false);
        let joiner = Joiner {
            target,
            tls,
            shared,
            stop: stop_rx,
            cut: Some(cut),
        };
        let all_at_once = BenchOptions {
            concurrency: clients,
            ..opts.clone()
        };
        Self::gather(joiner, stop, clients, &all_at_once, deadline).await
    }

    async fn gather(
        joiner: Joiner<'_>,
        stop: watch::Sender<bool>,
        clients: usize,
        opts: &BenchOptions,
        deadline: Instant,
    ) -> Result<Fleet> {
        let shared = joiner.shared;
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
                let limit = match joiner.cut {
                    None => JOIN_TIMEOUT.min(left),
                    Some(_) => left,
                };
                tasks.spawn(joiner.join(next, limit));
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
    pub(super) async fn traffic(
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
                clock: self.shared.clock,
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

    /// Client 0 sends one message, which every client must receive.
    pub(super) async fn check_message(
        &mut self,
        opts: &BenchOptions,
        deadline: Instant,
    ) -> Traffic {
        self.traffic(vec![(1, Pace::Window(0))], opts, deadline)
            .await
    }

    /// Client 0 asks `/list`; the room's size in the answer, within
    /// `limit`.
    pub(super) async fn ask_list(&mut self, limit: Duration) -> Result<usize> {
        use tokio::io::AsyncWriteExt;
        let mut listed = self.shared.listed.subscribe();
        let before = listed.borrow_and_update().answers;
        let write = self
            .members
            .first_mut()
            .and_then(|member| member.write.as_mut())
            .ok_or_else(|| anyhow!("no client to ask /list"))?;
        let ask = async {
            write.write_all(b"/list\n").await?;
            write.flush().await
        };
        let answer = async {
            ask.await.context("cannot send /list")?;
            let listed = listed
                .wait_for(|listed| listed.answers > before)
                .await
                .context("the readers ended")?;
            Ok::<_, anyhow::Error>(listed.here)
        };
        tokio::time::timeout(limit, answer)
            .await
            .map_err(|_| anyhow!("no answer to /list within {limit:?}"))?
    }

    /// Asks `/list` (one question at a time, [`LIST_EVERY`] apart) until
    /// the room holds `total`; the count then. `None` if every reader has
    /// its messages first: another process saw the room full and sent its
    /// line (after which its clients may already be leaving). Fails when
    /// the room stops growing for `stall_timeout` or the deadline passes.
    pub(super) async fn await_room(
        &mut self,
        total: usize,
        opts: &BenchOptions,
        deadline: Instant,
    ) -> Result<Option<usize>> {
        let progress = Progress::new(opts.progress, total as u64, "room");
        let (mut last, mut last_change) = (0, Instant::now());
        let clients = self.members.len();
        loop {
            if self.shared.finished.load(Ordering::Relaxed) >= clients {
                progress.finish();
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let here = self.ask_list(LIST_WAIT.min(left)).await?;
            progress.set(here as u64);
            if here >= total {
                progress.finish();
                return Ok(Some(here));
            }
            let now = Instant::now();
            if here != last {
                (last, last_change) = (here, now);
            } else if now.duration_since(last_change) >= opts.stall_timeout {
                bail!(
                    "the room stopped growing at {here} of {total} for {:?} (--stall-timeout)",
                    opts.stall_timeout
                );
            }
            if now + LIST_EVERY >= deadline {
                bail!(
                    "the scenario's time limit ({:?}, --timeout) ran out with {here} of {total} \
                     in the room",
                    opts.timeout
                );
            }
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep(LIST_EVERY) => {}
            }
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
    pub(super) async fn finish(self) -> Vec<ReaderReport> {
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
    /// When coming back: when the connections were cut.
    cut: Option<Instant>,
}

/// A client that joined, with its reader running, and how long it took.
struct NewMember {
    index: usize,
    member: Member,
    handshake: Duration,
    joined: Duration,
    resumed: bool,
    /// Coming back: from the cut to its `joined!`, and its attempts.
    back: Option<(Duration, Tries)>,
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
        let cut = self.cut;
        async move {
            let started = Instant::now();
            let (joined, back) = match cut {
                None => (client::join(addr, tls.as_ref(), &nick, limit).await, None),
                Some(cut) => match super::rejoin::come_back(addr, tls.as_ref(), &nick, limit).await
                {
                    Ok((joined, tries)) => (Ok(joined), Some((cut.elapsed(), tries))),
                    Err(e) => (Err(e), None),
                },
            };
            let mut joined = joined.map_err(|e| (index, nick.clone(), e))?;
            let channels = shared.plan.to_join(index);
            if !channels.is_empty() {
                let left = limit.saturating_sub(started.elapsed());
                client::enter_channels(&mut joined, &nick, &channels, left)
                    .await
                    .map_err(|e| (index, nick, e))?;
            }
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
                back,
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
        if let Some((back, tries)) = new.back {
            self.joins.back_us.push(micros(back));
            self.joins.tries.attempts += tries.attempts;
            self.joins.tries.failed += tries.failed;
            self.joins.tries.taken += tries.taken;
        }
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
