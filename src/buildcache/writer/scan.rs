//! Streaming classification of the files of a prefix, as Spack 1.x does when it builds the
//! relocation lists of `.spack/binary_distribution` (format reference §6.3):
//!
//! * *binary*: the first bytes are ELF magic (`\x7fELF`) or a Mach-O magic (thin 32/64-bit either
//!   byte order; fat `cafebabe` only when its architecture count is below 10, so Java class files
//!   are not binaries). Every binary is listed, whether it contains a prefix or not.
//! * *text*: the whole file is valid UTF-8, or it contains no byte in `[\x00\x7f-\x9f]`. Listed
//!   only when it contains one of the relocatable prefixes *as Spack's regex finds them*:
//!   `(?<![\w\-_/])([\w\-_]*?)(P1|P2|…)`, i.e. an occurrence counts unless the run of
//!   `[A-Za-z0-9_-]` bytes right before it is itself preceded by `/`.
//! * anything else is never relocated.
//!
//! The scanner is fed chunk by chunk (never a whole file): UTF-8 validity is tracked across chunk
//! borders, and prefix occurrences are searched with `memmem` over a window that keeps the last
//! `longest prefix − 1` bytes of the previous chunk, plus the one-byte context the look-behind
//! needs, so matches straddling chunk borders are found.

use memchr::memmem::Finder;

/// What a file is, for relocation purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileClass {
    /// ELF or Mach-O: always listed in `relocate_binaries`.
    Binary,
    /// Text; `has_prefix` says whether it goes into `relocate_textfiles`.
    Text { has_prefix: bool },
    /// Neither: never relocated.
    Other,
}

/// The set of relocatable prefixes (package prefixes, sbang path, store root).
#[derive(Debug, Clone)]
pub struct PrefixMatcher {
    finders: Vec<Finder<'static>>,
    prefixes: Vec<Vec<u8>>,
    max_len: usize,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Context of the byte just before a window.
#[derive(Debug, Clone, Copy)]
enum Before {
    /// The window starts at the beginning of the file.
    Start,
    /// The previous byte, and (for a word byte) whether its word run may precede a match.
    Byte { byte: u8, run_ok: bool },
}

/// Whether a prefix occurrence at `i` in `buf` passes Spack's look-behind: the maximal run of
/// word bytes ending at `i` must not be preceded by `/`.
fn valid_at(buf: &[u8], before: Before, i: usize) -> bool {
    let mut k = i;
    while k > 0 && is_word(buf[k - 1]) {
        k -= 1;
    }
    if k > 0 {
        return buf[k - 1] != b'/';
    }
    match before {
        Before::Start => true,
        Before::Byte { byte, run_ok } => {
            if is_word(byte) {
                run_ok
            } else {
                byte != b'/'
            }
        }
    }
}

impl PrefixMatcher {
    /// Prefixes are matched as bytes (UTF-8); empty strings are ignored, duplicates removed.
    pub fn new<S: AsRef<str>>(prefixes: &[S]) -> PrefixMatcher {
        let mut list: Vec<Vec<u8>> = Vec::new();
        for p in prefixes {
            let b = p.as_ref().as_bytes().to_vec();
            if !b.is_empty() && !list.contains(&b) {
                list.push(b);
            }
        }
        let max_len = list.iter().map(Vec::len).max().unwrap_or(0);
        let finders = list.iter().map(|p| Finder::new(p).into_owned()).collect();
        PrefixMatcher {
            finders,
            prefixes: list,
            max_len,
        }
    }

    pub fn prefixes(&self) -> impl Iterator<Item = &[u8]> {
        self.prefixes.iter().map(Vec::as_slice)
    }

    /// Spack lists a symlink when its target is absolute and the prefix regex matches at its
    /// start; for an absolute target that means "starts with one of the prefixes".
    pub fn link_matches(&self, target: &[u8]) -> bool {
        target.starts_with(b"/") && self.prefixes.iter().any(|p| target.starts_with(p))
    }

    /// Whether `data` (a whole, small buffer) contains a prefix occurrence Spack's regex finds.
    pub fn text_matches(&self, data: &[u8]) -> bool {
        let mut s = self.scanner();
        s.feed(data);
        matches!(s.finish(), FileClass::Text { has_prefix: true })
    }

    /// A fresh streaming scanner for one file.
    pub fn scanner(&self) -> FileScanner<'_> {
        FileScanner {
            matcher: self,
            head: Vec::with_capacity(8),
            decided_binary: None,
            utf8_ok: true,
            utf8_carry: Vec::new(),
            has_bad_byte: false,
            found: false,
            window: Vec::new(),
            before: Before::Start,
            len: 0,
        }
    }
}

