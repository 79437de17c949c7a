//! Blob cache garbage collection and the registry of install roots.
//!
//! `collect` removes the cached tarball blobs (`<cache>/sha256/<xx>/<digest>`) that no receipt of
//! any given install root references (receipt field `tarball_digest`); `clean` empties the cache.
//! Both hold the cache's exclusive lock (`<cache>/.lock`, the lock downloaders hold shared).
//!
//! The registry is a small JSON list of install roots (absolute paths) so that `cache gc` finds
//! every receipt; it is updated atomically under `<registry>.lock`.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;
use tracing::{debug, info, warn};

use super::root::{InstallRoot, RootError, STATE_DIR};
use crate::fs::write_atomic;

/// The whole-cache lock file inside the blob cache directory.
pub const CACHE_LOCK: &str = ".lock";

#[derive(Debug, Error)]
pub enum GcError {
    #[error("blob cache {}: {source}; check its permissions", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the receipts of install root {}: {source}; fix the root (or unregister it) before collecting garbage", root.display())]
    Root { root: PathBuf, source: RootError },
    #[error("root registry {}: {source}; check that its directory is writable", path.display())]
    Registry {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot register install root {}: {source}; create the root first", root.display())]
    NoRoot {
        root: PathBuf,
        source: std::io::Error,
    },
}

/// What `collect` / `clean` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blobs (or, for `clean`, all files) removed.
    pub removed: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Blobs kept because a receipt references them.
    pub kept: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GcError + '_ {
    move |source| GcError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Take a lock on `path` (created if needed), waiting with a log line when someone holds it.
fn lock_file(path: &Path, what: &str) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            info!("waiting for another sf-cache process using {what}");
            f.lock()?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    Ok(f)
}

/// `sha256:<hex>` (or bare hex) → lowercase hex, if it looks like a sha256.
fn digest_hex(d: &str) -> Option<String> {
    let hex = d.strip_prefix("sha256:").unwrap_or(d).to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The tarball digests referenced by the receipts of `roots` (roots that do not exist or are not
/// install roots are skipped). Opens (and so locks) each root: do not call it while holding one
/// of them open.
pub fn referenced_digests(roots: &[PathBuf]) -> Result<BTreeSet<String>, GcError> {
    let mut out = BTreeSet::new();
    for root in roots {
        if !root.join(STATE_DIR).join("root.json").is_file() {
            warn!(
                "{} is not an install root (any more); skipping it",
                root.display()
            );
            continue;
        }
        let r = InstallRoot::open(root, None, false).map_err(|source| GcError::Root {
            root: root.clone(),
            source,
        })?;
        for (prefix, receipt) in r.installed() {
            match digest_hex(&receipt.tarball_digest) {
                Some(h) => {
                    out.insert(h);
                }
                None => warn!(
                    "{}: unexpected tarball digest `{}`",
                    prefix.display(),
                    receipt.tarball_digest
                ),
            }
        }
    }
    Ok(out)
}

/// Remove the blobs of `blob_cache_dir` that no receipt under `roots` references.
pub fn collect(blob_cache_dir: &Path, roots: &[PathBuf]) -> Result<GcReport, GcError> {
    collect_with(blob_cache_dir, || roots.to_vec())
}

/// [`collect`], with the roots read only once the cache's exclusive lock is held: an install
/// that was running (holding the lock shared) has registered its root and written its receipts
/// by then, so its blobs are kept.
pub fn collect_with(
    blob_cache_dir: &Path,
    roots: impl FnOnce() -> Vec<PathBuf>,
) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    if !blob_cache_dir.is_dir() {
        return Ok(report);
    }
    let lock_path = blob_cache_dir.join(CACHE_LOCK);
    let _lock =
        lock_file(&lock_path, &blob_cache_dir.display().to_string()).map_err(io(&lock_path))?;
    let keep = referenced_digests(&roots())?;
    let base = blob_cache_dir.join("sha256");
    let shards = match std::fs::read_dir(&base) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io(&base)(e)),
    };
    for shard in shards {
        let shard = shard.map_err(io(&base))?;
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        let shard_path = shard.path();
        if shard_name.len() != 2 || !shard.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for blob in std::fs::read_dir(&shard_path).map_err(io(&shard_path))? {
            let blob = blob.map_err(io(&shard_path))?;
            let name = blob.file_name().to_string_lossy().into_owned();
            let Some(hex) = digest_hex(&name) else {
                debug!("leaving {} alone (not a blob)", blob.path().display());
                continue;
            };
            if hex != name || !name.starts_with(&shard_name) {
                continue;
            }
            if keep.contains(&hex) {
                report.kept += 1;
                continue;
            }
            let path = blob.path();
            let len = blob.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(io(&path))?;
            debug!("removed unreferenced blob {}", path.display());
            report.removed += 1;
            report.bytes += len;
        }
        // Empty shards go too (ignore failure: not empty).
        let _ = std::fs::remove_dir(&shard_path);
    }
    info!(
        "cache gc: removed {} blobs ({} bytes), kept {}",
        report.removed, report.bytes, report.kept
    );
    Ok(report)
}

