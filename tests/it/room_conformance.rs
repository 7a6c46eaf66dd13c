//! One behaviour for both rooms: every case here runs once against the
//! room held in one server's memory ([`LocalRoom`]), once against the same
//! room keeping its lines in a store on disk (`serve --data`), and once
//! against the room shared through a real nats-server ([`ClusterRoom`]),
//! through the [`Room`] and [`Subscription`] traits the sessions use (and,
//! for channels, which the room on disk has not, through the [`Channels`]
//! the sessions use). A difference between them is a bug in one of them.

use crate::harness::{NatsServer, WAIT};
use bytes::Bytes;
use chatroom::room::backlog;
use chatroom::room::channels::{Channels, Joined};
use chatroom::room::cluster::{ClusterOptions, ClusterRoom};
use chatroom::room::mailbox::MAILBOX_LINES;
use chatroom::room::store::{Options, Store};
use chatroom::room::{
    Announce, Departure, JoinError, LocalRoom, LocalSubscription, RecvError, Room, Said,
    Subscription, WhisperError,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;
use tokio::time::timeout;

/// What a case asks of its room.
#[derive(Clone, Copy)]
struct Spec {
    max_members: usize,
    backlog: usize,
    history: usize,
    announce: Announce,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            max_members: 100,
            backlog: 1 << 20,
            history: 0,
            announce: Announce::All,
        }
    }
}

/// Makes the rooms of one implementation.
trait Rooms {
    type R: Room;
    async fn room(&self, spec: Spec) -> Self::R;
    /// What changes when `room`'s list of members may have, for a room
    /// whose list follows others' news (the cluster's nickname watch);
    /// `None` for one whose list is right at once.
    fn changes(&self, _room: &Self::R) -> Option<watch::Receiver<u64>> {
        None
    }
}

struct Local;

impl Rooms for Local {
    type R = LocalRoom;
    async fn room(&self, spec: Spec) -> LocalRoom {
        LocalRoom::new(spec.max_members, spec.backlog)
            .with_history(spec.history)
            .with_announce(spec.announce)
    }
}

/// Local rooms each with a store of its own, in one temporary folder.
struct Durable {
    root: tempfile::TempDir,
    rooms: AtomicUsize,
}

impl Durable {
    fn new() -> Durable {
        Durable {
            root: tempfile::tempdir().expect("temp"),
            rooms: AtomicUsize::new(0),
        }
    }
}

impl Rooms for Durable {
    type R = Told;
    async fn room(&self, spec: Spec) -> Told {
        let n = self.rooms.fetch_add(1, Ordering::Relaxed);
        let options = Options {
            create: true,
            ..Options::default()
        };
        let store =
            Store::open(&self.root.path().join(format!("room{n}")), options).expect("store");
        let room = LocalRoom::new(spec.max_members, spec.backlog)
            .with_history(spec.history)
            .with_announce(spec.announce)
            .with_store(store, None)
            .expect("the room takes its store");
        Told(room)
    }
}

/// A room with a store, whose newcomers are told, once, after their
/// history, how long it keeps its lines: the cases below read past that
/// line (tests/it/history_disk.rs checks it), the rest goes through as is.
struct Told(LocalRoom);

/// What the stores of [`Durable`] tell newcomers.
const KEPT: &[u8] = b"[history] this room keeps its lines forever\n";

struct ToldSubscription {
    inner: LocalSubscription,
    told: bool,
}

impl ToldSubscription {
    /// `line`, unless it is the first retention line.
    fn pass(&mut self, line: Bytes) -> Option<Bytes> {
        if !self.told && line == KEPT {
            self.told = true;
            return None;
        }
        Some(line)
    }
}

