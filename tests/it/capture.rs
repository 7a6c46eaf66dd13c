//! The classroom capture, `scripts/capture-demo.sh`: the lab's dry run
//! captured with tshark on loopback, once in plaintext and once over TLS
//! with a key log. Every figure of its report is checked against tshark's
//! own reading of the files it wrote, so the teaching claim stays true:
//! the text is readable in plaintext, absent from the TLS capture, and
//! back once the capture is decrypted with the key log.
//!
//! The answer key (docs/lab-answers.md) states these figures for the
//! teacher; they are checked against the same run.
//!
//! Needs tshark; CI installs it. Elsewhere, without tshark, the test says so
//! and passes, since the rest of the suite does not depend on it.

use std::path::Path;
use std::process::Command;

const TEXT: &str = "Hello everyone!";

/// A segment TCP sent again is the same copy: the report counts each
/// segment's first sending, and so do the checks here.
const FIRST_COPIES: &str = "not (tcp.analysis.retransmission or tcp.analysis.fast_retransmission \
     or tcp.analysis.spurious_retransmission)";

/// Whether tshark is here to run; in CI it must be.
fn has_tshark() -> bool {
    let has = Command::new("tshark").arg("--version").output().is_ok();
    if !has {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tshark (see .ci/run)"
        );
        eprintln!("tshark not installed: capture test not run");
    }
    has
}

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

/// The fields read from the TLS capture, one row per packet.
const TLS_FIELDS: [&str; 9] = [
    "tcp.payload",
    "tls.record.length",
    "tls.handshake.type",
    "tls.handshake.ciphersuite",
    "tls.handshake.extensions.supported_version",
    "tls.handshake.extensions_alpn_str",
    "tls.handshake.extensions_key_share_group",
    "tls.handshake.extensions_server_name",
    "x509ce.dNSName",
];

/// tshark's reading of `pcap`, the given fields per packet, split.
fn rows(pcap: &Path, options: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = options.to_vec();
    args.extend(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]);
    for field in fields {
        args.extend(["-e", field]);
    }
    tshark(pcap, &args)
        .lines()
        .map(|line| line.split('|').map(str::to_owned).collect())
        .collect()
}

/// Whether a comma-separated field holds `value`.
fn holds(field: &str, value: &str) -> bool {
    field.split(',').any(|v| v == value)
}

