//! Writing layout-v3 buildcaches (Spack 1.x format): package tarballs, spec blobs, (signed)
//! manifests, public keys and the package index (format reference §1.2, §1.6, §2, §3.2, §5.4,
//! §6, §10 F/G).
//!
//! Upload order is Spack's safe order: blobs before the manifest that names them, so a reader
//! never sees a manifest pointing at a missing blob.

pub mod copied;
pub mod index_writer;
pub mod pack;
pub mod scan;
mod tar;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::layout::{self, media};
use super::manifest::{BlobRecord, Manifest};
use super::BuildcacheError;
use crate::buildcache::buildinfo::BuildInfo;
use crate::spec::SpecFile;
use crate::store::{Precondition, Store, StoreError};
use crate::trust::{self, TrustError};

pub use crate::buildcache::buildinfo::buildinfo_yaml;
pub use index_writer::IndexBuilder;
pub use pack::{
    default_projection, gzip_bytes, pack_prefix, pack_prefix_excluding, spack_gzip, unpadded_root,
    BuildInfoInputs, ChecksumWriter, PackedTarball,
};
pub use scan::{FileClass, FileScanner, PrefixMatcher};

/// `buildcache_layout_version` Spack 1.x writes into spec blobs.
pub const SPEC_BLOB_LAYOUT_VERSION: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("cannot read `{}`: {source}; check that the prefix exists and is readable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write the package tarball: {reason}; check free space in the temporary directory"
    )]
    Output { reason: String },
    #[error("`{}` is not an installed prefix: {reason}", path.display())]
    NotAPrefix { path: PathBuf, reason: String },
    #[error("`{}` changed while it was being packed; stop whatever modifies the prefix and push again", path.display())]
    ChangedWhilePacking { path: PathBuf },
    #[error("`{}` has a non-UTF-8 name, which the buildinfo cannot list; rename it", path.display())]
    NonUtf8Path { path: PathBuf },
    #[error("bad spec in `{}`: {reason}; reinstall the package with Spack", path.display())]
    Spec { path: PathBuf, reason: String },
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Buildcache(#[from] BuildcacheError),
    #[error("background packing task failed: {0}")]
    Task(String),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Key used to clearsign spec manifests.
#[derive(Clone)]
pub struct Signer {
    secret_armored: Vec<u8>,
    passphrase: Option<String>,
    /// Upper-case 40-hex fingerprint of the signing certificate.
    pub fingerprint: String,
    /// Armored public certificate (no secret material), published in the mirror.
    pub public_armored: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// From an armored secret key (the first certificate is used).
    pub fn from_secret_armored(
        secret_armored: &[u8],
        passphrase: Option<&str>,
    ) -> Result<Signer, WriterError> {
        let keys = trust::parse_keys(secret_armored)?;
        let first = keys.into_iter().next().ok_or(TrustError::NoKeys {
            source_name: "signing key".into(),
        })?;
        // Fail early (and not after packing) when the key cannot sign.
        trust::clearsign(secret_armored, passphrase, b"{}")?;
        Ok(Signer {
            secret_armored: secret_armored.to_vec(),
            passphrase: passphrase.map(str::to_string),
            fingerprint: first.fingerprint,
            public_armored: first.armored,
        })
    }

    pub fn sign(&self, text: &[u8]) -> Result<Vec<u8>, WriterError> {
        Ok(trust::clearsign(
            &self.secret_armored,
            self.passphrase.as_deref(),
            text,
        )?)
    }
}

/// Options for one [`CacheWriter::write_entry`].
#[derive(Debug, Clone, Default)]
pub struct EntryOptions {
    /// Buildinfo inputs; `None` derives them from the prefix's `.spack/spec.json` with
    /// [`BuildInfoInputs::for_spack_prefix`] and `buildpath` (required then).
    pub buildinfo: Option<BuildInfoInputs>,
    /// Build store root, used when `buildinfo` is `None`.
    pub buildpath: Option<String>,
    /// Rewrite the entry even if its manifest already exists.
    pub force: bool,
    /// Files of the prefix (relative paths) never packed, e.g. the installer's own receipts.
    pub exclude: Vec<String>,
    /// Blobs named in the manifest after the tarball and the spec (covered by its signature),
    /// made once the tarball's sha256 is known.
    pub extra_blobs: Vec<ExtraBlob>,
}

/// Makes an extra blob's bytes from the sha256 (hex) of the entry's tarball.
pub type MakeBlob = std::sync::Arc<dyn Fn(&str) -> Result<Vec<u8>, String> + Send + Sync>;

/// An extra blob of an entry (e.g. its SBOM): its media type and how to make its bytes.
#[derive(Clone)]
pub struct ExtraBlob {
    pub media_type: String,
    pub make: MakeBlob,
}

impl std::fmt::Debug for ExtraBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraBlob")
            .field("media_type", &self.media_type)
            .finish_non_exhaustive()
    }
}

