//! Test support shared by the end-to-end tests (`mod common;` in each `tests/*.rs`).
//!
//! - [`fixtures_dir`]: where the real Spack-made caches live.
//! - [`copy_tree`]: copy a fixture cache into a temp dir before breaking it.
//! - [`http_server`]: a real HTTP/1.1 server on 127.0.0.1 with fault injection.
//! - [`s3`]: the local S3-compatible server (moto) and a fresh bucket per test.
#![allow(dead_code)]

pub mod cli;
pub mod http_server;
pub mod registry;
pub mod s3;
pub mod tls;

#[allow(unused_imports)]
pub use http_server::{Fault, HttpServer, RequestRecord, ALWAYS};

use std::path::{Path, PathBuf};

/// Directory of the shared fixture caches (`spack-v3/`, `spack-v2/`, `keys/`, …).
///
/// Tries `$SF_FIXTURES`, then `$CARGO_MANIFEST_DIR/../shared/fixtures`, then
/// `/work/shared/fixtures`. Panics with a clear message when none exists (tests need them).
pub fn fixtures_dir() -> PathBuf {
    let mut tried = Vec::new();
    if let Some(p) = std::env::var_os("SF_FIXTURES").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_dir() {
            return p;
        }
        tried.push(p);
    }
    let rel = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if rel.is_dir() {
        return rel;
    }
    tried.push(rel);
    let abs = PathBuf::from("/work/shared/fixtures");
    if abs.is_dir() {
        return abs;
    }
    tried.push(abs);
    panic!(
        "fixture caches not found (tried {tried:?}); set SF_FIXTURES to the shared/fixtures directory"
    );
}

/// Recursively copy `src` into `dst` (created), keeping symlinks as symlinks.
pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if ft.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}
