//! Views: one merged tree linking several installed packages, like Spack's symlink views.
//!
//! Every file and symlink of each package (except its `.spack/` metadata) becomes a RELATIVE
//! symlink `view/<rel>` → `<prefix>/<rel>`, so an install root and its view can move together;
//! directories are real directories. A path provided by two packages is an error (unless both are
//! symlinks with the identical target).
//!
//! A view is rebuilt as a whole and swapped in: built into `<view>.sf-cache-new-<rand>` next to
//! it, then the old view is renamed away, the new one renamed in and the old one deleted. The view
//! records its packages in `<view>/.sf-cache-view.json`, so it can be rebuilt without the packages
//! that were uninstalled since.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::receipt::Receipt;
use super::root::{make_writable_and_remove, InstallRoot, STATE_DIR};
use super::uninstall::display_name;
use crate::fs::write_atomic;

/// The record of what a view contains, at its top.
pub const VIEW_MARKER: &str = ".sf-cache-view.json";
const VIEW_FORMAT: u32 = 1;
const NEW_TAG: &str = ".sf-cache-new-";
const OLD_TAG: &str = ".sf-cache-old-";

#[derive(Debug, Error)]
pub enum ViewError {
    #[error("view {}: no package with hash `{hash}` is installed in {}; install it first or leave it out of the view", view.display(), root.display())]
    NotInstalled {
        view: PathBuf,
        root: PathBuf,
        hash: String,
    },
    #[error("view {}: hash prefix `{hash}` matches several installed packages ({candidates}); give more characters of the hash", view.display())]
    Ambiguous {
        view: PathBuf,
        hash: String,
        candidates: String,
    },
    #[error("view {}: {reason}; choose another directory for the view", view.display())]
    BadLocation { view: PathBuf, reason: String },
    #[error("view {}: exists and is not an sf-cache view (no {VIEW_MARKER}); refusing to replace it — choose an empty or new directory", view.display())]
    NotAView { view: PathBuf },
    #[error("view {}: `{path}` is provided by both {first} and {second}; leave one of them out of the view", view.display())]
    Conflict {
        view: PathBuf,
        path: String,
        first: String,
        second: String,
    },
    #[error("view {}: package {package} contains `{VIEW_MARKER}`, a name reserved for sf-cache's view record; leave it out of the view", view.display())]
    Reserved { view: PathBuf, package: String },
    #[error("view {}: unreadable {VIEW_MARKER} ({reason}); remove the view directory and build it again", view.display())]
    BadRecord { view: PathBuf, reason: String },
    #[error("view: {}: {source}; check permissions and free space", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ViewError + '_ {
    move |source| ViewError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<view>/.sf-cache-view.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRecord {
    pub format: u32,
    /// The install root, relative to the view directory (the pair may move together).
    pub root: String,
    /// DAG hashes of the packages linked into the view.
    pub hashes: Vec<String>,
}

/// What a (re)build produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewReport {
    /// Absolute path of the view.
    pub view: PathBuf,
    /// Hashes of the packages in the view.
    pub packages: Vec<String>,
    /// Symlinks created.
    pub links: usize,
    /// Directories created.
    pub dirs: usize,
    /// Paths provided identically (same symlink target) by more than one package.
    pub shared: usize,
}

/// Lexical relative path from directory `from` to `to` (both absolute and normalized).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Absolute, normalized location of the view (its parent directory is created).
fn locate(view_dir: &Path) -> Result<(PathBuf, PathBuf, OsString), ViewError> {
    let name = match view_dir.components().next_back() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => {
            return Err(ViewError::BadLocation {
                view: view_dir.to_path_buf(),
                reason: "the path must end in a directory name".into(),
            })
        }
    };
    let parent = match view_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let parent = std::fs::canonicalize(&parent).map_err(io(&parent))?;
    Ok((parent.join(&name), parent, name))
}

