//! `chatroom serve`: turns the arguments into server [`Settings`], makes
//! certificates on a first start, raises the open-files limit, and runs the
//! server until SIGINT or SIGTERM.

use crate::certs::{self, GenOptions};
use crate::protocol::{DEFAULT_MAX_LINE, DEFAULT_PORT};
use crate::rate::RateLimit;
use crate::server::{Server, Settings};
use crate::tls::{ServerCertificate, TlsVersion};
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
    /// TLS versions to allow: any (1.3 preferred, 1.2 allowed), 1.2 or 1.3.
    /// With 1.2 a capture shows the server's certificate in the clear.
    #[arg(long, value_enum, default_value_t = TlsVersion::Any, value_name = "VERSION")]
    tls_version: TlsVersion,
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
    /// Lines (messages, commands, refused lines) per second per
    /// participant, as RATE or RATE/BURST, or `off`.
    #[arg(long, default_value = "10/20", value_name = "RATE[/BURST]|off")]
    rate_limit: String,
    /// Disconnect a participant silent for this many seconds (0: never).
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    idle_timeout: f64,
    /// How many lines a participant may fall behind the room before it is
    /// disconnected as too slow.
    #[arg(long, default_value_t = 4096, value_name = "LINES")]
    backlog: usize,
    /// How many of the room's last messages and actions a newcomer
    /// receives on joining, each marked `[history] ` (0: none).
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1000))]
    history: u16,
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{what}: {value} is not a valid number of seconds"))
}

pub async fn run(args: ServeArgs) -> Result<()> {
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
        if let Some(path) = crate::tls::key_log_file()? {
            tracing::warn!("{}", crate::tls::key_log_warning(&path));
        }
        let (config, certificate) =
            crate::tls::reloadable_server_config_with(&cert, &key, args.tls_version)?;
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
    settings.backlog_lines = args.backlog;
    settings.history_lines = usize::from(args.history);
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
