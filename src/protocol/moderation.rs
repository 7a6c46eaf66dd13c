//! What operators (`serve --operators`) do, as lines: `/kick NICK
//! [REASON]` and what it tells whom.

use super::error_line;
use bytes::Bytes;

/// What a non-operator is told when it tries an operator's command.
pub const NOT_AN_OPERATOR: &str = "not an operator";

/// `<nick> was kicked by <op>`, or `... (<reason>)`: what the channels the
/// participant was in see instead of its `left!`.
pub fn kicked_line(nick: &str, by: &str, reason: Option<&str>) -> Bytes {
    match reason {
        None => Bytes::from(format!("{nick} was kicked by {by}\n")),
        Some(reason) => Bytes::from(format!("{nick} was kicked by {by} ({reason})\n")),
    }
}

/// `ERROR kicked by <op>`, or `...: <reason>`: the last line the
/// participant put out receives.
pub fn kicked_error(by: &str, reason: Option<&str>) -> Bytes {
    match reason {
        None => error_line(format!("kicked by {by}")),
        Some(reason) => error_line(format!("kicked by {by}: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_reads_the_same_for_everyone() {
        assert_eq!(
            kicked_line("bob", "alice", None),
            "bob was kicked by alice\n"
        );
        assert_eq!(
            kicked_line("bob", "alice", Some("spam")),
            "bob was kicked by alice (spam)\n"
        );
        assert_eq!(kicked_error("alice", None), "ERROR kicked by alice\n");
        assert_eq!(
            kicked_error("alice", Some("spam")),
            "ERROR kicked by alice: spam\n"
        );
    }
}
