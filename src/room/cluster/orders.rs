//! Operators' actions in a cluster room, on whichever node they apply.
//!
//! * **A kick** (`/kick`, `/ban`) goes to the node of the one put out: on
//!   the operator's own node it is done at once; for another node's
//!   participant, a [`KickRecord`] goes to that node as a request (as a
//!   private line does), and that node puts it out of the lobby and of
//!   every channel it is in there, unless it is one of its operators, and
//!   answers. The operator is answered once the answer came.
//! * **A mute** holds on every node: an [`Order`] on the room's orders
//!   subject, in its stream, which every node reads and applies to its
//!   own table (a node that starts reads those of the last seven days
//!   first); the node of the one muted tells its current channel (the
//!   operator's node tells the lobby if the one muted is nowhere).

use super::beside::{KickRecord, Order};
use super::publish::SenderWork;
use super::record::Record;
use super::{ClusterRoom, REQUEST_TIMEOUT, Shared};
use crate::protocol::{self, moderation};
use crate::room::store::Action;
use crate::room::{Departure, Moderation, Mute, Protected, UNAVAILABLE};
use crate::sync::lock;
use async_nats::jetstream::consumer;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use time::OffsetDateTime;
use tokio::time::timeout;

/// What the node of the one put out answers a kick.
pub(super) const PUT_OUT: &[u8] = b"out";
pub(super) const NOT_HERE: &[u8] = b"gone";
pub(super) const PROTECTED: &[u8] = b"operator";

/// What this node applies of the operators' orders.
#[derive(Default)]
pub(super) struct Orders {
    /// Muted nickname keys, and until when.
    mutes: Mutex<HashMap<String, OffsetDateTime>>,
    /// How many `mutes` holds: while nobody is muted, asking costs no lock.
    muted: AtomicUsize,
    /// The current channel (its key) of this node's participants that are
    /// not in the lobby: where what concerns them is told.
    pub(super) current: Mutex<HashMap<String, String>>,
    /// This node's operators, whom no kick from another node puts out.
    pub(super) protected: Mutex<Option<Protected>>,
}

impl Orders {
    /// Until when `nick` is muted, if it is now.
    pub(super) fn muted_until(&self, nick: &str) -> Option<OffsetDateTime> {
        if self.muted.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut mutes = lock(&self.mutes);
        let key = protocol::nick_key(nick);
        let until = *mutes.get(&key)?;
        if until > OffsetDateTime::now_utc() {
            return Some(until);
        }
        mutes.remove(&key);
        self.muted.store(mutes.len(), Ordering::Release);
        None
    }

    fn set(&self, nick: &str, until: Option<OffsetDateTime>) {
        let mut mutes = lock(&self.mutes);
        let key = protocol::nick_key(nick);
        match until {
            Some(until) => mutes.insert(key, until),
            None => mutes.remove(&key),
        };
        self.muted.store(mutes.len(), Ordering::Release);
    }

    /// Whether `nick` is one of this node's operators.
    pub(super) fn is_protected(&self, nick: &str) -> bool {
        lock(&self.protected)
            .as_ref()
            .is_some_and(|protected| protected(nick))
    }
}

