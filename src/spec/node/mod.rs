//! One concrete spec node, read from formats 3, 4 and 5.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::SpecError;

/// The six compiler flag lists that Spack stores in `parameters` after the variants.
pub const FLAG_NAMES: [&str; 6] = [
    "cflags", "cppflags", "cxxflags", "fflags", "ldflags", "ldlibs",
];

/// `platform-os-target` of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Arch {
    pub platform: String,
    pub os: String,
    /// Target name (for object targets: `target.name`).
    pub target: String,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.platform, self.os, self.target)
    }
}

/// A compiler as named by a format ≤4 `compiler` key, an `annotations.compiler`, or a compiler
/// dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompilerRef {
    pub name: String,
    pub version: String,
}

impl fmt::Display for CompilerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// A variant value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantValue {
    Bool(bool),
    Str(String),
    List(Vec<String>),
}

impl fmt::Display for VariantValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VariantValue::Bool(b) => write!(f, "{b}"),
            VariantValue::Str(s) => f.write_str(s),
            VariantValue::List(l) => f.write_str(&l.join(",")),
        }
    }
}

/// Dependency types as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DepTypes(u8);

impl DepTypes {
    pub const BUILD: DepTypes = DepTypes(1);
    pub const LINK: DepTypes = DepTypes(2);
    pub const RUN: DepTypes = DepTypes(4);
    pub const TEST: DepTypes = DepTypes(8);
    /// `link` and `run`: what an install needs.
    pub const LINK_RUN: DepTypes = DepTypes(2 | 4);
    pub const ALL: DepTypes = DepTypes(15);

    pub const fn empty() -> DepTypes {
        DepTypes(0)
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// All bits of `other` are set in `self`.
    pub const fn contains(self, other: DepTypes) -> bool {
        self.0 & other.0 == other.0
    }
    /// Any bit of `other` is set in `self`.
    pub const fn intersects(self, other: DepTypes) -> bool {
        self.0 & other.0 != 0
    }
    pub fn insert(&mut self, other: DepTypes) {
        self.0 |= other.0;
    }
    /// `build`, `link`, `run` or `test`.
    pub fn from_name(name: &str) -> Option<DepTypes> {
        match name {
            "build" => Some(Self::BUILD),
            "link" => Some(Self::LINK),
            "run" => Some(Self::RUN),
            "test" => Some(Self::TEST),
            _ => None,
        }
    }
    /// Names in Spack's fixed order build, link, run, test.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::BUILD, "build"),
            (Self::LINK, "link"),
            (Self::RUN, "run"),
            (Self::TEST, "test"),
        ]
        .iter()
        .filter(|(t, _)| self.contains(*t))
        .map(|(_, n)| *n)
        .collect()
    }
}

impl std::ops::BitOr for DepTypes {
    type Output = DepTypes;
    fn bitor(self, rhs: DepTypes) -> DepTypes {
        DepTypes(self.0 | rhs.0)
    }
}

/// An edge to a dependency, referenced by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepEdge {
    pub name: String,
    pub hash: String,
    pub deptypes: DepTypes,
    pub virtuals: Vec<String>,
}

/// External package information.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct External {
    pub path: Option<String>,
    pub module: Option<Vec<String>>,
}

/// `build_spec` of a spliced node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpecRef {
    pub name: String,
    pub hash: String,
}

/// One concrete spec node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub version: String,
    pub namespace: Option<String>,
    pub arch: Option<Arch>,
    /// Format ≤4 `compiler` key, or v5 `annotations.compiler`; None for native v5 nodes (see
    /// [`compiler_of`]).
    pub compiler: Option<CompilerRef>,
    /// `parameters` minus the six flag lists.
    pub variants: BTreeMap<String, VariantValue>,
    /// The flag lists present in `parameters` (None when none is present).
    pub flags: Option<BTreeMap<String, Vec<String>>>,
    pub dependencies: Vec<DepEdge>,
    pub external: Option<External>,
    pub build_spec: Option<BuildSpecRef>,
    /// The DAG hash (32 chars, `[a-z0-9]`).
    pub hash: String,
    /// Original spec format: v5 `annotations.original_specfile_version`, else the file's
    /// format. 0 until [`Spec::finish`] is called after a bare serde deserialization.
    pub format_version: u32,
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}/{}", self.name, self.version, self.short_hash())
    }
}

