//! `serve` refuses a numeric setting outside its range when it starts,
//! naming the range, instead of starting and failing (or panicking) the
//! first time the value meets a clock.

use crate::harness::{BIN, WAIT};
use std::process::Stdio;
use tokio::process::Command;

/// Runs `serve` with `args` in an empty folder; returns its exit success and
/// what it printed on stderr. Fails the test if it is still running after
/// [`WAIT`] (a setting it should have refused let it start).
async fn serve_with(args: &[&str]) -> (bool, String) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("serve {args:?} started instead of refusing the setting"))
        .expect("serve output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn settings_out_of_range_are_refused_at_start_with_their_range() {
    let cases: [(&[&str], &str); 12] = [
        (&["--handshake-timeout", "1e19"], "0.1 to 3600"),
        (&["--handshake-timeout", "0"], "0.1 to 3600"),
        (&["--rate-limit", "1e-300"], "0.01 to 1000000"),
        (&["--idle-timeout", "1e19"], "0 to 2592000"),
        (&["--max-line", "0"], "16 to 1048576"),
        (&["--max-participants", "0"], "1 to 1000000"),
        (&["--backlog", "0"], "must be at least"),
        (&["--joins-per-minute", "0"], "1 to 100000"),
        (&["--announce-up-to", "some"], "expected `all` or a number"),
        (&["--announce-up-to", "10000001"], "0 to 10000000"),
        (&["--exempt", "bogus"], "a network like 10.0.0.0/8, or none"),
        (
            &["--exempt", "none", "--exempt", "10.0.0.0/8"],
            "none cannot be combined",
        ),
    ];
    for (args, range) in cases {
        let (ok, stderr) = serve_with(args).await;
        assert!(!ok, "serve {args:?} succeeded");
        assert!(
            stderr.contains(args[0]) && stderr.contains(range),
            "serve {args:?} did not name the setting and its range {range:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn serve_help_names_each_range() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .await
        .expect("help runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for range in [
        "0.1 to 3600",
        "16 to 1048576",
        "RATE 0.01 to 1000000",
        "at most 2592000",
        "at least 64 KiB",
        "N|all",
        "0 to 10000000",
    ] {
        assert!(help.contains(range), "--help lacks {range:?}: {help}");
    }
}
