//! Text files (reference §7.3, `relocate_text.py: TextFilePrefixReplacer`).
//!
//! Spack substitutes, over the whole file, the byte regex
//! `(?<![\w\-_/])([\w\-_]*?)(OLD1|OLD2|…)([\w\-_/]*)` → `\1 NEW \3` (`\w` = ASCII
//! `[A-Za-z0-9_]`). The regex crate has no look-behind, so the same match sequence is computed
//! here directly: an occurrence of an old prefix at `q` (leftmost, first listed at equal
//! position) is replaced when the run of `[A-Za-z0-9_-]` bytes ending at `q` starts at the
//! current scan position or later and is not preceded by `/`; the match then swallows the
//! following `[A-Za-z0-9_/-]*` bytes, so a second prefix inside the same path is not rewritten.

use std::path::Path;

use super::{read_file, rewrite_in_place, PrefixMap, RelocateError};

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_path(b: u8) -> bool {
    is_word(b) || b == b'/'
}

/// Apply the text substitution to `data`. Returns `None` when nothing matched (the file stays
/// as it is), otherwise the new content (which may be longer or shorter).
pub fn relocate_text_bytes(data: &[u8], map: &PrefixMap) -> Option<Vec<u8>> {
    let m = map.without_identities();
    relocate_text_bytes_filtered(data, &m)
}

fn relocate_text_bytes_filtered(data: &[u8], map: &PrefixMap) -> Option<Vec<u8>> {
    let re = map.alternation()?;
    let len = data.len();
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // bytes of `data` already copied to `out`
    let mut pos = 0; // Python's scan position (end of the previous match)
    let mut search = 0; // where to look for the next occurrence
    while search <= len {
        let Some(found) = re.find_at(data, search) else {
            break;
        };
        let q = found.start();
        // Start of the [\w-] run that ends at q.
        let mut s = q;
        while s > 0 && is_word(data[s - 1]) {
            s -= 1;
        }
        let boundary_ok = s >= pos && (s == 0 || data[s - 1] != b'/');
        if !boundary_ok {
            search = q + 1;
            continue;
        }
        let Some(idx) = map.index_of(found.as_bytes()) else {
            search = q + 1;
            continue;
        };
        let new = &map.entries()[idx].1;
        let mut end = found.end();
        while end < len && is_path(data[end]) {
            end += 1;
        }
        let o = out.get_or_insert_with(|| Vec::with_capacity(len + 64));
        o.extend_from_slice(&data[copied..q]);
        o.extend_from_slice(new);
        o.extend_from_slice(&data[found.end()..end]);
        copied = end;
        pos = end;
        search = end;
    }
    let mut o = out?;
    o.extend_from_slice(&data[copied..]);
    Some(o)
}

