//! Query parsing (a subset of Spack's spec syntax) and matching against concrete nodes.
//!
//! Supported tokens, with optional whitespace between them as in Spack
//! (`slurm@25.11%gcc@13.4.0+gpu`):
//! `name` or `namespace.name`, `@versions`, `%compiler[@versions]`, `+v`, `~v`, `-v` (only after
//! whitespace or at the start), `key=value` (variants, compiler flags, `platform=`, `os=`,
//! `target=`, `arch=platform-os-target`), `/hashprefix`.

use std::collections::BTreeMap;
use std::fmt;

use archspec::cpu::Microarchitecture;
use thiserror::Error;

use super::node::FLAG_NAMES;
use super::{Spec, VariantValue, VersionConstraint};

/// Error parsing a query; names the bad token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QueryError {
    #[error("query: unexpected '{token}' at position {pos}: {hint}")]
    Unexpected {
        token: String,
        pos: usize,
        hint: &'static str,
    },
    #[error("query: bad version '{token}': {reason}")]
    Version { token: String, reason: String },
    #[error("query: '{0}' is given twice: give it once")]
    Duplicate(String),
    #[error(
        "query: dependency constraints ('^{0}') are not supported: query the dependency itself"
    )]
    Dependency(String),
    #[error("query: empty query: give a package name such as slurm@25.11")]
    Empty,
}

/// `%compiler[@versions]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompilerQuery {
    pub name: String,
    pub version: Option<VersionConstraint>,
}

/// A variant requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantReq {
    /// `+v` / `~v` / `-v`.
    Bool(bool),
    /// `v=a,b`: for a multi-valued variant all values must be present; for a single-valued one
    /// the value must be equal; `true`/`false` match boolean variants.
    Values(Vec<String>),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub version: Option<VersionConstraint>,
    pub compiler: Option<CompilerQuery>,
    pub variants: BTreeMap<String, VariantReq>,
    /// Compiler flags (`cflags="-O2 -g"`): each whitespace-separated flag must be present.
    pub flags: BTreeMap<String, String>,
    pub platform: Option<String>,
    pub os: Option<String>,
    /// A target name, or Spack target ranges/lists (`x86_64_v3:`, `:zen3`, `zen2,zen3`).
    pub target: Option<String>,
    pub hash_prefix: Option<String>,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn is_name_char(b: u8) -> bool {
    is_name_start(b) || b == b'-' || b == b'.'
}
fn is_version_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':' | b',' | b'=')
}
fn is_value_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'-' | b'+' | b'*' | b'.' | b',' | b':' | b'=' | b'~' | b'/' | b'\\'
        )
}

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn take_while(&mut self, f: fn(u8) -> bool) -> &'a str {
        let st = self.i;
        while self.i < self.b.len() && f(self.b[self.i]) {
            self.i += 1;
        }
        &self.text[st..self.i]
    }
    fn skip_ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    /// The token starting at `pos` (up to whitespace), for messages.
    fn token_at(&self, pos: usize) -> String {
        let rest = self.text.get(pos..).unwrap_or("");
        rest.split(char::is_whitespace)
            .next()
            .unwrap_or("")
            .chars()
            .take(40)
            .collect()
    }
    fn unexpected(&self, pos: usize, hint: &'static str) -> QueryError {
        let mut token = self.token_at(pos);
        if token.is_empty() {
            token = "end of query".into();
        }
        QueryError::Unexpected { token, pos, hint }
    }
    fn name(&mut self, hint: &'static str) -> Result<&'a str, QueryError> {
        let st = self.i;
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.unexpected(st, hint));
        }
        Ok(self.take_while(is_name_char))
    }
    fn version(&mut self) -> Result<VersionConstraint, QueryError> {
        self.skip_ws();
        let st = self.i;
        let t = self.take_while(is_version_char);
        if t.is_empty() {
            return Err(self.unexpected(st, "'@' must be followed by a version, e.g. @25.11"));
        }
        VersionConstraint::parse(t).map_err(|e| QueryError::Version {
            token: t.to_string(),
            reason: e.to_string(),
        })
    }
    fn value(&mut self) -> Result<String, QueryError> {
        let st = self.i;
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                let close = self.b[st + 1..].iter().position(|&c| c == q);
                match close {
                    Some(off) => {
                        self.i = st + 1 + off + 1;
                        Ok(self.text[st + 1..st + 1 + off].to_string())
                    }
                    None => Err(self.unexpected(st, "unterminated quote")),
                }
            }
            _ => {
                let v = self.take_while(is_value_char);
                if v.is_empty() {
                    return Err(self.unexpected(st, "'key=' must be followed by a value"));
                }
                if v.starts_with('=') {
                    // `key===v` has no meaning (`key==v` is the most Spack allows).
                    return Err(self.unexpected(st, "a value cannot start with '='; quote it"));
                }
                Ok(v.to_string())
            }
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, v: T, what: &str) -> Result<(), QueryError> {
    if slot.is_some() {
        return Err(QueryError::Duplicate(what.to_string()));
    }
    *slot = Some(v);
    Ok(())
}

