//! `chatroom serve`: turns the arguments into server [`Settings`], makes
//! certificates on a first start, raises the open-files limit, and runs the
//! server until SIGINT or SIGTERM.

use super::bounds;
use crate::admission;
use crate::certs::{self, GenOptions};
use crate::per_address;
use crate::protocol::{DEFAULT_MAX_LINE, DEFAULT_PORT};
use crate::rate::RateLimit;
use crate::server::{Server, Settings};
use crate::tls::ServerCertificate;
use anyhow::{Context, Result};
use clap::Args;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    addr: SocketAddr,
    /// Server certificate (PEM). Default: certs/server.pem, made on first start.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Server private key (PEM). Default: certs/server-key.pem, made on first start.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Serve without TLS: everything can be read on the network. For
    /// teaching (compare the two in Wireshark), never for real use.
    #[arg(long)]
    plaintext: bool,
    /// Longest line a client may send, in bytes (16 to 1048576).
    #[arg(long, default_value_t = DEFAULT_MAX_LINE, value_name = "BYTES", value_parser = bounds::max_line)]
    max_line: usize,
    /// Seconds a new connection has for the TLS handshake and its nickname
    /// (0.1 to 3600).
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = bounds::handshake_timeout)]
    handshake_timeout: Duration,
    /// Most participants at once (1 to 1000000; capped by the open-files
    /// limit).
    #[arg(long, default_value_t = 50_000, value_parser = bounds::max_participants)]
    max_participants: usize,
    /// Most connections at once from one address, an IPv4 address or an
    /// IPv6 /64 (1 to 1000000; --exempt addresses have no such limit).
    #[arg(long, default_value_t = 16, value_parser = bounds::max_per_ip)]
    max_per_ip: usize,
    /// Connection attempts per minute from one address (1 to 1000000);
    /// beyond it an attempt is closed before the TLS handshake.
    #[arg(long, default_value_t = 60, value_name = "N", value_parser = bounds::connects_per_minute)]
    connects_per_minute: u32,
    /// Joins (connections that reach the room) per minute from one address
    /// (1 to 100000).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = bounds::joins_per_minute)]
    joins_per_minute: u32,
    /// An address or network (CIDR) with no per-address limits: each of its
    /// participants gets its own --rate-limit, and --max-per-ip,
    /// --connects-per-minute and --joins-per-minute do not apply.
    /// Repeatable; `none` for no exemptions (behind ssh -L, stunnel or a
    /// local proxy, where every client arrives from loopback).
    #[arg(long, value_name = "CIDR|none", default_values = ["127.0.0.0/8", "::1/128"], value_parser = per_address::parse_exempt)]
    exempt: Vec<Option<IpNet>>,
    /// Messages per second per address, all its participants together,
    /// joins and leaves counting as one message each (per participant, and
    /// only messages, for --exempt addresses), as RATE or RATE/BURST, or
    /// `off` (RATE 0.01 to 1000000, BURST 1 to 10000000).
    #[arg(long, default_value = "10/20", value_name = "RATE[/BURST]|off", value_parser = bounds::rate_limit)]
    rate_limit: bounds::OrOff<RateLimit>,
    /// Disconnect a participant silent for this many seconds (0: never;
    /// at most 2592000, 30 days).
    #[arg(long, default_value = "0", value_name = "SECONDS", value_parser = bounds::idle_timeout)]
    idle_timeout: bounds::OrOff<Duration>,
    /// How many lines a participant may fall behind the room before it is
    /// disconnected as too slow (1 to 1048576).
    #[arg(long, default_value_t = 4096, value_name = "LINES", value_parser = bounds::backlog)]
    backlog: usize,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    // Checked before anything is written (certificates on a first start).
    let exempt = exemptions(&args.exempt)?;
    let tls = if args.plaintext {
        tracing::warn!(
            "PLAINTEXT MODE: no TLS. Every nickname and message can be read and changed by \
             anyone on the network path. Use this only to compare with TLS in a capture."
        );
        None
    } else {
        let default_dir = Path::new(certs::DEFAULT_DIR);
        let cert = args
            .cert
            .clone()
            .unwrap_or_else(|| default_dir.join(certs::SERVER_CERT));
        let key = args
            .key
            .clone()
            .unwrap_or_else(|| default_dir.join(certs::SERVER_KEY));
        if args.cert.is_none() && args.key.is_none() && !cert.exists() && !key.exists() {
            tracing::info!(
                "no certificate in {}/ yet: running gen-certs first",
                default_dir.display()
            );
            let report = certs::generate(&GenOptions {
                dir: default_dir.to_path_buf(),
                extra_sans: Vec::new(),
                force: false,
            })?;
            println!("{report}");
        }
        let (config, certificate) = crate::tls::reloadable_server_config(&cert, &key)?;
        reload_on_hangup(certificate)?;
        Some(config)
    };

    let mut settings = Settings::new(tls);
    settings.limits.max_line = args.max_line;
    settings.limits.handshake_timeout = args.handshake_timeout;
    settings.limits.idle_timeout = args.idle_timeout;
    settings.limits.rate = args.rate_limit;
    settings.max_per_ip = args.max_per_ip;
    settings.connects_per_minute = args.connects_per_minute;
    settings.joins_per_minute = args.joins_per_minute;
    settings.exempt = exempt;
    settings.backlog_lines = args.backlog;
    let (participants, sockets) = cap_to_open_files(args.max_participants);
    settings.max_participants = participants;
    settings.max_sockets = sockets;

    let server = Server::bind(args.addr, settings).await?;
    let addr = server.local_addr()?;
    let mode = if args.plaintext {
        "plaintext (NO TLS)"
    } else {
        "TLS"
    };
    tracing::info!(%addr, mode, "listening");
    server.run(stop_signal()).await
}

