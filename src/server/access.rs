//! Who may join: client certificates (`serve --client-ca`), revocation
//! (`--crl`), names locked out (`--deny`, `--deny-file`), and the nickname
//! a certificate binds its holder to.
//!
//! [`Access`] holds the current policy and swaps it whole on reload
//! (SIGHUP): the TLS layer asks it to verify each client certificate
//! (rustls' WebPki client verifier, with the CRL), and after the handshake
//! the server asks it again, so that a resumed TLS session (which skips
//! certificate verification) meets the current CRL and deny list too. Each
//! participant's [`Entry`] watches for reloads and ends its session when
//! the new policy refuses it (`ERROR certificate revoked`).

use crate::certs::revoke::cert_serial;
use crate::protocol::{self, nick_key};
use anyhow::{Context, Result, anyhow, bail};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Where the policy comes from; read again on every reload.
#[derive(Debug, Clone, Default)]
pub struct AccessFiles {
    /// The CA whose client certificates are accepted; `None`: no client
    /// certificates (anyone may join under a free nickname).
    pub client_ca: Option<PathBuf>,
    /// A CRL from that CA.
    pub crl: Option<PathBuf>,
    /// Without `crl`: a CRL to use whenever this file exists (checked on
    /// every load, so that the first `certs revoke` after the start takes
    /// effect at the next reload).
    pub crl_if_present: Option<PathBuf>,
    /// Names refused at join (from the command line; fixed).
    pub deny: Vec<String>,
    /// A file of names refused at join, one per line (`#` comments).
    pub deny_file: Option<PathBuf>,
    /// A file of the client-certificate names that are operators, one per
    /// line (`#` comments); needs `client_ca`.
    pub operators: Option<PathBuf>,
}

/// One loaded policy: all its parts come from one reload.
struct Policy {
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// Nickname keys.
    deny: HashSet<String>,
    /// Nickname keys of the certificate names that are operators.
    operators: HashSet<String>,
    /// How many serials the CRL lists (for the log).
    revoked: usize,
}

/// A policy loaded and checked, not yet in force: see [`Access::install`].
pub struct Prepared(Policy);

impl Prepared {
    /// A one-line summary for the log.
    pub fn summary(&self) -> String {
        let p = &self.0;
        format!(
            "client certificates {}, {} revoked, {} denied names, {} operators",
            if p.verifier.is_some() {
                "required"
            } else {
                "off"
            },
            p.revoked,
            p.deny.len(),
            p.operators.len()
        )
    }
}

/// Why a client may not join, or stay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("certificate revoked")]
    Revoked,
    #[error("access denied for \"{0}\"")]
    Denied(String),
    #[error("certificate refused: {0}")]
    Invalid(String),
    #[error("your certificate's name {0:?} is not a valid nickname")]
    BadName(String),
    #[error("a client certificate is required")]
    NoCertificate,
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The certificate's name ([`certificate_name`]).
    pub name: String,
    pub serial: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
}

/// The server's access policy, swapped whole on reload.
pub struct Access {
    files: AccessFiles,
    policy: RwLock<Arc<Policy>>,
    changes: watch::Sender<u64>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Loads the policy from `files`.
    pub fn load(files: AccessFiles) -> Result<Arc<Access>> {
        let policy = load_policy(&files)?;
        Ok(Arc::new(Access {
            files,
            policy: RwLock::new(Arc::new(policy)),
            changes: watch::channel(0).0,
        }))
    }

    /// Whether clients must present a certificate.
    fn requires_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again; nothing changes until [`Access::install`].
    pub fn prepare(&self) -> Result<Prepared> {
        load_policy(&self.files).map(Prepared)
    }

    /// Puts a prepared policy in force: new handshakes use it, and every
    /// participant it refuses is disconnected.
    pub fn install(&self, prepared: Prepared) {
        *crate::sync::write(&self.policy) = Arc::new(prepared.0);
        self.changes.send_modify(|generation| *generation += 1);
    }

    fn current(&self) -> Arc<Policy> {
        crate::sync::read(&self.policy).clone()
    }

