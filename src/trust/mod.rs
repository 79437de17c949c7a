//! OpenPGP trust: keyrings (builtin `keys/`, user keys on disk, pinned fingerprints), verification
//! of Spack's clearsigned manifests / spec files, and clearsigning for publishing.
//!
//! Pure: no network, no global state. Verification mirrors what Spack gets from `gpg --verify`
//! (a good signature by any key in the keyring), with the same strictness as GnuPG 2.2 about the
//! cleartext framework (see `cleartext.rs`), and sequoia's standard policy for the cryptography:
//! SHA-1 *data* signatures are rejected; SHA-1 is only tolerated inside keys' self-signatures.

mod cleartext;
mod user;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

use sequoia_openpgp as openpgp;

use openpgp::cert::amalgamation::ValidAmalgamation;
use openpgp::cert::{Cert, CertParser};
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::policy::{HashAlgoSecurity, StandardPolicy};
use openpgp::serialize::stream::{Message, Signer};
use openpgp::serialize::SerializeInto;
use openpgp::types::HashAlgorithm;
use openpgp::KeyHandle;

pub use user::UserKeyring;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_keys.rs"));
}

/// Fingerprints pinned by the project (trusted when a mirror serves the key).
const BUILTIN_PINS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/keys/pinned-fingerprints.txt"
));

/// Errors of the trust module. Messages are one line naming the object and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The input holds no OpenPGP certificate.
    #[error("{source_name} contains no OpenPGP public key; export one with `gpg --armor --export FINGERPRINT`")]
    NoKeys {
        /// File name or other description of the input.
        source_name: String,
    },
    /// The input is not parseable OpenPGP key material.
    #[error("{source_name} is not a valid OpenPGP key ({reason}); export it again with `gpg --armor --export FINGERPRINT`")]
    InvalidKey {
        /// File name or other description of the input.
        source_name: String,
        /// What the parser said.
        reason: String,
    },
    /// A fingerprint string is not 40 (v4) or 64 (v6) hex digits.
    #[error("invalid key fingerprint {0:?}: expected 40 hexadecimal digits as printed by `gpg --list-keys --with-colons`")]
    InvalidFingerprint(String),
    /// The text is not a (well-formed) cleartext signature.
    #[error(
        "not a valid OpenPGP cleartext signature: {0}; re-sign the file with `gpg --clearsign`"
    )]
    Malformed(String),
    /// No usable signing key in a secret key file.
    #[error("secret key {fingerprint} has no usable signing key ({reason}); create one with `gpg --quick-add-key FPR rsa4096 sign`")]
    NoSigningKey {
        /// Fingerprint of the certificate.
        fingerprint: String,
        /// Why.
        reason: String,
    },
    /// The secret key is protected and the passphrase is missing or wrong.
    #[error("cannot unlock secret key {fingerprint}: {reason}; give the right passphrase")]
    Passphrase {
        /// Fingerprint of the key.
        fingerprint: String,
        /// Why.
        reason: String,
    },
    /// The data cannot be clearsigned so that Spack reads it back.
    #[error("cannot clearsign: {0}")]
    Unsignable(String),
    /// Signing failed inside the OpenPGP library.
    #[error("signing failed: {0}; check the secret key file")]
    Signing(String),
    /// File system error on a key file or keyring directory.
    #[error("{path}: {source}; check the path and its permissions")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl TrustError {
    /// What sort of failure this is: a malformed fingerprint argument is a usage error.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            TrustError::InvalidFingerprint(_) => crate::error::ErrorKind::Usage,
            _ => crate::error::ErrorKind::Failure,
        }
    }
}

/// Result type of this module.
pub type Result<T, E = TrustError> = std::result::Result<T, E>;

/// A public key (certificate) summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Primary key fingerprint, upper-case hex without spaces (40 digits for v4 keys).
    pub fingerprint: String,
    /// User IDs as UTF-8 (lossy).
    pub user_ids: Vec<String>,
    /// ASCII-armored public certificate (never secret material).
    pub armored: String,
}

