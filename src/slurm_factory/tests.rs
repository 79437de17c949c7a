use super::*;
use crate::spec::Spec;

fn defaults() -> SlurmFactory {
    SlurmFactory::load(None, "-").unwrap()
}

fn table(text: &str) -> toml::Table {
    text.parse().unwrap()
}

#[test]
fn the_embedded_matrix() {
    let f = defaults();
    assert_eq!(
        f.base_url,
        "https://slurm-factory-spack-binary-cache.vantagecompute.ai"
    );
    let slurm: Vec<&str> = f.slurm.iter().map(|s| s.version.as_str()).collect();
    assert_eq!(slurm, ["26.05", "25.11", "24.11", "23.11", "23.02"]);
    let gcc: Vec<(&str, &str)> = f
        .toolchains
        .iter()
        .map(|t| (t.gcc.as_str(), t.glibc.as_str()))
        .collect();
    assert_eq!(
        gcc,
        [
            ("15.2.0", "2.40"),
            ("14.2.0", "2.39"),
            ("13.4.0", "2.39"),
            ("12.5.0", "2.35"),
            ("11.5.0", "2.35"),
            ("10.5.0", "2.31"),
            ("9.5.0", "2.28"),
            ("8.5.0", "2.28"),
            ("7.5.0", "2.17"),
        ]
    );
    assert_eq!(f.slurm_release(None).unwrap().version, "25.11");
    let tc = f.toolchain(None).unwrap();
    assert_eq!(tc.gcc, "13.4.0");
    assert_eq!(tc.distros, ["Ubuntu 24.04"]);
    assert_eq!(f.toolchain(Some("7.5.0")).unwrap().distros, ["RHEL 7"]);
    assert_eq!(
        f.toolchain(Some("10.5.0")).unwrap().distros,
        ["RHEL 8", "Ubuntu 20.04"]
    );
    assert_eq!(
        f.toolchain(Some("14.2.0")).unwrap().note.as_deref(),
        Some("latest")
    );
}

#[test]
fn versions_are_looked_up_with_separators_alike_and_unknown_ones_list_the_valid() {
    let f = defaults();
    assert_eq!(f.slurm_release(Some("25-11")).unwrap().version, "25.11");
    assert_eq!(f.slurm_release(Some("23.02")).unwrap().version, "23.02");
    let e = f.slurm_release(Some("22.05")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown Slurm version `22.05`: valid versions are 26.05, 25.11, 24.11, 23.11, 23.02"
    );
    // A prefix is not a release.
    assert!(f.slurm_release(Some("25")).is_err());
    let e = f.toolchain(Some("13.3.0")).unwrap_err().to_string();
    assert!(e.starts_with("unknown compiler version `13.3.0`"), "{e}");
    assert!(
        e.ends_with("15.2.0, 14.2.0, 13.4.0, 12.5.0, 11.5.0, 10.5.0, 9.5.0, 8.5.0, 7.5.0"),
        "{e}"
    );
    assert!(f.toolchain(Some("not a version!")).is_err());
}

#[test]
fn urls_follow_the_templates_in_order() {
    let f = defaults();
    let s = f.slurm_release(Some("25.11")).unwrap();
    let t = f.toolchain(Some("13.4.0")).unwrap();
    let urls = f.cache_urls(&f.base_url, s, t, Variant::Default);
    assert_eq!(
        urls,
        [
            CacheUrl {
                name: "slurm/25.11/13.4.0".into(),
                url: "https://slurm-factory-spack-binary-cache.vantagecompute.ai/slurm/25.11/13.4.0/buildcache".into()
            },
            CacheUrl {
                name: "compilers/13.4.0".into(),
                url: "https://slurm-factory-spack-binary-cache.vantagecompute.ai/compilers/13.4.0/buildcache".into()
            },
        ]
    );
    // A path base, with a trailing slash; the root directory as a base.
    let urls = f.cache_urls("/tmp/x/", s, t, Variant::Gpu);
    assert_eq!(urls[0].url, "/tmp/x/slurm/25.11/13.4.0/buildcache");
    assert_eq!(urls[1].url, "/tmp/x/compilers/13.4.0/buildcache");
    let urls = f.cache_urls("/", s, t, Variant::Gpu);
    assert_eq!(urls[0].url, "/slurm/25.11/13.4.0/buildcache");
    assert_eq!(urls[0].name, "slurm/25.11/13.4.0");
}

