//! An install root: `<root>/.sf-cache/` holds its lock, its settings (the projection, fixed at the
//! first install so prefixes never move) and the staging area on the same filesystem.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

use super::projection::{Projection, ProjectionError};
use super::receipt::{Receipt, RECEIPT_FILE};
use crate::spec::Spec;

pub const STATE_DIR: &str = ".sf-cache";

#[derive(Debug, Error)]
pub enum RootError {
    #[error("install root {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("install root {path} was set up with projection `{existing}`, not `{requested}`; use the same projection or another root")]
    ProjectionMismatch {
        path: PathBuf,
        existing: String,
        requested: String,
    },
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("install root {path} has unreadable settings ({reason}); fix or remove {path}/.sf-cache/root.json")]
    Settings { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RootSettings {
    projection: String,
}

/// An opened, locked install root.
#[derive(Debug)]
pub struct InstallRoot {
    pub dir: PathBuf,
    pub projection: Projection,
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootError + '_ {
    move |source| RootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl InstallRoot {
    /// Open (creating when asked) and lock a root. A second process waits for the lock and says
    /// who holds it.
    pub fn open(
        dir: &Path,
        requested: Option<&Projection>,
        create: bool,
    ) -> Result<InstallRoot, RootError> {
        let dir = absolute_root(dir).map_err(io(dir))?;
        if create {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        } else if !dir.is_dir() {
            return Err(io(&dir)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such install root",
            )));
        }
        let state = dir.join(STATE_DIR);
        std::fs::create_dir_all(state.join("staging")).map_err(io(&state))?;
        let lock_path = state.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
            let owner = std::fs::read_to_string(state.join("lock.owner")).unwrap_or_default();
            info!(
                "waiting for the lock on {} (held by {})",
                dir.display(),
                if owner.trim().is_empty() {
                    "another sf-cache"
                } else {
                    owner.trim()
                }
            );
            lock.lock().map_err(io(&lock_path))?;
        }
        let _ = std::fs::write(
            state.join("lock.owner"),
            format!("sf-cache pid {}\n", std::process::id()),
        );
        let settings_path = state.join("root.json");
        let projection = match std::fs::read(&settings_path) {
            Ok(bytes) => {
                let s: RootSettings =
                    serde_json::from_slice(&bytes).map_err(|e| RootError::Settings {
                        path: dir.clone(),
                        reason: e.to_string(),
                    })?;
                let existing = Projection::parse(&s.projection)?;
                if let Some(req) = requested {
                    if req != &existing {
                        return Err(RootError::ProjectionMismatch {
                            path: dir.clone(),
                            existing: existing.as_str().to_string(),
                            requested: req.as_str().to_string(),
                        });
                    }
                }
                existing
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let p = requested.cloned().unwrap_or_default();
                let bytes = serde_json::to_vec_pretty(&RootSettings {
                    projection: p.as_str().to_string(),
                })
                .unwrap_or_default();
                crate::fs::write_atomic(&settings_path, &bytes).map_err(io(&settings_path))?;
                p
            }
            Err(e) => return Err(io(&settings_path)(e)),
        };
        let root = InstallRoot {
            dir,
            projection,
            _lock: lock,
        };
        root.clean_staging();
        Ok(root)
    }

    /// The prefix of `spec` in this root.
    pub fn prefix_of(&self, spec: &Spec) -> PathBuf {
        self.dir.join(self.projection.render(spec))
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR).join("staging")
    }

    /// Leftovers of interrupted installs: never visible as packages, removed on the next run.
    fn clean_staging(&self) {
        let staging = self.staging_dir();
        if let Ok(rd) = std::fs::read_dir(&staging) {
            for e in rd.flatten() {
                let p = e.path();
                warn!(
                    "removing the leftover of an interrupted install: {}",
                    p.display()
                );
                let _ = make_writable_and_remove(&p);
            }
        }
    }

    /// Every package installed here, by reading the receipts at projection depth.
    pub fn installed(&self) -> Vec<(PathBuf, Receipt)> {
        installed_in(&self.dir, &self.projection)
    }
}

