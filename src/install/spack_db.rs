//! A Spack database for an sf-cache root: `<root>/.spack-db/index.json` as Spack 1.x writes it
//! (database version 8), so that a site's Spack can use the root as an upstream
//! (`upstreams.yaml`: `install_tree: <root>`): `spack find` lists the installs, `spack load`
//! works, and the concretizer reuses them.
//!
//! The database is rebuilt from the receipts and each prefix's `.spack/spec.json` (the whole DAG
//! of the package, as the build cache shipped it) after every change of the root — install,
//! uninstall, relocate — and by `sf-cache reindex`, under the root's lock, written atomically;
//! sf-cache stays the only writer. As Spack does, the database tracks every node of the installed
//! DAGs: packages installed here (`installed: true`, their prefix), externals (`installed: true`,
//! the external prefix) and build-only dependencies that were never installed
//! (`installed: false`, the prefix they would have); `ref_count` counts the records that depend
//! on a record. Spack's lock file is created beside the index (Spack never locks an upstream).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Map, Value};
use thiserror::Error;

use super::projection::Projection;
use super::receipt::Receipt;
use crate::spec::Spec;

/// The database directory, index, lock and verifier, as Spack names them.
pub const DB_DIR: &str = ".spack-db";
pub const INDEX_FILE: &str = "index.json";
pub const LOCK_FILE: &str = "lock";
pub const VERIFIER_FILE: &str = "index_verifier";

#[derive(Debug, Error)]
pub enum SpackDbError {
    #[error("cannot write the Spack database {}: {source}; check the root's permissions, then run `sf-cache reindex --root {}`", path.display(), root.display())]
    Write {
        path: PathBuf,
        root: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
}

/// What [`write`] recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DbSummary {
    pub path: String,
    /// Database version written (`8`; `7` when a package's spec predates spec format 5).
    pub version: String,
    pub records: usize,
    pub installed: usize,
    pub externals: usize,
    /// Dependencies that were never installed (build-only).
    pub missing: usize,
}

