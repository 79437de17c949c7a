//! End-to-end tests of `publish` and `update-index`: install from the real Spack-made fixture
//! cache, publish the installed prefixes (signed with the fixture key, or unsigned), install what
//! was published into another root and run it; gpg checks the signatures; existing caches keep
//! their entries; concurrent publishers keep each other's entries; `kill -9` at any moment leaves
//! a readable cache that a rerun completes; clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::cli::*;
use serde_json::Value;

const SECRET: &str = "keys/sf-cache-fixture.secret.asc";

/// A root `<t>/a` with greet and libgreet installed from the fixture `spack-v3`.
fn installed_root(home: &Home, t: &Path, name: &str) -> PathBuf {
    let root = t.join(name);
    let o = home.run(&[
        "install",
        "greet",
        "--mirror",
        s(&fx("spack-v3")),
        "--root",
        s(&root),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    root
}

fn publish(home: &Home, args: &[&str]) -> Output {
    let mut a = vec!["publish"];
    a.extend_from_slice(args);
    home.run(&a)
}

fn error_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

fn run_program(path: &Path) -> String {
    let o = Command::new(path).output().unwrap();
    assert!(o.status.success(), "{path:?}: {}", stderr(&o));
    stdout(&o)
}

fn rpath(bin: &Path) -> String {
    let o = Command::new("readelf")
        .arg("-d")
        .arg(bin)
        .output()
        .expect("readelf is needed (apt-get install binutils)");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.contains("(RPATH)") || l.contains("(RUNPATH)"))
        .and_then(|l| l.split('[').nth(1))
        .map(|s| s.trim_end_matches(']').to_string())
        .unwrap_or_default()
}

/// greet installed in `root` runs and everything points into `root`, nothing into `old`.
fn check_greet(root: &Path, old: &Path) {
    let p = prefix_of(root, "greet");
    let l = prefix_of(root, "libgreet");
    for prog in ["bin/greet", "bin/hello", "bin/greet-abs"] {
        let out = run_program(&p.join(prog));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "Hello from libgreet 1.2.0!");
        assert_eq!(lines[1], "greet 2.1.0");
        let tail = format!("{}/share/greet", &s(&p)[1..]);
        assert!(lines[2].ends_with(&tail), "{out}");
        assert_eq!(
            lines[3],
            "message: greet read this line from its data directory"
        );
    }
    let out = run_program(&p.join("bin/greet-wrapper"));
    assert!(
        out.starts_with(&format!("greet-wrapper: prefix is {}\n", p.display())),
        "{out}"
    );
    let rp = rpath(&p.join("bin/greet"));
    assert!(rp.contains(&format!("{}/lib", l.display())), "{rp}");
    assert!(!rp.contains(s(old)), "{rp}");
    let paths = std::fs::read_to_string(p.join("share/greet/paths.txt")).unwrap();
    assert!(
        paths.contains(&format!("libgreet used from {}", l.display())),
        "{paths}"
    );
    assert!(!paths.contains(s(old)), "{paths}");
    assert_eq!(
        std::fs::read_link(p.join("lib/libgreet-alias.so")).unwrap(),
        l.join("lib/libgreet.so")
    );
}

