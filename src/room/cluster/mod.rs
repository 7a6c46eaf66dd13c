//! One room shared by several `serve` nodes through NATS JetStream: the
//! [`Room`] behind `serve --cluster`.
//!
//! We write no consensus of our own; JetStream gives an ordered, persistent,
//! deduplicating stream and a key-value store with compare-and-set:
//!
//! * **Order.** Every line (messages, `joined!`, `left!`) is published to
//!   one stream per room, `CHAT_<room>`; the stream's sequence number is the
//!   one global order. Each node reads the stream with one ordered consumer
//!   and hands each line to its participants through a local ring of shared
//!   [`Bytes`], as [`LocalRoom`](crate::room::LocalRoom) does. Every publish
//!   carries a `Nats-Msg-Id`, so a retried publish is stored once.
//! * **A newcomer's transcript** starts at the sequence the acknowledgement
//!   of its own `joined!` line returned: it subscribes to the local ring
//!   before publishing, and skips whatever came before.
//! * **Nicknames** live in the bucket `chat_<room>_nicks`, keyed by their
//!   case-insensitive form: joining is `create` (refused when the key
//!   exists), leaving is a revision-checked `delete`. Each entry names the
//!   node that holds it.
//! * **Liveness.** Each node refreshes its key in `chat_<room>_nodes`, a
//!   bucket whose entries expire after [`LIVENESS_TTL`]. Each node watches
//!   the nickname bucket; a nickname whose node's key has expired is deleted
//!   with the revision it was seen at (so exactly one node wins), and the
//!   winner publishes `<nick> left!`.
//! * **Outages.** While NATS is away a participant's line is refused with
//!   `ERROR message not sent: the room is unavailable`, delivered through
//!   its own subscription; the client library reconnects by itself, and the
//!   ordered consumer resumes after the last sequence this node delivered.
//! * **Private lines** (`/msg`) go straight to the recipient's node, after
//!   the sender's earlier lines, and are held there until the public lines
//!   said before them have been read (see [`private`]).
//!
//! Limits keep their per-node meaning: the participant limit counts this
//! node's participants, and the ring bounds how far each may fall behind.

mod private;

pub use private::ClusterSubscription;
use private::{PRIVATE_QUEUE, Private};

use crate::protocol;
use crate::room::WhisperError;
use crate::room::backlog::{self, Backlog};
use crate::room::{JoinError, Room, UNAVAILABLE};
use crate::sync::lock;
use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, Context as JetStream, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, timeout};

/// How long a node's liveness entry lives without a refresh. A node killed
/// outright is noticed within this, plus `SCAN_EVERY`.
pub const LIVENESS_TTL: Duration = Duration::from_secs(6);

/// How often a node refreshes its liveness entry.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How often a node looks for nicknames held by nodes that are gone.
const SCAN_EVERY: Duration = Duration::from_secs(2);

/// How long a NATS request (a key-value operation, an acknowledgement) may
/// take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a line whose acknowledgement did not come is published again
/// (with the same `Nats-Msg-Id`, so it is stored once) before its sender is
/// told it was not sent. Well within the stream's two-minute duplicate
/// window.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// How long a newcomer waits for its `joined!` line to be stored.
const JOIN_RETRY_FOR: Duration = Duration::from_secs(5);

/// Participants' lines accepted on one node and not yet stored, wherever
/// they wait, beyond which a line is refused.
const OUTGOING_QUEUE: usize = 65_536;

/// Publishes awaiting their acknowledgement on one node at once.
const MAX_IN_FLIGHT: usize = 4096;

/// Lines one participant may have waiting behind its line in flight (they
/// are published one at a time); beyond that its lines are refused. The
/// rate limit keeps a participant far below it.
const SENDER_QUEUE: usize = 256;

/// The header that marks a participant's public line (a message or an
/// action): what a newcomer's history is made of.
const KIND_HEADER: &str = "Chat-Kind";
const KIND_SAY: &str = "say";

/// How many lines back a newcomer's history is looked for, per line wanted
/// (joins and leaves are in the stream too, and are not history).
const HISTORY_SCAN: u64 = 4;

/// Lines the room's stream keeps (the newest), for history and for nodes
/// that were away.
const STREAM_MAX_MESSAGES: i64 = 100_000;

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

/// What a nickname's entry says: who holds it, on which node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Holder {
    node: String,
    nick: String,
}

/// A line of the room, with its place in the global order.
#[derive(Debug, Clone)]
struct Line {
    seq: u64,
    bytes: Bytes,
}

impl backlog::Line for Line {
    fn text(&self) -> &[u8] {
        &self.bytes
    }
}

