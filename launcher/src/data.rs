//! The payload's data on a cold start: the own file mapped, its checksum verified before
//! anything is decoded, the index read, and the compressed files as one stream that hands out
//! each file's bytes in index order.

use crate::out::{Fail, Failure};
use crate::payload::{self, Index, Trailer};
use crate::program::OwnFile;
use crate::sys::{self, Errno};
use xz4rust::XzDecoder;

/// What the stream fails with when the compressed data does not decode.
pub const EBADMSG: Errno = Errno(74);
const OUT_BUF: usize = 1 << 20;

/// The own file mapped, with its payload verified.
pub struct Payload {
    map: Mapping,
    t: Trailer,
}

impl Payload {
    /// Maps the file open at `own` and verifies the payload's checksum; decodes nothing yet.
    pub fn open(own: &OwnFile, t: &Trailer) -> Result<Payload, Fail> {
        let map = Mapping::new(own.len as usize, Some(own.fd))
            .map_err(|e| Fail::new(Failure::OwnFile, "cannot map own file", own.name, Some(e)))?;
        let whole = &map.bytes()[t.data_offset as usize..t.end() as usize];
        if payload::checksum(whole) != t.payload_checksum {
            return Err(damaged("damaged payload (checksum)", own));
        }
        Ok(Payload { map, t: *t })
    }

    pub fn index(&self, own: &OwnFile) -> Result<Index<'_>, Fail> {
        let t = &self.t;
        let bytes = &self.map.bytes()[t.index_offset() as usize..t.run_offset() as usize];
        Index::decode(bytes, t.raw_len).map_err(|_| damaged("damaged payload (index)", own))
    }

    /// The stream of the files' bytes, in index order.
    pub fn stream(&self) -> sys::Result<Stream<'_>> {
        let t = &self.t;
        let data = &self.map.bytes()[t.data_offset as usize..t.index_offset() as usize];
        Stream::new(data, t.dict_size as usize)
    }
}

pub fn damaged(what: &'static str, own: &OwnFile) -> Fail {
    Fail::new(Failure::Payload, what, own.name, None)
}

/// A read-only mapping of a file, or anonymous read-write memory; unmapped on drop.
struct Mapping {
    addr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize, fd: Option<i32>) -> sys::Result<Mapping> {
        Ok(Mapping {
            addr: sys::mmap(len.max(1), fd)?,
            len: len.max(1),
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, readable, and lives as long as `self`.
        unsafe { core::slice::from_raw_parts(self.addr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: anonymous mappings are writable and owned by `self` alone; file mappings
        // are never written through this (only `bytes` is used on them).
        unsafe { core::slice::from_raw_parts_mut(self.addr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping came from mmap and no slice of it outlives `self`.
        unsafe { sys::munmap(self.addr, self.len) };
    }
}

/// The decompressed data as a stream that hands out each file's bytes in turn.
pub struct Stream<'a> {
    input: &'a [u8],
    decoder: XzDecoder<'static>,
    out: Mapping,
    /// Decoded bytes not yet written: out[start..end].
    start: usize,
    end: usize,
    done: bool,
    _dict: Mapping,
}

impl<'a> Stream<'a> {
    fn new(input: &'a [u8], dict_size: usize) -> sys::Result<Stream<'a>> {
        let mut dict = Mapping::new(dict_size.max(xz4rust::DICT_SIZE_MIN), None)?;
        // SAFETY: the dictionary mapping is owned by the Stream (`_dict`), declared after the
        // decoder so it is unmapped only after the decoder is gone; the 'static lifetime never
        // escapes the Stream.
        let dict_slice: &'static mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(dict.bytes_mut().as_mut_ptr(), dict.len) };
        Ok(Stream {
            input,
            decoder: XzDecoder::with_fixed_size_dict(dict_slice),
            out: Mapping::new(OUT_BUF, None)?,
            start: 0,
            end: 0,
            done: false,
            _dict: dict,
        })
    }

    /// Decodes more output into the empty buffer.
    fn refill(&mut self) -> sys::Result<()> {
        if self.done {
            return Err(EBADMSG);
        }
        let r = self
            .decoder
            .decode(self.input, self.out.bytes_mut())
            .map_err(|_| EBADMSG)?;
        self.input = &self.input[r.input_consumed()..];
        self.done = r.is_end_of_stream();
        self.start = 0;
        self.end = r.output_produced();
        if !r.made_progress() && !self.done {
            return Err(EBADMSG);
        }
        Ok(())
    }

    /// Writes the next `size` decoded bytes to `fd`, or drops them when `fd` is None.
    pub fn copy_to(&mut self, fd: Option<i32>, mut size: u64) -> sys::Result<()> {
        while size > 0 {
            if self.start == self.end {
                self.refill()?;
                continue;
            }
            let n = ((self.end - self.start) as u64).min(size) as usize;
            if let Some(fd) = fd {
                sys::write_all(fd, &self.out.bytes()[self.start..self.start + n])?;
            }
            self.start += n;
            size -= n as u64;
        }
        Ok(())
    }

    /// Checks that the stream ends exactly here: no decoded byte is left over.
    pub fn finish(&mut self) -> sys::Result<()> {
        while !self.done {
            if self.start != self.end {
                return Err(EBADMSG);
            }
            self.refill()?;
        }
        if self.start != self.end || !self.input.is_empty() {
            return Err(EBADMSG);
        }
        Ok(())
    }
}
