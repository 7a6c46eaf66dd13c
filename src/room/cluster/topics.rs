//! The topics of the room's channels (and the lobby's), kept in NATS so
//! that a node started after a `/topic` knows it too.
//!
//! A topic is a record in its channel's subject (or the lobby's): every
//! node reading the stream then takes it in ([`Topics::read_in_stream`]).
//! Once that record is stored, the operator's node puts the same record
//! in the nickname bucket under `topic.<channel key>` (the lobby's under
//! `topic.lobby`: `#lobby` in any spelling is the lobby, never a channel;
//! a nickname key holds no dot and a membership key starts with `ch.`, so
//! neither ever meets one). Every node watches that bucket (see
//! `liveness`): a node that starts has read these entries, with the
//! nicknames and memberships, before it takes anyone in, and follows
//! their changes; an entry is checked as the record is ([`Record::decode`]:
//! a valid operator's nickname, a text within 300 bytes and the line
//! limit, sanitized when shown) under a valid channel key, or dropped and
//! counted. What a node took from the stream goes first. The entry names
//! the record's place in the stream (`at`), and a node puts its topic only
//! over an entry of an earlier one ([`Shared::keep_topic`]), so the bucket
//! ends with the stream's last topic, whichever node's put comes last.
//!
//! A channel's topic is forgotten with the channel, once it has no member
//! on any node: every node then deletes its entry, revision-checked (a
//! topic put since is kept, and one node's delete is the one that
//! succeeds); an entry put while the channel had no member is deleted as
//! soon as it is seen. The lobby's lasts as long as the room's bucket.

use super::beside::is_channel_token;
use super::publish::{RETRY_FOR, SenderWork};
use super::record::{Record, Rejected};
use super::{REQUEST_TIMEOUT, Shared};
use crate::protocol;
use crate::sync::lock;
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::timeout;

/// The topics this node knows, by channel key (the lobby's under "").
pub(super) struct Topics {
    by_token: Mutex<HashMap<String, Topic>>,
    /// How far the watch of the nickname bucket has read (its revision):
    /// a node takes no one in before it has read what the bucket held
    /// when the node opened it.
    pub(super) read_to: watch::Sender<u64>,
}

struct Topic {
    /// Sanitized.
    text: String,
    /// Whether this node read it from the stream (then the bucket's entry
    /// does not replace it).
    from_stream: bool,
    /// The revision of its entry in the bucket, once seen there.
    entry: Option<u64>,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            by_token: Mutex::default(),
            read_to: watch::channel(0).0,
        }
    }
}

impl Topics {
    /// The topic of channel `token` ("": the lobby).
    pub(super) fn get(&self, token: &str) -> Option<String> {
        lock(&self.by_token).get(token).map(|t| t.text.clone())
    }

    /// A topic record of channel `token` read from the stream.
    pub(super) fn read_in_stream(&self, token: &str, text: &str) {
        let text = protocol::sanitize(text).into_owned();
        let mut by_token = lock(&self.by_token);
        let topic = by_token.entry(token.to_owned()).or_insert(Topic {
            text: String::new(),
            from_stream: true,
            entry: None,
        });
        topic.text = text;
        topic.from_stream = true;
    }

    /// Channel `token`'s entry in the bucket, at `revision`.
    fn read_in_bucket(&self, token: &str, revision: u64, text: &str) {
        let mut by_token = lock(&self.by_token);
        let topic = by_token.entry(token.to_owned()).or_insert(Topic {
            text: String::new(),
            from_stream: false,
            entry: None,
        });
        topic.entry = Some(revision);
        if !topic.from_stream {
            topic.text = protocol::sanitize(text).into_owned();
        }
    }

    /// Channel `token`'s entry was deleted from the bucket: its channel
    /// was forgotten (or had no member when it was put).
    fn deleted_from_bucket(&self, token: &str) {
        lock(&self.by_token).remove(token);
    }

