//! Cold start: turns the payload into a bundle dir. The payload's checksum is verified first;
//! the entries are written into a temporary dir beside the final one, held by a lock, then the
//! patches are written, the completion marker last, and the dir is published with one rename.
//! A process killed on the way leaves only a temporary dir, which no start ever runs.

use crate::out::{self, Fail, Failure};
use crate::path::{cstr_in, Path, PATH_MAX};
use crate::payload::{self, Entry, Index, Patch, Trailer, KIND_DIR, KIND_FILE, MARKER};
use crate::program::OwnFile;
use crate::sys::{
    self, Errno, O_CLOEXEC, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_RDONLY, O_RDWR,
};
use xz4rust::XzDecoder;

/// What the stream fails with when the compressed data does not decode.
const EBADMSG: Errno = Errno(74);
const OUT_BUF: usize = 1 << 20;

/// Extracts the payload of the file open at `own` into `bundle`. Returns once `bundle` is
/// complete, whether this process or a concurrent one published it.
pub fn extract(own: &OwnFile, t: &Trailer, bundle: &Path) -> Result<(), Fail> {
    let map = Mapping::new(own.len as usize, Some(own.fd))
        .map_err(|e| Fail::new(Failure::OwnFile, "cannot map own file", own.name, Some(e)))?;
    let payload = &map.bytes()[t.data_offset as usize..t.end() as usize];
    if payload::checksum(payload) != t.payload_checksum {
        return Err(damaged("damaged payload (checksum)", own));
    }
    let index_bytes = &map.bytes()[t.index_offset() as usize..t.run_offset() as usize];
    let index = Index::decode(index_bytes, t.raw_len)
        .map_err(|_| damaged("damaged payload (index)", own))?;
    let data = &map.bytes()[t.data_offset as usize..t.index_offset() as usize];

    let tmp = temp_name(bundle).map_err(|e| write_fail(bundle.bytes(), e))?;
    out::debug(&[b"decompressing into ", tmp.bytes()]);
    let result = write_bundle(&tmp, bundle, &index, data, t)
        .map_err(|f| f.unwrap_or_else(|| damaged("damaged payload (compressed data)", own)));
    let published = result.and_then(|()| publish(&tmp, bundle));
    if !matches!(published, Ok(Publish::Moved)) {
        remove_tree(&tmp);
    }
    published.map(drop)
}

/// What became of a finished temporary dir.
#[derive(PartialEq, Eq)]
enum Publish {
    /// Renamed into place: it is the bundle now.
    Moved,
    /// Another process published the same bundle first: this copy is not needed.
    Lost,
}

fn damaged(what: &'static str, own: &OwnFile) -> Fail {
    Fail::new(Failure::Payload, what, own.name, None)
}

fn write_fail(path: &[u8], e: Errno) -> Fail {
    Fail::new(Failure::Extract, "cannot extract", path, Some(e))
}

/// `<bundle>.<pid>.tmp`: beside the final dir, so the rename stays on one file system.
fn temp_name(bundle: &Path) -> sys::Result<Path> {
    let mut suffix = out::Line::new();
    suffix.push(b".");
    suffix.push_decimal(sys::getpid() as u64);
    suffix.push(b".tmp");
    let mut p = bundle.clone();
    p.push(suffix.bytes())?;
    Ok(p)
}

/// Creates the temporary dir, locks it, writes every entry, the patches, then the marker.
/// A failure is a write failure, or None when the compressed data is damaged.
fn write_bundle(
    tmp: &Path,
    bundle: &Path,
    index: &Index,
    data: &[u8],
    t: &Trailer,
) -> Result<(), Option<Fail>> {
    let err = |e| Some(write_fail(tmp.bytes(), e));
    sys::mkdirat(sys::AT_FDCWD, tmp.cstr(), 0o755).map_err(|e| {
        Some(Fail::new(
            Failure::CacheDir,
            "cannot write in cache dir",
            tmp.bytes(),
            Some(e),
        ))
    })?;
    let dir = sys::openat(
        sys::AT_FDCWD,
        tmp.cstr(),
        O_RDONLY | O_DIRECTORY | O_CLOEXEC,
        0,
    )
    .map_err(err)?;
    sys::flock(dir, sys::LOCK_EX).map_err(err)?;
    let mut stream = Stream::new(data, t.dict_size as usize).map_err(err)?;
    for entry in index.entries() {
        write_entry(dir, &entry, &mut stream, bundle).map_err(|e| match e {
            EBADMSG => None,
            e => Some(write_fail(
                tmp.joined(entry.path)
                    .as_ref()
                    .map_or(entry.path, |p| p.bytes()),
                e,
            )),
        })?;
    }
    stream.finish().map_err(|_| None)?;
    let mut name = [0u8; 32];
    let marker = cstr_in(MARKER.as_bytes(), &mut name).map_err(err)?;
    sys::close(
        sys::openat(dir, marker, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o644).map_err(err)?,
    );
    sys::close(dir);
    Ok(())
}

