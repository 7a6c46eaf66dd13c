//! The per-address limits and the bounded table of addresses.

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
    // A full table makes room by evicting the addresses seen least
    // recently: new addresses are never locked out.
    assert_eq!(refused, 0);
    // Once their buckets have filled up again (20 s for one attempt of
    // three a minute), the attacker's addresses are forgotten at the
    // next sweep (when the table, just short of full after the last
    // eviction, reaches its size again) and new ones are admitted; a
    // connection still open keeps its address.
    let t = t + Duration::from_secs(21);
    let held = sources
        .admit(ip("192.0.2.1"), t)
        .expect("admitted")
        .expect("counted");
    let mut newcomers = 0u32;
    while sources.len() >= MAX_SOURCES / 10 && newcomers as usize <= MAX_SOURCES {
        let addr = IpAddr::from((0xac10_0000 + newcomers).to_be_bytes());
        sources.admit(addr, t).expect("admitted");
        newcomers += 1;
    }
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

#[test]
fn a_full_table_evicts_the_least_recently_seen_address_without_a_connection() {
    let t0 = Instant::now();
    let at = |secs: u64| t0 + Duration::from_secs(secs);
    let sources = Sources::with_capacity(limits(), 4);
    let has = |addr: &str| lock(&sources.table).entries.contains_key(&ip(addr));
    let admit = |addr: &str, t| {
        sources
            .admit(ip(addr), t)
            .expect("admitted")
            .expect("counted")
    };

    // Four addresses; the first keeps its connection open.
    let held = admit("10.0.0.1", at(0));
    for (n, addr) in ["10.0.0.2", "10.0.0.3", "10.0.0.4"].iter().enumerate() {
        drop(admit(addr, at(1 + n as u64)));
    }
    // .2 is seen again, so .3 is now the least recently seen.
    drop(admit("10.0.0.2", at(4)));
    assert_eq!(sources.len(), 4);

    // Full, nothing idle yet (each spent a connection attempt): the
    // newcomer takes the place of the least recently seen address that
    // holds no connection, never of one that does.
    let fifth = admit("10.0.0.5", at(5));
    assert_eq!(sources.len(), 4);
    assert!(!has("10.0.0.3"), "the least recently seen goes");
    assert!(has("10.0.0.1"), "an address with a connection stays");
    assert!(has("10.0.0.2") && has("10.0.0.4") && has("10.0.0.5"));

    // Every entry holding a connection: the refusal stays.
    let second = admit("10.0.0.2", at(6));
    let fourth = admit("10.0.0.4", at(7));
    assert_eq!(
        sources.admit(ip("10.0.0.6"), at(8)).unwrap_err(),
        Refusal::TooManySources
    );
    assert!(has("10.0.0.1") && has("10.0.0.2") && has("10.0.0.4") && has("10.0.0.5"));

    // One connection closes: its address makes room (after the pause
    // that keeps a table full of connections from being scanned on
    // every attempt).
    drop(fourth);
    let sixth = admit("10.0.0.6", at(10));
    assert!(!has("10.0.0.4") && has("10.0.0.6"));
    drop((held, fifth, second, sixth));
}
