//! Private key files are checked with `lstat` before they are used:
//! `gen-certs` reusing a CA, `serve` loading its key, `connect --key`.
//! A symlink, a key another user owns, or one group or others can read is
//! refused with how to fix it; the report shows the real mode.

use crate::harness::BIN;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("chatroom runs")
}

fn stderr_of_failure(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        !out.status.success(),
        "{args:?} should have been refused; it said:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A folder with a CA and a server pair from `gen-certs`.
fn certs_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp");
    let out = run(tmp.path(), &["gen-certs"]);
    assert!(out.status.success());
    tmp
}

/// Gives `path` to the `nobody` user (65534). `false` when this process
/// may not (not root): the caller then has nothing to check.
fn give_away(path: &Path) -> bool {
    match std::os::unix::fs::lchown(path, Some(65534), None) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: only root can give a file to another user");
            false
        }
        Err(e) => panic!("chown: {e}"),
    }
}

#[test]
fn gen_certs_refuses_a_ca_key_others_can_read_and_says_how_to_fix_it() {
    let tmp = certs_folder();
    let dir = tmp.path();
    chmod(&dir.join("certs/ca-key.pem"), 0o644);
    let err = stderr_of_failure(dir, &["gen-certs", "--force"]);
    assert!(err.contains("mode 0644"), "{err}");
    assert!(err.contains("chmod 600 certs/ca-key.pem"), "{err}");
}

#[test]
fn gen_certs_refuses_a_symlinked_ca() {
    // One file at a time: with both symlinked, the key's check alone would
    // refuse, and a missing check on the certificate would go unseen.
    for file in ["ca.pem", "ca-key.pem"] {
        let tmp = certs_folder();
        let dir = tmp.path();
        let server_before = std::fs::read(dir.join("certs/server.pem")).expect("server");
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::fs::rename(dir.join("certs").join(file), elsewhere.join(file)).expect("move");
        symlink(elsewhere.join(file), dir.join("certs").join(file)).expect("symlink");
        let err = stderr_of_failure(dir, &["gen-certs", "--force"]);
        assert!(
            err.contains(&format!("certs/{file} is a symlink")),
            "{file}: {err}"
        );
        assert_eq!(
            std::fs::read(dir.join("certs/server.pem")).expect("server"),
            server_before,
            "{file}: the server certificate was replaced"
        );
    }
}

#[test]
fn gen_certs_refuses_a_ca_key_owned_by_another_user() {
    let tmp = certs_folder();
    let dir = tmp.path();
    if !give_away(&dir.join("certs/ca-key.pem")) {
        return;
    }
    let err = stderr_of_failure(dir, &["gen-certs", "--force"]);
    assert!(err.contains("belongs to user id 65534"), "{err}");
}

#[test]
fn gen_certs_reports_the_real_mode_of_the_ca_key() {
    let tmp = certs_folder();
    let dir = tmp.path();
    chmod(&dir.join("certs/ca-key.pem"), 0o400);
    let out = run(dir, &["gen-certs", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("CA private key (kept): certs/ca-key.pem (mode 0400)"),
        "{report}"
    );
}

/// Runs `serve` and returns what it said when it stopped; fails the test
/// if it is still running (serving) after [`crate::harness::WAIT`].
async fn serve_refusal(dir: &Path) -> String {
    let child = tokio::process::Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let out = tokio::time::timeout(crate::harness::WAIT, child.wait_with_output())
        .await
        .expect("serve must refuse the key and exit, not serve")
        .expect("serve runs");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn serve_refuses_a_symlinked_or_foreign_server_key() {
    let tmp = certs_folder();
    let dir = tmp.path();
    std::fs::rename(dir.join("certs/server-key.pem"), dir.join("real-key.pem")).expect("move");
    symlink(dir.join("real-key.pem"), dir.join("certs/server-key.pem")).expect("symlink");
    let err = serve_refusal(dir).await;
    assert!(err.contains("certs/server-key.pem is a symlink"), "{err}");

    std::fs::remove_file(dir.join("certs/server-key.pem")).expect("unlink");
    std::fs::rename(dir.join("real-key.pem"), dir.join("certs/server-key.pem")).expect("move");
    if !give_away(&dir.join("certs/server-key.pem")) {
        return;
    }
    let err = serve_refusal(dir).await;
    assert!(err.contains("belongs to user id 65534"), "{err}");
}

#[test]
fn connect_refuses_a_client_key_others_can_read() {
    let tmp = certs_folder();
    let dir = tmp.path();
    assert!(run(dir, &["gen-certs", "client", "alice"]).status.success());
    chmod(&dir.join("certs/clients/alice-key.pem"), 0o644);
    // Refused before any connection is made: no server needed.
    let err = stderr_of_failure(
        dir,
        &[
            "connect",
            "--addr",
            "127.0.0.1:9",
            "--cert",
            "certs/clients/alice.pem",
            "--key",
            "certs/clients/alice-key.pem",
        ],
    );
    assert!(err.contains("mode 0644"), "{err}");
    assert!(
        err.contains("chmod 600 certs/clients/alice-key.pem"),
        "{err}"
    );
}
