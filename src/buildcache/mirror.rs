//! One configured mirror: its store, its trust setting, and its indexes (v3 and v2, each cached
//! locally by checksum so that a stale CDN copy is never refetched needlessly).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::index::Index;
use super::layout::{self, media, Layout};
use super::manifest::Manifest;
use super::BuildcacheError;
use crate::store::{Store, StoreError};

/// A mirror as the user named it.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Config name, or the location as given.
    pub name: String,
    /// Where it is (no credentials).
    pub url: String,
    pub store: Store,
    /// Whether signatures are required for this mirror (`signed = false` in the config lifts it).
    pub signed: bool,
    /// Local copies of small metadata (manifests, spec files, keys), for `--offline`.
    pub meta_cache: Option<PathBuf>,
    /// Never touch the network: read metadata from `meta_cache` only.
    pub offline: bool,
}

/// Metadata objects up to this size are kept in the local metadata cache.
const META_CACHE_MAX: usize = 1 << 20;

/// The directory name of a mirror in the local caches.
pub fn mirror_id(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..8])
}

/// An index read from one mirror in one layout.
#[derive(Debug, Clone)]
pub struct LoadedIndex {
    pub layout: Layout,
    /// sha256 of the index text.
    pub checksum: String,
    pub index: Index,
    pub from_cache: bool,
}

/// Local cache of index texts, keyed by mirror and checksum.
#[derive(Debug, Clone)]
pub struct IndexCache {
    dir: PathBuf,
}

impl IndexCache {
    pub fn new(dir: impl Into<PathBuf>) -> IndexCache {
        IndexCache { dir: dir.into() }
    }

    fn path(&self, mirror_url: &str, layout: Layout, checksum: &str) -> PathBuf {
        self.dir
            .join(mirror_id(mirror_url))
            .join(format!("{layout}-{checksum}.json"))
    }

    /// The most recently cached index of a mirror in a layout (for `--offline`).
    fn latest(&self, mirror_url: &str, layout: Layout) -> Option<(String, PathBuf)> {
        let dir = self.dir.join(mirror_id(mirror_url));
        let prefix = format!("{layout}-");
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let checksum = name
                    .strip_prefix(&prefix)?
                    .strip_suffix(".json")?
                    .to_string();
                let mtime = e.metadata().ok()?.modified().ok()?;
                Some((mtime, checksum, e.path()))
            })
            .max_by_key(|(m, _, _)| *m)
            .map(|(_, c, p)| (c, p))
    }

    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }

    /// The parsed form of a cached index, when present and intact.
    fn read_parsed(&self, json_path: &Path) -> Option<Index> {
        super::index_bin::read(&json_path.with_extension("bin"))
    }

    /// Keep the parsed form next to the index text (best effort).
    fn write_parsed(&self, json_path: &Path, index: &Index) {
        write_cache_file(
            &json_path.with_extension("bin"),
            &super::index_bin::encode(index),
        );
    }

    /// Store `bytes` atomically (temp file, fsync, rename); a failure only costs a refetch later.
    fn write(&self, path: &Path, bytes: &[u8]) {
        write_cache_file(path, bytes)
    }
}