/// The packages installed in the root `dir` laid out with `projection`, read from their receipts
/// without taking the root's lock (for readers that may run while the lock is held, e.g. module
/// generation right after an install). Sorted by name, then version.
pub fn installed_in(dir: &Path, projection: &Projection) -> Vec<(PathBuf, Receipt)> {
    let depth = projection.as_str().split('/').count();
    let mut dirs = vec![dir.to_path_buf()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for d in dirs {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    let name = e.file_name();
                    if name.to_string_lossy().starts_with('.') {
                        continue;
                    }
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        next.push(e.path());
                    }
                }
            }
        }
        dirs = next;
    }
    let mut out: Vec<(PathBuf, Receipt)> = dirs
        .into_iter()
        .filter(|d| d.join(RECEIPT_FILE).is_file())
        .filter_map(|d| match Receipt::read(&d) {
            Ok(r) => Some((d, r)),
            Err(e) => {
                warn!("{e}");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.1.name.cmp(&b.1.name).then(a.1.version.cmp(&b.1.version)));
    out
}

/// The absolute, lexically normalised form of a root (symlinks are kept: the path the user
/// names is the path compiled into relocated binaries).
pub fn absolute_root(dir: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(dir)?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// The projection a root was set up with, without creating or locking anything.
pub fn existing_projection(dir: &Path) -> Result<Option<Projection>, RootError> {
    let path = dir.join(STATE_DIR).join("root.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let s: RootSettings =
                serde_json::from_slice(&bytes).map_err(|e| RootError::Settings {
                    path: dir.to_path_buf(),
                    reason: e.to_string(),
                })?;
            Ok(Some(Projection::parse(&s.projection)?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Check (reading only) that `root`, or its nearest existing ancestor, is a directory; returns
/// that directory.
pub fn check_is_dir(root: &Path) -> Result<&Path, String> {
    let mut dir = root;
    while std::fs::symlink_metadata(dir).is_err() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p,
            _ => break,
        }
    }
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "install root {}: {} is not a directory; choose a root in a directory you can write (--root DIR)",
            root.display(),
            dir.display()
        ));
    }
    Ok(dir)
}

/// Check, before anything is downloaded, that `root` can be written: it is a directory (or can
/// be made in its nearest existing ancestor) where a file can be created. Leaves nothing behind.
pub fn check_writable(root: &Path) -> Result<(), String> {
    let dir = check_is_dir(root)?;
    let fix = "choose a root in a directory you can write (--root DIR)";
    tempfile::Builder::new()
        .prefix(".sf-cache-probe-")
        .tempdir_in(dir)
        .map(drop)
        .map_err(|e| {
            format!(
                "install root {} cannot be {} ({}: {e}); {fix}",
                root.display(),
                if dir == root { "written" } else { "created" },
                dir.display()
            )
        })
}

/// Remove a tree even where the archive left directories without write permission.
pub fn make_writable_and_remove(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            fn walk(p: &Path) {
                if let Ok(md) = std::fs::symlink_metadata(p) {
                    if md.is_dir() {
                        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                        if let Ok(rd) = std::fs::read_dir(p) {
                            for e in rd.flatten() {
                                walk(&e.path());
                            }
                        }
                    }
                }
            }
            walk(path);
            std::fs::remove_dir_all(path)
        }
    }
}

/// Why [`resolve_installed`] could not resolve a hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// No installed package has this hash (or hash prefix).
    NotInstalled { hash: String },
    /// The prefix matches several installed packages (named `name@version/hash7`).
    Ambiguous { hash: String, candidates: String },
}

/// Resolve full hashes or unique hash prefixes against installed packages: each package once,
/// in the order given. The one place a hash prefix becomes an installed package.
pub fn resolve_installed<'a>(
    installed: &'a [(PathBuf, Receipt)],
    hashes: &[String],
) -> Result<Vec<&'a (PathBuf, Receipt)>, Unresolved> {
    let mut out: Vec<&(PathBuf, Receipt)> = Vec::new();
    for h in hashes {
        let found = match installed.iter().find(|(_, r)| &r.hash == h) {
            Some(e) => e,
            None => {
                let m: Vec<_> = installed
                    .iter()
                    .filter(|(_, r)| !h.is_empty() && r.hash.starts_with(h.as_str()))
                    .collect();
                match m.len() {
                    1 => m[0],
                    0 => return Err(Unresolved::NotInstalled { hash: h.clone() }),
                    _ => {
                        return Err(Unresolved::Ambiguous {
                            hash: h.clone(),
                            candidates: m
                                .iter()
                                .map(|(_, r)| super::uninstall::display_name(r))
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                }
            }
        };
        if !out.iter().any(|(_, r)| r.hash == found.1.hash) {
            out.push(found);
        }
    }
    Ok(out)
}
