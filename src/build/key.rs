//! The local build key: made on first use, kept beside the user keyring, and trusted there, so
//! that what a local build publishes is signed and verified like any other cache.

use std::path::{Path, PathBuf};

use sequoia_openpgp as openpgp;

use openpgp::cert::CertBuilder;
use openpgp::serialize::Serialize;

use super::BuildError;
use crate::buildcache::writer::Signer;
use crate::trust::UserKeyring;

/// The secret key's file in the keyring directory (not `*.asc`: the keyring loads only those,
/// and only their public parts).
pub const SECRET_FILE: &str = "local-build.secret";

pub fn secret_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join(SECRET_FILE)
}

fn key_err(path: &Path, reason: impl std::fmt::Display) -> BuildError {
    BuildError::Key {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn generate(path: &Path) -> Result<(), BuildError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let uid = if host.is_empty() {
        "sf-cache local build <sf-cache@localhost>".to_string()
    } else {
        format!("sf-cache local build ({host}) <sf-cache@localhost>")
    };
    let (cert, _) = CertBuilder::new()
        .add_userid(uid)
        .add_signing_subkey()
        .generate()
        .map_err(|e| key_err(path, e))?;
    let mut armored = Vec::new();
    cert.as_tsk()
        .armored()
        .serialize(&mut armored)
        .map_err(|e| key_err(path, e))?;
    // Mode::Private: the secret never exists with wider permissions than 0600.
    crate::fs::write_atomic(path, &armored).map_err(|e| key_err(path, e))?;
    tracing::info!("made the local build key {}", path.display());
    Ok(())
}

/// The signer of local builds, made on first use; its public key is (re)added to the user
/// keyring every time, so local builds always verify.
pub fn local_signer(keyring: &UserKeyring) -> Result<Signer, BuildError> {
    let path = secret_path(&keyring.dir);
    if !path.is_file() {
        generate(&path)?;
    }
    let bytes = std::fs::read(&path).map_err(|e| key_err(&path, e))?;
    let signer = Signer::from_secret_armored(&bytes, None).map_err(|e| {
        key_err(
            &path,
            format!("{e}; delete the file to make a new local build key"),
        )
    })?;
    keyring
        .add_bytes(signer.public_armored.as_bytes(), "the local build key")
        .map_err(|e| key_err(&path, e))?;
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_and_trusted() {
        let d = tempfile::tempdir().unwrap();
        let ring = UserKeyring::new(d.path().join("keys"));
        let a = local_signer(&ring).unwrap();
        let mode = std::fs::metadata(secret_path(&ring.dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secret key readable by others: {mode:o}");
        let b = local_signer(&ring).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint, "the key is made once");
        let listed: Vec<String> = ring
            .list()
            .unwrap()
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        assert_eq!(listed, vec![a.fingerprint.clone()]);
        // Signatures verify with the user keyring.
        let mut k = crate::trust::Keyring::default();
        ring.load_into(&mut k).unwrap();
        let signed = a.sign(b"{\"x\": 1}\n").unwrap();
        assert!(k.verify_cleartext(&signed).is_good());
        // Removed from the keyring: trusted again by the next use.
        ring.remove(&a.fingerprint).unwrap();
        local_signer(&ring).unwrap();
        assert_eq!(ring.list().unwrap().len(), 1);
    }

    #[test]
    fn a_broken_key_file_names_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let ring = UserKeyring::new(d.path().to_path_buf());
        std::fs::write(secret_path(d.path()), "junk").unwrap();
        let e = local_signer(&ring).unwrap_err().to_string();
        assert!(
            e.contains(SECRET_FILE) && e.contains("delete the file"),
            "{e}"
        );
    }
}