/// Outcome of a signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Good signature by a key in the keyring.
    Good,
    /// The signature (or the cleartext framework around it) does not verify.
    Bad,
    /// Signed, but by a key that is not in the keyring.
    UnknownKey,
    /// Not a cleartext-signed text at all.
    Unsigned,
}

/// Result of [`Keyring::verify_cleartext`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The verdict.
    pub status: SignatureStatus,
    /// Good: the signer's primary fingerprint. UnknownKey/Bad: the issuer fingerprint or key id
    /// named in the signature, when there is one.
    pub fingerprint: Option<String>,
    /// Good: the signer's primary user ID.
    pub user_id: Option<String>,
    /// Good: exactly the signed text (the JSON to parse). Unsigned: the input. UnknownKey/Bad:
    /// the UNVERIFIED cleartext when it could be extracted (else empty) — only for callers that
    /// do not require signatures; never trust it.
    pub payload: Vec<u8>,
    /// Human-readable reason for a non-good verdict.
    pub detail: Option<String>,
}

impl Verification {
    /// True when the status is [`SignatureStatus::Good`].
    pub fn is_good(&self) -> bool {
        self.status == SignatureStatus::Good
    }
}

/// The policy used everywhere: standard, but SHA-1 accepted where only second-preimage
/// resistance is needed (keys' self-signatures and bindings), as older gpg keys use it.
fn policy() -> StandardPolicy<'static> {
    let mut p = StandardPolicy::new();
    p.accept_hash_property(
        HashAlgorithm::SHA1,
        HashAlgoSecurity::SecondPreImageResistance,
    );
    p
}

/// Normalises a fingerprint (spaces removed, upper case) and checks it is 40 or 64 hex digits.
pub fn normalize_fingerprint(fpr: &str) -> Result<String> {
    let s: String = fpr
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let s = s.strip_prefix("0X").map(str::to_string).unwrap_or(s);
    if (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(TrustError::InvalidFingerprint(fpr.to_string()))
    }
}

fn key_info(cert: &Cert) -> Result<KeyInfo> {
    let armored = cert
        .armored()
        .to_vec()
        .map_err(|e| TrustError::InvalidKey {
            source_name: cert.fingerprint().to_hex(),
            reason: e.to_string(),
        })?;
    Ok(KeyInfo {
        fingerprint: cert.fingerprint().to_hex(),
        user_ids: cert
            .userids()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect(),
        armored: String::from_utf8_lossy(&armored).into_owned(),
    })
}

fn parse_certs(bytes: &[u8], source_name: &str) -> Result<Vec<Cert>> {
    let invalid = |e: anyhow_like::E| TrustError::InvalidKey {
        source_name: source_name.to_string(),
        reason: e.0,
    };
    let parser = CertParser::from_bytes(bytes).map_err(|e| invalid(e.into()))?;
    let mut certs = Vec::new();
    for c in parser {
        certs.push(c.map_err(|e| invalid(e.into()))?);
    }
    if certs.is_empty() {
        return Err(TrustError::NoKeys {
            source_name: source_name.to_string(),
        });
    }
    Ok(certs)
}

/// Tiny adapter so that error reasons are single-line strings.
mod anyhow_like {
    pub struct E(pub String);
    impl From<sequoia_openpgp::anyhow::Error> for E {
        fn from(e: sequoia_openpgp::anyhow::Error) -> Self {
            E(format!("{e:#}").replace('\n', " "))
        }
    }
}

/// Parses one or several certificates (armored or binary). Secret parts are dropped from
/// [`KeyInfo::armored`].
pub fn parse_keys(armored: &[u8]) -> Result<Vec<KeyInfo>> {
    parse_certs(armored, "key data")?
        .iter()
        .map(key_info)
        .collect()
}

#[derive(Debug, Clone)]
struct Entry {
    cert: Cert,
    info: KeyInfo,
    source: String,
}

