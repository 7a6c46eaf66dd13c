//! When and how soon `chatroom connect` comes back after losing the
//! server: jittered exponential backoff, and which endings are final.
//!
//! The delay before attempt K is 0.5 s doubled K-1 times, at most 30 s,
//! times a random factor between 0.5 and 1.5, so that the participants of
//! a restarted server do not all come back in the same instant. After
//! [`MAX_ATTEMPTS`] failed attempts in a row (about 12 minutes) the client
//! gives up.
//!
//! Final, never retried: the user's own `/quit` or end of input, a TLS
//! alert or any TLS failure (a refused or revoked certificate, a server
//! certificate the CA did not sign, a tampered record: trying again would
//! meet the same refusal, or paper over an attack), and the server's
//! refusals that name the participant rather than the moment (kicked,
//! banned, revoked, denied, idle, a nickname it will never take).
//! Everything else is a lost connection: the server restarting (with or
//! without its `Server is shutting down` notice), a cut connection, a
//! nickname still taken by the session that was lost, a full server.

use std::time::Duration;

/// The first delay.
const FIRST_DELAY: Duration = Duration::from_millis(500);

/// The longest delay before jitter.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Attempts in a row before the client gives up.
pub(crate) const MAX_ATTEMPTS: u32 = 30;

/// How long one attempt (connection, handshake and joining) may take.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// The delay before attempt `attempt` (from 1) after a lost connection,
/// drawn at random: what every client that comes back waits, the terminal
/// client and the bench's `rejoin` scenario alike.
pub(crate) fn next_delay(attempt: u32) -> Duration {
    delay(attempt, super::dial::random_u64())
}

/// The delay before attempt `attempt` (from 1), given a random `sample`.
fn delay(attempt: u32, sample: u64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let base = FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
    // A factor in [0.5, 1.5), in thousandths.
    let factor = 500 + sample % 1000;
    base * u32::try_from(factor).unwrap_or(1000) / 1000
}

/// Whether an `ERROR <reason>` from the server ends the client for good.
pub(crate) fn is_final_refusal(reason: &str) -> bool {
    const FINAL: [&str; 14] = [
        "kicked",
        "banned",
        "you are banned",
        "certificate revoked",
        "access denied",
        "certificate refused",
        "your certificate's name",
        "a client certificate is required",
        "nickname must",
        "nickname is empty",
        "nickname is longer",
        "nickname may only",
        "disconnected: idle",
        "timed out waiting for a nickname",
    ];
    let reason = reason.trim_start().to_ascii_lowercase();
    FINAL.iter().any(|prefix| reason.starts_with(prefix))
        || (reason.starts_with("nickname \"") && reason.ends_with("is reserved"))
}

/// Whether a failed read, write or handshake is a TLS failure (an alert
/// from the server, or the client's own verdict), which is final.
pub(crate) fn is_tls_failure(err: &std::io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// The delay in seconds as told to the user: one decimal.
pub(crate) fn seconds(delay: Duration) -> String {
    format!("{:.1}", delay.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_thirty_seconds_within_half_either_way() {
        for sample in [0, 1, 499, 500, 999, u64::MAX] {
            for attempt in 1..=MAX_ATTEMPTS {
                let base = (0.5 * 2f64.powi(attempt as i32 - 1)).min(30.0);
                let got = delay(attempt, sample).as_secs_f64();
                assert!(got >= base * 0.5 - 1e-9, "{attempt} {sample}: {got}");
                assert!(got < base * 1.5, "{attempt} {sample}: {got}");
            }
        }
        assert_eq!(delay(1, 500), Duration::from_millis(500));
        assert_eq!(delay(2, 500), Duration::from_secs(1));
        assert_eq!(delay(30, 500), Duration::from_secs(30));
        assert_eq!(delay(1, 0), Duration::from_millis(250));
    }

    #[test]
    fn refusals_of_the_person_are_final_and_of_the_moment_are_not() {
        for reason in [
            "kicked by admin: spam",
            "banned",
            "certificate revoked",
            "access denied for \"mallory\"",
            "certificate refused: expired",
            "your certificate's name \"x y\" is not a valid nickname",
            "a client certificate is required",
            "nickname must be \"bob\" (from your certificate)",
            "nickname \"server\" is reserved",
            "disconnected: idle",
        ] {
            assert!(is_final_refusal(reason), "{reason}");
        }
        for reason in [
            "nickname \"alice\" is taken",
            "server full",
            "server is shutting down",
            "too many joins from your address: try again in 3 s",
            "too many connections from your address",
            "disconnected: too slow",
            "unknown command",
        ] {
            assert!(!is_final_refusal(reason), "{reason}");
        }
    }
}
