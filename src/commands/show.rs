//! `sf-cache show QUERY --mirror M…`: the chosen spec, its dependencies, blobs, signature and
//! closure. Verifies the signed metadata of the whole closure.

use std::collections::HashSet;

use serde::Serialize;

use super::{parse_query, CmdResult, Context, Failure};
use crate::buildcache::catalog::short;
use crate::buildcache::entry::verify_blob_by_download;
use crate::buildcache::{BlobRef, Catalog, ClosureNode, SignatureReport, VerifiedEntry};
use crate::cli::ShowArgs;
use crate::spec::{HostTargets, Spec, VariantValue};

#[derive(Debug, Serialize)]
struct ShownSpec {
    name: String,
    version: String,
    hash: String,
    namespace: Option<String>,
    arch: Option<String>,
    compiler: Option<String>,
    variants: serde_json::Map<String, serde_json::Value>,
    mirror: String,
    layout: String,
}

#[derive(Debug, Serialize)]
struct ShownBlob {
    media_type: String,
    digest: String,
    size: Option<u64>,
    verified: bool,
}

#[derive(Debug, Serialize)]
struct ShownDependency {
    name: String,
    version: String,
    hash: String,
    deptypes: Vec<String>,
    virtuals: Vec<String>,
    external: bool,
}

#[derive(Debug, Serialize)]
struct ClosureSignature {
    name: String,
    hash: String,
    mirror: String,
    signature: SignatureReport,
    tarball: ShownBlob,
}

#[derive(Debug, Serialize)]
struct ShowReport {
    spec: ShownSpec,
    signature: SignatureReport,
    blobs: Vec<ShownBlob>,
    dependencies: Vec<ShownDependency>,
    closure: Vec<ClosureNode>,
    closure_verification: Vec<ClosureSignature>,
    warnings: Vec<String>,
}

fn variants_json(spec: &Spec) -> serde_json::Map<String, serde_json::Value> {
    spec.variants
        .iter()
        .map(|(k, v)| {
            let value = match v {
                VariantValue::Bool(b) => serde_json::Value::Bool(*b),
                VariantValue::Str(s) => serde_json::Value::String(s.clone()),
                VariantValue::List(l) => l.iter().cloned().map(serde_json::Value::String).collect(),
            };
            (k.clone(), value)
        })
        .collect()
}

impl Context {
    /// Whether a verified copy of this blob is already in the local blob cache.
    fn blob_cached(&self, blob: &BlobRef) -> bool {
        self.blob_cache_path(&blob.algorithm, &blob.digest)
            .is_file()
    }
}

pub async fn run(ctx: &Context, args: &ShowArgs) -> CmdResult {
    let query = parse_query(&args.query)?;
    // Leaked on purpose: a large catalog takes longer to free than the rest of the command, and
    // the process ends right after this command.
    let catalog: &'static Catalog = Box::leak(Box::new(ctx.catalog(&args.mirrors).await?));
    let host = HostTargets::detect();
    let chosen = catalog.best_match(&query, &host)?;
    let hash = chosen.spec.hash.clone();
    let closure = catalog.closure(&hash)?;
    let trust = ctx.trust()?;

    // Verify the signed metadata of every binary in the closure, concurrently.
    let binaries: Vec<&ClosureNode> = closure.iter().filter(|n| !n.external).collect();
    let verified = futures_util::future::join_all(
        binaries
            .iter()
            .map(|n| VerifiedEntry::fetch_any(catalog, &n.hash, &trust)),
    )
    .await;
    let mut entries = Vec::new();
    for v in verified {
        entries.push(v?);
    }
    let mut closure_verification = Vec::new();
    for (node, entry) in binaries.iter().zip(&entries) {
        let mirror = &catalog.mirrors[entry.mirror];
        let verified = if args.verify_blobs {
            verify_blob_by_download(mirror, &entry.tarball).await?;
            true
        } else {
            ctx.blob_cached(&entry.tarball)
        };
        closure_verification.push(ClosureSignature {
            name: node.name.clone(),
            hash: node.hash.clone(),
            mirror: mirror.name.clone(),
            signature: entry.signature.clone(),
            tarball: ShownBlob {
                media_type: entry.tarball.media_type.clone(),
                digest: format!("{}:{}", entry.tarball.algorithm, entry.tarball.digest),
                size: entry.tarball.size,
                verified,
            },
        });
    }
    let root = entries
        .iter()
        .find(|e| e.hash == hash)
        .ok_or_else(|| Failure::new(1, format!("internal: /{hash} missing from its closure")))?;
    let root_tar_verified = closure_verification
        .iter()
        .find(|c| c.hash == hash)
        .is_some_and(|c| c.tarball.verified);
    let mut blobs = vec![ShownBlob {
        media_type: root.tarball.media_type.clone(),
        digest: format!("{}:{}", root.tarball.algorithm, root.tarball.digest),
        size: root.tarball.size,
        verified: root_tar_verified,
    }];
    if let Some(s) = &root.spec_blob {
        blobs.push(ShownBlob {
            media_type: s.media_type.clone(),
            digest: format!("{}:{}", s.algorithm, s.digest),
            size: s.size,
            verified: true,
        });
    }
    let spec = &chosen.spec;
    let mirror = &catalog.mirrors[root.mirror];
    let report = ShowReport {
        spec: ShownSpec {
            name: spec.name.clone(),
            version: spec.version.clone(),
            hash: spec.hash.clone(),
            namespace: spec.namespace.clone(),
            arch: spec
                .arch
                .as_ref()
                .map(|a| format!("{}-{}-{}", a.platform, a.os, a.target)),
            compiler: catalog.compiler_of(spec),
            variants: variants_json(spec),
            mirror: mirror.name.clone(),
            layout: root.layout.to_string(),
        },
        signature: root.signature.clone(),
        blobs,
        dependencies: spec
            .dependencies
            .iter()
            .map(|d| {
                let dep = catalog.spec(&d.hash);
                ShownDependency {
                    name: d.name.clone(),
                    version: dep.map(|s| s.version.clone()).unwrap_or_default(),
                    hash: d.hash.clone(),
                    deptypes: d.deptypes.names().iter().map(|s| s.to_string()).collect(),
                    virtuals: d.virtuals.clone(),
                    external: dep.is_some_and(|s| s.external.is_some()),
                }
            })
            .collect(),
        closure,
        closure_verification,
        warnings: entries.iter().flat_map(|e| e.warnings.clone()).collect(),
    };
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if ctx.out.json {
        ctx.out.json(&report)?;
    } else {
        print_human(ctx, catalog, &report)?;
    }
    Ok(())
}

