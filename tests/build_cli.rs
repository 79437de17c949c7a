//! `sf-cache build` and `install --build-on-miss`, end to end.
//!
//! Spack cannot be installed in CI, so these tests run a STAND-IN in its place:
//! `tests/data/spack-stand-in`, a small shell script (clearly not Spack) that answers the
//! commands the build runs and writes a miniature Spack install tree (database, prefix with
//! `.spack/spec.json`, a program) where the rendered environment says. Everything around it is
//! real: the rendered `spack.yaml`, the runtimes (the host, and a real Docker container from
//! the image `.ci/test-image` makes), mounts, environment, log streaming, exit codes, cleanup,
//! publishing into the local buildcache signed by the local build key, and installing from it.
//! A real Spack build was run by hand (see docs/build.md).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::cli::*;
use serde_json::Value;

fn build_home(h: &Home) -> PathBuf {
    h.dir.path().join("build")
}

fn log_of(report: &Value) -> String {
    std::fs::read_to_string(report["log"].as_str().unwrap()).unwrap()
}

/// The `runs/` directory holds nothing after a build that keeps no stage.
fn assert_no_run_dirs(h: &Home) {
    let runs = build_home(h).join("runs");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "build directories left behind: {left:?}");
}

/// Checks shared by the host and docker runs of a successful build of `sf-hello`.
fn check_built(h: &Home, out: &Output, mark: &str) -> Value {
    let v = json(out);
    let installed = v["installed"].as_array().unwrap();
    assert_eq!(installed.len(), 1, "{v}");
    let prefix = PathBuf::from(installed[0]["prefix"].as_str().unwrap());
    // Same path inside the container and out: the recorded prefix is a real host path.
    assert!(
        prefix.starts_with(build_home(h).join("opt")),
        "{prefix:?} not under the build's install tree"
    );
    assert!(prefix
        .to_string_lossy()
        .contains("__spack_path_placeholder__"));
    assert!(prefix.join("bin/sf-hello").is_file(), "{prefix:?}");
    assert_eq!(installed[0]["name"], "sf-hello");
    // The log holds the stand-in's output: environment, mounts, status lines.
    let log = log_of(&v);
    assert!(
        log.starts_with("# sf-cache build: "),
        "log without its command line: {log}"
    );
    for want in [
        "spec=sf-hello".to_string(),
        format!("SF_CACHE_TEST_MARK={mark}"),
        "SPACK_DISABLE_LOCAL_CONFIG=1".to_string(),
        "repo.yaml:   namespace: slurm_factory".to_string(),
        "repo has sf_hello".to_string(),
        "stage writable:".to_string(),
        "source cache present:".to_string(),
        "==> sf-hello: Successfully installed".to_string(),
        "# sf-cache build: exit 0".to_string(),
    ] {
        assert!(log.contains(&want), "`{want}` missing from the log:\n{log}");
    }
    // Published, signed by the local build key, which the user keyring trusts.
    let p = &v["publish"];
    assert_eq!(p["published"], 1, "{p}");
    assert_eq!(p["signed"], true);
    let fpr = p["signing_key"].as_str().unwrap();
    assert!(h.dir.path().join(format!("keys/{fpr}.asc")).is_file());
    assert!(h.dir.path().join("keys/local-build.secret").is_file());
    assert_eq!(
        p["destination"]
            .as_str()
            .unwrap()
            .trim_start_matches("file://"),
        build_home(h).join("buildcache").to_str().unwrap()
    );
    assert_no_run_dirs(h);
    v
}

