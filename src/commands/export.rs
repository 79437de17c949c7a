//! `sf-cache export`: a relocatable tarball of installed packages, a view and their modules.

use super::roots::{open_existing_root, select};
use super::{CmdResult, Context};
use crate::cli::ExportArgs;
use crate::export::{export, ExportOptions};

pub fn run(ctx: &Context, a: &ExportArgs) -> CmdResult {
    // A key that cannot sign fails before anything is written.
    let key = match &a.key {
        Some(path) => {
            let k = super::read_signing_key(path, a.passphrase_file.as_deref())?;
            crate::trust::sign_detached(&k.armored, k.passphrase.as_deref(), &mut std::io::empty())
                .map_err(|e| k.cannot_sign(e))?;
            Some((k.armored, k.passphrase))
        }
        None => None,
    };
    let root = open_existing_root(&a.root)?;
    let hashes = select(&root, &a.query)?;
    let report = export(
        &root,
        &ExportOptions {
            hashes,
            output: a.output.clone(),
            view_name: a.view.clone(),
            templates_dir: a.templates.clone(),
            key,
        },
    )?;
    if ctx.out.json {
        ctx.out.json(&report)?;
    } else if !ctx.global.quiet {
        for p in &report.packages {
            ctx.out
                .line(format!("exported {}@{} ({})", p.name, p.version, p.prefix))?;
        }
        ctx.out.line(format!(
            "wrote {} ({} bytes, sha256 {})",
            report.output.display(),
            report.bytes,
            report.sha256
        ))?;
        if let Some(sig) = &report.signature {
            ctx.out.line(format!("signature {}", sig.display()))?;
        }
        ctx.out.line(format!(
            "extract it anywhere, then: sf-cache relocate DIR; module use DIR/modules (it was exported from {})",
            report.root.display()
        ))?;
    }
    Ok(())
}

impl From<crate::export::ExportError> for super::Failure {
    fn from(e: crate::export::ExportError) -> super::Failure {
        super::Failure::new(super::exit::code(e.kind()), e.to_string())
    }
}
