//! Limits per source address, shared by all of that address's connections
//! and outliving any one of them: connection attempts per minute,
//! connections at once, joins per minute, and the message rate.
//!
//! A per-connection limit is no limit for a client that reconnects: each
//! new connection used to bring a fresh burst of messages, and its
//! `joined!` and `left!` lines were free. Here the state belongs to the
//! address (an IPv4 address, or an IPv6 /64, which one host or one
//! customer of a provider usually gets whole), so reconnecting buys
//! nothing:
//!
//! * a connection attempt beyond `connects_per_minute` is closed as soon as
//!   it is accepted, before any TLS work;
//! * at most `max_per_ip` connections are open at once;
//! * a join beyond `joins_per_minute` is refused;
//! * every message, and each join's `joined!` and `left!` lines (both paid
//!   when it joins), comes out of one token bucket per address.
//!
//! Addresses in the exemption list (by default the loopback ranges, so that
//! the lab on one machine, the tests and the benchmark work) have none of
//! this: each of their connections gets its own message bucket, as before.
//!
//! The table is bounded: an address's entry goes when no connection holds
//! it and its buckets have filled up again (it then holds nothing worth
//! remembering), swept whenever the table has doubled since the last sweep;
//! and it never holds more than [`MAX_SOURCES`] entries, beyond which new
//! addresses are refused until old ones expire. An attacker cycling through
//! addresses costs a bounded amount of memory.

use crate::server::rate::{RateLimit, TokenBucket};
use crate::sync::lock;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Most addresses remembered at once.
pub const MAX_SOURCES: usize = 100_000;

/// The table is swept when it reaches this size, and then whenever it has
/// doubled since the last sweep.
const FIRST_SWEEP: usize = 1024;

/// What a join costs in messages: its `joined!` line and, paid in advance,
/// its `left!` line.
const JOIN_LINES: f64 = 2.0;

/// The per-address settings.
#[derive(Debug, Clone)]
pub struct AddressLimits {
    /// Addresses and networks with no per-address limits.
    pub exempt: Vec<IpNet>,
    /// Most connections open at once from one address.
    pub max_connections: usize,
    /// Connection attempts per minute (and at once) from one address.
    pub connects_per_minute: u32,
    /// Joins per minute (and at once) from one address.
    pub joins_per_minute: u32,
    /// The message rate of one address, all its connections together;
    /// `None` for none.
    pub messages: Option<RateLimit>,
}

/// The default most connections at once from one address.
pub const DEFAULT_MAX_PER_IP: usize = 16;
/// The default connection attempts per minute from one address.
pub const DEFAULT_CONNECTS_PER_MINUTE: u32 = 60;
/// The default joins per minute from one address.
pub const DEFAULT_JOINS_PER_MINUTE: u32 = 10;

impl Default for AddressLimits {
    fn default() -> Self {
        AddressLimits {
            exempt: default_exempt(),
            max_connections: DEFAULT_MAX_PER_IP,
            connects_per_minute: DEFAULT_CONNECTS_PER_MINUTE,
            joins_per_minute: DEFAULT_JOINS_PER_MINUTE,
            messages: Some(RateLimit::default()),
        }
    }
}

/// The loopback ranges, exempt by default: 127.0.0.0/8 and ::1/128.
pub fn default_exempt() -> Vec<IpNet> {
    vec![
        IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ]
}

/// Parses one `--exempt` value: a network in CIDR notation (`10.0.0.0/8`,
/// `fd00::/8`), a single address, or `none`.
pub fn parse_exempt(s: &str) -> Result<Option<IpNet>, String> {
    let s = s.trim();
    if s == "none" {
        return Ok(None);
    }
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(Some(net.trunc()));
    }
    s.parse::<IpAddr>()
        .map(|ip| Some(IpNet::from(ip)))
        .map_err(|_| format!("{s:?}: expected an address, a network like 10.0.0.0/8, or none"))
}

/// The key an address's state is kept under: the IPv4 address, or the /64
/// of an IPv6 one (an IPv4-mapped IPv6 address counts as its IPv4 address).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// Why a connection was not admitted from its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the connection-attempt rate: close at once, say nothing.
    TooManyAttempts,
    /// Too many connections open from this address: tell it.
    TooManyConnections,
    /// The table of addresses is full: close at once, say nothing.
    TooManySources,
}

/// Every address's state.
#[derive(Debug)]
pub struct Sources {
    limits: AddressLimits,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<IpAddr, Arc<Mutex<Source>>>,
    sweep_at: usize,
    /// While the table is full of live entries, it is swept at most once a
    /// second, so that a flood of new addresses cannot make every accept
    /// walk the whole table.
    no_sweep_before: Instant,
}