/// The room as one node sees it.
pub struct ClusterRoom {
    shared: Arc<Shared>,
}

struct Shared {
    node: String,
    subject: String,
    /// Where lines for one participant of a node go: `<prefix>.<node>`.
    private_prefix: String,
    lines_stream: stream::Stream,
    history: usize,
    js: JetStream,
    client: async_nats::Client,
    nicks: kv::Store,
    nodes: kv::Store,
    state: Mutex<State>,
    /// Every nickname entry of the room, as watched: key to revision and
    /// holder, in the keys' order (for `/list`).
    directory: Mutex<BTreeMap<String, (u64, Holder)>>,
    outgoing: mpsc::Sender<Outgoing>,
    link: Arc<Link>,
    in_flight: Arc<Semaphore>,
    /// Per sender (nickname key) with lines being published, what waits
    /// behind the one in flight. A sender's lines are published one after
    /// another by one task, so that a line published again after a lost
    /// acknowledgement cannot land after a later line of the same sender;
    /// different senders' tasks run side by side, each holding one permit
    /// at a time, so a sender that floods fills its own queue, not the
    /// node's.
    senders: Mutex<HashMap<String, VecDeque<SenderWork>>>,
    /// How many sender tasks run (see `Flush`).
    sending: watch::Sender<usize>,
    /// Participants' lines accepted and not yet stored or given up, on
    /// this node: at most [`OUTGOING_QUEUE`].
    waiting: AtomicUsize,
    max_members: usize,
    /// The highest sequence of the room's stream this node knows to be
    /// stored (read from the stream, or acknowledged to it): what a private
    /// line sent now must not overtake.
    known: AtomicU64,
    /// Unique to this process, so message ids never repeat across restarts.
    boot: String,
    next_id: AtomicU64,
}

struct State {
    /// This node's participants by nickname key.
    members: HashMap<String, Member>,
    lines: Backlog<Line>,
    closed: bool,
}

struct Member {
    /// As its owner spells it.
    nick: String,
    /// The nickname entry's revision; `None` while the join is under way,
    /// and once the participant is disconnected by the room.
    revision: Option<u64>,
    /// Lines for this participant alone (private messages, why its line
    /// was not sent);
    /// `None` once it is disconnected by the room (see `Shared::kick`).
    /// Until its session leaves, its nickname stays taken on this node.
    private: Option<mpsc::Sender<Private>>,
}

impl Member {
    /// Queues `line` (from the node itself) for this participant alone, to
    /// be read after the room lines already waiting; false if that failed.
    fn tell(&self, line: Bytes) -> bool {
        self.tell_after(0, line)
    }

    /// Queues `line` for this participant alone, to be read once it has
    /// read the room up to sequence `after`; false if that failed.
    fn tell_after(&self, after: u64, line: Bytes) -> bool {
        self.private
            .as_ref()
            .is_some_and(|private| private.try_send(Private { after, line }).is_ok())
    }
}

enum Outgoing {
    /// A line for everybody; `from` is the sender's nickname key, and
    /// `public` marks a participant's message or action (history).
    Line {
        line: Bytes,
        from: Option<String>,
        public: bool,
    },
    /// A participant of this node left; `line` tells the others.
    Leave {
        key: String,
        nick: String,
        revision: u64,
        line: Bytes,
    },
    /// A private message from `from` (a nickname key of this node) to
    /// `to`: it goes after `from`'s earlier lines are stored.
    Private {
        from: String,
        to: String,
        line: Bytes,
    },
    /// Answers once everything queued before it is stored (or given up).
    Flush(oneshot::Sender<()>),
}

