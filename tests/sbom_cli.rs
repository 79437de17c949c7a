//! `sf-cache sbom`: SPDX 2.3 and CycloneDX 1.6 documents of installed closures (with every
//! installed file) and of cache entries, each checked by the format's own validator:
//! `pyspdxtools` (PyPI `spdx-tools`) and `cyclonedx-python-lib`'s strict JSON validator
//! (PyPI `cyclonedx-python-lib[json-validation]`); `.ci/run` installs both.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::*;
use serde_json::Value;

const GREET: &str = "pgvza7iamblnpepta3jh2thtyfktejqr";
const LIBGREET: &str = "2upkbtnnkl4ztegz36plrhvvzftkoxxu";

fn validate_spdx(file: &Path) {
    let o = Command::new("pyspdxtools")
        .arg("-i")
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("pyspdxtools is needed by these tests ({e}): pip install spdx-tools")
        });
    assert!(
        o.status.success(),
        "pyspdxtools rejects {file:?}:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}

fn validate_cyclonedx(file: &Path) {
    let script = "import sys\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        from cyclonedx.schema import SchemaVersion\n\
        errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
        if errors is not None:\n    print(errors)\n    sys.exit(1)\n";
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cyclonedx-python-lib rejects {file:?} (or is missing: pip install 'cyclonedx-python-lib[json-validation]'):\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}

fn read(file: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

#[test]
fn installed_and_cached_closures_in_both_formats_pass_the_validators() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    install_fixture(&home, "greet", "spack-v3", &root);

    // Installed, CycloneDX (the default): every package, the tarball digests, every file.
    let cdx = t.path().join("greet.cdx.json");
    let o = home.run(&["sbom", "greet", "--root", s(&root), "-o", s(&cdx)]);
    assert!(o.status.success(), "{}", stderr(&o));
    validate_cyclonedx(&cdx);
    let d = read(&cdx);
    let root_c = &d["metadata"]["component"];
    assert_eq!(root_c["bom-ref"], GREET);
    assert_eq!(
        root_c["hashes"][0]["content"],
        "dd69b8245e53ad6ab2d05c381cf59d1b44227d69c8b0687302482a4221e9eb6f"
    );
    let files = root_c["components"].as_array().unwrap();
    assert!(files
        .iter()
        .any(|f| f["name"] == "bin/greet" && f["type"] == "file"));
    let lib = d["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == LIBGREET)
        .unwrap();
    assert_eq!(
        lib["purl"],
        format!("pkg:generic/libgreet@1.2.0?spack_hash={LIBGREET}&namespace=sfdemo&target=x86_64")
    );

    // Installed, SPDX: typed edges, files with SHA1 and SHA256.
    let spdx = t.path().join("greet.spdx.json");
    let o = home.run(&[
        "sbom",
        "greet",
        "--root",
        s(&root),
        "--format",
        "spdx",
        "-o",
        s(&spdx),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    validate_spdx(&spdx);
    let d = read(&spdx);
    let rel = |a: &str, r: &str, b: &str| {
        d["relationships"].as_array().unwrap().iter().any(|x| {
            x["spdxElementId"] == format!("SPDXRef-Package-{a}")
                && x["relationshipType"] == r
                && x["relatedSpdxElement"] == format!("SPDXRef-Package-{b}")
        })
    };
    assert!(rel(GREET, "DYNAMIC_LINK", LIBGREET));
    assert!(rel(LIBGREET, "RUNTIME_DEPENDENCY_OF", GREET));
    let f = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == "./bin/greet")
        .unwrap();
    assert_eq!(f["checksums"].as_array().unwrap().len(), 2);

    // From the cache (no install): both formats, tarball digests from the verified manifests.
    let out = t.path().join("docs");
    let o = home.run(&[
        "sbom",
        "greet",
        "libgreet",
        "--mirror",
        s(&fx("spack-v3")),
        "--format",
        "spdx",
        "-o",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for stem in ["greet-2.1.0-pgvza7i", "libgreet-1.2.0-2upkbtn"] {
        validate_spdx(&out.join(format!("{stem}.spdx.json")));
    }
    let o = home.run(&["sbom", "/pgvza7i", "--mirror", s(&fx("spack-v3"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = t.path().join("printed.cdx.json");
    std::fs::write(&printed, stdout(&o)).unwrap();
    validate_cyclonedx(&printed);
    let d = read(&printed);
    assert!(d.get("metadata").is_some());

    // Errors: one line each.
    let o = home.run(&["sbom", "nosuch", "--root", s(&root)]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let o = home.run(&["sbom", "greet", "libgreet", "--root", s(&root)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("-o DIR"), "{}", stderr(&o));
    let o = home.run(&["sbom", "greet", "--root", s(t.path())]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not an sf-cache install root"),
        "{}",
        stderr(&o)
    );
}

/// `publish --sbom`: the CycloneDX document of each entry is a blob named in its signed
/// manifest (so the signature covers it), valid, naming the published tarball; the entry still
/// installs.
#[test]
fn publish_sbom_is_a_signed_blob_of_the_entry() {
    let home = Home::trusting();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    install_fixture(&home, "greet", "spack-v3", &root);
    let dest = t.path().join("cache");
    let greet = root.join(format!("greet-2.1.0-{GREET}"));
    let key = fx("keys/sf-cache-fixture.secret.asc");
    let o = home.run(&[
        "publish",
        s(&greet),
        "--with-deps",
        "--to",
        s(&dest),
        "--key",
        s(&key),
        "--sbom",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = std::fs::read_dir(dest.join("v3/manifests/spec/greet"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"),
        "{text}"
    );
    // The JSON between the armor lines.
    let body = &text[text.find('{').unwrap()..text.rfind('}').unwrap() + 1];
    let m: Value = serde_json::from_str(body).unwrap();
    let records = m["data"].as_array().unwrap();
    let sbom = records
        .iter()
        .find(|r| r["mediaType"] == "application/vnd.cyclonedx+json")
        .unwrap_or_else(|| panic!("no SBOM record in {text}"));
    let tarball = records
        .iter()
        .find(|r| r["mediaType"] == "application/vnd.spack.install.v2.tar+gzip")
        .unwrap();
    let digest = sbom["checksum"].as_str().unwrap();
    let blob = dest.join("blobs/sha256").join(&digest[..2]).join(digest);
    validate_cyclonedx(&blob);
    let d = read(&blob);
    assert_eq!(d["metadata"]["component"]["bom-ref"], GREET);
    assert_eq!(
        d["metadata"]["component"]["hashes"][0]["content"],
        tarball["checksum"]
    );
    // sf-cache verifies the signed manifest and installs the entry.
    let o = home.run(&[
        "install",
        "greet",
        "--mirror",
        s(&dest),
        "--root",
        s(&t.path().join("b")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}
