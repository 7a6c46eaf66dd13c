//! The built binary end to end: `gen-certs` into a temporary folder, `serve`
//! on an ephemeral port, and `connect` processes driven through pipes.

use crate::harness::{BIN, Serve, WAIT, connect_once};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

async fn run(args: &[&str], dir: &Path) -> std::process::Output {
    tokio::time::timeout(WAIT, Command::new(BIN).args(args).current_dir(dir).output())
        .await
        .expect("finishes in time")
        .expect("runs")
}

struct Connect {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Connect {
    fn spawn(dir: &Path, addr: &str, extra: &[&str]) -> Connect {
        let mut child = Command::new(BIN)
            .args(["connect", "--addr", addr])
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("connect starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Connect { child, stdout }
    }

    async fn expect(&mut self, expected: &str) {
        let line = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a line, not EOF");
        assert_eq!(line, expected);
    }

    async fn say(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("write");
        stdin.flush().await.expect("flush");
    }

    /// Closes stdin; returns the exit status, what was left on stdout
    /// (beyond the lines already expected) and what was printed to stderr.
    async fn finish_reading_stdout(mut self) -> (std::process::ExitStatus, String, String) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = self.stdout.next_line().await.expect("read") {
                rest.push_str(&line);
                rest.push('\n');
            }
        })
        .await
        .expect("stdout ends in time");
        let (status, stderr) = self.finish().await;
        (status, rest, stderr)
    }

    /// Closes stdin; returns the exit status and what was printed to stderr.
    async fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.child.stdin.take());
        let out = tokio::time::timeout(WAIT, self.child.wait_with_output())
            .await
            .expect("exits in time")
            .expect("wait");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn gen_certs_writes_private_keys_0600_and_keeps_the_ca() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let out = run(
        &[
            "gen-certs",
            "--dir",
            "c",
            "--san",
            "chat.lan",
            "--san",
            "10.0.0.7",
        ],
        dir,
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("CA SHA-256 fingerprint:"), "{report}");
    assert!(report.contains("chat.lan, 10.0.0.7"), "{report}");
    let certs = dir.join("c");
    assert_eq!(mode(&certs.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&certs.join("server-key.pem")), 0o600);
    let ca_before = std::fs::read(certs.join("ca.pem")).expect("ca");

    // A second run refuses to replace the server certificate...
    let again = run(&["gen-certs", "--dir", "c"], dir).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    // ...and with --force replaces it but keeps the CA.
    let server_before = std::fs::read(certs.join("server.pem")).expect("server");
    let forced = run(&["gen-certs", "--dir", "c", "--force"], dir).await;
    assert!(forced.status.success(), "{forced:?}");
    assert!(String::from_utf8_lossy(&forced.stdout).contains("(kept)"));
    assert_eq!(std::fs::read(certs.join("ca.pem")).expect("ca"), ca_before);
    assert_ne!(
        std::fs::read(certs.join("server.pem")).expect("server"),
        server_before
    );
    assert_eq!(mode(&certs.join("server-key.pem")), 0o600);
}

#[tokio::test]
async fn serve_and_two_connect_processes_over_pipes() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    // No certificates yet: serve makes them itself in ./certs.
    let serve = Serve::start(dir, &[]).await;
    assert_eq!(mode(&dir.join("certs/server-key.pem")), 0o600);

    let mut alice = Connect::spawn(dir, &serve.addr, &["--nick", "alice"]);
    alice.expect("alice joined!").await;
    alice.expect("Connected to server!").await;
    let mut bob = Connect::spawn(dir, &serve.addr, &["--nick", "bob"]);
    bob.expect("bob joined!").await;
    bob.expect("Connected to server!").await;
    alice.expect("bob joined!").await;

    alice.say("Hello everyone!").await;
    alice.expect("alice: Hello everyone!").await;
    bob.expect("alice: Hello everyone!").await;
    // Terminal escapes from a peer never reach the other terminal.
    bob.say("\u{1b}[2Jcleared?").await;
    alice.expect("bob: [2Jcleared?").await;

    // A line piped just before the end of input is still delivered: the
    // client sends it before it closes the session.
    alice.say("last words").await;
    let (status, stderr) = alice.finish().await;
    assert!(status.success(), "alice exited with {status}: {stderr}");
    bob.expect("bob: [2Jcleared?").await;
    bob.expect("alice: last words").await;
    bob.expect("alice left!").await;

    // A taken nickname given with --nick ends with the reason, non-zero.
    let taken = Connect::spawn(dir, &serve.addr, &["--nick", "BOB"]);
    let (status, stderr) = taken.finish().await;
    assert!(!status.success());
    assert!(stderr.contains("nickname \"BOB\" is taken"), "{stderr}");

    // Without --nick the client asks, and asks again after a refusal. With
    // pipes the prompts go to stderr: stdout holds the server's lines only.
    let mut rob = Connect::spawn(dir, &serve.addr, &[]);
    rob.say("Bob").await;
    rob.say("rob").await;
    rob.expect("rob joined!").await;
    rob.expect("Connected to server!").await;
    bob.expect("rob joined!").await;
    let (status, rest, stderr) = rob.finish_reading_stdout().await;
    assert!(status.success());
    assert_eq!(rest, "", "nothing but the server's lines on stdout");
    assert!(
        stderr.contains("the server refused: nickname \"Bob\" is taken"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Choose your nickname: ").count(),
        2,
        "{stderr}"
    );
    bob.expect("rob left!").await;

    // The server closed alice's session cleanly (close_notify), not by error.
    let (status, _) = bob.finish().await;
    assert!(status.success());
    let log = serve.kill_and_log().await;
    let left = log
        .lines()
        .find(|l| l.contains("nick=alice") && l.contains("left: "))
        .unwrap_or_else(|| panic!("alice's leave is logged: {log}"));
    // An unclean close is logged as "closed the connection without TLS
    // close_notify", which starts with the same words.
    assert!(
        left.contains("left: closed the connection") && !left.contains("close_notify"),
        "{left}"
    );
    // Message text never appears in the server's log at info level.
    assert!(!log.contains("Hello everyone"), "{log}");
}

