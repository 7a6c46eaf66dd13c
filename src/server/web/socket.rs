//! A WebSocket as the byte stream a session reads and writes: every frame
//! the browser sends reads as one line (its bytes and `\n`), and every line
//! the session writes leaves as one text frame, without its `\n`. The
//! session's framing, limits and batching ([`Connection`](crate::connection::Connection))
//! apply unchanged, so a browser participant is held to exactly the rules
//! of a TCP one.
//!
//! A message over the line limit is refused by the WebSocket layer before
//! it is buffered whole (its limit is set to the line limit plus one); it
//! then reads as a run of bytes over the limit, so the session answers it
//! as it answers a long line on TCP. Binary frames carry bytes as they are
//! (invalid UTF-8 gets `ERROR invalid UTF-8`, as on TCP); a text frame that
//! is not UTF-8 fails the WebSocket, as RFC 6455 requires.

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The filler that stands for a message over the limit: never a line end.
const FILLER: [u8; 256] = [b'x'; 256];

/// A WebSocket read and written as a stream of lines.
pub(crate) struct Socket {
    ws: WebSocket,
    /// What is left of the last frame read, to hand out.
    reading: Bytes,
    /// Whether the last frame's line end is still to be handed out.
    line_end_due: bool,
    /// Filler bytes still to hand out for a message over the limit.
    over_limit: usize,
    /// The start of a line the session is writing, until its `\n` comes.
    writing: BytesMut,
    max_line: usize,
}

impl Socket {
    pub(crate) fn new(ws: WebSocket, max_line: usize) -> Self {
        Socket {
            ws,
            reading: Bytes::new(),
            line_end_due: false,
            over_limit: 0,
            writing: BytesMut::new(),
            max_line,
        }
    }

    /// Hands out what is pending of the last frame, if anything.
    fn pending(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if !self.reading.is_empty() {
            let n = self.reading.len().min(buf.remaining());
            buf.put_slice(&self.reading[..n]);
            self.reading.advance(n);
            return true;
        }
        if self.line_end_due {
            self.line_end_due = false;
            buf.put_slice(b"\n");
            return true;
        }
        if self.over_limit > 0 {
            let n = self.over_limit.min(buf.remaining()).min(FILLER.len());
            buf.put_slice(&FILLER[..n]);
            self.over_limit -= n;
            return true;
        }
        false
    }
}

/// Whether `err` is the WebSocket layer refusing a message over its limit.
fn over_limit(err: axum::Error) -> Result<(), io::Error> {
    use tokio_tungstenite::tungstenite::Error;
    match err.into_inner().downcast::<Error>() {
        Ok(err) if matches!(*err, Error::Capacity(_)) => Ok(()),
        Ok(err) => Err(io::Error::other(err)),
        Err(err) => Err(io::Error::other(err)),
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if buf.remaining() == 0 || this.pending(buf) {
                return Poll::Ready(Ok(()));
            }
            let frame = match ready!(this.ws.poll_next_unpin(cx)) {
                // The end of the stream reads as the end of the file.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(text))) => Bytes::from(text),
                Some(Ok(Message::Binary(bytes))) => bytes,
                // Answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Err(err)) => {
                    over_limit(err)?;
                    this.over_limit = this.max_line + 1;
                    continue;
                }
            };
            this.reading = frame;
            this.line_end_due = true;
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.ws.poll_ready_unpin(cx)).map_err(io::Error::other)?;
        let Some(end) = memchr::memchr(b'\n', buf) else {
            // Lines come whole from the server's own texts; a partial one
            // waits for its end, within the line limit and a margin for
            // the server's own prefixes.
            if this.writing.len() + buf.len() > 2 * this.max_line + 1024 {
                return Poll::Ready(Err(io::Error::other("line to send too long")));
            }
            this.writing.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        };
        let line = if this.writing.is_empty() {
            Bytes::copy_from_slice(&buf[..end])
        } else {
            this.writing.extend_from_slice(&buf[..end]);
            std::mem::take(&mut this.writing).freeze()
        };
        let message = match std::str::from_utf8(&line) {
            Ok(_) => Utf8Bytes::try_from(line)
                .map(Message::Text)
                .map_err(io::Error::other)?,
            Err(_) => Message::Binary(line),
        };
        this.ws
            .start_send_unpin(message)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(end + 1))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_close_unpin(cx).map_err(io::Error::other)
    }
}
