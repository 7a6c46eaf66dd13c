//! What an admitted connection holds against the server's limits, and how
//! many sockets the open-files limit leaves room for.
//!
//! Two counts are kept apart. A connection's **socket** counts from accept
//! until the socket is closed, whatever the connection is doing (a TLS
//! handshake, chatting, being told why it was refused, its last words):
//! that is what uses a file descriptor. Its **place** among the
//! participants is given back as it leaves, before the others hear
//! `left!`, so that whoever hears it can take the place at once; the socket
//! may take a few seconds more to close, and stays counted until it has.
//! Its address's count (see [`per_address`](crate::server::per_address)) also lasts
//! until the socket is closed.

use crate::server::per_address::SourceHandle;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// The default most participants at once, if the open-files limit allows
/// as many.
pub const DEFAULT_MAX_PARTICIPANTS: usize = 50_000;

/// Connections refused at admission still get a reason, over TLS; at most
/// this many such refusals are in progress at once, beyond which newcomers
/// are simply closed. Their sockets count like any other.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Descriptors kept for everything but connections (the listener, the log,
/// certificate reloads, the runtime), in proportion to the open-files limit:
/// this many plus [`reserve_share`] of the limit.
const RESERVED_FDS: u64 = 32;

/// The share of the open-files limit kept in reserve: one in 16.
fn reserve_share(limit: u64) -> u64 {
    limit / 16
}

/// How many sockets may be open at once under an open-files limit of
/// `limit`, keeping the reserve free.
pub fn socket_budget(limit: u64) -> usize {
    let reserve = RESERVED_FDS.saturating_add(reserve_share(limit));
    usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX)
}

/// How many participants fit in a socket budget, leaving room for the
/// refusals in progress.
pub fn participants_within(sockets: usize) -> usize {
    sockets.saturating_sub(MAX_REFUSALS_IN_FLIGHT)
}

/// Raises the open-files limit to its hard limit, and keeps the sockets
/// (participants, refusals in progress, connections still closing) within
/// it, with a reserve in proportion to it (see [`socket_budget`]). Returns
/// the participant limit and the socket limit.
///
/// `asked` is the participant limit the user asked for; without one, the
/// default ([`DEFAULT_MAX_PARTICIPANTS`]) is lowered to what the machine
/// allows with an info line, and only a limit asked for and not allowed is
/// warned about.
pub fn fit_to_open_files(asked: Option<usize>) -> (usize, Option<usize>) {
    let wanted = asked.unwrap_or(DEFAULT_MAX_PARTICIPANTS);
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot read or raise the open-files limit: {e}");
            return (wanted, None);
        }
    };
    let sockets = socket_budget(limit);
    let room = participants_within(sockets);
    tracing::info!(open_files = limit, sockets, "open-files limit");
    if wanted > room {
        match asked {
            Some(asked) => tracing::warn!(
                "--max-participants {asked} exceeds what the open-files limit ({limit}) \
                 allows: using {room}"
            ),
            None => tracing::info!("participants: at most {room} (open-files limit {limit})"),
        }
    }
    let participants = wanted.min(room);
    let sockets = sockets.min(participants.saturating_add(MAX_REFUSALS_IN_FLIGHT));
    (participants, Some(sockets))
}

/// What an admitted connection holds: its socket's count, its place among
/// the participants, (unless its address is exempt) its share of its
/// address's limits, and the time it has to become a participant.
#[derive(Debug)]
pub struct Admission {
    _socket: OwnedSemaphorePermit,
    place: Option<OwnedSemaphorePermit>,
    source: Option<SourceHandle>,
    deadline: Instant,
}

impl Admission {
    pub fn new(
        socket: OwnedSemaphorePermit,
        place: OwnedSemaphorePermit,
        source: Option<SourceHandle>,
        deadline: Instant,
    ) -> Self {
        Admission {
            _socket: socket,
            place: Some(place),
            source,
            deadline,
        }
    }

    /// When the TLS handshake and the nickname must be done: the handshake
    /// timeout, counted from accept.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The connection's address's limits, unless it is exempt.
    pub fn source(&self) -> Option<&SourceHandle> {
        self.source.as_ref()
    }

    /// Gives the participant's place back (it is leaving); the socket and
    /// the address's count stay until this is dropped, after the close.
    pub fn release_place(&mut self) {
        self.place = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_participants_and_refusals_fit_the_open_files_limit_with_a_reserve() {
        for limit in [256u64, 1024, 20_000, 1 << 20] {
            let sockets = socket_budget(limit);
            let participants = participants_within(sockets);
            let total = (participants + MAX_REFUSALS_IN_FLIGHT) as u64;
            assert!(total <= limit, "{limit}: {total}");
            // The reserve grows with the limit.
            assert!(limit - total >= 32 + limit / 16, "{limit}: {total}");
        }
        assert_eq!(socket_budget(10), 0);
        assert_eq!(participants_within(10), 0);
    }
}
