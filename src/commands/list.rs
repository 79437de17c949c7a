//! `sf-cache list [QUERY] --mirror M…`: what the buildcaches offer, read from their indexes.

use std::collections::HashMap;

use serde::Serialize;
use tracing::info;

use super::{exit, parse_query, CmdResult, Context, Failure};
use crate::buildcache::catalog::{short, sort_version};
use crate::buildcache::{Catalog, CatalogEntry};
use crate::cli::ListArgs;
use crate::spec::Version;

/// One row of `list --json`.
#[derive(Debug, Serialize)]
pub struct ListedSpec {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub compiler: Option<String>,
    pub arch: String,
    pub mirror: String,
    pub layout: String,
    pub in_buildcache: bool,
    pub external: bool,
}

pub fn arch_string(entry: &CatalogEntry) -> String {
    entry
        .spec
        .arch
        .as_ref()
        .map(|a| format!("{}-{}-{}", a.platform, a.os, a.target))
        .unwrap_or_default()
}

/// Sorted by name, version descending, then mirror order. Each distinct version is parsed once
/// and ranked, so sorting tens of thousands of rows compares integers.
pub fn sorted_rows(entries: Vec<&CatalogEntry>) -> Vec<&CatalogEntry> {
    let mut versions: Vec<(&str, Option<Version>)> = {
        let mut seen = std::collections::HashSet::new();
        entries
            .iter()
            .map(|e| e.spec.version.as_str())
            .filter(|v| seen.insert(*v))
            .map(|v| (v, sort_version(v)))
            .collect()
    };
    versions.sort_by(|a, b| a.1.cmp(&b.1));
    let mut rank: HashMap<&str, u32> = HashMap::with_capacity(versions.len());
    let mut r = 0u32;
    for i in 0..versions.len() {
        if i > 0 && versions[i - 1].1 != versions[i].1 {
            r += 1;
        }
        rank.insert(versions[i].0, r);
    }
    let mut keyed: Vec<(&CatalogEntry, u32)> = entries
        .into_iter()
        .map(|e| (e, rank.get(e.spec.version.as_str()).copied().unwrap_or(0)))
        .collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.spec
            .name
            .cmp(&b.0.spec.name)
            .then_with(|| b.1.cmp(&a.1))
            .then_with(|| a.0.mirror.cmp(&b.0.mirror))
            .then_with(|| a.0.layout.cmp(&b.0.layout))
            .then_with(|| a.0.spec.hash.cmp(&b.0.spec.hash))
    });
    keyed.into_iter().map(|(e, _)| e).collect()
}

pub async fn run(ctx: &Context, args: &ListArgs) -> CmdResult {
    if let Some(root) = &args.root {
        return list_root(ctx, root, &args.query);
    }
    let query = if args.query.is_empty() {
        None
    } else {
        Some(parse_query(&args.query)?)
    };
    // Leaked on purpose: a large catalog takes longer to free than the rest of the command, and
    // the process ends right after this command.
    let catalog: &'static Catalog = Box::leak(Box::new(ctx.catalog(&args.mirrors).await?));
    info!("the index is not signed: listing does not verify anything; `show` and `install` do");
    let entries: Vec<&CatalogEntry> = match &query {
        Some(q) => catalog.matching(q, args.all),
        None => catalog
            .entries()
            .iter()
            .filter(|e| args.all || e.in_buildcache)
            .collect(),
    };
    if entries.is_empty() {
        if let Some(q) = &query {
            return Err(Failure::new(
                exit::NO_MATCH,
                format!("nothing in the mirrors matches `{q}`; run `sf-cache list` without a query to see what they offer"),
            ));
        }
    }
    let rows = sorted_rows(entries);
    let listed: Vec<ListedSpec> = rows
        .iter()
        .map(|e| ListedSpec {
            name: e.spec.name.clone(),
            version: e.spec.version.clone(),
            hash: e.spec.hash.clone(),
            compiler: catalog.compiler_of(&e.spec),
            arch: arch_string(e),
            mirror: catalog.mirrors[e.mirror].name.clone(),
            layout: e.layout.to_string(),
            in_buildcache: e.in_buildcache,
            external: e.is_external(),
        })
        .collect();
    ctx.out.rows(
        &listed,
        &["NAME", "VERSION", "COMPILER", "ARCH", "HASH", "MIRROR"],
        |l| {
            let mut name = l.name.clone();
            if l.external {
                name.push_str(" [external]");
            } else if !l.in_buildcache {
                name.push_str(" [no binary]");
            }
            vec![
                name,
                l.version.clone(),
                l.compiler.clone().unwrap_or_else(|| "-".into()),
                l.arch.clone(),
                short(&l.hash).to_string(),
                l.mirror.clone(),
            ]
        },
    )?;
    Ok(())
}

#[derive(Serialize)]
struct InstalledRow {
    name: String,
    version: String,
    hash: String,
    prefix: String,
    explicit: bool,
    mirror: String,
    signature: String,
}

fn list_root(ctx: &Context, dir: &std::path::Path, query: &[String]) -> CmdResult {
    let q = if query.is_empty() {
        None
    } else {
        Some(parse_query(query)?)
    };
    let root = super::roots::open_root(dir)?;
    let rows: Vec<InstalledRow> = super::roots::matching(&root, q.as_ref())
        .into_iter()
        .map(|(p, r)| InstalledRow {
            name: r.name,
            version: r.version,
            hash: r.hash,
            prefix: p.display().to_string(),
            explicit: r.explicit,
            mirror: r.mirror,
            signature: r.signature_status,
        })
        .collect();
    if rows.is_empty() && q.is_some() {
        return Err(Failure::new(
            exit::NO_MATCH,
            format!("nothing installed in {} matches the query", dir.display()),
        ));
    }
    ctx.out.rows(
        &rows,
        &["NAME", "VERSION", "HASH", "INSTALLED AS", "PREFIX"],
        |r| {
            vec![
                r.name.clone(),
                r.version.clone(),
                short(&r.hash).to_string(),
                if r.explicit { "explicit" } else { "dependency" }.to_string(),
                r.prefix.clone(),
            ]
        },
    )?;
    Ok(())
}
