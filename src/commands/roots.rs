//! Install-root helpers shared by the commands that read an install root (`list --root`,
//! `verify`, `uninstall`, `module`, `export`): opening it, and selecting installed packages by
//! query. Not a command: command files use this, never each other.

use std::path::Path;

use super::{exit, parse_query, Failure};
use crate::install::receipt::Receipt;
use crate::install::root::InstallRoot;
use crate::spec::{Query, Spec};

pub(crate) fn open_root(dir: &Path) -> Result<InstallRoot, Failure> {
    InstallRoot::open(dir, None, false).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("{e}; is {} an sf-cache install root?", dir.display()),
        )
    })
}

fn receipt_spec(r: &Receipt) -> Option<Spec> {
    let mut spec = Spec::from_node(&r.spec, 5).ok()?;
    spec.hash = r.hash.clone();
    Some(spec)
}

/// Receipts of `root` matching `query` (all when None).
pub(crate) fn matching(
    root: &InstallRoot,
    query: Option<&Query>,
) -> Vec<(std::path::PathBuf, Receipt)> {
    let installed = root.installed();
    let Some(q) = query else {
        return installed;
    };
    let specs: Vec<Option<Spec>> = installed.iter().map(|(_, r)| receipt_spec(r)).collect();
    let lookup = |h: &str| -> Option<&Spec> { specs.iter().flatten().find(|s| s.hash == h) };
    installed
        .into_iter()
        .zip(specs.iter())
        .filter(|(_, s)| s.as_ref().is_some_and(|s| q.matches(s, &lookup)))
        .map(|(i, _)| i)
        .collect()
}

/// Open an existing install root (never create one: a directory without `.sf-cache/root.json`
/// is an error naming it).
pub(crate) fn open_existing_root(dir: &Path) -> Result<InstallRoot, Failure> {
    match crate::install::root::existing_projection(dir) {
        Ok(Some(_)) => open_root(dir),
        Ok(None) => Err(Failure::new(
            exit::FAILURE,
            format!(
                "{} is not an sf-cache install root (no .sf-cache/root.json); give the --root packages were installed into",
                dir.display()
            ),
        )),
        Err(e) => Err(Failure::new(exit::FAILURE, e.to_string())),
    }
}

/// The hashes of the installed packages matching any of `queries` (each query must match), or
/// of every installed package when there are none.
pub(crate) fn select(root: &InstallRoot, queries: &[String]) -> Result<Vec<String>, Failure> {
    if queries.is_empty() {
        return Ok(root.installed().into_iter().map(|(_, r)| r.hash).collect());
    }
    let mut hashes = Vec::new();
    for q in queries {
        let query = parse_query(std::slice::from_ref(q))?;
        let found = matching(root, Some(&query));
        if found.is_empty() {
            return Err(no_match(root, q));
        }
        for (_, r) in found {
            if !hashes.contains(&r.hash) {
                hashes.push(r.hash);
            }
        }
    }
    Ok(hashes)
}

/// Nothing installed in `root` matches the query `q` (exit 4, with where to look).
pub(crate) fn no_match(root: &InstallRoot, q: &str) -> Failure {
    Failure::new(
        exit::NO_MATCH,
        format!(
            "nothing installed in {} matches `{q}`; see `sf-cache list --root {}`",
            root.dir.display(),
            root.dir.display()
        ),
    )
}

/// The query `q` matches several installed packages: a usage error naming them.
pub(crate) fn several(q: &str, found: &[(std::path::PathBuf, Receipt)]) -> Failure {
    let names: Vec<String> = found
        .iter()
        .map(|(_, r)| crate::install::uninstall::display_name(r))
        .collect();
    Failure::usage(format!(
        "`{q}` matches several installed packages: {}; add a version or /hash",
        names.join(", ")
    ))
}
