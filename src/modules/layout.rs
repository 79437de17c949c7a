//! Which directories of an installed prefix a module should prepend to which variable. Only
//! directories that exist are listed (and library directories only when they hold shared
//! objects), so a module never puts a missing directory on a search path.

use std::collections::BTreeMap;
use std::path::Path;

/// What [`scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Variable → directories relative to the prefix, in prepend order.
    pub paths: BTreeMap<String, Vec<String>>,
    /// The prefix has something CMake's `find_package` looks into (lib, lib64, include, share).
    pub cmake_prefix: bool,
}

/// Candidates per variable, in the order they are prepended (the last one ends up first).
const CANDIDATES: &[(&str, &[&str])] = &[
    ("PATH", &["bin", "sbin"]),
    ("MANPATH", &["share/man", "man"]),
    // `lib/slurm` holds Slurm's plugins (dlopen'ed by path, listed for tools that look).
    ("LD_LIBRARY_PATH", &["lib", "lib64", "lib/slurm"]),
    ("CPATH", &["include"]),
    (
        "PKG_CONFIG_PATH",
        &["lib/pkgconfig", "lib64/pkgconfig", "share/pkgconfig"],
    ),
];

/// A directory (following a symlink, as a view or a lib64 → lib link is followed at run time).
fn is_dir(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_dir())
}

/// `libx.so`, `libx.so.1`, `libx.so.1.2.3`.
fn is_shared_object(name: &str) -> bool {
    name.ends_with(".so") || name.contains(".so.")
}

fn has_shared_objects(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| is_shared_object(&e.file_name().to_string_lossy()))
    })
}

/// Scan a package prefix.
pub fn scan(prefix: &Path) -> Layout {
    let mut out = Layout::default();
    for (var, dirs) in CANDIDATES {
        let found: Vec<String> = dirs
            .iter()
            .filter(|d| {
                let p = prefix.join(d);
                is_dir(&p) && (*var != "LD_LIBRARY_PATH" || has_shared_objects(&p))
            })
            .map(|d| d.to_string())
            .collect();
        out.paths.insert(var.to_string(), found);
    }
    out.cmake_prefix = ["lib", "lib64", "include", "share"]
        .iter()
        .any(|d| is_dir(&prefix.join(d)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_what_exists() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for dir in [
            "bin",
            "sbin",
            "share/man/man1",
            "lib/pkgconfig",
            "lib64",
            "lib/slurm",
            "include",
        ] {
            std::fs::create_dir_all(p.join(dir)).unwrap();
        }
        std::fs::write(p.join("lib/libslurm.so.42"), b"x").unwrap();
        std::fs::write(p.join("lib/slurm/auth_munge.so"), b"x").unwrap();
        // lib64 without shared objects is left out of LD_LIBRARY_PATH.
        std::fs::write(p.join("lib64/readme.txt"), b"x").unwrap();
        let l = scan(p);
        assert_eq!(l.paths["PATH"], vec!["bin", "sbin"]);
        assert_eq!(l.paths["MANPATH"], vec!["share/man"]);
        assert_eq!(l.paths["LD_LIBRARY_PATH"], vec!["lib", "lib/slurm"]);
        assert_eq!(l.paths["CPATH"], vec!["include"]);
        assert_eq!(l.paths["PKG_CONFIG_PATH"], vec!["lib/pkgconfig"]);
        assert!(l.cmake_prefix);

        let empty = tempfile::tempdir().unwrap();
        std::fs::create_dir(empty.path().join("bin")).unwrap();
        let l = scan(empty.path());
        assert_eq!(l.paths["PATH"], vec!["bin"]);
        assert!(l.paths["LD_LIBRARY_PATH"].is_empty());
        assert!(l.paths["CPATH"].is_empty());
        assert!(!l.cmake_prefix);
    }

    #[test]
    fn shared_object_names() {
        assert!(is_shared_object("libgreet.so"));
        assert!(is_shared_object("libgreet.so.1.2.0"));
        assert!(!is_shared_object("libgreet.a"));
        assert!(!is_shared_object("libgreet.sol"));
    }
}
