//! `chatroom connect`: the terminal client.
//!
//! It pins the CA given by `--ca` (never the system roots), answers `NICK`
//! by itself, prints every line it receives, and sends every line typed on
//! (or piped into) stdin. It treats the server as untrusted too: every
//! received line is sanitized before it reaches the terminal, so no byte
//! from the network can move the cursor, retitle the window or clear it.
//!
//! Once in the room, it comes back by itself after a lost connection, as
//! the same nickname (`reconnect.rs` says when and how soon; `chatroom
//! bench --scenario rejoin` comes back by the same rule), starting from one
//! of several `--addr` nodes picked at random (`dial.rs`).

pub mod console;
mod dial;
pub mod display;
mod lines;
pub(crate) mod reconnect;

use crate::protocol::{self, ERROR_PREFIX};
use crate::tls;
use anyhow::{Context, Result, anyhow, bail};
use console::Console;
use dial::Dialer;
use lines::{Received, ServerConnection};
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Whether to come back by itself after a lost connection.
    pub reconnect: bool,
}

/// The host part of `host:port` or `[v6]:port`.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Any stream to the server: TLS or, with `--plaintext`, TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// The connection to the server, whatever it runs over.
type Connection = ServerConnection<Box<dyn Stream>>;

/// Runs the client until stdin ends, the user quits or the server ends it
/// for good; after a lost connection it comes back by itself (see
/// `reconnect.rs`) unless told not to. Errors are one-line explanations for
/// the user.
pub async fn run(mut opts: ConnectOptions) -> Result<()> {
    let config = tls_config(&mut opts)?;
    let mut dialer = Dialer::new(&opts.addr);
    let (tcp, addr) = dialer.connect(true).await?;
    if opts.plaintext {
        eprintln!(
            "warning: --plaintext: everything you send and receive can be read on the network"
        );
    } else if let Some(path) = tls::key_log_file()? {
        eprintln!("warning: {}", tls::key_log_warning(&path));
    }
    let conn = secure(tcp, &addr, &opts, config.as_ref(), true)
        .await
        .map_err(|(e, _)| e)?;
    let mut console = Console::open()?;
    let (conn, nick) = register(conn, opts.nick.clone(), &mut console)
        .await
        .map_err(|(e, _)| e)?;
    let mut session = Joined { conn, nick };
    loop {
        let (why, failed) = match chat(&mut session.conn, &mut console).await {
            Ended::Left => return Ok(()),
            Ended::Over(result) => return result,
            Ended::Lost { why, failed } => (why, failed),
        };
        if !opts.reconnect {
            console.finish(&why).await;
            return if failed { Err(anyhow!(why)) } else { Ok(()) };
        }
        match come_back(
            &mut dialer,
            &opts,
            config.as_ref(),
            &session.nick,
            &mut console,
            why,
        )
        .await?
        {
            Some(again) => session = again,
            None => return Ok(()),
        }
    }
}

/// A session past `Connected to server!`, and the nickname it joined as.
struct Joined {
    conn: Connection,
    nick: String,
}

/// The TLS configuration `opts` asks for (none for `--plaintext`); with a
/// client certificate and no `--nick`, sets the nickname to the
/// certificate's.
fn tls_config(opts: &mut ConnectOptions) -> Result<Option<Arc<rustls::ClientConfig>>> {
    Ok(match (&opts.client_cert, opts.plaintext) {
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
    })
}

/// Whether a failed attempt may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Yes,
    No,
}

/// `tcp` as a connection to the server: through the TLS handshake unless
/// `--plaintext`. With `first`, tells on stderr whom it talks to.
async fn secure(
    tcp: TcpStream,
    addr: &str,
    opts: &ConnectOptions,
    config: Option<&Arc<rustls::ClientConfig>>,
    first: bool,
) -> Result<Connection, (anyhow::Error, Retry)> {
    let _ = tcp.set_nodelay(true);
    let Some(config) = config else {
        return Ok(ServerConnection::new(Box::new(tcp), MAX_SERVER_LINE));
    };
    let name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(addr).to_owned());
    let server_name = tls::server_name(&name).map_err(|e| (e, Retry::No))?;
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            let retry = if reconnect::is_tls_failure(&e) {
                Retry::No
            } else {
                Retry::Yes
            };
            (
                anyhow!(tls::explain_handshake_error(&e, &opts.ca, &name)),
                retry,
            )
        })?;
    if first {
        warn_if_expiring(&stream);
        eprintln!("{}", describe_session(addr, &name, stream.get_ref().1));
    }
    Ok(ServerConnection::new(Box::new(stream), MAX_SERVER_LINE))
}