/// A set of trusted public keys plus pinned fingerprints. Parsed certificates are kept, so
/// verification does not re-parse anything.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    certs: BTreeMap<String, Entry>,
    /// Hex key id and fingerprint of every (sub)key → primary fingerprint.
    handles: HashMap<String, String>,
    pins: BTreeSet<String>,
}

impl Keyring {
    /// The keys compiled into the binary (`keys/*.asc`) and the pinned fingerprints from
    /// `keys/pinned-fingerprints.txt`.
    pub fn builtin() -> Keyring {
        let mut k = Keyring::default();
        for (name, bytes) in builtin::BUILTIN_KEYS {
            if let Err(e) = k.add_armored(bytes, &format!("builtin keys/{name}")) {
                // A unit test guarantees this does not happen for shipped keys.
                tracing::error!("{e}");
            }
        }
        for fpr in pinned_lines(BUILTIN_PINS) {
            if let Err(e) = k.pin(fpr) {
                tracing::error!("keys/pinned-fingerprints.txt: {e}");
            }
        }
        k
    }

    /// Adds every certificate in `bytes` (merging with a certificate already present).
    /// `source` names the origin in messages (e.g. a file name).
    pub fn add_armored(&mut self, bytes: &[u8], source: &str) -> Result<Vec<KeyInfo>> {
        let certs = parse_certs(bytes, source)?;
        certs.into_iter().map(|c| self.insert(c, source)).collect()
    }

    /// Adds only the certificates whose primary fingerprint is pinned; returns those added.
    pub fn add_if_pinned(&mut self, bytes: &[u8]) -> Result<Vec<KeyInfo>> {
        let certs = parse_certs(bytes, "published key")?;
        let mut out = Vec::new();
        for c in certs {
            let fpr = c.fingerprint().to_hex();
            if self.pins.contains(&fpr) {
                out.push(self.insert(c, "pinned fingerprint")?);
            } else {
                tracing::debug!("ignoring key {fpr}: its fingerprint is not pinned");
            }
        }
        Ok(out)
    }

    fn insert(&mut self, cert: Cert, source: &str) -> Result<KeyInfo> {
        let fpr = cert.fingerprint().to_hex();
        let cert = match self.certs.remove(&fpr) {
            Some(old) => old
                .cert
                .merge_public(cert)
                .map_err(|e| TrustError::InvalidKey {
                    source_name: source.to_string(),
                    reason: e.to_string(),
                })?,
            None => cert.strip_secret_key_material(),
        };
        for k in cert.keys() {
            self.handles
                .insert(k.key().fingerprint().to_hex(), fpr.clone());
            self.handles.insert(k.key().keyid().to_hex(), fpr.clone());
        }
        let info = key_info(&cert)?;
        self.certs.insert(
            fpr,
            Entry {
                cert,
                info: info.clone(),
                source: source.to_string(),
            },
        );
        Ok(info)
    }

    /// Pins a fingerprint (any spacing/case accepted).
    pub fn pin(&mut self, fpr: &str) -> Result<()> {
        self.pins.insert(normalize_fingerprint(fpr)?);
        Ok(())
    }

    /// Whether `fpr` is pinned.
    pub fn is_pinned(&self, fpr: &str) -> bool {
        normalize_fingerprint(fpr).is_ok_and(|f| self.pins.contains(&f))
    }

    /// Pinned fingerprints, sorted.
    pub fn pins(&self) -> Vec<String> {
        self.pins.iter().cloned().collect()
    }

