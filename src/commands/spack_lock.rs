//! `install --spack-lock FILE`: a Spack environment lockfile installed by exact hash. Reads and
//! checks the lockfile, finds every locked package the mirrors lack before anything is
//! downloaded (or builds them with `--build-on-miss`), and checks the verified specs of the plan
//! against the lockfile's nodes. A shared helper of `install_flow`, not a command.

use std::path::Path;

use super::{exit, Context, Failure};
use crate::buildcache::Catalog;
use crate::cli::{BuildFlags, MirrorArgs};
use crate::install::plan::{Action, Plan};
use crate::spec::dag_hash;
use crate::spec::spack_lock::{SpackLock, SpackLockError};

/// Read and check a `spack.lock`; every failure is one line naming the file.
pub fn read(path: &Path) -> Result<SpackLock, Failure> {
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("cannot read Spack lockfile {}: {e}", path.display()),
        )
    })?;
    SpackLock::parse(&bytes).map_err(|e| {
        let code = match e {
            SpackLockError::NotLockfile(_) | SpackLockError::Version(_) => exit::USAGE,
            _ => exit::VERIFICATION,
        };
        Failure::new(code, format!("{}: {e}", path.display()))
    })
}

/// The locked packages of the roots' link/run closures that no mirror has a binary of
/// (externals come from the host and are never missing).
fn missing<'a>(lock: &'a SpackLock, catalog: &Catalog) -> Vec<&'a crate::spec::Spec> {
    lock.closure()
        .into_iter()
        .map(|n| &n.spec)
        .filter(|s| s.external.is_none() && catalog.sources(&s.hash).is_empty())
        .collect()
}

fn list(specs: &[&crate::spec::Spec]) -> String {
    specs
        .iter()
        .map(|s| format!("{}@{}/{}", s.name, s.version, s.hash))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The root hashes to install. Before anything is downloaded: every locked package missing from
/// the mirrors is listed in one error (exit 4), or with `build_on_miss` built from source and
/// found again by its exact hash.
pub async fn roots(
    ctx: &Context,
    path: &Path,
    lock: &SpackLock,
    catalog: &mut Catalog,
    mirrors: &MirrorArgs,
    build_on_miss: bool,
    build: &BuildFlags,
) -> Result<Vec<String>, Failure> {
    let absent = missing(lock, catalog);
    if !absent.is_empty() && build_on_miss {
        for spec in &absent {
            let query = format!("{}@{}", spec.name, spec.version);
            *catalog = super::source_build::on_miss(ctx, &query, mirrors, build).await?;
        }
        let still = missing(lock, catalog);
        if !still.is_empty() {
            return Err(Failure::new(
                exit::NO_MATCH,
                format!(
                    "{}: built from source, but the builds did not reproduce the locked hashes of {}: build them with the Spack that wrote the lockfile and publish them to a mirror",
                    path.display(),
                    list(&still)
                ),
            ));
        }
    } else if !absent.is_empty() {
        return Err(Failure::new(
            exit::NO_MATCH,
            format!(
                "{}: {} locked package(s) in no mirror: {}; add a mirror that has them or pass --build-on-miss",
                path.display(),
                absent.len(),
                list(&absent)
            ),
        ));
    }
    Ok(lock.roots.iter().map(|r| r.hash.clone()).collect())
}

/// Every package the plan downloads is the lockfile's node: the verified spec of its signed
/// metadata recomputes to the locked DAG hash. Externals and installed packages were matched by
/// hash already.
pub fn check_plan(path: &Path, lock: &SpackLock, plan: &Plan) -> Result<(), Failure> {
    for item in &plan.items {
        let hash = &item.node.hash;
        let Some(node) = lock.node(hash) else {
            return Err(Failure::new(
                exit::VERIFICATION,
                format!(
                    "{}: the mirrors' closure has {}@{}/{hash}, which the lockfile does not pin: the mirror's spec differs from the lockfile's",
                    path.display(),
                    item.node.name,
                    item.node.version
                ),
            ));
        };
        let Action::Install { entry } = &item.action else {
            continue;
        };
        let raw = entry
            .specfile
            .raw_nodes
            .iter()
            .find(|n| n.get("hash").and_then(|h| h.as_str()) == Some(hash.as_str()));
        let got = raw.and_then(dag_hash::recompute);
        let same = match got.as_deref() {
            Some(h) => h == hash,
            // A node form that cannot reproduce its hash: compare the parsed nodes.
            None => entry.specfile.nodes.iter().any(|s| s == &node.spec),
        };
        if !same {
            return Err(Failure::new(
                exit::VERIFICATION,
                format!(
                    "{}: the signed spec of {}@{}/{hash} from the mirror does not match the lockfile's node (recomputes to /{}); the mirror holds a different build",
                    path.display(),
                    node.spec.name,
                    node.spec.version,
                    got.unwrap_or_else(|| "?".into())
                ),
            ));
        }
    }
    Ok(())
}
