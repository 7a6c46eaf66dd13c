//! `chatroom serve`: turns the arguments into server [`Settings`], makes
//! certificates on a first start, raises the open-files limit, and runs the
//! server until SIGINT or SIGTERM.

use super::bounds;
use crate::certs::lifecycle;
use crate::certs::{self, GenOptions};
use crate::protocol::{DEFAULT_MAX_LINE, DEFAULT_PORT};
use crate::room::backlog;
use crate::room::cluster::{self, ClusterOptions, ClusterRoom};
use crate::server::access::{Access, AccessFiles};
use crate::server::admission;
use crate::server::per_address;
use crate::server::rate::RateLimit;
use crate::server::{Server, Settings};
use crate::tls::{ServerCertificate, TlsVersion};
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
    /// TLS versions to allow: any (1.3 preferred, 1.2 allowed), 1.2 or 1.3.
    /// With 1.2 a capture shows the server's certificate in the clear.
    #[arg(long, value_enum, default_value_t = TlsVersion::Any, value_name = "VERSION")]
    tls_version: TlsVersion,
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
    /// Lines (messages, commands, refused lines) per second per address,
    /// all its participants together, joins and leaves counting as one line
    /// each (per participant, and only its own lines, for --exempt
    /// addresses), as RATE or RATE/BURST, or `off` (RATE 0.01 to 1000000,
    /// BURST 1 to 10000000).
    #[arg(long, default_value = "10/20", value_name = "RATE[/BURST]|off", value_parser = bounds::rate_limit)]
    rate_limit: bounds::OrOff<RateLimit>,
    /// Disconnect a participant silent for this many seconds (0: never;
    /// at most 2592000, 30 days).
    #[arg(long, default_value = "0", value_name = "SECONDS", value_parser = bounds::idle_timeout)]
    idle_timeout: bounds::OrOff<Duration>,
    /// How far a participant may fall behind the room before it is
    /// disconnected as too slow, as the memory of the lines it has not read
    /// (each counts its length plus 128 bytes): plain bytes, or with KiB,
    /// MiB or GiB; at least 64 KiB and four of the longest lines. The lines
    /// wait in one ring shared by everybody, so this is the most the room's
    /// backlog holds, however many participants lag.
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = backlog::parse_size)]
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
    /// How many of the room's last messages and actions a newcomer
    /// receives on joining, each marked `[history] ` (0: none).
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1000))]
    history: u16,
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
    /// Seconds a node may go without refreshing its entry in NATS before
    /// the others take it for dead and announce its participants as left
    /// (0.5 to 300; default 6). The room's setting: the node that makes
    /// the room's buckets fixes it, and the others follow it.
    #[arg(long, value_name = "SECONDS", value_parser = bounds::node_timeout, requires = "cluster")]
    node_timeout: Option<Duration>,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    // Checked before anything is written (certificates on a first start).
    let exempt = exemptions(&args.exempt)?;
    let backlog = backlog_within_bounds(args.backlog, args.max_line)?;
    let access = access_policy(&args)?;
    let tls = if args.plaintext {
        if args.client_ca.is_some() {
            anyhow::bail!("--client-ca needs TLS: it cannot be used with --plaintext");
        }
        tracing::warn!(
            "PLAINTEXT MODE: no TLS. Every nickname and message can be read and changed by \
             anyone on the network path. Use this only to compare with TLS in a capture."
        );
        // Without a handler SIGHUP would end the process, and the deny
        // file is still read again on it.
        reload_on_hangup(None, access.clone())?;
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
        let verifier = access.as_ref().and_then(|a| a.client_verifier());
        let (config, certificate) =
            crate::tls::reloadable_server_config_with(&cert, &key, verifier, args.tls_version)?;
        if let Some(warning) = check_validity(&certificate)? {
            tracing::warn!("{warning}");
        }
        reload_on_hangup(Some(certificate), access.clone())?;
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
    settings.backlog = backlog;
    settings.history_lines = usize::from(args.history);
    let (participants, sockets) = cap_to_open_files(args.max_participants);
    settings.max_participants = participants;
    settings.max_sockets = sockets;
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
                    .unwrap_or_else(cluster::default_node_name),
                creds: args.cluster.cluster_creds.clone(),
                ca: args.cluster.cluster_ca.clone(),
                max_members: settings.max_participants,
                backlog: settings.backlog,
                history: usize::from(args.history),
                max_line: args.max_line,
                node_timeout: args
                    .cluster
                    .node_timeout
                    .unwrap_or(cluster::DEFAULT_NODE_TIMEOUT),
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

/// `--exempt`'s values as a list: `none` alone means no exemptions.
fn exemptions(values: &[Option<IpNet>]) -> Result<Vec<IpNet>> {
    let nets: Vec<IpNet> = values.iter().flatten().copied().collect();
    if !nets.is_empty() && nets.len() != values.len() {
        anyhow::bail!("--exempt none cannot be combined with addresses");
    }
    Ok(nets)
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

/// On SIGHUP, reloads the certificate and key (none in plaintext mode),
/// the client CA, the CRL and the deny list, all or nothing: new
/// connections get the new ones, and sessions already up keep going, except
/// participants the new policy refuses (a revoked certificate, a denied
/// name), who are disconnected. If any part does not load, the old
/// configuration stays whole.
fn reload_on_hangup(
    certificate: Option<Arc<ServerCertificate>>,
    access: Option<Arc<Access>>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match (
                reload(certificate.as_deref(), access.as_deref()),
                &certificate,
            ) {
                (Ok(summary), Some(certificate)) => tracing::info!(
                    fingerprint = %certs::fingerprint(&certificate.leaf()),
                    "SIGHUP: new connections get the reloaded certificate{summary}"
                ),
                (Ok(_), None) if access.is_none() => tracing::info!(
                    "SIGHUP: nothing to reload (plaintext, no --deny or --deny-file)"
                ),
                (Ok(summary), None) => {
                    tracing::info!("SIGHUP: reloaded (plaintext: no certificate){summary}")
                }
                (Err(e), _) => tracing::warn!(
                    "SIGHUP: nothing reloaded, keeping the old configuration whole: {e:#}"
                ),
            }
        }
    });
    Ok(())
}

/// Loads every part, then puts them all in force; on any error, none.
fn reload(certificate: Option<&ServerCertificate>, access: Option<&Access>) -> Result<String> {
    let loaded = certificate
        .map(|certificate| -> Result<_> {
            let pair = certificate.load_again()?;
            let what = format!(
                "the server certificate {}",
                certificate.cert_path().display()
            );
            let validity = lifecycle::check(&pair.cert[0], &what, time::OffsetDateTime::now_utc())?;
            Ok((certificate, pair, what, validity))
        })
        .transpose()?;
    let prepared = access.map(Access::prepare).transpose()?;
    let summary = prepared
        .as_ref()
        .map(|p| format!("; access: {}", p.summary()))
        .unwrap_or_default();
    let warning = loaded.map(|(certificate, pair, what, validity)| {
        certificate.install(pair);
        validity.warning(&what)
    });
    if let (Some(access), Some(prepared)) = (access, prepared) {
        access.install(prepared);
    }
    if let Some(warning) = warning.flatten() {
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
