use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::store::{Store, StoreOptions};

fn node(name: &str, hash: &str, deps: &[(&str, &str, &[&str])]) -> serde_json::Value {
    let deps: Vec<_> = deps
        .iter()
        .map(|(n, h, t)| json!({"name": n, "hash": h, "parameters": {"deptypes": t, "virtuals": []}}))
        .collect();
    json!({
        "name": name, "version": "1.0",
        "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"},
        "namespace": "builtin", "parameters": {"build_system": "generic"},
        "dependencies": deps,
        "annotations": {"original_specfile_version": 5},
        "hash": hash,
    })
}

fn h(c: char) -> String {
    std::iter::repeat_n(c, 32).collect()
}

/// A Spack-like store: `a` links `b`, `b` links the external `e`, `a` build-depends on `c`.
fn spack_store(dir: &Path) -> (PathBuf, PathBuf) {
    let store = dir.join("store");
    let (ha, hb, hc, he) = (h('a'), h('b'), h('c'), h('e'));
    let mut ext = node("e", &he, &[]);
    ext["external"] = json!({"path": "/usr", "module": null});
    let a_nodes = vec![
        node("a", &ha, &[("b", &hb, &["link"]), ("c", &hc, &["build"])]),
        node("b", &hb, &[("e", &he, &["link", "run"])]),
        node("c", &hc, &[]),
        ext.clone(),
    ];
    let b_nodes = vec![node("b", &hb, &[("e", &he, &["link", "run"])]), ext];
    let pa = store.join(format!("linux-x86_64/a-1.0-{ha}"));
    let pb = store.join(format!("linux-x86_64/b-1.0-{hb}"));
    for (p, nodes) in [(&pa, a_nodes), (&pb, b_nodes)] {
        std::fs::create_dir_all(p.join(".spack")).unwrap();
        std::fs::create_dir_all(p.join("lib")).unwrap();
        std::fs::write(
            p.join(".spack/spec.json"),
            serde_json::to_vec(&json!({"spec": {"_meta": {"version": 5}, "nodes": nodes}}))
                .unwrap(),
        )
        .unwrap();
        std::fs::write(p.join("lib/x.txt"), format!("I live in {}\n", p.display())).unwrap();
    }
    std::fs::create_dir_all(store.join(".spack-db")).unwrap();
    let db = json!({"database": {"version": "8", "installs": {
        ha.clone(): {"spec": {}, "path": pa.to_str().unwrap(), "installed": true},
        hb.clone(): {"spec": {}, "path": pb.to_str().unwrap(), "installed": true},
    }}});
    std::fs::write(
        store.join(".spack-db/index.json"),
        serde_json::to_vec(&db).unwrap(),
    )
    .unwrap();
    (pa, pb)
}

#[test]
fn finds_a_spack_store_and_the_closure() {
    let t = tempfile::tempdir().unwrap();
    let (pa, pb) = spack_store(t.path());
    let mut roots = Vec::new();
    let a = load_source(&pa, &mut roots).unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].kind, SourceKind::Spack);
    assert_eq!(roots[0].dir, t.path().join("store"));
    assert!(!roots[0].is_padded());
    assert_eq!(roots[0].prefix_of(&h('b')), Some(pb.as_path()));
    // Link deps only, externals and build deps left out.
    let closure: Vec<&str> = a.closure().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(closure, ["b"]);
    let mut w = Vec::new();
    let inputs = buildinfo_inputs(&a, &roots[0], &mut w).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(inputs.buildpath, t.path().join("store").to_str().unwrap());
    assert_eq!(
        inputs.hash_to_prefix,
        vec![
            (h('a'), pa.to_str().unwrap().to_string()),
            (h('b'), pb.to_str().unwrap().to_string())
        ]
    );
    let b = load_source(&pb, &mut roots).unwrap();
    assert_eq!(roots.len(), 1, "same root reused");
    assert_eq!(dependency_order(&[a.clone(), b.clone()]), vec![1, 0]);
    assert_eq!(dependency_order(&[b, a]), vec![0, 1]);
}

#[test]
fn not_a_prefix_and_no_root() {
    let t = tempfile::tempdir().unwrap();
    let mut roots = Vec::new();
    let e = load_source(t.path(), &mut roots).unwrap_err();
    assert!(e.to_string().contains(".spack/spec.json"), "{e}");
    let (pa, _) = spack_store(t.path());
    std::fs::remove_dir_all(t.path().join("store/.spack-db")).unwrap();
    let e = load_source(&pa, &mut roots).unwrap_err();
    assert!(matches!(e, PublishError::NoRoot { .. }), "{e}");
}

#[tokio::test]
async fn missing_deps_are_named_and_with_deps_adds_them() {
    let t = tempfile::tempdir().unwrap();
    let (pa, _) = spack_store(t.path());
    let dest = t.path().join("cache");
    let store = Store::open(dest.to_str().unwrap(), &StoreOptions::default()).unwrap();
    let writer = CacheWriter::new(store);
    let opts = PublishOptions::default();
    let e = publish(&writer, std::slice::from_ref(&pa), &opts)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("b@1.0 /bbbbbbb") && msg.contains("--with-deps"),
        "{msg}"
    );
    assert!(!dest.join("blobs").exists(), "nothing written on failure");

    let opts = PublishOptions {
        with_deps: true,
        ..Default::default()
    };
    let r = publish(&writer, std::slice::from_ref(&pa), &opts)
        .await
        .unwrap();
    assert_eq!(r.published, 2);
    assert!(r.entries.iter().any(|e| e.name == "b" && e.dependency));
    assert!(!r.signed && r.warnings.iter().any(|w| w.contains("not padded")));
    let idx = r.index.unwrap();
    assert_eq!(idx.in_buildcache, 2);
    // Again: `a` skipped (`b` is in the destination now, so not pulled in), index unchanged.
    let r2 = publish(&writer, std::slice::from_ref(&pa), &opts)
        .await
        .unwrap();
    assert_eq!((r2.published, r2.skipped), (0, 1));
    assert_eq!(r2.index.unwrap().blob, idx.blob);
    // And `a` alone now finds `b` in the destination.
    let r3 = publish(
        &writer,
        std::slice::from_ref(&pa),
        &PublishOptions {
            force: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((r3.published, r3.entries.len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_index_then_update_index_and_concurrent_index_merges() {
    let t = tempfile::tempdir().unwrap();
    let (pa, pb) = spack_store(t.path());
    let dest = t.path().join("cache");
    let store = Store::open(dest.to_str().unwrap(), &StoreOptions::default()).unwrap();
    let writer = CacheWriter::new(store);
    let opts = PublishOptions {
        no_index: true,
        ..Default::default()
    };
    let r = publish(&writer, &[pa.clone(), pb.clone()], &opts)
        .await
        .unwrap();
    assert!(r.index.is_none());
    assert!(!dest.join(layout::V3_INDEX_MANIFEST).exists());
    let s = writer.update_index().await.unwrap();
    assert_eq!(s.in_buildcache, 2);

    // Many in-process writers adding different DAGs at once: none is lost.
    std::fs::remove_file(dest.join(layout::V3_INDEX_MANIFEST)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            let hash: String = std::iter::repeat_n((b'a' + i) as char, 31)
                .chain(std::iter::once('z'))
                .collect();
            let n = node(&format!("n{i}"), &hash, &[]);
            w.modify_index(|ib| ib.add_dag(std::slice::from_ref(&n), true))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ib = writer.read_index().await.unwrap().unwrap();
    assert_eq!(ib.records().iter().filter(|r| r.3).count(), 8);
}
