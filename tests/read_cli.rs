//! End-to-end tests of the read side (`list`, `show`, `keys`) against the real Spack-made
//! fixture caches, from a path and through a real HTTP server on 127.0.0.1.
//!
//! Nothing about the fixture key or blob digests is hard-coded: they are read from the files.

mod common;

use std::path::Path;
use std::process::Output;

use common::cli::*;
use common::http_server::HttpServer;
use serde_json::Value;

fn names_and_hashes(v: &Value) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["version"].as_str().unwrap().to_string(),
                r["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn t(n: &str, v: &str, h: &str) -> (String, String, String) {
    (n.into(), v.into(), h.into())
}

// ---------------------------------------------------------------------------------------------
// list

fn check_v3_list(home: &Home, mirror: &str) {
    let v = json(&home.run(&["list", "--json", "--mirror", mirror]));
    assert_eq!(
        names_and_hashes(&v),
        vec![
            t("compiler-wrapper", "1.0", V3_WRAPPER),
            t("greet", "2.1.0", V3_GREET),
            t("libgreet", "1.2.0", V3_LIBGREET),
        ]
    );
    let greet = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "greet")
        .unwrap();
    assert_eq!(greet["compiler"], "gcc@12.2.0");
    assert_eq!(greet["arch"], "linux-debian12-x86_64");
    assert_eq!(greet["layout"], "v3");
    assert_eq!(greet["in_buildcache"], true);
    assert_eq!(greet["external"], false);

    let all = json(&home.run(&["list", "--all", "--json", "--mirror", mirror]));
    let all = names_and_hashes(&all);
    assert_eq!(all.len(), 7, "{all:?}");
    for (n, v) in [
        ("gcc", "12.2.0"),
        ("gcc-runtime", "12.2.0"),
        ("glibc", "2.36"),
        ("gmake", "4.3"),
    ] {
        assert!(
            all.iter().any(|(a, b, _)| a == n && b == v),
            "{n} missing from {all:?}"
        );
    }
}

fn check_v2_list(home: &Home, mirror: &str) {
    let v = json(&home.run(&["list", "--json", "--mirror", mirror]));
    assert_eq!(
        names_and_hashes(&v),
        vec![
            t("greet", "2.1.0", V2_GREET),
            t("libgreet", "1.2.0", V2_LIBGREET)
        ]
    );
    assert!(v.as_array().unwrap().iter().all(|r| r["layout"] == "v2"));
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["compiler"] == "gcc@12.2.0"));
    let all = json(&home.run(&["list", "--all", "--json", "--mirror", mirror]));
    let all = names_and_hashes(&all);
    assert_eq!(all.len(), 4, "{all:?}");
    let externals: Vec<_> = json(&home.run(&["list", "--all", "--json", "--mirror", mirror]))
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["external"] == true)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(externals.len(), 2);
}

#[test]
fn list_all_three_caches_from_a_path() {
    let home = Home::new();
    check_v3_list(&home, fx("spack-v3").to_str().unwrap());
    check_v3_list(
        &home,
        &format!("file://{}", fx("spack-v3-unsigned").display()),
    );
    check_v2_list(&home, fx("spack-v2").to_str().unwrap());
}

#[test]
fn list_all_three_caches_over_http() {
    let server = HttpServer::start(common::fixtures_dir());
    let home = Home::new();
    check_v3_list(&home, &format!("{}/spack-v3", server.base_url()));
    check_v3_list(&home, &format!("{}/spack-v3-unsigned/", server.base_url()));
    check_v2_list(&home, &format!("{}/spack-v2", server.base_url()));
}

