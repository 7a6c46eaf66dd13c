//! contrib/chatroom.service: systemd itself reads it (`systemd-analyze
//! verify`, where systemd-analyze is installed), its `ExecStart` is a
//! command line `chatroom` accepts, and it keeps the sandboxing and the
//! reload that docs/operations.md promises.

use crate::harness::BIN;
use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../../contrib/chatroom.service");

/// Where the unit expects the binary (`cargo install --path . --root
/// /usr/local`).
const INSTALLED: &str = "/usr/local/bin/chatroom";

/// The value of each `key=value` line of the unit with this key, in order.
fn values<'a>(key: &str) -> Vec<&'a str> {
    UNIT.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_runs_serve_sandboxed_with_a_reload() {
    let expected = [
        ("DynamicUser", "yes"),
        ("StateDirectory", "chatroom"),
        ("WorkingDirectory", "/var/lib/chatroom"),
        ("ExecReload", "kill -HUP $MAINPID"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("PrivateTmp", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("WantedBy", "multi-user.target"),
    ];
    for (key, value) in expected {
        assert_eq!(values(key), [value], "{key}");
    }
    assert!(UNIT.contains("\n[Install]\n"), "an [Install] section");
    let [start] = values("ExecStart")[..] else {
        panic!("one ExecStart");
    };
    let words: Vec<String> = start.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[..2], [INSTALLED, "serve"]);
    let parsed = chatroom::cmd::parse(words.iter().cloned());
    assert!(parsed.is_ok(), "{start}: {parsed:?}");
    // Its state, and its metrics on localhost only.
    assert!(start.contains("--data /var/lib/chatroom/data"), "{start}");
    assert!(start.contains("--metrics 127.0.0.1:"), "{start}");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|path| Path::new(path).exists())
    else {
        println!("skipped: systemd-analyze is not installed (Debian's systemd package has it)");
        return;
    };
    // The unit as shipped, with the binary where this build made it: verify
    // checks that ExecStart's program exists.
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("chatroom.service");
    std::fs::write(&unit, UNIT.replace(INSTALLED, BIN)).expect("write the unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on a misspelt key or a bad value, and says so: any
    // word from it is a finding.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
