//! End-to-end tests of `install`, `verify`, `uninstall`, views, lockfiles and the blob cache,
//! against the real Spack-made fixture caches (from a path and over a real local HTTP server with
//! fault injection).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::cli::*;
use common::http_server::{Fault, HttpServer};
use serde_json::Value;

/// A root directory whose absolute path has exactly `len` characters (created lazily by install).
fn root_of_len(base: &Path, len: usize) -> PathBuf {
    let base_len = base.as_os_str().len() + 1;
    assert!(len > base_len + 2, "base {base:?} too long for {len}");
    let name: String = "r".repeat(len - base_len);
    let p = base.join(name);
    assert_eq!(p.as_os_str().len(), len);
    p
}

fn install(home: &Home, mirror: &str, root: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "install",
        "greet",
        "--mirror",
        mirror,
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    home.run(&args)
}

fn run_program(path: &Path) -> (i32, String, String) {
    let o = std::process::Command::new(path).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// What the fixture README says greet prints after a correct relocation into `p`.
fn check_greet_output(out: &str, p: &Path, build_prefix_len: usize) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], "Hello from libgreet 1.2.0!");
    assert_eq!(lines[1], "greet 2.1.0");
    let datadir = lines[2].strip_prefix("datadir: ").unwrap();
    let p = p.to_str().unwrap();
    let tail = format!("{}/share/greet", &p[1..]);
    assert!(datadir.ends_with(&tail), "{datadir}");
    assert!(datadir[..datadir.len() - tail.len()]
        .chars()
        .all(|c| c == '/'));
    assert!(datadir.starts_with('/'));
    assert_eq!(datadir.len(), build_prefix_len + 12, "{datadir}");
    assert_eq!(
        lines[3],
        "message: greet read this line from its data directory"
    );
}

fn build_prefix_len(cache: &str) -> usize {
    let readme = std::fs::read_to_string(fx("README.md")).unwrap();
    let marker = if cache == "v3" {
        "#### greet (v3 tarball)"
    } else {
        "#### greet (v2 tarball)"
    };
    let section = &readme[readme.find(marker).unwrap()..];
    let n = section
        .split("Build prefix (")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap();
    n.parse().unwrap()
}

fn rpath(bin: &Path) -> String {
    let o = std::process::Command::new("readelf")
        .arg("-d")
        .arg(bin)
        .output()
        .expect("readelf is needed (apt-get install binutils)");
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .find(|l| l.contains("(RPATH)") || l.contains("(RUNPATH)"))
        .and_then(|l| l.split('[').nth(1))
        .map(|s| s.trim_end_matches(']').to_string())
        .unwrap_or_default()
}

fn check_installed_greet(root: &Path, cache: &str, with_wrapper: bool) {
    let p = prefix_of(root, "greet");
    let l = prefix_of(root, "libgreet");
    let n = build_prefix_len(cache);
    for prog in ["bin/greet", "bin/hello", "bin/greet-abs"] {
        let (code, out, err) = run_program(&p.join(prog));
        assert_eq!(code, 0, "{prog}: {err}");
        check_greet_output(&out, &p, n);
    }
    if with_wrapper {
        let (code, out, err) = run_program(&p.join("bin/greet-wrapper"));
        assert_eq!(code, 0, "greet-wrapper: {err}");
        let (first, rest) = out.split_once('\n').unwrap();
        assert_eq!(first, format!("greet-wrapper: prefix is {}", p.display()));
        check_greet_output(rest, &p, n);
        let script = std::fs::read_to_string(p.join("bin/greet-wrapper")).unwrap();
        let mut lines = script.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!("#!/bin/sh {}/bin/sbang", root.display())
        );
        assert_eq!(
            lines.next().unwrap(),
            format!("#!{}/libexec/greet/greet-sh", p.display())
        );
    }
    // RPATH points at the new prefixes only.
    let rp = rpath(&p.join("bin/greet"));
    assert!(rp.contains(&format!("{}/lib", l.display())), "{rp}");
    assert!(!rp.contains("__spack_path_placeholder__"), "{rp}");
    assert!(!rp.contains("sf-fixtures"), "{rp}");
    // Links, text files, hardlinks.
    assert_eq!(
        std::fs::read_link(p.join("bin/greet-abs")).unwrap(),
        p.join("bin/greet")
    );
    assert_eq!(
        std::fs::read_link(p.join("lib/libgreet-alias.so")).unwrap(),
        l.join("lib/libgreet.so")
    );
    assert_eq!(
        std::fs::read_link(p.join("bin/hello")).unwrap(),
        Path::new("greet")
    );
    let paths = std::fs::read_to_string(p.join("share/greet/paths.txt")).unwrap();
    assert!(
        paths.contains(&format!("greet installed in {}", p.display())),
        "{paths}"
    );
    assert!(
        paths.contains(&format!("libgreet used from {}", l.display())),
        "{paths}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(p.join("share/greet/paths.txt"))
            .unwrap()
            .ino(),
        std::fs::metadata(p.join("share/greet/paths-hardlink.txt"))
            .unwrap()
            .ino()
    );
    let pc = std::fs::read_to_string(l.join("lib/pkgconfig/libgreet.pc")).unwrap();
    assert!(pc.starts_with(&format!("prefix={}", l.display())), "{pc}");
}

