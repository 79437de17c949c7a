//! `sf-cache relocate`: make a moved install root (or an extracted export) work where it is.

use super::{CmdResult, Context};
use crate::cli::RelocateArgs;
use crate::install::gc;
use crate::install::moved::relocate_tree;

pub fn run(ctx: &Context, a: &RelocateArgs) -> CmdResult {
    let report = relocate_tree(&a.dir, a.from.as_deref())?;
    if let Err(e) = gc::register_root(&ctx.roots_registry(), &report.root) {
        tracing::warn!("{e}");
    }
    if ctx.out.json {
        ctx.out.json(&report)?;
        return Ok(());
    }
    if ctx.global.quiet {
        return Ok(());
    }
    let relocated = report
        .packages
        .iter()
        .filter(|p| p.status == "relocated")
        .count();
    for p in &report.packages {
        ctx.out.line(format!(
            "{:<10} {}@{} in {}",
            p.status,
            p.name,
            p.version,
            p.prefix.display()
        ))?;
    }
    for m in &report.modules {
        ctx.out.line(format!("module     {}", m.display()))?;
    }
    ctx.out.line(format!(
        "{} package(s) relocated from {} to {}",
        relocated,
        report.from.display(),
        report.root.display()
    ))?;
    Ok(())
}

impl From<crate::install::moved::MovedError> for super::Failure {
    fn from(e: crate::install::moved::MovedError) -> super::Failure {
        super::Failure::new(super::exit::code(e.kind()), e.to_string())
    }
}
