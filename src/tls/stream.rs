//! The server's side of a TLS connection, holding no buffer while it is
//! idle.
//!
//! rustls' buffered connection keeps a 4 KiB buffer for incoming records
//! for the whole life of a connection, and in a big room, where most
//! participants are idle most of the time, that would be a third of what
//! each one costs the server. This stream drives rustls' unbuffered API instead
//! and owns its three buffers: the bytes read that are not yet a whole
//! record, the decrypted bytes the session has not read yet, and the
//! encrypted bytes not yet written. Each is let go as soon as it is empty.
//!
//! Writes are encrypted as they come (at most one record per write, which
//! [`crate::connection`]'s batches fill) and go to the socket on flush, or
//! once a record's worth waits ([`OUTGOING_LIMIT`]): a session's batch of
//! lines costs one record and one system call, and a peer that stops
//! reading makes the stream hold two records at most. The session tickets
//! of the handshake wait for the session's first line and go out with it.

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError, WriteTraffic,
};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The most plaintext one record carries.
const MAX_PLAINTEXT: usize = 16 * 1024;

/// The most a record takes on the wire: rustls' own bound.
const MAX_RECORD: usize = MAX_PLAINTEXT + 2048 + 5;

/// What a read asks the socket for: a whole record, so that a full one
/// costs one system call.
const READ_SIZE: usize = MAX_RECORD;

/// The least room a read into a connection's own buffer asks for.
const MIN_READ: usize = 4096;

/// The most unprocessed input kept: a handshake message may span records
/// up to 64 KiB (rustls' limit), plus the record being read.
const MAX_INCOMING: usize = 0xffff + MAX_RECORD;

/// Encrypted bytes a writer may leave unwritten before a write waits for
/// the socket: one full record (a session's batch), so that a peer that
/// stops reading makes the stream hold at most two.
const OUTGOING_LIMIT: usize = MAX_RECORD;

/// Room for a record's header, explicit nonce and tag.
const RECORD_OVERHEAD: usize = 64;

/// A TLS connection accepted by [`accept`].
pub struct ServerStream {
    tcp: TcpStream,
    /// Bytes read that are not yet a whole record (or a whole handshake
    /// message). Empty, with no allocation, while the peer is quiet.
    incoming: Vec<u8>,
    tls: Tls,
}

/// rustls' connection and what it gave out that is not taken yet.
struct Tls {
    conn: UnbufferedServerConnection,
    /// Decrypted bytes not read yet, from `plaintext_read` on.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// Encrypted bytes not written yet, from `written` on.
    outgoing: Vec<u8>,
    written: usize,
    peer_closed: bool,
    close_queued: bool,
    /// Set by the first error: rustls is not run again after one (it
    /// would read the same records again, and alert twice).
    failed: bool,
}

/// Does the server's side of the TLS handshake over `tcp`. Returns once it
/// is complete (the client's certificate, if any, checked); what the
/// handshake still has to send (the session tickets) goes out with the
/// first write.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<ServerStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(invalid_data)?;
    let mut stream = ServerStream {
        tcp,
        incoming: Vec::new(),
        tls: Tls {
            conn,
            plaintext: Vec::new(),
            plaintext_read: 0,
            outgoing: Vec::new(),
            written: 0,
            peer_closed: false,
            close_queued: false,
            failed: false,
        },
    };
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

thread_local! {
    /// Where a read lands when nothing waits from the one before: a whole
    /// record's room per runtime thread, instead of one per connection.
    /// Only what is left of a record that has not all arrived is copied
    /// into the connection's own `incoming`.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_SIZE]);
}

