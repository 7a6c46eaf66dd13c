//! Where `chatroom connect` reads what the user types and prints what the
//! room says.
//!
//! With pipes, that is plain stdin and stdout, line by line (the nickname
//! prompt goes to stderr, so that stdout holds the chat alone). In a terminal
//! it is a line editor (rustyline): a line received while the user is
//! typing is printed above the line being typed, which stays intact and
//! editable, instead of being broken in two as the lab's client did.
//!
//! A line the user typed is taken off the screen once sent: the server's
//! echo shows it, in the room's order, with the user's own mark.
//!
//! The editor blocks, so it runs on a thread of its own and reads exactly
//! one line per request: the client asks for the nickname, then waits for
//! the server's verdict before it asks for anything else.

use anyhow::{Context, Result, anyhow};
use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use std::io::{IsTerminal, Write};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::sync::mpsc;

/// The user's side of the client.
pub enum Console {
    Pipes(Lines<BufReader<Stdin>>),
    Terminal(Terminal),
}

impl Console {
    /// A line editor when stdin and stdout are a terminal, else pipes.
    pub fn open() -> Result<Console> {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Ok(Console::Terminal(Terminal::start()?))
        } else {
            Ok(Console::Pipes(BufReader::new(tokio::io::stdin()).lines()))
        }
    }

    /// Shows `prompt` and reads one line; `None` at the end of input
    /// (Ctrl-D, or Ctrl-C in a terminal).
    pub async fn ask(&mut self, prompt: &str) -> Result<Option<String>> {
        match self {
            Console::Pipes(lines) => {
                // stdout piped elsewhere carries the server's lines and
                // nothing else, so a prompt there would corrupt them.
                if std::io::stdout().is_terminal() {
                    let mut out = std::io::stdout().lock();
                    write!(out, "{prompt}").context("cannot write to stdout")?;
                    out.flush().context("cannot write to stdout")?;
                } else {
                    let mut err = std::io::stderr().lock();
                    write!(err, "{prompt}").context("cannot write to stderr")?;
                    err.flush().context("cannot write to stderr")?;
                }
                lines.next_line().await.context("cannot read stdin")
            }
            Console::Terminal(terminal) => {
                terminal.request(prompt)?;
                terminal.answer().await
            }
        }
    }

    /// The next line the user typed; `None` at the end of input. Cancel-safe:
    /// a line that arrives while nobody waits is kept for the next call.
    pub async fn next_line(&mut self) -> Result<Option<String>> {
        match self {
            Console::Pipes(lines) => lines.next_line().await.context("cannot read stdin"),
            Console::Terminal(terminal) => {
                if !terminal.waiting {
                    terminal.request("")?;
                }
                let line = terminal.answer().await?;
                // Ask for the next line at once, so that the editor is always
                // showing its prompt while chatting and every received line
                // is printed above it; not after `/quit`, when the server is
                // about to close and the client to end.
                if line
                    .as_deref()
                    .is_some_and(|l| !crate::protocol::is_quit(l))
                {
                    terminal.request("")?;
                }
                Ok(line)
            }
        }
    }

    /// Marks this participant's own lines from now on (in a terminal).
    pub fn set_own_nick(&mut self, nick: &str) {
        if let Console::Terminal(terminal) = self {
            terminal.display.own_nick = Some(nick.to_owned());
        }
    }

    /// Prints one line from the server (already made safe for a terminal):
    /// as it is with pipes; in a terminal with a timestamp, a mark, colours
    /// and visible continuation rows (see [`crate::client::display`]).
    pub fn print(&mut self, text: &str) -> Result<()> {
        match self {
            // The editor's printer writes straight out while no line is
            // being edited, and above the edited line while one is.
            Console::Terminal(terminal) => {
                let rows = terminal.display.render(
                    text,
                    &crate::client::display::clock(),
                    crate::client::display::terminal_width(),
                );
                terminal
                    .printer
                    .print(format!("{rows}\n"))
                    .map_err(|e| anyhow!("cannot write to the terminal: {e}"))
            }
            Console::Pipes(_) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}").context("cannot write to stdout")
            }
        }
    }

    /// Tells the user something about the chat that is not a line of it
    /// (on stderr with pipes, so that stdout holds the chat alone; above
    /// the edited line in a terminal). `text` is the client's own.
    pub fn notice(&mut self, text: &str) {
        match self {
            Console::Terminal(terminal) => {
                let _ = terminal.printer.print(format!("[{text}]\n"));
            }
            Console::Pipes(_) => eprintln!("[{text}]"),
        }
    }

    /// Says why the chat ended. In a terminal, it then waits for Enter (or
    /// Ctrl-D): the editor cannot be interrupted, and until it returns the
    /// lines it is still to print may not have reached the screen, and the
    /// terminal is not back to normal.
    pub async fn finish(&mut self, why: &str) {
        match self {
            Console::Terminal(terminal) if terminal.waiting => {
                let _ = terminal
                    .printer
                    .print(format!("{why}; press Enter to leave\n"));
                let _ = terminal.answer().await;
            }
            _ => eprintln!("{why}"),
        }
    }
}