#[tokio::test]
async fn connect_names_the_server_it_talks_to_by_the_host_of_its_address() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let serve = Serve::start(dir, &[]).await;
    let port = serve.addr.rsplit_once(':').expect("host:port").1.to_owned();
    // gen-certs' server certificate carries both names, so each host
    // verifies, under its own name.
    for host in ["127.0.0.1", "localhost"] {
        let addr = format!("{host}:{port}");
        let (status, stdout, stderr) =
            connect_once(dir, &["--addr", &addr, "--nick", "alice"], "", &[]).await;
        assert!(status.success(), "{addr}: {stderr}");
        assert!(stdout.contains("Connected to server!"), "{stdout}");
        assert!(
            stderr.contains(&format!(
                "connected to {addr} (server name \"{host}\") over TLS"
            )),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn connect_explains_a_certificate_from_another_ca() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let serve = Serve::start(dir, &[]).await;
    let other = run(&["gen-certs", "--dir", "other"], dir).await;
    assert!(other.status.success());
    let client = Connect::spawn(dir, &serve.addr, &["--nick", "eve", "--ca", "other/ca.pem"]);
    let (status, stderr) = client.finish().await;
    assert!(!status.success());
    assert!(stderr.contains("not signed by the pinned CA"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    // A name the certificate does not carry.
    let client = Connect::spawn(
        dir,
        &serve.addr,
        &["--nick", "eve", "--server-name", "chat.example"],
    );
    let (status, stderr) = client.finish().await;
    assert!(!status.success());
    assert!(
        stderr.contains("not valid for \"chat.example\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn plaintext_mode_on_both_sides() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    assert!(run(&["gen-certs"], dir).await.status.success());
    let serve = Serve::start(dir, &["--plaintext"]).await;
    let mut carol = Connect::spawn(dir, &serve.addr, &["--nick", "carol", "--plaintext"]);
    carol.expect("carol joined!").await;
    carol.expect("Connected to server!").await;
    carol.say("in the clear").await;
    carol.expect("carol: in the clear").await;
    let (status, stderr) = carol.finish().await;
    assert!(status.success());
    assert!(stderr.contains("--plaintext"), "{stderr}");
    // A TLS client against the plaintext server explains what is wrong.
    let tls = Connect::spawn(dir, &serve.addr, &["--nick", "dave"]);
    let (status, stderr) = tls.finish().await;
    assert!(!status.success());
    assert!(stderr.contains("--plaintext"), "{stderr}");
    assert!(serve.kill_and_log().await.contains("PLAINTEXT MODE"));
}

#[tokio::test]
async fn serve_refuses_missing_or_exposed_key_files() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let out = run(
        &["serve", "--addr", "127.0.0.1:0", "--cert", "nope.pem"],
        dir,
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read certificate file nope.pem"),
        "{stderr}"
    );
    // Explicit paths are never generated.
    assert!(!dir.join("certs").exists());

    assert!(run(&["gen-certs"], dir).await.status.success());
    let key = dir.join("certs/server-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = run(&["serve", "--addr", "127.0.0.1:0"], dir).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

/// A client whose server goes away ends at once (with `--no-reconnect`),
/// though its stdin (a pipe nobody closes) still has a read waiting: that
/// read must not keep the process alive. The same when the server refuses
/// it at once.
#[tokio::test]
async fn a_client_ends_when_its_server_goes_though_its_stdin_stays_open() {
    let tmp = tempfile::tempdir().expect("temp");
    let serve = Serve::start(tmp.path(), &["--deny", "alice"]).await;
    let client = |nick: &str| {
        crate::harness::cli::Running::start(
            tmp.path(),
            &[
                "connect",
                "--no-reconnect",
                "--addr",
                &serve.addr,
                "--nick",
                nick,
            ],
        )
    };
    let (_, stderr) = client("alice").ends().await;
    assert!(stderr.contains("denied"), "{stderr}");

    let mut bob = client("bob");
    assert_eq!(bob.line().await, "bob joined!");
    serve.signal("TERM").await;
    let (_, stderr) = bob.ends().await;
    assert!(stderr.contains("closed"), "{stderr}");
}