/// Read a view's record; `None` when `view_dir` is not an sf-cache view (or does not exist).
pub fn read_view(view_dir: &Path) -> Result<Option<ViewRecord>, ViewError> {
    let path = view_dir.join(VIEW_MARKER);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ViewError::BadRecord {
                view: view_dir.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

enum Claim {
    Dir(usize),
    /// A link to a package entry; `Some(target)` when that entry is itself a symlink.
    Link(usize, Option<PathBuf>),
}

struct Builder<'a> {
    view: &'a Path,
    final_view: &'a Path,
    build: &'a Path,
    packages: &'a [(PathBuf, Receipt)],
    claims: HashMap<PathBuf, Claim>,
    report: ViewReport,
}

impl Builder<'_> {
    fn conflict(&self, rel: &Path, first: usize, second: usize) -> ViewError {
        ViewError::Conflict {
            view: self.view.to_path_buf(),
            path: rel.display().to_string(),
            first: display_name(&self.packages[first].1),
            second: display_name(&self.packages[second].1),
        }
    }

    fn add_package(&mut self, pkg: usize) -> Result<(), ViewError> {
        let prefix = self.packages[pkg].0.clone();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel_dir) = stack.pop() {
            let dir = prefix.join(&rel_dir);
            let entries = crate::fs::sorted_entries(&dir).map_err(io(&dir))?;
            for e in entries {
                let name = e.file_name();
                if rel_dir.as_os_str().is_empty() {
                    if name == ".spack" {
                        continue;
                    }
                    if name == VIEW_MARKER {
                        return Err(ViewError::Reserved {
                            view: self.view.to_path_buf(),
                            package: display_name(&self.packages[pkg].1),
                        });
                    }
                }
                let rel = rel_dir.join(&name);
                let src = e.path();
                let ft = e.file_type().map_err(io(&src))?;
                if ft.is_dir() {
                    match self.claims.get(&rel) {
                        Some(Claim::Dir(_)) => {}
                        Some(Claim::Link(other, _)) => return Err(self.conflict(&rel, *other, pkg)),
                        None => {
                            let d = self.build.join(&rel);
                            std::fs::create_dir(&d).map_err(io(&d))?;
                            self.claims.insert(rel.clone(), Claim::Dir(pkg));
                            self.report.dirs += 1;
                        }
                    }
                    stack.push(rel);
                    continue;
                }
                let own_target = if ft.is_symlink() {
                    Some(std::fs::read_link(&src).map_err(io(&src))?)
                } else {
                    None
                };
                match self.claims.get(&rel) {
                    Some(Claim::Dir(other)) => return Err(self.conflict(&rel, *other, pkg)),
                    Some(Claim::Link(other, theirs)) => {
                        if own_target.is_some() && theirs == &own_target {
                            debug!(
                                "{} shared by two packages (same link target)",
                                rel.display()
                            );
                            self.report.shared += 1;
                            continue;
                        }
                        return Err(self.conflict(&rel, *other, pkg));
                    }
                    None => {}
                }
                let link_dir = match self.final_view.join(&rel).parent() {
                    Some(p) => p.to_path_buf(),
                    None => self.final_view.to_path_buf(),
                };
                let target = relative(&link_dir, &src);
                let at = self.build.join(&rel);
                std::os::unix::fs::symlink(&target, &at).map_err(io(&at))?;
                self.claims.insert(rel, Claim::Link(pkg, own_target));
                self.report.links += 1;
            }
        }
        Ok(())
    }
}

/// Remove `<name>.sf-cache-new-*` / `<name>.sf-cache-old-*` left by an interrupted build.
fn clean_leftovers(parent: &Path, name: &OsString) {
    let name = name.to_string_lossy();
    let new = format!("{name}{NEW_TAG}");
    let old = format!("{name}{OLD_TAG}");
    if let Ok(rd) = std::fs::read_dir(parent) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&new) || n.starts_with(&old) {
                warn!(
                    "removing the leftover of an interrupted view build: {}",
                    e.path().display()
                );
                let _ = make_writable_and_remove(&e.path());
            }
        }
    }
}