impl Spec {
    /// Read one node dict of spec format `format_version` (3, 4 or 5).
    pub fn from_node(value: &serde_json::Value, format_version: u32) -> Result<Spec, SpecError> {
        check_format(format_version)?;
        let mut spec = Spec::deserialize(value).map_err(|e| node_error(value, e))?;
        spec.finish(format_version);
        Ok(spec)
    }

    /// Fast path: read one node dict from JSON text without building a `serde_json::Value`.
    pub fn from_node_json(text: &str, format_version: u32) -> Result<Spec, SpecError> {
        check_format(format_version)?;
        let mut spec: Spec = serde_json::from_str(text).map_err(|e| SpecError::Node {
            name: "?".into(),
            reason: e.to_string(),
        })?;
        spec.finish(format_version);
        Ok(spec)
    }

    /// After deserializing with serde: record the format of the file/index the node came from
    /// (index DB version 6→3, 7→4, 8→5). Keeps `annotations.original_specfile_version` if the
    /// node had one.
    pub fn finish(&mut self, file_format_version: u32) {
        if self.format_version == 0 {
            self.format_version = file_format_version;
        }
    }

    /// First 7 characters of the hash.
    pub fn short_hash(&self) -> &str {
        self.hash.get(..7).unwrap_or(&self.hash)
    }

    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// Target name, if the node has an architecture.
    pub fn target(&self) -> Option<&str> {
        self.arch.as_ref().map(|a| a.target.as_str())
    }

    /// Dependency edges having any of `types`.
    pub fn deps_of_type(&self, types: DepTypes) -> impl Iterator<Item = &DepEdge> {
        self.dependencies
            .iter()
            .filter(move |d| d.deptypes.intersects(types))
    }
}

fn check_format(v: u32) -> Result<(), SpecError> {
    if (3..=5).contains(&v) {
        Ok(())
    } else {
        Err(SpecError::UnsupportedFormat(v))
    }
}

fn node_error(value: &serde_json::Value, e: impl fmt::Display) -> SpecError {
    let name = value
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or("?")
        .chars()
        .take(100)
        .collect();
    SpecError::Node {
        name,
        reason: e.to_string(),
    }
}