#[test]
fn queries_per_variant() {
    let f = defaults();
    let s = f.slurm_release(Some("24.11")).unwrap();
    let t = f.toolchain(Some("12.5.0")).unwrap();
    assert_eq!(
        f.slurm_queries(s, t, Variant::Gpu),
        ["slurm@24.11 %gcc@12.5.0 +nvml +rsmi"]
    );
    assert_eq!(
        f.slurm_queries(s, t, Variant::Default),
        [
            "slurm@24.11 %gcc@12.5.0 +pmix ~nvml ~rsmi",
            "slurm@24.11 %gcc@12.5.0 ~nvml ~rsmi"
        ]
    );
    assert_eq!(
        f.slurm_queries(s, t, Variant::Minimal),
        ["slurm@24.11 %gcc@12.5.0 ~pmix ~nvml ~rsmi"]
    );
    for v in Variant::ALL {
        for q in f.slurm_queries(s, t, v) {
            Query::parse(&q).unwrap();
        }
    }
    assert_eq!(SlurmFactory::runtime_query(t), "gcc-runtime@12.5.0");
    assert_eq!(Variant::from_flags(true, true), None);
    assert_eq!(Variant::from_flags(false, true), Some(Variant::Minimal));
}

/// How the queries meet upstream's specs: `@25.11` matches `25-11-6-1`; a variant the spec lacks
/// does not match, which is why `default` falls back to a fragment without `+pmix`.
#[test]
fn fragments_against_upstream_shaped_specs() {
    let f = defaults();
    let s = f.slurm_release(Some("25.11")).unwrap();
    let t = f.toolchain(Some("13.4.0")).unwrap();
    let spec = |variants: &[(&str, bool)]| {
        let mut params = serde_json::Map::new();
        for (k, v) in variants {
            params.insert(k.to_string(), serde_json::Value::Bool(*v));
        }
        // A format-4 node: the compiler is an attribute (format 5 has it as a dependency).
        let node = serde_json::json!({
            "name": "slurm", "version": "25-11-6-1",
            "arch": {"platform": "linux", "platform_os": "ubuntu24.04", "target": "x86_64"},
            "compiler": {"name": "gcc", "version": "13.4.0"},
            "namespace": "slurm_factory", "parameters": params,
            "hash": "a".repeat(32),
        });
        Spec::from_node(&node, 4).unwrap()
    };
    let none = |_: &str| -> Option<&Spec> { None };
    let first_match = |sp: &Spec, v: Variant| {
        f.slurm_queries(s, t, v)
            .iter()
            .position(|q| Query::parse(q).unwrap().matches(sp, &none))
    };
    let recent = spec(&[("nvml", false), ("rsmi", false)]);
    assert_eq!(first_match(&recent, Variant::Default), Some(1));
    assert_eq!(first_match(&recent, Variant::Gpu), None);
    assert_eq!(first_match(&recent, Variant::Minimal), None);
    let gpu = spec(&[("nvml", true), ("rsmi", true)]);
    assert_eq!(first_match(&gpu, Variant::Gpu), Some(0));
    assert_eq!(first_match(&gpu, Variant::Default), None);
    let seed_full = spec(&[("nvml", false), ("rsmi", false), ("pmix", true)]);
    assert_eq!(first_match(&seed_full, Variant::Default), Some(0));
    assert_eq!(first_match(&seed_full, Variant::Minimal), None);
    let seed_min = spec(&[("nvml", false), ("rsmi", false), ("pmix", false)]);
    assert_eq!(first_match(&seed_min, Variant::Minimal), Some(0));
    // The recipes are `slurm_factory.slurm`: a query with the namespace matches too, another
    // namespace does not.
    let with_ns = Query::parse("slurm_factory.slurm@25.11 %gcc@13.4.0").unwrap();
    assert!(with_ns.matches(&recent, &none));
    let builtin = Query::parse("builtin.slurm@25.11").unwrap();
    assert!(!builtin.matches(&recent, &none));
    // Another release or toolchain does not match.
    let mut other = recent.clone();
    other.version = "24-11-6-1".into();
    assert_eq!(first_match(&other, Variant::Default), None);
    let mut other = recent.clone();
    other.compiler.as_mut().unwrap().version = "12.5.0".into();
    assert_eq!(first_match(&other, Variant::Default), None);
}

