//! The batching writer (`connection::Outbox`, what every session writes
//! through): whatever the chunking the stream imposes, lines are never
//! split across, merged with, or reordered among each other, and a line
//! queued on an idle connection leaves at once, with no timer involved.

use bytes::Bytes;
use chatroom::connection::{Connection, Outbox};
use proptest::prelude::*;
use tokio::io::AsyncReadExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Lines of printable text, each with its terminator.
fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop::collection::vec(0x20u8..0x7f, 0..300).prop_map(|mut line| {
            line.push(b'\n');
            line
        }),
        1..80,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Lines queued in batches of any size, through a pipe that takes any
    /// number of bytes at a time, arrive as exactly the same lines.
    #[test]
    fn lines_arrive_whole_and_in_order_whatever_the_chunking(
        lines in lines(),
        pipe_capacity in 1usize..64,
        batch_sizes in prop::collection::vec(1usize..20, 1..10),
    ) {
        let expected: Vec<u8> = lines.concat();
        let got = runtime().block_on(async {
            let (mut writer, mut reader) = tokio::io::duplex(pipe_capacity);
            let read_all = tokio::spawn(async move {
                let mut got = Vec::new();
                reader.read_to_end(&mut got).await.map(|_| got)
            });
            let mut outbox = Outbox::default();
            let mut queued = lines.iter();
            for size in batch_sizes.iter().cycle() {
                let batch: Vec<_> = queued.by_ref().take(*size).collect();
                if batch.is_empty() {
                    break;
                }
                for line in batch {
                    outbox.push(Bytes::copy_from_slice(line));
                }
                outbox.write_to(&mut writer).await.expect("write");
                prop_assert!(outbox.is_empty());
            }
            drop(writer);
            Ok(read_all.await.expect("reader task").expect("read"))
        })?;
        prop_assert_eq!(got, expected);
    }
}

/// On an idle connection a queued line is on the wire as soon as the flush
/// returns. The clock is paused: had the writer waited on any timer to
/// gather more lines, tokio would have had to move the clock forward.
#[tokio::test(start_paused = true)]
async fn a_line_queued_on_an_idle_connection_leaves_at_once() {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let mut sender = Connection::new(near, 4096);
    let mut receiver = Connection::new(far, 4096);
    let start = tokio::time::Instant::now();
    for text in ["first", "second"] {
        sender
            .send(Bytes::from(format!("{text}\n")))
            .await
            .expect("send");
        let line = receiver.read_line().await.expect("read").expect("a line");
        assert_eq!(line, text.as_bytes());
    }
    assert_eq!(tokio::time::Instant::now(), start, "a timer was involved");
}