/// Checks one run's report against the files it wrote; returns the
/// length of the records that carry `Alice: Hello everyone!`.
fn check_run(report: &str, out: &Path, version: &str) -> String {
    let plain = out.join("plaintext.pcapng");
    let tls = out.join("tls.pcapng");
    let keys = out.join("tls-keys.log");
    let quoted = format!("\"{TEXT}\"");

    // Plaintext: every copy readable: Alice's line to the server and the
    // server's line to each of the three participants.
    let seen = count_text(&tshark(
        &plain,
        &["-Y", FIRST_COPIES, "-T", "fields", "-e", "tcp.payload"],
    ));
    assert_eq!(seen, 4, "{report}");
    assert_eq!(
        figure(report, &format!("plaintext: {quoted} in raw TCP payloads:")),
        seen
    );
    assert!(report.contains("(sent by the server: 3)"), "{report}");

    let packets = rows(&tls, &["-Y", FIRST_COPIES], &TLS_FIELDS);
    let column = |i: usize| packets.iter().map(move |row| row[i].as_str());

    // TLS: none in the raw payloads.
    assert_eq!(count_text(&column(0).collect::<Vec<_>>().join("\n")), 0);
    assert_eq!(
        figure(report, &format!("tls: {quoted} in raw TCP payloads:")),
        0
    );

    // The handshakes: one per participant, the version and suite as
    // tshark reads them from the Server Hellos; the client offers ALPN
    // chat/1 and key shares for X25519MLKEM768 (group 4588) and x25519
    // (29), and sends no server name (it connects to an IP address); over
    // TLS 1.3 the server picks X25519MLKEM768. The Lab says so.
    let server_hellos: Vec<&Vec<String>> =
        packets.iter().filter(|row| holds(&row[2], "2")).collect();
    let client_hellos: Vec<&Vec<String>> =
        packets.iter().filter(|row| holds(&row[2], "1")).collect();
    assert_eq!(server_hellos.len(), 3, "{packets:?}");
    assert_eq!(client_hellos.len(), 3, "{packets:?}");
    assert_eq!(figure(report, "tls: handshakes:"), 3, "{report}");
    let (suite, suite_name, chosen_version, shares, chosen_share) = match version {
        "1.3" => (
            "0x1301",
            "TLS_AES_128_GCM_SHA256 (0x1301)",
            "0x0304",
            "4588,29",
            "4588",
        ),
        _ => (
            "0xc02b",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (0xc02b)",
            "",
            "",
            "",
        ),
    };
    for hello in &server_hellos {
        assert_eq!(
            (hello[3].as_str(), hello[4].as_str(), hello[6].as_str()),
            (suite, chosen_version, chosen_share)
        );
    }
    for hello in &client_hellos {
        assert_eq!(
            (hello[5].as_str(), hello[6].as_str(), hello[7].as_str()),
            ("chat/1", shares, "")
        );
    }
    assert!(
        report.contains(&format!(
            "version: TLS {version}, cipher suite: {suite_name}"
        )),
        "{report}"
    );

    // The records, counted as tshark counts them.
    let records: usize = column(1)
        .map(|l| l.split(',').filter(|v| !v.is_empty()).count())
        .sum();
    assert!(records > 3 * 4, "{records}");
    assert_eq!(figure(report, "tls: TLS records:"), records, "{report}");

    // With the key log, tshark decrypts the same four copies.
    assert!(std::fs::metadata(&keys).expect("key log").len() > 0);
    let keylog = format!("tls.keylog_file:{}", keys.display());
    let decrypted = rows(&tls, &["-o", &keylog], &["tls.record.length", "data.data"]);
    let plain_text: Vec<&str> = decrypted.iter().map(|row| row[1].as_str()).collect();
    assert_eq!(count_text(&plain_text.join("\n")), 4);
    assert_eq!(
        figure(
            report,
            &format!("tls: {quoted} after decrypting with tls-keys.log:")
        ),
        4
    );

    // Record sizes give the text's length away: each record is the text
    // plus a fixed overhead (TLS 1.3: content type and tag, 17 bytes;
    // TLS 1.2 with AES-GCM: explicit nonce and tag, 24 bytes).
    let overhead = if version == "1.3" { 17 } else { 24 };
    let mut checked = 0;
    for row in &decrypted {
        let (length, data) = (&row[0], &row[1]);
        if data.is_empty() || length.contains(',') {
            continue;
        }
        let length: usize = length.parse().expect("a record length");
        assert_eq!(length, data.len() / 2 + overhead, "{length} {data}");
        checked += 1;
    }
    assert!(checked >= 10, "{decrypted:?}");
    // The Lab's example: Alice's line and its newline, 23 bytes, travel in
    // records of 40 bytes over TLS 1.3.
    let hello_line: String = b"Alice: Hello everyone!\n"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let hello_records: Vec<&str> = decrypted
        .iter()
        .filter(|row| row[1] == hello_line)
        .map(|row| row[0].as_str())
        .collect();
    let expected = (23 + overhead).to_string();
    assert!(
        !hello_records.is_empty() && hello_records.iter().all(|l| *l == expected),
        "{hello_records:?}"
    );

    // The certificate: readable in a TLS 1.2 capture, not in a 1.3 one.
    let names: Vec<&str> = column(8).filter(|n| !n.is_empty()).collect();
    if version == "1.3" {
        assert!(names.is_empty(), "{names:?}");
        assert!(
            report.contains("server certificate readable in the capture: no"),
            "{report}"
        );
    } else {
        assert_eq!(names, ["localhost"; 3]);
        assert!(
            report.contains("server certificate readable in the capture: yes"),
            "{report}"
        );
        assert!(report.contains("dNSName: localhost"), "{report}");
        assert!(report.contains("iPAddress: 127.0.0.1"), "{report}");
        assert!(report.contains("iPAddress: ::1"), "{report}");
        assert!(
            report.contains("issuer: commonName=chatroom local CA"),
            "{report}"
        );
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
    expected
}

/// The text after `label` on the report's line that holds it, up to the
/// next comma or parenthesis (or the line's end, with `whole`).
fn reported<'a>(report: &'a str, label: &str, whole: bool) -> &'a str {
    let rest = report
        .lines()
        .find_map(|line| line.split_once(label).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{report}"));
    let end = if whole {
        rest.len()
    } else {
        rest.find([',', '(']).unwrap_or(rest.len())
    };
    rest[..end].trim()
}

