//! What operations can watch from outside: the server's counters and
//! gauges in the Prometheus text format (`/metrics`), and whether it takes
//! participants (`/healthz`), served over plain HTTP by [`http`] with
//! `serve --metrics ADDR`.
//!
//! One [`Metrics`] per server, a cheap handle (one `Arc`) that the listener
//! and every session share. Every counter a session moves is an atomic
//! created with its labels up front, so counting takes no lock: a join, a
//! message and a disconnect cost one atomic add each, and deliveries are
//! added once per batch written, where the session batches its writes
//! anyway. What is a state rather than an event (the backlog's bytes, the
//! channels open, the cluster link, the history store) is read when
//! `/metrics` is asked for.

pub mod http;

use crate::room::cluster::ClusterRoom;
use crate::room::store::{Action, Store};
use crate::sync::lock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// One label, as prometheus-client encodes it.
type Label = [(&'static str, &'static str); 1];

/// How a participant reaches the server: the `transport` label of
/// `chatroom_participants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS (or plaintext) over TCP: `chatroom connect`, and the lab's clients.
    Tcp,
    /// A WebSocket on the web port (`serve --web`): the browser page.
    Web,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Tcp, Transport::Web];

    fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Web => "web",
        }
    }
}

/// Why a participant's session ended: the `reason` label of
/// `chatroom_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// It said `/quit`, or closed its connection.
    Quit,
    /// It fell further behind than the backlog holds.
    TooSlow,
    /// It said nothing for the idle timeout.
    Idle,
    /// A reload of the access policy refused it, or its room let it go.
    Kicked,
    /// The server stopped.
    Shutdown,
    /// A line over the limit, or a broken connection.
    Error,
}

impl Disconnect {
    const ALL: [Disconnect; 6] = [
        Disconnect::Quit,
        Disconnect::TooSlow,
        Disconnect::Idle,
        Disconnect::Kicked,
        Disconnect::Shutdown,
        Disconnect::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Disconnect::Quit => "quit",
            Disconnect::TooSlow => "too_slow",
            Disconnect::Idle => "idle",
            Disconnect::Kicked => "kicked",
            Disconnect::Shutdown => "shutdown",
            Disconnect::Error => "error",
        }
    }
}

/// Why a TLS handshake failed: the `reason` label of
/// `chatroom_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not done within the handshake timeout.
    Timeout,
    /// Not TLS, or TLS this server does not speak (a plaintext client, a
    /// port scanner, no common version or cipher suite).
    Protocol,
    /// The client's certificate is missing or not one the CA signed.
    ClientCertificate,
    /// The client gave up with an alert: most often, it does not trust
    /// this server's certificate (not pinned to its CA).
    Alert,
    /// The client went away in the middle.
    Closed,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Protocol,
        HandshakeFailure::ClientCertificate,
        HandshakeFailure::Alert,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::Alert => "alert",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// Which failure the error a TLS acceptor returned is.
    pub fn of(error: &std::io::Error) -> HandshakeFailure {
        use rustls::Error as Tls;
        use std::io::ErrorKind;
        match error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) {
            Some(
                Tls::InvalidMessage(_)
                | Tls::InappropriateMessage { .. }
                | Tls::InappropriateHandshakeMessage { .. }
                | Tls::PeerIncompatible(_)
                | Tls::PeerMisbehaved(_),
            ) => HandshakeFailure::Protocol,
            Some(Tls::NoCertificatesPresented | Tls::InvalidCertificate(_)) => {
                HandshakeFailure::ClientCertificate
            }
            Some(Tls::AlertReceived(_)) => HandshakeFailure::Alert,
            Some(_) => HandshakeFailure::Other,
            None => match error.kind() {
                ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => HandshakeFailure::Closed,
                _ => HandshakeFailure::Other,
            },
        }
    }
}

