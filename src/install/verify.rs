//! Verify installed prefixes against their receipts: every path sf-cache wrote (kind, permission
//! bits, size + sha256 of files, symlink targets) and anything that appeared since.
//!
//! The tree is walked without following symlinks, so nothing outside the prefix is ever read.
//! File contents are hashed in a streaming fashion (fixed buffer), on several threads when the
//! prefix holds many files.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use thiserror::Error;
use tracing::{debug, warn};

use super::receipt::{EntryKind, Receipt, ReceiptError, ReceiptFile, FILES_FILE, RECEIPT_FILE};
use super::root::InstallRoot;

/// Below this many files to hash, one thread does it all.
const PARALLEL_THRESHOLD: usize = 32;

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("{}: not an sf-cache install (no {RECEIPT_FILE}); only prefixes installed by sf-cache can be verified", prefix.display())]
    NoReceipt { prefix: PathBuf },
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    #[error("cannot verify {}: {source}; check that it is readable", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What differs between a prefix and its receipt. Paths are relative to the prefix, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Files whose size or sha256 changed, or whose kind changed (file ↔ dir ↔ symlink), or that
    /// could not be read.
    pub modified: Vec<String>,
    /// Listed in the receipt, gone from the tree.
    pub missing: Vec<String>,
    /// In the tree, not in the receipt (an extra directory is listed once, without its contents).
    pub extra: Vec<String>,
    /// Permission bits differ (files and directories).
    pub mode_changed: Vec<String>,
    /// Symlink target differs.
    pub link_changed: Vec<String>,
}

impl VerifyReport {
    /// Nothing differs.
    pub fn is_clean(&self) -> bool {
        self.modified.is_empty()
            && self.missing.is_empty()
            && self.extra.is_empty()
            && self.mode_changed.is_empty()
            && self.link_changed.is_empty()
    }

    /// Number of differing paths (all categories).
    pub fn problem_count(&self) -> usize {
        self.modified.len()
            + self.missing.len()
            + self.extra.len()
            + self.mode_changed.len()
            + self.link_changed.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    File { mode: u32, size: u64 },
    Dir { mode: u32 },
    Symlink,
}

fn rel_string(rel: &Path) -> String {
    match std::str::from_utf8(rel.as_os_str().as_bytes()) {
        Ok(s) => s.to_string(),
        Err(_) => rel.to_string_lossy().into_owned(),
    }
}

/// Walk `prefix` without following symlinks: relative path → what is there.
fn walk(prefix: &Path) -> Result<BTreeMap<String, Found>, VerifyError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = prefix.join(&rel_dir);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            // An unreadable subdirectory: its contents show up as missing.
            Err(e) if !rel_dir.as_os_str().is_empty() => {
                warn!("cannot read {}: {e}", dir.display());
                continue;
            }
            Err(source) => return Err(VerifyError::Io { path: dir, source }),
        };
        for entry in rd {
            let entry = entry.map_err(|source| VerifyError::Io {
                path: dir.clone(),
                source,
            })?;
            let rel = rel_dir.join(entry.file_name());
            let path = entry.path();
            let md = std::fs::symlink_metadata(&path)
                .map_err(|source| VerifyError::Io { path, source })?;
            let mode = md.permissions().mode() & 0o7777;
            let found = if md.file_type().is_symlink() {
                Found::Symlink
            } else if md.is_dir() {
                stack.push(rel.clone());
                Found::Dir { mode }
            } else {
                // Regular files; anything else (fifo, socket, device) counts as a file whose
                // content cannot match.
                Found::File {
                    mode,
                    size: if md.is_file() { md.len() } else { u64::MAX },
                }
            };
            out.insert(rel_string(&rel), found);
        }
    }
    Ok(out)
}

/// sha256 of a file, streamed.
pub use crate::fs::sha256_file;

