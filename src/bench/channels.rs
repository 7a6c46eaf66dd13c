//! How a run's clients use channels (`--channels N`, `--channels-each K`):
//! which channels each joins, where its lines go, and which lines each is
//! to receive.
//!
//! The bench's channels are named `#bench0`, `#bench1`, ...; a channel's
//! lines reach its members with its name and a space in front.

/// What the bench's channels are called: this, then the channel's number.
const NAME_PREFIX: &str = "#bench";

/// How a run's clients use channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelPlan {
    /// Everybody in `#lobby` only: one room, as the lab's protocol.
    #[default]
    Lobby,
    /// `--channels N`: client `i` joins channel `i % N` and talks there;
    /// each line is to reach the members of its channel and nobody else.
    Split(usize),
    /// `--channels-each K`: every client joins the same `K` channels, then
    /// goes back to `#lobby`, where its lines go.
    Each(usize),
}

impl ChannelPlan {
    /// The channels client `client` joins after its join, in order; the
    /// last is its current one.
    pub fn to_join(self, client: usize) -> Vec<String> {
        match self {
            ChannelPlan::Lobby => Vec::new(),
            ChannelPlan::Split(n) => vec![name(client % n.max(1))],
            ChannelPlan::Each(0) => Vec::new(),
            ChannelPlan::Each(k) => (0..k)
                .map(name)
                .chain(std::iter::once(crate::protocol::channels::LOBBY.to_owned()))
                .collect(),
        }
    }

    /// The channel client `client` talks and listens in (`None`: `#lobby`).
    pub fn channel_of(self, client: usize) -> Option<usize> {
        match self {
            ChannelPlan::Split(n) => Some(client % n.max(1)),
            ChannelPlan::Lobby | ChannelPlan::Each(_) => None,
        }
    }

    /// Whether client `client` may hear lines of channel `channel` (`None`:
    /// `#lobby`, which every participant is in).
    pub fn may_hear(self, client: usize, channel: Option<usize>) -> bool {
        match (self, channel) {
            (_, None) => true,
            (ChannelPlan::Split(_), Some(_)) => channel == self.channel_of(client),
            (ChannelPlan::Each(k), Some(channel)) => channel < k,
            (ChannelPlan::Lobby, Some(_)) => false,
        }
    }

    /// Whether `receiver` is to get the lines of `sender`.
    pub fn receives(self, receiver: usize, sender: usize) -> bool {
        self.channel_of(receiver) == self.channel_of(sender)
    }

    /// How many of the clients `0..clients` receive the lines of `sender`.
    pub fn audience(self, sender: usize, clients: usize) -> u64 {
        match self {
            ChannelPlan::Split(n) => {
                let n = n.max(1);
                let channel = sender % n;
                // Clients channel, channel + n, channel + 2n, ... below `clients`.
                clients.saturating_sub(channel).div_ceil(n) as u64
            }
            ChannelPlan::Lobby | ChannelPlan::Each(_) => clients as u64,
        }
    }
}

/// The name of the bench's channel number `k`.
pub fn name(k: usize) -> String {
    format!("{NAME_PREFIX}{k}")
}

/// A line as a channel member receives it, split: the channel's number if
/// it starts with one of the bench's channel names (`None` for `#lobby`'s
/// lines, which have no prefix), and the rest. `None` for a line from a
/// channel that is not one of the bench's.
pub fn split_prefix(line: &[u8]) -> Option<(Option<usize>, &[u8])> {
    if line.first() != Some(&b'#') {
        return Some((None, line));
    }
    // Read digit by digit: this runs for every line a client receives.
    let digits = line.strip_prefix(NAME_PREFIX.as_bytes())?;
    let end = digits.iter().position(|&b| !b.is_ascii_digit())?;
    if end == 0 || digits[end] != b' ' {
        return None;
    }
    let number = digits[..end].iter().try_fold(0usize, |number, &digit| {
        number
            .checked_mul(10)?
            .checked_add(usize::from(digit - b'0'))
    })?;
    Some((Some(number), &digits[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_puts_each_client_in_one_channel() {
        let plan = ChannelPlan::Split(4);
        assert_eq!(plan.to_join(6), vec!["#bench2".to_owned()]);
        assert_eq!(plan.channel_of(6), Some(2));
        assert!(plan.receives(6, 2));
        assert!(!plan.receives(6, 3));
        // 10 clients in 4 channels: 3, 3, 2, 2.
        let sizes: Vec<u64> = (0..4).map(|s| plan.audience(s, 10)).collect();
        assert_eq!(sizes, vec![3, 3, 2, 2]);
        assert_eq!(ChannelPlan::Lobby.audience(3, 10), 10);
    }

    #[test]
    fn each_joins_every_channel_and_goes_back_to_the_lobby() {
        let plan = ChannelPlan::Each(2);
        assert_eq!(plan.to_join(5), vec!["#bench0", "#bench1", "#lobby"]);
        assert!(plan.receives(5, 0));
        assert!(ChannelPlan::Each(0).to_join(5).is_empty());
    }

    #[test]
    fn reads_the_channel_of_a_line() {
        assert_eq!(split_prefix(b"a: hi"), Some((None, &b"a: hi"[..])));
        assert_eq!(
            split_prefix(b"#bench12 a: hi"),
            Some((Some(12), &b"a: hi"[..]))
        );
        assert_eq!(split_prefix(b"#ops a: hi"), None);
        assert_eq!(split_prefix(b"#bench"), None);
        assert_eq!(split_prefix(b"#bench a: hi"), None);
        assert_eq!(split_prefix(b"#bench1x a: hi"), None);
        assert_eq!(split_prefix(b"#bench99999999999999999999 a: hi"), None);
    }
}
