//! `chatroom lab`: arguments for the classroom's attacker tools
//! ([`crate::lab`]).

use anyhow::Result;
use clap::{Args, Subcommand};
use std::net::SocketAddr;

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// A man in the middle on this machine: relays each connection to the
    /// server and prints what passes both ways (text lines as text, TLS
    /// records as type and length). Type `inject TEXT`, `drop` or `replay`
    /// to act on the most recent connection: send TEXT to the server as
    /// the client's, drop the client's next record (or line), send its
    /// last one again. Loopback addresses only.
    Relay {
        /// Where clients connect to the relay (a loopback IP:PORT).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// The server to relay to (a loopback IP:PORT).
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
    },
}

pub async fn run(args: LabArgs) -> Result<()> {
    match args.command {
        LabCommand::Relay { listen, to } => crate::lab::console::run(listen, to).await,
    }
}
