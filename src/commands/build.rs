//! `sf-cache build QUERY`: build a spec from source with Spack and publish it into the local
//! buildcache (or `--publish DEST`).

use super::source_build::{build_and_publish, BuildReport};
use super::{CmdResult, Context};
use crate::cli::BuildArgs;

pub async fn run(ctx: &Context, a: &BuildArgs) -> CmdResult {
    let spec = a.query.join(" ");
    let report = build_and_publish(ctx, &spec, &a.mirrors, a.jobs, &a.flags).await?;
    print_report(ctx, &report)
}

fn print_report(ctx: &Context, r: &BuildReport) -> CmdResult {
    if ctx.out.json {
        ctx.out.json(r)?;
        return Ok(());
    }
    if ctx.global.quiet {
        return Ok(());
    }
    for b in &r.build.installed {
        ctx.out.line(format!(
            "built {}@{} /{} in {}",
            b.name,
            b.version,
            &b.hash[..b.hash.len().min(7)],
            b.prefix.display()
        ))?;
    }
    ctx.out.line(format!(
        "{}: {} published, {} already there{}",
        r.publish.destination,
        r.publish.published,
        r.publish.skipped,
        r.publish
            .signing_key
            .as_deref()
            .map(|k| format!(", signed by {k}"))
            .unwrap_or_default()
    ))?;
    ctx.out.line(format!("log {}", r.build.log.display()))?;
    if let Some(s) = &r.build.stage {
        ctx.out.line(format!("stage kept in {}", s.display()))?;
    }
    Ok(())
}
