//! `sf-cache sbom QUERY… (--root DIR | --mirror M…) --format spdx|cyclonedx [-o FILE]`: one
//! document per closure, of installed packages (with every installed file) or of cache entries
//! (with the tarball digests of the verified manifests).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{exit, parse_query, CmdResult, Context, Failure};
use crate::buildcache::VerifiedEntry;
use crate::cli::{SbomArgs, SbomFormat};
use crate::install::receipt::{EntryKind, Receipt};
use crate::sbom::{document, Closure, Extra, Format};
use crate::spec::{HostTargets, Spec, SpecFile};

impl From<crate::sbom::SbomError> for Failure {
    fn from(e: crate::sbom::SbomError) -> Failure {
        Failure::new(exit::FAILURE, e.to_string())
    }
}

/// One document to write: a name for its file and its JSON.
struct Doc {
    stem: String,
    json: serde_json::Value,
}

fn stem(s: &Spec) -> String {
    format!("{}-{}-{}", s.name, s.version, s.short_hash())
}

fn digest_hex(d: &str) -> String {
    d.strip_prefix("sha256:").unwrap_or(d).to_string()
}

pub async fn run(ctx: &Context, a: &SbomArgs) -> CmdResult {
    let format = match a.format {
        SbomFormat::Spdx => Format::Spdx,
        SbomFormat::Cyclonedx => Format::CycloneDx,
    };
    if a.query.len() > 1 && a.output.is_none() {
        return Err(Failure::usage(
            "several queries make several documents: give -o DIR to write one file each",
        ));
    }
    let docs = match &a.root {
        Some(root) => installed_docs(root, &a.query, format)?,
        None => mirror_docs(ctx, a, format).await?,
    };
    write_docs(ctx, &docs, a.output.as_deref(), format)
}

fn installed_docs(root: &Path, queries: &[String], format: Format) -> Result<Vec<Doc>, Failure> {
    let root = super::roots::open_existing_root(root)?;
    let installed = root.installed();
    let by_hash: HashMap<&str, &(PathBuf, Receipt)> =
        installed.iter().map(|i| (i.1.hash.as_str(), i)).collect();
    let mut docs = Vec::new();
    for q in queries {
        let query = parse_query(std::slice::from_ref(q))?;
        let found = super::roots::matching(&root, Some(&query));
        let (prefix, receipt) = match found.as_slice() {
            [] => return Err(super::roots::no_match(&root, q)),
            [one] => one,
            many => return Err(super::roots::several(q, many)),
        };
        let spec_path = prefix.join(".spack/spec.json");
        let text = std::fs::read(&spec_path)
            .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", spec_path.display())))?;
        let specfile = SpecFile::parse(&text)
            .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", spec_path.display())))?;
        let mut files: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for s in &specfile.nodes {
            if let Some((p, _)) = by_hash.get(s.hash.as_str()) {
                let listed = Receipt::read_files(p)
                    .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
                files.insert(
                    s.hash.clone(),
                    listed
                        .into_iter()
                        .filter(|f| f.kind == EntryKind::File)
                        .filter_map(|f| f.sha256.map(|h| (f.path, h)))
                        .collect(),
                );
            }
        }
        let extra = |s: &Spec| -> Extra {
            match by_hash.get(s.hash.as_str()) {
                Some((p, r)) => Extra {
                    tarball_sha256: Some(digest_hex(&r.tarball_digest)),
                    prefix: Some(p.clone()),
                    files: files.get(&s.hash).cloned().unwrap_or_default(),
                },
                None => Extra::default(),
            }
        };
        let json = document(
            &Closure {
                specfile: &specfile,
                extra: &extra,
            },
            format,
        )?;
        docs.push(Doc {
            stem: format!(
                "{}-{}-{}",
                receipt.name,
                receipt.version,
                &receipt.hash[..7]
            ),
            json,
        });
    }
    Ok(docs)
}

async fn mirror_docs(ctx: &Context, a: &SbomArgs, format: Format) -> Result<Vec<Doc>, Failure> {
    let catalog = ctx.catalog(&a.mirrors).await?;
    let trust = ctx.trust()?;
    let host = HostTargets::detect();
    let mut docs = Vec::new();
    for q in &a.query {
        let query = parse_query(std::slice::from_ref(q))?;
        let chosen = catalog.best_match(&query, &host)?;
        let root = VerifiedEntry::fetch_any(&catalog, &chosen.spec.hash, &trust).await?;
        // The tarball digest of every node the caches hold, from its verified manifest.
        let mut digests: HashMap<String, String> = HashMap::new();
        for s in &root.specfile.nodes {
            if s.external.is_some() || catalog.sources(&s.hash).is_empty() {
                continue;
            }
            if let Ok(v) = VerifiedEntry::fetch_any(&catalog, &s.hash, &trust).await {
                digests.insert(s.hash.clone(), v.tarball.digest.clone());
            }
        }
        let extra = |s: &Spec| Extra {
            tarball_sha256: digests.get(&s.hash).cloned(),
            ..Extra::default()
        };
        let json = document(
            &Closure {
                specfile: &root.specfile,
                extra: &extra,
            },
            format,
        )?;
        docs.push(Doc {
            stem: stem(root.specfile.root()),
            json,
        });
    }
    Ok(docs)
}

fn write_docs(ctx: &Context, docs: &[Doc], out: Option<&Path>, format: Format) -> CmdResult {
    let ext = match format {
        Format::Spdx => "spdx.json",
        Format::CycloneDx => "cdx.json",
    };
    let write = |path: &Path, json: &serde_json::Value| -> CmdResult {
        let bytes = serde_json::to_vec_pretty(json)
            .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
        use std::io::Write;
        crate::fs::write_atomic_with(path, crate::fs::Mode::Umask(0o644), ".sf-cache-tmp-", |f| {
            f.write_all(&bytes)
        })
        .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", path.display())))?;
        Ok(())
    };
    match (out, docs) {
        (None, [one]) => {
            ctx.out.line(
                serde_json::to_string_pretty(&one.json)
                    .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?,
            )?;
        }
        (Some(file), [one]) if !file.is_dir() => {
            write(file, &one.json)?;
            ctx.out.line(format!("wrote {}", file.display()))?;
        }
        (Some(dir), docs) => {
            std::fs::create_dir_all(dir)?;
            for d in docs {
                let path = dir.join(format!("{}.{ext}", d.stem));
                write(&path, &d.json)?;
                ctx.out.line(format!("wrote {}", path.display()))?;
            }
        }
        (None, _) => {
            return Err(Failure::usage(
                "several documents: give -o DIR to write one file each",
            ))
        }
    }
    Ok(())
}