fn print_human(ctx: &Context, catalog: &Catalog, r: &ShowReport) -> std::io::Result<()> {
    let o = &ctx.out;
    let s = &r.spec;
    o.line(format!("{}@{} /{}", s.name, s.version, s.hash))?;
    let field = |k: &str, v: &str| format!("  {k:<10} {v}");
    if let Some(ns) = &s.namespace {
        o.line(field("namespace", ns))?;
    }
    if let Some(a) = &s.arch {
        o.line(field("arch", a))?;
    }
    o.line(field("compiler", s.compiler.as_deref().unwrap_or("-")))?;
    if !s.variants.is_empty() {
        let v: Vec<String> = s
            .variants
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::Bool(true) => format!("+{k}"),
                serde_json::Value::Bool(false) => format!("~{k}"),
                serde_json::Value::String(x) => format!("{k}={x}"),
                serde_json::Value::Array(xs) => format!(
                    "{k}={}",
                    xs.iter()
                        .map(|x| x.as_str().unwrap_or("").to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                other => format!("{k}={other}"),
            })
            .collect();
        o.line(field("variants", &v.join(" ")))?;
    }
    o.line(field("mirror", &format!("{} ({})", s.mirror, s.layout)))?;
    let sig = &r.signature;
    o.line(field(
        "signature",
        &format!(
            "{}{}{}",
            sig.status,
            sig.fingerprint
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default(),
            sig.user_id
                .as_deref()
                .map(|u| format!("  {u}"))
                .unwrap_or_default()
        ),
    ))?;
    o.line("blobs:")?;
    for b in &r.blobs {
        o.line(format!(
            "  {}  {}  {}  {}",
            b.media_type,
            b.digest,
            b.size
                .map(|s| format!("{s} B"))
                .unwrap_or_else(|| "? B".into()),
            if b.verified {
                "verified"
            } else {
                "not downloaded (use --verify-blobs)"
            }
        ))?;
    }
    o.line("dependencies:")?;
    let mut seen = HashSet::new();
    print_tree(o, catalog, &s.hash, 1, &mut seen)?;
    o.line("closure (install order):")?;
    for n in &r.closure {
        let sig = r
            .closure_verification
            .iter()
            .find(|c| c.hash == n.hash)
            .map(|c| format!("signature {}", c.signature.status))
            .unwrap_or_else(|| {
                let path = catalog
                    .spec(&n.hash)
                    .and_then(|s| s.external.as_ref())
                    .and_then(|e| e.path.clone())
                    .unwrap_or_default();
                format!("external {path}")
            });
        o.line(format!(
            "  {}@{} /{}  {sig}",
            n.name,
            n.version,
            short(&n.hash)
        ))?;
    }
    Ok(())
}

fn print_tree(
    o: &crate::ui::Output,
    catalog: &Catalog,
    hash: &str,
    depth: usize,
    seen: &mut HashSet<String>,
) -> std::io::Result<()> {
    let Some(spec) = catalog.spec(hash) else {
        return Ok(());
    };
    for d in &spec.dependencies {
        let dep = catalog.spec(&d.hash);
        let version = dep.map(|s| s.version.as_str()).unwrap_or("?");
        let external = if dep.is_some_and(|s| s.external.is_some()) {
            " (external)"
        } else {
            ""
        };
        let again = !seen.insert(d.hash.clone());
        o.line(format!(
            "{}[{}] {}@{} /{}{external}{}",
            "  ".repeat(depth),
            d.deptypes.names().join(","),
            d.name,
            version,
            short(&d.hash),
            if again && dep.is_some_and(|s| !s.dependencies.is_empty()) {
                " …"
            } else {
                ""
            }
        ))?;
        if !again {
            print_tree(o, catalog, &d.hash, depth + 1, seen)?;
        }
    }
    Ok(())
}
