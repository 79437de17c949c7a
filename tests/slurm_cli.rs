//! End-to-end tests of `slurm list` and `slurm install` against local caches laid out with the
//! Slurm Factory scheme (`<base>/slurm/<slurm>/<gcc>/buildcache`, `<base>/compilers/<gcc>/buildcache`),
//! built here with `sf-cache publish` from a synthetic Spack store and signed with the fixture key.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::cli::*;
use serde_json::Value;

const SECRET: &str = "keys/sf-cache-fixture.secret.asc";

/// The packages of the test caches: Slurm 25.11 (CPU and GPU builds) and 24.11 for GCC 13.4.0,
/// with munge and the GCC runtime; a Slurm 25.11 for GCC 12.5.0.
fn store(t: &Path) -> BTreeMap<String, StorePkg> {
    spack_store_of(
        t,
        &[
            Pkg::new("runtime", "gcc-runtime", "13.4.0").gcc("13.4.0"),
            Pkg::new("munge", "munge", "0.5.16")
                .gcc("13.4.0")
                .dep("runtime"),
            Pkg::new("slurm-cpu", "slurm", "25-11-6-1")
                .gcc("13.4.0")
                .variant("nvml", false)
                .variant("rsmi", false)
                .dep("munge")
                .dep("runtime"),
            Pkg::new("slurm-gpu", "slurm", "25-11-6-1")
                .gcc("13.4.0")
                .variant("nvml", true)
                .variant("rsmi", true)
                .dep("munge")
                .dep("runtime"),
            Pkg::new("slurm-24", "slurm", "24-11-6-1")
                .gcc("13.4.0")
                .variant("nvml", false)
                .variant("rsmi", false)
                .dep("munge")
                .dep("runtime"),
            Pkg::new("slurm-gcc12", "slurm", "25-11-6-1")
                .gcc("12.5.0")
                .variant("nvml", false)
                .variant("rsmi", false),
        ],
    )
}

fn publish(home: &Home, to: &Path, prefixes: &[&Path]) {
    let mut args = vec!["publish", "-q"];
    args.extend(prefixes.iter().map(|p| s(p)));
    let key = fx(SECRET);
    args.extend(["--to", s(to), "--key", s(&key)]);
    let o = home.run(&args);
    assert!(o.status.success(), "publish: {}", stderr(&o));
}

/// Publish `prefixes` with their dependencies, then take the packages named `leave_out` out of
/// the cache again (manifests and index): a cache whose closure continues in another cache, as
/// upstream's Slurm caches continue in the compilers caches (`publish` alone refuses to write one).
fn publish_without(home: &Home, to: &Path, prefixes: &[&Path], leave_out: &[&str]) {
    let mut args = vec!["publish", "-q", "--with-deps"];
    args.extend(prefixes.iter().map(|p| s(p)));
    let key = fx(SECRET);
    args.extend(["--to", s(to), "--key", s(&key)]);
    let o = home.run(&args);
    assert!(o.status.success(), "publish: {}", stderr(&o));
    for name in leave_out {
        let dir = to.join("v3/manifests/spec").join(name);
        assert!(dir.is_dir(), "{dir:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::remove_dir_all(to.join("v3/manifests/index")).unwrap();
    let o = home.run(&["update-index", "-q", s(to)]);
    assert!(o.status.success(), "update-index: {}", stderr(&o));
}

/// `<t>/base` laid out with the default scheme. The Slurm caches do not hold the GCC runtime:
/// it comes from the compilers cache, as upstream's do.
fn default_caches(home: &Home, t: &Path, pkgs: &BTreeMap<String, StorePkg>) -> PathBuf {
    let base = t.join("base");
    let p = |k: &str| pkgs[k].prefix.clone();
    publish_without(
        home,
        &base.join("slurm/25.11/13.4.0/buildcache"),
        &[&p("slurm-cpu"), &p("slurm-gpu")],
        &["gcc-runtime"],
    );
    publish_without(
        home,
        &base.join("slurm/24.11/13.4.0/buildcache"),
        &[&p("slurm-24")],
        &["gcc-runtime"],
    );
    publish(
        home,
        &base.join("slurm/25.11/12.5.0/buildcache"),
        &[&p("slurm-gcc12")],
    );
    publish(
        home,
        &base.join("compilers/13.4.0/buildcache"),
        &[&p("runtime")],
    );
    base
}

fn slurm(home: &Home, args: &[&str]) -> Output {
    let mut a = vec!["slurm"];
    a.extend_from_slice(args);
    home.run(&a)
}

fn cell<'a>(cells: &'a Value, slurm: &str, gcc: &str) -> &'a Value {
    cells
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slurm"] == slurm && c["compiler"] == gcc)
        .unwrap_or_else(|| panic!("no cell {slurm}/{gcc} in {cells:#}"))
}