impl Query {
    /// Parse query text.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let mut q = Query::default();
        let mut p = Parser {
            text,
            b: text.as_bytes(),
            i: 0,
        };
        let mut ws_before = true;
        let mut any = false;
        while p.i < p.b.len() {
            let c = p.b[p.i];
            if c.is_ascii_whitespace() {
                p.i += 1;
                ws_before = true;
                continue;
            }
            any = true;
            let st = p.i;
            match c {
                b'@' => {
                    p.i += 1;
                    let v = p.version()?;
                    set_once(&mut q.version, v, "@version")?;
                }
                b'%' => {
                    p.i += 1;
                    p.skip_ws();
                    let name = p.name("'%' must be followed by a compiler name, e.g. %gcc@13")?;
                    let version = if p.peek() == Some(b'@') {
                        p.i += 1;
                        Some(p.version()?)
                    } else {
                        None
                    };
                    let cq = CompilerQuery {
                        name: name.to_string(),
                        version,
                    };
                    set_once(&mut q.compiler, cq, "%compiler")?;
                }
                b'+' | b'~' | b'-' => {
                    if c == b'-' && !ws_before {
                        return Err(p.unexpected(
                            st,
                            "'-variant' needs a space before it; or use '~variant'",
                        ));
                    }
                    p.i += 1;
                    p.skip_ws();
                    let name = p.name("expected a variant name, e.g. +gpu or ~gpu")?;
                    if p.peek() == Some(b'=') {
                        return Err(p.unexpected(st, "write a boolean variant as +v or ~v"));
                    }
                    if q.variants.contains_key(name) || q.flags.contains_key(name) {
                        return Err(QueryError::Duplicate(name.to_string()));
                    }
                    q.variants
                        .insert(name.to_string(), VariantReq::Bool(c == b'+'));
                }
                b'/' => {
                    p.i += 1;
                    p.skip_ws();
                    let h = p.take_while(|b| b.is_ascii_alphanumeric());
                    if h.is_empty() {
                        return Err(p.unexpected(st, "'/' must be followed by a hash prefix"));
                    }
                    set_once(&mut q.hash_prefix, h.to_ascii_lowercase(), "/hash")?;
                }
                b'^' => {
                    return Err(QueryError::Dependency(
                        p.token_at(st + 1).trim_start_matches('^').to_string(),
                    ))
                }
                c if is_name_start(c) => {
                    let name = p.name("expected a name")?;
                    if p.peek() == Some(b'=') {
                        p.i += 1;
                        if p.peek() == Some(b'=') {
                            p.i += 1;
                        }
                        let value = p.value()?;
                        q.set_key(name, value, &p, st)?;
                    } else {
                        if q.name.is_some() {
                            return Err(p.unexpected(
                                st,
                                "only one package name per query (dependencies with ^ are not supported)",
                            ));
                        }
                        match name.rsplit_once('.') {
                            Some((ns, n)) => {
                                if ns.is_empty()
                                    || n.is_empty()
                                    || !n.bytes().next().is_some_and(is_name_start)
                                {
                                    return Err(p.unexpected(st, "expected namespace.name"));
                                }
                                q.namespace = Some(ns.to_string());
                                q.name = Some(n.to_string());
                            }
                            None => q.name = Some(name.to_string()),
                        }
                    }
                }
                _ => return Err(p.unexpected(
                    st,
                    "expected a name, @version, %compiler, +variant, ~variant, key=value or /hash",
                )),
            }
            ws_before = false;
        }
        if !any {
            return Err(QueryError::Empty);
        }
        Ok(q)
    }

    fn set_key(
        &mut self,
        key: &str,
        value: String,
        p: &Parser<'_>,
        st: usize,
    ) -> Result<(), QueryError> {
        match key {
            "platform" => set_once(&mut self.platform, value, "platform")?,
            "os" | "platform_os" => set_once(&mut self.os, value, "os")?,
            "target" => set_once(&mut self.target, value, "target")?,
            "arch" | "architecture" => {
                let parts: Vec<&str> = value.split('-').collect();
                if parts.len() != 3 {
                    return Err(p.unexpected(
                        st,
                        "arch= takes platform-os-target, e.g. linux-ubuntu22.04-x86_64",
                    ));
                }
                for (slot, v, what) in [
                    (&mut self.platform, parts[0], "platform"),
                    (&mut self.os, parts[1], "os"),
                    (&mut self.target, parts[2], "target"),
                ] {
                    if !v.is_empty() {
                        set_once(slot, v.to_string(), what)?;
                    }
                }
            }
            k if FLAG_NAMES.contains(&k) => {
                if self.flags.insert(k.to_string(), value).is_some() {
                    return Err(QueryError::Duplicate(k.to_string()));
                }
            }
            k => {
                if self.variants.contains_key(k) {
                    return Err(QueryError::Duplicate(k.to_string()));
                }
                let vals = value.split(',').map(str::to_string).collect();
                self.variants
                    .insert(k.to_string(), VariantReq::Values(vals));
            }
        }
        Ok(())
    }

    /// Whether the concrete node `spec` matches. `deps(hash)` finds dependency nodes (for
    /// `%compiler` on format 5 specs, where compilers are direct dependencies).
    pub fn matches<'s>(&self, spec: &Spec, deps: &dyn Fn(&str) -> Option<&'s Spec>) -> bool {
        if let Some(n) = &self.name {
            if *n != spec.name {
                return false;
            }
        }
        if let Some(ns) = &self.namespace {
            if spec.namespace.as_deref() != Some(ns.as_str()) {
                return false;
            }
        }
        if let Some(vc) = &self.version {
            if !vc.satisfied_by_str(&spec.version) {
                return false;
            }
        }
        if let Some(h) = &self.hash_prefix {
            if !spec.hash.starts_with(h.as_str()) {
                return false;
            }
        }
        if let Some(c) = &self.compiler {
            if !compiler_matches(c, spec, deps) {
                return false;
            }
        }
        for (k, req) in &self.variants {
            let Some(have) = spec.variants.get(k) else {
                return false;
            };
            if !variant_matches(req, have) {
                return false;
            }
        }
        for (k, want) in &self.flags {
            let have = spec.flags.as_ref().and_then(|f| f.get(k));
            let Some(have) = have else { return false };
            if !want.split_whitespace().all(|w| have.iter().any(|h| h == w)) {
                return false;
            }
        }
        let arch = spec.arch.as_ref();
        if let Some(p) = &self.platform {
            if arch.map(|a| a.platform.as_str()) != Some(p.as_str()) {
                return false;
            }
        }
        if let Some(o) = &self.os {
            if arch.map(|a| a.os.as_str()) != Some(o.as_str()) {
                return false;
            }
        }
        if let Some(t) = &self.target {
            match arch {
                Some(a) if target_matches(t, &a.target) => {}
                _ => return false,
            }
        }
        true
    }
}