impl ServerStream {
    /// The client's certificate chain, if it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.tls.conn.peer_certificates()
    }

    /// The bytes this connection's buffers hold (their capacity): none
    /// while nothing waits to be read or written.
    pub fn held_bytes(&self) -> usize {
        self.incoming.capacity() + self.tls.plaintext.capacity() + self.tls.outgoing.capacity()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.tls.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            // Our flight goes out before we wait for the answer to it.
            ready!(self.tls.poll_write_out(&mut self.tcp, cx))?;
            match ready!(self.poll_read_records(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    // Whatever alert rustls queued, sent if the socket takes it now.
                    let _ = self.tls.poll_write_out(&mut self.tcp, cx);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Reads what the socket has and runs rustls over it (see
    /// [`Tls::process`]): the number of bytes read, 0 at the end of the
    /// stream.
    fn poll_read_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            let read = if self.incoming.is_empty() {
                SCRATCH.with_borrow_mut(|scratch| self.read_into_scratch(scratch))
            } else {
                self.read_into_incoming()
            };
            match read {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => return Poll::Ready(read),
            }
        }
    }

    fn read_into_scratch(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.try_read(scratch)?;
        let (taken, result) = self.tls.process(&mut scratch[..n], |_, _| Ok(()));
        self.incoming.extend_from_slice(&scratch[taken..n]);
        result.map(|()| n)
    }

    fn read_into_incoming(&mut self) -> io::Result<usize> {
        if self.incoming.len() >= MAX_INCOMING {
            return Err(invalid_data("TLS message too long"));
        }
        // Room for the rest of a whole record, or a few KiB more of a
        // handshake message spanning records; exact, so that a record that
        // never ends holds one record's room, not twice that.
        if self.incoming.capacity() - self.incoming.len() < MIN_READ {
            let rest = READ_SIZE.saturating_sub(self.incoming.len()).max(MIN_READ);
            self.incoming.reserve_exact(rest);
        }
        let n = self.tcp.try_read_buf(&mut self.incoming)?;
        let (taken, result) = self.tls.process(&mut self.incoming, |_, _| Ok(()));
        self.take_incoming(taken);
        result.map(|()| n)
    }

    /// Drops what rustls is done with, and the buffer once it is empty.
    fn take_incoming(&mut self, taken: usize) {
        self.incoming.drain(..taken);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
    }

    /// Lets rustls encrypt, through `write`, once it may.
    fn write_with(
        &mut self,
        write: impl FnMut(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let (taken, result) = self.tls.process(&mut self.incoming, write);
        self.take_incoming(taken);
        result
    }
}

impl Tls {
    /// Runs rustls over the records in `records`: what they carry for the
    /// session goes to `plaintext`, what rustls has to send to `outgoing`,
    /// and, once rustls may encrypt, `write` gets its turn. Returns how
    /// many bytes of `records` rustls is done with: the rest is not yet a
    /// whole record.
    fn process(
        &mut self,
        records: &mut [u8],
        mut write: impl FnMut(
            &mut WriteTraffic<'_, ServerConnectionData>,
            &mut Vec<u8>,
        ) -> io::Result<()>,
    ) -> (usize, io::Result<()>) {
        if self.failed {
            return (0, Err(io::Error::other("the TLS connection failed")));
        }
        let mut taken = 0;
        let result = 'records: loop {
            let status = self.conn.process_tls_records(&mut records[taken..]);
            taken += status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => break Err(invalid_data(e)),
            };
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                taken += record.discard;
                                self.plaintext.extend_from_slice(record.payload);
                            }
                            Err(e) => break 'records Err(invalid_data(e)),
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => encode(&mut data, &mut self.outgoing),
                // What is encoded waits in `outgoing`, which goes out
                // before anything later and before we wait for the peer.
                ConnectionState::TransmitTlsData(data) => data.done(),
                ConnectionState::PeerClosed => self.peer_closed = true,
                ConnectionState::WriteTraffic(mut traffic) => {
                    break write(&mut traffic, &mut self.outgoing);
                }
                ConnectionState::BlockedHandshake | ConnectionState::Closed => break Ok(()),
                // The server accepts no early data (rustls' default).
                other => break Err(invalid_data(format!("unexpected TLS state {other:?}"))),
            }
        };
        if result.is_err() {
            self.failed = true;
            self.queue_alert(&mut records[taken..]);
        }
        (taken, result)
    }

    /// After an error rustls hands out what it queued, the fatal alert
    /// last, into `outgoing`, for the peer to learn why. Only while it has
    /// some: asked once more, it would read `records` again (and alert
    /// twice). `records` are those not taken yet, as rustls may still point
    /// into them.
    fn queue_alert(&mut self, records: &mut [u8]) {
        while self.conn.wants_write() {
            match self.conn.process_tls_records(records).state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, &mut self.outgoing)
                }
                _ => return,
            }
        }
    }

    /// Writes `outgoing` to `tcp`, and lets it go once it is all out.
    fn poll_write_out(
        &mut self,
        tcp: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.outgoing.len() {
            match ready!(Pin::new(&mut *tcp).poll_write(cx, &self.outgoing[self.written..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.written += n,
            }
        }
        self.outgoing = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn unwritten(&self) -> usize {
        self.outgoing.len() - self.written
    }

    /// Hands out up to `buf`'s room of the decrypted bytes; false if none wait.
    fn read_plaintext(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let pending = &self.plaintext[self.plaintext_read..];
        if pending.is_empty() {
            return false;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        self.plaintext_read += n;
        if self.plaintext_read == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_read = 0;
        }
        true
    }
}

/// Encodes a handshake record rustls has ready at the end of `out`.
fn encode(data: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) {
    let start = out.len();
    let needed = match data.encode(&mut []) {
        Ok(_) | Err(EncodeError::AlreadyEncoded) => return,
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
    };
    out.resize(start + needed, 0);
    let written = data.encode(&mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// Encrypts `plaintext` as application data at the end of `out`.
fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = plaintext.len() + RECORD_OVERHEAD * (plaintext.len() / MAX_PLAINTEXT + 1);
    loop {
        out.resize(start + room, 0);
        match traffic.encrypt(plaintext, &mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size }))
                if required_size > room =>
            {
                room = required_size;
            }
            Err(e) => {
                out.truncate(start);
                return Err(io::Error::other(e));
            }
        }
    }
}