#[test]
fn list_shows_what_each_cell_offers() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let pkgs = store(t.path());
    let base = default_caches(&home, t.path(), &pkgs);

    let o = slurm(
        &home,
        &[
            "list",
            "--json",
            "--compiler-version",
            "13.4.0",
            "--base",
            s(&base),
        ],
    );
    let cells = json(&o);
    assert_eq!(cells.as_array().unwrap().len(), 5, "{cells:#}");
    let c = cell(&cells, "25.11", "13.4.0");
    assert_eq!(c["available"], true);
    assert_eq!(c["glibc"], "2.39");
    assert_eq!(c["distros"][0], "Ubuntu 24.04");
    let urls: Vec<&str> = c["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            format!("{}/slurm/25.11/13.4.0/buildcache", base.display()),
            format!("{}/compilers/13.4.0/buildcache", base.display())
        ]
    );
    let v = &c["variants"];
    assert_eq!(v["default"]["status"], "available");
    assert_eq!(v["default"]["hash"], pkgs["slurm-cpu"].hash.as_str());
    assert_eq!(v["default"]["version"], "25-11-6-1");
    assert_eq!(v["default"]["cache"], "slurm/25.11/13.4.0");
    assert_eq!(v["default"]["query"], "slurm@25.11 %gcc@13.4.0 ~nvml ~rsmi");
    assert_eq!(v["gpu"]["hash"], pkgs["slurm-gpu"].hash.as_str());
    // Upstream's recent recipes have no `pmix` variant: no minimal build here.
    assert_eq!(v["minimal"]["status"], "missing");
    assert_eq!(c["gcc_runtime"], serde_json::json!(["13.4.0"]));
    let mut builds: Vec<String> = c["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{} {}",
                b["hash"].as_str().unwrap(),
                b["variants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect();
    builds.sort();
    let mut want = vec![
        format!("{} ~nvml ~rsmi", pkgs["slurm-cpu"].hash),
        format!("{} +nvml +rsmi", pkgs["slurm-gpu"].hash),
    ];
    want.sort();
    assert_eq!(builds, want);

    let c = cell(&cells, "24.11", "13.4.0");
    assert_eq!(
        c["variants"]["default"]["hash"],
        pkgs["slurm-24"].hash.as_str()
    );
    assert_eq!(c["variants"]["gpu"]["status"], "missing");

    // 23.11 has no Slurm cache: the cell says so, the compilers cache still answers.
    let c = cell(&cells, "23.11", "13.4.0");
    assert_eq!(c["available"], false);
    assert!(c["unavailable"].is_null(), "{c:#}");
    let slurm_cache = &c["caches"][0];
    assert_eq!(slurm_cache["name"], "slurm/23.11/13.4.0");
    assert_eq!(slurm_cache["available"], false);
    assert_eq!(
        slurm_cache["url"],
        format!("{}/slurm/23.11/13.4.0/buildcache", base.display())
    );
    assert_eq!(
        slurm_cache["error"],
        "no buildcache there (no v3 or v2 index)"
    );
    assert_eq!(c["variants"]["default"]["status"], "missing");

    // A toolchain with no cache at all: the whole cell is unavailable, with the reason.
    let o = slurm(
        &home,
        &[
            "list",
            "--json",
            "--slurm-version",
            "24.11",
            "--compiler-version",
            "12.5.0",
            "--base",
            s(&base),
        ],
    );
    let cells = json(&o);
    assert_eq!(cells.as_array().unwrap().len(), 1);
    let c = &cells[0];
    assert_eq!(c["available"], false);
    let why = c["unavailable"].as_str().unwrap();
    assert!(why.starts_with("slurm/24.11/12.5.0: "), "{why}");
    assert_eq!(c["variants"]["default"]["status"], "unavailable");

    // Human output: one row per cell; unavailable cells say why in one line.
    let o = slurm(
        &home,
        &[
            "list",
            "--legacy",
            "--slurm-version",
            "25.11",
            "--base",
            s(&base),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1 + 9, "{out}");
    assert!(lines[0].starts_with("SLURM"), "{out}");
    let row = |gcc: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(gcc))
            .unwrap_or_else(|| panic!("no row for {gcc}: {out}"))
    };
    let r = row("13.4.0");
    assert!(
        r.contains(&format!("25-11-6-1 /{}", &pkgs["slurm-cpu"].hash[..7])),
        "{r}"
    );
    assert!(
        r.contains(&format!("25-11-6-1 /{}", &pkgs["slurm-gpu"].hash[..7])),
        "{r}"
    );
    let r = row("12.5.0");
    assert!(
        r.contains(&format!("25-11-6-1 /{}", &pkgs["slurm-gcc12"].hash[..7])),
        "{r}"
    );
    assert!(r.contains("compilers/12.5.0 unavailable: "), "{r}");
    let r = row("7.5.0");
    assert!(
        r.split_whitespace().skip(3).take(4).all(|c| c == "-"),
        "{r}"
    );
    assert!(
        r.ends_with("  unavailable: slurm/25.11/7.5.0: no buildcache there (no v3 or v2 index)"),
        "{r}"
    );
}