/// Every figure docs/lab-answers.md states about the capture report,
/// against this run's `report` and the record length `hello` for each
/// version (TLS 1.3, then 1.2).
fn check_answer_key(runs: [(&str, &str); 2]) {
    let quoted = format!("\"{TEXT}\"");
    let rows = crate::harness::answer_key::rows(
        "the_capture_report_matches_what_tshark_reads_in_its_files",
    );
    for row in &rows {
        for (column, (report, hello)) in runs.iter().enumerate() {
            let label = row[0].replace(&quoted, "Q");
            let actual = match label.as_str() {
                "plaintext: Q in raw TCP payloads" => reported(
                    report,
                    &format!("plaintext: {quoted} in raw TCP payloads:"),
                    false,
                ),
                "plaintext: of which sent by the server" => {
                    reported(report, "(sent by the server:", false).trim_end_matches(')')
                }
                "tls: Q in raw TCP payloads" => reported(
                    report,
                    &format!("tls: {quoted} in raw TCP payloads:"),
                    false,
                ),
                "tls: handshakes" => reported(report, "tls: handshakes:", false),
                "tls: version" => reported(report, "version:", false),
                "tls: cipher suite" => reported(report, "cipher suite:", true),
                "tls: TLS records" => reported(report, "tls: TLS records:", false),
                "tls: Q after decrypting with tls-keys.log" => reported(
                    report,
                    &format!("tls: {quoted} after decrypting with tls-keys.log:"),
                    false,
                ),
                "tls: server certificate readable in the capture" => {
                    reported(report, "readable in the capture:", false)
                }
                "record carrying \"Alice: Hello everyone!\" (bytes)" => hello,
                other => panic!("the answer key states {other:?}, which no test recomputes"),
            };
            let stated = &row[column + 1];
            assert!(
                crate::harness::answer_key::matches(stated, actual),
                "answer key: {} is {stated}, this run: {actual}",
                row[0]
            );
        }
    }
}

#[test]
fn the_capture_report_matches_what_tshark_reads_in_its_files() {
    if !has_tshark() {
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
    let hello13 = check_run(&default_report, default_out.path(), "1.3");
    let hello12 = check_run(&tls12_report, tls12_out.path(), "1.2");
    // The teacher's answer key states the same figures.
    check_answer_key([(&default_report, &hello13), (&tls12_report, &hello12)]);
}

/// A capture in which the server on port 5555 sends `payload` once and
/// then again (as TCP does when an acknowledgement is late): a classic
/// pcap file of Ethernet frames on 127.0.0.1, checksums left at 0.
fn capture_with_a_retransmission(payload: &[u8]) -> Vec<u8> {
    const CLIENT: u16 = 40000;
    const SERVER: u16 = 5555;
    let segment = |from: u16, to: u16, seq: u32, ack: u32, flags: u8, data: &[u8]| {
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        let total = u16::try_from(40 + data.len()).expect("a small segment");
        frame.extend([
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ]);
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        frame.extend(from.to_be_bytes());
        frame.extend(to.to_be_bytes());
        frame.extend(seq.to_be_bytes());
        frame.extend(ack.to_be_bytes());
        frame.extend([5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        frame.extend(data);
        frame
    };
    let (syn, ack, psh_ack) = (0x02, 0x10, 0x18);
    let sent = 5001 + u32::try_from(payload.len()).expect("a small payload");
    let frames = [
        segment(CLIENT, SERVER, 1000, 0, syn, &[]),
        segment(SERVER, CLIENT, 5000, 1001, syn | ack, &[]),
        segment(CLIENT, SERVER, 1001, 5001, ack, &[]),
        segment(SERVER, CLIENT, 5001, 1001, psh_ack, payload),
        segment(SERVER, CLIENT, 5001, 1001, psh_ack, payload),
        segment(CLIENT, SERVER, 1001, sent, ack, &[]),
    ];
    // Little-endian pcap header: version 2.4, snap length, Ethernet.
    let mut pcap = Vec::new();
    for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        pcap.extend(word.to_le_bytes());
    }
    for (i, frame) in (0u32..).zip(&frames) {
        let len = u32::try_from(frame.len()).expect("a small frame");
        for word in [1000, i * 100_000, len, len] {
            pcap.extend(word.to_le_bytes());
        }
        pcap.extend(frame);
    }
    pcap
}

#[test]
fn a_copy_tcp_sent_again_is_counted_once() {
    if !has_tshark() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let pcap = dir.path().join("resent.pcap");
    std::fs::write(
        &pcap,
        capture_with_a_retransmission(b"Alice: Hello everyone!\n"),
    )
    .expect("writes the capture");
    // tshark itself sees both sendings, the second marked.
    let payloads = tshark(&pcap, &["-T", "fields", "-e", "tcp.payload"]);
    assert_eq!(count_text(&payloads), 2, "{payloads}");
    let marked = tshark(&pcap, &["-Y", "tcp.analysis.retransmission"]);
    assert_eq!(marked.lines().count(), 1, "{marked}");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/capture-demo.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("--count")
        .arg(&pcap)
        .arg("5555")
        .output()
        .expect("runs the script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout.trim(),
        format!("\"{TEXT}\" in raw TCP payloads: 1 (sent by the server: 1)")
    );
}
