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