fn compiler_matches<'s>(
    c: &CompilerQuery,
    spec: &Spec,
    deps: &dyn Fn(&str) -> Option<&'s Spec>,
) -> bool {
    let version_ok = |v: &str| c.version.as_ref().is_none_or(|vc| vc.satisfied_by_str(v));
    if let Some(sc) = &spec.compiler {
        if sc.name == c.name && version_ok(&sc.version) {
            return true;
        }
    }
    spec.dependencies.iter().any(|d| {
        d.name == c.name
            && match &c.version {
                None => true,
                Some(_) => deps(&d.hash).is_some_and(|n| version_ok(&n.version)),
            }
    })
}

fn variant_matches(req: &VariantReq, have: &VariantValue) -> bool {
    match (req, have) {
        (VariantReq::Bool(b), VariantValue::Bool(h)) => b == h,
        (VariantReq::Bool(b), VariantValue::Str(s)) => s.eq_ignore_ascii_case(&b.to_string()),
        (VariantReq::Bool(_), VariantValue::List(_)) => false,
        (VariantReq::Values(v), VariantValue::Bool(h)) => {
            v.len() == 1 && v[0].eq_ignore_ascii_case(&h.to_string())
        }
        (VariantReq::Values(v), VariantValue::Str(s)) => v.len() == 1 && v[0] == *s,
        (VariantReq::Values(v), VariantValue::List(l)) => v.iter().all(|x| l.contains(x)),
    }
}

