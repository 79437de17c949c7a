//! One binary package on one mirror: its signed metadata (v3 spec manifest, or v2 signed spec
//! file), verified, and the blobs it names.

use std::io::Read;

use serde::Serialize;
use tracing::debug;

use super::catalog::{Catalog, CatalogEntry};
use super::layout::{self, media, Layout, V2Stem};
use super::manifest::Manifest;
use super::mirror::Mirror;
use super::trust_context::TrustContext;
use super::BuildcacheError;
use crate::spec::{Spec, SpecFile};
use crate::trust::{SignatureStatus, Verification};

/// Signature verdict as reported to users.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SignatureReport {
    /// `good`, `bad`, `unknown-key` or `unsigned`.
    pub status: String,
    pub fingerprint: Option<String>,
    pub user_id: Option<String>,
}

impl SignatureReport {
    fn from_verification(v: &Verification) -> SignatureReport {
        SignatureReport {
            status: match v.status {
                SignatureStatus::Good => "good",
                SignatureStatus::Bad => "bad",
                SignatureStatus::UnknownKey => "unknown-key",
                SignatureStatus::Unsigned => "unsigned",
            }
            .to_string(),
            fingerprint: v.fingerprint.clone(),
            user_id: v.user_id.clone(),
        }
    }
}

/// A blob of a package (install tarball or spec JSON).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlobRef {
    pub media_type: String,
    pub algorithm: String,
    pub digest: String,
    /// Stored size, when the metadata says it.
    pub size: Option<u64>,
    /// Path below the mirror root.
    pub path: String,
}

/// A package whose signed metadata was fetched and verified.
#[derive(Debug, Clone)]
pub struct VerifiedEntry {
    pub hash: String,
    pub mirror: usize,
    pub layout: Layout,
    /// Path of the signed metadata below the mirror root.
    pub metadata_path: String,
    /// sha256 of the signed metadata as fetched.
    pub metadata_digest: String,
    pub signature: SignatureReport,
    pub tarball: BlobRef,
    /// The spec blob (v3 only; in v2 the signed spec file is the metadata itself).
    pub spec_blob: Option<BlobRef>,
    pub specfile: SpecFile,
    /// Warnings worth showing (e.g. a DAG hash that does not recompute).
    pub warnings: Vec<String>,
}

/// Largest metadata object read into memory (manifests and spec files are a few KB).
const MAX_METADATA: usize = 64 << 20;

impl VerifiedEntry {
    /// Fetch and verify the metadata of `entry` from its mirror. Verification failures are
    /// `BuildcacheError::Verification`; a caller may then try the next mirror with the same hash.
    pub async fn fetch(
        mirrors: &[Mirror],
        entry: &CatalogEntry,
        trust: &TrustContext,
        catalog: &Catalog,
    ) -> Result<VerifiedEntry, BuildcacheError> {
        let mirror = &mirrors[entry.mirror];
        match entry.layout {
            Layout::V3 => fetch_v3(mirror, entry, trust).await,
            Layout::V2 => fetch_v2(mirror, entry, trust, catalog).await,
        }
    }
}

