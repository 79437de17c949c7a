//! Writing entries copied from another cache: small blobs by digest, the v2 → v3 conversion of
//! an entry, and merging copied specs into the destination's index (v3 or v2). This is layout
//! knowledge: `mirror` hands entries over and never writes a layout's files itself.

use std::path::Path;

use bytes::Bytes;
use serde_json::Value;
use tracing::warn;

use super::{
    gzip_bytes, read_manifest_unverified, sha256_hex, spec_blob_json, CacheWriter, IndexBuilder,
    Signer, WriterError,
};
use crate::buildcache::entry::BlobRef;
use crate::buildcache::layout::{self, media, Layout};
use crate::buildcache::manifest::{BlobRecord, Manifest};
use crate::store::{Store, StoreError};

/// The record of a blob of `len` bytes with this sha256.
pub fn blob_record(media_type: &str, compression: &str, len: u64, checksum: String) -> BlobRecord {
    BlobRecord {
        content_length: len,
        media_type: media_type.to_string(),
        compression: compression.to_string(),
        checksum_algorithm: "sha256".into(),
        checksum,
    }
}

/// Write a small blob under its digest unless present; returns its record and whether it was
/// written (false: the destination had it).
pub async fn put_small_blob(
    dest: &Store,
    bytes: Vec<u8>,
    media_type: &str,
    compression: &str,
) -> Result<(BlobRecord, bool), WriterError> {
    let rec = blob_record(
        media_type,
        compression,
        bytes.len() as u64,
        sha256_hex(&bytes),
    );
    if dest.exists(&rec.path()).await? {
        return Ok((rec, false));
    }
    dest.put_bytes(&rec.path(), Bytes::from(bytes)).await?;
    Ok((rec, true))
}

/// A v2 entry to convert: its (possibly clearsigned) spec file and its tarball, already copied
/// to the destination as a blob.
pub struct V2Entry<'a> {
    pub metadata: &'a [u8],
    pub metadata_path: &'a str,
    pub tarball_algorithm: &'a str,
    pub tarball_digest: &'a str,
    /// The tarball's size when known (else the destination is asked).
    pub tarball_len: Option<u64>,
}

/// What [`convert_v2_entry`] did.
pub struct Converted {
    /// The manifest is signed.
    pub signed: bool,
    /// Size of the spec blob when it was written (None: the destination had it).
    pub spec_blob_written: Option<u64>,
}

/// v2 → v3: spec blob from the verified spec file, the `.spack` tarball (already copied as a
/// blob) and a manifest, signed when a signer is given.
pub async fn convert_v2_entry(
    dest: &Store,
    e: &V2Entry<'_>,
    signer: Option<&Signer>,
) -> Result<Converted, WriterError> {
    let payload = crate::buildcache::catalog::payload_unverified(e.metadata, e.metadata_path)?;
    let (spec_json, sf) = spec_blob_json(&payload, Path::new(e.metadata_path))?;
    let tar_rel = layout::blob_path(e.tarball_algorithm, e.tarball_digest);
    let tar_len = match e.tarball_len {
        Some(l) => l,
        None => dest
            .head(&tar_rel)
            .await?
            .and_then(|m| m.len)
            .ok_or_else(|| StoreError::NotFound {
                url: dest.object_url(&tar_rel),
            })?,
    };
    let (spec_rec, written) =
        put_small_blob(dest, gzip_bytes(&spec_json), media::SPEC, "gzip").await?;
    let spec_blob_written = written.then_some(spec_rec.content_length);
    let tar_rec = blob_record(
        media::TARBALL,
        "gzip",
        tar_len,
        e.tarball_digest.to_string(),
    );
    let manifest = Manifest {
        version: 3,
        data: vec![tar_rec, spec_rec],
    };
    let root = sf.root();
    let path = layout::v3_spec_manifest(&root.name, &root.version, &root.hash);
    // Unchanged content (re-run): keep the existing manifest and its signature.
    if let Ok(existing) = dest.get_bytes(&path).await {
        if let Ok(m) = read_manifest_unverified(&existing, &path) {
            let was_signed = existing.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----");
            if m == manifest && was_signed == signer.is_some() {
                return Ok(Converted {
                    signed: was_signed,
                    spec_blob_written,
                });
            }
        }
    }
    let text = manifest.to_spack_json();
    let (body, signed) = match signer {
        Some(s) => (s.sign(text.as_bytes())?, true),
        None => (text.into_bytes(), false),
    };
    dest.put_bytes(&path, Bytes::from(body)).await?;
    Ok(Converted {
        signed,
        spec_blob_written,
    })
}