#[test]
fn install_takes_the_variant_from_the_right_caches_with_a_view() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let pkgs = store(t.path());
    let base = default_caches(&home, t.path(), &pkgs);
    let root = t.path().join("root");
    let view = t.path().join("view");

    let o = home
        .cmd()
        .env("SF_CACHE_HOST_GLIBC", "2.39")
        .args([
            "slurm",
            "install",
            "--json",
            "--slurm-version",
            "25.11",
            "--compiler-version",
            "13.4.0",
            "--root",
            s(&root),
            "--view",
            s(&view),
            "--base",
            s(&base),
        ])
        .output()
        .unwrap();
    let r = json(&o);
    assert!(!stderr(&o).contains("glibc"), "{}", stderr(&o));
    assert_eq!(r["variant"], "default");
    assert_eq!(r["query"], "slurm@25.11 %gcc@13.4.0 ~nvml ~rsmi");
    assert_eq!(r["slurm_hash"], pkgs["slurm-cpu"].hash.as_str());
    assert_eq!(
        r["caches"][0]["url"],
        format!("{}/slurm/25.11/13.4.0/buildcache", base.display())
    );
    assert_eq!(
        r["caches"][1]["url"],
        format!("{}/compilers/13.4.0/buildcache", base.display())
    );
    assert_eq!(r["module_dir"], s(&root.join("modules")));
    let mut installed: Vec<(String, String)> = r["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    installed.sort();
    assert_eq!(
        installed,
        [
            ("gcc-runtime".to_string(), pkgs["runtime"].hash.clone()),
            ("munge".to_string(), pkgs["munge"].hash.clone()),
            ("slurm".to_string(), pkgs["slurm-cpu"].hash.clone()),
        ]
    );
    // The closure is in the root, relocated; the view links it.
    let prefix = prefix_of(&root, "slurm");
    assert!(prefix.ends_with(format!("slurm-25-11-6-1-{}", pkgs["slurm-cpu"].hash)));
    let out = std::process::Command::new(view.join("bin/slurm-info"))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out).trim(),
        format!("slurm 25-11-6-1 in {}", prefix.display())
    );
    for name in ["munge", "gcc-runtime"] {
        let link = view.join(format!("bin/{name}-info"));
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let target = std::fs::canonicalize(&link).unwrap();
        let prefix = std::fs::canonicalize(prefix_of(&root, name)).unwrap();
        assert!(target.starts_with(&prefix), "{name}: {target:?}");
    }

    // The Slurm module, pointing at the view (its prefix overridable by SLURM_INSTALL_PREFIX).
    let module = root.join("modules/slurm/25-11-6-1.lua");
    assert_eq!(r["modules"][0]["path"], s(&module));
    assert_eq!(r["modules"][0]["hash"], pkgs["slurm-cpu"].hash.as_str());
    let text = std::fs::read_to_string(&module).unwrap();
    assert!(text.contains("family(\"workloadmanager\")"), "{text}");
    assert!(text.contains("SLURM_INSTALL_PREFIX"), "{text}");
    assert!(text.contains(&format!("\"{}\"", view.display())), "{text}");
    assert!(!text.contains(s(&prefix)), "{text}");

    // The GPU build into the same root: another Slurm, the same munge and runtime; an old host
    // glibc is warned about, naming both versions.
    let o = home
        .cmd()
        .env("SF_CACHE_HOST_GLIBC", "2.28")
        .args([
            "slurm",
            "install",
            "--json",
            "--gpu",
            "--compiler-version",
            "13.4.0",
            "--root",
            s(&root),
            "--module-dir",
            s(&t.path().join("mods")),
            "--base",
            s(&base),
        ])
        .output()
        .unwrap();
    let r = json(&o);
    assert_eq!(r["variant"], "gpu");
    assert_eq!(r["slurm_hash"], pkgs["slurm-gpu"].hash.as_str());
    assert_eq!(r["installed"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r["already_installed"].as_array().unwrap().len(), 2, "{r:#}");
    // Without a view the module points at the prefix; --module-dir puts it elsewhere.
    assert_eq!(r["module_dir"], s(&t.path().join("mods")));
    // The GPU build has its own module, beside the CPU build's.
    let text = std::fs::read_to_string(t.path().join("mods/slurm/25-11-6-1-gpu.lua")).unwrap();
    let gpu_prefix = root.join(format!("slurm-25-11-6-1-{}", pkgs["slurm-gpu"].hash));
    assert!(
        text.contains(&format!("\"{}\"", gpu_prefix.display())),
        "{text}"
    );
    let err = stderr(&o);
    let warning = err
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    assert!(warning.contains("glibc 2.28"), "{warning}");
    assert!(warning.contains("glibc 2.39"), "{warning}");
    assert!(warning.contains("GCC 13.4.0"), "{warning}");
    assert!(
        warning.contains("--compiler-version 9.5.0 | 8.5.0 | 7.5.0"),
        "{warning}"
    );

    // Nothing for --minimal: exit 4, saying what was tried and how to see what there is.
    let o = slurm(
        &home,
        &[
            "install",
            "--minimal",
            "--compiler-version",
            "13.4.0",
            "--root",
            s(&root),
            "--base",
            s(&base),
        ],
    );
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("no minimal build of Slurm 25.11 for GCC 13.4.0"),
        "{e}"
    );
    assert!(
        e.contains("slurm@25.11 %gcc@13.4.0 ~pmix ~nvml ~rsmi"),
        "{e}"
    );
    assert!(
        e.contains("sf-cache slurm list --slurm-version 25.11"),
        "{e}"
    );
}

