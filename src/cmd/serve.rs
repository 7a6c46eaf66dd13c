//! `chatroom serve`: its arguments, turned into server [`Settings`], and the
//! server run with them until SIGINT or SIGTERM.

use super::bounds;
use crate::protocol::{self, DEFAULT_MAX_LINE, DEFAULT_PORT};
use crate::room::cluster::{self, ClusterOptions, ClusterRoom, StoreOptions};
use crate::room::store::{Fsync, Options, Store};
use crate::room::{Announce, LocalRoom, backlog, channels};
use crate::server::admission;
use crate::server::metrics::{self, Metrics};
use crate::server::per_address;
use crate::server::rate::{self, RateLimit};
use crate::server::reload::{self, AccessOptions, CertificateFiles};
use crate::server::session::{self, Limits};
use crate::server::shutdown::{DEFAULT_GRACE, stop_signal};
use crate::server::web::WebSettings;
use crate::server::{Server, Settings};
use crate::tls::TlsVersion;
use anyhow::Result;
use clap::Args;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use time::OffsetDateTime;

/// The defaults clap takes as text (it shows a default as text and parses
/// it back), made from the constants they stand for.
static DEFAULT_HANDSHAKE_TIMEOUT: LazyLock<String> =
    LazyLock::new(|| session::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64().to_string());
static DEFAULT_RATE: LazyLock<String> = LazyLock::new(|| rate::DEFAULT_RATE.to_string());
static DEFAULT_ANNOUNCE_UP_TO: LazyLock<String> =
    LazyLock::new(|| protocol::DEFAULT_ANNOUNCE_UP_TO.to_string());
static DEFAULT_BACKLOG: LazyLock<String> = LazyLock::new(|| size_text(backlog::DEFAULT_BYTES));
static DEFAULT_EXEMPT: LazyLock<Vec<String>> = LazyLock::new(|| {
    let exempt = per_address::default_exempt();
    exempt.iter().map(IpNet::to_string).collect()
});