/// What a sender's task does next, in the order the sender did it.
enum SenderWork {
    Line {
        line: Bytes,
        id: String,
        public: bool,
    },
    /// A private message, sent once the lines before it are stored.
    Private { to: String, line: Bytes },
    /// The sender left after its lines: release its nickname, and say so.
    Leave {
        nick: String,
        revision: u64,
        line: Bytes,
    },
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
        validate_room_name(&opts.room)?;
        validate_node_name(&opts.node_name)?;
        let link = Arc::new(Link::default());
        let mut connect = async_nats::ConnectOptions::new()
            .name(format!("chatroom {}", opts.node_name))
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
            let text = tokio::fs::read_to_string(creds).await.with_context(|| {
                format!("cannot read NATS credentials from {}", creds.display())
            })?;
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
        let client = connect
            .connect(servers)
            .await
            .map_err(|e| connect_error(e, &opts))?;
        *lock(&link.since) = Some(Instant::now());
        link.started.store(true, Ordering::Release);
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());

        let subject = format!("chat.{}", opts.room);
        let mut lines_stream = open_stream(
            &js,
            stream::Config {
                name: format!("CHAT_{}", opts.room),
                subjects: vec![subject.clone()],
                max_messages: STREAM_MAX_MESSAGES,
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await
        .context("cannot open the room's stream on NATS (is JetStream enabled?)")?;
        let nicks_name = nicks_bucket(&opts.room);
        let nodes_name = nodes_bucket(&opts.room);
        for (bucket, max_age) in [(&nicks_name, Duration::ZERO), (&nodes_name, LIVENESS_TTL)] {
            open_stream(&js, bucket_config(bucket, max_age))
                .await
                .with_context(|| format!("cannot open the bucket {bucket} on NATS"))?;
        }
        let nicks = js
            .get_key_value(&nicks_name)
            .await
            .with_context(|| format!("cannot open the bucket {nicks_name}"))?;
        let nodes = js
            .get_key_value(&nodes_name)
            .await
            .with_context(|| format!("cannot open the bucket {nodes_name}"))?;
        // Created, not put: two live nodes by one name would each take the
        // other's participants for its own leftovers.
        match nodes
            .create(&opts.node_name, Bytes::from(opts.node_name.clone()))
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => bail!(
                "a node named {:?} is already in room {:?}: give each node its own \
                 --node-name (if that node has just died, its name is free within {} s)",
                opts.node_name,
                opts.room,
                LIVENESS_TTL.as_secs()
            ),
            Err(e) => return Err(e).context("cannot announce this node on NATS"),
        }
        let last = lines_stream
            .info()
            .await
            .context("cannot read the room's stream")?
            .state
            .last_sequence;

        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
        let lines = Backlog::new(opts.backlog.max(backlog::MIN_BYTES));
        let private_prefix = format!("chat.{}.private", opts.room);
        let private_inbox = client
            .subscribe(format!("{private_prefix}.{}", opts.node_name))
            .await
            .context("cannot subscribe to this node's private lines")?;
        let shared = Arc::new(Shared {
            node: opts.node_name.clone(),
            subject,
            private_prefix,
            lines_stream: lines_stream.clone(),
            history: opts.history,
            js,
            client,
            nicks,
            nodes,
            state: Mutex::new(State {
                members: HashMap::new(),
                lines,
                closed: false,
            }),
            directory: Mutex::new(BTreeMap::new()),
            outgoing,
            link,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            senders: Mutex::new(HashMap::new()),
            sending: watch::channel(0).0,
            waiting: AtomicUsize::new(0),
            max_members: opts.max_members,
            known: AtomicU64::new(last),
            boot: random_hex(4),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(deliver(shared.clone(), lines_stream, last));
        tokio::spawn(private::deliver_private(shared.clone(), private_inbox));
        tokio::spawn(publish_queue(shared.clone(), queue));
        tokio::spawn(watch_nicknames(shared.clone()));
        tokio::spawn(keep_alive(shared.clone()));
        tracing::info!(node = %opts.node_name, room = %opts.room, "joined the cluster");
        Ok(ClusterRoom { shared })
    }

    /// Once every session has left: waits (a bounded time) until their
    /// `left!` lines are stored, then withdraws this node's liveness entry
    /// so that the others do not wait for it to expire.
    pub async fn finish(&self) {
        let (done, flushed) = oneshot::channel();
        if self
            .shared
            .outgoing
            .send(Outgoing::Flush(done))
            .await
            .is_ok()
        {
            let _ = timeout(REQUEST_TIMEOUT, flushed).await;
        }
        let _ = timeout(REQUEST_TIMEOUT, self.shared.nodes.delete(&self.shared.node)).await;
        let _ = timeout(REQUEST_TIMEOUT, self.shared.client.flush()).await;
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.shared.node
    }

    /// Sends a participant's public line (a message, an action) to
    /// everyone, in the room's order and history; if it cannot be
    /// published, its sender is told so.
    pub fn say(&self, nick: &str, line: Bytes) {
        let key = protocol::nick_key(nick);
        if self.shared.state().closed {
            return;
        }
        if self.shared.connected_since().is_none() {
            return self.shared.refuse(&key);
        }
        // Counted from here until stored or given up, wherever it waits:
        // the node's queue, or its sender's.
        if self.shared.waiting.fetch_add(1, Ordering::AcqRel) >= OUTGOING_QUEUE {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return self.shared.refuse(&key);
        }
        let public = Outgoing::Line {
            line,
            from: Some(key.clone()),
            public: true,
        };
        if self.shared.outgoing.try_send(public).is_err() {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            self.shared.refuse(&key);
        }
    }

    /// Removes `nick` of this node and tells the others with `line`
    /// (`left!`, or a leaving with a reason), once its nickname is free.
    pub fn depart(&self, nick: &str, line: Bytes) {
        let key = protocol::nick_key(nick);
        let Some(member) = self.shared.state().members.remove(&key) else {
            return;
        };
        let Some(revision) = member.revision else {
            return;
        };
        let leave = Outgoing::Leave {
            key,
            nick: nick.to_owned(),
            revision,
            line,
        };
        if self.shared.outgoing.try_send(leave).is_err() {
            // The queue is full or gone: the scan for orphans releases the
            // nickname instead (it is ours and nobody here holds it).
            tracing::warn!(%nick, "leave queued for the next scan");
        }
    }

    /// How many participants are in the room on every node, and the first
    /// `max` of their nicknames in alphabetical order (without regard to
    /// case), as their owners spelled them (from the nickname bucket, as
    /// watched). Sorts the whole directory: O(room), which `/list`'s rate
    /// limit keeps cheap.
    pub fn members(&self, max: usize) -> (usize, Vec<String>) {
        let directory = lock(&self.shared.directory);
        let mut nicks: Vec<&str> = directory
            .values()
            .map(|(_, holder)| holder.nick.as_str())
            .collect();
        nicks.sort_unstable_by_key(|nick| nick.to_ascii_lowercase());
        let first = nicks.into_iter().take(max).map(str::to_owned).collect();
        (directory.len(), first)
    }

    /// The nickname `to` (found without regard to case) as its owner spells
    /// it, if someone on any node holds it.
    pub fn recipient(&self, to: &str) -> Option<String> {
        let key = protocol::nick_key(to);
        if let Some(member) = self.shared.state().members.get(&key)
            && member.revision.is_some()
        {
            return Some(member.nick.clone());
        }
        lock(&self.shared.directory)
            .get(&key)
            .map(|(_, holder)| holder.nick.clone())
    }
}

/// A line as published: its message id, and whether it is public (history).
fn outgoing(line: &Bytes, id: &str, public: bool) -> jetstream::message::PublishMessage {
    let publish = jetstream::message::PublishMessage::build()
        .payload(line.clone())
        .message_id(id);
    if public {
        publish.header(KIND_HEADER, KIND_SAY)
    } else {
        publish
    }
}

/// The state of this node's NATS connection.
#[derive(Default)]
struct Link {
    /// Since when the connection is up; `None` while it is down.
    since: Mutex<Option<Instant>>,
    /// Counts reconnections: readers of the stream and the bucket start
    /// again after each, rather than wait to notice that the server forgot
    /// their consumers.
    restored: tokio::sync::watch::Sender<u64>,
    /// Set once the first connection is made (its own event says nothing
    /// new).
    started: std::sync::atomic::AtomicBool,
}

fn on_event(link: &Link, event: async_nats::Event) {
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
        other => tracing::debug!("NATS: {other}"),
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn connected_since(&self) -> Option<Instant> {
        *lock(&self.link.since)
    }

    fn next_message_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}.{}.{n}", self.node, self.boot)
    }

    /// Tells the participant `key` of this node that its line was not sent.
    fn refuse(&self, key: &str) {
        self.refuse_because(key, UNAVAILABLE);
    }

    /// Tells participant `key` its line was not sent, and why.
    fn refuse_because(&self, key: &str, why: &str) {
        if let Some(member) = self.state().members.get(key) {
            member.tell(protocol::error_line(format!("message not sent: {why}")));
        }
    }

    /// The last [`Shared::history`] public lines before sequence `before`,
    /// oldest first, read from the stream (within a bounded look back and
    /// time; fewer, or none, otherwise).
    async fn read_history(&self, before: u64) -> Vec<Bytes> {
        let wanted = self.history;
        if wanted == 0 || before <= 1 {
            return Vec::new();
        }
        let from = before
            .saturating_sub(HISTORY_SCAN.saturating_mul(wanted as u64))
            .max(1);
        let read = async {
            let mut kept = VecDeque::with_capacity(wanted);
            let consumer = self
                .lines_stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: self.subject.clone(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            while let Some(message) = messages.next().await {
                let message = message?;
                let seq = message.info().map_err(anyhow::Error::msg)?.stream_sequence;
                if seq >= before {
                    break;
                }
                let public = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(KIND_HEADER))
                    .is_some_and(|v| v.as_str() == KIND_SAY);
                if public {
                    if kept.len() == wanted {
                        kept.pop_front();
                    }
                    kept.push_back(message.payload.clone());
                }
            }
            anyhow::Ok(Vec::from(kept))
        };
        match timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(lines)) => lines,
            Ok(Err(e)) => {
                tracing::warn!("no history for a newcomer: {e:#}");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("no history for a newcomer: timed out");
                Vec::new()
            }
        }
    }

    /// Ends the session of this node's participant `key`, telling it why.
    fn kick(&self, key: &str) {
        if let Some(member) = self.state().members.get_mut(key) {
            member.tell(protocol::error_line(
                "disconnected: this server lost the room",
            ));
            // Dropping the sender ends the subscription after that line;
            // without a revision, its leaving announces nothing.
            member.private = None;
            member.revision = None;
        }
    }

    /// Publishes `line` under `id` until it is stored (or found already
    /// stored), for at most `patience`; returns its sequence.
    async fn publish_stored(
        &self,
        line: &Bytes,
        id: &str,
        public: bool,
        patience: Duration,
    ) -> Result<u64> {
        let give_up = Instant::now() + patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.connected_since().is_some() {
                let publish = outgoing(line, id, public);
                match self.js.send_publish(self.subject.clone(), publish).await {
                    Ok(ack) => match ack.await {
                        Ok(ack) => {
                            self.known.fetch_max(ack.sequence, Ordering::AcqRel);
                            return Ok(ack.sequence);
                        }
                        Err(e) => tracing::debug!("publish not acknowledged: {e}"),
                    },
                    Err(e) => tracing::debug!("publish failed: {e}"),
                }
            }
            if Instant::now() + backoff > give_up {
                bail!("not stored within {patience:?}");
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Sends `line` on its way without waiting for it to be stored; a task
    /// waits for the acknowledgement, publishes again if it does not come,
    /// and tells the sender (if any) if the line could not be stored.
    /// A participant's line goes to its sender's task (see
    /// [`Shared::senders`]).
    async fn send_line(
        self: &Arc<Self>,
        line: Bytes,
        id: String,
        from: Option<String>,
        public: bool,
    ) {
        if let Some(sender) = from {
            return self.queue_for_sender(sender, SenderWork::Line { line, id, public });
        }
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = self
            .js
            .send_publish(self.subject.clone(), outgoing(&line, &id, public))
            .await;
        let shared = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(ack) = first
                && let Ok(ack) = ack.await
            {
                shared.known.fetch_max(ack.sequence, Ordering::AcqRel);
                return;
            }
            if let Err(e) = shared.publish_stored(&line, &id, public, RETRY_FOR).await {
                tracing::warn!("a line could not be stored: {e}");
            }
        });
    }

    /// Hands `work` to `sender`'s task, starting one if it has none. A line
    /// beyond what a sender may have waiting is refused (the sender is told).
    fn queue_for_sender(self: &Arc<Self>, sender: String, work: SenderWork) {
        let mut senders = lock(&self.senders);
        if let Some(waiting) = senders.get_mut(&sender) {
            if !matches!(work, SenderWork::Leave { .. }) && waiting.len() >= SENDER_QUEUE {
                drop(senders);
                if matches!(work, SenderWork::Line { .. }) {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                }
                return self.refuse_because(&sender, "too many of your lines are waiting");
            }
            waiting.push_back(work);
            return;
        }
        senders.insert(sender.clone(), VecDeque::new());
        drop(senders);
        self.sending.send_modify(|count| *count += 1);
        tokio::spawn(publish_for_sender(self.clone(), sender, work));
    }

    /// Deletes the nickname entry `key` if it is still at `revision`, and
    /// if so, announces `<nick> left!`. Whoever deletes it announces it,
    /// once: its message id is the entry's revision.
    async fn release(self: &Arc<Self>, key: &str, nick: &str, revision: u64, line: Bytes) -> bool {
        match timeout(
            REQUEST_TIMEOUT,
            self.nicks.delete_expect_revision(key, Some(revision)),
        )
        .await
        {
            Ok(Ok(())) => {
                let id = format!("left.{key}.{revision}");
                self.send_line(line, id, None, false).await;
                true
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::debug!(%nick, "nickname already released elsewhere");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(%nick, "cannot release the nickname yet: {e}");
                false
            }
            Err(_) => {
                tracing::warn!(%nick, "cannot release the nickname yet: timed out");
                false
            }
        }
    }
}