    /// The keys in the keyring, sorted by fingerprint.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.certs.values().map(|e| e.info.clone()).collect()
    }

    /// Where a key came from (`source` given to [`Keyring::add_armored`]).
    pub fn source_of(&self, fpr: &str) -> Option<&str> {
        let f = normalize_fingerprint(fpr).ok()?;
        self.certs.get(&f).map(|e| e.source.as_str())
    }

    /// Whether the keyring holds the certificate with this primary fingerprint.
    pub fn contains(&self, fpr: &str) -> bool {
        normalize_fingerprint(fpr).is_ok_and(|f| self.certs.contains_key(&f))
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True when no certificate is present.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Verifies a cleartext-signed text (a Spack spec manifest or `.spec.json.sig`).
    pub fn verify_cleartext(&self, text: &[u8]) -> Verification {
        if !text.starts_with(cleartext::BEGIN_SIGNED) {
            return Verification {
                status: SignatureStatus::Unsigned,
                fingerprint: None,
                user_id: None,
                payload: text.to_vec(),
                detail: Some("no `-----BEGIN PGP SIGNED MESSAGE-----` header".into()),
            };
        }
        let bad = |detail: String, fingerprint: Option<String>, payload: Vec<u8>| Verification {
            status: SignatureStatus::Bad,
            fingerprint,
            user_id: None,
            payload,
            detail: Some(detail),
        };
        let parsed = match cleartext::parse(text) {
            Ok(p) => p,
            Err(e) => {
                return bad(
                    format!("malformed cleartext signature: {e}"),
                    None,
                    Vec::new(),
                )
            }
        };
        let policy = policy();
        let helper = Helper {
            keyring: self,
            outcomes: Vec::new(),
        };
        let run = || -> std::result::Result<Vec<Outcome>, String> {
            let mut v = DetachedVerifierBuilder::from_bytes(&parsed.signature)
                .map_err(|e| format!("{e:#}"))?
                .with_policy(&policy, None, helper)
                .map_err(|e| format!("{e:#}"))?;
            v.verify_bytes(&parsed.text).map_err(|e| format!("{e:#}"))?;
            Ok(v.into_helper().outcomes)
        };
        let outcomes = match run() {
            Ok(o) => o,
            Err(e) => {
                return bad(
                    format!("cannot check signature: {}", e.replace('\n', " ")),
                    None,
                    parsed.text,
                )
            }
        };
        if outcomes.is_empty() {
            return bad(
                "no signature in the signature block".into(),
                None,
                parsed.text,
            );
        }

        // GnuPG refuses a signature whose hash algorithm is not announced in `Hash:`.
        for o in &outcomes {
            if !parsed.hash_names.iter().any(|n| n == &o.hash_name) {
                return bad(
                    format!(
                        "signature uses {} but the `Hash:` header lists {}",
                        o.hash_name,
                        parsed.hash_names.join(", ")
                    ),
                    o.fingerprint.clone(),
                    parsed.text,
                );
            }
        }
        if let Some(o) = outcomes.iter().find(|o| o.kind == OutcomeKind::Bad) {
            return bad(
                o.detail.clone().unwrap_or_else(|| "bad signature".into()),
                o.fingerprint.clone(),
                parsed.text,
            );
        }
        if let Some(o) = outcomes.iter().find(|o| o.kind == OutcomeKind::Good) {
            return Verification {
                status: SignatureStatus::Good,
                fingerprint: o.fingerprint.clone(),
                user_id: o.user_id.clone(),
                payload: parsed.text,
                detail: None,
            };
        }
        let o = &outcomes[0];
        Verification {
            status: SignatureStatus::UnknownKey,
            fingerprint: o.fingerprint.clone(),
            user_id: None,
            payload: parsed.text,
            detail: Some(match &o.fingerprint {
                Some(f) => format!(
                    "signed by key {f}, which is not trusted; add it with `sf-cache keys add FILE`"
                ),
                None => "signed by an unidentified key".into(),
            }),
        }
    }
}

fn pinned_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutcomeKind {
    Good,
    Bad,
    Missing,
}

#[derive(Debug)]
struct Outcome {
    kind: OutcomeKind,
    fingerprint: Option<String>,
    user_id: Option<String>,
    hash_name: String,
    detail: Option<String>,
}

struct Helper<'k> {
    keyring: &'k Keyring,
    outcomes: Vec<Outcome>,
}

