//! Where a cluster room lives and how a node joins it: the options, the
//! names that become NATS subjects and buckets, connecting (with the error
//! texts a user reads when it fails), and opening the room's stream and
//! buckets.

use super::channel::Registry;
use super::deliver::deliver;
use super::liveness::{Liveness, keep_alive, start_watching};
use super::orders::Orders;
use super::private::deliver_private;
use super::publish::{MAX_IN_FLIGHT, OUTGOING_QUEUE, publish_queue};
use super::recording::{Recording, StoreOptions};
use super::{ClusterRoom, REQUEST_TIMEOUT, Shared, State};
use crate::room::Announce;
use crate::room::backlog::{self, Backlog};
use crate::room::directory::Directory;
use crate::sync::lock;
use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

/// How long a node's liveness entry lives without a refresh, unless the
/// room was made with another ([`ClusterOptions::node_timeout`]).
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(6);

/// Lines the room's stream keeps (the newest), for history and for nodes
/// that were away.
const STREAM_MAX_MESSAGES: i64 = 100_000;

/// How long a node starting asks a NATS that does not answer to take its
/// liveness entry, before it gives up.
const ANNOUNCE_FOR: Duration = Duration::from_secs(30);

/// Where a cluster room lives and how this node appears in it.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The NATS server, `nats://HOST:PORT` (several separated by commas).
    pub url: String,
    /// The room's name: several rooms can share one NATS server.
    pub room: String,
    /// This node's name, unique in the room.
    pub node_name: String,
    /// A NATS credentials file (JWT and NKey seed), if the server wants one.
    pub creds: Option<PathBuf>,
    /// A CA to verify the NATS server's TLS certificate with.
    pub ca: Option<PathBuf>,
    /// Most participants at once on this node.
    pub max_members: usize,
    /// How far, in bytes of lines (see [`backlog::cost`]), a participant
    /// may fall behind before it is dropped: the bound of the node's ring.
    pub backlog: usize,
    /// How many of the room's last public lines a newcomer is given (0:
    /// none), read from the stream.
    pub history: usize,
    /// The longest text a participant's line may carry (`--max-line`): a
    /// record read from NATS with a longer one is dropped.
    pub max_line: usize,
    /// Up to which size of the whole room (every node's participants)
    /// joins and leaves are announced.
    pub announce: Announce,
    /// How long a node's liveness entry lives without a refresh: a node
    /// silent this long is taken for dead, and its participants announced
    /// as left. The room's setting: the node that makes the room's buckets
    /// fixes it, and every node uses the bucket's.
    pub node_timeout: Duration,
}

impl ClusterOptions {
    /// Options for node `node_name` in `room` at `url`, with no limit of
    /// the room's own on participants (the server's admission applies),
    /// the default backlog, no history and the default node timeout.
    pub fn new(url: String, room: String, node_name: String) -> Self {
        ClusterOptions {
            url,
            room,
            node_name,
            creds: None,
            ca: None,
            max_members: usize::MAX,
            backlog: backlog::DEFAULT_BYTES,
            history: 0,
            max_line: crate::protocol::DEFAULT_MAX_LINE,
            announce: Announce::default(),
            node_timeout: DEFAULT_NODE_TIMEOUT,
        }
    }
}

/// Checks a room name: it becomes part of stream, bucket and subject names.
pub fn validate_room_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("--cluster-room {name:?}: use 1 to 64 letters, digits, '-' or '_'");
    }
    Ok(())
}

/// Checks a node name: it becomes a key in the liveness bucket.
pub fn validate_node_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || name.starts_with('.')
        || name.ends_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        bail!("--node-name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// The default node name: the host name and a random suffix.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .take(48)
                .collect::<String>()
        })
        .map(|h| h.trim_matches('.').to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", random_hex(3))
}

