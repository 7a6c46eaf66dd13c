//! Telling the room's announcements (joins and leaves) from what people
//! say, for the server's pacing of its writes: a storm of joins needs no
//! write of its own per join to each participant, while what people say
//! does.

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
/// ```
pub fn is_announcement(line: &[u8]) -> bool {
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (nick, rest) = (&line[..space], &line[space + 1..]);
    let is_nick = nick.first().is_some_and(u8::is_ascii_alphabetic)
        && nick
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    is_nick
        && (rest == b"joined!\n"
            || rest == b"left!\n"
            || (rest.starts_with(b"left! (") && rest.ends_with(b")\n")))
}