#[test]
fn version_and_variant_errors_are_usage_errors_listing_the_valid_ones() {
    let home = Home::new();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let base = t.path().join("nothing-here");
    let run = |args: &[&str]| {
        let mut a = vec!["install", "--root", s(&root), "--base", s(&base)];
        a.extend_from_slice(args);
        slurm(&home, &a)
    };
    let o = run(&["--slurm-version", "22.05"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "error: unknown Slurm version `22.05`: valid versions are 26.05, 25.11, 24.11, 23.11, 23.02"
    );
    let o = run(&["--compiler-version", "13.3.0"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(
            "valid GCC toolchains are 15.2.0, 14.2.0, 13.4.0, 12.5.0, 11.5.0, 10.5.0, 9.5.0, 8.5.0, 7.5.0"
        ),
        "{}",
        stderr(&o)
    );
    let o = run(&["--gpu", "--minimal"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--minimal"), "{}", stderr(&o));
    // `list` checks its filters the same way.
    let o = slurm(
        &home,
        &["list", "--compiler-version", "6.0", "--base", s(&base)],
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown compiler version `6.0`"));
    // Nothing was written.
    assert!(!root.exists());
    // No cache at all: exit 1 naming the URLs and --base.
    let o = run(&["--compiler-version", "13.4.0"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("no Slurm Factory cache for Slurm 25.11 / GCC 13.4.0"),
        "{e}"
    );
    assert!(
        e.contains(&format!("{}/slurm/25.11/13.4.0/buildcache", base.display())),
        "{e}"
    );
    assert!(e.contains("--base"), "{e}");
    assert!(!root.exists());
}

#[test]
fn base_url_precedence_flag_env_config_default() {
    let home = Home::new();
    let t = tempfile::tempdir().unwrap();
    let first_url =
        |o: &Output| -> String { json(o)[0]["caches"][0]["url"].as_str().unwrap().to_string() };
    let list = [
        "slurm",
        "list",
        "--json",
        "--slurm-version",
        "25.11",
        "--compiler-version",
        "13.4.0",
    ];
    let env_base = t.path().join("from-env");
    let flag_base = t.path().join("from-flag");
    let cfg_base = t.path().join("from-config");
    // The default (nothing listens there in this test: no network used, the file base wins below).
    let config = t.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[slurm_factory]\nbase_url = \"{}\"\n", cfg_base.display()),
    )
    .unwrap();
    let run = |env: Option<&Path>, flag: Option<&Path>, cfg: bool| {
        let mut c = home.cmd();
        c.env_remove("SF_CACHE_SLURM_FACTORY_BASE");
        if let Some(e) = env {
            c.env("SF_CACHE_SLURM_FACTORY_BASE", e);
        }
        c.args(list);
        if let Some(f) = flag {
            c.args(["--base", s(f)]);
        }
        if cfg {
            c.args(["--config", s(&config)]);
        }
        c.output().unwrap()
    };
    let want = |b: &Path| format!("{}/slurm/25.11/13.4.0/buildcache", b.display());
    assert_eq!(
        first_url(&run(Some(&env_base), Some(&flag_base), true)),
        want(&flag_base)
    );
    assert_eq!(
        first_url(&run(Some(&env_base), None, true)),
        want(&env_base)
    );
    assert_eq!(first_url(&run(None, None, true)), want(&cfg_base));
}

#[test]
fn config_templates_choose_the_cache_per_variant() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let pkgs = store(t.path());
    let base = t.path().join("base");
    let p = |k: &str| pkgs[k].prefix.clone();
    // One cache per variant, named in the path; the runtime in a deps tier.
    publish_without(
        &home,
        &base.join("default/slurm-25.11-gcc-13.4.0"),
        &[&p("slurm-cpu")],
        &["gcc-runtime"],
    );
    publish_without(
        &home,
        &base.join("gpu/slurm-25.11-gcc-13.4.0"),
        &[&p("slurm-gpu")],
        &["gcc-runtime"],
    );
    publish(&home, &base.join("deps/13.4.0"), &[&p("runtime")]);
    let config = t.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"[slurm_factory]
base_url = "{}"
url_templates = ["{{base}}/{{variant}}/slurm-{{slurm}}-gcc-{{gcc}}", "{{base}}/deps/{{gcc}}"]
slurm = [{{ version = "25.11" }}]
toolchain = [{{ gcc = "13.4.0", glibc = "2.39" }}]
default_compiler_version = "13.4.0"

[slurm_factory.variants]
minimal = "~nvml"
"#,
            base.display()
        ),
    )
    .unwrap();
    let root = t.path().join("root");
    let install = |flag: &str| {
        let mut c = home.cmd();
        c.env_remove("SF_CACHE_SLURM_FACTORY_BASE").args([
            "--config",
            s(&config),
            "slurm",
            "install",
            "--json",
            "--compiler-version",
            "13.4.0",
            "--root",
            s(&root),
        ]);
        if !flag.is_empty() {
            c.arg(flag);
        }
        json(&c.output().unwrap())
    };
    let r = install("--gpu");
    assert_eq!(r["slurm_hash"], pkgs["slurm-gpu"].hash.as_str());
    assert_eq!(r["caches"][0]["name"], "gpu/slurm-25.11-gcc-13.4.0");
    assert_eq!(r["caches"][1]["name"], "deps/13.4.0");
    let r = install("");
    assert_eq!(r["slurm_hash"], pkgs["slurm-cpu"].hash.as_str());
    assert_eq!(r["caches"][0]["name"], "default/slurm-25.11-gcc-13.4.0");
    // The overridden `minimal` fragment reads the `minimal/…` cache, which does not exist.
    let mut c = home.cmd();
    c.args([
        "--config",
        s(&config),
        "slurm",
        "install",
        "--minimal",
        "--compiler-version",
        "13.4.0",
        "--root",
        s(&root),
    ]);
    let o = c.output().unwrap();
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tried `slurm@25.11 %gcc@13.4.0 ~nvml`"),
        "{}",
        stderr(&o)
    );
    // The matrix of the config is the whole matrix.
    let mut c = home.cmd();
    c.args([
        "--config",
        s(&config),
        "slurm",
        "list",
        "--legacy",
        "--json",
    ]);
    let cells = json(&c.output().unwrap());
    assert_eq!(cells.as_array().unwrap().len(), 1);
    // A bad template in the config: exit 1 naming the file and the key.
    std::fs::write(
        &config,
        "[slurm_factory]\nurl_templates = [\"{base}/{distro}\"]\n",
    )
    .unwrap();
    let mut c = home.cmd();
    c.args(["--config", s(&config), "slurm", "list"]);
    let o = c.output().unwrap();
    assert_eq!(code(&o), 1);
    let e = stderr(&o);
    assert!(e.contains("config.toml [slurm_factory]"), "{e}");
    assert!(e.contains("{distro}"), "{e}");
}

