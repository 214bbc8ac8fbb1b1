//! The payload's data on a cold start: its checksum verified before anything is decoded, the
//! index read, and each compressed stream decoded into the bytes of its files, in index order.
//! The compressed bytes are read in small pieces rather than mapped, so a start holds in memory
//! little more than the dictionary.

use crate::out::{Fail, Failure};
use crate::payload::{self, Index, Placed, Trailer};
use crate::program::OwnFile;
use crate::sys::{self, Errno};
use tote_lzma::{Decoder as Xz, Error, Source};

/// What the decoder fails with when the compressed data does not decode.
pub const EBADMSG: Errno = Errno(74);
/// The compressed bytes read at once.
const IN_BUF: usize = 2 * tote_lzma::INPUT_MIN;
/// The compressed bytes the checksum reads at once.
const SUM_BUF: usize = 64 * 1024;
/// The decoded bytes made at once, and so the largest write: larger writes make the kernel
/// cache the files in larger pieces, which the program then maps whole (a bigger RSS).
const OUT_BUF: usize = 16 * 1024;

/// The own file with its payload verified.
pub struct Payload {
    fd: i32,
    /// The whole file mapped read-only; only the index is read through it.
    map: Mapping,
    t: Trailer,
}

impl Payload {
    /// Verifies the payload's checksum, reading the file in pieces, and maps the file for its
    /// index; decodes nothing yet.
    pub fn open(own: &OwnFile, t: &Trailer) -> Result<Payload, Fail> {
        let read_fail = |e| Fail::new(Failure::OwnFile, "cannot read own file", own.name, Some(e));
        if checksum_of(own.fd, t.data_offset, t.end()).map_err(read_fail)? != t.payload_checksum {
            return Err(damaged("damaged payload (checksum)", own));
        }
        let map = Mapping::new(own.len as usize, Some(own.fd))
            .map_err(|e| Fail::new(Failure::OwnFile, "cannot map own file", own.name, Some(e)))?;
        Ok(Payload {
            fd: own.fd,
            map,
            t: *t,
        })
    }

    pub fn index(&self, own: &OwnFile) -> Result<Index<'_>, Fail> {
        let t = &self.t;
        let bytes = &self.map.bytes()[t.index_offset() as usize..t.run_offset() as usize];
        Index::decode(bytes, t).map_err(|_| damaged("damaged payload (index)", own))
    }

    /// The decoder of stream `s`.
    pub fn decoder(&self, s: &Placed) -> sys::Result<Decoder> {
        let start = self.t.data_offset + s.data_offset;
        Decoder::new(
            self.fd,
            start,
            start + s.stream.data_len,
            s.stream.dict_size,
        )
    }
}

/// The payload checksum of the file's bytes from `start` to `end`, read in pieces.
fn checksum_of(fd: i32, start: u64, end: u64) -> sys::Result<u64> {
    let mut buf = [0u8; SUM_BUF];
    let mut hasher = payload::Checksum::new();
    let mut at = start;
    while at < end {
        let want = ((end - at) as usize).min(SUM_BUF);
        let got = sys::pread(fd, &mut buf[..want], at)?;
        if got == 0 {
            return Err(EBADMSG);
        }
        hasher.write(&buf[..got]);
        at += got as u64;
    }
    Ok(hasher.finish())
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

/// A stream's compressed bytes in the own file, read with `pread` from `next` up to `end`.
struct Compressed {
    fd: i32,
    next: u64,
    end: u64,
}

impl Source for Compressed {
    type Error = Errno;

    fn read(&mut self, buf: &mut [u8]) -> sys::Result<usize> {
        let want = ((self.end - self.next) as usize).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let got = sys::pread(self.fd, &mut buf[..want], self.next)?;
        if got == 0 {
            // The file is shorter than its trailer says.
            return Err(EBADMSG);
        }
        self.next += got as u64;
        Ok(got)
    }
}

/// One stream's decompressed bytes, handed out file by file.
pub struct Decoder {
    xz: Xz<'static, Compressed>,
    out: [u8; OUT_BUF],
    /// Decoded bytes not yet written: out[start..end].
    start: usize,
    end: usize,
    /// The read buffer and the dictionary `xz` works in, declared after it so that they are
    /// unmapped only after it is gone.
    _input: Mapping,
    _dict: Mapping,
}

impl Decoder {
    fn new(fd: i32, next: u64, end: u64, dict_size: u32) -> sys::Result<Decoder> {
        let mut input = Mapping::new(IN_BUF, None)?;
        let mut dict = Mapping::new(tote_lzma::dict_len(dict_size as u64), None)?;
        // SAFETY: both mappings are owned by the Decoder, which drops them only after `xz`;
        // the 'static lifetime never escapes the Decoder, and nothing else uses the memory.
        let (input_bytes, dict_bytes): (&'static mut [u8], &'static mut [u8]) = unsafe {
            (
                core::slice::from_raw_parts_mut(input.bytes_mut().as_mut_ptr(), input.len),
                core::slice::from_raw_parts_mut(dict.bytes_mut().as_mut_ptr(), dict.len),
            )
        };
        let source = Compressed { fd, next, end };
        let xz = Xz::new(source, input_bytes, dict_bytes).ok_or(EBADMSG)?;
        Ok(Decoder {
            xz,
            out: [0; OUT_BUF],
            start: 0,
            end: 0,
            _input: input,
            _dict: dict,
        })
    }

    /// Decodes more output into the empty buffer; `Ok(false)` at the stream's end.
    fn refill(&mut self) -> sys::Result<bool> {
        let n = self.xz.read(&mut self.out).map_err(|e| match e {
            Error::Malformed => EBADMSG,
            Error::Source(e) => e,
        })?;
        self.start = 0;
        self.end = n;
        Ok(n > 0)
    }

    /// Writes the next `size` decoded bytes to `fd`, or drops them when `fd` is None.
    pub fn copy_to(&mut self, fd: Option<i32>, mut size: u64) -> sys::Result<()> {
        while size > 0 {
            if self.start == self.end && !self.refill()? {
                return Err(EBADMSG);
            }
            let n = ((self.end - self.start) as u64).min(size) as usize;
            if let Some(fd) = fd {
                sys::write_all(fd, &self.out[self.start..self.start + n])?;
            }
            self.start += n;
            size -= n as u64;
        }
        Ok(())
    }

    /// Checks that the stream ends exactly here: no decoded or compressed byte is left over.
    pub fn finish(&mut self) -> sys::Result<()> {
        if self.start != self.end || self.refill()? {
            return Err(EBADMSG);
        }
        Ok(())
    }
}
