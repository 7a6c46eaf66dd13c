//! What the Lab leaves behind. A student follows docs/lab.md in a clone of
//! the repository and then types `git add .`: nothing they made there (a
//! CA key, a key log, a capture) may be taken in. And `gen-certs` says so
//! when it writes a private key that git would commit.
//!
//! Needs git (and, for the captures, tshark); CI has both. Elsewhere,
//! without them, the tests say so and pass.

use crate::harness::cli::{connect_once, run};
use crate::harness::{BIN, Serve};
use std::path::Path;
use std::process::Command;

/// `git ARGS` in `dir`; its stdout, or `None` when git is not there.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a tool runs here; if not, fine unless on CI.
fn have(tool: &str) -> bool {
    let there = Command::new(tool).arg("--version").output().is_ok();
    if !there {
        assert!(std::env::var_os("CI").is_none(), "CI must install {tool}");
        eprintln!("{tool} not installed: not tested");
    }
    there
}

/// `chatroom ARGS` in `dir`, which must succeed; returns its stderr.
async fn stderr_of(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    stderr
}

#[tokio::test]
async fn gen_certs_warns_when_git_would_commit_its_keys() {
    if !have("git") {
        return;
    }
    let repo = tempfile::tempdir().expect("temp dir");
    let dir = repo.path();
    git(dir, &["init", "-q", "."]);
    let said = stderr_of(dir, &["gen-certs", "--dir", "mine"]).await;
    for key in ["mine/ca-key.pem", "mine/server-key.pem"] {
        let warning = format!("warning: {key} is in a git work tree and not ignored");
        assert!(said.contains(&warning), "{said}");
    }
    assert!(
        said.contains("`git add .` would commit this private key"),
        "{said}"
    );
    let said = stderr_of(dir, &["gen-certs", "client", "alice", "--dir", "mine"]).await;
    assert!(
        said.contains("warning: mine/clients/alice-key.pem is in a git work tree"),
        "{said}"
    );

    // Once the folder is ignored, nothing to say.
    std::fs::write(dir.join(".gitignore"), "/mine/\n").expect("write .gitignore");
    let said = stderr_of(dir, &["gen-certs", "client", "bob", "--dir", "mine"]).await;
    assert!(!said.contains("warning"), "{said}");
    // Nor outside a work tree.
    let outside = tempfile::tempdir().expect("temp dir");
    let said = stderr_of(outside.path(), &["gen-certs"]).await;
    assert!(!said.contains("warning"), "{said}");
}

/// A clone of this repository in a temporary folder, with this working
/// tree's ignore rules and scripts (what is being tested, committed or
/// not); `None` where there is no git or no repository to clone.
fn fresh_clone() -> Option<tempfile::TempDir> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !have("git") || git(source, &["rev-parse", "--git-dir"]).is_none() {
        return None;
    }
    let clone = tempfile::tempdir().expect("temp dir");
    let target = clone.path().join("chatroom");
    let source_text = source.to_str().expect("a UTF-8 path");
    git(clone.path(), &["clone", "-q", source_text, "chatroom"])?;
    for file in [
        ".gitignore",
        "certs/.gitignore",
        "scripts/capture-demo.sh",
        "scripts/dry-run.sh",
    ] {
        std::fs::copy(source.join(file), target.join(file)).expect("copy into the clone");
    }
    Some(clone)
}

/// Runs `scripts/capture-demo.sh ARGS` in `dir` as the Lab does.
fn capture(dir: &Path, args: &[&str]) {
    let out = Command::new("bash")
        .arg("scripts/capture-demo.sh")
        .args(args)
        .current_dir(dir)
        .env("CHATROOM_BIN", BIN)
        .env_remove("SSLKEYLOGFILE")
        .output()
        .expect("the capture script runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn in_a_fresh_clone_the_labs_outputs_stay_out_of_git() {
    let Some(clone) = fresh_clone() else {
        return;
    };
    let dir = &clone.path().join("chatroom");
    // The certificate exercises, as docs/lab.md types them: not one warning.
    for args in [
        &["gen-certs"][..],
        &["gen-certs", "client", "alice"],
        &["gen-certs", "client", "bob"],
        &["certs", "revoke", "bob"],
        &["gen-certs", "--dir", "lab-out/other-ca"],
    ] {
        let said = stderr_of(dir, args).await;
        assert!(!said.contains("warning"), "{args:?}: {said}");
    }
    // Decrypting by hand: a server and a client that log their secrets.
    let server = Serve::start_env(dir, &[], &[("SSLKEYLOGFILE", "lab-out/keys.log")]).await;
    let client_log = [("SSLKEYLOGFILE", "keys.log")];
    let args = ["--addr", server.addr.as_str(), "--nick", "alice"];
    let (status, _, stderr) = connect_once(dir, &args, "hello\n", &client_log).await;
    assert!(status.success(), "{stderr}");
    drop(server);
    for log in ["lab-out/keys.log", "keys.log"] {
        let size = std::fs::metadata(dir.join(log)).map(|m| m.len());
        assert!(size.as_ref().is_ok_and(|n| *n > 0), "{log}: {size:?}");
    }
    // The two captures, where tshark can run.
    if have("tshark") {
        capture(dir, &["lab-out/tls13"]);
        capture(dir, &["--tls-version", "1.2", "lab-out/tls12"]);
        assert!(dir.join("lab-out/tls12/tls-keys.log").is_file());
    }

    let status = git(dir, &["status", "--porcelain", "--untracked-files=all"]).expect("git");
    let untracked: Vec<&str> = status.lines().filter(|l| l.starts_with("??")).collect();
    assert!(untracked.is_empty(), "`git add .` would take in:\n{status}");
    // And they are there, ignored, not missing.
    for made in [
        "certs/ca-key.pem",
        "certs/clients/bob-key.pem",
        "lab-out/other-ca/ca-key.pem",
    ] {
        assert!(dir.join(made).is_file(), "{made}");
    }
}
