//! `chatroom connect`: arguments for [`crate::client::run`].

use crate::client::{self, ConnectOptions};
use crate::protocol::DEFAULT_PORT;
use crate::tls::TlsVersion;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Server address, host:port; several, comma-separated (the nodes of
    /// one room): one is picked at random, then the others in turn until
    /// one accepts the connection.
    #[arg(long, default_value_t = format!("127.0.0.1:{DEFAULT_PORT}"))]
    addr: String,
    /// The CA certificate to trust (and the only one).
    #[arg(long, default_value = crate::certs::DEFAULT_CA)]
    ca: PathBuf,
    /// Name to check the server's certificate against. Default: the host
    /// part of the address connected to.
    #[arg(long)]
    server_name: Option<String>,
    /// Nickname; without it, you are asked.
    #[arg(long)]
    nick: Option<String>,
    /// Connect without TLS (only to a server started with --plaintext).
    #[arg(long)]
    plaintext: bool,
    /// Client certificate to present (PEM), for a server started with
    /// --client-ca; without --nick, the nickname is the certificate's name.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, mode 0600).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// TLS versions to allow: any (1.3 preferred, 1.2 allowed), 1.2 or 1.3.
    #[arg(long, value_enum, default_value_t = TlsVersion::Any, value_name = "VERSION")]
    tls_version: TlsVersion,
    /// Do not reconnect after a lost connection: end, as after a final
    /// refusal.
    #[arg(long)]
    no_reconnect: bool,
}

pub async fn run(args: ConnectArgs) -> Result<()> {
    client::run(ConnectOptions {
        addr: args.addr,
        ca: args.ca,
        server_name: args.server_name,
        nick: args.nick,
        plaintext: args.plaintext,
        client_cert: args.cert.zip(args.key),
        tls_version: args.tls_version,
        reconnect: !args.no_reconnect,
    })
    .await
}
