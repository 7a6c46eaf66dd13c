//! How the terminal client shows a line from the server: a timestamp, a
//! mark saying what kind of line it is, a stable colour per nickname, and
//! rows wrapped by the client itself so that every continuation row is
//! visibly a continuation.
//!
//! Why wrap here rather than let the terminal do it: a participant can pad
//! a message with spaces to the terminal's width and continue with
//! `bob: meeting moved`, which the terminal would put at the start of a row
//! of its own, looking like bob's line. Here every line's first row starts
//! with its timestamp in column 0, and every further row starts with
//! [`CONTINUATION`], an indent no first row has, so no text a participant
//! sends can start a row that reads like a line of its own.
//!
//! Only used when stdout is a terminal; with pipes the client prints the
//! server's lines as they are, so scripts and tests see the protocol. Pure
//! (the time and width are passed in), so it is unit-tested on its own.

use crate::protocol::{self, ERROR_PREFIX, HISTORY_PREFIX, PRIVATE_PREFIX};
use anstyle::{AnsiColor, Effects, Style};
use std::fmt::Write as _;
use unicode_width::UnicodeWidthChar;

/// Columns of a first row before the line's text: `HH:MM` and the mark.
const PREFIX_COLUMNS: usize = 8;

/// What starts every continuation row: as wide as a first row's timestamp
/// and mark, with a bar where the mark would be.
pub const CONTINUATION: &str = "      | ";

/// The width used when the terminal's is unknown.
pub const DEFAULT_WIDTH: usize = 80;