/// Store a cache file atomically (temp file, fsync, rename); a failure only costs a refetch later.
///
/// No fsync: every cache file is checked again when read (by checksum or signature), so a torn
/// file after a crash is only a cache miss. An identical file already in place is left alone.
fn write_cache_file(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    {
        let result = (|| -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            warn!(
                "could not write the local cache file {}: {e}",
                path.display()
            );
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Mirror {
    /// A mirror over `store`, online, without a local metadata cache.
    pub fn new(name: impl Into<String>, store: Store, signed: bool) -> Mirror {
        Mirror {
            name: name.into(),
            url: store.display_url(),
            store,
            signed,
            meta_cache: None,
            offline: false,
        }
    }

    /// An object of this mirror as messages name it (a registry names images by tag).
    pub fn object_url(&self, rel: &str) -> String {
        self.store.object_url(rel)
    }

    /// Fetch a small object; `Ok(None)` when it does not exist.
    pub async fn get_optional(&self, rel: &str) -> Result<Option<bytes::Bytes>, BuildcacheError> {
        let cached = self.meta_cache.as_ref().map(|d| d.join(rel));
        if self.offline {
            return match cached.as_ref().map(std::fs::read) {
                Some(Ok(b)) => Ok(Some(b.into())),
                _ => Ok(None),
            };
        }
        match self.store.get_bytes(rel).await {
            Ok(b) => {
                if let Some(path) = cached.filter(|_| b.len() <= META_CACHE_MAX) {
                    write_cache_file(&path, &b);
                }
                Ok(Some(b))
            }
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(BuildcacheError::Store(e)),
        }
    }

    /// Like [`Mirror::get_optional`], but a missing object is an error naming it.
    pub async fn get(&self, rel: &str) -> Result<bytes::Bytes, BuildcacheError> {
        match self.get_optional(rel).await? {
            Some(b) => Ok(b),
            None if self.offline => Err(BuildcacheError::Offline {
                what: self.object_url(rel),
            }),
            None => Err(BuildcacheError::Store(StoreError::NotFound {
                url: self.object_url(rel),
            })),
        }
    }

    /// Fetch a blob named by a manifest record and check its length and digest.
    pub async fn get_verified_blob(
        &self,
        record: &super::manifest::BlobRecord,
    ) -> Result<bytes::Bytes, BuildcacheError> {
        let path = record.path();
        let bytes = self.get(&path).await?;
        let what = self.object_url(&path);
        check_blob(&bytes, &record.checksum_algorithm, &record.checksum, &what)?;
        if bytes.len() as u64 != record.content_length {
            return Err(BuildcacheError::ChecksumMismatch {
                what,
                expected: format!("{} bytes", record.content_length),
                actual: format!("{} bytes", bytes.len()),
            });
        }
        Ok(bytes)
    }

    /// Read every index the mirror has (v3 first, then v2). A mirror with neither is an error.
    pub async fn load_indexes(
        &self,
        cache: &IndexCache,
    ) -> Result<Vec<LoadedIndex>, BuildcacheError> {
        let mut out = Vec::new();
        if let Some(i) = self.load_v3_index(cache).await? {
            out.push(i);
        }
        if let Some(i) = self.load_v2_index(cache).await? {
            out.push(i);
        }
        if out.is_empty() {
            if self.offline {
                return Err(BuildcacheError::Offline {
                    what: format!("the index of {}", self.url),
                });
            }
            let v3 = self.get_optional(layout::V3_LAYOUT_JSON).await?.is_some();
            return Err(if v3 {
                BuildcacheError::NoIndex {
                    mirror: self.url.clone(),
                }
            } else {
                BuildcacheError::NotABuildcache {
                    mirror: self.url.clone(),
                    why: self
                        .store
                        .why_absent(&[
                            layout::V3_LAYOUT_JSON,
                            layout::V3_INDEX_MANIFEST,
                            layout::V2_INDEX,
                        ])
                        .await,
                }
            });
        }
        Ok(out)
    }

    async fn load_v3_index(
        &self,
        cache: &IndexCache,
    ) -> Result<Option<LoadedIndex>, BuildcacheError> {
        let Some(manifest_bytes) = self.get_optional(layout::V3_INDEX_MANIFEST).await? else {
            return Ok(None);
        };
        let what = self.object_url(layout::V3_INDEX_MANIFEST);
        let manifest = Manifest::parse(&manifest_bytes, &what)?;
        let record = manifest
            .record(media::INDEX, media::INDEX_PREFIX)
            .ok_or_else(|| BuildcacheError::Malformed {
                what: what.clone(),
                reason: "index manifest names no index blob".into(),
            })?;
        let path = cache.path(&self.url, Layout::V3, &record.checksum);
        if let Some(index) = cache.read_parsed(&path) {
            debug!(
                "parsed index of {} from local cache ({})",
                self.url, record.checksum
            );
            return Ok(Some(LoadedIndex {
                layout: Layout::V3,
                checksum: record.checksum.clone(),
                index,
                from_cache: true,
            }));
        }
        if let Some(bytes) = cache.read(&path) {
            if sha256_hex(&bytes) == record.checksum || record.checksum_algorithm != "sha256" {
                debug!(
                    "index of {} from local cache ({})",
                    self.url, record.checksum
                );
                let index = Index::parse(&bytes, &path.display().to_string())?;
                cache.write_parsed(&path, &index);
                return Ok(Some(LoadedIndex {
                    layout: Layout::V3,
                    checksum: record.checksum.clone(),
                    index,
                    from_cache: true,
                }));
            }
        }
        let bytes = self.get_verified_blob(record).await?;
        let index = Index::parse(&bytes, &self.object_url(&record.path()))?;
        cache.write(&path, &bytes);
        cache.write_parsed(&path, &index);
        Ok(Some(LoadedIndex {
            layout: Layout::V3,
            checksum: record.checksum.clone(),
            index,
            from_cache: false,
        }))
    }

    async fn load_v2_index(
        &self,
        cache: &IndexCache,
    ) -> Result<Option<LoadedIndex>, BuildcacheError> {
        let announced = self
            .get_optional(layout::V2_INDEX_HASH)
            .await?
            .map(|b| {
                String::from_utf8_lossy(&b[..b.len().min(64)])
                    .trim()
                    .to_string()
            })
            .filter(|h| is_sha256_hex(h));
        if let Some(hash) = &announced {
            let path = cache.path(&self.url, Layout::V2, hash);
            if let Some(index) = cache.read_parsed(&path) {
                return Ok(Some(LoadedIndex {
                    layout: Layout::V2,
                    checksum: hash.clone(),
                    index,
                    from_cache: true,
                }));
            }
            if let Some(bytes) = cache.read(&path) {
                if &sha256_hex(&bytes) == hash {
                    debug!("v2 index of {} from local cache ({hash})", self.url);
                    let index = Index::parse(&bytes, &path.display().to_string())?;
                    return Ok(Some(LoadedIndex {
                        layout: Layout::V2,
                        checksum: hash.clone(),
                        index,
                        from_cache: true,
                    }));
                }
            }
        }
        if self.offline {
            let Some((checksum, path)) = cache.latest(&self.url, Layout::V2) else {
                return Ok(None);
            };
            let bytes = std::fs::read(&path).map_err(|e| BuildcacheError::Malformed {
                what: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let index = Index::parse(&bytes, &path.display().to_string())?;
            return Ok(Some(LoadedIndex {
                layout: Layout::V2,
                checksum,
                index,
                from_cache: true,
            }));
        }
        let Some(bytes) = self.get_optional(layout::V2_INDEX).await? else {
            return Ok(None);
        };
        let actual = sha256_hex(&bytes);
        if let Some(hash) = &announced {
            if hash != &actual {
                warn!(
                    "{}/{} does not match index.json.hash (a stale CDN copy?); using index.json as served",
                    self.url,
                    layout::V2_INDEX
                );
            }
        }
        let index = Index::parse(&bytes, &self.object_url(layout::V2_INDEX))?;
        let path = cache.path(&self.url, Layout::V2, &actual);
        cache.write(&path, &bytes);
        cache.write_parsed(&path, &index);
        Ok(Some(LoadedIndex {
            layout: Layout::V2,
            checksum: actual,
            index,
            from_cache: false,
        }))
    }
}

/// Check `bytes` against a manifest's checksum.
pub fn check_blob(
    bytes: &[u8],
    algorithm: &str,
    expected: &str,
    what: &str,
) -> Result<(), BuildcacheError> {
    let actual = match algorithm {
        "sha256" => sha256_hex(bytes),
        other => {
            return Err(BuildcacheError::Malformed {
                what: what.to_string(),
                reason: format!("checksum algorithm `{other}` is not supported (only sha256)"),
            })
        }
    };
    if actual != expected {
        return Err(BuildcacheError::ChecksumMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}