/// Every file of a root with its content digest (receipts excluded, file lists only by
/// presence), to compare installs.
fn install_digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = tree_digest(root);
    out.retain(|rel, _| !rel.ends_with("sf-cache-receipt.json"));
    // The Spack database records install times, as the receipts do: present, not compared.
    for f in ["index.json", "index_verifier"] {
        if let Some(v) = out.get_mut(&format!(".spack-db/{f}")) {
            *v = "spack database".into();
        }
    }
    for (rel, v) in out.iter_mut() {
        if rel.ends_with("sf-cache-files.json") {
            *v = "files".into();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

#[test]
fn install_v3_over_http_into_short_medium_and_long_roots() {
    let server = HttpServer::start(common::fixtures_dir());
    let home = Home::trusting();
    let base = tempfile::Builder::new()
        .prefix("i")
        .tempdir_in("/tmp")
        .unwrap();
    let mirror = format!("{}/spack-v3", server.base_url());
    for (len, wrapper) in [(22, true), (100, true), (135, false)] {
        let root = root_of_len(base.path(), len);
        let out = install(&home, &mirror, &root, &[]);
        assert!(out.status.success(), "root {len}: {}", stderr(&out));
        check_installed_greet(&root, "v3", wrapper);
        if len == 22 {
            // stderr is not a terminal: one plain line per phase, packages by name.
            let err = stderr(&out);
            for phase in ["fetching", "fetched", "unpacked", "relocated"] {
                assert!(
                    err.lines()
                        .any(|l| l.starts_with(&format!("{phase} greet@2.1.0"))),
                    "no `{phase}` line: {err}"
                );
            }
        }
    }
}

#[test]
fn install_v2_from_a_path_into_short_medium_and_long_roots() {
    let home = Home::trusting();
    let base = tempfile::Builder::new()
        .prefix("i")
        .tempdir_in("/tmp")
        .unwrap();
    let mirror = fx("spack-v2").display().to_string();
    for (len, wrapper) in [(21, true), (99, true), (138, false)] {
        let root = root_of_len(base.path(), len);
        let out = install(&home, &mirror, &root, &[]);
        assert!(out.status.success(), "root {len}: {}", stderr(&out));
        check_installed_greet(&root, "v2", wrapper);
    }
}

#[test]
fn a_root_too_long_is_refused_before_anything_is_written() {
    let home = Home::trusting();
    let base = tempfile::Builder::new()
        .prefix("i")
        .tempdir_in("/tmp")
        .unwrap();
    let root = root_of_len(base.path(), 150);
    let out = install(&home, fx("spack-v3").to_str().unwrap(), &root, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("install root too long"), "{err}");
    assert!(err.contains("at most"), "{err}");
    assert!(!root.exists(), "the root was created");
}

/// Regular files below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_root_too_long_is_refused_before_any_download() {
    let server = HttpServer::start(common::fixtures_dir());
    let home = Home::trusting();
    let base = tempfile::Builder::new()
        .prefix("i")
        .tempdir_in("/tmp")
        .unwrap();
    let root = root_of_len(base.path(), 150);
    let mirror = format!("{}/spack-v3", server.base_url());
    let out = install(&home, &mirror, &root, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("install root too long"),
        "{}",
        stderr(&out)
    );
    // Only the start of the tarballs was read: nothing entered the blob cache.
    let blobs = files_below(&home.dir.path().join("cache/blobs/sha256"));
    assert!(blobs.is_empty(), "downloaded before refusing: {blobs:?}");
    assert!(!root.exists(), "the root was created");
}

#[test]
fn reinstall_is_a_no_op_and_offline_uses_the_caches() {
    let server = HttpServer::start(common::fixtures_dir());
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("a");
    let mirror = format!("{}/spack-v3", server.base_url());
    assert!(install(&home, &mirror, &root, &[]).status.success());
    let before = install_digest(&root);
    let requests = server.total_requests();
    let v = json(&install(&home, &mirror, &root, &["--json"]));
    assert_eq!(v["installed"].as_array().unwrap().len(), 0);
    assert_eq!(v["already_installed"].as_array().unwrap().len(), 2);
    assert_eq!(install_digest(&root), before);
    // No tarball was downloaded again.
    let tarball = greet_tarball(&fx("spack-v3"));
    let rel = tarball.strip_prefix(common::fixtures_dir()).unwrap();
    assert_eq!(server.requests(&format!("/{}", rel.display())), 1);
    assert!(
        server.total_requests() > requests,
        "metadata is rechecked online"
    );

    // Offline into a new root: no request reaches the server.
    let n = server.total_requests();
    let root2 = base.path().join("b");
    let out = install(&home, &mirror, &root2, &["--offline"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.total_requests(), n);
    check_installed_greet(&root2, "v3", true);
    drop(server);
    let out = install(&home, &mirror, &base.path().join("c"), &["--offline"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn dry_run_changes_nothing_and_lockfiles_pin_the_plan() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root");
    let m = fx("spack-v3").display().to_string();
    let lock = base.path().join("greet.lock");
    let v = json(&install(
        &home,
        &m,
        &root,
        &[
            "--dry-run",
            "--json",
            "--write-lockfile",
            lock.to_str().unwrap(),
        ],
    ));
    assert!(!root.exists());
    let actions: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(actions.contains(&("greet".into(), "install".into())));
    assert!(actions.contains(&("libgreet".into(), "install".into())));
    assert!(actions.contains(&("glibc".into(), "external".into())));
    let l: Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    let (tar, _) = manifest_blob(
        &greet_manifest(&fx("spack-v3")),
        "application/vnd.spack.install.v",
    );
    let greet = l["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "greet")
        .unwrap();
    assert_eq!(greet["tarball_digest"], format!("sha256:{tar}"));
    assert_eq!(greet["explicit"], true);

    // Installing exactly the lockfile works; a lockfile that disagrees is refused (exit 3).
    let out = home.run(&[
        "install",
        "--lockfile",
        lock.to_str().unwrap(),
        "--mirror",
        &m,
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    check_installed_greet(&root, "v3", true);
    let mut bad: Value = l.clone();
    bad["packages"][0]["tarball_digest"] = Value::String(format!("sha256:{}", "0".repeat(64)));
    let bad_lock = base.path().join("bad.lock");
    std::fs::write(&bad_lock, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = home.run(&[
        "install",
        "--lockfile",
        bad_lock.to_str().unwrap(),
        "--mirror",
        &m,
        "--root",
        base.path().join("other").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(!base.path().join("other").exists());
}

#[test]
fn a_changed_tarball_byte_fails_verification_and_installs_nothing() {
    let home = Home::trusting();
    let bad = copy_cache("spack-v3");
    flip_byte(&greet_tarball(bad.path()), 4000);
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root");
    let out = install(&home, bad.path().to_str().unwrap(), &root, &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sha256") || stderr(&out).contains("digest"),
        "{}",
        stderr(&out)
    );
    assert!(
        !root.exists() || prefix_count(&root) == 0,
        "something was installed"
    );
    // Nothing corrupt entered the blob cache.
    let blobs = home.dir.path().join("cache/blobs/sha256");
    let (tar, _) = manifest_blob(
        &greet_manifest(bad.path()),
        "application/vnd.spack.install.v",
    );
    assert!(!blobs.join(&tar[..2]).join(&tar).exists());
    // The refused run leaves nothing of itself: no root it created, no per-blob lock files.
    assert!(
        !root.exists(),
        "the refused install created {}",
        root.display()
    );
    let tmp = home.dir.path().join("cache/blobs/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

fn check_cache_clean(home: &Home) {
    // Every blob in the cache has the digest it is named by.
    use sha2::Digest;
    let dir = home.dir.path().join("cache/blobs/sha256");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for shard in rd.flatten() {
            for b in std::fs::read_dir(shard.path()).unwrap().flatten() {
                let name = b.file_name().to_string_lossy().into_owned();
                if name.len() != 64 {
                    continue;
                }
                let d = hex::encode(sha2::Sha256::digest(std::fs::read(b.path()).unwrap()));
                assert_eq!(d, name, "corrupt blob in the cache");
            }
        }
    }
}

#[test]
fn download_faults_either_complete_correctly_or_fail_cleanly() {
    let server = HttpServer::start(common::fixtures_dir());
    let tar = greet_tarball(&fx("spack-v3"));
    let tar_url = format!(
        "/{}",
        tar.strip_prefix(common::fixtures_dir()).unwrap().display()
    );
    let mirror = format!("{}/spack-v3", server.base_url());
    let faults = [
        (
            "drop",
            Fault::DropAfter {
                bytes: 3000,
                times: 1,
            },
        ),
        (
            "503",
            Fault::Status {
                status: 503,
                times: 2,
            },
        ),
        (
            "truncate",
            Fault::Truncate {
                bytes: 5000,
                times: 1,
            },
        ),
        (
            "slow",
            Fault::Slow {
                chunk: 1024,
                delay: Duration::from_millis(30),
                times: 1,
            },
        ),
        (
            "short-length",
            Fault::WrongLength {
                delta: -100,
                times: 1,
            },
        ),
        (
            "long-length",
            Fault::WrongLength {
                delta: 100,
                times: 1,
            },
        ),
        ("corrupt", Fault::Corrupt { times: 1 }),
    ];
    for (name, fault) in faults {
        let home = Home::trusting();
        let base = tempfile::tempdir_in("/tmp").unwrap();
        let root = base.path().join("root");
        server.clear_faults();
        server.set_fault(&tar_url, fault);
        let out = install(&home, &mirror, &root, &[]);
        check_cache_clean(&home);
        if out.status.success() {
            check_installed_greet(&root, "v3", true);
        } else {
            let err = stderr(&out);
            assert_eq!(
                err.lines().filter(|l| l.starts_with("error:")).count(),
                1,
                "{name}: {err}"
            );
            assert!(
                !root.exists() || prefix_count(&root) == 0,
                "{name}: partial install"
            );
            // A clean retry then succeeds.
            server.clear_faults();
            let out = install(&home, &mirror, &root, &[]);
            assert!(out.status.success(), "{name} retry: {}", stderr(&out));
            check_installed_greet(&root, "v3", true);
        }
    }
    // A persistent 503 fails with one clear line after bounded retries.
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    server.set_fault(
        &tar_url,
        Fault::Status {
            status: 503,
            times: u32::MAX,
        },
    );
    let out = install(&home, &mirror, &base.path().join("root"), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
    // Each retry is one short line naming the package, not the blob's digest or URL fields.
    let err = stderr(&out);
    let retries: Vec<&str> = err.lines().filter(|l| l.contains("retrying")).collect();
    assert!(!retries.is_empty(), "{err}");
    for l in retries {
        assert!(l.contains("retrying greet@2.1.0 ("), "{l}");
        assert!(!l.contains("resume_at=") && !l.contains("delay_ms="), "{l}");
    }
}

fn prefix_count(root: &Path) -> usize {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("greet-") || n.starts_with("libgreet-")
        })
        .count()
}

#[test]
fn kill_9_at_any_moment_then_rerun_equals_an_undisturbed_install() {
    let server = HttpServer::start(common::fixtures_dir());
    let mirror = format!("{}/spack-v3", server.base_url());
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root");
    let reference = {
        let home = Home::trusting();
        assert!(install(&home, &mirror, &root, &[]).status.success());
        let d = install_digest(&root);
        std::fs::remove_dir_all(&root).unwrap();
        d
    };
    // Slow the tarballs down so kills land in downloads, unpacking and commits alike.
    for (i, delay_ms) in [5u64, 20, 40, 80, 120, 200, 300, 450]
        .into_iter()
        .enumerate()
    {
        server.clear_faults();
        server.set_fault(
            "/spack-v3/blobs/",
            Fault::Slow {
                chunk: 2048,
                delay: Duration::from_millis(10),
                times: u32::MAX,
            },
        );
        let home = Home::trusting();
        let mut child = home
            .std_cmd()
            .args([
                "install",
                "greet",
                "--mirror",
                &mirror,
                "--root",
                root.to_str().unwrap(),
                "-q",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever is visible is complete: each prefix has its receipt.
        if root.exists() {
            for e in std::fs::read_dir(&root).unwrap().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("greet-") || n.starts_with("libgreet-") {
                    assert!(
                        e.path().join(".spack/sf-cache-receipt.json").is_file(),
                        "kill {i}: half-installed {n}"
                    );
                }
            }
        }
        check_cache_clean(&home);
        server.clear_faults();
        let out = install(&home, &mirror, &root, &[]);
        assert!(out.status.success(), "rerun {i}: {}", stderr(&out));
        assert_eq!(install_digest(&root), reference, "rerun after kill {i}");
        assert!(home
            .run(&["verify", "--root", root.to_str().unwrap()])
            .status
            .success());
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn verify_uninstall_list_views_and_gc() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root");
    let view = base.path().join("view");
    let m = fx("spack-v3").display().to_string();
    let out = install(&home, &m, &root, &["--view", view.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = root.to_str().unwrap();

    // list --root
    let v = json(&home.run(&["list", "--root", r, "--json"]));
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["greet", "libgreet"]);
    assert_eq!(v.as_array().unwrap()[0]["explicit"], true);
    assert_eq!(v.as_array().unwrap()[1]["explicit"], false);

    // The view: relative links into the prefixes; runs from the view; .spack left out.
    let (c, out, err) = run_program(&view.join("bin/greet"));
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("Hello from libgreet"));
    assert!(std::fs::read_link(view.join("bin/greet"))
        .unwrap()
        .is_relative());
    assert!(!view.join(".spack").exists());
    assert!(view.join("lib/libgreet.so.1").exists());
    // A view may not be the root.
    let out = install(&home, &m, &root, &["--view", r]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    // verify: clean, then a changed file is caught (exit 3).
    assert!(home.run(&["verify", "--root", r]).status.success());
    let p = prefix_of(&root, "greet");
    std::fs::write(p.join("share/greet/message.txt"), "tampered\n").unwrap();
    let out = home.run(&["verify", "--root", r, "--json"]);
    assert_eq!(code(&out), 3);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let greet = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "greet")
        .unwrap();
    assert_eq!(
        greet["modified"],
        serde_json::json!(["share/greet/message.txt"])
    );

    // uninstall refuses a needed dependency; --force is not needed for the dependent.
    let out = home.run(&["uninstall", "libgreet", "--root", r]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("greet"), "{}", stderr(&out));
    assert!(prefix_of(&root, "libgreet").exists());
    let out = home.run(&[
        "uninstall",
        "greet",
        "--root",
        r,
        "--view",
        view.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!view.join("bin/greet").exists());
    assert!(view.join("lib/libgreet.so.1").exists());
    let out = home.run(&["uninstall", "libgreet", "--root", r]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(prefix_count(&root), 0);

    // gc: nothing references the tarballs any more.
    let v = json(&home.run(&["cache", "gc", "--json"]));
    assert_eq!(v["removed"], 2);
    // clean: everything goes (leftover per-blob lock files included), indexes too.
    json(&home.run(&["cache", "clean", "--json"]));
    let blobs = home.dir.path().join("cache/blobs/sha256");
    let left = std::fs::read_dir(&blobs)
        .map(|rd| {
            rd.flatten()
                .flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0);
    assert!(!home.dir.path().join("cache/index").exists());
}

#[test]
fn missing_externals_and_unsigned_caches() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    // Unsigned cache: refused by default (exit 3), accepted with --allow-unsigned.
    let m = fx("spack-v3-unsigned").display().to_string();
    let out = install(&home, &m, &base.path().join("u"), &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(!base.path().join("u").exists());
    let out = home.run(&[
        "--allow-unsigned",
        "install",
        "greet",
        "--mirror",
        &m,
        "--root",
        base.path().join("u").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    check_installed_greet(&base.path().join("u"), "v3", true);

    // An external whose prefix does not exist on this host: a clear error, nothing installed.
    let bad = copy_cache("spack-v2");
    let idx = bad.path().join("build_cache/index.json");
    let text = std::fs::read_to_string(&idx).unwrap().replace(
        "\"path\":\"/usr\"",
        "\"path\":\"/nonexistent/sf-cache-test\"",
    );
    std::fs::write(&idx, &text).unwrap();
    std::fs::remove_file(bad.path().join("build_cache/index.json.hash")).unwrap();
    let out = install(
        &home,
        bad.path().to_str().unwrap(),
        &base.path().join("e"),
        &[],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/sf-cache-test"),
        "{}",
        stderr(&out)
    );
    assert!(!base.path().join("e").exists());
}

/// Replace greet's tarball in an unsigned v3 cache copy with `tarball` (manifest updated).
fn with_greet_tarball(tarball: &[u8]) -> tempfile::TempDir {
    use sha2::Digest;
    let cache = copy_cache("spack-v3-unsigned");
    let manifest = greet_manifest(cache.path());
    let (old, old_len) = manifest_blob(&manifest, "application/vnd.spack.install.v");
    let new = hex::encode(sha2::Sha256::digest(tarball));
    let dir = cache.path().join(format!("blobs/sha256/{}", &new[..2]));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&new), tarball).unwrap();
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(&old, &new)
        .replace(
            &format!("\"contentLength\":{old_len},"),
            &format!("\"contentLength\":{},", tarball.len()),
        );
    std::fs::write(&manifest, text).unwrap();
    cache
}

/// A gzip tarball shaped like a Spack package under `prefix` plus `hostile` members.
fn hostile_tarball(prefix: &str, add: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    };
    dir(&mut b, prefix);
    dir(&mut b, &format!("{prefix}/.spack"));
    add(&mut b);
    let info = format!("{{buildpath: /{prefix}, relocate_textfiles: [], relocate_binaries: [], relocate_links: [], hash_to_prefix: {{{V3_GREET}: /{prefix}}}}}");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(info.len() as u64);
    b.append_data(
        &mut h,
        format!("{prefix}/.spack/binary_distribution"),
        info.as_bytes(),
    )
    .unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

/// Adds the hostile members of one case to an archive.
type AddMembers = Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>;

#[test]
fn hostile_archives_are_refused_and_nothing_escapes() {
    // Long enough for the new prefix (so only the hostile member can fail), short enough for ustar names.
    let prefix = "tmp/b/__spack_path_placeholder__/__spack_path_placeholder__/greet-2.1.0";
    let file = |b: &mut tar::Builder<Vec<u8>>,
                name: &str,
                mode: u32,
                kind: tar::EntryType,
                link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(if kind == tar::EntryType::Regular {
            2
        } else {
            0
        });
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"x\n"
        } else {
            b""
        };
        // Write the raw name so that `..` and absolute names reach the archive unchanged.
        let name_bytes = name.as_bytes();
        h.as_old_mut().name[..name_bytes.len()].copy_from_slice(name_bytes);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    let p = prefix.to_string();
    let cases: Vec<(&str, AddMembers)> = vec![
        (
            "dotdot",
            Box::new(move |b| {
                file(
                    b,
                    &format!("{}/../../../../escape.txt", "tmp/build"),
                    0o644,
                    tar::EntryType::Regular,
                    None,
                )
            }),
        ),
        (
            "hardlink-outside",
            Box::new({
                let p = p.clone();
                move |b| {
                    file(
                        b,
                        &format!("{p}/bin/x"),
                        0o644,
                        tar::EntryType::Link,
                        Some("etc/passwd"),
                    )
                }
            }),
        ),
        (
            "through-symlink",
            Box::new({
                let p = p.clone();
                move |b| {
                    file(
                        b,
                        &format!("{p}/lnk"),
                        0o777,
                        tar::EntryType::Symlink,
                        Some("/tmp"),
                    );
                    file(
                        b,
                        &format!("{p}/lnk/sf-cache-escaped"),
                        0o644,
                        tar::EntryType::Regular,
                        None,
                    );
                }
            }),
        ),
        (
            "device",
            Box::new({
                let p = p.clone();
                move |b| file(b, &format!("{p}/dev"), 0o644, tar::EntryType::Char, None)
            }),
        ),
        (
            "fifo",
            Box::new({
                let p = p.clone();
                move |b| file(b, &format!("{p}/fifo"), 0o644, tar::EntryType::Fifo, None)
            }),
        ),
        (
            "setuid",
            Box::new({
                let p = p.clone();
                move |b| {
                    file(
                        b,
                        &format!("{p}/bin/su"),
                        0o4755,
                        tar::EntryType::Regular,
                        None,
                    )
                }
            }),
        ),
    ];
    let home = Home::new();
    for (name, add) in cases {
        let cache = with_greet_tarball(&hostile_tarball(prefix, |b| add(b)));
        let base = tempfile::tempdir_in("/tmp").unwrap();
        let root = base.path().join("root");
        let out = home.run(&[
            "--allow-unsigned",
            "install",
            "greet",
            "--mirror",
            cache.path().to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
        ]);
        // A hostile member is an integrity refusal, like a bad checksum: exit 3.
        assert_eq!(code(&out), 3, "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains("greet"), "{name}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("install root too long"),
            "{name}: {}",
            stderr(&out)
        );
        assert_eq!(prefix_count(&root), 0, "{name}: something was installed");
        let staging = root.join(".sf-cache/staging");
        assert_eq!(
            std::fs::read_dir(&staging).unwrap().count(),
            0,
            "{name}: staging left behind"
        );
        let outside: Vec<_> = std::fs::read_dir(base.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            outside,
            vec![std::ffi::OsString::from("root")],
            "{name}: wrote outside the root"
        );
        assert!(
            !Path::new("/tmp/sf-cache-escaped").exists(),
            "{name}: wrote through a symlink"
        );
    }
}

#[test]
fn a_root_that_cannot_be_written_is_refused_before_any_download() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let file = base.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let blobs = home.dir.path().join("cache/blobs/sha256");
    let downloaded = || std::fs::read_dir(&blobs).map(|rd| rd.count()).unwrap_or(0);
    // Under a file: named, with the fix; read-only check, so a dry run says it too.
    let under_file = file.join("root");
    let out = install(&home, s(&fx("spack-v3")), &under_file, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{} is not a directory", file.display())),
        "{err}"
    );
    assert!(err.contains("--root DIR"), "{err}");
    assert_eq!(downloaded(), 0, "blobs were downloaded before the refusal");
    // Where no directory can be made (procfs even refuses root): refused before downloading.
    let out = install(
        &home,
        s(&fx("spack-v3")),
        Path::new("/proc/sf-cache-root"),
        &[],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("install root /proc/sf-cache-root cannot be created"),
        "{err}"
    );
    assert_eq!(downloaded(), 0, "blobs were downloaded before the refusal");
}

#[test]
fn cache_gc_during_an_install_waits_and_never_removes_what_it_fetched() {
    let home = Home::trusting();
    let server = HttpServer::start(common::fixtures_dir());
    let tar = greet_tarball(&fx("spack-v3"));
    let tar_url = format!(
        "/{}",
        tar.strip_prefix(common::fixtures_dir()).unwrap().display()
    );
    // greet's tarball trickles in (≈ 3 s) while libgreet's is already in the cache.
    server.set_fault(
        &tar_url,
        Fault::Slow {
            chunk: 512,
            delay: Duration::from_millis(150),
            times: 1,
        },
    );
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root");
    let mirror = format!("{}/spack-v3", server.base_url());
    let install = home
        .std_cmd()
        .args(["install", "greet", "--mirror", &mirror, "--root", s(&root)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first blob (libgreet) to land in the cache, then collect garbage.
    let blobs = home.dir.path().join("cache/blobs/sha256");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "no blob arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    let gc = home.run(&["cache", "gc"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    let out = install.wait_with_output().unwrap();
    assert!(out.status.success(), "install failed: {}", stderr(&out));
    // gc waited for the install, so what it installed is referenced and kept.
    assert!(
        stdout(&gc).contains("removed 0 blob(s)"),
        "gc ran inside the install: {} / {} / install: {}",
        stdout(&gc),
        stderr(&gc),
        stderr(&out)
    );
    let run = std::process::Command::new(prefix_of(&root, "greet").join("bin/greet"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
}
