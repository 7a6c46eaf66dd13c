//! Which nodes are alive, and what happens to the nicknames of one that is
//! not: each node refreshes its entry in the room's nodes bucket, whose
//! entries expire after the node timeout; each watches the nickname
//! bucket, and releases (announcing `left!`) the nicknames of a node whose
//! entry expired. After an outage of its own, a node first checks that its
//! participants still hold their nicknames.

use super::channel::take_over_channels;
use super::record::Record;
use super::topics::is_topic_key;
use super::{Holder, Holding, REQUEST_TIMEOUT, Shared};
use crate::room::Departure;
use crate::sync::lock;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};

/// How a node shows it is alive, and how soon the others give it up.
#[derive(Debug, Clone, Copy)]
pub(super) struct Liveness {
    /// How long a node's entry lives without a refresh.
    pub(super) ttl: Duration,
}

impl Liveness {
    /// How often a node refreshes its entry: several times per `ttl`, so
    /// that a late refresh or two does not make it look dead.
    pub(super) fn refresh_every(self) -> Duration {
        self.ttl / 6
    }

    /// How often a node looks for nicknames held by nodes that are gone. A
    /// node killed outright is noticed within `ttl` plus this.
    pub(super) fn scan_every(self) -> Duration {
        self.ttl / 3
    }
}

/// Starts [`watch_nicknames`] and waits (a bounded time) until it has read
/// what the nickname bucket held up to `last` (its last revision when this
/// node opened it): the nicknames, memberships and topics a node knows
/// before it takes anyone in.
pub(super) async fn start_watching(shared: &Arc<Shared>, last: u64) {
    let mut read = shared.channels.topics.read_to.subscribe();
    tokio::spawn(watch_nicknames(shared.clone()));
    if timeout(REQUEST_TIMEOUT, read.wait_for(|read| *read >= last))
        .await
        .is_err()
    {
        tracing::warn!(
            "cannot read the room's nicknames, channels and topics yet: starting without them"
        );
    }
}

/// Keeps [`Shared::directory`] equal to the nickname bucket, and the
/// channels' members and topics to theirs.
async fn watch_nicknames(shared: Arc<Shared>) {
    let mut restored = shared.link.restored.subscribe();
    loop {
        restored.mark_unchanged();
        match shared.nicks.watch_with_history(">").await {
            Ok(mut watch) => {
                lock(&shared.directory).clear();
                shared.channels.clear();
                loop {
                    let entry = tokio::select! {
                        entry = watch.next() => entry,
                        _ = restored.changed() => break,
                    };
                    let Some(Ok(entry)) = entry else { break };
                    let revision = entry.revision;
                    take_entry(&shared, entry);
                    shared.channels.topics.read(revision);
                    shared.directory_changed.send_modify(|n| *n += 1);
                }
            }
            Err(e) => tracing::debug!("cannot watch the nicknames yet: {e}"),
        }
        if shared.state().closed && shared.state().members.is_empty() {
            return;
        }
        sleep(Duration::from_secs(1)).await;
    }
}

