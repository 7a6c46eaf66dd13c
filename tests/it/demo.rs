//! `scripts/demo.sh`: the lab's dry run with a fresh server and three real
//! `connect` processes, each participant's screen side by side. Checks the
//! transcripts the README shows, and that the script leaves nothing behind.

use std::process::Command;

#[test]
fn the_demo_plays_the_dry_run_and_shows_each_screen() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh");
    let output = Command::new("bash")
        .arg(script)
        .env("CHATROOM_BIN", env!("CARGO_BIN_EXE_chatroom"))
        .env("TMPDIR", tmp.path())
        .env_remove("SSLKEYLOGFILE")
        .output()
        .expect("runs the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let table: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Alice's screen"))
        .take_while(|l| !l.is_empty())
        .map(|l| l.trim_end().to_owned())
        .collect();
    assert_eq!(
        table,
        [
            "Alice's screen            Bob's screen              Charlie's screen",
            "Alice joined!             Bob joined!               Charlie joined!",
            "Connected to server!      Connected to server!      Connected to server!",
            "Bob joined!               Charlie joined!           Alice: Hello everyone!",
            "Charlie joined!           Alice: Hello everyone!",
            "Alice: Hello everyone!    Charlie left!",
            "Charlie left!",
            "Bob left!",
        ],
        "{stdout}"
    );
    // Whom Alice's client talked to, from its stderr.
    assert!(stdout.contains("over TLS 1.3"), "{stdout}");
    // The temporary folder is gone.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("dir").collect();
    assert!(left.is_empty(), "{left:?}");
}