    /// Whether `nick` is an operator under the policy in force now: a
    /// participant joined under its client certificate's name, listed in
    /// `--operators`. Without client certificates nobody is: a right
    /// bound to a chosen nickname could be taken by choosing it.
    pub fn is_operator(&self, nick: &str) -> bool {
        self.requires_certificates() && self.current().operators.contains(&nick_key(nick))
    }

    /// Adds `name` to the `--deny-file`, with `comment` beside it, and to
    /// the policy in force: `name` is refused from now on, also after a
    /// restart, until someone takes it out of the file. Refused without a
    /// deny file.
    pub fn ban(&self, name: &str, comment: &str) -> Result<()> {
        use std::io::Write;
        let path = self.deny_file()?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open --deny-file {}", path.display()))?;
        writeln!(file, "{name}  # {comment}")
            .with_context(|| format!("cannot write --deny-file {}", path.display()))?;
        // The policy in force, with the name denied: the next reload reads
        // it from the file. Nobody is told of a change: the one banned is
        // put out by the caller already, with the reason.
        let mut policy = crate::sync::write(&self.policy);
        let mut deny = policy.deny.clone();
        deny.insert(nick_key(name));
        *policy = Arc::new(Policy {
            verifier: policy.verifier.clone(),
            deny,
            operators: policy.operators.clone(),
            revoked: policy.revoked,
        });
        Ok(())
    }

    /// The `--deny-file` bans go to; refused without one.
    pub fn deny_file(&self) -> Result<&Path> {
        self.files
            .deny_file
            .as_deref()
            .context("/ban needs --deny-file: the server has no file to keep the name in")
    }

    /// The verifier for the server's TLS config: always the current
    /// policy's. `None` without `--client-ca`.
    pub fn client_verifier(self: &Arc<Self>) -> Option<Arc<dyn ClientCertVerifier>> {
        self.requires_certificates()
            .then(|| Arc::new(CurrentVerifier(self.clone())) as Arc<dyn ClientCertVerifier>)
    }

