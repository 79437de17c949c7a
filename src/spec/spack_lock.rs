//! A Spack environment lockfile (`spack.lock`, lockfile versions 5 and 6): its roots and the
//! concrete nodes they pin, keyed by DAG hash.
//!
//! Lockfile version 5 (Spack 0.21–0.22) carries spec format 4 nodes, version 6 (Spack 0.23–1.x)
//! spec format 5 nodes. Every node is checked when read: its key equals its `hash`, and the hash
//! recomputes from the node (when the node's form allows it, see [`super::dag_hash::recompute`]).

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use thiserror::Error;

use super::{dag_hash, DepTypes, Spec, SpecError};

/// Lockfile versions this reader understands, and the spec format of their nodes.
pub const SUPPORTED: [(u32, u32); 2] = [(5, 4), (6, 5)];

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SpackLockError {
    #[error("not a Spack lockfile ({0}): give the `spack.lock` of a concretized environment")]
    NotLockfile(String),
    #[error(
        "lockfile version {0} is not supported (supported: 5, 6): write it again with Spack 0.21 to 1.x (`spack -e ENV concretize --force`)"
    )]
    Version(u64),
    #[error("root `{spec}` /{hash} has no node in concrete_specs: the lockfile is damaged; concretize the environment again")]
    MissingRoot { spec: String, hash: String },
    #[error("{dependent} depends on {name} /{hash}, which has no node in concrete_specs: the lockfile is damaged; concretize the environment again")]
    MissingNode {
        dependent: String,
        name: String,
        hash: String,
    },
    #[error("node {name}@{version} is filed under /{key} but its hash is /{hash}: the lockfile was edited; concretize the environment again")]
    KeyMismatch {
        name: String,
        version: String,
        key: String,
        hash: String,
    },
    #[error("node {name}@{version} /{stored} does not match its content (DAG hash recomputes to /{computed}): the lockfile was edited; concretize the environment again")]
    HashMismatch {
        name: String,
        version: String,
        stored: String,
        computed: String,
    },
    #[error("node /{key}: {source}")]
    Node { key: String, source: SpecError },
}

/// One root of the environment: the user's spec text and the hash it was concretized to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRoot {
    pub spec: String,
    pub hash: String,
}

/// One concrete node of the lockfile.
#[derive(Debug, Clone, PartialEq)]
pub struct LockNode {
    pub spec: Spec,
    /// The node dict as read (key order kept), for DAG hash checks.
    pub raw: Value,
}

/// A parsed, checked `spack.lock`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpackLock {
    pub lockfile_version: u32,
    pub specfile_version: u32,
    pub spack_version: Option<String>,
    pub roots: Vec<LockRoot>,
    pub nodes: BTreeMap<String, LockNode>,
}

