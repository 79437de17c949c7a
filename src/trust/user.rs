//! The user keyring on disk: one `<FINGERPRINT>.asc` (armored public key) per trusted key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{key_info, normalize_fingerprint, parse_certs, KeyInfo, Keyring, Result, TrustError};

/// A directory of trusted public keys (`<FPR>.asc`), e.g. `$SF_CACHE_HOME/keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeyring {
    /// The directory (created on first write).
    pub dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl UserKeyring {
    /// A user keyring in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        UserKeyring { dir: dir.into() }
    }

    /// The `.asc` files in the directory, sorted. A missing directory is an empty keyring.
    fn files(&self) -> Result<Vec<PathBuf>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let p = e.map_err(io_err(&self.dir))?.path();
            if p.extension().is_some_and(|x| x == "asc") && p.is_file() {
                out.push(p);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Adds every key of the directory to `keyring`. A file that is not a key is an error
    /// naming the file.
    pub fn load_into(&self, keyring: &mut Keyring) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for p in self.files()? {
            let bytes = fs::read(&p).map_err(io_err(&p))?;
            let name = p.display().to_string();
            let infos = keyring.add_armored(&bytes, &name).map_err(|e| match e {
                TrustError::NoKeys { .. } | TrustError::InvalidKey { .. } => {
                    TrustError::InvalidKey {
                        source_name: name.clone(),
                        reason: "unreadable key in the user keyring; delete the file or \
                                 re-add the key with `sf-cache keys add FILE`"
                            .into(),
                    }
                }
                other => other,
            })?;
            out.extend(infos);
        }
        Ok(out)
    }

    /// Imports the public key(s) of `path` (armored or binary; secret parts are dropped), storing
    /// each as `<dir>/<FPR>.asc` with an atomic write.
    pub fn add_file(&self, path: &Path) -> Result<Vec<KeyInfo>> {
        let bytes = fs::read(path).map_err(io_err(path))?;
        self.add_bytes(&bytes, &path.display().to_string())
    }

    /// Like [`UserKeyring::add_file`] for in-memory key material.
    pub fn add_bytes(&self, bytes: &[u8], source_name: &str) -> Result<Vec<KeyInfo>> {
        let certs = parse_certs(bytes, source_name)?;
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let mut out = Vec::new();
        for cert in certs {
            let fpr = cert.fingerprint().to_hex();
            let cert_fpr = cert.fingerprint();
            let target = self.dir.join(format!("{fpr}.asc"));
            // Merge with a key already stored under that fingerprint (new subkeys, revocations).
            let cert = match fs::read(&target) {
                Ok(old) => match parse_certs(&old, &target.display().to_string()) {
                    Ok(olds) => olds
                        .into_iter()
                        .filter(|c| c.fingerprint() == cert_fpr)
                        .try_fold(cert, |acc, c| acc.merge_public(c))
                        .map_err(|e| TrustError::InvalidKey {
                            source_name: source_name.to_string(),
                            reason: e.to_string(),
                        })?,
                    Err(_) => cert,
                },
                Err(_) => cert,
            };
            let info = key_info(&cert)?;
            write_atomic(&self.dir, &target, info.armored.as_bytes())?;
            tracing::debug!("stored key {fpr} in {}", target.display());
            out.push(info);
        }
        Ok(out)
    }

    /// Removes the key with this fingerprint; `Ok(false)` when it was not there.
    pub fn remove(&self, fpr: &str) -> Result<bool> {
        let fpr = normalize_fingerprint(fpr)?;
        let target = self.dir.join(format!("{fpr}.asc"));
        match fs::remove_file(&target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&target)(e)),
        }
    }

    /// The keys stored in the directory.
    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        let mut k = Keyring::default();
        self.load_into(&mut k)?;
        Ok(k.keys())
    }
}

/// Writes `bytes` to `target` through a temporary file in `dir`, fsync, rename.
fn write_atomic(dir: &Path, target: &Path, bytes: &[u8]) -> Result<()> {
    debug_assert_eq!(target.parent(), Some(dir));
    crate::fs::write_atomic_with(target, crate::fs::Mode::Private, ".tmp-key-", |f| {
        f.write_all(bytes)
    })
    .map_err(io_err(target))
}