/// `serve`'s arguments. The range of each bounded one is added to its help
/// from [`bounds`] (see [`bounds::ranges_in_help`]).
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
    #[arg(long, default_value_t = DEFAULT_MAX_LINE, value_name = "BYTES", value_parser = bounds::max_line)]
    max_line: usize,
    /// Seconds a new connection has for the TLS handshake and its nickname.
    #[arg(long, default_value = DEFAULT_HANDSHAKE_TIMEOUT.as_str(), value_name = "SECONDS", value_parser = bounds::handshake_timeout)]
    handshake_timeout: Duration,
    /// Most participants at once; asking for more than the open-files limit
    /// allows gets a warning and what it allows.
    #[arg(long, value_parser = bounds::max_participants)]
    max_participants: Option<usize>,
    /// Most connections at once from one address (an IPv4 address or an
    /// IPv6 /64), except from --exempt ones.
    #[arg(long, default_value_t = per_address::DEFAULT_MAX_PER_IP, value_parser = bounds::max_per_ip)]
    max_per_ip: usize,
    /// Connection attempts per minute from one address; beyond it an
    /// attempt is closed before the TLS handshake.
    #[arg(long, default_value_t = per_address::DEFAULT_CONNECTS_PER_MINUTE, value_name = "N", value_parser = bounds::connects_per_minute)]
    connects_per_minute: u32,
    /// Joins (connections that reach the room) per minute from one address.
    #[arg(long, default_value_t = per_address::DEFAULT_JOINS_PER_MINUTE, value_name = "N", value_parser = bounds::joins_per_minute)]
    joins_per_minute: u32,
    /// An address or network (CIDR) with no per-address limits: each of its
    /// participants gets its own --rate-limit, and --max-per-ip,
    /// --connects-per-minute and --joins-per-minute do not apply.
    /// Repeatable; `none` for no exemptions (behind ssh -L, stunnel or a
    /// local proxy, where every client arrives from loopback).
    #[arg(long, value_name = "CIDR|none", default_values = DEFAULT_EXEMPT.iter().map(String::as_str), value_parser = per_address::parse_exempt)]
    exempt: Vec<Option<IpNet>>,
    /// Lines (messages, commands, refused lines) per second per address,
    /// all its participants together, joins and leaves counting as one line
    /// each (per participant, and only its own lines, for --exempt
    /// addresses), as RATE or RATE/BURST, or `off`.
    #[arg(long, default_value = DEFAULT_RATE.as_str(), value_name = "RATE[/BURST]|off", value_parser = bounds::rate_limit)]
    rate_limit: bounds::OrOff<RateLimit>,
    /// Disconnect a participant silent for this many seconds; 0 for never.
    #[arg(long, default_value = "0", value_name = "SECONDS", value_parser = bounds::idle_timeout)]
    idle_timeout: bounds::OrOff<Duration>,
    /// How far a participant may fall behind the room before it is
    /// disconnected as too slow, as the memory of the lines it has not
    /// read: plain bytes, or with KiB, MiB or GiB. The lines wait in one
    /// ring shared by everybody, so this is the most the room's backlog
    /// holds, however many participants lag.
    #[arg(long, default_value = DEFAULT_BACKLOG.as_str(), value_name = "SIZE", value_parser = backlog::parse_size)]
    backlog: usize,
    /// Serve Prometheus metrics (/metrics) and a health check (/healthz)
    /// over plain HTTP on this address: bind it to localhost or a
    /// management network, never to the network the participants use.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
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
    /// The client-certificate names that are operators (one per line, `#`
    /// comments), read again on SIGHUP; they may /kick, /ban, /mute,
    /// /unmute and set /topic. Needs --client-ca.
    #[arg(long, value_name = "FILE", requires = "client_ca")]
    operators: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// How many of the room's last messages and actions a newcomer
    /// receives on joining, each marked `[history] ` (and a newcomer to a
    /// channel, of that channel's); 0 for none. Default: 50 with --data, 0
    /// without.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(bounds::HISTORY))]
    history: Option<u16>,
    /// Tell everybody of joins and leaves only in rooms of at most N
    /// participants (in a cluster, the whole room's); in a bigger room only
    /// the newcomer sees its `joined!`, with a line saying so. `all`:
    /// announce them at any size.
    #[arg(long, default_value = DEFAULT_ANNOUNCE_UP_TO.as_str(), value_name = "N|all", value_parser = bounds::announce_up_to)]
    announce_up_to: Announce,
    /// The most channels at once besides #lobby (`/join #NAME` makes one).
    #[arg(long, default_value_t = channels::DEFAULT_MAX_CHANNELS, value_name = "N", value_parser = bounds::max_channels)]
    max_channels: usize,
    /// The most channels one participant may be in besides #lobby.
    #[arg(long, default_value_t = channels::DEFAULT_MAX_JOINED, value_name = "N", value_parser = bounds::max_joined)]
    max_joined: usize,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    web: WebArgs,
}

/// The browser's door: HTTPS with the chat page and its WebSocket.
#[derive(Args, Debug)]
struct WebArgs {
    /// Also serve the chat page and its WebSocket (/chat) over HTTPS on
    /// this address, with the same certificate, limits and room. Off by
    /// default.
    #[arg(long, value_name = "ADDR")]
    web: Option<SocketAddr>,
    /// Another origin whose pages may open the WebSocket (besides the
    /// page's own), as browsers send it: https://HOST[:PORT]. Repeatable.
    #[arg(long, value_name = "ORIGIN", requires = "web")]
    web_origin: Vec<String>,
}

/// The room's lines on disk.
#[derive(Args, Debug)]
struct DataArgs {
    /// Keep the public lines of the room and its channels (never private
    /// ones), operators' actions included, in a SQLite database in this
    /// folder, made 0700 if missing: they survive a restart (a channel's
    /// also once it is empty), newcomers get their history from it, and no
    /// line reaches anyone before it is stored. Without it, the room lives
    /// in memory. With --cluster, this node keeps its own copy of the
    /// room's lines, filled from the room's stream.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// How long stored lines are kept: a whole number with s, m, h or d,
    /// or `forever`. Older lines are deleted at start and every minute.
    #[arg(long, default_value = bounds::DEFAULT_RETAIN, value_name = "DURATION|forever", value_parser = bounds::retain, requires = "data")]
    retain: bounds::OrOff<Duration>,
    /// When a stored line is synced to the disk: `normal` (a crash of the
    /// server loses no stored line; a power loss may lose the last ones)
    /// or `always` (at every commit).
    #[arg(long, value_enum, default_value_t = FsyncArg::Normal, value_name = "WHEN", requires = "data")]
    fsync: FsyncArg,
    /// The most the store's database may take on disk: plain bytes, or
    /// with KiB, MiB or GiB. Past it, new lines are refused as on a full
    /// disk (their senders are told) until old lines expire.
    #[arg(long, value_name = "SIZE", value_parser = backlog::parse_size, requires = "data")]
    data_max_bytes: Option<usize>,
}

