//! The classroom demo, `scripts/capture-demo.sh`: the same chat captured with
//! tshark on loopback, once in plaintext and once over TLS. The secret line
//! must be readable in the first capture and absent from the second.
//!
//! Needs tshark; CI installs it. Elsewhere, without tshark, the test says so
//! and passes, since the rest of the suite does not depend on it.

use std::process::Command;

#[test]
fn a_capture_shows_the_secret_in_plaintext_and_not_over_tls() {
    let has_tshark = Command::new("tshark").arg("--version").output().is_ok();
    if !has_tshark {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tshark (see .ci/run)"
        );
        eprintln!("tshark not installed: capture demo not run");
        return;
    }
    let out_dir = tempfile::tempdir().expect("temp dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/capture-demo.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(out_dir.path())
        .env("CHATROOM_BIN", env!("CARGO_BIN_EXE_chatroom"))
        .output()
        .expect("runs the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let (plain, tls) = stdout
        .split_once("=== tls:")
        .expect("both captures reported");
    assert!(
        plain.contains("the secret is VISIBLE in the capture"),
        "{stdout}"
    );
    assert!(tls.contains("the secret is NOT in the capture"), "{stdout}");
    assert!(tls.contains("Client Hello"), "{stdout}");
    // Both times the chat itself worked.
    for part in [plain, tls] {
        assert!(part.contains("alice: the vault code is 4711"), "{stdout}");
    }
    assert!(out_dir.path().join("chat-tls.pcapng").exists());
}