/// One address's state.
#[derive(Debug)]
struct Source {
    open: usize,
    connects: TokenBucket,
    joins: TokenBucket,
    messages: Option<TokenBucket>,
}

impl Source {
    fn new(limits: &AddressLimits, now: Instant) -> Source {
        Source {
            open: 0,
            connects: TokenBucket::new(per_minute(limits.connects_per_minute), now),
            joins: TokenBucket::new(per_minute(limits.joins_per_minute), now),
            messages: limits.messages.map(|rate| TokenBucket::new(rate, now)),
        }
    }

    /// Holds nothing worth remembering at `now`.
    fn is_idle(&self, now: Instant) -> bool {
        self.open == 0
            && self.connects.is_full(now)
            && self.joins.is_full(now)
            && self.messages.as_ref().is_none_or(|m| m.is_full(now))
    }
}

fn per_minute(n: u32) -> RateLimit {
    RateLimit {
        per_second: f64::from(n.max(1)) / 60.0,
        burst: n.max(1),
    }
}

impl Sources {
    pub fn new(limits: AddressLimits) -> Sources {
        Sources {
            limits,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                sweep_at: FIRST_SWEEP,
                no_sweep_before: Instant::now(),
            }),
        }
    }

    /// Whether `ip` is exempt from every per-address limit.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.limits.exempt.iter().any(|net| net.contains(&ip))
    }

    /// How many addresses are remembered.
    pub fn len(&self) -> usize {
        lock(&self.table).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts a connection attempt from `ip` and, if it may go on, opens a
    /// connection for it: `Ok(None)` for an exempt address, `Ok(Some)` for
    /// a counted one (uncounted when the handle is dropped).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Option<SourceHandle>, Refusal> {
        if self.is_exempt(ip) {
            return Ok(None);
        }
        let key = source_key(ip);
        let source = {
            let mut table = lock(&self.table);
            match table.entries.get(&key) {
                Some(source) => source.clone(),
                None => {
                    if table.entries.len() >= table.sweep_at && now >= table.no_sweep_before {
                        table.sweep(now);
                    }
                    if table.entries.len() >= MAX_SOURCES {
                        return Err(Refusal::TooManySources);
                    }
                    let source = Arc::new(Mutex::new(Source::new(&self.limits, now)));
                    table.entries.insert(key, source.clone());
                    source
                }
            }
        };
        {
            let mut state = lock(&source);
            if state.connects.try_take(1.0, now).is_err() {
                return Err(Refusal::TooManyAttempts);
            }
            if state.open >= self.limits.max_connections {
                return Err(Refusal::TooManyConnections);
            }
            state.open += 1;
        }
        Ok(Some(SourceHandle { source }))
    }
}

impl Table {
    /// Forgets the idle addresses, and sets the size of the next sweep.
    fn sweep(&mut self, now: Instant) {
        self.entries
            .retain(|_, source| Arc::strong_count(source) > 1 || !lock(source).is_idle(now));
        self.sweep_at = (self.entries.len() * 2).clamp(FIRST_SWEEP, MAX_SOURCES);
        if self.entries.len() >= MAX_SOURCES {
            self.no_sweep_before = now + Duration::from_secs(1);
        }
    }
}

/// One open connection from a counted address: its share of the address's
/// limits. Dropping it closes the connection's count.
#[derive(Debug)]
pub struct SourceHandle {
    source: Arc<Mutex<Source>>,
}

impl SourceHandle {
    /// Takes a join, and the two lines it puts on the room (`joined!` and,
    /// later, `left!`), from the address's allowances; `Err` with how long
    /// until it could if they are spent.
    pub fn try_join(&self, now: Instant) -> Result<(), Duration> {
        let mut state = lock(&self.source);
        let Source {
            joins, messages, ..
        } = &mut *state;
        joins.try_take(1.0, now)?;
        if let Some(messages) = messages
            && let Err(wait) = messages.try_take(JOIN_LINES, now)
        {
            joins.give_back(1.0, now);
            return Err(wait);
        }
        Ok(())
    }

    /// Gives back what [`SourceHandle::try_join`] took, for a join that
    /// did not happen (the nickname was taken, say).
    pub fn undo_join(&self, now: Instant) {
        let mut state = lock(&self.source);
        state.joins.give_back(1.0, now);
        if let Some(messages) = state.messages.as_mut() {
            messages.give_back(JOIN_LINES, now);
        }
    }

    /// Gives back a message token taken and not used.
    fn give_back_message(&self, now: Instant) {
        if let Some(messages) = lock(&self.source).messages.as_mut() {
            messages.give_back(1.0, now);
        }
    }