/// Takes a chat line the editor just gave back off the screen: the editor
/// leaves it where it was typed, and the server's echo (`<nick>: <text>`,
/// marked as the user's own) is what shows it, once, in the room's order,
/// as IRC clients do. Called on the editor's thread before the line goes
/// anywhere, so nothing printed because of it can be erased instead.
fn erase_typed(line: &str) {
    use unicode_width::UnicodeWidthStr;
    let columns = crate::client::display::terminal_width();
    // The editor leaves the cursor below the line's last row; a line that
    // fills its last row exactly has the cursor one row further down.
    let rows = line.width() / columns + 1;
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}\r", "\x1b[1A\x1b[2K".repeat(rows));
    let _ = out.flush();
}

/// The line editor, on its own thread.
pub struct Terminal {
    prompts: mpsc::UnboundedSender<String>,
    lines: mpsc::UnboundedReceiver<Result<Option<String>, String>>,
    printer: Box<dyn ExternalPrinter + Send>,
    /// How lines are shown: own nickname, colours.
    display: crate::client::display::Display,
    /// A line was requested and not yet taken: the editor is showing its
    /// prompt, so output must go through it.
    waiting: bool,
    /// The terminal's settings before the editor switched it to raw mode.
    /// The editor cannot be interrupted, so when the client ends while it
    /// waits for a line (the server went away, say), these are put back by
    /// hand: the user's shell must not be left without echo.
    saved: Option<nix::sys::termios::Termios>,
}

impl Drop for Terminal {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        if let Some(saved) = &self.saved
            && self.waiting
        {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, saved);
            // Leave the shell a fresh line after the abandoned prompt.
            println!();
        }
    }
}

impl Terminal {
    fn start() -> Result<Terminal> {
        let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
        let mut editor =
            rustyline::DefaultEditor::new().context("cannot set up the line editor")?;
        let printer = editor
            .create_external_printer()
            .context("cannot set up the line editor's output")?;
        let (prompts, mut prompt_rx) = mpsc::unbounded_channel::<String>();
        let (line_tx, lines) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("line editor".into())
            .spawn(move || {
                while let Some(prompt) = prompt_rx.blocking_recv() {
                    let answer = match editor.readline(&prompt) {
                        Ok(line) => {
                            if prompt.is_empty() {
                                erase_typed(&line);
                            }
                            // Up-arrow recall, for this session only.
                            let _ = editor.add_history_entry(line.as_str());
                            Ok(Some(line))
                        }
                        Err(ReadlineError::Eof | ReadlineError::Interrupted) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    };
                    let done = !matches!(answer, Ok(Some(_)));
                    if line_tx.send(answer).is_err() || done {
                        break;
                    }
                }
            })
            .context("cannot start the line editor")?;
        Ok(Terminal {
            prompts,
            lines,
            printer: Box::new(printer),
            display: crate::client::display::Display::from_env(),
            waiting: false,
            saved,
        })
    }

    fn request(&mut self, prompt: &str) -> Result<()> {
        self.prompts
            .send(prompt.to_owned())
            .map_err(|_| anyhow!("the line editor stopped"))?;
        self.waiting = true;
        Ok(())
    }

    async fn answer(&mut self) -> Result<Option<String>> {
        let answer = self.lines.recv().await;
        self.waiting = false;
        match answer {
            Some(Ok(line)) => Ok(line),
            Some(Err(e)) => Err(anyhow!("cannot read the terminal: {e}")),
            None => Ok(None),
        }
    }
}