fn random_hex(bytes: usize) -> String {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut buf = vec![0u8; bytes];
    // The system's random source does not fail on Linux; zeros would only
    // make a name less unique.
    let _ = SystemRandom::new().fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn nicks_bucket(room: &str) -> String {
    format!("chat_{room}_nicks")
}

fn nodes_bucket(room: &str) -> String {
    format!("chat_{room}_nodes")
}

/// Opens the stream `config` names, creating it if it does not exist. Two
/// nodes starting at once may both find it missing; the one whose create
/// loses the race opens the one the other made.
async fn open_stream(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream> {
    let name = config.name.clone();
    match js.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(create) => js
            .get_stream(&name)
            .await
            .map_err(|_| anyhow::Error::new(create)),
    }
}

/// The stream behind a key-value bucket, made by hand: the client's own
/// `create_key_value` first asks for account details that nats-server 2.9
/// answers in a shape it cannot read.
fn bucket_config(bucket: &str, max_age: Duration) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Why the first connection to NATS failed, as the user should read it,
/// each cause once: the client's error already shows its source, which a
/// chain of causes would repeat ("IO error: Connection refused: Connection
/// refused"). A refused login says so, and what to check.
fn connect_error(error: async_nats::ConnectError, opts: &ClusterOptions) -> anyhow::Error {
    if let Some(ca) = &opts.ca
        && answered_without_tls(&error)
    {
        return anyhow::anyhow!(
            "NATS at {} does not answer in TLS, and with --cluster-ca {} the link to \
             NATS must be TLS (is that server started with TLS, e.g. `nats-server --tls \
             --tlscert CERT --tlskey KEY`?)",
            opts.url,
            ca.display()
        );
    }
    if error.kind() != async_nats::ConnectErrorKind::AuthorizationViolation {
        return anyhow::anyhow!("cannot reach NATS at {}: {error}", opts.url);
    }
    match &opts.creds {
        None => anyhow::anyhow!(
            "NATS at {} refused this node: authorization violation (no credentials \
             were given: a server that requires them needs --cluster-creds FILE)",
            opts.url
        ),
        Some(creds) => anyhow::anyhow!(
            "NATS at {} refused this node: authorization violation with the credentials \
             in {} (is the user's account one the server trusts, and still valid?)",
            opts.url,
            creds.display()
        ),
    }
}

/// Runs `work` (opening the room), failing as soon as NATS reports a
/// permissions violation meanwhile, with what it refused: the refused
/// request itself would only time out, and say nothing of why.
async fn unless_denied<T>(
    link: &Link,
    opts: &ClusterOptions,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut denied = link.denied.subscribe();
    let done = tokio::select! {
        done = work => done,
        _ = denied.wait_for(Option::is_some) => Err(anyhow::anyhow!("permissions violation")),
    };
    let why = link.denied.borrow().clone();
    match (done, why) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(why)) => Err(access_refused(&why, opts)),
        (Err(e), None) => Err(e),
    }
}

/// The error of a node whose NATS user may not use the room, `why` being
/// the violation NATS reported (made safe to print).
fn access_refused(why: &str, opts: &ClusterOptions) -> anyhow::Error {
    let user = match &opts.creds {
        Some(creds) => format!("the credentials in {} do not", creds.display()),
        None => "this node's NATS user (no --cluster-creds) does not".to_owned(),
    };
    let room = &opts.room;
    anyhow::anyhow!(
        "NATS refused this node access to room {room:?}: {why} ({user} allow the \
         room's stream CHAT_{room} and buckets {}, {}: see docs/cluster.md for the \
         permissions a node needs)",
        nicks_bucket(room),
        nodes_bucket(room)
    )
}

/// Whether connecting failed because the server's first bytes were not a
/// TLS record: a server that speaks plain NATS where TLS was required.
fn answered_without_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let not_a_record = |e: &(dyn std::error::Error + 'static)| {
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))
        )
    };
    let mut next = Some(error);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
        if not_a_record(e) || inner.is_some_and(|inner| not_a_record(inner)) {
            return true;
        }
        next = e.source();
    }
    false
}

impl ClusterRoom {
    /// Connects to NATS, makes the room's stream and buckets if they are
    /// not there yet, and starts this node's background tasks. Fails (with
    /// the reason) if NATS cannot be reached or refuses.
    pub async fn connect(opts: ClusterOptions) -> Result<ClusterRoom> {
        Self::connect_recorded(opts, None).await
    }

