//! Install receipts: what sf-cache installed where, from which verified source, and every file it
//! wrote. They live inside the staged prefix, so the final rename commits them with the package:
//! `.spack/sf-cache-receipt.json` (metadata) and `.spack/sf-cache-files.json` (the file list, kept
//! apart so listing an install root stays cheap).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const RECEIPT_FILE: &str = ".spack/sf-cache-receipt.json";
pub const FILES_FILE: &str = ".spack/sf-cache-files.json";
pub const RECEIPT_FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum ReceiptError {
    #[error("cannot read receipt {path}: {reason}; the package may be damaged — reinstall it")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write receipt {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One path of an installed prefix, as sf-cache left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptFile {
    /// Relative to the prefix.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (files and directories).
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// Where an installed package came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub hash: String,
    /// Absolute prefix the package was relocated to.
    pub prefix: String,
    pub mirror: String,
    pub layout: String,
    /// Signed metadata (v3 spec manifest / v2 signed spec file) and its sha256.
    pub metadata_path: String,
    pub metadata_digest: String,
    /// `sha256:<hex>` of the install tarball.
    pub tarball_digest: String,
    pub signature_status: String,
    pub signature_fingerprint: Option<String>,
    /// Hashes of the link/run dependencies that are not externals.
    pub dependencies: Vec<String>,
    /// Requested by the user, not only pulled in as a dependency.
    pub explicit: bool,
    pub installed_at_unix: u64,
    /// The spec node (Spack JSON).
    pub spec: serde_json::Value,
}

impl Receipt {
    pub fn read(prefix: &Path) -> Result<Receipt, ReceiptError> {
        read_json(&prefix.join(RECEIPT_FILE))
    }

    pub fn read_files(prefix: &Path) -> Result<Vec<ReceiptFile>, ReceiptError> {
        read_json(&prefix.join(FILES_FILE))
    }

    /// Write both receipt files into a (staged) prefix, fsynced.
    pub fn write(&self, prefix: &Path, files: &[ReceiptFile]) -> Result<(), ReceiptError> {
        write_json(&prefix.join(FILES_FILE), files)?;
        write_json(&prefix.join(RECEIPT_FILE), self)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ReceiptError> {
    let bytes = std::fs::read(path).map_err(|e| ReceiptError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ReceiptError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), ReceiptError> {
    let err = |source| ReceiptError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let mut f = std::fs::File::create(path).map_err(err)?;
    std::io::Write::write_all(&mut f, &bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let r = Receipt {
            format: RECEIPT_FORMAT,
            name: "greet".into(),
            version: "2.1.0".into(),
            hash: "h".into(),
            prefix: "/opt/x".into(),
            mirror: "file:///m".into(),
            layout: "v3".into(),
            metadata_path: "v3/manifests/spec/greet/x.spec.manifest.json".into(),
            metadata_digest: "d".into(),
            tarball_digest: "sha256:t".into(),
            signature_status: "good".into(),
            signature_fingerprint: Some("F".into()),
            dependencies: vec!["a".into()],
            explicit: true,
            installed_at_unix: 1,
            spec: serde_json::json!({"name": "greet"}),
        };
        let files = vec![ReceiptFile {
            path: "bin/greet".into(),
            kind: EntryKind::File,
            mode: 0o755,
            size: Some(3),
            sha256: Some("abc".into()),
            link_target: None,
        }];
        r.write(dir.path(), &files).unwrap();
        assert_eq!(Receipt::read(dir.path()).unwrap(), r);
        assert_eq!(Receipt::read_files(dir.path()).unwrap(), files);
        assert!(Receipt::read(Path::new("/nonexistent")).is_err());
    }
}
