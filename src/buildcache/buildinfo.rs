//! `.spack/binary_distribution`: the relocation metadata Spack appends to every package tarball.
//!
//! Spack writes it with `syaml.dump(buildinfo, default_flow_style=True)` — usually one flow-style
//! mapping (`{sbang_install_path: …, buildpath: …, …}`), but 0.23 (see the v2 fixture) wrote block
//! style. Both are plain YAML, so one YAML parser (serde_norway) reads them.
//!
//! Keys by writer (format reference §6.3, checked against Spack's `binary_distribution.py`):
//! * all versions: `buildpath` (required: Spack indexes it unconditionally), `spackprefix`,
//!   `relative_prefix`, `relocate_textfiles`, `relocate_binaries`, `relocate_links`;
//! * ≥ 0.17: `sbang_install_path` (Spack treats it as optional);
//! * ≥ 0.19: `hardlinks_deduped`;
//! * ≥ 0.20: `hash_to_prefix`; ≤ 0.19: `prefix_to_hash` (inverted on read, as Spack does);
//! * ≤ 0.20: `relative_rpaths` (archives from the removed `--rel`).
//!
//! Unknown keys are ignored; missing optional keys take the defaults Spack uses.

use serde_norway::Value;

/// Parsed `.spack/binary_distribution`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildInfo {
    /// `<unpadded build store root>/bin/sbang` on the build host (absent before Spack 0.17).
    pub sbang_install_path: Option<String>,
    /// Build host store root (padded when padding was on).
    pub buildpath: String,
    /// Spack's own prefix on the build host.
    pub spackprefix: Option<String>,
    /// Package prefix relative to `buildpath`.
    pub relative_prefix: Option<String>,
    /// `true` when each inode appears once in the relocation lists; absent means `false`.
    pub hardlinks_deduped: bool,
    /// `(dag hash, build-time prefix)` in file order, from `hash_to_prefix` or the inverted older
    /// `prefix_to_hash`. `None` when the file has neither (Spack 1.x refuses to relocate then).
    pub hash_to_prefix: Option<Vec<(String, String)>>,
    /// Text files (relative to the prefix) containing a relocatable prefix.
    pub relocate_textfiles: Vec<String>,
    /// ELF / Mach-O files (relative to the prefix).
    pub relocate_binaries: Vec<String>,
    /// Symlinks whose absolute target starts with a relocatable prefix.
    pub relocate_links: Vec<String>,
    /// Archive made with the removed `--rel` option (≤ 0.20); Spack 1.x only warns about it.
    pub relative_rpaths: bool,
}

/// Why a `binary_distribution` file could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("`.spack/binary_distribution` is not valid YAML ({0}); the package tarball is corrupt — fetch it again")]
    Yaml(String),
    #[error("`.spack/binary_distribution` is not a YAML mapping; the package tarball is corrupt or not a Spack package")]
    NotAMapping,
    #[error("`.spack/binary_distribution` has no `buildpath`; Spack cannot relocate such a package either — rebuild and push it again")]
    MissingBuildpath,
    #[error("`.spack/binary_distribution` key `{key}` has the wrong type (expected {expected}); the package tarball is corrupt")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
}

impl BuildInfo {
    /// Parse the file's bytes (flow or block style YAML).
    pub fn parse(bytes: &[u8]) -> Result<BuildInfo, BuildInfoError> {
        let doc: Value =
            serde_norway::from_slice(bytes).map_err(|e| BuildInfoError::Yaml(e.to_string()))?;
        let map = match untag(&doc) {
            Value::Mapping(m) => m,
            _ => return Err(BuildInfoError::NotAMapping),
        };
        let get = |key: &str| map.get(key).map(untag).filter(|v| !v.is_null());

        let buildpath = match get("buildpath") {
            None => return Err(BuildInfoError::MissingBuildpath),
            Some(v) => scalar_string(v).ok_or(BuildInfoError::WrongType {
                key: "buildpath",
                expected: "a string",
            })?,
        };
        let opt_string = |key: &'static str| -> Result<Option<String>, BuildInfoError> {
            match get(key) {
                None => Ok(None),
                Some(v) => scalar_string(v).map(Some).ok_or(BuildInfoError::WrongType {
                    key,
                    expected: "a string",
                }),
            }
        };
        let opt_bool = |key: &'static str| -> Result<bool, BuildInfoError> {
            match get(key) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(BuildInfoError::WrongType {
                    key,
                    expected: "true or false",
                }),
            }
        };
        let list = |key: &'static str| -> Result<Vec<String>, BuildInfoError> {
            let wrong = BuildInfoError::WrongType {
                key,
                expected: "a list of paths",
            };
            match get(key) {
                None => Ok(Vec::new()),
                Some(Value::Sequence(items)) => items
                    .iter()
                    .map(|i| scalar_string(untag(i)).ok_or(wrong.clone()))
                    .collect(),
                Some(_) => Err(wrong),
            }
        };
        let pairs = |key: &'static str| -> Result<Option<Vec<(String, String)>>, BuildInfoError> {
            let wrong = BuildInfoError::WrongType {
                key,
                expected: "a mapping of strings",
            };
            match get(key) {
                None => Ok(None),
                Some(Value::Mapping(m)) => m
                    .iter()
                    .map(
                        |(k, v)| match (scalar_string(untag(k)), scalar_string(untag(v))) {
                            (Some(k), Some(v)) => Ok((k, v)),
                            _ => Err(wrong.clone()),
                        },
                    )
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(wrong),
            }
        };

        let hash_to_prefix = match pairs("hash_to_prefix")? {
            Some(p) => Some(p),
            None => pairs("prefix_to_hash")?
                .map(|p| p.into_iter().map(|(prefix, hash)| (hash, prefix)).collect()),
        };

        Ok(BuildInfo {
            sbang_install_path: opt_string("sbang_install_path")?,
            buildpath,
            spackprefix: opt_string("spackprefix")?,
            relative_prefix: opt_string("relative_prefix")?,
            hardlinks_deduped: opt_bool("hardlinks_deduped")?,
            hash_to_prefix,
            relocate_textfiles: list("relocate_textfiles")?,
            relocate_binaries: list("relocate_binaries")?,
            relocate_links: list("relocate_links")?,
            relative_rpaths: opt_bool("relative_rpaths")?,
        })
    }

    /// The package's build-time prefix as Spack 0.23 computed it: `buildpath/relative_prefix`.
    pub fn old_prefix(&self) -> Option<String> {
        let rel = self.relative_prefix.as_deref()?;
        Some(format!("{}/{}", self.buildpath.trim_end_matches('/'), rel))
    }
}

