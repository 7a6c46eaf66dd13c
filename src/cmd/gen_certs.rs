//! `chatroom gen-certs`: arguments for [`crate::certs::generate`] and, with
//! a subcommand, [`crate::certs::issue`] (a client certificate, or the
//! server certificate alone).

use super::print;
use crate::certs::{self, GenOptions};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GenCertsArgs {
    #[command(subcommand)]
    issue: Option<Issue>,
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
    /// Days the server certificate is valid (the CA: 3650).
    #[arg(long, default_value_t = certs::SERVER_DAYS, value_name = "N")]
    days: u32,
}

#[derive(Subcommand, Debug)]
enum Issue {
    /// A client certificate for NAME (a valid nickname), signed by the
    /// existing CA: clients/NAME.pem and clients/NAME-key.pem.
    Client {
        /// The client's name: its certificate's common name and, with
        /// `serve --client-ca`, its nickname.
        name: String,
        /// The certificate folder (with the CA).
        #[arg(long, default_value = certs::DEFAULT_DIR)]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = certs::CLIENT_DAYS, value_name = "N")]
        days: u32,
        /// Replace an existing certificate and key of that name.
        #[arg(long)]
        force: bool,
    },
    /// Reissue the server certificate alone, with the existing CA.
    Server {
        /// The certificate folder (with the CA).
        #[arg(long, default_value = certs::DEFAULT_DIR)]
        dir: PathBuf,
        /// Another name or IP address for the server certificate (repeatable).
        #[arg(long = "san", value_name = "NAME_OR_IP")]
        sans: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = certs::SERVER_DAYS, value_name = "N")]
        days: u32,
        /// Replace the existing server certificate and key.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: GenCertsArgs) -> Result<()> {
    match args.issue {
        None => {
            let report = certs::generate_for(
                &GenOptions {
                    dir: args.dir,
                    extra_sans: args.sans,
                    force: args.force,
                },
                args.days,
            )?;
            print(&report)?;
            warn_unignored(&[&report.ca_key, &report.server_key]);
        }
        Some(Issue::Client {
            name,
            dir,
            days,
            force,
        }) => {
            let report = certs::issue::client(&dir, &name, days, force)?;
            print(&report)?;
            warn_unignored(&[&report.key]);
        }
        Some(Issue::Server {
            dir,
            sans,
            days,
            force,
        }) => {
            let report = certs::issue::server(&dir, &sans, days, force)?;
            print(&report)?;
            warn_unignored(&[&report.key]);
        }
    }
    Ok(())
}

/// Says on stderr which of the keys just written `git add .` would commit.
fn warn_unignored(keys: &[&std::path::Path]) {
    for warning in certs::keyfile::unignored_in_git(keys) {
        eprintln!("{warning}");
    }
}