#[test]
fn list_human_table_is_sorted_and_short() {
    let home = Home::new();
    let out = home.run(&["list", "--mirror", fx("spack-v3").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{text}");
    assert!(lines[1].starts_with("compiler-wrapper"));
    assert!(lines[2].starts_with("greet") && lines[2].contains(&V3_GREET[..7]));
    assert!(
        !lines[2].contains(V3_GREET),
        "hash must be shortened: {text}"
    );
    assert!(lines[3].starts_with("libgreet"));
}

#[test]
fn index_is_cached_by_checksum_and_not_refetched() {
    let server = HttpServer::start(common::fixtures_dir());
    let home = Home::new();
    let url = format!("{}/spack-v3", server.base_url());
    let (index_digest, _) = {
        let m = fx("spack-v3/v3/manifests/index/index.manifest.json");
        manifest_blob(&m, "application/vnd.spack.db.v")
    };
    let blob = format!(
        "/spack-v3/blobs/sha256/{}/{}",
        &index_digest[..2],
        index_digest
    );
    json(&home.run(&["list", "--json", "--mirror", &url]));
    json(&home.run(&["list", "--json", "--mirror", &url]));
    assert_eq!(server.requests(&blob), 1, "index blob fetched again");
    assert!(server.requests("/spack-v3/v3/manifests/index/index.manifest.json") >= 2);

    let v2 = format!("{}/spack-v2", server.base_url());
    json(&home.run(&["list", "--json", "--mirror", &v2]));
    json(&home.run(&["list", "--json", "--mirror", &v2]));
    assert_eq!(server.requests("/spack-v2/build_cache/index.json"), 1);
}

#[test]
fn v3_and_v2_mirrors_together_and_mirror_order() {
    let home = Home::new();
    let v3 = fx("spack-v3");
    let v2 = fx("spack-v2");
    let v = json(&home.run(&[
        "list",
        "--json",
        "greet",
        "--mirror",
        v3.to_str().unwrap(),
        "--mirror",
        v2.to_str().unwrap(),
    ]));
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // Same name and version: mirror order decides.
    assert_eq!(rows[0]["hash"], V3_GREET);
    assert_eq!(rows[1]["hash"], V2_GREET);

    // One mirror holding both layouts: both indexes are read; v3 wins for a shared hash.
    let both = copy_cache("spack-v3");
    common::copy_tree(&v2.join("build_cache"), &both.path().join("build_cache")).unwrap();
    let v = json(&home.run(&["list", "--json", "--mirror", both.path().to_str().unwrap()]));
    let layouts: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["hash"].as_str().unwrap().to_string(),
                r["layout"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(layouts.contains(&(V3_GREET.into(), "v3".into())));
    assert!(layouts.contains(&(V2_GREET.into(), "v2".into())));
    assert_eq!(layouts.len(), 5);
}

#[test]
fn best_match_prefers_the_first_mirror_and_reports_ambiguity() {
    let home = Home::trusting();
    let (v3, v2) = (fx("spack-v3"), fx("spack-v2"));
    let (v3, v2) = (v3.to_str().unwrap(), v2.to_str().unwrap());
    // Same name, version and target in two mirrors: the first mirror wins.
    let v = json(&home.run(&["show", "--json", "--mirror", v3, "--mirror", v2, "greet"]));
    assert_eq!(v["spec"]["hash"], V3_GREET);
    let v = json(&home.run(&["show", "--json", "--mirror", v2, "--mirror", v3, "greet"]));
    assert_eq!(v["spec"]["hash"], V2_GREET);
    // Two different greet builds in ONE mirror cannot be ordered: an error listing both hashes.
    let both = copy_cache("spack-v3");
    common::copy_tree(
        &fx("spack-v2/build_cache"),
        &both.path().join("build_cache"),
    )
    .unwrap();
    let out = home.run(&["show", "--mirror", both.path().to_str().unwrap(), "greet"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&V3_GREET[..7]) && err.contains(&V2_GREET[..7]),
        "{err}"
    );
    assert!(err.contains("/hash"), "{err}");
    // A hash prefix disambiguates.
    let v = json(&home.run(&[
        "show",
        "--json",
        "--mirror",
        both.path().to_str().unwrap(),
        &format!("greet/{}", &V2_GREET[..8]),
    ]));
    assert_eq!(v["spec"]["hash"], V2_GREET);
}

#[test]
fn targets_the_host_cannot_run_are_never_chosen() {
    let home = Home::trusting();
    let m = fx("spack-v3");
    // A host that is not x86_64 cannot run the fixtures' generic x86_64 binaries.
    let out = home
        .cmd()
        .env("SF_CACHE_HOST_TARGET", "aarch64")
        .args(["show", "--mirror", m.to_str().unwrap(), "greet"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot run"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// queries

fn matches(home: &Home, mirror: &Path, query: &str) -> Vec<String> {
    let out = home.run(&[
        "list",
        "--json",
        "--mirror",
        mirror.to_str().unwrap(),
        query,
    ]);
    if code(&out) == 4 {
        return vec![];
    }
    let v = json(&out);
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn query_cases() {
    let home = Home::new();
    for cache in ["spack-v3", "spack-v2"] {
        let m = fx(cache);
        let greet = vec!["greet".to_string()];
        assert_eq!(matches(&home, &m, "greet"), greet, "{cache}");
        assert_eq!(matches(&home, &m, "greet@2.1"), greet, "{cache}");
        assert_eq!(matches(&home, &m, "greet@2"), greet, "{cache}");
        assert_eq!(matches(&home, &m, "greet@2.1.0"), greet, "{cache}");
        assert_eq!(matches(&home, &m, "greet@=2.1.0"), greet, "{cache}");
        assert_eq!(matches(&home, &m, "greet@2-1-0"), greet, "{cache}");
        assert!(matches(&home, &m, "greet@2.2").is_empty(), "{cache}");
        assert!(matches(&home, &m, "greet@2.10").is_empty(), "{cache}");
        assert_eq!(matches(&home, &m, "greet@1.9:2.1"), greet, "{cache}");
        assert_eq!(matches(&home, &m, "greet@2:"), greet, "{cache}");
        assert!(matches(&home, &m, "greet@:2.0").is_empty(), "{cache}");
        assert_eq!(matches(&home, &m, "greet%gcc@12.2.0"), greet, "{cache}");
        assert_eq!(matches(&home, &m, "greet %gcc@12"), greet, "{cache}");
        assert!(matches(&home, &m, "greet%gcc@13.4.0").is_empty(), "{cache}");
        assert!(matches(&home, &m, "greet%clang").is_empty(), "{cache}");
        assert_eq!(
            matches(&home, &m, "greet build_system=generic"),
            greet,
            "{cache}"
        );
        assert!(
            matches(&home, &m, "greet build_system=cmake").is_empty(),
            "{cache}"
        );
        assert!(matches(&home, &m, "greet+gpu").is_empty(), "{cache}");
        assert_eq!(
            matches(&home, &m, "greet target=x86_64 os=debian12 platform=linux"),
            greet
        );
        assert!(matches(&home, &m, "greet os=rhel8").is_empty());
        assert!(matches(&home, &m, "greet target=aarch64").is_empty());
        assert_eq!(matches(&home, &m, "@1.2.0"), vec!["libgreet".to_string()]);
    }
    let m = fx("spack-v3");
    assert_eq!(
        matches(&home, &m, &format!("/{}", &V3_GREET[..6])),
        vec!["greet".to_string()]
    );
    assert_eq!(
        matches(&home, &m, &format!("/{V3_LIBGREET}")),
        vec!["libgreet".to_string()]
    );
    assert!(matches(&home, &m, "/zzzzzz").is_empty());
    // compiler-wrapper has no compiler dependency; the two packages built with gcc match.
    assert_eq!(
        matches(&home, &m, "%gcc@12.2.0"),
        vec!["greet".to_string(), "libgreet".to_string()]
    );
}

#[test]
fn no_match_exits_4_and_bad_query_exits_2() {
    let home = Home::new();
    let m = fx("spack-v3");
    let out = home.run(&["list", "--mirror", m.to_str().unwrap(), "slurm@25.11"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let out = home.run(&["show", "--mirror", m.to_str().unwrap(), "nothing-here"]);
    assert_eq!(code(&out), 4);
    let out = home.run(&["list", "--mirror", m.to_str().unwrap(), "greet@@"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = home.run(&["list"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--mirror"));
}

// ---------------------------------------------------------------------------------------------
// show and signatures

fn show_json(home: &Home, mirror: &str, query: &str, extra: &[&str]) -> Output {
    let mut args = vec!["show", "--json", "--mirror", mirror, query];
    args.extend_from_slice(extra);
    home.run(&args)
}

fn check_v3_show(home: &Home, mirror: &str, cache_dir: &Path) {
    let v = json(&show_json(home, mirror, "greet", &[]));
    assert_eq!(v["spec"]["name"], "greet");
    assert_eq!(v["spec"]["version"], "2.1.0");
    assert_eq!(v["spec"]["hash"], V3_GREET);
    assert_eq!(v["spec"]["compiler"], "gcc@12.2.0");
    assert_eq!(v["spec"]["layout"], "v3");
    assert_eq!(v["signature"]["status"], "good");
    assert_eq!(v["signature"]["fingerprint"], fixture_fingerprint());
    assert!(v["signature"]["user_id"]
        .as_str()
        .unwrap()
        .contains("sf-cache fixture"));
    // Blobs as the manifest says.
    let (tar_digest, tar_size) = manifest_blob(
        &greet_manifest(cache_dir),
        "application/vnd.spack.install.v",
    );
    let (spec_digest, spec_size) =
        manifest_blob(&greet_manifest(cache_dir), "application/vnd.spack.spec.v");
    let blobs = v["blobs"].as_array().unwrap();
    assert_eq!(blobs[0]["digest"], format!("sha256:{tar_digest}"));
    assert_eq!(blobs[0]["size"], tar_size);
    assert_eq!(blobs[0]["verified"], false);
    assert_eq!(blobs[1]["digest"], format!("sha256:{spec_digest}"));
    assert_eq!(blobs[1]["size"], spec_size);
    assert_eq!(blobs[1]["verified"], true);
    // Closure: link/run only, dependencies first; externals marked; build-only left out.
    let closure: Vec<(String, bool)> = v["closure"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["external"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(closure.last().unwrap(), &("greet".to_string(), false));
    let pos = |n: &str| closure.iter().position(|(x, _)| x == n).unwrap();
    assert!(pos("libgreet") < pos("greet"));
    assert!(closure.contains(&("glibc".into(), true)));
    assert!(closure.contains(&("gcc-runtime".into(), true)));
    assert!(!closure
        .iter()
        .any(|(n, _)| n == "compiler-wrapper" || n == "gmake" || n == "gcc"));
    assert_eq!(closure.len(), 4, "{closure:?}");
    let deps: Vec<&str> = v["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        deps,
        vec![
            "compiler-wrapper",
            "gcc",
            "gcc-runtime",
            "glibc",
            "gmake",
            "libgreet"
        ]
    );
    let libgreet = v["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "libgreet")
        .unwrap();
    assert_eq!(libgreet["deptypes"], serde_json::json!(["link", "run"]));
    // Every binary of the closure had its signature checked.
    let sigs = v["closure_verification"].as_array().unwrap();
    assert_eq!(sigs.len(), 2);
    assert!(sigs.iter().all(|s| s["signature"]["status"] == "good"));
}

#[test]
fn show_v3_from_path_and_http() {
    let home = Home::trusting();
    let server = HttpServer::start(common::fixtures_dir());
    check_v3_show(&home, fx("spack-v3").to_str().unwrap(), &fx("spack-v3"));
    check_v3_show(
        &home,
        &format!("{}/spack-v3", server.base_url()),
        &fx("spack-v3"),
    );
}

#[test]
fn show_v2_from_path_and_http() {
    let home = Home::trusting();
    let server = HttpServer::start(common::fixtures_dir());
    for m in [
        fx("spack-v2").display().to_string(),
        format!("{}/spack-v2", server.base_url()),
    ] {
        let v = json(&show_json(&home, &m, "greet", &[]));
        assert_eq!(v["spec"]["hash"], V2_GREET);
        assert_eq!(v["spec"]["layout"], "v2");
        assert_eq!(v["spec"]["compiler"], "gcc@12.2.0");
        assert_eq!(v["signature"]["status"], "good");
        assert_eq!(v["signature"]["fingerprint"], fixture_fingerprint());
        let closure: Vec<&str> = v["closure"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        assert_eq!(closure.len(), 4, "{closure:?}");
        assert_eq!(*closure.last().unwrap(), "greet");
        assert!(
            closure.iter().position(|n| *n == "libgreet")
                < closure.iter().position(|n| *n == "greet")
        );
        // The tarball digest is the one the signed spec file records.
        let sig = std::fs::read_to_string(fx(&format!(
            "spack-v2/build_cache/linux-debian12-x86_64-gcc-12.2.0-greet-2.1.0-{V2_GREET}.spec.json.sig"
        )))
        .unwrap();
        let digest = v["blobs"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        assert!(sig.contains(&digest));
    }
}

#[test]
fn show_verify_blobs_downloads_and_checks_tarballs() {
    let home = Home::trusting();
    let server = HttpServer::start(common::fixtures_dir());
    let v = json(&show_json(
        &home,
        &format!("{}/spack-v3", server.base_url()),
        "greet",
        &["--verify-blobs"],
    ));
    assert_eq!(v["blobs"][0]["verified"], true);
    assert!(v["closure_verification"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["tarball"]["verified"] == true));

    let bad = copy_cache("spack-v3");
    let (tar, _) = manifest_blob(
        &greet_manifest(bad.path()),
        "application/vnd.spack.install.v",
    );
    flip_byte(
        &bad.path().join(format!("blobs/sha256/{}/{tar}", &tar[..2])),
        5000,
    );
    let out = show_json(&home, bad.path().to_str().unwrap(), "greet", &[]);
    assert!(
        out.status.success(),
        "without --verify-blobs the tarball is not read"
    );
    let out = show_json(
        &home,
        bad.path().to_str().unwrap(),
        "greet",
        &["--verify-blobs"],
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_key_is_refused_with_a_hint() {
    let home = Home::new();
    let out = show_json(&home, fx("spack-v3").to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("keys trust-mirror"), "{err}");
    assert!(err.lines().last().unwrap().starts_with("error:"), "{err}");
    let out = show_json(&home, fx("spack-v2").to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

#[test]
fn unsigned_cache_needs_allow_unsigned() {
    let home = Home::trusting();
    let m = fx("spack-v3-unsigned");
    let out = show_json(&home, m.to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--allow-unsigned"),
        "{}",
        stderr(&out)
    );
    let v = json(&home.run(&[
        "--allow-unsigned",
        "show",
        "--json",
        "--mirror",
        m.to_str().unwrap(),
        "greet",
    ]));
    assert_eq!(v["signature"]["status"], "unsigned");
    assert_eq!(v["spec"]["hash"], V3_GREET);

    // `signed = false` in the config lifts the requirement for that mirror only.
    let cfg = home.dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mirror]]\nname = \"local\"\nurl = \"{}\"\nsigned = false\n",
            m.display()
        ),
    )
    .unwrap();
    let v = json(&home.run(&["show", "--json", "--mirror", "local", "greet"]));
    assert_eq!(v["signature"]["status"], "unsigned");
    assert_eq!(v["spec"]["mirror"], "local");
}

#[test]
fn bad_signature_is_refused() {
    let home = Home::trusting();
    let bad = copy_cache("spack-v3");
    // Change one byte of the signed body (a digit of the tarball's contentLength).
    let manifest = greet_manifest(bad.path());
    let text = std::fs::read_to_string(&manifest).unwrap();
    let at = text.find("\"contentLength\":").unwrap() + "\"contentLength\":".len();
    flip_byte(&manifest, at);
    let out = show_json(&home, bad.path().to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("BAD signature"), "{}", stderr(&out));

    let bad2 = copy_cache("spack-v2");
    let sig = bad2.path().join(format!(
        "build_cache/linux-debian12-x86_64-gcc-12.2.0-greet-2.1.0-{V2_GREET}.spec.json.sig"
    ));
    let text = std::fs::read_to_string(&sig).unwrap();
    flip_byte(&sig, text.find("\"hash\":\"").unwrap() + 9);
    let out = show_json(&home, bad2.path().to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

#[test]
fn changed_spec_blob_is_a_checksum_failure() {
    let home = Home::trusting();
    let bad = copy_cache("spack-v3");
    let (spec, _) = manifest_blob(&greet_manifest(bad.path()), "application/vnd.spack.spec.v");
    flip_byte(
        &bad.path()
            .join(format!("blobs/sha256/{}/{spec}", &spec[..2])),
        100,
    );
    let out = show_json(&home, bad.path().to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_copy_falls_back_to_the_next_mirror_with_the_same_hash() {
    let home = Home::trusting();
    let bad = copy_cache("spack-v3");
    let manifest = greet_manifest(bad.path());
    let text = std::fs::read_to_string(&manifest).unwrap();
    flip_byte(&manifest, text.find("\"checksum\":\"").unwrap() + 12);
    let v = json(&home.run(&[
        "show",
        "--json",
        "--mirror",
        bad.path().to_str().unwrap(),
        "--mirror",
        fx("spack-v3").to_str().unwrap(),
        "greet",
    ]));
    assert_eq!(v["signature"]["status"], "good");
    assert_eq!(v["spec"]["mirror"], fx("spack-v3").display().to_string());
}

#[test]
fn broken_mirrors_fail_with_one_clear_line() {
    let home = Home::trusting();
    let one_line = |o: &Output| {
        let e = stderr(o);
        let errs: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errs.len(), 1, "{e}");
        errs[0].to_string()
    };
    // Unreachable.
    let out = home.run(&["list", "--mirror", "http://127.0.0.1:1/cache"]);
    assert_eq!(code(&out), 1);
    assert!(one_line(&out).contains("127.0.0.1:1"));
    // Not a buildcache (404 everywhere).
    let empty = tempfile::tempdir().unwrap();
    let server = HttpServer::start(empty.path());
    let out = home.run(&["list", "--mirror", &server.base_url()]);
    assert_eq!(code(&out), 1);
    assert!(one_line(&out).contains("not a Spack buildcache"));
    assert!(one_line(&out).contains("HTTP 404 for"), "{}", stderr(&out));
    let out = home.run(&["list", "--mirror", empty.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(one_line(&out).contains("not a Spack buildcache"));
    assert!(
        one_line(&out).contains("holds none of v3/layout.json"),
        "{}",
        stderr(&out)
    );
    // A directory that does not exist says so (not "not a buildcache" alone).
    let gone = empty.path().join("no-such-dir");
    let out = home.run(&["list", "--mirror", gone.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        one_line(&out).contains(&format!("no such directory {}", gone.display())),
        "{}",
        stderr(&out)
    );
    // Malformed index JSON (v2, no hash file).
    let bad = copy_cache("spack-v2");
    std::fs::remove_file(bad.path().join("build_cache/index.json.hash")).unwrap();
    std::fs::write(
        bad.path().join("build_cache/index.json"),
        b"{\"database\": [1,2,",
    )
    .unwrap();
    let out = home.run(&["list", "--mirror", bad.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(one_line(&out).contains("index.json"));
    // Truncated index.
    let idx = fx("spack-v2/build_cache/index.json");
    let full = std::fs::read(&idx).unwrap();
    std::fs::write(
        bad.path().join("build_cache/index.json"),
        &full[..full.len() / 2],
    )
    .unwrap();
    let out = home.run(&["list", "--mirror", bad.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(one_line(&out).contains("truncated"));
    // Index blob whose content does not match its manifest checksum.
    let bad3 = copy_cache("spack-v3");
    let (digest, _) = manifest_blob(
        &bad3.path().join("v3/manifests/index/index.manifest.json"),
        "application/vnd.spack.db.v",
    );
    flip_byte(
        &bad3
            .path()
            .join(format!("blobs/sha256/{}/{digest}", &digest[..2])),
        50,
    );
    let out = home.run(&["list", "--mirror", bad3.path().to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(one_line(&out).contains("checksum mismatch"));
    // A manifest that is missing on the only mirror.
    let bad4 = copy_cache("spack-v3");
    std::fs::remove_file(greet_manifest(bad4.path())).unwrap();
    let out = show_json(&home, bad4.path().to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(one_line(&out).contains("greet-2.1.0"));
}

#[test]
fn old_formats_are_refused_clearly() {
    let home = Home::trusting();
    // A v2 cache whose spec files are .spec.yaml (Spack <= 0.16).
    let bad = copy_cache("spack-v2");
    let bc = bad.path().join("build_cache");
    for e in std::fs::read_dir(&bc).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".spec.json.sig") {
            let yaml = p.to_string_lossy().replace(".spec.json.sig", ".spec.yaml");
            std::fs::write(&yaml, "spec:\n- greet:\n    version: 2.1.0\n").unwrap();
            std::fs::remove_file(&p).unwrap();
        }
    }
    let out = show_json(&home, bad.path().to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("spec.yaml"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// keys

#[test]
fn keys_add_list_remove_and_trust_mirror() {
    let home = Home::new();
    let fpr = fixture_fingerprint();
    let v = json(&home.run(&["keys", "list", "--json"]));
    assert!(v["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "FDEA90667641505264EFD114DFB92630BCA5AB71"));
    assert!(!v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["fingerprint"] == fpr.as_str()));

    // trust-mirror shows the key but trusts it only with --yes.
    let out = home.run(&["keys", "trust-mirror", fx("spack-v3").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&fpr));
    assert!(stdout(&out).contains("sf-cache fixture"));
    let out = show_json(&home, fx("spack-v3").to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 3);
    let out = home.run(&[
        "keys",
        "trust-mirror",
        fx("spack-v2").to_str().unwrap(),
        "--yes",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&home.run(&["keys", "list", "--json"]));
    let k = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["fingerprint"] == fpr.as_str())
        .unwrap();
    assert_eq!(k["source"], "user");
    json(&show_json(
        &home,
        fx("spack-v3").to_str().unwrap(),
        "greet",
        &[],
    ));

    let out = home.run(&["keys", "remove", &fpr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = show_json(&home, fx("spack-v3").to_str().unwrap(), "greet", &[]);
    assert_eq!(code(&out), 3);
    let out = home.run(&["keys", "remove", &fpr]);
    assert_eq!(code(&out), 1);
    // A malformed fingerprint is a usage error (exit 2), named in one line.
    let out = home.run(&["keys", "remove", "DEADBEEF"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid key fingerprint \"DEADBEEF\""),
        "{}",
        stderr(&out)
    );

    // A pin in the config makes the mirror's published key trusted.
    std::fs::write(
        home.dir.path().join("config.toml"),
        format!("[trust]\npinned = [\"{fpr}\"]\n"),
    )
    .unwrap();
    let v = json(&show_json(
        &home,
        fx("spack-v3").to_str().unwrap(),
        "greet",
        &[],
    ));
    assert_eq!(v["signature"]["status"], "good");

    // Not a key.
    let out = home.run(&[
        "keys",
        "add",
        fx("spack-v3/v3/layout.json").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
}

#[test]
fn version_completions_and_man_page() {
    let home = Home::new();
    let out = home.run(&["--version"]);
    assert!(stdout(&out).starts_with("sf-cache "));
    let out = home.run(&["completions", "bash"]);
    assert!(out.status.success() && stdout(&out).contains("sf-cache"));
    let out = home.run(&["man"]);
    assert!(out.status.success() && stdout(&out).contains(".TH"));
}

#[test]
fn a_silent_server_is_given_up_on_after_timeout_and_retries() {
    // A server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(c);
        }
    });
    let home = Home::new();
    let url = format!("http://{addr}/cache");
    let out = home.run(&["--timeout", "1", "--retries", "1", "list", "--mirror", &url]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("timed out"), "{err}");
    assert!(errors[0].contains("--timeout"), "{err}");
    // One retry: two attempts at the index, no more.
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "{err}"
    );
    // Bad values are usage errors.
    let out = home.run(&["--timeout", "0", "list", "--mirror", &url]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}
