//! The certificate tooling as a user runs it: `gen-certs client`,
//! `gen-certs server`, `--days` and its defaults, `certs inspect`, `certs list`,
//! `certs revoke`, whose CRL openssl verifies against the CA, and
//! `certs renew-crl`, with the server's warnings about a CRL that is past
//! its next update or within 30 days of it.

use crate::harness::BIN;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::process::{Command, Output};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::KeyUsage;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("chatroom runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).expect("UTF-8")
}

/// `openssl crl -in certs/crl.pem ARGS` in `dir`: whether it succeeded, and
/// what it said (stderr, where "verify OK" goes, then stdout).
fn openssl_crl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["crl", "-in", "certs/crl.pem", "-noout"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (CI installs it)");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), said)
}

/// The value after `label` on the line that starts with it.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        .trim()
}

#[test]
fn client_and_server_certificates_are_issued_by_the_existing_ca() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let no_ca = fails(dir, &["gen-certs", "client", "alice"]);
    assert!(no_ca.contains("run `chatroom gen-certs` first"), "{no_ca}");

    ok(dir, &["gen-certs"]);
    let alice = ok(dir, &["gen-certs", "client", "alice"]);
    assert!(alice.contains("certs/clients/alice.pem"), "{alice}");
    assert!(
        alice.contains("certs/clients/alice-key.pem (mode 0600)"),
        "{alice}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("certs/clients/alice-key.pem"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let again = fails(dir, &["gen-certs", "client", "alice"]);
    assert!(again.contains("--force"), "{again}");
    let forced = ok(
        dir,
        &["gen-certs", "client", "alice", "--force", "--days", "30"],
    );
    assert_ne!(field(&forced, "serial:"), field(&alice, "serial:"));
    let twin = fails(dir, &["gen-certs", "client", "ALICE"]);
    assert!(twin.contains("client \"alice\" already exists"), "{twin}");
    let bad = fails(dir, &["gen-certs", "client", "9lives"]);
    assert!(bad.contains("must start with a letter"), "{bad}");

    let inspect = ok(dir, &["certs", "inspect", "certs/clients/alice.pem"]);
    assert!(
        inspect.contains("subject:     O=chatroom, CN=alice"),
        "{inspect}"
    );
    assert!(inspect.contains("names (SAN): DNS:alice"), "{inspect}");
    assert!(inspect.contains("ext. usage:  clientAuth\n"), "{inspect}");
    assert!(inspect.contains("key:         ECDSA P-256"), "{inspect}");
    assert!(inspect.contains("CA:          no"), "{inspect}");
    assert!(
        inspect.contains("(29 days left)") || inspect.contains("(30 days left)"),
        "{inspect}"
    );
    assert_eq!(
        field(&inspect, "SHA-256 fingerprint:"),
        field(&forced, "SHA-256 fingerprint:")
    );

    // The server certificate alone, with the same CA.
    let ca_before = std::fs::read(dir.join("certs/ca.pem")).expect("ca");
    let refused = fails(dir, &["gen-certs", "server"]);
    assert!(refused.contains("--force"), "{refused}");
    let server = ok(
        dir,
        &[
            "gen-certs",
            "server",
            "--force",
            "--san",
            "chat.lan",
            "--days",
            "90",
        ],
    );
    assert!(
        server.contains("localhost, 127.0.0.1, ::1, chat.lan"),
        "{server}"
    );
    assert_eq!(
        std::fs::read(dir.join("certs/ca.pem")).expect("ca"),
        ca_before
    );

    // A file with two certificates prints both; a key is not a certificate.
    let both = dir.join("both.pem");
    let mut pem = std::fs::read(dir.join("certs/server.pem")).expect("server");
    pem.extend(ca_before);
    std::fs::write(&both, pem).expect("write");
    let two = ok(dir, &["certs", "inspect", "both.pem"]);
    assert!(two.contains("certificate 1 of 2"), "{two}");
    assert!(two.contains("certificate 2 of 2"), "{two}");
    assert!(two.contains("CA:          yes (path length 0)"), "{two}");
    assert!(two.contains("DNS:chat.lan"), "{two}");
    assert!(two.contains("IP:127.0.0.1"), "{two}");
    let key = fails(dir, &["certs", "inspect", "certs/ca-key.pem"]);
    assert!(key.contains("holds no PEM certificate"), "{key}");
}

/// Every path under `dir`, sorted.
fn tree(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            paths.push(path);
        }
    }
    paths.sort();
    paths
}

#[test]
fn a_client_name_ending_in_key_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    ok(dir, &["gen-certs"]);
    let before = tree(dir);
    // clients/bob-key.pem is where client bob's key goes.
    for name in ["bob-key", "Bob-KEY"] {
        let err = fails(dir, &["gen-certs", "client", name]);
        assert!(
            err.contains(&format!("{name:?} cannot be a client name"))
                && err.contains("may not end in \"-key\""),
            "{err}"
        );
        assert_eq!(tree(dir), before, "{name}");
    }
}