/// Reads the room's stream in order and hands each line to this node's
/// participants. Resumes after the last sequence it delivered whenever the
/// consumer has to be made again, and never delivers a sequence twice.
async fn deliver(shared: Arc<Shared>, stream: stream::Stream, mut last: u64) {
    let mut backoff = Duration::from_millis(100);
    let mut restored = shared.link.restored.subscribe();
    loop {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: shared.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                },
                ..Default::default()
            })
            .await;
        let messages = match consumer {
            Ok(consumer) => consumer.messages().await,
            Err(e) => {
                tracing::debug!("cannot read the room's stream yet: {e}");
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::debug!("cannot read the room's stream yet: {e}");
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        restored.mark_unchanged();
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = restored.changed() => break,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    // Start again from the last line delivered.
                    tracing::debug!("reading the room's stream: {e}");
                    break;
                }
                None => break,
            };
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            if seq <= last {
                continue;
            }
            last = seq;
            shared.known.fetch_max(seq, Ordering::AcqRel);
            // A copy of its own: the payload shares the client's read
            // buffer, which a line kept in the ring would keep alive whole.
            let bytes = Bytes::copy_from_slice(&message.payload);
            let state = shared.state();
            if state.closed {
                return;
            }
            // No receivers is fine: nobody here to tell.
            state.lines.push(Line { seq, bytes });
        }
        if shared.state().closed {
            return;
        }
        sleep(backoff).await;
    }
}