    /// As [`ClusterRoom::connect`], keeping the room's lines in `store`
    /// too (`serve --cluster --data DIR`, see `recording`): it is
    /// first filled with what the stream holds after its last line.
    pub async fn connect_recorded(
        opts: ClusterOptions,
        store: Option<StoreOptions>,
    ) -> Result<ClusterRoom> {
        validate_room_name(&opts.room)?;
        validate_node_name(&opts.node_name)?;
        let link = Arc::new(Link::default());
        let client = nats_client(&opts, &link).await?;
        *lock(&link.since) = Some(Instant::now());
        link.started.store(true, Ordering::Release);
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let private_prefix = format!("chat.{}.private", opts.room);
        // Subscribed first, so that a refusal of this subscription comes
        // while the room is being opened below, and is reported.
        let private_inbox = client
            .subscribe(format!("{private_prefix}.{}", opts.node_name))
            .await
            .context("cannot subscribe to this node's private lines")?;
        let mut opened = unless_denied(&link, &opts, Opened::open(&js, &opts)).await?;
        opened.add_channel_subjects(&js, &opts.room).await;
        let (queue, queued) = mpsc::channel(OUTGOING_QUEUE);
        let last = opened.last;
        let (recording, from) = match store {
            Some(store) => Recording::start(store, last).map(|(r, from)| (Some(r), from))?,
            None => (None, last),
        };
        let lines_stream = opened.lines.clone();
        let shared = Arc::new(Shared {
            node: opts.node_name.clone(),
            channel_subjects: format!("{}.ch.", opened.subject),
            orders_subject: format!("{}.orders", opened.subject),
            has_channels: opened.has_channels(&opts.room),
            channels: Registry::new(opts.backlog / crate::room::CHANNEL_BACKLOG_SHARE),
            orders: Orders::default(),
            subject: opened.subject,
            private_prefix,
            lines_stream: opened.lines,
            history: opts.history,
            js,
            client,
            nicks: opened.nicks,
            nodes: opened.nodes,
            liveness: opened.liveness,
            state: Mutex::new(State {
                members: HashMap::new(),
                lines: Backlog::new(opts.backlog.max(backlog::MIN_BYTES)),
                closed: false,
            }),
            directory: Mutex::new(Directory::default()),
            directory_changed: watch::channel(0).0,
            queue,
            link,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            senders: Mutex::new(HashMap::new()),
            sending: watch::channel(0).0,
            waiting: AtomicUsize::new(0),
            max_members: opts.max_members,
            max_line: opts.max_line,
            announce: opts.announce,
            rejected: Mutex::default(),
            recording,
            known: AtomicU64::new(last),
            boot: random_hex(4),
            next_id: AtomicU64::new(0),
        });
        shared.recall_mutes(last).await;
        // First: a store catching up then names channels as spelled.
        start_watching(&shared, opened.nicks_last).await;
        tokio::spawn(deliver(shared.clone(), lines_stream, from, last));
        tokio::spawn(deliver_private(shared.clone(), private_inbox));
        tokio::spawn(publish_queue(shared.clone(), queued));
        tokio::spawn(keep_alive(shared.clone()));
        tracing::info!(node = %opts.node_name, room = %opts.room, "joined the cluster");
        Ok(ClusterRoom {
            shared,
            channel: None,
        })
    }
}

/// The first connection to NATS, with the credentials and CA `opts` name;
/// `link` follows its state from then on.
async fn nats_client(opts: &ClusterOptions, link: &Arc<Link>) -> Result<async_nats::Client> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(format!("chatroom {}", opts.node_name))
        // Replies and deliveries come to inboxes under the room's own
        // prefix: a NATS user may then subscribe to this room's inboxes
        // alone, and not read other rooms' traffic through `_INBOX.>`.
        .custom_inbox_prefix(format!("_INBOX.chat_{}", opts.room))
        .connection_timeout(REQUEST_TIMEOUT)
        .event_callback({
            let link = link.clone();
            move |event| {
                let link = link.clone();
                async move { on_event(&link, event) }
            }
        });
    if let Some(creds) = &opts.creds {
        // The file holds the user's NKey seed, a private key: it gets
        // the same checks as our TLS keys (no symlink, ours, 0600).
        crate::certs::keyfile::check_private_key(creds)
            .context("cannot use the NATS credentials (--cluster-creds)")?;
        // Read here rather than by the client, whose error names the
        // file a second time.
        let text = tokio::fs::read_to_string(creds)
            .await
            .with_context(|| format!("cannot read NATS credentials from {}", creds.display()))?;
        connect = connect
            .credentials(&text)
            .with_context(|| format!("{} is not a NATS credentials file", creds.display()))?;
    }
    if let Some(ca) = &opts.ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    let servers: Vec<async_nats::ServerAddr> = opts
        .url
        .split(',')
        .map(|url| url.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--cluster {}: not a NATS address", opts.url))?;
    connect
        .connect(servers)
        .await
        .map_err(|e| connect_error(e, opts))
}

