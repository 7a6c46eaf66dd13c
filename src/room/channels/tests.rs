//! One participant's reading of the lobby and a channel, in a real room.

use super::*;
use crate::room::local::LocalRoom;

/// Reads every line waiting, each marked with where it came from: `#ops`
/// or the lobby.
fn drain(joined: &mut Joined<'_, LocalRoom>) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    while let Some(line) = joined.try_recv().expect("not lagged") {
        let line = String::from_utf8(line.to_vec()).expect("utf-8");
        out.push((line.starts_with("#ops "), line));
    }
    out
}

/// A room and its channels, with `nick` in the lobby and in `#ops`, and
/// what that said read.
async fn in_lobby_and_ops<'c>(
    channels: &'c Channels<LocalRoom>,
    nick: &'c str,
) -> Joined<'c, LocalRoom> {
    let subscription = channels.lobby.join(nick).await.expect("joins");
    let mut joined = Joined::new(subscription, channels, nick);
    joined.join("#ops").await.expect("joins #ops");
    drain(&mut joined);
    joined
}

#[tokio::test]
async fn a_busy_channel_and_the_lobby_take_turns_each_in_its_order() {
    let lobby = Arc::new(LocalRoom::new(10, 1 << 20));
    let channels = Channels::new(lobby.clone(), 10, 5);
    let mut joined = in_lobby_and_ops(&channels, "alice").await;
    let ops = joined.current();
    for i in 0..300 {
        lobby.publish("alice", &format!("lobby {i}"));
        ops.publish("alice", &format!("ops {i}"));
    }
    let lines = drain(&mut joined);
    assert_eq!(lines.len(), 600);
    // Each in its own order, nothing lost.
    for (in_ops, prefix) in [(false, "alice: lobby"), (true, "#ops alice: ops")] {
        let own: Vec<&str> = lines
            .iter()
            .filter(|(from_ops, _)| *from_ops == in_ops)
            .map(|(_, line)| line.as_str())
            .collect();
        let expected: Vec<String> = (0..300).map(|i| format!("{prefix} {i}\n")).collect();
        assert_eq!(own, expected);
    }
    // Neither waits for the other to be empty: while both have lines, at
    // most a streak's worth comes from one before the other's turn.
    let last_of = |in_ops: bool| lines.iter().rposition(|(from, _)| *from == in_ops);
    let both_until = last_of(true).min(last_of(false)).expect("both read");
    let mut longest = 0;
    let mut run = 0;
    for (k, (from_ops, _)) in lines[..both_until].iter().enumerate() {
        run = if k > 0 && lines[k - 1].0 == *from_ops {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
    }
    assert!(
        longest <= STREAK_LINES,
        "{longest} lines in a row from one while the other waited"
    );
}

#[tokio::test]
async fn the_line_saying_why_it_was_put_out_is_its_last_whatever_its_channels_hold() {
    let channels = Channels::new(Arc::new(LocalRoom::new(10, 1 << 20)), 10, 5);
    let mut joined = in_lobby_and_ops(&channels, "bob").await;
    let kicked = Departure::Kicked {
        by: "alice",
        reason: None,
        ban: false,
    };
    let told = crate::protocol::error_line("kicked by alice");
    let put_out = channels.put_out("bob", told, kicked).await;
    assert_eq!(put_out, Ok(true));
    let lines: Vec<String> = drain(&mut joined)
        .into_iter()
        .map(|(_, line)| line)
        .collect();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("ERROR kicked by alice\n"),
        "{lines:?}"
    );
    // And then its reading ends.
    assert_eq!(joined.recv().await, Err(RecvError::Closed));
}
