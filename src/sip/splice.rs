//! Editing a message by splicing byte ranges: untouched bytes are copied as they are.

use std::fmt;
use std::ops::Range;

use bytes::{BufMut, BytesMut};
use smallvec::SmallVec;

/// Edits kept inline; a relayed request makes about six.
const INLINE_EDITS: usize = 12;

/// A set of non-overlapping edits over a source buffer.
///
/// Inserted text is written into one arena, formatted in place when it comes as
/// `format_args!`, and the edit list lives on the stack, so a relayed message costs at
/// most two allocations (the arena, only if something is inserted, and the output).
#[derive(Debug)]
pub struct Splice<'a> {
    src: &'a [u8],
    edits: SmallVec<[Edit; INLINE_EDITS]>,
    arena: Vec<u8>,
}

#[derive(Debug)]
struct Edit {
    at: usize,
    remove: usize,
    /// The inserted bytes: a range of the arena.
    insert: Range<usize>,
    /// Tie-breaker keeping inserts at the same offset in call order.
    seq: usize,
}

impl<'a> Splice<'a> {
    pub fn new(src: &'a [u8]) -> Self {
        Splice {
            src,
            edits: SmallVec::new(),
            arena: Vec::new(),
        }
    }

    /// Inserts `bytes` before offset `at`.
    pub fn insert(&mut self, at: usize, bytes: impl AsRef<[u8]>) {
        self.replace(at..at, bytes);
    }

    /// Inserts formatted text before offset `at`, formatting straight into the arena.
    pub fn insert_fmt(&mut self, at: usize, text: fmt::Arguments<'_>) {
        self.replace_fmt(at..at, text);
    }

    /// Removes a range.
    pub fn remove(&mut self, r: Range<usize>) {
        self.replace(r, []);
    }

    /// Replaces a range with `bytes`.
    pub fn replace(&mut self, r: Range<usize>, bytes: impl AsRef<[u8]>) {
        let start = self.arena.len();
        let bytes = bytes.as_ref();
        if !bytes.is_empty() {
            self.reserve();
        }
        self.arena.extend_from_slice(bytes);
        self.push(r, start);
    }

    /// Replaces a range with formatted text.
    pub fn replace_fmt(&mut self, r: Range<usize>, text: fmt::Arguments<'_>) {
        let start = self.arena.len();
        self.reserve();
        // Writing into a Vec cannot fail; a Display impl that errs leaves what it wrote.
        let _ = std::io::Write::write_fmt(&mut self.arena, text);
        self.push(r, start);
    }

    /// The arena's first allocation, sized for a relayed request's inserts at once so
    /// formatting into it does not grow it step by step.
    fn reserve(&mut self) {
        if self.arena.capacity() == 0 {
            self.arena.reserve(512);
        }
    }

    fn push(&mut self, r: Range<usize>, start: usize) {
        let seq = self.edits.len();
        self.edits.push(Edit {
            at: r.start,
            remove: r.end.saturating_sub(r.start),
            insert: start..self.arena.len(),
            seq,
        });
    }

    /// Applies the edits. Overlapping removals are clipped rather than panicking.
    pub fn finish(mut self) -> BytesMut {
        self.edits.sort_unstable_by_key(|e| (e.at, e.seq));
        let mut out = BytesMut::with_capacity(self.src.len() + self.arena.len());
        let mut pos = 0;
        for e in &self.edits {
            let at = e.at.clamp(pos, self.src.len());
            out.put_slice(&self.src[pos..at]);
            out.put_slice(&self.arena[e.insert.clone()]);
            pos = (e.at + e.remove).clamp(at, self.src.len());
        }
        out.put_slice(&self.src[pos..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_offset_order() {
        let src = b"0123456789";
        let mut s = Splice::new(src);
        s.replace(8..9, "X");
        s.insert(0, "<");
        s.remove(2..4);
        s.insert(0, "<<");
        s.insert_fmt(10, format_args!("[{}]", 42));
        assert_eq!(&s.finish()[..], b"<<<014567X9[42]");
    }

    #[test]
    fn overlapping_edits_do_not_panic() {
        let mut s = Splice::new(b"abcdef");
        s.remove(1..4);
        s.remove(2..5);
        s.insert(100, "z");
        assert_eq!(&s.finish()[..], b"afz");
    }
}
