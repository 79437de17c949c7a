//! The package index (`index.json`, Spack's database format, versions 6–8).
//!
//! The index only helps to find things: nothing is installed because the index says so. It is
//! parsed straight into [`Spec`]s with serde (no intermediate `Value` tree), because public caches
//! list tens of thousands of specs.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::BuildcacheError;
use crate::spec::Spec;

/// Oldest and newest database versions this reader understands.
pub const MIN_DB_VERSION: u32 = 6;
pub const MAX_DB_VERSION: u32 = 8;

/// One record of the index.
#[derive(Debug, Clone)]
pub struct IndexRecord {
    pub spec: Spec,
    pub ref_count: u32,
    /// True when the mirror holds a binary for this node (false: external or build-only node
    /// that came along with a pushed spec's DAG).
    pub in_buildcache: bool,
}

#[derive(Debug, Clone)]
pub struct Index {
    pub db_version: u32,
    pub records: Vec<IndexRecord>,
}

/// Spec file format that goes with a database version (Spack's `database.py: reader`).
pub fn spec_format_for_db(db_version: u32) -> u32 {
    match db_version {
        6 => 3,
        7 => 4,
        _ => 5,
    }
}

impl Index {
    /// Parse an index. `what` names it (its URL) in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Index, BuildcacheError> {
        let file: DbFile = serde_json::from_slice(bytes).map_err(|e| {
            let reason = if e.is_eof() {
                format!("index is truncated ({e}); refetch it or check the mirror")
            } else {
                format!("index is not valid buildcache index JSON: {e}")
            };
            BuildcacheError::Malformed {
                what: what.to_string(),
                reason,
            }
        })?;
        let db_version = file.database.version.0;
        if !(MIN_DB_VERSION..=MAX_DB_VERSION).contains(&db_version) {
            return Err(BuildcacheError::Malformed {
                what: what.to_string(),
                reason: format!(
                    "index database version {db_version} is not supported (sf-cache reads {MIN_DB_VERSION}–{MAX_DB_VERSION}){}",
                    if db_version > MAX_DB_VERSION { "; upgrade sf-cache" } else { "" }
                ),
            });
        }
        let format = spec_format_for_db(db_version);
        let mut records = file.database.installs.0;
        for r in &mut records {
            r.spec.finish(format);
        }
        Ok(Index {
            db_version,
            records,
        })
    }
}

#[derive(Deserialize)]
struct DbFile {
    database: Db,
}

#[derive(Deserialize)]
struct Db {
    version: DbVersion,
    #[serde(default)]
    installs: Installs,
}

/// `"8"` or `8`.
struct DbVersion(u32);

impl<'de> Deserialize<'de> for DbVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DbVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a database version")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DbVersion, E> {
                u32::try_from(v)
                    .map(DbVersion)
                    .map_err(|_| E::custom("database version out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DbVersion, E> {
                v.trim()
                    .parse::<u32>()
                    .map(DbVersion)
                    .map_err(|_| E::custom(format!("database version `{v}` is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `installs`, read straight into a vector (the hash keys are checked against the nodes).
#[derive(Default)]
struct Installs(Vec<IndexRecord>);

#[derive(Deserialize)]
struct RecordWire {
    spec: Spec,
    #[serde(default)]
    ref_count: u32,
    #[serde(default)]
    in_buildcache: bool,
}

impl<'de> Deserialize<'de> for Installs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Installs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of DAG hash to install record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Installs, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let rec: RecordWire = map.next_value()?;
                    let mut spec = rec.spec;
                    if spec.hash.is_empty() {
                        spec.hash = key.to_string();
                    } else if spec.hash != key {
                        return Err(de::Error::custom(format!(
                            "record `{key}` holds a node whose hash is `{}`",
                            spec.hash
                        )));
                    }
                    out.push(IndexRecord {
                        spec,
                        ref_count: rec.ref_count,
                        in_buildcache: rec.in_buildcache,
                    });
                }
                Ok(Installs(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: &str = r#"{"database":{"version":"8","installs":{
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":{"spec":{"name":"glibc","version":"2.36",
        "arch":{"platform":"linux","platform_os":"debian12","target":"x86_64"},
        "namespace":"builtin","parameters":{"build_system":"generic"},
        "external":{"path":"/usr","module":null,"extra_attributes":{}},
        "annotations":{"original_specfile_version":5},"hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
        "ref_count":1,"in_buildcache":false},
      "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb":{"spec":{"name":"greet","version":"2.1.0",
        "arch":{"platform":"linux","platform_os":"debian12","target":"x86_64"},
        "namespace":"sfdemo","parameters":{"build_system":"generic","gpu":true},
        "dependencies":[{"name":"glibc","hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
          "parameters":{"deptypes":["link"],"virtuals":["libc"]}}],
        "annotations":{"original_specfile_version":5},"hash":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
        "ref_count":0,"in_buildcache":true}}}}"#;

    #[test]
    fn parses_records() {
        let idx = Index::parse(SMALL.as_bytes(), "t").unwrap();
        assert_eq!(idx.db_version, 8);
        assert_eq!(idx.records.len(), 2);
        let greet = idx.records.iter().find(|r| r.spec.name == "greet").unwrap();
        assert!(greet.in_buildcache);
        assert_eq!(greet.spec.dependencies.len(), 1);
        let glibc = idx.records.iter().find(|r| r.spec.name == "glibc").unwrap();
        assert!(glibc.spec.external.is_some());
    }

    #[test]
    fn rejects_versions_truncation_and_mismatched_keys() {
        let v9 = SMALL.replace("\"version\":\"8\"", "\"version\":\"9\"");
        let e = Index::parse(v9.as_bytes(), "t").unwrap_err().to_string();
        assert!(e.contains("upgrade sf-cache"), "{e}");
        let e = Index::parse(&SMALL.as_bytes()[..200], "t").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let bad = SMALL.replacen("\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\":{", "\"cccccccccccccccccccccccccccccccc\":{", 1);
        assert!(Index::parse(bad.as_bytes(), "t").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Index::parse(&bytes, "t");
        }

        #[test]
        fn mutations_never_panic(pos in 0usize..2000, b in any::<u8>()) {
            let mut v = SMALL.as_bytes().to_vec();
            let i = pos % v.len();
            v[i] = b;
            let _ = Index::parse(&v, "t");
        }
    }
}