/// The nodes of a prefix's `.spack/spec.json` by DAG hash, and the spec format.
fn spec_file_nodes(prefix: &Path) -> Option<(BTreeMap<String, Value>, u64)> {
    let text = std::fs::read(prefix.join(".spack/spec.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    let spec = v.get("spec")?;
    let format = spec
        .get("_meta")
        .and_then(|m| m.get("version"))
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let mut out = BTreeMap::new();
    for n in spec.get("nodes")?.as_array()? {
        if let Some(h) = n.get("hash").and_then(Value::as_str) {
            out.insert(h.to_string(), n.clone());
        }
    }
    Some((out, format))
}

fn edges(node: &Value) -> Vec<String> {
    node.get("dependencies")
        .and_then(Value::as_array)
        .map(|deps| {
            deps.iter()
                .filter_map(|d| d.get("hash").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The database of the packages `installed` in `root` (laid out with `projection`).
pub fn build(
    root: &Path,
    projection: &Projection,
    installed: &[(PathBuf, Receipt)],
) -> (Value, DbSummary) {
    // Every node known from the installed packages' spec files.
    let mut nodes: BTreeMap<String, (Value, u64)> = BTreeMap::new();
    for (prefix, r) in installed {
        match spec_file_nodes(prefix) {
            Some((all, format)) => {
                for (h, n) in all {
                    nodes.entry(h).or_insert((n, format));
                }
            }
            None => {
                nodes.entry(r.hash.clone()).or_insert((r.spec.clone(), 5));
            }
        }
    }
    let installed_at: BTreeMap<&str, (&PathBuf, &Receipt)> = installed
        .iter()
        .map(|(p, r)| (r.hash.as_str(), (p, r)))
        .collect();
    // The records: the installed packages and, transitively, every node they depend on.
    let mut wanted: Vec<String> = installed.iter().map(|(_, r)| r.hash.clone()).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut records: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut summary = DbSummary::default();
    let mut old_format = false;
    while let Some(h) = wanted.pop() {
        if !seen.insert(h.clone()) {
            continue;
        }
        let Some((node, format)) = nodes.get(&h) else {
            // A dependency no spec file describes: Spack warns about it when reading; nothing to
            // record.
            continue;
        };
        old_format |= *format < 5;
        wanted.extend(edges(node));
        let mut rec = Map::new();
        rec.insert("spec".into(), node.clone());
        let time;
        let (path, is_installed, explicit) = if let Some((prefix, r)) = installed_at.get(h.as_str())
        {
            summary.installed += 1;
            time = r.installed_at_unix as f64;
            (Value::from(prefix.display().to_string()), true, r.explicit)
        } else if let Some(ext) = node.get("external").and_then(|e| e.get("path")) {
            summary.externals += 1;
            time = 0.0;
            (ext.clone(), true, false)
        } else {
            summary.missing += 1;
            time = 0.0;
            let would_be = Spec::from_node(node, *format as u32)
                .ok()
                .map(|s| Value::from(root.join(projection.render(&s)).display().to_string()))
                .unwrap_or(Value::Null);
            (would_be, false, false)
        };
        rec.insert("path".into(), path);
        rec.insert("installed".into(), Value::from(is_installed));
        rec.insert("ref_count".into(), Value::from(0));
        rec.insert("explicit".into(), Value::from(explicit));
        rec.insert("installation_time".into(), json!(time));
        rec.insert("in_buildcache".into(), Value::from(false));
        records.insert(h, rec);
    }
    // ref_count: the records that depend on a record (every dependency type, as Spack counts).
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for rec in records.values() {
        for d in edges(&rec["spec"]) {
            if records.contains_key(&d) {
                *counts.entry(d).or_default() += 1;
            }
        }
    }
    for (h, rec) in records.iter_mut() {
        rec.insert(
            "ref_count".into(),
            Value::from(counts.get(h).copied().unwrap_or(0)),
        );
    }
    // Times of externals and never-installed dependencies: those of their first dependent, as
    // Spack records the time of the install that added them.
    let first_time = installed
        .iter()
        .map(|(_, r)| r.installed_at_unix as f64)
        .fold(f64::INFINITY, f64::min);
    for rec in records.values_mut() {
        if rec["installation_time"].as_f64() == Some(0.0) && first_time.is_finite() {
            rec.insert("installation_time".into(), json!(first_time));
        }
    }
    summary.records = records.len();
    summary.version = if old_format { "7" } else { "8" }.into();
    summary.path = root.join(DB_DIR).join(INDEX_FILE).display().to_string();
    let installs: Map<String, Value> = records
        .into_iter()
        .map(|(h, r)| (h, Value::Object(r)))
        .collect();
    let db = json!({"database": {"version": summary.version, "installs": installs}});
    (db, summary)
}

/// Rebuild and write the database of `root` from what is installed there. The caller holds
/// the root's lock.
pub fn write(
    root: &Path,
    projection: &Projection,
    installed: &[(PathBuf, Receipt)],
) -> Result<DbSummary, SpackDbError> {
    let (db, summary) = build(root, projection, installed);
    let dir = root.join(DB_DIR);
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        let root = root.to_path_buf();
        move |source| SpackDbError::Write { path, root, source }
    };
    std::fs::create_dir_all(&dir).map_err(werr(&dir))?;
    let index = dir.join(INDEX_FILE);
    let bytes = serde_json::to_vec(&db).map_err(|e| SpackDbError::Write {
        path: index.clone(),
        root: root.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let verifier = dir.join(VERIFIER_FILE);
    let lock = dir.join(LOCK_FILE);
    // Unchanged: nothing is rewritten (a no-op install leaves the root as it was).
    if std::fs::read(&index).is_ok_and(|old| old == bytes) && verifier.is_file() && lock.is_file() {
        return Ok(summary);
    }
    use std::io::Write;
    crate::fs::write_atomic_with(
        &index,
        crate::fs::Mode::Exact(0o644),
        ".sf-cache-tmp-",
        |f| f.write_all(&bytes),
    )
    .map_err(werr(&index))?;
    // A new verifier tells a running Spack the index changed (Spack writes a random one each
    // time; the index's own digest changes exactly when the index does, and keeps two roots
    // with the same installs identical).
    let token = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    crate::fs::write_atomic_with(
        &verifier,
        crate::fs::Mode::Exact(0o644),
        ".sf-cache-tmp-",
        |f| f.write_all(token.as_bytes()),
    )
    .map_err(werr(&verifier))?;
    if !lock.exists() {
        std::fs::write(&lock, b"").map_err(werr(&lock))?;
    }
    Ok(summary)
}

/// Rewrite the database of an open root (whose lock the caller holds) after a change. A
/// failure does not undo the change: it is logged with the command that repairs the database.
pub fn refresh(root: &super::root::InstallRoot) -> Option<DbSummary> {
    match write(&root.dir, &root.projection, &root.installed()) {
        Ok(s) => {
            tracing::debug!("Spack database {}: {} records", s.path, s.records);
            Some(s)
        }
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

/// Read a database back (for checks and tests): the `installs` table.
pub fn read(root: &Path) -> Result<Map<String, Value>, SpackDbError> {
    let path = root.join(DB_DIR).join(INDEX_FILE);
    let bad = |reason: String| SpackDbError::Read {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let db = v
        .get("database")
        .ok_or_else(|| bad("no `database`".into()))?;
    match db.get("version").and_then(Value::as_str) {
        Some("7" | "8") => {}
        other => return Err(bad(format!("database version {other:?}, not 7 or 8"))),
    }
    db.get("installs")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| bad("no `installs`".into()))
}

#[cfg(test)]
mod tests;