/// The subjects of the room's stream, `subject` being the lobby's: the
/// lobby's, the operators' orders, and one per channel (see `channel`).
fn stream_subjects(subject: &str) -> Vec<String> {
    vec![
        subject.to_owned(),
        format!("{subject}.orders"),
        format!("{subject}.ch.*"),
    ]
}

/// The room's stream and buckets, open, with this node announced in them.
struct Opened {
    subject: String,
    lines: stream::Stream,
    /// The stream's last sequence when this node joined.
    last: u64,
    nicks: kv::Store,
    /// The nickname bucket's last revision when this node opened it.
    nicks_last: u64,
    nodes: kv::Store,
    liveness: Liveness,
}

impl Opened {
    /// Adds the channels' and orders' subjects to the room's stream if it
    /// was made without them (before there were channels), when this
    /// node's NATS user may change it; otherwise leaves it as it is, and
    /// [`Opened::has_channels`] says so. Called after the checks of the
    /// node's permissions (`unless_denied`): a user that may not change
    /// the stream is not refused the room for it.
    async fn add_channel_subjects(&mut self, js: &jetstream::Context, room: &str) {
        let mut config = self.lines.cached_info().config.clone();
        let missing: Vec<String> = stream_subjects(&self.subject)
            .into_iter()
            .filter(|wanted| !config.subjects.contains(wanted))
            .collect();
        if missing.is_empty() {
            return;
        }
        config.subjects.extend(missing);
        let updated = async {
            js.update_stream(&config).await?;
            anyhow::Ok(js.get_stream(&config.name).await?)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, updated).await {
            Ok(Ok(lines)) => {
                tracing::info!(
                    "added the channels' and operators' subjects to the room's stream CHAT_{room}"
                );
                self.lines = lines;
            }
            Ok(Err(e)) => tracing::warn!(
                "cannot add the channels' subjects to the room's stream CHAT_{room}: {e:#}"
            ),
            Err(_) => tracing::warn!(
                "cannot add the channels' subjects to the room's stream CHAT_{room}: timed out"
            ),
        }
    }

    /// Whether the room's stream takes the channels' and orders'
    /// subjects: one made by hand, or before there were channels, may not.
    fn has_channels(&self, room: &str) -> bool {
        let subjects = &self.lines.cached_info().config.subjects;
        let has = stream_subjects(&self.subject)
            .iter()
            .all(|wanted| subjects.contains(wanted));
        if !has {
            tracing::warn!(
                "the room's stream CHAT_{room} does not take the subjects {}.orders and {}.ch.*: \
                 it has no channels and no operators' mutes (see docs/cluster.md)",
                self.subject,
                self.subject
            );
        }
        has
    }

