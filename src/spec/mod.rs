//! The Spec model read from Spack spec JSON (formats 3, 4 and 5), spec files, version ordering,
//! query parsing and matching, DAG hash recomputation and host target compatibility.
//!
//! Pure: no I/O except host CPU detection in [`target::HostTargets::detect`].
//!
//! Entry points:
//! * [`Spec::from_node`] (from a `serde_json::Value`), [`Spec::from_node_json`] (from text), or
//!   `Spec` as a `serde::Deserialize` type followed by [`Spec::finish`] (fast path for index
//!   parsing: deserialize `{"spec": Spec, ...}` records directly, then call `finish(format)`).
//! * [`SpecFile::parse`] for a whole spec file / spec blob.
//! * [`dag_hash::recompute`] to check a node's stored hash.
//! * [`Version`], [`VersionConstraint`], [`Query`].
//! * [`compiler_of`] for the compiler of a node in any format.

pub mod dag_hash;
mod node;
pub mod query;
pub mod spack_lock;
mod specfile;
pub mod target;
pub mod version;

pub use node::{
    compiler_of, Arch, BuildSpecRef, CompilerRef, DepEdge, DepTypes, External, Spec, VariantValue,
    FLAG_NAMES,
};
pub use query::{CompilerQuery, Query, QueryError, VariantReq};
pub use specfile::SpecFile;
pub use target::HostTargets;
pub use version::{Version, VersionConstraint, VersionError, VersionItem};

use thiserror::Error;

/// Errors reading spec JSON.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "spec JSON is malformed: {0}; re-download the spec file or ask its publisher to rebuild it"
    )]
    Json(String),
    #[error("spec.yaml (Spack ≤0.16) is not supported: push the package again with a newer Spack")]
    Yaml,
    #[error("spec file is clearsigned: extract and verify the signed payload before parsing it")]
    Clearsigned,
    #[error("spec file format 1 (a list of nodes, Spack ≤0.16) is not supported: push the package again with a newer Spack")]
    ListFormat,
    #[error("spec format {0} is not supported (supported: 3, 4, 5): use a matching sf-cache or Spack version")]
    UnsupportedFormat(u32),
    #[error("spec file has no nodes: the file is truncated or not a Spack spec file")]
    NoNodes,
    #[error("spec node '{name}' is invalid: {reason}")]
    Node { name: String, reason: String },
}

#[cfg(test)]
mod fixture_tests;
