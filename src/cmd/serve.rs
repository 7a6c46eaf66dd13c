//! `chatroom serve`: turns the arguments into server [`Settings`], makes
//! certificates on a first start, raises the open-files limit, and runs the
//! server until SIGINT or SIGTERM.

use crate::backlog;
use crate::certs::{self, GenOptions};
use crate::protocol::{DEFAULT_MAX_LINE, DEFAULT_PORT};
use crate::rate::RateLimit;
use crate::server::{Server, Settings};
use crate::tls::ServerCertificate;
use anyhow::{Context, Result};
use clap::Args;
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
    /// Longest line a client may send, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_LINE, value_name = "BYTES")]
    max_line: usize,
    /// Seconds a new connection has for the TLS handshake and its nickname.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    handshake_timeout: f64,
    /// Most participants at once (capped by the open-files limit).
    #[arg(long, default_value_t = 50_000)]
    max_participants: usize,
    /// Most connections at once from one IP address (loopback is exempt).
    #[arg(long, default_value_t = 16)]
    max_per_ip: usize,
    /// Messages per second per participant, as RATE or RATE/BURST, or `off`.
    #[arg(long, default_value = "10/20", value_name = "RATE[/BURST]|off")]
    rate_limit: String,
    /// Disconnect a participant silent for this many seconds (0: never).
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    idle_timeout: f64,
    /// How far a participant may fall behind the room before it is
    /// disconnected as too slow, as the memory of the lines it has not read
    /// (each counts its length plus 128 bytes): plain bytes, or with KiB,
    /// MiB or GiB; at least 64 KiB and four of the longest lines. The lines
    /// wait in one ring shared by everybody, so this is the most the room's
    /// backlog holds, however many participants lag.
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = backlog::parse_size)]
    backlog: usize,
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{what}: {value} is not a valid number of seconds"))
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let backlog = backlog_within_bounds(args.backlog, args.max_line)?;
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
    settings.limits.handshake_timeout = seconds(args.handshake_timeout, "--handshake-timeout")?;
    settings.limits.idle_timeout = match seconds(args.idle_timeout, "--idle-timeout")? {
        d if d.is_zero() => None,
        d => Some(d),
    };
    settings.limits.rate = match args.rate_limit.as_str() {
        "off" => None,
        spec => Some(
            spec.parse::<RateLimit>()
                .map_err(|e| anyhow::anyhow!("--rate-limit {e}"))?,
        ),
    };
    settings.max_per_ip = args.max_per_ip;
    settings.backlog = backlog;
    settings.max_participants = cap_to_open_files(args.max_participants);

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

/// The backlog must hold a few of the longest lines, or a single one would
/// push everybody who has not read the one before it out of the room.
fn backlog_within_bounds(size: usize, max_line: usize) -> Result<usize> {
    // `<nick>: <text>\n` at its longest, as the ring counts it.
    let longest = max_line
        .saturating_add(crate::protocol::MAX_NICK_LEN + 3)
        .saturating_add(backlog::LINE_OVERHEAD);
    let least = backlog::MIN_BYTES.max(longest.saturating_mul(4));
    if size < least {
        anyhow::bail!(
            "--backlog {size} bytes is too small: it must be at least {least} bytes \
             (64 KiB, and four lines of --max-line)"
        );
    }
    Ok(size)
}

/// Raises the open-files limit to its hard limit, and keeps the participant
/// limit within it (each participant is one file descriptor).
fn cap_to_open_files(max_participants: usize) -> usize {
    const RESERVED_FDS: u64 = 64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(open_files = limit, "open-files limit");
            let room = limit.saturating_sub(RESERVED_FDS) as usize;
            if max_participants > room {
                tracing::warn!(
                    "--max-participants {max_participants} exceeds what the open-files limit \
                     ({limit}) allows: using {room}"
                );
                room
            } else {
                max_participants
            }
        }
        Err(e) => {
            tracing::warn!("cannot read or raise the open-files limit: {e}");
            max_participants
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