    /// Takes one message token from the address's bucket if there is one
    /// now; `Err` with how long until there is.
    pub fn try_message(&self, now: Instant) -> Result<(), Duration> {
        match lock(&self.source).messages.as_mut() {
            Some(messages) => messages.try_take(1.0, now),
            None => Ok(()),
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        let mut state = lock(&self.source);
        state.open = state.open.saturating_sub(1);
    }
}

/// A session's message pace: its own bucket (an exempt address), its
/// address's shared one, or none.
///
/// With the shared bucket, a session holds a token before it reads a line
/// (taken when it starts, and again after each message), so that however
/// many connections an address has, the lines they put on the room never
/// exceed what the one bucket allows. A token still held when the session
/// ends goes back to the bucket.
#[derive(Debug)]
pub enum Pace<'a> {
    Off,
    Own(TokenBucket),
    Shared {
        source: &'a SourceHandle,
        /// Whether this session holds the token for its next line.
        holding: bool,
    },
}

impl<'a> Pace<'a> {
    pub fn new(rate: Option<RateLimit>, source: Option<&'a SourceHandle>, now: Instant) -> Self {
        match (source, rate) {
            (Some(source), Some(_)) => Pace::Shared {
                source,
                holding: false,
            },
            (None, Some(rate)) => Pace::Own(TokenBucket::new(rate, now)),
            (_, None) => Pace::Off,
        }
    }

    /// Before the first line: how long to wait until one may be read.
    pub fn start(&mut self, now: Instant) -> Option<Duration> {
        self.resume(now)
    }

    /// After a line: how long to wait before the next may be read.
    pub fn spend(&mut self, now: Instant) -> Option<Duration> {
        match self {
            Pace::Off => None,
            Pace::Own(bucket) => bucket.spend(now),
            Pace::Shared { holding, .. } => {
                // The message used the token held for it.
                *holding = false;
                self.resume(now)
            }
        }
    }

    /// At the end of a wait: how long to wait still (another connection
    /// from the same address may have taken the token that was due).
    pub fn resume(&mut self, now: Instant) -> Option<Duration> {
        match self {
            Pace::Off | Pace::Own(_) => None,
            Pace::Shared { holding: true, .. } => None,
            Pace::Shared { source, holding } => match source.try_message(now) {
                Ok(()) => {
                    *holding = true;
                    None
                }
                Err(wait) => Some(wait),
            },
        }
    }
}

