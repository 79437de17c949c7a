use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::install::receipt::{Receipt, RECEIPT_FORMAT};

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/modules/golden")
        .join(name);
    if std::env::var_os("SF_CACHE_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with SF_CACHE_UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs (SF_CACHE_UPDATE_GOLDEN=1 rewrites it after a deliberate change)",
        path.display()
    );
}

fn context(name: &str, prefix: &str, paths: &[(&str, &[&str])], cmake: bool) -> ModuleContext {
    let mut p: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for var in [
        "PATH",
        "MANPATH",
        "LD_LIBRARY_PATH",
        "PKG_CONFIG_PATH",
        "CPATH",
    ] {
        p.insert(var.into(), Vec::new());
    }
    for (var, dirs) in paths {
        p.insert(
            var.to_string(),
            dirs.iter().map(|d| d.to_string()).collect(),
        );
    }
    ModuleContext {
        name: name.into(),
        version: "25.11.0".into(),
        hash: "abcdefghijklmnopqrstuvwxyz234567".into(),
        short_hash: "abcdefg".into(),
        arch: Some("linux-ubuntu24.04-x86_64".into()),
        prefix: prefix.into(),
        prefix_var: prefix_variable(name),
        root_var: root_variable(name),
        view: false,
        paths: p,
        cmake_prefix: cmake,
        default_conf: DEFAULT_SLURM_CONF.into(),
        build_compiler: Some("gcc@13.3.0".into()),
        build_target: Some("x86_64_v3".into()),
        build_type: "cpu".into(),
        module_version: "25.11.0".into(),
        generator: "sf-cache (test)".into(),
        template: String::new(),
    }
}

#[test]
fn slurm_module_golden() {
    let t = Templates::load(None).unwrap();
    let mut ctx = context(
        "slurm",
        "/opt/slurm/software/slurm-25.11.0-abcdefg",
        &[
            ("PATH", &["bin", "sbin"]),
            ("MANPATH", &["share/man"]),
            ("LD_LIBRARY_PATH", &["lib"]),
            ("PKG_CONFIG_PATH", &["lib/pkgconfig"]),
        ],
        true,
    );
    let text = t.render(&mut ctx).unwrap();
    golden("slurm.lua", &text);
    for needle in [
        "family(\"workloadmanager\")",
        "os.getenv(\"SLURM_INSTALL_PREFIX\")",
        "prepend_path(\"PATH\", pathJoin(prefix, \"sbin\"))",
        "setenv(\"SLURM_ROOT\", prefix)",
        "\"/etc/slurm/slurm.conf\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[test]
fn generic_module_golden_and_only_existing_paths() {
    let t = Templates::load(None).unwrap();
    let mut ctx = context(
        "py-foo-bar",
        "/opt/x/py-foo-bar-1.0-abcdefg",
        &[("PATH", &["bin"])],
        false,
    );
    let text = t.render(&mut ctx).unwrap();
    golden("generic.lua", &text);
    assert!(text.contains("os.getenv(\"PY_FOO_BAR_INSTALL_PREFIX\")"));
    assert!(!text.contains("LD_LIBRARY_PATH"));
    assert!(!text.contains("MANPATH"));
    assert!(!text.contains("CMAKE_PREFIX_PATH"));
    assert!(!text.contains("family("));
    assert_eq!(ctx.template, "templates/modules/generic.lua.j2 (built in)");
}

#[test]
fn variables_and_quoting() {
    assert_eq!(prefix_variable("slurm"), "SLURM_INSTALL_PREFIX");
    assert_eq!(prefix_variable("py-foo.bar"), "PY_FOO_BAR_INSTALL_PREFIX");
    assert_eq!(prefix_variable("7zip"), "_7ZIP_INSTALL_PREFIX");
    assert_eq!(root_variable("gcc-runtime"), "GCC_RUNTIME_ROOT");
    assert_eq!(templates::lua_quote("/a\"b\\c\n"), "\"/a\\\"b\\\\c\\n\"");
    assert_eq!(
        module_path(Path::new("/m"), "slurm", "25-11-0-1"),
        PathBuf::from("/m/slurm/25-11-0-1.lua")
    );
}

#[test]
fn override_directory_wins_file_by_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("generic.lua.j2"),
        "-- custom {{ name }} {{ prefix | lua }}\n",
    )
    .unwrap();
    let t = Templates::load(Some(dir.path())).unwrap();
    let mut ctx = context("greet", "/p", &[], false);
    assert_eq!(t.render(&mut ctx).unwrap(), "-- custom greet \"/p\"\n");
    // The embedded Slurm template still wins over an override of the generic one.
    let mut ctx = context("slurm", "/p", &[], false);
    assert!(t
        .render(&mut ctx)
        .unwrap()
        .contains("family(\"workloadmanager\")"));
    // A package's own template wins over everything.
    std::fs::write(dir.path().join("slurm.lua.j2"), "-- mine\n").unwrap();
    let t = Templates::load(Some(dir.path())).unwrap();
    let mut ctx = context("slurm", "/p", &[], false);
    assert_eq!(t.render(&mut ctx).unwrap(), "-- mine\n");
}

