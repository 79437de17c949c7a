//! The wire format of a spec node (private): accepts formats 3–5 and builds the model.

use super::*;

// ---------------------------------------------------------------------------------------------
// Wire format (private): accepts formats 3–5.

/// A string, or a number/bool rendered as text.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A single string or a list of strings.
struct TextList(Vec<String>);

impl<'de> Deserialize<'de> for TextList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextList, E> {
                Ok(TextList(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextList, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(t)) = seq.next_element()? {
                    out.push(t);
                }
                Ok(TextList(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for VariantValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VariantValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a bool, a string or a list of strings")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<VariantValue, E> {
                Ok(VariantValue::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<VariantValue, E> {
                Ok(VariantValue::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<VariantValue, E> {
                Ok(VariantValue::Str(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<VariantValue, E> {
                Ok(VariantValue::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<VariantValue, E> {
                Ok(VariantValue::Str(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<VariantValue, E> {
                Ok(VariantValue::Str(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VariantValue, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(t)) = seq.next_element()? {
                    out.push(t);
                }
                Ok(VariantValue::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Target: a plain string, or an object whose `name` is taken.
struct TargetName(String);

impl<'de> Deserialize<'de> for TargetName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target name or an object with a name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetName, E> {
                Ok(TargetName(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TargetName, A::Error> {
                let mut name = None;
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if k == "name" {
                        name = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                name.map(TargetName)
                    .ok_or_else(|| de::Error::missing_field("target.name"))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct WireArch {
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    platform_os: Option<String>,
    #[serde(default)]
    target: Option<TargetName>,
}

#[derive(Deserialize)]
struct WireCompiler {
    name: String,
    #[serde(default)]
    version: Option<Text>,
    #[serde(default)]
    versions: Option<TextList>,
}

#[derive(Deserialize)]
struct WireExternal {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    module: Option<TextList>,
}

#[derive(Deserialize)]
struct WireDepParams {
    #[serde(default)]
    deptypes: Option<TextList>,
    #[serde(default)]
    virtuals: Option<TextList>,
}

#[derive(Deserialize)]
struct WireDep {
    #[serde(default)]
    name: Option<String>,
    hash: String,
    #[serde(default, rename = "type")]
    kind: Option<TextList>,
    #[serde(default)]
    parameters: Option<WireDepParams>,
}

/// Dependencies: a list of edges (formats 2–5) or a map name → edge (older dict form).
struct WireDeps(Vec<(String, WireDep)>);

impl<'de> Deserialize<'de> for WireDeps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireDeps;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of dependencies")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireDeps, A::Error> {
                let mut out = Vec::new();
                while let Some(dep) = seq.next_element::<WireDep>()? {
                    let name = dep
                        .name
                        .clone()
                        .ok_or_else(|| de::Error::missing_field("dependencies[].name"))?;
                    out.push((name, dep));
                }
                Ok(WireDeps(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireDeps, A::Error> {
                let mut out = Vec::new();
                while let Some((k, dep)) = map.next_entry::<String, WireDep>()? {
                    out.push((k, dep));
                }
                Ok(WireDeps(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct WireBuildSpec {
    name: String,
    hash: String,
}

#[derive(Deserialize)]
struct WireAnnotations {
    #[serde(default)]
    original_specfile_version: Option<u32>,
    #[serde(default)]
    compiler: Option<String>,
}

#[derive(Deserialize)]
struct WireNode {
    name: String,
    #[serde(default)]
    version: Option<Text>,
    #[serde(default)]
    versions: Option<IgnoredAny>,
    #[serde(default)]
    arch: Option<WireArch>,
    #[serde(default)]
    compiler: Option<WireCompiler>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, VariantValue>>,
    #[serde(default)]
    external: Option<WireExternal>,
    #[serde(default)]
    dependencies: Option<WireDeps>,
    #[serde(default)]
    build_spec: Option<WireBuildSpec>,
    #[serde(default)]
    annotations: Option<WireAnnotations>,
    #[serde(default)]
    hash: Option<String>,
}

fn strip_exact(v: &str) -> &str {
    v.trim_start_matches('=')
}

/// `gcc@=10.2.1` (or `gcc@10.2.1`) → CompilerRef.
fn parse_compiler_annotation(s: &str) -> Option<CompilerRef> {
    let (name, ver) = s.split_once('@')?;
    let ver = strip_exact(ver);
    if !valid_name(name) || !valid_version(ver) {
        return None;
    }
    Some(CompilerRef {
        name: name.to_string(),
        version: ver.to_string(),
    })
}

impl WireNode {
    fn into_spec(self) -> Result<Spec, String> {
        let name = self.name;
        if !valid_name(&name) {
            return Err(format!("invalid package name {:?}", truncate(&name)));
        }
        let version = match (self.version, self.versions) {
            (Some(Text(v)), _) => v,
            (None, Some(_)) => return Err("not concrete (has 'versions', no 'version')".into()),
            (None, None) => return Err("missing 'version'".into()),
        };
        if !valid_version(&version) {
            return Err(format!("invalid version {:?}", truncate(&version)));
        }
        let hash = self.hash.ok_or("missing 'hash'")?;
        if !valid_hash(&hash) {
            return Err(format!(
                "invalid hash {:?} (expected 32 characters a-z0-9)",
                truncate(&hash)
            ));
        }
        if let Some(ns) = &self.namespace {
            if !valid_name(ns) {
                return Err(format!("invalid namespace {:?}", truncate(ns)));
            }
        }
        let arch = self.arch.map(|a| Arch {
            platform: a.platform.unwrap_or_default(),
            os: a.platform_os.unwrap_or_default(),
            target: a.target.map(|t| t.0).unwrap_or_default(),
        });
        let mut format_version = 0;
        let mut compiler = None;
        if let Some(c) = self.compiler {
            let ver = match (c.version, c.versions) {
                (Some(Text(v)), _) => strip_exact(&v).to_string(),
                (None, Some(TextList(vs))) => vs
                    .first()
                    .map(|v| strip_exact(v).to_string())
                    .unwrap_or_default(),
                (None, None) => String::new(),
            };
            compiler = Some(CompilerRef {
                name: c.name,
                version: ver,
            });
        }
        if let Some(a) = self.annotations {
            if let Some(v) = a.original_specfile_version {
                format_version = v;
            }
            if compiler.is_none() {
                if let Some(c) = a.compiler {
                    compiler = Some(
                        parse_compiler_annotation(&c)
                            .ok_or_else(|| format!("invalid annotations.compiler {c:?}"))?,
                    );
                }
            }
        }
        let mut variants = BTreeMap::new();
        let mut flags: Option<BTreeMap<String, Vec<String>>> = None;
        for (k, v) in self.parameters.unwrap_or_default() {
            if FLAG_NAMES.contains(&k.as_str()) {
                let list = match v {
                    VariantValue::List(l) => l,
                    VariantValue::Str(s) => s.split_whitespace().map(str::to_string).collect(),
                    VariantValue::Bool(_) => return Err(format!("flag list '{k}' is a bool")),
                };
                flags.get_or_insert_with(BTreeMap::new).insert(k, list);
            } else {
                variants.insert(k, v);
            }
        }
        let mut dependencies = Vec::new();
        for (dname, d) in self.dependencies.map(|d| d.0).unwrap_or_default() {
            if !valid_name(&dname) {
                return Err(format!("invalid dependency name {:?}", truncate(&dname)));
            }
            if !valid_hash(&d.hash) {
                return Err(format!(
                    "dependency '{dname}' has an invalid hash {:?}",
                    truncate(&d.hash)
                ));
            }
            let (types, virtuals) = match (d.parameters, d.kind) {
                (Some(p), _) => (
                    p.deptypes.map(|t| t.0).unwrap_or_default(),
                    p.virtuals.map(|t| t.0).unwrap_or_default(),
                ),
                (None, Some(t)) => (t.0, Vec::new()),
                (None, None) => (Vec::new(), Vec::new()),
            };
            let mut deptypes = DepTypes::empty();
            for t in &types {
                if let Some(b) = DepTypes::from_name(t) {
                    deptypes.insert(b);
                }
            }
            dependencies.push(DepEdge {
                name: dname,
                hash: d.hash,
                deptypes,
                virtuals,
            });
        }
        let external = self.external.map(|e| External {
            path: e.path,
            module: e.module.map(|m| m.0),
        });
        let build_spec = match self.build_spec {
            Some(b) => {
                if !valid_hash(&b.hash) || !valid_name(&b.name) {
                    return Err("invalid build_spec".into());
                }
                Some(BuildSpecRef {
                    name: b.name,
                    hash: b.hash,
                })
            }
            None => None,
        };
        Ok(Spec {
            name,
            version,
            namespace: self.namespace,
            arch,
            compiler,
            variants,
            flags,
            dependencies,
            external,
            build_spec,
            hash,
            format_version,
        })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Deserializes one node dict of any supported format. `format_version` is set from
/// `annotations.original_specfile_version` when present, else 0: call [`Spec::finish`].
impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireNode::deserialize(d)?;
        let name = truncate(&w.name);
        w.into_spec()
            .map_err(|e| de::Error::custom(format!("node '{name}': {e}")))
    }
}
