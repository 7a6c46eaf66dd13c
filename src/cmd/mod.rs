//! The command line: one module per subcommand, as mini-redis keeps one
//! per command. Each parses its arguments with clap and hands over to the
//! library module that does the work; this one dispatches, sets up logging
//! and the runtime, and turns errors into one line on stderr.

mod bounds;
mod certs;
mod connect;
mod gen_certs;
mod history;
mod lab;
mod serve;

use crate::bench::BenchArgs;
use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "chatroom",
    version,
    about = "A TLS-secured chat room with its own certificate tooling"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a local CA (or reuse the one there) and a server certificate signed by it;
    /// `gen-certs client NAME` and `gen-certs server` issue one certificate with that CA.
    GenCerts(gen_certs::GenCertsArgs),
    /// Inspect, list and revoke certificates.
    Certs(certs::CertsArgs),
    /// Run the chat server. SIGINT or SIGTERM stops it gracefully; SIGHUP
    /// reloads its certificate and key, the client CA, the CRL and the deny
    /// file (all or nothing).
    Serve(Box<serve::ServeArgs>),
    /// Join a chat server from this terminal.
    Connect(connect::ConnectArgs),
    /// Measure a chat server's throughput, latency, joins and memory, and
    /// check that it delivers every message once, intact, in one order.
    Bench(BenchArgs),
    /// Export, search and count a room's lines stored on disk.
    History(history::HistoryArgs),
    /// The classroom's attacker tools, on this machine only: `lab relay`.
    Lab(lab::LabArgs),
}

/// Runs the command line; returns the process's exit code.
pub fn main() -> i32 {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    init_logging();
    match run(cli) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    }
}

/// Prints a command's report on stdout. A reader that went away (`chatroom
/// certs list | head -1`) has heard enough: that is no error, and never a
/// panic, which `println!` would make of it.
fn print(report: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{report}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Reads a command line (the program's name first) as `main` would, and
/// runs nothing: for checking that a command shown in the docs is one the
/// binary accepts.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<(), clap::Error> {
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches).map(drop)
}

/// The command line, with the ranges of `serve`'s settings in its help.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", bounds::ranges_in_help)
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The NATS client logs each reconnection attempt; the cluster room says
    // once that the link is down and once that it is back.
    let nats_named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("async_nats"));
    if !nats_named && let Ok(quieter) = "async_nats=warn".parse() {
        filter = filter.add_directive(quieter);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::GenCerts(args) => gen_certs::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Serve(args) => block_on(serve::run(*args)),
        Command::Connect(args) => {
            // While the process has one thread: see `init_local_time`.
            crate::client::display::init_local_time();
            block_on(connect::run(args))
        }
        Command::Bench(args) => block_on(crate::bench::run(args)),
        Command::History(args) => history::run(args),
        Command::Lab(args) => block_on(lab::run(args)),
    }
}

/// Runs `command` to its end on a runtime of its own, then leaves at once:
/// a read of stdin still waiting in the runtime's blocking pool (a client
/// whose server went away while stdin stays open) must not keep the
/// process alive, as dropping the runtime would.
fn block_on(command: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(command);
    runtime.shutdown_background();
    result
}