    async fn open(js: &jetstream::Context, opts: &ClusterOptions) -> Result<Opened> {
        let subject = format!("chat.{}", opts.room);
        let mut lines = open_stream(
            js,
            stream::Config {
                name: format!("CHAT_{}", opts.room),
                subjects: stream_subjects(&subject),
                max_messages: STREAM_MAX_MESSAGES,
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await
        .context("cannot open the room's stream on NATS (is JetStream enabled?)")?;
        let nicks_name = nicks_bucket(&opts.room);
        let nicks_last = open_stream(js, bucket_config(&nicks_name, Duration::ZERO))
            .await
            .with_context(|| format!("cannot open the bucket {nicks_name} on NATS"))?
            .cached_info()
            .state
            .last_sequence;
        let nodes_name = nodes_bucket(&opts.room);
        let nodes_stream = open_stream(js, bucket_config(&nodes_name, opts.node_timeout))
            .await
            .with_context(|| format!("cannot open the bucket {nodes_name} on NATS"))?;
        let liveness = Liveness {
            ttl: room_node_timeout(&nodes_stream, opts.node_timeout),
        };
        let nicks = js
            .get_key_value(&nicks_name)
            .await
            .with_context(|| format!("cannot open the bucket {nicks_name}"))?;
        let nodes = js
            .get_key_value(&nodes_name)
            .await
            .with_context(|| format!("cannot open the bucket {nodes_name}"))?;
        announce_node(&nodes, opts, liveness).await?;
        let last = lines
            .info()
            .await
            .context("cannot read the room's stream")?
            .state
            .last_sequence;
        Ok(Opened {
            subject,
            lines,
            last,
            nicks,
            nicks_last,
            nodes,
            liveness,
        })
    }
}

/// The node timeout the room's nodes bucket was made with, which every
/// node follows; says so when it is not the one this node was given.
fn room_node_timeout(nodes: &stream::Stream, asked: Duration) -> Duration {
    let made = nodes.cached_info().config.max_age;
    if made.is_zero() || made == asked {
        return asked;
    }
    tracing::info!(
        "this room's node timeout is {} s, as its buckets were made (not {} s)",
        made.as_secs_f64(),
        asked.as_secs_f64()
    );
    made
}

/// Puts this node's liveness entry in the bucket: created, not put, since
/// two live nodes by one name would each take the other's participants
/// for its own leftovers. A slow NATS is asked again, for a while: the
/// entry carries a token of this start, so an earlier try that was stored
/// though its answer never came is told from another node's entry.
async fn announce_node(nodes: &kv::Store, opts: &ClusterOptions, liveness: Liveness) -> Result<()> {
    let mine = Bytes::from(format!("{} {}", opts.node_name, random_hex(8)));
    let give_up = Instant::now() + ANNOUNCE_FOR;
    loop {
        let error = match nodes.create(&opts.node_name, mine.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if error.kind() == kv::CreateErrorKind::AlreadyExists {
            // Ours, if an earlier try was stored and its answer lost.
            if let Ok(Some(value)) = nodes.get(&opts.node_name).await
                && value == mine
            {
                return Ok(());
            }
            bail!(
                "a node named {:?} is already in room {:?}: give each node its own \
                 --node-name (if that node has just died, its name is free within {} s)",
                opts.node_name,
                opts.room,
                liveness.ttl.as_secs_f64().ceil()
            );
        }
        let transient = matches!(
            error.kind(),
            kv::CreateErrorKind::Publish | kv::CreateErrorKind::Ack | kv::CreateErrorKind::Other
        );
        if !transient || Instant::now() >= give_up {
            return Err(error).context("cannot announce this node on NATS");
        }
        tracing::warn!("announcing this node on NATS: {error}; trying again");
    }
}

/// The state of this node's NATS connection.
#[derive(Default)]
pub(super) struct Link {
    /// Since when the connection is up; `None` while it is down.
    pub(super) since: Mutex<Option<Instant>>,
    /// Counts reconnections: readers of the stream and the bucket start
    /// again after each, rather than wait to notice that the server forgot
    /// their consumers.
    pub(super) restored: watch::Sender<u64>,
    /// Set once the first connection is made (its own event says nothing
    /// new).
    pub(super) started: AtomicBool,
    /// The last permissions violation NATS reported (made safe to print):
    /// something this node's NATS user may not do.
    pub(super) denied: watch::Sender<Option<String>>,
}

pub(super) fn on_event(link: &Link, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected if link.started.load(Ordering::Acquire) => {
            let mut since = lock(&link.since);
            if since.is_none() {
                tracing::info!("NATS connection restored");
                *since = Some(Instant::now());
                link.restored.send_modify(|n| *n += 1);
            }
        }
        async_nats::Event::Disconnected => {
            if lock(&link.since).take().is_some() {
                tracing::warn!(
                    "lost the NATS connection: lines are refused until it is back; reconnecting"
                );
            }
        }
        async_nats::Event::ServerError(async_nats::ServerError::Other(text))
            if text.starts_with("Permissions Violation") =>
        {
            // Bounded and stripped: it comes from the network.
            let text: String = crate::protocol::sanitize(&text).chars().take(300).collect();
            let new = link.denied.send_if_modified(|last| {
                let new = last.as_deref() != Some(text.as_str());
                *last = Some(text.clone());
                new
            });
            if new {
                tracing::warn!(
                    "NATS refused this node: {text} (see docs/cluster.md for the permissions \
                     a node needs)"
                );
            }
        }
        other => tracing::debug!("NATS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_and_node_names_fit_nats_names() {
        assert!(validate_room_name("lobby").is_ok());
        assert!(validate_room_name("team-2_a").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(validate_room_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_node_name("host.example-1_a").is_ok());
        for bad in ["", ".a", "a.", "a b", "a*", "a>", "a/b", &"x".repeat(65)] {
            assert!(validate_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_node_names_are_valid_and_differ() {
        let (one, two) = (default_node_name(), default_node_name());
        assert!(validate_node_name(&one).is_ok(), "{one}");
        assert_ne!(one, two);
    }
}
