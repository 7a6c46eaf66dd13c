//! `serve --web`: the browser's door to the same room. HTTPS with the
//! server's own TLS configuration (its certificate, reloaded on SIGHUP with
//! it; with `--client-ca`, client certificates asked for and checked the
//! same way), serving the chat page at `/` and, at `/chat`, a WebSocket
//! that carries the TCP port's protocol, one text frame per line.
//!
//! A WebSocket participant goes through the same session code as a TCP
//! one ([`Sessions`], implemented by the listener): the same limits, rate
//! limit and sanitizing, in the same room. Its connection is counted as a
//! TCP one is: a socket and its address's limits from accept, a
//! participant's place from the upgrade to `/chat`.

mod routes;
mod socket;

pub(crate) use socket::Socket;

use crate::server::access::{self, Access, Entry};
use crate::server::admission::Admission;
use crate::server::log_limit::LogLimit;
use crate::server::per_address::{SourceHandle, Sources};
use crate::server::session::Limits;
use crate::server::shutdown::Shutdown;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Instrument;

/// The longest an HTTP connection is kept before it upgrades to a
/// WebSocket: enough to load the page and open `/chat` on it.
const HTTP_LIFETIME: Duration = Duration::from_secs(60);

/// What `serve --web` is told.
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub addr: SocketAddr,
    /// Origins besides the page's own that may open `/chat`
    /// (`https://host:port`, as browsers send them).
    pub origins: Vec<String>,
}

/// Starts a participant's session over a WebSocket: what the listener
/// lends the web port, so that both run one session code.
pub(crate) trait Sessions: Send + Sync + 'static {
    fn start(self: Arc<Self>, newcomer: Newcomer) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A WebSocket on its way to being a participant, and what its connection
/// was counted against.
pub(crate) struct Newcomer {
    pub(crate) socket: Socket,
    pub(crate) admission: Admission,
    pub(crate) entry: Result<Option<Entry>, access::Refusal>,
    pub(crate) shutdown: Shutdown,
}

/// What the web port shares with the TCP port: the counts every admission
/// is checked against, the stop signal and the sessions.
pub(crate) struct Gate {
    pub(crate) sockets: Arc<Semaphore>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) sources: Arc<Sources>,
    pub(crate) notify_shutdown: broadcast::Sender<Instant>,
    pub(crate) done_tx: mpsc::Sender<()>,
    pub(crate) sessions: Arc<dyn Sessions>,
    /// The server's TLS configuration, offering HTTP/1.1 by ALPN.
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) limits: Limits,
    pub(crate) access: Option<Arc<Access>>,
    pub(crate) origins: Vec<String>,
}

/// The server's TLS configuration for the web port: the same certificate
/// resolver, client verifier and versions (so a reload of one is a reload
/// of both), offering HTTP/1.1 instead of the chat protocol by ALPN.
pub(crate) fn tls_config(config: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What an HTTP connection holds until it becomes a participant (or
/// closes): its socket's count, its address's share, and who its client
/// certificate says it is.
pub(crate) struct Held {
    socket: OwnedSemaphorePermit,
    source: Option<SourceHandle>,
    entry: Result<Option<Entry>, access::Refusal>,
}

/// One connection, as its requests see it: its peer and what it holds,
/// taken by the upgrade to `/chat`.
#[derive(Clone)]
pub(crate) struct Conn {
    peer: SocketAddr,
    held: Arc<Mutex<Option<Held>>>,
}

/// The web port's accept loop, until it is dropped.
pub(crate) async fn serve(listener: TcpListener, gate: Gate) {
    let gate = Arc::new(gate);
    let router = routes::router(gate.clone());
    let handshakes = Arc::new(LogLimit::new("failed TLS handshakes (web)"));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: let some be freed.
                tracing::warn!("web accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(socket) = gate.sockets.clone().try_acquire_owned() else {
            continue; // dropping `tcp` closes it
        };
        // Closed without a word, as a refused HTTP client would only see
        // its page fail to load anyway; the page retries with a backoff.
        let Ok(source) = gate.sources.admit(peer.ip(), Instant::now()) else {
            continue;
        };
        let held = Held {
            socket,
            source,
            entry: Ok(None),
        };
        let task = connection(gate.clone(), router.clone(), tcp, peer, held);
        let task = task.instrument(tracing::info_span!("web", %peer));
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            if let Err(e) = task.await
                && handshakes.allow(Instant::now())
            {
                tracing::info!("{e}");
            }
        });
    }
}

/// One HTTPS connection: the TLS handshake under the handshake timeout,
/// then HTTP/1.1 until it upgrades to a WebSocket, closes, or has lasted
/// [`HTTP_LIFETIME`].
async fn connection(
    gate: Arc<Gate>,
    router: axum::Router,
    tcp: TcpStream,
    peer: SocketAddr,
    mut held: Held,
) -> Result<(), String> {
    let _done = gate.done_tx.clone();
    let mut shutdown = Shutdown::new(gate.notify_shutdown.subscribe());
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(
        gate.limits.handshake_timeout,
        crate::tls::accept(tcp, gate.tls.clone()),
    );
    let stream = tokio::select! {
        stream = handshake => stream,
        _ = shutdown.recv() => return Ok(()),
    };
    let stream = match stream {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    held.entry = access::admit(gate.access.as_ref(), stream.peer_certificates());
    let conn = Conn {
        peer,
        held: Arc::new(Mutex::new(Some(held))),
    };
    let service = hyper::service::service_fn(move |mut request| {
        request.extensions_mut().insert(conn.clone());
        router.clone().oneshot(request)
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(gate.limits.handshake_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = tokio::time::timeout(HTTP_LIFETIME, http) => {}
        _ = shutdown.recv() => {}
    }
    Ok(())
}

impl Conn {
    /// What the connection holds, for the participant it becomes; `None`
    /// if it was taken already.
    fn take(&self) -> Option<Held> {
        crate::sync::lock(&self.held).take()
    }
}

impl Gate {
    /// Runs `socket`'s session with what its connection held, once it has
    /// a participant's place; without one, tells it the server is full.
    async fn participant(self: Arc<Self>, socket: Socket, held: Held) {
        let _done = self.done_tx.clone();
        let Ok(place) = self.slots.clone().try_acquire_owned() else {
            let mut socket = socket;
            let line = crate::protocol::error_line("server full");
            let _ = tokio::time::timeout(self.limits.handshake_timeout, async {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(&line).await;
                let _ = socket.shutdown().await;
            })
            .await;
            return;
        };
        let now = Instant::now();
        let deadline = now
            .checked_add(self.limits.handshake_timeout)
            .unwrap_or(now);
        let admission = Admission::new(held.socket, place, held.source, deadline);
        let shutdown = Shutdown::new(self.notify_shutdown.subscribe());
        let newcomer = Newcomer {
            socket,
            admission,
            entry: held.entry,
            shutdown,
        };
        self.sessions.clone().start(newcomer).await;
    }
}
