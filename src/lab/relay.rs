//! The relay itself: a listener on a loopback address that forwards each
//! connection to the server, reports every piece that passes
//! ([`super::stream`]) on an events channel, and acts on the most recent
//! connection when told to ([`Command`]).

use super::stream::{Piece, Splitter};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long the relay waits for the server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands waiting for a connection to act on them.
const QUEUED_COMMANDS: usize = 16;

/// What the relay can be told to do to the most recent connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send these bytes to the server between the client's own.
    Inject(Vec<u8>),
    /// Do not pass on the client's next record (or line).
    Drop,
    /// Send the client's last record (or line) to the server again.
    Replay,
}

/// The commands the relay reads on its standard input, for its help.
pub const COMMANDS: &str = "inject TEXT, drop, replay";

impl Command {
    /// Reads one command line: `inject TEXT` (TEXT and a newline are sent),
    /// `drop` or `replay`.
    pub fn parse(line: &str) -> Result<Command> {
        let line = line.trim_end_matches(['\n', '\r']);
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "inject" if !rest.is_empty() => Ok(Command::Inject(format!("{rest}\n").into_bytes())),
            "inject" => bail!("inject what? `inject TEXT` sends TEXT and a newline to the server"),
            "drop" if rest.trim().is_empty() => Ok(Command::Drop),
            "replay" if rest.trim().is_empty() => Ok(Command::Replay),
            _ => bail!(
                "unknown command {:?}: the commands are {COMMANDS}",
                crate::certs::escape(line)
            ),
        }
    }
}

/// Refuses any address but a loopback one, with the reason.
pub fn check_loopback(option: &str, addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!(
            "{option} {addr} is not a loopback address: the lab relay only listens on and \
             connects to this machine (127.0.0.0/8 or [::1]), so that it can only ever sit \
             between your own client and your own server"
        );
    }
    Ok(())
}

/// The most recent connection, which commands act on.
struct Latest {
    id: u64,
    commands: mpsc::Sender<Command>,
}

/// A relay bound to its listening address, not yet running.
pub struct Relay {
    listener: TcpListener,
    to: SocketAddr,
    latest: Arc<Mutex<Option<Latest>>>,
    events: mpsc::Sender<String>,
}

/// Hands commands to the relay's most recent connection.
#[derive(Clone)]
pub struct Commands {
    latest: Arc<Mutex<Option<Latest>>>,
}

impl Commands {
    /// Gives `command` to the most recent connection; says which, or why
    /// there is none to act on.
    pub fn send(&self, command: Command) -> Result<u64> {
        let latest = crate::sync::lock(&self.latest);
        let Some(latest) = latest.as_ref() else {
            bail!("no connection yet: connect a client to the relay first");
        };
        match latest.commands.try_send(command) {
            Ok(()) => Ok(latest.id),
            Err(mpsc::error::TrySendError::Full(_)) => {
                bail!("connection #{} has commands waiting already", latest.id)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                bail!("connection #{} has ended", latest.id)
            }
        }
    }
}

impl Relay {
    /// Listens on `listen` to relay to `to`; both must be loopback
    /// addresses. What passes is reported on `events`, one line each.
    pub async fn bind(
        listen: SocketAddr,
        to: SocketAddr,
        events: mpsc::Sender<String>,
    ) -> Result<Relay> {
        check_loopback("--listen", listen)?;
        check_loopback("--to", to)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        Ok(Relay {
            listener,
            to,
            latest: Arc::new(Mutex::new(None)),
            events,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().context("no listening address")
    }

    pub fn commands(&self) -> Commands {
        Commands {
            latest: self.latest.clone(),
        }
    }

    /// Accepts and relays connections until the listener fails.
    pub async fn run(self) -> Result<()> {
        let mut next_id = 1;
        loop {
            let (client, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                // One client gave up before it was accepted: not the
                // listener's failure.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(e).context("cannot accept"),
            };
            let (commands, queued) = mpsc::channel(QUEUED_COMMANDS);
            let id = next_id;
            next_id += 1;
            *crate::sync::lock(&self.latest) = Some(Latest { id, commands });
            let link = Link {
                id,
                events: self.events.clone(),
            };
            link.say(format!("open: client {peer}, relayed to {}", self.to))
                .await;
            tokio::spawn(relay_one(link, client, self.to, queued));
        }
    }
}

/// One relayed connection's number and where it reports.
#[derive(Clone)]
struct Link {
    id: u64,
    events: mpsc::Sender<String>,
}

impl Link {
    async fn say(&self, what: String) {
        // Nobody listening any more (the relay is stopping): nothing to do.
        let _ = self.events.send(format!("#{} {what}", self.id)).await;
    }
}

/// Relays `client` to `to` until either side ends; then closes both.
async fn relay_one(
    link: Link,
    client: TcpStream,
    to: SocketAddr,
    commands: mpsc::Receiver<Command>,
) {
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            return link
                .say(format!("cannot connect to the server {to}: {e}"))
                .await;
        }
        Err(_) => {
            return link
                .say(format!("the server {to} did not answer in time"))
                .await;
        }
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = upstream(link.clone(), client_read, server_write, commands);
    let down = downstream(link.clone(), server_read, client_write);
    let ended = tokio::select! {
        ended = up => ended,
        ended = down => ended,
    };
    link.say(format!("closed: {ended}")).await;
}

/// From the server to the client: every piece reported and passed on.
async fn downstream(link: Link, mut from: OwnedReadHalf, mut to: OwnedWriteHalf) -> String {
    let mut splitter = Splitter::new();
    let mut buf = vec![0; 4096];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return "the server closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) => return format!("the server's side failed: {e}"),
        };
        for piece in splitter.push(&buf[..n]) {
            link.say(format!("server > client: {}", piece.describe()))
                .await;
            if let Err(e) = to.write_all(&piece.bytes).await {
                return format!("cannot write to the client: {e}");
            }
        }
    }
}