/// What [`CacheWriter::write_entry`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenEntry {
    pub name: String,
    pub version: String,
    pub hash: String,
    /// `v3/manifests/spec/…` below the mirror root.
    pub manifest_path: String,
    pub tarball: BlobRecord,
    pub spec: BlobRecord,
    pub signed: bool,
    /// `false` when the manifest already existed and `force` was not set (nothing uploaded).
    pub uploaded: bool,
    pub buildinfo: Option<BuildInfo>,
    /// The spec file's nodes (key order preserved), for the index.
    pub raw_nodes: Vec<Value>,
}

/// An entry whose blobs are uploaded but whose manifest is not yet ([`CacheWriter::stage_entry`]).
#[derive(Debug, Clone)]
pub struct StagedEntry {
    /// What the entry will be once committed (`uploaded: false` when it already existed).
    pub entry: WrittenEntry,
    /// The (signed) manifest to upload; `None` when the entry already existed.
    manifest_body: Option<Vec<u8>>,
}

/// Attempts of a conditional index update before giving up (each after re-reading the index).
pub const INDEX_UPDATE_ATTEMPTS: u32 = 30;

/// Summary of an index upload.
#[derive(Debug, Clone)]
pub struct IndexSummary {
    /// Records in the index.
    pub records: usize,
    /// Records with `in_buildcache: true`.
    pub in_buildcache: usize,
    pub blob: BlobRecord,
}

/// Spec blob JSON: the prefix's spec file plus `"buildcache_layout_version": 2`, compact.
pub fn spec_blob_json(spec_json: &[u8], what: &Path) -> Result<(Vec<u8>, SpecFile), WriterError> {
    let bad = |reason: String| WriterError::Spec {
        path: what.to_path_buf(),
        reason,
    };
    let mut v: Value = serde_json::from_slice(spec_json).map_err(|e| bad(e.to_string()))?;
    let obj = v
        .as_object_mut()
        .filter(|o| o.get("spec").is_some_and(Value::is_object))
        .ok_or_else(|| bad("not a spec file (no `spec` object)".into()))?;
    obj.remove("binary_cache_checksum");
    obj.insert(
        "buildcache_layout_version".into(),
        Value::from(SPEC_BLOB_LAYOUT_VERSION),
    );
    let text = serde_json::to_vec(&v).map_err(|e| bad(e.to_string()))?;
    let sf = SpecFile::parse(&text).map_err(|e| bad(e.to_string()))?;
    if sf.nodes.is_empty() {
        return Err(bad("the spec has no nodes".into()));
    }
    Ok((text, sf))
}

fn record(media_type: &str, compression: &str, bytes_len: u64, checksum: String) -> BlobRecord {
    BlobRecord {
        content_length: bytes_len,
        media_type: media_type.to_string(),
        compression: compression.to_string(),
        checksum_algorithm: "sha256".to_string(),
        checksum,
    }
}

/// Writes entries, keys and indexes into a v3 buildcache held by a [`Store`].
#[derive(Debug, Clone)]
pub struct CacheWriter {
    store: Store,
    signer: Option<Signer>,
    tmp_dir: Option<PathBuf>,
    jobs: usize,
}

impl CacheWriter {
    pub fn new(store: Store) -> CacheWriter {
        CacheWriter {
            store,
            signer: None,
            tmp_dir: None,
            jobs: 8,
        }
    }

    /// Sign spec manifests with this key.
    pub fn with_signer(mut self, signer: Signer) -> CacheWriter {
        self.signer = Some(signer);
        self
    }

    /// Where tarballs are staged before upload (default: the system temp dir).
    pub fn with_tmp_dir(mut self, dir: impl Into<PathBuf>) -> CacheWriter {
        self.tmp_dir = Some(dir.into());
        self
    }