/// Remove everything in the blob cache (blobs and partial downloads), keeping only its lock file.
pub fn clean(blob_cache_dir: &Path) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    if !blob_cache_dir.is_dir() {
        return Ok(report);
    }
    let lock_path = blob_cache_dir.join(CACHE_LOCK);
    let _lock =
        lock_file(&lock_path, &blob_cache_dir.display().to_string()).map_err(io(&lock_path))?;
    fn count(path: &Path, report: &mut GcReport) {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if md.is_dir() {
                if let Ok(rd) = std::fs::read_dir(path) {
                    for e in rd.flatten() {
                        count(&e.path(), report);
                    }
                }
            } else {
                report.removed += 1;
                report.bytes += md.len();
            }
        }
    }
    for e in std::fs::read_dir(blob_cache_dir).map_err(io(blob_cache_dir))? {
        let e = e.map_err(io(blob_cache_dir))?;
        if e.file_name() == CACHE_LOCK {
            continue;
        }
        let path = e.path();
        count(&path, &mut report);
        let res = if e.file_type().is_ok_and(|t| t.is_dir()) {
            super::root::make_writable_and_remove(&path)
        } else {
            std::fs::remove_file(&path)
        };
        res.map_err(io(&path))?;
    }
    info!(
        "cache clean: removed {} files ({} bytes)",
        report.removed, report.bytes
    );
    Ok(report)
}

fn registry_lock_path(registry_file: &Path) -> PathBuf {
    let mut name = registry_file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "roots.json".into());
    name.push(".lock");
    registry_file.with_file_name(name)
}

