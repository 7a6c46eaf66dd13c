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
//!
//! With channels ([`ChannelPlan`]) each client is to get the lines of the
//! senders in its channel only, every line of another channel it gets is
//! counted as crossed, and the order is compared among the members of each
//! channel: one order per channel.

use super::channels::ChannelPlan;
use super::message::{Stamp, mix};
use std::fmt;

/// One client's record of the messages it received.
#[derive(Debug, Clone)]
pub struct ReceiverLog {
    pub client: usize,
    /// One track per sender this client hears: senders `first`, `first +
    /// step`, `first + 2 step`, ... (every sender, or those of its
    /// channel), so that a client in a channel keeps and touches only its
    /// channel's and the bench's working set stays small.
    senders: Vec<SenderTrack>,
    first: usize,
    step: usize,
    chain: u64,
    /// Highest sequence number a sender may use: a bound on the bitmaps, so
    /// a hostile line cannot make one grow without limit.
    max_messages: u32,
    ended: usize,
    /// How many senders' last messages it waits for: those of its channel.
    awaited: usize,
    /// Well-formed messages from this run's senders, duplicates included.
    pub messages: u64,
    pub corrupt: u64,
    pub corrupt_sample: Option<String>,
    /// Lines of a channel it is not in.
    pub crossed: u64,
    pub crossed_sample: Option<String>,
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
            first: 0,
            step: 1,
            chain: 0,
            max_messages,
            ended: 0,
            awaited: senders,
            messages: 0,
            corrupt: 0,
            corrupt_sample: None,
            crossed: 0,
            crossed_sample: None,
        }
    }

    /// The log of a client that is to get the lines of the senders of its
    /// own channel only, as `plan` says.
    pub fn in_channel(mut self, plan: ChannelPlan) -> Self {
        let client = self.client;
        let senders = self.senders.len();
        if let (ChannelPlan::Split(n), Some(channel)) = (plan, plan.channel_of(client)) {
            // Client `i` is in channel `i % n`: its senders are `channel`,
            // `channel + n`, ...
            self.first = channel;
            self.step = n.max(1);
            let heard = senders.saturating_sub(channel).div_ceil(self.step);
            self.senders = vec![SenderTrack::default(); heard];
        }
        self.awaited = (0..senders)
            .filter(|&sender| plan.receives(client, sender))
            .count();
        self
    }

    /// The global number of the sender whose track is at `at`.
    fn sender_at(&self, at: usize) -> usize {
        self.first + at * self.step
    }

    /// Records a message; one from an unknown sender or with an impossible
    /// sequence number counts as corrupt.
    pub fn record(&mut self, sender: usize, stamp: Stamp) -> Option<Delivery> {
        if stamp.seq >= self.max_messages {
            return None;
        }
        let at = sender.checked_sub(self.first)?;
        if at % self.step != 0 {
            return None;
        }
        let track = self.senders.get_mut(at / self.step)?;
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

    /// Records a line from a channel this client is not in.
    pub fn record_crossed(&mut self, sample: impl FnOnce() -> String) {
        self.crossed += 1;
        if self.crossed_sample.is_none() {
            self.crossed_sample = Some(sample());
        }
    }

    /// Whether every awaited sender's last message has arrived.
    pub fn all_ended(&self) -> bool {
        self.ended >= self.awaited
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
    /// Lines of a channel the client is not in reached it.
    Crossed {
        client: usize,
        count: u64,
        sample: String,
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
            Problem::Crossed {
                client,
                count,
                sample,
            } => write!(
                f,
                "crossed: client {client} got {count} line(s) of a channel it is not in, e.g. \
                 {sample:?}"
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
/// sender `s` sent, and every client is to get them all.
pub fn verify(logs: &[ReceiverLog], sent: &[u32]) -> Vec<Problem> {
    verify_channels(logs, sent, ChannelPlan::Lobby)
}

/// The verdict over every client's log, each client to get the messages
/// of the senders of its channel (`plan`). Clients whose own record is
/// already wrong are left out of the order comparison, where they would
/// only repeat what was found.
pub fn verify_channels(logs: &[ReceiverLog], sent: &[u32], plan: ChannelPlan) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut clean: Vec<(Option<usize>, u64, usize)> = Vec::new();
    for log in logs {
        let before = problems.len();
        let (mut missing, mut missing_from, mut extra, mut backwards) = (0u64, 0usize, 0u64, 0u64);
        for (at, track) in log.senders.iter().enumerate() {
            let sender = log.sender_at(at);
            let expected = if plan.receives(log.client, sender) {
                u64::from(sent.get(sender).copied().unwrap_or(0))
            } else {
                0
            };
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
        if log.crossed > 0 {
            problems.push(Problem::Crossed {
                client: log.client,
                count: log.crossed,
                sample: log.crossed_sample.clone().unwrap_or_default(),
            });
        }
        if problems.len() == before {
            clean.push((plan.channel_of(log.client), log.chain, log.client));
        }
    }
    clean.sort_by_key(|&(channel, _, client)| (channel, client));
    for channel in clean.chunk_by(|a, b| a.0 == b.0) {
        let chains: Vec<(u64, usize)> = channel.iter().map(|&(_, c, client)| (c, client)).collect();
        problems.extend(compare_orders(&chains));
    }
    problems
}

/// Groups clean clients (of one channel) by their hash chain: one group
/// means one order.
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

    #[test]
    fn a_client_in_a_channel_keeps_tracks_for_its_channels_senders_only() {
        let plan = ChannelPlan::Split(20);
        // Client 3 hears senders 3, 23, ..., 983: 50 of 1000.
        let mut log = ReceiverLog::new(3, 1000, 10).in_channel(plan);
        assert_eq!(log.senders.len(), 50);
        for sender in (3..1000).step_by(20) {
            let seqs = if sender == 983 { 0..1 } else { 0..2 };
            for seq in seqs {
                log.record(sender, stamp(seq, seq == 1));
            }
        }
        assert_eq!(
            log.record(4, stamp(0, false)),
            None,
            "not a sender it hears"
        );
        let mut sent = vec![0; 1000];
        for sender in (3..1000).step_by(20) {
            sent[sender] = 2;
        }
        assert_eq!(
            verify_channels(&[log], &sent, plan),
            vec![Problem::Lost {
                client: 3,
                missing: 1,
                senders: 1
            }]
        );
    }

    #[test]
    fn with_channels_each_channel_has_its_own_order() {
        // Clients 0 and 2 in channel 0 (sender 0), 1 and 3 in channel 1
        // (sender 1); the two channels' orders are unrelated.
        let plan = ChannelPlan::Split(2);
        let log = |client: usize, order: &[(usize, u32)]| {
            let mut log = ReceiverLog::new(client, 2, 100).in_channel(plan);
            for &(sender, seq) in order {
                log.record(sender, stamp(seq, seq == 2));
            }
            log
        };
        let zero = [(0, 0), (0, 1), (0, 2)];
        let one = [(1, 0), (1, 1), (1, 2)];
        let logs = [log(0, &zero), log(1, &one), log(2, &zero), log(3, &one)];
        assert!(logs.iter().all(ReceiverLog::all_ended));
        assert_eq!(verify_channels(&logs, &[3, 3], plan), vec![]);
        assert!(
            !verify(&logs, &[3, 3]).is_empty(),
            "one room wants them all"
        );

        let mut crossed = log(2, &zero);
        crossed.record_crossed(|| "#bench1 x".into());
        let lost = log(3, &[(1, 0), (1, 2)]);
        let logs = [log(0, &zero), log(1, &one), crossed, lost];
        let problems = verify_channels(&logs, &[3, 3], plan);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(matches!(
            problems[0],
            Problem::Crossed {
                client: 2,
                count: 1,
                ..
            }
        ));
        assert!(matches!(
            problems[1],
            Problem::Lost {
                client: 3,
                missing: 1,
                ..
            }
        ));
    }
}
