//! Spack version parsing and ordering, and version constraints from query text.
//!
//! Ordering facts (ported as rules, not code, from Spack's `spack/version`):
//! * A version string is split into segments: runs of digits (numeric components) or runs of
//!   ASCII letters (string components), each followed by any number of separators `.`, `-`, `_`.
//!   Separators do not take part in comparisons (`1.2` == `1-2` == `1_2`).
//! * Components compare: plain string < number < "infinity" string; numbers numerically,
//!   plain strings lexicographically, infinity strings by rank
//!   `stable < trunk < head < master < main < develop`.
//! * A trailing `alpha`/`beta`/`rc` (optionally followed by a number) is a pre-release marker:
//!   `1.0alpha1 < 1.0beta < 1.0rc1 < 1.0`. `final` is a marker equal to a final release.
//! * Release tuples compare lexicographically; a prefix is smaller (`1.2 < 1.2.0`).
//! * Git versions `git.<ref>=<ver>` (or `<40-hex>=<ver>`, or `<ref>=<ver>`) compare as `<ver>`,
//!   and are larger than the plain version `<ver>`; git versions without `=<ver>` compare as `0`.
//! * Constraint `1.2` is the range `1.2:1.2`, i.e. every version `v` with `1.2 <= v < next(1.2)`
//!   where `next` increments the last component (so it includes `1.2.x`, `1.2-4`, ...).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use thiserror::Error;

/// Error parsing a version or a version constraint.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VersionError {
    #[error("invalid version '{0}': use letters, digits and . - _ only (e.g. 1.2.3)")]
    Invalid(String),
    #[error("empty version: give a version such as 1.2")]
    Empty,
    #[error("empty version range '{0}': the lower bound is above the upper bound")]
    EmptyRange(String),
    #[error("git version '{0}' cannot be a range bound: use it alone or with '='")]
    GitInRange(String),
}

/// Names of infinity versions, lowest rank first.
const INFINITY: [&str; 6] = ["stable", "trunk", "head", "master", "main", "develop"];

/// A numeric component of arbitrary size: decimal digits without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Num(String);

impl Num {
    fn from_digits(d: &str) -> Num {
        let t = d.trim_start_matches('0');
        Num(t.to_string())
    }
    fn incremented(&self) -> Num {
        let mut bytes: Vec<u8> = self.0.bytes().collect();
        let mut i = bytes.len();
        loop {
            if i == 0 {
                bytes.insert(0, b'1');
                break;
            }
            i -= 1;
            if bytes[i] == b'9' {
                bytes[i] = b'0';
            } else {
                bytes[i] += 1;
                break;
            }
        }
        Num(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}
impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("0")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// One version component. Variant order gives the cross-kind ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Component {
    Str(String),
    Num(Num),
    /// Rank in [`INFINITY`] (may exceed it after `next`).
    Inf(u32),
}

impl Component {
    fn from_alpha(s: &str) -> Component {
        match INFINITY.iter().position(|n| *n == s) {
            Some(i) => Component::Inf(i as u32),
            None => Component::Str(s.to_string()),
        }
    }
}

/// Pre-release markers (values give the order).
const ALPHA: u8 = 0;
const BETA: u8 = 1;
const RC: u8 = 2;
const FINAL: u8 = 3;

fn prerelease_kind(s: &str) -> Option<u8> {
    match s {
        "alpha" => Some(ALPHA),
        "beta" => Some(BETA),
        "rc" => Some(RC),
        "final" => Some(FINAL),
        _ => None,
    }
}

/// The comparable part of a standard version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    release: Vec<Component>,
    pre: (u8, Option<Num>),
}

