//! One-file bundles: a zstd-compressed tar stream whose first member, `sf-cache-bundle.json`,
//! lists every other member with its sha256 and size. Written and read streaming (no whole file
//! in memory). Reading verifies every member against the list before anything is used; the
//! signatures inside are verified when the extracted tree is mirrored (`import`) or installed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{walk_files, MirrorError};

/// Name of the bundle manifest, the first member of every bundle.
pub const BUNDLE_MANIFEST: &str = "sf-cache-bundle.json";
/// The zstd frame magic number.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const MAX_MANIFEST: u64 = 256 << 20;
/// Marker written into an extracted bundle directory once it was completely verified.
const VERIFIED_MARKER: &str = ".sf-cache-bundle-verified";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleMember {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleManifest {
    /// Always `"sf-cache-bundle"`.
    pub format: String,
    pub version: u32,
    pub members: Vec<BundleMember>,
}

/// What [`write_bundle`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BundleInfo {
    pub members: usize,
    /// Uncompressed bytes of the members.
    pub content_bytes: u64,
    /// Size of the bundle file.
    pub bundle_bytes: u64,
}

fn hash_file(path: &Path) -> Result<(String, u64), MirrorError> {
    crate::fs::sha256_file_len(path).map_err(|e| MirrorError::io(path, e))
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h
}

/// Write the tree at `dir` (a mirror) as a bundle at `out` (atomically: temp file + rename).
pub fn write_bundle(dir: &Path, out: &Path) -> Result<BundleInfo, MirrorError> {
    let files = walk_files(dir)?;
    let mut members = Vec::with_capacity(files.len());
    for rel in &files {
        let (sha256, size) = hash_file(&dir.join(rel))?;
        members.push(BundleMember {
            path: rel.clone(),
            sha256,
            size,
        });
    }
    let manifest = BundleManifest {
        format: "sf-cache-bundle".into(),
        version: 1,
        members,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|e| {
        MirrorError::Usage(format!(
            "internal error: bundle manifest not serialisable: {e}"
        ))
    })?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".sf-tmp-bundle-")
        .tempfile_in(&parent)
        .map_err(|e| MirrorError::io(&parent, e))?;
    let io = |e: std::io::Error| MirrorError::io(out, e);
    let (file, tmp_path) = tmp.into_parts();
    let mut enc = zstd::Encoder::new(BufWriter::with_capacity(1 << 20, file), 3).map_err(io)?;
    enc.include_checksum(true).map_err(io)?;
    let mut builder = tar::Builder::new(enc);
    let mut h = header(manifest_json.len() as u64);
    builder
        .append_data(&mut h, BUNDLE_MANIFEST, &manifest_json[..])
        .map_err(io)?;
    let mut content_bytes = 0u64;
    for m in &manifest.members {
        let path = dir.join(&m.path);
        let f = File::open(&path).map_err(|e| MirrorError::io(&path, e))?;
        let mut h = header(m.size);
        // Exactly `size` bytes (what was hashed); a file that changed meanwhile fails import.
        builder
            .append_data(&mut h, &m.path, f.take(m.size))
            .map_err(io)?;
        content_bytes += m.size;
    }
    let enc = builder.into_inner().map_err(io)?;
    let writer = enc.finish().map_err(io)?;
    let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let bundle_bytes = file.metadata().map_err(io)?.len();
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    drop(file);
    tmp_path.persist(out).map_err(|e| io(e.error))?;
    Ok(BundleInfo {
        members: manifest.members.len(),
        content_bytes,
        bundle_bytes,
    })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Extract `bundle` into the empty directory `dest_dir`, verifying every member against the