#[test]
fn config_overrides_replace_keys_and_merge_variants() {
    let f = SlurmFactory::load(
        Some(&table(
            r#"
base_url = "https://cache.example.org/sf/"
url_templates = ["{base}/{variant}/slurm/{slurm}/{gcc}", "{base}/deps/{gcc}/glibc-{glibc}"]
default_slurm_version = "26.05"
default_compiler_version = "14.2.0"
slurm = [{ version = "26.05", note = "next" }, { version = "25.11" }]
toolchain = [{ gcc = "14.2.0", glibc = "2.39", distros = ["Ubuntu 24.04"] }]
[variants]
gpu = ["+nvml", "+rsmi"]
"#,
        )),
        "config.toml",
    )
    .unwrap();
    assert_eq!(f.slurm.len(), 2);
    assert_eq!(f.slurm_release(None).unwrap().version, "26.05");
    assert!(f.slurm_release(Some("24.11")).is_err());
    assert_eq!(f.toolchains.len(), 1);
    let s = f.slurm_release(Some("25.11")).unwrap();
    let t = f.toolchain(None).unwrap();
    let urls = f.cache_urls(&f.base_url, s, t, Variant::Gpu);
    assert_eq!(
        urls.iter().map(|u| u.url.as_str()).collect::<Vec<_>>(),
        [
            "https://cache.example.org/sf/gpu/slurm/25.11/14.2.0",
            "https://cache.example.org/sf/deps/14.2.0/glibc-2.39"
        ]
    );
    assert_eq!(urls[0].name, "gpu/slurm/25.11/14.2.0");
    // gpu replaced, default and minimal kept from the defaults.
    assert_eq!(f.variants[&Variant::Gpu], ["+nvml", "+rsmi"]);
    assert_eq!(f.variants[&Variant::Minimal], ["~pmix ~nvml ~rsmi"]);
    // Templates that render the same URL for a cell are one cache.
    let f = SlurmFactory::load(
        Some(&table(
            r#"url_templates = ["{base}/a", "{base}/a/", "{base}/a"]"#,
        )),
        "c",
    )
    .unwrap();
    let s = f.slurm_release(None).unwrap();
    let t = f.toolchain(None).unwrap();
    assert_eq!(f.cache_urls("/b", s, t, Variant::Default).len(), 2);
}

