//! What a Spack build left behind: the environment's root specs (`spack.lock`) and where the
//! install tree's database (`.spack-db/index.json`) says they are installed.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::BuildError;

/// One root spec the build installed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Built {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub prefix: PathBuf,
}

/// The DAG hashes of the environment's roots, from `ENV/spack.lock`.
pub fn lock_roots(env_dir: &Path) -> Result<Vec<String>, BuildError> {
    let path = env_dir.join("spack.lock");
    let bad = |reason: String| BuildError::Output {
        path: path.clone(),
        reason,
    };
    let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let roots: Vec<String> = v
        .get("roots")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `roots` list".into()))?
        .iter()
        .filter_map(|r| r.get("hash").and_then(Value::as_str).map(str::to_string))
        .collect();
    if roots.is_empty() {
        return Err(bad("no root spec with a hash".into()));
    }
    Ok(roots)
}

/// Every `.spack-db/index.json` below `root` (a padded install tree puts it a few
/// `__spack_path_placeholder__` levels down). Installed prefixes (holding `.spack/`) are not
/// searched.
pub fn find_databases(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut level = vec![root.to_path_buf()];
    for _ in 0..12 {
        let mut next = Vec::new();
        for dir in level {
            let db = dir.join(".spack-db/index.json");
            if db.is_file() {
                out.push(db);
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir())
                    && !e.file_name().to_string_lossy().starts_with('.')
                    && !p.join(".spack").is_dir()
                {
                    next.push(p);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    out.sort();
    out
}

/// The installed prefixes of `hashes`, from the databases under `install_root`.
pub fn installed(install_root: &Path, hashes: &[String]) -> Result<Vec<Built>, BuildError> {
    let dbs = find_databases(install_root);
    let mut found = Vec::new();
    for hash in hashes {
        let mut hit = None;
        for db in &dbs {
            let bytes = std::fs::read(db).map_err(|e| BuildError::Output {
                path: db.clone(),
                reason: e.to_string(),
            })?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| BuildError::Output {
                path: db.clone(),
                reason: e.to_string(),
            })?;
            let rec = &v["database"]["installs"][hash.as_str()];
            if rec.get("installed").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            if let Some(path) = rec.get("path").and_then(Value::as_str) {
                let spec = &rec["spec"];
                hit = Some(Built {
                    name: spec["name"].as_str().unwrap_or("?").to_string(),
                    version: spec["version"].as_str().unwrap_or("?").to_string(),
                    hash: hash.clone(),
                    prefix: PathBuf::from(path),
                });
                break;
            }
        }
        match hit {
            Some(b) => found.push(b),
            None => {
                return Err(BuildError::NotInstalled {
                    hash: hash.clone(),
                    root: install_root.to_path_buf(),
                })
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_prefixes_of_a_padded_tree() {
        let d = tempfile::tempdir().unwrap();
        let env = d.path().join("env");
        std::fs::create_dir_all(&env).unwrap();
        std::fs::write(
            env.join("spack.lock"),
            r#"{"_meta": {"lockfile-version": 6}, "roots": [{"hash": "abc", "spec": "x"}], "concrete_specs": {}}"#,
        )
        .unwrap();
        assert_eq!(lock_roots(&env).unwrap(), vec!["abc".to_string()]);

        let root = d.path().join("opt");
        let padded = root.join("__spack_path_placeholder__/__spack_path_placeholder__/__spack_pa");
        let prefix = padded.join("x-1.0-abcdefg");
        std::fs::create_dir_all(prefix.join(".spack")).unwrap();
        std::fs::create_dir_all(padded.join(".spack-db")).unwrap();
        std::fs::write(
            padded.join(".spack-db/index.json"),
            serde_json::json!({"database": {"version": "8", "installs": {
                "abc": {"spec": {"name": "x", "version": "1.0"}, "path": prefix, "installed": true},
                "gone": {"spec": {"name": "y", "version": "1"}, "path": "/nowhere", "installed": false}
            }}})
            .to_string(),
        )
        .unwrap();
        let b = installed(&root, &["abc".into()]).unwrap();
        assert_eq!(b[0].prefix, prefix);
        assert_eq!((b[0].name.as_str(), b[0].version.as_str()), ("x", "1.0"));
        let e = installed(&root, &["gone".into()]).unwrap_err().to_string();
        assert!(e.contains("gone") && e.contains("opt"), "{e}");
    }

    #[test]
    fn a_missing_lock_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let e = lock_roots(d.path()).unwrap_err().to_string();
        assert!(e.contains("spack.lock"), "{e}");
    }
}
