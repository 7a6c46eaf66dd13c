//! `chatroom gen-certs`: arguments for [`crate::certs::generate`] and, with
//! a subcommand, [`crate::certs::issue`] (a client certificate, or the
//! server certificate alone).

use super::print;
use crate::certs::{self, GenOptions};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

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
        #[command(flatten)]
        p12: P12Args,
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

/// The PKCS#12 copy of a client certificate, for browsers.
#[derive(Args, Debug)]
struct P12Args {
    /// Also write clients/NAME.p12 (certificate, CA and key, encrypted
    /// with a password), to import into a browser for `serve --web
    /// --client-ca`.
    #[arg(long)]
    p12: bool,
    /// Read the .p12 password from this file (its first line); without
    /// it, the password is asked on the terminal.
    #[arg(long, value_name = "FILE", requires = "p12")]
    p12_password_file: Option<PathBuf>,
}

impl P12Args {
    /// The .p12 password, if a .p12 is asked for: read and checked before
    /// anything is written.
    fn password(&self) -> Result<Option<String>> {
        if !self.p12 {
            return Ok(None);
        }
        let password = match &self.p12_password_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                text.lines().next().unwrap_or_default().to_owned()
            }
            None => ask_password()?,
        };
        certs::p12::check_password(&password)?;
        Ok(Some(password))
    }
}

/// Issues client `name`'s certificate in `dir` and, with a password, its
/// .p12.
fn client(dir: &Path, name: &str, days: u32, force: bool, p12: &P12Args) -> Result<()> {
    let password = p12.password()?;
    let report = certs::issue::client(dir, name, days, force)?;
    print(&report)?;
    let mut secrets = vec![report.key.clone()];
    if let Some(password) = password {
        let path = certs::p12::write(dir, name, &password)?;
        println!("PKCS#12 file: {} (mode 0600)", path.display());
        // It holds the private key too.
        secrets.push(path);
    }
    let secrets: Vec<&Path> = secrets.iter().map(PathBuf::as_path).collect();
    warn_unignored(&secrets);
    Ok(())
}

/// Asks for the .p12 password twice on the terminal, without echo.
fn ask_password() -> Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::{BufRead, BufReader, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask the .p12 password on: use --p12-password-file")?;
    let saved = tcgetattr(&tty).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    let ask = |prompt: &str| -> Result<String> {
        (&tty).write_all(prompt.as_bytes())?;
        tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet)?;
        let mut line = String::new();
        let read = BufReader::new(&tty).read_line(&mut line);
        tcsetattr(&tty, SetArg::TCSAFLUSH, &saved)?;
        (&tty).write_all(b"\n")?;
        read?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    let password = ask("Password for the .p12 file: ")?;
    if ask("Again: ")? != password {
        bail!("the two passwords differ");
    }
    Ok(password)
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
            p12,
        }) => client(&dir, &name, days, force, &p12)?,
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
