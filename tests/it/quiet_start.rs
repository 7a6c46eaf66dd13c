//! A default `serve` start is quiet: a default the machine cannot honour
//! (50000 participants under a low open-files limit) is sized to the
//! machine with an info line, while a participant limit the user asked for
//! and the machine cannot give is still warned about.

use crate::harness::{BIN, WAIT};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Starts `serve` with `extra` in an empty folder (the first start makes
/// its certificates) under an open-files limit of 4096, hard and soft,
/// whatever this machine's own; returns what it logged up to `listening`.
async fn start_under_4096_open_files(extra: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut serve = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 4096 && exec {BIN} serve --addr 127.0.0.1:0 {extra}"
        ))
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("SSLKEYLOGFILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut log = BufReader::new(serve.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let listening = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = log.next_line().await {
            let listening = line.contains("listening");
            seen.push(line);
            if listening {
                return true;
            }
        }
        false
    })
    .await;
    let _ = serve.kill().await;
    match listening {
        Ok(true) => seen,
        Ok(false) => panic!("serve exited before listening: {seen:#?}"),
        Err(_) => panic!("serve did not listen within {WAIT:?}: {seen:#?}"),
    }
}

#[tokio::test]
async fn a_default_start_sizes_the_participant_limit_to_the_machine_without_a_warning() {
    let seen = start_under_4096_open_files("").await;
    let warnings: Vec<&String> = seen.iter().filter(|line| line.contains("WARN")).collect();
    assert!(warnings.is_empty(), "a default start warned: {seen:#?}");
    // 4096 descriptors: a reserve of 32 and one in 16 (256) leave 3808
    // sockets, of which 64 are for refusals: 3744 participants.
    assert!(
        seen.iter().any(|line| line.contains("INFO")
            && line.contains("participants: at most 3744 (open-files limit 4096)")),
        "{seen:#?}"
    );
}

#[tokio::test]
async fn a_participant_limit_asked_for_beyond_the_open_files_limit_is_warned_about() {
    let seen = start_under_4096_open_files("--max-participants 1000000").await;
    assert!(
        seen.iter().any(|line| line.contains("WARN")
            && line.contains(
                "--max-participants 1000000 exceeds what the open-files limit (4096) allows: \
                 using 3744"
            )),
        "{seen:#?}"
    );
}