#[test]
fn broken_templates_are_reported_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("generic.lua.j2"), "{% if %}\n").unwrap();
    let e = Templates::load(Some(dir.path())).err().unwrap().to_string();
    assert!(e.contains("generic.lua.j2"), "{e}");
    // An undefined variable is an error, not an empty string.
    std::fs::write(dir.path().join("generic.lua.j2"), "{{ no_such_thing }}\n").unwrap();
    let t = Templates::load(Some(dir.path())).unwrap();
    let e = t
        .render(&mut context("greet", "/p", &[], false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("undefined"), "{e}");
    let e = Templates::load(Some(Path::new("/nonexistent/sf-cache-templates")))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/sf-cache-templates"), "{e}");
}

/// A fake install root with one package per `(name, hash, dirs)`.
fn fake_root(dir: &Path, pkgs: &[(&str, &str, &[&str])]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir.join(".sf-cache")).unwrap();
    std::fs::write(
        dir.join(".sf-cache/root.json"),
        br#"{"projection": "{name}-{version}-{hash}"}"#,
    )
    .unwrap();
    let mut out = Vec::new();
    for (name, hash, dirs) in pkgs {
        let p = dir.join(format!("{name}-1.0-{hash}"));
        for d in *dirs {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        if dirs.contains(&"lib") {
            std::fs::write(p.join(format!("lib/lib{name}.so")), b"x").unwrap();
        }
        let r = Receipt {
            format: RECEIPT_FORMAT,
            name: name.to_string(),
            version: "1.0".into(),
            hash: hash.to_string(),
            prefix: p.display().to_string(),
            mirror: "file:///m".into(),
            layout: "v3".into(),
            metadata_path: String::new(),
            metadata_digest: String::new(),
            tarball_digest: String::new(),
            signature_status: "good".into(),
            signature_fingerprint: None,
            dependencies: vec![],
            explicit: true,
            installed_at_unix: 0,
            spec: serde_json::json!({"name": name}),
        };
        r.write(&p, &[]).unwrap();
        out.push(p);
    }
    out
}

#[test]
fn write_modules_writes_atomically_and_resolves_hash_prefixes() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let prefixes = fake_root(
        &root,
        &[
            ("slurm", "aaaa1111", &["bin", "sbin", "lib"]),
            ("greet", "bbbb2222", &["bin"]),
            ("other", "bbbb3333", &["bin"]),
        ],
    );
    let mods = d.path().join("modules");
    let opts = ModuleOptions {
        module_dir: mods.clone(),
        templates_dir: None,
        view: None,
    };
    let w = write_modules(&root, &["aaaa".into(), "bbbb2222".into()], &opts).unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].path, mods.join("slurm/1.0.lua"));
    assert_eq!(w[0].prefix, prefixes[0]);
    assert_eq!(w[1].name, "greet");
    let slurm = std::fs::read_to_string(mods.join("slurm/1.0.lua")).unwrap();
    assert!(slurm.contains(&format!("prefix = \"{}\"", prefixes[0].display())));
    assert!(slurm.contains("prepend_path(\"LD_LIBRARY_PATH\", pathJoin(prefix, \"lib\"))"));
    let greet = std::fs::read_to_string(mods.join("greet/1.0.lua")).unwrap();
    assert!(greet.contains("GREET_INSTALL_PREFIX"));
    assert!(!greet.contains("LD_LIBRARY_PATH"));
    // No temporary files left beside them.
    let names: Vec<String> = std::fs::read_dir(mods.join("greet"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["1.0.lua"]);

    // A view: the module points at it.
    let view = d.path().join("view");
    let w = write_modules(
        &root,
        &["bbbb2".into()],
        &ModuleOptions {
            view: Some(view.clone()),
            ..opts
        },
    )
    .unwrap();
    assert_eq!(w[0].prefix, view);
    let greet = std::fs::read_to_string(mods.join("greet/1.0.lua")).unwrap();
    assert!(greet.contains(&format!("prefix = \"{}\"", view.display())));

    // Errors: ambiguous prefix, unknown hash, not a root.
    let opts = ModuleOptions {
        module_dir: mods.clone(),
        templates_dir: None,
        view: None,
    };
    let e = write_modules(&root, &["bbbb".into()], &opts).unwrap_err();
    assert!(matches!(e, ModulesError::Ambiguous { .. }), "{e}");
    let e = write_modules(&root, &["zzzz".into()], &opts).unwrap_err();
    assert!(matches!(e, ModulesError::NotInstalled { .. }), "{e}");
    let e = write_modules(d.path(), &["aaaa".into()], &opts).unwrap_err();
    assert!(matches!(e, ModulesError::NoRoot { .. }), "{e}");
}

#[test]
fn a_template_error_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fake_root(&root, &[("greet", "bbbb2222", &["bin"])]);
    let t = d.path().join("t");
    std::fs::create_dir(&t).unwrap();
    std::fs::write(t.join("generic.lua.j2"), "{{ nope }}").unwrap();
    let mods = d.path().join("modules");
    let e = write_modules(
        &root,
        &["bbbb".into()],
        &ModuleOptions {
            module_dir: mods.clone(),
            templates_dir: Some(t),
            view: None,
        },
    )
    .unwrap_err();
    assert!(matches!(e, ModulesError::Template { .. }), "{e}");
    assert!(!mods.exists());
}