/// `a` is `b` or a descendant of `b` in archspec's table.
fn is_or_descends(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let known = Microarchitecture::known_targets();
    match known.get(a) {
        Some(m) => m.ancestors().iter().any(|x| x.name() == b),
        None => false,
    }
}

/// Spack target constraint: names, `lo:`, `:hi`, `lo:hi`, comma lists.
fn target_matches(constraint: &str, target: &str) -> bool {
    constraint
        .split(',')
        .any(|item| match item.split_once(':') {
            None => item == target,
            Some((lo, hi)) => {
                (lo.is_empty() || is_or_descends(target, lo))
                    && (hi.is_empty() || is_or_descends(hi, target))
            }
        })
}

fn needs_quotes(v: &str) -> bool {
    v.is_empty() || !v.bytes().all(is_value_char)
}

fn write_value(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    if needs_quotes(v) {
        let q = if v.contains('"') { '\'' } else { '"' };
        write!(f, "{q}{v}{q}")
    } else {
        f.write_str(v)
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let mut head = String::new();
        if let Some(ns) = &self.namespace {
            head.push_str(ns);
            head.push('.');
        }
        if let Some(n) = &self.name {
            head.push_str(n);
        }
        if let Some(v) = &self.version {
            head.push_str(&format!("@{v}"));
        }
        if let Some(c) = &self.compiler {
            head.push_str(&format!("%{}", c.name));
            if let Some(v) = &c.version {
                head.push_str(&format!("@{v}"));
            }
        }
        if !head.is_empty() {
            parts.push(head);
        }
        for (k, req) in &self.variants {
            match req {
                VariantReq::Bool(true) => parts.push(format!("+{k}")),
                VariantReq::Bool(false) => parts.push(format!("~{k}")),
                VariantReq::Values(_) => {}
            }
        }
        f.write_str(&parts.join(" "))?;
        let mut sep = !parts.is_empty();
        let mut kv = |f: &mut fmt::Formatter<'_>, k: &str, v: &str| -> fmt::Result {
            if sep {
                f.write_str(" ")?;
            }
            sep = true;
            write!(f, "{k}=")?;
            write_value(f, v)
        };
        for (k, req) in &self.variants {
            if let VariantReq::Values(vals) = req {
                kv(f, k, &vals.join(","))?;
            }
        }
        for (k, v) in &self.flags {
            kv(f, k, v)?;
        }
        if let Some(p) = &self.platform {
            kv(f, "platform", p)?;
        }
        if let Some(o) = &self.os {
            kv(f, "os", o)?;
        }
        if let Some(t) = &self.target {
            kv(f, "target", t)?;
        }
        if let Some(h) = &self.hash_prefix {
            if sep {
                f.write_str(" ")?;
            }
            write!(f, "/{h}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Query {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Query::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Arch, CompilerRef, DepEdge, DepTypes};
    use proptest::prelude::*;

    fn spec(name: &str, version: &str, hash: &str) -> Spec {
        Spec {
            name: name.into(),
            version: version.into(),
            namespace: Some("builtin".into()),
            arch: Some(Arch {
                platform: "linux".into(),
                os: "ubuntu24.04".into(),
                target: "zen3".into(),
            }),
            compiler: None,
            variants: BTreeMap::new(),
            flags: None,
            dependencies: vec![],
            external: None,
            build_spec: None,
            hash: hash.into(),
            format_version: 5,
        }
    }

    const GCC_HASH: &str = "gggggggggggggggggggggggggggggggg";

    fn slurm() -> (Spec, Spec) {
        let gcc = spec("gcc", "13.4.0", GCC_HASH);
        let mut s = spec("slurm", "25-11-0-1", "abcdefabcdefabcdefabcdefabcdef12");
        s.variants.insert("gpu".into(), VariantValue::Bool(true));
        s.variants.insert("pmix".into(), VariantValue::Bool(false));
        s.variants
            .insert("build_type".into(), VariantValue::Str("Release".into()));
        s.variants.insert(
            "languages".into(),
            VariantValue::List(vec!["c".into(), "c++".into(), "fortran".into()]),
        );
        s.flags = Some(BTreeMap::from([(
            "cflags".to_string(),
            vec!["-O2".to_string(), "-g".to_string()],
        )]));
        s.dependencies.push(DepEdge {
            name: "gcc".into(),
            hash: GCC_HASH.into(),
            deptypes: DepTypes::BUILD,
            virtuals: vec!["c".into()],
        });
        (s, gcc)
    }

    fn m(q: &str) -> bool {
        let (s, gcc) = slurm();
        let lookup = |h: &str| if h == GCC_HASH { Some(&gcc) } else { None };
        Query::parse(q).unwrap().matches(&s, &lookup)
    }

    #[test]
    fn parse_compact_and_spaced() {
        let q = Query::parse("slurm@25.11%gcc@13.4.0+gpu").unwrap();
        assert_eq!(q.name.as_deref(), Some("slurm"));
        assert_eq!(q.version.as_ref().unwrap().to_string(), "25.11");
        assert_eq!(q.compiler.as_ref().unwrap().name, "gcc");
        assert_eq!(q.variants["gpu"], VariantReq::Bool(true));
        let q2 = Query::parse("  slurm @25.11 % gcc@13.4.0 +gpu ").unwrap();
        assert_eq!(q, q2);
        let q = Query::parse("builtin.py-numpy@1.2:1.4 ~mpi -cuda languages=c,c++ cflags=\"-O2 -g\" arch=linux-rhel8-x86_64 /AbC12").unwrap();
        assert_eq!(q.namespace.as_deref(), Some("builtin"));
        assert_eq!(q.name.as_deref(), Some("py-numpy"));
        assert_eq!(q.variants["cuda"], VariantReq::Bool(false));
        assert_eq!(q.variants["mpi"], VariantReq::Bool(false));
        assert_eq!(
            q.variants["languages"],
            VariantReq::Values(vec!["c".into(), "c++".into()])
        );
        assert_eq!(q.flags["cflags"], "-O2 -g");
        assert_eq!(q.target.as_deref(), Some("x86_64"));
        assert_eq!(q.os.as_deref(), Some("rhel8"));
        assert_eq!(q.hash_prefix.as_deref(), Some("abc12"));
        let again = Query::parse(&q.to_string()).unwrap();
        assert_eq!(again, q, "{q}");
        assert_eq!(
            Query::parse("slurm@25.11%gcc@13.4.0+gpu")
                .unwrap()
                .to_string(),
            "slurm@25.11%gcc@13.4.0 +gpu"
        );
    }

    #[test]
    fn parse_errors_name_the_token() {
        for (q, frag) in [
            ("slurm-gpu-", ""),
            ("slurm@", "end of query"),
            ("slurm@2:1", "2:1"),
            ("slurm ^munge", "munge"),
            ("slurm zlib", "zlib"),
            ("slurm@1@2", "@version"),
            ("slurm+gpu-cuda", ""),
            ("slurm%", "end of query"),
            ("slurm $x", "$x"),
            ("slurm cflags=\"-O2", "\"-O2"),
            ("slurm+gpu~gpu", "gpu"),
            ("arch=linux-x86_64", "arch=linux-x86_64"),
            ("", ""),
            ("   ", ""),
            ("slurm /", "/"),
            ("slurm@git.=1", "git.=1"),
        ] {
            match Query::parse(q) {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!msg.contains('\n'));
                    assert!(msg.contains(frag), "{q}: {msg}");
                }
                Ok(ok) => {
                    // `slurm-gpu-` is a valid (odd) name; `slurm+gpu-cuda` a variant name.
                    assert!(
                        q == "slurm-gpu-" || q == "slurm+gpu-cuda",
                        "{q} parsed as {ok:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn matching() {
        assert!(m("slurm"));
        assert!(m("slurm@25.11"));
        assert!(m("slurm@24.11:25.11"));
        assert!(!m("slurm@25.2"));
        assert!(!m("slurm@=25.11"));
        assert!(m("slurm@25.11%gcc@13.4.0+gpu"));
        assert!(m("slurm%gcc@13"));
        assert!(m("slurm%gcc"));
        assert!(!m("slurm%gcc@12"));
        assert!(!m("slurm%clang"));
        assert!(m("slurm~pmix"));
        assert!(m("slurm -pmix"));
        assert!(!m("slurm+pmix"));
        assert!(!m("slurm+nonexistent"));
        assert!(!m("slurm nonexistent=1"));
        assert!(m("slurm gpu=true"));
        assert!(m("slurm build_type=Release"));
        assert!(!m("slurm build_type=Debug"));
        assert!(m("slurm languages=c,fortran"));
        assert!(!m("slurm languages=c,rust"));
        assert!(m("slurm cflags=-O2"));
        assert!(!m("slurm cflags=-O3"));
        assert!(!m("slurm ldflags=-s"));
        assert!(m("slurm arch=linux-ubuntu24.04-zen3"));
        assert!(m("slurm target=x86_64_v2:"));
        assert!(m("slurm target=zen2:zen4"));
        assert!(!m("slurm target=zen4:"));
        assert!(m("slurm target=haswell,zen3"));
        assert!(!m("slurm os=rhel8"));
        assert!(m("slurm platform=linux"));
        assert!(m("slurm /abcdef"));
        assert!(!m("slurm /abcdeg"));
        assert!(m("builtin.slurm"));
        assert!(!m("other.slurm"));
        assert!(!m("munge"));
        assert!(m("+gpu"));
        // format ≤4 compiler attribute
        let (mut s, _) = slurm();
        s.dependencies.clear();
        s.compiler = Some(CompilerRef {
            name: "gcc".into(),
            version: "12.2.0".into(),
        });
        let none = |_: &str| -> Option<&Spec> { None };
        assert!(Query::parse("%gcc@12.2").unwrap().matches(&s, &none));
        assert!(!Query::parse("%gcc@13").unwrap().matches(&s, &none));
    }

    fn query_strategy() -> impl Strategy<Value = String> {
        let tok = prop_oneof![
            Just("slurm".to_string()),
            Just("ns.pkg".to_string()),
            "@[0-9]{1,2}(\\.[0-9]{1,2}){0,2}(:[0-9]{1,2})?",
            Just("%gcc@13".to_string()),
            Just("%clang".to_string()),
            "[+~][a-z]{1,3}",
            " -[a-z]{1,3}",
            "[a-z]{1,3}=[a-z0-9,]{1,4}",
            Just("cflags=\"-O2 -g\"".to_string()),
            Just("target=x86_64:".to_string()),
            Just("os=rhel8".to_string()),
            Just("arch=linux-rhel8-zen2".to_string()),
            "/[a-z0-9]{1,6}",
        ];
        prop::collection::vec((tok, prop_oneof![Just(""), Just(" ")]), 1..6).prop_map(|v| {
            v.into_iter()
                .map(|(t, s)| format!("{t}{s}"))
                .collect::<String>()
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = Query::parse(&s);
        }

        #[test]
        fn display_reparses_arbitrary(s in "[a-z0-9@%+~=:,./ \"'_-]{0,24}") {
            if let Ok(q) = Query::parse(&s) {
                let shown = q.to_string();
                prop_assert_eq!(Query::parse(&shown), Ok(q), "{} -> {}", s, shown);
            }
        }

        #[test]
        fn display_reparses_structured(s in query_strategy()) {
            if let Ok(q) = Query::parse(&s) {
                let shown = q.to_string();
                prop_assert_eq!(Query::parse(&shown), Ok(q), "{} -> {}", s, shown);
            }
        }
    }
}