    /// Forgets channel `token`'s topic; the revision of its entry in the
    /// bucket if that is older than `before`.
    fn forget(&self, token: &str, before: u64) -> Option<u64> {
        let topic = lock(&self.by_token).remove(token)?;
        topic.entry.filter(|revision| *revision < before)
    }

    /// The watch of the bucket has read up to `revision`.
    pub(super) fn read(&self, revision: u64) {
        self.read_to.send_if_modified(|read| {
            let later = revision > *read;
            *read = (*read).max(revision);
            later
        });
    }
}

/// The bucket key of channel `token`'s topic ("": the lobby's).
fn topic_key(token: &str) -> String {
    if token.is_empty() {
        "topic.lobby".to_owned()
    } else {
        format!("topic.{token}")
    }
}

/// The channel key of bucket key `key` (`topic.<key>`; "": the lobby),
/// if it is one.
fn topic_token(key: &str) -> Option<&str> {
    match key.strip_prefix("topic.")? {
        "lobby" => Some(""),
        token => is_channel_token(token).then_some(token),
    }
}

/// Where the topic a bucket entry copies was stored in the room's stream,
/// if the entry says (one put by an older node does not).
fn stored_at(entry: &[u8]) -> Option<u64> {
    match serde_json::from_slice(entry) {
        Ok(Record::Topic { at, .. }) => at,
        _ => None,
    }
}

/// Whether bucket key `key` is a topic's.
pub(super) fn is_topic_key(key: &str) -> bool {
    key.starts_with("topic.")
}

impl Shared {
    /// Publishes `record`, a topic `by` an operator, to `subject`, channel
    /// `token`'s (or the lobby's), after what that operator gave before,
    /// and once it is stored, keeps it in the bucket ([`Shared::keep_topic`]).
    /// Its operator's queue is what a node's flush waits for.
    pub(super) fn publish_topic(
        self: &Arc<Self>,
        by: &str,
        subject: String,
        token: String,
        record: Record,
    ) {
        let id = self.next_message_id();
        let work = SenderWork::Topic {
            subject,
            token,
            record,
            id,
        };
        self.queue_for_sender(protocol::nick_key(by), work);
    }

    /// [`Shared::publish_topic`]'s work, in its operator's turn.
    pub(super) async fn store_topic(&self, subject: &str, token: &str, record: Record, id: &str) {
        let payload = record.encode();
        let at = match self
            .publish_stored_to(subject, &payload, id, RETRY_FOR)
            .await
        {
            Ok(at) => at,
            Err(e) => return tracing::warn!("a topic could not be stored: {e}"),
        };
        let Record::Topic { by, text, .. } = record else {
            return;
        };
        let entry = Record::Topic {
            by,
            text,
            at: Some(at),
        };
        match timeout(REQUEST_TIMEOUT, self.keep_topic(token, at, entry.encode())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("a topic is not kept for nodes started later: {e:#}"),
            Err(_) => tracing::warn!("a topic is not kept for nodes started later: timed out"),
        }
    }

