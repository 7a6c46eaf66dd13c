//! The terminal client against what a server may send: a line as long as
//! `serve --max-line` allows reaches every `chatroom connect`, and a line
//! longer than any chatroom server sends is skipped with a notice instead
//! of ending the chat. And `SSLKEYLOGFILE`, which both ends write: opened
//! only as a private file of this user, never through a symlink.
//!
//! The built binary, certificates from its own `gen-certs`, clients with
//! piped stdin and stdout.

use crate::harness::Serve;
use crate::harness::cli::{Running, certs_folder, connect_once, run};
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// A `connect` as `nick`, past `Connected to server!`.
async fn join(dir: &Path, addr: &str, nick: &str) -> Running {
    let mut client = Running::start(
        dir,
        &[
            "connect",
            "--addr",
            addr,
            "--ca",
            "certs/ca.pem",
            "--nick",
            nick,
        ],
    );
    assert_eq!(client.line().await, format!("{nick} joined!"));
    assert_eq!(client.line().await, "Connected to server!");
    client
}

#[tokio::test]
async fn a_line_as_long_as_the_server_allows_reaches_every_client() {
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    let serve = Serve::start(dir, &["--max-line", "200000"]).await;
    let addr = &serve.addr;

    let mut alice = join(dir, addr, "alice").await;
    let mut bob = join(dir, addr, "bob").await;
    assert_eq!(alice.line().await, "bob joined!");

    let long = "x".repeat(150_000);
    alice.type_line(&long).await;
    let expected = format!("alice: {long}");
    for client in [&mut alice, &mut bob] {
        let got = client.line().await;
        assert!(got == expected, "a line of {} bytes instead", got.len());
    }
    alice.type_line("after").await;
    assert_eq!(bob.line().await, "alice: after");
    assert_eq!(alice.line().await, "alice: after");
    let (ok, said) = bob.end().await;
    assert!(ok, "{said}");
    let (ok, said) = alice.end().await;
    assert!(ok, "{said}");
}

#[tokio::test]
async fn a_line_longer_than_any_server_sends_is_skipped_with_a_notice() {
    use tokio::io::AsyncReadExt;
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    // A server that is not chatroom: plain TCP, one line of 3 MiB.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        tcp.write_all(b"NICK\n").await.expect("write");
        let mut nick = [0u8; 6];
        tcp.read_exact(&mut nick).await.expect("nick");
        assert_eq!(&nick, b"alice\n");
        tcp.write_all(b"alice joined!\nConnected to server!\n")
            .await
            .expect("write");
        let mut huge = vec![b'y'; 3 << 20];
        huge.push(b'\n');
        tcp.write_all(&huge).await.expect("write");
        tcp.write_all(b"still here\n").await.expect("write");
        // Until the client leaves.
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    });
    let mut alice = Running::start(
        dir,
        &["connect", "--addr", &addr, "--plaintext", "--nick", "alice"],
    );
    assert_eq!(alice.line().await, "alice joined!");
    assert_eq!(alice.line().await, "Connected to server!");
    assert_eq!(alice.line().await, "still here");
    let (ok, said) = alice.end().await;
    assert!(ok, "{said}");
    assert!(
        said.contains("skipped a line of 3145729 bytes from the server"),
        "{said}"
    );
    server.await.expect("server");
}

// ---------------------------------------------------------------------------
// SSLKEYLOGFILE: a private file of this user, never through a symlink.

/// Runs `connect` to `addr` as `nick` with `stdin` and the environment
/// `envs`; returns whether it succeeded, its stdout and its stderr.
async fn connect_as(
    dir: &Path,
    addr: &str,
    nick: &str,
    stdin: &str,
    envs: &[(&str, &str)],
) -> (bool, String, String) {
    let args = ["--addr", addr, "--nick", nick, "--ca", "certs/ca.pem"];
    let (status, stdout, stderr) = connect_once(dir, &args, stdin, envs).await;
    (status.success(), stdout, stderr)
}