/// `--fsync`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FsyncArg {
    Normal,
    Always,
}

/// Lines newcomers get by default with `--data`.
const DATA_HISTORY: usize = 50;

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
    /// the others take it for dead and announce its participants as left.
    /// The room's setting: the node that makes the room's buckets fixes it,
    /// and the others follow it.
    #[arg(long, value_name = "SECONDS", value_parser = bounds::node_timeout, requires = "cluster")]
    node_timeout: Option<Duration>,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let settings = args.settings()?;
    let metrics = settings.metrics.clone();
    let store = args.data.open()?;
    if let Some(store) = &store {
        metrics.watch_store(store.try_clone()?);
    }
    let (durable, cluster) = match args.cluster.options(&settings) {
        Some(options) => {
            let store = store.map(|store| StoreOptions {
                store,
                retain: args.data.retain,
            });
            let room = Arc::new(ClusterRoom::connect_recorded(options, store).await?);
            metrics.watch_cluster(&room);
            (None, Some(room))
        }
        None => match store {
            Some(store) => {
                let room = LocalRoom::new(settings.max_participants, settings.backlog)
                    .with_history(settings.history_lines)
                    .with_announce(settings.announce)
                    .with_channel_backlog(settings.channel_backlog())?
                    .with_store(store, args.data.retain)?;
                (Some(Arc::new(room)), None)
            }
            None => (None, None),
        },
    };
    let server = Server::bind(args.addr, settings).await?;
    let addr = server.local_addr()?;
    if let Some(addr) = args.metrics {
        let metrics_addr = metrics::http::start(addr, metrics).await?;
        tracing::info!(%metrics_addr, "serving /metrics and /healthz over plain HTTP");
    }
    let mode = if args.plaintext {
        "plaintext (NO TLS)"
    } else {
        "TLS"
    };
    tracing::info!(%addr, mode, "listening");
    if let Some(web) = server.web_addr()? {
        tracing::info!(%web, "web client listening");
    }
    match cluster {
        None => match durable {
            None => server.run(stop_signal()).await,
            Some(room) => server.run_with(room, stop_signal()).await,
        },
        Some(room) => {
            let result = server.run_with(room.clone(), stop_signal()).await;
            room.finish().await;
            result
        }
    }
}

impl ServeArgs {
    /// The server's settings. Loads the access policy and the certificate
    /// (on a first start, gen-certs makes it) and installs their SIGHUP
    /// reload; sizes the participant limit to the open-files limit.
    fn settings(&self) -> Result<Settings> {
        // Checked before anything is written (certificates on a first start).
        let exempt = exemptions(&self.exempt)?;
        let backlog = bounds::backlog(self.backlog, self.max_line)?;
        if self.plaintext && self.web.web.is_some() {
            anyhow::bail!("--web needs TLS: it cannot be used with --plaintext");
        }
        if self.plaintext && self.client_ca.is_some() {
            anyhow::bail!("--client-ca needs TLS: it cannot be used with --plaintext");
        }
        let access = reload::access_policy(AccessOptions {
            client_ca: self.client_ca.clone(),
            crl: self.crl.clone(),
            deny: self.deny.clone(),
            deny_file: self.deny_file.clone(),
            operators: self.operators.clone(),
        })?;
        let tls = if self.plaintext {
            reload::plaintext(access.clone())?;
            None
        } else {
            let files = CertificateFiles {
                cert: self.cert.clone(),
                key: self.key.clone(),
                version: self.tls_version,
            };
            Some(reload::tls(&files, access.clone())?)
        };
        let (max_participants, max_sockets) = admission::fit_to_open_files(self.max_participants);
        Ok(Settings {
            tls,
            limits: Limits {
                max_line: self.max_line,
                handshake_timeout: self.handshake_timeout,
                rate: self.rate_limit,
                idle_timeout: self.idle_timeout,
            },
            max_participants,
            max_sockets,
            max_per_ip: self.max_per_ip,
            connects_per_minute: self.connects_per_minute,
            joins_per_minute: self.joins_per_minute,
            exempt,
            backlog,
            history_lines: self.history.map_or(
                if self.data.data.is_some() {
                    DATA_HISTORY
                } else {
                    0
                },
                usize::from,
            ),
            announce: self.announce_up_to,
            max_channels: self.max_channels,
            max_joined: self.max_joined,
            shutdown_grace: DEFAULT_GRACE,
            access,
            metrics: Metrics::new(),
            web: self.web.web.map(|addr| WebSettings {
                addr,
                origins: self.web.web_origin.clone(),
            }),
        })
    }
}