fn spec_manifests(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = cache.join("v3/manifests/spec");
    for d in std::fs::read_dir(dir).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            let p = f.path();
            if p.to_string_lossy().ends_with(".spec.manifest.json") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every blob a manifest names exists with its size (no reader ever sees a dangling manifest).
/// No lock file of the publishers stays in the cache once they are done.
fn check_no_lock_files(cache: &Path) {
    fn walk(d: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, found);
            } else if e.file_name().to_string_lossy().starts_with(".sf-lock.") {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(cache, &mut found);
    assert!(found.is_empty(), "lock files left in the cache: {found:?}");
}

fn check_no_dangling(cache: &Path) {
    for m in spec_manifests(cache) {
        let v = manifest_json(&m);
        for rec in v["data"].as_array().unwrap() {
            let d = rec["checksum"].as_str().unwrap();
            let blob = cache.join(format!("blobs/sha256/{}/{d}", &d[..2]));
            let len = std::fs::metadata(&blob)
                .unwrap_or_else(|e| panic!("{m:?} names missing blob {blob:?}: {e}"))
                .len();
            assert_eq!(len, rec["contentLength"].as_u64().unwrap(), "{blob:?}");
        }
    }
}

fn list_json(home: &Home, cache: &Path) -> Vec<Value> {
    let o = home.run(&["list", "--json", "--all", "--mirror", s(cache)]);
    json(&o).as_array().unwrap().clone()
}

fn listed(home: &Home, cache: &Path, name: &str) -> bool {
    list_json(home, cache)
        .iter()
        .any(|e| e["name"] == name && e["in_buildcache"] == true)
}

struct GpgHome(tempfile::TempDir);

impl GpgHome {
    fn new() -> Self {
        let g = GpgHome(
            tempfile::Builder::new()
                .prefix("sfgpg")
                .tempdir_in("/tmp")
                .unwrap(),
        );
        let o = g
            .cmd()
            .arg("--import")
            .arg(fx("keys/sf-cache-fixture.pub.asc"))
            .output()
            .expect("gpg is needed by the tests (apt-get install gnupg)");
        assert!(o.status.success(), "{}", stderr(&o));
        g
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.0.path())
            .args(["--batch", "--no-tty", "--quiet"]);
        c
    }
    fn verify(&self, file: &Path) -> bool {
        self.cmd()
            .arg("--verify")
            .arg(file)
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.0.path())
            .args(["--kill", "all"])
            .output();
    }
}