/// Read the list as stored (unreadable or corrupt → empty, with a warning).
fn read_registry(registry_file: &Path) -> Vec<PathBuf> {
    match std::fs::read(registry_file) {
        Ok(bytes) => match serde_json::from_slice::<Vec<PathBuf>>(&bytes) {
            Ok(v) => v,
            Err(e) => {
                warn!(
                    "root registry {} is corrupt ({e}); starting a new one",
                    registry_file.display()
                );
                Vec::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn!("cannot read root registry {}: {e}", registry_file.display());
            Vec::new()
        }
    }
}

fn write_registry(registry_file: &Path, roots: &[PathBuf]) -> Result<(), GcError> {
    let err = |source| GcError::Registry {
        path: registry_file.to_path_buf(),
        source,
    };
    let bytes =
        serde_json::to_vec_pretty(roots).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    write_atomic(registry_file, &bytes).map_err(err)
}

fn with_registry<T>(
    registry_file: &Path,
    f: impl FnOnce(&mut Vec<PathBuf>) -> (bool, T),
) -> Result<T, GcError> {
    let err = |source| GcError::Registry {
        path: registry_file.to_path_buf(),
        source,
    };
    if let Some(dir) = registry_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let _lock = lock_file(&registry_lock_path(registry_file), "the root registry").map_err(err)?;
    let mut roots = read_registry(registry_file);
    let (changed, out) = f(&mut roots);
    if changed {
        write_registry(registry_file, &roots)?;
    }
    Ok(out)
}

/// Add `root` (must exist; stored canonical) to the registry if it is not there yet.
pub fn register_root(registry_file: &Path, root: &Path) -> Result<(), GcError> {
    let root = std::fs::canonicalize(root).map_err(|source| GcError::NoRoot {
        root: root.to_path_buf(),
        source,
    })?;
    with_registry(registry_file, |roots| {
        if roots.contains(&root) {
            (false, ())
        } else {
            roots.push(root);
            (true, ())
        }
    })
}

/// Remove `root` from the registry; says whether it was there.
pub fn unregister_root(registry_file: &Path, root: &Path) -> Result<bool, GcError> {
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    with_registry(registry_file, |roots| {
        let before = roots.len();
        roots.retain(|r| r != &canon && r != root);
        let changed = roots.len() != before;
        (changed, changed)
    })
}

/// The registered roots that still exist (the others are dropped from the registry).
pub fn registered_roots(registry_file: &Path) -> Vec<PathBuf> {
    let stored = read_registry(registry_file);
    let existing: Vec<PathBuf> = stored.iter().filter(|r| r.is_dir()).cloned().collect();
    if existing.len() != stored.len() {
        let res = with_registry(registry_file, |roots| {
            let before = roots.len();
            roots.retain(|r| r.is_dir());
            (roots.len() != before, ())
        });
        if let Err(e) = res {
            warn!("{e}");
        }
    }
    existing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::receipt::Receipt;
    use crate::install::verify::tests::receipt;

    fn hexd(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn put_blob(cache: &Path, hex: &str, len: usize) {
        let d = cache.join("sha256").join(&hex[..2]);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(hex), vec![0u8; len]).unwrap();
    }

    fn install(root: &InstallRoot, name: &str, digest: &str) {
        let prefix = root.dir.join(format!("{name}-1.0-{name}hash"));
        std::fs::create_dir_all(&prefix).unwrap();
        let mut r: Receipt = receipt(name, &format!("{name}hash"), &prefix, &[]);
        r.tarball_digest = format!("sha256:{digest}");
        r.write(&prefix, &[]).unwrap();
    }

    #[test]
    fn collect_keeps_referenced_blobs() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("blobs");
        let (a, b, c) = (hexd('a'), hexd('b'), hexd('c'));
        put_blob(&cache, &a, 10);
        put_blob(&cache, &b, 20);
        put_blob(&cache, &c, 30);
        std::fs::write(cache.join("sha256/aa/not-a-blob"), b"x").unwrap();
        std::fs::create_dir_all(cache.join("tmp")).unwrap();
        std::fs::write(cache.join("tmp").join(format!("{c}.part")), b"xx").unwrap();
        let roots: Vec<PathBuf> = ["r1", "r2"].iter().map(|r| t.path().join(r)).collect();
        {
            let r1 = InstallRoot::open(&roots[0], None, true).unwrap();
            install(&r1, "x", &a);
            let r2 = InstallRoot::open(&roots[1], None, true).unwrap();
            install(&r2, "y", &b.to_uppercase());
        }
        let mut all = roots.clone();
        all.push(t.path().join("gone"));
        let rep = collect(&cache, &all).unwrap();
        assert_eq!(
            rep,
            GcReport {
                removed: 1,
                bytes: 30,
                kept: 2
            }
        );
        assert!(cache.join("sha256/aa").join(&a).exists());
        assert!(cache.join("sha256/bb").join(&b).exists());
        assert!(!cache.join("sha256/cc").exists());
        assert!(cache.join("sha256/aa/not-a-blob").exists());
        // no roots: nothing referenced
        let rep = collect(&cache, &[]).unwrap();
        assert_eq!(
            rep,
            GcReport {
                removed: 2,
                bytes: 30,
                kept: 0
            }
        );
        // missing cache directory
        assert_eq!(
            collect(&t.path().join("none"), &[]).unwrap(),
            GcReport::default()
        );
    }

    #[test]
    fn clean_removes_everything_but_the_lock() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("blobs");
        put_blob(&cache, &hexd('a'), 10);
        put_blob(&cache, &hexd('b'), 5);
        std::fs::create_dir_all(cache.join("tmp")).unwrap();
        std::fs::write(cache.join("tmp/x.part"), b"123").unwrap();
        let rep = clean(&cache).unwrap();
        assert_eq!(
            rep,
            GcReport {
                removed: 3,
                bytes: 18,
                kept: 0
            }
        );
        let left: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![CACHE_LOCK]);
    }

    #[test]
    fn registry_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let reg = t.path().join("state/roots.json");
        let r1 = t.path().join("r1");
        let r2 = t.path().join("r2");
        std::fs::create_dir_all(&r1).unwrap();
        std::fs::create_dir_all(&r2).unwrap();
        assert!(registered_roots(&reg).is_empty());
        register_root(&reg, &r1).unwrap();
        register_root(&reg, &r1).unwrap();
        register_root(&reg, &t.path().join("r2/../r2")).unwrap();
        let c1 = std::fs::canonicalize(&r1).unwrap();
        let c2 = std::fs::canonicalize(&r2).unwrap();
        assert_eq!(registered_roots(&reg), vec![c1.clone(), c2.clone()]);
        assert!(register_root(&reg, &t.path().join("missing")).is_err());
        std::fs::remove_dir(&r2).unwrap();
        assert_eq!(registered_roots(&reg), vec![c1.clone()]);
        let stored: Vec<PathBuf> = serde_json::from_slice(&std::fs::read(&reg).unwrap()).unwrap();
        assert_eq!(stored, vec![c1.clone()]);
        assert!(unregister_root(&reg, &r1).unwrap());
        assert!(!unregister_root(&reg, &r1).unwrap());
        assert!(registered_roots(&reg).is_empty());
        std::fs::write(&reg, b"{garbage").unwrap();
        assert!(registered_roots(&reg).is_empty());
        register_root(&reg, &r1).unwrap();
        assert_eq!(registered_roots(&reg), vec![c1]);
    }
}
