//! The public keys a mirror publishes (v3 key manifests and key index; v2 `_pgp/`). Keys are read
//! unsigned: they are only trusted when pinned or explicitly accepted by the user.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::layout::{self};
use super::manifest::Manifest;
use super::mirror::Mirror;
use super::BuildcacheError;
use crate::trust::{parse_keys, KeyInfo};

#[derive(Deserialize)]
struct KeyIndex {
    keys: BTreeMap<String, serde_json::Value>,
}

fn is_fingerprint(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_key_index(bytes: &[u8], what: &str) -> Result<Vec<String>, BuildcacheError> {
    let idx: KeyIndex = serde_json::from_slice(bytes).map_err(|e| BuildcacheError::Malformed {
        what: what.to_string(),
        reason: format!("not a key index: {e}"),
    })?;
    Ok(idx.keys.into_keys().filter(|k| is_fingerprint(k)).collect())
}

fn parse_armored(bytes: &[u8], what: &str) -> Result<Vec<KeyInfo>, BuildcacheError> {
    parse_keys(bytes).map_err(|e| BuildcacheError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Every key the mirror publishes, v3 first then v2, without duplicates.
pub async fn mirror_keys(mirror: &Mirror) -> Result<Vec<KeyInfo>, BuildcacheError> {
    let mut out: Vec<KeyInfo> = Vec::new();
    let push = |keys: Vec<KeyInfo>, out: &mut Vec<KeyInfo>| {
        for k in keys {
            if !out.iter().any(|o| o.fingerprint == k.fingerprint) {
                out.push(k);
            }
        }
    };
    // v3: key index, else a listing of the key manifests where the store can list.
    let mut fingerprints = Vec::new();
    if let Some(bytes) = mirror.get_optional(layout::V3_KEY_INDEX_MANIFEST).await? {
        let what = mirror.object_url(layout::V3_KEY_INDEX_MANIFEST);
        let manifest = Manifest::parse(&bytes, &what)?;
        if let Some(rec) = manifest.data.first() {
            let blob = mirror.get_verified_blob(rec).await?;
            fingerprints = parse_key_index(&blob, &mirror.object_url(&rec.path()))?;
        }
    } else if let Ok(names) = mirror.store.list(layout::V3_KEY_DIR).await {
        fingerprints = names
            .iter()
            .filter_map(|n| n.rsplit('/').next())
            .filter_map(|n| n.strip_suffix(".key.manifest.json"))
            .filter(|f| is_fingerprint(f))
            .map(str::to_string)
            .collect();
    }
    for fpr in fingerprints {
        let path = layout::v3_key_manifest(&fpr);
        let Some(bytes) = mirror.get_optional(&path).await? else {
            continue;
        };
        let what = mirror.object_url(&path);
        let manifest = Manifest::parse(&bytes, &what)?;
        if let Some(rec) = manifest.data.first() {
            let blob = mirror.get_verified_blob(rec).await?;
            push(parse_armored(&blob, &what)?, &mut out);
        }
    }
    // v2: build_cache/_pgp/index.json and <FPR>.pub.
    if let Some(bytes) = mirror.get_optional(layout::V2_KEY_INDEX).await? {
        let what = mirror.object_url(layout::V2_KEY_INDEX);
        for fpr in parse_key_index(&bytes, &what)? {
            let path = layout::v2_key_file(&fpr);
            if let Some(key) = mirror.get_optional(&path).await? {
                push(parse_armored(&key, &mirror.object_url(&path))?, &mut out);
            }
        }
    }
    Ok(out)
}
