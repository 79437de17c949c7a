//! Strings inside binaries (reference §7.4, `relocate_text.py: BinaryFilePrefixReplacer`).
//!
//! Spack searches the whole file for `(OLD1|OLD2|…)([^\0]{0,7}\0)?` (leftmost, first listed
//! alternative, non-overlapping; no boundary check) and for each match, with
//! `shrink = len(old) - len(new)`:
//! * `shrink < 0` → error ([`RelocateError::PrefixTooLong`], Spack `CannotGrowString`);
//! * no NUL within the 8 bytes after the prefix, or the C-string suffix is ≥ 7 bytes, or the last
//!   `7 - suffix_len` bytes of old and new are equal → write `"/" * shrink + new` over `old`
//!   (left padding keeps the string's tail, hence suffix-shared C strings, intact);
//! * else, `shrink > 7` → write `new + suffix + NUL` (a shorter C string);
//! * else → error ([`RelocateError::CannotShrinkCString`]).
//!
//! All replacements are computed before anything is written, so an error leaves the file
//! untouched (Spack may have written earlier matches already; the install fails either way).

use std::path::Path;

use std::io::Read;

use super::{lossy, patch_in_place, PrefixMap, RelocateError};

/// Spack's `suffix_safety_size`.
pub const SUFFIX_SAFETY_SIZE: usize = 7;

/// How much of a binary [`relocate_binary_file`] holds at once (plus a small overlap).
pub const WINDOW: usize = 1 << 20;

/// A replacement that cannot be made (without the file name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BinaryStringError {
    /// New prefix longer than the old one.
    TooLong {
        /// Old prefix.
        old: Vec<u8>,
        /// New prefix.
        new: Vec<u8>,
    },
    /// Short C string without enough common suffix.
    CannotShrink {
        /// Old prefix.
        old: Vec<u8>,
        /// New prefix.
        new: Vec<u8>,
        /// The matched C string (prefix + suffix, without NUL).
        string: Vec<u8>,
    },
}

impl BinaryStringError {
    /// Attach the file name.
    pub fn into_error(self, file: &Path) -> RelocateError {
        match self {
            BinaryStringError::TooLong { old, new } => RelocateError::PrefixTooLong {
                file: file.to_path_buf(),
                old: lossy(&old),
                new: lossy(&new),
            },
            BinaryStringError::CannotShrink { old, new, string } => {
                RelocateError::CannotShrinkCString {
                    file: file.to_path_buf(),
                    old: lossy(&old),
                    new: lossy(&new),
                    string: lossy(&string),
                }
            }
        }
    }
}

fn tail(s: &[u8], n: usize) -> &[u8] {
    &s[s.len().saturating_sub(n)..]
}

/// Compute the in-place patches `(offset, bytes)` for `data`. Each patch lies inside its match,
/// so the file length never changes. Identity entries of `map` are ignored.
pub fn binary_patches(
    data: &[u8],
    map: &PrefixMap,
) -> Result<Vec<(u64, Vec<u8>)>, BinaryStringError> {
    let m = map.without_identities();
    binary_patches_filtered(data, &m)
}

fn binary_patches_filtered(
    data: &[u8],
    map: &PrefixMap,
) -> Result<Vec<(u64, Vec<u8>)>, BinaryStringError> {
    let Some(re) = map.alternation() else {
        return Ok(Vec::new());
    };
    let mut patches = Vec::new();
    scan(data, 0, 0, data.len() + 1, map, re, &mut patches)?;
    Ok(patches)
}

