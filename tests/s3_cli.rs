//! End-to-end tests of the built binary against a local S3-compatible server (moto): `mirror` to
//! and from `s3://`, `install --mirror s3://…`, `publish --to s3://…` (signed round trip, unsigned
//! refused, concurrent publishers keeping each other's index entries through `If-Match`),
//! `update-index s3://…`, and `import` of a bundle into S3.
//!
//! The server URL comes from `SF_CACHE_TEST_S3` (default `http://127.0.0.1:9000`); tests FAIL
//! (they do not skip) when it does not answer: start it with
//! `pip install "moto[server]" && moto_server -H 127.0.0.1 -p 9000` and export dummy credentials
//! (`AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1`);
//! `.ci/run` does both. Every test makes its own bucket.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::cli::*;
use common::s3;
use common::HttpServer;
use serde_json::Value;

const SECRET: &str = "keys/sf-cache-fixture.secret.asc";

/// Check the server is up, then make a fresh bucket.
fn bucket(tag: &str) -> String {
    s3::require_server();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(s3::fresh_bucket(tag))
}

/// Run the binary with `--s3-endpoint` pointing at the local server.
fn run(home: &Home, args: &[&str]) -> Output {
    let ep = s3::endpoint();
    let mut a = vec!["--s3-endpoint", ep.as_str()];
    a.extend_from_slice(args);
    home.cmd()
        .env_remove("SF_CACHE_S3_ENDPOINT")
        .args(&a)
        .output()
        .unwrap()
}

fn run_json(home: &Home, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    json(&run(home, &a))
}

/// greet installed in `root` runs, uses libgreet, and reads its data from `root` (never `old`).
fn check_greet(root: &Path, old: Option<&Path>) {
    let p = prefix_of(root, "greet");
    let o = std::process::Command::new(p.join("bin/greet"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], "Hello from libgreet 1.2.0!");
    assert_eq!(lines[1], "greet 2.1.0");
    let tail = format!("{}/share/greet", &s(&p)[1..]);
    assert!(lines[2].ends_with(&tail), "{out}");
    if let Some(old) = old {
        assert!(!out.contains(s(old)), "{out}");
    }
}

/// Install greet from `mirror` into `root` (asserting success) and run it.
fn install_and_run(home: &Home, mirror: &str, root: &Path, extra: &[&str]) {
    let mut args = vec![
        "-q",
        "install",
        "greet",
        "--mirror",
        mirror,
        "--root",
        s(root),
    ];
    args.extend_from_slice(extra);
    let o = run(home, &args);
    assert!(o.status.success(), "install from {mirror}: {}", stderr(&o));
    check_greet(root, None);
}

/// `(name, in_buildcache)` of every entry the index of `mirror` lists.
fn listed(home: &Home, mirror: &str) -> Vec<(String, bool)> {
    let v = run_json(home, &["list", "--all", "--mirror", mirror]);
    let mut out: Vec<(String, bool)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["in_buildcache"].as_bool().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn in_buildcache(home: &Home, mirror: &str) -> Vec<String> {
    listed(home, mirror)
        .into_iter()
        .filter(|(_, b)| *b)
        .map(|(n, _)| n)
        .collect()
}

/// Keys of the objects in `bucket` under `prefix`.
fn object_keys(bucket: &str, prefix: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let r = s3::admin_client()
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            keys.extend(
                r.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            token = r.next_continuation_token().map(String::from);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    })
}

