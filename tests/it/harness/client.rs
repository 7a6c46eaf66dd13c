//! The tests' chat client: real rustls (or plain TCP) over a real socket,
//! reading lines with a timeout, so a broken build fails instead of hanging.
//! Every TLS connection a test makes goes through [`Dial`] and [`tls_over`].

use super::WAIT;
use bytes::Bytes;
use chatroom::connection::Connection;
use chatroom::tls;
use rustls::pki_types::CertificateDer;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// A client's end of a TLS connection, over TCP unless said otherwise.
pub type TlsStream<S = TcpStream> = tokio_rustls::client::TlsStream<S>;

/// A chat client over TLS.
pub type TlsClient = Client<TlsStream>;

/// 127.0.0.`last`: another loopback address, a source the server does not
/// exempt unless told to.
pub fn local(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// How a test's TCP connection is made: from which local address (another
/// loopback address, say), and with which kernel buffer sizes (with small
/// ones, a peer that stops reading is felt after a few KiB).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dial {
    pub from: Option<IpAddr>,
    pub recv_buffer: Option<u32>,
    pub send_buffer: Option<u32>,
}

impl Dial {
    /// A TCP connection to `addr`, within [`WAIT`].
    pub async fn tcp(self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = self.from {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        if let Some(size) = self.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        if let Some(size) = self.send_buffer {
            socket.set_send_buffer_size(size)?;
        }
        tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// A TLS connection to `addr`, past the handshake.
    pub async fn tls(
        self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<TlsStream> {
        tls_over(self.tcp(addr).await?, config).await
    }
}

/// A plain TCP connection to `addr`; fails the test if there is none.
pub async fn tcp(addr: SocketAddr) -> TcpStream {
    Dial::default().tcp(addr).await.expect("TCP connect")
}

/// A TLS client whose kernel takes only a few KiB before it stops
/// reading: what a participant that never reads looks like.
pub async fn stuck_reader(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsClient {
    let dial = Dial {
        recv_buffer: Some(4096),
        ..Dial::default()
    };
    Client::new(dial.tls(addr, config).await.expect("handshake"))
}

/// The TLS handshake over `io` (any stream: one that tampers with what it
/// carries, say), for the server name 127.0.0.1, within [`WAIT`]. A TLS
/// error is the `io::Error`'s inner `rustls::Error`.
pub async fn tls_over<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream<S>> {
    let name = tls::server_name("127.0.0.1").expect("name");
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, io),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// A line-reading chat client over any stream.
pub struct Client<S> {
    pub conn: Connection<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client over `stream`, already connected.
    pub fn new(stream: S) -> Self {
        Client {
            conn: Connection::new(stream, 1 << 20),
        }
    }

    /// The next line, or `None` if the server closed the connection.
    /// Fails the test if nothing comes within [`WAIT`].
    pub async fn next_line(&mut self) -> Option<String> {
        match tokio::time::timeout(WAIT, self.conn.read_line()).await {
            Err(_) => panic!("no line from the server within {WAIT:?}"),
            Ok(Ok(Some(line))) => {
                Some(String::from_utf8(line.to_vec()).expect("server sent UTF-8"))
            }
            Ok(Ok(None)) => None,
            // A reset or a missing close_notify also ends the stream.
            Ok(Err(_)) => None,
        }
    }

    pub async fn line(&mut self) -> String {
        self.next_line()
            .await
            .expect("a line, not the end of the stream")
    }

    /// The next `n` lines.
    pub async fn lines(&mut self, n: usize) -> Vec<String> {
        let mut read = Vec::with_capacity(n);
        for _ in 0..n {
            read.push(self.line().await);
        }
        read
    }

    pub async fn expect(&mut self, expected: &str) {
        assert_eq!(self.line().await, expected);
    }

    /// Reads lines until `wanted` arrives, within `within`; returns the
    /// lines before it.
    pub async fn until(&mut self, wanted: &str, within: std::time::Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        loop {
            let line = tokio::time::timeout_at(deadline, self.conn.read_line())
                .await
                .unwrap_or_else(|_| panic!("no {wanted:?} within {within:?}; got {before:?}"))
                .expect("read")
                .expect("a line, not the end");
            let line = String::from_utf8(line.to_vec()).expect("UTF-8");
            if line == wanted {
                return before;
            }
            before.push(line);
        }
    }

    /// Reads until the server closes; returns what it said on the way.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.next_line().await {
            lines.push(line);
        }
        lines
    }

    /// Reads until the server closes the stream; returns the lines and
    /// whether it ended cleanly (for TLS: with close_notify). Fails the test
    /// if the stream is still open after [`WAIT`].
    pub async fn until_closed_cleanly(&mut self) -> (Vec<String>, Result<(), String>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut lines = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.conn.read_line()).await {
                Err(_) => panic!("still open after {WAIT:?}; read {} lines", lines.len()),
                Ok(Ok(None)) => return (lines, Ok(())),
                Ok(Err(e)) => return (lines, Err(e.to_string())),
                Ok(Ok(Some(line))) => {
                    lines.push(String::from_utf8(line.to_vec()).expect("server sent UTF-8"))
                }
            }
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.conn
            .send(Bytes::copy_from_slice(bytes))
            .await
            .expect("send");
    }

    /// Answers NICK with `nick` and reads the join lines.
    pub async fn register(&mut self, nick: &str) {
        self.expect("NICK").await;
        self.send(nick).await;
        self.expect(&format!("{nick} joined!")).await;
        self.expect("Connected to server!").await;
    }

    /// Answers `NICK` (whenever asked) with `nick`; returns every line up
    /// to `Connected to server!`, or up to the close if the server refused.
    pub async fn join_lines(&mut self, nick: &str) -> Vec<String> {
        let mut said = Vec::new();
        while let Some(line) = self.next_line().await {
            if line == "NICK" {
                self.send(nick).await;
            }
            let done = line == "Connected to server!";
            said.push(line);
            if done {
                break;
            }
        }
        said
    }

    pub async fn close(mut self) {
        let _ = self.conn.shutdown().await;
    }
}

impl TlsClient {
    pub async fn tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        Self::try_tls(addr, config).await.expect("TLS handshake")
    }

    pub async fn try_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<Self> {
        Ok(Client::new(Dial::default().tls(addr, config).await?))
    }

    /// The certificate the server presented.
    pub fn presented(&self) -> CertificateDer<'static> {
        let (_, tls) = self.conn.get_ref().get_ref();
        tls.peer_certificates().expect("a certificate")[0].clone()
    }
}

impl Client<TcpStream> {
    pub async fn plain(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Client::new(tcp)
    }
}