/// The validity (not before, not after) and the key usage of the one
/// certificate in `path`.
fn read_cert(path: &Path) -> (OffsetDateTime, OffsetDateTime, Option<KeyUsage>) {
    let der = CertificateDer::from_pem_file(path).expect("a PEM certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    let validity = cert.validity();
    let usage = cert.key_usage().expect("readable key usage");
    (
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
        usage.map(|u| *u.value),
    )
}

/// Runs `args` in `dir`, then checks that each file it names starts five
/// minutes before and ends its days after the moment it was issued, read
/// from the real clock around the run.
fn issued_with_lifetimes(dir: &Path, args: &[&str], lifetimes: &[(&str, i64)]) {
    // The certificates' times are whole seconds.
    let start = OffsetDateTime::now_utc() - Duration::seconds(1);
    ok(dir, args);
    let end = OffsetDateTime::now_utc();
    for &(file, days) in lifetimes {
        let (not_before, not_after, _) = read_cert(&dir.join(file));
        // Five minutes back, so a client whose clock is a little behind
        // accepts a fresh certificate; the margin is for a slow machine.
        assert!(
            not_before <= end - Duration::minutes(4) && not_before >= start - Duration::minutes(10),
            "{file}: not before {not_before}, issued between {start} and {end}"
        );
        // The lifetime counts from the moment of issue, not from the
        // backdated start.
        let lifetime = Duration::days(days);
        assert!(
            not_after >= start + lifetime && not_after <= end + lifetime,
            "{file}: not after {not_after}, expected {days} days after a time between {start} and {end}"
        );
    }
}

#[test]
fn certificates_are_backdated_five_minutes_with_the_documented_lifetimes() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    let both = [("certs/ca.pem", 3650), ("certs/server.pem", 825)];
    issued_with_lifetimes(dir, &["gen-certs"], &both);
    let alice = ["gen-certs", "client", "alice"];
    issued_with_lifetimes(dir, &alice, &[("certs/clients/alice.pem", 365)]);
    let server = ["gen-certs", "server", "--force"];
    issued_with_lifetimes(dir, &server, &[("certs/server.pem", 825)]);

    let (_, _, usage) = read_cert(&dir.join("certs/ca.pem"));
    let usage = usage.expect("the CA has a key usage extension");
    assert!(usage.key_cert_sign(), "{usage}");
    // The CA signs the CRL too; a verifier refuses a CRL whose issuer may
    // not sign CRLs.
    assert!(usage.crl_sign(), "{usage}");
}

#[test]
fn revoke_writes_a_crl_openssl_verifies_and_list_shows_it() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    ok(dir, &["gen-certs"]);
    let alice = ok(dir, &["gen-certs", "client", "alice"]);
    let bob = ok(dir, &["gen-certs", "client", "bob"]);

    let list = ok(dir, &["certs", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 5, "{list}");
    assert!(lines[1].starts_with("ca "), "{list}");
    assert!(lines[2].starts_with("server "), "{list}");
    let alice_line = lines[3];
    assert!(alice_line.contains(" alice "), "{list}");
    assert!(alice_line.contains(field(&alice, "serial:")), "{list}");
    assert!(
        alice_line.contains(" 364 ") || alice_line.contains(" 365 "),
        "{list}"
    );
    assert!(alice_line.ends_with("valid"), "{list}");

    let revoked = ok(dir, &["certs", "revoke", "bob"]);
    assert!(revoked.contains(field(&bob, "serial:")), "{revoked}");
    let twice = fails(dir, &["certs", "revoke", "bob"]);
    assert!(twice.contains("already revoked"), "{twice}");
    let nobody = fails(dir, &["certs", "revoke", "carol"]);
    assert!(nobody.contains("no client certificate"), "{nobody}");

    // openssl reads the CRL, checks its signature against the CA, and
    // finds bob's serial in it.
    let (verified, said) = openssl_crl(dir, &["-CAfile", "certs/ca.pem"]);
    assert!(verified && said.contains("verify OK"), "{said}");
    let text = openssl_crl(dir, &["-text"]).1.to_uppercase();
    let bob_serial = field(&bob, "serial:").replace(':', "").to_uppercase();
    assert!(text.contains(&bob_serial), "{text}");
    assert!(text.contains("NEXT UPDATE"), "{text}");

    // Revoking alice too keeps bob on the list.
    ok(dir, &["certs", "revoke", "alice"]);
    let list = ok(dir, &["certs", "list"]);
    let status = |name: &str| {
        list.lines()
            .find(|l| l.starts_with("client") && l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("{name} in {list}"))
            .rsplit(' ')
            .next()
            .expect("status")
            .to_owned()
    };
    assert_eq!(status("alice"), "REVOKED");
    assert_eq!(status("bob"), "REVOKED");
    let (verified, said) = openssl_crl(dir, &["-CAfile", "certs/ca.pem"]);
    assert!(verified, "{said}");
}