    /// After the handshake: who the client is, checked against the current
    /// policy (the handshake may have been a resumption, which skips
    /// verification). `peer` is what the TLS session says the client
    /// presented.
    fn identify(
        &self,
        peer: Option<&[CertificateDer<'_>]>,
    ) -> Result<Option<ClientIdentity>, Refusal> {
        if !self.requires_certificates() {
            return Ok(None);
        }
        let chain = match peer {
            Some(chain) if !chain.is_empty() => chain,
            _ => return Err(Refusal::NoCertificate),
        };
        let der = &chain[0];
        let name = certificate_name(der).map_err(Refusal::Invalid)?;
        if protocol::validate_nickname(&name).is_err() {
            return Err(Refusal::BadName(protocol::sanitize(&name).into_owned()));
        }
        let identity = ClientIdentity {
            name,
            serial: cert_serial(der).map_err(|e| Refusal::Invalid(e.to_string()))?,
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
        };
        self.recheck(&self.current(), &identity.name, Some(&identity))?;
        Ok(Some(identity))
    }

    /// Checks a participant (its nickname, its certificate if any) against
    /// `policy`.
    fn recheck(
        &self,
        policy: &Policy,
        nick: &str,
        identity: Option<&ClientIdentity>,
    ) -> Result<(), Refusal> {
        if let Some(identity) = identity {
            let verifier = policy
                .verifier
                .as_ref()
                .ok_or_else(|| Refusal::Invalid("client certificates are off".into()))?;
            verifier
                .verify_client_cert(&identity.chain[0], &identity.chain[1..], UnixTime::now())
                .map_err(|e| match e {
                    rustls::Error::InvalidCertificate(CertificateError::Revoked) => {
                        Refusal::Revoked
                    }
                    other => Refusal::Invalid(other.to_string()),
                })?;
        }
        if policy.deny.contains(&nick_key(nick)) {
            return Err(Refusal::Denied(nick.to_owned()));
        }
        Ok(())
    }
}

/// After a handshake: the participant's [`Entry`] under `access` (none
/// without a policy), or why it may not join.
pub fn admit(
    access: Option<&Arc<Access>>,
    peer: Option<&[CertificateDer<'_>]>,
) -> Result<Option<Entry>, Refusal> {
    match access {
        None => Ok(None),
        Some(access) => {
            // Watch first, then check: a reload in between is not missed.
            let changes = access.changes.subscribe();
            let identity = access.identify(peer)?;
            Ok(Some(Entry {
                access: access.clone(),
                identity,
                changes,
            }))
        }
    }
}

/// A participant's standing: its certificate's name (the nickname it must
/// take) and a watch on reloads.
pub struct Entry {
    access: Arc<Access>,
    identity: Option<ClientIdentity>,
    changes: watch::Receiver<u64>,
}

/// Why a nickname answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NickRefusal {
    /// Another try is allowed.
    #[error("nickname must be \"{0}\" (from your certificate)")]
    NotTheCertificates(String),
    /// Final.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl Entry {
    /// Checks the answer to `NICK` (already valid by the nickname rules);
    /// returns the nickname to join as: the certificate's own spelling.
    pub fn admit_nick<'a>(&'a self, nick: &'a str) -> Result<&'a str, NickRefusal> {
        let nick = match &self.identity {
            Some(id) if !id.name.eq_ignore_ascii_case(nick) => {
                return Err(NickRefusal::NotTheCertificates(id.name.clone()));
            }
            Some(id) => id.name.as_str(),
            None => nick,
        };
        if self.access.current().deny.contains(&nick_key(nick)) {
            return Err(Refusal::Denied(nick.to_owned()).into());
        }
        Ok(nick)
    }

    /// Completes when a reload puts in force a policy that refuses this
    /// participant (joined as `nick`); never otherwise.
    pub async fn refused(&mut self, nick: &str) -> Refusal {
        loop {
            if self.changes.changed().await.is_err() {
                return std::future::pending().await;
            }
            let policy = self.access.current();
            if let Err(refusal) = self.access.recheck(&policy, nick, self.identity.as_ref()) {
                return refusal;
            }
        }
    }
}

/// Completes when `entry` (if any) is refused by a reload. The wait is
/// boxed, so that a session that has no entry keeps no room for it.
pub async fn refused(entry: &mut Option<Box<Entry>>, nick: &str) -> Refusal {
    match entry {
        Some(entry) => Box::pin(entry.refused(nick)).await,
        None => std::future::pending().await,
    }
}

/// The name a client certificate gives its holder: its one common name.
///
/// Only an unambiguous name binds: exactly one common name (CN), of a
/// string type every tool reads alike (UTF8String, PrintableString or
/// IA5String), and every DNS name the certificate carries (SAN) the same
/// name (ASCII case aside, as nicknames compare). Otherwise the reason,
/// with any text from the certificate escaped: with two CNs some tools take
/// the first and others the last, and a CN this reader cannot decode must
/// not give way to another field, or an auditor and the server could read
/// two different holders from one certificate.
pub fn certificate_name(der: &[u8]) -> Result<String, String> {
    use crate::certs::escape;
    use x509_parser::asn1_rs::Tag;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let cns: Vec<_> = cert.subject().iter_common_name().collect();
    let cn = match cns.as_slice() {
        [] => return Err("the certificate has no common name (CN) to name its holder".into()),
        [one] => *one,
        many => {
            return Err(format!(
                "the certificate has {} common names (CN): exactly one must name its holder",
                many.len()
            ));
        }
    };
    let tag = cn.attr_value().tag();
    let name = match tag {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => cn
            .as_str()
            .map_err(|_| "the certificate's common name is not valid UTF-8".to_owned())?,
        Tag::BmpString => return Err(string_type_refused("a BMPString")),
        Tag::TeletexString => return Err(string_type_refused("a TeletexString")),
        Tag::UniversalString => return Err(string_type_refused("a UniversalString")),
        other => return Err(string_type_refused(&format!("of ASN.1 type {}", other.0))),
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("the certificate's subject alternative names cannot be read: {e}"))?;
    for general in san.iter().flat_map(|san| &san.value.general_names) {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = general
            && !dns.eq_ignore_ascii_case(name)
        {
            return Err(format!(
                "the certificate's DNS name \"{}\" differs from its common name \"{}\": \
                 both must name the same holder",
                escape(dns),
                escape(name)
            ));
        }
    }
    Ok(name.to_owned())
}

fn string_type_refused(what: &str) -> String {
    format!(
        "the certificate's common name is {what}: only a UTF8String, PrintableString or \
         IA5String names a holder"
    )
}

fn load_policy(files: &AccessFiles) -> Result<Policy> {
    let mut revoked = 0;
    let verifier = match &files.client_ca {
        None => {
            if let Some(crl) = &files.crl {
                bail!("--crl {} needs --client-ca", crl.display());
            }
            None
        }
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let ca_certs = crate::tls::load_certs(ca).context("cannot load --client-ca")?;
            for cert in &ca_certs {
                roots
                    .add(cert.clone())
                    .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
            }
            let mut builder = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                crate::tls::provider(),
            );
            let crl = files.crl.clone().or_else(|| {
                files
                    .crl_if_present
                    .clone()
                    .filter(|p| p.symlink_metadata().is_ok())
            });
            if let Some(crl_path) = &crl {
                // Checked against the CA's key here, so that a forged list
                // is refused whole at start or reload, rather than taken in
                // and then failing every handshake.
                let crl = crate::certs::revoke::read_crl(crl_path, &ca_certs[0])
                    .context("cannot load --crl")?;
                revoked = crl.revoked.len();
                warn_if_due(crl_path, crl.next_update);
                // The CRL covers the client certificates this CA signed;
                // the CA itself is a trust anchor.
                builder = builder
                    .with_crls([crl.der])
                    .only_check_end_entity_revocation();
            }
            Some(
                builder
                    .build()
                    .map_err(|e| anyhow!("cannot set up client certificate checks: {e}"))?,
            )
        }
    };
    let mut deny = HashSet::new();
    for name in &files.deny {
        deny.insert(nick_key(name));
    }
    if let Some(path) = &files.deny_file {
        deny.extend(read_names(path, "--deny-file")?);
    }
    let operators = match &files.operators {
        Some(path) if files.client_ca.is_none() => bail!(
            "--operators {} needs --client-ca: an operator is whoever holds a client \
             certificate with a listed name, and without client certificates anyone could \
             take an operator's nickname",
            path.display()
        ),
        Some(path) => read_names(path, "--operators")?.into_iter().collect(),
        None => HashSet::new(),
    };
    Ok(Policy {
        verifier,
        deny,
        operators,
        revoked,
    })
}