/// Add the DAGs (spec files' node lists) to the destination's index of `layout`, keeping the
/// specs it already lists; written after everything it names.
pub async fn merge_index(
    dest: &Store,
    layout: Layout,
    dags: &[&[Value]],
) -> Result<(), WriterError> {
    match layout {
        Layout::V3 => write_v3_index(dest, dags).await,
        Layout::V2 => write_v2_index(dest, dags).await,
    }
}

/// The existing v3 index of the destination, to extend (a mirror into a cache that already holds
/// other specs keeps listing them).
async fn existing_v3_index(dest: &Store) -> IndexBuilder {
    match CacheWriter::new(dest.clone()).read_index().await {
        Ok(Some(ib)) => ib,
        Ok(None) => IndexBuilder::new(),
        Err(e) => {
            warn!(
                "the existing index of {} is not usable ({e}); writing a new one",
                dest.display_url()
            );
            IndexBuilder::new()
        }
    }
}

async fn write_v3_index(dest: &Store, dags: &[&[Value]]) -> Result<(), WriterError> {
    let mut ib = existing_v3_index(dest).await;
    for nodes in dags {
        ib.add_dag(nodes, true);
    }
    let json = ib.to_json();
    let (rec, _) = put_small_blob(dest, json, media::INDEX, "none").await?;
    let m = Manifest {
        version: 3,
        data: vec![rec],
    };
    dest.put_bytes(
        layout::V3_INDEX_MANIFEST,
        Bytes::from(m.to_spack_json().into_bytes()),
    )
    .await?;
    Ok(())
}

/// Spack 0.18–0.23 index: database version 7, `index.json` then `index.json.hash`.
async fn write_v2_index(dest: &Store, dags: &[&[Value]]) -> Result<(), WriterError> {
    let mut ib = match dest.get_bytes(layout::V2_INDEX).await {
        Ok(bytes) => relabel(&bytes, "8")
            .and_then(|b| IndexBuilder::from_existing(&b, layout::V2_INDEX).ok())
            .unwrap_or_else(|| {
                warn!(
                    "the existing v2 index of {} is not usable; writing a new one",
                    dest.display_url()
                );
                IndexBuilder::new()
            }),
        Err(StoreError::NotFound { .. }) => IndexBuilder::new(),
        Err(e) => return Err(e.into()),
    };
    for nodes in dags {
        ib.add_dag(nodes, true);
    }
    let json = relabel(&ib.to_json(), "7").ok_or_else(|| WriterError::Output {
        reason: "internal error: the v2 index could not be serialised".into(),
    })?;
    let hash = sha256_hex(&json);
    dest.put_bytes(layout::V2_INDEX, Bytes::from(json)).await?;
    dest.put_bytes(layout::V2_INDEX_HASH, Bytes::from(hash.into_bytes()))
        .await?;
    Ok(())
}

/// Rewrite `database.version` (the index builder speaks version 8; v2 caches use 7 with
/// format-4 nodes, which is what their spec files hold).
fn relabel(json: &[u8], version: &str) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(json).ok()?;
    let db = v.get_mut("database")?.as_object_mut()?;
    db.insert("version".into(), Value::String(version.into()));
    serde_json::to_vec(&v).ok()
}