impl ClusterRoom {
    /// `/mute` and `/unmute`: an order for every node, published after the
    /// lines and orders its operator gave before.
    pub(super) fn give_order(&self, order: Order) -> Result<(), &'static str> {
        let (Order::Mute { nick, by, .. } | Order::Unmute { nick, by, .. }) = &order;
        if protocol::validate_nickname(nick) != Ok(nick.as_str()) {
            return Err("that is not a nickname");
        }
        let shared = self.shared.clone();
        if shared.connected_since().is_none() {
            return Err(UNAVAILABLE);
        }
        // It holds here at once, whenever this node reads it back from the
        // stream: the operator's next `/unmute` finds the mute it just gave.
        shared.apply(&order);
        let work = SenderWork::Order {
            payload: order.encode(),
            id: shared.next_message_id(),
        };
        shared.queue_for_sender(protocol::nick_key(by), work);
        Ok(())
    }

    /// The order for a mute.
    pub(super) fn mute_order(&self, mute: Mute<'_>) -> Order {
        Order::Mute {
            nick: mute.nick.to_owned(),
            by: mute.by.to_owned(),
            until: mute.until.unix_timestamp(),
            typed: mute.typed.to_owned(),
            node: self.shared.node.clone(),
        }
    }

    /// Puts `nick` out (see [`Room::put_out`](crate::room::Room::put_out)),
    /// on this node or on its own.
    pub(super) async fn put_out_anywhere(
        &self,
        nick: &str,
        told: Bytes,
        how: Departure<'_>,
    ) -> Result<bool, &'static str> {
        let shared = &self.shared;
        let key = protocol::nick_key(nick);
        if shared.put_out_here(&key, told, how) {
            return Ok(true);
        }
        let node = lock(&shared.directory)
            .get(&key)
            .map(|named| named.value.node.clone());
        let (Some(node), Departure::Kicked { by, reason, ban }) = (node, how) else {
            return Ok(false);
        };
        if node == shared.node || shared.connected_since().is_none() {
            return Ok(false);
        }
        let kick = KickRecord {
            kick: key,
            by: by.to_owned(),
            reason: reason.map(str::to_owned),
            ban,
        };
        let subject = format!("{}.{node}", shared.private_prefix);
        match timeout(
            REQUEST_TIMEOUT,
            shared.client.request(subject, kick.encode()),
        )
        .await
        {
            Ok(Ok(answer)) => match &answer.payload[..] {
                PUT_OUT => Ok(true),
                PROTECTED => Err(moderation::OPERATOR_PROTECTED),
                _ => Ok(false),
            },
            Ok(Err(e)) => {
                tracing::warn!("a kick did not reach its node: {e}");
                Err(UNAVAILABLE)
            }
            Err(_) => {
                tracing::warn!("a kick did not reach its node: no answer in time");
                Err(UNAVAILABLE)
            }
        }
    }
}

impl Shared {
    /// Puts this node's participant `key` out of the lobby and of every
    /// channel it is in: `told` is its last line, the others see `how` it
    /// left. False if it is not a participant of this node.
    pub(super) fn put_out_here(
        self: &Arc<Self>,
        key: &str,
        told: Bytes,
        how: Departure<'_>,
    ) -> bool {
        let member = {
            let mut state = self.state();
            match state.members.get(key) {
                Some(member) if member.revision.is_some() => state.members.remove(key),
                _ => None,
            }
        };
        let Some(mut member) = member else {
            return false;
        };
        member.tell_last(told);
        for channel in self.channels.all_open() {
            channel.depart(self, &member.nick, how);
        }
        lock(&self.orders.current).remove(key);
        if let Some(revision) = member.revision {
            self.leave_lobby(key, &member.nick, revision, how);
        }
        true
    }

