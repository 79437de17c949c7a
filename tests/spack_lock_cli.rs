//! `install --spack-lock`: the real Spack 1.0.2 lockfile of the fixtures, and damaged copies.

mod common;

use common::cli::{fx, stderr, stdout, Home, V3_GREET, V3_LIBGREET};
use serde_json::Value;
use std::path::Path;

fn lock_path() -> std::path::PathBuf {
    fx("spack-lock/spack.lock")
}

fn run(
    home: &Home,
    lock: &Path,
    mirror: &str,
    root: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "install",
        "--spack-lock",
        lock.to_str().unwrap(),
        "--mirror",
        mirror,
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    home.run(&args)
}

fn damaged(dir: &Path, f: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let mut v: Value = serde_json::from_slice(&std::fs::read(lock_path()).unwrap()).unwrap();
    f(&mut v);
    let p = dir.join("spack.lock");
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    p
}

type Edit = Box<dyn FnOnce(&mut Value)>;

fn one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(needle), "{err}");
}

#[test]
fn installs_the_locked_closure_by_hash_with_dry_run_and_json() {
    let home = Home::trusting();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let m = fx("spack-v3").display().to_string();
    let out = run(&home, &lock_path(), &m, &root, &["--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let hashes: Vec<&str> = rows.iter().map(|r| r["hash"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(hashes.contains(&V3_GREET) && hashes.contains(&V3_LIBGREET));
    assert!(
        !root.exists()
            || std::fs::read_dir(&root).unwrap().all(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
    );
    let out = run(&home, &lock_path(), &m, &root, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("installed greet@2.1.0 /{}", &V3_GREET[..7])),
        "{text}"
    );
    assert!(root
        .join(format!("greet-2.1.0-{V3_GREET}/bin/greet"))
        .exists());
    assert!(root.join(format!("libgreet-1.2.0-{V3_LIBGREET}")).is_dir());
}

#[test]
fn packages_missing_from_the_mirrors_are_all_listed_before_any_download() {
    let home = Home::trusting();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let m = fx("spack-v2").display().to_string();
    let out = run(&home, &lock_path(), &m, &root, &[]);
    one_line_error(&out, 4, &format!("libgreet@1.2.0/{V3_LIBGREET}"));
    assert!(stderr(&out).contains(&format!("greet@2.1.0/{V3_GREET}")));
    assert!(!stderr(&out).contains("fetch"));
    assert!(!root.join(format!("greet-2.1.0-{V3_GREET}")).exists());
}

#[test]
fn damaged_lockfiles_are_one_line_errors() {
    let home = Home::trusting();
    let m = fx("spack-v3").display().to_string();
    let cases: Vec<(Edit, i32, &str)> = vec![
        (
            Box::new(|v: &mut Value| v["concrete_specs"][V3_LIBGREET]["version"] = "1.2.1".into()),
            3,
            "does not match its content",
        ),
        (
            Box::new(|v: &mut Value| {
                v["concrete_specs"]
                    .as_object_mut()
                    .unwrap()
                    .remove(V3_LIBGREET);
            }),
            3,
            "has no node in concrete_specs",
        ),
        (
            Box::new(|v: &mut Value| v["_meta"]["lockfile-version"] = 9.into()),
            2,
            "lockfile version 9 is not supported",
        ),
    ];
    for (f, code, needle) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let lock = damaged(tmp.path(), f);
        let root = tmp.path().join("root");
        let out = run(&home, &lock, &m, &root, &[]);
        one_line_error(&out, code, needle);
        assert!(!root.join(format!("greet-2.1.0-{V3_GREET}")).exists());
    }
}
