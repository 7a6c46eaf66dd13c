//! `chatroom gen-certs`: arguments for [`crate::certs::generate`].

use crate::certs::{self, GenOptions};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct GenCertsArgs {
    /// Folder for ca.pem, ca-key.pem, server.pem and server-key.pem.
    #[arg(long, default_value = certs::DEFAULT_DIR)]
    dir: PathBuf,
    /// Another name or IP address for the server certificate (repeatable),
    /// e.g. the server's LAN host name or address.
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    sans: Vec<String>,
    /// Replace an existing server certificate and key (the CA is always kept).
    #[arg(long)]
    force: bool,
}

pub fn run(args: GenCertsArgs) -> Result<()> {
    let report = certs::generate(&GenOptions {
        dir: args.dir,
        extra_sans: args.sans,
        force: args.force,
    })?;
    println!("{report}");
    Ok(())
}
