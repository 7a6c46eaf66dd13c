//! The chat protocol itself: line framing, nickname rules, text sanitizing and
//! the exact texts of every line the server sends.
//!
//! Everything here is pure (no I/O, no clock), so it can be unit-tested,
//! property-tested and fuzzed on its own; `session` and `client` only move
//! bytes between sockets and these functions.
//!
//! # Wire format
//!
//! * Transport: TLS (ALPN `chat/1`) or, with `--plaintext`, bare TCP.
//! * Framing: UTF-8 text lines ending in `\n`; a `\r` right before the `\n`
//!   is dropped. A line holds at most [`DEFAULT_MAX_LINE`] bytes without its
//!   terminator (a server setting). Unlike the lab's `recv(1024)`, two
//!   messages never merge and one never splits.
//! * Handshake: the server sends `NICK`; the client answers with one line,
//!   its nickname (see [`validate_nickname`]). A rejected nickname gets
//!   `ERROR <reason>` and `NICK` again; after [`MAX_NICK_ATTEMPTS`]
//!   rejections the server closes the connection.
//! * Nicknames are unique by their skeleton ([`nick_key`]): case and the
//!   ASCII lookalikes (`I`/`l`/`1`/`|`, `O`/`0`, `-`/`_`) are folded, so
//!   `aIice` is taken while `alice` is here. `NICK` and names starting with
//!   `server` or `error` are reserved, on the skeleton too.
//! * Joining: everyone (the newcomer included) receives `<nick> joined!`,
//!   then the newcomer receives `Connected to server!`. In a room of more
//!   than `serve --announce-up-to` participants (1,000 by default) only the
//!   newcomer receives its `joined!`, and after `Connected to server!` the
//!   line of [`quiet_room_line`]; the others are not told, nor of leaves.
//! * Chat: every further non-empty line is a message; everyone (the sender
//!   included) receives `<nick>: <text>`, in one global order. The server
//!   writes the nickname itself, so nobody can speak as somebody else.
//!   Before that it strips the characters of [`is_unsafe_char`] (terminal
//!   controls, bidirectional controls, invisible and separator characters);
//!   everything else, whitespace included, is relayed as sent.
//! * Leaving: the others receive `<nick> left!`, or `<nick> left! (REASON)`
//!   after `/quit REASON`.
//! * History: with `serve --history N`, a newcomer receives the room's last
//!   N public lines (messages and actions, never private ones) right after
//!   `Connected to server!`, each prefixed `[history] ` (see
//!   [`history_line`]); live lines never carry that prefix.
//!
//! # Commands
//!
//! A line starting with `/` is a command (see [`parse_input`]); the command
//! word is matched without regard to case. Commands count against the same
//! rate limit and line limit as messages, and their texts are sanitized the
//! same way.
//!
//! | command | effect |
//! |---|---|
//! | `/list` | one line to the asker only: `[list] N here: a, b, c` (sorted; at most [`LIST_MAX`] names, then `and K more`), of the asker's current channel |
//! | `/join #NAME`, `/part [#NAME]`, `/rooms` | channels: see [`channels`] and docs/protocol.md |
//! | `/kick`, `/ban`, `/mute`, `/unmute`, `/topic` | operators only: see [`moderation`] and docs/protocol.md |
//! | `/msg NICK TEXT` | `[private] <from> -> <to>: TEXT` to NICK only, and the same line back to the sender; an unknown NICK gets `ERROR no such nickname "NICK"` |
//! | `/me TEXT` | `* <nick> TEXT` to everyone |
//! | `/quit [REASON]` | leave; the others receive `<nick> left!` or `<nick> left! (REASON)` |
//! | `/help` | the commands, one `[help] ` line each, to the asker only |
//! | `/history [N]` | with `serve --data`: the N (20, at most [`RECALL_MAX`]) public lines before the oldest the asker was shown, each marked `[history] `, to the asker only; without it, `ERROR unknown command` |
//! | `/search WORDS` | with `serve --data`: up to [`SEARCH_MAX`] messages and actions holding every word, newest first, as `[search] YYYY-MM-DD HH:MM <line>`, then `[search] N matches`, to the asker only; without it, `ERROR unknown command` |
//! | anything else | `ERROR unknown command`, to the sender only |
//!
//! A line starting with `//` is not a command: it is sent as a message
//! starting with `/` (`//etc/hosts` shows as `<nick>: /etc/hosts`).
//!
//! No participant can produce a line that reads like these: every line a
//! participant causes starts with its nickname (letters, digits, `_`, `-`),
//! followed by `: `, ` joined!` or ` left!`, or with `* <nick> `; the
//! bracketed prefixes `[private]`, `[history]`, `[list]`, `[help]` and
//! `ERROR ` are the server's alone.

