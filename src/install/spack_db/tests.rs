use super::*;

fn node(name: &str, hash: &str, deps: &[(&str, &str, &[&str])]) -> Value {
    json!({
        "name": name, "version": "1.0",
        "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"},
        "namespace": "builtin", "parameters": {},
        "dependencies": deps.iter().map(|(n, h, types)| json!({
            "name": n, "hash": h, "parameters": {"deptypes": types, "virtuals": []}
        })).collect::<Vec<_>>(),
        "hash": hash,
    })
}

fn receipt(name: &str, hash: &str, prefix: &Path, explicit: bool, at: u64, spec: Value) -> Receipt {
    serde_json::from_value(json!({
        "format": 1, "name": name, "version": "1.0", "hash": hash,
        "prefix": prefix.display().to_string(), "mirror": "m", "layout": "v3",
        "metadata_path": "x", "metadata_digest": "x", "tarball_digest": "sha256:x",
        "signature_status": "signed", "signature_fingerprint": null,
        "dependencies": [], "explicit": explicit, "installed_at_unix": at, "spec": spec,
    }))
    .unwrap()
}

fn install(root: &Path, name: &str, hash: &str, nodes: &[Value], format: u64) -> PathBuf {
    let p = root.join(format!("{name}-1.0-{hash}"));
    std::fs::create_dir_all(p.join(".spack")).unwrap();
    std::fs::write(
        p.join(".spack/spec.json"),
        json!({"spec": {"_meta": {"version": format}, "nodes": nodes}}).to_string(),
    )
    .unwrap();
    p
}

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccc";
const E: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

/// app (explicit) → lib (link), compiler-ish `c` (build only, never installed), external `e`.
fn sample(root: &Path) -> Vec<(PathBuf, Receipt)> {
    let mut ext = node("ext", E, &[]);
    ext["external"] = json!({"path": "/usr", "module": null, "extra_attributes": {}});
    let lib = node("lib", A, &[("ext", E, &["link"])]);
    let app = node(
        "app",
        B,
        &[
            ("lib", A, &["link", "run"]),
            ("cc", C, &["build"]),
            ("ext", E, &["link"]),
        ],
    );
    let cc = node("cc", C, &[]);
    let all = vec![app.clone(), lib.clone(), cc, ext.clone()];
    let pa = install(root, "lib", A, &[lib.clone(), ext], 5);
    let pb = install(root, "app", B, &all, 5);
    vec![
        (pa.clone(), receipt("lib", A, &pa, false, 1000, lib)),
        (pb.clone(), receipt("app", B, &pb, true, 2000, app)),
    ]
}

#[test]
fn records_every_node_of_the_installed_dags_as_spack_does() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let installed = sample(root);
    let proj = Projection::default();
    let (db, s) = build(root, &proj, &installed);
    assert_eq!(db["database"]["version"], "8");
    assert_eq!(
        (s.records, s.installed, s.externals, s.missing),
        (4, 2, 1, 1)
    );
    let i = &db["database"]["installs"];
    // Installed: their prefixes, explicit as the receipts say, the receipts' times.
    assert_eq!(i[B]["installed"], true);
    assert_eq!(i[B]["explicit"], true);
    assert_eq!(i[B]["path"], installed[1].0.display().to_string());
    assert_eq!(i[B]["installation_time"], 2000.0);
    assert_eq!(i[A]["explicit"], false);
    assert_eq!(i[A]["in_buildcache"], false);
    // The spec is the node as the spec file has it (dependencies by hash, its own hash).
    assert_eq!(i[B]["spec"]["hash"], B);
    assert_eq!(i[B]["spec"]["dependencies"].as_array().unwrap().len(), 3);
    // External: installed at its external prefix; build-only: not installed, at the prefix the
    // projection would give it.
    assert_eq!(
        (&i[E]["installed"], &i[E]["path"]),
        (&json!(true), &json!("/usr"))
    );
    assert_eq!(i[C]["installed"], false);
    let would_be = i[C]["path"].as_str().unwrap();
    assert!(
        would_be.starts_with(&root.display().to_string()) && would_be.ends_with(C),
        "{would_be}"
    );
    // ref_count: how many records depend on each.
    let rc = |h: &str| i[h]["ref_count"].as_u64().unwrap();
    assert_eq!((rc(B), rc(A), rc(C), rc(E)), (0, 1, 1, 2));
}

#[test]
fn written_atomically_with_spack_lock_and_verifier_and_read_back() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let installed = sample(root);
    let proj = Projection::default();
    let s = write(root, &proj, &installed).unwrap();
    assert_eq!(s.records, 4);
    for f in [INDEX_FILE, LOCK_FILE, VERIFIER_FILE] {
        assert!(root.join(DB_DIR).join(f).is_file(), "{f}");
    }
    let v1 = std::fs::read(root.join(DB_DIR).join(VERIFIER_FILE)).unwrap();
    let installs = read(root).unwrap();
    assert_eq!(installs.len(), 4);
    assert_eq!(installs[B]["spec"]["name"], "app");
    // After an uninstall of app: lib stays, app and what only it needed go.
    write(root, &proj, &installed[..1]).unwrap();
    let installs = read(root).unwrap();
    let mut keys: Vec<&String> = installs.keys().collect();
    keys.sort();
    assert_eq!(keys, [A, E]);
    assert_eq!(installs[E]["ref_count"], 1);
    assert_ne!(
        std::fs::read(root.join(DB_DIR).join(VERIFIER_FILE)).unwrap(),
        v1
    );
    // No temporary left behind.
    let names: Vec<String> = std::fs::read_dir(root.join(DB_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // A damaged index is named.
    std::fs::write(
        root.join(DB_DIR).join(INDEX_FILE),
        "{\"database\": {\"version\": \"9\"}}",
    )
    .unwrap();
    assert!(read(root).unwrap_err().to_string().contains("not 7 or 8"));
}

#[test]
fn specs_older_than_format_5_make_a_version_7_database() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let mut old = node("old", A, &[]);
    old["compiler"] = json!({"name": "gcc", "version": "12.2.0"});
    let p = install(root, "old", A, std::slice::from_ref(&old), 4);
    let installed = vec![(p.clone(), receipt("old", A, &p, true, 5, old))];
    let (db, s) = build(root, &Projection::default(), &installed);
    assert_eq!(s.version, "7");
    assert_eq!(db["database"]["version"], "7");
}