/// bundle manifest (sha256, size, no unlisted/duplicate/missing member, safe relative paths).
/// On error the caller must discard `dest_dir`.
pub fn extract_bundle(bundle: &Path, dest_dir: &Path) -> Result<BundleManifest, MirrorError> {
    let name = bundle.display().to_string();
    let bad = |reason: String| MirrorError::Bundle {
        bundle: name.clone(),
        reason,
    };
    let file = File::open(bundle).map_err(|e| MirrorError::io(bundle, e))?;
    let dec = zstd::Decoder::new(file).map_err(|e| bad(format!("not a zstd stream: {e}")))?;
    let mut archive = tar::Archive::new(dec);
    let mut entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar stream: {e}")))?;
    let manifest: BundleManifest = {
        let mut first = entries
            .next()
            .ok_or_else(|| bad("the bundle is empty".into()))?
            .map_err(|e| bad(format!("cannot read the first member: {e}")))?;
        let path = first
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path != BUNDLE_MANIFEST {
            return Err(bad(format!(
                "the first member is `{path}`, not {BUNDLE_MANIFEST}; this is not an sf-cache bundle"
            )));
        }
        let mut json = Vec::new();
        (&mut first)
            .take(MAX_MANIFEST)
            .read_to_end(&mut json)
            .map_err(|e| bad(format!("cannot read {BUNDLE_MANIFEST}: {e}")))?;
        serde_json::from_slice(&json).map_err(|e| bad(format!("{BUNDLE_MANIFEST}: {e}")))?
    };
    if manifest.format != "sf-cache-bundle" || manifest.version != 1 {
        return Err(bad(format!(
            "bundle format {} version {} is not supported; upgrade sf-cache",
            manifest.format, manifest.version
        )));
    }
    let mut expected: HashMap<&str, (&str, u64, bool)> = HashMap::new();
    for m in &manifest.members {
        if crate::store::check_rel(&m.path).is_err() || m.path == BUNDLE_MANIFEST {
            return Err(bad(format!("member path `{}` is not allowed", m.path)));
        }
        if !is_sha256_hex(&m.sha256) {
            return Err(bad(format!("member `{}` has an invalid sha256", m.path)));
        }
        if expected
            .insert(&m.path, (&m.sha256, m.size, false))
            .is_some()
        {
            return Err(bad(format!("member `{}` is listed twice", m.path)));
        }
    }
    let mut buf = vec![0u8; 256 * 1024];
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt tar stream: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad member name: {e}")))?
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| bad("a member name is not UTF-8".into()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("member `{path}` is not a regular file")));
        }
        let Some(slot) = expected.get_mut(path.as_str()) else {
            return Err(bad(format!(
                "member `{path}` is not listed in {BUNDLE_MANIFEST}"
            )));
        };
        if slot.2 {
            return Err(bad(format!("member `{path}` appears twice")));
        }
        let (want_sha, want_size) = (slot.0.to_string(), slot.1);
        let target = dest_dir.join(&path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| MirrorError::io(dir, e))?;
        }
        let mut out = File::create_new(&target).map_err(|e| MirrorError::io(&target, e))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        loop {
            let r = entry
                .read(&mut buf)
                .map_err(|e| bad(format!("member `{path}` cannot be read: {e}")))?;
            if r == 0 {
                break;
            }
            n += r as u64;
            if n > want_size {
                return Err(bad(format!("member `{path}` is larger than listed")));
            }
            h.update(&buf[..r]);
            out.write_all(&buf[..r])
                .map_err(|e| MirrorError::io(&target, e))?;
        }
        let actual = hex::encode(h.finalize());
        if n != want_size || actual != want_sha {
            return Err(bad(format!(
                "member `{path}` does not match the bundle manifest (sha256 {actual}, {n} bytes; expected {want_sha}, {want_size} bytes)"
            )));
        }
        slot.2 = true;
    }
    if let Some((missing, _)) = expected.iter().find(|(_, v)| !v.2) {
        return Err(bad(format!("member `{missing}` is listed but missing")));
    }
    Ok(manifest)
}