/// Why a connection was refused: the `reason` label of
/// `chatroom_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server's or an address's limits: server full, too many
    /// sockets, connections, attempts or joins from one address.
    Limits,
    /// The access policy: no or a bad client certificate, a denied name.
    Access,
    /// A revoked client certificate.
    Revoked,
}

impl Refused {
    const ALL: [Refused; 3] = [Refused::Limits, Refused::Access, Refused::Revoked];

    /// Which refusal the access policy's is.
    pub fn of(refusal: &crate::server::access::Refusal) -> Refused {
        match refusal {
            crate::server::access::Refusal::Revoked => Refused::Revoked,
            _ => Refused::Access,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Refused::Limits => "limits",
            Refused::Access => "access",
            Refused::Revoked => "revoked",
        }
    }
}

/// The server's metrics and health, shared by the listener, every session
/// and the `/metrics` endpoint. Cloning it clones one `Arc`.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

struct Inner {
    registry: Mutex<Registry>,
    /// One per [`Transport`], in [`Transport::ALL`]'s order (the same for
    /// the other arrays and their enums).
    participants: [Gauge; Transport::ALL.len()],
    joins: Counter,
    messages: Counter,
    deliveries: Counter,
    disconnects: [Counter; Disconnect::ALL.len()],
    handshake_failures: [Counter; HandshakeFailure::ALL.len()],
    refusals: [Counter; Refused::ALL.len()],
    /// One per operator's [`Action`], in [`Action::ALL`]'s order.
    moderation: [Counter; Action::ALL.len()],
    backlog_bytes: Gauge,
    channels: Gauge,
    stopping: AtomicBool,
    /// Read at each scrape: set by the server and by `serve`.
    probes: Mutex<Probes>,
    /// The history store and its gauges (lines, bytes), with `--data`:
    /// apart from the other probes, so that `/healthz` never waits for its
    /// query.
    store: Mutex<Option<(Store, Gauge, Gauge)>>,
}

/// The states read at each scrape, and the gauges they are shown in.
#[derive(Default)]
struct Probes {
    /// The backlog's bytes, while the room is alive.
    backlog: Option<Box<dyn Fn() -> Option<usize> + Send>>,
    /// The channels open on this server, while its sessions run.
    channels: Option<Box<dyn Fn() -> Option<usize> + Send>>,
    cluster: Option<(Weak<ClusterRoom>, Gauge)>,
}

impl Default for Inner {
    fn default() -> Self {
        let participants = Family::<Label, Gauge>::default();
        let disconnects = Family::<Label, Counter>::default();
        let handshake_failures = Family::<Label, Counter>::default();
        let refusals = Family::<Label, Counter>::default();
        let moderation = Family::<Label, Counter>::default();
        let by = |family: &Family<Label, Counter>, label: &'static str| {
            family.get_or_create(&[("reason", label)]).clone()
        };
        let inner = Inner {
            registry: Mutex::new(Registry::with_prefix("chatroom")),
            participants: Transport::ALL.map(|t| {
                participants
                    .get_or_create(&[("transport", t.label())])
                    .clone()
            }),
            joins: Counter::default(),
            messages: Counter::default(),
            deliveries: Counter::default(),
            disconnects: Disconnect::ALL.map(|d| by(&disconnects, d.label())),
            handshake_failures: HandshakeFailure::ALL.map(|h| by(&handshake_failures, h.label())),
            refusals: Refused::ALL.map(|r| by(&refusals, r.label())),
            moderation: Action::ALL
                .map(|a| moderation.get_or_create(&[("action", a.as_str())]).clone()),
            backlog_bytes: Gauge::default(),
            channels: Gauge::default(),
            stopping: AtomicBool::new(false),
            probes: Mutex::default(),
            store: Mutex::default(),
        };
        let mut registry = lock(&inner.registry);
        registry.register(
            "participants",
            "Participants in the room on this server, by transport",
            participants,
        );
        registry.register("joins", "Participants that joined", inner.joins.clone());
        registry.register(
            "messages",
            "Messages and actions (/me) participants said to the room",
            inner.messages.clone(),
        );
        registry.register(
            "deliveries",
            "Lines written to participants (room lines and private lines)",
            inner.deliveries.clone(),
        );
        registry.register(
            "disconnects",
            "Participants whose session ended, by reason",
            disconnects,
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            handshake_failures,
        );
        registry.register(
            "refusals",
            "Connections or joins refused, by reason",
            refusals,
        );
        registry.register(
            "moderation",
            "Operators' actions done, by action",
            moderation,
        );
        registry.register(
            "backlog_bytes",
            "Bytes of lines the room's ring holds, not yet read by every participant",
            inner.backlog_bytes.clone(),
        );
        registry.register(
            "channels",
            "Channels open on this server besides #lobby (at most --max-channels)",
            inner.channels.clone(),
        );
        drop(registry);
        inner
    }
}