/// One sender's task: publishes its lines one after another, each once
/// the previous one is stored or given up, holding one permit at a time;
/// ends when nothing waits.
async fn publish_for_sender(shared: Arc<Shared>, sender: String, first: SenderWork) {
    let mut next = Some(first);
    while let Some(work) = next.take() {
        match work {
            SenderWork::Line { line, id, public } => {
                // The semaphore is never closed; if it were, publishing on
                // without a permit beats leaving the queue unserved.
                let permit = shared.in_flight.clone().acquire_owned().await.ok();
                if let Err(e) = shared.publish_stored(&line, &id, public, RETRY_FOR).await {
                    tracing::warn!("a line could not be stored: {e}");
                    shared.refuse(&sender);
                }
                drop(permit);
                shared.waiting.fetch_sub(1, Ordering::AcqRel);
            }
            SenderWork::Private { to, line } => {
                shared.send_private(&sender, &to, line).await;
            }
            SenderWork::Leave {
                nick,
                revision,
                line,
            } => {
                shared.release(&sender, &nick, revision, line).await;
            }
        }
        let mut senders = lock(&shared.senders);
        next = senders.get_mut(&sender).and_then(VecDeque::pop_front);
        if next.is_none() {
            senders.remove(&sender);
        }
    }
    shared.sending.send_modify(|count| *count -= 1);
}

