//! The server: the accept loop, admission limits (open sockets,
//! participants, per-address limits), the TLS handshake under a deadline,
//! and graceful shutdown.
//!
//! Each accepted connection becomes one task that runs the TLS handshake
//! and then its [`session`](mod@crate::server::session). Nothing a connection does can
//! hold up the accept loop or another connection: handshakes, nicknames and
//! writes all happen in the connection's own task, under deadlines.
//!
//! Shutdown follows mini-redis: stop accepting, tell the room to say
//! goodbye, signal every task through a broadcast channel, then wait (for a
//! bounded time) until every task has dropped its completion sender.

use crate::connection::Connection;
use crate::protocol;
use crate::room::channels::{self, Channels};
use crate::room::{Announce, LocalRoom, Room, backlog};
use crate::server::access::{self, Access, Entry};
use crate::server::admission::{self, Admission, MAX_REFUSALS_IN_FLIGHT};
use crate::server::log_limit::{self, LogLimit};
use crate::server::metrics::{HandshakeFailure, Metrics, Refused, Transport};
use crate::server::moderation::Moderation;
use crate::server::per_address::{self, AddressLimits, Refusal, Sources};
use crate::server::session::{self, Limits, Session};
use crate::server::shutdown::{self, Shutdown};
use crate::server::web::{self, WebSettings};
use anyhow::{Context, Result};
use bytes::Bytes;
use ipnet::IpNet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::time::Instant;
use tracing::Instrument;

/// Everything `serve` can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None` serves plaintext (for teaching only).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
    /// Most participants at once.
    pub max_participants: usize,
    /// Most sockets open at once, whatever they are doing; `None` for
    /// `max_participants` plus the refusals in progress.
    pub max_sockets: Option<usize>,
    /// Most connections at once from one address (an IPv4 address or an
    /// IPv6 /64).
    pub max_per_ip: usize,
    /// Connection attempts per minute from one address.
    pub connects_per_minute: u32,
    /// Joins per minute from one address.
    pub joins_per_minute: u32,
    /// Addresses with no per-address limits (local tests and benchmarks open
    /// thousands of connections from 127.0.0.1): by default the loopback
    /// ranges. The message rate of the others is `limits.rate` per address.
    pub exempt: Vec<IpNet>,
    /// How far, in bytes of lines (see [`backlog::cost`]), a participant
    /// may fall behind before it is dropped: the bound of the room's ring.
    pub backlog: usize,
    /// How many recent public lines a newcomer receives (0: none).
    pub history_lines: usize,
    /// Up to which size the room announces joins and leaves.
    pub announce: Announce,
    /// Channels at once besides `#lobby` (`--max-channels`).
    pub max_channels: usize,
    /// Channels one participant may join besides `#lobby` (`--max-joined`).
    pub max_joined: usize,
    /// How long shutdown waits for sessions to say goodbye.
    pub shutdown_grace: Duration,
    /// Who may join (client certificates, CRL, denied names); `None`:
    /// anyone, under any free nickname.
    pub access: Option<Arc<Access>>,
    /// What the server counts, for `serve --metrics`.
    pub metrics: Metrics,
    /// The web port (`serve --web`), if any: it needs TLS.
    pub web: Option<WebSettings>,
}

impl Settings {
    /// Defaults, with the given TLS config (or plaintext).
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Settings {
            tls,
            limits: Limits::default(),
            max_participants: admission::DEFAULT_MAX_PARTICIPANTS,
            max_sockets: None,
            max_per_ip: per_address::DEFAULT_MAX_PER_IP,
            connects_per_minute: per_address::DEFAULT_CONNECTS_PER_MINUTE,
            joins_per_minute: per_address::DEFAULT_JOINS_PER_MINUTE,
            exempt: per_address::default_exempt(),
            backlog: backlog::DEFAULT_BYTES,
            history_lines: 0,
            announce: Announce::default(),
            max_channels: channels::DEFAULT_MAX_CHANNELS,
            max_joined: channels::DEFAULT_MAX_JOINED,
            shutdown_grace: shutdown::DEFAULT_GRACE,
            access: None,
            metrics: Metrics::new(),
            web: None,
        }
    }
}