impl Key {
    fn parse(s: &str) -> Result<Key, VersionError> {
        let s = s.trim();
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return Err(VersionError::Empty);
        }
        let valid_first = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        if !valid_first(bytes[0]) || !bytes[1..].iter().all(|&b| valid_first(b) || b == b'=') {
            return Err(VersionError::Invalid(s.to_string()));
        }
        // Segments: digits or letters; everything else (separators, '=') is skipped.
        enum Seg<'a> {
            N(&'a str),
            A(&'a str),
        }
        let mut segs: Vec<Seg<'_>> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_digit() {
                let st = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                segs.push(Seg::N(&s[st..i]));
            } else if b.is_ascii_alphabetic() {
                let st = i;
                while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                    i += 1;
                }
                segs.push(Seg::A(&s[st..i]));
            } else {
                i += 1;
            }
        }
        let n = segs.len();
        let mut pre = (FINAL, None);
        let mut keep = n;
        if n >= 3 {
            if let (Seg::A(a), Seg::N(d)) = (&segs[n - 2], &segs[n - 1]) {
                if let Some(k) = prerelease_kind(a) {
                    pre = (k, Some(Num::from_digits(d)));
                    keep = n - 2;
                }
            }
        }
        if keep == n && n >= 2 {
            if let Seg::A(a) = &segs[n - 1] {
                if let Some(k) = prerelease_kind(a) {
                    pre = (k, None);
                    keep = n - 1;
                }
            }
        }
        let release = segs[..keep]
            .iter()
            .map(|s| match s {
                Seg::N(d) => Component::Num(Num::from_digits(d)),
                Seg::A(a) => Component::from_alpha(a),
            })
            .collect();
        Ok(Key { release, pre })
    }

    /// The smallest key above every version that has `self` as a prefix (Spack's "next").
    fn next(&self) -> Key {
        let mut k = self.clone();
        if k.pre.0 != FINAL {
            k.pre.1 = Some(match &k.pre.1 {
                Some(n) => n.incremented(),
                None => Num(String::new()),
            });
            return k;
        }
        match k.release.last_mut() {
            None => k.release.push(Component::Str("A".into())),
            Some(Component::Num(n)) => *n = n.incremented(),
            Some(Component::Inf(i)) => *i = i.saturating_add(1),
            Some(Component::Str(s)) => {
                let mut cur = s.clone();
                loop {
                    cur = next_str(&cur);
                    if !INFINITY.contains(&cur.as_str()) {
                        break;
                    }
                }
                *s = cur;
            }
        }
        k
    }
}

/// Next string over the alphabet A-Z a-z (in byte order).
fn next_str(s: &str) -> String {
    match s.as_bytes().last() {
        None | Some(b'z') => format!("{s}A"),
        Some(&last) => {
            let head = &s[..s.len() - 1];
            let c = if last == b'Z' {
                'a'
            } else {
                (last + 1) as char
            };
            format!("{head}{c}")
        }
    }
}

/// A concrete Spack version (standard or git).
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    key: Key,
    /// Git reference for git versions.
    git_ref: Option<String>,
}

fn is_git_version(s: &str) -> bool {
    s.starts_with("git.")
        || (s.len() == 40
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        || s.get(1..).is_some_and(|r| r.contains('='))
}

impl Version {
    /// Parse any Spack version string (`1.2.3`, `25-11-6-1`, `develop`, `git.<sha>=1.2`).
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        if is_git_version(text) {
            let body = text.strip_prefix("git.").unwrap_or(text);
            let (git_ref, key) = match body.split_once('=') {
                Some((r, v)) => {
                    if v.contains('=') || r.is_empty() {
                        return Err(VersionError::Invalid(text.to_string()));
                    }
                    (
                        r,
                        Key::parse(v).map_err(|_| VersionError::Invalid(text.to_string()))?,
                    )
                }
                None => (body, Key::parse("0")?),
            };
            if git_ref.is_empty()
                || !git_ref
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
            {
                return Err(VersionError::Invalid(text.to_string()));
            }
            return Ok(Version {
                text: text.to_string(),
                key,
                git_ref: Some(git_ref.to_string()),
            });
        }
        let key = Key::parse(text)?;
        Ok(Version {
            text: text.to_string(),
            key,
            git_ref: None,
        })
    }

    /// The text as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is a git version.
    pub fn is_git(&self) -> bool {
        self.git_ref.is_some()
    }

    /// Whether any component is an infinity version (`develop`, `main`, ...).
    pub fn is_develop(&self) -> bool {
        self.key
            .release
            .iter()
            .any(|c| matches!(c, Component::Inf(_)))
    }

    /// Whether this is a pre-release (`alpha`, `beta`, `rc`).
    pub fn is_prerelease(&self) -> bool {
        self.key.pre.0 != FINAL
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}
impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        self.git_ref.hash(state);
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| self.git_ref.is_some().cmp(&other.git_ref.is_some()))
            .then_with(|| self.git_ref.cmp(&other.git_ref))
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

/// One element of a version constraint list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionItem {
    /// `=1.2`: exactly this version (separators ignored).
    Exact(Version),
    /// `lo:hi`, `lo:`, `:hi`, `:`, and `1.2` (= `1.2:1.2`); bounds inclusive with prefix
    /// semantics at the upper end.
    Range {
        lo: Option<Version>,
        hi: Option<Version>,
    },
}

