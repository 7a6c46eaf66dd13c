//! Telling the room's announcements (joins and leaves) from what people
//! say, for the server's pacing of its writes: a storm of joins needs no
//! write of its own per join to each participant, while what people say
//! does.

use super::MAX_NICK_LEN;

/// Whether `line` (as the room sends it, with its terminator) is a join or
/// a leave: `<nick> joined!`, `<nick> left!` or `<nick> left! (REASON)`.
/// Nothing a participant says reads like one: a message's nickname is
/// followed by `: `, an action starts with `* `, and nicknames hold only
/// letters, digits, `_` and `-` (see [`super::validate_nickname`]).
///
/// ```
/// use chatroom::protocol::{
///     action_line, chat_line, is_announcement, joined_line, left_line, left_line_because,
/// };
///
/// assert!(is_announcement(&joined_line("alice")));
/// assert!(is_announcement(&left_line("bob-2")));
/// assert!(is_announcement(&left_line_because("carol", "bye (for now)")));
/// assert!(!is_announcement(&chat_line("alice", "bob joined!")));
/// assert!(!is_announcement(&action_line("alice", "joined!")));
/// assert!(!is_announcement(b"[room] 1001 here\n"));
/// assert!(!is_announcement(b"* alice left! (no)\n"));
/// assert!(!is_announcement(b"alice: x left! (no)\n"));
/// ```
pub fn is_announcement(line: &[u8]) -> bool {
    // The ending first: it tells most messages apart at once.
    let nick = if let Some(nick) = line.strip_suffix(b" joined!\n") {
        nick
    } else if let Some(nick) = line.strip_suffix(b" left!\n") {
        nick
    } else if line.ends_with(b")\n") {
        let Some(space) = line.iter().take(MAX_NICK_LEN + 1).position(|&b| b == b' ') else {
            return false;
        };
        if !line[space..].starts_with(b" left! (") {
            return false;
        }
        &line[..space]
    } else {
        return false;
    };
    nick.len() <= MAX_NICK_LEN
        && nick.first().is_some_and(u8::is_ascii_alphabetic)
        && nick
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
