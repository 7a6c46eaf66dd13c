//! `serve --cluster-creds` against a real nats-server in operator mode
//! (JWT auth, accounts preloaded in its memory resolver), made by each test
//! on a free loopback port: nodes with a user's credentials share the room;
//! a node without credentials, with a user of an account the server does
//! not trust, or with a credentials file missing, readable by others or
//! malformed exits non-zero and says why, in one line a user can act on.

use crate::harness::nats::auth::{Account, Secured};
use crate::harness::nats::{node_at, node_refused, path};
use crate::harness::{Client, NatsServer, Serve, TestCerts};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A node named `name` that logs in with `creds`, listening.
async fn node(certs: &TestCerts, nats: &NatsServer, name: &str, creds: &Path) -> Serve {
    node_at(certs, &nats.url(), name, &["--cluster-creds", path(creds)]).await
}

/// A node with `extra` that must not start; its stderr.
async fn refused(certs: &TestCerts, nats: &NatsServer, extra: &[&str]) -> String {
    node_refused(certs, &nats.url(), extra).await
}

#[tokio::test]
async fn nodes_with_credentials_share_the_room() {
    let secured = Secured::start().await;
    let certs = TestCerts::new();
    let (one_creds, two_creds) = (secured.creds("node-one"), secured.creds("node-two"));
    let (one, two) = tokio::join!(
        node(&certs, &secured.nats, "one", &one_creds),
        node(&certs, &secured.nats, "two", &two_creds),
    );
    let mut alice = Client::tls(one.addr.parse().expect("address"), certs.client_tls()).await;
    alice.register("Alice").await;
    let mut bob = Client::tls(two.addr.parse().expect("address"), certs.client_tls()).await;
    bob.register("Bob").await;
    alice.expect("Bob joined!").await;
    alice.send("signed in").await;
    bob.expect("Alice: signed in").await;
    alice.expect("Alice: signed in").await;
}

#[tokio::test]
async fn a_node_without_credentials_is_refused_and_says_so() {
    let secured = Secured::start().await;
    let certs = TestCerts::new();
    let stderr = refused(&certs, &secured.nats, &[]).await;
    assert_eq!(
        error_line(&stderr),
        format!(
            "error: NATS at {} refused this node: authorization violation (no credentials \
             were given: a server that requires them needs --cluster-creds FILE)",
            secured.nats.url()
        )
    );
}

#[tokio::test]
async fn a_user_of_an_untrusted_account_is_refused_and_says_so() {
    let secured = Secured::start().await;
    let certs = TestCerts::new();
    // A well-formed user, signed by an account of another operator.
    let stranger = Account::untrusted("elsewhere").write_creds(secured.creds_dir(), "mallory");
    let stderr = refused(&certs, &secured.nats, &["--cluster-creds", path(&stranger)]).await;
    assert_eq!(
        error_line(&stderr),
        format!(
            "error: NATS at {} refused this node: authorization violation with the credentials \
             in {} (is the user's account one the server trusts, and still valid?)",
            secured.nats.url(),
            stranger.display()
        )
    );
}

#[tokio::test]
async fn a_credentials_file_missing_exposed_or_malformed_is_named() {
    let secured = Secured::start().await;
    let certs = TestCerts::new();
    let missing = secured.creds_dir().join("nobody.creds");
    let stderr = refused(&certs, &secured.nats, &["--cluster-creds", path(&missing)]).await;
    assert_eq!(
        error_line(&stderr),
        format!(
            "error: cannot use the NATS credentials (--cluster-creds): cannot read {}: \
             No such file or directory (os error 2)",
            missing.display()
        )
    );

    // It holds the user's NKey seed: one that others may read is refused,
    // as a TLS key would be, before anything is sent to NATS.
    let exposed = secured.creds("exposed");
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let stderr = refused(&certs, &secured.nats, &["--cluster-creds", path(&exposed)]).await;
    assert_eq!(
        error_line(&stderr),
        format!(
            "error: cannot use the NATS credentials (--cluster-creds): private key {p} has \
             mode 0644: group or others may read it; run `chmod 600 {p}`",
            p = exposed.display()
        )
    );

    let garbled = secured.creds_dir().join("garbled.creds");
    std::fs::write(&garbled, "not a creds file\n").expect("write");
    std::fs::set_permissions(&garbled, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let stderr = refused(&certs, &secured.nats, &["--cluster-creds", path(&garbled)]).await;
    let line = error_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "error: {} is not a NATS credentials file: ",
            garbled.display()
        )),
        "{stderr}"
    );
}

/// The one line of `stderr` that reports the error the node exits with.
fn error_line(stderr: &str) -> &str {
    let mut lines = stderr.lines().filter(|l| l.starts_with("error: "));
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert_eq!(lines.next(), None, "{stderr}");
    line
}