impl Settings {
    /// The bound of a channel's ring: a share of the lobby's `--backlog`,
    /// yet room for four of the longest lines, as the lobby's.
    pub fn channel_backlog(&self) -> usize {
        let share = self.backlog / crate::room::CHANNEL_BACKLOG_SHARE;
        let longest = 4 * (self.limits.max_line + backlog::LINE_OVERHEAD);
        share.max(longest).min(self.backlog)
    }
}

/// A bound listener, ready to run.
pub struct Server {
    listener: TcpListener,
    web: Option<TcpListener>,
    settings: Settings,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port: see [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr, settings: Settings) -> Result<Server> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let web = match &settings.web {
            None => None,
            Some(_) if settings.tls.is_none() => anyhow::bail!("--web needs TLS"),
            Some(web) => Some(
                TcpListener::bind(web.addr)
                    .await
                    .with_context(|| format!("cannot listen on {} (--web)", web.addr))?,
            ),
        };
        Ok(Server {
            listener,
            web,
            settings,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("cannot read the listening address")
    }

    /// The web port's address actually bound, if there is one.
    pub fn web_addr(&self) -> Result<Option<SocketAddr>> {
        self.web
            .as_ref()
            .map(|web| web.local_addr().context("cannot read the web address"))
            .transpose()
    }

    /// Accepts connections until `shutdown` completes, then says goodbye to
    /// everybody and returns once every connection is closed (or the grace
    /// period is over).
    pub async fn run(self, shutdown: impl Future) -> Result<()> {
        let settings = &self.settings;
        let room = LocalRoom::new(settings.max_participants, settings.backlog)
            .with_history(settings.history_lines)
            .with_announce(settings.announce)
            .with_channel_backlog(settings.channel_backlog())?;
        self.run_with(Arc::new(room), shutdown).await
    }

    /// Like [`Server::run`], with a room made by the caller (one shared by
    /// several servers, say). The caller keeps a handle to it, to finish
    /// what it still has to do once every session has left.
    pub async fn run_with<R>(self, room: Arc<R>, shutdown: impl Future) -> Result<()>
    where
        R: Room,
        R::Subscription: Sync,
    {
        let grace = self.settings.shutdown_grace;
        let metrics = self.settings.metrics.clone();
        let weak = Arc::downgrade(&room);
        metrics.watch_backlog(move || weak.upgrade().map(|room| room.backlog_bytes()));
        let (notify_shutdown, _) = broadcast::channel(1);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let web = self.web;
        let server = Server { web: None, ..self };
        let mut listener = Listener::new(server, room.clone(), notify_shutdown.clone(), done_tx);
        let web = web
            .zip(listener.gate())
            .map(|(web, gate)| web::serve(web, gate));
        let web = async {
            match web {
                Some(web) => web.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = listener.accept_loop() => {}
            _ = web => {}
            _ = shutdown => tracing::info!("shutting down"),
        }
        // No more connections; the tasks hold their own completion senders.
        drop(listener);
        metrics.stopping();
        room.close(protocol::control_line(protocol::SHUTTING_DOWN));
        // Sessions hold receivers; sending wakes all of them, and tells them
        // until when they may go on writing their last lines.
        let _ = notify_shutdown.send(deadline_after(grace));
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            tracing::warn!("some connections did not close within the grace period");
        }
        Ok(())
    }
}

/// The accept loop and the counts every admission is checked against.
struct Listener<R> {
    listener: TcpListener,
    shared: Arc<Shared<R>>,
    /// One permit per participant (or connection on its way to being
    /// one), given back as it leaves.
    slots: Arc<Semaphore>,
    /// One permit per open socket, given back once it is closed.
    sockets: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    sources: Arc<Sources>,
    notify_shutdown: broadcast::Sender<Instant>,
    /// Cloned into every connection task; the server waits until all are gone.
    done_tx: mpsc::Sender<()>,
}

/// What every connection's task uses, in one allocation shared by all of
/// them: each task holds one reference to it.
struct Shared<R> {
    room: Arc<R>,
    channels: Channels<R>,
    moderation: Moderation,
    settings: Settings,
    tls: Option<Arc<rustls::ServerConfig>>,
    logs: Logs,
}

impl<R> Listener<R>
where
    R: Room,
    R::Subscription: Sync,
{
    fn new(
        server: Server,
        room: Arc<R>,
        notify_shutdown: broadcast::Sender<Instant>,
        done_tx: mpsc::Sender<()>,
    ) -> Self {
        let settings = server.settings;
        let sockets = settings.max_sockets.unwrap_or(
            settings
                .max_participants
                .saturating_add(MAX_REFUSALS_IN_FLIGHT),
        );
        if let Some(access) = settings.access.clone() {
            room.protect(Arc::new(move |nick: &str| access.is_operator(nick)));
        }
        let metrics = settings.metrics.clone();
        let shared = Arc::new(Shared {
            channels: Channels::new(room.clone(), settings.max_channels, settings.max_joined),
            moderation: Moderation::default(),
            room,
            tls: settings.tls.clone(),
            settings,
            logs: Logs::new(),
        });
        let weak = Arc::downgrade(&shared);
        metrics.watch_channels(move || weak.upgrade().map(|shared| shared.channels.open_here()));
        let settings = &shared.settings;
        Listener {
            listener: server.listener,
            slots: Arc::new(Semaphore::new(settings.max_participants)),
            sockets: Arc::new(Semaphore::new(sockets)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            sources: Arc::new(Sources::new(AddressLimits {
                exempt: settings.exempt.clone(),
                max_connections: settings.max_per_ip,
                connects_per_minute: settings.connects_per_minute,
                joins_per_minute: settings.joins_per_minute,
                messages: settings.limits.rate,
            })),
            shared,
            notify_shutdown,
            done_tx,
        }
    }

    /// What the web port shares of this listener's counts and sessions.
    /// `None` without TLS, which the web port needs.
    fn gate(&self) -> Option<web::Gate> {
        let settings = &self.shared.settings;
        Some(web::Gate {
            sockets: self.sockets.clone(),
            slots: self.slots.clone(),
            sources: self.sources.clone(),
            notify_shutdown: self.notify_shutdown.clone(),
            done_tx: self.done_tx.clone(),
            sessions: self.shared.clone(),
            tls: web::tls_config(settings.tls.as_deref()?),
            limits: settings.limits.clone(),
            access: settings.access.clone(),
            origins: settings
                .web
                .iter()
                .flat_map(|web| web.origins.clone())
                .collect(),
        })
    }

    async fn accept_loop(&mut self) {
        let mut backoff = Duration::from_millis(10);
        let mut summaries = tokio::time::interval(log_limit::INTERVAL);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = summaries.tick() => {
                    self.shared.logs.summarize();
                    continue;
                }
            };
            match accepted {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(10);
                    self.admit(tcp, peer);
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to
                    // be freed rather than spin, and say so (once per wait,
                    // and the waits grow to a second).
                    tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Counts a new connection against the limits, and starts its task or
    /// refuses it.
    fn admit(&self, tcp: TcpStream, peer: SocketAddr) {
        let now = Instant::now();
        let logs = &self.shared.logs;
        // Counted from now until the socket is closed.
        let Ok(socket) = self.sockets.clone().try_acquire_owned() else {
            self.shared.settings.metrics.refused(Refused::Limits);
            if logs.refused.allow(now) {
                tracing::warn!(%peer, "refused: as many sockets open as the limits allow");
            }
            return; // dropping `tcp` closes it
        };
        let source = match self.sources.admit(peer.ip(), now) {
            Ok(source) => source,
            Err(refusal) => return self.refuse_source(tcp, peer, socket, refusal),
        };
        // We batch lines ourselves; Nagle would only add delay.
        let _ = tcp.set_nodelay(true);
        let Ok(place) = self.slots.clone().try_acquire_owned() else {
            self.shared.settings.metrics.refused(Refused::Limits);
            if logs.told.allow(now) {
                tracing::info!(%peer, "refused: server full");
            }
            return self.refuse(tcp, peer, socket, "server full");
        };
        let deadline = deadline_after(self.shared.settings.limits.handshake_timeout);
        let admission = Admission::new(socket, place, source, deadline);
        let task = connection(
            self.shared.clone(),
            tcp,
            admission,
            Shutdown::new(self.notify_shutdown.subscribe()),
            self.done_tx.clone(),
        );
        // Every line the connection's task logs names its peer.
        tokio::spawn(task.instrument(tracing::info_span!("conn", %peer)));
    }

    /// Refuses a connection its address's limits do not allow: closed at
    /// once, or told why.
    fn refuse_source(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        socket: OwnedSemaphorePermit,
        refusal: Refusal,
    ) {
        self.shared.settings.metrics.refused(Refused::Limits);
        let (logs, now) = (&self.shared.logs, Instant::now());
        match refusal {
            Refusal::TooManyAttempts => {
                // Before any TLS work: an address that reconnects in a
                // loop costs an accept and a close.
                if logs.refused.allow(now) {
                    tracing::info!(%peer, "refused: too many connection attempts from this address");
                }
            }
            Refusal::TooManySources => {
                if logs.refused.allow(now) {
                    tracing::warn!(%peer, "refused: too many addresses to keep track of");
                }
            }
            Refusal::TooManyConnections => {
                if logs.told.allow(now) {
                    tracing::info!(%peer, "refused: too many connections from this address");
                }
                let reason = "too many connections from your address";
                self.refuse(tcp, peer, socket, reason);
            }
        }
    }

    /// Tells a refused newcomer why (after the TLS handshake, so it can
    /// read it), within the handshake timeout and a bounded number of
    /// refusals at once.
    fn refuse(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        socket: OwnedSemaphorePermit,
        reason: &'static str,
    ) {
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return; // dropping `tcp` closes it
        };
        let deadline = deadline_after(self.shared.settings.limits.handshake_timeout);
        let tls = self.shared.tls.clone();
        let line = protocol::error_line(reason);
        tokio::spawn(async move {
            // The socket counts until this task is done with it.
            let _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit) = (permit, socket);
            let refusal = async {
                match tls {
                    None => say_and_close(tcp, line).await,
                    Some(config) => match crate::tls::accept(tcp, config).await {
                        Ok(stream) => say_and_close(stream, line).await,
                        Err(e) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    },
                }
            };
            let _ = tokio::time::timeout_at(deadline, refusal).await;
        });
    }
}

/// One connection's task: the TLS handshake, then its session.
///
/// Whatever runs after the handshake is boxed (see
/// [`Shared::boxed_session`]), and the handshake's result (the TLS stream,
/// over a kilobyte) lives in the block that boxes it only, so that the task
/// keeps no room for either while the session runs. Not an `async fn`,
/// which would keep a second copy of its arguments in every task.
#[allow(clippy::manual_async_fn)]
fn connection<R>(
    shared: Arc<Shared<R>>,
    tcp: TcpStream,
    admission: Admission,
    mut shutdown: Shutdown,
    done: mpsc::Sender<()>,
) -> impl Future<Output = ()> + Send + 'static
where
    R: Room,
    R::Subscription: Sync,
{
    async move {
        let _done = done;
        let access = shared.settings.access.as_ref();
        let session = match &shared.tls {
            None => shared.boxed_session(
                tcp,
                Transport::Tcp,
                &mut shutdown,
                admission,
                access::admit(access, None),
            ),
            Some(config) => {
                // Boxed, so that its state is freed once the handshake is done.
                let handshake = Box::pin(tokio::time::timeout_at(
                    admission.deadline(),
                    crate::tls::accept(tcp, config.clone()),
                ));
                let stream = tokio::select! {
                    stream = handshake => stream,
                    _ = shutdown.recv() => return,
                };
                match stream {
                    Ok(Ok(stream)) => {
                        let entry = access::admit(access, stream.peer_certificates());
                        shared.boxed_session(
                            stream,
                            Transport::Tcp,
                            &mut shutdown,
                            admission,
                            entry,
                        )
                    }
                    Ok(Err(e)) => {
                        shared
                            .settings
                            .metrics
                            .handshake_failed(HandshakeFailure::of(&e));
                        if shared.logs.handshakes.allow(Instant::now()) {
                            tracing::info!("TLS handshake failed: {e}");
                        }
                        return;
                    }
                    Err(_) => {
                        let timeout = HandshakeFailure::Timeout;
                        shared.settings.metrics.handshake_failed(timeout);
                        if shared.logs.handshakes.allow(Instant::now()) {
                            tracing::info!("TLS handshake timed out");
                        }
                        return;
                    }
                }
            }
        };
        session.await
    }
}

impl<R> Shared<R>
where
    R: Room,
    R::Subscription: Sync,
{
    /// A session over `stream` (or, when the access policy refuses the
    /// participant, telling it why), in an allocation of its own sized
    /// exactly for it. Not an `async fn`: that would keep room for `stream`
    /// in the caller's task for as long as the session lasts. This way a
    /// connection's task stays small, and idle participants are what a big
    /// room is mostly made of.
    fn boxed_session<'a, S>(
        &'a self,
        stream: S,
        transport: Transport,
        shutdown: &'a mut Shutdown,
        admission: Admission,
        entry: Result<Option<Entry>, access::Refusal>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'a,
    {
        match entry {
            Ok(entry) => {
                let conn = Connection::new(stream, self.settings.limits.max_line);
                let server = session::Context {
                    room: &*self.room,
                    channels: &self.channels,
                    access: self.settings.access.as_deref(),
                    moderation: &self.moderation,
                    limits: &self.settings.limits,
                    refusals: &self.logs.told,
                    metrics: &self.settings.metrics,
                    transport,
                };
                let entry = entry.map(Box::new);
                Box::pin(Session::new(conn, server, shutdown, admission, entry).run())
            }
            Err(refusal) => {
                self.settings.metrics.refused(Refused::of(&refusal));
                let deadline = admission.deadline();
                Box::pin(refuse_participant(
                    stream,
                    deadline,
                    refusal,
                    &self.logs.told,
                ))
            }
        }
    }
}

impl<R> web::Sessions for Shared<R>
where
    R: Room,
    R::Subscription: Sync,
{
    fn start(self: Arc<Self>, newcomer: web::Newcomer) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let web::Newcomer {
            socket,
            admission,
            entry,
            mut shutdown,
        } = newcomer;
        Box::pin(async move {
            self.boxed_session(socket, Transport::Web, &mut shutdown, admission, entry)
                .await
        })
    }
}