async fn verify_text(
    mirror: &Mirror,
    text: &[u8],
    what: &str,
    trust: &TrustContext,
) -> Result<Verification, BuildcacheError> {
    let v = trust.verify(mirror, text).await?;
    let required = mirror.signed && !trust.allow_unsigned;
    match v.status {
        SignatureStatus::Good => Ok(v),
        SignatureStatus::Unsigned if !required => Ok(v),
        SignatureStatus::Unsigned => Err(BuildcacheError::Verification {
            what: what.to_string(),
            reason: format!(
                "is not signed; pass --allow-unsigned (or set `signed = false` for mirror {}) to use unsigned packages",
                mirror.name
            ),
        }),
        SignatureStatus::UnknownKey => Err(BuildcacheError::Verification {
            what: what.to_string(),
            reason: format!(
                "is signed by a key that is not trusted ({}); review and trust the mirror's keys with `sf-cache keys trust-mirror {}`",
                v.fingerprint.as_deref().unwrap_or("unknown fingerprint"),
                mirror.name
            ),
        }),
        SignatureStatus::Bad => Err(BuildcacheError::Verification {
            what: what.to_string(),
            reason: format!(
                "has a BAD signature{}: it was modified or corrupted; do not use this copy",
                v.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
            ),
        }),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Gunzip when the bytes start with the gzip magic (Spack's rule for spec blobs).
pub(super) fn maybe_gunzip(bytes: &[u8], what: &str) -> Result<Vec<u8>, BuildcacheError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_METADATA as u64)
            .read_to_end(&mut out)
            .map_err(|e| BuildcacheError::Malformed {
                what: what.to_string(),
                reason: format!("gzip data is corrupt: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

fn parse_specfile(json: &[u8], what: &str) -> Result<SpecFile, BuildcacheError> {
    SpecFile::parse(json).map_err(|e| BuildcacheError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The spec file must describe the spec the index promised, in a tarball format we can unpack.
fn check_specfile(
    specfile: &SpecFile,
    entry: &CatalogEntry,
    max_layout: u32,
    what: &str,
) -> Result<Vec<String>, BuildcacheError> {
    let root = specfile.root();
    if root.hash != entry.spec.hash {
        return Err(BuildcacheError::Verification {
            what: what.to_string(),
            reason: format!(
                "describes {}/{} instead of {}/{}",
                root.name, root.hash, entry.spec.name, entry.spec.hash
            ),
        });
    }
    match specfile.buildcache_layout_version {
        None | Some(0) => {
            return Err(BuildcacheError::Unsupported {
                what: what.to_string(),
                reason: "is an old tar-in-tar package (Spack ≤ 0.17); rebuild or re-push it with Spack ≥ 0.18".into(),
            })
        }
        Some(v) if v > max_layout => {
            return Err(BuildcacheError::Unsupported {
                what: what.to_string(),
                reason: format!("uses tarball format {v}, newer than sf-cache understands; upgrade sf-cache"),
            })
        }
        _ => {}
    }
    let mut warnings = Vec::new();
    if let Some(raw) = specfile.raw_nodes.first() {
        if let Some(recomputed) = crate::spec::dag_hash::recompute(raw) {
            if recomputed != root.hash {
                warnings.push(format!(
                    "the DAG hash of {} does not recompute from its spec ({} stored, {} computed); Spack trusts the stored hash, so does sf-cache",
                    root.name, root.hash, recomputed
                ));
            }
        }
    }
    Ok(warnings)
}

async fn fetch_v3(
    mirror: &Mirror,
    entry: &CatalogEntry,
    trust: &TrustContext,
) -> Result<VerifiedEntry, BuildcacheError> {
    let spec = &entry.spec;
    let path = layout::v3_spec_manifest(&spec.name, &spec.version, &spec.hash);
    let what = mirror.object_url(&path);
    let text = mirror.get(&path).await?;
    let verification = verify_text(mirror, &text, &what, trust).await?;
    let manifest = Manifest::parse(&verification.payload, &what)?;
    let tar = manifest
        .record(media::TARBALL, media::TARBALL_PREFIX)
        .ok_or_else(|| BuildcacheError::Malformed {
            what: what.clone(),
            reason: "manifest names no install tarball".into(),
        })?;
    let spec_rec = manifest
        .record(media::SPEC, media::SPEC_PREFIX)
        .ok_or_else(|| BuildcacheError::Malformed {
            what: what.clone(),
            reason: "manifest names no spec blob".into(),
        })?;
    let spec_bytes = mirror.get_verified_blob(spec_rec).await?;
    let spec_what = mirror.object_url(&spec_rec.path());
    let json = maybe_gunzip(&spec_bytes, &spec_what)?;
    let specfile = parse_specfile(&json, &spec_what)?;
    let warnings = check_specfile(&specfile, entry, 3, &spec_what)?;
    debug!("verified {what}");
    Ok(VerifiedEntry {
        hash: spec.hash.clone(),
        mirror: entry.mirror,
        layout: Layout::V3,
        metadata_path: path,
        metadata_digest: sha256_hex(&text),
        signature: SignatureReport::from_verification(&verification),
        tarball: BlobRef {
            media_type: tar.media_type.clone(),
            algorithm: tar.checksum_algorithm.clone(),
            digest: tar.checksum.clone(),
            size: Some(tar.content_length),
            path: tar.path(),
        },
        spec_blob: Some(BlobRef {
            media_type: spec_rec.media_type.clone(),
            algorithm: spec_rec.checksum_algorithm.clone(),
            digest: spec_rec.checksum.clone(),
            size: Some(spec_rec.content_length),
            path: spec_rec.path(),
        }),
        specfile,
        warnings,
    })
}

/// The v2 file-name stem of a spec: architecture and compiler come from the node (format ≤ 4
/// `compiler`, or for format 5 the compiler dependency), `none-none` without one.
pub fn v2_stem(spec: &Spec, catalog: &Catalog) -> V2Stem {
    let arch = spec
        .arch
        .as_ref()
        .map(|a| format!("{}-{}-{}", a.platform, a.os, a.target))
        .unwrap_or_else(|| "none-none-none".into());
    let compiler = catalog
        .compiler_ref(spec)
        .map(|c| format!("{}-{}", c.name, c.version))
        .unwrap_or_else(|| "none-none".into());
    V2Stem {
        arch,
        compiler,
        name: spec.name.clone(),
        version: spec.version.clone(),
        hash: spec.hash.clone(),
    }
}

async fn fetch_v2(
    mirror: &Mirror,
    entry: &CatalogEntry,
    trust: &TrustContext,
    catalog: &Catalog,
) -> Result<VerifiedEntry, BuildcacheError> {
    let stem = v2_stem(&entry.spec, catalog);
    let signed_path = stem.signed_spec_file();
    let (path, text) = match mirror.get_optional(&signed_path).await? {
        Some(t) => (signed_path, t),
        None => {
            let plain = stem.spec_file();
            match mirror.get_optional(&plain).await? {
                Some(t) => (plain, t),
                None => {
                    if mirror.get_optional(&stem.yaml_spec_file()).await?.is_some() {
                        return Err(BuildcacheError::Unsupported {
                            what: mirror.object_url(&stem.yaml_spec_file()),
                            reason: "is a .spec.yaml file (Spack ≤ 0.16); re-push the package with Spack ≥ 0.18".into(),
                        });
                    }
                    return Err(BuildcacheError::Store(crate::store::StoreError::NotFound {
                        url: mirror.object_url(&signed_path),
                    }));
                }
            }
        }
    };
    let what = mirror.object_url(&path);
    let verification = verify_text(mirror, &text, &what, trust).await?;
    let specfile = parse_specfile(&verification.payload, &what)?;
    let warnings = check_specfile(&specfile, entry, 2, &what)?;
    let (algorithm, digest) =
        specfile
            .binary_cache_checksum
            .clone()
            .ok_or_else(|| BuildcacheError::Malformed {
                what: what.clone(),
                reason: "spec file has no binary_cache_checksum".into(),
            })?;
    Ok(VerifiedEntry {
        hash: entry.spec.hash.clone(),
        mirror: entry.mirror,
        layout: Layout::V2,
        metadata_path: path,
        metadata_digest: sha256_hex(&text),
        signature: SignatureReport::from_verification(&verification),
        tarball: BlobRef {
            media_type: media::TARBALL.to_string(),
            algorithm,
            digest,
            size: None,
            path: stem.tarball(),
        },
        spec_blob: None,
        specfile,
        warnings,
    })
}

/// Stream a blob from the mirror and check its digest (and size, when known) without keeping it:
/// used by `show --verify-blobs`. Returns the number of bytes read.
pub async fn verify_blob_by_download(
    mirror: &Mirror,
    blob: &BlobRef,
) -> Result<u64, BuildcacheError> {
    use futures_util::StreamExt;
    use sha2::Digest;
    let what = mirror.object_url(&blob.path);
    if blob.algorithm != "sha256" {
        return Err(BuildcacheError::Malformed {
            what,
            reason: format!(
                "checksum algorithm `{}` is not supported (only sha256)",
                blob.algorithm
            ),
        });
    }
    let mut object = mirror.store.get_stream(&blob.path, 0).await?;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = object.stream.next().await {
        let chunk = chunk?;
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != blob.digest {
        return Err(BuildcacheError::ChecksumMismatch {
            what,
            expected: blob.digest.clone(),
            actual,
        });
    }
    if let Some(size) = blob.size {
        if size != len {
            return Err(BuildcacheError::ChecksumMismatch {
                what,
                expected: format!("{size} bytes"),
                actual: format!("{len} bytes"),
            });
        }
    }
    Ok(len)
}

impl VerifiedEntry {
    /// Fetch and verify `hash` from the first mirror that has it and passes verification. When
    /// every copy fails, the most serious failure is returned (verification beats not found).
    pub async fn fetch_any(
        catalog: &Catalog,
        hash: &str,
        trust: &TrustContext,
    ) -> Result<VerifiedEntry, BuildcacheError> {
        let sources = catalog.sources(hash);
        let count = sources.len();
        let mut worst: Option<BuildcacheError> = None;
        for (i, source) in sources.into_iter().enumerate() {
            match VerifiedEntry::fetch(&catalog.mirrors, source, trust, catalog).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if i + 1 < count {
                        tracing::warn!("{e}; trying the next mirror");
                    }
                    let rank = |e: &BuildcacheError| match e.kind() {
                        crate::error::ErrorKind::Verification => 2,
                        _ => 1,
                    };
                    if worst.as_ref().is_none_or(|w| rank(&e) > rank(w)) {
                        worst = Some(e);
                    }
                }
            }
        }
        Err(worst.unwrap_or_else(|| BuildcacheError::MissingDependency {
            dependent: "(requested spec)".into(),
            dependency: format!("/{hash}"),
        }))
    }
}
