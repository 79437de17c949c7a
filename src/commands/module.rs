//! `sf-cache module`: (re)write the Lmod modules of installed packages.

use std::path::Path;

use super::lifecycle::{matching, open_root};
use super::{exit, parse_query, CmdResult, Context, Failure};
use crate::buildcache::catalog::short;
use crate::cli::ModuleArgs;
use crate::install::root::InstallRoot;
use crate::modules::{write_modules, ModuleOptions, ModulesError};

impl From<ModulesError> for Failure {
    fn from(e: ModulesError) -> Failure {
        Failure::new(super::exit::code(e.kind()), e.to_string())
    }
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
            return Err(Failure::new(
                exit::NO_MATCH,
                format!(
                    "nothing installed in {} matches `{q}`; see `sf-cache list --root {}`",
                    root.dir.display(),
                    root.dir.display()
                ),
            ));
        }
        for (_, r) in found {
            if !hashes.contains(&r.hash) {
                hashes.push(r.hash);
            }
        }
    }
    Ok(hashes)
}

pub fn run(ctx: &Context, a: &ModuleArgs) -> CmdResult {
    let root = open_existing_root(&a.root)?;
    let hashes = select(&root, &a.query)?;
    if hashes.is_empty() {
        return Err(Failure::new(
            exit::NO_MATCH,
            format!("nothing is installed in {}", root.dir.display()),
        ));
    }
    let written = write_modules(
        &root.dir,
        &hashes,
        &ModuleOptions {
            module_dir: a.module_dir.clone(),
            templates_dir: a.templates.clone(),
            view: a.view.clone(),
        },
    )?;
    if ctx.out.json {
        ctx.out.json(&written)?;
    } else if !ctx.global.quiet {
        for w in &written {
            ctx.out.line(format!(
                "wrote {} for {}@{} /{}",
                w.path.display(),
                w.name,
                w.version,
                short(&w.hash)
            ))?;
        }
        if let Some(dir) = written.first().and_then(|w| w.path.parent()?.parent()) {
            ctx.out
                .line(format!("use them with: module use {}", dir.display()))?;
        }
    }
    Ok(())
}
