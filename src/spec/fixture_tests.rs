//! Tests against the real Spack-written fixture caches (read at test time).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{compiler_of, dag_hash, DepTypes, Query, Spec, SpecFile};

/// `$SF_FIXTURES`, else `CARGO_MANIFEST_DIR/../shared/fixtures`, else `/work/shared/fixtures`.
fn fixtures_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SF_FIXTURES") {
        return PathBuf::from(d);
    }
    let rel = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if rel.is_dir() {
        return rel;
    }
    PathBuf::from("/work/shared/fixtures")
}

/// The signed text of a clearsigned message (or the whole text when not clearsigned).
fn payload(text: &str) -> String {
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        return text.to_string();
    }
    let after_hash = text.find("\n\n").expect("blank line after armor headers") + 2;
    let end = text
        .find("-----BEGIN PGP SIGNATURE-----")
        .expect("signature block");
    text[after_hash..end].to_string()
}

fn blob_path(cache: &Path, digest: &str) -> PathBuf {
    cache.join("blobs/sha256").join(&digest[..2]).join(digest)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// (manifest file name, spec blob JSON) for every spec manifest of a v3 cache.
fn v3_spec_blobs(cache: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let spec_dir = cache.join("v3/manifests/spec");
    for pkg in std::fs::read_dir(&spec_dir).unwrap() {
        for f in std::fs::read_dir(pkg.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let manifest: Value = serde_json::from_str(&payload(&text)).unwrap();
            let entry = manifest["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["mediaType"] == "application/vnd.spack.spec.v5+json")
                .unwrap();
            let digest = entry["checksum"].as_str().unwrap();
            let raw = std::fs::read(blob_path(cache, digest)).unwrap();
            let json = if entry["compression"] == "gzip" {
                gunzip(&raw)
            } else {
                raw
            };
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, json));
        }
    }
    out.sort();
    out
}

#[derive(Deserialize)]
struct Db {
    database: DbInner,
}
#[derive(Deserialize)]
struct DbInner {
    version: String,
    installs: HashMap<String, Record>,
}
#[derive(Deserialize)]
struct Record {
    spec: Spec,
    #[allow(dead_code)]
    ref_count: u32,
    in_buildcache: bool,
}

fn db_format(version: &str) -> u32 {
    match version {
        "6" => 3,
        "7" => 4,
        "8" => 5,
        v => panic!("unexpected db version {v}"),
    }
}

/// Parse an index with the serde fast path and check every node's hash with the raw values.
/// Returns (specs by hash, count of reproduced hashes, count of None).
fn check_index(text: &str) -> (HashMap<String, Spec>, usize, usize) {
    let db: Db = serde_json::from_str(text).unwrap();
    let fmt = db_format(&db.database.version);
    let raw: Value = serde_json::from_str(text).unwrap();
    let mut specs = HashMap::new();
    let (mut ok, mut none) = (0, 0);
    for (hash, mut rec) in db.database.installs {
        rec.spec.finish(fmt);
        assert_eq!(rec.spec.hash, hash);
        let node = &raw["database"]["installs"][&hash]["spec"];
        // The Value path agrees with the fast path.
        assert_eq!(Spec::from_node(node, fmt).unwrap(), rec.spec);
        match dag_hash::recompute(node) {
            Some(h) => {
                assert_eq!(h, hash, "{} recomputed hash", rec.spec.name);
                ok += 1;
            }
            None => none += 1,
        }
        if rec.in_buildcache {
            assert!(rec.spec.external.is_none());
        }
        specs.insert(hash, rec.spec);
    }
    (specs, ok, none)
}

#[test]
fn v3_spec_blobs_parse_and_hashes_reproduce() {
    for cache in ["spack-v3", "spack-v3-unsigned"] {
        let cache = fixtures_dir().join(cache);
        let blobs = v3_spec_blobs(&cache);
        assert_eq!(blobs.len(), 3);
        for (manifest_name, json) in blobs {
            let f = SpecFile::parse(&json).unwrap();
            assert_eq!(f.format_version, 5);
            assert_eq!(f.buildcache_layout_version, Some(2));
            assert_eq!(f.binary_cache_checksum, None);
            let root = f.root();
            assert_eq!(
                manifest_name,
                format!(
                    "{}-{}-{}.spec.manifest.json",
                    root.name, root.version, root.hash
                )
            );
            assert_eq!(f.nodes.len(), f.raw_nodes.len());
            for (node, raw) in f.nodes.iter().zip(&f.raw_nodes) {
                assert_eq!(node.format_version, 5);
                assert_eq!(
                    dag_hash::recompute(raw).as_deref(),
                    Some(node.hash.as_str()),
                    "{manifest_name}: {}",
                    node.name
                );
                assert_eq!(
                    node.arch.as_ref().unwrap().to_string(),
                    "linux-debian12-x86_64"
                );
            }
            // Compiler of native v5 nodes: the build dependency providing `c`.
            if root.name != "compiler-wrapper" {
                let lookup = |h: &str| f.find(h);
                let c = compiler_of(root, &lookup).unwrap();
                assert_eq!(c.to_string(), "gcc@12.2.0");
                for q in [
                    "%gcc@12.2.0",
                    "%gcc@12",
                    "%gcc",
                    "@1:3 platform=linux target=x86_64",
                ] {
                    assert!(Query::parse(q).unwrap().matches(root, &lookup), "{q}");
                }
                assert!(!Query::parse("%gcc@13").unwrap().matches(root, &lookup));
            }
        }
    }
}