impl VersionItem {
    fn parse(s: &str) -> Result<VersionItem, VersionError> {
        if let Some(rest) = s.strip_prefix('=') {
            return Ok(VersionItem::Exact(Version::parse(rest)?));
        }
        if let Some((a, b)) = s.split_once(':') {
            if b.contains(':') {
                return Err(VersionError::Invalid(s.to_string()));
            }
            let bound = |t: &str| -> Result<Option<Version>, VersionError> {
                if t.is_empty() {
                    return Ok(None);
                }
                let v = Version::parse(t)?;
                if v.is_git() {
                    return Err(VersionError::GitInRange(t.to_string()));
                }
                Ok(Some(v))
            };
            let lo = bound(a)?;
            let hi = bound(b)?;
            if let (Some(l), Some(h)) = (&lo, &hi) {
                if h.key.next() <= l.key {
                    return Err(VersionError::EmptyRange(s.to_string()));
                }
            }
            return Ok(VersionItem::Range { lo, hi });
        }
        let v = Version::parse(s)?;
        if v.is_git() {
            return Ok(VersionItem::Exact(v));
        }
        Ok(VersionItem::Range {
            lo: Some(v.clone()),
            hi: Some(v),
        })
    }

    fn satisfied_by(&self, v: &Version) -> bool {
        match self {
            VersionItem::Exact(e) => e == v,
            VersionItem::Range { lo, hi } => {
                // Git versions are compared through their associated version.
                let k = &v.key;
                lo.as_ref().is_none_or(|l| &l.key <= k)
                    && hi.as_ref().is_none_or(|h| k < &h.key.next())
            }
        }
    }
}

impl fmt::Display for VersionItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionItem::Exact(v) => write!(f, "={v}"),
            VersionItem::Range {
                lo: Some(l),
                hi: Some(h),
            } if l == h => write!(f, "{l}"),
            VersionItem::Range { lo, hi } => {
                if let Some(l) = lo {
                    write!(f, "{l}")?;
                }
                f.write_str(":")?;
                if let Some(h) = hi {
                    write!(f, "{h}")?;
                }
                Ok(())
            }
        }
    }
}

/// A version constraint as written after `@` in a query: comma-separated items, any of which
/// may match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConstraint {
    pub items: Vec<VersionItem>,
}

impl VersionConstraint {
    /// Parse the text after `@` (e.g. `1.2`, `=1.2`, `1.2:1.4`, `:1.4`, `1.2:`, `1.2,1.4:`).
    pub fn parse(text: &str) -> Result<VersionConstraint, VersionError> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        let items = text
            .split(',')
            .map(VersionItem::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VersionConstraint { items })
    }

    /// Whether the concrete version `v` satisfies this constraint.
    pub fn satisfied_by(&self, v: &Version) -> bool {
        self.items.iter().any(|i| i.satisfied_by(v))
    }

    /// Parse `text` as a version and test it; unparsable versions never satisfy.
    pub fn satisfied_by_str(&self, text: &str) -> bool {
        Version::parse(text).is_ok_and(|v| self.satisfied_by(&v))
    }
}