mod announcement;
pub mod channels;
mod framing;
pub mod moderation;
mod recorded;

pub use announcement::is_announcement;
pub use framing::{FrameError, LineFramer, READ_CHUNK};
pub use recorded::{
    HELP_RECORDED, RECALL_DEFAULT, RECALL_MAX, SEARCH_MAX, SEARCH_PREFIX, retention_line,
    search_line, search_summary,
};

use bytes::{Bytes, BytesMut};
use std::borrow::Cow;
use std::fmt;

/// The ALPN protocol identifier clients offer and the server accepts.
pub const ALPN_CHAT: &[u8] = b"chat/1";

/// Default port, the lab's.
pub const DEFAULT_PORT: u16 = 55555;

/// Rooms of up to this many participants tell everybody of joins and
/// leaves (`serve --announce-up-to`).
pub const DEFAULT_ANNOUNCE_UP_TO: usize = 1000;

/// What a newcomer to a room of `here` participants, over `up_to`, is told
/// after `Connected to server!`: that joins and leaves are not announced.
pub fn quiet_room_line(here: usize, up_to: usize) -> Bytes {
    Bytes::from(format!(
        "[room] {here} here; joins and leaves are not announced in rooms over {up_to}\n"
    ))
}

/// Default longest line, in bytes, without its terminator.
pub const DEFAULT_MAX_LINE: usize = 4096;

/// How many rejected nicknames a connection gets before it is closed.
pub const MAX_NICK_ATTEMPTS: u32 = 3;

/// Longest nickname, in bytes (all nickname characters are ASCII).
pub const MAX_NICK_LEN: usize = 32;

/// The server's request for a nickname.
pub const NICK: &str = "NICK";

/// Sent to a newcomer right after its own `joined!` line.
pub const CONNECTED: &str = "Connected to server!";

/// Sent to everybody when the server stops.
pub const SHUTTING_DOWN: &str = "Server is shutting down";

/// Prefix of every error line.
pub const ERROR_PREFIX: &str = "ERROR ";

/// A nickname nobody may take, compared as a whole on the skeleton (see
/// [`nick_key`]): it would read like the server's request for a nickname.
/// Names that merely start with it (Nicky) are fine.
const RESERVED_NICK: &str = "NICK";

/// Beginnings nobody's nickname may have, compared on the skeleton: such a
/// name (`Server-`, `SERVER_notice`, `ERR0R-1`) would make its lines read
/// like the server's own.
const RESERVED_PREFIXES: [&str; 2] = ["server", "error"];

/// `<nick> joined!`, with its line terminator.
pub fn joined_line(nick: &str) -> Bytes {
    Bytes::from(format!("{nick} joined!\n"))
}

/// `<nick> left!`, with its line terminator.
pub fn left_line(nick: &str) -> Bytes {
    Bytes::from(format!("{nick} left!\n"))
}

/// `<nick>: <text>`, with its line terminator. Built once per message and
/// shared by every recipient.
pub fn chat_line(nick: &str, text: &str) -> Bytes {
    chat_line_in(b"", nick, text)
}

/// [`chat_line`] with `prefix` in front (a channel's name and a space, see
/// [`channels::in_channel`]), built in one piece: a channel's message costs
/// one allocation, as the lobby's does.
pub fn chat_line_in(prefix: &[u8], nick: &str, text: &str) -> Bytes {
    let mut line = BytesMut::with_capacity(prefix.len() + nick.len() + text.len() + 3);
    line.extend_from_slice(prefix);
    line.extend_from_slice(nick.as_bytes());
    line.extend_from_slice(b": ");
    line.extend_from_slice(text.as_bytes());
    line.extend_from_slice(b"\n");
    line.freeze()
}

