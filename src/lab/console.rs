//! The relay at a terminal: its report on standard output, one line per
//! event, and its commands read from standard input.

use super::relay::{COMMANDS, Command, Commands, Relay};
use anyhow::{Context, Result};
use std::io::Write;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// The longest command line read; the rest of a longer one is skipped.
const MAX_COMMAND: usize = 4096;
/// Report lines waiting for the terminal before the relay waits for it.
const QUEUED_EVENTS: usize = 1024;

/// Runs `chatroom lab relay`: relays `listen` to `to` until interrupted,
/// printing what passes and acting on the commands typed.
pub async fn run(listen: SocketAddr, to: SocketAddr) -> Result<()> {
    let (events, mut report) = mpsc::channel(QUEUED_EVENTS);
    let relay = Relay::bind(listen, to, events.clone()).await?;
    let addr = relay.local_addr()?;
    print_line(&format!(
        "relay: listening on {addr}, relaying to {to}; commands: {COMMANDS}"
    ))?;
    tokio::spawn(read_commands(relay.commands(), events));
    let mut relaying = tokio::spawn(relay.run());
    loop {
        tokio::select! {
            line = report.recv() => match line {
                Some(line) => print_line(&line)?,
                None => return Ok(()),
            },
            ended = &mut relaying => return ended.context("the relay stopped")?,
        }
    }
}

/// One line on stdout, flushed at once so that a pipe sees it as it
/// happens. A reader that went away has seen enough: no error.
fn print_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Reads commands from stdin until its end, and reports what each did on
/// `events`. At the end of stdin the relay goes on relaying.
async fn read_commands(commands: Commands, events: mpsc::Sender<String>) {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut stdin)
            .take(MAX_COMMAND as u64)
            .read_until(b'\n', &mut line)
            .await;
        let answer = match read {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with(b"\n") && line.len() >= MAX_COMMAND => {
                skip_line(&mut stdin).await;
                format!("command too long (over {MAX_COMMAND} bytes): ignored")
            }
            Ok(_) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(_) => match Command::parse(&String::from_utf8_lossy(&line)) {
                Ok(command) => match commands.send(command) {
                    Ok(_) => continue,
                    Err(e) => format!("{e:#}"),
                },
                Err(e) => format!("{e:#}"),
            },
        };
        if events.send(format!("relay: {answer}")).await.is_err() {
            return;
        }
    }
}

/// Reads and forgets the rest of a line, a bounded piece at a time.
async fn skip_line(stdin: &mut BufReader<tokio::io::Stdin>) {
    let mut piece = Vec::new();
    loop {
        piece.clear();
        match stdin
            .take(MAX_COMMAND as u64)
            .read_until(b'\n', &mut piece)
            .await
        {
            Ok(n) if n > 0 && !piece.ends_with(b"\n") => continue,
            _ => return,
        }
    }
}