fn issuer_of(sig: &openpgp::packet::Signature) -> Option<String> {
    sig.issuer_fingerprints()
        .next()
        .map(|f| f.to_hex())
        .or_else(|| sig.get_issuers().first().map(KeyHandle::to_hex))
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for id in ids {
            if let Some(primary) = self.keyring.handles.get(&id.to_hex()) {
                if seen.insert(primary.clone()) {
                    if let Some(e) = self.keyring.certs.get(primary) {
                        out.push(e.cert.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure.into_iter() {
            let MessageLayer::SignatureGroup { results } = layer else {
                continue;
            };
            for r in results {
                let o = match r {
                    Ok(good) => {
                        let vc = good.ka.valid_cert();
                        Outcome {
                            kind: OutcomeKind::Good,
                            fingerprint: Some(good.ka.cert().fingerprint().to_hex()),
                            user_id: vc
                                .primary_userid()
                                .ok()
                                .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned()),
                            hash_name: hash_name(good.sig.hash_algo()),
                            detail: None,
                        }
                    }
                    Err(e) => {
                        let (kind, sig_hash, fpr) = match &e {
                            VerificationError::MissingKey { sig } => {
                                (OutcomeKind::Missing, Some(sig.hash_algo()), issuer_of(sig))
                            }
                            VerificationError::UnboundKey { sig, cert, .. } => (
                                OutcomeKind::Bad,
                                Some(sig.hash_algo()),
                                Some(cert.fingerprint().to_hex()),
                            ),
                            VerificationError::BadKey { sig, ka, .. }
                            | VerificationError::BadSignature { sig, ka, .. } => (
                                OutcomeKind::Bad,
                                Some(sig.hash_algo()),
                                Some(ka.cert().fingerprint().to_hex()),
                            ),
                            VerificationError::MalformedSignature { sig, .. } => {
                                (OutcomeKind::Bad, Some(sig.hash_algo()), issuer_of(sig))
                            }
                            _ => (OutcomeKind::Bad, None, None),
                        };
                        Outcome {
                            kind,
                            fingerprint: fpr,
                            user_id: None,
                            hash_name: sig_hash.map(hash_name).unwrap_or_default(),
                            detail: Some(format!("{e:#}").replace('\n', " ")),
                        }
                    }
                };
                self.outcomes.push(o);
            }
        }
        Ok(())
    }
}

fn hash_name(h: HashAlgorithm) -> String {
    h.text_name()
        .map(str::to_string)
        .unwrap_or_else(|_| h.to_string())
}

/// Extracts the signed text of a cleartext-signed message WITHOUT verifying it (dash-escaping
/// undone, trailing whitespace removed, no final newline). Text that is not clearsigned is
/// returned unchanged (as Spack does).
pub fn extract_cleartext(text: &[u8]) -> Result<Vec<u8>> {
    if !text.starts_with(cleartext::BEGIN_SIGNED) {
        return Ok(text.to_vec());
    }
    cleartext::parse(text)
        .map(|c| c.text)
        .map_err(TrustError::Malformed)
}

/// Longest line GnuPG signs without silently truncating it.
const MAX_LINE: usize = 19_995;

/// Clearsigns `data` with the (first valid) signing key of `secret_armored`, SHA-512, in a shape
/// that both `gpg --verify` and Spack's regex extraction accept. `data` must be UTF-8 text with
/// no line starting with `-` (Spack does not undo dash-escaping) and lines shorter than 19 995
/// bytes. The verified payload of the result equals `data` minus trailing whitespace on lines.
pub fn clearsign(secret_armored: &[u8], passphrase: Option<&str>, data: &[u8]) -> Result<Vec<u8>> {
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if line.starts_with(b"-") {
            return Err(TrustError::Unsignable(format!(
                "line {} starts with '-', which Spack's signature extraction cannot read back; \
                 reformat the text",
                i + 1
            )));
        }
        if line.len() >= MAX_LINE {
            return Err(TrustError::Unsignable(format!(
                "line {} is {} bytes long (gpg truncates lines of {MAX_LINE}+ bytes); \
                 serialize the JSON with one key per line",
                i + 1,
                line.len()
            )));
        }
    }
    if std::str::from_utf8(data).is_err() {
        return Err(TrustError::Unsignable("the data is not UTF-8 text".into()));
    }
    clearsign_unchecked(secret_armored, passphrase, data, HashAlgorithm::SHA512)
}

/// Clearsigns without the Spack-compatibility checks on `data` (tests use it for dash-escaped
/// lines and weak hash algorithms).
pub(crate) fn clearsign_unchecked(
    secret_armored: &[u8],
    passphrase: Option<&str>,
    data: &[u8],
    hash: HashAlgorithm,
) -> Result<Vec<u8>> {
    let keypair = signing_keypair(secret_armored, passphrase)?;
    let sign_err = |e: openpgp::anyhow::Error| TrustError::Signing(format!("{e:#}"));
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let mut signer = Signer::new(message, keypair)
            .map_err(sign_err)?
            .cleartext()
            .hash_algo(hash)
            .map_err(sign_err)?
            .build()
            .map_err(sign_err)?;
        signer
            .write_all(data)
            .map_err(|e| TrustError::Signing(e.to_string()))?;
        signer.finalize().map_err(sign_err)?;
    }
    Ok(sink)
}

/// A detached, ASCII-armored signature (SHA-512) over everything `data` yields, streamed (the
/// data is never held in memory), made with the first valid signing key of `secret_armored`.
/// `gpg --verify SIG FILE` checks it.
pub fn sign_detached(
    secret_armored: &[u8],
    passphrase: Option<&str>,
    data: &mut dyn std::io::Read,
) -> Result<Vec<u8>> {
    let keypair = signing_keypair(secret_armored, passphrase)?;
    let sign_err = |e: openpgp::anyhow::Error| TrustError::Signing(format!("{e:#}"));
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let message = openpgp::serialize::stream::Armorer::new(message)
            .kind(openpgp::armor::Kind::Signature)
            .build()
            .map_err(sign_err)?;
        let mut signer = Signer::new(message, keypair)
            .map_err(sign_err)?
            .detached()
            .hash_algo(HashAlgorithm::SHA512)
            .map_err(sign_err)?
            .build()
            .map_err(sign_err)?;
        std::io::copy(data, &mut signer)
            .map_err(|e| TrustError::Signing(format!("reading the data to sign: {e}")))?;
        signer.finalize().map_err(sign_err)?;
    }
    Ok(sink)
}

