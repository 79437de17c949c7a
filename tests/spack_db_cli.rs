//! The Spack database of an sf-cache root (`ROOT/.spack-db/index.json`, version 8): written by
//! every install, kept true by uninstall and relocate, rebuilt by `reindex`; the fields Spack
//! reads, checked on installs of the real Spack-made fixture cache.

mod common;

use std::path::Path;

use common::cli::*;
use serde_json::{Map, Value};

const GREET: &str = "pgvza7iamblnpepta3jh2thtyfktejqr";
const LIBGREET: &str = "2upkbtnnkl4ztegz36plrhvvzftkoxxu";
const WRAPPER: &str = "4fghq5ibtjw6ag4knvkpnmu2cdp3bamt";

fn installs(root: &Path) -> Map<String, Value> {
    let text = std::fs::read_to_string(root.join(".spack-db/index.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["database"]["version"], "8");
    v["database"]["installs"].as_object().unwrap().clone()
}

fn prefix(root: &Path, name: &str, hash: &str) -> String {
    let v = if name == "greet" { "2.1.0" } else { "1.2.0" };
    s(&root.join(format!("{name}-{v}-{hash}"))).to_string()
}

#[test]
fn install_uninstall_relocate_and_reindex_keep_the_spack_database_true() {
    let home = Home::trusting();
    let t = tempfile::tempdir_in("/tmp").unwrap();
    let root = t.path().join("root");
    install_fixture(&home, "greet", "spack-v3", &root);
    for f in ["index.json", "lock", "index_verifier"] {
        assert!(root.join(".spack-db").join(f).is_file(), "{f}");
    }
    let i = installs(&root);
    // greet asked for, libgreet pulled in; both at their prefixes; not from a buildcache.
    assert_eq!(i[GREET]["installed"], true);
    assert_eq!(i[GREET]["explicit"], true);
    assert_eq!(i[GREET]["path"], prefix(&root, "greet", GREET));
    assert_eq!(i[LIBGREET]["explicit"], false);
    assert_eq!(i[LIBGREET]["path"], prefix(&root, "libgreet", LIBGREET));
    assert_eq!(i[LIBGREET]["ref_count"], 1);
    assert_eq!(i[GREET]["in_buildcache"], false);
    assert!(i[GREET]["installation_time"].as_f64().unwrap() > 1.7e9);
    // The spec node as Spack wrote it: name, version, its hash, dependencies by hash.
    assert_eq!(i[GREET]["spec"]["name"], "greet");
    assert_eq!(i[GREET]["spec"]["hash"], GREET);
    assert!(i[GREET]["spec"]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["hash"] == LIBGREET));
    // Externals at their prefix; the build-only compiler wrapper tracked, not installed.
    let ext: Vec<&str> = i
        .values()
        .filter(|r| r["path"] == "/usr")
        .map(|r| r["spec"]["name"].as_str().unwrap())
        .collect();
    for name in ["gcc", "gcc-runtime", "glibc", "gmake"] {
        assert!(ext.contains(&name), "{name} not external in {ext:?}");
    }
    assert_eq!(i[WRAPPER]["installed"], false);
    assert_eq!(i.len(), 7);

    // A root from before the database: the next install (a no-op) writes it; reindex too, with
    // the same records.
    std::fs::remove_dir_all(root.join(".spack-db")).unwrap();
    install_fixture(&home, "greet", "spack-v3", &root);
    assert_eq!(installs(&root), i);
    std::fs::remove_dir_all(root.join(".spack-db")).unwrap();
    let r = json(&home.run(&["--json", "reindex", "--root", s(&root)]));
    assert_eq!(
        (r["records"].as_u64(), r["installed"].as_u64()),
        (Some(7), Some(2))
    );
    assert_eq!(installs(&root), i);

    // Relocate: the database follows the prefixes.
    let moved = t.path().join("mvd");
    std::fs::rename(&root, &moved).unwrap();
    let o = home.run(&["relocate", s(&moved)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = installs(&moved);
    assert_eq!(m[GREET]["path"], prefix(&moved, "greet", GREET));
    assert_eq!(m[LIBGREET]["path"], prefix(&moved, "libgreet", LIBGREET));

    // Uninstall greet: its record goes; libgreet stays, with the build-only compiler wrapper
    // that libgreet too was built with, now needed by one record instead of two.
    assert_eq!(m[WRAPPER]["ref_count"], 2);
    let o = home.run(&["uninstall", "greet", "--root", s(&moved)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let u = installs(&moved);
    assert!(!u.contains_key(GREET), "{:?}", u.keys());
    assert_eq!(u.len(), 6);
    assert_eq!(u[WRAPPER]["ref_count"], 1);
    assert_eq!(u[LIBGREET]["ref_count"], 0);
    assert_eq!(u[LIBGREET]["installed"], true);

    // Not an install root: one line, exit 1.
    let o = home.run(&["reindex", "--root", s(t.path())]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!t.path().join(".sf-cache").exists() && !t.path().join(".spack-db").exists());
    assert!(
        stderr(&o).contains("sf-cache install root"),
        "{}",
        stderr(&o)
    );
}
