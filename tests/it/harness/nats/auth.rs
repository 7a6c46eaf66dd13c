//! NATS operator mode (decentralized JWT auth) made in the test itself, so
//! that a real nats-server can require credentials without the `nsc` tool:
//! an operator, accounts it signs, users an account signs, the `.creds`
//! files a node reads with `--cluster-creds`, and the server configuration
//! that trusts the operator and preloads its accounts.
//!
//! The tokens follow NATS JWT v2: header `{"typ":"JWT","alg":"ed25519-nkey"}`,
//! the claims, and an ed25519 signature by the issuer's nkey, each part
//! base64url without padding. `jti` is what the Go library computes: the
//! SHA-512/256 of the registered claims (`jti` left out), in base32
//! without padding.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Signs `nats` (the claim's own part) about `subject` by `issuer`.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let iss = issuer.public_key();
    // serde_json sorts keys: the same order as the Go struct's fields.
    let registered = json!({ "iat": iat, "iss": iss, "name": name, "sub": subject });
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA512_256,
        registered.to_string().as_bytes(),
    );
    let mut claims = registered;
    claims["jti"] = json!(BASE32_NOPAD.encode(digest.as_ref()));
    claims["nats"] = nats;
    let header = json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("nkey signs");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// A self-signed operator: the root a server in operator mode trusts.
pub struct Operator {
    key: KeyPair,
    pub jwt: String,
}

impl Operator {
    pub fn new(name: &str) -> Operator {
        let key = KeyPair::new_operator();
        let jwt = encode(
            &key,
            &key.public_key(),
            name,
            json!({ "type": "operator", "version": 2 }),
        );
        Operator { key, jwt }
    }

    /// An account this operator signs, without limits, JetStream included.
    pub fn account(&self, name: &str) -> Account {
        Account::signed_by(&self.key, name, true)
    }

    /// The system account (the server's own traffic): nats-server refuses
    /// to start if it may use JetStream.
    pub fn system_account(&self) -> Account {
        Account::signed_by(&self.key, "SYS", false)
    }

    /// The nats-server configuration that trusts this operator (its JWT
    /// written to `dir`), preloads `accounts` and takes `system` as the
    /// system account. Port, JetStream and store come from the command
    /// line.
    pub fn server_config(&self, dir: &Path, accounts: &[&Account], system: &Account) -> String {
        let operator = dir.join("operator.jwt");
        std::fs::write(&operator, &self.jwt).expect("write operator.jwt");
        let preload: Vec<String> = accounts
            .iter()
            .chain([&system])
            .map(|a| format!("  {}: \"{}\"", a.public_key(), a.jwt))
            .collect();
        format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{}\n}}\n",
            operator.display(),
            system.public_key(),
            preload.join("\n")
        )
    }
}

/// An account: users it signs may connect to servers that preload it.
pub struct Account {
    key: KeyPair,
    pub jwt: String,
}

impl Account {
    /// An account signed by `issuer` (an operator the server may or may
    /// not trust), with JetStream storage unlimited or none.
    pub fn signed_by(issuer: &KeyPair, name: &str, jetstream: bool) -> Account {
        let key = KeyPair::new_account();
        let storage = if jetstream { -1 } else { 0 };
        let jwt = encode(
            issuer,
            &key.public_key(),
            name,
            json!({
                "type": "account",
                "version": 2,
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1,
                    "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": storage, "disk_storage": storage,
                    "streams": -1, "consumer": -1
                },
                "default_permissions": { "pub": {}, "sub": {} }
            }),
        );
        Account { key, jwt }
    }

    /// An account no server here trusts: signed by an operator of its own.
    pub fn untrusted(name: &str) -> Account {
        Account::signed_by(&KeyPair::new_operator(), name, true)
    }

    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// A user of this account, as the text of a `.creds` file.
    pub fn user_creds(&self, name: &str) -> String {
        self.user_creds_with(name, json!({ "pub": {}, "sub": {} }))
    }

    /// A user of this account whose JWT carries `permissions`: an object
    /// with the user claim's permission fields (`pub`, `sub`, `resp`, each
    /// as NATS JWT v2 spells them), as the text of a `.creds` file.
    pub fn user_creds_with(&self, name: &str, permissions: Value) -> String {
        let user = KeyPair::new_user();
        let mut claim = json!({
            "type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1
        });
        let fields = permissions
            .as_object()
            .expect("permissions are a JSON object");
        for (field, value) in fields {
            claim[field] = value.clone();
        }
        let jwt = encode(&self.key, &user.public_key(), name, claim);
        let seed = user.seed().expect("a user key has a seed");
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    /// Writes a user's `.creds` file to `dir/NAME.creds`, readable by its
    /// owner alone; returns its path.
    pub fn write_creds(&self, dir: &Path, name: &str) -> PathBuf {
        write_private(dir, name, &self.user_creds(name))
    }

    /// As [`Account::write_creds`], for a user with `permissions` (see
    /// [`Account::user_creds_with`]).
    pub fn write_creds_with(&self, dir: &Path, name: &str, permissions: Value) -> PathBuf {
        write_private(dir, name, &self.user_creds_with(name, permissions))
    }
}

/// Writes `text` to `dir/NAME.creds`, readable by its owner alone; returns
/// its path.
fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("{name}.creds"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("write the creds file");
    path
}

/// A nats-server in operator mode, trusting one operator with one account
/// (JetStream on), and users of that account with their `.creds` files.
pub struct Secured {
    pub nats: super::NatsServer,
    account: Account,
    creds_dir: tempfile::TempDir,
}

impl Secured {
    pub async fn start() -> Secured {
        let operator = Operator::new("chat-operator");
        let account = operator.account("chat");
        let system = operator.system_account();
        let nats = super::NatsServer::start_configured(|dir| {
            operator.server_config(dir, &[&account], &system)
        })
        .await;
        let creds_dir = tempfile::tempdir().expect("temp dir");
        Secured {
            nats,
            account,
            creds_dir,
        }
    }

    /// Where the `.creds` files go.
    pub fn creds_dir(&self) -> &Path {
        self.creds_dir.path()
    }

    /// A new user of the account, allowed everything; its `.creds` file.
    pub fn creds(&self, user: &str) -> PathBuf {
        self.account.write_creds(self.creds_dir.path(), user)
    }

    /// A new user of the account with `permissions` (a user JWT's `pub`,
    /// `sub` and `resp`); its `.creds` file.
    pub fn creds_with(&self, user: &str, permissions: Value) -> PathBuf {
        self.account
            .write_creds_with(self.creds_dir.path(), user, permissions)
    }
}
