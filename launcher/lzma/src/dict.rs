//! The dictionary: a ring of a power-of-two size into which LZMA2 decodes, and from which the
//! decoded bytes are taken out again. Every index is masked by the ring's size, so no access
//! can leave it. Decoding happens only once every byte decoded before has been taken, so a
//! chunk (at most 2 MiB, never more than the ring) overwrites nothing still waiting.

/// The largest decoded size of one LZMA2 chunk.
pub const CHUNK_MAX: usize = 2 << 20;

pub struct Dict<'a> {
    /// Its length is a power of two, at least `CHUNK_MAX`.
    pub buf: &'a mut [u8],
    /// Where the next byte goes: the bytes decoded since the last reset, modulo the ring.
    pub pos: usize,
    /// How many bytes before `pos` hold history a match may refer to.
    pub filled: usize,
    /// How many bytes before `pos` have not been taken yet.
    pub pending: usize,
}

impl<'a> Dict<'a> {
    /// The ring over the largest power of two that fits in `buf`; None when that is smaller
    /// than a chunk.
    pub fn new(buf: &'a mut [u8]) -> Option<Dict<'a>> {
        let len = match buf.len() {
            0 => 0,
            n => 1 << (usize::BITS - 1 - n.leading_zeros()),
        };
        if len < CHUNK_MAX {
            return None;
        }
        Some(Dict {
            buf: &mut buf[..len],
            pos: 0,
            filled: 0,
            pending: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Forgets the history (an LZMA2 dictionary reset); called with nothing pending.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.filled = 0;
    }

    /// Counts `n` more bytes written before `pos` as history and as pending.
    pub fn wrote(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
        self.pending += n;
    }

    /// Appends the bytes of an uncompressed chunk.
    pub fn put(&mut self, bytes: &[u8]) {
        let mask = self.buf.len() - 1;
        for (i, b) in bytes.iter().enumerate() {
            self.buf[(self.pos + i) & mask] = *b;
        }
        self.pos = (self.pos + bytes.len()) & mask;
        self.wrote(bytes.len());
    }

    /// Moves pending bytes, oldest first, into `out`; returns how many.
    pub fn take(&mut self, out: &mut [u8]) -> usize {
        let n = self.pending.min(out.len());
        let len = self.buf.len();
        let start = (self.pos + len - self.pending) & (len - 1);
        let first = n.min(len - start);
        out[..first].copy_from_slice(&self.buf[start..start + first]);
        out[first..n].copy_from_slice(&self.buf[..n - first]);
        self.pending -= n;
        n
    }
}

/// Copies `len` bytes from `dist + 1` bytes back in `buf` to `pos`, each byte after the one
/// before (so a distance shorter than the length repeats the bytes), and returns the position
/// after them. `buf.len()` is a power of two larger than `dist`.
#[inline(always)]
pub fn copy_match(buf: &mut [u8], pos: usize, dist: usize, len: usize) -> usize {
    let mask = buf.len() - 1;
    let src = pos.wrapping_sub(dist + 1) & mask;
    if src.max(pos) + len > buf.len() {
        // The source or the destination wraps around the ring's end.
        for i in 0..len {
            buf[(pos + i) & mask] = buf[(src + i) & mask];
        }
    } else if dist == 0 {
        let byte = buf[src];
        buf[pos..pos + len].fill(byte);
    } else if dist >= len || src > pos {
        // No byte is read after being written.
        buf.copy_within(src..src + len, pos);
    } else {
        let run = &mut buf[src..pos + len];
        for i in dist + 1..run.len() {
            run[i] = run[i - dist - 1];
        }
    }
    (pos + len) & mask
}
