//! The correctness checker: what each client saw, and the verdict over all
//! of them.
//!
//! A fast wrong answer is a failure, so every run checks that each client
//! got every message exactly once, intact, and in the same global order as
//! everybody else. Each client keeps, per sender, a bitmap of sequence
//! numbers seen (loss and duplicates) and the highest one (reordering within
//! a sender), plus one hash chain over the (sender, seq) ids in arrival
//! order; two clients that saw the same messages in a different order end
//! with different chains. That costs a few bits per message instead of the
//! whole sequence.

use super::message::{Stamp, mix};
use std::fmt;

/// One client's record of the messages it received.
#[derive(Debug, Clone)]
pub struct ReceiverLog {
    pub client: usize,
    senders: Vec<SenderTrack>,
    chain: u64,
    /// Highest sequence number a sender may use: a bound on the bitmaps, so
    /// a hostile line cannot make one grow without limit.
    max_messages: u32,
    ended: usize,
    /// Well-formed messages from this run's senders, duplicates included.
    pub messages: u64,
    pub corrupt: u64,
    pub corrupt_sample: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct SenderTrack {
    seen: Vec<u64>,
    distinct: u32,
    total: u64,
    highest: Option<u32>,
    /// Messages that arrived after a later one from the same sender.
    backwards: u32,
    ended: bool,
}

/// Whether a message was new to this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    First,
    Repeat,
}

impl ReceiverLog {
    pub fn new(client: usize, senders: usize, max_messages: u32) -> Self {
        ReceiverLog {
            client,
            senders: vec![SenderTrack::default(); senders],
            chain: 0,
            max_messages,
            ended: 0,
            messages: 0,
            corrupt: 0,
            corrupt_sample: None,
        }
    }

    /// Records a message; one from an unknown sender or with an impossible
    /// sequence number counts as corrupt.
    pub fn record(&mut self, sender: usize, stamp: Stamp) -> Option<Delivery> {
        if stamp.seq >= self.max_messages {
            return None;
        }
        let track = self.senders.get_mut(sender)?;
        self.messages += 1;
        track.total += 1;
        self.chain = mix(self.chain ^ ((sender as u64) << 32 | u64::from(stamp.seq)));
        let (word, bit) = ((stamp.seq / 64) as usize, stamp.seq % 64);
        if track.seen.len() <= word {
            track.seen.resize(word + 1, 0);
        }
        if track.seen[word] & (1 << bit) != 0 {
            return Some(Delivery::Repeat);
        }
        track.seen[word] |= 1 << bit;
        track.distinct += 1;
        match track.highest {
            Some(highest) if stamp.seq < highest => track.backwards += 1,
            _ => track.highest = Some(stamp.seq),
        }
        if stamp.last && !track.ended {
            track.ended = true;
            self.ended += 1;
        }
        Some(Delivery::First)
    }

    /// Records a line that claimed to be one of ours but was not intact.
    pub fn record_corrupt(&mut self, sample: impl FnOnce() -> String) {
        self.corrupt += 1;
        if self.corrupt_sample.is_none() {
            self.corrupt_sample = Some(sample());
        }
    }

    /// Whether every sender's last message has arrived.
    pub fn all_ended(&self) -> bool {
        self.ended == self.senders.len()
    }
}

/// Something the checker found wrong. Each names the client it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The client did not receive some messages.
    Lost {
        client: usize,
        missing: u64,
        senders: usize,
    },
    /// The client received some messages more than once.
    Duplicated { client: usize, extra: u64 },
    /// Some sender's messages reached the client out of their sending order.
    Reordered { client: usize, count: u64 },
    /// Lines that were not intact messages (or any protocol line).
    Corrupt {
        client: usize,
        count: u64,
        sample: String,
    },
    /// Clients that received the same messages, each exactly once, did not
    /// all receive them in the same order.
    OrderDiverged {
        orders: usize,
        largest_group: usize,
        others: Vec<usize>,
    },
    /// The client lost its connection or was told to go.
    Disconnected { client: usize, reason: String },
    /// A sender could not send all its messages.
    SendFailed { client: usize, reason: String },
    /// The run did not complete: deliveries stopped or the time ran out.
    Incomplete(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Lost {
                client,
                missing,
                senders,
            } => write!(
                f,
                "loss: client {client} is missing {missing} message(s) from {senders} sender(s)"
            ),
            Problem::Duplicated { client, extra } => {
                write!(f, "duplicate: client {client} got {extra} message(s) twice")
            }
            Problem::Reordered { client, count } => write!(
                f,
                "reordering: client {client} got {count} message(s) after a later one from the \
                 same sender"
            ),
            Problem::Corrupt {
                client,
                count,
                sample,
            } => write!(
                f,
                "corruption: client {client} got {count} damaged line(s), e.g. {sample:?}"
            ),
            Problem::OrderDiverged {
                orders,
                largest_group,
                others,
            } => write!(
                f,
                "order: clients saw {orders} different orders of the same messages; \
                 {largest_group} agree, these differ: {others:?}"
            ),
            Problem::Disconnected { client, reason } => {
                write!(f, "disconnected: client {client}: {reason}")
            }
            Problem::SendFailed { client, reason } => {
                write!(f, "send failed: client {client}: {reason}")
            }
            Problem::Incomplete(what) => write!(f, "incomplete: {what}"),
        }
    }
}