impl Drop for Pace<'_> {
    fn drop(&mut self) {
        if let Pace::Shared {
            source,
            holding: true,
        } = self
        {
            source.give_back_message(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AddressLimits {
        AddressLimits {
            exempt: vec!["127.0.0.1/32".parse().expect("net")],
            max_connections: 2,
            connects_per_minute: 3,
            joins_per_minute: 2,
            messages: Some(RateLimit {
                per_second: 1.0,
                burst: 5,
            }),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn keys_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(source_key(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_key(ip("2001:db8:1:2:ffff::9")),
            source_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(source_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn exemptions_parse_and_apply() {
        assert_eq!(parse_exempt("none"), Ok(None));
        assert_eq!(
            parse_exempt("10.1.2.3/8"),
            Ok(Some("10.0.0.0/8".parse().expect("net")))
        );
        assert_eq!(
            parse_exempt("10.1.2.3"),
            Ok(Some("10.1.2.3/32".parse().expect("net")))
        );
        assert!(parse_exempt("10.0.0.0/33").is_err());
        assert!(parse_exempt("everyone").is_err());
        let sources = Sources::new(AddressLimits::default());
        assert!(sources.is_exempt(ip("127.0.0.2")));
        assert!(sources.is_exempt(ip("::1")));
        assert!(sources.is_exempt(ip("::ffff:127.0.0.1")));
        assert!(!sources.is_exempt(ip("192.168.1.1")));
        let sources = Sources::new(limits());
        assert!(sources.is_exempt(ip("127.0.0.1")));
        assert!(!sources.is_exempt(ip("127.0.0.2")));
    }

    #[test]
    fn attempts_connections_joins_and_messages_are_shared_by_an_address() {
        let now = Instant::now();
        let sources = Sources::new(limits());
        assert!(matches!(sources.admit(ip("127.0.0.1"), now), Ok(None)));
        let a = sources
            .admit(ip("10.0.0.1"), now)
            .expect("first")
            .expect("counted");
        let b = sources
            .admit(ip("10.0.0.1"), now)
            .expect("second")
            .expect("counted");
        assert_eq!(
            sources.admit(ip("10.0.0.1"), now).unwrap_err(),
            Refusal::TooManyConnections
        );
        drop(b);
        // The third attempt of the minute was spent on the refused one.
        assert_eq!(
            sources.admit(ip("10.0.0.1"), now).unwrap_err(),
            Refusal::TooManyAttempts
        );
        let later = now + Duration::from_secs(20);
        let b = sources
            .admit(ip("10.0.0.1"), later)
            .expect("a minute's share later")
            .expect("counted");

        // Two joins a minute, each paying two lines of the five-line burst.
        assert_eq!(a.try_join(later), Ok(()));
        assert_eq!(b.try_join(later), Ok(()));
        assert!(a.try_join(later).is_err());
        // One message token left, shared by both connections.
        assert_eq!(b.try_message(later), Ok(()));
        let wait = a.try_message(later).expect_err("bucket empty");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        // A join that did not happen gives its share back.
        b.undo_join(later);
        assert_eq!(a.try_message(later), Ok(()));
    }

    #[test]
    fn a_shared_pace_never_lets_an_address_exceed_its_bucket() {
        let now = Instant::now();
        let sources = Sources::new(limits());
        let a = sources
            .admit(ip("10.0.0.9"), now)
            .expect("a")
            .expect("counted");
        let b = sources
            .admit(ip("10.0.0.9"), now)
            .expect("b")
            .expect("counted");
        let rate = limits().messages;
        // Two sessions that always have a line to send, run as the chat
        // loop runs them: read while not paused, spend after each message,
        // try again when the pause is over.
        let mut sessions = [&a, &b].map(|source| {
            let mut pace = Pace::new(rate, Some(source), now);
            let paused_until = pace.start(now).map(|wait| now + wait);
            (pace, paused_until)
        });
        let mut published = 0u32;
        let mut t = now;
        for _ in 0..400 {
            t += Duration::from_millis(25);
            for (pace, paused_until) in &mut sessions {
                if paused_until.is_some_and(|until| t >= until) {
                    *paused_until = pace.resume(t).map(|wait| t + wait);
                }
                if paused_until.is_none() {
                    published += 1;
                    *paused_until = pace.spend(t).map(|wait| t + wait);
                }
            }
        }
        let elapsed = (t - now).as_secs_f64();
        assert!(
            f64::from(published) <= 5.0 + elapsed,
            "{published} lines in {elapsed} s"
        );
        // And the address does get its rate: nothing is wasted either.
        assert!(
            f64::from(published) >= elapsed - 1.0,
            "{published} in {elapsed} s"
        );
    }

    #[test]
    fn a_token_held_by_a_session_that_ends_goes_back() {
        let now = Instant::now();
        let sources = Sources::new(limits());
        let a = sources
            .admit(ip("10.0.0.7"), now)
            .expect("a")
            .expect("counted");
        let rate = limits().messages;
        // Five tokens: one held by the first session, four taken here.
        let mut first = Pace::new(rate, Some(&a), now);
        assert_eq!(first.start(now), None);
        for _ in 0..4 {
            assert_eq!(a.try_message(now), Ok(()));
        }
        assert!(a.try_message(now).is_err());
        drop(first);
        assert_eq!(a.try_message(now), Ok(()));
    }

    #[test]
    fn the_table_forgets_idle_addresses_and_stays_bounded() {
        let start = Instant::now();
        let sources = Sources::new(limits());
        // An attacker cycling through addresses, one attempt each, faster
        // than entries expire (each holds a spent attempt for 20 s).
        let mut t = start;
        let mut refused = 0;
        for n in 0..300_000u32 {
            if n % 10_000 == 0 {
                t += Duration::from_secs(1);
            }
            let addr = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
            if matches!(sources.admit(addr, t), Err(Refusal::TooManySources)) {
                refused += 1;
            }
            assert!(sources.len() <= MAX_SOURCES);
        }
        assert!(refused > 0);
        // Once their buckets have filled up again (20 s for one attempt of
        // three a minute), the attacker's addresses are forgotten and new
        // ones are admitted; a connection still open keeps its address.
        let t = t + Duration::from_secs(21);
        let held = sources
            .admit(ip("192.0.2.1"), t)
            .expect("admitted")
            .expect("counted");
        assert!(sources.len() < MAX_SOURCES / 10, "{}", sources.len());
        let much_later = t + Duration::from_secs(3600);
        let _ = sources.admit(ip("192.0.2.2"), much_later);
        let mut table = lock(&sources.table);
        table.sweep(much_later);
        assert_eq!(
            table.entries.len(),
            2,
            "only the open connection's address and the newest remain"
        );
        drop(table);
        drop(held);
    }
}