/// Find the matches of `data[pos..]` that start before `limit` and push their patches (offsets
/// plus `base`, the file offset of `data[0]`). Returns where the next scan resumes: a match
/// starting at or after `limit` may continue past the end of `data`, so it is left to the next
/// window. Every match ends within `longest old prefix + 8` bytes of its start.
fn scan(
    data: &[u8],
    base: u64,
    mut pos: usize,
    limit: usize,
    map: &PrefixMap,
    re: &regex::bytes::Regex,
    patches: &mut Vec<(u64, Vec<u8>)>,
) -> Result<usize, BinaryStringError> {
    while pos <= data.len() {
        let Some(found) = re.find_at(data, pos) else {
            break;
        };
        if found.start() >= limit {
            break;
        }
        let Some(idx) = map.index_of(found.as_bytes()) else {
            pos = found.start() + 1;
            continue;
        };
        let (old, new) = &map.entries()[idx];
        let end1 = found.end();
        let window = &data[end1..(end1 + SUFFIX_SAFETY_SIZE + 1).min(data.len())];
        let nul = memchr::memchr(0, window);
        let end0 = nul.map_or(end1, |j| end1 + j + 1);
        if new.len() > old.len() {
            return Err(BinaryStringError::TooLong {
                old: old.clone(),
                new: new.clone(),
            });
        }
        let shrink = old.len() - new.len();
        let replacement = match nul {
            Some(suffix_len)
                if suffix_len < SUFFIX_SAFETY_SIZE
                    && tail(old, SUFFIX_SAFETY_SIZE - suffix_len)
                        != tail(new, SUFFIX_SAFETY_SIZE - suffix_len) =>
            {
                if shrink > SUFFIX_SAFETY_SIZE {
                    let mut r = new.clone();
                    r.extend_from_slice(&data[end1..end0]); // suffix + NUL
                    r
                } else {
                    return Err(BinaryStringError::CannotShrink {
                        old: old.clone(),
                        new: new.clone(),
                        string: data[found.start()..end0 - 1].to_vec(),
                    });
                }
            }
            _ => {
                let mut r = vec![b'/'; shrink];
                r.extend_from_slice(new);
                r
            }
        };
        patches.push((base + found.start() as u64, replacement));
        pos = end0;
    }
    Ok(pos.max(limit))
}

/// Apply the replacement to a buffer in place. Returns whether anything was written.
pub fn relocate_binary_bytes(data: &mut [u8], map: &PrefixMap) -> Result<bool, BinaryStringError> {
    let patches = binary_patches(data, map)?;
    for (off, bytes) in &patches {
        let off = *off as usize;
        data[off..off + bytes.len()].copy_from_slice(bytes);
    }
    Ok(!patches.is_empty())
}

/// Relocate the strings of one binary in place (same inode and length; mode preserved).
/// Returns whether the file changed (as Spack: any match counts).
///
/// The file is read in windows of [`WINDOW`] bytes that overlap by the longest old prefix plus
/// the C-string suffix, so memory stays flat whatever the file's size; the patches are all
/// computed before the first is written.
pub fn relocate_binary_file(path: &Path, map: &PrefixMap) -> Result<bool, RelocateError> {
    relocate_binary_file_windowed(path, map, WINDOW)
}

