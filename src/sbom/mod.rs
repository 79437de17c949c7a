//! Software bills of materials: one document per closure, SPDX 2.3 JSON or CycloneDX 1.6 JSON,
//! with every package of the spec's DAG (name, version, Spack DAG hash, namespace, target,
//! compiler and variants), its dependency edges with their types, the sha256 of its tarball and,
//! for installed trees, every file the receipts list with its checksums.
//!
//! The documents are written with serde_json: no maintained crate writes these versions (the
//! `cyclonedx-bom` crate stops at CycloneDX 1.5; `spdx-rs` at SPDX 2.2 and is unmaintained). The
//! formats' own validators check them in the tests (`pyspdxtools`, `cyclonedx-python-lib`).
//!
//! Package URLs are `pkg:generic/<name>@<version>?spack_hash=<hash>…`: Spack has no registered
//! purl type, and `generic` with the DAG hash names the one build exactly.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha1::Digest;
use thiserror::Error;

use crate::spec::{compiler_of, DepTypes, Spec, SpecFile, VariantValue};

#[derive(Debug, Error)]
pub enum SbomError {
    #[error("{}: {source}; check that it is readable", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Spdx,
    CycloneDx,
}

/// What an SBOM says of one package beyond its spec.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// sha256 (hex) of the package's tarball blob.
    pub tarball_sha256: Option<String>,
    /// Where it is installed (installed trees).
    pub prefix: Option<PathBuf>,
    /// Installed files: (path relative to the prefix, sha256 hex).
    pub files: Vec<(String, String)>,
}

/// A closure to describe: the root's spec file (the whole DAG) and what is known of each node.
pub struct Closure<'a> {
    pub specfile: &'a SpecFile,
    pub extra: &'a dyn Fn(&Spec) -> Extra,
}

fn dep_names(t: DepTypes) -> Vec<&'static str> {
    [
        (DepTypes::BUILD, "build"),
        (DepTypes::LINK, "link"),
        (DepTypes::RUN, "run"),
        (DepTypes::TEST, "test"),
    ]
    .into_iter()
    .filter(|(b, _)| t.contains(*b))
    .map(|(_, n)| n)
    .collect()
}

fn variant_text(v: &VariantValue) -> String {
    match v {
        VariantValue::Bool(b) => b.to_string(),
        VariantValue::Str(s) => s.clone(),
        VariantValue::List(l) => l.join(","),
    }
}

/// The nodes of the closure: the root and every node reachable through any edge, root first.
fn nodes(sf: &SpecFile) -> Vec<&Spec> {
    let mut out: Vec<&Spec> = vec![sf.root()];
    let mut i = 0;
    while i < out.len() {
        for e in &out[i].dependencies {
            if let Some(d) = sf.find(&e.hash) {
                if !out.iter().any(|o| o.hash == d.hash) {
                    out.push(d);
                }
            }
        }
        i += 1;
    }
    out
}

/// `pkg:generic/name@version?spack_hash=…&target=…`.
pub fn purl(s: &Spec) -> String {
    // Unreserved characters stay as they are (the purl specification).
    const PURL: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'~');
    let enc = |t: &str| percent_encoding::utf8_percent_encode(t, PURL).to_string();
    let mut q = vec![format!("spack_hash={}", s.hash)];
    if let Some(ns) = &s.namespace {
        q.push(format!("namespace={}", enc(ns)));
    }
    if let Some(a) = &s.arch {
        q.push(format!("target={}", enc(&a.target)));
    }
    format!(
        "pkg:generic/{}@{}?{}",
        enc(&s.name),
        enc(&s.version),
        q.join("&")
    )
}

/// Properties of a package, as `(name, value)`.
fn properties(s: &Spec, sf: &SpecFile) -> Vec<(String, String)> {
    let mut p = vec![("spack:hash".to_string(), s.hash.clone())];
    if let Some(ns) = &s.namespace {
        p.push(("spack:namespace".into(), ns.clone()));
    }
    if let Some(a) = &s.arch {
        p.push(("spack:platform".into(), a.platform.clone()));
        p.push(("spack:os".into(), a.os.clone()));
        p.push(("spack:target".into(), a.target.clone()));
    }
    if let Some(c) = compiler_of(s, &|h| sf.find(h)) {
        p.push(("spack:compiler".into(), format!("{}@{}", c.name, c.version)));
    }
    for (k, v) in &s.variants {
        p.push((format!("spack:variant:{k}"), variant_text(v)));
    }
    if let Some(path) = s.external.as_ref().and_then(|e| e.path.as_ref()) {
        p.push(("spack:external".into(), path.clone()));
    }
    p
}

fn file_sha1(path: &Path) -> Result<String, SbomError> {
    crate::fs::digest_file::<sha1::Sha1>(path)
        .map(|(digest, _)| hex::encode(digest))
        .map_err(|source| SbomError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    // Version 4, variant 10.
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (u8::from_str_radix(&h[16..17], 16).unwrap_or(0) & 0x3) | 0x8,
        &h[17..20],
        &h[20..32]
    )
}

fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn tool() -> String {
    format!("sf-cache-{}", env!("CARGO_PKG_VERSION"))
}

/// The document of a closure in `format`.
pub fn document(c: &Closure<'_>, format: Format) -> Result<Value, SbomError> {
    match format {
        Format::CycloneDx => cyclonedx(c),
        Format::Spdx => spdx(c),
    }
}