impl Subscription for ToldSubscription {
    async fn recv(&mut self) -> Result<Bytes, RecvError> {
        loop {
            let line = self.inner.recv().await?;
            if let Some(line) = self.pass(line) {
                return Ok(line);
            }
        }
    }
    fn try_recv(&mut self) -> Result<Option<Bytes>, RecvError> {
        while let Some(line) = self.inner.try_recv()? {
            if let Some(line) = self.pass(line) {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }
    fn is_lagging(&self) -> bool {
        self.inner.is_lagging()
    }
    fn private_waiting(&self) -> usize {
        self.inner.private_waiting()
    }
    fn is_put_out(&self) -> bool {
        self.inner.is_put_out()
    }
}

impl Room for Told {
    type Subscription = ToldSubscription;
    async fn join(&self, nick: &str) -> Result<ToldSubscription, JoinError> {
        let inner = self.0.join(nick).await?;
        Ok(ToldSubscription { inner, told: false })
    }
    fn say(&self, nick: &str, said: Said<'_>) {
        self.0.say(nick, said)
    }
    fn depart(&self, nick: &str, how: Departure<'_>) {
        self.0.depart(nick, how)
    }
    fn whisper(&self, from: &str, to: &str, text: &str) -> Result<Bytes, WhisperError> {
        self.0.whisper(from, to, text)
    }
    fn members(&self, max: usize) -> (usize, Vec<String>) {
        self.0.members(max)
    }
    fn close(&self, farewell: Bytes) {
        self.0.close(farewell)
    }
}

/// Rooms on one nats-server, each under a name of its own.
struct Cluster {
    nats: NatsServer,
    rooms: AtomicUsize,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster {
            nats: NatsServer::start().await,
            rooms: AtomicUsize::new(0),
        }
    }
}

impl Rooms for Cluster {
    type R = ClusterRoom;
    fn changes(&self, room: &ClusterRoom) -> Option<watch::Receiver<u64>> {
        Some(room.directory_changes())
    }
    async fn room(&self, spec: Spec) -> ClusterRoom {
        let n = self.rooms.fetch_add(1, Ordering::Relaxed);
        ClusterRoom::connect(ClusterOptions {
            max_members: spec.max_members,
            backlog: spec.backlog,
            history: spec.history,
            announce: spec.announce,
            ..ClusterOptions::new(self.nats.url(), format!("room{n}"), format!("node{n}"))
        })
        .await
        .expect("the node joins the cluster")
    }
}

/// The next line, waiting for it (within [`WAIT`]).
async fn next(sub: &mut impl Subscription) -> String {
    let line = timeout(WAIT, sub.recv())
        .await
        .expect("a line in time")
        .expect("a line");
    String::from_utf8(line.to_vec()).expect("UTF-8")
}

/// The next `n` lines.
async fn lines(sub: &mut impl Subscription, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(next(sub).await);
    }
    got
}

