//! The classroom capture, `scripts/capture-demo.sh`: the lab's dry run
//! captured with tshark on loopback, once in plaintext and once over TLS
//! with a key log. Every figure of its report is checked against tshark's
//! own reading of the files it wrote, so the teaching claim stays true:
//! the text is readable in plaintext, absent from the TLS capture, and
//! back once the capture is decrypted with the key log.
//!
//! Needs tshark; CI installs it. Elsewhere, without tshark, the test says so
//! and passes, since the rest of the suite does not depend on it.

use std::path::Path;
use std::process::Command;

const TEXT: &str = "Hello everyone!";

/// Runs the script with `args` and the output folder; returns its report.
fn run_demo(args: &[&str], out: &Path) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/capture-demo.sh");
    let output = Command::new("bash")
        .arg(script)
        .args(args)
        .arg(out)
        .env("CHATROOM_BIN", env!("CARGO_BIN_EXE_chatroom"))
        .env_remove("SSLKEYLOGFILE")
        .output()
        .expect("runs the demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// tshark's reading of `pcap`: the given fields of every packet, one line
/// per packet.
fn tshark(pcap: &Path, extra: &[&str]) -> String {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(extra)
        .output()
        .expect("tshark runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// How many times the text occurs in the hex payloads tshark printed.
fn count_text(hex_lines: &str) -> usize {
    let hex: String = TEXT.bytes().map(|b| format!("{b:02x}")).collect();
    hex_lines
        .lines()
        .map(|line| line.matches(hex.as_str()).count())
        .sum()
}

/// The number after `prefix` in the report's line that starts with it.
fn figure(report: &str, prefix: &str) -> usize {
    let line = report
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{report}"));
    line[prefix.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {line:?}"))
}

/// Checks one run's report against the files it wrote.
fn check_run(report: &str, out: &Path, version: &str) {
    let plain = out.join("plaintext.pcapng");
    let tls = out.join("tls.pcapng");
    let keys = out.join("tls-keys.log");
    let payloads = |pcap: &Path| tshark(pcap, &["-T", "fields", "-e", "tcp.payload"]);

    // Plaintext: every copy readable: Alice's line to the server and the
    // server's line to each of the three participants.
    let seen = count_text(&payloads(&plain));
    assert_eq!(seen, 4, "{report}");
    let quoted = format!("\"{TEXT}\"");
    assert_eq!(
        figure(report, &format!("plaintext: {quoted} in raw TCP payloads:")),
        seen
    );
    assert!(report.contains("(sent by the server: 3)"), "{report}");

    // TLS: none in the raw payloads.
    assert_eq!(count_text(&payloads(&tls)), 0);
    assert_eq!(
        figure(report, &format!("tls: {quoted} in raw TCP payloads:")),
        0
    );

    // The handshakes: one per participant, the version and suite as
    // tshark reads them from the Server Hellos.
    let hellos = tshark(
        &tls,
        &[
            "-Y",
            "tls.handshake.type == 2",
            "-T",
            "fields",
            "-e",
            "tls.handshake.ciphersuite",
            "-e",
            "tls.handshake.extensions.supported_version",
        ],
    );
    let hellos: Vec<&str> = hellos.lines().collect();
    assert_eq!(hellos.len(), 3, "{hellos:?}");
    assert_eq!(figure(report, "tls: handshakes:"), 3, "{report}");
    let (suite_hex, version_hex) = match version {
        "1.3" => ("0x1301", "0x0304"),
        _ => ("0xc02b", ""),
    };
    for hello in &hellos {
        assert_eq!(*hello, format!("{suite_hex}\t{version_hex}"));
    }
    assert!(
        report.contains(&format!(
            "version: TLS {version}, cipher suite: {}",
            if version == "1.3" {
                "TLS_AES_128_GCM_SHA256 (0x1301)"
            } else {
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (0xc02b)"
            }
        )),
        "{report}"
    );

    // What the Lab tells students to look for in the hellos: the client
    // offers ALPN chat/1 and key shares for X25519MLKEM768 (group 4588)
    // and x25519 (29), and sends no server name (it connects to an IP);
    // over TLS 1.3 the server picks X25519MLKEM768.
    let client_hellos = tshark(
        &tls,
        &[
            "-Y",
            "tls.handshake.type == 1",
            "-T",
            "fields",
            "-e",
            "tls.handshake.extensions_alpn_str",
            "-e",
            "tls.handshake.extensions_key_share_group",
            "-e",
            "tls.handshake.extensions_server_name",
        ],
    );
    let expected = if version == "1.3" {
        "chat/1\t4588,29\t"
    } else {
        "chat/1\t\t"
    };
    assert_eq!(client_hellos.lines().collect::<Vec<_>>(), [expected; 3]);
    if version == "1.3" {
        let chosen = tshark(
            &tls,
            &[
                "-Y",
                "tls.handshake.type == 2",
                "-T",
                "fields",
                "-e",
                "tls.handshake.extensions_key_share_group",
            ],
        );
        assert_eq!(chosen.lines().collect::<Vec<_>>(), ["4588"; 3]);
    }

    // The records, counted as tshark counts them.
    let records: usize = tshark(&tls, &["-T", "fields", "-e", "tls.record.length"])
        .lines()
        .map(|l| l.split(',').filter(|v| !v.is_empty()).count())
        .sum();
    assert!(records > 3 * 4, "{records}");
    assert_eq!(figure(report, "tls: TLS records:"), records, "{report}");

    // With the key log, tshark decrypts the same four copies.
    assert!(std::fs::metadata(&keys).expect("key log").len() > 0);
    let keylog = format!("tls.keylog_file:{}", keys.display());
    let decrypted = count_text(&tshark(
        &tls,
        &["-o", &keylog, "-T", "fields", "-e", "data.data"],
    ));
    assert_eq!(decrypted, 4);
    assert_eq!(
        figure(
            report,
            &format!("tls: {quoted} after decrypting with tls-keys.log:")
        ),
        decrypted
    );

    // Record sizes give the text's length away: each record is the line
    // plus a fixed overhead (TLS 1.3: content type and tag, 17 bytes;
    // TLS 1.2 with AES-GCM: explicit nonce and tag, 24 bytes).
    let overhead = if version == "1.3" { 17 } else { 24 };
    let sized = tshark(
        &tls,
        &[
            "-o",
            &keylog,
            "-T",
            "fields",
            "-e",
            "tls.record.length",
            "-e",
            "data.data",
        ],
    );
    let mut checked = 0;
    for (length, data) in sized.lines().filter_map(|l| l.split_once('\t')) {
        if data.is_empty() || length.contains(',') {
            continue;
        }
        let length: usize = length.parse().expect("a record length");
        assert_eq!(length, data.len() / 2 + overhead, "{length} {data}");
        checked += 1;
    }
    assert!(checked >= 10, "{sized}");

    // The certificate: readable in a TLS 1.2 capture, not in a 1.3 one.
    let names = tshark(
        &tls,
        &[
            "-Y",
            "tls.handshake.type == 11",
            "-T",
            "fields",
            "-e",
            "x509ce.dNSName",
        ],
    );
    if version == "1.3" {
        assert!(names.trim().is_empty(), "{names}");
        assert!(
            report.contains("server certificate readable in the capture: no"),
            "{report}"
        );
    } else {
        assert!(names.lines().all(|l| l == "localhost") && !names.is_empty());
        assert!(
            report.contains("server certificate readable in the capture: yes"),
            "{report}"
        );
        assert!(report.contains("dNSName: localhost"), "{report}");
        assert!(report.contains("iPAddress: 127.0.0.1"), "{report}");
        assert!(
            report.contains("subject: commonName=chatroom server"),
            "{report}"
        );
        assert!(report.contains("notAfter: 20"), "{report}");
    }

    // Both times the dry run itself went as the lab tells it.
    let (plain_part, tls_part) = report.split_once("=== tls:").expect("both reported");
    for part in [plain_part, tls_part] {
        assert!(part.contains("Alice's screen"), "{report}");
        assert_eq!(
            part.matches("Alice: Hello everyone!").count(),
            3,
            "{report}"
        );
        assert_eq!(part.matches("Charlie left!").count(), 2, "{report}");
    }
}

#[test]
fn the_capture_report_matches_what_tshark_reads_in_its_files() {
    let has_tshark = Command::new("tshark").arg("--version").output().is_ok();
    if !has_tshark {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tshark (see .ci/run)"
        );
        eprintln!("tshark not installed: capture demo not run");
        return;
    }
    let default_out = tempfile::tempdir().expect("temp dir");
    let tls12_out = tempfile::tempdir().expect("temp dir");
    // The two runs capture different ports, so they may run side by side.
    let (default_report, tls12_report) = std::thread::scope(|scope| {
        let default_run = scope.spawn(|| run_demo(&[], default_out.path()));
        let tls12_run = scope.spawn(|| run_demo(&["--tls-version", "1.2"], tls12_out.path()));
        (
            default_run.join().expect("default run"),
            tls12_run.join().expect("1.2 run"),
        )
    });
    check_run(&default_report, default_out.path(), "1.3");
    check_run(&tls12_report, tls12_out.path(), "1.2");
}