/// After a lost connection (`why`): waits with backoff and tries again,
/// as `nick`, until back in the room (`Some`), the user leaves meanwhile
/// (`None`), or a final refusal or too many attempts end it (`Err`).
async fn come_back(
    dialer: &mut Dialer,
    opts: &ConnectOptions,
    config: Option<&Arc<rustls::ClientConfig>>,
    nick: &str,
    console: &mut Console,
    why: String,
) -> Result<Option<Joined>> {
    let mut why = why;
    for attempt in 1..=reconnect::MAX_ATTEMPTS {
        let delay = reconnect::next_delay(attempt);
        console.notice(&format!(
            "{}; reconnecting in {} s (attempt {attempt})",
            protocol::sanitize(&why),
            reconnect::seconds(delay)
        ));
        if !wait_or_leave(delay, console).await? {
            return Ok(None);
        }
        let tried = tokio::time::timeout(reconnect::ATTEMPT_TIMEOUT, async {
            let (tcp, addr) = dialer.connect(false).await.map_err(|e| (e, Retry::Yes))?;
            let conn = secure(tcp, &addr, opts, config, false).await?;
            register(conn, Some(nick.to_owned()), console).await
        })
        .await;
        match tried {
            Ok(Ok((conn, nick))) => return Ok(Some(Joined { conn, nick })),
            Ok(Err((e, Retry::No))) => {
                console.finish(&e.to_string()).await;
                return Err(e);
            }
            Ok(Err((e, Retry::Yes))) => why = e.to_string(),
            Err(_) => why = "no answer in time".to_owned(),
        }
    }
    let given_up = anyhow!(
        "gave up reconnecting after {} attempts: {}",
        reconnect::MAX_ATTEMPTS,
        protocol::sanitize(&why)
    );
    console.finish(&given_up.to_string()).await;
    Err(given_up)
}

/// Waits `delay` while the connection is down; what the user types
/// meanwhile is not sent (and they are told so), `/quit` or the end of
/// input ends the wait and the client (`false`).
async fn wait_or_leave(delay: std::time::Duration, console: &mut Console) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Ok(true),
            typed = console.next_line() => match typed? {
                Some(text) if protocol::is_quit(&text) => {
                    console.finish("you left the room").await;
                    return Ok(false);
                }
                Some(_) => console.notice("not connected: that line was not sent"),
                None => return Ok(false),
            },
        }
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

/// How a session with the server ended.
enum Ended {
    /// The user left: end of input, or `/quit` and the server's close.
    Left,
    /// For good, already told to the user: the client ends with this.
    Over(Result<()>),
    /// The connection was lost, as `why` says. Without reconnecting, the
    /// client ends saying so, with an error if `failed`.
    Lost { why: String, failed: bool },
}

/// Chats until the session ends.
async fn chat(conn: &mut Connection, console: &mut Console) -> Ended {
    match chat_lines(conn, console).await {
        Ok(ended) => ended,
        Err(e) => Ended::Over(Err(e)),
    }
}

