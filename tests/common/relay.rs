//! A TCP relay between a node and its nats-server, for the outages a test
//! needs to make on purpose: cut (every link dropped, new ones refused
//! until restored), and swallow (bytes from the node are read and thrown
//! away, as a network that loses packets would, while the link stays up).
//! Cutting one node's relay fails that node's link while the others' stay.

use super::NatsServer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub struct Relay {
    addr: SocketAddr,
    state: Arc<State>,
    links: Arc<Mutex<JoinSet<()>>>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    closed: AtomicBool,
    swallowing: AtomicBool,
    /// What the node sent while swallowed.
    swallowed: Mutex<Vec<u8>>,
    swallowed_more: Notify,
}

impl Relay {
    pub async fn to(nats: &NatsServer) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let upstream: SocketAddr = ([127, 0, 0, 1], nats.port).into();
        let state = Arc::new(State::default());
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let (state, links) = (state.clone(), links.clone());
            async move {
                while let Ok((down, _)) = listener.accept().await {
                    if state.closed.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let state = state.clone();
                    links.lock().expect("lock").spawn(async move {
                        if let Ok(up) = TcpStream::connect(upstream).await {
                            link(down, up, state).await;
                        }
                    });
                }
            }
        });
        Relay {
            addr,
            state,
            links,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drops every link and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.links.lock().expect("lock").abort_all();
    }

    /// Accepts links again, and passes everything on again.
    pub fn restore(&self) {
        self.state.swallowing.store(false, Ordering::SeqCst);
        self.state.closed.store(false, Ordering::SeqCst);
    }

    /// From now on, what the node sends is read and thrown away.
    pub fn swallow(&self) {
        self.state.swallowing.store(true, Ordering::SeqCst);
    }

    /// Waits until the bytes thrown away contain `text`.
    pub async fn swallowed(&self, text: &str, within: Duration) {
        let wait = async {
            loop {
                let more = self.state.swallowed_more.notified();
                tokio::pin!(more);
                more.as_mut().enable();
                let seen = {
                    let swallowed = self.state.swallowed.lock().expect("lock");
                    swallowed.windows(text.len()).any(|w| w == text.as_bytes())
                };
                if seen {
                    return;
                }
                more.await;
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("the node sent no {text:?} within {within:?}"));
    }
}

/// Copies both ways until either side ends; the node's bytes are thrown
/// away while the relay swallows.
async fn link(down: TcpStream, up: TcpStream, state: Arc<State>) {
    let (mut down_read, mut down_write) = down.into_split();
    let (mut up_read, mut up_write) = up.into_split();
    let to_nats = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match down_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if state.swallowing.load(Ordering::SeqCst) {
                state
                    .swallowed
                    .lock()
                    .expect("lock")
                    .extend_from_slice(&buf[..n]);
                state.swallowed_more.notify_waiters();
            } else if up_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let to_node = async {
        let _ = tokio::io::copy(&mut up_read, &mut down_write).await;
    };
    tokio::select! {
        _ = to_nats => {}
        _ = to_node => {}
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
