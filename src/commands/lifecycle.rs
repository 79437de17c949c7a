//! `sf-cache verify`, `uninstall`, `cache gc|clean` and `list --root`: everything that works from
//! the receipts of an install root.

use serde::Serialize;

use super::roots::{matching, open_root};
use super::{exit, parse_query, CmdResult, Context, Failure};
use crate::buildcache::catalog::short;
use crate::cli::{CacheCommand, ReindexArgs, UninstallArgs, VerifyArgs};
use crate::install::{gc, uninstall as uninstaller, verify as verifier, view};

#[derive(Serialize)]
struct VerifyRow {
    name: String,
    version: String,
    hash: String,
    prefix: String,
    #[serde(flatten)]
    report: verifier::VerifyReport,
}

pub fn verify(ctx: &Context, args: &VerifyArgs) -> CmdResult {
    let q = if args.query.is_empty() {
        None
    } else {
        Some(parse_query(&args.query)?)
    };
    let root = open_root(&args.root)?;
    let targets = matching(&root, q.as_ref());
    if targets.is_empty() && q.is_some() {
        return Err(Failure::new(
            exit::NO_MATCH,
            "nothing installed matches the query",
        ));
    }
    let mut rows = Vec::new();
    for (prefix, r) in targets {
        let report =
            verifier::verify_prefix(&prefix).map_err(|e| Failure::new(1, e.to_string()))?;
        rows.push(VerifyRow {
            name: r.name,
            version: r.version,
            hash: r.hash,
            prefix: prefix.display().to_string(),
            report,
        });
    }
    let problems: usize = rows.iter().map(|r| r.report.problem_count()).sum();
    if ctx.out.json {
        ctx.out.json(&rows)?;
    } else {
        for r in &rows {
            let status = if r.report.is_clean() { "ok" } else { "CHANGED" };
            ctx.out.line(format!(
                "{status:<8}{}@{} /{}  {}",
                r.name,
                r.version,
                short(&r.hash),
                r.prefix
            ))?;
            for (what, list) in [
                ("modified", &r.report.modified),
                ("missing", &r.report.missing),
                ("extra", &r.report.extra),
                ("mode changed", &r.report.mode_changed),
                ("link changed", &r.report.link_changed),
            ] {
                for p in list {
                    ctx.out.line(format!("    {what}: {p}"))?;
                }
            }
        }
    }
    if problems > 0 {
        return Err(Failure::new(
            exit::VERIFICATION,
            format!(
                "{problems} difference(s) from the install receipts; reinstall the changed packages"
            ),
        ));
    }
    Ok(())
}

pub fn uninstall(ctx: &Context, args: &UninstallArgs) -> CmdResult {
    let root = open_root(&args.root)?;
    let mut hashes = Vec::new();
    for q in &args.query {
        let query = parse_query(std::slice::from_ref(q))?;
        let found = matching(&root, Some(&query));
        if found.is_empty() {
            return Err(Failure::new(
                exit::NO_MATCH,
                format!("nothing installed in {} matches `{q}`", root.dir.display()),
            ));
        }
        if found.len() > 1 {
            return Err(super::roots::several(q, &found));
        }
        hashes.push(found[0].1.hash.clone());
    }
    let receipts = uninstaller::plan_uninstall(&root, &hashes, args.force)
        .map_err(|e| Failure::new(1, e.to_string()))?;
    let removed =
        uninstaller::remove(&root, &receipts).map_err(|e| Failure::new(1, e.to_string()))?;
    for v in &args.view {
        view::rebuild_view_after_uninstall(v, &root).map_err(|e| Failure::new(1, e.to_string()))?;
    }
    if ctx.out.json {
        ctx.out.json(
            &removed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        )?;
    } else {
        for p in &removed {
            ctx.out.line(format!("removed {}", p.display()))?;
        }
    }
    Ok(())
}

/// `sf-cache reindex --root DIR`: the root's Spack database, rebuilt under the root's lock.
pub fn reindex(ctx: &Context, args: &ReindexArgs) -> CmdResult {
    // Never make a root (and a database) out of a directory that is not one.
    let root = super::roots::open_existing_root(&args.root)?;
    let s = crate::install::spack_db::write(&root.dir, &root.projection, &root.installed())
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    if ctx.out.json {
        ctx.out.json(&s)?;
    } else {
        ctx.out.line(format!(
            "{}: Spack database v{} with {} records ({} installed here, {} externals, {} build-only dependencies not installed)",
            s.path, s.version, s.records, s.installed, s.externals, s.missing
        ))?;
    }
    Ok(())
}

pub fn cache(ctx: &Context, cmd: &CacheCommand) -> CmdResult {
    let blobs = ctx.paths.blob_cache_dir();
    let report = match cmd {
        CacheCommand::Gc => {
            let registry = ctx.roots_registry();
            gc::collect_with(&blobs, || gc::registered_roots(&registry))
                .map_err(|e| Failure::new(1, e.to_string()))?
        }
        CacheCommand::Clean => {
            let r = gc::clean(&blobs).map_err(|e| Failure::new(1, e.to_string()))?;
            for d in [
                ctx.paths.index_cache_dir(),
                ctx.paths.cache_dir.join("meta"),
            ] {
                if let Err(e) = std::fs::remove_dir_all(&d) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(e.into());
                    }
                }
            }
            r
        }
    };
    if ctx.out.json {
        ctx.out.json(&report)?;
    } else {
        ctx.out.line(format!(
            "removed {} blob(s), {}; kept {}",
            report.removed,
            indicatif::HumanBytes(report.bytes),
            report.kept
        ))?;
    }
    Ok(())
}
