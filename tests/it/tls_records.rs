//! A dropped, replayed or reordered TLS record ends the session (SECURITY.md:
//! "a changed, dropped, replayed or reordered record ends the session"; a
//! changed one is in `adversarial`). A relay between a real client
//! and the real server reads the client's bytes as whole TLS records and
//! drops, replays or swaps application-data records on request; the server
//! must close that session, the room must hear the sender leave, and no
//! line from the tampered records may reach anyone.

use crate::harness::{Client, TestServer, TlsClient, WAIT};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// TLS record header: content type, legacy version (2 bytes), length (2).
const HEADER: usize = 5;
/// The content type of application data. Under TLS 1.3 every encrypted
/// record has it on the outside, so the relay is only armed once the
/// handshake is over.
const APPLICATION_DATA: u8 = 0x17;

/// What the relay does to the client's next application-data records.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Drops the next one.
    Drop,
    /// Holds the next one back and sends it after the one that follows.
    Swap,
}

/// What the relay did, for the test to wait on.
#[derive(Debug, PartialEq, Eq)]
enum Done {
    Dropped,
    Replayed,
    Held,
    Swapped,
}

/// A relay for one connection to `upstream`, tampering with what the
/// client sends when told to.
struct RecordRelay {
    addr: SocketAddr,
    /// Set before the client sends the records it is for, so that it is
    /// in place when they arrive.
    armed: Arc<Mutex<Option<Fault>>>,
    /// Replays the last record passed on, at once.
    replay: mpsc::UnboundedSender<()>,
    done: mpsc::UnboundedReceiver<Done>,
    task: JoinHandle<()>,
}

impl RecordRelay {
    async fn to(upstream: SocketAddr) -> RecordRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let armed = Arc::new(Mutex::new(None));
        let (replay, replay_rx) = mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::unbounded_channel();
        let tamper = Tamper {
            armed: armed.clone(),
            replay: replay_rx,
            done: done_tx,
        };
        let task = tokio::spawn(async move {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, mut client_write) = client.into_split();
            let (mut server_read, server_write) = server.into_split();
            // Either side ending ends the relay, and dropping both
            // closes the other side too.
            tokio::select! {
                _ = records(client_read, server_write, tamper) => {}
                _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
            }
        });
        RecordRelay {
            addr,
            armed,
            replay,
            done,
            task,
        }
    }

    fn arm(&self, fault: Fault) {
        *self.armed.lock().expect("lock") = Some(fault);
    }

    fn replay(&self) {
        self.replay.send(()).expect("relay running");
    }

    async fn expect(&mut self, what: Done) {
        let did = tokio::time::timeout(WAIT, self.done.recv())
            .await
            .unwrap_or_else(|_| panic!("the relay did not get to {what:?} within {WAIT:?}"));
        assert_eq!(did, Some(what));
    }
}

impl Drop for RecordRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The relay's end of [`RecordRelay`]'s controls.
struct Tamper {
    armed: Arc<Mutex<Option<Fault>>>,
    replay: mpsc::UnboundedReceiver<()>,
    done: mpsc::UnboundedSender<Done>,
}

/// Passes the client's bytes on record by record, tampering as told.
async fn records(
    mut from_client: OwnedReadHalf,
    mut to_server: OwnedWriteHalf,
    mut tamper: Tamper,
) {
    let mut buf = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    let mut held: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            read = from_client.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
            Some(()) = tamper.replay.recv() => {
                let record = last.clone().expect("a record to replay");
                if to_server.write_all(&record).await.is_err() {
                    return;
                }
                let _ = tamper.done.send(Done::Replayed);
                continue;
            }
        }
        while let Some(record) = whole_record(&mut buf) {
            let out = tamper.pass(record, &mut last, &mut held);
            if to_server.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

impl Tamper {
    /// What to send the server for `record`, as armed; `last` is the last
    /// record passed on untouched, `held` the one a swap holds back.
    fn pass(
        &self,
        record: Vec<u8>,
        last: &mut Option<Vec<u8>>,
        held: &mut Option<Vec<u8>>,
    ) -> Vec<u8> {
        let mut armed = self.armed.lock().expect("lock");
        match (record[0] == APPLICATION_DATA).then_some(*armed).flatten() {
            None => {
                *last = Some(record.clone());
                record
            }
            Some(Fault::Drop) => {
                *armed = None;
                let _ = self.done.send(Done::Dropped);
                Vec::new()
            }
            Some(Fault::Swap) => match held.take() {
                None => {
                    *held = Some(record);
                    let _ = self.done.send(Done::Held);
                    Vec::new()
                }
                Some(first) => {
                    *armed = None;
                    let _ = self.done.send(Done::Swapped);
                    [record, first].concat()
                }
            },
        }
    }
}

/// Takes the first whole record off `buf`, if it holds one.
fn whole_record(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buf.len() < HEADER {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    (buf.len() >= HEADER + len).then(|| buf.drain(..HEADER + len).collect())
}

/// A room with alice in it, and forger joined through a relay, having said
/// one line that passed through it untouched.
async fn forger_through_a_relay() -> (TestServer, TlsClient, TlsClient, RecordRelay) {
    let server = TestServer::start().await;
    let mut alice = server.join("alice").await;
    let relay = RecordRelay::to(server.addr()).await;
    let mut forger = Client::tls(relay.addr, server.client_tls.clone()).await;
    forger.register("forger").await;
    alice.expect("forger joined!").await;
    // The relay itself breaks nothing while it is not told to.
    forger.send("untouched").await;
    alice.expect("forger: untouched").await;
    forger.expect("forger: untouched").await;
    (server, alice, forger, relay)
}

/// The server ends forger's session: forger's connection closes, alice
/// hears it leave, and neither ever saw a line for which `tampered` holds.
async fn session_ended(
    alice: &mut TlsClient,
    mut forger: TlsClient,
    tampered: impl Fn(&str) -> bool,
) {
    let forger_saw = forger.until_closed().await;
    assert!(
        !forger_saw.iter().any(|l| tampered(l)),
        "forger got its tampered line back: {forger_saw:?}"
    );
    let mut alice_saw = Vec::new();
    loop {
        let line = alice.line().await;
        if line == "forger left!" {
            break;
        }
        alice_saw.push(line);
    }
    assert!(
        !alice_saw.iter().any(|l| tampered(l)),
        "alice heard a tampered line: {alice_saw:?}"
    );
    // The room goes on without forger.
    alice.send("still here").await;
    alice.expect("alice: still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_record_ends_the_session() {
    let (_server, mut alice, mut forger, mut relay) = forger_through_a_relay().await;
    relay.arm(Fault::Drop);
    forger.send("lost").await;
    relay.expect(Done::Dropped).await;
    // Only the record after a gap shows it.
    forger.send("after the gap").await;
    session_ended(&mut alice, forger, |l| {
        l.contains("lost") || l.contains("after the gap")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_record_ends_the_session() {
    let (_server, mut alice, forger, mut relay) = forger_through_a_relay().await;
    // "untouched" was delivered once already; its record, sent again,
    // must not be delivered again.
    relay.replay();
    relay.expect(Done::Replayed).await;
    session_ended(&mut alice, forger, |l| l.contains("untouched")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_records_end_the_session() {
    let (_server, mut alice, mut forger, mut relay) = forger_through_a_relay().await;
    relay.arm(Fault::Swap);
    forger.send("first").await;
    relay.expect(Done::Held).await;
    forger.send("second").await;
    relay.expect(Done::Swapped).await;
    session_ended(&mut alice, forger, |l| {
        l.contains("first") || l.contains("second")
    })
    .await;
}