/// Install `sf-hello` from the local buildcache into a fresh root and run it.
fn install_and_run(h: &Home, extra: &[&str]) -> (Output, String) {
    let root = h.dir.path().join("root");
    let mut args = vec![
        "install",
        "sf-hello",
        "--build-on-miss",
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = h.run(&args);
    assert!(out.status.success(), "install: {}", stderr(&out));
    let prefix = prefix_of(&root, "sf-hello");
    let run = std::process::Command::new(prefix.join("bin/sf-hello"))
        .output()
        .unwrap();
    assert!(run.status.success());
    let said = String::from_utf8_lossy(&run.stdout).trim().to_string();
    // Relocated: the program now names its new prefix.
    assert_eq!(
        said,
        format!("hello from sf-hello at {}", prefix.display()),
        "not relocated"
    );
    (out, said)
}

fn logs(h: &Home) -> usize {
    std::fs::read_dir(build_home(h).join("logs"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

#[test]
fn no_runtime_on_path_is_a_clear_error() {
    let h = Home::new();
    let empty = tempfile::tempdir().unwrap();
    let out = h
        .cmd()
        .env("PATH", empty.path())
        .args(["build", "sf-hello"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let e = stderr(&out);
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    for want in ["docker", "podman", "apptainer", "--runtime host"] {
        assert!(e.contains(want), "`{want}` missing: {e}");
    }
    // A runtime named but missing.
    let out = h
        .cmd()
        .env("PATH", empty.path())
        .args(["build", "sf-hello", "--runtime", "podman"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("`podman` is not on PATH"),
        "{}",
        stderr(&out)
    );
    // An unknown one is a usage error.
    let out = h.run(&["build", "sf-hello", "--runtime", "lxc"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("docker, podman, apptainer or host"));
    // The host runtime without a Spack.
    let out = h.run(&["build", "sf-hello", "--runtime", "host"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--spack-root"), "{}", stderr(&out));
    // Nothing was built or left behind.
    assert_eq!(logs(&h), 0);
}

#[test]
fn host_runtime_builds_publishes_and_installs() {
    let h = Home::new();
    let spack = spack_stand_in(h.dir.path());
    let out = h
        .cmd()
        .args([
            "--json",
            "build",
            "sf-hello",
            "--runtime",
            "host",
            "--spack-root",
        ])
        .arg(&spack)
        .args(["--build-env", "SF_CACHE_TEST_MARK=host-run"])
        .output()
        .unwrap();
    let v = check_built(&h, &out, "host-run");
    assert_eq!(v["runtime"], "host");
    let me = format!("stand-in={}", spack.join("bin/spack").display());
    assert!(log_of(&v).contains(&me), "{me}");
    // The rendered environment the stand-in read is gone with the run directory; the install
    // from the local cache is a hit (no second build).
    let (_, said) = install_and_run(&h, &[]);
    assert!(said.starts_with("hello from sf-hello"));
    assert_eq!(
        logs(&h),
        1,
        "install built again instead of using the local cache"
    );
}

#[test]
fn install_builds_on_a_miss() {
    let h = Home::new();
    let spack = spack_stand_in(h.dir.path());
    let spack = spack.to_str().unwrap();
    // Without --build-on-miss a miss stays a miss (exit 4), with an empty local cache as mirror.
    let out = h.run(&[
        "install",
        "sf-hello",
        "--mirror",
        fx("spack-v3").to_str().unwrap(),
        "--root",
        h.dir.path().join("r0").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    // --dry-run reports the miss and builds nothing.
    let out = h.run(&[
        "install",
        "sf-hello",
        "--build-on-miss",
        "--dry-run",
        "--runtime",
        "host",
        "--spack-root",
        spack,
        "--root",
        h.dir.path().join("r0").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert_eq!(logs(&h), 0);
    let (out, _) = install_and_run(
        &h,
        &[
            "--mirror",
            fx("spack-v3").to_str().unwrap(),
            "--runtime",
            "host",
            "--spack-root",
            spack,
        ],
    );
    assert!(
        stderr(&out).contains("building it from source"),
        "{}",
        stderr(&out)
    );
    assert_eq!(logs(&h), 1);
}

#[test]
fn a_failing_build_names_its_log_and_cleans_up() {
    let h = Home::new();
    let spack = spack_stand_in(h.dir.path());
    let out = h
        .cmd()
        .args(["build", "sf-hello", "--runtime", "host", "--spack-root"])
        .arg(&spack)
        .args(["--build-env", "STANDIN_FAIL=1"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    let e = stderr(&out);
    assert!(
        e.contains("exit 7") && e.contains("stand-in failure requested"),
        "{e}"
    );
    let log = e
        .trim()
        .rsplit_once("see the log ")
        .map(|(_, l)| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("no log named: {e}"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("==> Error: stand-in failure requested"),
        "{text}"
    );
    assert!(text.contains("# sf-cache build: exit 7"));
    assert_no_run_dirs(&h);
    // Nothing published.
    assert!(!build_home(&h)
        .join("buildcache/v3/manifests/index/index.manifest.json")
        .exists());

    // --keep-stage keeps it, and says where.
    let out = h
        .cmd()
        .args([
            "build",
            "sf-hello",
            "--runtime",
            "host",
            "--keep-stage",
            "--spack-root",
        ])
        .arg(&spack)
        .args(["--build-env", "STANDIN_FAIL=1"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    let e = stderr(&out);
    let stage = e
        .split_once("stage kept in ")
        .and_then(|(_, r)| r.split(';').next())
        .map(|s| PathBuf::from(s.trim()))
        .unwrap_or_else(|| panic!("no stage named: {e}"));
    assert!(stage.join("stand-in-was-here").is_file(), "{stage:?}");
}

/// The docker runtime, for real: a container from the debootstrap image of `.ci/test-image`.
#[test]
fn docker_runtime_for_real() {
    let image = std::env::var("SF_CACHE_TEST_IMAGE").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        panic!(
            "SF_CACHE_TEST_IMAGE is not set: build the test image with `.ci/test-image` (debootstrap + docker import) \
             and run `SF_CACHE_TEST_IMAGE=sf-cache-test-base:bookworm cargo test --test build_cli`"
        )
    });
    let docker_ok = std::process::Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .map(|o| o.status.success());
    match docker_ok {
        Err(e) => panic!(
            "docker is not usable ({e}): install Docker and build the image with `.ci/test-image`"
        ),
        Ok(false) => panic!("docker has no image {image}: build it with `.ci/test-image {image}`"),
        Ok(true) => {}
    }
    let h = Home::new();
    let spack = spack_stand_in(h.dir.path());
    let containers = || {
        let o = std::process::Command::new("docker")
            .args(["ps", "-a", "-q", "--filter"])
            .arg(format!("label=sf-cache.build={}", build_home(&h).display()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    // A failing build first: exit code, the log named, no container left.
    let out = h
        .cmd()
        .args([
            "build",
            "sf-hello",
            "--runtime",
            "docker",
            "--image",
            &image,
            "--spack-root",
        ])
        .arg(&spack)
        .args(["--build-env", "STANDIN_FAIL=1"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("see the log "), "{}", stderr(&out));
    assert!(stderr(&out).contains("stand-in failure requested"));
    assert_eq!(containers(), "", "a container was left behind");
    assert_no_run_dirs(&h);

    // Then a good one.
    let out = h
        .cmd()
        .args([
            "--json",
            "build",
            "sf-hello",
            "--runtime",
            "docker",
            "--image",
            &image,
            "--spack-root",
        ])
        .arg(&spack)
        .args(["--build-env", "SF_CACHE_TEST_MARK=in-docker"])
        .output()
        .unwrap();
    let v = check_built(&h, &out, "in-docker");
    assert_eq!(v["runtime"], "docker");
    assert_eq!(v["image"], image.as_str());
    let log = log_of(&v);
    // Run from the mounted --spack-root, in a container with the build's mounts.
    assert!(log.contains("stand-in=/sf-cache/spack/bin/spack"), "{log}");
    assert!(log.contains("stage writable: /sf-cache/stage"), "{log}");
    assert!(log.contains(" --rm "), "{log}");
    assert_eq!(containers(), "", "a container was left behind");
    install_and_run(&h, &[]);
    assert_eq!(logs(&h), 2);
}

#[test]
fn publish_elsewhere_with_a_given_key() {
    let h = Home::trusting();
    let spack = spack_stand_in(h.dir.path());
    let dest = h.dir.path().join("site-cache");
    let out = h
        .cmd()
        .args([
            "--json",
            "build",
            "sf-hello",
            "--runtime",
            "host",
            "--spack-root",
        ])
        .arg(&spack)
        .arg("--publish")
        .arg(&dest)
        .arg("--key")
        .arg(fx("keys/sf-cache-fixture.secret.asc"))
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["publish"]["signing_key"], fixture_fingerprint().as_str());
    assert!(dest
        .join("v3/manifests/index/index.manifest.json")
        .is_file());
    // No local key was made, nothing went to the local buildcache.
    assert!(!h.dir.path().join("keys/local-build.secret").exists());
    assert!(!build_home(&h)
        .join("buildcache/v3/manifests/index/index.manifest.json")
        .exists());
    // --publish needs --key.
    let out = h.run(&["build", "sf-hello", "--publish", dest.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    // Installing with the same destination finds the build there (no second build).
    let (_, _) = install_and_run(
        &h,
        &[
            "--publish",
            dest.to_str().unwrap(),
            "--key",
            fx("keys/sf-cache-fixture.secret.asc").to_str().unwrap(),
        ],
    );
    assert_eq!(logs(&h), 1);
}