fn write_entry(dir: i32, e: &Entry, stream: &mut Stream, bundle: &Path) -> sys::Result<()> {
    let mut name = [0u8; PATH_MAX];
    let path = cstr_in(e.path, &mut name)?;
    // setuid, setgid and sticky bits are not carried into the cache.
    let mode = e.mode & 0o777;
    match e.kind {
        KIND_DIR => match sys::mkdirat(dir, path, mode | 0o700) {
            Ok(()) | Err(sys::EEXIST) => Ok(()),
            Err(err) => Err(err),
        },
        KIND_FILE => {
            let flags = O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC;
            let fd = sys::openat(dir, path, flags, mode)?;
            let r = stream
                .copy_to(fd, e.size)
                .and_then(|()| apply_patches(fd, e, bundle));
            sys::close(fd);
            r
        }
        _ => {
            let mut target = [0u8; PATH_MAX];
            sys::symlinkat(cstr_in(e.target, &mut target)?, dir, path)
        }
    }
}

/// Writes each patch's template, with the bundle's final path for `ROOT_TOKEN`, NUL-padded to
/// the patch's capacity.
fn apply_patches(fd: i32, e: &Entry, bundle: &Path) -> sys::Result<()> {
    for p in e.patches() {
        let mut buf = [0u8; PATH_MAX * 2];
        let len = expand(&p, bundle.bytes(), &mut buf)?;
        sys::pwrite(fd, &buf[..len], p.offset)?;
    }
    Ok(())
}

/// Expands `p.template` into `buf` and returns the length to write: the whole capacity, so
/// what was there before is overwritten with NULs.
pub fn expand(p: &Patch, root: &[u8], buf: &mut [u8]) -> sys::Result<usize> {
    let cap = (p.capacity as usize).min(buf.len());
    let mut len = 0;
    let mut rest = p.template;
    while !rest.is_empty() {
        let piece: &[u8] = if rest.starts_with(payload::ROOT_TOKEN) {
            rest = &rest[payload::ROOT_TOKEN.len()..];
            root
        } else {
            let piece = &rest[..1];
            rest = &rest[1..];
            piece
        };
        // One byte stays for the terminating NUL.
        if len + piece.len() >= cap {
            return Err(Errno(36));
        }
        buf[len..len + piece.len()].copy_from_slice(piece);
        len += piece.len();
    }
    buf[len..cap].fill(0);
    Ok(cap)
}

/// Renames the finished temporary dir to the bundle dir. Losing the race to another process
/// that published the same bundle first is success.
///
/// A bundle dir without its marker (a cleaner removed files from it) is stale: it is moved
/// aside, removed, and the rename is tried once more.
fn publish(tmp: &Path, bundle: &Path) -> Result<Publish, Fail> {
    let rename = || sys::renameat(sys::AT_FDCWD, tmp.cstr(), sys::AT_FDCWD, bundle.cstr());
    match rename() {
        Ok(()) => Ok(Publish::Moved),
        Err(sys::EEXIST) | Err(sys::ENOTEMPTY) if crate::cache::is_complete(bundle) => {
            out::debug(&[b"another process published ", bundle.bytes()]);
            Ok(Publish::Lost)
        }
        Err(sys::EEXIST) | Err(sys::ENOTEMPTY) => {
            out::debug(&[
                b"replacing a stale bundle dir without its marker: ",
                bundle.bytes(),
            ]);
            remove_stale(bundle);
            rename()
                .map(|()| Publish::Moved)
                .map_err(|e| write_fail(bundle.bytes(), e))
        }
        Err(e) => Err(write_fail(bundle.bytes(), e)),
    }
}

/// Moves an incomplete bundle dir out of the way (so no start sees it half-removed), then
/// removes it.
fn remove_stale(bundle: &Path) {
    let Ok(aside) = temp_name(bundle).and_then(|mut p| p.push(b".stale").map(|()| p)) else {
        return;
    };
    if sys::renameat(sys::AT_FDCWD, bundle.cstr(), sys::AT_FDCWD, aside.cstr()).is_ok() {
        remove_tree(&aside);
    }
}

/// Removes a dir tree this process created; failures are ignored, as the tree is never run.
fn remove_tree(p: &Path) {
    let Ok(dir) = sys::openat(
        sys::AT_FDCWD,
        p.cstr(),
        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
        0,
    ) else {
        let _ = sys::unlinkat(sys::AT_FDCWD, p.cstr(), 0);
        return;
    };
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = sys::getdents64(dir, &mut buf) {
        let mut at = 0;
        while at + 19 < n {
            let reclen = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." {
                if let Ok(child) = p.joined(name) {
                    if sys::unlinkat(sys::AT_FDCWD, child.cstr(), 0).is_err() {
                        remove_tree(&child);
                    }
                }
            }
            at += reclen.max(1);
        }
    }
    sys::close(dir);
    let _ = sys::unlinkat(sys::AT_FDCWD, p.cstr(), sys::AT_REMOVEDIR);
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
struct Stream<'a> {
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

    /// Writes the next `size` decoded bytes to `fd`.
    fn copy_to(&mut self, fd: i32, mut size: u64) -> sys::Result<()> {
        while size > 0 {
            if self.start == self.end {
                self.refill()?;
                continue;
            }
            let n = ((self.end - self.start) as u64).min(size) as usize;
            sys::write_all(fd, &self.out.bytes()[self.start..self.start + n])?;
            self.start += n;
            size -= n as u64;
        }
        Ok(())
    }

    /// Checks that the stream ends exactly here: no decoded byte is left over.
    fn finish(&mut self) -> sys::Result<()> {
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
