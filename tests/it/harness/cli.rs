//! The built binary's commands other than `serve`, as a user runs them:
//! any command run to its end ([`run`], [`ok`], [`fails`]), a folder of
//! certificates from its `gen-certs` ([`certs_folder`]) and clients that
//! present them ([`as_client`]), `connect` fed a script ([`connect_once`])
//! or typed at line by line ([`Running`]), and client certificates that
//! `gen-certs` would not make, signed with a folder's CA ([`ca_issuer`]).

use super::{BIN, Client, TlsClient, WAIT};
use chatroom::tls;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Runs `chatroom ARGS` in `dir` to its end, with no input, the extra
/// environment `envs` and no inherited `SSLKEYLOGFILE`. Fails the test
/// after [`WAIT`].
pub async fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    tokio::time::timeout(
        WAIT,
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_remove("SSLKEYLOGFILE")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chatroom ends in time")
    .expect("chatroom runs")
}

/// Runs `chatroom ARGS` in `dir`, which must succeed; returns its stdout.
pub async fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args, &[]).await;
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Runs `chatroom ARGS` in `dir`, which must fail; returns its stderr.
pub async fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args, &[]).await;
    assert!(
        !out.status.success(),
        "{args:?} should fail; it printed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A folder with a CA and server certificate from `gen-certs`, and client
/// certificates for `clients` from `gen-certs client`.
pub async fn certs_folder(clients: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp");
    ok(tmp.path(), &["gen-certs"]).await;
    for name in clients {
        ok(tmp.path(), &["gen-certs", "client", name]).await;
    }
    tmp
}

/// A client config that pins `dir`'s CA and presents
/// `certs/clients/NAME.pem`: a fresh one, with no session to resume.
pub fn client_tls_for(dir: &Path, name: &str) -> Arc<rustls::ClientConfig> {
    tls::client_config_with(
        &dir.join("certs/ca.pem"),
        tls::TlsVersion::Any,
        Some((
            &dir.join(format!("certs/clients/{name}.pem")),
            &dir.join(format!("certs/clients/{name}-key.pem")),
        )),
    )
    .expect("client config")
}

/// A client presenting `certs/clients/NAME.pem`, past the handshake.
pub async fn as_client(dir: &Path, addr: SocketAddr, name: &str) -> TlsClient {
    Client::tls(addr, client_tls_for(dir, name)).await
}

/// The CA of `dir` (from gen-certs), as rcgen's issuer.
fn ca_issuer(dir: &Path) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(dir.join("certs/ca-key.pem")).expect("CA key"),
    )
    .expect("CA key PEM");
    rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(dir.join("certs/ca.pem")).expect("CA"),
        key,
    )
    .expect("CA")
}

/// Signs `params` with `dir`'s CA for a fresh key, and writes the
/// certificate to `cert` and the key to `key` (replaced, so the new file is
/// created with mode 0600), both under `dir`.
pub fn write_signed_pair(dir: &Path, params: rcgen::CertificateParams, cert: &str, key: &str) {
    use std::os::unix::fs::PermissionsExt;
    let key_pair = rcgen::KeyPair::generate().expect("key");
    let signed = params.signed_by(&key_pair, &ca_issuer(dir)).expect("sign");
    std::fs::write(dir.join(cert), signed.pem()).expect("write");
    let key_path = dir.join(key);
    let _ = std::fs::remove_file(&key_path);
    std::fs::write(&key_path, key_pair.serialize_pem()).expect("write");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Runs `connect` with `args`, feeding it `stdin` (then its end), with
/// the extra environment `envs` and no inherited `SSLKEYLOGFILE`; returns
/// its exit status, stdout and stderr. Fails the test after [`WAIT`].
pub async fn connect_once(
    dir: &Path,
    args: &[&str],
    stdin: &str,
    envs: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .arg("connect")
        .args(args)
        .current_dir(dir)
        .env_remove("SSLKEYLOGFILE")
        .env_remove("NO_COLOR")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("connect starts");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("connect ends in time")
        .expect("connect runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running `chatroom` with piped stdin and stdout, read a line at a
/// time; killed when dropped.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Running {
    /// `chatroom ARGS` in `dir`, with no inherited `SSLKEYLOGFILE`.
    pub fn start(dir: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env_remove("SSLKEYLOGFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chatroom starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Running {
            child,
            stdin,
            stdout,
        }
    }

    /// The next line on stdout; fails the test after [`WAIT`] or at its end.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a line, not the end of the output")
    }

    /// Types `text` and Enter.
    pub async fn type_line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).await.expect("stdin");
        stdin.write_all(b"\n").await.expect("stdin");
        stdin.flush().await.expect("stdin");
    }

    /// Closes stdin (a client then leaves) and returns whether it ended
    /// well, and its stderr. Fails the test after [`WAIT`].
    pub async fn end(mut self) -> (bool, String) {
        drop(self.stdin.take());
        self.ends().await
    }

    /// Waits for it to end by itself, its stdin still open; whether it
    /// ended well, and its stderr. Fails the test after [`WAIT`].
    pub async fn ends(mut self) -> (bool, String) {
        let mut stderr = String::new();
        let mut pipe = self.child.stderr.take().expect("stderr");
        let status = tokio::time::timeout(WAIT, async {
            tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr)
                .await
                .expect("stderr");
            self.child.wait().await.expect("wait")
        })
        .await
        .expect("ends in time");
        (status.success(), stderr)
    }
}

/// What `chatroom history ARGS --data DIR` writes to stdout; it must
/// succeed.
pub async fn history(data: &Path, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(BIN)
            .arg("history")
            .args(args)
            .arg("--data")
            .arg(data)
            .output(),
    )
    .await
    .expect("history in time")
    .expect("history runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The stored lines in order, as `history export` writes them, each as
/// the room showed it.
pub async fn exported(data: &Path) -> Vec<String> {
    exported_with(data, &[]).await
}

/// [`exported`], with `args` after `history export` (`--channel NAME`).
pub async fn exported_with(data: &Path, args: &[&str]) -> Vec<String> {
    let args: Vec<&str> = ["export"].iter().chain(args).copied().collect();
    history(data, &args)
        .await
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
            let field = |name: &str| v[name].as_str().expect("a string field").to_owned();
            let (nick, text) = (field("nick"), field("text"));
            match field("kind").as_str() {
                "message" => format!("{nick}: {text}"),
                "action" => format!("* {nick} {text}"),
                "join" => format!("{nick} joined!"),
                "leave" if text.is_empty() => format!("{nick} left!"),
                "leave" => format!("{nick} left! ({text})"),
                other => panic!("unknown kind {other}"),
            }
        })
        .collect()
}
