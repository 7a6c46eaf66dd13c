//! `chatroom certs`: look at certificates, revoke client certificates and
//! keep the revocation list current
//! ([`crate::certs::inspect`], [`crate::certs::revoke`]).

use super::print;
use crate::certs;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Print what a PEM certificate file says (every certificate in it):
    /// subject, issuer, serial, names, validity and days left, key, usages,
    /// CA or not, SHA-256 fingerprint. For a CRL (crl.pem): issuer, this and
    /// next update, the revoked serials, and whether its signature checks
    /// against the CA.
    Inspect {
        /// A PEM file with one or more certificates, or a CRL.
        file: PathBuf,
        /// The CA to check a CRL's signature against. Default: ca.pem in
        /// the CRL's folder, when there is one.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// One line per certificate in the folder (CA, server, clients, and
    /// those --force replaced): name, serial, expiry, days left, and valid,
    /// EXPIRED, REVOKED or replaced.
    List {
        /// The certificate folder.
        #[arg(long, default_value = certs::DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Revoke client NAME's certificate: adds its serial to crl.pem (an
    /// X.509 CRL signed by the CA). Then `kill -HUP` the server.
    Revoke {
        /// The client's name, as given to `gen-certs client`.
        name: String,
        /// Revoke NAME's certificate with this serial (as `certs list`
        /// prints it): the current one, or one that `gen-certs client
        /// --force` replaced (`replaced` in `certs list`).
        #[arg(long, value_name = "SERIAL")]
        serial: Option<String>,
        /// The certificate folder (with the CA).
        #[arg(long, default_value = certs::DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Sign crl.pem again with the same revocations and a fresh next-update
    /// date (a year on), for when nobody was revoked in a long time: the
    /// server warns about a CRL that is due. Then `kill -HUP` the server.
    RenewCrl {
        /// The certificate folder (with the CA and crl.pem).
        #[arg(long, default_value = certs::DEFAULT_DIR)]
        dir: PathBuf,
    },
}

pub fn run(args: CertsArgs) -> Result<()> {
    match args.command {
        CertsCommand::Inspect { file, ca } if certs::inspect_crl::holds_crl(&file)? => {
            print(certs::inspect_crl::inspect_crl(&file, ca.as_deref())?)
        }
        CertsCommand::Inspect { file, .. } => print(certs::inspect::inspect(&file)?),
        CertsCommand::List { dir } => print(certs::inspect::list_table(&dir)?),
        CertsCommand::Revoke { name, serial, dir } => print(certs::revoke::revoke_certificate(
            &dir,
            &name,
            serial.as_deref(),
        )?),
        CertsCommand::RenewCrl { dir } => print(certs::revoke::renew(&dir)?),
    }
}
