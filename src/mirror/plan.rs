//! Planning a mirror: choose and verify the specs, and find what the destination lacks.

use super::*;

/// A blob to bring to the destination.
#[derive(Debug, Clone)]
pub(super) struct BlobCopy {
    pub(super) src_rel: String,
    pub(super) dest_rel: String,
    pub(super) digest: String,
    pub(super) size: Option<u64>,
    /// Already at the destination (HEAD said so).
    pub(super) present: bool,
}

/// One spec to write at the destination.
#[derive(Debug, Clone)]
pub(super) struct SpecItem {
    pub(super) entry: VerifiedEntry,
    /// Layout at the destination.
    pub(super) out: Layout,
    /// The signed metadata as fetched (its digest equals the verified one).
    pub(super) metadata: Bytes,
}

/// Everything [`execute`] needs; built by [`plan`].
pub struct MirrorPlan {
    pub(super) src: Mirror,
    pub(super) dest: Store,
    pub(super) items: Vec<SpecItem>,
    pub(super) blobs: Vec<BlobCopy>,
    pub(super) opts: MirrorOptions,
    pub(super) started: Instant,
    /// A destination directory this run will create (absent when planned): removed again, with
    /// what the run wrote, when the copy is refused.
    pub(super) created_root: Option<std::path::PathBuf>,
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
    let created_root = match dest {
        crate::store::Store::File(f) if !f.root().exists() => Some(f.root().to_path_buf()),
        _ => None,
    };
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
        created_root,
    })
}