/// Waits until `check` holds, looking again after each of `changes` (a
/// room without them must hold at once).
async fn eventually(
    what: &str,
    mut changes: Option<watch::Receiver<u64>>,
    mut check: impl FnMut() -> bool,
) {
    timeout(WAIT, async {
        while !check() {
            match changes.as_mut() {
                None => panic!("not at once: {what}"),
                Some(changes) => changes.changed().await.expect("the room is up"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

async fn joins<R: Room>(room: &R, nick: &str) -> R::Subscription {
    let mut sub = room.join(nick).await.expect("joins");
    assert_eq!(next(&mut sub).await, format!("{nick} joined!\n"));
    sub
}

async fn one_order_for_everyone<R: Room>(rooms: impl Rooms<R = R>) {
    let room = rooms.room(Spec::default()).await;
    let mut alice = joins(&room, "Alice").await;
    let mut carol = joins(&room, "Carol").await;
    let mut bob = joins(&room, "Bob").await;
    assert_eq!(next(&mut alice).await, "Carol joined!\n");
    assert_eq!(lines(&mut alice, 1).await, lines(&mut carol, 1).await);
    room.publish("Alice", "hi");
    room.act("Bob", "waves");
    room.quit("Bob", "lunch");
    // Someone who is not here leaves nothing to announce.
    room.leave("nobody");
    room.publish("Alice", "bye");
    let seen = lines(&mut alice, 4).await;
    // Everybody sees the one order, whatever it is between different
    // participants' lines said at once...
    assert_eq!(lines(&mut carol, 4).await, seen);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "* Bob waves\n",
            "Alice: bye\n",
            "Alice: hi\n",
            "Bob left! (lunch)\n"
        ]
    );
    // ... and each participant's own in the order it said them.
    let at = |line: &str| seen.iter().position(|l| l == line);
    assert!(at("Alice: hi\n") < at("Alice: bye\n"), "{seen:?}");
    assert!(at("* Bob waves\n") < at("Bob left! (lunch)\n"), "{seen:?}");
    // The one who left sees what was said before it left, in that order.
    let before_it_left = &seen[..at("Bob left! (lunch)\n").unwrap_or(0)];
    assert_eq!(lines(&mut bob, before_it_left.len()).await, before_it_left);
}

async fn a_nickname_is_taken_in_any_case_and_lookalike<R: Room>(rooms: impl Rooms<R = R>) {
    let room = rooms.room(Spec::default()).await;
    let _bob = joins(&room, "Bob").await;
    for other in ["bob", "BOB", "B0B", "b0b"] {
        assert!(
            matches!(room.join(other).await, Err(JoinError::Nick(_))),
            "{other} must be refused while Bob is here"
        );
    }
    room.leave("Bob");
    // Free again once its owner left.
    let _again = joins(&room, "B0B").await;
}

async fn a_full_room_refuses<R: Room>(rooms: impl Rooms<R = R>) {
    let room = rooms
        .room(Spec {
            max_members: 2,
            ..Spec::default()
        })
        .await;
    let _a = joins(&room, "a").await;
    let _b = joins(&room, "b").await;
    assert!(matches!(room.join("c").await, Err(JoinError::Full)));
    room.leave("b");
    let _c = joins(&room, "c").await;
}

async fn nothing_follows_the_farewell<R: Room>(rooms: impl Rooms<R = R>) {
    let room = rooms.room(Spec::default()).await;
    let mut a = joins(&room, "a").await;
    room.publish("a", "before");
    assert_eq!(next(&mut a).await, "a: before\n");
    room.close(bytes::Bytes::from_static(b"bye\n"));
    room.publish("a", "late");
    room.leave("a");
    assert_eq!(next(&mut a).await, "bye\n");
    assert!(matches!(room.join("b").await, Err(JoinError::Closed)));
    // Nothing after the farewell: the next read finds the room closed, or
    // nothing at all.
    match timeout(std::time::Duration::from_millis(300), a.recv()).await {
        Err(_) | Ok(Err(RecvError::Closed)) => {}
        Ok(other) => panic!("after the farewell: {other:?}"),
    }
}

async fn concurrent_senders_keep_one_order<R: Room>(rooms: impl Rooms<R = R>) {
    const SENDERS: usize = 4;
    const EACH: usize = 50;
    let room = Arc::new(rooms.room(Spec::default()).await);
    let mut readers = Vec::new();
    for name in ["r1", "r2"] {
        readers.push(joins(&*room, name).await);
    }
    let mut subs = Vec::new();
    for s in 0..SENDERS {
        subs.push(joins(&*room, &format!("s{s}")).await);
    }
    let tasks: Vec<_> = (0..SENDERS)
        .map(|s| {
            let room = room.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    room.publish(&format!("s{s}"), &format!("{i}"));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
    let mut seen = Vec::new();
    for reader in &mut readers {
        let mut got = Vec::new();
        while got.len() < SENDERS * EACH {
            let line = next(reader).await;
            if !line.contains(" joined!") {
                got.push(line);
            }
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "both readers see one order");
    for s in 0..SENDERS {
        let mine: Vec<String> = seen[0]
            .iter()
            .filter(|l| l.starts_with(&format!("s{s}: ")))
            .cloned()
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("s{s}: {i}\n")).collect();
        assert_eq!(mine, expected, "s{s}'s lines in the order said");
    }
}

async fn private_lines_find_their_recipient_in_any_case_and_lookalike<R: Room>(
    rooms: impl Rooms<R = R>,
) {
    let room = rooms.room(Spec::default()).await;
    let mut alice = joins(&room, "alice").await;
    let mut bob = joins(&room, "bob").await;
    assert_eq!(next(&mut alice).await, "bob joined!\n");
    for to in ["bob", "BOB", "B0B"] {
        let echo = room.whisper("alice", to, "psst").expect("sent");
        assert_eq!(echo, "[private] alice -> bob: psst\n", "/msg {to}");
        assert_eq!(next(&mut bob).await, "[private] alice -> bob: psst\n");
    }
    assert_eq!(
        room.whisper("alice", "nob\u{1b}[2Jody", "psst"),
        Err(WhisperError::NoSuchNick("nob[2Jody".into()))
    );
    // To oneself: the echo is the delivery.
    assert_eq!(
        room.whisper("alice", "ALICE", "note").expect("sent"),
        "[private] alice -> alice: note\n"
    );
    room.publish("bob", "after");
    assert_eq!(next(&mut alice).await, "bob: after\n");
}

async fn a_private_line_never_overtakes_the_public_lines_before_it<R: Room>(
    rooms: impl Rooms<R = R>,
) {
    let room = rooms.room(Spec::default()).await;
    let _alice = joins(&room, "alice").await;
    let mut bob = joins(&room, "bob").await;
    for round in 0..5 {
        room.publish("alice", &format!("look {round}"));
        room.whisper("alice", "bob", &format!("what do you think {round}?"))
            .expect("sent");
    }
    let got = lines(&mut bob, 10).await;
    // A private line comes after the public lines said before it (later
    // public lines may come before it, as they may on any connection).
    for round in 0..5 {
        let public = got
            .iter()
            .position(|l| *l == format!("alice: look {round}\n"));
        let private = got
            .iter()
            .position(|l| *l == format!("[private] alice -> bob: what do you think {round}?\n"));
        assert!(public.is_some() && private.is_some(), "{got:?}");
        assert!(public < private, "round {round}: {got:?}");
    }
}

async fn a_recipient_that_does_not_read_refuses_private_lines<R: Room>(rooms: impl Rooms<R = R>) {
    let room = rooms.room(Spec::default()).await;
    let mut alice = joins(&room, "alice").await;
    let _bob = joins(&room, "bob").await;
    assert_eq!(next(&mut alice).await, "bob joined!\n");
    let refusal = "\"bob\" is not reading; private message not delivered";
    let mut refused = 0;
    for i in 0..MAILBOX_LINES + 1 {
        match room.whisper("alice", "bob", &format!("{i}")) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.to_string(), refusal);
                refused += 1;
            }
        }
    }
    // A room that cannot know at once (the recipient may be on another
    // node) tells the sender with a line of its own.
    if refused == 0 {
        assert_eq!(next(&mut alice).await, format!("ERROR {refusal}\n"));
        refused = 1;
    }
    assert_eq!(refused, 1, "exactly the line beyond the mailbox is refused");
}

async fn a_newcomer_gets_the_last_public_lines_marked<R: Room>(rooms: impl Rooms<R = R>) {
    let room = rooms
        .room(Spec {
            history: 2,
            ..Spec::default()
        })
        .await;
    let mut alice = joins(&room, "alice").await;
    room.publish("alice", "one");
    room.act("alice", "waves");
    room.publish("alice", "two");
    // Stored by the time its sender reads it back.
    assert_eq!(lines(&mut alice, 3).await[2], "alice: two\n");
    // Right after its own `joined!`, before anything live.
    let mut bob = joins(&room, "Bob").await;
    assert_eq!(
        lines(&mut bob, 2).await,
        ["[history] * alice waves\n", "[history] alice: two\n"]
    );
    room.publish("alice", "three");
    assert_eq!(next(&mut bob).await, "alice: three\n");
}

async fn a_subscriber_that_falls_behind_is_told<R: Room>(rooms: impl Rooms<R = R>) {
    let room = rooms
        .room(Spec {
            backlog: backlog::MIN_BYTES,
            ..Spec::default()
        })
        .await;
    let mut slow = joins(&room, "slow").await;
    let mut fast = joins(&room, "fast").await;
    let text = "x".repeat(1000);
    // Twice what the smallest backlog holds.
    let count = 2 * backlog::MIN_BYTES / backlog::cost(text.as_bytes());
    // The fast one reads each line as it comes; the slow one reads none.
    for _ in 0..count {
        room.publish("fast", &text);
        assert_eq!(next(&mut fast).await, format!("fast: {text}\n"));
    }
    assert!(slow.is_lagging());
    assert!(matches!(slow.recv().await, Err(RecvError::Lagged(_))));
}

async fn members_lists_the_first_names_alphabetically_with_the_count<R: Room>(
    rooms: impl Rooms<R = R>,
) {
    let room = rooms.room(Spec::default()).await;
    let mut subs = Vec::new();
    for nick in ["kate", "Alice", "ivan", "bob", "Carol"] {
        subs.push(joins(&room, nick).await);
    }
    let all = ["Alice", "bob", "Carol", "ivan", "kate"].map(String::from);
    eventually("everybody is listed", rooms.changes(&room), || {
        room.members(10) == (5, all.to_vec())
    })
    .await;
    assert_eq!(room.members(2), (5, all[..2].to_vec()));
    room.leave("Carol");
    eventually("Carol is gone", rooms.changes(&room), || {
        room.members(10).0 == 4
    })
    .await;
    assert_eq!(
        room.members(10),
        (
            4,
            ["Alice", "bob", "ivan", "kate"].map(String::from).to_vec()
        )
    );
}

async fn joins_and_leaves_past_the_announced_size_are_told_to_nobody<R: Room>(
    rooms: impl Rooms<R = R>,
) {
    let room = rooms
        .room(Spec {
            announce: Announce::UpTo(3),
            ..Spec::default()
        })
        .await;
    let here = |n: usize| {
        let room = &room;
        eventually("the room's size", rooms.changes(room), move || {
            room.members(10).0 == n
        })
    };
    let mut a = joins(&room, "a").await;
    let mut b = joins(&room, "b").await;
    let _c = joins(&room, "c").await;
    // The size is the whole room's: the newcomer is counted against all
    // three.
    here(3).await;
    let mut d = room.join("d").await.expect("joins");
    assert_eq!(
        lines(&mut d, 2).await,
        [
            "d joined!\n",
            "[room] 4 here; joins and leaves are not announced in rooms over 3\n"
        ]
    );
    here(4).await;
    room.publish("a", "hello");
    assert_eq!(
        lines(&mut a, 3).await,
        ["b joined!\n", "c joined!\n", "a: hello\n"]
    );
    assert_eq!(next(&mut d).await, "a: hello\n");
    // Leaving a room of four is not announced; leaving one of three is.
    room.leave("d");
    here(3).await;
    room.quit("c", "lunch");
    room.publish("a", "bye");
    let expected = ["c left! (lunch)\n", "a: bye\n"];
    assert_eq!(lines(&mut a, 2).await, expected);
    assert_eq!(
        lines(&mut b, 4).await,
        ["c joined!\n", "a: hello\n", "c left! (lunch)\n", "a: bye\n"]
    );
}

/// The next line of a participant's channels, waiting for it.
async fn heard<R: Room>(joined: &mut Joined<'_, R>) -> String {
    let line = timeout(WAIT, joined.recv())
        .await
        .expect("a line in time")
        .expect("a line");
    String::from_utf8(line.to_vec()).expect("UTF-8")
}

/// The next `n` lines, sorted: lines of different channels have no order
/// between them.
async fn heard_sorted<R: Room>(joined: &mut Joined<'_, R>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(heard(joined).await);
    }
    got.sort();
    got
}

fn texts(lines: Vec<Bytes>) -> Vec<String> {
    lines
        .into_iter()
        .map(|line| String::from_utf8(line.to_vec()).expect("UTF-8"))
        .collect()
}

async fn channels_have_their_own_lines_members_and_topic<R: Room>(rooms: impl Rooms<R = R>) {
    let room = Arc::new(rooms.room(Spec::default()).await);
    let channels = Channels::new(room.clone(), 10, 10);
    let mut alice = Joined::new(joins(&*room, "alice").await, &channels, "alice");
    let mut bob = Joined::new(joins(&*room, "bob").await, &channels, "bob");
    assert_eq!(heard(&mut alice).await, "bob joined!\n");
    let joined = alice.join("#ops").await.expect("joins #ops");
    assert_eq!(
        texts(joined),
        ["#ops alice joined!\n", "[join] #ops: 1 here\n"]
    );
    assert_eq!(alice.topic(), "[topic] #ops has no topic\n");
    // A lookalike name is the same channel, spelled as its first member did.
    let joined = bob.join("#0ps").await.expect("joins #ops");
    assert_eq!(
        texts(joined),
        ["#ops bob joined!\n", "[join] #ops: 2 here\n"]
    );
    assert_eq!(heard(&mut alice).await, "#ops bob joined!\n");

    alice.current().publish("alice", "hi");
    room.publish("bob", "in the lobby");
    let both = ["#ops alice: hi\n", "bob: in the lobby\n"];
    assert_eq!(heard_sorted(&mut alice, 2).await, both);
    assert_eq!(heard_sorted(&mut bob, 2).await, both);

    channels
        .set_topic(Some("#ops"), "deploy at noon", "alice")
        .expect("topic set");
    for joined in [&mut alice, &mut bob] {
        assert_eq!(
            heard(joined).await,
            "[topic] #ops: deploy at noon set by alice\n"
        );
        assert_eq!(joined.topic(), "[topic] #ops: deploy at noon\n");
    }
    let mut carol = Joined::new(joins(&*room, "carol").await, &channels, "carol");
    for joined in [&mut alice, &mut bob] {
        assert_eq!(heard(joined).await, "carol joined!\n");
    }
    let joined = carol.join("#ops").await.expect("joins #ops");
    assert_eq!(
        texts(joined),
        [
            "#ops carol joined!\n",
            "[join] #ops: 3 here\n",
            "[topic] #ops: deploy at noon\n"
        ]
    );
    for joined in [&mut alice, &mut bob] {
        assert_eq!(heard(joined).await, "#ops carol joined!\n");
    }

    let part = bob.part(None).expect("leaves #ops");
    assert_eq!(part, "[part] #ops: you left it; now in #lobby\n");
    assert_eq!(heard(&mut alice).await, "#ops bob left!\n");
    let ops = alice.current();
    let two = ["alice", "carol"].map(String::from).to_vec();
    eventually("bob is gone from #ops", rooms.changes(&room), || {
        ops.members(10) == (2, two.clone())
    })
    .await;

    // Put out of the room and of its channel, each told.
    let told = Bytes::from_static(b"ERROR kicked by alice: spam\n");
    let how = Departure::Kicked {
        by: "alice",
        reason: Some("spam"),
        ban: false,
    };
    assert_eq!(channels.put_out("carol", told, how).await, Ok(true));
    assert_eq!(
        heard_sorted(&mut alice, 2).await,
        [
            "#ops carol was kicked by alice (spam)\n",
            "carol was kicked by alice (spam)\n"
        ]
    );
    // Its last line says why (after what was said before it).
    while heard(&mut carol).await != "ERROR kicked by alice: spam\n" {}
    // Then at most the lines about it, and the end.
    loop {
        match timeout(WAIT, carol.recv()).await.expect("the end in time") {
            Ok(line) => assert!(line.ends_with(b"kicked by alice (spam)\n"), "{line:?}"),
            Err(end) => break assert_eq!(end, RecvError::Closed),
        }
    }
}

/// Runs each channel case once per room that has channels.
macro_rules! conformance_channels {
    ($($case:ident),* $(,)?) => {
        mod channels {
            mod local {
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::super::$case(super::super::Local).await
                    }
                )*
            }
            mod cluster {
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::super::$case(super::super::Cluster::start().await).await
                    }
                )*
            }
        }
    };
}

conformance_channels!(channels_have_their_own_lines_members_and_topic);

/// Runs each case once per room.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Local).await
                }
            )*
        }
        mod durable {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Durable::new()).await
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Cluster::start().await).await
                }
            )*
        }
    };
}

conformance!(
    one_order_for_everyone,
    a_nickname_is_taken_in_any_case_and_lookalike,
    a_full_room_refuses,
    nothing_follows_the_farewell,
    concurrent_senders_keep_one_order,
    private_lines_find_their_recipient_in_any_case_and_lookalike,
    a_private_line_never_overtakes_the_public_lines_before_it,
    a_recipient_that_does_not_read_refuses_private_lines,
    a_newcomer_gets_the_last_public_lines_marked,
    a_subscriber_that_falls_behind_is_told,
    members_lists_the_first_names_alphabetically_with_the_count,
    joins_and_leaves_past_the_announced_size_are_told_to_nobody,
);
