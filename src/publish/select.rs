//! What a publish packs of a prefix: the files that were installed, and nothing that appeared or
//! changed since (a cluster's secrets, runtime state, an admin's config), nothing private.
//!
//! - Tracked files: for an sf-cache install, the paths its receipt lists, unchanged (size and
//!   sha256, as `sf-cache verify` checks them); for a Spack install, the paths of
//!   `.spack/install_manifest.json` (and, when the prefix is where the manifest was written, the
//!   same size and sha1). Spack's own metadata directory `.spack/` always travels. A prefix with
//!   neither record is packed whole (a warning says so).
//! - Untracked or changed paths are left out; with `include_untracked` they are packed, except
//!   those that look like secrets (a PEM private key, an OpenPGP secret key, `munge.key`).
//! - A file or directory that is not world-readable is never packed unless `include_private`
//!   names it: a tarball stores 0644/0755 modes, so everyone who reads the cache could read it.
//! - Sockets, fifos and device nodes are never packed.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha1::Sha1;

use super::PublishError;
use crate::install::receipt::{FILES_FILE, RECEIPT_FILE};
use crate::install::verify::verify_prefix;

/// Spack's record of what it installed, inside the prefix.
pub const SPACK_MANIFEST: &str = ".spack/install_manifest.json";

/// How much of a file is read to tell whether it holds a private key.
const SECRET_SCAN: usize = 1 << 20;

/// What a prefix's files are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tracking {
    /// sf-cache's receipt (`.spack/sf-cache-files.json`).
    Receipt,
    /// Spack's `.spack/install_manifest.json`.
    SpackManifest,
    /// Neither: every file is taken as installed.
    None,
}

/// Why a path is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Not among the installed files (created after the install).
    Untracked,
    /// Installed, but its content changed since.
    Changed,
    /// Not world-readable on disk.
    Private,
    /// Looks like a secret (private key, `munge.key`).
    Secret,
    /// A socket, fifo or device node.
    Special,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Untracked => "added after the install (--include-untracked packs it)",
            Reason::Changed => "changed since the install (--include-untracked packs it)",
            Reason::Private => "not world-readable (--include-private PATH packs it)",
            Reason::Secret => "looks like a secret key (--include-private PATH packs it)",
            Reason::Special => "a socket, fifo or device node (never packed)",
        }
    }
}

/// One path left out (a directory left out stands for everything below it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    /// Relative to the prefix.
    pub path: String,
    pub reason: Reason,
    pub dir: bool,
}

/// What to pack of one prefix.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    pub tracking: Tracking,
    /// Files and links packed, relative to the prefix, sorted (directories are implied).
    pub packed: Vec<String>,
    pub left_out: Vec<LeftOut>,
    /// Untracked or changed paths packed because of `include_untracked`.
    pub untracked_packed: Vec<String>,
    /// Private or secret-looking paths packed because `include_private` named them.
    pub private_packed: Vec<String>,
}

impl Selection {
    /// The paths the packer leaves out (a directory with everything below it).
    pub fn excluded(&self) -> Vec<String> {
        self.left_out.iter().map(|l| l.path.clone()).collect()
    }
}

/// Options of [`select`].
#[derive(Debug, Clone, Default)]
pub struct SelectOptions {
    pub include_untracked: bool,
    /// Absolute paths (lexically normalised) named by `--include-private`.
    pub include_private: Vec<PathBuf>,
}

/// The installed paths of a prefix and those that changed since.
struct Tracked {
    kind: Tracking,
    /// Relative paths installed (files, links, directories).
    paths: HashSet<String>,
    /// Relative paths whose content changed since.
    changed: HashSet<String>,
}

fn rel_str(rel: &Path) -> String {
    String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned()
}

fn read_tracked(prefix: &Path) -> Result<Tracked, PublishError> {
    let bad = |reason: String| PublishError::NotAPrefix {
        path: prefix.to_path_buf(),
        reason,
    };
    if prefix.join(RECEIPT_FILE).is_file() {
        let files =
            crate::install::receipt::Receipt::read_files(prefix).map_err(|e| bad(e.to_string()))?;
        let report = verify_prefix(prefix).map_err(|e| bad(e.to_string()))?;
        return Ok(Tracked {
            kind: Tracking::Receipt,
            paths: files.into_iter().map(|f| f.path).collect(),
            changed: report.modified.into_iter().collect(),
        });
    }
    let manifest = prefix.join(SPACK_MANIFEST);
    let text = match fs::read(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Tracked {
                kind: Tracking::None,
                paths: HashSet::new(),
                changed: HashSet::new(),
            })
        }
        Err(e) => return Err(bad(format!("cannot read {SPACK_MANIFEST}: {e}"))),
    };
    let entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| {
            bad(format!(
                "{SPACK_MANIFEST} is not Spack's install manifest: {e}"
            ))
        })?;
    // The prefix the manifest was written for: its shortest key, of which every key is a path.
    let Some(base) = entries.keys().min_by_key(|k| k.len()).cloned() else {
        return Err(bad(format!("{SPACK_MANIFEST} lists no path")));
    };
    let same_place = Path::new(&base) == prefix;
    let mut paths = HashSet::new();
    let mut changed = HashSet::new();
    for (abs, data) in &entries {
        let Some(rel) = abs
            .strip_prefix(base.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        paths.insert(rel.to_string());
        // Hashes only hold where Spack wrote them: a binary install's manifest comes from the
        // build machine, before relocation.
        if same_place {
            if let (Some(hash), Some(size)) = (
                data.get("hash").and_then(|h| h.as_str()),
                data.get("size").and_then(|s| s.as_u64()),
            ) {
                if !spack_file_matches(&prefix.join(rel), hash, size) {
                    changed.insert(rel.to_string());
                }
            }
        }
    }
    Ok(Tracked {
        kind: Tracking::SpackManifest,
        paths,
        changed,
    })
}

