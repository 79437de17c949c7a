use super::*;
use std::io::Read;

/// The real greet spec of the v3 fixture (Spack 1.0.2, spec format 5).
fn greet() -> SpecFile {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/spack-v3/blobs/sha256/25")
        .join("258a3812221e352513d48ef0f8143901fbc2c259b23ed0c714ec202a692a801b");
    let gz = std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut text)
        .unwrap();
    SpecFile::parse(&text).unwrap()
}

#[test]
fn cyclonedx_lists_the_dag_with_properties_edges_and_purls() {
    let sf = greet();
    let extra = |s: &Spec| Extra {
        tarball_sha256: (s.name == "greet").then(|| "ab".repeat(32)),
        ..Extra::default()
    };
    let d = document(
        &Closure {
            specfile: &sf,
            extra: &extra,
        },
        Format::CycloneDx,
    )
    .unwrap();
    assert_eq!(d["specVersion"], "1.6");
    let root = &d["metadata"]["component"];
    assert_eq!(root["name"], "greet");
    assert_eq!(root["bom-ref"], "pgvza7iamblnpepta3jh2thtyfktejqr");
    assert_eq!(
        root["purl"],
        "pkg:generic/greet@2.1.0?spack_hash=pgvza7iamblnpepta3jh2thtyfktejqr&namespace=sfdemo&target=x86_64"
    );
    assert_eq!(root["hashes"][0]["content"], "ab".repeat(32));
    let props: Vec<(String, String)> = root["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        props.contains(&("spack:compiler".into(), "gcc@12.2.0".into())),
        "{props:?}"
    );
    assert!(props.contains(&("spack:variant:build_system".into(), "generic".into())));
    assert!(props.contains(&(
        "spack:dependency:2upkbtnnkl4ztegz36plrhvvzftkoxxu".into(),
        "libgreet (link,run)".into()
    )));
    let names: Vec<&str> = d["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "libgreet",
        "gcc",
        "gcc-runtime",
        "glibc",
        "compiler-wrapper",
        "gmake",
    ] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    let root_deps = d["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ref"] == "pgvza7iamblnpepta3jh2thtyfktejqr")
        .unwrap();
    assert_eq!(root_deps["dependsOn"].as_array().unwrap().len(), 6);
}

#[test]
fn spdx_types_every_edge() {
    let sf = greet();
    let extra = |_: &Spec| Extra::default();
    let d = document(
        &Closure {
            specfile: &sf,
            extra: &extra,
        },
        Format::Spdx,
    )
    .unwrap();
    assert_eq!(d["spdxVersion"], "SPDX-2.3");
    let rels: Vec<(String, String, String)> = d["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["spdxElementId"].as_str().unwrap().to_string(),
                r["relationshipType"].as_str().unwrap().to_string(),
                r["relatedSpdxElement"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let g = "SPDXRef-Package-pgvza7iamblnpepta3jh2thtyfktejqr".to_string();
    let l = "SPDXRef-Package-2upkbtnnkl4ztegz36plrhvvzftkoxxu".to_string();
    assert!(rels.contains(&("SPDXRef-DOCUMENT".into(), "DESCRIBES".into(), g.clone())));
    assert!(rels.contains(&(g.clone(), "DYNAMIC_LINK".into(), l.clone())));
    assert!(rels.contains(&(l, "RUNTIME_DEPENDENCY_OF".into(), g.clone())));
    assert!(rels.contains(&(
        "SPDXRef-Package-4fghq5ibtjw6ag4knvkpnmu2cdp3bamt".into(),
        "BUILD_DEPENDENCY_OF".into(),
        g
    )));
    assert!(d.get("files").is_none());
}

#[test]
fn uuids_and_timestamps_have_their_formats() {
    let u = uuid();
    assert_eq!(u.len(), 36);
    assert_eq!(&u[14..15], "4");
    assert!("89ab".contains(&u[19..20]), "{u}");
    let t = now_utc();
    assert_eq!(t.len(), 20, "{t}");
    assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
}
