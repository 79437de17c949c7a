//! Copying buildcaches between stores by digest (`sf-cache mirror`), and one-file bundles for
//! air-gapped sites (`mirror --bundle`, `import`).
//!
//! A mirror run has two halves:
//! 1. [`plan`]: read the source's index (or list its manifests), choose the specs (everything, or
//!    the closures of queries), fetch and verify every spec's signed metadata, and ask the
//!    destination which blobs it already has (HEAD, no download).
//! 2. [`execute`]: copy the missing blobs (downloaded into the blob cache by the
//!    [`Fetcher`](crate::fetch::Fetcher), which checks their sha256, then written atomically to
//!    the destination), then spec manifests / spec files, then keys, then `layout.json` and the
//!    index LAST, so the destination is a readable cache at every moment.
//!
//! Nothing that failed verification is ever written to the destination.

pub mod bundle;
mod copy;
mod plan;

pub use copy::execute;
pub use plan::{plan, MirrorPlan};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::buildcache::catalog::is_link_or_run;
use crate::buildcache::layout::{self, media, Layout};
use crate::buildcache::manifest::{BlobRecord, Manifest};
use crate::buildcache::writer::copied::{
    put_if_changed, put_small_blob, tarball_dest, write_copied_metadata, CopiedDags, CopiedMetadata,
};
use crate::buildcache::writer::{read_manifest_unverified, CacheWriter, Signer, WriterError};
use crate::buildcache::{
    BuildcacheError, Catalog, IndexCache, Mirror, TrustContext, VerifiedEntry,
};
use crate::error::ErrorKind;
use crate::fetch::{BlobRequest, FetchError, Fetcher};
use crate::spec::{HostTargets, Query};
use crate::store::{Store, StoreError};

/// Errors of mirroring and bundles. [`MirrorError::kind`] says what sort of failure it is.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Buildcache(#[from] BuildcacheError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// A bundle member (or the bundle itself) does not match its manifest.
    #[error("bundle {bundle}: {reason}; the file is corrupt or was tampered with, do not use it")]
    Bundle { bundle: String, reason: String },
    #[error("{}: {source} (check the path, its permissions and free space)", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl MirrorError {
    /// Verification for anything that failed verification, the buildcache's kind for its
    /// errors, usage for usage errors, else a plain failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MirrorError::Buildcache(e) => e.kind(),
            MirrorError::Writer(WriterError::Buildcache(e)) => e.kind(),
            MirrorError::Fetch(FetchError::DigestMismatch { .. })
            | MirrorError::Fetch(FetchError::SizeMismatch { .. })
            | MirrorError::Bundle { .. } => ErrorKind::Verification,
            MirrorError::Usage(_) => ErrorKind::Usage,
            _ => ErrorKind::Failure,
        }
    }

    fn io(path: &Path, source: std::io::Error) -> MirrorError {
        MirrorError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What to mirror and how.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// Empty: the whole cache. Otherwise the closures of the best matches.
    pub queries: Vec<Query>,
    /// Also the build dependencies (recursively) that have binaries.
    pub with_build_deps: bool,
    /// Convert v2 specs to layout v3.
    pub to_v3: bool,
    /// Signs converted manifests (and is published as a key of the destination).
    pub signer: Option<Signer>,
    /// Enumerate manifests with `Store::list` instead of trusting the index.
    pub list_objects: bool,
    /// Concurrent metadata fetches and blob copies.
    pub jobs: usize,
}

/// The summary printed by `mirror` and `import` (`--json`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MirrorSummary {
    pub blobs_copied: u64,
    pub blobs_skipped: u64,
    pub bytes_copied: u64,
    /// Spec manifests (v3) or signed spec files (v2) in the destination for the mirrored specs.
    pub manifests: u64,
    /// Public keys copied (or published, for `--key`).
    pub keys: u64,
    pub seconds: f64,
    /// Specs mirrored.
    pub specs: u64,
    /// Converted manifests left unsigned (`--to-layout v3` without `--key`).
    pub unsigned_converted: u64,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Relative paths of every regular file under `dir`, sorted (for bundles).
pub(crate) fn walk_files(dir: &Path) -> Result<Vec<String>, MirrorError> {
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<String, ()>) -> Result<(), MirrorError> {
        for entry in std::fs::read_dir(dir).map_err(|e| MirrorError::io(dir, e))? {
            let entry = entry.map_err(|e| MirrorError::io(dir, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| MirrorError::io(&path, e))?;
            if ft.is_dir() {
                rec(root, &path, out)?;
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|p| p.to_str())
                    .map(|s| s.replace('\\', "/"));
                match rel {
                    Some(r) if !r.split('/').any(|s| s.starts_with(".sf-tmp-")) => {
                        out.insert(r, ());
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    rec(dir, dir, &mut out)?;
    Ok(out.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::copy::key_index_fingerprints;
    use super::*;

    /// The fixture key's fingerprint, read from `shared/fixtures/keys/sf-cache-fixture.pub.asc`
    /// (`$SF_FIXTURES`, else `../shared/fixtures` beside the checkout, else `/work/shared/fixtures`).
    fn fixture_fingerprint() -> String {
        let candidates = [
            std::env::var_os("SF_FIXTURES").map(std::path::PathBuf::from),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")),
            Some(std::path::PathBuf::from("/work/shared/fixtures")),
        ];
        let key = candidates
            .into_iter()
            .flatten()
            .map(|d| d.join("keys/sf-cache-fixture.pub.asc"))
            .find(|p| p.is_file())
            .expect("fixtures not found: set SF_FIXTURES to the shared/fixtures directory");
        let bytes = std::fs::read(&key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        let keys = crate::trust::parse_keys(&bytes).unwrap();
        assert_eq!(keys.len(), 1, "{}: expected one key", key.display());
        keys[0].fingerprint.clone()
    }

    #[test]
    fn key_index_parsing() {
        let fpr = fixture_fingerprint();
        let j = format!(r#"{{"keys":{{"{fpr}":{{}},"../evil":{{}}}}}}"#);
        assert_eq!(key_index_fingerprints(j.as_bytes()), vec![fpr.clone()]);
        assert!(key_index_fingerprints(b"{").is_empty());
    }

    #[test]
    fn error_kinds() {
        let e = MirrorError::Fetch(FetchError::DigestMismatch {
            url: "u".into(),
            expected: "a".into(),
            actual: "b".into(),
        });
        assert_eq!(e.kind(), ErrorKind::Verification);
        let e = MirrorError::Bundle {
            bundle: "b".into(),
            reason: "r".into(),
        };
        assert_eq!(e.kind(), ErrorKind::Verification);
        assert_eq!(MirrorError::Usage("x".into()).kind(), ErrorKind::Usage);
    }
}
