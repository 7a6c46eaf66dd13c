//! `chatroom connect`: the terminal client.
//!
//! It pins the CA given by `--ca` (never the system roots), answers `NICK`
//! by itself, prints every line it receives, and sends every line typed on
//! (or piped into) stdin. It treats the server as untrusted too: every
//! received line is sanitized before it reaches the terminal, so no byte
//! from the network can move the cursor, retitle the window or clear it.

use crate::connection::{Connection, ReadError};
use crate::console::Console;
use crate::protocol::{self, ERROR_PREFIX};
use crate::tls;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Longest line the client accepts from a server: a message line carries
/// the nickname and separator on top of the server's line limit.
const MAX_SERVER_LINE: usize = 64 * 1024;

/// What `connect` was told.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub addr: String,
    pub ca: PathBuf,
    pub server_name: Option<String>,
    pub nick: Option<String>,
    pub plaintext: bool,
    /// TLS versions to allow.
    pub tls_version: tls::TlsVersion,
}

/// The host part of `host:port` or `[v6]:port`.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Runs the client until stdin ends or the server closes. Errors are
/// one-line explanations for the user.
pub async fn run(opts: ConnectOptions) -> Result<()> {
    let tcp = TcpStream::connect(&opts.addr).await.with_context(|| {
        format!(
            "cannot connect to {}: is the server running there?",
            opts.addr
        )
    })?;
    let _ = tcp.set_nodelay(true);
    if opts.plaintext {
        eprintln!(
            "warning: --plaintext: everything you send and receive can be read on the network"
        );
        return chat(Connection::new(tcp, MAX_SERVER_LINE), &opts).await;
    }
    if let Some(path) = tls::key_log_file()? {
        eprintln!("warning: {}", tls::key_log_warning(&path));
    }
    let config = tls::client_config_with(&opts.ca, opts.tls_version)?;
    let name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(&opts.addr).to_owned());
    let server_name = tls::server_name(&name)?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| anyhow!(tls::explain_handshake_error(&e, &opts.ca, &name)))?;
    eprintln!(
        "{}",
        describe_session(&opts.addr, &name, stream.get_ref().1)
    );
    chat(Connection::new(stream, MAX_SERVER_LINE), &opts).await
}

/// Whom the client talks to, for stderr at the start: the server's address
/// and name, the TLS version and cipher suite, and the server certificate's
/// SHA-256 fingerprint (as `gen-certs` prints it) and expiry.
pub fn describe_session(addr: &str, name: &str, tls: &rustls::ClientConnection) -> String {
    let version = match tls.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS (version unknown)".to_owned(),
    };
    let suite = tls
        .negotiated_cipher_suite()
        .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
    let mut text =
        format!("connected to {addr} (server name {name:?}) over {version}, cipher suite {suite}");
    if let Some(leaf) = tls.peer_certificates().and_then(|certs| certs.first()) {
        text.push_str(&format!(
            "\nserver certificate SHA-256 fingerprint: {}",
            crate::certs::fingerprint(leaf)
        ));
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) {
            let t = cert.validity().not_after.to_datetime();
            text.push_str(&format!(
                "\nserver certificate valid until: {} {:02}:{:02} UTC",
                t.date(),
                t.hour(),
                t.minute()
            ));
        }
    }
    text
}

async fn chat<S>(mut conn: Connection<S>, opts: &ConnectOptions) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut console = Console::open()?;
    register(&mut conn, opts, &mut console).await?;
    // Set once the user typed `/quit`: the server's close is then expected.
    let mut quitting = false;
    loop {
        tokio::select! {
            line = conn.read_line() => match line {
                Ok(Some(line)) => console.print(&protocol::sanitize_bytes(&line))?,
                Ok(None) | Err(_) if quitting => {
                    console.finish("you left the room").await;
                    return Ok(());
                }
                Ok(None) => {
                    console.finish("connection closed by the server").await;
                    return Ok(());
                }
                Err(e) => {
                    let err = connection_lost(e);
                    console.finish(&err.to_string()).await;
                    return Err(err);
                }
            },
            // After `/quit`, only the server's close is awaited.
            typed = console.next_line(), if !quitting => match typed? {
                Some(text) => {
                    quitting |= is_quit(&text);
                    let mut line = text.into_bytes();
                    line.push(b'\n');
                    conn.send(Bytes::from(line)).await.context("cannot send to the server")?;
                }
                None => {
                    // End of input: close cleanly (close_notify) and go.
                    conn.shutdown().await.context("cannot close the connection cleanly")?;
                    return Ok(());
                }
            },
        }
    }
}

/// Whether a typed line is `/quit`, after which the server closes.
pub fn is_quit(text: &str) -> bool {
    matches!(
        protocol::parse_input(text),
        protocol::Input::Command(protocol::Command::Quit(_))
    )
}

/// Answers `NICK` until the server says `Connected to server!`, printing
/// what it says on the way.
async fn register<S>(
    conn: &mut Connection<S>,
    opts: &ConnectOptions,
    console: &mut Console,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let line = match conn.read_line().await {
            Ok(Some(line)) => line,
            Ok(None) => bail!("the server closed the connection before we joined"),
            Err(e) => return Err(connection_lost(e)),
        };
        let text = protocol::sanitize_bytes(&line);
        if text == protocol::NICK {
            let nick = match &opts.nick {
                Some(nick) => nick.clone(),
                None => match console.ask("Choose your nickname: ").await? {
                    Some(nick) => nick.trim().to_owned(),
                    None => bail!("no nickname given (end of input)"),
                },
            };
            conn.send(Bytes::from(format!("{nick}\n")))
                .await
                .context("cannot send the nickname")?;
            console.set_own_nick(&nick);
        } else if let Some(reason) = text.strip_prefix(ERROR_PREFIX) {
            if opts.nick.is_some() {
                bail!("the server refused: {reason}");
            }
            eprintln!("the server refused: {reason}");
        } else {
            console.print(&text)?;
            if text == protocol::CONNECTED {
                return Ok(());
            }
        }
    }
}

fn connection_lost(err: ReadError) -> anyhow::Error {
    match err {
        ReadError::Frame(_) => {
            anyhow!("the server sent a line longer than {MAX_SERVER_LINE} bytes")
        }
        ReadError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            anyhow!("connection lost: the server closed it without a TLS close_notify")
        }
        ReadError::Io(e) => anyhow!("connection lost: {e}"),
    }
}