#[test]
fn bad_overrides_are_reported_with_their_origin() {
    let err = |text: &str| {
        SlurmFactory::load(Some(&table(text)), "/etc/sf/config.toml")
            .unwrap_err()
            .to_string()
    };
    let e = err(r#"url_templates = ["{base}/{os}/slurm"]"#);
    assert!(e.starts_with("/etc/sf/config.toml: "), "{e}");
    assert!(e.contains("`{os}`"), "{e}");
    assert!(e.contains("{variant}"), "{e}");
    assert!(err(r#"url_templates = []"#).contains("empty"));
    assert!(err(r#"url_templates = ["slurm/{slurm}"]"#).contains("must start with"));
    assert!(err(r#"url_templates = ["{base}/{slurm"]"#).contains("unclosed"));
    let e = err(r#"default_slurm_version = "99.99""#);
    assert!(e.contains("default_slurm_version"), "{e}");
    assert!(e.contains("25.11, 24.11"), "{e}");
    assert!(err(r#"default_compiler_version = "1.0""#).contains("default_compiler_version"));
    assert!(err("mirror_url = 'x'").contains("mirror_url"));
    assert!(err("[variants]\nfancy = '+x'").contains("unknown variant `fancy`"));
    assert!(err("[variants]\ngpu = []").contains("no query fragment"));
    assert!(err("[variants]\ngpu = '+nvml %gcc@12'").contains("may not name"));
    assert!(err("[variants]\ngpu = '+nvml @1.0'").contains("may not name"));
    assert!(err("[variants]\ngpu = '+ +'").contains("not a query"));
    assert!(err("slurm = []").contains("at least one"));
    assert!(err("toolchain = [{ gcc = '13.4.0' }]").contains("glibc"));
    assert!(err("toolchain = [{ gcc = '13.4.0', glibc = '2.39', os = 'x' }]").contains("os"));
}

/// A catalog over one (never read) directory mirror holding `specs`.
fn catalog_of(dir: &std::path::Path, name: &str, specs: Vec<Spec>) -> Catalog {
    let store = crate::store::Store::open(
        dir.to_str().unwrap(),
        &crate::store::StoreOptions::default(),
    )
    .unwrap();
    let m = crate::buildcache::Mirror::new(name, store, true);
    let entries = specs
        .into_iter()
        .map(|spec| CatalogEntry {
            spec,
            in_buildcache: true,
            mirror: 0,
            layout: crate::buildcache::Layout::V3,
        })
        .collect();
    Catalog::from_entries(vec![m], entries)
}

/// A Slurm Factory-shaped Slurm node; `gpu` sets `+nvml +rsmi`.
fn slurm_spec(version: &str, gpu: bool, hash: char) -> Spec {
    let nvml = gpu;
    let node = serde_json::json!({
        "name": "slurm", "version": version,
        "arch": {"platform": "linux", "platform_os": "ubuntu24.04", "target": "x86_64"},
        "compiler": {"name": "gcc", "version": "13.4.0"},
        "namespace": "slurm_factory", "parameters": {"nvml": nvml, "rsmi": nvml, "pmix": false},
        "hash": hash.to_string().repeat(32),
    });
    Spec::from_node(&node, 4).unwrap()
}

#[test]
fn merged_catalogs_keep_mirror_order_and_the_pick_follows_the_variant_order() {
    let f = defaults();
    let s = f.slurm_release(Some("25.11")).unwrap();
    let t = f.toolchain(Some("13.4.0")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let gpu_cache = catalog_of(d.path(), "gpu", vec![slurm_spec("25-11-6-1", true, 'g')]);
    let cpu_cache = catalog_of(d.path(), "cpu", vec![slurm_spec("25-11-6-1", false, 'c')]);
    let merged = Catalog::merge(&[&gpu_cache, &cpu_cache]);
    assert_eq!(
        merged
            .mirrors
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["gpu", "cpu"]
    );
    assert_eq!(merged.entries().len(), 2);
    let host = HostTargets::detect();
    // The default variant wants ~nvml: the CPU build, found in the second cache.
    let (query, e) = pick_build(&merged, &f.slurm_queries(s, t, Variant::Default), &host)
        .unwrap()
        .unwrap();
    assert_eq!(e.spec.hash, "c".repeat(32));
    assert_eq!(merged.mirrors[e.mirror].name, "cpu");
    assert_eq!(query, "slurm@25.11 %gcc@13.4.0 ~nvml ~rsmi");
    let (_, e) = pick_build(&merged, &f.slurm_queries(s, t, Variant::Gpu), &host)
        .unwrap()
        .unwrap();
    assert_eq!(e.spec.hash, "g".repeat(32));
    // Nothing for another release: None, not an error.
    let s24 = f.slurm_release(Some("24.11")).unwrap();
    assert!(
        pick_build(&merged, &f.slurm_queries(s24, t, Variant::Default), &host)
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_three_url_schemes_and_the_os_toolchains() {
    let f = defaults();
    let names: Vec<&str> = f.schemes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["toolchain", "toolchain-split", "legacy"]);
    let tcs: Vec<(&str, &str, &str)> = f
        .os_toolchains
        .iter()
        .map(|t| (t.name.as_str(), t.gcc.as_str(), t.glibc.as_str()))
        .collect();
    assert_eq!(
        tcs,
        [
            ("rockylinux8", "8.5.0", "2.28"),
            ("rockylinux9", "11.5.0", "2.34"),
            ("rockylinux10", "14.3.1", "2.39"),
            ("jammy", "11.4.0", "2.35"),
            ("noble", "13.3.0", "2.39"),
            ("resolute", "15.2.0", "2.42"),
        ]
    );
    assert_eq!(f.os_toolchain(None).unwrap().name, "noble");
    assert!(f.slurm_release(Some("23.02")).unwrap().legacy_only);
    assert!(!f.slurm_release(None).unwrap().legacy_only);
    let s = f.slurm_release(None).unwrap();
    let tc = f.os_toolchain(Some("rockylinux9")).unwrap();
    let urls = |i: usize| -> Vec<(String, String)> {
        f.scheme_urls(&f.schemes[i], "/b/", s, tc, Variant::Default)
            .into_iter()
            .map(|c| (c.name, c.url))
            .collect()
    };
    assert_eq!(
        urls(0),
        [(
            "rockylinux9/spack".to_string(),
            "/b/rockylinux9/spack".to_string()
        )]
    );
    assert_eq!(
        urls(1),
        [
            (
                "rockylinux9/slurm/25.11".to_string(),
                "/b/rockylinux9/slurm/25.11".to_string()
            ),
            (
                "rockylinux9/slurm/deps".to_string(),
                "/b/rockylinux9/slurm/deps".to_string()
            )
        ]
    );
    assert_eq!(
        urls(2),
        [
            (
                "slurm/25.11/11.5.0".to_string(),
                "/b/slurm/25.11/11.5.0/buildcache".to_string()
            ),
            (
                "compilers/11.5.0".to_string(),
                "/b/compilers/11.5.0/buildcache".to_string()
            )
        ]
    );
    let e = f.os_toolchain(Some("bookworm")).unwrap_err().to_string();
    assert_eq!(
        e,
        "unknown toolchain `bookworm`: valid toolchains are rockylinux8, rockylinux9, rockylinux10, jammy, noble, resolute"
    );
}

#[test]
fn the_host_toolchain_comes_from_os_release_else_noble_with_a_note() {
    let f = defaults();
    let (t, note) = f.host_toolchain(Some("ID=rocky\nVERSION_ID=\"8.9\"\n"));
    assert_eq!((t.name.as_str(), note), ("rockylinux8", None));
    let (t, note) = f.host_toolchain(Some("ID=debian\nVERSION_ID=\"12\"\n"));
    assert_eq!(t.name, "noble");
    assert_eq!(
        note.unwrap(),
        "no Slurm Factory toolchain for debian 12: using noble (choose with --toolchain)"
    );
    let (t, note) = f.host_toolchain(None);
    assert_eq!(t.name, "noble");
    assert!(note.unwrap().contains("no os-release"));
}

#[test]
fn a_malformed_scheme_or_toolchain_is_one_line_naming_the_key() {
    let bad = [
        (
            "scheme = [{ name = \"x\", templates = [] }]",
            "scheme `x` has no `templates`",
        ),
        (
            "scheme = [{ name = \"x\", templates = [\"{base}/{os}\"] }]",
            "scheme `x`: URL template `{base}/{os}` uses `{os}`",
        ),
        (
            "default_toolchain = \"bookworm\"",
            "default_toolchain `bookworm` is not an `os_toolchain` name",
        ),
        (
            "os_toolchain = [{ name = \"noble\", gcc = \"13.3.0\", glibc = \"\" }]",
            "os_toolchain `noble`",
        ),
    ];
    for (text, want) in bad {
        let e = SlurmFactory::load(Some(&table(text)), "cfg [slurm_factory]")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cfg [slurm_factory]: "), "{e}");
        assert!(e.contains(want), "{text}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

fn gcc_runtime_spec(version: &str, hash: char) -> Spec {
    let node = serde_json::json!({
        "name": "gcc-runtime", "version": version,
        "arch": {"platform": "linux", "platform_os": "ubuntu24.04", "target": "x86_64"},
        "namespace": "builtin", "parameters": {},
        "hash": hash.to_string().repeat(32),
    });
    Spec::from_node(&node, 4).unwrap()
}

#[test]
fn the_list_matrix_reads_each_cache_once_and_tells_per_variant_what_a_cell_offers() {
    use matrix::{Matrix, Offer};
    use probe::Probe;
    let f = defaults();
    let d = tempfile::tempdir().unwrap();
    let m = Matrix::new(&f, "/base", Some("25.11"), Some("13.4.0"), None).unwrap();
    let caches = m.caches();
    // The legacy scheme: Slurm's cache and the compilers' cache of the cell, once each.
    assert!(caches.len() >= 2, "{caches:?}");
    let mut urls: Vec<&str> = caches.iter().map(|c| c.url.as_str()).collect();
    urls.dedup();
    assert_eq!(urls.len(), caches.len());
    assert!(caches.iter().all(|c| c.url.starts_with("/base/")));
    // The first cache answers with a CPU and a GPU build and a GCC runtime; the others fail.
    let probes: Vec<Probe> = caches
        .iter()
        .enumerate()
        .map(|(i, c)| Probe {
            cache: c.clone(),
            result: if i == 0 {
                Ok(catalog_of(
                    d.path(),
                    &c.name,
                    vec![
                        slurm_spec("25-11-6-1", false, 'c'),
                        slurm_spec("25-11-6-1", true, 'g'),
                        gcc_runtime_spec("13.4.0", 'r'),
                    ],
                ))
            } else {
                Err("HTTP 404".into())
            },
        })
        .collect();
    let host = HostTargets::detect();
    let cells = m.cells(&probes, &host).unwrap();
    assert_eq!(cells.len(), 1);
    let cell = &cells[0];
    assert_eq!(
        (cell.slurm.as_str(), cell.compiler.as_str()),
        ("25.11", "13.4.0")
    );
    assert!(cell.available);
    assert!(cell.unavailable.is_none());
    assert!(matches!(&cell.variants[&Variant::Default],
        Offer::Available { hash, .. } if *hash == "c".repeat(32)));
    assert!(matches!(&cell.variants[&Variant::Gpu],
        Offer::Available { hash, .. } if *hash == "g".repeat(32)));
    assert_eq!(cell.builds.len(), 2);
    let gpu = cell
        .builds
        .iter()
        .find(|b| b.hash == "g".repeat(32))
        .unwrap();
    assert!(
        gpu.variants.contains(&"+nvml".to_string()),
        "{:?}",
        gpu.variants
    );
    assert_eq!(cell.gcc_runtime, ["13.4.0"]);
    assert!(cell.caches[0].available);
    assert!(cell.caches[1..]
        .iter()
        .all(|c| !c.available && c.error.as_deref() == Some("HTTP 404")));

    // Every cache failing: the cell says why, with the first reason.
    let failed: Vec<Probe> = caches
        .iter()
        .map(|c| Probe {
            cache: c.clone(),
            result: Err("connection refused".into()),
        })
        .collect();
    let cells = m.cells(&failed, &host).unwrap();
    assert!(!cells[0].available);
    let reason = cells[0].unavailable.as_deref().unwrap();
    assert!(reason.ends_with(": connection refused"), "{reason}");
    assert!(cells[0]
        .variants
        .values()
        .all(|o| matches!(o, Offer::Unavailable { .. })));
}

#[test]
fn the_gcc_runtime_is_installed_first_only_when_slurms_closure_lacks_it_and_a_cache_has_it() {
    let f = defaults();
    let t = f.toolchain(Some("13.4.0")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let host = HostTargets::detect();
    let q = "slurm@25.11 %gcc@13.4.0 ~nvml ~rsmi";
    let with_rt = catalog_of(
        d.path(),
        "c",
        vec![
            slurm_spec("25-11-6-1", false, 'c'),
            gcc_runtime_spec("13.4.0", 'r'),
        ],
    );
    assert_eq!(
        install_queries(&with_rt, t, q, &"c".repeat(32), &host).unwrap(),
        ["gcc-runtime@13.4.0", q]
    );
    let without = catalog_of(d.path(), "c", vec![slurm_spec("25-11-6-1", false, 'c')]);
    assert_eq!(
        install_queries(&without, t, q, &"c".repeat(32), &host).unwrap(),
        [q]
    );
}
