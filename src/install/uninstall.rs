//! Uninstall packages from an install root.
//!
//! Removal is atomic from the user's view: the prefix is first renamed into
//! `<root>/.sf-cache/trash/<hash>-<rand>` (that one rename is the commit point: the package is gone
//! from the root), then the trash entry is deleted. Leftovers of an interrupted deletion are
//! removed on the next call.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::{info, warn};

use super::receipt::Receipt;
use super::root::{make_writable_and_remove, InstallRoot, STATE_DIR};

pub const TRASH_DIR: &str = "trash";

#[derive(Debug, Error)]
pub enum UninstallError {
    #[error("no package with hash `{hash}` is installed in {}; list installed packages with `sf-cache list --installed`", root.display())]
    NotInstalled { root: PathBuf, hash: String },
    #[error("hash prefix `{hash}` matches several installed packages ({candidates}); give more characters of the hash")]
    Ambiguous { hash: String, candidates: String },
    #[error("cannot uninstall {package}: still needed by {dependents}; uninstall those too or use --force")]
    HasDependents { package: String, dependents: String },
    #[error("refusing to remove {}: it is not inside install root {}", prefix.display(), root.display())]
    OutsideRoot { prefix: PathBuf, root: PathBuf },
    #[error("cannot remove {}: {source}; check its permissions and retry", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `name-version/hash7`, how packages are named in messages.
pub fn display_name(r: &Receipt) -> String {
    let short: String = r.hash.chars().take(7).collect();
    format!("{}-{}/{}", r.name, r.version, short)
}

fn trash_dir(root: &InstallRoot) -> PathBuf {
    root.dir.join(STATE_DIR).join(TRASH_DIR)
}

/// Find the installed package for a full hash or a unique hash prefix.
fn lookup<'a>(
    root: &InstallRoot,
    installed: &'a [(PathBuf, Receipt)],
    hash: &str,
) -> Result<&'a (PathBuf, Receipt), UninstallError> {
    if let Some(e) = installed.iter().find(|(_, r)| r.hash == hash) {
        return Ok(e);
    }
    let matches: Vec<&(PathBuf, Receipt)> = if hash.is_empty() {
        Vec::new()
    } else {
        installed
            .iter()
            .filter(|(_, r)| r.hash.starts_with(hash))
            .collect()
    };
    match matches.len() {
        1 => Ok(matches[0]),
        0 => Err(UninstallError::NotInstalled {
            root: root.dir.clone(),
            hash: hash.to_string(),
        }),
        _ => Err(UninstallError::Ambiguous {
            hash: hash.to_string(),
            candidates: matches
                .iter()
                .map(|(_, r)| display_name(r))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The receipts to remove for `hashes` (full hashes or unique prefixes), ordered so that
/// dependents come before their dependencies. Unless `force`, refuses while a package that is not
/// being removed depends on one of them.
pub fn plan_uninstall(
    root: &InstallRoot,
    hashes: &[String],
    force: bool,
) -> Result<Vec<Receipt>, UninstallError> {
    let installed = root.installed();
    let mut chosen: Vec<Receipt> = Vec::new();
    for h in hashes {
        let (_, r) = lookup(root, &installed, h)?;
        if !chosen.iter().any(|c| c.hash == r.hash) {
            chosen.push(r.clone());
        }
    }
    let removing: BTreeSet<&str> = chosen.iter().map(|r| r.hash.as_str()).collect();
    if !force {
        for r in &chosen {
            let dependents: Vec<String> = installed
                .iter()
                .filter(|(_, o)| !removing.contains(o.hash.as_str()))
                .filter(|(_, o)| o.dependencies.iter().any(|d| d == &r.hash))
                .map(|(_, o)| display_name(o))
                .collect();
            if !dependents.is_empty() {
                return Err(UninstallError::HasDependents {
                    package: display_name(r),
                    dependents: dependents.join(", "),
                });
            }
        }
    }
    Ok(order_dependents_first(chosen))
}

/// Topological order inside the set: a package comes before everything it depends on.
fn order_dependents_first(mut set: Vec<Receipt>) -> Vec<Receipt> {
    let mut out = Vec::with_capacity(set.len());
    while !set.is_empty() {
        // Packages no remaining package depends on.
        let needed: BTreeSet<String> = set
            .iter()
            .flat_map(|r| r.dependencies.iter().cloned())
            .collect();
        let (free, rest): (Vec<Receipt>, Vec<Receipt>) =
            set.into_iter().partition(|r| !needed.contains(&r.hash));
        if free.is_empty() {
            // A cycle (should not happen): keep the remaining order.
            out.extend(rest);
            break;
        }
        out.extend(free);
        set = rest;
    }
    out
}

/// Delete whatever an interrupted uninstall left in the trash.
pub fn clean_trash(root: &InstallRoot) {
    let trash = trash_dir(root);
    if let Ok(rd) = std::fs::read_dir(&trash) {
        for e in rd.flatten() {
            let p = e.path();
            warn!(
                "removing the leftover of an interrupted uninstall: {}",
                p.display()
            );
            if let Err(err) = make_writable_and_remove(&p) {
                warn!("cannot remove {}: {err}", p.display());
            }
        }
    }
}

/// Remove the packages of `receipts` from `root` (use the order of [`plan_uninstall`]). Returns
/// the removed prefixes. Packages no longer installed are skipped.
pub fn remove(root: &InstallRoot, receipts: &[Receipt]) -> Result<Vec<PathBuf>, UninstallError> {
    clean_trash(root);
    let trash = trash_dir(root);
    std::fs::create_dir_all(&trash).map_err(|source| UninstallError::Io {
        path: trash.clone(),
        source,
    })?;
    let by_hash: HashMap<String, PathBuf> = root
        .installed()
        .into_iter()
        .map(|(p, r)| (r.hash, p))
        .collect();
    let mut removed = Vec::new();
    for r in receipts {
        let Some(prefix) = by_hash.get(&r.hash) else {
            warn!(
                "{} is not installed (any more); skipping it",
                display_name(r)
            );
            continue;
        };
        if !prefix.starts_with(&root.dir)
            || prefix == &root.dir
            || prefix.starts_with(root.dir.join(STATE_DIR))
        {
            return Err(UninstallError::OutsideRoot {
                prefix: prefix.clone(),
                root: root.dir.clone(),
            });
        }
        let dest = trash.join(format!("{}-{:016x}", r.hash, rand::random::<u64>()));
        // The commit point.
        std::fs::rename(prefix, &dest).map_err(|source| UninstallError::Io {
            path: prefix.clone(),
            source,
        })?;
        info!("uninstalled {} from {}", display_name(r), prefix.display());
        remove_empty_parents(prefix, &root.dir);
        if let Err(e) = make_writable_and_remove(&dest) {
            // Already invisible; the next call retries.
            warn!(
                "cannot delete {} yet: {e}; it is removed on the next uninstall",
                dest.display()
            );
        }
        removed.push(prefix.clone());
    }
    if !removed.is_empty() {
        super::spack_db::refresh(root);
    }
    Ok(removed)
}

/// Nested projections (`{architecture}/{name}-…`) leave empty parent directories behind.
fn remove_empty_parents(prefix: &Path, root: &Path) {
    let mut cur = prefix.parent();
    while let Some(dir) = cur {
        if dir == root || !dir.starts_with(root) || std::fs::remove_dir(dir).is_err() {
            break;
        }
        cur = dir.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::projection::Projection;
    use crate::install::verify::tests::fake_prefix;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, InstallRoot) {
        let t = tempfile::tempdir().unwrap();
        let root = InstallRoot::open(&t.path().join("root"), None, true).unwrap();
        // c -> b -> a ; d independent
        fake_prefix(&root.dir.join("a-1.0-aaaa1111"), "a", "aaaa1111", &[]);
        fake_prefix(
            &root.dir.join("b-1.0-bbbb1111"),
            "b",
            "bbbb1111",
            &["aaaa1111"],
        );
        fake_prefix(
            &root.dir.join("c-1.0-cccc1111"),
            "c",
            "cccc1111",
            &["bbbb1111"],
        );
        fake_prefix(&root.dir.join("d-1.0-aaaa2222"), "d", "aaaa2222", &[]);
        (t, root)
    }

    fn hashes(rs: &[Receipt]) -> Vec<&str> {
        rs.iter().map(|r| r.hash.as_str()).collect()
    }

    #[test]
    fn refuses_while_dependents_remain() {
        let (_t, root) = setup();
        let e = plan_uninstall(&root, &["aaaa1111".into()], false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("a-1.0/aaaa111") && msg.contains("b-1.0/bbbb111"),
            "{msg}"
        );
        assert!(msg.contains("--force"), "{msg}");
        // with all dependents, in dependents-first order
        let plan = plan_uninstall(
            &root,
            &["aaaa1111".into(), "cccc".into(), "bbbb1111".into()],
            false,
        )
        .unwrap();
        assert_eq!(hashes(&plan), vec!["cccc1111", "bbbb1111", "aaaa1111"]);
        // force
        let plan = plan_uninstall(&root, &["aaaa1111".into()], true).unwrap();
        assert_eq!(hashes(&plan), vec!["aaaa1111"]);
    }

    #[test]
    fn unknown_and_ambiguous_hashes() {
        let (_t, root) = setup();
        assert!(matches!(
            plan_uninstall(&root, &["zzzz".into()], false),
            Err(UninstallError::NotInstalled { .. })
        ));
        let e = plan_uninstall(&root, &["aaaa".into()], false).unwrap_err();
        assert!(matches!(e, UninstallError::Ambiguous { .. }), "{e}");
        assert!(plan_uninstall(&root, &["".into()], false).is_err());
    }

    #[test]
    fn removes_through_trash() {
        let (_t, root) = setup();
        // read-only directories inside the prefix
        let ro = root.dir.join("c-1.0-cccc1111/share/doc");
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        // a leftover from an earlier interrupted run
        let leftover = root.dir.join(".sf-cache/trash/old-123/sub");
        std::fs::create_dir_all(&leftover).unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o500)).unwrap();

        let plan = plan_uninstall(&root, &["cccc1111".into(), "bbbb1111".into()], false).unwrap();
        let removed = remove(&root, &plan).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!root.dir.join("c-1.0-cccc1111").exists());
        assert!(!root.dir.join("b-1.0-bbbb1111").exists());
        let left: Vec<String> = root.installed().into_iter().map(|(_, r)| r.name).collect();
        assert_eq!(left, vec!["a", "d"]);
        let trash: Vec<_> = std::fs::read_dir(root.dir.join(".sf-cache/trash"))
            .unwrap()
            .collect();
        assert!(trash.is_empty(), "{trash:?}");
        // removing again is a no-op
        assert!(remove(&root, &plan).unwrap().is_empty());
    }

    #[test]
    fn nested_projection_parents_are_cleaned() {
        let t = tempfile::tempdir().unwrap();
        let proj = Projection::parse("{name}/{version}-{hash}").unwrap();
        let root = InstallRoot::open(&t.path().join("root"), Some(&proj), true).unwrap();
        fake_prefix(&root.dir.join("a/1.0-aaaa"), "a", "aaaa", &[]);
        fake_prefix(&root.dir.join("a/2.0-aaab"), "a", "aaab", &[]);
        let plan = plan_uninstall(&root, &["aaaa".into()], false).unwrap();
        remove(&root, &plan).unwrap();
        assert!(root.dir.join("a/2.0-aaab").is_dir());
        let plan = plan_uninstall(&root, &["aaab".into()], false).unwrap();
        remove(&root, &plan).unwrap();
        assert!(!root.dir.join("a").exists());
        assert!(root.dir.is_dir());
    }
}