/// Relocate one text file in place (same inode, so hardlinked names follow; mode preserved).
/// Returns whether the file changed. An identity/empty map reads nothing.
pub fn relocate_text_file(path: &Path, map: &PrefixMap) -> Result<bool, RelocateError> {
    let m = map.without_identities();
    if m.is_empty() {
        return Ok(false);
    }
    let data = read_file(path)?;
    match relocate_text_bytes_filtered(&data, &m) {
        None => Ok(false),
        Some(new) => {
            rewrite_in_place(path, &new)?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn map(pairs: &[(&str, &str)]) -> PrefixMap {
        PrefixMap::from_pairs(pairs.iter().map(|(a, b)| (a.as_bytes(), b.as_bytes())))
    }

    fn t(pairs: &[(&str, &str)], input: &str) -> String {
        match relocate_text_bytes(input.as_bytes(), &map(pairs)) {
            Some(v) => String::from_utf8(v).unwrap(),
            None => input.to_string(),
        }
    }

    #[test]
    fn boundary_rules_like_spack_tests() {
        // Cases mirroring Spack's test_inplace_text_replacement semantics.
        let p = &[("/old-spack/opt", "/s/spack/opt")];
        assert_eq!(t(p, "#!/old-spack/opt/bin/perl"), "#!/s/spack/opt/bin/perl");
        assert_eq!(
            t(p, "#!/old-spack/opt/bin/perl\n"),
            "#!/s/spack/opt/bin/perl\n"
        );
        assert_eq!(t(p, "/old-spack/opt/bin/perl"), "/s/spack/opt/bin/perl");
        assert_eq!(
            t(p, "/old-spack/opt/bin/perl /old-spack/opt"),
            "/s/spack/opt/bin/perl /s/spack/opt"
        );
        assert_eq!(t(p, "=/old-spack/opt/lib"), "=/s/spack/opt/lib");
        // embedded in a longer path: untouched
        assert_eq!(t(p, "/x/old-spack/opt/a"), "/x/old-spack/opt/a");
        assert_eq!(t(p, "/dir/x/old-spack/opt"), "/dir/x/old-spack/opt");
        assert_eq!(t(p, "/xyz/old-spack/opt"), "/xyz/old-spack/opt");
        // a word run before the prefix that is not preceded by '/' is kept and replaced after
        assert_eq!(t(p, "foo/old-spack/opt/x"), "foo/s/spack/opt/x");
        assert_eq!(t(p, " foo-bar_1/old-spack/opt"), " foo-bar_1/s/spack/opt");
        assert_eq!(t(p, "/foo/old-spack/opt"), "/foo/old-spack/opt");
        // the trailing path is swallowed: a second prefix in the same run is not rewritten
        assert_eq!(
            t(p, "/old-spack/opt/old-spack/opt"),
            "/s/spack/opt/old-spack/opt"
        );
        assert_eq!(
            t(p, "/old-spack/opt:/old-spack/opt"),
            "/s/spack/opt:/s/spack/opt"
        );
        // prefix of a longer name: still replaced (no boundary at the end)
        assert_eq!(t(p, "/old-spack/optimal"), "/s/spack/optimal");
        assert_eq!(t(p, "nothing here"), "nothing here");
    }

    #[test]
    fn order_and_fallback() {
        let p = &[("/r/pkg-1", "/n/pkg-1"), ("/r", "/N")];
        assert_eq!(t(p, "a /r/pkg-1/lib b"), "a /n/pkg-1/lib b");
        assert_eq!(t(p, "a /r/other/lib b"), "a /N/other/lib b");
        let p = &[("/r", "/N"), ("/r/pkg-1", "/n/pkg-1")];
        assert_eq!(t(p, "/r/pkg-1/lib"), "/N/pkg-1/lib");
    }

    #[test]
    fn first_match_overlaps_and_restart() {
        // After a match that ends right at a non-path char the next prefix can start there.
        let p = &[("/a", "/b")];
        assert_eq!(t(p, "/a./a"), "/b./b");
        assert_eq!(t(p, "/a /a"), "/b /b");
        // An occurrence inside a failed word run is skipped, a later one is found.
        let p = &[("x/a", "Y")];
        assert_eq!(t(p, "/bx/a x/a"), "/bx/a Y");
        // Prefix not starting with '/', inside a word run preceded by '/'
        assert_eq!(t(p, "/zzx/a"), "/zzx/a");
        assert_eq!(t(p, "zzx/a"), "zzY");
    }

    #[test]
    fn sbang_line_relocated() {
        let p = &[
            ("/old/root/bin/sbang", "/new/bin/sbang"),
            ("/old/root/pad", "/new"),
        ];
        let input = "#!/bin/sh /old/root/bin/sbang\n#!/old/root/pad/x/bin/perl -w\nprint 1;\n";
        assert_eq!(
            t(p, input),
            "#!/bin/sh /new/bin/sbang\n#!/new/x/bin/perl -w\nprint 1;\n"
        );
    }

    #[test]
    fn file_in_place_keeps_inode_mode_and_hardlinks() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.txt");
        let h = d.path().join("b.txt");
        std::fs::write(&f, "prefix=/old/p/x\n").unwrap();
        std::fs::hard_link(&f, &h).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o754)).unwrap();
        let ino = std::fs::metadata(&f).unwrap().ino();
        let m = map(&[("/old/p", "/n")]);
        assert!(relocate_text_file(&f, &m).unwrap());
        assert_eq!(std::fs::read_to_string(&h).unwrap(), "prefix=/n/x\n");
        let md = std::fs::metadata(&f).unwrap();
        assert_eq!(md.ino(), ino);
        assert_eq!(md.permissions().mode() & 0o7777, 0o754);
        assert!(!relocate_text_file(&f, &m).unwrap());
        // growing is fine for text
        let m = map(&[("/n", "/a/much/longer/prefix")]);
        assert!(relocate_text_file(&f, &m).unwrap());
        assert_eq!(
            std::fs::read_to_string(&h).unwrap(),
            "prefix=/a/much/longer/prefix/x\n"
        );
        // read-only file: written, mode restored
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
        let m = map(&[("/a/much", "/b")]);
        assert!(relocate_text_file(&f, &m).unwrap());
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o444
        );
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "prefix=/b/longer/prefix/x\n"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512),
                                    old in "[/a-c_-]{1,6}", new in "[/a-d]{0,9}") {
            let m = PrefixMap::from_pairs([(old.as_bytes(), new.as_bytes())]);
            let _ = relocate_text_bytes(&data, &m);
        }

        #[test]
        fn identity_maps_change_nothing(data in proptest::collection::vec(any::<u8>(), 0..512),
                                        old in "[/a-c_-]{1,6}") {
            let m = PrefixMap::from_pairs([(old.as_bytes(), old.as_bytes())]);
            prop_assert!(relocate_text_bytes(&data, &m).is_none());
        }

        #[test]
        fn matches_naive_python_semantics(data in "[ /a-c_.x-]{0,40}",
                                          old in "[/a-c]{1,4}", new in "[A-Z]{0,4}",
                                          old2 in "[/a-c]{1,3}", new2 in "[A-Z]{0,4}") {
            let pairs = vec![(old.into_bytes(), new.into_bytes()), (old2.into_bytes(), new2.into_bytes())];
            let m = PrefixMap::from_pairs(pairs.clone());
            let got = relocate_text_bytes(data.as_bytes(), &m)
                .unwrap_or_else(|| data.as_bytes().to_vec());
            let mut pairs = pairs;
            if pairs[1].0 == pairs[0].0 {
                // dict semantics: same key keeps the first position, takes the last value
                pairs[0].1 = pairs[1].1.clone();
                pairs.pop();
            }
            pairs.retain(|(k, v)| k != v);
            let want = naive(data.as_bytes(), &pairs);
            prop_assert_eq!(got, want);
        }
    }

    /// Direct transcription of the backtracking semantics of Spack's regex: scan positions,
    /// look-behind, lazy word run, alternatives in order, greedy path tail.
    fn naive(data: &[u8], pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut copied = 0;
        while pos <= data.len() {
            let mut matched = None;
            let mut p = pos;
            'outer: while p <= data.len() {
                if p == 0 || !is_path(data[p - 1]) {
                    let mut k = p;
                    loop {
                        if let Some(i) = pairs.iter().position(|(o, _)| data[k..].starts_with(o)) {
                            matched = Some((k, i));
                            break 'outer;
                        }
                        if k < data.len() && is_word(data[k]) {
                            k += 1;
                        } else {
                            break;
                        }
                    }
                }
                p += 1;
            }
            let Some((q, i)) = matched else { break };
            let (old, new) = (&pairs[i].0, &pairs[i].1);
            let mut e = q + old.len();
            while e < data.len() && is_path(data[e]) {
                e += 1;
            }
            out.extend_from_slice(&data[copied..q]);
            out.extend_from_slice(new);
            out.extend_from_slice(&data[q + old.len()..e]);
            copied = e;
            pos = e;
            if e == q {
                break;
            }
        }
        out.extend_from_slice(&data[copied..]);
        out
    }
}
