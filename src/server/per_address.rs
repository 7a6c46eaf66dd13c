//! Limits per source address, shared by all of that address's connections
//! and outliving any one of them: connection attempts per minute,
//! connections at once, joins per minute, and the message rate.
//!
//! A per-connection limit is no limit for a client that reconnects: each
//! new connection would bring a fresh burst of messages, and its `joined!`
//! and `left!` lines would be free. Here the state belongs to the
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
//! and it never holds more than [`MAX_SOURCES`] entries. When it is full, the
//! addresses seen least recently that hold no connection make room, a
//! batch at a time (one scan of the table per batch, so a flood of new
//! addresses costs a bounded amount of work per admission, not a scan
//! each); only when every entry holds a connection are new addresses
//! refused. An attacker cycling through addresses costs a bounded amount
//! of memory, and cannot lock new addresses out by filling the table.

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

/// When the table is full, one in this many of its entries is evicted at
/// once (the least recently seen that hold no connection), so that the
/// scan that finds them runs once per that many new addresses.
const EVICT_SHARE: usize = 16;

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
    /// Most entries at once ([`MAX_SOURCES`]; smaller in tests).
    capacity: usize,
    sweep_at: usize,
    /// While every entry of a full table holds a connection, it is swept at
    /// most once a second, so that a flood of new addresses cannot make
    /// every accept walk the whole table.
    no_sweep_before: Instant,
}

/// One address's state.
#[derive(Debug)]
struct Source {
    open: usize,
    /// When a connection from it was last admitted or closed: the least
    /// recently seen go first when the table is full.
    last_seen: Instant,
    connects: TokenBucket,
    joins: TokenBucket,
    messages: Option<TokenBucket>,
}

impl Source {
    fn new(limits: &AddressLimits, now: Instant) -> Source {
        Source {
            open: 0,
            last_seen: now,
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
        Self::with_capacity(limits, MAX_SOURCES)
    }

    /// [`Sources::new`], remembering at most `capacity` addresses.
    fn with_capacity(limits: AddressLimits, capacity: usize) -> Sources {
        Sources {
            limits,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                capacity,
                sweep_at: FIRST_SWEEP.min(capacity),
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
                    if table.entries.len() >= table.capacity {
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
            state.last_seen = now;
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
    /// Forgets the idle addresses and, if the table is still full, the
    /// least recently seen that hold no connection; sets the size of the
    /// next sweep. One pass over the table does both.
    fn sweep(&mut self, now: Instant) {
        // Entries no connection holds (a handle, or an admission under way,
        // holds another reference), by when they were last seen.
        let mut unheld: Vec<(Instant, IpAddr)> = Vec::new();
        self.entries.retain(|key, source| {
            if Arc::strong_count(source) > 1 {
                return true;
            }
            let state = lock(source);
            if state.is_idle(now) {
                return false;
            }
            unheld.push((state.last_seen, *key));
            true
        });
        if self.entries.len() >= self.capacity {
            self.evict_least_recent(unheld);
        }
        self.sweep_at =
            (self.entries.len() * 2).clamp(FIRST_SWEEP.min(self.capacity), self.capacity);
        if self.entries.len() >= self.capacity {
            self.no_sweep_before = now + Duration::from_secs(1);
        }
    }

    /// Evicts the [`EVICT_SHARE`]th part of the table (at least one entry):
    /// the least recently seen of `unheld`.
    fn evict_least_recent(&mut self, mut unheld: Vec<(Instant, IpAddr)>) {
        let batch = (self.capacity / EVICT_SHARE).max(1);
        if unheld.len() > batch {
            unheld.select_nth_unstable(batch - 1);
            unheld.truncate(batch);
        }
        for (_, key) in unheld {
            self.entries.remove(&key);
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
        state.last_seen = state.last_seen.max(Instant::now());
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
mod tests;
