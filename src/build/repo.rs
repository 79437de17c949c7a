//! The `slurm_factory` Spack package repository (`spack-repo/` in the source tree), embedded in
//! the binary and written out where Spack can read it; a directory of one's own overrides it.

use std::path::{Path, PathBuf};

use super::BuildError;

/// The repository's namespace (Package API v2: also the name of its directory).
pub const NAMESPACE: &str = "slurm_factory";

macro_rules! repo_files {
    ($($rel:literal),* $(,)?) => {
        &[$(($rel, include_bytes!(concat!("../../spack-repo/spack_repo/slurm_factory/", $rel)) as &[u8])),*]
    };
}

/// Every file of the repository, relative to its root (`repo.yaml` and `packages/`). A unit
/// test checks that this list matches `spack-repo/` exactly.
pub const FILES: &[(&str, &[u8])] = repo_files!(
    "repo.yaml",
    "packages/slurm/package.py",
    "packages/sf_hello/package.py",
    "packages/sf_hello/sf-hello-1.0.tar.gz",
);

/// Write the embedded repository to `<base>/spack_repo/slurm_factory` (Spack derives the
/// namespace from that path) and return that directory. Files are replaced only when they
/// differ, each through a temporary name, so a concurrent build never sees a half-written file.
pub fn materialize(base: &Path) -> Result<PathBuf, BuildError> {
    let root = base.join("spack_repo").join(NAMESPACE);
    for (rel, bytes) in FILES {
        let path = root.join(rel);
        if std::fs::read(&path).is_ok_and(|old| old == *bytes) {
            continue;
        }
        let io = |e: std::io::Error| BuildError::Io {
            what: format!("writing the package repository file {}", path.display()),
            source: e,
        };
        let dir = path.parent().unwrap_or(&root);
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::fs::write(tmp.path(), bytes).map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
    }
    Ok(root)
}

/// Check a repository given by the user: a directory holding `repo.yaml` whose path contains
/// `spack_repo/` (Package API v2 derives the namespace from it). Returns (namespace, path).
pub fn check_override(dir: &Path) -> Result<(String, PathBuf), BuildError> {
    let bad = |reason: &str| BuildError::Repo {
        path: dir.to_path_buf(),
        reason: reason.into(),
    };
    let dir = std::path::absolute(dir).map_err(|e| bad(&e.to_string()))?;
    if !dir.join("repo.yaml").is_file() {
        return Err(bad(
            "it has no repo.yaml; give the directory that holds repo.yaml and packages/",
        ));
    }
    let text = dir.to_string_lossy();
    let Some((_, ns)) = text.rsplit_once("/spack_repo/") else {
        return Err(bad(
            "its path must contain spack_repo/ (Spack 1.x takes the namespace from the path, e.g. …/spack_repo/slurm_factory)",
        ));
    };
    Ok((ns.replace('/', "."), dir.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if e.file_name() != "__pycache__" {
                    tree(&p, base, out);
                }
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }

    #[test]
    fn embedded_list_matches_the_source_tree() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("spack-repo/spack_repo/slurm_factory");
        let mut on_disk = Vec::new();
        tree(&src, &src, &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(r, _)| r.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "update FILES in src/build/repo.rs");
    }

    #[test]
    fn materialize_writes_once_and_repairs() {
        let d = tempfile::tempdir().unwrap();
        let root = materialize(d.path()).unwrap();
        assert!(root.ends_with("spack_repo/slurm_factory"));
        let yaml = std::fs::read_to_string(root.join("repo.yaml")).unwrap();
        assert!(yaml.contains("namespace: slurm_factory") && yaml.contains("api: v2"));
        std::fs::write(root.join("packages/slurm/package.py"), "broken").unwrap();
        materialize(d.path()).unwrap();
        let py = std::fs::read_to_string(root.join("packages/slurm/package.py")).unwrap();
        assert!(py.contains("class Slurm(AutotoolsPackage)"));
    }

    #[test]
    fn slurm_recipe_has_the_factory_versions_and_variants() {
        let py = std::str::from_utf8(FILES[1].1).unwrap();
        for v in ["25-11-", "24-11-", "23-11-", "23-02-"] {
            assert!(py.contains(&format!("version(\"{v}")), "{v}");
        }
        for v in ["nvml", "rsmi", "pmix", "hwloc"] {
            assert!(py.contains(&format!("variant(\"{v}\"")), "{v}");
        }
    }

    #[test]
    fn sf_hello_tarball_matches_its_checksum() {
        use sha2::Digest;
        let py = std::str::from_utf8(FILES[2].1).unwrap();
        let tarball = FILES[3].1;
        let sum = hex::encode(sha2::Sha256::digest(tarball));
        assert!(py.contains(&format!("sha256=\"{sum}\"")), "{sum}");
    }

    #[test]
    fn override_needs_repo_yaml_under_spack_repo() {
        let d = tempfile::tempdir().unwrap();
        let e = check_override(d.path()).unwrap_err().to_string();
        assert!(e.contains("repo.yaml"), "{e}");
        let bare = d.path().join("mine");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::write(bare.join("repo.yaml"), "repo: {}\n").unwrap();
        let e = check_override(&bare).unwrap_err().to_string();
        assert!(e.contains("spack_repo/"), "{e}");
        let good = d.path().join("spack_repo/site");
        std::fs::create_dir_all(&good).unwrap();
        std::fs::write(good.join("repo.yaml"), "repo: {}\n").unwrap();
        assert_eq!(check_override(&good).unwrap().0, "site");
    }
}
