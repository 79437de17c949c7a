//! Copying what a plan found missing: blobs, metadata, keys, `layout.json` and the indexes last.

use super::*;

use super::plan::BlobCopy;
use crate::buildcache::writer::ChecksumWriter;
use crate::store::FileStore;

/// Copy what [`plan`] found missing; write manifests, keys, `layout.json` and the index (last).
pub async fn execute(plan: MirrorPlan, fetcher: &Fetcher) -> Result<MirrorSummary, MirrorError> {
    let MirrorPlan {
        src,
        dest,
        items,
        mut blobs,
        opts,
        started,
        created_root,
    } = plan;
    let jobs = opts.jobs.max(1);
    let mut summary = MirrorSummary {
        specs: items.len() as u64,
        ..Default::default()
    };

    // 1. Blobs: downloaded into the blob cache (sha256 checked), then written atomically. After
    // a refusal no new copy starts, those under way finish, and everything this run wrote is
    // removed again: a refused mirror leaves the destination as it found it.
    let (src_ref, dest_ref) = (&src, &dest);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let written = std::sync::Mutex::new(Vec::<String>::new());
    let (failed_ref, written_ref) = (&failed, &written);
    let results: Vec<Result<Option<(usize, u64)>, MirrorError>> =
        stream::iter(blobs.iter().enumerate().filter(|(_, b)| !b.present))
            .map(|(i, b)| async move {
                if failed_ref.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok(None);
                }
                let one = async {
                    // Two repositories of one registry: a mount, no transfer.
                    if dest_ref
                        .copy_within(&src_ref.store, &b.src_rel, &b.dest_rel)
                        .await?
                    {
                        if let Ok(mut w) = written_ref.lock() {
                            w.push(b.dest_rel.clone());
                        }
                        debug!("mounted {}", b.dest_rel);
                        return Ok::<_, MirrorError>((i, b.size.unwrap_or(0)));
                    }
                    // Two local directories: copied directly, checked while copying.
                    if let (Store::File(from), Store::File(to)) = (&src_ref.store, dest_ref) {
                        let len = copy_local(from, to, b).await?;
                        if let Ok(mut w) = written_ref.lock() {
                            w.push(b.dest_rel.clone());
                        }
                        debug!("copied {} ({len} bytes)", b.dest_rel);
                        return Ok::<_, MirrorError>((i, len));
                    }
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
                    if let Ok(mut w) = written_ref.lock() {
                        w.push(b.dest_rel.clone());
                    }
                    debug!("copied {} ({len} bytes)", b.dest_rel);
                    if !was_cached {
                        // Keep the user's blob cache from growing by a whole mirror.
                        let _ = fetcher.cache().remove(&b.digest);
                    }
                    Ok::<_, MirrorError>((i, len))
                }
                .await;
                if one.is_err() {
                    failed_ref.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                one.map(Some)
            })
            .buffer_unordered(jobs)
            .collect()
            .await;
    let mut copied = Vec::new();
    let mut refusal = None;
    for r in results {
        match r {
            Ok(Some(c)) => copied.push(c),
            Ok(None) => {}
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    if let Some(e) = refusal {
        let written = written.into_inner().unwrap_or_default();
        undo(&dest, &written, created_root.as_deref()).await;
        return Err(e);
    }
    if let (Store::File(_), Store::File(to)) = (&src.store, &dest) {
        // The blobs copied without fsyncs (copy_local) are durable before any manifest or
        // index names them.
        if !copied.is_empty() {
            if let Err(e) = to.sync().await {
                let written = written.into_inner().unwrap_or_default();
                undo(&dest, &written, created_root.as_deref()).await;
                return Err(e.into());
            }
        }
    }
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

/// Copy one blob between two local directories: read once, its sha256 (and size, when known)
/// checked while it is copied into a temporary file beside its destination, renamed into place
/// only when it matched. No blob cache and no fsync per blob (two per blob made a local mirror
/// of many small blobs fsync-bound): the caller syncs the destination once, before writing any
/// manifest or index.
async fn copy_local(from: &FileStore, to: &FileStore, b: &BlobCopy) -> Result<u64, MirrorError> {
    let src = from.path_of(&b.src_rel)?;
    let url = format!("{}/{}", from.display_url(), b.src_rel);
    let (to, dest_rel, expected, size) = (to.clone(), b.dest_rel.clone(), b.digest.clone(), b.size);
    let expected = crate::fetch::normalize_digest(&expected)?;
    tokio::task::spawn_blocking(move || -> Result<u64, MirrorError> {
        let input = std::fs::File::open(&src).map_err(|e| MirrorError::io(&src, e))?;
        let mut input = std::io::BufReader::with_capacity(256 << 10, input);
        let mut seen = None;
        let wrote = to.put_unsynced_blocking(&dest_rel, |f| {
            let mut w = ChecksumWriter::new(f);
            std::io::copy(&mut input, &mut w)?;
            let (actual, len, _) = w.finish();
            let ok = actual == expected && size.is_none_or(|s| s == len);
            seen = Some((actual, len));
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "blob does not match its digest",
                ))
            }
        });
        if wrote.is_err() {
            prune_empty_parents(to.root(), &dest_rel);
        }
        let Some((actual, len)) = seen else {
            // A read or write error before the end of the blob.
            return Err(wrote.err().map_or_else(
                || MirrorError::Usage("a blob copy ended without a result".into()),
                MirrorError::from,
            ));
        };
        if actual != expected {
            return Err(FetchError::DigestMismatch {
                url,
                expected,
                actual,
            }
            .into());
        }
        if let Some(want) = size.filter(|&s| s != len) {
            return Err(FetchError::SizeMismatch {
                url,
                expected: want,
                actual: len,
            }
            .into());
        }
        wrote?;
        Ok(len)
    })
    .await
    .map_err(|e| MirrorError::Usage(format!("a copy task failed: {e}")))?
}

/// Remove the directories above `rel` in a file store at `root` that are left empty: those a
/// refused blob needed and nothing else uses (`blobs/sha256/ab`, …).
fn prune_empty_parents(root: &Path, rel: &str) {
    let mut dir = root.join(rel);
    while dir.pop() && dir != root && std::fs::remove_dir(&dir).is_ok() {}
}

/// Remove what a refused run wrote; then, when the run created the destination directory, the
/// directories it left empty (never a file it did not write).
async fn undo(dest: &Store, written: &[String], created_root: Option<&Path>) {
    for rel in written {
        if let Err(e) = dest.delete(rel).await {
            tracing::warn!("could not remove {rel} after the refusal: {e}");
        }
        if let Store::File(f) = dest {
            prune_empty_parents(f.root(), rel);
        }
    }
    if let Some(root) = created_root {
        fn prune(dir: &Path) {
            for e in crate::fs::sorted_entries(dir).unwrap_or_default() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    prune(&e.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        prune(root);
    }
}

fn is_fingerprint(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(super) fn key_index_fingerprints(bytes: &[u8]) -> Vec<String> {
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