/// A root `<t>/<name>` with greet and libgreet installed from the fixture `spack-v3`.
fn installed_root(home: &Home, t: &Path, name: &str) -> PathBuf {
    let root = t.join(name);
    let o = run(
        home,
        &[
            "-q",
            "install",
            "greet",
            "--mirror",
            s(&fx("spack-v3")),
            "--root",
            s(&root),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    root
}

#[test]
fn v3_over_http_to_s3_then_install_from_s3_and_rerun_copies_nothing() {
    let b = bucket("mirror");
    let home = Home::trusting();
    let server = HttpServer::start(fx("spack-v3"));
    let dest = format!("s3://{b}/mirror/buildcache");

    let v = run_json(&home, &["mirror", &server.base_url(), &dest]);
    assert_eq!(v["specs"], 3, "{v}");
    assert!(v["blobs_copied"].as_u64().unwrap() >= 6, "{v}");
    assert_eq!(v["blobs_skipped"], 0, "{v}");
    assert_eq!(v["manifests"], 3, "{v}");
    assert_eq!(v["keys"], 1, "{v}");
    // Everything landed under the key prefix, laid out as in the source.
    let keys = object_keys(&b, "");
    assert!(
        keys.iter().all(|k| k.starts_with("mirror/buildcache/")),
        "{keys:?}"
    );
    let greet_manifest = format!(
        "mirror/buildcache/v3/manifests/spec/greet/greet-2.1.0-{V3_GREET}.spec.manifest.json"
    );
    assert!(keys.contains(&greet_manifest), "{keys:?}");
    assert!(
        keys.contains(&"mirror/buildcache/v3/manifests/index/index.manifest.json".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"mirror/buildcache/v3/layout.json".to_string()),
        "{keys:?}"
    );

    // Install from the S3 copy and run.
    let t = tempfile::tempdir().unwrap();
    install_and_run(&home, &dest, &t.path().join("r"), &[]);

    // Rerun: nothing copied again.
    let again = run_json(&home, &["mirror", &server.base_url(), &dest]);
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(again["bytes_copied"], 0, "{again}");
    assert!(again["blobs_skipped"].as_u64().unwrap() >= 6, "{again}");

    // And back out of S3 into a directory (reading the index, then by listing the objects).
    for (i, extra) in [&[][..], &["--list-objects"][..]].iter().enumerate() {
        let local = t.path().join(format!("local{i}"));
        let mut args = vec!["mirror", dest.as_str(), s(&local)];
        args.extend_from_slice(extra);
        let v = run_json(&home, &args);
        assert_eq!(v["specs"], 3, "{v}");
        assert!(local
            .join(format!(
                "v3/manifests/spec/greet/greet-2.1.0-{V3_GREET}.spec.manifest.json"
            ))
            .is_file());
        install_and_run(&home, s(&local), &t.path().join(format!("l{i}")), &[]);
    }
}

#[test]
fn publish_round_trip_through_s3() {
    let b = bucket("publish");
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let a = installed_root(&home, t.path(), "a");
    let dest = format!("s3://{b}/cache");
    let greet = prefix_of(&a, "greet");

    // Without --with-deps, the missing libgreet is named (the destination is empty).
    let o = run(
        &home,
        &["publish", s(&greet), "--to", &dest, "--key", s(&fx(SECRET))],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("--with-deps"), "{}", stderr(&o));

    let r = run_json(
        &home,
        &[
            "publish",
            s(&greet),
            "--to",
            &dest,
            "--key",
            s(&fx(SECRET)),
            "--with-deps",
        ],
    );
    assert_eq!(r["published"], 2, "{r}");
    assert_eq!(r["signed"], true, "{r}");
    assert_eq!(r["signing_key"], fixture_fingerprint());
    assert_eq!(r["index"]["in_buildcache"], 2, "{r}");
    let keys = object_keys(&b, "cache/");
    for e in r["entries"].as_array().unwrap() {
        let m = format!("cache/{}", e["manifest_path"].as_str().unwrap());
        assert!(keys.contains(&m), "{m} not in {keys:?}");
        let hex = e["tarball_digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string();
        let blob = format!("cache/blobs/sha256/{}/{hex}", &hex[..2]);
        assert!(keys.contains(&blob), "{blob} not in {keys:?}");
    }
    let key_manifest = format!(
        "cache/v3/manifests/key/{}.key.manifest.json",
        fixture_fingerprint()
    );
    assert!(keys.contains(&key_manifest), "{keys:?}");
    assert_eq!(in_buildcache(&home, &dest), ["greet", "libgreet"]);

    // Install from S3 into a root whose path is as long as A's, and run.
    let broot = t.path().join("b");
    let o = run(
        &home,
        &[
            "-q",
            "install",
            "greet",
            "--mirror",
            &dest,
            "--root",
            s(&broot),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    check_greet(&broot, Some(&a));
    let o = run(&home, &["verify", "--root", s(&broot)]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Republishing skips greet (libgreet, present, is not a missing dependency any more);
    // update-index over S3 rebuilds the same entries.
    let r = run_json(
        &home,
        &[
            "publish",
            s(&greet),
            "--to",
            &dest,
            "--key",
            s(&fx(SECRET)),
            "--with-deps",
        ],
    );
    assert_eq!(
        (r["published"].as_u64(), r["skipped"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    let r = run_json(&home, &["update-index", &dest]);
    assert_eq!(r["in_buildcache"], 2, "{r}");
    assert_eq!(r["destination"], dest);
    assert_eq!(in_buildcache(&home, &dest), ["greet", "libgreet"]);
}

#[test]
fn unsigned_publish_to_s3_is_refused_by_a_default_install() {
    let b = bucket("unsigned");
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let a = installed_root(&home, t.path(), "a");
    let dest = format!("s3://{b}/unsigned");
    let r = run_json(
        &home,
        &[
            "publish",
            s(&prefix_of(&a, "greet")),
            "--with-deps",
            "--to",
            &dest,
            "--unsigned",
        ],
    );
    assert_eq!(r["signed"], false, "{r}");
    assert_eq!(r["published"], 2, "{r}");

    let broot = t.path().join("b");
    let o = run(
        &home,
        &["install", "greet", "--mirror", &dest, "--root", s(&broot)],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        !broot
            .join(prefix_of(&a, "greet").file_name().unwrap())
            .exists(),
        "nothing may be installed"
    );
    let o = run(
        &home,
        &[
            "-q",
            "install",
            "greet",
            "--allow-unsigned",
            "--mirror",
            &dest,
            "--root",
            s(&broot),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    check_greet(&broot, Some(&a));
}

#[test]
fn concurrent_publishers_to_one_s3_prefix_keep_each_others_entries() {
    let b = bucket("concurrent");
    let home = Home::new();
    let t = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..4).map(|i| format!("pkg{i}")).collect();
    let prefixes = synthetic_store(t.path(), &names);
    let dest = format!("s3://{b}/shared");
    let ep = s3::endpoint();
    for round in 0..2 {
        // Round 0 creates the index (If-None-Match), round 1 rewrites it (If-Match).
        let children: Vec<_> = prefixes
            .iter()
            .map(|p| {
                let mut c = home.std_cmd();
                c.env_remove("SF_CACHE_S3_ENDPOINT").args([
                    "--s3-endpoint",
                    &ep,
                    "publish",
                    s(p),
                    "--to",
                    &dest,
                    "--unsigned",
                    "-q",
                ]);
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
            assert!(o.status.success(), "round {round}: {}", stderr(&o));
        }
        let got = in_buildcache(&home, &dest);
        assert_eq!(
            got, names,
            "round {round}: an entry was lost from the index"
        );
    }
    let r = run_json(&home, &["update-index", &dest]);
    assert_eq!(r["in_buildcache"], names.len(), "{r}");
}

#[test]
fn bundle_imported_into_s3_installs() {
    let b = bucket("import");
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let bundle = t.path().join("cache.sfbundle");
    let o = home.run(&["mirror", s(&fx("spack-v3")), "--bundle", s(&bundle)]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The endpoint comes from the config file this time (`[network] s3_endpoint`).
    std::fs::write(
        home.dir.path().join("config.toml"),
        format!("[network]\ns3_endpoint = \"{}\"\n", s3::endpoint()),
    )
    .unwrap();
    let cmd = |args: &[&str]| {
        home.cmd()
            .env_remove("SF_CACHE_S3_ENDPOINT")
            .env_remove("S3_ENDPOINT_URL")
            .args(args)
            .output()
            .unwrap()
    };
    let dest = format!("s3://{b}/imported");
    let v = json(&cmd(&["--json", "import", s(&bundle), &dest]));
    assert_eq!(v["specs"], 3, "{v}");
    assert!(v["blobs_copied"].as_u64().unwrap() >= 6, "{v}");
    let keys = object_keys(&b, "imported/");
    assert!(
        keys.contains(&"imported/v3/manifests/index/index.manifest.json".to_string()),
        "{keys:?}"
    );

    let root = t.path().join("r");
    let o = cmd(&[
        "-q",
        "install",
        "greet",
        "--mirror",
        &dest,
        "--root",
        s(&root),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_greet(&root, None);

    // A flag beats the config: a dead endpoint on the command line fails, naming the object.
    let o = cmd(&[
        "--s3-endpoint",
        "http://127.0.0.1:1",
        "list",
        "--mirror",
        &dest,
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains(&dest), "{}", stderr(&o));
}

#[test]
fn a_missing_bucket_or_an_empty_prefix_is_named_as_such() {
    let home = Home::trusting();
    let b = bucket("empty");
    let missing = format!("{b}-does-not-exist");
    let out = run(
        &home,
        &["list", "--mirror", &format!("s3://{missing}/cache")],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("no such bucket {missing}")),
        "{}",
        stderr(&out)
    );
    let out = run(&home, &["list", "--mirror", &format!("s3://{b}/cache")]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("bucket {b} has none of v3/layout.json")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn publish_to_s3_killed_at_any_moment_leaves_a_readable_cache_without_temporaries() {
    let b = bucket("kill9");
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let a = installed_root(&home, t.path(), "a");
    let dest = format!("s3://{b}/cache");
    let greet = prefix_of(&a, "greet");
    let key = fx(SECRET);
    // A cache that readers use…
    let o = run(
        &home,
        &[
            "publish",
            s(&greet),
            "--with-deps",
            "--to",
            &dest,
            "--key",
            s(&key),
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // …then publishers killed after each phase: packing, blobs, manifests, keys, index.
    let names: Vec<String> = (0..3).map(|i| format!("bulk{i}")).collect();
    let bulk = synthetic_store(t.path(), &names);
    let ep = s3::endpoint();
    let mut args: Vec<String> = ["--s3-endpoint", &ep, "publish"].map(String::from).to_vec();
    args.extend(bulk.iter().map(|p| s(p).to_string()));
    args.extend(
        [
            "--to",
            &dest,
            "--key",
            s(&key),
            "--force",
            "-q",
            "--jobs",
            "2",
        ]
        .map(String::from),
    );
    let allowed = |k: &str| {
        k.starts_with("cache/blobs/sha256/")
            || k.starts_with("cache/v3/manifests/spec/")
            || k.starts_with("cache/v3/manifests/key/")
            || k == "cache/v3/manifests/index/index.manifest.json"
            || k == "cache/v3/layout.json"
    };
    for delay_ms in [0u64, 20, 50, 100, 160, 250, 400, 600] {
        let mut child = home
            .std_cmd()
            .env_remove("SF_CACHE_S3_ENDPOINT")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = child.wait();
        let listed = listed(&home, &dest);
        assert!(
            listed.iter().any(|(n, _)| n == "greet"),
            "after a kill at {delay_ms} ms the cache lists {listed:?}"
        );
        let keys = object_keys(&b, "");
        let odd: Vec<&String> = keys.iter().filter(|k| !allowed(k)).collect();
        assert!(odd.is_empty(), "after a kill at {delay_ms} ms: {odd:?}");
    }
    // A rerun completes; what was published installs.
    let o = home
        .std_cmd()
        .env_remove("SF_CACHE_S3_ENDPOINT")
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = listed(&home, &dest);
    for n in names
        .iter()
        .map(String::as_str)
        .chain(["greet", "libgreet"])
    {
        assert!(listed.iter().any(|(l, _)| l == n), "{n} not in {listed:?}");
    }
    let keys = object_keys(&b, "");
    assert!(keys.iter().all(|k| allowed(k)), "{keys:?}");
    let root = t.path().join("b");
    install_and_run(&home, &dest, &root, &[]);
}