/// A server line that is not part of the room's order (`NICK`, errors,
/// `Connected to server!`), with its terminator.
pub fn control_line(text: &str) -> Bytes {
    let mut line = BytesMut::with_capacity(text.len() + 1);
    line.extend_from_slice(text.as_bytes());
    line.extend_from_slice(b"\n");
    line.freeze()
}

/// `ERROR <reason>`, with its terminator.
pub fn error_line(reason: impl fmt::Display) -> Bytes {
    control_line(&format!("{ERROR_PREFIX}{reason}"))
}

/// `<nick> left! (<reason>)`, with its line terminator: a `/quit REASON`.
pub fn left_line_because(nick: &str, reason: &str) -> Bytes {
    Bytes::from(format!("{nick} left! ({reason})\n"))
}

/// `* <nick> <text>`, with its line terminator: a `/me` action.
pub fn action_line(nick: &str, text: &str) -> Bytes {
    Bytes::from(format!("* {nick} {text}\n"))
}

/// `[private] <from> -> <to>: <text>`, with its line terminator: a `/msg`,
/// as both its recipient and its sender see it.
pub fn private_line(from: &str, to: &str, text: &str) -> Bytes {
    Bytes::from(format!("{PRIVATE_PREFIX}{from} -> {to}: {text}\n"))
}

/// Prefix of a private message.
pub const PRIVATE_PREFIX: &str = "[private] ";

/// Prefix of a line replayed from the room's history to a newcomer.
pub const HISTORY_PREFIX: &str = "[history] ";

/// `line` (a terminated room line) marked as history: `[history] <line>`.
pub fn history_line(line: &[u8]) -> Bytes {
    let mut marked = BytesMut::with_capacity(HISTORY_PREFIX.len() + line.len());
    marked.extend_from_slice(HISTORY_PREFIX.as_bytes());
    marked.extend_from_slice(line);
    marked.freeze()
}

/// Most names a `/list` reply spells out; beyond, it says how many more.
pub const LIST_MAX: usize = 200;

/// The `/list` reply: `[list] N here: a, b, c`, for `total` participants
/// of whom `first` are named (in order, sorted without regard to case by
/// the room), then `and K more` for the rest.
pub fn list_line(total: usize, first: &[String]) -> Bytes {
    let mut text = format!("[list] {total} here: {}", first.join(", "));
    if total > first.len() {
        text.push_str(&format!(", and {} more", total - first.len()));
    }
    control_line(&text)
}

/// The `/help` reply, one line per command.
pub const HELP: [&str; 10] = [
    "[help] /list: who is here (in your current channel)",
    "[help] /join #NAME: join a channel (made if new) and speak there",
    "[help] /part [#NAME]: leave a channel (default: the current one)",
    "[help] /rooms: the channels, and how many are in each",
    "[help] /topic: the current channel's topic",
    "[help] /msg NICK TEXT: a private message to NICK only",
    "[help] /me TEXT: an action, shown as * NICK TEXT",
    "[help] /quit [REASON]: leave, telling the others why",
    "[help] /help: this list",
    "[help] //TEXT: send a message that starts with /",
];

