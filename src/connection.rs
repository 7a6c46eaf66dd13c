//! One connection's byte stream, as lines: reading framed lines in, and the
//! batching writer that sends queued lines out.
//!
//! The writer is where TLS gets cheap. Encrypting each chat line as its own
//! record costs a record header, a tag and a syscall per line; instead every
//! line queued for a connection (shared [`Bytes`], never copied here) goes
//! to TLS in one vectored write, so a busy participant gets many lines per
//! record and per syscall. Nothing waits on a timer: a line queued on an
//! idle connection is written at once.
//!
//! Works on any `AsyncRead + AsyncWrite` stream: a TLS session or, with
//! `--plaintext`, a bare TCP stream.

use crate::protocol::{FrameError, LineFramer};
use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How many bytes the session gathers before writing: a full TLS record.
pub const BATCH_BYTES: usize = 16 * 1024;

/// At most this many slices per vectored write (well under IOV_MAX).
const MAX_SLICES: usize = 256;

/// The queue capacity a connection may keep while it has nothing to send.
const IDLE_QUEUE_CAPACITY: usize = 8;

/// Why reading a line failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// Lines waiting to be written, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    lines: VecDeque<Bytes>,
    bytes: usize,
}

impl Outbox {
    pub fn push(&mut self, line: Bytes) {
        self.bytes += line.len();
        self.lines.push_back(line);
    }

    /// Bytes not written yet.
    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Writes everything queued to `out` in as few vectored writes as the
    /// stream takes, then flushes. Cancel-safe: bytes leave the outbox only
    /// once the stream took them, so dropping this future midway loses and
    /// repeats nothing.
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> io::Result<()> {
        while !self.lines.is_empty() {
            let written = std::future::poll_fn(|cx| self.poll_write_once(cx, out)).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
        }
        // Let go of the queue's memory once it is written: most of the
        // time most participants are idle, and a queue that once held a
        // batch would otherwise keep room for it (32 bytes a line) forever.
        // Regrowing it for the next batch costs a few allocations per
        // batch, not per line.
        if self.lines.capacity() > IDLE_QUEUE_CAPACITY {
            self.lines = VecDeque::new();
        }
        out.flush().await
    }

    /// One vectored write of as many queued lines as fit in one call. The
    /// slice array lives only during the poll, on the stack: kept across
    /// an `.await` it would make every connection's task 4 KiB larger.
    fn poll_write_once<W: AsyncWrite + Unpin>(
        &self,
        cx: &mut std::task::Context<'_>,
        out: &mut W,
    ) -> std::task::Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = self.lines.len().min(MAX_SLICES);
        for (slot, line) in slices.iter_mut().zip(self.lines.iter()) {
            *slot = IoSlice::new(line);
        }
        std::pin::Pin::new(out).poll_write_vectored(cx, &slices[..count])
    }

    fn consume(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let Some(front) = self.lines.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                self.lines.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}

/// A stream read as lines and written through an [`Outbox`].
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    framer: LineFramer,
    outbox: Outbox,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, max_line: usize) -> Self {
        Connection {
            stream,
            framer: LineFramer::new(max_line),
            outbox: Outbox::default(),
        }
    }

    /// The next line without its terminator; `Ok(None)` when the peer closed
    /// the stream (a partial last line without `\n` is discarded, as it was
    /// never completed). Cancel-safe: bytes read stay in the framer.
    pub async fn read_line(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(line) = self.framer.next_line()? {
                self.framer.release_if_empty();
                return Ok(Some(line));
            }
            if self.stream.read_buf(self.framer.read_buf()).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// A complete line already received, if any: no I/O.
    pub fn buffered_line(&mut self) -> Result<Option<Bytes>, ReadError> {
        let line = self.framer.next_line()?;
        if line.is_some() {
            self.framer.release_if_empty();
        }
        Ok(line)
    }

    /// Queues a line (terminator included) for the next [`Connection::flush`].
    pub fn queue(&mut self, line: Bytes) {
        self.outbox.push(line);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Writes and flushes everything queued. Cancel-safe.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.outbox.write_to(&mut self.stream).await
    }

    /// Queues `line` and flushes.
    pub async fn send(&mut self, line: Bytes) -> io::Result<()> {
        self.queue(line);
        self.flush().await
    }

    /// Ends the stream cleanly: for TLS, sends close_notify.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// The stream, for callers that need its details (TLS state, peer).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, for callers that act on it (a TLS key update, say).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_writes_lines_whole_and_in_order_through_short_writes() {
        // A duplex pipe with a tiny buffer forces many partial writes.
        let (mut a, mut b) = tokio::io::duplex(7);
        let mut outbox = Outbox::default();
        let mut expected = Vec::new();
        for i in 0..500 {
            let line = Bytes::from(format!("line {i}\n"));
            expected.extend_from_slice(&line);
            outbox.push(line);
        }
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.map(|_| got)
        });
        outbox.write_to(&mut a).await.expect("write");
        assert!(outbox.is_empty());
        drop(a);
        let got = reader.await.expect("join").expect("read");
        assert_eq!(got, expected);
    }
}