/// `serve` with `SSLKEYLOGFILE=keys` must refuse to start; returns what it
/// said.
async fn serve_refuses_key_log(dir: &Path, keys: &Path) -> String {
    let keys = keys.to_str().expect("UTF-8");
    let out = run(
        dir,
        &["serve", "--addr", "127.0.0.1:0"],
        &[("SSLKEYLOGFILE", keys)],
    )
    .await;
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_symlinked_key_log_is_refused_by_both_ends() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    // Someone's file, reached through a link in a shared folder.
    let target = dir.join("elsewhere.log");
    std::fs::write(&target, "").expect("target");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = dir.join("keys.log");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let link_env = link.to_str().expect("UTF-8");

    let said = serve_refuses_key_log(dir, &link).await;
    assert!(
        said.contains("keys.log") && said.contains("symlink"),
        "{said}"
    );

    let serve = Serve::start(dir, &[]).await;
    let addr = &serve.addr;
    let (success, stdout, said) =
        connect_as(dir, addr, "alice", "hi\n", &[("SSLKEYLOGFILE", link_env)]).await;
    assert!(!success, "{stdout}");
    assert!(
        said.contains("keys.log") && said.contains("symlink"),
        "{said}"
    );
    assert!(
        !stdout.contains("Connected"),
        "refused before connecting: {stdout}"
    );
    assert_eq!(
        std::fs::read(&target).expect("target"),
        b"",
        "nothing written"
    );
}

#[tokio::test]
async fn an_existing_key_log_others_may_read_is_refused_by_both_ends() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    let keys = dir.join("keys.log");
    std::fs::write(&keys, "").expect("pre-created");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let keys_env = keys.to_str().expect("UTF-8");

    let said = serve_refuses_key_log(dir, &keys).await;
    assert!(said.contains("keys.log") && said.contains("0644"), "{said}");

    let serve = Serve::start(dir, &[]).await;
    let addr = &serve.addr;
    let (success, stdout, said) =
        connect_as(dir, addr, "alice", "hi\n", &[("SSLKEYLOGFILE", keys_env)]).await;
    assert!(!success, "{stdout}");
    assert!(said.contains("keys.log") && said.contains("0644"), "{said}");
    assert_eq!(std::fs::read(&keys).expect("keys"), b"", "nothing written");
    assert_eq!(mode_of(&keys), 0o644, "left as it was");

    // Private, but another user's: refused too (only root can make one).
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&keys, Some(65534), None).expect("chown");
        let said = serve_refuses_key_log(dir, &keys).await;
        assert!(said.contains("belongs to user id 65534"), "{said}");
    }
}

#[tokio::test]
async fn a_new_key_log_is_made_private_and_gets_both_ends_secrets() {
    let tmp = certs_folder(&[]).await;
    let dir = tmp.path();
    let keys = dir.join("keys.log");
    let keys_env = keys.to_str().expect("UTF-8");
    let serve = Serve::start_env(dir, &[], &[("SSLKEYLOGFILE", keys_env)]).await;
    let addr = &serve.addr;
    assert_eq!(mode_of(&keys), 0o600);
    let (success, stdout, said) =
        connect_as(dir, addr, "alice", "hi\n", &[("SSLKEYLOGFILE", keys_env)]).await;
    assert!(success, "{said}");
    assert!(stdout.contains("Connected to server!"), "{stdout}");
    // The server wrote its secrets during the handshake, before the
    // client could hear `Connected to server!`.
    let log = std::fs::read_to_string(&keys).expect("key log");
    // TLS 1.3: each end writes its traffic secrets, one whole line each.
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 8, "{log}");
    assert!(
        lines.iter().all(|line| line.split(' ').count() == 3),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("CLIENT_TRAFFIC_SECRET_0 ")),
        "{log}"
    );
    assert_eq!(mode_of(&keys), 0o600);
}
