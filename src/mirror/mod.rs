//! Copying buildcaches between stores by digest (`sf-cache mirror`), and one-file bundles for
//! air-gapped sites (`mirror --bundle`, `import`).
//!
//! A mirror run has two halves:
//! 1. [`plan`]: read the source's index (or list its manifests), choose the specs (everything, or
//!    the closures of queries), fetch and verify every spec's signed metadata, and ask the
//!    destination which blobs it already has (HEAD, no download).
//! 2. [`execute`]: copy the missing blobs (downloaded into the blob cache by the
//!    [`Fetcher`](crate::fetch::Fetcher), which checks their sha256, then written atomically to
//!    the destination), then spec manifests / spec files, then keys, then `layout.json` and the
//!    index LAST, so the destination is a readable cache at every moment.
//!
//! Nothing that failed verification is ever written to the destination.

pub mod bundle;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::buildcache::catalog::is_link_or_run;
use crate::buildcache::layout::{self, media, Layout};
use crate::buildcache::manifest::{BlobRecord, Manifest};
use crate::buildcache::writer::copied::{
    put_if_changed, put_small_blob, tarball_dest, write_copied_metadata, CopiedDags, CopiedMetadata,
};
use crate::buildcache::writer::{read_manifest_unverified, CacheWriter, Signer, WriterError};
use crate::buildcache::{
    BuildcacheError, Catalog, IndexCache, Mirror, TrustContext, VerifiedEntry,
};
use crate::error::ErrorKind;
use crate::fetch::{BlobRequest, FetchError, Fetcher};
use crate::spec::{HostTargets, Query};
use crate::store::{Store, StoreError};

/// Errors of mirroring and bundles. [`MirrorError::kind`] says what sort of failure it is.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Buildcache(#[from] BuildcacheError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// A bundle member (or the bundle itself) does not match its manifest.
    #[error("bundle {bundle}: {reason}; the file is corrupt or was tampered with, do not use it")]
    Bundle { bundle: String, reason: String },
    #[error("{}: {source} (check the path, its permissions and free space)", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl MirrorError {
    /// Verification for anything that failed verification, the buildcache's kind for its
    /// errors, usage for usage errors, else a plain failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MirrorError::Buildcache(e) => e.kind(),
            MirrorError::Writer(WriterError::Buildcache(e)) => e.kind(),
            MirrorError::Fetch(FetchError::DigestMismatch { .. })
            | MirrorError::Fetch(FetchError::SizeMismatch { .. })
            | MirrorError::Bundle { .. } => ErrorKind::Verification,
            MirrorError::Usage(_) => ErrorKind::Usage,
            _ => ErrorKind::Failure,
        }
    }

    fn io(path: &Path, source: std::io::Error) -> MirrorError {
        MirrorError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What to mirror and how.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// Empty: the whole cache. Otherwise the closures of the best matches.
    pub queries: Vec<Query>,
    /// Also the build dependencies (recursively) that have binaries.
    pub with_build_deps: bool,
    /// Convert v2 specs to layout v3.
    pub to_v3: bool,
    /// Signs converted manifests (and is published as a key of the destination).
    pub signer: Option<Signer>,
    /// Enumerate manifests with `Store::list` instead of trusting the index.
    pub list_objects: bool,
    /// Concurrent metadata fetches and blob copies.
    pub jobs: usize,
}

/// The summary printed by `mirror` and `import` (`--json`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MirrorSummary {
    pub blobs_copied: u64,
    pub blobs_skipped: u64,
    pub bytes_copied: u64,
    /// Spec manifests (v3) or signed spec files (v2) in the destination for the mirrored specs.
    pub manifests: u64,
    /// Public keys copied (or published, for `--key`).
    pub keys: u64,
    pub seconds: f64,
    /// Specs mirrored.
    pub specs: u64,
    /// Converted manifests left unsigned (`--to-layout v3` without `--key`).
    pub unsigned_converted: u64,
}

/// A blob to bring to the destination.
#[derive(Debug, Clone)]
struct BlobCopy {
    src_rel: String,
    dest_rel: String,
    digest: String,
    size: Option<u64>,
    /// Already at the destination (HEAD said so).
    present: bool,
}