/// Hash `jobs` (index, path, expected) and return the indices whose content differs.
fn hash_mismatches(jobs: &[(usize, PathBuf, String)]) -> Vec<usize> {
    let check = |(i, path, expected): &(usize, PathBuf, String)| -> Option<usize> {
        match sha256_file(path) {
            Ok(actual) if actual.eq_ignore_ascii_case(expected) => None,
            Ok(_) => Some(*i),
            Err(e) => {
                warn!(
                    "cannot read {}: {e}; reporting it as modified",
                    path.display()
                );
                Some(*i)
            }
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if jobs.len() < PARALLEL_THRESHOLD || threads < 2 {
        return jobs.iter().filter_map(check).collect();
    }
    let next = AtomicUsize::new(0);
    let bad = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(k) else { break };
                    if let Some(i) = check(job) {
                        local.push(i);
                    }
                }
                if let Ok(mut b) = bad.lock() {
                    b.extend(local);
                }
            });
        }
    });
    bad.into_inner().unwrap_or_default()
}

/// Compare the tree at `prefix` with the file list of its receipt.
pub fn verify_prefix(prefix: &Path) -> Result<VerifyReport, VerifyError> {
    if !prefix.join(RECEIPT_FILE).is_file() || !prefix.join(FILES_FILE).is_file() {
        return Err(VerifyError::NoReceipt {
            prefix: prefix.to_path_buf(),
        });
    }
    let listed: Vec<ReceiptFile> = Receipt::read_files(prefix)?;
    let mut found = walk(prefix)?;
    found.remove(RECEIPT_FILE);
    found.remove(FILES_FILE);

    let mut report = VerifyReport::default();
    let mut hash_jobs: Vec<(usize, PathBuf, String)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::with_capacity(listed.len());
    for (i, rf) in listed.iter().enumerate() {
        seen.insert(rf.path.as_str());
        let Some(got) = found.get(rf.path.as_str()) else {
            report.missing.push(rf.path.clone());
            continue;
        };
        let want_mode = rf.mode & 0o7777;
        match (rf.kind, *got) {
            (EntryKind::File, Found::File { mode, size }) => {
                if mode != want_mode {
                    report.mode_changed.push(rf.path.clone());
                }
                if rf.size.is_some_and(|s| s != size) {
                    report.modified.push(rf.path.clone());
                } else if let Some(sha) = &rf.sha256 {
                    hash_jobs.push((i, prefix.join(&rf.path), sha.clone()));
                }
            }
            (EntryKind::Dir, Found::Dir { mode }) => {
                if mode != want_mode {
                    report.mode_changed.push(rf.path.clone());
                }
            }
            (EntryKind::Symlink, Found::Symlink) => {
                let path = prefix.join(&rf.path);
                let target =
                    std::fs::read_link(&path).map_err(|source| VerifyError::Io { path, source })?;
                let want = rf.link_target.as_deref().unwrap_or("");
                if target.as_os_str().as_bytes() != want.as_bytes() {
                    report.link_changed.push(rf.path.clone());
                }
            }
            _ => report.modified.push(rf.path.clone()),
        }
    }
    debug!("{}: hashing {} files", prefix.display(), hash_jobs.len());
    for i in hash_mismatches(&hash_jobs) {
        report.modified.push(listed[i].path.clone());
    }

    // Extra paths; below an extra directory only the directory itself is reported.
    let mut extra_dirs: Vec<String> = Vec::new();
    for (path, got) in &found {
        if seen.contains(path.as_str()) {
            continue;
        }
        // BTreeMap order puts "a" before "a/…" ("/" sorts before most bytes, but "a-b" may sit
        // between "a" and "a/x"), so check every recorded extra directory.
        if extra_dirs.iter().any(|d| {
            path.len() > d.len() && path.starts_with(d.as_str()) && path.as_bytes()[d.len()] == b'/'
        }) {
            continue;
        }
        if matches!(got, Found::Dir { .. }) {
            extra_dirs.push(path.clone());
        }
        report.extra.push(path.clone());
    }

    for v in [
        &mut report.modified,
        &mut report.missing,
        &mut report.extra,
        &mut report.mode_changed,
        &mut report.link_changed,
    ] {
        v.sort();
        v.dedup();
    }
    Ok(report)
}