impl fmt::Display for VersionConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for VersionConstraint {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VersionConstraint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }
    fn c(s: &str) -> VersionConstraint {
        VersionConstraint::parse(s).unwrap()
    }

    #[test]
    fn ordering_basics() {
        let ordered = [
            "0.9",
            "1",
            "1.0alpha",
            "1.0alpha1",
            "1.0beta2",
            "1.0rc1",
            "1.0",
            "1.0a",
            "1.0.0",
            "1.0.1",
            "1.1",
            "1.2",
            "1.10",
            "1.10.0",
            "2",
            "25.2",
            "25.11",
            "stable",
            "trunk",
            "head",
            "master",
            "main",
            "develop",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert!(v("1.0a") < v("1.0.0"));
        assert!(v("1.2a") < v("1.2.1"));
        assert!(v("1.2b") > v("1.2a"));
    }

    #[test]
    fn separators_are_equivalent() {
        assert_eq!(v("25.11"), v("25_11"));
        assert_eq!(v("25.11"), v("25-11"));
        assert_eq!(v("1.0final"), v("1.0"));
        assert_eq!(v("01.02"), v("1.2"));
        assert!(v("25.2") < v("25.11"));
        assert!(v("123456789012345678901234567890") > v("99999999999999999999"));
    }

    #[test]
    fn git_versions() {
        let g = v("git.0123456789abcdef0123456789abcdef01234567=1.2");
        assert!(g.is_git());
        assert!(g > v("1.2"));
        assert!(g < v("1.2.0"));
        assert!(g < v("1.3"));
        assert!(c("1.2").satisfied_by(&g));
        assert!(!c("=1.2").satisfied_by(&g));
        let h = v("0123456789abcdef0123456789abcdef01234567");
        assert!(h.is_git());
        assert!(c(":0").satisfied_by(&h));
        assert!(v("mybranch=develop").is_git());
        assert!(v("mybranch=develop") > v("2000"));
    }

    #[test]
    fn invalid_versions() {
        for s in ["", " ", "=1", "1/2", "1 2", "git.=1", "a=b=c", "é"] {
            assert!(Version::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn constraints() {
        let q = c("25.11");
        for s in ["25.11", "25.11.0", "25-11-6-1", "25_11", "25.11.99.1"] {
            assert!(q.satisfied_by(&v(s)), "{s}");
        }
        for s in ["25.2", "25.1", "25.12", "25.110", "25", "26.11"] {
            assert!(!q.satisfied_by(&v(s)), "{s}");
        }
        let r = c("24.11:25.11");
        for s in [
            "24.11",
            "24.11.5",
            "25.2",
            "25.5.1",
            "25.11",
            "25.11.0",
            "25-11-6-1",
        ] {
            assert!(r.satisfied_by(&v(s)), "{s}");
        }
        for s in ["24.5", "24.10.9", "25.12", "26"] {
            assert!(!r.satisfied_by(&v(s)), "{s}");
        }
        assert!(c(":1.4").satisfied_by(&v("1.4.9")));
        assert!(c(":1.4").satisfied_by(&v("0.1")));
        assert!(!c(":1.4").satisfied_by(&v("1.5")));
        assert!(c("1.2:").satisfied_by(&v("develop")));
        assert!(!c("1.2:").satisfied_by(&v("1.1.9")));
        assert!(c("=1.2").satisfied_by(&v("1.2")));
        assert!(c("=1.2").satisfied_by(&v("1-2")));
        assert!(!c("=1.2").satisfied_by(&v("1.2.0")));
        assert!(c("1.0,2.0:2.2").satisfied_by(&v("2.1")));
        assert!(c("1.0,2.0:2.2").satisfied_by(&v("1.0.3")));
        assert!(!c("1.0,2.0:2.2").satisfied_by(&v("1.5")));
        assert!(c(":").satisfied_by(&v("1.5")));
        assert!(c("develop").satisfied_by(&v("develop")));
        assert!(!c("develop").satisfied_by(&v("main")));
        assert!(c("1.2rc1").satisfied_by(&v("1.2rc1")));
        assert!(!c("1.2rc1").satisfied_by(&v("1.2rc2")));
        assert!(!c("1.2").satisfied_by(&v("1.2rc1")));
        assert!(c("1.2a").satisfied_by(&v("1.2a.3")));
        assert!(!c("1.2a").satisfied_by(&v("1.2b")));
        assert!(c("1.9").satisfied_by(&v("1.9.99")));
        assert!(!c("1.9").satisfied_by(&v("1.10")));
    }

    #[test]
    fn constraint_errors_and_display() {
        assert!(matches!(
            VersionConstraint::parse("2:1"),
            Err(VersionError::EmptyRange(_))
        ));
        assert!(VersionConstraint::parse("1.2:1.2").is_ok());
        assert!(VersionConstraint::parse("").is_err());
        assert!(VersionConstraint::parse("1:2:3").is_err());
        assert!(VersionConstraint::parse("1,,2").is_err());
        for s in ["1.2", "=1.2", "1.2:1.4", ":1.4", "1.2:", ":", "1.0,2.0:2.2"] {
            assert_eq!(c(s).to_string(), s);
        }
        assert_eq!(c("1.2:1.2").to_string(), "1.2");
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        let comp = prop_oneof![
            (0u32..30).prop_map(|n| n.to_string()),
            Just("a".to_string()),
            Just("b".to_string()),
            Just("rc".to_string()),
            Just("alpha".to_string()),
            Just("develop".to_string()),
            Just("main".to_string()),
            Just("stable".to_string()),
            Just("010".to_string()),
            Just("99999999999999999999999".to_string()),
        ];
        let sep = prop_oneof![Just("."), Just("-"), Just("_"), Just("")];
        prop::collection::vec((comp, sep), 1..5).prop_map(|parts| {
            let mut s = String::new();
            for (c, sp) in parts {
                s.push_str(&c);
                s.push_str(sp);
            }
            s
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = Version::parse(&s);
            let _ = VersionConstraint::parse(&s);
        }

        #[test]
        fn parse_never_panics_ascii(s in "[0-9a-z.=:,_-]{0,20}") {
            if let Ok(c) = VersionConstraint::parse(&s) {
                let again = VersionConstraint::parse(&c.to_string()).unwrap();
                prop_assert_eq!(again, c);
            }
        }

        #[test]
        fn total_order(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            // antisymmetry
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
            // transitivity
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
            // a version always satisfies its own range constraint
            let own = VersionConstraint::parse(a.as_str()).unwrap();
            prop_assert!(own.satisfied_by(&a));
        }
    }
}