/// Streaming classifier for one file; feed it the file's bytes in order, then [`finish`].
///
/// [`finish`]: FileScanner::finish
#[derive(Debug)]
pub struct FileScanner<'a> {
    matcher: &'a PrefixMatcher,
    head: Vec<u8>,
    decided_binary: Option<bool>,
    utf8_ok: bool,
    utf8_carry: Vec<u8>,
    has_bad_byte: bool,
    found: bool,
    /// Tail of the previous data (at most `max_len - 1` bytes) followed by the current chunk.
    window: Vec<u8>,
    before: Before,
    len: u64,
}

fn binary_magic(head: &[u8]) -> bool {
    if head.starts_with(b"\x7fELF") {
        return true;
    }
    if head.len() < 4 {
        return false;
    }
    let m = [head[0], head[1], head[2], head[3]];
    match m {
        [0xfe, 0xed, 0xfa, 0xce]
        | [0xce, 0xfa, 0xed, 0xfe]
        | [0xfe, 0xed, 0xfa, 0xcf]
        | [0xcf, 0xfa, 0xed, 0xfe] => true,
        [0xca, 0xfe, 0xba, 0xbe] => {
            head.len() >= 8 && u32::from_be_bytes([head[4], head[5], head[6], head[7]]) < 10
        }
        _ => false,
    }
}