/// Build (or rebuild) the view at `view_dir` from the installed packages `hashes` (full hashes
/// or unique prefixes) of `root`, replacing any previous sf-cache view there atomically.
pub fn build_view(
    view_dir: &Path,
    root: &InstallRoot,
    hashes: &[String],
) -> Result<ViewReport, ViewError> {
    let (view, parent, name) = locate(view_dir)?;
    let bad = |reason: &str| ViewError::BadLocation {
        view: view.clone(),
        reason: reason.to_string(),
    };
    if view == root.dir {
        return Err(bad("it is the install root itself"));
    }
    if root.dir.starts_with(&view) {
        return Err(bad("it contains the install root"));
    }
    if view.starts_with(root.dir.join(STATE_DIR)) {
        return Err(bad(
            "it is inside the install root's .sf-cache state directory",
        ));
    }
    let installed = root.installed();
    if let Some((p, r)) = installed.iter().find(|(p, _)| view.starts_with(p)) {
        return Err(bad(&format!(
            "it is inside the prefix of {} ({})",
            display_name(r),
            p.display()
        )));
    }

    // What is there now.
    match std::fs::symlink_metadata(&view) {
        Ok(md) if md.is_dir() => {
            let empty = std::fs::read_dir(&view)
                .map_err(io(&view))?
                .next()
                .is_none();
            if !empty && read_view(&view)?.is_none() {
                return Err(ViewError::NotAView { view });
            }
        }
        Ok(_) => return Err(ViewError::NotAView { view }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&view)(e)),
    }

    // The packages, in the order given, once each.
    let packages: Vec<(PathBuf, Receipt)> = match super::root::resolve_installed(&installed, hashes)
    {
        Ok(found) => found.into_iter().cloned().collect(),
        Err(super::root::Unresolved::NotInstalled { hash }) => {
            return Err(ViewError::NotInstalled {
                view,
                root: root.dir.clone(),
                hash,
            })
        }
        Err(super::root::Unresolved::Ambiguous { hash, candidates }) => {
            return Err(ViewError::Ambiguous {
                view,
                hash,
                candidates,
            })
        }
    };

    clean_leftovers(&parent, &name);
    let mut build_name = name.clone();
    build_name.push(format!("{NEW_TAG}{:016x}", rand::random::<u64>()));
    let build = parent.join(build_name);
    std::fs::create_dir(&build).map_err(io(&build))?;

    let result = (|| {
        let mut b = Builder {
            view: &view,
            final_view: &view,
            build: &build,
            packages: &packages,
            claims: HashMap::new(),
            report: ViewReport {
                view: view.clone(),
                packages: packages.iter().map(|(_, r)| r.hash.clone()).collect(),
                links: 0,
                dirs: 0,
                shared: 0,
            },
        };
        for i in 0..packages.len() {
            b.add_package(i)?;
        }
        let record = ViewRecord {
            format: VIEW_FORMAT,
            root: relative(&view, &root.dir).display().to_string(),
            hashes: b.report.packages.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| io(&build)(std::io::Error::other(e.to_string())))?;
        let marker = build.join(VIEW_MARKER);
        write_atomic(&marker, &bytes).map_err(io(&marker))?;
        swap_in(&build, &view, &parent, &name)?;
        Ok(b.report)
    })();
    if result.is_err() {
        let _ = make_writable_and_remove(&build);
    }
    let report = result?;
    info!(
        "view {}: {} packages, {} links",
        view.display(),
        report.packages.len(),
        report.links
    );
    Ok(report)
}

/// Build, into the empty directory `build_dir`, the view of `packages` (installed in `root_dir`)
/// as it must look once it sits at `final_view` (links and record relative to that place), without
/// touching `final_view` itself. For exports, which ship a view beside the root's prefixes.
pub fn build_view_as(
    build_dir: &Path,
    final_view: &Path,
    root_dir: &Path,
    packages: &[(PathBuf, Receipt)],
) -> Result<ViewReport, ViewError> {
    let mut b = Builder {
        view: final_view,
        final_view,
        build: build_dir,
        packages,
        claims: HashMap::new(),
        report: ViewReport {
            view: final_view.to_path_buf(),
            packages: packages.iter().map(|(_, r)| r.hash.clone()).collect(),
            links: 0,
            dirs: 0,
            shared: 0,
        },
    };
    for i in 0..packages.len() {
        b.add_package(i)?;
    }
    let record = ViewRecord {
        format: VIEW_FORMAT,
        root: relative(final_view, root_dir).display().to_string(),
        hashes: b.report.packages.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&record)
        .map_err(|e| io(build_dir)(std::io::Error::other(e.to_string())))?;
    let marker = build_dir.join(VIEW_MARKER);
    write_atomic(&marker, &bytes).map_err(io(&marker))?;
    Ok(b.report)
}

/// Replace `view` by `build` (both in `parent`).
fn swap_in(build: &Path, view: &Path, parent: &Path, name: &OsString) -> Result<(), ViewError> {
    match std::fs::symlink_metadata(view) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::rename(build, view).map_err(io(view))
        }
        Err(e) => Err(io(view)(e)),
        Ok(_) => {
            if std::fs::remove_dir(view).is_ok() {
                // It was empty.
                return std::fs::rename(build, view).map_err(io(view));
            }
            let mut old_name = name.clone();
            old_name.push(format!("{OLD_TAG}{:016x}", rand::random::<u64>()));
            let old = parent.join(old_name);
            std::fs::rename(view, &old).map_err(io(view))?;
            if let Err(e) = std::fs::rename(build, view) {
                // Put the previous view back.
                let _ = std::fs::rename(&old, view);
                return Err(io(view)(e));
            }
            if let Err(e) = make_writable_and_remove(&old) {
                warn!("cannot delete the previous view {}: {e}", old.display());
            }
            Ok(())
        }
    }
}