impl SpackLock {
    pub fn parse(bytes: &[u8]) -> Result<SpackLock, SpackLockError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| SpackLockError::NotLockfile(format!("not JSON: {e}")))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<SpackLock, SpackLockError> {
        let not = |m: &str| SpackLockError::NotLockfile(m.to_string());
        let meta = value.get("_meta").ok_or_else(|| not("no `_meta`"))?;
        if meta.get("file-type").and_then(Value::as_str) != Some("spack-lockfile") {
            return Err(not("`_meta.file-type` is not `spack-lockfile`"));
        }
        let version = meta
            .get("lockfile-version")
            .and_then(Value::as_u64)
            .ok_or_else(|| not("no `_meta.lockfile-version`"))?;
        let specfile_version = SUPPORTED
            .iter()
            .find(|(l, _)| u64::from(*l) == version)
            .map(|(_, s)| *s)
            .ok_or(SpackLockError::Version(version))?;
        let spack_version = value
            .get("spack")
            .and_then(|s| s.get("version"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let roots = value
            .get("roots")
            .and_then(Value::as_array)
            .ok_or_else(|| not("no `roots` list"))?
            .iter()
            .map(|r| {
                let hash = r.get("hash").and_then(Value::as_str);
                let spec = r.get("spec").and_then(Value::as_str);
                match (hash, spec) {
                    (Some(h), Some(s)) => Ok(LockRoot {
                        spec: s.to_string(),
                        hash: h.to_string(),
                    }),
                    _ => Err(not("a root lacks `hash` or `spec`")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let concrete = value
            .get("concrete_specs")
            .and_then(Value::as_object)
            .ok_or_else(|| not("no `concrete_specs` object"))?;
        let mut nodes = BTreeMap::new();
        for (key, raw) in concrete {
            let mut spec =
                Spec::from_node(raw, specfile_version).map_err(|source| SpackLockError::Node {
                    key: key.clone(),
                    source,
                })?;
            if spec.hash.is_empty() {
                spec.hash = key.clone();
            }
            if &spec.hash != key {
                return Err(SpackLockError::KeyMismatch {
                    name: spec.name,
                    version: spec.version,
                    key: key.clone(),
                    hash: spec.hash,
                });
            }
            if let Some(computed) = dag_hash::recompute(raw) {
                if computed != spec.hash {
                    return Err(SpackLockError::HashMismatch {
                        name: spec.name,
                        version: spec.version,
                        stored: spec.hash,
                        computed,
                    });
                }
            }
            nodes.insert(
                key.clone(),
                LockNode {
                    spec,
                    raw: raw.clone(),
                },
            );
        }
        let lock = SpackLock {
            lockfile_version: version as u32,
            specfile_version,
            spack_version,
            roots,
            nodes,
        };
        lock.check_edges()?;
        Ok(lock)
    }

    /// Every root and every dependency edge (of any type) names a node of the file.
    fn check_edges(&self) -> Result<(), SpackLockError> {
        for r in &self.roots {
            if !self.nodes.contains_key(&r.hash) {
                return Err(SpackLockError::MissingRoot {
                    spec: r.spec.clone(),
                    hash: r.hash.clone(),
                });
            }
        }
        for n in self.nodes.values() {
            for e in &n.spec.dependencies {
                if !self.nodes.contains_key(&e.hash) {
                    return Err(SpackLockError::MissingNode {
                        dependent: n.spec.to_string(),
                        name: e.name.clone(),
                        hash: e.hash.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn node(&self, hash: &str) -> Option<&LockNode> {
        self.nodes.get(hash)
    }

    /// The roots and their link/run closures, dependencies before dependents, each once.
    pub fn closure(&self) -> Vec<&LockNode> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for r in &self.roots {
            self.visit(&r.hash, &mut seen, &mut out);
        }
        out
    }

    fn visit<'a>(&'a self, hash: &str, seen: &mut HashSet<String>, out: &mut Vec<&'a LockNode>) {
        if !seen.insert(hash.to_string()) {
            return;
        }
        let Some(node) = self.nodes.get(hash) else {
            return;
        };
        for e in &node.spec.dependencies {
            if e.deptypes.intersects(DepTypes::LINK_RUN) {
                self.visit(&e.hash, seen, out);
            }
        }
        out.push(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        let dirs = [
            std::env::var("SF_FIXTURES").unwrap_or_default(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures").to_string(),
            "/work/shared/fixtures".to_string(),
        ];
        for d in dirs.iter().filter(|d| !d.is_empty()) {
            if let Ok(b) = std::fs::read(format!("{d}/spack-lock/spack.lock")) {
                return b;
            }
        }
        panic!("spack-lock/spack.lock not found: set SF_FIXTURES to the shared/fixtures directory");
    }

    const GREET: &str = "pgvza7iamblnpepta3jh2thtyfktejqr";
    const LIBGREET: &str = "2upkbtnnkl4ztegz36plrhvvzftkoxxu";

    #[test]
    fn reads_the_real_lockfile_and_its_link_run_closure() {
        let lock = SpackLock::parse(&fixture()).unwrap();
        assert_eq!(lock.lockfile_version, 6);
        assert_eq!(lock.specfile_version, 5);
        assert_eq!(lock.spack_version.as_deref(), Some("1.0.2"));
        assert_eq!(lock.roots.len(), 1);
        assert_eq!(lock.roots[0].hash, GREET);
        assert_eq!(lock.nodes.len(), 7);
        let names: Vec<&str> = lock
            .closure()
            .iter()
            .map(|n| n.spec.name.as_str())
            .collect();
        // compiler-wrapper, gcc and gmake are build-only: not in the closure.
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(!names.contains(&"compiler-wrapper") && !names.contains(&"gmake"));
        assert_eq!(names.last(), Some(&"greet"));
        let li = names.iter().position(|n| *n == "libgreet").unwrap();
        assert!(li < 3);
        assert_eq!(
            lock.node(LIBGREET).unwrap().spec.version,
            "1.2.0".to_string()
        );
    }

    fn edit(f: impl FnOnce(&mut Value)) -> Result<SpackLock, SpackLockError> {
        let mut v: Value = serde_json::from_slice(&fixture()).unwrap();
        f(&mut v);
        SpackLock::from_value(v)
    }

    #[test]
    fn damaged_lockfiles_are_refused() {
        let e = edit(|v| v["_meta"]["lockfile-version"] = 7.into()).unwrap_err();
        assert_eq!(e, SpackLockError::Version(7));
        let e = edit(|v| {
            v["concrete_specs"]
                .as_object_mut()
                .unwrap()
                .remove(LIBGREET);
        })
        .unwrap_err();
        assert!(matches!(e, SpackLockError::MissingNode { ref hash, .. } if hash == LIBGREET));
        let e = edit(|v| v["concrete_specs"][LIBGREET]["version"] = "1.0.1".into()).unwrap_err();
        assert!(matches!(e, SpackLockError::HashMismatch { .. }), "{e}");
        let e = edit(|v| {
            let n = v["concrete_specs"].as_object_mut().unwrap();
            let node = n.remove(LIBGREET).unwrap();
            n.insert("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(), node);
        })
        .unwrap_err();
        assert!(matches!(e, SpackLockError::KeyMismatch { .. }), "{e}");
        let e = edit(|v| v["roots"][0]["hash"] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into())
            .unwrap_err();
        assert!(matches!(e, SpackLockError::MissingRoot { .. }), "{e}");
        let e = edit(|v| v["_meta"]["file-type"] = "x".into()).unwrap_err();
        assert!(matches!(e, SpackLockError::NotLockfile(_)));
        assert!(!e.to_string().contains('\n'));
    }
}
