//! `sf-cache module`: (re)write the Lmod modules of installed packages.

use super::roots::{open_existing_root, select};
use super::{exit, CmdResult, Context, Failure};
use crate::buildcache::catalog::short;
use crate::cli::ModuleArgs;
use crate::modules::{write_modules, ModuleOptions, ModulesError};

impl From<ModulesError> for Failure {
    fn from(e: ModulesError) -> Failure {
        Failure::new(super::exit::code(e.kind()), e.to_string())
    }
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
