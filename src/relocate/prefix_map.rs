//! The ordered old → new prefix map (reference §7.2, `binary_distribution.py:
//! relocate_package`).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::bytes::Regex;

use super::RelocateError;

/// Ordered map of old prefix → new prefix (byte strings).
///
/// Insertion behaves like a Python dict: the first insertion of a key fixes its position, a later
/// insertion of the same key only replaces the value. Order matters: every matcher takes the
/// *first listed* old prefix that matches at a position.
#[derive(Debug, Default)]
pub struct PrefixMap {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    regex: OnceLock<Option<Regex>>,
}

impl Clone for PrefixMap {
    fn clone(&self) -> Self {
        PrefixMap {
            entries: self.entries.clone(),
            regex: OnceLock::new(),
        }
    }
}

impl PartialEq for PrefixMap {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}
impl Eq for PrefixMap {}

impl PrefixMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Build from pairs with dict semantics (see [`PrefixMap::insert`]); identities are kept.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Vec<u8>>,
        V: Into<Vec<u8>>,
    {
        let mut m = Self::new();
        for (k, v) in pairs {
            m.insert(k, v);
        }
        m
    }

    /// Insert with Python-dict semantics: an existing key keeps its position and gets the new
    /// value. Empty old prefixes are ignored (they would match everywhere).
    pub fn insert(&mut self, old: impl Into<Vec<u8>>, new: impl Into<Vec<u8>>) {
        let (old, new) = (old.into(), new.into());
        if old.is_empty() {
            return;
        }
        self.regex = OnceLock::new();
        if let Some(e) = self.entries.iter_mut().find(|(k, _)| *k == old) {
            e.1 = new;
        } else {
            self.entries.push((old, new));
        }
    }

    /// Remove entries whose new value equals the old (`filter_identity_mappings`).
    pub fn drop_identities(&mut self) {
        self.entries.retain(|(k, v)| k != v);
        self.regex = OnceLock::new();
    }

    /// The map Spack 1.x builds in `relocate_package`, in its order:
    /// 1. `old_sbang` (buildinfo `sbang_install_path`, if present) → `new_sbang`
    ///    (`<local unpadded root>/bin/sbang`);
    /// 2. each `(old_prefix, new_prefix)` of `prefixes`, in `specs_to_relocate` order (root, then
    ///    transitive link deps breadth-first, then direct run deps; externals and specs without a
    ///    `hash_to_prefix` entry already left out — see [`old_prefixes_by_hash`]);
    /// 3. `old_root` (buildinfo `buildpath`) → `new_root` (local store root, padded if
    ///    configured);
    /// 4. identity entries removed. An empty result means: nothing to relocate.
    pub fn for_install(
        old_root: &[u8],
        new_root: &[u8],
        old_sbang: Option<&[u8]>,
        new_sbang: &[u8],
        prefixes: &[(Vec<u8>, Vec<u8>)],
    ) -> Self {
        let mut m = Self::new();
        if let Some(old_sbang) = old_sbang {
            m.insert(old_sbang, new_sbang);
        }
        for (old, new) in prefixes {
            m.insert(old.as_slice(), new.as_slice());
        }
        m.insert(old_root, new_root);
        m.drop_identities();
        m
    }

    /// This map without identity entries, borrowed when there are none (keeps the compiled
    /// matcher cached across files).
    pub fn without_identities(&self) -> std::borrow::Cow<'_, PrefixMap> {
        if self.entries.iter().any(|(k, v)| k == v) {
            let mut m = self.clone();
            m.drop_identities();
            std::borrow::Cow::Owned(m)
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// The entries in order.
    pub fn entries(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to relocate.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The new value of an old prefix.
    pub fn get(&self, old: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == old)
            .map(|(_, v)| v.as_slice())
    }

    /// True when every entry maps a prefix to itself (or the map is empty).
    pub fn is_identity(&self) -> bool {
        self.entries.iter().all(|(k, v)| k == v)
    }

    /// The first entry (in map order) whose old prefix starts `s` — Python's
    /// `re.match("old1|old2|…", s)`: no path-boundary check.
    pub fn match_start(&self, s: &[u8]) -> Option<(&[u8], &[u8])> {
        self.entries
            .iter()
            .find(|(k, _)| s.starts_with(k))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// `s` with its leading old prefix replaced (see [`PrefixMap::match_start`]), or `None`.
    pub fn map_start(&self, s: &[u8]) -> Option<Vec<u8>> {
        self.match_start(s).map(|(k, v)| {
            let mut out = v.to_vec();
            out.extend_from_slice(&s[k.len()..]);
            out
        })
    }

    /// A byte regex matching any old prefix (leftmost, then first listed), compiled once.
    /// `None` when the map is empty.
    pub(crate) fn alternation(&self) -> Option<&Regex> {
        self.regex
            .get_or_init(|| {
                if self.entries.is_empty() {
                    return None;
                }
                let mut pat = String::from("(?s-u)(?:");
                for (i, (k, _)) in self.entries.iter().enumerate() {
                    if i > 0 {
                        pat.push('|');
                    }
                    for b in k {
                        pat.push_str(&format!("\\x{b:02x}"));
                    }
                }
                pat.push(')');
                regex::bytes::RegexBuilder::new(&pat)
                    .size_limit(1 << 28)
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// Index of an old prefix given the exact bytes a match produced.
    pub(crate) fn index_of(&self, old: &[u8]) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == old)
    }
}

/// `(old_prefix, new_prefix)` pairs.
pub type PrefixPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Old prefixes of the specs to relocate, from buildinfo `hash_to_prefix` (Spack ≥ 0.20) or,
/// when absent, the inverse of `prefix_to_hash` (≤ 0.19; a later prefix of the same hash wins).
/// `specs` = `(dag_hash, new_prefix)` in `specs_to_relocate` order; specs whose hash is not in the
/// map are skipped, as Spack does. Neither map present → [`RelocateError::MissingPrefixMapping`]
/// (`package` names the package in that message).
pub fn old_prefixes_by_hash(
    package: &str,
    hash_to_prefix: Option<&[(String, String)]>,
    prefix_to_hash: Option<&[(String, String)]>,
    specs: &[(String, Vec<u8>)],
) -> Result<PrefixPairs, RelocateError> {
    let lookup: HashMap<&str, &str> = if let Some(h2p) = hash_to_prefix {
        h2p.iter().map(|(h, p)| (h.as_str(), p.as_str())).collect()
    } else if let Some(p2h) = prefix_to_hash {
        p2h.iter().map(|(p, h)| (h.as_str(), p.as_str())).collect()
    } else {
        return Err(RelocateError::MissingPrefixMapping {
            package: package.to_string(),
        });
    };
    Ok(specs
        .iter()
        .filter_map(|(hash, new)| {
            lookup
                .get(hash.as_str())
                .map(|old| (old.as_bytes().to_vec(), new.clone()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn for_install_orders_like_spack_and_drops_identities() {
        let m = PrefixMap::for_install(
            b"/old/root",
            b"/new",
            Some(b"/old/bin/sbang"),
            b"/new/bin/sbang",
            &[
                (v("/old/root/a-1-x"), v("/new/a-1-x")),
                (v("/up/b-2-y"), v("/up/b-2-y")),
                (v("/old/root/c-3-z"), v("/new/c-3-z")),
            ],
        );
        let keys: Vec<&[u8]> = m.entries().iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            keys,
            vec![
                b"/old/bin/sbang".as_slice(),
                b"/old/root/a-1-x",
                b"/old/root/c-3-z",
                b"/old/root"
            ]
        );
        assert_eq!(m.get(b"/old/root"), Some(b"/new".as_slice()));
    }

    #[test]
    fn dict_semantics_keep_first_position_last_value() {
        let mut m = PrefixMap::new();
        m.insert("/a", "/x");
        m.insert("/b", "/y");
        m.insert("/a", "/z");
        assert_eq!(m.entries(), &[(v("/a"), v("/z")), (v("/b"), v("/y"))]);
        m.insert("", "/nothing");
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn same_roots_give_empty_map() {
        let m = PrefixMap::for_install(
            b"/r",
            b"/r",
            Some(b"/r/bin/sbang"),
            b"/r/bin/sbang",
            &[(v("/r/p"), v("/r/p"))],
        );
        assert!(m.is_empty());
        assert!(m.is_identity());
    }

    #[test]
    fn match_start_takes_first_listed_without_boundary() {
        let m = PrefixMap::from_pairs([("/opt/a", "/n/a"), ("/opt", "/n")]);
        assert_eq!(m.map_start(b"/opt/a/lib"), Some(v("/n/a/lib")));
        assert_eq!(m.map_start(b"/opt/abc"), Some(v("/n/abc")));
        assert_eq!(m.map_start(b"/optx"), Some(v("/nx")));
        assert_eq!(m.map_start(b"/usr"), None);
        let m2 = PrefixMap::from_pairs([("/opt", "/n"), ("/opt/a", "/n/a")]);
        assert_eq!(m2.map_start(b"/opt/a/lib"), Some(v("/n/a/lib")));
    }

    #[test]
    fn hashes_resolve_and_invert() {
        let h2p = vec![("h1".to_string(), "/old/p1".to_string())];
        let specs = vec![
            ("h1".to_string(), v("/new/p1")),
            ("h2".to_string(), v("/x")),
        ];
        let r = old_prefixes_by_hash("p", Some(&h2p), None, &specs).unwrap();
        assert_eq!(r, vec![(v("/old/p1"), v("/new/p1"))]);
        let p2h = vec![
            ("/old/a".to_string(), "h1".to_string()),
            ("/old/b".to_string(), "h1".to_string()),
        ];
        let r = old_prefixes_by_hash("p", None, Some(&p2h), &specs).unwrap();
        assert_eq!(r, vec![(v("/old/b"), v("/new/p1"))]);
        assert!(matches!(
            old_prefixes_by_hash("p", None, None, &specs),
            Err(RelocateError::MissingPrefixMapping { .. })
        ));
    }

    #[test]
    fn alternation_prefers_leftmost_then_first_listed() {
        let m = PrefixMap::from_pairs([("/a/b", "1"), ("/a/bc", "2"), ("/x", "3")]);
        let re = m.alternation().unwrap();
        let hay = b"zz/a/bcd /x";
        let f = re.find(hay).unwrap();
        assert_eq!(f.as_bytes(), b"/a/b");
        assert_eq!(m.index_of(f.as_bytes()), Some(0));
        let m = PrefixMap::from_pairs([(&b"\xff.*"[..], &b"q"[..])]);
        assert!(m.alternation().unwrap().is_match(b"a\xff.*b"));
        assert!(!m.alternation().unwrap().is_match(b"a\xffxxb"));
    }
}
