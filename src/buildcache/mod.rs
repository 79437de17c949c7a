//! Spack buildcaches, layouts v3 and v2: paths, manifests, indexes, keys, and verified entries.

pub mod buildinfo;
pub mod catalog;
pub mod entry;
pub mod index;
pub mod index_bin;
pub mod keys;
pub mod layout;
pub mod manifest;
pub mod mirror;
pub mod oci;
pub mod oci_store;
pub mod trust_context;
pub mod writer;

use thiserror::Error;

use crate::error::ErrorKind;
use crate::store::StoreError;

pub use catalog::{Catalog, CatalogEntry, ClosureNode};
pub use entry::{BlobRef, SignatureReport, VerifiedEntry};
pub use layout::Layout;
pub use mirror::{IndexCache, Mirror};
pub use oci_store::open_store;
pub use trust_context::TrustContext;

#[derive(Debug, Error)]
pub enum BuildcacheError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--list-objects: {what}; use a path, file:// or s3:// source, or drop --list-objects to read the index")]
    CannotList { what: String },
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{what} {reason}")]
    Unsupported { what: String, reason: String },
    #[error("{what} {reason}")]
    Verification { what: String, reason: String },
    #[error("checksum mismatch for {what}: expected {expected}, got {actual}; the copy is corrupt or was tampered with")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{mirror} is not a Spack buildcache: {why}; point --mirror at the directory that holds `v3/` or `build_cache/`")]
    NotABuildcache { mirror: String, why: String },
    #[error(
        "{mirror} is a v3 buildcache without an index; run `spack buildcache update-index` on it"
    )]
    NoIndex { mirror: String },
    #[error("{what} is not in the local cache and --offline forbids the network; run the same command once online first")]
    Offline { what: String },
    #[error(
        "nothing in the mirrors matches `{query}`; try `sf-cache list` to see what they offer"
    )]
    NoMatch { query: String },
    #[error("`{query}` matches only targets this host cannot run: {found}")]
    NoRunnableMatch { query: String, found: String },
    #[error("`{query}` matches several specs: {candidates}; add a version, variant or /hash to choose one")]
    Ambiguous { query: String, candidates: String },
    #[error("{dependency} (needed by {dependent}) has no binary in any mirror; add a mirror that has it")]
    MissingDependency {
        dependent: String,
        dependency: String,
    },
}

impl BuildcacheError {
    /// What sort of failure this is (README, exit codes: 1 other, 3 verification, 4 no match).
    pub fn kind(&self) -> ErrorKind {
        match self {
            BuildcacheError::Verification { .. }
            | BuildcacheError::ChecksumMismatch { .. }
            | BuildcacheError::Store(StoreError::Corrupt { .. }) => ErrorKind::Verification,
            BuildcacheError::NoMatch { .. } | BuildcacheError::NoRunnableMatch { .. } => {
                ErrorKind::NoMatch
            }
            BuildcacheError::CannotList { .. } => ErrorKind::Usage,
            _ => ErrorKind::Failure,
        }
    }
}