/// Write `bytes` at `rel` unless the destination already has exactly them; whether it wrote.
pub async fn put_if_changed(dest: &Store, rel: &str, bytes: Bytes) -> Result<bool, WriterError> {
    match dest.get_bytes(rel).await {
        Ok(existing) if existing == bytes => return Ok(false),
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    dest.put_bytes(rel, bytes).await?;
    Ok(true)
}

/// Where an entry's tarball goes in a destination of layout `out`: under its digest in v3, at
/// its own path in v2.
pub fn tarball_dest(tarball: &BlobRef, out: Layout) -> String {
    match out {
        Layout::V3 => layout::blob_path(&tarball.algorithm, &tarball.digest),
        Layout::V2 => tarball.path.clone(),
    }
}

/// A verified entry's metadata as copied, to write in the destination's layout.
pub struct CopiedMetadata<'a> {
    /// The layout it was read from and the one to write.
    pub from: Layout,
    pub out: Layout,
    /// Its exact bytes (the verified digest) and path in the source.
    pub bytes: &'a Bytes,
    pub path: &'a str,
    pub tarball: &'a BlobRef,
    /// The tarball's size when known.
    pub tarball_len: Option<u64>,
}

/// Write a copied entry's metadata: unchanged when the layouts agree (or v3 stays v3), converted
/// v2 → v3 otherwise (signed when a signer is given). `spec_blob_written` is set only by a
/// conversion that wrote a new spec blob; `signed` says whether a converted manifest is signed
/// (an unconverted one keeps whatever signature it had: true).
pub async fn write_copied_metadata(
    dest: &Store,
    m: &CopiedMetadata<'_>,
    signer: Option<&Signer>,
) -> Result<Converted, WriterError> {
    match (m.from, m.out) {
        (Layout::V3, _) | (Layout::V2, Layout::V2) => {
            put_if_changed(dest, m.path, m.bytes.clone()).await?;
            Ok(Converted {
                signed: true,
                spec_blob_written: None,
            })
        }
        (Layout::V2, Layout::V3) => {
            convert_v2_entry(
                dest,
                &V2Entry {
                    metadata: m.bytes,
                    metadata_path: m.path,
                    tarball_algorithm: &m.tarball.algorithm,
                    tarball_digest: &m.tarball.digest,
                    tarball_len: m.tarball_len,
                },
                signer,
            )
            .await
        }
    }
}

/// The spec DAGs copied into a destination, per layout, for its indexes.
#[derive(Default)]
pub struct CopiedDags<'a> {
    v3: Vec<&'a [Value]>,
    v2: Vec<&'a [Value]>,
}

impl<'a> CopiedDags<'a> {
    pub fn add(&mut self, out: Layout, nodes: &'a [Value]) {
        match out {
            Layout::V3 => self.v3.push(nodes),
            Layout::V2 => self.v2.push(nodes),
        }
    }

    /// Whether anything was copied into the v3 layout.
    pub fn has_v3(&self) -> bool {
        !self.v3.is_empty()
    }

    /// Merge them into the destination's indexes, last: the v3 index when `v3` (even with no
    /// new spec: a converted empty cache still gets one), the v2 index when v2 specs were copied.
    pub async fn write_indexes(&self, dest: &Store, v3: bool) -> Result<(), WriterError> {
        if v3 {
            merge_index(dest, Layout::V3, &self.v3).await?;
        }
        if !self.v2.is_empty() {
            merge_index(dest, Layout::V2, &self.v2).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relabel_sets_version() {
        let j = br#"{"database":{"version":"8","installs":{}}}"#;
        let v: Value = serde_json::from_slice(&relabel(j, "7").unwrap()).unwrap();
        assert_eq!(v["database"]["version"], "7");
        assert!(relabel(b"[]", "7").is_none());
    }
}
