//! A whole spec file / spec blob (`{"spec": {"_meta": {"version": N}, "nodes": [...]}, ...}`).

use serde_json::Value;

use super::{Spec, SpecError};

/// A parsed spec file. `nodes[0]` is the root.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecFile {
    /// `spec._meta.version` of the file.
    pub format_version: u32,
    pub nodes: Vec<Spec>,
    /// The node dicts as read (key order preserved), e.g. for [`super::dag_hash::recompute`].
    pub raw_nodes: Vec<Value>,
    pub buildcache_layout_version: Option<u32>,
    /// `(hash_algorithm, hash)` of `binary_cache_checksum` (v2 spec files).
    pub binary_cache_checksum: Option<(String, String)>,
}

fn json_err(msg: impl Into<String>) -> SpecError {
    SpecError::Json(msg.into())
}

impl SpecFile {
    /// Parse a spec file's JSON text (already decompressed and with any clearsign armor removed).
    pub fn parse(bytes: &[u8]) -> Result<SpecFile, SpecError> {
        let start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(bytes.len());
        let body = bytes[start..]
            .strip_prefix(b"\xef\xbb\xbf".as_slice())
            .unwrap_or(&bytes[start..]);
        if body.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
            return Err(SpecError::Clearsigned);
        }
        if body.first() != Some(&b'{') {
            let looks_yaml = body.starts_with(b"spec:")
                || body.starts_with(b"---")
                || memchr::memmem::find(body, b"\nspec:").is_some();
            return Err(if looks_yaml {
                SpecError::Yaml
            } else {
                json_err("not a JSON object")
            });
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| json_err(e.to_string()))?;
        Self::from_value(value)
    }

    /// Build from an already parsed JSON document.
    pub fn from_value(value: Value) -> Result<SpecFile, SpecError> {
        let Value::Object(mut top) = value else {
            return Err(json_err("top level is not an object"));
        };
        let buildcache_layout_version = match top.get("buildcache_layout_version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| json_err("buildcache_layout_version is not a small integer"))?,
            ),
        };
        let binary_cache_checksum = match top.get("binary_cache_checksum") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let algo = v.get("hash_algorithm").and_then(Value::as_str);
                let hash = v.get("hash").and_then(Value::as_str);
                match (algo, hash) {
                    (Some(a), Some(h)) => Some((a.to_string(), h.to_string())),
                    _ => {
                        return Err(json_err(
                            "binary_cache_checksum lacks hash_algorithm or hash",
                        ))
                    }
                }
            }
        };
        let spec = match top.remove("spec") {
            Some(Value::Object(o)) => o,
            Some(Value::Array(_)) => return Err(SpecError::ListFormat),
            Some(_) => return Err(json_err("'spec' is not an object")),
            None => return Err(json_err("no 'spec' key")),
        };
        let format = spec
            .get("_meta")
            .and_then(|m| m.get("version"))
            .ok_or_else(|| json_err("no spec._meta.version"))?;
        let format_version = format
            .as_u64()
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .ok_or_else(|| json_err("spec._meta.version is not an integer"))?;
        if !(3..=5).contains(&format_version) {
            return Err(SpecError::UnsupportedFormat(format_version));
        }
        let raw_nodes = match spec.get("nodes") {
            Some(Value::Array(a)) => a.clone(),
            _ => return Err(json_err("spec.nodes is not a list")),
        };
        if raw_nodes.is_empty() {
            return Err(SpecError::NoNodes);
        }
        let nodes = raw_nodes
            .iter()
            .map(|n| Spec::from_node(n, format_version))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SpecFile {
            format_version,
            nodes,
            raw_nodes,
            buildcache_layout_version,
            binary_cache_checksum,
        })
    }

    /// The root node (`nodes[0]`).
    pub fn root(&self) -> &Spec {
        &self.nodes[0]
    }

    /// The node with this full hash.
    pub fn find(&self, hash: &str) -> Option<&Spec> {
        self.nodes.iter().find(|n| n.hash == hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn shapes() {
        let ok = format!(
            r#"{{"spec":{{"_meta":{{"version":5}},"nodes":[{{"name":"x","version":"1","hash":"{H}"}}]}},
            "buildcache_layout_version":2,"binary_cache_checksum":{{"hash_algorithm":"sha256","hash":"ab"}}}}"#
        );
        let f = SpecFile::parse(ok.as_bytes()).unwrap();
        assert_eq!(f.root().name, "x");
        assert_eq!(f.buildcache_layout_version, Some(2));
        assert_eq!(
            f.binary_cache_checksum,
            Some(("sha256".to_string(), "ab".to_string()))
        );
        assert!(f.find(H).is_some());
        assert_eq!(
            SpecFile::parse(br#"{"spec":[{"x":{}}]}"#),
            Err(SpecError::ListFormat)
        );
        assert_eq!(
            SpecFile::parse(br#"{"spec":{"_meta":{"version":6},"nodes":[]}}"#),
            Err(SpecError::UnsupportedFormat(6))
        );
        assert_eq!(
            SpecFile::parse(br#"{"spec":{"_meta":{"version":2},"nodes":[]}}"#),
            Err(SpecError::UnsupportedFormat(2))
        );
        assert_eq!(
            SpecFile::parse(br#"{"spec":{"_meta":{"version":5},"nodes":[]}}"#),
            Err(SpecError::NoNodes)
        );
        assert_eq!(
            SpecFile::parse(b"spec:\n- zlib:\n    version: 1.2\n"),
            Err(SpecError::Yaml)
        );
        assert_eq!(
            SpecFile::parse(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{}"),
            Err(SpecError::Clearsigned)
        );
        assert!(matches!(SpecFile::parse(b""), Err(SpecError::Json(_))));
        assert!(matches!(SpecFile::parse(b"{"), Err(SpecError::Json(_))));
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = SpecFile::parse(&b);
        }
        #[test]
        fn parse_never_panics_text(s in r#"\{"spec":\{"_meta":\{"version":[0-9]\},"nodes":\[.{0,40}\]\}\}"#) {
            let _ = SpecFile::parse(s.as_bytes());
        }
    }
}