#[test]
fn v3_index_parses_and_hashes_reproduce() {
    let cache = fixtures_dir().join("spack-v3");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(cache.join("v3/manifests/index/index.manifest.json")).unwrap(),
    )
    .unwrap();
    let entry = &manifest["data"][0];
    assert_eq!(entry["mediaType"], "application/vnd.spack.db.v8+json");
    let text =
        std::fs::read_to_string(blob_path(&cache, entry["checksum"].as_str().unwrap())).unwrap();
    let (specs, ok, none) = check_index(&text);
    assert_eq!(specs.len(), 7);
    assert_eq!((ok, none), (7, 0), "all v5 index nodes reproduce");
    let greet = specs.values().find(|s| s.name == "greet").unwrap();
    assert_eq!(greet.hash, "pgvza7iamblnpepta3jh2thtyfktejqr");
    assert_eq!(greet.format_version, 5);
    let libgreet = greet
        .dependencies
        .iter()
        .find(|d| d.name == "libgreet")
        .unwrap();
    assert_eq!(libgreet.deptypes, DepTypes::LINK_RUN);
    let gcc = specs.values().find(|s| s.name == "gcc").unwrap();
    assert_eq!(gcc.external.as_ref().unwrap().path.as_deref(), Some("/usr"));
    let lookup = |h: &str| specs.get(h);
    assert!(Query::parse("greet@2.1%gcc@12.2.0")
        .unwrap()
        .matches(greet, &lookup));
}

#[test]
fn v2_spec_files_parse_and_hashes_reproduce() {
    let dir = fixtures_dir().join("spack-v2/build_cache");
    let mut n = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        let fname = path.file_name().unwrap().to_string_lossy().into_owned();
        if !fname.ends_with(".spec.json.sig") {
            continue;
        }
        n += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(matches!(
            SpecFile::parse(text.as_bytes()),
            Err(super::SpecError::Clearsigned)
        ));
        let f = SpecFile::parse(payload(&text).as_bytes()).unwrap();
        assert_eq!(f.format_version, 4);
        assert_eq!(f.buildcache_layout_version, Some(2));
        let (algo, sum) = f.binary_cache_checksum.clone().unwrap();
        assert_eq!(algo, "sha256");
        assert_eq!(sum.len(), 64);
        let root = f.root();
        assert!(fname.ends_with(&format!(
            "-{}-{}-{}.spec.json.sig",
            root.name, root.version, root.hash
        )));
        assert_eq!(root.compiler.as_ref().unwrap().to_string(), "gcc@12.2.0");
        for (node, raw) in f.nodes.iter().zip(&f.raw_nodes) {
            assert_eq!(node.format_version, 4);
            assert_eq!(
                dag_hash::recompute(raw).as_deref(),
                Some(node.hash.as_str()),
                "{fname}: {}",
                node.name
            );
        }
        let none = |_: &str| -> Option<&Spec> { None };
        assert!(Query::parse("%gcc@12.2.0 arch=linux-debian12-x86_64")
            .unwrap()
            .matches(root, &none));
    }
    assert_eq!(n, 2);
}

#[test]
fn v2_index_parses_and_hashes_reproduce() {
    let text =
        std::fs::read_to_string(fixtures_dir().join("spack-v2/build_cache/index.json")).unwrap();
    let (specs, ok, none) = check_index(&text);
    assert_eq!(specs.len(), 4);
    assert_eq!((ok, none), (4, 0), "all format-4 index nodes reproduce");
    for s in specs.values() {
        assert_eq!(s.format_version, 4);
        assert_eq!(s.compiler.as_ref().unwrap().to_string(), "gcc@12.2.0");
    }
    let greet = specs.values().find(|s| s.name == "greet").unwrap();
    assert_eq!(greet.hash, "ruqirndwo36kjwhzknomdzk2br25xuso");
}

/// The serde fast path handles a 50 000-node index quickly (generous bound for debug builds).
#[test]
fn fast_path_50k_nodes() {
    let cache = fixtures_dir().join("spack-v3");
    let blobs = v3_spec_blobs(&cache);
    let (_, json) = blobs.iter().find(|(n, _)| n.starts_with("greet-")).unwrap();
    let file: Value = serde_json::from_slice(json).unwrap();
    let mut node = file["spec"]["nodes"][0].clone();
    node["hash"] = Value::String("HASHPLACEHOLDER".into());
    let template =
        format!(r#""HASHPLACEHOLDER":{{"spec":{node},"ref_count":0,"in_buildcache":true}}"#);
    let mut text = String::from(r#"{"database":{"version":"8","installs":{"#);
    for i in 0..50_000u32 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&template.replace("HASHPLACEHOLDER", &format!("{i:0>32}")));
    }
    text.push_str("}}}");
    let t = std::time::Instant::now();
    let db: Db = serde_json::from_str(&text).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(db.database.installs.len(), 50_000);
    eprintln!(
        "parsed 50000 index nodes ({} MB) in {elapsed:?}",
        text.len() / 1_000_000
    );
    assert!(elapsed.as_secs() < 20);
}