fn invalid_data<E>(error: E) -> io::Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.tls.read_plaintext(buf) || this.tls.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // What reading queued to send (the answer to a key update)
            // goes out without holding up the read.
            if let Poll::Ready(Err(e)) = this.tls.poll_write_out(&mut this.tcp, cx) {
                return Poll::Ready(Err(e));
            }
            if ready!(this.poll_read_records(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Encrypts as much of `bufs` as one record holds.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tls.unwritten() >= OUTGOING_LIMIT {
            ready!(this.tls.poll_write_out(&mut this.tcp, cx))?;
        }
        let total = bufs
            .iter()
            .map(|b| b.len())
            .sum::<usize>()
            .min(MAX_PLAINTEXT);
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        let gathered;
        let plaintext = if first.len() >= total {
            &first[..total]
        } else {
            let mut joined = Vec::with_capacity(total);
            for slice in bufs {
                let room = total - joined.len();
                joined.extend_from_slice(&slice[..slice.len().min(room)]);
            }
            gathered = joined;
            &gathered[..]
        };
        if plaintext.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut encrypted = false;
        this.write_with(|traffic, out| {
            encrypted = true;
            encrypt(traffic, plaintext, out)
        })?;
        if !encrypted {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS connection is closed",
            )));
        }
        Poll::Ready(Ok(plaintext.len()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.poll_write_out(&mut this.tcp, cx)
    }

    /// Sends close_notify, then closes the socket's sending side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.tls.close_queued && !this.tls.failed {
            this.tls.close_queued = true;
            this.write_with(|traffic, out| {
                let start = out.len();
                out.resize(start + RECORD_OVERHEAD, 0);
                let written = traffic
                    .queue_close_notify(&mut out[start..])
                    .map_err(io::Error::other)?;
                out.truncate(start + written);
                Ok(())
            })?;
        }
        ready!(this.tls.poll_write_out(&mut this.tcp, cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