/// Verify every package of `root` (those `filter` accepts), sorted by name and version.
pub fn verify_root(
    root: &InstallRoot,
    filter: Option<&dyn Fn(&Receipt) -> bool>,
) -> Result<Vec<(Receipt, VerifyReport)>, VerifyError> {
    let mut out = Vec::new();
    for (prefix, receipt) in root.installed() {
        if filter.is_some_and(|f| !f(&receipt)) {
            continue;
        }
        let report = verify_prefix(&prefix)?;
        out.push((receipt, report));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::install::receipt::RECEIPT_FORMAT;
    use std::os::unix::fs::symlink;

    pub(crate) fn receipt(name: &str, hash: &str, prefix: &Path, deps: &[&str]) -> Receipt {
        Receipt {
            format: RECEIPT_FORMAT,
            name: name.into(),
            version: "1.0".into(),
            hash: hash.into(),
            prefix: prefix.display().to_string(),
            mirror: "file:///m".into(),
            layout: "v3".into(),
            metadata_path: "m".into(),
            metadata_digest: "d".into(),
            tarball_digest: format!("sha256:{}", "0".repeat(64)),
            signature_status: "good".into(),
            signature_fingerprint: None,
            dependencies: deps.iter().map(|s| s.to_string()).collect(),
            explicit: true,
            installed_at_unix: 1,
            spec: serde_json::json!({"name": name}),
        }
    }

    /// Record every path under `prefix` (except the receipt files) like the installer does.
    pub(crate) fn record(prefix: &Path) -> Vec<ReceiptFile> {
        let mut out = Vec::new();
        for (path, found) in walk(prefix).unwrap() {
            if path == RECEIPT_FILE || path == FILES_FILE {
                continue;
            }
            let full = prefix.join(&path);
            out.push(match found {
                Found::File { mode, size } => ReceiptFile {
                    path,
                    kind: EntryKind::File,
                    mode,
                    size: Some(size),
                    sha256: Some(sha256_file(&full).unwrap()),
                    link_target: None,
                },
                Found::Dir { mode } => ReceiptFile {
                    path,
                    kind: EntryKind::Dir,
                    mode,
                    size: None,
                    sha256: None,
                    link_target: None,
                },
                Found::Symlink => ReceiptFile {
                    path,
                    kind: EntryKind::Symlink,
                    mode: 0o777,
                    size: None,
                    sha256: None,
                    link_target: Some(
                        std::fs::read_link(&full)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    ),
                },
            });
        }
        out
    }

    /// A small fake package: bin/tool, lib/libx.so (+ symlink), share/doc/README, .spack/.
    pub(crate) fn fake_prefix(prefix: &Path, name: &str, hash: &str, deps: &[&str]) -> Receipt {
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        std::fs::create_dir_all(prefix.join("lib")).unwrap();
        std::fs::create_dir_all(prefix.join("share/doc").join(name)).unwrap();
        std::fs::create_dir_all(prefix.join(".spack")).unwrap();
        std::fs::write(
            prefix.join("bin").join(name),
            format!("#!/bin/sh\necho {name}\n"),
        )
        .unwrap();
        std::fs::set_permissions(
            prefix.join("bin").join(name),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(prefix.join(format!("lib/lib{name}.so.1")), b"\x7fELF fake").unwrap();
        symlink(
            format!("lib{name}.so.1"),
            prefix.join(format!("lib/lib{name}.so")),
        )
        .unwrap();
        std::fs::write(prefix.join("share/doc").join(name).join("README"), b"hello").unwrap();
        std::fs::write(
            prefix.join(".spack/binary_distribution"),
            b"relocate_textfiles: []\n",
        )
        .unwrap();
        let r = receipt(name, hash, prefix, deps);
        let files = record(prefix);
        r.write(prefix, &files).unwrap();
        r
    }

    #[test]
    fn clean_prefix_verifies() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pkg");
        fake_prefix(&p, "greet", "aaaa", &[]);
        let r = verify_prefix(&p).unwrap();
        assert!(r.is_clean(), "{r:?}");
    }

    #[test]
    fn detects_every_kind_of_change() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pkg");
        fake_prefix(&p, "greet", "aaaa", &[]);
        // same size, different content
        std::fs::write(p.join("share/doc/greet/README"), b"HELLO").unwrap();
        // different size
        std::fs::write(p.join("lib/libgreet.so.1"), b"x").unwrap();
        std::fs::remove_file(p.join(".spack/binary_distribution")).unwrap();
        std::fs::set_permissions(p.join("bin/greet"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::remove_file(p.join("lib/libgreet.so")).unwrap();
        symlink("/etc/passwd", p.join("lib/libgreet.so")).unwrap();
        std::fs::write(p.join("bin/new"), b"n").unwrap();
        std::fs::create_dir_all(p.join("extra/deep/er")).unwrap();
        std::fs::write(p.join("extra/deep/er/f"), b"n").unwrap();
        std::fs::create_dir(p.join("extra-b")).unwrap();
        let r = verify_prefix(&p).unwrap();
        assert_eq!(
            r.modified,
            vec!["lib/libgreet.so.1", "share/doc/greet/README"]
        );
        assert_eq!(r.missing, vec![".spack/binary_distribution"]);
        assert_eq!(r.extra, vec!["bin/new", "extra", "extra-b"]);
        assert_eq!(r.mode_changed, vec!["bin/greet"]);
        assert_eq!(r.link_changed, vec!["lib/libgreet.so"]);
        assert_eq!(r.problem_count(), 8);
    }

    #[test]
    fn kind_change_is_modified() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pkg");
        fake_prefix(&p, "greet", "aaaa", &[]);
        std::fs::remove_file(p.join("bin/greet")).unwrap();
        std::fs::create_dir(p.join("bin/greet")).unwrap();
        std::fs::remove_dir_all(p.join("share/doc/greet")).unwrap();
        symlink("/tmp", p.join("share/doc/greet")).unwrap();
        let r = verify_prefix(&p).unwrap();
        assert_eq!(r.modified, vec!["bin/greet", "share/doc/greet"]);
        // contents of the replaced directory are missing: the symlink is not followed
        assert_eq!(r.missing, vec!["share/doc/greet/README"]);
    }

    #[test]
    fn many_files_hash_in_parallel() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pkg");
        fake_prefix(&p, "big", "bbbb", &[]);
        std::fs::create_dir(p.join("data")).unwrap();
        for i in 0..200 {
            std::fs::write(p.join(format!("data/f{i}")), format!("content {i}")).unwrap();
        }
        let r = receipt("big", "bbbb", &p, &[]);
        r.write(&p, &record(&p)).unwrap();
        assert!(verify_prefix(&p).unwrap().is_clean());
        std::fs::write(p.join("data/f17"), b"content 71").unwrap();
        std::fs::write(p.join("data/f170"), b"content 071").unwrap();
        let rep = verify_prefix(&p).unwrap();
        assert_eq!(rep.modified, vec!["data/f17", "data/f170"]);
    }

    #[test]
    fn not_an_install() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            verify_prefix(t.path()),
            Err(VerifyError::NoReceipt { .. })
        ));
        let p = t.path().join("pkg");
        fake_prefix(&p, "greet", "aaaa", &[]);
        std::fs::write(p.join(FILES_FILE), b"{not json").unwrap();
        let e = verify_prefix(&p).unwrap_err();
        assert!(e.to_string().contains("reinstall"), "{e}");
    }

    #[test]
    fn verify_whole_root_with_filter() {
        let t = tempfile::tempdir().unwrap();
        let root = InstallRoot::open(&t.path().join("root"), None, true).unwrap();
        fake_prefix(&root.dir.join("a-1.0-aaaa"), "a", "aaaa", &[]);
        fake_prefix(&root.dir.join("b-1.0-bbbb"), "b", "bbbb", &["aaaa"]);
        std::fs::write(root.dir.join("b-1.0-bbbb/bin/b"), b"changed").unwrap();
        let all = verify_root(&root, None).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].1.is_clean());
        assert_eq!(all[1].1.modified, vec!["bin/b"]);
        let only_a = |r: &Receipt| r.name == "a";
        let some = verify_root(&root, Some(&only_a)).unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].0.name, "a");
    }
}