fn untag(v: &Value) -> &Value {
    let mut v = v;
    while let Value::Tagged(t) = v {
        v = &t.value;
    }
    v
}

/// Strings as they are; numbers and booleans as YAML spells them (a hash or path the YAML
/// writer left unquoted that a YAML reader types as a number must still read back as text).
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Buildinfo serialization: a one-line YAML flow mapping, like `syaml.dump(default_flow_style=True)`.

fn yaml_plain_ok(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~",
    ];
    if reserved.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_alphanumeric() || matches!(first, b'/' | b'_' | b'.')) {
        return false;
    }
    // Anything number-like must be quoted.
    if s.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'e' | b'E'))
        && s.bytes().any(|b| b.is_ascii_digit())
    {
        return false;
    }
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'_' | b'.' | b'-' | b'+' | b'@' | b'=' | b'~' | b'%'
            )
    })
}

fn yaml_scalar(s: &str) -> String {
    if yaml_plain_ok(s) {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f || (0x80..=0x9f).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yaml_list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| yaml_scalar(s)).collect();
    format!("[{}]", v.join(", "))
}

/// Serialize buildinfo as Spack 1.x writes it (key order as Spack's `get_buildinfo_dict`).
pub fn buildinfo_yaml(b: &BuildInfo) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &b.sbang_install_path {
        parts.push(format!("sbang_install_path: {}", yaml_scalar(s)));
    }
    parts.push(format!("buildpath: {}", yaml_scalar(&b.buildpath)));
    if let Some(s) = &b.spackprefix {
        parts.push(format!("spackprefix: {}", yaml_scalar(s)));
    }
    if let Some(s) = &b.relative_prefix {
        parts.push(format!("relative_prefix: {}", yaml_scalar(s)));
    }
    parts.push(format!("hardlinks_deduped: {}", b.hardlinks_deduped));
    if let Some(h) = &b.hash_to_prefix {
        let m: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{}: {}", yaml_scalar(k), yaml_scalar(v)))
            .collect();
        parts.push(format!("hash_to_prefix: {{{}}}", m.join(", ")));
    }
    parts.push(format!(
        "relocate_binaries: {}",
        yaml_list(&b.relocate_binaries)
    ));
    parts.push(format!("relocate_links: {}", yaml_list(&b.relocate_links)));
    parts.push(format!(
        "relocate_textfiles: {}",
        yaml_list(&b.relocate_textfiles)
    ));
    format!("{{{}}}\n", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = "{sbang_install_path: /tmp/b/opt/bin/sbang, buildpath: /tmp/b/opt/__spack_path_placeholder__/__sp, spackprefix: /tmp/b/spack, relative_prefix: linux-x86_64/greet-2.1.0-pgvza7iamblnpepta3jh2thtyfktejqr, hardlinks_deduped: true, hash_to_prefix: {pgvza7iamblnpepta3jh2thtyfktejqr: /tmp/b/opt/__spack_path_placeholder__/__sp/linux-x86_64/greet-2.1.0-pgvza7iamblnpepta3jh2thtyfktejqr, 2upkbtnnkl4ztegz36plrhvvzftkoxxu: /tmp/b/opt/__spack_path_placeholder__/__sp/linux-x86_64/libgreet-1.2.0-2upkbtnnkl4ztegz36plrhvvzftkoxxu}, relocate_binaries: [bin/greet, libexec/greet/greet-sh], relocate_links: [bin/greet-abs, lib/libgreet-alias.so], relocate_textfiles: [bin/greet-wrapper, share/greet/paths-hardlink.txt]}\n";

    #[test]
    fn flow_style() {
        let bi = BuildInfo::parse(FLOW.as_bytes()).unwrap();
        assert_eq!(
            bi.sbang_install_path.as_deref(),
            Some("/tmp/b/opt/bin/sbang")
        );
        assert_eq!(bi.buildpath, "/tmp/b/opt/__spack_path_placeholder__/__sp");
        assert_eq!(bi.spackprefix.as_deref(), Some("/tmp/b/spack"));
        assert!(bi.hardlinks_deduped);
        let h2p = bi.hash_to_prefix.as_ref().unwrap();
        assert_eq!(h2p.len(), 2);
        assert_eq!(h2p[0].0, "pgvza7iamblnpepta3jh2thtyfktejqr");
        assert!(h2p[1]
            .1
            .ends_with("libgreet-1.2.0-2upkbtnnkl4ztegz36plrhvvzftkoxxu"));
        assert_eq!(
            bi.relocate_binaries,
            ["bin/greet", "libexec/greet/greet-sh"]
        );
        assert_eq!(
            bi.relocate_links,
            ["bin/greet-abs", "lib/libgreet-alias.so"]
        );
        assert_eq!(
            bi.relocate_textfiles,
            ["bin/greet-wrapper", "share/greet/paths-hardlink.txt"]
        );
        assert!(!bi.relative_rpaths);
        assert_eq!(
            bi.old_prefix().unwrap(),
            "/tmp/b/opt/__spack_path_placeholder__/__sp/linux-x86_64/greet-2.1.0-pgvza7iamblnpepta3jh2thtyfktejqr"
        );
    }

    #[test]
    fn block_style_with_old_prefix_to_hash_and_unknown_keys() {
        let yaml = "\
buildpath: /opt/spack
relative_rpaths: false
spackprefix: /home/u/spack
relative_prefix: linux-rhel8-x86_64/gcc-8.5.0/zlib-1.2.13-abc
relocate_textfiles:
- lib/pkgconfig/zlib.pc
relocate_binaries:
- lib/libz.so.1.2.13
relocate_links: []
prefix_to_hash:
  /opt/spack/linux-rhel8-x86_64/gcc-8.5.0/zlib-1.2.13-abc: abc
  /opt/spack/linux-rhel8-x86_64/gcc-8.5.0/dep-1-def: def
some_future_key: {nested: [1, 2]}
";
        let bi = BuildInfo::parse(yaml.as_bytes()).unwrap();
        assert_eq!(bi.sbang_install_path, None);
        assert!(!bi.hardlinks_deduped);
        assert_eq!(
            bi.hash_to_prefix.unwrap(),
            vec![
                (
                    "abc".to_string(),
                    "/opt/spack/linux-rhel8-x86_64/gcc-8.5.0/zlib-1.2.13-abc".to_string()
                ),
                (
                    "def".to_string(),
                    "/opt/spack/linux-rhel8-x86_64/gcc-8.5.0/dep-1-def".to_string()
                ),
            ]
        );
        assert_eq!(bi.relocate_links, Vec::<String>::new());
        assert_eq!(bi.relocate_textfiles, ["lib/pkgconfig/zlib.pc"]);
    }

    #[test]
    fn minimal_and_null_fields() {
        let bi =
            BuildInfo::parse(b"buildpath: /opt/x\nrelocate_links: null\nspackprefix: ~\n").unwrap();
        assert_eq!(bi.buildpath, "/opt/x");
        assert_eq!(bi.hash_to_prefix, None);
        assert_eq!(bi.spackprefix, None);
        assert_eq!(bi.old_prefix(), None);
        assert!(bi.relocate_links.is_empty());
    }

    #[test]
    fn hash_to_prefix_wins_over_prefix_to_hash() {
        let bi = BuildInfo::parse(
            b"{buildpath: /b, hash_to_prefix: {h1: /b/p1}, prefix_to_hash: {/b/p2: h2}}",
        )
        .unwrap();
        assert_eq!(
            bi.hash_to_prefix.unwrap(),
            vec![("h1".to_string(), "/b/p1".to_string())]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            BuildInfo::parse(b"{spackprefix: /x}"),
            Err(BuildInfoError::MissingBuildpath)
        );
        assert_eq!(
            BuildInfo::parse(b"- a\n- b\n"),
            Err(BuildInfoError::NotAMapping)
        );
        assert!(matches!(
            BuildInfo::parse(b"{buildpath: /x, relocate_binaries: {a: b}}"),
            Err(BuildInfoError::WrongType {
                key: "relocate_binaries",
                ..
            })
        ));
        assert!(matches!(
            BuildInfo::parse(b"{buildpath: /x, hardlinks_deduped: maybe}"),
            Err(BuildInfoError::WrongType { .. })
        ));
        assert!(matches!(
            BuildInfo::parse(b"{buildpath: [unclosed"),
            Err(BuildInfoError::Yaml(_))
        ));
        assert!(matches!(
            BuildInfo::parse(&[0xff, 0xfe, 0x00]),
            Err(BuildInfoError::Yaml(_) | BuildInfoError::NotAMapping)
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = BuildInfo::parse(&bytes);
        }
    }
}
