//! The rejoin scenario: a reconnect storm. Every client joins, every
//! connection is cut at once (the server killed and started again on the
//! same port, or the bench closing them all), and every client comes back
//! as the same nickname by the terminal client's own rule
//! ([`crate::client::reconnect`]): a jittered backoff before each attempt,
//! and a refusal of the moment (a nickname still held by the session that
//! was cut, a server not yet listening) tried again.
//!
//! It reports the time from the cut until everybody is back, each client's
//! time back, the attempts, and the server's CPU time in the storm; then
//! `/list` must count every client once, and one message must reach each.

use super::client::{self, JoinError, Joined, Shared, TlsTarget};
use super::fleet::{Fleet, Tries};
use super::report::{self, ScenarioResult};
use super::scenario::{self, CpuMeter, CpuTimes};
use super::spawn::{self, SpawnedServer};
use super::{BenchOptions, Case, Target};
use crate::client::reconnect;
use anyhow::{Result, bail};
use clap::ValueEnum;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How every connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cut {
    /// The spawned server is killed and started again on the same port,
    /// with the same certificates.
    Restart,
    /// The bench closes every connection; the server keeps running.
    Connections,
}

impl Cut {
    fn name(self) -> &'static str {
        match self {
            Cut::Restart => "restart",
            Cut::Connections => "connections",
        }
    }
}

/// How long the check after the storm (`/list`) may take.
const LIST_WAIT: Duration = Duration::from_secs(10);

/// Comes back as `nick` at `addr` within `limit`, as the terminal client
/// does after a lost connection: before attempt K it waits the backoff's
/// delay for K, and it gives up on a final refusal (a TLS failure, a
/// refusal of the person), after [`reconnect::MAX_ATTEMPTS`] attempts, or
/// when `limit` runs out.
pub(super) async fn come_back(
    addr: SocketAddr,
    tls: Option<&TlsTarget>,
    nick: &str,
    limit: Duration,
) -> Result<(Joined, Tries), JoinError> {
    let deadline = Instant::now() + limit;
    let mut tries = Tries::default();
    let mut last = String::from("no attempt fitted in the time limit");
    for attempt in 1..=reconnect::MAX_ATTEMPTS {
        let delay = reconnect::next_delay(attempt);
        if Instant::now() + delay >= deadline {
            break;
        }
        tokio::time::sleep(delay).await;
        tries.attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match client::join(addr, tls, nick, reconnect::ATTEMPT_TIMEOUT.min(left)).await
        {
            Ok(joined) => return Ok((joined, tries)),
            Err(e) => e,
        };
        match after(&error) {
            After::GiveUp => return Err(error),
            After::Again { taken } => tries.taken += u64::from(taken),
        }
        tries.failed += 1;
        last = error.to_string();
    }
    Err(JoinError::GaveUp {
        attempts: tries.attempts,
        last,
    })
}

/// What comes after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// A final refusal, by the terminal client's rule.
    GiveUp,
    /// Another attempt; `taken` when the nickname was still held (by the
    /// session that was cut, not yet gone).
    Again { taken: bool },
}

fn after(error: &JoinError) -> After {
    match error {
        JoinError::Refused { reason, .. } if reconnect::is_final_refusal(reason) => After::GiveUp,
        JoinError::Handshake(e) if reconnect::is_tls_failure(e) => After::GiveUp,
        JoinError::Refused { reason, .. } => After::Again {
            taken: reason.ends_with(" is taken"),
        },
        _ => After::Again { taken: false },
    }
}

/// Runs the scenario against `target`; `server` is the server the bench
/// started, which `--cut restart` (its default) kills and starts again.
pub(super) async fn run(
    target: &Target,
    opts: &BenchOptions,
    server: Option<&mut SpawnedServer>,
) -> Result<ScenarioResult> {
    let deadline = Instant::now() + opts.timeout;
    let clients = opts.clients_for(Case::Rejoin);
    let cut = opts.cut.unwrap_or(if server.is_some() {
        Cut::Restart
    } else {
        Cut::Connections
    });
    let shared = Arc::new(Shared::new(1, 1, opts.size));
    let fleet =
        Fleet::assemble(target, target.tls.clone(), &shared, clients, opts, deadline).await?;
    // The same nicknames come back, with their deliveries counted afresh.
    let again = Arc::new(Shared::new(1, 1, opts.size).named(shared.nicks.clone(), shared.clock));
    let storm = Storm {
        target,
        shared: &again,
        clients,
        opts,
        deadline,
    };
    let (mut fleet, cpu) = match (cut, server) {
        (Cut::Restart, Some(server)) => storm.restart(fleet, server).await?,
        (Cut::Restart, None) => {
            bail!("--cut restart restarts the server the bench started: add --spawn")
        }
        (Cut::Connections, _) => storm.close_all(fleet).await?,
    };
    let here = fleet.ask_list(LIST_WAIT.min(left(deadline))).await?;
    let traffic = fleet.check_message(opts, deadline).await;
    let joins = fleet.joins.clone();
    let reports = fleet.finish().await;

    let mut result = scenario::base_result(target, Case::Rejoin, clients, 1, opts, cpu);
    scenario::record_joins(&mut result, &joins, target);
    scenario::record_check(&mut result, &again, &traffic);
    result.cut = Some(cut.name());
    result.back_us = report::percentiles([joins.back_us.as_slice()]);
    result.back_s = result.back_us.map(|p| p.max as f64 / 1e6);
    // The joins waited out the backoff: a rate of joins would mean little.
    result.joins_per_s = None;
    result.seconds = result.back_s.unwrap_or(0.0);
    result.attempts = Some(joins.tries.attempts);
    result.retried = Some(joins.tries.failed);
    result.retried_nick_taken = Some(joins.tries.taken);
    result.room_size = Some(here);
    result.notes.push(format!(
        "every client came back as `chatroom connect` does (its jittered backoff before \
         each attempt), all at once; the server's CPU is {}",
        match cut {
            Cut::Restart => {
                "the restarted server's, from its start until all were back; every handshake \
                 back is a full one (the old server's tickets mean nothing to the new one)"
            }
            Cut::Connections => "from the cut until all were back",
        }
    ));
    let plan = super::channels::ChannelPlan::Lobby;
    scenario::judge(&mut result, target, opts, &reports, &traffic, plan);
    check_room(&mut result, target, here, clients);
    Ok(result)
}

