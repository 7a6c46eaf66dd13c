//! `chatroom serve`: turns the arguments into server [`Settings`], makes
//! certificates on a first start, raises the open-files limit, and runs the
//! server until SIGINT or SIGTERM.

use crate::access::{Access, AccessFiles};
use crate::backplane::{self, ClusterOptions, ClusterRoom};
use crate::certs::lifecycle::{self, Validity};
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
    /// How many lines a participant may fall behind the room before it is
    /// disconnected as too slow.
    #[arg(long, default_value_t = 4096, value_name = "LINES")]
    backlog: usize,
    /// Require every client to present a certificate signed by this CA
    /// (mutual TLS); a participant's nickname is then its certificate's name.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Refuse client certificates this CRL revokes (needs --client-ca).
    /// Default: crl.pem beside the --client-ca file, when it exists.
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// Refuse this name at join (repeatable): a quick lock-out before a
    /// CRL is made.
    #[arg(long, value_name = "NAME")]
    deny: Vec<String>,
    /// Refuse the names in this file (one per line, `#` comments), read
    /// again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    deny_file: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// One room across several nodes, through NATS JetStream.
#[derive(Args, Debug)]
struct ClusterArgs {
    /// Share the room with other nodes through this NATS server (with
    /// JetStream), nats://HOST:PORT; several, comma-separated, for a NATS
    /// cluster. Without it, the room lives in this process alone.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// The shared room's name: several rooms can use one NATS server.
    #[arg(
        long,
        default_value = "lobby",
        value_name = "NAME",
        requires = "cluster"
    )]
    cluster_room: String,
    /// NATS credentials file (JWT and NKey seed), if the NATS server wants one.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    cluster_creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS server's TLS certificate; it
    /// also makes TLS to NATS required.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    cluster_ca: Option<PathBuf>,
    /// This node's name in the shared room and in its logs. Default: the
    /// host name and a random suffix.
    #[arg(long, value_name = "NAME", requires = "cluster")]
    node_name: Option<String>,
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{what}: {value} is not a valid number of seconds"))
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let access = access_policy(&args)?;
    let tls = if args.plaintext {
        if args.client_ca.is_some() {
            anyhow::bail!("--client-ca needs TLS: it cannot be used with --plaintext");
        }
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
        let verifier = access.as_ref().and_then(|a| a.client_verifier());
        let (config, certificate) =
            crate::tls::reloadable_server_config_with(&cert, &key, verifier)?;
        if let Some(warning) = check_validity(&certificate)? {
            tracing::warn!("{warning}");
        }
        reload_on_hangup(certificate, access.clone())?;
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
    settings.max_participants = cap_to_open_files(args.max_participants);
    if let Some(access) = &access {
        tracing::info!("access: {}", access.prepare()?.summary());
    }
    settings.access = access;

    let cluster = match &args.cluster.cluster {
        Some(url) => Some(Arc::new(
            ClusterRoom::connect(ClusterOptions {
                url: url.clone(),
                room: args.cluster.cluster_room.clone(),
                node_name: args
                    .cluster
                    .node_name
                    .clone()
                    .unwrap_or_else(backplane::default_node_name),
                creds: args.cluster.cluster_creds.clone(),
                ca: args.cluster.cluster_ca.clone(),
                max_members: settings.max_participants,
                backlog_lines: settings.backlog_lines,
                history: 0,
            })
            .await?,
        )),
        None => None,
    };

    let server = Server::bind(args.addr, settings).await?;
    let addr = server.local_addr()?;
    let mode = if args.plaintext {
        "plaintext (NO TLS)"
    } else {
        "TLS"
    };
    tracing::info!(%addr, mode, "listening");
    match cluster {
        None => server.run(stop_signal()).await,
        Some(room) => {
            let result = server.run_with(room.clone(), stop_signal()).await;
            room.finish().await;
            result
        }
    }
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

/// The access policy the arguments ask for, if any.
fn access_policy(args: &ServeArgs) -> Result<Option<Arc<Access>>> {
    if args.client_ca.is_none()
        && args.crl.is_none()
        && args.deny.is_empty()
        && args.deny_file.is_none()
    {
        return Ok(None);
    }
    let crl_if_present = match (&args.client_ca, &args.crl) {
        (Some(ca), None) => Some(
            ca.parent()
                .unwrap_or_else(|| Path::new("."))
                .join(certs::CRL),
        ),
        _ => None,
    };
    Access::load(AccessFiles {
        client_ca: args.client_ca.clone(),
        crl: args.crl.clone(),
        crl_if_present,
        deny: args.deny.clone(),
        deny_file: args.deny_file.clone(),
    })
    .map(Some)
}

/// Refuses a server certificate that has expired or is not valid yet; the
/// warning to log if it expires within 30 days.
fn check_validity(certificate: &ServerCertificate) -> Result<Option<String>> {
    let what = format!(
        "the server certificate {}",
        certificate.cert_path().display()
    );
    let validity = lifecycle::check(&certificate.leaf(), &what, time::OffsetDateTime::now_utc())?;
    Ok(validity.warning(&what))
}

/// On SIGHUP, reloads the certificate and key, the client CA, the CRL and
/// the deny list, all or nothing: new connections get the new ones, and
/// sessions already up keep going, except participants the new policy
/// refuses (a revoked certificate), who are disconnected. If any part does
/// not load, the old configuration stays whole.
fn reload_on_hangup(
    certificate: Arc<ServerCertificate>,
    access: Option<Arc<Access>>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match reload(&certificate, access.as_deref()) {
                Ok(summary) => tracing::info!(
                    fingerprint = %certs::fingerprint(&certificate.leaf()),
                    "SIGHUP: new connections get the reloaded certificate{summary}"
                ),
                Err(e) => tracing::warn!(
                    "SIGHUP: nothing reloaded, keeping the old configuration whole: {e:#}"
                ),
            }
        }
    });
    Ok(())
}

/// Loads every part, then puts them all in force; on any error, none.
fn reload(certificate: &ServerCertificate, access: Option<&Access>) -> Result<String> {
    let pair = certificate.load_again()?;
    let what = format!(
        "the server certificate {}",
        certificate.cert_path().display()
    );
    let validity = lifecycle::check(&pair.cert[0], &what, time::OffsetDateTime::now_utc())?;
    let prepared = access.map(Access::prepare).transpose()?;
    let summary = prepared
        .as_ref()
        .map(|p| format!("; access: {}", p.summary()))
        .unwrap_or_default();
    certificate.install(pair);
    if let (Some(access), Some(prepared)) = (access, prepared) {
        access.install(prepared);
    }
    if let Validity::ExpiresSoon { .. } = validity
        && let Some(warning) = validity.warning(&what)
    {
        tracing::warn!("{warning}");
    }
    Ok(summary)
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