    /// Concurrent fetches during [`update_index`](Self::update_index) (default 8).
    pub fn with_jobs(mut self, jobs: usize) -> CacheWriter {
        self.jobs = jobs.max(1);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    async fn put_bytes_as_blob(
        &self,
        bytes: Vec<u8>,
        media_type: &str,
        compression: &str,
    ) -> Result<BlobRecord, WriterError> {
        let rec = record(
            media_type,
            compression,
            bytes.len() as u64,
            sha256_hex(&bytes),
        );
        let path = rec.path();
        if !self.blob_present(&path, rec.content_length).await? {
            self.store.put_bytes(&path, Bytes::from(bytes)).await?;
        }
        Ok(rec)
    }

    async fn blob_present(&self, path: &str, len: u64) -> Result<bool, WriterError> {
        Ok(matches!(self.store.head(path).await?, Some(m) if m.len == Some(len)))
    }

    /// Upload `v3/layout.json` (`{"signing": "gpg"}`) unless present.
    pub async fn ensure_layout_json(&self) -> Result<(), WriterError> {
        if !self.store.exists(layout::V3_LAYOUT_JSON).await? {
            self.store
                .put_bytes(
                    layout::V3_LAYOUT_JSON,
                    Bytes::from_static(br#"{"signing": "gpg"}"#),
                )
                .await?;
        }
        Ok(())
    }

    /// Pack the installed prefix and publish it: tarball blob, spec blob, then the (signed)
    /// spec manifest, then `v3/layout.json` if missing.
    pub async fn write_entry(
        &self,
        prefix: &Path,
        opts: &EntryOptions,
    ) -> Result<WrittenEntry, WriterError> {
        let staged = self.stage_entry(prefix, opts).await?;
        self.commit_entry(staged).await
    }

    /// First half of [`write_entry`](Self::write_entry): pack the prefix and upload its blobs
    /// (tarball, spec blob) and sign the manifest, but do not upload the manifest yet. Publishing
    /// several entries stages them all before committing any, so that every manifest a reader
    /// can see names blobs that exist.
    pub async fn stage_entry(
        &self,
        prefix: &Path,
        opts: &EntryOptions,
    ) -> Result<StagedEntry, WriterError> {
        let spec_path = prefix.join(".spack/spec.json");
        let spec_json = tokio::fs::read(&spec_path)
            .await
            .map_err(|source| WriterError::Io {
                path: spec_path.clone(),
                source,
            })?;
        let (spec_text, sf) = spec_blob_json(&spec_json, &spec_path)?;
        let root = sf.root();
        let (name, version, hash) = (root.name.clone(), root.version.clone(), root.hash.clone());
        let manifest_path = layout::v3_spec_manifest(&name, &version, &hash);

        if !opts.force {
            if let Some(existing) = self.existing_entry(&manifest_path).await? {
                debug!("{manifest_path} exists; skipping (use force to overwrite)");
                let (tarball, spec) = existing;
                return Ok(StagedEntry {
                    manifest_body: None,
                    entry: WrittenEntry {
                        name,
                        version,
                        hash,
                        manifest_path,
                        tarball,
                        spec,
                        signed: false,
                        uploaded: false,
                        buildinfo: None,
                        raw_nodes: sf.raw_nodes,
                    },
                });
            }
        }

        let inputs = match &opts.buildinfo {
            Some(i) => i.clone(),
            None => {
                let bp = opts
                    .buildpath
                    .as_deref()
                    .ok_or_else(|| WriterError::NotAPrefix {
                        path: prefix.to_path_buf(),
                        reason:
                            "the build store root (buildpath) is needed to compute the buildinfo"
                                .into(),
                    })?;
                BuildInfoInputs::for_spack_prefix(prefix, &sf, bp)?
            }
        };

        // 1. The tarball, staged in a temp file (packing is blocking I/O: off the runtime).
        let tmp = match &self.tmp_dir {
            Some(d) => tempfile::NamedTempFile::new_in(d),
            None => tempfile::NamedTempFile::new(),
        }
        .map_err(|source| WriterError::Output {
            reason: format!("cannot create a temporary file: {source}"),
        })?;
        let (tmp_file, tmp_path) = tmp.into_parts();
        let prefix_owned = prefix.to_path_buf();
        let exclude = opts.exclude.clone();
        let packed = tokio::task::spawn_blocking(move || {
            let w = std::io::BufWriter::with_capacity(1 << 20, tmp_file);
            pack_prefix_excluding(&prefix_owned, &inputs, &exclude, w)
        })
        .await
        .map_err(|e| WriterError::Task(e.to_string()))??;
        let tarball = record(media::TARBALL, "gzip", packed.size, packed.sha256.clone());
        if !self
            .blob_present(&tarball.path(), tarball.content_length)
            .await?
        {
            self.store.put_file(&tarball.path(), &tmp_path).await?;
        }
        drop(tmp_path);

        // 2. The spec blob.
        let spec = self
            .put_bytes_as_blob(gzip_bytes(&spec_text), media::SPEC, "gzip")
            .await?;

        // 3. Extra blobs (after the two Spack reads; Spack ignores the others).
        let mut data = vec![tarball.clone(), spec.clone()];
        for extra in &opts.extra_blobs {
            let bytes = (extra.make)(&tarball.checksum).map_err(|reason| WriterError::Output {
                reason: format!("{}: {reason}", extra.media_type),
            })?;
            data.push(
                self.put_bytes_as_blob(bytes, &extra.media_type, "none")
                    .await?,
            );
        }

        // 4. The manifest (tarball record first, as Spack writes it).
        let manifest = Manifest { version: 3, data };
        let text = manifest.to_spack_json();
        let (body, signed) = match &self.signer {
            Some(s) => (s.sign(text.as_bytes())?, true),
            None => (text.into_bytes(), false),
        };
        Ok(StagedEntry {
            manifest_body: Some(body),
            entry: WrittenEntry {
                name,
                version,
                hash,
                manifest_path,
                tarball,
                spec,
                signed,
                uploaded: true,
                buildinfo: Some(packed.buildinfo),
                raw_nodes: sf.raw_nodes,
            },
        })
    }

    /// Second half of [`write_entry`](Self::write_entry): upload the staged entry's manifest
    /// (nothing for an entry that already existed), then `v3/layout.json` if missing.
    pub async fn commit_entry(&self, staged: StagedEntry) -> Result<WrittenEntry, WriterError> {
        let StagedEntry {
            entry,
            manifest_body,
        } = staged;
        if let Some(body) = manifest_body {
            self.store
                .put_bytes(&entry.manifest_path, Bytes::from(body))
                .await?;
            self.ensure_layout_json().await?;
            info!(
                "pushed {}@{} /{} to {}",
                entry.name,
                entry.version,
                entry.hash,
                self.store.display_url()
            );
        }
        Ok(entry)
    }

    /// An existing complete entry: its manifest parses and both blobs exist.
    async fn existing_entry(
        &self,
        manifest_path: &str,
    ) -> Result<Option<(BlobRecord, BlobRecord)>, WriterError> {
        let text = match self.store.get_bytes(manifest_path).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Ok(m) = read_manifest_unverified(&text, manifest_path) else {
            return Ok(None);
        };
        let (Some(t), Some(s)) = (
            m.record(media::TARBALL, media::TARBALL_PREFIX),
            m.record(media::SPEC, media::SPEC_PREFIX),
        ) else {
            return Ok(None);
        };
        if self.blob_present(&t.path(), t.content_length).await?
            && self.blob_present(&s.path(), s.content_length).await?
        {
            return Ok(Some((t.clone(), s.clone())));
        }
        Ok(None)
    }

    /// Publish the signer's public key (blob + `v3/manifests/key/<FPR>.key.manifest.json`) and
    /// regenerate the key index (`keys.manifest.json`). Does nothing without a signer.
    pub async fn publish_keys(&self) -> Result<(), WriterError> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let rec = self
            .put_bytes_as_blob(
                signer.public_armored.clone().into_bytes(),
                media::KEY,
                "none",
            )
            .await?;
        let m = Manifest {
            version: 3,
            data: vec![rec],
        };
        self.store
            .put_bytes(
                &layout::v3_key_manifest(&signer.fingerprint),
                Bytes::from(m.to_spack_json().into_bytes()),
            )
            .await?;
        self.write_key_index().await?;
        self.ensure_layout_json().await
    }

    /// Regenerate `v3/manifests/key/keys.manifest.json` from the key manifests present, with a
    /// conditional write so that concurrent publishers with different keys keep both.
    pub async fn write_key_index(&self) -> Result<(), WriterError> {
        let mut attempt = 0u32;
        loop {
            let pre = match self
                .store
                .get_with_etag(layout::V3_KEY_INDEX_MANIFEST)
                .await?
            {
                Some((_, etag)) => Precondition::IfMatch(etag),
                None => Precondition::IfAbsent,
            };
            let mut fprs: Vec<String> = self
                .store
                .list(layout::V3_KEY_DIR)
                .await?
                .into_iter()
                .filter_map(|p| {
                    let name = p.strip_prefix(layout::V3_KEY_DIR)?;
                    if name.contains('/') {
                        return None; // Spack lists this directory non-recursively
                    }
                    name.strip_suffix(".key.manifest.json").map(str::to_string)
                })
                .collect();
            fprs.sort();
            fprs.dedup();
            let mut keys = serde_json::Map::new();
            for f in fprs {
                keys.insert(f, Value::Object(Default::default()));
            }
            let mut top = serde_json::Map::new();
            top.insert("keys".into(), Value::Object(keys));
            let json = serde_json::to_vec(&Value::Object(top)).unwrap_or_default();
            let rec = self
                .put_bytes_as_blob(json, media::KEY_INDEX, "none")
                .await?;
            let m = Manifest {
                version: 3,
                data: vec![rec],
            };
            let body = Bytes::from(m.to_spack_json().into_bytes());
            match self
                .store
                .put_bytes_if(layout::V3_KEY_INDEX_MANIFEST, body, pre)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_precondition_failed() && attempt + 1 < INDEX_UPDATE_ATTEMPTS => {
                    tokio::time::sleep(crate::store::backoff_delay(
                        std::time::Duration::from_millis(20),
                        attempt.min(6),
                    ))
                    .await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The current index, if the mirror has one.
    pub async fn read_index(&self) -> Result<Option<IndexBuilder>, WriterError> {
        Ok(self.read_index_with_etag().await?.map(|(ib, _)| ib))
    }

    /// The current index and the ETag of its manifest, if the mirror has one.
    pub async fn read_index_with_etag(
        &self,
    ) -> Result<Option<(IndexBuilder, String)>, WriterError> {
        let Some((text, etag)) = self.store.get_with_etag(layout::V3_INDEX_MANIFEST).await? else {
            return Ok(None);
        };
        let m = read_manifest_unverified(&text, layout::V3_INDEX_MANIFEST)?;
        let rec =
            m.record(media::INDEX, media::INDEX_PREFIX)
                .ok_or_else(|| WriterError::Malformed {
                    what: layout::V3_INDEX_MANIFEST.into(),
                    reason: "no index record".into(),
                })?;
        let bytes = self.get_checked_blob(rec).await?;
        Ok(Some((
            IndexBuilder::from_existing(&bytes, &rec.path())?,
            etag,
        )))
    }

    async fn get_checked_blob(&self, rec: &BlobRecord) -> Result<Bytes, WriterError> {
        let path = rec.path();
        let bytes = self.store.get_bytes(&path).await?;
        super::mirror::check_blob(
            &bytes,
            &rec.checksum_algorithm,
            &rec.checksum,
            &self.store.object_url(&path),
        )?;
        Ok(bytes)
    }

    /// Read-modify-write of the index with a conditional write of its manifest: read the
    /// manifest and its ETag, apply `change` to the index, upload the new index blob, then write
    /// the manifest only if nobody changed it meanwhile (`If-Match`, or `If-None-Match: *` when
    /// there was none). When another writer got there first, start again from its index
    /// (bounded, with backoff), so concurrent publishers never lose each other's entries.
    pub async fn modify_index(
        &self,
        mut change: impl FnMut(&mut IndexBuilder),
    ) -> Result<IndexSummary, WriterError> {
        let mut attempt = 0u32;
        loop {
            let (mut ib, pre) = match self.read_index_with_etag().await? {
                Some((ib, etag)) => (ib, Precondition::IfMatch(etag)),
                None => (IndexBuilder::default(), Precondition::IfAbsent),
            };
            change(&mut ib);
            let json = ib.to_json();
            let blob = self.put_bytes_as_blob(json, media::INDEX, "none").await?;
            let m = Manifest {
                version: 3,
                data: vec![blob.clone()],
            };
            let body = Bytes::from(m.to_spack_json().into_bytes());
            match self
                .store
                .put_bytes_if(layout::V3_INDEX_MANIFEST, body, pre)
                .await
            {
                Ok(_) => {
                    self.ensure_layout_json().await?;
                    let records = ib.records();
                    return Ok(IndexSummary {
                        records: records.len(),
                        in_buildcache: records.iter().filter(|r| r.3).count(),
                        blob,
                    });
                }
                Err(e) if e.is_precondition_failed() && attempt + 1 < INDEX_UPDATE_ATTEMPTS => {
                    let delay = crate::store::backoff_delay(
                        std::time::Duration::from_millis(20),
                        attempt.min(6),
                    );
                    debug!(
                        "the index of {} changed concurrently; merging again in {delay:?}",
                        self.store.display_url()
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Add `entries` to the mirror's index (creating it if missing) without listing the mirror.
    /// Concurrent writers are merged (see [`modify_index`](Self::modify_index)).
    pub async fn write_index(&self, entries: &[WrittenEntry]) -> Result<IndexSummary, WriterError> {
        self.modify_index(|ib| {
            for e in entries {
                ib.add_dag(&e.raw_nodes, true);
            }
        })
        .await
    }

    /// Rebuild the index from the spec manifests in the mirror, as `spack buildcache
    /// update-index` does (manifests read without verification, spec blobs checked), merged into
    /// the existing index: its records are kept, but a record whose spec manifest is gone is
    /// marked `in_buildcache: false`.
    pub async fn update_index(&self) -> Result<IndexSummary, WriterError> {
        let listed: Vec<String> = self
            .store
            .list(layout::V3_SPEC_DIR)
            .await?
            .into_iter()
            .filter(|p| p.ends_with(".spec.manifest.json"))
            .collect();
        let present: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let dags: Vec<Vec<Value>> = stream::iter(listed.iter().cloned())
            .map(|path| async move { self.read_entry_nodes(&path).await })
            .buffered(self.jobs)
            .try_collect()
            .await?;
        self.modify_index(|ib| {
            for (hash, name, version, inbc) in ib.records() {
                if inbc
                    && !present.contains(layout::v3_spec_manifest(&name, &version, &hash).as_str())
                {
                    warn!("index record {name}@{version} /{hash} has no spec manifest any more; marking it not in the buildcache");
                    ib.set_in_buildcache(&hash, false);
                }
            }
            for nodes in &dags {
                ib.add_dag(nodes, true);
            }
        })
        .await
    }

    async fn read_entry_nodes(&self, manifest_path: &str) -> Result<Vec<Value>, WriterError> {
        let text = self.store.get_bytes(manifest_path).await?;
        let m = read_manifest_unverified(&text, manifest_path)?;
        let rec =
            m.record(media::SPEC, media::SPEC_PREFIX)
                .ok_or_else(|| WriterError::Malformed {
                    what: manifest_path.to_string(),
                    reason: "the manifest names no spec blob".into(),
                })?;
        let blob = self.get_checked_blob(rec).await?;
        let json = if blob.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&blob[..]), &mut out)
                .map_err(|e| WriterError::Malformed {
                    what: rec.path(),
                    reason: format!("bad gzip data: {e}"),
                })?;
            out
        } else {
            blob.to_vec()
        };
        let sf = SpecFile::parse(&json).map_err(|e| WriterError::Malformed {
            what: rec.path(),
            reason: e.to_string(),
        })?;
        if sf.buildcache_layout_version.unwrap_or(0) > 3 {
            return Err(WriterError::Malformed {
                what: rec.path(),
                reason: "buildcache_layout_version > 3 is newer than this tool".into(),
            });
        }
        Ok(sf.raw_nodes)
    }
}

/// Parse a manifest, stripping a clearsign envelope without verifying it.
pub fn read_manifest_unverified(text: &[u8], what: &str) -> Result<Manifest, WriterError> {
    let json = if text.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
        trust::extract_cleartext(text)?
    } else {
        text.to_vec()
    };
    Ok(Manifest::parse(&json, what)?)
}