/// What the server does with one line a joined participant sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Nothing to do (an empty line, or one that was only control characters).
    Empty,
    /// A `/command`.
    Command(Command<'a>),
    /// A chat message, already sanitized.
    Message(Cow<'a, str>),
}

/// A command line, parsed; every text in it is already sanitized.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `/list`.
    List,
    /// `/msg NICK TEXT`.
    Msg { to: &'a str, text: Cow<'a, str> },
    /// `/me TEXT`.
    Me(Cow<'a, str>),
    /// `/quit [REASON]`.
    Quit(Option<Cow<'a, str>>),
    /// `/help`.
    Help,
    /// `/history [N]`: how many lines (1 to [`RECALL_MAX`]).
    History(usize),
    /// `/search WORDS`.
    Search(Cow<'a, str>),
    /// `/join #NAME` (the name as typed: checked by whoever acts on it).
    Join(&'a str),
    /// `/part [#NAME]`: without a name, the current channel.
    Part(Option<&'a str>),
    /// `/rooms`.
    Rooms,
    /// `/kick NICK [REASON]`, or with `ban`, `/ban NICK [REASON]`.
    Kick {
        nick: &'a str,
        reason: Option<Cow<'a, str>>,
        ban: bool,
    },
    /// `/mute NICK DURATION`; the duration, and as typed.
    Mute {
        nick: &'a str,
        duration: std::time::Duration,
        typed: &'a str,
    },
    /// `/unmute NICK`.
    Unmute(&'a str),
    /// `/topic TEXT`.
    Topic(Cow<'a, str>),
    /// `/topic` alone: the current channel's topic, to the asker (anyone
    /// may ask).
    ShowTopic,
    /// A known command without what it needs; the text is the usage.
    Usage(&'static str),
    /// Any other command word.
    Unknown,
}

/// Classifies one received line (already framed and decoded as UTF-8).
///
/// ```
/// use chatroom::protocol::{parse_input, Command, Input};
///
/// assert_eq!(parse_input("/ME waves"), Input::Command(Command::Me("waves".into())));
/// assert_eq!(parse_input("//etc/hosts"), Input::Message("/etc/hosts".into()));
/// assert_eq!(parse_input("/nick bob"), Input::Command(Command::Unknown));
/// ```
pub fn parse_input(line: &str) -> Input<'_> {
    if let Some(rest) = line.strip_prefix('/')
        && !rest.starts_with('/')
    {
        return Input::Command(parse_command(rest));
    }
    // `//text` is the message `/text`.
    let line = line.strip_prefix('/').unwrap_or(line);
    let text = sanitize(line);
    if text.is_empty() {
        Input::Empty
    } else {
        Input::Message(text)
    }
}

/// Whether a typed line is `/quit`, after which the server closes.
pub fn is_quit(line: &str) -> bool {
    matches!(parse_input(line), Input::Command(Command::Quit(_)))
}

/// A command line after its `/`.
fn parse_command(rest: &str) -> Command<'_> {
    let rest = rest.trim_start();
    let (word, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let word = word.to_ascii_lowercase();
    if let Some(command) = channels::parse(&word, args).or_else(|| moderation::parse(&word, args)) {
        return command;
    }
    match word.as_str() {
        "list" => Command::List,
        "help" => Command::Help,
        "me" => match clean(args) {
            Some(text) => Command::Me(text),
            None => Command::Usage("usage: /me TEXT"),
        },
        "quit" => Command::Quit(clean(args)),
        "history" => match args.trim() {
            "" => Command::History(RECALL_DEFAULT),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Command::History(n.min(RECALL_MAX)),
                _ => Command::Usage("usage: /history [N], N a number of lines"),
            },
        },
        "search" => match clean(args) {
            Some(words) => Command::Search(words),
            None => Command::Usage("usage: /search WORDS"),
        },
        "msg" => {
            let args = args.trim_start();
            let (to, text) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            match clean(text) {
                Some(text) if !to.is_empty() => Command::Msg { to, text },
                _ => Command::Usage("usage: /msg NICK TEXT"),
            }
        }
        _ => Command::Unknown,
    }
}

/// A text argument: sanitized, trimmed, and absent when nothing is left.
fn clean(s: &str) -> Option<Cow<'_, str>> {
    match sanitize(s.trim()) {
        Cow::Borrowed(b) if !b.is_empty() => Some(Cow::Borrowed(b)),
        Cow::Owned(o) if !o.trim().is_empty() => Some(Cow::Owned(o.trim().to_owned())),
        _ => None,
    }
}

/// Whether `c` must never reach a terminal. These are stripped from every
/// message by the server, and from every line by the client:
///
/// * C0 controls except tab, DEL, and C1 controls, so every escape
///   sequence loses its introducer;
/// * the Unicode bidirectional controls, which can make a line display
///   differently from what it says: the overrides and embeddings
///   (U+202A to U+202E), the isolates (U+2066 to U+2069) and the marks
///   (U+200E, U+200F, U+061C);
/// * invisible characters that can hide text or make two different texts
///   look the same: the zero-width space (U+200B), the byte-order mark
///   (U+FEFF), the soft hyphen (U+00AD), the Mongolian vowel separator
///   (U+180E), the word joiner and invisible operators (U+2060 to U+2064),
///   the deprecated format controls (U+206A to U+206F), the interlinear
///   annotation controls (U+FFF9 to U+FFFB) and the tag characters
///   (U+E0000 to U+E007F);
/// * the line and paragraph separators (U+2028, U+2029), which some
///   terminals and editors show as a line break inside one line.
///
/// The zero-width joiner and non-joiner (U+200C, U+200D) stay: scripts such
/// as Persian and the emoji sequences need them, and they show nothing on
/// their own.
pub fn is_unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{ad}' | '\u{61c}' | '\u{180e}'
        | '\u{200b}' | '\u{200e}' | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e007f}')
}

/// `text` without the characters of [`is_unsafe_char`]; borrows when there
/// was nothing to remove, which is the common case.
pub fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    // Printable ASCII holds none of them, and is what most lines are: one
    // pass over the bytes, without decoding characters, tells.
    let printable_ascii = text
        .bytes()
        .fold(true, |all, b| all & (b' '..=b'~').contains(&b));
    if !printable_ascii && text.chars().any(is_unsafe_char) {
        std::borrow::Cow::Owned(text.chars().filter(|c| !is_unsafe_char(*c)).collect())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Makes arbitrary bytes from the network safe to print: invalid UTF-8
/// becomes U+FFFD, and unsafe characters are dropped.
pub fn sanitize_bytes(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    sanitize(&text).into_owned()
}

/// Why a nickname was refused. The texts are what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NickError {
    #[error("nickname is empty")]
    Empty,
    #[error("nickname is longer than {MAX_NICK_LEN} characters")]
    TooLong,
    #[error("nickname must start with a letter")]
    BadStart,
    #[error("nickname may only hold ASCII letters, digits, '_' and '-'")]
    BadChar,
    #[error("nickname \"{0}\" is reserved")]
    Reserved(String),
    #[error("nickname \"{0}\" is taken")]
    Taken(String),
}

/// Checks a nickname against the rules: 1 to 32 ASCII letters, digits, `_`
/// or `-`, starting with a letter; not `NICK` and not starting with
/// `server` or `error`, compared on the skeleton (see [`nick_key`]), so in
/// any case and with lookalikes (`N1CK`, `ERR0R-1`). Uniqueness is the
/// room's business, not this function's.
///
/// ```
/// use chatroom::protocol::{validate_nickname, NickError};
///
/// assert_eq!(validate_nickname("Alice"), Ok("Alice"));
/// assert_eq!(validate_nickname("Nicky"), Ok("Nicky"));
/// assert_eq!(validate_nickname("alice bob"), Err(NickError::BadChar));
/// assert!(matches!(validate_nickname("Server"), Err(NickError::Reserved(_))));
/// assert!(matches!(validate_nickname("SERVER_notice"), Err(NickError::Reserved(_))));
/// assert!(matches!(validate_nickname("ERR0R-1"), Err(NickError::Reserved(_))));
/// ```
pub fn validate_nickname(nick: &str) -> Result<&str, NickError> {
    let first = nick.chars().next().ok_or(NickError::Empty)?;
    if nick.len() > MAX_NICK_LEN {
        return Err(NickError::TooLong);
    }
    if !first.is_ascii_alphabetic() {
        return Err(NickError::BadStart);
    }
    if !nick
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(NickError::BadChar);
    }
    let key = nick_key(nick);
    if key == nick_key(RESERVED_NICK)
        || RESERVED_PREFIXES
            .iter()
            .any(|prefix| key.starts_with(&nick_key(prefix)))
    {
        return Err(NickError::Reserved(nick.to_owned()));
    }
    Ok(nick)
}

/// The skeleton under which nicknames are compared: two nicknames with the
/// same skeleton are the same nickname, since they look alike on screen.
/// It folds case and the ASCII confusables: `I`, `l`, `1` and `|` (and `i`,
/// `L`, `!`) all become `l`; `O` and `0` become `o`; `-` becomes `_`.
///
/// ```
/// use chatroom::protocol::nick_key;
///
/// assert_eq!(nick_key("aIice"), nick_key("alice"));
/// assert_eq!(nick_key("B0B-1"), nick_key("bob_l"));
/// assert_ne!(nick_key("alice"), nick_key("alicia"));
/// ```
pub fn nick_key(nick: &str) -> String {
    nick.chars()
        .map(|c| match c.to_ascii_lowercase() {
            'i' | 'l' | '1' | '|' | '!' => 'l',
            '0' | 'o' => 'o',
            '-' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests;
