//! The compressed bytes: read from the source into the lent buffer in large pieces, and handed
//! to the parser as contiguous slices of the length it asks for (a whole LZMA2 chunk at once).

use crate::{Error, Source};

pub struct Input<'a, S: Source> {
    source: S,
    buf: &'a mut [u8],
    /// The bytes read and not yet consumed: buf[start..end].
    start: usize,
    end: usize,
    /// The bytes consumed since the stream began.
    pub consumed: u64,
}

impl<'a, S: Source> Input<'a, S> {
    pub fn new(source: S, buf: &'a mut [u8]) -> Self {
        Input {
            source,
            buf,
            start: 0,
            end: 0,
            consumed: 0,
        }
    }

    /// The next `n` bytes, without consuming them; Malformed when the stream ends first.
    pub fn peek(&mut self, n: usize) -> Result<&[u8], Error<S::Error>> {
        if self.end - self.start < n {
            self.fill(n)?;
        }
        Ok(&self.buf[self.start..self.start + n])
    }

    /// Reads until `n` bytes are buffered, moving what is left to the front first.
    fn fill(&mut self, n: usize) -> Result<(), Error<S::Error>> {
        if n > self.buf.len() {
            return Err(Error::Malformed);
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < n {
            let space = &mut self.buf[self.end..];
            let got = self.source.read(space).map_err(Error::Source)?;
            if got == 0 {
                return Err(Error::Malformed);
            }
            self.end += got.min(space.len());
        }
        Ok(())
    }

    /// Consumes `n` bytes, which `peek` has just shown.
    pub fn skip(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.consumed += n as u64;
    }

    pub fn byte(&mut self) -> Result<u8, Error<S::Error>> {
        let b = self.peek(1)?[0];
        self.skip(1);
        Ok(b)
    }

    /// Whether the stream has no byte left.
    pub fn at_end(&mut self) -> Result<bool, Error<S::Error>> {
        if self.start < self.end {
            return Ok(false);
        }
        let got = self.source.read(self.buf).map_err(Error::Source)?;
        self.start = 0;
        self.end = got.min(self.buf.len());
        Ok(self.end == 0)
    }

    /// A variable-length integer of the xz format: 7 bits a byte, least significant first,
    /// at most 9 bytes.
    pub fn vli(&mut self) -> Result<u64, Error<S::Error>> {
        let mut value = 0u64;
        for i in 0..9 {
            let b = self.byte()?;
            value |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::Malformed)
    }
}