#[test]
fn round_trip_signed_gpg_verifies_and_installs_elsewhere() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let a = installed_root(&home, t.path(), "a");
    let dest = t.path().join("cache");
    let greet = prefix_of(&a, "greet");

    // Without --with-deps, the missing libgreet is named.
    let o = publish(
        &home,
        &[s(&greet), "--to", s(&dest), "--key", s(&fx(SECRET))],
    );
    assert_eq!(code(&o), 1);
    let e = error_lines(&o);
    assert_eq!(e.len(), 1, "{}", stderr(&o));
    assert!(
        e[0].contains("libgreet@1.2.0") && e[0].contains("--with-deps"),
        "{e:?}"
    );

    let o = publish(
        &home,
        &[
            s(&greet),
            "--to",
            s(&dest),
            "--key",
            s(&fx(SECRET)),
            "--with-deps",
            "--json",
        ],
    );
    let r = json(&o);
    assert_eq!(r["published"], 2, "{r}");
    assert_eq!(r["signed"], true);
    assert_eq!(r["signing_key"], fixture_fingerprint());
    let entries = r["entries"].as_array().unwrap();
    for (name, hash, dep) in [("greet", V3_GREET, false), ("libgreet", V3_LIBGREET, true)] {
        let e = entries.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(e["hash"], hash);
        assert_eq!(e["status"], "published");
        assert_eq!(e["signed"], true);
        assert_eq!(e["dependency"], dep);
        assert!(dest.join(e["manifest_path"].as_str().unwrap()).is_file());
        let digest = e["tarball_digest"].as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let tgz = dest.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        // sf-cache's own receipts never travel.
        let listing = Command::new("tar").arg("tzf").arg(&tgz).output().unwrap();
        let names = stdout(&listing);
        assert!(names.contains(".spack/spec.json"), "{names}");
        assert!(names.contains(".spack/binary_distribution"), "{names}");
        assert!(!names.contains("sf-cache-receipt"), "{names}");
        assert!(!names.contains("sf-cache-files"), "{names}");
    }
    let warnings = r["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("not padded")),
        "{r}"
    );
    assert_eq!(r["index"]["in_buildcache"], 2);
    check_no_dangling(&dest);
    check_no_lock_files(&dest);

    // Real gpg verifies every manifest sf-cache signed.
    let gpg = GpgHome::new();
    let manifests = spec_manifests(&dest);
    assert_eq!(manifests.len(), 2);
    for m in &manifests {
        assert!(std::fs::read(m)
            .unwrap()
            .starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----"));
        assert!(gpg.verify(m), "gpg rejects {m:?}");
    }
    // The public key is published.
    assert!(dest
        .join(format!(
            "v3/manifests/key/{}.key.manifest.json",
            fixture_fingerprint()
        ))
        .is_file());

    // Install into a root whose prefixes are no longer than A's (same length), and run.
    let b = t.path().join("b");
    let o = home.run(&["install", "greet", "--mirror", s(&dest), "--root", s(&b)]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_greet(&b, &a);
    let o = home.run(&["verify", "--root", s(&b)]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A longer root is refused (the source root was not padded).
    let long = t.path().join("bbbbbbbbbbbbbbbbbbbb");
    let o = home.run(&["install", "greet", "--mirror", s(&dest), "--root", s(&long)]);
    assert!(!o.status.success());
    assert!(!long.join(greet.file_name().unwrap()).exists());

    // update-index rebuilds the same index.
    let before = std::fs::read(dest.join("v3/manifests/index/index.manifest.json")).unwrap();
    let o = home.run(&["update-index", s(&dest)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = std::fs::read(dest.join("v3/manifests/index/index.manifest.json")).unwrap();
    assert_eq!(before, after);
}

#[test]
fn unsigned_publish_is_refused_by_a_default_install() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let a = installed_root(&home, t.path(), "a");
    let dest = t.path().join("cache");
    let o = publish(
        &home,
        &[
            s(&prefix_of(&a, "greet")),
            s(&prefix_of(&a, "libgreet")),
            "--to",
            s(&dest),
            "--unsigned",
            "--json",
        ],
    );
    let r = json(&o);
    assert_eq!(r["signed"], false);
    assert_eq!(r["published"], 2);
    assert!(!std::fs::read(&spec_manifests(&dest)[0])
        .unwrap()
        .starts_with(b"-----BEGIN PGP"));
    let b = t.path().join("b");
    let o = home.run(&["install", "greet", "--mirror", s(&dest), "--root", s(&b)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!b.join(prefix_of(&a, "greet").file_name().unwrap()).exists());
    let o = home.run(&[
        "install",
        "greet",
        "--allow-unsigned",
        "--mirror",
        s(&dest),
        "--root",
        s(&b),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_greet(&b, &a);
}

#[test]
fn publish_into_an_existing_cache_keeps_its_entries_and_force_rewrites() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let a = installed_root(&home, t.path(), "a");
    let dest = copy_cache("spack-v3");
    let dest = dest.path();
    let before = list_json(&home, dest);
    assert_eq!(before.len(), 7);
    let gm = greet_manifest(dest);
    let original = std::fs::read(&gm).unwrap();

    // Same hashes as the cache already has: skipped, nothing rewritten, nothing lost.
    let greet = prefix_of(&a, "greet");
    let o = publish(
        &home,
        &[
            s(&greet),
            "--to",
            s(dest),
            "--key",
            s(&fx(SECRET)),
            "--json",
        ],
    );
    let r = json(&o);
    assert_eq!(
        (r["published"].as_u64(), r["skipped"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    assert_eq!(r["entries"][0]["status"], "skipped");
    assert_eq!(std::fs::read(&gm).unwrap(), original);
    assert_eq!(list_json(&home, dest), before);

    // --force rewrites greet (a new tarball: sf-cache packs from the installed prefix); every
    // other entry of the index survives.
    let o = publish(
        &home,
        &[
            s(&greet),
            "--to",
            s(dest),
            "--key",
            s(&fx(SECRET)),
            "--force",
            "--json",
        ],
    );
    let r = json(&o);
    assert_eq!(r["published"], 1, "{r}");
    assert_ne!(std::fs::read(&gm).unwrap(), original);
    let after = list_json(&home, dest);
    let key = |v: &Vec<Value>| {
        let mut k: Vec<(String, bool)> = v
            .iter()
            .map(|e| {
                (
                    e["hash"].as_str().unwrap().to_string(),
                    e["in_buildcache"].as_bool().unwrap(),
                )
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(key(&after), key(&before));
    assert!(listed(&home, dest, "compiler-wrapper"));
    check_no_dangling(dest);
    check_no_lock_files(dest);
    // Its consumers still install it (libgreet from Spack's entry, greet from ours).
    let b = t.path().join("b");
    let o = home.run(&["install", "greet", "--mirror", s(dest), "--root", s(&b)]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_greet(&b, &a);
}

// ---------------------------------------------------------------------------------------------
// A small synthetic Spack store (`.spack-db/index.json` + prefixes), for tests that need many
// independent packages.

#[test]
fn concurrent_publishers_keep_each_others_entries() {
    let home = Home::new();
    let t = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("pkg{i}")).collect();
    let prefixes = synthetic_store(t.path(), &names);
    let dest = t.path().join("cache");
    for round in 0..2 {
        // Round 0 starts with no index (If-None-Match), round 1 rewrites it (If-Match).
        let children: Vec<_> = prefixes
            .iter()
            .map(|p| {
                let mut c = home.std_cmd();
                c.args(["publish", s(p), "--to", s(&dest), "--unsigned", "-q"]);
                if round == 1 {
                    c.arg("--force");
                }
                c.stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let got: Vec<String> = list_json(&home, &dest)
            .iter()
            .filter(|e| e["in_buildcache"] == true)
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        for n in &names {
            assert!(
                got.contains(n),
                "round {round}: {n} lost from the index: {got:?}"
            );
        }
        assert_eq!(got.len(), names.len());
    }
    check_no_dangling(&dest);
    check_no_lock_files(&dest);
    // update-index agrees.
    let o = home.run(&["update-index", s(&dest), "--json"]);
    let r = json(&o);
    assert_eq!(r["in_buildcache"], names.len());
}

#[test]
fn kill_9_at_any_moment_leaves_a_readable_cache_and_a_rerun_completes() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let a = installed_root(&home, t.path(), "a");
    let names: Vec<String> = (0..3).map(|i| format!("bulk{i}")).collect();
    let bulk = synthetic_store(t.path(), &names);
    let dest_dir = copy_cache("spack-v3");
    let dest = dest_dir.path();
    let mut args: Vec<String> = vec!["publish".into()];
    args.push(s(&prefix_of(&a, "greet")).into());
    args.push(s(&prefix_of(&a, "libgreet")).into());
    args.extend(bulk.iter().map(|p| s(p).to_string()));
    args.extend(
        [
            "--to",
            s(dest),
            "--key",
            s(&fx(SECRET)),
            "--force",
            "-q",
            "--jobs",
            "2",
        ]
        .map(String::from),
    );
    for delay_ms in [0u64, 10, 25, 50, 80, 120, 180, 260, 400, 600] {
        let mut child = home
            .std_cmd()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = child.wait();
        // Readable at once: the index lists at least what the cache had, manifests never dangle.
        assert!(
            listed(&home, dest, "greet") && listed(&home, dest, "compiler-wrapper"),
            "after kill at {delay_ms} ms"
        );
        check_no_dangling(dest);
    }
    // A rerun completes.
    let o = home.std_cmd().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for n in &names {
        assert!(listed(&home, dest, n), "{n}");
    }
    check_no_dangling(dest);
    check_no_lock_files(dest);
    let gpg = GpgHome::new();
    for m in spec_manifests(dest) {
        assert!(gpg.verify(&m), "gpg rejects {m:?}");
    }
    let b = t.path().join("b");
    let o = home.run(&["install", "greet", "--mirror", s(dest), "--root", s(&b)]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_greet(&b, &a);
}

#[test]
fn clear_errors() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("cache");
    let names = vec!["lonely".to_string()];
    let prefixes = synthetic_store(t.path(), &names);

    // Not a prefix.
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = publish(&home, &[s(&empty), "--to", s(&dest), "--unsigned"]);
    assert_eq!(code(&o), 1);
    let e = error_lines(&o);
    assert_eq!(e.len(), 1, "{}", stderr(&o));
    assert!(
        e[0].contains(s(&empty)) && e[0].contains(".spack/spec.json"),
        "{e:?}"
    );
    assert!(!dest.exists());

    // A public key cannot sign.
    let o = publish(
        &home,
        &[
            s(&prefixes[0]),
            "--to",
            s(&dest),
            "--key",
            s(&fx("keys/sf-cache-fixture.pub.asc")),
        ],
    );
    assert_eq!(code(&o), 1);
    let e = error_lines(&o);
    assert_eq!(e.len(), 1, "{}", stderr(&o));
    assert!(
        e[0].contains("sf-cache-fixture.pub.asc") && e[0].contains("cannot sign"),
        "{e:?}"
    );
    assert!(!dest.exists());

    // Neither --key nor --unsigned: usage error.
    let o = publish(&home, &[s(&prefixes[0]), "--to", s(&dest)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));

    // An unreadable file (root reads everything: skipped then).
    if unsafe { libc::geteuid() } == 0 {
        eprintln!(
            "skipping the unreadable-file case: running as root, chmod 000 does not stop root"
        );
    } else {
        use std::os::unix::fs::PermissionsExt;
        let f = prefixes[0].join("share/data.txt");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
        let o = publish(&home, &[s(&prefixes[0]), "--to", s(&dest), "--unsigned"]);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(code(&o), 1);
        let e = error_lines(&o);
        assert_eq!(e.len(), 1, "{}", stderr(&o));
        assert!(e[0].contains("data.txt"), "{e:?}");
        assert!(spec_manifests_or_empty(&dest).is_empty());
    }

    // And it works once the problems are gone.
    let o = publish(&home, &[s(&prefixes[0]), "--to", s(&dest), "--unsigned"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn spec_manifests_or_empty(cache: &Path) -> Vec<PathBuf> {
    if cache.join("v3/manifests/spec").is_dir() {
        spec_manifests(cache)
    } else {
        Vec::new()
    }
}

/// The member names of every tarball blob of a v3 cache whose prefix is `name-…`, relative to
/// that prefix.
fn packed_members(cache: &Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![cache.join("blobs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let o = Command::new("tar").arg("-tzf").arg(&p).output().unwrap();
            if !o.status.success() {
                continue; // not a tarball (spec, key, index blobs)
            }
            let marker = format!("/{name}-");
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some(i) = line.find(&marker) {
                    if let Some((_, rel)) = line[i + 1..].split_once('/') {
                        out.push(rel.trim_end_matches('/').to_string());
                    }
                }
            }
        }
    }
    out
}

fn left_out(plan: &Value, name: &str) -> Vec<(String, String)> {
    let e = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {plan}"));
    e["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn publish_packs_only_what_was_installed_and_never_a_private_file_unasked() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let a = installed_root(&home, t.path(), "a");
    let greet = prefix_of(&a, "greet");
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    // What a running cluster leaves in a prefix after the install.
    std::fs::create_dir_all(greet.join("etc/munge")).unwrap();
    std::fs::write(greet.join("etc/munge/munge.key"), [7u8; 128]).unwrap();
    chmod(&greet.join("etc/munge/munge.key"), 0o600);
    chmod(&greet.join("etc/munge"), 0o700);
    std::fs::write(greet.join("etc/slurm.conf"), "ClusterName=test\n").unwrap();
    std::fs::write(
        greet.join("share/site.pem"),
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::create_dir_all(greet.join("var/run")).unwrap();
    let _socket =
        std::os::unix::net::UnixListener::bind(greet.join("var/run/munge.socket")).unwrap();
    let fifo = std::ffi::CString::new(s(&greet.join("share/greet/events.fifo"))).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // An installed file changed, and one made private.
    std::fs::write(greet.join("share/greet/message.txt"), "edited by hand\n").unwrap();
    chmod(&greet.join("share/greet/paths.txt"), 0o600);

    let dest = t.path().join("dest");
    let key = fx(SECRET);
    let base = [s(&greet), "--with-deps", "--to", s(&dest), "--key", s(&key)];
    // --dry-run: per prefix what is packed and why the rest is left out; nothing written.
    let mut args = base.to_vec();
    args.extend(["--dry-run", "--json"]);
    let o = publish(&home, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dest.exists(), "a dry run wrote {dest:?}");
    let plan: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let lo = left_out(&plan, "greet");
    let want = [
        ("etc", "untracked"),
        ("share/greet/events.fifo", "special"),
        ("share/greet/message.txt", "changed"),
        // A hard link of paths.txt: the same inode, private too.
        ("share/greet/paths-hardlink.txt", "private"),
        ("share/greet/paths.txt", "private"),
        ("share/site.pem", "untracked"),
        ("var", "untracked"),
    ];
    for (p, r) in want {
        assert!(
            lo.contains(&(p.to_string(), r.to_string())),
            "{p} ({r}) not left out: {lo:?}"
        );
    }
    assert_eq!(lo.len(), want.len(), "{lo:?}");
    let e = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "greet")
        .unwrap();
    assert_eq!(e["tracking"], "receipt");
    assert!(e["packed"]
        .as_array()
        .unwrap()
        .contains(&Value::from("bin/greet")));
    // The human form names each path left out with its reason.
    let mut args = base.to_vec();
    args.push("--dry-run");
    let o = publish(&home, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("  leave etc/: added after the install"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("  pack  bin/greet\n"), "{}", stdout(&o));

    // The publish packs exactly that and says so in one warning per kind.
    let o = publish(&home, &base);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("left out 4 path(s) added or changed since the install: etc, share/greet/message.txt, share/site.pem, var"),
        "{err}"
    );
    assert!(
        err.contains("private or secret-looking path(s): share/greet/paths-hardlink.txt, share/greet/paths.txt"),
        "{err}"
    );
    let members = packed_members(&dest, "greet-2.1.0");
    assert!(members.iter().any(|m| m == "bin/greet"), "{members:?}");
    for gone in [
        "etc",
        "var",
        "share/site.pem",
        "share/greet/message.txt",
        "share/greet/paths.txt",
        "share/greet/events.fifo",
    ] {
        assert!(
            !members
                .iter()
                .any(|m| m == gone || m.starts_with(&format!("{gone}/"))),
            "{gone} was packed: {members:?}"
        );
    }
    check_no_lock_files(&dest);
    // What was published installs and runs elsewhere.
    let b = t.path().join("b");
    let o = home.run(&["install", "greet", "--mirror", s(&dest), "--root", s(&b)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b_greet = prefix_of(&b, "greet");
    assert!(b_greet.join("bin/greet").is_file());
    assert!(!b_greet.join("share/greet/message.txt").exists());
    assert!(!b_greet.join("etc").exists());

    // --include-untracked: added files travel, but never a private one or a secret-looking
    // one unless named; sockets and fifos never.
    let dest2 = t.path().join("dest2");
    let mut args = vec![
        s(&greet),
        "--with-deps",
        "--to",
        s(&dest2),
        "--unsigned",
        "--include-untracked",
    ];
    args.extend(["--dry-run", "--json"]);
    let plan: Value = serde_json::from_str(&stdout(&publish(&home, &args))).unwrap();
    let lo = left_out(&plan, "greet");
    let want = [
        ("etc/munge", "private"),
        ("share/greet/events.fifo", "special"),
        ("share/greet/paths-hardlink.txt", "private"),
        ("share/greet/paths.txt", "private"),
        ("share/site.pem", "secret"),
        ("var/run/munge.socket", "special"),
    ];
    for (p, r) in want {
        assert!(
            lo.contains(&(p.to_string(), r.to_string())),
            "{p} ({r}): {lo:?}"
        );
    }
    assert_eq!(lo.len(), want.len(), "{lo:?}");
    let site_pem = greet.join("share/site.pem");
    args.truncate(args.len() - 2);
    args.extend(["--include-private", s(&site_pem)]);
    let o = publish(&home, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("packing 1 private path(s) named by --include-private"),
        "{}",
        stderr(&o)
    );
    let members = packed_members(&dest2, "greet-2.1.0");
    for m in [
        "etc/slurm.conf",
        "share/site.pem",
        "share/greet/message.txt",
    ] {
        assert!(
            members.iter().any(|x| x == m),
            "{m} not packed: {members:?}"
        );
    }
    assert!(
        !members.iter().any(|m| m.starts_with("etc/munge")),
        "{members:?}"
    );

    // A path that names nothing being published: one line, exit 2, nothing written.
    let dest3 = t.path().join("dest3");
    let o = publish(
        &home,
        &[
            s(&greet),
            "--with-deps",
            "--to",
            s(&dest3),
            "--unsigned",
            "--include-private",
            "/etc/hostname",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let errs = error_lines(&o);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("--include-private /etc/hostname: not inside any prefix being published"),
        "{errs:?}"
    );
    assert!(!dest3.exists());
}
