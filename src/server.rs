//! The server: the accept loop, admission limits (participants, per-address
//! connections), the TLS handshake under a deadline, and graceful shutdown.
//!
//! Each accepted connection becomes one task that runs the TLS handshake
//! and then its [`session`](crate::session). Nothing a connection does can
//! hold up the accept loop or another connection: handshakes, nicknames and
//! writes all happen in the connection's own task, under deadlines.
//!
//! Shutdown follows mini-redis: stop accepting, tell the room to say
//! goodbye, signal every task through a broadcast channel, then wait (for a
//! bounded time) until every task has dropped its completion sender.

use crate::backlog;
use crate::connection::Connection;
use crate::protocol;
use crate::room::{LocalRoom, Room};
use crate::session::{self, Limits};
use crate::shutdown::Shutdown;
use anyhow::{Context, Result};
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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
    /// Most participants at once (and most connections at once).
    pub max_participants: usize,
    /// Most connections at once from one IP address.
    pub max_per_ip: usize,
    /// Whether loopback addresses are exempt from `max_per_ip` (local tests
    /// and benchmarks open thousands of connections from 127.0.0.1).
    pub loopback_exempt: bool,
    /// How far, in bytes of lines (see [`backlog::cost`]), a participant
    /// may fall behind before it is dropped: the bound of the room's ring.
    pub backlog: usize,
    /// How long shutdown waits for sessions to say goodbye.
    pub shutdown_grace: Duration,
}

impl Settings {
    /// Defaults, with the given TLS config (or plaintext).
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Settings {
            tls,
            limits: Limits::default(),
            max_participants: 50_000,
            max_per_ip: 16,
            loopback_exempt: true,
            backlog: backlog::DEFAULT_BYTES,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Connections refused at admission still get a reason, over TLS; at most
/// this many such refusals are in progress at once, beyond which newcomers
/// are simply closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

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
        let settings = Arc::new(self.settings);
        let room = Arc::new(LocalRoom::new(settings.max_participants, settings.backlog));
        let (notify_shutdown, _) = broadcast::channel(1);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut listener = Listener {
            listener: self.listener,
            tls: settings.tls.clone().map(TlsAcceptor::from),
            room: room.clone(),
            settings: settings.clone(),
            slots: Arc::new(Semaphore::new(settings.max_participants)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            notify_shutdown: notify_shutdown.clone(),
            done_tx,
        };
        tokio::select! {
            _ = listener.accept_loop() => {}
            _ = shutdown => tracing::info!("shutting down"),
        }
        let Listener { done_tx, .. } = listener;
        room.close(protocol::control_line(protocol::SHUTTING_DOWN));
        // Sessions hold receivers; sending wakes all of them.
        let _ = notify_shutdown.send(());
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

struct Listener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    room: Arc<LocalRoom>,
    settings: Arc<Settings>,
    /// One permit per open connection, up to the participant limit.
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    notify_shutdown: broadcast::Sender<()>,
    /// Cloned into every connection task; the server waits until all are gone.
    done_tx: mpsc::Sender<()>,
}

impl Listener {
    async fn accept_loop(&mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(10);
                    self.admit(tcp, peer);
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to
                    // be freed rather than spin.
                    tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn admit(&self, tcp: TcpStream, peer: SocketAddr) {
        let deadline = Instant::now() + self.settings.limits.handshake_timeout;
        // We batch lines ourselves; Nagle would only add delay.
        let _ = tcp.set_nodelay(true);
        let exempt = self.settings.loopback_exempt && peer.ip().is_loopback();
        let Some(ip_slot) = IpSlot::take(&self.per_ip, peer.ip(), self.settings.max_per_ip, exempt)
        else {
            tracing::info!(%peer, "refused: too many connections from this address");
            return self.refuse(
                tcp,
                peer,
                deadline,
                "too many connections from your address",
            );
        };
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::info!(%peer, "refused: server full");
            return self.refuse(tcp, peer, deadline, "server full");
        };
        let tls = self.tls.clone();
        let room = self.room.clone();
        let settings = self.settings.clone();
        let mut shutdown = Shutdown::new(self.notify_shutdown.subscribe());
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let _done = done;
            let admission = (slot, ip_slot);
            let limits = &settings.limits;
            let Some(acceptor) = tls else {
                return boxed_session(tcp, peer, &room, limits, &mut shutdown, deadline, admission)
                    .await;
            };
            // The handshake's result (the TLS stream, over a kilobyte) lives
            // in this block only, so that it keeps no room in the task while
            // the session runs.
            let session = {
                // Boxed, so that its state is freed once the handshake is done.
                let handshake = Box::pin(tokio::time::timeout_at(deadline, acceptor.accept(tcp)));
                let stream = tokio::select! {
                    stream = handshake => stream,
                    _ = shutdown.recv() => return,
                };
                match stream {
                    Ok(Ok(stream)) => boxed_session(
                        stream,
                        peer,
                        &room,
                        limits,
                        &mut shutdown,
                        deadline,
                        admission,
                    ),
                    Ok(Err(e)) => return tracing::info!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => return tracing::info!(%peer, "TLS handshake timed out"),
                }
            };
            session.await
        });
    }

    /// Tells a refused newcomer why (after the TLS handshake, so it can
    /// read it), within the handshake deadline and a bounded number of
    /// refusals at once.
    fn refuse(&self, tcp: TcpStream, peer: SocketAddr, deadline: Instant, reason: &'static str) {
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return; // dropping `tcp` closes it
        };
        let tls = self.tls.clone();
        let line = protocol::error_line(reason);
        tokio::spawn(async move {
            let _permit: OwnedSemaphorePermit = permit;
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

/// A session over `stream`, in an allocation of its own sized exactly for
/// it. Not an `async fn`: that would keep room for `stream` in the caller's
/// task for as long as the session lasts. This way a connection's task stays
/// small, and idle participants are what a big room is mostly made of.
fn boxed_session<'a, S>(
    stream: S,
    peer: SocketAddr,
    room: &'a LocalRoom,
    limits: &'a Limits,
    shutdown: &'a mut Shutdown,
    deadline: Instant,
    admission: Admission,
) -> std::pin::Pin<Box<impl Future<Output = ()> + 'a>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'a,
{
    let conn = Connection::new(stream, limits.max_line);
    Box::pin(session::run(
        conn, peer, room, limits, shutdown, deadline, admission,
    ))
}

async fn say_and_close<S: tokio::io::AsyncWrite + Unpin>(mut stream: S, line: Bytes) {
    let _ = stream.write_all(&line).await;
    let _ = stream.shutdown().await;
}

/// What an admitted connection holds: its place under the participant
/// limit and, unless exempt, under its address's limit. Both are given back
/// when it is dropped.
type Admission = (OwnedSemaphorePermit, Option<IpSlot>);

/// A connection counted against its address; uncounted when dropped.
struct IpSlot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    /// `Some` if `ip` may open one more connection (an exempt one always
    /// may, uncounted).
    fn take(
        table: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        max_per_ip: usize,
        exempt: bool,
    ) -> Option<Option<IpSlot>> {
        if exempt {
            return Some(None);
        }
        let mut counts = table.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= max_per_ip {
            return None;
        }
        *count += 1;
        Some(Some(IpSlot {
            table: table.clone(),
            ip,
        }))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
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