/// Takes in one entry of the nickname bucket as watched: a channel
/// membership, a topic or a nickname.
fn take_entry(shared: &Shared, entry: kv::Entry) {
    if entry.key.starts_with("ch.") {
        let put = (entry.operation == kv::Operation::Put).then_some(&entry.value[..]);
        return shared
            .channels
            .watched(shared, &entry.key, entry.revision, put);
    }
    if is_topic_key(&entry.key) {
        return shared.watched_topic(&entry, entry.seen_current);
    }
    let mut directory = lock(&shared.directory);
    match entry.operation {
        kv::Operation::Put => match Holder::decode(&entry.key, &entry.value) {
            Ok(Holder { node, nick }) => {
                let revision = entry.revision;
                directory.insert(entry.key, nick, Holding { revision, node });
            }
            Err(why) => {
                directory.remove(&entry.key);
                shared.reject(why);
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            directory.remove(&entry.key);
        }
    }
}

/// Refreshes this node's liveness entry, and releases the nicknames of
/// nodes whose entry expired (and any of this node's own that no local
/// participant holds: left over from a crash under the same node name).
pub(super) async fn keep_alive(shared: Arc<Shared>) {
    let mut refresh = tokio::time::interval(shared.liveness.refresh_every());
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_scan = Instant::now();
    let mut refreshed = Instant::now();
    loop {
        refresh.tick().await;
        shared.report_rejected();
        let Some(since) = shared.connected_since() else {
            continue;
        };
        let put = shared
            .nodes
            .put(&shared.node, Bytes::from(shared.node.clone()));
        match timeout(REQUEST_TIMEOUT, put).await {
            Ok(Ok(_)) => {
                if refreshed.elapsed() > shared.liveness.ttl {
                    // Away long enough for the others to have given this
                    // node's nicknames up.
                    check_members(&shared).await;
                }
                refreshed = Instant::now();
            }
            Ok(Err(e)) => tracing::debug!("liveness not refreshed: {e}"),
            Err(_) => tracing::debug!("liveness not refreshed: timed out"),
        }
        // After an outage, give the other nodes time to refresh their own
        // entries before judging them.
        if since.elapsed() < shared.liveness.ttl + shared.liveness.refresh_every()
            || last_scan.elapsed() < shared.liveness.scan_every()
        {
            continue;
        }
        last_scan = Instant::now();
        take_over(&shared).await;
        tracing::debug!("looked for nodes that are gone");
    }
}

/// Disconnects this node's participants whose nickname entry is gone or
/// changed: another node announced them as left while this one was away,
/// and the name may have a new owner.
async fn check_members(shared: &Arc<Shared>) {
    let held: Vec<(String, u64)> = shared
        .state()
        .members
        .iter()
        .filter_map(|(key, member)| Some((key.clone(), member.revision?)))
        .collect();
    let mut lost = 0;
    for (key, revision) in held {
        let still_ours = match timeout(REQUEST_TIMEOUT, shared.nicks.entry(key.as_str())).await {
            Ok(Ok(Some(entry))) => {
                entry.revision == revision && entry.operation == kv::Operation::Put
            }
            Ok(Ok(None)) => false,
            // Cannot tell: keep them.
            _ => true,
        };
        if !still_ours {
            lost += 1;
            shared.kick(&key);
        }
    }
    if lost > 0 {
        tracing::warn!(
            participants = lost,
            "disconnected participants the other nodes saw leave while this one was away"
        );
    }
}

async fn take_over(shared: &Arc<Shared>) {
    let entries: Vec<(String, u64, Holder)> = lock(&shared.directory)
        .iter()
        .map(|(key, named)| {
            let holder = Holder {
                node: named.value.node.clone(),
                nick: named.nick.clone(),
            };
            (key.clone(), named.value.revision, holder)
        })
        .collect();
    let mut alive: HashMap<String, bool> = HashMap::new();
    for (key, revision, holder) in entries {
        let orphan = if holder.node == shared.node {
            // Ours, unless no participant here holds it (revision `None`
            // is a join under way).
            match shared.state().members.get(&key) {
                Some(member) => member.revision.is_some_and(|r| r != revision),
                None => true,
            }
        } else {
            !node_is_alive(shared, &mut alive, &holder.node).await
        };
        let quiet = shared
            .announce
            .quiet(lock(&shared.directory).len())
            .is_some();
        let left = Record::departure(&holder.nick, Departure::Left, quiet).encode();
        if orphan
            && shared
                .release_nickname(&key, &holder.nick, revision, left)
                .await
        {
            tracing::info!(
                nick = %holder.nick,
                node = %holder.node,
                "released a nickname whose node is gone"
            );
        }
    }
    take_over_channels(shared, &mut alive).await;
}

/// Whether `node`'s liveness entry is there (asked once per scan: `alive`
/// keeps the answers); true when it cannot tell, to judge it another time.
pub(super) async fn node_is_alive(
    shared: &Shared,
    alive: &mut HashMap<String, bool>,
    node: &str,
) -> bool {
    if let Some(is_alive) = alive.get(node) {
        return *is_alive;
    }
    match timeout(REQUEST_TIMEOUT, shared.nodes.get(node)).await {
        Ok(Ok(entry)) => {
            let is_alive = entry.is_some();
            alive.insert(node.to_owned(), is_alive);
            is_alive
        }
        _ => true,
    }
}
