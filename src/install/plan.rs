//! The install plan: which packages of the requested closures are already installed, which are
//! externals the host must provide, and which must be fetched — each with its verified metadata.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::projection::Projection;
use super::receipt::Receipt;
use crate::buildcache::catalog::is_link_or_run;
use crate::buildcache::{BuildcacheError, Catalog, ClosureNode, TrustContext, VerifiedEntry};
use crate::spec::{DepTypes, Spec};

/// What happens to one node of the closure.
#[derive(Debug, Clone)]
pub enum Action {
    /// Provided by the host at this path (never downloaded).
    External { path: Option<String> },
    /// Already in the root with the same hash.
    Installed,
    /// To fetch, unpack, relocate and commit.
    Install { entry: Box<VerifiedEntry> },
}

#[derive(Debug, Clone)]
pub struct PlanItem {
    pub node: ClosureNode,
    pub spec: Spec,
    /// Final prefix (empty for externals).
    pub prefix: PathBuf,
    pub explicit: bool,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Install order: dependencies first.
    pub items: Vec<PlanItem>,
}

/// One package of a lockfile: exactly what was planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub explicit: bool,
    pub mirror: String,
    pub layout: String,
    pub metadata_path: String,
    pub metadata_digest: String,
    pub tarball_digest: String,
    pub tarball_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockfile {
    pub sf_cache_lockfile: u32,
    pub packages: Vec<LockedPackage>,
}

impl Plan {
    /// Resolve `roots` (full hashes) into a plan for the install root `root_dir` (absolute).
    pub async fn build(
        catalog: &Catalog,
        trust: &TrustContext,
        root_dir: &std::path::Path,
        projection: &Projection,
        roots: &[String],
    ) -> Result<Plan, BuildcacheError> {
        let mut order: Vec<ClosureNode> = Vec::new();
        let mut seen = HashSet::new();
        for hash in roots {
            for node in catalog.closure(hash)? {
                if seen.insert(node.hash.clone()) {
                    order.push(node);
                }
            }
        }
        let explicit: HashSet<&String> = roots.iter().collect();
        let mut to_verify = Vec::new();
        let mut items = Vec::new();
        for node in order {
            let spec = catalog.spec(&node.hash).cloned().ok_or_else(|| {
                BuildcacheError::MissingDependency {
                    dependent: "(plan)".into(),
                    dependency: format!("/{}", node.hash),
                }
            })?;
            let is_explicit = explicit.contains(&node.hash);
            if node.external {
                let path = spec.external.as_ref().and_then(|e| e.path.clone());
                items.push(PlanItem {
                    node,
                    spec,
                    prefix: PathBuf::new(),
                    explicit: is_explicit,
                    action: Action::External { path },
                });
                continue;
            }
            let prefix = root_dir.join(projection.render(&spec));
            let installed = Receipt::read(&prefix).is_ok_and(|r| r.hash == node.hash);
            if !installed {
                to_verify.push(items.len());
            }
            items.push(PlanItem {
                node,
                spec,
                prefix,
                explicit: is_explicit,
                action: Action::Installed,
            });
        }
        let verified = futures_util::future::join_all(
            to_verify
                .iter()
                .map(|&i| VerifiedEntry::fetch_any(catalog, &items[i].node.hash, trust)),
        )
        .await;
        for (&i, v) in to_verify.iter().zip(verified) {
            items[i].action = Action::Install {
                entry: Box::new(v?),
            };
        }
        Ok(Plan { items })
    }

    pub fn to_install(&self) -> impl Iterator<Item = (&PlanItem, &VerifiedEntry)> {
        self.items.iter().filter_map(|i| match &i.action {
            Action::Install { entry } => Some((i, entry.as_ref())),
            _ => None,
        })
    }

    pub fn lockfile(&self, catalog: &Catalog) -> Lockfile {
        Lockfile {
            sf_cache_lockfile: 1,
            packages: self
                .to_install()
                .map(|(item, e)| locked(item, e, catalog))
                .collect(),
        }
    }
}

pub fn locked(item: &PlanItem, e: &VerifiedEntry, catalog: &Catalog) -> LockedPackage {
    LockedPackage {
        name: item.node.name.clone(),
        version: item.node.version.clone(),
        hash: item.node.hash.clone(),
        explicit: item.explicit,
        mirror: catalog.mirrors[e.mirror].url.clone(),
        layout: e.layout.to_string(),
        metadata_path: e.metadata_path.clone(),
        metadata_digest: e.metadata_digest.clone(),
        tarball_digest: format!("{}:{}", e.tarball.algorithm, e.tarball.digest),
        tarball_size: e.tarball.size,
    }
}

/// Specs whose prefixes a package's binaries may mention, in Spack's order: the package, its
/// transitive link dependencies breadth-first, then its direct run dependencies; externals out.
pub fn specs_to_relocate<'a>(catalog: &'a Catalog, spec: &'a Spec) -> Vec<&'a Spec> {
    let mut out: Vec<&Spec> = vec![spec];
    let mut seen: HashSet<&str> = HashSet::from([spec.hash.as_str()]);
    let mut queue = std::collections::VecDeque::from([spec]);
    while let Some(s) = queue.pop_front() {
        for edge in s
            .dependencies
            .iter()
            .filter(|e| e.deptypes.contains(DepTypes::LINK))
        {
            if let Some(dep) = catalog.spec(&edge.hash) {
                if seen.insert(dep.hash.as_str()) {
                    queue.push_back(dep);
                    out.push(dep);
                }
            }
        }
    }
    for edge in spec
        .dependencies
        .iter()
        .filter(|e| e.deptypes.contains(DepTypes::RUN))
    {
        if let Some(dep) = catalog.spec(&edge.hash) {
            if seen.insert(dep.hash.as_str()) {
                out.push(dep);
            }
        }
    }
    out.retain(|s| s.external.is_none());
    out
}

/// Dependencies recorded in a receipt: link/run, non-external.
pub fn runtime_dependencies(catalog: &Catalog, spec: &Spec) -> Vec<String> {
    spec.dependencies
        .iter()
        .filter(|e| is_link_or_run(e))
        .filter(|e| catalog.spec(&e.hash).is_some_and(|s| s.external.is_none()))
        .map(|e| e.hash.clone())
        .collect()
}

/// Compare a fresh plan with a lockfile: same packages, same digests.
pub fn check_against_lockfile(lock: &Lockfile, fresh: &Lockfile) -> Result<(), String> {
    let want: HashMap<&str, &LockedPackage> =
        lock.packages.iter().map(|p| (p.hash.as_str(), p)).collect();
    for p in &fresh.packages {
        match want.get(p.hash.as_str()) {
            None => {
                return Err(format!(
                    "{}@{}/{} is not in the lockfile",
                    p.name, p.version, p.hash
                ))
            }
            Some(l) => {
                if l.metadata_digest != p.metadata_digest || l.tarball_digest != p.tarball_digest {
                    return Err(format!(
                        "{}@{}/{} differs from the lockfile (metadata {} vs {}, tarball {} vs {})",
                        p.name,
                        p.version,
                        p.hash,
                        p.metadata_digest,
                        l.metadata_digest,
                        p.tarball_digest,
                        l.tarball_digest
                    ));
                }
            }
        }
    }
    Ok(())
}