/// The client's side of one connection, as the commands change it.
struct Upstream {
    link: Link,
    to: OwnedWriteHalf,
    splitter: Splitter,
    drop_next: bool,
    last: Option<Piece>,
}

/// From the client to the server, with the commands acted on in between.
async fn upstream(
    link: Link,
    mut from: OwnedReadHalf,
    to: OwnedWriteHalf,
    mut commands: mpsc::Receiver<Command>,
) -> String {
    let mut state = Upstream {
        link,
        to,
        splitter: Splitter::new(),
        drop_next: false,
        last: None,
    };
    let mut buf = vec![0; 4096];
    loop {
        let step = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) => return "the client closed the connection".to_owned(),
                Ok(n) => state.pass_on(&buf[..n]).await,
                Err(e) => return format!("the client's side failed: {e}"),
            },
            Some(command) = commands.recv() => state.act(command).await,
        };
        if let Err(e) = step {
            return format!("cannot write to the server: {e}");
        }
    }
}

impl Upstream {
    async fn pass_on(&mut self, data: &[u8]) -> std::io::Result<()> {
        for piece in self.splitter.push(data) {
            if self.drop_next {
                self.drop_next = false;
                let what = piece.describe();
                self.link
                    .say(format!("client > server: DROPPED {what}"))
                    .await;
                continue;
            }
            self.link
                .say(format!("client > server: {}", piece.describe()))
                .await;
            self.to.write_all(&piece.bytes).await?;
            self.last = Some(piece);
        }
        Ok(())
    }

    async fn act(&mut self, command: Command) -> std::io::Result<()> {
        let unit = if self.splitter.is_tls() {
            "record"
        } else {
            "line"
        };
        match command {
            Command::Inject(bytes) => {
                let shown = crate::certs::escape(&String::from_utf8_lossy(&bytes)).into_owned();
                let n = bytes.len();
                self.link
                    .say(format!("INJECTED > server: {n} bytes \"{shown}\""))
                    .await;
                self.to.write_all(&bytes).await?;
            }
            Command::Drop => {
                self.drop_next = true;
                let what = format!("drop: the client's next {unit} will not reach the server");
                self.link.say(what).await;
            }
            Command::Replay => match &self.last {
                Some(piece) => {
                    let what = format!("REPLAYED > server: {}", piece.describe());
                    self.link.say(what).await;
                    self.to.write_all(&piece.bytes).await?;
                }
                None => {
                    self.link
                        .say(format!("replay: the client has sent no {unit} yet"))
                        .await
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_as_the_help_says() {
        assert_eq!(
            Command::parse("inject I resign\n").expect("inject"),
            Command::Inject(b"I resign\n".to_vec())
        );
        assert_eq!(Command::parse("drop").expect("drop"), Command::Drop);
        assert_eq!(
            Command::parse("replay\r\n").expect("replay"),
            Command::Replay
        );
        assert!(Command::parse("inject").is_err());
        let unknown = Command::parse("dorp\x1b[2J")
            .expect_err("unknown")
            .to_string();
        assert!(
            unknown.contains("\\x1b") && unknown.contains(COMMANDS),
            "{unknown}"
        );
    }

    #[test]
    fn only_loopback_addresses_are_accepted() {
        let ok = |s: &str| check_loopback("--to", s.parse().expect("an address"));
        assert!(ok("127.0.0.1:55555").is_ok());
        assert!(ok("127.3.2.1:1").is_ok());
        assert!(ok("[::1]:55555").is_ok());
        let refused = ok("192.168.1.10:55555").expect_err("refused").to_string();
        assert!(refused.contains("not a loopback address"), "{refused}");
        assert!(ok("0.0.0.0:55555").is_err());
    }
}