/// `--build-on-miss`: no cache of the cell can be read, so the variant's first query is built
/// (by the Spack STAND-IN script of tests/data, run with the host runtime: it is not Spack, it
/// writes a miniature install of the spec it is asked for), published into the local buildcache,
/// installed from there, and given its module.
#[test]
fn install_builds_slurm_on_a_miss() {
    let home = Home::new();
    let t = tempfile::tempdir().unwrap();
    let spack = spack_stand_in(t.path());
    let empty_base = t.path().join("no-caches-here");
    std::fs::create_dir_all(&empty_base).unwrap();
    let root = t.path().join("root");
    let args = [
        "slurm",
        "install",
        "--json",
        "--slurm-version",
        "24.11",
        "--compiler-version",
        "13.4.0",
        "--gpu",
        "--root",
        s(&root),
        "--base",
        s(&empty_base),
    ];
    // Without --build-on-miss: nothing can be read, a failure naming --base.
    let o = home.run(&args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("--base"), "{}", stderr(&o));

    let o = home
        .cmd()
        .env("SF_CACHE_HOST_GLIBC", "2.39")
        .args(args)
        .args([
            "--build-on-miss",
            "--runtime",
            "host",
            "--spack-root",
            s(&spack),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    let query = r["query"].as_str().unwrap();
    assert!(
        query.starts_with("slurm@24.11 %gcc@13.4.0") && query.contains("+nvml"),
        "{r:#}"
    );
    // The stand-in's program ran at the build prefix; relocated, it names the install prefix.
    let prefix = prefix_of(&root, "slurm");
    let said = std::process::Command::new(prefix.join("bin/slurm"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&said.stdout).to_string();
    assert!(
        said.contains(&prefix.display().to_string()),
        "{said} does not name {}",
        prefix.display()
    );
    // A GPU build: its module is `<version>-gpu`.
    let module = root.join("modules/slurm/24.11-gpu.lua");
    let text = std::fs::read_to_string(&module).unwrap();
    assert!(text.contains("family(\"workloadmanager\")"), "{text}");
    // One build, one log.
    let logs = |h: &Home| {
        std::fs::read_dir(h.dir.path().join("build/logs"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(logs(&home), 1);
}

#[test]
fn install_offline_reads_only_what_an_online_run_cached() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let pkgs = store(t.path());
    let base = default_caches(&home, t.path(), &pkgs);
    let server = common::HttpServer::start(base.clone());
    let url = server.base_url();
    let install = |root: &Path, offline: bool| {
        let mut a = vec![
            "slurm",
            "install",
            "--json",
            "--slurm-version",
            "25.11",
            "--compiler-version",
            "13.4.0",
            "--root",
            s(root),
            "--base",
            &url,
        ];
        if offline {
            a.push("--offline");
        }
        home.cmd()
            .env("SF_CACHE_HOST_GLIBC", "2.39")
            .args(&a)
            .output()
            .unwrap()
    };
    // Offline before anything was fetched: refused, naming --offline.
    let o = install(&t.path().join("cold"), true);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("--offline"), "{}", stderr(&o));
    let requests = server.total_requests();
    assert_eq!(requests, 0, "offline must not touch the network");
    // Online once, then offline into a new root: the same install, no request.
    let o = install(&t.path().join("online"), false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = server.total_requests();
    let o = install(&t.path().join("offline"), true);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["slurm_hash"], pkgs["slurm-cpu"].hash.as_str());
    assert_eq!(server.total_requests(), before, "offline made requests");
}

/// `--toolchain` probes the three URL schemes in order: a base laid out in each is served by its
/// scheme; a toolchain newer than the host's glibc is refused unless `--force`.
#[test]
fn toolchain_probes_the_three_schemes_and_refuses_a_too_new_glibc() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let pkgs = store(t.path());
    let p = |k: &str| pkgs[k].prefix.clone();
    // The store's builds are GCC 13.4.0: a `noble` toolchain of that GCC, from the config.
    let config = t.path().join("config.toml");
    std::fs::write(
        &config,
        "[slurm_factory]\nos_toolchain = [{ name = \"rockylinux8\", gcc = \"8.5.0\", glibc = \"2.28\" }, { name = \"noble\", gcc = \"13.4.0\", glibc = \"2.39\" }]\n",
    )
    .unwrap();
    let scheme1 = t.path().join("scheme1");
    publish_without(
        &home,
        &scheme1.join("noble/spack"),
        &[&p("slurm-cpu"), &p("runtime")],
        &[],
    );
    let scheme2 = t.path().join("scheme2");
    publish_without(
        &home,
        &scheme2.join("noble/slurm/25.11"),
        &[&p("slurm-cpu")],
        &["gcc-runtime"],
    );
    publish(&home, &scheme2.join("noble/slurm/deps"), &[&p("runtime")]);
    let scheme3 = default_caches(&home, t.path(), &pkgs);
    let install = |base: &Path, root: &str, glibc: &str, extra: &[&str]| {
        let mut c = home.cmd();
        c.env("SF_CACHE_HOST_GLIBC", glibc).args([
            "--config",
            s(&config),
            "slurm",
            "install",
            "--json",
            "--toolchain",
            "noble",
            "--root",
            s(&t.path().join(root)),
            "--base",
            s(base),
        ]);
        c.args(extra);
        c.output().unwrap()
    };
    for (base, root, first, second) in [
        (&scheme1, "r1", "noble/spack", None),
        (
            &scheme2,
            "r2",
            "noble/slurm/25.11",
            Some("noble/slurm/deps"),
        ),
        (
            &scheme3,
            "r3",
            "slurm/25.11/13.4.0",
            Some("compilers/13.4.0"),
        ),
    ] {
        let o = install(base, root, "2.39", &[]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let r = json(&o);
        assert_eq!(r["slurm_hash"], pkgs["slurm-cpu"].hash.as_str(), "{r:#}");
        assert_eq!(r["caches"][0]["name"], first, "{r:#}");
        assert_eq!(r["caches"][0]["available"], true, "{r:#}");
        match second {
            Some(n) => assert_eq!(r["caches"][1]["name"], n, "{r:#}"),
            None => assert_eq!(r["caches"].as_array().unwrap().len(), 1, "{r:#}"),
        }
    }
    // `slurm list --toolchain` shows which scheme answered each cell.
    for (base, scheme) in [
        (&scheme1, "toolchain"),
        (&scheme2, "toolchain-split"),
        (&scheme3, "legacy"),
    ] {
        let o = home.run(&[
            "--config",
            s(&config),
            "slurm",
            "list",
            "--json",
            "--toolchain",
            "noble",
            "--base",
            s(base),
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let cells = json(&o);
        let slurms: Vec<&str> = cells
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["slurm"].as_str().unwrap())
            .collect();
        assert_eq!(slurms, ["26.05", "25.11", "24.11", "23.11"], "{cells:#}");
        let c = cell(&cells, "25.11", "13.4.0");
        assert_eq!(c["toolchain"], "noble", "{c:#}");
        assert_eq!(c["scheme"], scheme, "{c:#}");
        assert_eq!(c["variants"]["default"]["status"], "available", "{c:#}");
        assert_eq!(
            c["variants"]["default"]["hash"],
            pkgs["slurm-cpu"].hash.as_str()
        );
        let o = home.run(&[
            "--config",
            s(&config),
            "slurm",
            "list",
            "--toolchain",
            "noble",
            "--slurm-version",
            "25.11",
            "--base",
            s(base),
        ]);
        assert!(
            stdout(&o).contains(&format!("scheme {scheme}")),
            "{}",
            stdout(&o)
        );
    }
    // A host older than the toolchain's glibc: refused, naming the toolchains that fit.
    let o = install(&scheme1, "r4", "2.30", &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "error: toolchain noble needs glibc 2.39 but this host has glibc 2.30; toolchains that fit: --toolchain rockylinux8 (or --force to install anyway)"
    );
    assert!(!t.path().join("r4").exists());
    let o = install(&scheme1, "r4", "2.30", &["--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("needs glibc 2.39"), "{}", stderr(&o));
    // Without --toolchain (or --compiler-version): the host's, from its os-release.
    let os_release = |name: &str, text: &str| {
        let f = t.path().join(name);
        std::fs::write(&f, text).unwrap();
        f
    };
    let noble = os_release(
        "noble",
        "ID=ubuntu\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n",
    );
    let o = home
        .cmd()
        .env("SF_CACHE_OS_RELEASE", &noble)
        .env("SF_CACHE_HOST_GLIBC", "2.39")
        .args(["--config", s(&config), "slurm", "install", "--json"])
        .args(["--root", s(&t.path().join("r6")), "--base", s(&scheme1)])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["caches"][0]["name"], "noble/spack");
    assert!(!stderr(&o).contains("WARN"), "{}", stderr(&o));
    let list_on = |release: &Path| {
        home.cmd()
            .env("SF_CACHE_OS_RELEASE", release)
            .args(["--config", s(&config), "slurm", "list", "--json"])
            .args(["--slurm-version", "25.11", "--base", s(&scheme1)])
            .output()
            .unwrap()
    };
    // A host of no toolchain: noble, with a note saying so and how to choose.
    let debian = os_release("debian", "ID=debian\nVERSION_ID=\"12\"\n");
    let o = list_on(&debian);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "no Slurm Factory toolchain for debian 12: using noble (choose with --toolchain)"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(json(&o)[0]["toolchain"], "noble");
    let rocky8 = os_release(
        "rocky8",
        "ID=\"rocky\"\nID_LIKE=\"rhel\"\nVERSION_ID=\"8.10\"\n",
    );
    assert_eq!(json(&list_on(&rocky8))[0]["toolchain"], "rockylinux8");

    // An unknown toolchain: a usage error listing the valid ones.
    let o = home.run(&[
        "slurm",
        "install",
        "--toolchain",
        "bookworm",
        "--root",
        s(&t.path().join("r5")),
        "--base",
        s(&scheme1),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "error: unknown toolchain `bookworm`: valid toolchains are rockylinux8, rockylinux9, rockylinux10, jammy, noble, resolute"
    );
}
