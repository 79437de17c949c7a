//! `sf-cache publish` and `sf-cache update-index`.

use crate::buildcache::writer::{CacheWriter, Signer, WriterError};
use crate::cli::{PublishArgs, UpdateIndexArgs};
use crate::publish::{self, PublishError, PublishOptions};

use super::{exit, CmdResult, Context, Failure};

impl From<PublishError> for Failure {
    fn from(e: PublishError) -> Failure {
        Failure::new(exit::FAILURE, e.to_string())
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
    let mut opts = PublishOptions {
        force: a.force,
        no_index: a.no_index,
        with_deps: a.with_deps,
        ..PublishOptions::default()
    };
    if let Some(j) = a.jobs {
        opts.jobs = j.max(1);
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
