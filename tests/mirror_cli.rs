//! End-to-end tests of `sf-cache mirror` and `sf-cache import` (issue 4), with the built binary,
//! the real fixture caches and a local HTTP server with fault injection.
//! S3 sources/destinations are not tested here yet (the S3 store backend is not merged).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::*;
use common::{Fault, HttpServer, ALWAYS};
use serde_json::Value;

/// Every regular file below `dir`, relative, sorted.
fn files(dir: &Path) -> BTreeSet<String> {
    fn rec(root: &Path, d: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                rec(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    if dir.is_dir() {
        rec(dir, dir, &mut out);
    }
    out
}

/// Install greet from `mirror` into a fresh root and run it.
fn install_and_run(home: &Home, mirror: &str, extra: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let mut args = vec![
        "install",
        "greet",
        "--mirror",
        mirror,
        "--root",
        s(root.path()),
    ];
    args.extend_from_slice(extra);
    let out = home.run(&args);
    assert!(out.status.success(), "install failed: {}", stderr(&out));
    let greet: PathBuf = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("greet-")
        })
        .expect("greet prefix")
        .join("bin/greet");
    let run = std::process::Command::new(&greet).output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains("greet 2.1.0"), "{}", stdout(&run));
}

/// `(name, hash, in_buildcache)` of the v3 index of a directory cache.
fn v3_index(cache: &Path) -> Vec<(String, String, bool)> {
    let (d, _) = manifest_blob(
        &cache.join("v3/manifests/index/index.manifest.json"),
        "application/vnd.spack.db.v",
    );
    let text = std::fs::read(cache.join(format!("blobs/sha256/{}/{d}", &d[..2]))).unwrap();
    let v: Value = serde_json::from_slice(&text).unwrap();
    v["database"]["installs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(h, r)| {
            (
                r["spec"]["name"].as_str().unwrap().to_string(),
                h.clone(),
                r["in_buildcache"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn mirror_json(home: &Home, args: &[&str]) -> Value {
    let mut a = vec!["--json", "mirror"];
    a.extend_from_slice(args);
    json(&home.run(&a))
}

#[test]
fn v3_over_http_to_dir_then_install_and_rerun_copies_nothing() {
    let home = Home::trusting();
    let server = HttpServer::start(fx("spack-v3"));
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().join("copy");
    let v = mirror_json(&home, &[&server.base_url(), s(&d)]);
    assert_eq!(v["specs"], 3, "{v}");
    assert!(v["blobs_copied"].as_u64().unwrap() >= 6, "{v}");
    assert_eq!(v["blobs_skipped"], 0);
    assert_eq!(v["manifests"], 3);
    assert_eq!(v["keys"], 1);
    for k in ["bytes_copied", "seconds"] {
        assert!(v[k].is_number(), "{k}: {v}");
    }
    // Every spec manifest, blob and key of the source is there byte for byte.
    let src = fx("spack-v3");
    for f in files(&src) {
        if f.starts_with("v3/manifests/index/") || f.contains("a2a200fb") {
            continue; // the index is rebuilt (and its blob with it)
        }
        let index_blob = manifest_blob(
            &src.join("v3/manifests/index/index.manifest.json"),
            "application/vnd.spack.db.v",
        )
        .0;
        if f.ends_with(&index_blob) {
            continue;
        }
        assert_eq!(
            std::fs::read(src.join(&f)).unwrap(),
            std::fs::read(d.join(&f)).unwrap_or_default(),
            "{f} differs"
        );
    }
    install_and_run(&home, s(&d), &[]);

    let before = server.total_requests();
    let again = mirror_json(&home, &[&server.base_url(), s(&d)]);
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(again["bytes_copied"], 0);
    assert!(again["blobs_skipped"].as_u64().unwrap() >= 6);
    // No install tarball was downloaded again (only small metadata blobs are re-read to verify).
    let tarballs: Vec<String> = files(&src.join("v3/manifests/spec"))
        .iter()
        .map(|m| {
            let (d, _) = manifest_blob(
                &src.join("v3/manifests/spec").join(m),
                "application/vnd.spack.install.v",
            );
            format!("/blobs/sha256/{}/{d}", &d[..2])
        })
        .collect();
    assert_eq!(tarballs.len(), 3);
    let tarball_gets = server
        .log()
        .iter()
        .skip(before)
        .filter(|r| r.method == "GET" && tarballs.contains(&r.path))
        .count();
    assert_eq!(tarball_gets, 0);
}

#[test]
fn v2_from_path_to_dir_then_install_and_rerun() {
    let home = Home::trusting();
    let dest = tempfile::tempdir().unwrap();
    let src = fx("spack-v2");
    let v = mirror_json(&home, &[s(&src), s(dest.path())]);
    assert_eq!(v["specs"], 2, "{v}");
    assert_eq!(v["blobs_copied"], 2);
    assert_eq!(v["keys"], 1);
    // Layout kept: v2 stays v2, files byte for byte (index rebuilt).
    for f in files(&src) {
        if f.starts_with("build_cache/index.json") {
            continue;
        }
        assert_eq!(
            std::fs::read(src.join(&f)).unwrap(),
            std::fs::read(dest.path().join(&f)).unwrap_or_default(),
            "{f}"
        );
    }
    assert!(!dest.path().join("v3").exists());
    let idx = std::fs::read(dest.path().join("build_cache/index.json")).unwrap();
    let hash = std::fs::read_to_string(dest.path().join("build_cache/index.json.hash")).unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&idx)), hash.trim());
    let v: Value = serde_json::from_slice(&idx).unwrap();
    assert_eq!(v["database"]["version"], "7");
    install_and_run(&home, s(dest.path()), &[]);
    let again = mirror_json(&home, &[s(&src), s(dest.path())]);
    assert_eq!(again["blobs_copied"], 0, "{again}");
}

#[test]
fn kill_mid_mirror_then_resume() {
    let home = Home::trusting();
    let server = HttpServer::start(fx("spack-v3"));
    server.set_fault(
        "/blobs/",
        Fault::Slow {
            chunk: 512,
            delay: Duration::from_millis(100),
            times: ALWAYS,
        },
    );
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().join("copy");
    let mut child = home
        .std_cmd()
        .args(["mirror", &server.base_url(), s(&d), "-j", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first blob landed (or some time passed), then kill -9.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if files(&d).iter().any(|f| f.starts_with("blobs/")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(
        !d.join("v3/manifests/index/index.manifest.json").exists(),
        "the mirror finished before it was killed; slow the server down"
    );
    server.clear_faults();
    let v = mirror_json(&home, &[&server.base_url(), s(&d)]);
    assert!(v["blobs_skipped"].as_u64().unwrap() >= 1, "{v}");
    // Complete and equal to a clean copy.
    let clean = tempfile::tempdir().unwrap();
    mirror_json(&home, &[s(&fx("spack-v3")), s(clean.path())]);
    let got: BTreeSet<String> = files(&d)
        .into_iter()
        .filter(|f| !f.contains(".sf-tmp-"))
        .collect();
    assert_eq!(got, files(clean.path()));
    for f in files(clean.path()) {
        assert_eq!(
            std::fs::read(clean.path().join(&f)).unwrap(),
            std::fs::read(d.join(&f)).unwrap(),
            "{f}"
        );
    }
    install_and_run(&home, s(&d), &[]);
}

#[test]
fn filtered_mirror_is_exactly_the_closure() {
    let home = Home::trusting();
    let dest = tempfile::tempdir().unwrap();
    let v = mirror_json(&home, &[s(&fx("spack-v3")), s(dest.path()), "greet"]);
    assert_eq!(v["specs"], 2, "{v}");
    let manifests: BTreeSet<String> = files(dest.path())
        .into_iter()
        .filter(|f| f.starts_with("v3/manifests/spec/"))
        .collect();
    assert_eq!(
        manifests,
        BTreeSet::from([
            format!("v3/manifests/spec/greet/greet-2.1.0-{V3_GREET}.spec.manifest.json"),
            format!("v3/manifests/spec/libgreet/libgreet-1.2.0-{V3_LIBGREET}.spec.manifest.json"),
        ])
    );
    let idx = v3_index(dest.path());
    let inbc: BTreeSet<String> = idx.iter().filter(|r| r.2).map(|r| r.1.clone()).collect();
    assert_eq!(
        inbc,
        BTreeSet::from([V3_GREET.to_string(), V3_LIBGREET.to_string()])
    );
    // The other DAG nodes (externals, build deps) are listed with in_buildcache false.
    assert!(idx.iter().any(|r| r.0 == "glibc" && !r.2), "{idx:?}");
    // The compiler-wrapper binary was not copied.
    let (cw, _) = manifest_blob(
        &fx(&format!(
            "spack-v3/v3/manifests/spec/compiler-wrapper/compiler-wrapper-1.0-{V3_WRAPPER}.spec.manifest.json"
        )),
        "application/vnd.spack.install.v",
    );
    assert!(!dest
        .path()
        .join(format!("blobs/sha256/{}/{cw}", &cw[..2]))
        .exists());
    install_and_run(&home, s(dest.path()), &[]);

    // --with-build-deps brings compiler-wrapper too.
    let dest2 = tempfile::tempdir().unwrap();
    let v = mirror_json(
        &home,
        &[
            s(&fx("spack-v3")),
            s(dest2.path()),
            "greet",
            "--with-build-deps",
        ],
    );
    assert_eq!(v["specs"], 3, "{v}");

    // --list-objects finds the same specs without the index.
    let dest3 = tempfile::tempdir().unwrap();
    let v = mirror_json(
        &home,
        &[s(&fx("spack-v3")), s(dest3.path()), "--list-objects"],
    );
    assert_eq!(v["specs"], 3, "{v}");
}

#[test]
fn tampered_tarball_is_refused_and_not_written() {
    let home = Home::trusting();
    let src = copy_cache("spack-v3");
    let tarball = greet_tarball(src.path());
    flip_byte(&tarball, 5000);
    let dest = tempfile::tempdir().unwrap();
    let out = home.run(&["mirror", s(src.path()), s(dest.path())]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let name = tarball.file_name().unwrap().to_str().unwrap().to_string();
    assert!(stderr(&out).contains(&name[..12]), "{}", stderr(&out));
    let rel = tarball.strip_prefix(src.path()).unwrap();
    assert!(!dest.path().join(rel).exists());
    assert!(!dest
        .path()
        .join("v3/manifests/index/index.manifest.json")
        .exists());
    // Nothing the refused run wrote stays: the existing directory is as it was (empty) ...
    let left: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // ... and a destination the run would have created does not exist afterwards.
    let fresh = dest.path().join("new-mirror");
    let out = home.run(&["mirror", s(src.path()), s(&fresh)]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        !fresh.exists(),
        "the refused mirror left {}",
        fresh.display()
    );
    // A tampered signed manifest is refused too.
    let src2 = copy_cache("spack-v3");
    let m = greet_manifest(src2.path());
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(
        &m,
        text.replacen("\"contentLength\":", "\"contentLength\": ", 1),
    )
    .unwrap();
    let dest2 = tempfile::tempdir().unwrap();
    let out = home.run(&["mirror", s(src2.path()), s(dest2.path())]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(!greet_manifest(dest2.path()).exists());
}

fn bundle_round_trip(fixture: &str) {
    let home = Home::trusting();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("cache.sfbundle");
    let out = home.run(&["mirror", s(&fx(fixture)), "--bundle", s(&bundle)]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The first member is the bundle manifest listing every member with sha256 and size.
    let f = std::fs::File::open(&bundle).unwrap();
    let mut ar = tar::Archive::new(zstd::Decoder::new(f).unwrap());
    let mut entries = ar.entries().unwrap();
    let first = entries.next().unwrap().unwrap();
    assert_eq!(
        first.path().unwrap().to_str().unwrap(),
        "sf-cache-bundle.json"
    );
    let m: Value = serde_json::from_reader(first).unwrap();
    let listed = m["members"].as_array().unwrap();
    assert!(listed
        .iter()
        .all(|x| x["sha256"].as_str().unwrap().len() == 64));
    assert_eq!(listed.len(), entries.count());

    let dest = work.path().join("imported");
    let v = json(&home.run(&["--json", "import", s(&bundle), s(&dest)]));
    assert!(v["blobs_copied"].as_u64().unwrap() >= 2, "{v}");
    install_and_run(&home, s(&dest), &[]);
    // install --mirror reads the bundle directly.
    install_and_run(&home, s(&bundle), &[]);

    // One changed byte anywhere: refused, nothing written.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let bad = work.path().join("bad.sfbundle");
    std::fs::write(&bad, &bytes).unwrap();
    let dest2 = work.path().join("bad-import");
    let out = home.run(&["import", s(&bad), s(&dest2)]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(files(&dest2).is_empty(), "{:?}", files(&dest2));
    // A byte changed in a late member: the whole bundle is verified before the first write, so
    // no blob, manifest, key or index reaches the destination.
    let mut late = std::fs::read(&bundle).unwrap();
    let at = late.len() - 3000;
    late[at] ^= 0x01;
    std::fs::write(&bad, &late).unwrap();
    let dest3 = work.path().join("late-import");
    let out = home.run(&["import", s(&bad), s(&dest3)]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(!dest3.exists(), "{:?}", files(&dest3));
}

#[test]
fn bundle_round_trip_v3() {
    bundle_round_trip("spack-v3");
}

#[test]
fn bundle_round_trip_v2() {
    bundle_round_trip("spack-v2");
}

#[test]
fn v2_to_v3_signed_with_the_fixture_key_is_installable() {
    let home = Home::trusting();
    let dest = tempfile::tempdir().unwrap();
    let key = fx("keys/sf-cache-fixture.secret.asc");
    let v = mirror_json(
        &home,
        &[
            s(&fx("spack-v2")),
            s(dest.path()),
            "--to-layout",
            "v3",
            "--key",
            s(&key),
        ],
    );
    assert_eq!(v["specs"], 2, "{v}");
    assert_eq!(v["unsigned_converted"], 0);
    assert!(dest.path().join("v3/layout.json").is_file());
    assert!(!dest.path().join("build_cache").exists());
    let m = dest.path().join(format!(
        "v3/manifests/spec/greet/greet-2.1.0-{V2_GREET}.spec.manifest.json"
    ));
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"));
    // The tarball blob is the .spack file unchanged.
    let (d, _) = manifest_blob(&m, "application/vnd.spack.install.v");
    let spack = fx(&format!(
        "spack-v2/build_cache/linux-debian12-x86_64/gcc-12.2.0/greet-2.1.0/linux-debian12-x86_64-gcc-12.2.0-greet-2.1.0-{V2_GREET}.spack"
    ));
    assert_eq!(
        std::fs::read(spack).unwrap(),
        std::fs::read(dest.path().join(format!("blobs/sha256/{}/{d}", &d[..2]))).unwrap()
    );
    let fpr = fixture_fingerprint();
    assert!(dest
        .path()
        .join(format!("v3/manifests/key/{fpr}.key.manifest.json"))
        .is_file());
    install_and_run(&home, s(dest.path()), &[]);
    let show = json(&home.run(&["--json", "show", "greet", "--mirror", s(dest.path())]));
    assert!(show.to_string().contains(&fpr), "{show}");

    // Without --key: unsigned, said so, and readable only with --allow-unsigned.
    let dest2 = tempfile::tempdir().unwrap();
    let v = mirror_json(
        &home,
        &[s(&fx("spack-v2")), s(dest2.path()), "--to-layout", "v3"],
    );
    assert_eq!(v["unsigned_converted"], 2, "{v}");
    install_and_run(&home, s(dest2.path()), &["--allow-unsigned"]);
}

/// A passphrase-protected signing key made by real gpg: (armored secret key, passphrase file).
fn protected_key(dir: &Path) -> (PathBuf, PathBuf) {
    let gnupg = dir.join("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    let gpg = |args: &[&str]| {
        let out = std::process::Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "s3cret pass",
            ])
            .args(args)
            .output()
            .expect("gpg is needed for this test: apt-get install gnupg (.ci/run installs it)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    gpg(&[
        "--quick-gen-key",
        "sf-cache test <t@sf-cache.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let key = dir.join("protected.secret.asc");
    std::fs::write(&key, gpg(&["--armor", "--export-secret-keys"])).unwrap();
    let pass = dir.join("pass.txt");
    std::fs::write(&pass, "s3cret pass\nsecond line is ignored\n").unwrap();
    (key, pass)
}

#[test]
fn to_layout_v3_takes_the_passphrase_file_like_every_signing_command() {
    let home = Home::trusting();
    let work = tempfile::tempdir().unwrap();
    let (key, pass) = protected_key(work.path());
    let dest = work.path().join("v3");
    let v = mirror_json(
        &home,
        &[
            s(&fx("spack-v2")),
            s(&dest),
            "--to-layout",
            "v3",
            "--key",
            s(&key),
            "--passphrase-file",
            s(&pass),
        ],
    );
    assert_eq!(v["specs"], 2, "{v}");
    assert_eq!(v["unsigned_converted"], 0, "{v}");
    let m = dest.join(format!(
        "v3/manifests/spec/greet/greet-2.1.0-{V2_GREET}.spec.manifest.json"
    ));
    assert!(std::fs::read_to_string(&m)
        .unwrap()
        .starts_with("-----BEGIN PGP SIGNED MESSAGE-----"));

    // A wrong passphrase: one line naming the key, nothing written.
    let wrong = work.path().join("wrong.txt");
    std::fs::write(&wrong, "not it\n").unwrap();
    let dest2 = work.path().join("v3-wrong");
    let out = home.run(&[
        "mirror",
        s(&fx("spack-v2")),
        s(&dest2),
        "--to-layout",
        "v3",
        "--key",
        s(&key),
        "--passphrase-file",
        s(&wrong),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot sign") && err.contains("--passphrase-file"),
        "{err}"
    );
    assert!(
        !dest2.exists(),
        "nothing written for a key that cannot sign"
    );
}