/// The node's compiler: format ≤4 attribute or annotation, else (format 5) the direct build
/// dependency providing virtual `c`, else `cxx`, else `fortran`, with name and version taken from
/// the dependency node found by `lookup(hash)`.
pub fn compiler_of<'s>(
    spec: &Spec,
    lookup: &dyn Fn(&str) -> Option<&'s Spec>,
) -> Option<CompilerRef> {
    if let Some(c) = &spec.compiler {
        return Some(c.clone());
    }
    for lang in ["c", "cxx", "fortran"] {
        let edge = spec
            .dependencies
            .iter()
            .find(|d| d.deptypes.contains(DepTypes::BUILD) && d.virtuals.iter().any(|v| v == lang));
        if let Some(edge) = edge {
            if let Some(dep) = lookup(&edge.hash) {
                return Some(CompilerRef {
                    name: dep.name.clone(),
                    version: dep.version.clone(),
                });
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Validation of names used in paths and URLs.

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

fn valid_hash(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

mod wire;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const H1: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const H2: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn format5_node() {
        let n = json!({"name":"greet","version":"2.1.0",
            "arch":{"platform":"linux","platform_os":"debian12","target":{"name":"haswell","vendor":"GenuineIntel","features":[],"generation":0,"parents":["ivybridge"]}},
            "namespace":"sfdemo",
            "parameters":{"build_system":"generic","gpu":true,"languages":["c","c++"],"cflags":["-O2"],"cppflags":[]},
            "external":{"path":"/usr","module":null,"extra_attributes":{}},
            "dependencies":[{"name":"gcc","hash":H1,"parameters":{"deptypes":["build"],"virtuals":["c","cxx"]}},
                            {"name":"lib","hash":H2,"parameters":{"deptypes":["link","run"],"virtuals":[],"direct":true}}],
            "annotations":{"original_specfile_version":5},
            "hash":H1});
        let s = Spec::from_node(&n, 5).unwrap();
        assert_eq!(s.name, "greet");
        assert_eq!(s.arch.as_ref().unwrap().target, "haswell");
        assert_eq!(
            s.arch.as_ref().unwrap().to_string(),
            "linux-debian12-haswell"
        );
        assert_eq!(s.variants.len(), 3);
        assert_eq!(s.variants["gpu"], VariantValue::Bool(true));
        assert_eq!(
            s.variants["languages"],
            VariantValue::List(vec!["c".into(), "c++".into()])
        );
        let flags = s.flags.as_ref().unwrap();
        assert_eq!(flags["cflags"], vec!["-O2".to_string()]);
        assert_eq!(s.dependencies[0].deptypes, DepTypes::BUILD);
        assert_eq!(s.dependencies[1].deptypes, DepTypes::LINK_RUN);
        assert_eq!(s.dependencies[0].virtuals, vec!["c", "cxx"]);
        assert_eq!(s.external.as_ref().unwrap().path.as_deref(), Some("/usr"));
        assert_eq!(s.format_version, 5);
        assert!(s.compiler.is_none());
        let gcc = Spec::from_node(&json!({"name":"gcc","version":"13.4.0","hash":H1}), 5).unwrap();
        let c = compiler_of(&s, &|h| if h == H1 { Some(&gcc) } else { None }).unwrap();
        assert_eq!(c.to_string(), "gcc@13.4.0");
        assert_eq!(
            Spec::from_node_json(&n.to_string(), 5).unwrap(),
            s,
            "fast path agrees"
        );
    }

    #[test]
    fn format4_and_3_nodes() {
        let n = json!({"name":"x","version":"1.0","compiler":{"name":"gcc","version":"12.2.0"},
            "dependencies":[{"name":"y","hash":H2,"parameters":{"deptypes":["link"],"virtuals":["libc"]}}],
            "hash":H1});
        let s = Spec::from_node(&n, 4).unwrap();
        assert_eq!(s.compiler.as_ref().unwrap().to_string(), "gcc@12.2.0");
        assert_eq!(s.format_version, 4);
        assert_eq!(s.flags, None);
        let n3 = json!({"name":"x","version":"1.0","compiler":{"name":"gcc","versions":["=12.2.0"]},
            "dependencies":[{"name":"y","hash":H2,"type":["build","link"]}],
            "hash":H1});
        let s3 = Spec::from_node(&n3, 3).unwrap();
        assert_eq!(
            s3.dependencies[0].deptypes,
            DepTypes::BUILD | DepTypes::LINK
        );
        assert_eq!(s3.compiler.unwrap().version, "12.2.0");
        let n_ann = json!({"name":"x","version":"1.0",
            "annotations":{"original_specfile_version":4,"compiler":"gcc@=10.2.1"},"hash":H1});
        let s = Spec::from_node(&n_ann, 5).unwrap();
        assert_eq!(s.format_version, 4);
        assert_eq!(s.compiler.unwrap().to_string(), "gcc@10.2.1");
        let mut s =
            serde_json::from_value::<Spec>(json!({"name":"x","version":"1","hash":H1})).unwrap();
        assert_eq!(s.format_version, 0);
        s.finish(4);
        assert_eq!(s.format_version, 4);
    }

    #[test]
    fn bad_nodes_are_errors() {
        let cases = [
            json!({"name":"x","version":"1.0"}),
            json!({"name":"x","version":"1.0","hash":"short"}),
            json!({"name":"../x","version":"1.0","hash":H1}),
            json!({"name":"x","version":"1/0","hash":H1}),
            json!({"name":"x","versions":["1.0"],"hash":H1}),
            json!({"name":"x","version":"1.0","hash":H1,"dependencies":[{"name":"y","hash":"../../etc"}]}),
            json!({"name":"x","version":"1.0","hash":H1,"annotations":{"compiler":"bad"}}),
            json!([1, 2]),
            json!("x"),
        ];
        for c in cases {
            assert!(Spec::from_node(&c, 5).is_err(), "{c}");
        }
        assert_eq!(
            Spec::from_node(&json!({"name":"x","version":"1","hash":H1}), 6),
            Err(SpecError::UnsupportedFormat(6))
        );
    }

    proptest! {
        #[test]
        fn from_node_never_panics(s in ".*") {
            let _ = Spec::from_node_json(&s, 5);
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&s) {
                let _ = Spec::from_node(&v, 4);
            }
        }

        #[test]
        fn from_node_never_panics_structured(
            name in "[a-z./]{0,4}", ver in "[0-9.a-z=/]{0,5}", hash in "[a-z0-9]{30,33}",
            target in prop_oneof![Just(json!("x86_64")), Just(json!({"name": "zen"})), Just(json!(3)), Just(json!({}))],
            deps in prop_oneof![Just(json!([])), Just(json!({})), Just(json!(null)), Just(json!([{"hash": 1}]))],
        ) {
            let n = json!({"name": name, "version": ver, "hash": hash,
                "arch": {"target": target}, "dependencies": deps});
            let _ = Spec::from_node(&n, 5);
        }
    }
}