/// What a line from the server is, as the client tells them apart. Nobody
/// but the server can produce any kind but [`Kind::Chat`] and
/// [`Kind::Action`], which always carry the sender's nickname first (after
/// its channel's name, in a channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `<nick>: <text>`.
    Chat { nick: &'a str, at: usize },
    /// `* <nick> <text>`.
    Action { nick: &'a str, at: usize },
    /// `[private] <from> -> <to>: <text>`.
    Private,
    /// `ERROR <reason>`.
    Error,
    /// `[history] <line>`: a line from before this participant joined.
    History,
    /// Anything else: joins, leaves, `Connected to server!`, `Server is
    /// shutting down`, replies to `/list` and `/help`.
    Server,
}

/// Whether `word` could be a nickname (letters, digits, `_`, `-`, starting
/// with a letter): the shape of the server's rules, not a lookup.
fn is_nick(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= protocol::MAX_NICK_LEN
        && word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Tells what kind of line `line` is.
pub fn classify(line: &str) -> Kind<'_> {
    if line.starts_with(ERROR_PREFIX) {
        return Kind::Error;
    }
    if line.starts_with(PRIVATE_PREFIX) {
        return Kind::Private;
    }
    if line.starts_with(HISTORY_PREFIX) {
        return Kind::History;
    }
    // A channel's lines carry its name first (`#ops alice: hi`).
    let at = line
        .split_once(' ')
        .filter(|(name, _)| protocol::channels::validate_channel(name).is_ok())
        .map_or(0, |(name, _)| name.len() + 1);
    let line = &line[at..];
    if let Some(rest) = line.strip_prefix("* ")
        && let Some((nick, _)) = rest.split_once(' ')
        && is_nick(nick)
    {
        return Kind::Action { nick, at };
    }
    if let Some((nick, _)) = line.split_once(": ")
        && is_nick(nick)
    {
        return Kind::Chat { nick, at };
    }
    Kind::Server
}

/// The palette nicknames are coloured from: everything but red, which
/// marks errors, and black and white, which may be the background.
const PALETTE: [AnsiColor; 10] = [
    AnsiColor::Green,
    AnsiColor::Yellow,
    AnsiColor::Blue,
    AnsiColor::Magenta,
    AnsiColor::Cyan,
    AnsiColor::BrightGreen,
    AnsiColor::BrightYellow,
    AnsiColor::BrightBlue,
    AnsiColor::BrightMagenta,
    AnsiColor::BrightCyan,
];

/// The colour of a nickname: the same for the same name (in any case) in
/// every session and on every machine (FNV-1a of its lower-case form).
pub fn nick_colour(nick: &str) -> AnsiColor {
    let hash = protocol::nick_key(nick)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

/// How to show lines: whose they are, and whether colours are on.
#[derive(Debug, Clone, Default)]
pub struct Display {
    /// This participant's nickname, once registered: its lines are marked.
    pub own_nick: Option<String>,
    /// ANSI colours and effects (off with `NO_COLOR`).
    pub colour: bool,
}

impl Display {
    /// Colours on unless `NO_COLOR` is set to anything non-empty
    /// (<https://no-color.org>) or the terminal is `dumb`.
    pub fn from_env() -> Display {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Display {
            own_nick: None,
            colour: !no_colour,
        }
    }

    fn is_own(&self, nick: &str) -> bool {
        self.own_nick
            .as_deref()
            .is_some_and(|own| protocol::nick_key(own) == protocol::nick_key(nick))
    }

    /// The screen rows for one line (already sanitized), received at
    /// `time` (`HH:MM`), for a terminal `width` columns wide, joined by
    /// `\n`, without a final one.
    ///
    /// The first row is `HH:MM` (or `--:--` for a history line, whose
    /// time is not known), a mark, and the start of the line:
    ///
    /// | mark | line |
    /// |---|---|
    /// | ` ` | another participant's message or action |
    /// | `>` | this participant's own message or action |
    /// | `P` | a private message, to or from this participant |
    /// | `!` | an error |
    /// | `-` | from the server: joins, leaves, replies, shutdown |
    /// | `h` | history, from before this participant joined |
    ///
    /// Every further row starts with [`CONTINUATION`].
    pub fn render(&self, line: &str, time: &str, width: usize) -> String {
        // A tab's width depends on the column; a space's does not.
        let line = line.replace('\t', " ");
        let kind = classify(&line);
        let (stamp, mark) = match &kind {
            Kind::Chat { nick, .. } | Kind::Action { nick, .. } if self.is_own(nick) => (time, '>'),
            Kind::Chat { .. } | Kind::Action { .. } => (time, ' '),
            Kind::Private => (time, 'P'),
            Kind::Error => (time, '!'),
            Kind::Server => (time, '-'),
            Kind::History => ("--:--", 'h'),
        };
        let rows = wrap(&line, width.max(PREFIX_COLUMNS + 10) - PREFIX_COLUMNS - 1);
        let mut out = String::with_capacity(line.len() + rows.len() * 16);
        for (i, (start, end)) in rows.iter().enumerate() {
            if i == 0 {
                self.paint(&mut out, Style::new().effects(Effects::DIMMED), stamp);
                out.push(' ');
                self.paint(&mut out, self.mark_style(&kind), &mark.to_string());
                out.push(' ');
            } else {
                out.push('\n');
                self.paint(
                    &mut out,
                    Style::new().effects(Effects::DIMMED),
                    CONTINUATION,
                );
            }
            self.paint_text(&mut out, &kind, &line, *start, *end);
        }
        out
    }

    fn mark_style(&self, kind: &Kind<'_>) -> Style {
        match kind {
            Kind::Chat { nick, .. } | Kind::Action { nick, .. } if self.is_own(nick) => {
                Style::new().effects(Effects::BOLD)
            }
            Kind::Private => Style::new()
                .fg_color(Some(AnsiColor::Magenta.into()))
                .effects(Effects::BOLD | Effects::INVERT),
            Kind::Error => Style::new()
                .fg_color(Some(AnsiColor::Red.into()))
                .effects(Effects::BOLD | Effects::INVERT),
            _ => Style::new().effects(Effects::DIMMED),
        }
    }

    /// Paints `line[start..end]`: the sender's nickname in its colour
    /// (bold for this participant's own), the rest by the line's kind.
    fn paint_text(&self, out: &mut String, kind: &Kind<'_>, line: &str, start: usize, end: usize) {
        let body = match kind {
            Kind::Private => Style::new().fg_color(Some(AnsiColor::Magenta.into())),
            Kind::Error => Style::new().fg_color(Some(AnsiColor::Red.into())),
            Kind::Server | Kind::History => Style::new().effects(Effects::DIMMED),
            Kind::Chat { .. } | Kind::Action { .. } => Style::new(),
        };
        // Where the nickname is in the line, if it has one.
        let nick_span = match kind {
            Kind::Chat { nick, at } => Some((*at, at + nick.len(), *nick)),
            Kind::Action { nick, at } => Some((at + 2, at + 2 + nick.len(), *nick)),
            _ => None,
        };
        let mut pos = start;
        if let Some((from, to, nick)) = nick_span
            && from < end
            && to > start
        {
            let (from, to) = (from.max(start), to.min(end));
            self.paint(out, body, &line[pos..from]);
            let mut style = Style::new().fg_color(Some(nick_colour(nick).into()));
            if self.is_own(nick) {
                style = style.effects(Effects::BOLD | Effects::UNDERLINE);
            } else {
                style = style.effects(Effects::BOLD);
            }
            self.paint(out, style, &line[from..to]);
            pos = to;
        }
        self.paint(out, body, &line[pos..end]);
    }

    fn paint(&self, out: &mut String, style: Style, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.colour && style != Style::new() {
            let _ = write!(out, "{}{text}{}", style.render(), style.render_reset());
        } else {
            out.push_str(text);
        }
    }
}

/// The local time zone's offset, read once at start (see
/// [`init_local_time`]); UTC if it could not be read.
static LOCAL_OFFSET: std::sync::OnceLock<time::UtcOffset> = std::sync::OnceLock::new();

/// Reads the local time zone's offset. Call it while the process has one
/// thread only: later, the `time` crate refuses to read it (the C library's
/// time zone functions are not thread-safe), and the clock shows UTC.
pub fn init_local_time() {
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let _ = LOCAL_OFFSET.set(offset);
}

/// The local time now, as `HH:MM`.
pub fn clock() -> String {
    let offset = LOCAL_OFFSET.get().copied().unwrap_or(time::UtcOffset::UTC);
    let now = time::OffsetDateTime::now_utc().to_offset(offset);
    format!("{:02}:{:02}", now.hour(), now.minute())
}

/// The width of the terminal on stdout, in columns.
pub fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .map(|size| usize::from(size.ws_col))
        .ok()
        .filter(|&columns| columns > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

/// Splits `text` into rows of at most `columns` terminal columns (wide
/// characters count two, combining ones none); returns byte ranges.
fn wrap(text: &str, columns: usize) -> Vec<(usize, usize)> {
    let columns = columns.max(2);
    let mut rows = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let w = c.width().unwrap_or(0);
        if used + w > columns {
            rows.push((start, i));
            start = i;
            used = 0;
        }
        used += w;
    }
    rows.push((start, text.len()));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(own: Option<&str>) -> Display {
        Display {
            own_nick: own.map(str::to_owned),
            colour: false,
        }
    }

    #[test]
    fn lines_are_told_apart() {
        assert_eq!(
            classify("alice: hi"),
            Kind::Chat {
                nick: "alice",
                at: 0
            }
        );
        assert_eq!(
            classify("* alice waves"),
            Kind::Action {
                nick: "alice",
                at: 0
            }
        );
        // In a channel, after its name.
        assert_eq!(
            classify("#ops alice: hi"),
            Kind::Chat {
                nick: "alice",
                at: 5
            }
        );
        assert_eq!(
            classify("#ops * alice waves"),
            Kind::Action {
                nick: "alice",
                at: 5
            }
        );
        assert_eq!(classify("#ops alice joined!"), Kind::Server);
        assert_eq!(classify("#Ops alice: hi"), Kind::Server);
        assert_eq!(classify("[private] a -> b: x"), Kind::Private);
        assert_eq!(classify("ERROR unknown command"), Kind::Error);
        assert_eq!(classify("[history] alice: hi"), Kind::History);
        for server in [
            "alice joined!",
            "alice left! (lunch)",
            "Connected to server!",
            "Server is shutting down",
            "[list] 2 here: a, b",
            "[help] /list: who is here",
            "* not-an-action",
            "no nick here: x",
        ] {
            assert_eq!(classify(server), Kind::Server, "{server}");
        }
    }

    #[test]
    fn first_rows_carry_time_and_mark_continuations_are_indented() {
        let d = plain(Some("Bob"));
        assert_eq!(d.render("alice: hi", "09:41", 80), "09:41   alice: hi");
        assert_eq!(d.render("bob: mine", "09:41", 80), "09:41 > bob: mine");
        assert_eq!(d.render("* bob waves", "09:41", 80), "09:41 > * bob waves");
        assert_eq!(
            d.render("[private] alice -> Bob: psst", "09:41", 80),
            "09:41 P [private] alice -> Bob: psst"
        );
        assert_eq!(d.render("ERROR x", "09:41", 80), "09:41 ! ERROR x");
        assert_eq!(
            d.render("Server is shutting down", "09:41", 80),
            "09:41 - Server is shutting down"
        );
        assert_eq!(
            d.render("[history] alice: old", "09:41", 80),
            "--:-- h [history] alice: old"
        );
        // Padding to the width cannot start a row of its own.
        let spoof = format!("alice: {}bob: meeting moved", " ".repeat(60));
        let rows: Vec<String> = d
            .render(&spoof, "09:41", 40)
            .lines()
            .map(str::to_owned)
            .collect();
        assert!(rows.len() > 1);
        assert!(rows[0].starts_with("09:41   alice: "));
        for row in &rows[1..] {
            assert!(row.starts_with(CONTINUATION), "{row:?}");
        }
        for row in &rows {
            assert!(row.chars().count() < 40, "{row:?}");
        }
        assert!(rows.iter().any(|r| r.contains("bob: meeting moved")));
    }

    #[test]
    fn wide_characters_count_double_and_tabs_become_spaces() {
        let d = plain(None);
        let rows = d.render(&format!("alice: {}", "界".repeat(40)), "09:41", 40);
        for row in rows.lines() {
            let width: usize = row.chars().map(|c| c.width().unwrap_or(0)).sum();
            assert!(width < 40, "{row:?} is {width} columns");
        }
        assert_eq!(d.render("alice:\tx", "09:41", 80), "09:41   alice: x");
    }

    #[test]
    fn colours_are_stable_and_off_without_colour() {
        assert_eq!(nick_colour("alice"), nick_colour("ALICE"));
        let colours: std::collections::HashSet<_> = ["alice", "bob", "carol", "dave", "eve"]
            .iter()
            .map(|n| format!("{:?}", nick_colour(n)))
            .collect();
        assert!(colours.len() > 1);
        let coloured = Display {
            own_nick: None,
            colour: true,
        };
        let line = coloured.render("alice: hi", "09:41", 80);
        assert!(line.contains('\u{1b}'), "{line:?}");
        let colour = Style::new()
            .fg_color(Some(nick_colour("alice").into()))
            .effects(Effects::BOLD);
        assert!(line.contains(&format!("{}alice", colour.render())));
        assert!(
            !plain(None)
                .render("alice: hi", "09:41", 80)
                .contains('\u{1b}')
        );
    }

    #[test]
    fn private_lines_are_magenta_mark_and_text_on_every_row() {
        let coloured = Display {
            own_nick: Some("alice".into()),
            colour: true,
        };
        // 35 is magenta: spelled out, so that a change of colour in the
        // code does not change what is expected with it.
        let magenta = "\u{1b}[35m";
        let line = coloured.render("[private] bob -> alice: psst", "09:41", 80);
        assert!(line.contains(&format!("{magenta}P\u{1b}[0m")), "{line:?}");
        assert!(
            line.contains(&format!("{magenta}[private] bob -> alice: psst\u{1b}[0m")),
            "{line:?}"
        );
        let long = format!("[private] bob -> alice: {}", "x".repeat(60));
        let wrapped = coloured.render(&long, "09:41", 40);
        let rows: Vec<&str> = wrapped.lines().collect();
        assert!(rows.len() > 1, "{rows:?}");
        for row in &rows[1..] {
            assert!(row.contains(&format!("{magenta}x")), "{row:?}");
        }
    }
}