/// Spack's manifest hash: base32 of the sha1 of the content.
fn spack_file_matches(path: &Path, hash: &str, size: u64) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() != size {
        return false;
    }
    crate::fs::digest_file::<Sha1>(path)
        .is_ok_and(|(digest, _)| data_encoding::BASE32.encode(&digest) == hash)
}

/// Whether the start of a file holds a private key: a PEM `PRIVATE KEY` block (any algorithm,
/// OpenSSH's too), an armored or binary OpenPGP secret key.
pub fn looks_secret(name: &str, head: &[u8]) -> bool {
    if name == "munge.key" {
        return true;
    }
    if memchr::memmem::find(head, b"PRIVATE KEY-----").is_some()
        || memchr::memmem::find(head, b"PGP PRIVATE KEY BLOCK-----").is_some()
    {
        return true;
    }
    // A binary OpenPGP packet stream starting with a secret-key packet (tag 5): old format
    // 0b1001_01xx, new format 0xC5.
    matches!(head.first(), Some(0x94..=0x97 | 0xC5)) && head.len() > 8
}

fn file_head(path: &Path) -> Vec<u8> {
    let mut head = Vec::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(SECRET_SCAN as u64).read_to_end(&mut head);
    }
    head
}

/// Decide what to pack of `prefix` (absolute).
pub fn select(prefix: &Path, opts: &SelectOptions) -> Result<Selection, PublishError> {
    let tracked = read_tracked(prefix)?;
    let named = |abs: &Path| opts.include_private.iter().any(|p| p == abs);
    let is_tracked = |rel: &str| {
        tracked.kind == Tracking::None
            || rel == ".spack"
            || rel.starts_with(".spack/")
            || tracked.paths.contains(rel)
    };
    let mut sel = Selection {
        tracking: tracked.kind,
        packed: Vec::new(),
        left_out: Vec::new(),
        untracked_packed: Vec::new(),
        private_packed: Vec::new(),
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = prefix.join(&rel_dir);
        let mut entries: Vec<(std::ffi::OsString, fs::Metadata)> = Vec::new();
        let rd = fs::read_dir(&dir).map_err(|e| PublishError::NotAPrefix {
            path: dir.clone(),
            reason: format!("cannot read the directory: {e}"),
        })?;
        for e in rd {
            let e = e.map_err(|e| PublishError::NotAPrefix {
                path: dir.clone(),
                reason: format!("cannot read the directory: {e}"),
            })?;
            let m = fs::symlink_metadata(e.path()).map_err(|err| PublishError::NotAPrefix {
                path: e.path(),
                reason: err.to_string(),
            })?;
            entries.push((e.file_name(), m));
        }
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut subdirs = Vec::new();
        for (fname, meta) in entries {
            let rel_path = rel_dir.join(&fname);
            let rel = rel_str(&rel_path);
            if rel == RECEIPT_FILE || rel == FILES_FILE {
                continue;
            }
            let abs = prefix.join(&rel_path);
            let ft = meta.file_type();
            let is_dir = ft.is_dir();
            let mut leave = |reason: Reason| {
                sel.left_out.push(LeftOut {
                    path: rel.clone(),
                    reason,
                    dir: is_dir,
                })
            };
            if ft.is_socket() || ft.is_fifo() || ft.is_block_device() || ft.is_char_device() {
                leave(Reason::Special);
                continue;
            }
            let untracked = if !is_tracked(&rel) {
                Some(Reason::Untracked)
            } else if tracked.changed.contains(&rel) {
                Some(Reason::Changed)
            } else {
                None
            };
            if let Some(reason) = untracked {
                if !opts.include_untracked {
                    leave(reason);
                    continue;
                }
            }
            // Private: not readable by others (directories: not readable and searchable).
            let mode = meta.mode();
            let private = !ft.is_symlink()
                && if is_dir {
                    mode & 0o005 != 0o005
                } else {
                    mode & 0o004 == 0
                };
            let secret = untracked.is_some()
                && ft.is_file()
                && looks_secret(&fname.to_string_lossy(), &file_head(&abs));
            if private || secret {
                if !named(&abs) {
                    leave(if private {
                        Reason::Private
                    } else {
                        Reason::Secret
                    });
                    continue;
                }
                sel.private_packed.push(rel.clone());
            }
            if untracked.is_some() {
                sel.untracked_packed.push(rel.clone());
            }
            if is_dir {
                subdirs.push(rel_path);
            } else {
                sel.packed.push(rel);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    sel.packed.sort();
    sel.left_out.sort_by(|a, b| a.path.cmp(&b.path));
    sel.untracked_packed.sort();
    sel.private_packed.sort();
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::Digest;

    fn spack_hash(bytes: &[u8]) -> String {
        data_encoding::BASE32.encode(&Sha1::digest(bytes))
    }

    /// A prefix with `bin/x`, `bin/z`, `.spack/spec.json`, and a Spack manifest written for
    /// `base` that lists bin/x and bin/z with the given content hashes.
    fn spack_prefix(dir: &Path, base: &str, z_listed_as: &[u8]) -> PathBuf {
        let p = dir.join("p");
        std::fs::create_dir_all(p.join("bin")).unwrap();
        std::fs::create_dir_all(p.join(".spack")).unwrap();
        std::fs::write(p.join("bin/x"), b"x").unwrap();
        std::fs::write(p.join("bin/z"), b"z").unwrap();
        std::fs::write(p.join(".spack/spec.json"), b"{}").unwrap();
        let file = |bytes: &[u8]| serde_json::json!({"mode": 33188, "hash": spack_hash(bytes), "size": bytes.len()});
        let dir_entry = serde_json::json!({"mode": 16877});
        let m = serde_json::json!({
            base: dir_entry,
            format!("{base}/bin"): dir_entry,
            format!("{base}/bin/x"): file(b"x"),
            format!("{base}/bin/z"): file(z_listed_as),
            format!("{base}/.spack"): dir_entry,
        });
        std::fs::write(p.join(SPACK_MANIFEST), m.to_string()).unwrap();
        p
    }

    #[test]
    fn a_spack_install_is_checked_against_its_install_manifest() {
        let d = tempfile::tempdir().unwrap();
        // A binary install: the manifest names the build machine's prefix, so only the paths
        // count (the hashes were taken before relocation).
        let p = spack_prefix(d.path(), "/build/opt/p-1.0-abc", b"other");
        std::fs::create_dir_all(p.join("etc")).unwrap();
        std::fs::write(p.join("etc/added.conf"), b"x=1").unwrap();
        std::fs::write(p.join("bin/new"), b"n").unwrap();
        let sel = select(&p, &SelectOptions::default()).unwrap();
        assert_eq!(sel.tracking, Tracking::SpackManifest);
        assert_eq!(
            sel.left_out,
            [
                LeftOut {
                    path: "bin/new".into(),
                    reason: Reason::Untracked,
                    dir: false
                },
                LeftOut {
                    path: "etc".into(),
                    reason: Reason::Untracked,
                    dir: true
                },
            ]
        );
        assert_eq!(
            sel.packed,
            [
                ".spack/install_manifest.json",
                ".spack/spec.json",
                "bin/x",
                "bin/z"
            ]
        );
        // Built here: the manifest's hashes hold, and a changed file is left out.
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("p");
        let p = spack_prefix(d.path(), base.to_str().unwrap(), b"other");
        let sel = select(&p, &SelectOptions::default()).unwrap();
        assert_eq!(
            sel.left_out,
            [LeftOut {
                path: "bin/z".into(),
                reason: Reason::Changed,
                dir: false
            }]
        );
        let sel = select(
            &p,
            &SelectOptions {
                include_untracked: true,
                include_private: vec![],
            },
        )
        .unwrap();
        assert!(sel.left_out.is_empty());
        assert_eq!(sel.untracked_packed, ["bin/z"]);
        // Without a record, everything world-readable travels.
        std::fs::remove_file(p.join(SPACK_MANIFEST)).unwrap();
        let sel = select(&p, &SelectOptions::default()).unwrap();
        assert_eq!(sel.tracking, Tracking::None);
        assert!(sel.left_out.is_empty());
        // A manifest that is not one: a clear error naming it.
        std::fs::write(p.join(SPACK_MANIFEST), b"[1,2]").unwrap();
        let e = select(&p, &SelectOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("install_manifest.json is not Spack's install manifest"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_told_by_their_content_or_name() {
        assert!(looks_secret("munge.key", b"anything"));
        assert!(looks_secret(
            "x.pem",
            b"-----BEGIN RSA PRIVATE KEY-----\nMIIE..."
        ));
        assert!(looks_secret(
            "id",
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl"
        ));
        assert!(looks_secret(
            "k.asc",
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQdGBF"
        ));
        assert!(looks_secret(
            "k.gpg",
            &[0xC5, 0x01, 0x02, 3, 4, 5, 6, 7, 8, 9]
        ));
        assert!(!looks_secret(
            "cert.pem",
            b"-----BEGIN CERTIFICATE-----\nMIIB"
        ));
        assert!(!looks_secret(
            "k.asc",
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
        ));
        assert!(!looks_secret("slurm.conf", b"ClusterName=x\n"));
        assert!(!looks_secret("empty", b""));
    }
}