async fn chat_lines(conn: &mut Connection, console: &mut Console) -> Result<Ended> {
    // Set once the user typed `/quit`: the server's close is then expected.
    let mut quitting = false;
    // Set while the last line from the server was a refusal that ends this
    // participant's stay for good (kicked, revoked, ...).
    let mut put_out = false;
    loop {
        tokio::select! {
            line = conn.read_line() => match line {
                Ok(Some(Received::Line(line))) => {
                    let text = protocol::sanitize_bytes(&line);
                    put_out = text
                        .strip_prefix(ERROR_PREFIX)
                        .is_some_and(reconnect::is_final_refusal);
                    console.print(&text)?;
                }
                Ok(Some(Received::Skipped(bytes))) => console.notice(&skipped_notice(bytes)),
                Ok(None) | Err(_) if quitting => {
                    console.finish("you left the room").await;
                    return Ok(Ended::Left);
                }
                Ok(None) if put_out => {
                    console.finish("connection closed by the server").await;
                    return Ok(Ended::Over(Ok(())));
                }
                Ok(None) => {
                    let why = "connection closed by the server".to_owned();
                    return Ok(Ended::Lost { why, failed: false });
                }
                Err(e) if put_out || reconnect::is_tls_failure(&e) => {
                    let err = connection_lost(e);
                    console.finish(&err.to_string()).await;
                    return Ok(Ended::Over(Err(err)));
                }
                Err(e) => {
                    let why = connection_lost(e).to_string();
                    return Ok(Ended::Lost { why, failed: true });
                }
            },
            // After `/quit`, only the server's close is awaited.
            typed = console.next_line(), if !quitting => match typed? {
                Some(text) => {
                    quitting |= protocol::is_quit(&text);
                    let mut line = text.into_bytes();
                    line.push(b'\n');
                    if let Err(e) = conn.send(&line).await {
                        let why = format!("cannot send to the server: {e}");
                        return Ok(Ended::Lost { why, failed: true });
                    }
                }
                None => {
                    // End of input: close cleanly (close_notify) and go.
                    conn.shutdown().await.context("cannot close the connection cleanly")?;
                    return Ok(Ended::Left);
                }
            },
        }
    }
}

/// Answers `NICK` until the server says `Connected to server!`, printing
/// what it says on the way; returns the connection and the nickname it
/// joined as. With `nick` (from `--nick`, a certificate, or the session
/// being resumed), a refusal ends the attempt; without, the user is asked
/// again.
async fn register(
    mut conn: Connection,
    nick: Option<String>,
    console: &mut Console,
) -> Result<(Connection, String), (anyhow::Error, Retry)> {
    let mut joined_as = None;
    loop {
        let line = match conn.read_line().await {
            Ok(Some(Received::Line(line))) => line,
            Ok(Some(Received::Skipped(bytes))) => {
                console.notice(&skipped_notice(bytes));
                continue;
            }
            Ok(None) => {
                let e = anyhow!("the server closed the connection before we joined");
                return Err((e, Retry::Yes));
            }
            Err(e) => {
                let retry = if reconnect::is_tls_failure(&e) {
                    Retry::No
                } else {
                    Retry::Yes
                };
                return Err((connection_lost(e), retry));
            }
        };
        let text = protocol::sanitize_bytes(&line);
        if text == protocol::NICK {
            let chosen = match &nick {
                Some(nick) => nick.clone(),
                None => match console.ask("Choose your nickname: ").await {
                    Ok(Some(nick)) => nick.trim().to_owned(),
                    Ok(None) => {
                        return Err((anyhow!("no nickname given (end of input)"), Retry::No));
                    }
                    Err(e) => return Err((e, Retry::No)),
                },
            };
            if let Err(e) = conn.send(format!("{chosen}\n").as_bytes()).await {
                return Err((anyhow!("cannot send the nickname: {e}"), Retry::Yes));
            }
            console.set_own_nick(&chosen);
            joined_as = Some(chosen);
        } else if let Some(reason) = text.strip_prefix(ERROR_PREFIX) {
            if nick.is_some() {
                // Only when resuming a session may a refusal be retried
                // (its old session may not be gone yet); the first one ends
                // the client whatever it says.
                let retry = if reconnect::is_final_refusal(reason) {
                    Retry::No
                } else {
                    Retry::Yes
                };
                return Err((anyhow!("the server refused: {reason}"), retry));
            }
            eprintln!("the server refused: {reason}");
        } else {
            console.print(&text).map_err(|e| (e, Retry::No))?;
            if text == protocol::CONNECTED {
                let nick = joined_as.or(nick).unwrap_or_default();
                return Ok((conn, nick));
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