#[tokio::test]
async fn a_crl_past_its_next_update_is_warned_about_and_renew_crl_makes_it_current() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    ok(dir, &["gen-certs"]);
    let bob = ok(dir, &["gen-certs", "client", "bob"]);
    ok(dir, &["certs", "revoke", "bob"]);
    // The same list, signed as if 400 days ago: due 35 days ago.
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    chatroom::certs::revoke::renew_as_of(&dir.join("certs"), long_ago).expect("renew as of then");
    let serve_args = ["--client-ca", "certs/ca.pem", "--crl", "certs/crl.pem"];

    // Logged while the access policy loads, before the server listens
    // (which `start` waits for).
    let serve = crate::harness::Serve::start(dir, &serve_args).await;
    let log = serve.kill_and_log().await;
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("was due to be renewed on"))
        .unwrap_or_else(|| panic!("no warning about the CRL in:\n{log}"));
    assert!(warning.contains("chatroom certs renew-crl"), "{warning}");

    let renewed = ok(dir, &["certs", "renew-crl"]);
    assert!(
        renewed.contains("renewed (1 revoked, next update "),
        "{renewed}"
    );
    // Still signed by the CA, still naming bob, due a year from now.
    let (_, said) = openssl_crl(dir, &["-CAfile", "certs/ca.pem", "-text"]);
    assert!(said.contains("verify OK"), "{said}");
    let said = said.to_uppercase();
    let bob_serial = field(&bob, "serial:").replace(':', "").to_uppercase();
    assert!(said.contains(&bob_serial), "{said}");
    let next_year = (time::OffsetDateTime::now_utc() + time::Duration::days(365)).year();
    assert!(
        said.lines()
            .any(|l| l.contains("NEXT UPDATE:") && l.contains(&next_year.to_string())),
        "{said}"
    );

    // A current CRL starts without the warning.
    let serve = crate::harness::Serve::start(dir, &serve_args).await;
    let log = serve.kill_and_log().await;
    assert!(!log.contains("renewed on"), "{log}");

    // Nothing to renew without a CRL.
    let bare = tempfile::tempdir().expect("temp");
    ok(bare.path(), &["gen-certs"]);
    let none = fails(bare.path(), &["certs", "renew-crl"]);
    assert!(none.contains("no CRL"), "{none}");
}

#[tokio::test]
async fn a_crl_due_within_30_days_is_warned_about_at_start_and_on_reload() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    ok(dir, &["gen-certs"]);
    ok(dir, &["gen-certs", "client", "bob"]);
    ok(dir, &["certs", "revoke", "bob"]);
    // Signed as if long enough ago that its next update is 10 days and a
    // half away: the half day keeps the whole days left at 10 however long
    // the test takes.
    let then = time::OffsetDateTime::now_utc()
        - time::Duration::days(chatroom::certs::revoke::CRL_DAYS - 10)
        + time::Duration::hours(12);
    let renewed =
        chatroom::certs::revoke::renew_as_of(&dir.join("certs"), then).expect("renew as of then");
    let due = chatroom::certs::format_date(&renewed.next_update);
    let expected = format!(
        "the CRL certs/crl.pem is due to be renewed on {due} (in 10 days): \
         `chatroom certs renew-crl`, then `kill -HUP` this server"
    );

    // Logged while the access policy loads, before the server listens.
    let mut serve = crate::harness::Serve::start(
        dir,
        &["--client-ca", "certs/ca.pem", "--crl", "certs/crl.pem"],
    )
    .await;
    let log = serve.log_so_far();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&expected)),
        "no warning about the CRL in:\n{log}"
    );
    assert!(!log.contains("was due to be renewed"), "{log}");

    // Again on a reload, which still puts the CRL in force.
    serve.signal("HUP").await;
    let warned = serve.wait_for_log("is due to be renewed on").await;
    assert!(
        warned.contains("WARN") && warned.contains(&expected),
        "{warned}"
    );
    let reloaded = serve
        .wait_for_log("new connections get the reloaded certificate")
        .await;
    assert!(reloaded.contains("1 revoked"), "{reloaded}");
}

/// A report whose reader has gone (`chatroom certs list | head -1`) is no
/// error and no panic: the command ends quietly, with status 0.
#[test]
fn a_report_to_a_reader_that_has_gone_ends_quietly() {
    let tmp = tempfile::tempdir().expect("temp");
    ok(tmp.path(), &["gen-certs"]);
    ok(tmp.path(), &["gen-certs", "client", "alice"]);
    for args in [
        &["certs", "list"][..],
        &["certs", "inspect", "certs/ca.pem"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        // Closed before the command writes a byte: every write fails.
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .current_dir(tmp.path())
            .stdout(writer)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