/// Whether `path` looks like a bundle: `.sfbundle` / `.tar.zst` name, or a regular file that
/// starts with the zstd magic.
pub fn is_bundle(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    let name = path.to_string_lossy();
    if name.ends_with(".sfbundle") || name.ends_with(".tar.zst") {
        return true;
    }
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == ZSTD_MAGIC
}

/// Extract (verified) a bundle into `<cache_dir>/<sha256 of the bundle>/` once, and return that
/// directory (a normal buildcache tree). Later calls with the same bundle reuse it.
pub fn extract_cached(bundle: &Path, cache_dir: &Path) -> Result<PathBuf, MirrorError> {
    let (digest, _) = hash_file(bundle)?;
    let target = cache_dir.join(&digest);
    if target.join(VERIFIED_MARKER).is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| MirrorError::io(cache_dir, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".sf-tmp-")
        .tempdir_in(cache_dir)
        .map_err(|e| MirrorError::io(cache_dir, e))?;
    extract_bundle(bundle, staging.path())?;
    std::fs::write(staging.path().join(VERIFIED_MARKER), digest.as_bytes())
        .map_err(|e| MirrorError::io(staging.path(), e))?;
    if target.exists() {
        // A stale, unverified leftover: replace it.
        std::fs::remove_dir_all(&target).map_err(|e| MirrorError::io(&target, e))?;
    }
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, &target) {
        let _ = std::fs::remove_dir_all(&staged);
        if !target.join(VERIFIED_MARKER).is_file() {
            return Err(MirrorError::io(&target, e));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256/ab")).unwrap();
        std::fs::write(d.path().join("blobs/sha256/ab/abc"), vec![7u8; 300_000]).unwrap();
        std::fs::create_dir_all(d.path().join("v3")).unwrap();
        std::fs::write(d.path().join("v3/layout.json"), b"{}").unwrap();
        d
    }

    #[test]
    fn round_trip_and_corruption() {
        let src = tree();
        let out = tempfile::tempdir().unwrap();
        let b = out.path().join("x.sfbundle");
        let info = write_bundle(src.path(), &b).unwrap();
        assert_eq!(info.members, 2);
        assert!(is_bundle(&b));
        let dest = tempfile::tempdir().unwrap();
        let m = extract_bundle(&b, dest.path()).unwrap();
        assert_eq!(m.members.len(), 2);
        assert_eq!(
            std::fs::read(dest.path().join("blobs/sha256/ab/abc")).unwrap(),
            vec![7u8; 300_000]
        );
        // Every single changed byte is refused.
        let bytes = std::fs::read(&b).unwrap();
        for at in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 5] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x55;
            let p = out.path().join("bad.sfbundle");
            std::fs::write(&p, &bad).unwrap();
            let d = tempfile::tempdir().unwrap();
            let e = extract_bundle(&p, d.path()).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Verification, "{e}");
        }
        // Cached extraction is reused.
        let cache = tempfile::tempdir().unwrap();
        let a = extract_cached(&b, cache.path()).unwrap();
        let again = extract_cached(&b, cache.path()).unwrap();
        assert_eq!(a, again);
        assert!(a.join("v3/layout.json").is_file());
    }

    #[test]
    fn unlisted_member_refused() {
        let src = tree();
        let out = tempfile::tempdir().unwrap();
        let b = out.path().join("x.tar.zst");
        // A bundle whose manifest omits a member.
        let f = File::create(&b).unwrap();
        let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
        let mut builder = tar::Builder::new(enc);
        let m = br#"{"format":"sf-cache-bundle","version":1,"members":[]}"#;
        builder
            .append_data(&mut header(m.len() as u64), BUNDLE_MANIFEST, &m[..])
            .unwrap();
        builder
            .append_data(&mut header(2), "v3/layout.json", &b"{}"[..])
            .unwrap();
        drop(builder.into_inner().unwrap());
        let d = tempfile::tempdir().unwrap();
        let e = extract_bundle(&b, d.path()).unwrap_err();
        assert!(e.to_string().contains("not listed"), "{e}");
        drop(src);
    }
}
