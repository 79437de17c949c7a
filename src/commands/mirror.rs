//! `sf-cache mirror` and `sf-cache import`.

use std::sync::Arc;

use crate::buildcache::writer::Signer;
use crate::buildcache::{IndexCache, Mirror};
use crate::cli::{ImportArgs, MirrorCmdArgs};
use crate::fetch::{BlobCache, Fetcher};
use crate::mirror::{self, bundle, MirrorError, MirrorOptions, MirrorSummary};
use crate::store::Store;
use crate::ui::progress::DownloadProgress;

use super::{parse_query, CmdResult, Context, Failure};

impl From<MirrorError> for Failure {
    fn from(e: MirrorError) -> Failure {
        Failure::new(super::exit::code(e.kind()), e.to_string())
    }
}

fn read_signer(a: &MirrorCmdArgs) -> Result<Option<Signer>, Failure> {
    let Some(path) = &a.key else {
        return Ok(None);
    };
    super::read_signing_key(path, a.passphrase_file.as_deref())?
        .signer()
        .map(Some)
}

/// Plan and copy `src` → `dest`, with progress bars unless quiet/json.
async fn copy(
    ctx: &Context,
    src: &Mirror,
    dest: &Store,
    index_cache: &IndexCache,
    opts: MirrorOptions,
) -> Result<MirrorSummary, Failure> {
    let trust = ctx.trust()?;
    let jobs = opts.jobs;
    let plan = mirror::plan(src, dest, &trust, index_cache, opts).await?;
    let progress = Arc::new(DownloadProgress::new(
        ctx.global.quiet || ctx.global.json,
        plan.bytes_to_copy(),
    ));
    let cache =
        BlobCache::open(ctx.paths.blob_cache_dir()).map_err(|e| Failure::new(1, e.to_string()))?;
    let fetcher = Fetcher::new(cache, jobs, progress.clone());
    let result = mirror::execute(plan, &fetcher).await;
    progress.done();
    Ok(result?)
}

fn report(ctx: &Context, s: &MirrorSummary, what: &str) -> CmdResult {
    if ctx.global.json {
        ctx.out.json(s)?;
        return Ok(());
    }
    ctx.out.line(format!(
        "{what}: {} specs, {} blobs copied ({} bytes), {} already present, {} manifests, {} keys, {:.1} s",
        s.specs, s.blobs_copied, s.bytes_copied, s.blobs_skipped, s.manifests, s.keys, s.seconds
    ))?;
    Ok(())
}

fn warn_unsigned(ctx: &Context, s: &MirrorSummary) -> CmdResult {
    if s.unsigned_converted > 0 && !ctx.global.json {
        ctx.out.line(format!(
            "note: {} converted manifests are UNSIGNED (no --key given); readers need --allow-unsigned",
            s.unsigned_converted
        ))?;
    }
    if s.unsigned_converted > 0 {
        tracing::warn!(
            "{} converted manifests are unsigned; pass --key FILE to sign them",
            s.unsigned_converted
        );
    }
    Ok(())
}

pub async fn run(ctx: &Context, a: &MirrorCmdArgs) -> CmdResult {
    let mut words = a.query.clone();
    let dest = match (&a.bundle, &a.dest) {
        (Some(_), Some(d)) => {
            // With --bundle every word after SRC is a query.
            words.insert(0, d.clone());
            None
        }
        (Some(_), None) => None,
        (None, Some(d)) => Some(d.clone()),
        (None, None) => {
            return Err(Failure::usage(
                "give a destination (`sf-cache mirror SRC DEST`) or --bundle FILE",
            ))
        }
    };
    let mut queries = Vec::new();
    for w in &words {
        queries.push(parse_query(std::slice::from_ref(w))?);
    }
    let signer = read_signer(a)?;
    // A registry holds layout v3 only: what comes from a v2 cache is converted.
    let to_oci = dest.as_deref().is_some_and(|d| {
        let url = ctx.config.mirror_named(d).map_or(d, |m| m.url.as_str());
        crate::buildcache::oci::is_oci_url(url)
    });
    let to_v3 = a.to_layout.as_deref() == Some("v3") || to_oci;
    if signer.is_some() && !to_v3 {
        tracing::warn!(
            "--key is only used with --to-layout v3; manifests are copied as signed at the source"
        );
    }
    let opts = MirrorOptions {
        queries,
        with_build_deps: a.with_build_deps,
        to_v3,
        signer,
        list_objects: a.list_objects,
        jobs: a.jobs.or(ctx.config.install.jobs).unwrap_or(8).max(1),
    };
    let src = ctx.open_mirror(&a.src)?;
    let index_cache = ctx.index_cache();
    match (dest, &a.bundle) {
        (Some(d), _) => {
            let store = ctx.open_writable("destination", &d)?;
            let s = copy(ctx, &src, &store, &index_cache, opts).await?;
            warn_unsigned(ctx, &s)?;
            report(ctx, &s, &format!("mirrored to {}", store.display_url()))
        }
        (None, Some(file)) => {
            std::fs::create_dir_all(&ctx.paths.tmp_dir)?;
            let staging = tempfile::Builder::new()
                .prefix("bundle-")
                .tempdir_in(&ctx.paths.tmp_dir)?;
            let tree = staging.path().join("tree");
            std::fs::create_dir_all(&tree)?;
            let store = Store::open(&tree.display().to_string(), &ctx.store_options(None))?;
            let s = copy(ctx, &src, &store, &index_cache, opts).await?;
            warn_unsigned(ctx, &s)?;
            let (tree2, out) = (tree.clone(), file.clone());
            let info = tokio::task::spawn_blocking(move || bundle::write_bundle(&tree2, &out))
                .await
                .map_err(|e| Failure::new(1, format!("bundle writer failed: {e}")))??;
            if ctx.global.json {
                let mut v = serde_json::to_value(&s)?;
                v["bundle"] = serde_json::Value::String(file.display().to_string());
                v["bundle_bytes"] = info.bundle_bytes.into();
                v["members"] = (info.members as u64).into();
                ctx.out.json(&v)?;
                return Ok(());
            }
            report(ctx, &s, "collected")?;
            ctx.out.line(format!(
                "wrote bundle {} ({} members, {} bytes)",
                file.display(),
                info.members,
                info.bundle_bytes
            ))?;
            Ok(())
        }
        (None, None) => Ok(()),
    }
}

pub async fn import(ctx: &Context, a: &ImportArgs) -> CmdResult {
    let dest = ctx.open_writable("destination", &a.dest)?;
    std::fs::create_dir_all(&ctx.paths.tmp_dir)?;
    let staging = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(&ctx.paths.tmp_dir)?;
    let tree = staging.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    let (file, tree2) = (a.file.clone(), tree.clone());
    tokio::task::spawn_blocking(move || bundle::extract_bundle(&file, &tree2))
        .await
        .map_err(|e| Failure::new(1, format!("bundle reader failed: {e}")))??;
    let store = Store::open(&tree.display().to_string(), &ctx.store_options(None))?;
    let src = Mirror::new(format!("bundle {}", a.file.display()), store, true);
    let index_cache = IndexCache::new(staging.path().join("index"));
    let opts = MirrorOptions {
        jobs: a.jobs.or(ctx.config.install.jobs).unwrap_or(8).max(1),
        ..Default::default()
    };
    let s = copy(ctx, &src, &dest, &index_cache, opts).await?;
    report(ctx, &s, &format!("imported into {}", dest.display_url()))
}
