//! What the tests share: certificates from the project's own gen-certs in
//! a temporary folder, the real server on 127.0.0.1:0 ([`TestServer`]), the
//! tests' chat client ([`client`]), the built binary (`serve` in
//! [`serve`], its other commands in [`cli`]), its metrics endpoint
//! ([`http`]), a real nats-server and
//! cluster nodes ([`nats`]), tmux ([`tmux`]) and tests that need a process
//! of their own ([`alone`]). Every wait has a timeout, so a broken build
//! fails instead of hanging.

pub mod alone;
pub mod answer_key;
pub mod browser;
pub mod cli;
pub mod client;
pub mod http;
pub mod nats;
pub mod serve;
pub mod tmux;
pub mod websocket;

pub use cli::connect_once;
pub use client::{Client, Dial, TlsClient, local, stuck_reader, tcp, tls_over};
pub use nats::NatsServer;
pub use serve::{BIN, Serve};

use chatroom::certs::{self, GenOptions};
use chatroom::server::{RunningServer, Settings};
use chatroom::tls;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A certificate folder made by `gen-certs`.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn new() -> TestCerts {
        let dir = tempfile::tempdir().expect("temp dir");
        certs::generate(&GenOptions {
            dir: dir.path().to_path_buf(),
            extra_sans: Vec::new(),
            force: false,
        })
        .expect("gen-certs");
        TestCerts { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path(certs::CA_CERT)
    }

    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        tls::reloadable_server_config_with(
            &self.path(certs::SERVER_CERT),
            &self.path(certs::SERVER_KEY),
            None,
            tls::TlsVersion::Any,
        )
        .expect("server TLS config")
        .0
    }

    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        tls::client_config(&self.ca()).expect("client TLS config")
    }

    /// Client certificates from `gen-certs client`, for servers started
    /// with `--client-ca` (mutual TLS): issues client NAME's certificate;
    /// returns its certificate and key.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        let report = certs::issue::client(self.dir.path(), name, certs::CLIENT_DAYS, false)
            .expect("gen-certs client");
        (report.cert, report.key)
    }

    /// Client NAME's certificate and key, issued by an earlier
    /// [`TestCerts::client`].
    pub fn issued(&self, name: &str) -> (PathBuf, PathBuf) {
        let clients = self.dir.path().join("clients");
        (
            clients.join(format!("{name}.pem")),
            clients.join(format!("{name}-key.pem")),
        )
    }

    /// A client config that pins this CA and presents `cert`/`key`.
    pub fn client_tls_as(&self, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
        tls::client_config_with(&self.ca(), tls::TlsVersion::Any, Some((cert, key)))
            .expect("client TLS config with cert")
    }
}

/// A TLS server on an ephemeral loopback port, with its certificates.
pub struct TestServer {
    pub server: RunningServer,
    pub certs: TestCerts,
    pub client_tls: Arc<rustls::ClientConfig>,
}

impl TestServer {
    /// Default settings, except that tests chat faster than people.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let certs = TestCerts::new();
        let mut settings = Settings::new(Some(certs.server_tls()));
        settings.limits.rate = None;
        adjust(&mut settings);
        let server = RunningServer::start(loopback(), settings)
            .await
            .expect("server starts");
        let client_tls = certs.client_tls();
        TestServer {
            server,
            certs,
            client_tls,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// A TLS client, connected and past the handshake, not yet registered.
    pub async fn connect(&self) -> TlsClient {
        Client::tls(self.addr(), self.client_tls.clone()).await
    }

    /// A TLS client that has joined as `nick` (its join lines consumed).
    pub async fn join(&self, nick: &str) -> TlsClient {
        let mut client = self.connect().await;
        client.register(nick).await;
        client
    }

    /// A TLS client connected from `local` (see [`Dial`]), with the
    /// kernel's receive buffer set to `recv_buffer` bytes if given, past the
    /// handshake, not yet registered.
    pub async fn connect_from(
        &self,
        local: IpAddr,
        recv_buffer: Option<u32>,
    ) -> std::io::Result<TlsClient> {
        let dial = Dial {
            from: Some(local),
            recv_buffer,
            ..Dial::default()
        };
        Ok(Client::new(
            dial.tls(self.addr(), self.client_tls.clone()).await?,
        ))
    }
}

/// A TLS server requiring client certificates of `certs`' CA, with the
/// CRL `certs/crl.pem` whenever it exists and `deny` refused at join.
/// Returns the server and its access policy (to reload).
pub async fn start_mutual_tls(
    certs: &TestCerts,
    deny: &[&str],
) -> (RunningServer, Arc<chatroom::server::access::Access>) {
    start_with_access(
        certs,
        chatroom::server::access::AccessFiles {
            deny: deny.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        },
    )
    .await
}

/// A file in `certs`' folder naming `operators`, for `--operators`.
pub fn operators_file(certs: &TestCerts, operators: &[&str]) -> PathBuf {
    let file = certs.path("operators.txt");
    let mut listed = String::from("# who may /kick\n");
    for name in operators {
        listed.push_str(&format!("{name}\n"));
    }
    std::fs::write(&file, listed).expect("operators file");
    file
}

/// A client of `server` holding `name`'s certificate (issued if new),
/// registered as `name`.
pub async fn join_as_holder(server: &RunningServer, certs: &TestCerts, name: &str) -> TlsClient {
    let (cert, key) = certs.client(name);
    let mut client = Client::tls(server.addr, certs.client_tls_as(&cert, &key)).await;
    client.register(name).await;
    client
}

/// [`start_mutual_tls`] with the rest of the access policy in `files`
/// (its client CA and CRL are `certs`').
pub async fn start_with_access(
    certs: &TestCerts,
    files: chatroom::server::access::AccessFiles,
) -> (RunningServer, Arc<chatroom::server::access::Access>) {
    start_with_access_and(certs, files, |_| {}).await
}

/// [`start_with_access`], with `tweak` applied to its settings.
pub async fn start_with_access_and(
    certs: &TestCerts,
    files: chatroom::server::access::AccessFiles,
    tweak: impl FnOnce(&mut Settings),
) -> (RunningServer, Arc<chatroom::server::access::Access>) {
    use chatroom::server::access::{Access, AccessFiles};
    let access = Access::load(AccessFiles {
        client_ca: Some(certs.ca()),
        crl_if_present: Some(certs.path(certs::CRL)),
        ..files
    })
    .expect("access policy");
    let (config, _) = tls::reloadable_server_config_with(
        &certs.path(certs::SERVER_CERT),
        &certs.path(certs::SERVER_KEY),
        access.client_verifier(),
        tls::TlsVersion::Any,
    )
    .expect("server TLS config");
    let mut settings = Settings::new(Some(config));
    settings.limits.rate = None;
    settings.access = Some(access.clone());
    tweak(&mut settings);
    let server = RunningServer::start(loopback(), settings)
        .await
        .expect("server starts");
    (server, access)
}