/// The signing key pair of the first certificate in `secret_armored` that has a valid,
/// unrevoked, signing-capable secret (sub)key, unlocked with `passphrase` when needed.
fn signing_keypair(
    secret_armored: &[u8],
    passphrase: Option<&str>,
) -> Result<openpgp::crypto::KeyPair> {
    let certs = parse_certs(secret_armored, "secret key")?;
    let policy = policy();
    let mut last_err = None;
    for cert in &certs {
        let fpr = cert.fingerprint().to_hex();
        let ka = match cert
            .keys()
            .secret()
            .with_policy(&policy, None)
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .next()
        {
            Some(k) => k,
            None => {
                last_err = Some(TrustError::NoSigningKey {
                    fingerprint: fpr,
                    reason: "no valid, unrevoked, signing-capable secret (sub)key".into(),
                });
                continue;
            }
        };
        let mut key = ka.key().clone();
        if !key.has_unencrypted_secret() {
            let Some(pw) = passphrase else {
                return Err(TrustError::Passphrase {
                    fingerprint: fpr,
                    reason: "the key is passphrase-protected and no passphrase was given".into(),
                });
            };
            key = key
                .decrypt_secret(&pw.into())
                .map_err(|e| TrustError::Passphrase {
                    fingerprint: fpr.clone(),
                    reason: format!("{e}"),
                })?;
        }
        return key.into_keypair().map_err(|e| TrustError::NoSigningKey {
            fingerprint: fpr.clone(),
            reason: e.to_string(),
        });
    }
    Err(last_err.unwrap_or(TrustError::NoKeys {
        source_name: "secret key".into(),
    }))
}

#[cfg(test)]
mod tests;