/// Rebuild the view at `view_dir` without the packages no longer installed in `root`. Returns
/// `None` when there is nothing to do: no sf-cache view there, a view of another root, or all its
/// packages still installed.
pub fn rebuild_view_after_uninstall(
    view_dir: &Path,
    root: &InstallRoot,
) -> Result<Option<ViewReport>, ViewError> {
    let Some(record) = read_view(view_dir)? else {
        return Ok(None);
    };
    let (view, _, _) = locate(view_dir)?;
    if relative(&view, &root.dir).display().to_string() != record.root {
        debug!("view {} belongs to another install root", view.display());
        return Ok(None);
    }
    let installed: BTreeMap<String, ()> = root
        .installed()
        .into_iter()
        .map(|(_, r)| (r.hash, ()))
        .collect();
    let keep: Vec<String> = record
        .hashes
        .iter()
        .filter(|h| installed.contains_key(*h))
        .cloned()
        .collect();
    if keep.len() == record.hashes.len() {
        return Ok(None);
    }
    build_view(&view, root, &keep).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::uninstall;
    use crate::install::verify::tests::fake_prefix;

    fn setup() -> (tempfile::TempDir, InstallRoot) {
        let t = tempfile::tempdir().unwrap();
        let root = InstallRoot::open(&t.path().join("root"), None, true).unwrap();
        fake_prefix(&root.dir.join("a-1.0-aaaa1111"), "a", "aaaa1111", &[]);
        fake_prefix(
            &root.dir.join("b-1.0-bbbb1111"),
            "b",
            "bbbb1111",
            &["aaaa1111"],
        );
        (t, root)
    }

    fn h(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/b/c"), Path::new("/a/x/y")),
            Path::new("../../x/y")
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a/b")), Path::new("b"));
        assert_eq!(relative(Path::new("/a"), Path::new("/a")), Path::new("."));
    }

    #[test]
    fn merges_packages_with_relative_links() {
        let (t, root) = setup();
        let view = t.path().join("view");
        let rep = build_view(&view, &root, &h(&["aaaa1111", "bbbb"])).unwrap();
        assert_eq!(rep.packages, h(&["aaaa1111", "bbbb1111"]));
        assert_eq!(rep.links, 8);
        assert_eq!(
            std::fs::read_to_string(view.join("bin/a")).unwrap(),
            "#!/bin/sh\necho a\n"
        );
        assert_eq!(
            std::fs::read(view.join("lib/libb.so")).unwrap(),
            b"\x7fELF fake"
        );
        let md = std::fs::symlink_metadata(view.join("bin")).unwrap();
        assert!(md.is_dir());
        let link = std::fs::read_link(view.join("share/doc/a/README")).unwrap();
        assert!(link.is_relative(), "{link:?}");
        assert_eq!(
            link,
            Path::new("../../../../root/a-1.0-aaaa1111/share/doc/a/README")
        );
        assert!(!view.join(".spack").exists());
        let rec = read_view(&view).unwrap().unwrap();
        assert_eq!(rec.hashes, h(&["aaaa1111", "bbbb1111"]));
        assert_eq!(rec.root, "../root");

        // root and view move together
        drop(root);
        let moved = t.path().join("moved");
        std::fs::create_dir(&moved).unwrap();
        std::fs::rename(t.path().join("root"), moved.join("root")).unwrap();
        std::fs::rename(&view, moved.join("view")).unwrap();
        assert_eq!(
            std::fs::read(moved.join("view/share/doc/b/README")).unwrap(),
            b"hello"
        );
    }

    #[test]
    fn conflicts_name_both_packages() {
        let (t, root) = setup();
        for p in ["a-1.0-aaaa1111", "b-1.0-bbbb1111"] {
            std::fs::write(root.dir.join(p).join("bin/common"), p).unwrap();
        }
        let view = t.path().join("view");
        let e = build_view(&view, &root, &h(&["aaaa1111", "bbbb1111"])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("bin/common")
                && msg.contains("a-1.0/aaaa111")
                && msg.contains("b-1.0/bbbb111"),
            "{msg}"
        );
        assert!(!view.exists());
        let leftovers: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".sf-cache-"))
            .collect();
        assert!(leftovers.is_empty());

        // identical symlinks are shared; a file vs a dir is a conflict
        for p in ["a-1.0-aaaa1111", "b-1.0-bbbb1111"] {
            std::fs::remove_file(root.dir.join(p).join("bin/common")).unwrap();
            std::os::unix::fs::symlink("../share", root.dir.join(p).join("bin/common")).unwrap();
        }
        let rep = build_view(&view, &root, &h(&["aaaa1111", "bbbb1111"])).unwrap();
        assert_eq!(rep.shared, 1);
        std::fs::create_dir(root.dir.join("a-1.0-aaaa1111/etc")).unwrap();
        std::fs::write(root.dir.join("b-1.0-bbbb1111/etc"), b"x").unwrap();
        let e = build_view(&view, &root, &h(&["aaaa1111", "bbbb1111"])).unwrap_err();
        assert!(
            matches!(e, ViewError::Conflict { ref path, .. } if path == "etc"),
            "{e}"
        );
        // the previous view is untouched
        assert!(view.join("bin/common").exists());
    }

    #[test]
    fn refuses_bad_locations() {
        let (t, root) = setup();
        let e = build_view(&root.dir, &root, &h(&["aaaa1111"])).unwrap_err();
        assert!(matches!(e, ViewError::BadLocation { .. }), "{e}");
        let e = build_view(
            &root.dir.join("a-1.0-aaaa1111/view"),
            &root,
            &h(&["aaaa1111"]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("inside the prefix of a-1.0/aaaa111"),
            "{e}"
        );
        let e = build_view(t.path(), &root, &h(&["aaaa1111"])).unwrap_err();
        assert!(matches!(e, ViewError::BadLocation { .. }), "{e}");
        // non-empty non-view directory
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("keep"), b"mine").unwrap();
        let e = build_view(&other, &root, &h(&["aaaa1111"])).unwrap_err();
        assert!(matches!(e, ViewError::NotAView { .. }), "{e}");
        assert_eq!(std::fs::read(other.join("keep")).unwrap(), b"mine");
        // empty directory is fine; a view inside the root (outside prefixes) is fine
        let empty = t.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        build_view(&empty, &root, &h(&["aaaa1111"])).unwrap();
        build_view(&root.dir.join("view"), &root, &h(&["aaaa1111"])).unwrap();
        assert!(root.dir.join("view/bin/a").exists());
        assert_eq!(root.installed().len(), 2);
        // unknown hash
        let e = build_view(&empty, &root, &h(&["zzzz"])).unwrap_err();
        assert!(matches!(e, ViewError::NotInstalled { .. }), "{e}");
    }

    #[test]
    fn rebuild_replaces_and_drops_uninstalled() {
        let (t, root) = setup();
        let view = t.path().join("view");
        build_view(&view, &root, &h(&["aaaa1111", "bbbb1111"])).unwrap();
        // nothing uninstalled: nothing to do
        assert!(rebuild_view_after_uninstall(&view, &root)
            .unwrap()
            .is_none());
        // leftover from an interrupted build is cleaned
        std::fs::create_dir(t.path().join("view.sf-cache-new-dead")).unwrap();
        let plan = uninstall::plan_uninstall(&root, &h(&["bbbb1111"]), false).unwrap();
        uninstall::remove(&root, &plan).unwrap();
        let rep = rebuild_view_after_uninstall(&view, &root).unwrap().unwrap();
        assert_eq!(rep.packages, h(&["aaaa1111"]));
        assert!(view.join("bin/a").exists());
        assert!(std::fs::symlink_metadata(view.join("bin/b")).is_err());
        assert!(!t.path().join("view.sf-cache-new-dead").exists());
        // rebuilding with another set replaces the content
        fake_prefix(&root.dir.join("c-1.0-cccc1111"), "c", "cccc1111", &[]);
        build_view(&view, &root, &h(&["cccc1111"])).unwrap();
        assert!(view.join("bin/c").exists());
        assert!(std::fs::symlink_metadata(view.join("bin/a")).is_err());
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".sf-cache-")), "{names:?}");
        // not a view: nothing to do
        assert!(rebuild_view_after_uninstall(t.path(), &root)
            .unwrap()
            .is_none());
    }
}
