//! Line framing: a byte stream, however it is chunked, as lines of at most
//! the line limit, with the terminator (`\n`, or `\r\n`) taken off.

use bytes::{Buf, Bytes, BytesMut};

/// A framing failure: the peer broke the line-length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("line too long")]
    TooLong,
}

/// Splits a byte stream into lines, whatever its chunking.
///
/// ```
/// use chatroom::protocol::{FrameError, LineFramer};
///
/// let mut framer = LineFramer::new(10);
/// framer.extend(b"hel");
/// assert_eq!(framer.next_line(), Ok(None)); // not a whole line yet
/// framer.extend(b"lo\r\nbye\n");
/// assert_eq!(framer.next_line(), Ok(Some("hello".into())));
/// assert_eq!(framer.next_line(), Ok(Some("bye".into())));
/// framer.extend(b"far too long for the limit");
/// assert_eq!(framer.next_line(), Err(FrameError::TooLong));
/// ```
///
/// Bytes go in through [`LineFramer::read_buf`] (for `AsyncReadExt::read_buf`)
/// or [`LineFramer::extend`]; lines come out of [`LineFramer::next_line`]
/// without their terminator. The buffer never holds more than the line limit
/// plus one read's worth of bytes: as soon as a partial line is longer than
/// the limit, `next_line` fails instead of waiting for its end.
#[derive(Debug)]
pub struct LineFramer {
    buf: BytesMut,
    max_line: usize,
    /// How far `buf` is known to hold no `\n`, so a long line arriving in
    /// small pieces is scanned once, not once per piece.
    scanned: usize,
}

/// How much a single read may add to the framer's buffer.
pub const READ_CHUNK: usize = 4096;

/// The room for a read when no partial line is buffered: what an idle
/// participant's connection holds while it waits.
const IDLE_READ: usize = 512;

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes without terminator.
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            buf: BytesMut::new(),
            max_line,
            scanned: 0,
        }
    }

    /// The buffer to read into, with room for one more read. Between lines
    /// (the state an idle connection waits in) that room is small, since a
    /// chat line usually is; inside a partial line it is a full chunk. Given
    /// back by [`LineFramer::release_if_empty`].
    pub fn read_buf(&mut self) -> &mut BytesMut {
        let room = if self.buf.is_empty() {
            IDLE_READ
        } else {
            READ_CHUNK
        };
        self.buf.reserve(room);
        &mut self.buf
    }

    /// The buffer to read into, with room for `room` more bytes: for a
    /// reader that wants large reads and holds no idle connections (the
    /// bench's clients). The limit on a line still holds.
    pub fn read_buf_with_room(&mut self, room: usize) -> &mut BytesMut {
        self.buf.reserve(room);
        &mut self.buf
    }

    /// Frees the buffer's memory when it holds no partial line.
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
            self.scanned = 0;
        }
    }

    /// Appends bytes, as a read would.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not make a complete line yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete line, without `\n` and without a `\r` before it;
    /// `Ok(None)` when more bytes are needed; an error when the peer sent a
    /// line over the limit (the connection should then be closed, since the
    /// rest of the stream can no longer be trusted to be in step).
    pub fn next_line(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some((end, len)) = self.find_line()? else {
            return Ok(None);
        };
        let mut line = self.buf.split_to(end + 1);
        line.truncate(len);
        Ok(Some(line.freeze()))
    }

    /// The next complete line as [`LineFramer::next_line`] finds it,
    /// handed to `f` where it lies and then dropped: for a reader that only
    /// looks at its lines (the bench's clients), without the shared handle
    /// `next_line` makes for each.
    pub fn next_line_in_place<R>(
        &mut self,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, FrameError> {
        let Some((end, len)) = self.find_line()? else {
            return Ok(None);
        };
        let seen = f(&self.buf[..len]);
        self.buf.advance(end + 1);
        Ok(Some(seen))
    }

    /// Where the next complete line's `\n` is, and the line's length
    /// without its terminator. A line over the limit is dropped with the
    /// error.
    fn find_line(&mut self) -> Result<Option<(usize, usize)>, FrameError> {
        match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            Some(offset) => {
                let end = self.scanned + offset;
                self.scanned = 0;
                let len = match self.buf[..end].last() {
                    Some(b'\r') => end - 1,
                    _ => end,
                };
                if len > self.max_line {
                    self.buf.advance(end + 1);
                    return Err(FrameError::TooLong);
                }
                Ok(Some((end, len)))
            }
            None => {
                // One byte of slack for a `\r` that may still be followed by `\n`.
                if self.buf.len() > self.max_line + 1 {
                    return Err(FrameError::TooLong);
                }
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }
}
