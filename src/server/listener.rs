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
use crate::room::backlog;
use crate::room::{LocalRoom, Room};
use crate::server::access::{self, Access, Entry};
use crate::server::admission::{Admission, MAX_REFUSALS_IN_FLIGHT};
use crate::server::log_limit::{self, LogLimit};
use crate::server::per_address::{self, AddressLimits, Refusal, Sources};
use crate::server::session::{self, Limits};
use crate::server::shutdown::Shutdown;
use anyhow::{Context, Result};
use bytes::Bytes;
use ipnet::IpNet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

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
    /// How long shutdown waits for sessions to say goodbye.
    pub shutdown_grace: Duration,
    /// Who may join (client certificates, CRL, denied names); `None`:
    /// anyone, under any free nickname.
    pub access: Option<Arc<Access>>,
}

impl Settings {
    /// Defaults, with the given TLS config (or plaintext).
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Settings {
            tls,
            limits: Limits::default(),
            max_participants: 50_000,
            max_sockets: None,
            max_per_ip: 16,
            connects_per_minute: 60,
            joins_per_minute: 10,
            exempt: per_address::default_exempt(),
            backlog: backlog::DEFAULT_BYTES,
            history_lines: 0,
            shutdown_grace: Duration::from_secs(5),
            access: None,
        }
    }
}

/// A bound listener, ready to run.
pub struct Server {
    listener: TcpListener,
    settings: Settings,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port: see [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr, settings: Settings) -> Result<Server> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        Ok(Server { listener, settings })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("cannot read the listening address")
    }

    /// Accepts connections until `shutdown` completes, then says goodbye to
    /// everybody and returns once every connection is closed (or the grace
    /// period is over).
    pub async fn run(self, shutdown: impl Future) -> Result<()> {
        let room = Arc::new(
            LocalRoom::new(self.settings.max_participants, self.settings.backlog)
                .with_history(self.settings.history_lines),
        );
        self.run_with(room, shutdown).await
    }

    /// Like [`Server::run`], with a room made by the caller (one shared by
    /// several servers, say). The caller keeps a handle to it, to finish
    /// what it still has to do once every session has left.
    pub async fn run_with<R>(self, room: Arc<R>, shutdown: impl Future) -> Result<()>
    where
        R: Room,
        R::Subscription: Sync,
    {
        let settings = Arc::new(self.settings);
        let (notify_shutdown, _) = broadcast::channel(1);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut listener = Listener {
            listener: self.listener,
            tls: settings.tls.clone().map(TlsAcceptor::from),
            room: room.clone(),
            settings: settings.clone(),
            slots: Arc::new(Semaphore::new(settings.max_participants)),
            sockets: Arc::new(Semaphore::new(
                settings.max_sockets.unwrap_or(
                    settings
                        .max_participants
                        .saturating_add(MAX_REFUSALS_IN_FLIGHT),
                ),
            )),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            sources: Arc::new(Sources::new(AddressLimits {
                exempt: settings.exempt.clone(),
                max_connections: settings.max_per_ip,
                connects_per_minute: settings.connects_per_minute,
                joins_per_minute: settings.joins_per_minute,
                messages: settings.limits.rate,
            })),
            logs: Arc::new(Logs::new()),
            notify_shutdown: notify_shutdown.clone(),
            done_tx,
        };
        tokio::select! {
            _ = listener.accept_loop() => {}
            _ = shutdown => tracing::info!("shutting down"),
        }
        let Listener { done_tx, .. } = listener;
        room.close(protocol::control_line(protocol::SHUTTING_DOWN));
        // Sessions hold receivers; sending wakes all of them, and tells them
        // until when they may go on writing their last lines.
        let _ = notify_shutdown.send(deadline_after(settings.shutdown_grace));
        drop(done_tx);
        if tokio::time::timeout(settings.shutdown_grace, done_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the grace period");
        }
        Ok(())
    }
}

struct Listener<R> {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    room: Arc<R>,
    settings: Arc<Settings>,
    /// One permit per participant (or connection on its way to being
    /// one), given back as it leaves.
    slots: Arc<Semaphore>,
    /// One permit per open socket, given back once it is closed.
    sockets: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    sources: Arc<Sources>,
    logs: Arc<Logs>,
    notify_shutdown: broadcast::Sender<Instant>,
    /// Cloned into every connection task; the server waits until all are gone.
    done_tx: mpsc::Sender<()>,
}

