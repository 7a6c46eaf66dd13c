//! What a writer does for its store besides committing lines: it brings
//! the full-text index up to date in bulk, and deletes the lines past the
//! room's retention. Both writers (a room's on one server, a cluster
//! node's) keep one [`Upkeep`] and call it between their commits.

use super::Store;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How often old lines are deleted, at most this long apart.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Lines waiting for the full-text index at which a busy writer indexes
/// them at once: a thousand lines index for about a tenth of what they
/// cost one commit at a time, and a search indexes no longer a tail for
/// itself (see [`Store::search`]).
pub const INDEX_BATCH: u64 = 1000;

/// How long after its last commit a writer indexes what is waiting, when
/// fewer than [`INDEX_BATCH`] lines came.
pub const INDEX_QUIET: Duration = Duration::from_secs(1);

/// The schedule of a writer's upkeep.
#[derive(Debug)]
pub struct Upkeep {
    /// How long lines are kept; `None`: forever.
    retain: Option<Duration>,
    next_expiry: Instant,
    /// When the lines waiting for the index are indexed, unless a commit
    /// comes first (which puts it off).
    index_due: Option<Instant>,
    /// Whether the last indexing failed: an outage is logged once.
    index_failing: bool,
}

impl Upkeep {
    /// The first expiry is one interval away: the server expires the
    /// store once when it starts. The index is due at once: lines stored
    /// and not indexed before a crash are indexed first.
    pub fn new(retain: Option<Duration>) -> Self {
        let now = Instant::now();
        Upkeep {
            retain,
            next_expiry: now + EXPIRY_INTERVAL,
            index_due: Some(now),
            index_failing: false,
        }
    }

    /// The next moment something is due, if anything is: a writer
    /// waiting for lines waits no longer than this.
    pub fn deadline(&self) -> Option<Instant> {
        let expiry = self.retain.map(|_| self.next_expiry);
        match (expiry, self.index_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// After a commit of lines: indexes what waits if it is
    /// [`INDEX_BATCH`] lines or more, and otherwise once the writer has
    /// been quiet for [`INDEX_QUIET`].
    pub fn committed(&mut self, store: &mut Store) {
        self.index(store, INDEX_BATCH);
        self.index_due = Some(Instant::now() + INDEX_QUIET);
    }

    /// Does whatever is due: the expiry, the index of a quiet room.
    pub fn run_due(&mut self, store: &mut Store) {
        self.run_due_at(store, Instant::now());
    }

    /// [`Upkeep::run_due`] as if it were `now`.
    pub(super) fn run_due_at(&mut self, store: &mut Store, now: Instant) {
        if self.retain.is_some() && now >= self.next_expiry {
            self.next_expiry = now + EXPIRY_INTERVAL;
            self.expire(store);
        }
        if self.index_due.is_some_and(|due| now >= due) {
            // A long tail is indexed a part at a time, between commits.
            let covered = self.index(store, 1);
            self.index_due = (covered > 0).then_some(now);
        }
    }

    /// Before the writer ends: indexes everything still waiting, so that
    /// a store closed cleanly holds a complete index.
    pub fn finish(&mut self, store: &mut Store) {
        while self.index(store, 1) > 0 {}
    }

    /// [`Store::index`], logging an outage once; how many it covered.
    fn index(&mut self, store: &mut Store, at_least: u64) -> u64 {
        match store.index(at_least) {
            Ok(covered) => {
                if covered > 0 && std::mem::take(&mut self.index_failing) {
                    tracing::info!("the full-text index is updated again");
                }
                covered
            }
            Err(e) => {
                if !std::mem::replace(&mut self.index_failing, true) {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot update the full-text index: searches index the lines it lacks \
                         themselves until it works again"
                    );
                }
                0
            }
        }
    }

    /// Deletes the lines older than the retention.
    fn expire(&self, store: &mut Store) {
        let Some(retain) = self.retain else {
            return;
        };
        match store.expire(OffsetDateTime::now_utc() - retain) {
            Ok(0) => {}
            Ok(lines) => tracing::info!(lines, "expired lines past the retention"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot expire old lines"),
        }
    }
}