/// A participant counted in `chatroom_participants` until this is dropped
/// (however its session ends, panics included).
#[must_use]
pub struct Presence<'a> {
    gauge: &'a Gauge,
}

impl Drop for Presence<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// A participant joined over `transport`.
    pub fn joined(&self, transport: Transport) -> Presence<'_> {
        self.inner.joins.inc();
        let gauge = &self.inner.participants[transport as usize];
        gauge.inc();
        Presence { gauge }
    }

    /// A participant said a message or an action.
    pub fn said(&self) {
        self.inner.messages.inc();
    }

    /// `lines` lines were written to a participant, in one batch.
    pub fn delivered(&self, lines: u64) {
        if lines > 0 {
            self.inner.deliveries.inc_by(lines);
        }
    }

    /// A participant's session ended.
    pub fn disconnected(&self, why: Disconnect) {
        self.inner.disconnects[why as usize].inc();
    }

    /// A TLS handshake failed.
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.inner.handshake_failures[why as usize].inc();
    }

    /// A connection or a join was refused.
    pub fn refused(&self, why: Refused) {
        self.inner.refusals[why as usize].inc();
    }

    /// An operator's action was done.
    pub fn moderated(&self, action: Action) {
        self.inner.moderation[action as usize].inc();
    }

    /// The server stopped taking participants: `/healthz` says so from now on.
    pub fn stopping(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }

    /// Reads the room's backlog at each scrape through `bytes`, which
    /// returns `None` once the room is gone.
    pub fn watch_backlog(&self, bytes: impl Fn() -> Option<usize> + Send + 'static) {
        lock(&self.inner.probes).backlog = Some(Box::new(bytes));
    }

    /// Reads how many channels are open at each scrape through `open`,
    /// which returns `None` once the server is gone.
    pub fn watch_channels(&self, open: impl Fn() -> Option<usize> + Send + 'static) {
        lock(&self.inner.probes).channels = Some(Box::new(open));
    }

    /// Shows the cluster link's state (`chatroom_cluster_link_up`), and
    /// lets `/healthz` fail while it is down.
    pub fn watch_cluster(&self, room: &Arc<ClusterRoom>) {
        let gauge = Gauge::default();
        lock(&self.inner.registry).register(
            "cluster_link_up",
            "Whether this node's link to NATS is up (1) or down (0)",
            gauge.clone(),
        );
        lock(&self.inner.probes).cluster = Some((Arc::downgrade(room), gauge));
    }

    /// Shows the history store's size, read through `store` (a connection
    /// of its own) at each scrape.
    pub fn watch_store(&self, store: Store) {
        let (lines, bytes) = (Gauge::default(), Gauge::default());
        let mut registry = lock(&self.inner.registry);
        registry.register("store_lines", "Lines in the history store", lines.clone());
        registry.register(
            "store_bytes",
            "Bytes the history store's files take on disk",
            bytes.clone(),
        );
        *lock(&self.inner.store) = Some((store, lines, bytes));
    }

    /// Whether the server takes participants; if not, why.
    pub fn health(&self) -> Result<(), &'static str> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err("shutting down");
        }
        let cluster = lock(&self.inner.probes)
            .cluster
            .as_ref()
            .map(|(room, _)| room.upgrade());
        match cluster {
            Some(Some(room)) if !room.is_linked() => Err(crate::room::UNAVAILABLE),
            Some(None) => Err("shutting down"),
            _ => Ok(()),
        }
    }

    /// Every metric in the Prometheus (OpenMetrics) text format, the
    /// states read now. Blocking: the store's size is a query.
    pub fn encode(&self) -> anyhow::Result<String> {
        self.refresh();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &lock(&self.inner.registry))?;
        Ok(text)
    }

    /// Reads the states the gauges show.
    fn refresh(&self) {
        let probes = lock(&self.inner.probes);
        if let Some(bytes) = probes.backlog.as_ref().and_then(|read| read()) {
            self.inner.backlog_bytes.set(gauge_value(bytes as u64));
        }
        if let Some(open) = probes.channels.as_ref().and_then(|read| read()) {
            self.inner.channels.set(gauge_value(open as u64));
        }
        if let Some((room, up)) = &probes.cluster {
            up.set(i64::from(
                room.upgrade().is_some_and(|room| room.is_linked()),
            ));
        }
        drop(probes);
        if let Some((store, lines, bytes)) = &*lock(&self.inner.store) {
            match store.stats() {
                Ok(stats) => {
                    lines.set(gauge_value(stats.lines));
                    bytes.set(gauge_value(stats.bytes));
                }
                Err(e) => tracing::debug!("cannot read the store's size for /metrics: {e:#}"),
            }
        }
    }
}