fn relocate_binary_file_windowed(
    path: &Path,
    map: &PrefixMap,
    window: usize,
) -> Result<bool, RelocateError> {
    let m = map.without_identities();
    let Some(re) = m.alternation() else {
        return Ok(false);
    };
    let io = |e: std::io::Error| RelocateError::io(path, e);
    let longest = m.entries().iter().map(|(o, _)| o.len()).max().unwrap_or(0);
    let overlap = longest + SUFFIX_SAFETY_SIZE + 1;
    let mut file = std::fs::File::open(path).map_err(io)?;
    // One buffer, filled from `filled` on; what the next window needs is moved to its start.
    let mut buf = vec![0u8; window + overlap];
    let mut filled = 0usize;
    let mut base = 0u64;
    let mut pos = 0usize;
    let mut patches = Vec::new();
    loop {
        let mut eof = false;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            }
        }
        let data = &buf[..filled];
        let limit = if eof { filled + 1 } else { filled - overlap };
        let next =
            scan(data, base, pos, limit, &m, re, &mut patches).map_err(|e| e.into_error(path))?;
        if eof {
            break;
        }
        let cut = next.min(filled);
        buf.copy_within(cut..filled, 0);
        filled -= cut;
        base += cut as u64;
        pos = next - cut;
    }
    drop(file);
    patch_in_place(path, &patches)?;
    Ok(!patches.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Relocating a file window by window (windows as small as one byte, so matches and
        /// their C-string suffixes straddle every boundary) gives the bytes, and the errors,
        /// of relocating it whole in memory.
        #[test]
        fn windowed_file_relocation_equals_the_in_memory_one(
            chunks in proptest::collection::vec(
                prop_oneof![
                    Just(b"/old/prefix".to_vec()),
                    Just(b"/old/pre".to_vec()),
                    Just(b"/o/x".to_vec()),
                    Just(vec![0u8]),
                    proptest::collection::vec(any::<u8>(), 0..12),
                ],
                0..40,
            ),
            window in 1usize..48,
        ) {
            let data: Vec<u8> = chunks.concat();
            let m = map(&[(b"/old/prefix", b"/new"), (b"/o/x", b"/n"), (b"/old/pre", b"/p/q/r/s/t")]);
            let mut expected = data.clone();
            let in_memory = relocate_binary_bytes(&mut expected, &m);
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("bin");
            std::fs::write(&f, &data).unwrap();
            let on_file = relocate_binary_file_windowed(&f, &m, window);
            match (in_memory, on_file) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(std::fs::read(&f).unwrap(), expected);
                }
                (Err(_), Err(_)) => prop_assert_eq!(std::fs::read(&f).unwrap(), data),
                (a, b) => prop_assert!(false, "in memory {:?}, on file {:?}", a, b.map_err(|e| e.to_string())),
            }
        }
    }

    fn map(pairs: &[(&[u8], &[u8])]) -> PrefixMap {
        PrefixMap::from_pairs(pairs.iter().copied())
    }

    fn apply(pairs: &[(&[u8], &[u8])], input: &[u8]) -> Result<Vec<u8>, BinaryStringError> {
        let mut d = input.to_vec();
        relocate_binary_bytes(&mut d, &map(pairs))?;
        Ok(d)
    }

    // Cases mirroring Spack's test_ordered_replacement / test_binary_text_replacement rules.
    #[test]
    fn pads_with_slashes_when_not_null_terminated_nearby() {
        let r = apply(
            &[(b"/old/prefix", b"/new")],
            b"xx/old/prefix/share/data.txt\0",
        )
        .unwrap();
        assert_eq!(r, b"xx////////new/share/data.txt\0");
    }

    #[test]
    fn pads_when_suffix_long_enough() {
        // suffix "/abcdefg" is 7 bytes -> pad
        let r = apply(&[(b"/aaaaaaaaaa", b"/b")], b"/aaaaaaaaaa/abcdef\0").unwrap();
        assert_eq!(r, b"//////////b/abcdef\0");
    }

    #[test]
    fn pads_when_common_tail_suffices() {
        // exact prefix as C string, old and new share the last 7 bytes
        let r = apply(
            &[(b"/padding/x/1234567", b"/p/1234567")],
            b"\0/padding/x/1234567\0",
        )
        .unwrap();
        assert_eq!(r, b"\0/////////p/1234567\0");
    }

    #[test]
    fn shortens_c_string_when_shrink_exceeds_window() {
        let r = apply(
            &[(b"/a_long_old_prefix", b"/b")],
            b"/a_long_old_prefix/lib\0zz",
        )
        .unwrap();
        assert_eq!(r, b"/b/lib\0_old_prefix/lib\0zz");
    }

    #[test]
    fn cannot_shrink_small_difference() {
        let e = apply(&[(b"/abcdefgh", b"/xyz")], b"/abcdefgh\0").unwrap_err();
        assert_eq!(
            e,
            BinaryStringError::CannotShrink {
                old: b"/abcdefgh".to_vec(),
                new: b"/xyz".to_vec(),
                string: b"/abcdefgh".to_vec()
            }
        );
    }

    #[test]
    fn growing_is_an_error() {
        let e = apply(&[(b"/old", b"/longer")], b"a/old/b").unwrap_err();
        assert!(matches!(e, BinaryStringError::TooLong { .. }));
        let f = e.into_error(Path::new("/x/bin/f"));
        assert!(matches!(f, RelocateError::PrefixTooLong { .. }));
        assert!(f.to_string().contains("/x/bin/f"));
    }

    #[test]
    fn same_length_and_order() {
        let r = apply(&[(b"/aaa", b"/bbb")], b"/aaa/long-name\0/aaa/x").unwrap();
        assert_eq!(r, b"/bbb/long-name\0/bbb/x");
        // first listed alternative wins at the same position
        let r = apply(
            &[(b"/r/pkg", b"/n/pkg"), (b"/r", b"/N")],
            b"/r/pkg/lib:/r/other-long\0",
        )
        .unwrap();
        assert_eq!(r, b"/n/pkg/lib:/N/other-long\0");
        // Spack quirk: even a same-length replacement fails on a short C-string tail that
        // differs between old and new.
        let e = apply(&[(b"/r", b"/N")], b"/r/other\0").unwrap_err();
        assert!(matches!(e, BinaryStringError::CannotShrink { .. }));
    }

    #[test]
    fn match_window_consumes_following_prefix() {
        // the second prefix starts inside the 8-byte lookahead of the first: finditer skips it
        let r = apply(&[(b"/xx/ab", b"/b")], b"/xx/ab/xx/ab\0").unwrap();
        assert_eq!(r, b"/////b/xx/ab\0");
    }

    #[test]
    fn file_untouched_on_error_and_inode_kept() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bin");
        let orig = b"\x7fELF..../old/root/padding/lib/and/more\0..../old/root/padding\0";
        std::fs::write(&f, orig).unwrap();
        let ino = std::fs::metadata(&f).unwrap().ino();
        let m = map(&[(b"/old/root/padding", b"/a/very/long/new/root/x")]);
        assert!(matches!(
            relocate_binary_file(&f, &m),
            Err(RelocateError::PrefixTooLong { .. })
        ));
        assert_eq!(std::fs::read(&f).unwrap(), orig);
        let m = map(&[(b"/old/root/padding", b"/new")]);
        assert!(relocate_binary_file(&f, &m).unwrap());
        assert_eq!(
            std::fs::read(&f).unwrap(),
            b"\x7fELF....//////////////new/lib/and/more\0..../new\0root/padding\0"
        );
        assert_eq!(std::fs::metadata(&f).unwrap().ino(), ino);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600),
                                    old in proptest::collection::vec(any::<u8>(), 1..6),
                                    new in proptest::collection::vec(any::<u8>(), 0..9)) {
            let m = PrefixMap::from_pairs([(old, new)]);
            let mut d = data.clone();
            if relocate_binary_bytes(&mut d, &m).is_ok() {
                prop_assert_eq!(d.len(), data.len());
            }
        }

        #[test]
        fn identity_maps_change_nothing(data in proptest::collection::vec(any::<u8>(), 0..600),
                                        old in proptest::collection::vec(any::<u8>(), 1..6)) {
            let m = PrefixMap::from_pairs([(old.clone(), old)]);
            let mut d = data.clone();
            prop_assert!(!relocate_binary_bytes(&mut d, &m).unwrap());
            prop_assert_eq!(d, data);
        }

        #[test]
        fn embedded_prefix_random_context(pre in proptest::collection::vec(any::<u8>(), 0..40),
                                          post in proptest::collection::vec(any::<u8>(), 0..40)) {
            let old = b"/tmp/build/__spack_path_placeholder__/__spack_path_placeholder__";
            let new = b"/opt/x";
            let mut d = pre.clone();
            d.extend_from_slice(old);
            d.extend_from_slice(&post);
            let m = PrefixMap::from_pairs([(&old[..], &new[..])]);
            // shrink is large, so every match is either padded or shortened: never an error
            prop_assert!(relocate_binary_bytes(&mut d, &m).is_ok());
        }
    }
}