impl FileScanner<'_> {
    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len() as u64;
        if self.decided_binary.is_none() {
            let need = 8 - self.head.len();
            self.head.extend_from_slice(&chunk[..need.min(chunk.len())]);
            // Decide once 8 bytes are known, or as soon as the first 4 show that this is not a
            // fat Mach-O header (the only magic that needs bytes 4..8: the architecture count).
            let elf = self.head.starts_with(b"\x7fELF");
            let may_be_fat =
                self.head.len() < 4 || self.head.starts_with(&[0xca, 0xfe, 0xba, 0xbe]);
            if self.head.len() >= 8 || elf || !may_be_fat {
                self.decided_binary = Some(binary_magic(&self.head));
            }
        }
        if self.decided_binary == Some(true) {
            return;
        }
        self.feed_text(chunk);
    }

    fn feed_text(&mut self, chunk: &[u8]) {
        if !self.has_bad_byte && chunk.iter().any(|&b| b == 0 || (0x7f..=0x9f).contains(&b)) {
            self.has_bad_byte = true;
        }
        if self.utf8_ok {
            self.check_utf8(chunk);
        }
        if !self.utf8_ok && self.has_bad_byte {
            return; // neither text rule can hold any more
        }
        if !self.found && self.matcher.max_len > 0 {
            self.search(chunk);
        }
    }

    fn check_utf8(&mut self, chunk: &[u8]) {
        let mut owned;
        let data: &[u8] = if self.utf8_carry.is_empty() {
            chunk
        } else {
            owned = std::mem::take(&mut self.utf8_carry);
            owned.extend_from_slice(chunk);
            &owned[..]
        };
        match std::str::from_utf8(data) {
            Ok(_) => self.utf8_carry.clear(),
            Err(e) => match e.error_len() {
                Some(_) => self.utf8_ok = false,
                None => self.utf8_carry = data[e.valid_up_to()..].to_vec(),
            },
        }
    }

    fn search(&mut self, chunk: &[u8]) {
        self.window.extend_from_slice(chunk);
        let buf = &self.window;
        'outer: for f in &self.matcher.finders {
            for i in f.find_iter(buf) {
                if valid_at(buf, self.before, i) {
                    self.found = true;
                    break 'outer;
                }
            }
        }
        if self.found {
            self.window = Vec::new();
            return;
        }
        let keep = (self.matcher.max_len - 1).min(buf.len());
        let s = buf.len() - keep;
        if s > 0 {
            self.before = Before::Byte {
                byte: buf[s - 1],
                run_ok: valid_at(buf, self.before, s),
            };
            self.window.drain(..s);
        }
    }

    /// Number of bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> FileClass {
        if self.decided_binary.is_none() && binary_magic(&self.head) {
            return FileClass::Binary;
        }
        if self.decided_binary == Some(true) {
            return FileClass::Binary;
        }
        let utf8_ok = self.utf8_ok && self.utf8_carry.is_empty();
        if utf8_ok || !self.has_bad_byte {
            FileClass::Text {
                has_prefix: self.found,
            }
        } else {
            FileClass::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m() -> PrefixMatcher {
        PrefixMatcher::new(&["/opt/store/pfx", "/opt/store/bin/sbang"])
    }

    fn classify_chunks(data: &[u8], chunk: usize) -> FileClass {
        let pm = m();
        let mut s = pm.scanner();
        for c in data.chunks(chunk.max(1)) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn binaries_by_magic() {
        assert_eq!(
            classify_chunks(b"\x7fELF\x02\x01rest", 3),
            FileClass::Binary
        );
        assert_eq!(
            classify_chunks(b"\xcf\xfa\xed\xfe....", 1),
            FileClass::Binary
        );
        assert_eq!(
            classify_chunks(b"\xca\xfe\xba\xbe\x00\x00\x00\x02", 2),
            FileClass::Binary
        );
        // Java class file: big "architecture count".
        assert_eq!(
            classify_chunks(b"\xca\xfe\xba\xbe\x00\x00\x00\x34\x00", 2),
            FileClass::Other
        );
        // Too short for ELF magic; valid UTF-8, hence text.
        assert_eq!(
            classify_chunks(b"\x7fEL", 1),
            FileClass::Text { has_prefix: false }
        );
    }

    #[test]
    fn text_rules() {
        assert_eq!(
            classify_chunks(b"hello", 2),
            FileClass::Text { has_prefix: false }
        );
        // NUL is valid UTF-8, so this is text in Spack's eyes.
        assert_eq!(
            classify_chunks(b"a\0b /opt/store/pfx/lib", 4),
            FileClass::Text { has_prefix: true }
        );
        // Latin-1 without C1/NUL bytes is text; with a C1 byte it is not.
        assert_eq!(
            classify_chunks(b"caf\xe9 /opt/store/pfx", 3),
            FileClass::Text { has_prefix: true }
        );
        assert_eq!(classify_chunks(b"caf\xe9\x85", 3), FileClass::Other);
        // A UTF-8 sequence split across chunks.
        assert_eq!(
            classify_chunks("é€ /opt/store/pfx".as_bytes(), 1),
            FileClass::Text { has_prefix: true }
        );
        assert_eq!(
            classify_chunks(b"x", 1),
            FileClass::Text { has_prefix: false }
        );
        assert_eq!(
            classify_chunks(b"", 1),
            FileClass::Text { has_prefix: false }
        );
    }

    #[test]
    fn lookbehind_rule() {
        let pm = m();
        assert!(pm.text_matches(b"#!/opt/store/pfx/bin/sh"));
        assert!(pm.text_matches(b"x=/opt/store/pfx/lib"));
        assert!(pm.text_matches(b"foo/opt/store/pfx"));
        assert!(pm.text_matches(b"/opt/store/pfx"));
        assert!(!pm.text_matches(b"/x/opt/store/pfx"));
        assert!(!pm.text_matches(b"/abc-d_e/opt/store/pfx"));
        assert!(pm.text_matches(b"/x/opt/store/pfx and /opt/store/bin/sbang"));
        assert!(!pm.text_matches(b"/opt/store/pf"));
    }

    #[test]
    fn links() {
        let pm = m();
        assert!(pm.link_matches(b"/opt/store/pfx/lib/x.so"));
        assert!(!pm.link_matches(b"lib/x.so"));
        assert!(!pm.link_matches(b"/usr/lib"));
    }

    /// Reference implementation over a whole buffer.
    fn reference(data: &[u8]) -> bool {
        let pm = m();
        let found = pm
            .prefixes()
            .any(|p| memchr::memmem::find_iter(data, p).any(|i| valid_at(data, Before::Start, i)));
        found
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_verdict(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"/opt/store/pfx".to_vec()),
                    Just(b"/".to_vec()),
                    Just(b"ab".to_vec()),
                    Just(b"-".to_vec()),
                    Just(b" ".to_vec()),
                    Just(b"\xc3\xa9".to_vec()),
                    Just(b"\x00".to_vec()),
                    Just(b"\x85".to_vec()),
                ], 0..30),
            chunk in 1usize..20,
        ) {
            let data: Vec<u8> = parts.concat();
            let whole = classify_chunks(&data, data.len().max(1));
            let chunked = classify_chunks(&data, chunk);
            prop_assert_eq!(whole, chunked);
            if let FileClass::Text { has_prefix } = whole {
                prop_assert_eq!(has_prefix, reference(&data));
            }
        }
    }
}
