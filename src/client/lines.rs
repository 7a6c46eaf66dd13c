//! The client's connection to the server, as lines: lines in, where one
//! over the limit is skipped (and reported) instead of ending the chat, and
//! lines out.
//!
//! The server's own reader ([`crate::connection::Connection`]) closes a
//! connection whose peer sends a line over its limit: a participant that
//! does so is misbehaving. For the client the peer is the server, relaying
//! what others typed, so one over-long line must not cost the user the
//! room: it is dropped as it streams in (never held whole beyond the
//! limit) and the client goes on with the next one.

use bytes::{Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How much one read may add to the buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Above this, the buffer's memory is given back once it holds no partial
/// line: one long line must not keep a megabyte for the rest of the chat.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What the server sent next.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A line, without its `\n` (and a `\r` before it).
    Line(Bytes),
    /// A line over the limit, dropped: how many bytes it had, `\n` included.
    Skipped(usize),
}

/// A stream to the server, read as lines and written line by line.
#[derive(Debug)]
pub struct ServerConnection<S> {
    stream: S,
    buf: BytesMut,
    /// How far `buf` is known to hold no `\n`.
    scanned: usize,
    max_line: usize,
    /// Bytes of an over-long line dropped so far, while its end is awaited.
    skipped: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerConnection<S> {
    /// Reads lines of up to `max_line` bytes (without terminator).
    pub fn new(stream: S, max_line: usize) -> Self {
        ServerConnection {
            stream,
            buf: BytesMut::new(),
            scanned: 0,
            max_line,
            skipped: 0,
        }
    }

    /// The next line, or a line skipped; `Ok(None)` when the server closed
    /// the stream. Cancel-safe: what was read stays in the buffer.
    pub async fn read_line(&mut self) -> io::Result<Option<Received>> {
        loop {
            if let Some(received) = self.next_buffered() {
                if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = BytesMut::new();
                }
                return Ok(Some(received));
            }
            self.buf.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// A complete line (or the end of a skipped one) already in the buffer.
    fn next_buffered(&mut self) -> Option<Received> {
        match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            Some(offset) => {
                let end = self.scanned + offset;
                let mut line = self.buf.split_to(end + 1);
                self.scanned = 0;
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                let skipped = std::mem::take(&mut self.skipped);
                if skipped > 0 || line.len() > self.max_line {
                    return Some(Received::Skipped(skipped + end + 1));
                }
                Some(Received::Line(line.freeze()))
            }
            // One byte of slack for a `\r` that may still be followed by `\n`.
            None if self.buf.len() > self.max_line + 1 => {
                self.skipped += self.buf.len();
                self.buf.clear();
                self.scanned = 0;
                None
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Writes `line` (terminator included) and flushes.
    pub async fn send(&mut self, line: &[u8]) -> io::Result<()> {
        self.stream.write_all(line).await?;
        self.stream.flush().await
    }

    /// Ends the stream cleanly: for TLS, sends close_notify.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_over_the_limit_is_skipped_and_the_next_one_read() {
        let (mut server, client) = tokio::io::duplex(1024);
        let mut conn = ServerConnection::new(client, 100);
        let writer = tokio::spawn(async move {
            let mut sent = Vec::new();
            sent.extend_from_slice(&[b'x'; 100]);
            sent.extend_from_slice(b"\r\n");
            sent.extend_from_slice(&[b'y'; 5000]);
            sent.extend_from_slice(b"\n");
            sent.extend_from_slice(&[b'z'; 101]);
            sent.extend_from_slice(b"\nafter\n");
            server.write_all(&sent).await
        });
        let line = |text: &[u8]| Some(Received::Line(Bytes::copy_from_slice(text)));
        assert_eq!(conn.read_line().await.expect("read"), line(&[b'x'; 100]));
        assert_eq!(
            conn.read_line().await.expect("read"),
            Some(Received::Skipped(5001))
        );
        assert_eq!(
            conn.read_line().await.expect("read"),
            Some(Received::Skipped(102))
        );
        assert_eq!(conn.read_line().await.expect("read"), line(b"after"));
        writer.await.expect("join").expect("write");
        assert_eq!(conn.read_line().await.expect("read"), None);
        assert!(conn.buf.capacity() <= KEEP_CAPACITY + READ_CHUNK);
    }
}