impl<R> Listener<R>
where
    R: Room,
    R::Subscription: Sync,
{
    async fn accept_loop(&mut self) {
        let mut backoff = Duration::from_millis(10);
        let mut summaries = tokio::time::interval(log_limit::INTERVAL);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = summaries.tick() => {
                    self.logs.summarize();
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

    fn admit(&self, tcp: TcpStream, peer: SocketAddr) {
        let now = Instant::now();
        let deadline = deadline_after(self.settings.limits.handshake_timeout);
        // Counted from now until the socket is closed.
        let Ok(socket) = self.sockets.clone().try_acquire_owned() else {
            if self.logs.refused.allow(now) {
                tracing::warn!(%peer, "refused: as many sockets open as the limits allow");
            }
            return; // dropping `tcp` closes it
        };
        let source = match self.sources.admit(peer.ip(), now) {
            Ok(source) => source,
            Err(Refusal::TooManyAttempts) => {
                // Before any TLS work: an address that reconnects in a
                // loop costs an accept and a close.
                if self.logs.refused.allow(now) {
                    tracing::info!(%peer, "refused: too many connection attempts from this address");
                }
                return;
            }
            Err(Refusal::TooManySources) => {
                if self.logs.refused.allow(now) {
                    tracing::warn!(%peer, "refused: too many addresses to keep track of");
                }
                return;
            }
            Err(Refusal::TooManyConnections) => {
                if self.logs.told.allow(now) {
                    tracing::info!(%peer, "refused: too many connections from this address");
                }
                return self.refuse(
                    tcp,
                    peer,
                    deadline,
                    socket,
                    "too many connections from your address",
                );
            }
        };
        // We batch lines ourselves; Nagle would only add delay.
        let _ = tcp.set_nodelay(true);
        let Ok(place) = self.slots.clone().try_acquire_owned() else {
            if self.logs.told.allow(now) {
                tracing::info!(%peer, "refused: server full");
            }
            return self.refuse(tcp, peer, deadline, socket, "server full");
        };
        let admission = Admission::new(socket, place, source);
        let tls = self.tls.clone();
        let room = self.room.clone();
        let settings = self.settings.clone();
        let logs = self.logs.clone();
        let mut shutdown = Shutdown::new(self.notify_shutdown.subscribe());
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let _done = done;
            let limits = &settings.limits;
            // Whatever runs after the handshake is boxed (see
            // `boxed_session`), and the handshake's result (the TLS stream,
            // over a kilobyte) lives in this block only, so that the task
            // keeps no room for either while the session runs.
            let session = match tls {
                None => {
                    let entry = access::admit(settings.access.as_ref(), None);
                    boxed_session(
                        tcp,
                        peer,
                        &room,
                        limits,
                        &mut shutdown,
                        deadline,
                        admission,
                        entry,
                        &logs.told,
                    )
                }
                Some(acceptor) => {
                    // Boxed, so that its state is freed once the handshake is done.
                    let handshake =
                        Box::pin(tokio::time::timeout_at(deadline, acceptor.accept(tcp)));
                    let stream = tokio::select! {
                        stream = handshake => stream,
                        _ = shutdown.recv() => return,
                    };
                    match stream {
                        Ok(Ok(stream)) => {
                            let presented = stream.get_ref().1.peer_certificates();
                            let entry = access::admit(settings.access.as_ref(), presented);
                            boxed_session(
                                stream,
                                peer,
                                &room,
                                limits,
                                &mut shutdown,
                                deadline,
                                admission,
                                entry,
                                &logs.told,
                            )
                        }
                        Ok(Err(e)) => {
                            if logs.handshakes.allow(Instant::now()) {
                                tracing::info!(%peer, "TLS handshake failed: {e}");
                            }
                            return;
                        }
                        Err(_) => {
                            if logs.handshakes.allow(Instant::now()) {
                                tracing::info!(%peer, "TLS handshake timed out");
                            }
                            return;
                        }
                    }
                }
            };
            session.await
        });
    }

    /// Tells a refused newcomer why (after the TLS handshake, so it can
    /// read it), within the handshake deadline and a bounded number of
    /// refusals at once.
    fn refuse(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        deadline: Instant,
        socket: OwnedSemaphorePermit,
        reason: &'static str,
    ) {
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return; // dropping `tcp` closes it
        };
        let tls = self.tls.clone();
        let line = protocol::error_line(reason);
        tokio::spawn(async move {
            // The socket counts until this task is done with it.
            let _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit) = (permit, socket);
            let refusal = async {
                match tls {
                    None => say_and_close(tcp, line).await,
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => say_and_close(stream, line).await,
                        Err(e) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    },
                }
            };
            let _ = tokio::time::timeout_at(deadline, refusal).await;
        });
    }
}

/// Tells a client the access policy refuses why, and closes. Anyone with a
/// denied name or a revoked certificate can repeat this at will, so its log
/// line is limited with the other refusals (`told`).
async fn refuse_participant<S: tokio::io::AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    deadline: Instant,
    refusal: access::Refusal,
    told: &LogLimit,
) {
    if told.allow(Instant::now()) {
        tracing::info!(%peer, "refused: {refusal}");
    }
    let line = protocol::error_line(&refusal);
    let _ = tokio::time::timeout_at(deadline, say_and_close(stream, line)).await;
}

/// A session over `stream` (or, when the access policy refuses the
/// participant, telling it why), in an allocation of its own sized exactly
/// for it. Not an `async fn`: that would keep room for `stream` in the caller's
/// task for as long as the session lasts. This way a connection's task stays
/// small, and idle participants are what a big room is mostly made of.
#[allow(clippy::too_many_arguments)]
fn boxed_session<'a, S, R>(
    stream: S,
    peer: SocketAddr,
    room: &'a Arc<R>,
    limits: &'a Limits,
    shutdown: &'a mut Shutdown,
    deadline: Instant,
    admission: Admission,
    entry: Result<Option<Entry>, access::Refusal>,
    told: &'a LogLimit,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'a,
    R: Room,
    R::Subscription: Sync,
{
    match entry {
        Ok(entry) => {
            let conn = Connection::new(stream, limits.max_line);
            Box::pin(session::run_as(
                conn,
                peer,
                &**room,
                limits,
                shutdown,
                deadline,
                admission,
                entry.map(Box::new),
                told,
            ))
        }
        Err(refusal) => Box::pin(refuse_participant(stream, peer, deadline, refusal, told)),
    }
}

async fn say_and_close<S: tokio::io::AsyncWrite + Unpin>(mut stream: S, line: Bytes) {
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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningServer {
    /// Binds `addr` and runs the server on the current runtime.
    pub async fn start(addr: SocketAddr, settings: Settings) -> Result<RunningServer> {
        let server = Server::bind(addr, settings).await?;
        let addr = server.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(RunningServer {
            addr,
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