/// A count as a gauge's value.
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn tls(error: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn handshake_errors_are_counted_by_what_went_wrong() {
        use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};
        let cases = [
            (
                tls(Error::InvalidMessage(InvalidMessage::InvalidContentType)),
                HandshakeFailure::Protocol,
            ),
            (
                tls(Error::NoCertificatesPresented),
                HandshakeFailure::ClientCertificate,
            ),
            (
                tls(Error::InvalidCertificate(CertificateError::Revoked)),
                HandshakeFailure::ClientCertificate,
            ),
            (
                tls(Error::AlertReceived(AlertDescription::UnknownCA)),
                HandshakeFailure::Alert,
            ),
            (
                io::ErrorKind::UnexpectedEof.into(),
                HandshakeFailure::Closed,
            ),
            (
                io::ErrorKind::ConnectionReset.into(),
                HandshakeFailure::Closed,
            ),
            (io::ErrorKind::Other.into(), HandshakeFailure::Other),
        ];
        for (error, expected) in cases {
            assert_eq!(HandshakeFailure::of(&error), expected, "{error}");
        }
    }

    #[test]
    fn a_participant_is_counted_while_present_and_its_end_by_reason() {
        let metrics = Metrics::new();
        let presence = metrics.joined(Transport::Tcp);
        metrics.said();
        metrics.delivered(3);
        metrics.delivered(0);
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains("chatroom_participants{transport=\"tcp\"} 1\n"),
            "{text}"
        );
        drop(presence);
        metrics.disconnected(Disconnect::TooSlow);
        metrics.refused(Refused::Revoked);
        let text = metrics.encode().expect("encode");
        for line in [
            "chatroom_participants{transport=\"tcp\"} 0",
            "chatroom_joins_total 1",
            "chatroom_messages_total 1",
            "chatroom_deliveries_total 3",
            "chatroom_disconnects_total{reason=\"too_slow\"} 1",
            "chatroom_disconnects_total{reason=\"quit\"} 0",
            "chatroom_refusals_total{reason=\"revoked\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(metrics.health(), Ok(()));
        metrics.stopping();
        assert_eq!(metrics.health(), Err("shutting down"));
    }
}
