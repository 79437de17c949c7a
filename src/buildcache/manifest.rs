//! Layout-v3 manifests: `{"version": 3, "data": [blob records]}`.

use serde::{Deserialize, Serialize};

use super::layout;
use super::BuildcacheError;

/// One blob named by a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct BlobRecord {
    #[serde(rename = "contentLength")]
    pub content_length: u64,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub compression: String,
    #[serde(rename = "checksumAlgorithm")]
    pub checksum_algorithm: String,
    pub checksum: String,
}

impl BlobRecord {
    /// Path of the blob below the mirror root.
    pub fn path(&self) -> String {
        layout::blob_path(&self.checksum_algorithm, &self.checksum)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Manifest {
    pub version: u64,
    pub data: Vec<BlobRecord>,
}

impl Manifest {
    /// Parse the JSON of a manifest (already taken out of its clearsigned envelope).
    /// `what` names the manifest in errors (its URL).
    pub fn parse(json: &[u8], what: &str) -> Result<Manifest, BuildcacheError> {
        let m: Manifest =
            serde_json::from_slice(json).map_err(|e| BuildcacheError::Malformed {
                what: what.to_string(),
                reason: format!("not a buildcache manifest: {e}"),
            })?;
        if m.version != 3 {
            return Err(BuildcacheError::Malformed {
                what: what.to_string(),
                reason: format!(
                    "manifest version {} is not supported (only 3); upgrade sf-cache",
                    m.version
                ),
            });
        }
        for r in &m.data {
            let hex_ok = !r.checksum.is_empty()
                && r.checksum
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok || r.checksum_algorithm.contains('/') || r.checksum_algorithm.is_empty() {
                return Err(BuildcacheError::Malformed {
                    what: what.to_string(),
                    reason: format!(
                        "blob record has an invalid checksum `{}:{}`",
                        r.checksum_algorithm, r.checksum
                    ),
                });
            }
        }
        Ok(m)
    }

    /// The first record whose media type is `exact`, else the first starting with `prefix`
    /// (tolerates a future Spack's version bump of the media type).
    pub fn record(&self, exact: &str, prefix: &str) -> Option<&BlobRecord> {
        self.data
            .iter()
            .find(|r| r.media_type == exact)
            .or_else(|| self.data.iter().find(|r| r.media_type.starts_with(prefix)))
    }

    /// Serialise as Spack does (`json.dump(indent=0, separators=(",", ":"))`): one token per line.
    pub fn to_spack_json(&self) -> String {
        let mut out = String::from("{\n\"version\":");
        out.push_str(&self.version.to_string());
        out.push_str(",\n\"data\":[\n");
        for (i, r) in self.data.iter().enumerate() {
            if i > 0 {
                out.push_str(",\n");
            }
            out.push_str(&format!(
                "{{\n\"contentLength\":{},\n\"mediaType\":{},\n\"compression\":{},\n\"checksumAlgorithm\":{},\n\"checksum\":{}\n}}",
                r.content_length,
                json_str(&r.media_type),
                json_str(&r.compression),
                json_str(&r.checksum_algorithm),
                json_str(&r.checksum)
            ));
        }
        out.push_str("\n]\n}");
        out
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INDEX_MANIFEST: &str = "{\n\"version\":3,\n\"data\":[\n{\n\"contentLength\":5405,\n\"mediaType\":\"application/vnd.spack.db.v8+json\",\n\"compression\":\"none\",\n\"checksumAlgorithm\":\"sha256\",\n\"checksum\":\"a2a200fb1c7afbdebc886cbfb6bbf00fb8a9a8bbbe7652d5e3cb5a6b9253f1fb\"\n}\n]\n}";

    #[test]
    fn parses_and_reserialises_byte_for_byte() {
        let m = Manifest::parse(INDEX_MANIFEST.as_bytes(), "t").unwrap();
        assert_eq!(m.data[0].content_length, 5405);
        assert_eq!(m.to_spack_json(), INDEX_MANIFEST);
        assert!(m
            .record(layout::media::INDEX, layout::media::INDEX_PREFIX)
            .is_some());
        assert!(m.record("x", "application/vnd.spack.db.v").is_some());
        assert!(m.record("x", "y").is_none());
    }

    #[test]
    fn rejects_other_versions_and_bad_checksums() {
        let v2 = INDEX_MANIFEST.replace("\"version\":3", "\"version\":2");
        assert!(Manifest::parse(v2.as_bytes(), "t")
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        let bad = INDEX_MANIFEST.replace("a2a200", "../../");
        assert!(Manifest::parse(bad.as_bytes(), "t").is_err());
        assert!(Manifest::parse(b"{", "t").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::parse(&bytes, "t");
        }

        #[test]
        fn mutated_manifests_never_panic(pos in 0usize..400, b in any::<u8>()) {
            let mut v = INDEX_MANIFEST.as_bytes().to_vec();
            let i = pos % v.len();
            v[i] = b;
            let _ = Manifest::parse(&v, "t");
        }
    }
}