/// One spec to write at the destination.
#[derive(Debug, Clone)]
struct SpecItem {
    entry: VerifiedEntry,
    /// Layout at the destination.
    out: Layout,
    /// The signed metadata as fetched (its digest equals the verified one).
    metadata: Bytes,
}

/// Everything [`execute`] needs; built by [`plan`].
pub struct MirrorPlan {
    src: Mirror,
    dest: Store,
    items: Vec<SpecItem>,
    blobs: Vec<BlobCopy>,
    opts: MirrorOptions,
    started: Instant,
}

impl MirrorPlan {
    /// Bytes of the blobs still to copy whose size is known (for a progress bar).
    pub fn bytes_to_copy(&self) -> u64 {
        self.blobs
            .iter()
            .filter(|b| !b.present)
            .filter_map(|b| b.size)
            .sum()
    }

    /// Number of specs that will be mirrored.
    pub fn specs(&self) -> usize {
        self.items.len()
    }

    /// Blobs still to copy.
    pub fn blobs_to_copy(&self) -> usize {
        self.blobs.iter().filter(|b| !b.present).count()
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The hashes to mirror, in a stable order.
fn select(catalog: &Catalog, opts: &MirrorOptions) -> Result<Vec<String>, MirrorError> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    if opts.queries.is_empty() {
        for e in catalog.entries() {
            if e.in_buildcache && !e.is_external() && seen.insert(e.spec.hash.clone()) {
                out.push(e.spec.hash.clone());
            }
        }
        return Ok(out);
    }
    let host = HostTargets::detect();
    let mut stack: Vec<String> = Vec::new();
    for q in &opts.queries {
        let best = catalog.best_match(q, &host)?;
        for node in catalog.closure(&best.spec.hash)? {
            if !node.external && seen.insert(node.hash.clone()) {
                out.push(node.hash.clone());
                stack.push(node.hash);
            }
        }
    }
    if opts.with_build_deps {
        // Every dependency (any type) that has a binary, recursively, with its link/run closure.
        while let Some(h) = stack.pop() {
            let Some(spec) = catalog.spec(&h) else {
                continue;
            };
            for edge in &spec.dependencies {
                if seen.contains(&edge.hash) || catalog.sources(&edge.hash).is_empty() {
                    continue;
                }
                if !is_link_or_run(edge) {
                    debug!("adding build dependency {} /{}", edge.name, edge.hash);
                }
                for node in catalog.closure(&edge.hash)? {
                    if !node.external && seen.insert(node.hash.clone()) {
                        out.push(node.hash.clone());
                        stack.push(node.hash);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Read the source, choose and verify the specs, and check what the destination already has.
pub async fn plan(
    src: &Mirror,
    dest: &Store,
    trust: &TrustContext,
    index_cache: &IndexCache,
    opts: MirrorOptions,
) -> Result<MirrorPlan, MirrorError> {
    let started = Instant::now();
    let jobs = opts.jobs.max(1);
    let catalog = if opts.list_objects {
        Catalog::from_listing(src).await?
    } else {
        Catalog::load(vec![src.clone()], index_cache).await?
    };
    let hashes = select(&catalog, &opts)?;
    info!("{} specs to mirror from {}", hashes.len(), src.url);
    let catalog_ref = &catalog;
    let items: Vec<SpecItem> = stream::iter(hashes)
        .map(|h| async move {
            let entry = VerifiedEntry::fetch_any(catalog_ref, &h, trust).await?;
            // Re-read the metadata to copy its exact bytes; it must be what was verified.
            let metadata = src.get(&entry.metadata_path).await?;
            if sha256_hex(&metadata) != entry.metadata_digest {
                return Err(MirrorError::Buildcache(BuildcacheError::Verification {
                    what: format!("{}/{}", src.url, entry.metadata_path),
                    reason: "changed while it was being mirrored; run the mirror again".into(),
                }));
            }
            let out = if opts.to_v3 { Layout::V3 } else { entry.layout };
            Ok::<_, MirrorError>(SpecItem {
                entry,
                out,
                metadata,
            })
        })
        .buffered(jobs)
        .try_collect()
        .await?;

    let mut blobs: Vec<BlobCopy> = Vec::new();
    let mut planned: HashSet<String> = HashSet::new();
    for item in &items {
        let e = &item.entry;
        let tar_dest = tarball_dest(&e.tarball, item.out);
        let mut add = |b: BlobCopy| {
            if planned.insert(b.dest_rel.clone()) {
                blobs.push(b);
            }
        };
        add(BlobCopy {
            src_rel: e.tarball.path.clone(),
            dest_rel: tar_dest,
            digest: e.tarball.digest.clone(),
            size: e.tarball.size,
            present: false,
        });
        if let Some(s) = &e.spec_blob {
            add(BlobCopy {
                src_rel: s.path.clone(),
                dest_rel: s.path.clone(),
                digest: s.digest.clone(),
                size: s.size,
                present: false,
            });
        }
    }
    let dest_ref = dest;
    let presence: Vec<Option<u64>> = stream::iter(blobs.iter().cloned())
        .map(|b| async move {
            match dest_ref.head(&b.dest_rel).await? {
                Some(meta) if b.size.is_none() || meta.len.is_none() || meta.len == b.size => {
                    Ok::<_, MirrorError>(Some(meta.len.or(b.size).unwrap_or(0)))
                }
                Some(_) => {
                    warn!(
                        "{} has the wrong size; copying it again",
                        dest_ref.object_url(&b.dest_rel)
                    );
                    Ok(None)
                }
                None => Ok(None),
            }
        })
        .buffered(jobs * 4)
        .try_collect()
        .await?;
    for (b, p) in blobs.iter_mut().zip(presence) {
        if let Some(len) = p {
            b.present = true;
            b.size = b.size.or(Some(len));
        }
    }
    Ok(MirrorPlan {
        src: src.clone(),
        dest: dest.clone(),
        items,
        blobs,
        opts,
        started,
    })
}

/// Copy what [`plan`] found missing; write manifests, keys, `layout.json` and the index (last).
pub async fn execute(plan: MirrorPlan, fetcher: &Fetcher) -> Result<MirrorSummary, MirrorError> {
    let MirrorPlan {
        src,
        dest,
        items,
        mut blobs,
        opts,
        started,
    } = plan;
    let jobs = opts.jobs.max(1);
    let mut summary = MirrorSummary {
        specs: items.len() as u64,
        ..Default::default()
    };

    // 1. Blobs: downloaded into the blob cache (sha256 checked), then written atomically.
    let (src_ref, dest_ref) = (&src, &dest);
    let copied: Vec<(usize, u64)> =
        stream::iter(blobs.iter().enumerate().filter(|(_, b)| !b.present))
            .map(|(i, b)| async move {
                let was_cached = fetcher.cache().contains(&b.digest);
                let req = BlobRequest::new(
                    b.digest.clone(),
                    b.size,
                    vec![(src_ref.store.clone(), b.src_rel.clone())],
                );
                let path = fetcher.fetch_one(&req).await?;
                let len = std::fs::metadata(&path)
                    .map_err(|e| MirrorError::io(&path, e))?
                    .len();
                dest_ref.put_file(&b.dest_rel, &path).await?;
                debug!("copied {} ({len} bytes)", b.dest_rel);
                if !was_cached {
                    // Keep the user's blob cache from growing by a whole mirror.
                    let _ = fetcher.cache().remove(&b.digest);
                }
                Ok::<_, MirrorError>((i, len))
            })
            .buffer_unordered(jobs)
            .try_collect()
            .await?;
    for (i, len) in copied {
        blobs[i].size = Some(len);
        summary.blobs_copied += 1;
        summary.bytes_copied += len;
    }
    summary.blobs_skipped = blobs.iter().filter(|b| b.present).count() as u64;
    let sizes: HashMap<&str, u64> = blobs
        .iter()
        .filter_map(|b| Some((b.dest_rel.as_str(), b.size?)))
        .collect();

    // 2. Spec manifests / spec files (after every blob they name).
    let mut dags = CopiedDags::default();
    for item in &items {
        let e = &item.entry;
        let tar_rel = tarball_dest(&e.tarball, item.out);
        let written = write_copied_metadata(
            &dest,
            &CopiedMetadata {
                from: e.layout,
                out: item.out,
                bytes: &item.metadata,
                path: &e.metadata_path,
                tarball: &e.tarball,
                tarball_len: sizes.get(tar_rel.as_str()).copied(),
            },
            opts.signer.as_ref(),
        )
        .await?;
        match written.spec_blob_written {
            Some(len) => {
                summary.blobs_copied += 1;
                summary.bytes_copied += len;
            }
            None if e.layout != item.out => summary.blobs_skipped += 1,
            None => {}
        }
        if !written.signed {
            summary.unsigned_converted += 1;
        }
        summary.manifests += 1;
        dags.add(item.out, &e.specfile.raw_nodes);
    }

    // 3. Keys.
    let want_v3 = dags.has_v3() || (items.is_empty() && opts.to_v3);
    let mut fingerprints = copy_keys(&src, &dest, opts.to_v3).await?;
    if want_v3 {
        if let Some(signer) = &opts.signer {
            if opts.to_v3 {
                CacheWriter::new(dest.clone())
                    .with_signer(signer.clone())
                    .publish_keys()
                    .await?;
                fingerprints.insert(signer.fingerprint.to_ascii_uppercase());
            }
        }
    }
    summary.keys = fingerprints.len() as u64;

    // 4. layout.json and the indexes, last.
    if want_v3 {
        match src.get_optional(layout::V3_LAYOUT_JSON).await? {
            Some(b) if !opts.to_v3 => {
                put_if_changed(&dest, layout::V3_LAYOUT_JSON, b).await?;
            }
            _ => CacheWriter::new(dest.clone()).ensure_layout_json().await?,
        }
    }
    dags.write_indexes(&dest, want_v3).await?;
    summary.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    info!(
        "mirrored {} specs from {} to {}",
        summary.specs,
        src.url,
        dest.display_url()
    );
    Ok(summary)
}

/// Write a small object unless the destination already holds exactly these bytes.
fn is_fingerprint(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn key_index_fingerprints(bytes: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("keys").and_then(Value::as_object).cloned())
        .map(|m| m.keys().filter(|k| is_fingerprint(k)).cloned().collect())
        .unwrap_or_default()
}

/// Copy the keys the source publishes (v3 key manifests and blobs, key index last; v2 `_pgp/`).
/// With `to_v3`, v2 keys are published as v3 key manifests. Keys are public data: they are
/// copied as published (blob digests checked) and trusted only by pin or by the user.
async fn copy_keys(
    src: &Mirror,
    dest: &Store,
    to_v3: bool,
) -> Result<HashSet<String>, MirrorError> {
    let mut count: HashSet<String> = HashSet::new();
    // v3
    let index_manifest = src.get_optional(layout::V3_KEY_INDEX_MANIFEST).await?;
    let mut fprs: Vec<String> = Vec::new();
    let mut index_blob: Option<(BlobRecord, Bytes)> = None;
    if let Some(text) = &index_manifest {
        let m = read_manifest_unverified(text, layout::V3_KEY_INDEX_MANIFEST)?;
        if let Some(rec) = m.data.first() {
            let blob = src.get_verified_blob(rec).await?;
            fprs = key_index_fingerprints(&blob);
            index_blob = Some((rec.clone(), blob));
        }
    } else if let Ok(names) = src.store.list(layout::V3_KEY_DIR).await {
        fprs = names
            .iter()
            .filter_map(|n| n.strip_prefix(layout::V3_KEY_DIR))
            .filter_map(|n| n.strip_suffix(".key.manifest.json"))
            .filter(|f| is_fingerprint(f))
            .map(str::to_string)
            .collect();
    }
    for fpr in &fprs {
        let path = layout::v3_key_manifest(fpr);
        let Some(text) = src.get_optional(&path).await? else {
            continue;
        };
        let m = read_manifest_unverified(&text, &path)?;
        for rec in &m.data {
            if !dest.exists(&rec.path()).await? {
                let blob = src.get_verified_blob(rec).await?;
                dest.put_bytes(&rec.path(), blob).await?;
            }
        }
        put_if_changed(dest, &path, text).await?;
        count.insert(fpr.to_ascii_uppercase());
    }
    if let (Some((rec, blob)), Some(text)) = (index_blob, index_manifest) {
        if !dest.exists(&rec.path()).await? {
            dest.put_bytes(&rec.path(), blob).await?;
        }
        put_if_changed(dest, layout::V3_KEY_INDEX_MANIFEST, text).await?;
    }
    // v2
    if let Some(index) = src.get_optional(layout::V2_KEY_INDEX).await? {
        let mut converted = false;
        for fpr in key_index_fingerprints(&index) {
            let path = layout::v2_key_file(&fpr);
            let Some(key) = src.get_optional(&path).await? else {
                continue;
            };
            if crate::trust::parse_keys(&key).is_err() {
                warn!("{}/{path} is not a usable public key; skipped", src.url);
                continue;
            }
            if to_v3 {
                if fprs.contains(&fpr) {
                    continue;
                }
                let (rec, _) = put_small_blob(dest, key.to_vec(), media::KEY, "none").await?;
                let m = Manifest {
                    version: 3,
                    data: vec![rec],
                };
                put_if_changed(
                    dest,
                    &layout::v3_key_manifest(&fpr),
                    Bytes::from(m.to_spack_json().into_bytes()),
                )
                .await?;
                converted = true;
            } else {
                put_if_changed(dest, &path, key).await?;
            }
            count.insert(fpr.to_ascii_uppercase());
        }
        if converted {
            CacheWriter::new(dest.clone()).write_key_index().await?;
        } else if !to_v3 {
            put_if_changed(dest, layout::V2_KEY_INDEX, index).await?;
        }
    }
    Ok(count)
}

/// Relative paths of every regular file under `dir`, sorted (for bundles).
pub(crate) fn walk_files(dir: &Path) -> Result<Vec<String>, MirrorError> {
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<String, ()>) -> Result<(), MirrorError> {
        for entry in std::fs::read_dir(dir).map_err(|e| MirrorError::io(dir, e))? {
            let entry = entry.map_err(|e| MirrorError::io(dir, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| MirrorError::io(&path, e))?;
            if ft.is_dir() {
                rec(root, &path, out)?;
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|p| p.to_str())
                    .map(|s| s.replace('\\', "/"));
                match rel {
                    Some(r) if !r.split('/').any(|s| s.starts_with(".sf-tmp-")) => {
                        out.insert(r, ());
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    rec(dir, dir, &mut out)?;
    Ok(out.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture key's fingerprint, read from `shared/fixtures/keys/sf-cache-fixture.pub.asc`
    /// (`$SF_FIXTURES`, else `../shared/fixtures` beside the checkout, else `/work/shared/fixtures`).
    fn fixture_fingerprint() -> String {
        let candidates = [
            std::env::var_os("SF_FIXTURES").map(std::path::PathBuf::from),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")),
            Some(std::path::PathBuf::from("/work/shared/fixtures")),
        ];
        let key = candidates
            .into_iter()
            .flatten()
            .map(|d| d.join("keys/sf-cache-fixture.pub.asc"))
            .find(|p| p.is_file())
            .expect("fixtures not found: set SF_FIXTURES to the shared/fixtures directory");
        let bytes = std::fs::read(&key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        let keys = crate::trust::parse_keys(&bytes).unwrap();
        assert_eq!(keys.len(), 1, "{}: expected one key", key.display());
        keys[0].fingerprint.clone()
    }

    #[test]
    fn key_index_parsing() {
        let fpr = fixture_fingerprint();
        let j = format!(r#"{{"keys":{{"{fpr}":{{}},"../evil":{{}}}}}}"#);
        assert_eq!(key_index_fingerprints(j.as_bytes()), vec![fpr.clone()]);
        assert!(key_index_fingerprints(b"{").is_empty());
    }

    #[test]
    fn error_kinds() {
        let e = MirrorError::Fetch(FetchError::DigestMismatch {
            url: "u".into(),
            expected: "a".into(),
            actual: "b".into(),
        });
        assert_eq!(e.kind(), ErrorKind::Verification);
        let e = MirrorError::Bundle {
            bundle: "b".into(),
            reason: "r".into(),
        };
        assert_eq!(e.kind(), ErrorKind::Verification);
        assert_eq!(MirrorError::Usage("x".into()).kind(), ErrorKind::Usage);
    }
}
