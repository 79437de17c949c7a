//! The `./release --check FILE` part of the release script (docs/release.md), run on the binary
//! this test build made. That binary is linked against this machine's glibc (>= 2.34 where CI
//! runs), so the check must refuse it for glibc 2.17 and name the symbols; with the limit raised
//! the same symbol test must pass. The full release build (cargo-zigbuild, ~20 min) is not run
//! here: docs/release.md says how it was verified.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn release_check(file: &Path, glibc: Option<&str>) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new("bash");
    c.arg(root.join("release")).arg("--check").arg(file);
    match glibc {
        Some(v) => c.env("RELEASE_GLIBC", v),
        None => c.env_remove("RELEASE_GLIBC"),
    };
    c.output()
        .expect("bash and binutils (objdump, readelf) are needed")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn host_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sf-cache"))
}

/// The line of the report that starts with `ok`/`FAIL` and mentions `what`.
fn line<'a>(report: &'a str, what: &str) -> &'a str {
    report
        .lines()
        .find(|l| (l.starts_with("ok") || l.starts_with("FAIL")) && l.contains(what))
        .unwrap_or_else(|| panic!("no '{what}' line in:\n{report}"))
}

/// `a` > `b`, comparing dotted numbers component by component.
fn newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|c| c.parse().unwrap()).collect() };
    parse(a) > parse(b)
}

#[test]
fn host_build_is_refused_for_glibc_2_17() {
    let o = release_check(&host_binary(), None);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let syms = line(&err, "objdump -T");
    assert!(syms.starts_with("FAIL"), "{err}");
    // e.g. __libc_start_main@GLIBC_2.34: whatever it is, it is named with its version.
    assert!(syms.contains("symbols newer than GLIBC_2.17: "), "{err}");
    assert!(syms.contains("@GLIBC_2."), "{err}");
    // Every symbol named is really newer than 2.17 (2.3 and 2.30 are different versions).
    let (_, listed) = syms.split_once("GLIBC_2.17: ").unwrap();
    for sym in listed.split_whitespace() {
        let (_, v) = sym.split_once("@GLIBC_").unwrap();
        assert!(newer(v, "2.17"), "{sym} is not newer than 2.17: {err}");
    }
    assert!(line(&err, "version needs").starts_with("FAIL"), "{err}");
    // The rest of the report still runs: it is an x86-64 glibc binary that runs here.
    assert!(line(&err, "interpreter").starts_with("ok"), "{err}");
    let runs = line(&err, "runs:");
    let expected = format!("ok    runs: sf-cache {} (", env!("CARGO_PKG_VERSION"));
    assert!(runs.starts_with(&expected), "{err}");
    assert!(err.contains("FAILED the check"), "{err}");
}

#[test]
fn symbol_versions_compare_as_numbers() {
    // 2.100 > 2.34 > 2.9: a string comparison would get these wrong.
    let o = release_check(&host_binary(), Some("2.100"));
    let err = stderr(&o);
    assert!(line(&err, "objdump -T").starts_with("ok"), "{err}");
    let o = release_check(&host_binary(), Some("2.9"));
    let err = stderr(&o);
    assert!(line(&err, "objdump -T").starts_with("FAIL"), "{err}");
}

#[test]
fn checksum_file_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("sf-cache-test-x86_64-linux-gnu");
    // A symlink: the debug binary is large, and the check follows links as a user's shell would.
    std::os::unix::fs::symlink(host_binary(), &bin).unwrap();
    let sum = dir.path().join("sf-cache-test-x86_64-linux-gnu.sha256");
    std::fs::write(
        &sum,
        format!("{}  sf-cache-test-x86_64-linux-gnu\n", "0".repeat(64)),
    )
    .unwrap();
    let err = stderr(&release_check(&bin, Some("2.100")));
    assert!(line(&err, "sha256").starts_with("FAIL"), "{err}");

    let out = Command::new("sha256sum")
        .arg("sf-cache-test-x86_64-linux-gnu")
        .current_dir(dir.path())
        .output()
        .unwrap();
    std::fs::write(&sum, &out.stdout).unwrap();
    let err = stderr(&release_check(&bin, Some("2.100")));
    assert!(line(&err, "sha256").starts_with("ok"), "{err}");
}

#[test]
fn missing_file_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let o = release_check(&dir.path().join("nope"), None);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("nope: no such file") && err.lines().count() == 1,
        "{err}"
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("bash")
        .arg(root.join("release"))
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