    /// A kick from another node, for one of this node's participants: what
    /// to answer.
    pub(super) fn kicked_from_elsewhere(self: &Arc<Self>, kick: &KickRecord) -> &'static [u8] {
        let nick = match self.state().members.get(&kick.kick) {
            Some(member) if member.revision.is_some() => member.nick.clone(),
            _ => return NOT_HERE,
        };
        if self.orders.is_protected(&nick) {
            return PROTECTED;
        }
        let reason = kick.reason.as_deref().map(protocol::sanitize);
        let reason = reason.as_deref();
        let told = moderation::kicked_error(&kick.by, reason);
        let how = Departure::Kicked {
            by: &kick.by,
            reason,
            ban: kick.ban,
        };
        if self.put_out_here(&kick.kick, told, how) {
            PUT_OUT
        } else {
            NOT_HERE
        }
    }

    /// Applies an order read from the room's orders subject.
    /// The mutes still running when this node starts: the operators'
    /// orders of the last [`moderation::MAX_MUTE`] (the longest a mute
    /// lasts), up to the stream's sequence `last`, applied in their order
    /// without telling anyone; what comes after `last` is read live, once
    /// this is done (an older order applied after a newer one would undo
    /// it). A node that cannot read them in time says so and starts
    /// without.
    pub(super) async fn recall_mutes(&self, last: u64) {
        if !self.has_channels || last == 0 {
            return;
        }
        let since = OffsetDateTime::now_utc() - moderation::MAX_MUTE;
        let read = async {
            let consumer = self
                .lines_stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: self.orders_subject.clone(),
                    deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: since },
                    ..Default::default()
                })
                .await?;
            // Nothing to read: a wait for the next order would last until
            // the time limit.
            if consumer.cached_info().num_pending == 0 {
                return anyhow::Ok(0);
            }
            let mut messages = consumer.messages().await?;
            let mut applied = 0;
            while let Some(message) = messages.next().await {
                let message = message?;
                let info = message.info().map_err(anyhow::Error::msg)?;
                if info.stream_sequence > last {
                    break;
                }
                // What does not decode was counted once already, when it
                // was read live.
                if let Ok(order) = Order::decode(&message.payload) {
                    self.apply(&order);
                    applied += 1;
                }
                if info.pending == 0 {
                    break;
                }
            }
            anyhow::Ok(applied)
        };
        match timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(0)) => {}
            Ok(Ok(orders)) => tracing::info!(orders, "read the operators' recent mutes"),
            Ok(Err(e)) => tracing::warn!("cannot read the operators' recent mutes: {e:#}"),
            Err(_) => tracing::warn!("cannot read the operators' recent mutes: timed out"),
        }
    }

    /// Sets this node's table as `order` says.
    fn apply(&self, order: &Order) {
        match order {
            Order::Mute { nick, until, .. } => {
                let until = OffsetDateTime::from_unix_timestamp(*until).ok();
                self.orders.set(nick, until);
            }
            Order::Unmute { nick, .. } => self.orders.set(nick, None),
        }
    }

    pub(super) fn take_order(self: &Arc<Self>, order: Order) {
        self.apply(&order);
        match order {
            Order::Mute {
                nick,
                by,
                typed,
                node,
                ..
            } => self.tell_about(&node, act(Action::Mute, &by, &nick, &typed)),
            Order::Unmute { nick, by, node } => {
                self.tell_about(&node, act(Action::Unmute, &by, &nick, ""))
            }
        }
    }

    /// Tells `act`, about its `whom`, to its current channel if it is a
    /// participant of this node; to the lobby, if it is nowhere and the
    /// order came from this node (`node`).
    fn tell_about(self: &Arc<Self>, node: &str, act: Moderation<'_>) {
        let key = protocol::nick_key(act.whom);
        let here = (self.state().members.get(&key)).is_some_and(|m| m.revision.is_some());
        if !here && (node != self.node || lock(&self.directory).contains(&key)) {
            return;
        }
        let current = lock(&self.orders.current).get(&key).cloned();
        let channel = current.and_then(|token| {
            self.channels
                .all_open()
                .into_iter()
                .find(|c| c.token == token)
        });
        let told = match channel {
            Some(channel) => channel.moderated(self, act),
            None => self.lobby_moderated(act),
        };
        if let Err(why) = told {
            tracing::warn!("a mute's notice was not sent: {why}");
        }
    }

    /// Tells the lobby, on every node, of this node's operator's action
    /// `act` (if it is told as such: see [`Record::acted`]).
    pub(super) fn lobby_moderated(
        self: &Arc<Self>,
        act: Moderation<'_>,
    ) -> Result<(), &'static str> {
        let Some(record) = Record::acted(act) else {
            return Ok(());
        };
        if self.connected_since().is_none() {
            return Err(UNAVAILABLE);
        }
        if let Record::Topic { .. } = record {
            self.publish_topic(act.by, self.subject.clone(), String::new(), record);
            return Ok(());
        }
        let line = super::publish::Queued::Line {
            payload: record.encode(),
            from: None,
        };
        self.queue.try_send(line).map_err(|_| UNAVAILABLE)
    }
}

/// An operator's action, as a store and [`Record::acted`] take it.
fn act<'a>(action: Action, by: &'a str, whom: &'a str, detail: &'a str) -> Moderation<'a> {
    Moderation {
        action,
        by,
        whom,
        detail,
    }
}
