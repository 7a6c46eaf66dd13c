//! What nodes put in NATS beside the room's records (see [`record`]):
//! operators' orders and kicks, and channel memberships, each checked as
//! a record is before anything of it is used or shown.
//!
//! [`record`]: super::record

use super::record::{Rejected, malformed, valid_nick, within_limit};
use crate::protocol::{self, moderation};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What every node of the room applies, read from the room's orders
/// subject: mutes hold on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum Order {
    /// `nick` is muted until `until` (Unix seconds, UTC), `typed` being the
    /// duration as the operator `by` typed it; `node`: the operator's.
    Mute {
        nick: String,
        by: String,
        until: i64,
        typed: String,
        node: String,
    },
    /// `nick`'s mute is lifted by `by`, on node `node`.
    Unmute {
        nick: String,
        by: String,
        node: String,
    },
}

/// An operator's `/kick` of a participant of another node, sent to that
/// node (as a private line is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KickRecord {
    /// The nickname key of the one put out.
    pub(super) kick: String,
    /// The operator.
    pub(super) by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    /// A `/ban` (put out as a kick; the name is banned where the operator
    /// acted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) ban: bool,
}

/// A channel member's entry in the nickname bucket, under
/// `ch.<channel key>.<nickname key>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Membership {
    pub(super) node: String,
    pub(super) nick: String,
    /// The channel's name as its first member on that node spelled it.
    pub(super) channel: String,
}

impl Order {
    pub(super) fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads an order, checked: valid nicknames and node name, a known
    /// duration, a mute no longer than any operator may give.
    pub(super) fn decode(payload: &[u8]) -> Result<Order, Rejected> {
        let order: Order = serde_json::from_slice(payload).map_err(malformed)?;
        let (nick, by, node) = match &order {
            Order::Mute {
                nick,
                by,
                until,
                typed,
                node,
            } => {
                let latest = time::OffsetDateTime::now_utc() + moderation::MAX_MUTE;
                if moderation::mute_duration(typed).is_none()
                    || *until > latest.unix_timestamp() + 60
                {
                    return Err(Rejected::Malformed("a mute"));
                }
                (nick, by, node)
            }
            Order::Unmute { nick, by, node } => (nick, by, node),
        };
        valid_nick(nick)?;
        valid_nick(by)?;
        super::connect::validate_node_name(node).map_err(|_| Rejected::Malformed("a node name"))?;
        Ok(order)
    }
}

impl KickRecord {
    pub(super) fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a kick, checked: a nickname key, a valid operator's
    /// nickname, a reason within the line limit.
    pub(super) fn decode(payload: &[u8], max_line: usize) -> Result<KickRecord, Rejected> {
        let record: KickRecord = serde_json::from_slice(payload).map_err(malformed)?;
        valid_nick(&record.by)?;
        if record.kick.is_empty()
            || record.kick.len() > protocol::MAX_NICK_LEN
            || protocol::nick_key(&record.kick) != record.kick
        {
            return Err(Rejected::Nickname);
        }
        if let Some(reason) = &record.reason {
            within_limit(reason, max_line)?;
        }
        Ok(record)
    }
}

impl Membership {
    /// A channel member's entry under `ch.<channel>.<nick>`, checked: a
    /// valid nickname and node, a valid channel name, both under their own
    /// keys. Returns the channel key too.
    pub(super) fn decode(key: &str, value: &[u8]) -> Result<(String, Membership), Rejected> {
        let entry: Membership = serde_json::from_slice(value).map_err(malformed)?;
        valid_nick(&entry.nick)?;
        super::connect::validate_node_name(&entry.node)
            .map_err(|_| Rejected::Malformed("a node name"))?;
        protocol::channels::validate_channel(&entry.channel).map_err(|_| Rejected::Channel)?;
        let channel = channel_token(&entry.channel);
        if key != format!("ch.{channel}.{}", protocol::nick_key(&entry.nick)) {
            return Err(Rejected::Malformed("not a channel entry"));
        }
        Ok((channel, entry))
    }
}

/// A channel's key as it goes in subjects and bucket keys: its lookalike
/// skeleton without the `#` (`a-z`, `0-9`, `_` only).
pub(super) fn channel_token(name: &str) -> String {
    protocol::channels::channel_key(name)
        .trim_start_matches('#')
        .to_owned()
}

/// Whether `token` is a channel's key as [`channel_token`] makes them.
pub(super) fn is_channel_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= protocol::channels::MAX_CHANNEL_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_kicks_and_memberships_are_checked() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mute = |until: i64, typed: &str, node: &str| Order::Mute {
            nick: "bob".into(),
            by: "alice".into(),
            until,
            typed: typed.into(),
            node: node.into(),
        };
        assert!(Order::decode(&mute(now + 600, "10m", "one").encode()).is_ok());
        for forged in [
            mute(now + 8 * 86_400, "10m", "one"),
            mute(now, "forever", "one"),
            mute(now, "10m", "a b"),
        ] {
            assert!(Order::decode(&forged.encode()).is_err(), "{forged:?}");
        }
        let kick = KickRecord {
            kick: "bob".into(),
            by: "alice".into(),
            reason: None,
            ban: false,
        };
        assert!(KickRecord::decode(&kick.encode(), 10).is_ok());
        let not_a_key = KickRecord {
            kick: "Bob".into(),
            ..kick
        };
        assert!(KickRecord::decode(&not_a_key.encode(), 10).is_err());
        let entry = br##"{"node":"one","nick":"B0b","channel":"#0ps"}"##;
        let (token, read) = Membership::decode("ch.ops.bob", entry).expect("valid");
        assert_eq!((token.as_str(), read.nick.as_str()), ("ops", "B0b"));
        for (key, value) in [
            ("ch.ops.eve", &entry[..]),
            ("ch.dev.bob", &entry[..]),
            (
                "ch.ops.bob",
                br##"{"node":"one","nick":"B0b","channel":"ops"}"##,
            ),
        ] {
            assert!(Membership::decode(key, value).is_err(), "{key}");
        }
    }
}
