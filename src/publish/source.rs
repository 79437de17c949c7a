//! Finding what to publish: an installed prefix, the install root it belongs to (an sf-cache
//! root with receipts, or a Spack store with its `.spack-db/`), and the prefixes of the packages
//! installed next to it (by DAG hash).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::PublishError;
use crate::buildcache::writer::{default_projection, spec_blob_json};
use crate::install::projection::Projection;
use crate::install::receipt::{Receipt, RECEIPT_FILE};
use crate::spec::{DepTypes, Spec, SpecFile};

/// Who installed a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// sf-cache (`.spack/sf-cache-receipt.json`, root holds `.sf-cache/`).
    SfCache,
    /// Spack (the store root holds `.spack-db/index.json`).
    Spack,
}

/// The install root of a prefix and every package installed in it, by DAG hash.
#[derive(Debug, Clone)]
pub struct InstalledRoot {
    /// The root directory: the store root that is the build path of its packages.
    pub dir: PathBuf,
    pub kind: SourceKind,
    /// DAG hash → prefix (as recorded by the receipt or the Spack database).
    pub prefixes: HashMap<String, PathBuf>,
    /// sf-cache roots: the root's projection (used to guess a prefix that is not installed).
    pub projection: Option<Projection>,
}

/// One installed prefix ready to be packed.
#[derive(Debug, Clone)]
pub struct Source {
    /// Absolute, lexically normalised prefix.
    pub prefix: PathBuf,
    pub specfile: SpecFile,
    /// Index of the [`InstalledRoot`] this prefix belongs to (in the caller's list).
    pub root: usize,
}

impl Source {
    pub fn spec(&self) -> &Spec {
        self.specfile.root()
    }

    /// The non-external link/run dependencies of the package, transitively (each once, in
    /// breadth-first order): what a consumer installs with it.
    pub fn closure(&self) -> Vec<&Spec> {
        let root = self.spec();
        let mut out: Vec<&Spec> = Vec::new();
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(s) = queue.pop_front() {
            for e in &s.dependencies {
                if !e.deptypes.intersects(DepTypes::LINK_RUN)
                    || e.hash == root.hash
                    || out.iter().any(|d| d.hash == e.hash)
                {
                    continue;
                }
                let Some(d) = self.specfile.find(&e.hash) else {
                    continue;
                };
                if d.external.is_some() {
                    continue;
                }
                out.push(d);
                queue.push_back(d);
            }
        }
        out
    }
}

fn normalise(p: &Path) -> Result<PathBuf, PublishError> {
    crate::install::root::absolute_root(p).map_err(|e| PublishError::NotAPrefix {
        path: p.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Read `PREFIX/.spack/spec.json` (it must exist and parse).
pub fn read_specfile(prefix: &Path) -> Result<SpecFile, PublishError> {
    let spec_path = prefix.join(".spack/spec.json");
    let bytes = std::fs::read(&spec_path).map_err(|e| PublishError::NotAPrefix {
        path: prefix.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            "it has no .spack/spec.json (give the prefix of a package installed by Spack or sf-cache)".into()
        } else {
            format!("cannot read {}: {e}", spec_path.display())
        },
    })?;
    let (_, sf) = spec_blob_json(&bytes, &spec_path)?;
    Ok(sf)
}

/// Locate the install root of `prefix` (an sf-cache root or a Spack store) and load what is
/// installed in it.
pub fn find_root(prefix: &Path) -> Result<InstalledRoot, PublishError> {
    let prefix = normalise(prefix)?;
    let sf_cache = prefix.join(RECEIPT_FILE).is_file();
    for dir in prefix.ancestors().skip(1) {
        if sf_cache && dir.join(".sf-cache").is_dir() {
            return load_sf_cache_root(dir);
        }
        if !sf_cache && dir.join(".spack-db").is_dir() {
            return load_spack_store(dir);
        }
    }
    Err(PublishError::NoRoot {
        path: prefix.clone(),
        reason: if sf_cache {
            "it has an sf-cache receipt but no directory above it holds `.sf-cache/`".into()
        } else {
            "no directory above it holds a Spack database (`.spack-db/`)".into()
        },
    })
}

fn load_sf_cache_root(dir: &Path) -> Result<InstalledRoot, PublishError> {
    let projection = crate::install::root::existing_projection(dir)
        .map_err(|e| PublishError::NoRoot {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?
        .unwrap_or_default();
    let depth = projection.as_str().split('/').count();
    let mut dirs = vec![dir.to_path_buf()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for d in dirs {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(e.path());
                }
            }
        }
        dirs = next;
    }
    let mut prefixes = HashMap::new();
    for d in dirs {
        if !d.join(RECEIPT_FILE).is_file() {
            continue;
        }
        match Receipt::read(&d) {
            Ok(r) => {
                prefixes.insert(r.hash.clone(), PathBuf::from(&r.prefix));
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    Ok(InstalledRoot {
        dir: dir.to_path_buf(),
        kind: SourceKind::SfCache,
        prefixes,
        projection: Some(projection),
    })
}

fn load_spack_store(dir: &Path) -> Result<InstalledRoot, PublishError> {
    let db = dir.join(".spack-db/index.json");
    let bad = |reason: String| PublishError::SpackDb {
        path: db.clone(),
        reason,
    };
    let bytes = std::fs::read(&db).map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let installs = v
        .get("database")
        .and_then(|d| d.get("installs"))
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `database.installs` object".into()))?;
    let mut prefixes = HashMap::new();
    for (hash, rec) in installs {
        if rec.get("installed").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        if let Some(p) = rec.get("path").and_then(Value::as_str) {
            prefixes.insert(hash.clone(), PathBuf::from(p));
        }
    }
    Ok(InstalledRoot {
        dir: dir.to_path_buf(),
        kind: SourceKind::Spack,
        prefixes,
        projection: None,
    })
}

impl InstalledRoot {
    /// The prefix of `spec` as installed in this root, if it is.
    pub fn prefix_of(&self, hash: &str) -> Option<&Path> {
        self.prefixes.get(hash).map(PathBuf::as_path)
    }

    /// Where `spec` would be in this root (for a dependency that is not installed here).
    pub fn guessed_prefix(&self, spec: &Spec) -> Option<PathBuf> {
        match &self.projection {
            Some(p) => Some(self.dir.join(p.render(spec))),
            None => default_projection(spec).map(|p| self.dir.join(p)),
        }
    }

    /// Whether the root is padded (its path holds Spack's `__spack_path_placeholder__`).
    pub fn is_padded(&self) -> bool {
        self.dir
            .to_string_lossy()
            .contains("__spack_path_placeholder__")
    }
}

/// Load a prefix given on the command line or found as a dependency.
pub fn load_source(prefix: &Path, roots: &mut Vec<InstalledRoot>) -> Result<Source, PublishError> {
    let prefix = normalise(prefix)?;
    if !prefix.is_dir() {
        return Err(PublishError::NotAPrefix {
            path: prefix,
            reason: "no such directory".into(),
        });
    }
    let specfile = read_specfile(&prefix)?;
    let root = match roots.iter().position(|r| prefix.starts_with(&r.dir)) {
        Some(i) => i,
        None => {
            roots.push(find_root(&prefix)?);
            roots.len() - 1
        }
    };
    Ok(Source {
        prefix,
        specfile,
        root,
    })
}
