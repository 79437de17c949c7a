//! `sf-cache publish` and `sf-cache update-index`.

use crate::buildcache::writer::{CacheWriter, Signer, WriterError};
use crate::cli::{PublishArgs, UpdateIndexArgs};
use crate::publish::{self, PublishError, PublishOptions, SelectOptions};

use super::{exit, CmdResult, Context, Failure};

impl From<PublishError> for Failure {
    fn from(e: PublishError) -> Failure {
        let code = match &e {
            PublishError::IncludePrivate { .. } => exit::USAGE,
            _ => exit::FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<WriterError> for Failure {
    fn from(e: WriterError) -> Failure {
        let code = match &e {
            WriterError::Buildcache(b) => super::exit::code(b.kind()),
            _ => exit::FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

fn read_signer(a: &PublishArgs) -> Result<Option<Signer>, Failure> {
    let Some(path) = &a.key else {
        return Ok(None);
    };
    super::read_signing_key(path, a.passphrase_file.as_deref())?
        .signer()
        .map(Some)
}

pub async fn run(ctx: &Context, a: &PublishArgs) -> CmdResult {
    let signer = read_signer(a)?;
    let store = ctx.open_writable("destination", &a.to)?;
    std::fs::create_dir_all(&ctx.paths.tmp_dir)?;
    let mut writer = CacheWriter::new(store).with_tmp_dir(&ctx.paths.tmp_dir);
    if let Some(s) = signer {
        writer = writer.with_signer(s);
    }
    let mut include_private = Vec::new();
    for p in &a.include_private {
        let abs = std::path::absolute(p)
            .map_err(|e| Failure::usage(format!("--include-private {}: {e}", p.display())))?;
        include_private.push(abs.components().collect());
    }
    let mut opts = PublishOptions {
        force: a.force,
        no_index: a.no_index,
        with_deps: a.with_deps,
        select: SelectOptions {
            include_untracked: a.include_untracked,
            include_private,
        },
        sbom: a.sbom,
        ..PublishOptions::default()
    };
    if let Some(j) = a.jobs {
        opts.jobs = j.max(1);
    }
    if a.dry_run {
        return dry_run(ctx, &writer, a, &opts).await;
    }
    let report = publish::publish(&writer, &a.prefixes, &opts).await?;
    if ctx.global.json {
        ctx.out.json(&report)?;
        return Ok(());
    }
    for e in &report.entries {
        let how = if e.status == "published" {
            if e.signed {
                "published (signed)"
            } else {
                "published (UNSIGNED)"
            }
        } else {
            "already present, skipped (use --force to rewrite)"
        };
        ctx.out.line(format!(
            "{}@{} /{} {how}",
            e.name,
            e.version,
            &e.hash[..e.hash.len().min(7)]
        ))?;
    }
    match &report.index {
        Some(i) => ctx.out.line(format!(
            "{}: {} published, {} skipped; index has {} records ({} in the buildcache)",
            report.destination, report.published, report.skipped, i.records, i.in_buildcache
        ))?,
        None => ctx.out.line(format!(
            "{}: {} published, {} skipped; index not updated (run `sf-cache update-index {}`)",
            report.destination, report.published, report.skipped, a.to
        ))?,
    }
    Ok(())
}

/// `publish --dry-run`: per prefix, what would be packed and why each other path is left out.
async fn dry_run(
    ctx: &Context,
    writer: &CacheWriter,
    a: &PublishArgs,
    opts: &PublishOptions,
) -> CmdResult {
    let plan = publish::plan(writer, &a.prefixes, opts).await?;
    if ctx.global.json {
        ctx.out.json(&plan)?;
        return Ok(());
    }
    for e in &plan.entries {
        let what = format!(
            "{}@{} /{}",
            e.name,
            e.version,
            &e.hash[..e.hash.len().min(7)]
        );
        let status = if e.present && !a.force {
            ", already in the destination: would be skipped (use --force to rewrite)"
        } else {
            ""
        };
        ctx.out.line(format!(
            "{what} {}: {} file(s) and link(s) would be packed, {} path(s) left out{status}",
            e.prefix,
            e.selection.packed.len(),
            e.selection.left_out.len()
        ))?;
        for p in &e.selection.packed {
            ctx.out.line(format!("  pack  {p}"))?;
        }
        for l in &e.selection.left_out {
            let slash = if l.dir { "/" } else { "" };
            ctx.out.line(format!(
                "  leave {}{slash}: {}",
                l.path,
                l.reason.describe()
            ))?;
        }
    }
    ctx.out
        .line(format!("dry run: nothing written to {}", plan.destination))?;
    Ok(())
}

pub async fn update_index(ctx: &Context, a: &UpdateIndexArgs) -> CmdResult {
    let store = ctx.open_writable("destination", &a.dest)?;
    let writer = CacheWriter::new(store).with_jobs(a.jobs.unwrap_or(8));
    let s = writer.update_index().await?;
    if ctx.global.json {
        ctx.out.json(&serde_json::json!({
            "destination": writer.store().display_url(),
            "records": s.records,
            "in_buildcache": s.in_buildcache,
            "blob": s.blob.path(),
        }))?;
        return Ok(());
    }
    ctx.out.line(format!(
        "{}: index rebuilt, {} records ({} in the buildcache)",
        writer.store().display_url(),
        s.records,
        s.in_buildcache
    ))?;
    Ok(())
}
