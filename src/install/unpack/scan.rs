//! The scan of a file's bytes while it is unpacked (what relocation will need to look at).

use memchr::memmem::Finder;

/// Streaming substring search that also finds matches straddling chunk boundaries.
pub(super) struct StreamScan<'f, 'n> {
    finder: &'f Finder<'n>,
    /// Last `needle.len() - 1` bytes seen.
    carry: Vec<u8>,
    pub(super) found: bool,
}

impl<'f, 'n> StreamScan<'f, 'n> {
    pub(super) fn new(finder: &'f Finder<'n>) -> Self {
        StreamScan {
            finder,
            carry: Vec::new(),
            found: false,
        }
    }

    pub(super) fn feed(&mut self, chunk: &[u8]) {
        let keep = self.finder.needle().len().saturating_sub(1);
        if self.found || chunk.is_empty() {
            return;
        }
        if keep > 0 && !self.carry.is_empty() {
            let mut joined = self.carry.clone();
            joined.extend_from_slice(&chunk[..keep.min(chunk.len())]);
            if self.finder.find(&joined).is_some() {
                self.found = true;
                return;
            }
        }
        if self.finder.find(chunk).is_some() {
            self.found = true;
            return;
        }
        if chunk.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let excess = self.carry.len().saturating_sub(keep);
            self.carry.drain(..excess);
        }
    }
}
