//! `sf-cache export`: a relocatable tarball of installed packages, a view and their modules.

use super::module::{open_existing_root, select};
use super::{exit, CmdResult, Context, Failure};
use crate::cli::ExportArgs;
use crate::export::{export, ExportOptions};

/// The passphrase: `--passphrase-file` (first line), else `$SF_CACHE_KEY_PASSPHRASE`.
fn passphrase(a: &ExportArgs) -> Result<Option<String>, Failure> {
    if let Some(f) = &a.passphrase_file {
        let text = std::fs::read_to_string(f).map_err(|e| {
            Failure::new(
                exit::FAILURE,
                format!("cannot read the passphrase file {}: {e}", f.display()),
            )
        })?;
        return Ok(Some(text.lines().next().unwrap_or("").to_string()));
    }
    Ok(std::env::var("SF_CACHE_KEY_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty()))
}

pub fn run(ctx: &Context, a: &ExportArgs) -> CmdResult {
    // A key that cannot sign fails before anything is written.
    let key = match &a.key {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Failure::new(
                    exit::FAILURE,
                    format!("cannot read the signing key {}: {e}", path.display()),
                )
            })?;
            let pass = passphrase(a)?;
            crate::trust::sign_detached(&bytes, pass.as_deref(), &mut std::io::empty()).map_err(
                |e| {
                    Failure::new(
                        exit::FAILURE,
                        format!(
                            "signing key {} cannot sign: {e}; give an armored secret key (and its passphrase in $SF_CACHE_KEY_PASSPHRASE or --passphrase-file)",
                            path.display()
                        ),
                    )
                },
            )?;
            Some((bytes, pass))
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
