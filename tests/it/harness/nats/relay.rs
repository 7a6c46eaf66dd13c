//! A TCP relay between a node and its nats-server, for the outages a test
//! needs to make on purpose: cut (every link dropped, new ones refused
//! until restored), swallow (bytes from the node are read and thrown
//! away, as a network that loses packets would, while the link stays up),
//! and lose one message from NATS to the node (an acknowledgement, say),
//! the link staying up.
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
    /// While set, the next message from NATS whose payload holds this is
    /// dropped (whole, as a NATS protocol message), and this is cleared.
    lose: Mutex<Option<Vec<u8>>>,
    lost: Notify,
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

    /// Drops the next message from NATS to the node whose payload contains
    /// `text`, and only that one; [`Relay::lost`] waits for it.
    pub fn lose_next(&self, text: &str) {
        *self.state.lose.lock().expect("lock") = Some(text.as_bytes().to_vec());
    }

    /// Waits until the message [`Relay::lose_next`] asked for was dropped.
    pub async fn lost(&self, within: Duration) {
        let wait = async {
            loop {
                let lost = self.state.lost.notified();
                tokio::pin!(lost);
                lost.as_mut().enable();
                if self.state.lose.lock().expect("lock").is_none() {
                    return;
                }
                lost.await;
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("no such message from NATS within {within:?}"));
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
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match up_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            // Pass on every whole protocol message but the one to lose.
            let mut passed = 0;
            while let Some(len) = message_len(&pending[passed..]) {
                let message = &pending[passed..passed + len];
                if !lose_if_wanted(&state, message) && down_write.write_all(message).await.is_err()
                {
                    return;
                }
                passed += len;
            }
            pending.drain(..passed);
        }
    };
    tokio::select! {
        _ = to_nats => {}
        _ = to_node => {}
    }
}

/// Drops `message` if it is the one to lose; true if it was.
fn lose_if_wanted(state: &State, message: &[u8]) -> bool {
    let mut lose = state.lose.lock().expect("lock");
    let wanted = lose
        .as_ref()
        .is_some_and(|text| message.windows(text.len()).any(|w| w == text.as_slice()));
    if wanted {
        *lose = None;
        state.lost.notify_waiters();
    }
    wanted
}

/// The length of the NATS protocol message (server to client) at the start
/// of `bytes`, if it is all there: a line, and for `MSG`/`HMSG` the
/// payload its line announces and its CRLF.
fn message_len(bytes: &[u8]) -> Option<usize> {
    let line_end = bytes.windows(2).position(|w| w == b"\r\n")? + 2;
    let line = std::str::from_utf8(&bytes[..line_end - 2]).ok()?;
    let payload = if line.starts_with("MSG ") || line.starts_with("HMSG ") {
        // The last field is the payload's size (headers included).
        line.rsplit(' ').next()?.parse::<usize>().ok()? + 2
    } else {
        0
    };
    let len = line_end + payload;
    (bytes.len() >= len).then_some(len)
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