/// Tells a client the access policy refuses why, and closes. Anyone with a
/// denied name or a revoked certificate can repeat this at will, so its log
/// line is limited with the other refusals (`told`).
async fn refuse_participant<S: AsyncWrite + Unpin>(
    stream: S,
    deadline: Instant,
    refusal: access::Refusal,
    told: &LogLimit,
) {
    if told.allow(Instant::now()) {
        tracing::info!("refused: {refusal}");
    }
    let line = protocol::error_line(&refusal);
    let _ = tokio::time::timeout_at(deadline, say_and_close(stream, line)).await;
}

async fn say_and_close<S: AsyncWrite + Unpin>(mut stream: S, line: Bytes) {
    let _ = stream.write_all(&line).await;
    let _ = stream.shutdown().await;
}

/// The log lines an attacker could multiply, each limited.
struct Logs {
    handshakes: LogLimit,
    /// Closed at accept, without a word.
    refused: LogLimit,
    /// Refused with a reason: server full, too many from one address, the
    /// access policy's refusals, no nickname within the handshake timeout.
    told: LogLimit,
}

impl Logs {
    fn new() -> Self {
        Logs {
            handshakes: LogLimit::new("failed TLS handshakes"),
            refused: LogLimit::new("connections refused before the handshake"),
            told: LogLimit::new("connections refused with a reason"),
        }
    }

    fn summarize(&self) {
        self.handshakes.summarize();
        self.refused.summarize();
        self.told.summarize();
    }
}

/// `timeout` from now; a timeout too long for the clock means no deadline
/// worth keeping, so a year stands in for it.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// A server running in the background of this process: for tests, and for
/// `bench` against its own server.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The web port's address, with [`Settings::web`].
    pub web_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningServer {
    /// Binds `addr` and runs the server on the current runtime.
    pub async fn start(addr: SocketAddr, settings: Settings) -> Result<RunningServer> {
        let server = Server::bind(addr, settings).await?;
        let addr = server.local_addr()?;
        let web_addr = server.web_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(RunningServer {
            addr,
            web_addr,
            stop: Some(stop),
            task,
        })
    }

    /// Shuts down gracefully and waits until it has.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.context("server task failed")?
    }
}
