//! What operators decide that outlives one command: who is muted, until
//! when. Keyed by nickname (under client certificates, the certificate's
//! name), so a mute holds across a reconnect, for as long as the server
//! runs.

use crate::protocol;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// The server's mutes.
#[derive(Debug, Default)]
pub struct Moderation {
    /// Nick keys, and until when (UTC).
    muted: Mutex<HashMap<String, OffsetDateTime>>,
    /// How many `muted` holds: every line a participant sends asks, and
    /// while nobody is muted the answer costs no lock.
    count: AtomicUsize,
}

impl Moderation {
    /// Mutes `nick` for `duration` from now; until when.
    pub fn mute(&self, nick: &str, duration: Duration) -> OffsetDateTime {
        let until = OffsetDateTime::now_utc() + duration;
        let mut muted = lock(&self.muted);
        muted.insert(protocol::nick_key(nick), until);
        self.count.store(muted.len(), Ordering::Release);
        until
    }

    /// Lifts `nick`'s mute; false if it had none.
    pub fn unmute(&self, nick: &str) -> bool {
        let now = OffsetDateTime::now_utc();
        let mut muted = lock(&self.muted);
        let lifted = muted.remove(&protocol::nick_key(nick));
        self.count.store(muted.len(), Ordering::Release);
        lifted.is_some_and(|until| until > now)
    }

    /// Until when `nick` is muted, if it is now (an expired mute is
    /// forgotten here).
    pub fn muted_until(&self, nick: &str) -> Option<OffsetDateTime> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut muted = lock(&self.muted);
        let key = protocol::nick_key(nick);
        let until = *muted.get(&key)?;
        if until > OffsetDateTime::now_utc() {
            return Some(until);
        }
        muted.remove(&key);
        self.count.store(muted.len(), Ordering::Release);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mute_holds_for_its_time_in_any_spelling_and_can_be_lifted() {
        let moderation = Moderation::default();
        assert_eq!(moderation.muted_until("bob"), None);
        let until = moderation.mute("bob", Duration::from_secs(600));
        assert_eq!(moderation.muted_until("B0B"), Some(until));
        assert!(moderation.unmute("bob"));
        assert!(!moderation.unmute("bob"));
        assert_eq!(moderation.muted_until("bob"), None);
        // One already over is no mute.
        moderation.mute("bob", Duration::from_secs(600));
        lock(&moderation.muted).insert("bob".into(), OffsetDateTime::now_utc());
        assert_eq!(moderation.muted_until("bob"), None);
        assert!(lock(&moderation.muted).is_empty());
    }
}