fn cyclonedx(c: &Closure<'_>) -> Result<Value, SbomError> {
    let sf = c.specfile;
    let all = nodes(sf);
    let component = |s: &Spec, root: bool| -> Value {
        let extra = (c.extra)(s);
        let mut props: Vec<Value> = properties(s, sf)
            .into_iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        for e in &s.dependencies {
            props.push(json!({
                "name": format!("spack:dependency:{}", e.hash),
                "value": format!("{} ({})", e.name, dep_names(e.deptypes).join(",")),
            }));
        }
        if let Some(p) = &extra.prefix {
            props.push(json!({"name": "spack:prefix", "value": p.display().to_string()}));
        }
        let mut comp = json!({
            "type": if root { "application" } else { "library" },
            "bom-ref": s.hash,
            "name": s.name,
            "version": s.version,
            "purl": purl(s),
            "properties": props,
        });
        if let Some(h) = &extra.tarball_sha256 {
            comp["hashes"] = json!([{"alg": "SHA-256", "content": h}]);
        }
        if !extra.files.is_empty() {
            comp["components"] = Value::Array(
                extra
                    .files
                    .iter()
                    .map(|(path, sha)| {
                        json!({
                            "type": "file",
                            "bom-ref": format!("{}:{path}", s.hash),
                            "name": path,
                            "hashes": [{"alg": "SHA-256", "content": sha}],
                        })
                    })
                    .collect(),
            );
        }
        comp
    };
    let root = sf.root();
    let components: Vec<Value> = all.iter().skip(1).map(|s| component(s, false)).collect();
    let dependencies: Vec<Value> = all
        .iter()
        .map(|s| {
            let on: Vec<&str> = s
                .dependencies
                .iter()
                .filter(|e| all.iter().any(|n| n.hash == e.hash))
                .map(|e| e.hash.as_str())
                .collect();
            json!({"ref": s.hash, "dependsOn": on})
        })
        .collect();
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid()),
        "version": 1,
        "metadata": {
            "timestamp": now_utc(),
            "tools": {"components": [{
                "type": "application",
                "name": "sf-cache",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": component(root, true),
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

fn spdx_id(kind: &str, s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

fn spdx(c: &Closure<'_>) -> Result<Value, SbomError> {
    let sf = c.specfile;
    let all = nodes(sf);
    let root = sf.root();
    let mut packages = Vec::new();
    let mut files = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": spdx_id("Package", &root.hash),
    })];
    for s in &all {
        let extra = (c.extra)(s);
        let id = spdx_id("Package", &s.hash);
        let comment = properties(s, sf)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut pkg = json!({
            "SPDXID": id,
            "name": s.name,
            "versionInfo": s.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": comment,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(s),
            }],
        });
        if let Some(h) = &extra.tarball_sha256 {
            pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": h}]);
        }
        packages.push(pkg);
        for e in &s.dependencies {
            if !all.iter().any(|n| n.hash == e.hash) {
                continue;
            }
            let dep = spdx_id("Package", &e.hash);
            for t in dep_names(e.deptypes) {
                let (a, rel, b) = match t {
                    "link" => (id.clone(), "DYNAMIC_LINK", dep.clone()),
                    "run" => (dep.clone(), "RUNTIME_DEPENDENCY_OF", id.clone()),
                    "build" => (dep.clone(), "BUILD_DEPENDENCY_OF", id.clone()),
                    _ => (dep.clone(), "TEST_DEPENDENCY_OF", id.clone()),
                };
                relationships.push(json!({
                    "spdxElementId": a, "relationshipType": rel, "relatedSpdxElement": b,
                }));
            }
        }
        // Installed files: the package's files were analysed (SPDX then wants every file's
        // SHA1 and the package verification code made of them).
        let mut sha1s = Vec::new();
        let (listed, prefix): (&[(String, String)], &Path) = match &extra.prefix {
            Some(p) => (extra.files.as_slice(), p.as_path()),
            None => (&[], Path::new("/")),
        };
        for (n, (path, sha256)) in listed.iter().enumerate() {
            let fid = spdx_id("File", &format!("{}-{n}", &s.hash[..7.min(s.hash.len())]));
            let sha1 = file_sha1(&prefix.join(path))?;
            let sums = vec![
                json!({"algorithm": "SHA1", "checksumValue": sha1}),
                json!({"algorithm": "SHA256", "checksumValue": sha256}),
            ];
            sha1s.push(sha1);
            files.push(json!({
                "SPDXID": fid,
                "fileName": format!("./{path}"),
                "checksums": sums,
                "licenseConcluded": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            }));
            relationships.push(json!({
                "spdxElementId": id, "relationshipType": "CONTAINS", "relatedSpdxElement": fid,
            }));
        }
        if !sha1s.is_empty() {
            sha1s.sort();
            let code = hex::encode(sha1::Sha1::digest(sha1s.concat().as_bytes()));
            if let Some(p) = packages.last_mut() {
                p["filesAnalyzed"] = json!(true);
                p["packageVerificationCode"] = json!({"packageVerificationCodeValue": code});
                p["licenseInfoFromFiles"] = json!(["NOASSERTION"]);
            }
        }
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}-{}", root.name, root.version, root.hash),
        "documentNamespace": format!("https://sf-cache.invalid/spdx/{}/{}", root.hash, uuid()),
        "creationInfo": {"created": now_utc(), "creators": [format!("Tool: {}", tool())]},
        "packages": packages,
        "relationships": relationships,
    });
    if !files.is_empty() {
        doc["files"] = Value::Array(files);
    }
    Ok(doc)
}

#[cfg(test)]
mod tests;
