//! `chatroom connect`: the terminal client.
//!
//! It pins the CA given by `--ca` (never the system roots), answers `NICK`
//! by itself, prints every line it receives, and sends every line typed on
//! (or piped into) stdin. It treats the server as untrusted too: every
//! received line is sanitized before it reaches the terminal, so no byte
//! from the network can move the cursor, retitle the window or clear it.

pub mod console;
pub mod display;
mod lines;

use crate::protocol::{self, ERROR_PREFIX};
use crate::tls;
use anyhow::{Context, Result, anyhow, bail};
use console::Console;
use lines::{Received, ServerConnection};
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The longest `--max-line` a server may be given (1 MiB).
const LONGEST_MAX_LINE: usize = 1 << 20;

/// Longest line the client takes from a server: the longest text a server
/// may allow, with room to spare for what the server puts around it (a
/// nickname of up to 32 bytes, `: `, the `[private] A -> B: ` and
/// `[history] ` marks). A longer line cannot come from a chatroom server;
/// it is skipped with a notice, not taken as a reason to leave.
const MAX_SERVER_LINE: usize = LONGEST_MAX_LINE + 1024;

/// What `connect` was told.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub addr: String,
    pub ca: PathBuf,
    pub server_name: Option<String>,
    pub nick: Option<String>,
    pub plaintext: bool,
    /// A client certificate and its key, for a server that asks for one
    /// (`serve --client-ca`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
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
pub async fn run(mut opts: ConnectOptions) -> Result<()> {
    let config = match (&opts.client_cert, opts.plaintext) {
        (Some(_), true) => bail!("--cert and --key need TLS: they cannot be used with --plaintext"),
        (Some((cert, key)), false) => {
            let config = tls::client_config_with(&opts.ca, opts.tls_version, Some((cert, key)))?;
            check_own_certificate(cert)?;
            if opts.nick.is_none() {
                // The server takes no other nickname from this certificate.
                opts.nick = certificate_nick(cert)?;
            }
            Some(config)
        }
        (None, false) => Some(tls::client_config_with(&opts.ca, opts.tls_version, None)?),
        (None, true) => None,
    };
    let (tcp, addr) = connect_any(&opts.addr).await?;
    let _ = tcp.set_nodelay(true);
    if opts.plaintext {
        eprintln!(
            "warning: --plaintext: everything you send and receive can be read on the network"
        );
        return chat(ServerConnection::new(tcp, MAX_SERVER_LINE), &opts).await;
    }
    if let Some(path) = tls::key_log_file()? {
        eprintln!("warning: {}", tls::key_log_warning(&path));
    }
    let config = config.context("no TLS configuration for a TLS connection")?;
    let name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(addr).to_owned());
    let server_name = tls::server_name(&name)?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| anyhow!(tls::explain_handshake_error(&e, &opts.ca, &name)))?;
    warn_if_expiring(&stream);
    eprintln!("{}", describe_session(addr, &name, stream.get_ref().1));
    chat(ServerConnection::new(stream, MAX_SERVER_LINE), &opts).await
}

/// Connects to the first of the comma-separated addresses that answers,
/// trying them in order (the nodes of one room, say).
async fn connect_any(addrs: &str) -> Result<(TcpStream, &str)> {
    let mut tried = Vec::new();
    for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok((tcp, addr)),
            Err(e) => {
                if addrs.contains(',') {
                    eprintln!("cannot connect to {addr}: {e}; trying the next address");
                }
                tried.push(format!("{addr} ({e})"));
            }
        }
    }
    match tried.as_slice() {
        [] => bail!("no server address given"),
        [one] => bail!("cannot connect to {one}: is the server running there?"),
        all => bail!(
            "cannot connect to any of {}: are the servers running there?",
            all.join(", ")
        ),
    }
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

async fn chat<S>(mut conn: ServerConnection<S>, opts: &ConnectOptions) -> Result<()>
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
                Ok(Some(Received::Line(line))) => console.print(&protocol::sanitize_bytes(&line))?,
                Ok(Some(Received::Skipped(bytes))) => console.notice(&skipped_notice(bytes)),
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
                    quitting |= protocol::is_quit(&text);
                    let mut line = text.into_bytes();
                    line.push(b'\n');
                    conn.send(&line).await.context("cannot send to the server")?;
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

/// Answers `NICK` until the server says `Connected to server!`, printing
/// what it says on the way.
async fn register<S>(
    conn: &mut ServerConnection<S>,
    opts: &ConnectOptions,
    console: &mut Console,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let line = match conn.read_line().await {
            Ok(Some(Received::Line(line))) => line,
            Ok(Some(Received::Skipped(bytes))) => {
                console.notice(&skipped_notice(bytes));
                continue;
            }
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
            conn.send(format!("{nick}\n").as_bytes())
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

/// The nickname a client certificate gives: its name, by the server's own
/// rule ([`crate::server::access::certificate_name`]), which also refuses
/// an ambiguous one.
fn certificate_nick(cert: &std::path::Path) -> Result<Option<String>> {
    let chain = tls::load_certs(cert).context("cannot load the client certificate (--cert)")?;
    crate::server::access::certificate_name(&chain[0])
        .map(Some)
        .map_err(|why| {
            anyhow!(
                "your certificate {} names no nickname: {why}",
                cert.display()
            )
        })
}

/// Refuses to present an expired (or not yet valid) client certificate,
/// naming its dates; warns when it expires within 30 days.
fn check_own_certificate(cert: &std::path::Path) -> Result<()> {
    let chain = tls::load_certs(cert).context("cannot load the client certificate (--cert)")?;
    let what = format!("your certificate {}", cert.display());
    let validity =
        crate::certs::lifecycle::check(&chain[0], &what, time::OffsetDateTime::now_utc())?;
    if let Some(warning) = validity.warning(&what) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// Warns (on stderr) when the server's certificate expires within 30 days.
/// An expired one never gets here: the handshake refuses it.
fn warn_if_expiring<S>(stream: &tokio_rustls::client::TlsStream<S>) {
    let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return;
    };
    let what = "the server's certificate";
    if let Ok(validity) =
        crate::certs::lifecycle::check(leaf, what, time::OffsetDateTime::now_utc())
        && let Some(warning) = validity.warning(what)
    {
        eprintln!("warning: {warning}");
    }
}

fn connection_lost(err: std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::UnexpectedEof {
        return anyhow!("connection lost: the server closed it without a TLS close_notify");
    }
    match refused_certificate(&err) {
        Some(why) => anyhow!("{why}"),
        None => anyhow!("connection lost: {err}"),
    }
}

/// What the user is told of a line too long to be from a chatroom server.
fn skipped_notice(bytes: usize) -> String {
    format!(
        "skipped a line of {bytes} bytes from the server: longer than any chatroom server \
         sends ({MAX_SERVER_LINE} bytes)"
    )
}

/// Over TLS 1.3 the server judges the client's certificate after the
/// client's side of the handshake is done, so its verdict arrives as an
/// alert on the first read: this names it.
fn refused_certificate(err: &std::io::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    let alert = match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => *alert,
        _ => return None,
    };
    let why = match alert {
        A::CertificateRequired => "the server requires a client certificate: use --cert and --key",
        A::CertificateRevoked => "the server refused your certificate: it has been revoked",
        A::CertificateExpired => "the server refused your certificate: it has expired",
        A::UnknownCA => "the server refused your certificate: its CA did not sign it",
        A::BadCertificate | A::UnsupportedCertificate => {
            "the server refused your certificate (is it a client certificate of its CA?)"
        }
        _ => return None,
    };
    Some(why.to_owned())
}
