//! The message rate limit: a token bucket, per participant or (see
//! [`per_address`](crate::server::per_address)) shared by every connection from
//! one address.
//!
//! A participant over its rate is not dropped and loses nothing: its
//! session stops reading its socket until a token is due, so TCP pushes back
//! on the sender alone while everybody else carries on.

use std::time::Duration;
use tokio::time::Instant;

/// Sustained rate and burst size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second, sustained.
    pub per_second: f64,
    /// Messages that may be sent at once after a quiet spell.
    pub burst: u32,
}

/// The default rate: 10 lines a second, 20 at once after a quiet spell.
pub const DEFAULT_RATE: RateLimit = RateLimit {
    per_second: 10.0,
    burst: 20,
};

impl Default for RateLimit {
    fn default() -> Self {
        DEFAULT_RATE
    }
}

/// `RATE/BURST`, as [`FromStr`](std::str::FromStr) reads it.
impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.per_second, self.burst)
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// `off` is handled by the caller; this parses `RATE` or `RATE/BURST`,
    /// for example `10` or `10/20`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rate, burst) = match s.split_once('/') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (s, None),
        };
        let per_second: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: expected RATE or RATE/BURST, e.g. 10/20, or off"))?;
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!("{s:?}: the rate must be a positive number"));
        }
        let burst = match burst {
            Some(b) => b
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| format!("{s:?}: the burst must be a whole number of at least 1"))?,
            None => (per_second * 2.0).ceil().max(1.0) as u32,
        };
        Ok(RateLimit { per_second, burst })
    }
}

/// One participant's bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    /// Adds the tokens due since the last look, up to the burst.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
    }

    /// Takes `n` tokens if the bucket holds them now, and otherwise takes
    /// nothing and says how long until it will. Never goes into debt, so
    /// whatever takes from one bucket gets at most the burst plus the rate
    /// over time, all together.
    pub fn try_take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(wait_for((n - self.tokens) / self.limit.per_second))
        }
    }

    /// Gives back `n` tokens taken for something that did not happen.
    pub fn give_back(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + n).min(f64::from(self.limit.burst));
    }

    /// Whether the bucket is full again at `now`: whoever used it has been
    /// quiet long enough for it to be forgotten.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.limit.per_second >= f64::from(self.limit.burst)
    }

    /// Spends a token for one message. Returns how long to wait before the
    /// next message may be read, or `None` if it may be read at once.
    pub fn spend(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 1.0 {
            None
        } else {
            Some(wait_for((1.0 - self.tokens) / self.limit.per_second))
        }
    }
}

/// The longest wait a bucket ever asks for: a day. Longer would mean a rate
/// no setting allows, and an unbounded one would overflow the clock.
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// `seconds` as a wait, within [`MAX_WAIT`] whatever the arithmetic gave
/// (a NaN or an infinity included).
fn wait_for(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds)
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                per_second: 10.0,
                burst: 3,
            },
            start,
        );
        assert_eq!(bucket.spend(start), None);
        assert_eq!(bucket.spend(start), None);
        // The third message empties the bucket: wait one token's time.
        let wait = bucket.spend(start).expect("must wait");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // After that wait one more message passes, and then waits again.
        let later = start + wait;
        assert!(bucket.spend(later).is_some());
    }

    #[test]
    fn a_vanishing_rate_waits_long_but_never_overflows() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                per_second: 1e-300,
                burst: 1,
            },
            start,
        );
        let wait = bucket.spend(start).expect("must wait");
        assert_eq!(wait, MAX_WAIT);
        assert!(start.checked_add(wait).is_some());
    }

    #[test]
    fn try_take_never_goes_into_debt() {
        let start = Instant::now();
        let limit = RateLimit {
            per_second: 2.0,
            burst: 3,
        };
        let mut bucket = TokenBucket::new(limit, start);
        assert_eq!(bucket.try_take(2.0, start), Ok(()));
        let wait = bucket.try_take(2.0, start).expect_err("one token left");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert_eq!(bucket.try_take(1.0, start), Ok(()));
        bucket.give_back(1.0, start);
        assert_eq!(bucket.try_take(1.0, start), Ok(()));
        assert!(!bucket.is_full(start));
        assert!(bucket.is_full(start + Duration::from_millis(1500)));
    }

    #[test]
    fn parses_settings() {
        assert_eq!(
            "10/20".parse::<RateLimit>(),
            Ok(RateLimit {
                per_second: 10.0,
                burst: 20
            })
        );
        assert_eq!("5".parse::<RateLimit>().map(|r| r.burst), Ok(10));
        assert!("0".parse::<RateLimit>().is_err());
        assert!("x/3".parse::<RateLimit>().is_err());
        assert!("3/0".parse::<RateLimit>().is_err());
        for limit in [DEFAULT_RATE, "0.5/3".parse().expect("a rate")] {
            assert_eq!(limit.to_string().parse::<RateLimit>(), Ok(limit));
        }
        assert_eq!(DEFAULT_RATE.to_string(), "10/20");
    }
}
