//! Editing a message by splicing byte ranges: untouched bytes are copied as they are.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

/// A set of non-overlapping edits over a source buffer.
#[derive(Debug)]
pub struct Splice<'a> {
    src: &'a [u8],
    edits: Vec<Edit>,
    extra: usize,
}

#[derive(Debug)]
struct Edit {
    at: usize,
    remove: usize,
    insert: Vec<u8>,
    /// Tie-breaker keeping inserts at the same offset in call order.
    seq: usize,
}

impl<'a> Splice<'a> {
    pub fn new(src: &'a [u8]) -> Self {
        Splice {
            src,
            edits: Vec::with_capacity(8),
            extra: 0,
        }
    }

    /// Inserts `bytes` before offset `at`.
    pub fn insert(&mut self, at: usize, bytes: impl Into<Vec<u8>>) {
        self.replace(at..at, bytes);
    }

    /// Removes a range.
    pub fn remove(&mut self, r: Range<usize>) {
        self.replace(r, Vec::new());
    }

    /// Replaces a range with `bytes`.
    pub fn replace(&mut self, r: Range<usize>, bytes: impl Into<Vec<u8>>) {
        let insert = bytes.into();
        self.extra += insert.len();
        let seq = self.edits.len();
        self.edits.push(Edit {
            at: r.start,
            remove: r.end.saturating_sub(r.start),
            insert,
            seq,
        });
    }

    /// Applies the edits. Overlapping removals are clipped rather than panicking.
    pub fn finish(mut self) -> BytesMut {
        self.edits.sort_by_key(|e| (e.at, e.seq));
        let mut out = BytesMut::with_capacity(self.src.len() + self.extra);
        let mut pos = 0;
        for e in &self.edits {
            let at = e.at.clamp(pos, self.src.len());
            out.put_slice(&self.src[pos..at]);
            out.put_slice(&e.insert);
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
        assert_eq!(&s.finish()[..], b"<<<014567X9");
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