impl DataArgs {
    /// The store, opened (made if missing) and its old lines expired; its
    /// size logged. `None` without `--data`.
    fn open(&self) -> Result<Option<Store>> {
        let Some(dir) = &self.data else {
            return Ok(None);
        };
        let fsync = match self.fsync {
            FsyncArg::Normal => Fsync::Normal,
            FsyncArg::Always => Fsync::Always,
        };
        let options = Options {
            fsync,
            create: true,
            max_bytes: self.data_max_bytes.map(|bytes| bytes as u64),
        };
        let mut store = Store::open(dir, options)?;
        if let Some(retain) = self.retain {
            let expired = store.expire(OffsetDateTime::now_utc() - retain)?;
            if expired > 0 {
                tracing::info!(lines = expired, "expired lines past the retention");
            }
        }
        let stats = store.stats()?;
        tracing::info!(
            path = %store.path().display(),
            lines = stats.lines,
            bytes = stats.bytes,
            "history store opened"
        );
        Ok(Some(store))
    }
}

impl ClusterArgs {
    /// How to reach the shared room, if there is one.
    fn options(&self, settings: &Settings) -> Option<ClusterOptions> {
        let url = self.cluster.clone()?;
        Some(ClusterOptions {
            url,
            room: self.cluster_room.clone(),
            node_name: self
                .node_name
                .clone()
                .unwrap_or_else(cluster::default_node_name),
            creds: self.cluster_creds.clone(),
            ca: self.cluster_ca.clone(),
            max_members: settings.max_participants,
            backlog: settings.backlog,
            history: settings.history_lines,
            max_line: settings.limits.max_line,
            announce: settings.announce,
            node_timeout: self.node_timeout.unwrap_or(cluster::DEFAULT_NODE_TIMEOUT),
        })
    }
}

/// `bytes` as `--backlog` reads it: in the largest binary unit that holds
/// it whole.
fn size_text(bytes: usize) -> String {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    match units
        .iter()
        .find(|(_, shift)| bytes != 0 && bytes.trailing_zeros() >= *shift)
    {
        Some((unit, shift)) => format!("{}{unit}", bytes >> shift),
        None => bytes.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_shown_as_text_read_back_as_their_constants() {
        assert_eq!(
            bounds::handshake_timeout(&DEFAULT_HANDSHAKE_TIMEOUT),
            Ok(session::DEFAULT_HANDSHAKE_TIMEOUT)
        );
        assert_eq!(
            bounds::rate_limit(&DEFAULT_RATE),
            Ok(Some(rate::DEFAULT_RATE))
        );
        assert_eq!(DEFAULT_BACKLOG.as_str(), "64MiB");
        for bytes in [
            backlog::DEFAULT_BYTES,
            backlog::MIN_BYTES,
            1 << 30,
            3 << 20,
            1000,
            0,
        ] {
            assert_eq!(backlog::parse_size(&size_text(bytes)), Ok(bytes), "{bytes}");
        }
        let exempt: Result<Vec<_>, _> = DEFAULT_EXEMPT
            .iter()
            .map(|net| per_address::parse_exempt(net))
            .collect();
        let exempt: Vec<IpNet> = exempt.expect("exempt").into_iter().flatten().collect();
        assert_eq!(exempt, per_address::default_exempt());
    }
}