/// `--exempt`'s values as a list: `none` alone means no exemptions.
fn exemptions(values: &[Option<IpNet>]) -> Result<Vec<IpNet>> {
    let nets: Vec<IpNet> = values.iter().flatten().copied().collect();
    if !nets.is_empty() && nets.len() != values.len() {
        anyhow::bail!("--exempt none cannot be combined with addresses");
    }
    Ok(nets)
}

/// Raises the open-files limit to its hard limit, and keeps the sockets
/// (participants, refusals in progress, connections still closing) within
/// it, with a reserve in proportion to it (see [`admission::socket_budget`]).
/// Returns the participant limit and the socket limit.
fn cap_to_open_files(max_participants: usize) -> (usize, Option<usize>) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let sockets = admission::socket_budget(limit);
            let room = admission::participants_within(sockets);
            tracing::info!(open_files = limit, sockets, "open-files limit");
            if max_participants > room {
                tracing::warn!(
                    "--max-participants {max_participants} exceeds what the open-files limit \
                     ({limit}) allows: using {room}"
                );
            }
            let participants = max_participants.min(room);
            let sockets =
                sockets.min(participants.saturating_add(admission::MAX_REFUSALS_IN_FLIGHT));
            (participants, Some(sockets))
        }
        Err(e) => {
            tracing::warn!("cannot read or raise the open-files limit: {e}");
            (max_participants, None)
        }
    }
}

/// On SIGHUP, presents the certificate and key files' current contents to
/// new connections (after `gen-certs --force`, say); sessions already up
/// keep theirs. A pair that does not load is refused, and the old one stays.
fn reload_on_hangup(certificate: Arc<ServerCertificate>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match certificate.reload() {
                Ok(()) => tracing::info!(
                    fingerprint = %certs::fingerprint(&certificate.leaf()),
                    "SIGHUP: new connections get the reloaded certificate"
                ),
                Err(e) => {
                    tracing::warn!("SIGHUP: certificate not reloaded, keeping the old one: {e:#}")
                }
            }
        }
    });
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot listen for SIGINT/SIGTERM: {e}; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