/// Every client must be in the room once: a server of the bench's own
/// holds nobody else, so `/list` counts exactly the clients.
fn check_room(result: &mut ScenarioResult, target: &Target, here: usize, clients: usize) {
    if here == clients || (!target.spawned && here > clients) {
        return;
    }
    result.ok = false;
    result.problems.push(format!(
        "back: /list counts {here} in the room after the storm, for {clients} clients"
    ));
}

/// `tls` with no session to resume: the bench's clients share one
/// session cache, where a client coming back to a restarted server would
/// find the tickets the new server gave the clients back before it, which
/// no real client holds (its own ticket is the old server's, which the new
/// one cannot read).
fn without_resumption(tls: Option<&TlsTarget>) -> Option<TlsTarget> {
    tls.map(|tls| {
        let mut config = (*tls.config).clone();
        config.resumption = rustls::client::Resumption::disabled();
        TlsTarget {
            config: Arc::new(config),
            server_name: tls.server_name.clone(),
        }
    })
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// What the way back needs: where, who, and until when.
struct Storm<'a> {
    target: &'a Target,
    shared: &'a Arc<Shared>,
    clients: usize,
    opts: &'a BenchOptions,
    deadline: Instant,
}

impl Storm<'_> {
    /// Kills the server under `fleet`, then starts it again while every
    /// client comes back; the CPU time is the new server's, until all are
    /// back.
    async fn restart(&self, fleet: Fleet, server: &mut SpawnedServer) -> Result<(Fleet, CpuTimes)> {
        let bench_cpu = CpuMeter::start(None);
        let cut = Instant::now();
        server.kill().await;
        // Its readers saw the server go; their connections close here.
        fleet.finish().await;
        let back = Fleet::reassemble(
            self.target,
            without_resumption(self.target.tls.as_ref()),
            self.shared,
            self.clients,
            self.opts,
            self.deadline,
            cut,
        );
        let ((), fleet) = tokio::try_join!(server.start_again(), back)?;
        let cpu = CpuTimes {
            server: spawn::cpu_seconds(server.pid).ok(),
            bench: bench_cpu.read().bench,
        };
        Ok((fleet, cpu))
    }

    /// Closes every connection of `fleet` at once; each client comes back
    /// to the same server.
    async fn close_all(&self, fleet: Fleet) -> Result<(Fleet, CpuTimes)> {
        let cpu = CpuMeter::start(self.target.server_pid);
        let cut = Instant::now();
        fleet.finish().await;
        let fleet = Fleet::reassemble(
            self.target,
            self.target.tls.clone(),
            self.shared,
            self.clients,
            self.opts,
            self.deadline,
            cut,
        )
        .await?;
        Ok((fleet, cpu.read()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NickError;

    fn refused(reason: String) -> JoinError {
        JoinError::Refused {
            nick: "bob".into(),
            reason,
        }
    }

    #[test]
    fn a_nickname_still_held_or_a_server_still_down_is_tried_again() {
        let taken = refused(NickError::Taken("bob".into()).to_string());
        assert_eq!(after(&taken), After::Again { taken: true });
        let down = JoinError::Connect(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(after(&down), After::Again { taken: false });
        assert_eq!(after(&JoinError::Closed), After::Again { taken: false });
        let full = refused("server full".into());
        assert_eq!(after(&full), After::Again { taken: false });
    }

    #[test]
    fn a_refusal_of_the_person_or_a_tls_failure_ends_the_way_back() {
        assert_eq!(after(&refused("banned".into())), After::GiveUp);
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::General("bad certificate".into()),
        );
        assert_eq!(after(&JoinError::Handshake(tls)), After::GiveUp);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            after(&JoinError::Handshake(reset)),
            After::Again { taken: false }
        );
    }
}