    /// Puts `entry`, channel `token`'s topic stored at `at` in the stream,
    /// in the bucket, unless the entry there copies a topic stored after
    /// it: two operators' topics, set at once on two nodes, may come to the
    /// bucket in another order than the stream's, and the stream's last
    /// must win. Compare-and-set on the entry's revision, so that two nodes
    /// putting at once both see each other.
    async fn keep_topic(&self, token: &str, at: u64, entry: Bytes) -> anyhow::Result<()> {
        let key = topic_key(token);
        loop {
            let put = match self.nicks.entry(key.as_str()).await? {
                Some(current) if current.operation == kv::Operation::Put => {
                    if let Some(later) = stored_at(&current.value).filter(|theirs| *theirs > at)
                        && self.in_stream(later).await
                    {
                        return Ok(());
                    }
                    let update = self
                        .nicks
                        .update(key.as_str(), entry.clone(), current.revision);
                    match update.await {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(()),
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => match self.nicks.create(key.as_str(), entry.clone()).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(()),
                    Err(e) => return Err(e.into()),
                },
            };
            // Another node put or deleted it meanwhile: look again.
            if put.is_ok() {
                return Ok(());
            }
        }
    }

    /// Whether the room's stream holds sequence `seq` already: an entry
    /// claiming a place past its end was not put by a node, and keeps no
    /// later topic out.
    async fn in_stream(&self, seq: u64) -> bool {
        let mut stream = self.lines_stream.clone();
        stream
            .info()
            .await
            .is_ok_and(|info| seq <= info.state.last_sequence)
    }

    /// Takes in a topic's entry of the bucket as watched; `live`: read
    /// after what the bucket held when the watch started.
    pub(super) fn watched_topic(&self, entry: &kv::Entry, live: bool) {
        let Some(token) = topic_token(&entry.key) else {
            return self.reject(Rejected::Channel);
        };
        if entry.operation != kv::Operation::Put {
            return self.channels.topics.deleted_from_bucket(token);
        }
        match Record::decode(&entry.value, self.max_line) {
            Ok(Record::Topic { text, .. }) => {
                let empty = !token.is_empty() && self.channels.members(token, 0).0 == 0;
                if live && empty {
                    // Put after its channel was forgotten.
                    return self.delete_topic(token, entry.revision);
                }
                self.channels
                    .topics
                    .read_in_bucket(token, entry.revision, &text);
            }
            Ok(_) => self.reject(Rejected::Malformed("not a topic")),
            Err(why) => self.reject(why),
        }
    }

    /// Forgets channel `token`'s topic, which was forgotten at the
    /// bucket's `revision` (its last member's delete), and deletes its
    /// entry if it is older.
    pub(super) fn forget_topic(&self, token: &str, revision: u64) {
        if let Some(entry) = self.channels.topics.forget(token, revision) {
            self.delete_topic(token, entry);
        }
    }

    /// Deletes channel `token`'s topic entry if it is still at `revision`.
    fn delete_topic(&self, token: &str, revision: u64) {
        let (nicks, key) = (self.nicks.clone(), topic_key(token));
        tokio::spawn(async move {
            let deleted = nicks.delete_expect_revision(&key, Some(revision));
            match timeout(REQUEST_TIMEOUT, deleted).await {
                Ok(Ok(())) => tracing::debug!("deleted a forgotten channel's topic"),
                // Another node's delete came first, or a topic was set since.
                Ok(Err(e)) => tracing::debug!("a forgotten channel's topic not deleted: {e}"),
                Err(_) => tracing::debug!("a forgotten channel's topic not deleted: timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys_name_a_channel_or_the_lobby() {
        assert_eq!(topic_key(""), "topic.lobby");
        assert_eq!(topic_key("ops"), "topic.ops");
        assert_eq!(topic_token("topic.lobby"), Some(""));
        assert_eq!(topic_token("topic.ops"), Some("ops"));
        for bad in ["topic.OPS", "topic.a.b", "topic.", "ch.ops", "ops"] {
            assert_eq!(topic_token(bad), None, "{bad}");
        }
        assert!(is_topic_key("topic.x") && !is_topic_key("ch.x.y"));
    }

    #[test]
    fn the_stream_s_topic_goes_first_and_a_forgotten_one_names_its_entry() {
        let topics = Topics::default();
        topics.read_in_bucket("ops", 5, "from\u{1b}[2J the bucket");
        assert_eq!(topics.get("ops").as_deref(), Some("from[2J the bucket"));
        topics.read_in_stream("ops", "from the stream");
        topics.read_in_bucket("ops", 7, "an older one");
        assert_eq!(topics.get("ops").as_deref(), Some("from the stream"));
        assert_eq!(topics.forget("ops", 6), None);
        topics.read_in_bucket("dev", 8, "dev");
        assert_eq!(topics.forget("dev", 9), Some(8));
        assert_eq!(topics.get("dev"), None);
        topics.read_in_bucket("qa", 10, "qa");
        topics.deleted_from_bucket("qa");
        assert_eq!(topics.get("qa"), None);
    }
}