/// Warns when the CRL is past the date it says the next one is due, or
/// within [`CRL_WARN_DAYS`](crate::certs::revoke::CRL_WARN_DAYS) of it: a
/// stale list still refuses whom it names, but a team that keeps one
/// current should hear that it is not (rustls itself ignores the date).
fn warn_if_due(crl: &std::path::Path, next_update: Option<time::OffsetDateTime>) {
    use crate::certs::revoke::CRL_WARN_DAYS;
    let Some(next_update) = next_update else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let days = crate::certs::days_left(next_update, now);
    let due = crate::certs::format_date(&next_update);
    if next_update <= now {
        tracing::warn!(
            "the CRL {} was due to be renewed on {due}: renew it with `chatroom certs \
             renew-crl` (or revoke with `chatroom certs revoke`), then `kill -HUP` this server",
            crl.display()
        );
    } else if days <= CRL_WARN_DAYS {
        tracing::warn!(
            "the CRL {} is due to be renewed on {due} (in {days} days): `chatroom certs \
             renew-crl`, then `kill -HUP` this server",
            crl.display()
        );
    }
}

/// The names in a file of names (`--deny-file`, `--operators`: one per
/// line, `#` comments), as nickname keys.
fn read_names(path: &Path, option: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {option} {}", path.display()))?;
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|name| !name.is_empty())
        .map(nick_key)
        .collect())
}

/// The verifier the server's TLS config holds: it asks whatever policy is
/// current, so a reload reaches the next handshake.
#[derive(Debug)]
struct CurrentVerifier(Arc<Access>);

impl CurrentVerifier {
    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.0
            .current()
            .verifier
            .clone()
            .ok_or_else(|| rustls::Error::General("client certificates are off".into()))
    }
}

impl ClientCertVerifier for CurrentVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: the CA may change on reload and this returns a borrow.
    /// Clients present their certificate without them (rustls, openssl).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        crate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
