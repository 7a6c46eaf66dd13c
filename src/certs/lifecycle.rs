//! A certificate's validity as the server and the client judge it: not
//! valid yet or expired is an error naming the dates; running out within
//! [`WARN_DAYS`] is a warning with the days left.

use super::{days_left, format_date};
use anyhow::{Result, anyhow, bail};
use time::OffsetDateTime;

/// Warn when a certificate has fewer days left than this.
pub const WARN_DAYS: i64 = 30;

/// What a still-valid certificate's dates call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    Fine,
    /// Valid, but expires within [`WARN_DAYS`].
    ExpiresSoon {
        days_left: i64,
        not_after: OffsetDateTime,
    },
}

/// Judges `der` (a certificate) at `now`; `what` names it in messages
/// ("the server certificate server.pem").
pub fn check(der: &[u8], what: &str, now: OffsetDateTime) -> Result<Validity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("{what} is not valid X.509: {e}"))?;
    let from = cert.validity().not_before.to_datetime();
    let until = cert.validity().not_after.to_datetime();
    if now < from {
        bail!(
            "{what} is not valid yet: valid from {} to {} (check this machine's clock)",
            format_date(&from),
            format_date(&until)
        );
    }
    if now >= until {
        bail!(
            "{what} expired on {} ({} days ago; valid from {}): reissue it",
            format_date(&until),
            -days_left(until, now),
            format_date(&from)
        );
    }
    let days = days_left(until, now);
    Ok(if days < WARN_DAYS {
        Validity::ExpiresSoon {
            days_left: days,
            not_after: until,
        }
    } else {
        Validity::Fine
    })
}

impl Validity {
    /// The warning to print, if any.
    pub fn warning(&self, what: &str) -> Option<String> {
        match self {
            Validity::Fine => None,
            Validity::ExpiresSoon {
                days_left,
                not_after,
            } => Some(format!(
                "{what} expires in {days_left} days ({}): reissue it soon",
                format_date(not_after)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn cert(from: OffsetDateTime, until: OffsetDateTime) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("p");
        params.not_before = from;
        params.not_after = until;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn dates_decide_refusal_warning_or_nothing() {
        let now = OffsetDateTime::now_utc();
        let day = Duration::days(1);
        let fine = cert(now - day, now + 100 * day);
        assert_eq!(check(&fine, "it", now).expect("valid"), Validity::Fine);

        let soon = cert(now - day, now + 10 * day + Duration::hours(1));
        let validity = check(&soon, "the server certificate", now).expect("valid");
        let warning = validity
            .warning("the server certificate")
            .expect("a warning");
        assert!(
            warning.starts_with("the server certificate expires in 10 days"),
            "{warning}"
        );

        let expired = cert(now - 10 * day, now - 3 * day);
        let err = check(&expired, "x.pem", now).expect_err("expired");
        assert!(err.to_string().contains("x.pem expired on"), "{err}");
        assert!(err.to_string().contains("3 days ago"), "{err}");

        let early = cert(now + 2 * day, now + 30 * day);
        let err = check(&early, "x.pem", now).expect_err("not valid yet");
        assert!(err.to_string().contains("x.pem is not valid yet"), "{err}");
        assert!(
            err.to_string().contains(&format_date(&(now + 2 * day))),
            "{err}"
        );
    }
}