/// Publishes this node's lines in the order they were queued.
async fn publish_queue(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>) {
    while let Some(outgoing) = queue.recv().await {
        match outgoing {
            Outgoing::Line { line, from, public } => {
                let id = shared.next_message_id();
                shared.send_line(line, id, from, public).await;
            }
            Outgoing::Leave {
                key,
                nick,
                revision,
                line,
            } => {
                if lock(&shared.senders).contains_key(&key) {
                    // Its last lines are still being published: it leaves
                    // after them, without holding up the other senders.
                    let leave = SenderWork::Leave {
                        nick,
                        revision,
                        line,
                    };
                    shared.queue_for_sender(key, leave);
                } else {
                    shared.release(&key, &nick, revision, line).await;
                }
            }
            Outgoing::Private { from, to, line } => {
                shared.queue_for_sender(from, SenderWork::Private { to, line });
            }
            Outgoing::Flush(done) => {
                let mut sending = shared.sending.subscribe();
                let _ = sending.wait_for(|count| *count == 0).await;
                let all = MAX_IN_FLIGHT as u32;
                if let Ok(permits) = shared.in_flight.acquire_many(all).await {
                    drop(permits);
                }
                let _ = done.send(());
            }
        }
    }
}

/// Keeps [`Shared::directory`] equal to the nickname bucket.
async fn watch_nicknames(shared: Arc<Shared>) {
    let mut restored = shared.link.restored.subscribe();
    loop {
        restored.mark_unchanged();
        match shared.nicks.watch_with_history(">").await {
            Ok(mut watch) => {
                lock(&shared.directory).clear();
                loop {
                    let entry = tokio::select! {
                        entry = watch.next() => entry,
                        _ = restored.changed() => break,
                    };
                    let Some(Ok(entry)) = entry else { break };
                    let mut directory = lock(&shared.directory);
                    match entry.operation {
                        kv::Operation::Put => match serde_json::from_slice(&entry.value) {
                            Ok(holder) => {
                                directory.insert(entry.key, (entry.revision, holder));
                            }
                            Err(_) => {
                                directory.remove(&entry.key);
                            }
                        },
                        kv::Operation::Delete | kv::Operation::Purge => {
                            directory.remove(&entry.key);
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("cannot watch the nicknames yet: {e}"),
        }
        if shared.state().closed && shared.state().members.is_empty() {
            return;
        }
        sleep(Duration::from_secs(1)).await;
    }
}

/// Refreshes this node's liveness entry, and releases the nicknames of
/// nodes whose entry expired (and any of this node's own that no local
/// participant holds: left over from a crash under the same node name).
async fn keep_alive(shared: Arc<Shared>) {
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_scan = Instant::now();
    let mut refreshed = Instant::now();
    loop {
        refresh.tick().await;
        let Some(since) = shared.connected_since() else {
            continue;
        };
        let put = shared
            .nodes
            .put(&shared.node, Bytes::from(shared.node.clone()));
        match timeout(REQUEST_TIMEOUT, put).await {
            Ok(Ok(_)) => {
                if refreshed.elapsed() > LIVENESS_TTL {
                    // Away long enough for the others to have given this
                    // node's nicknames up.
                    check_members(&shared).await;
                }
                refreshed = Instant::now();
            }
            Ok(Err(e)) => tracing::debug!("liveness not refreshed: {e}"),
            Err(_) => tracing::debug!("liveness not refreshed: timed out"),
        }
        // After an outage, give the other nodes time to refresh their own
        // entries before judging them.
        if since.elapsed() < LIVENESS_TTL + REFRESH_EVERY || last_scan.elapsed() < SCAN_EVERY {
            continue;
        }
        last_scan = Instant::now();
        take_over(&shared).await;
        tracing::debug!("looked for nodes that are gone");
    }
}

/// Disconnects this node's participants whose nickname entry is gone or
/// changed: another node announced them as left while this one was away,
/// and the name may have a new owner.
async fn check_members(shared: &Arc<Shared>) {
    let held: Vec<(String, u64)> = shared
        .state()
        .members
        .iter()
        .filter_map(|(key, member)| Some((key.clone(), member.revision?)))
        .collect();
    let mut lost = 0;
    for (key, revision) in held {
        let still_ours = match timeout(REQUEST_TIMEOUT, shared.nicks.entry(key.as_str())).await {
            Ok(Ok(Some(entry))) => {
                entry.revision == revision && entry.operation == kv::Operation::Put
            }
            Ok(Ok(None)) => false,
            // Cannot tell: keep them.
            _ => true,
        };
        if !still_ours {
            lost += 1;
            shared.kick(&key);
        }
    }
    if lost > 0 {
        tracing::warn!(
            participants = lost,
            "disconnected participants the other nodes saw leave while this one was away"
        );
    }
}

async fn take_over(shared: &Arc<Shared>) {
    let entries: Vec<(String, u64, Holder)> = lock(&shared.directory)
        .iter()
        .map(|(key, (revision, holder))| (key.clone(), *revision, holder.clone()))
        .collect();
    let mut alive: HashMap<String, bool> = HashMap::new();
    for (key, revision, holder) in entries {
        let orphan = if holder.node == shared.node {
            // Ours, unless no participant here holds it (revision `None`
            // is a join under way).
            match shared.state().members.get(&key) {
                Some(member) => member.revision.is_some_and(|r| r != revision),
                None => true,
            }
        } else {
            let known = alive.get(&holder.node).copied();
            let is_alive = match known {
                Some(is_alive) => is_alive,
                None => match timeout(REQUEST_TIMEOUT, shared.nodes.get(&holder.node)).await {
                    Ok(Ok(entry)) => {
                        let is_alive = entry.is_some();
                        alive.insert(holder.node.clone(), is_alive);
                        is_alive
                    }
                    // Cannot tell: judge it another time.
                    _ => true,
                },
            };
            !is_alive
        };
        let left = protocol::left_line(&holder.nick);
        if orphan && shared.release(&key, &holder.nick, revision, left).await {
            tracing::info!(
                nick = %holder.nick,
                node = %holder.node,
                "released a nickname whose node is gone"
            );
        }
    }
}

impl Room for ClusterRoom {
    type Subscription = ClusterSubscription;

    fn quit(&self, nick: &str, reason: &str) {
        self.depart(nick, protocol::left_line_because(nick, reason));
    }

    fn act(&self, nick: &str, text: &str) {
        self.say(nick, protocol::action_line(nick, text));
    }

    /// The private line goes through its sender's queue, after the lines
    /// the sender said before it; if it cannot be delivered (the recipient
    /// is not reading, or left meanwhile), the sender is told so then.
    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        let recipient = self
            .recipient(to)
            // `to` is as typed: never echo it unsanitized.
            .ok_or_else(|| WhisperError::NoSuchNick(protocol::sanitize(to).into_owned()))?;
        let line = protocol::private_line(from, &recipient, text);
        // To oneself: the echo is the delivery.
        if protocol::nick_key(&recipient) == protocol::nick_key(from) {
            return Ok(line);
        }
        if self.shared.connected_since().is_none() {
            return Err(WhisperError::Unavailable);
        }
        let private = Outgoing::Private {
            from: protocol::nick_key(from),
            to: recipient,
            line: line.clone(),
        };
        self.shared
            .outgoing
            .try_send(private)
            .map_err(|_| WhisperError::Unavailable)?;
        Ok(line)
    }

    fn members(&self, max: usize) -> (usize, Vec<String>) {
        ClusterRoom::members(self, max)
    }

    async fn join(&self, nick: &str) -> Result<ClusterSubscription, JoinError> {
        let shared = &self.shared;
        let key = protocol::nick_key(nick);
        let (private, private_rx) = mpsc::channel(PRIVATE_QUEUE);
        {
            let mut state = shared.state();
            if state.members.contains_key(&key) {
                return Err(protocol::NickError::Taken(nick.to_owned()).into());
            }
            if state.closed {
                return Err(JoinError::Closed);
            }
            if state.members.len() >= shared.max_members {
                return Err(JoinError::Full);
            }
            if shared.connected_since().is_none() {
                return Err(JoinError::Unavailable);
            }
            state.members.insert(
                key.clone(),
                Member {
                    revision: None,
                    nick: nick.to_owned(),
                    private: Some(private),
                },
            );
        }
        // Whatever goes wrong below gives the place back.
        let forget = |shared: &Shared| {
            shared.state().members.remove(&key);
        };
        let holder = Holder {
            node: shared.node.clone(),
            nick: nick.to_owned(),
        };
        let value = match serde_json::to_vec(&holder) {
            Ok(value) => Bytes::from(value),
            Err(_) => {
                forget(shared);
                return Err(JoinError::Unavailable);
            }
        };
        let revision = match timeout(REQUEST_TIMEOUT, shared.nicks.create(&key, value)).await {
            Ok(Ok(revision)) => revision,
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                forget(shared);
                return Err(protocol::NickError::Taken(nick.to_owned()).into());
            }
            Ok(Err(e)) => {
                tracing::warn!(%nick, "cannot claim the nickname: {e}");
                forget(shared);
                return Err(JoinError::Unavailable);
            }
            Err(_) => {
                tracing::warn!(%nick, "cannot claim the nickname: timed out");
                forget(shared);
                return Err(JoinError::Unavailable);
            }
        };
        let receiver = {
            let mut state = shared.state();
            if let Some(member) = state.members.get_mut(&key) {
                member.revision = Some(revision);
            }
            state.lines.subscribe()
        };
        let id = format!("joined.{key}.{revision}");
        match shared
            .publish_stored(&protocol::joined_line(nick), &id, false, JOIN_RETRY_FOR)
            .await
        {
            Ok(start) => Ok(ClusterSubscription::new(
                receiver,
                private_rx,
                start,
                shared.read_history(start).await,
            )),
            Err(e) => {
                tracing::warn!(%nick, "cannot announce the newcomer: {e}");
                forget(shared);
                let _ = timeout(
                    REQUEST_TIMEOUT,
                    shared.nicks.delete_expect_revision(&key, Some(revision)),
                )
                .await;
                Err(JoinError::Unavailable)
            }
        }
    }

    fn leave(&self, nick: &str) {
        self.depart(nick, protocol::left_line(nick));
    }

    fn publish(&self, nick: &str, text: &str) {
        self.say(nick, protocol::chat_line(nick, text));
    }

    fn announce(&self, line: Bytes) {
        if self.shared.state().closed {
            return;
        }
        if self
            .shared
            .outgoing
            .try_send(Outgoing::Line {
                line,
                from: None,
                public: false,
            })
            .is_err()
        {
            tracing::warn!("an announcement could not be queued");
        }
    }

    /// Says `farewell` to this node's participants only: the room goes on
    /// on the other nodes, which hear this node's participants leave.
    fn close(&self, farewell: Bytes) {
        let mut state = self.shared.state();
        if !state.closed {
            state.lines.push(Line {
                seq: u64::MAX,
                bytes: farewell,
            });
            state.closed = true;
        }
    }

    fn len(&self) -> usize {
        self.shared.state().members.len()
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