/// The verdict over every client's log: `sent[s]` is how many messages
/// sender `s` sent. Clients whose own record is already wrong are left out
/// of the order comparison, where they would only repeat what was found.
pub fn verify(logs: &[ReceiverLog], sent: &[u32]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut clean: Vec<(u64, usize)> = Vec::new();
    for log in logs {
        let before = problems.len();
        let (mut missing, mut missing_from, mut extra, mut backwards) = (0u64, 0usize, 0u64, 0u64);
        for (sender, track) in log.senders.iter().enumerate() {
            let expected = u64::from(sent.get(sender).copied().unwrap_or(0));
            let distinct = u64::from(track.distinct);
            if distinct < expected {
                missing += expected - distinct;
                missing_from += 1;
            }
            // Sequence numbers past what the sender sent were never sent:
            // they are forged or damaged, which `Corrupt` covers.
            extra += track.total - distinct + distinct.saturating_sub(expected);
            backwards += u64::from(track.backwards);
        }
        if missing > 0 {
            problems.push(Problem::Lost {
                client: log.client,
                missing,
                senders: missing_from,
            });
        }
        if extra > 0 {
            problems.push(Problem::Duplicated {
                client: log.client,
                extra,
            });
        }
        if backwards > 0 {
            problems.push(Problem::Reordered {
                client: log.client,
                count: backwards,
            });
        }
        if log.corrupt > 0 {
            problems.push(Problem::Corrupt {
                client: log.client,
                count: log.corrupt,
                sample: log.corrupt_sample.clone().unwrap_or_default(),
            });
        }
        if problems.len() == before {
            clean.push((log.chain, log.client));
        }
    }
    problems.extend(compare_orders(&clean));
    problems
}

/// Groups clean clients by their hash chain: one group means one order.
fn compare_orders(chains: &[(u64, usize)]) -> Option<Problem> {
    let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
    for &(chain, client) in chains {
        match groups.iter_mut().find(|(c, _)| *c == chain) {
            Some((_, members)) => members.push(client),
            None => groups.push((chain, vec![client])),
        }
    }
    if groups.len() <= 1 {
        return None;
    }
    groups.sort_by_key(|(_, members)| std::cmp::Reverse(members.len()));
    let mut others: Vec<usize> = groups[1..]
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    others.sort_unstable();
    others.truncate(20);
    Some(Problem::OrderDiverged {
        orders: groups.len(),
        largest_group: groups[0].1.len(),
        others,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(seq: u32, last: bool) -> Stamp {
        Stamp {
            seq,
            sent_us: 0,
            last,
        }
    }

    /// A client that got `order` (sender, seq) ids; the last seq is 2.
    fn log_of(client: usize, order: &[(usize, u32)]) -> ReceiverLog {
        let mut log = ReceiverLog::new(client, 2, 100);
        for &(sender, seq) in order {
            log.record(sender, stamp(seq, seq == 2));
        }
        log
    }

    const GOOD: [(usize, u32); 6] = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)];

    #[test]
    fn identical_complete_logs_pass() {
        let logs = [log_of(0, &GOOD), log_of(1, &GOOD), log_of(2, &GOOD)];
        assert!(logs.iter().all(ReceiverLog::all_ended));
        assert_eq!(verify(&logs, &[3, 3]), vec![]);
    }

    #[test]
    fn each_kind_of_fault_is_named() {
        let lost = log_of(1, &[(0, 0), (1, 0), (1, 1), (0, 2), (1, 2)]);
        let dup = log_of(2, &[(0, 0), (1, 0), (0, 1), (0, 1), (1, 1), (0, 2), (1, 2)]);
        let swapped_same_sender = log_of(3, &[(0, 1), (1, 0), (0, 0), (1, 1), (0, 2), (1, 2)]);
        let swapped_across = log_of(4, &[(1, 0), (0, 0), (0, 1), (1, 1), (0, 2), (1, 2)]);
        let logs = [
            log_of(0, &GOOD),
            lost,
            dup,
            swapped_same_sender,
            swapped_across,
            log_of(5, &GOOD),
        ];
        let problems = verify(&logs, &[3, 3]);
        assert!(problems.contains(&Problem::Lost {
            client: 1,
            missing: 1,
            senders: 1
        }));
        assert!(problems.contains(&Problem::Duplicated {
            client: 2,
            extra: 1
        }));
        assert!(problems.contains(&Problem::Reordered {
            client: 3,
            count: 1
        }));
        assert!(problems.contains(&Problem::OrderDiverged {
            orders: 2,
            largest_group: 2,
            others: vec![4]
        }));
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
