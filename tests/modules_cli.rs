//! End-to-end tests of `module`, `relocate` and `export` against the real fixture cache
//! (spack-v3: greet depends on libgreet; greet's binary has an RPATH into libgreet and its data
//! directory compiled in), with REAL Lmod loading the modules (Debian package `lmod`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::cli::*;
use serde_json::Value;

const SECRET: &str = "keys/sf-cache-fixture.secret.asc";
const PUBLIC: &str = "keys/sf-cache-fixture.pub.asc";

fn install_greet(home: &Home, root: &Path) {
    let out = home.run(&[
        "install",
        "greet",
        "--mirror",
        s(&fx("spack-v3")),
        "--root",
        s(root),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A directory whose absolute path has exactly `len` characters (not created).
fn path_of_len(base: &Path, len: usize) -> PathBuf {
    let base_len = base.as_os_str().len() + 1;
    assert!(len > base_len + 1, "base {base:?} too long for {len}");
    let p = base.join("d".repeat(len - base_len));
    assert_eq!(p.as_os_str().len(), len);
    p
}

/// Lmod's shell initialisation: `$LMOD_INIT`, else where Debian and the Lmod tarball put it.
fn lmod_init() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("LMOD_INIT") {
        candidates.push(p.into());
    }
    candidates.extend(
        [
            "/usr/share/lmod/lmod/init/bash",
            "/opt/apps/lmod/lmod/init/bash",
            "/usr/local/lmod/lmod/init/bash",
            "/usr/share/lmod/init/bash",
        ]
        .map(PathBuf::from),
    );
    if let Ok(rd) = std::fs::read_dir("/usr/share/lmod") {
        for e in rd.flatten() {
            candidates.push(e.path().join("init/bash"));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).expect(
        "Lmod is needed by these tests: apt-get install lmod (or set LMOD_INIT to its init/bash)",
    )
}

/// Run a bash script with Lmod initialised, in a clean module environment.
fn lmod(script: &str, env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let full = format!("source {}\n{script}\n", s(&lmod_init()));
    let mut c = std::process::Command::new("bash");
    c.arg("-c").arg(full);
    for (k, _) in std::env::vars() {
        if k.starts_with("LMOD")
            || k.starts_with("__LMOD")
            || k.starts_with("_ModuleTable")
            || k == "MODULEPATH"
            || k == "LOADEDMODULES"
            || k.starts_with("SLURM")
            || k.ends_with("_INSTALL_PREFIX")
        {
            c.env_remove(&k);
        }
    }
    c.env("HOME", home.path()).env("LMOD_IGNORE_CACHE", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// `KEY=value` lines printed by a script.
fn vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check_greet_runs(out: &str, prefix: &Path) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Hello from libgreet 1.2.0!", "{out}");
    assert_eq!(lines[1], "greet 2.1.0");
    let datadir = lines[2].strip_prefix("datadir: ").unwrap();
    let tail = format!("{}/share/greet", &s(prefix)[1..]);
    assert!(datadir.ends_with(&tail), "{datadir} vs {tail}");
    assert!(datadir[..datadir.len() - tail.len()]
        .chars()
        .all(|c| c == '/'));
    assert_eq!(
        lines[3],
        "message: greet read this line from its data directory"
    );
}

fn verify_ok(home: &Home, root: &Path) {
    let o = home.run(&["verify", "--root", s(root)]);
    assert!(
        o.status.success(),
        "verify {}: {}{}",
        root.display(),
        stdout(&o),
        stderr(&o)
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn module_command_writes_modules_for_installed_specs() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root");
    install_greet(&home, &root);
    let mods = base.path().join("modules");
    let greet = prefix_of(&root, "greet");
    let libgreet = prefix_of(&root, "libgreet");

    let v = json(&home.run(&[
        "module",
        "greet",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
        "--json",
    ]));
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "greet");
    assert_eq!(rows[0]["path"], s(&mods.join("greet/2.1.0.lua")));
    assert_eq!(rows[0]["prefix"], s(&greet));
    let text = std::fs::read_to_string(mods.join("greet/2.1.0.lua")).unwrap();
    assert!(
        text.contains(&format!("prefix = \"{}\"", greet.display())),
        "{text}"
    );
    assert!(text.contains("os.getenv(\"GREET_INSTALL_PREFIX\")"));
    assert!(text.contains("prepend_path(\"PATH\", pathJoin(prefix, \"bin\"))"));
    // greet has no man pages, no sbin, no pkgconfig: nothing of that is prepended.
    assert!(!text.contains("MANPATH") && !text.contains("sbin") && !text.contains("PKG_CONFIG"));

    // No query: every installed package; libgreet's module has its libraries and pkg-config.
    let v = json(&home.run(&[
        "module",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
        "--json",
    ]));
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["greet", "libgreet"]);
    let text = std::fs::read_to_string(mods.join("libgreet/1.2.0.lua")).unwrap();
    assert!(text.contains(&format!("prefix = \"{}\"", libgreet.display())));
    assert!(text.contains("prepend_path(\"LD_LIBRARY_PATH\", pathJoin(prefix, \"lib\"))"));
    assert!(text.contains("prepend_path(\"PKG_CONFIG_PATH\", pathJoin(prefix, \"lib/pkgconfig\"))"));
    assert!(text.contains("prepend_path(\"CMAKE_PREFIX_PATH\", prefix)"));
    assert!(!text.contains("\"PATH\""), "libgreet has no bin/");

    // --view: modules point at the view.
    let view = base.path().join("view");
    json(&home.run(&[
        "module",
        "greet",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
        "--view",
        s(&view),
        "--json",
    ]));
    let text = std::fs::read_to_string(mods.join("greet/2.1.0.lua")).unwrap();
    assert!(text.contains(&format!("prefix = \"{}\"", view.display())));

    // --templates overrides the generic template.
    let t = base.path().join("templates");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(
        t.join("generic.lua.j2"),
        "-- site template\nsetenv(\"SITE_{{ name | upper }}\", {{ prefix | lua }})\n",
    )
    .unwrap();
    json(&home.run(&[
        "module",
        "greet",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
        "--templates",
        s(&t),
        "--json",
    ]));
    assert_eq!(
        std::fs::read_to_string(mods.join("greet/2.1.0.lua")).unwrap(),
        format!(
            "-- site template\nsetenv(\"SITE_GREET\", \"{}\")\n",
            greet.display()
        )
    );

    // Errors: nothing matches (4), not a root (1), broken template (1, nothing written).
    let o = home.run(&[
        "module",
        "nosuch",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let o = home.run(&["module", "--root", s(base.path()), "--module-dir", s(&mods)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    std::fs::write(t.join("generic.lua.j2"), "{{ no_such_variable }}\n").unwrap();
    let before = std::fs::read(mods.join("greet/2.1.0.lua")).unwrap();
    let o = home.run(&[
        "module",
        "greet",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
        "--templates",
        s(&t),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("generic.lua.j2"), "{}", stderr(&o));
    assert_eq!(std::fs::read(mods.join("greet/2.1.0.lua")).unwrap(), before);
}

#[test]
fn lmod_loads_greet_and_a_moved_tree_runs_after_relocate() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root-original");
    install_greet(&home, &root);
    let mods = base.path().join("modules");
    json(&home.run(&[
        "module",
        "greet",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
        "--json",
    ]));
    let greet = prefix_of(&root, "greet");

    let script = format!(
        "set -e\nmodule use {}\nmodule load greet\necho \"WHICH=$(command -v greet)\"\ngreet\n",
        s(&mods)
    );
    let out = ok(&lmod(&script, &[]));
    let (first, rest) = out.split_once('\n').unwrap();
    assert_eq!(
        first,
        format!("WHICH={}", greet.join("bin/greet").display())
    );
    check_greet_runs(rest, &greet);

    // Move the tree (shorter path): the binaries still name the old place and fail.
    let moved = base.path().join("moved");
    std::fs::rename(&root, &moved).unwrap();
    let new_greet = prefix_of(&moved, "greet");
    let o = std::process::Command::new(new_greet.join("bin/greet"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "greet ran before relocation");

    let v = json(&home.run(&["relocate", s(&moved), "--from", s(&root), "--json"]));
    assert_eq!(v["from"], s(&root));
    assert_eq!(v["root"], s(&moved));
    let statuses: Vec<&str> = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["relocated", "relocated"]);
    verify_ok(&home, &moved);

    // The module file lives outside the tree: it still names the old prefix, and the variable
    // points it at the new one.
    let script = format!(
        "set -e\nmodule use {}\nmodule load greet\necho \"WHICH=$(command -v greet)\"\necho \"ROOT=$GREET_ROOT\"\ngreet\n",
        s(&mods)
    );
    let out = ok(&lmod(&script, &[("GREET_INSTALL_PREFIX", s(&new_greet))]));
    let mut lines = out.splitn(3, '\n');
    assert_eq!(
        lines.next().unwrap(),
        format!("WHICH={}", new_greet.join("bin/greet").display())
    );
    assert_eq!(
        lines.next().unwrap(),
        format!("ROOT={}", new_greet.display())
    );
    check_greet_runs(lines.next().unwrap(), &new_greet);

    // The script that runs through sbang was pointed at the new root's sbang.
    let wrapper = std::fs::read_to_string(new_greet.join("bin/greet-wrapper")).unwrap();
    assert!(
        wrapper.starts_with(&format!("#!/bin/sh {}/bin/sbang\n", moved.display())),
        "{wrapper}"
    );
    let o = std::process::Command::new(new_greet.join("bin/greet-wrapper"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A second run changes nothing, with or without --from.
    let before = tree_digest(&moved);
    let v = json(&home.run(&["relocate", s(&moved), "--json"]));
    assert!(v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "unchanged"));
    let v = json(&home.run(&["relocate", s(&moved), "--from", s(&root), "--json"]));
    assert!(v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "unchanged"));
    assert_eq!(tree_digest(&moved), before);
    verify_ok(&home, &moved);
}

#[test]
fn shorter_or_equal_paths_always_relocate() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let start = path_of_len(base.path(), base.path().as_os_str().len() + 60);
    install_greet(&home, &start);
    let len = start.as_os_str().len();
    let mut here = start.clone();
    // Same length, then 1, 3, 7, 8 and 30 characters shorter.
    for (i, shorter) in [0usize, 1, 3, 7, 8, 30].into_iter().enumerate() {
        let sub = base.path().join(format!("s{i}"));
        std::fs::create_dir(&sub).unwrap();
        let target_len = len - shorter;
        let mut next = sub.join("x");
        let pad = target_len - next.as_os_str().len();
        next = sub.join("x".repeat(pad + 1));
        assert_eq!(next.as_os_str().len(), target_len);
        std::fs::rename(&here, &next).unwrap();
        let o = home.run(&["relocate", s(&next), "--json"]);
        let v = json(&o);
        assert_eq!(v["from"], s(&here), "step {i}");
        verify_ok(&home, &next);
        let g = prefix_of(&next, "greet");
        let o = std::process::Command::new(g.join("bin/greet"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "step {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        check_greet_runs(&String::from_utf8_lossy(&o.stdout), &g);
        here = next;
    }
}

#[test]
fn relocate_refuses_bad_input_and_changes_nothing() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();

    // No receipts: a clear error, nothing created.
    let empty = base.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = home.run(&["relocate", s(&empty), "--from", "/somewhere"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no sf-cache install receipts"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let o = home.run(&["relocate", s(&base.path().join("missing"))]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));

    let root = base.path().join("r");
    install_greet(&home, &root);

    // A longer path: refused before anything is written, with the length that works.
    let long = path_of_len(base.path(), root.as_os_str().len() + 40);
    std::fs::rename(&root, &long).unwrap();
    let before = tree_digest(&long);
    let o = home.run(&["relocate", s(&long)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("at most {} characters", root.as_os_str().len())),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(tree_digest(&long), before);

    // A wrong --from: usage error naming the recorded place; nothing changed.
    let back = base.path().join("b");
    std::fs::rename(&long, &back).unwrap();
    let o = home.run(&["relocate", s(&back), "--from", "/not/where/it/was"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("--from {}", root.display())),
        "{}",
        stderr(&o)
    );
    assert_eq!(tree_digest(&back), before);

    // The right one works.
    json(&home.run(&["relocate", s(&back), "--from", s(&root), "--json"]));
    verify_ok(&home, &back);
}

/// A synthetic installed "slurm" (bin, sbin, lib with a shared object, man pages, pkg-config),
/// published into a local cache and installed from it like any package.
fn install_synthetic_slurm(home: &Home, base: &Path, root: &Path) {
    let prefixes = synthetic_store(base, &["slurm".to_string()]);
    let p = &prefixes[0];
    for d in ["bin", "sbin", "lib/pkgconfig", "share/man/man1"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for (rel, text) in [
        ("bin/sinfo", "#!/bin/sh\necho \"sinfo from $0\"\n"),
        ("bin/scontrol", "#!/bin/sh\necho \"scontrol from $0\"\n"),
        ("sbin/slurmctld", "#!/bin/sh\necho \"slurmctld from $0\"\n"),
    ] {
        std::fs::write(p.join(rel), text).unwrap();
        std::fs::set_permissions(p.join(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(p.join("lib/libslurm.so.42"), b"not really a library").unwrap();
    std::fs::write(
        p.join("lib/pkgconfig/slurm.pc"),
        format!("prefix={}\n", p.display()),
    )
    .unwrap();
    std::fs::write(p.join("share/man/man1/sinfo.1"), ".TH SINFO 1\n").unwrap();
    let cache = base.join("cache");
    let o = home.run(&["publish", s(p), "--to", s(&cache), "--unsigned"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = home.run(&[
        "--allow-unsigned",
        "install",
        "slurm",
        "--mirror",
        s(&cache),
        "--root",
        s(root),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn slurm_module_loads_with_lmod_and_keeps_one_workload_manager() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root");
    install_synthetic_slurm(&home, base.path(), &root);
    let mods = base.path().join("modules");
    let v = json(&home.run(&[
        "module",
        "slurm",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
        "--json",
    ]));
    let version = v[0]["version"].as_str().unwrap().to_string();
    let slurm = prefix_of(&root, "slurm");
    let show = "echo \"SLURM_ROOT=$SLURM_ROOT\"\necho \"SLURM_CONF=${SLURM_CONF-unset}\"\necho \"SINFO=$(command -v sinfo)\"\necho \"CTLD=$(command -v slurmctld)\"\necho \"MANPATH=$MANPATH\"\necho \"LD=$LD_LIBRARY_PATH\"\necho \"PKG=$PKG_CONFIG_PATH\"\necho \"CMAKE=$CMAKE_PREFIX_PATH\"\n";

    // Load: PATH (bin and sbin), MANPATH, LD_LIBRARY_PATH, PKG_CONFIG_PATH, CMAKE_PREFIX_PATH,
    // SLURM_ROOT, SLURM_CONF's default; unload takes it all back.
    let script = format!(
        "set -e\nunset SLURM_CONF\nmodule use {m}\nmodule load slurm\n{show}sinfo\nmodule unload slurm\necho AFTER\n{show}",
        m = s(&mods)
    );
    let out = ok(&lmod(&script, &[]));
    let (loaded, after) = out.split_once("AFTER\n").unwrap();
    let v = vars(loaded);
    assert_eq!(v["SLURM_ROOT"], s(&slurm));
    assert_eq!(v["SLURM_CONF"], "/etc/slurm/slurm.conf");
    assert_eq!(v["SINFO"], s(&slurm.join("bin/sinfo")));
    assert_eq!(v["CTLD"], s(&slurm.join("sbin/slurmctld")));
    assert!(
        v["MANPATH"].starts_with(s(&slurm.join("share/man"))),
        "{}",
        v["MANPATH"]
    );
    assert!(v["LD"].starts_with(s(&slurm.join("lib"))), "{}", v["LD"]);
    assert!(
        v["PKG"].starts_with(s(&slurm.join("lib/pkgconfig"))),
        "{}",
        v["PKG"]
    );
    assert!(v["CMAKE"].starts_with(s(&slurm)), "{}", v["CMAKE"]);
    assert!(loaded.contains(&format!("sinfo from {}", slurm.join("bin/sinfo").display())));
    let a = vars(after);
    assert_eq!(a["SLURM_ROOT"], "");
    assert_eq!(a["SLURM_CONF"], "unset");
    assert_eq!(a["SINFO"], "");

    // A SLURM_CONF set before loading is kept, and still there after unloading.
    let script = format!(
        "set -e\nmodule use {m}\nmodule load slurm\n{show}module unload slurm\necho AFTER\n{show}",
        m = s(&mods)
    );
    let out = ok(&lmod(&script, &[("SLURM_CONF", "/site/slurm.conf")]));
    let (loaded, after) = out.split_once("AFTER\n").unwrap();
    assert_eq!(vars(loaded)["SLURM_CONF"], "/site/slurm.conf");
    assert_eq!(vars(after)["SLURM_CONF"], "/site/slurm.conf");

    // SLURM_INSTALL_PREFIX points the module at another copy of the tree.
    let copy = base.path().join("elsewhere");
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(&slurm)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success());
    let script = format!(
        "set -e\nmodule use {m}\nmodule load slurm/{version}\n{show}sinfo\n",
        m = s(&mods)
    );
    let out = ok(&lmod(&script, &[("SLURM_INSTALL_PREFIX", s(&copy))]));
    let v = vars(&out);
    assert_eq!(v["SLURM_ROOT"], s(&copy));
    assert_eq!(v["SINFO"], s(&copy.join("bin/sinfo")));
    assert_eq!(v["CTLD"], s(&copy.join("sbin/slurmctld")));
    assert!(out.contains(&format!("sinfo from {}", copy.join("bin/sinfo").display())));

    // family("workloadmanager"): another workload manager's module replaces Slurm, or is
    // refused when Lmod is told not to swap.
    std::fs::create_dir_all(mods.join("otherwlm")).unwrap();
    std::fs::write(
        mods.join("otherwlm/1.0.lua"),
        "family(\"workloadmanager\")\nsetenv(\"OTHERWLM\", \"loaded\")\n",
    )
    .unwrap();
    let script = format!(
        "set -e\nmodule use {m}\nmodule load slurm\nmodule load otherwlm\necho \"SLURM_ROOT=$SLURM_ROOT\"\necho \"OTHERWLM=$OTHERWLM\"\necho \"LOADED=$LOADEDMODULES\"\n",
        m = s(&mods)
    );
    let out = ok(&lmod(&script, &[]));
    let v = vars(&out);
    assert_eq!(v["SLURM_ROOT"], "", "{out}");
    assert_eq!(v["OTHERWLM"], "loaded");
    assert_eq!(v["LOADED"], "otherwlm/1.0");
    let script = format!(
        "module use {m}\nmodule load slurm || exit 9\nif module load otherwlm; then echo SWAPPED; fi\necho \"SLURM_ROOT=$SLURM_ROOT\"\necho \"OTHERWLM=${{OTHERWLM-unset}}\"\n",
        m = s(&mods)
    );
    let o = lmod(&script, &[("LMOD_AUTO_SWAP", "no")]);
    let out = ok(&o);
    assert!(!out.contains("SWAPPED"), "{out}");
    let v = vars(&out);
    assert_eq!(v["SLURM_ROOT"], s(&slurm));
    assert_eq!(v["OTHERWLM"], "unset");
    assert!(stderr(&o).contains("workloadmanager"), "{}", stderr(&o));
}

fn gpg_verify(sig: &Path, file: &Path) -> Output {
    let gh = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("gpg")
        .args(["--batch", "--homedir", s(gh.path()), "--import"])
        .arg(fx(PUBLIC))
        .output()
        .expect("gpg is needed by the tests (apt-get install gnupg)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::process::Command::new("gpg")
        .args(["--batch", "--homedir", s(gh.path()), "--verify"])
        .arg(sig)
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn export_round_trip_extract_relocate_load_verify_and_signature() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("the-original-install-root");
    install_greet(&home, &root);
    let out_file = base.path().join("out/greet.tar.gz");
    let v = json(&home.run(&[
        "export",
        "greet",
        "--root",
        s(&root),
        "-o",
        s(&out_file),
        "--key",
        s(&fx(SECRET)),
        "--json",
    ]));
    assert_eq!(v["root"], s(&root));
    let names: Vec<&str> = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["libgreet", "greet"]);
    assert_eq!(v["modules"], serde_json::json!(["modules/greet/2.1.0.lua"]));
    let sig = base.path().join("out/greet.tar.gz.asc");
    assert_eq!(v["signature"], s(&sig));
    // Only the finished files are in the output directory.
    let mut left: Vec<String> = std::fs::read_dir(base.path().join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["greet.tar.gz", "greet.tar.gz.asc"]);
    {
        use sha2::Digest;
        let sum = hex::encode(sha2::Sha256::digest(std::fs::read(&out_file).unwrap()));
        assert_eq!(v["sha256"], sum.as_str());
    }

    // The signature verifies with real gpg, and fails for a changed byte.
    let o = gpg_verify(&sig, &out_file);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = base.path().join("bad.tar.gz");
    std::fs::copy(&out_file, &bad).unwrap();
    flip_byte(&bad, 100);
    assert!(!gpg_verify(&sig, &bad).status.success());

    // Extract elsewhere (a shorter path) with the system tar.
    let dest = base.path().join("x");
    std::fs::create_dir(&dest).unwrap();
    let o = std::process::Command::new("tar")
        .arg("-xpzf")
        .arg(&out_file)
        .arg("-C")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let record: Value =
        serde_json::from_slice(&std::fs::read(dest.join("sf-cache-export.json")).unwrap()).unwrap();
    assert_eq!(record["root"], s(&root));
    // Hardlinks came through as hardlinks.
    {
        use std::os::unix::fs::MetadataExt;
        let g = prefix_of(&dest, "greet");
        let a = std::fs::metadata(g.join("share/greet/paths.txt")).unwrap();
        let b = std::fs::metadata(g.join("share/greet/paths-hardlink.txt")).unwrap();
        assert_eq!(a.ino(), b.ino());
    }

    // relocate without --from: the export says where it came from.
    let v = json(&home.run(&["relocate", s(&dest), "--json"]));
    assert_eq!(v["from"], s(&root));
    assert_eq!(
        v["modules"],
        serde_json::json!([s(&dest.join("modules/greet/2.1.0.lua"))])
    );
    verify_ok(&home, &dest);
    let record: Value =
        serde_json::from_slice(&std::fs::read(dest.join("sf-cache-export.json")).unwrap()).unwrap();
    assert_eq!(record["root"], s(&dest));
    let paths =
        std::fs::read_to_string(prefix_of(&dest, "greet").join("share/greet/paths.txt")).unwrap();
    assert!(paths.contains(&format!(
        "libgreet used from {}",
        prefix_of(&dest, "libgreet").display()
    )));
    assert!(!paths.contains(s(&root)), "{paths}");

    // module load from the extracted tree: greet runs from the view.
    let view = dest.join("view");
    let script = format!(
        "set -e\nmodule use {}\nmodule load greet\necho \"WHICH=$(command -v greet)\"\ngreet\n",
        s(&dest.join("modules"))
    );
    let out = ok(&lmod(&script, &[]));
    let (first, rest) = out.split_once('\n').unwrap();
    assert_eq!(first, format!("WHICH={}", view.join("bin/greet").display()));
    check_greet_runs(rest, &prefix_of(&dest, "greet"));
    // … and with the variable set, as the Slurm Factory tarballs are used.
    let out = ok(&lmod(&script, &[("GREET_INSTALL_PREFIX", s(&view))]));
    assert!(out.starts_with(&format!("WHICH={}\n", view.join("bin/greet").display())));

    // The source root is untouched by the export (no view or modules added there).
    assert!(!root.join("view").exists() && !root.join("modules").exists());

    // Without --key a stale signature is removed rather than left beside a new tarball.
    json(&home.run(&[
        "export",
        "greet",
        "--root",
        s(&root),
        "-o",
        s(&out_file),
        "--json",
    ]));
    assert!(!sig.exists());
}

#[test]
fn export_errors() {
    let home = Home::trusting();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let root = base.path().join("root");
    install_greet(&home, &root);
    let out_file = base.path().join("o.tar.gz");
    // Nothing matches.
    let o = home.run(&["export", "nosuch", "--root", s(&root), "-o", s(&out_file)]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    // A bad view name.
    let o = home.run(&[
        "export",
        "greet",
        "--root",
        s(&root),
        "-o",
        s(&out_file),
        "--view",
        "../up",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // A key that cannot sign (a public key): refused before writing.
    let o = home.run(&[
        "export",
        "greet",
        "--root",
        s(&root),
        "-o",
        s(&out_file),
        "--key",
        s(&fx(PUBLIC)),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!out_file.exists());
    let left: Vec<_> = std::fs::read_dir(base.path()).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "only the root: {left:?}");
}

/// A CPU and a GPU build of one Slurm release installed side by side: each has its own module
/// (`<version>` and `<version>-gpu`), `.modulerc.lua` makes the CPU one the default, the modules
/// say how Slurm was built, one swaps the other out, and a prefix without Slurm is refused.
#[test]
fn cpu_and_gpu_slurm_modules_side_by_side_under_lmod() {
    let home = Home::new();
    let base = tempfile::tempdir_in("/tmp").unwrap();
    let pkgs = spack_store_of(
        base.path(),
        &[
            Pkg::new("cpu", "slurm", "25-11-6-1")
                .gcc("13.4.0")
                .variant("nvml", false)
                .variant("rsmi", false),
            Pkg::new("gpu", "slurm", "25-11-6-1")
                .gcc("13.4.0")
                .variant("nvml", true)
                .variant("rsmi", true),
        ],
    );
    let cache = base.path().join("cache");
    let o = home.run(&[
        "publish",
        s(&pkgs["cpu"].prefix),
        s(&pkgs["gpu"].prefix),
        "--to",
        s(&cache),
        "--unsigned",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = base.path().join("root");
    for k in ["cpu", "gpu"] {
        let o = home.run(&[
            "--allow-unsigned",
            "install",
            &format!("/{}", pkgs[k].hash),
            "--mirror",
            s(&cache),
            "--root",
            s(&root),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mods = base.path().join("modules");
    let v = json(&home.run(&[
        "module",
        "slurm",
        "--root",
        s(&root),
        "--module-dir",
        s(&mods),
        "--json",
    ]));
    let mut versions: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["25-11-6-1", "25-11-6-1-gpu"]);
    let rc = std::fs::read_to_string(mods.join("slurm/.modulerc.lua")).unwrap();
    assert!(
        rc.contains("module_version(\"slurm/25-11-6-1\", \"default\")"),
        "{rc}"
    );
    let cpu = root.join(format!("slurm-25-11-6-1-{}", pkgs["cpu"].hash));
    let gpu = root.join(format!("slurm-25-11-6-1-{}", pkgs["gpu"].hash));
    let show = "echo \"SLURM_ROOT=$SLURM_ROOT\"\necho \"TYPE=$SLURM_BUILD_TYPE\"\necho \"COMPILER=$SLURM_BUILD_COMPILER\"\necho \"TARGET=$SLURM_BUILD_TARGET\"\necho \"LOADED=$LOADEDMODULES\"\n";
    let script = format!(
        "set -e\nmodule use {m}\nmodule load slurm\n{show}echo SWAP\nmodule load slurm/25-11-6-1-gpu\n{show}",
        m = s(&mods)
    );
    let out = ok(&lmod(&script, &[]));
    let (cpu_out, gpu_out) = out.split_once("SWAP\n").unwrap();
    let c = vars(cpu_out);
    assert_eq!(c["SLURM_ROOT"], s(&cpu), "{out}");
    assert_eq!(c["TYPE"], "cpu");
    assert_eq!(c["COMPILER"], "gcc@13.4.0");
    assert_eq!(c["TARGET"], "x86_64");
    assert_eq!(c["LOADED"], "slurm/25-11-6-1");
    let g = vars(gpu_out);
    assert_eq!(g["SLURM_ROOT"], s(&gpu), "{out}");
    assert_eq!(g["TYPE"], "gpu");
    // One Slurm at a time.
    assert_eq!(g["LOADED"], "slurm/25-11-6-1-gpu", "{out}");

    // A prefix that holds no Slurm: Lmod refuses the load, saying what is missing.
    let o = lmod(
        &format!(
            "module use {}\nmodule load slurm\necho \"ROOT=${{SLURM_ROOT-unset}}\"\n",
            s(&mods)
        ),
        &[("SLURM_INSTALL_PREFIX", "/nonexistent/slurm")],
    );
    // Lmod wraps its messages: compare with the whitespace collapsed.
    let text = format!("{}{}", stdout(&o), stderr(&o))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains("no /nonexistent/slurm/bin/scontrol; set SLURM_INSTALL_PREFIX"),
        "{text}"
    );
    assert!(stdout(&o).contains("ROOT=unset"), "{text}");
}
