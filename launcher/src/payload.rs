//! The payload format, defined once: the launcher and the packer both compile this file, so the
//! writer and the reader cannot disagree. No allocation and no std, only byte slices.
//!
//! A tote file is the launcher stub followed by the payload:
//!
//! ```text
//! stub | data (xz streams) | index | run table | trailer (TRAILER_LEN bytes)
//! ```
//!
//! - data: the contents of every regular file of the index, in index order, concatenated and
//!   compressed as a few independent streams of similar size (each holds whole files), which
//!   the launcher decodes at the same time. Each is one xz stream of blocks filtered with x86
//!   BCJ then LZMA2, with no integrity check of its own (the payload checksum covers it).
//! - index: the streams, and every entry of the bundle (dir, file, symlink) with its mode, size,
//!   modification time and the patches the launcher writes into it at extraction. Read only on
//!   a cold start.
//! - run table: what a warm start needs: the programs by name, the variables to set; and what
//!   in-memory mode loads for each program.
//! - trailer: fixed size at the very end of the file, with its own checksum, so one `pread` of
//!   the tail finds everything. The key names the cache dir; it covers the whole payload and
//!   the format version.
//!
//! Integers are little-endian. A string is a u16 length and that many bytes. In templates
//! (patch bytes, variable values) `ROOT_TOKEN` stands for the bundle's root dir on this host.

pub const MAGIC: [u8; 8] = *b"TOTE\0PAY";
/// 3: index entries carry a modification time. 4: the xz streams carry no integrity check.
pub const VERSION: u32 = 4;
pub const CODEC_XZ: u32 = 1;
pub const TRAILER_LEN: usize = 128;
pub const KEY_LEN: usize = 32;
/// Stands for the absolute path of the bundle's root dir in patches and variable values.
pub const ROOT_TOKEN: &[u8] = b"${TOTE_ROOT}";
/// The file written last into an extracted bundle: a cache dir without it is never used.
pub const MARKER: &str = ".tote-complete";

/// What makes a payload unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// No trailer: the file holds no payload.
    NoPayload,
    /// A payload of a format version this side does not know.
    Version,
    /// A checksum does not match: the file is damaged.
    Checksum,
    /// A table ends early or has a field out of range.
    Malformed,
    /// An index path that would leave the bundle root (`..`, absolute, empty).
    UnsafePath,
}

/// The length of a bundle dir's name.
pub const BUNDLE_NAME_LEN: usize = KEY_LEN;

/// The name of a payload's bundle dir in the cache: the first half of its key in hex.
pub fn bundle_name(key: &[u8; KEY_LEN]) -> [u8; BUNDLE_NAME_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = [0u8; BUNDLE_NAME_LEN];
    for (i, b) in key[..KEY_LEN / 2].iter().enumerate() {
        name[2 * i] = HEX[(b >> 4) as usize];
        name[2 * i + 1] = HEX[(b & 15) as usize];
    }
    name
}

/// The checksum used throughout the format.
pub fn checksum(bytes: &[u8]) -> u64 {
    twox_hash::XxHash64::oneshot(0, bytes)
}

/// The format's checksum computed piece by piece: `finish` gives `checksum` of the pieces
/// joined.
pub struct Checksum(twox_hash::XxHash64);

impl Checksum {
    pub fn new() -> Self {
        Checksum(twox_hash::XxHash64::with_seed(0))
    }

    pub fn write(&mut self, bytes: &[u8]) {
        core::hash::Hasher::write(&mut self.0, bytes);
    }

    pub fn finish(&self) -> u64 {
        core::hash::Hasher::finish(&self.0)
    }
}

/// The fixed-size record at the end of a tote file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub codec: u32,
    /// File offset of the compressed data; the index and run table follow it directly.
    pub data_offset: u64,
    pub data_len: u64,
    pub index_len: u64,
    pub run_len: u64,
    /// Total size of the decompressed data.
    pub raw_len: u64,
    /// The largest dictionary any stream needs, in bytes.
    pub dict_size: u64,
    /// Checksum of data, index and run table together.
    pub payload_checksum: u64,
    /// Checksum of the run table alone, for the warm path.
    pub run_checksum: u64,
    /// Names the cache dir: a hash of the whole payload and the format version.
    pub key: [u8; KEY_LEN],
}

impl Trailer {
    pub fn index_offset(&self) -> u64 {
        self.data_offset + self.data_len
    }

    pub fn run_offset(&self) -> u64 {
        self.index_offset() + self.index_len
    }

    /// Where the payload ends: the trailer's own offset.
    pub fn end(&self) -> u64 {
        self.run_offset() + self.run_len
    }

    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.codec.to_le_bytes());
        let fields = [
            self.data_offset,
            self.data_len,
            self.index_len,
            self.run_len,
            self.raw_len,
            self.dict_size,
            self.payload_checksum,
            self.run_checksum,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[80..112].copy_from_slice(&self.key);
        let sum = checksum(&b[..120]);
        b[120..128].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Reads a trailer and checks its magic, version and checksum, and that the regions it
    /// names fit in a file of `file_len` bytes.
    pub fn decode(b: &[u8; TRAILER_LEN], file_len: u64) -> Result<Trailer, FormatError> {
        if b[0..8] != MAGIC {
            return Err(FormatError::NoPayload);
        }
        if checksum(&b[..120]) != u64_at(b, 120) {
            return Err(FormatError::Checksum);
        }
        if u32_at(b, 8) != VERSION {
            return Err(FormatError::Version);
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&b[80..112]);
        let t = Trailer {
            codec: u32_at(b, 12),
            data_offset: u64_at(b, 16),
            data_len: u64_at(b, 24),
            index_len: u64_at(b, 32),
            run_len: u64_at(b, 40),
            raw_len: u64_at(b, 48),
            dict_size: u64_at(b, 56),
            payload_checksum: u64_at(b, 64),
            run_checksum: u64_at(b, 72),
            key,
        };
        let end = [t.data_len, t.index_len, t.run_len]
            .iter()
            .try_fold(t.data_offset, |acc, len| acc.checked_add(*len));
        let fits = end.is_some() && end == file_len.checked_sub(TRAILER_LEN as u64);
        if !fits || t.codec != CODEC_XZ {
            return Err(FormatError::Malformed);
        }
        Ok(t)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// A cursor over a table; every read checks bounds and fails with `Malformed`.
pub struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.bytes.len() {
            return Err(FormatError::Malformed);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, FormatError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32_at(self.take(4)?, 0))
    }

    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64_at(self.take(8)?, 0))
    }

    pub fn str(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// Where the packer writes tables to.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    fn put_u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }

    /// Writes a string; the packer checks lengths against `u16::MAX` before it gets here.
    fn put_str(&mut self, s: &[u8]) {
        self.put_u16(s.len() as u16);
        self.put(s);
    }
}

/// One program of the run table: the name it is invoked under, its path in the bundle, and
/// what in-memory mode loads with it: its interpreter (empty for a static program) and the
/// libraries it needs, in breadth-first order. Paths are relative to the bundle root.
#[derive(Clone, Copy)]
pub struct Program<'a> {
    pub name: &'a [u8],
    pub path: &'a [u8],
    pub interpreter: &'a [u8],
    pub libraries: Paths<'a>,
}

impl<'a> Program<'a> {
    fn encode(&self, out: &mut impl Sink) {
        out.put_str(self.name);
        out.put_str(self.path);
        out.put_str(self.interpreter);
        out.put(self.libraries.bytes);
    }

    fn decode(c: &mut Cursor<'a>) -> Result<Self, FormatError> {
        let name = safe_path(c.str()?)?;
        let path = safe_path(c.str()?)?;
        let interpreter = c.str()?;
        if !interpreter.is_empty() {
            safe_path(interpreter)?;
        }
        let libraries = Paths::decode(c)?;
        Ok(Program {
            name,
            path,
            interpreter,
            libraries,
        })
    }
}

/// A list of bundle paths: a `u16` count, then each path.
#[derive(Clone, Copy)]
pub struct Paths<'a> {
    /// The encoded list, count included.
    bytes: &'a [u8],
    count: u16,
}

impl<'a> Paths<'a> {
    pub fn encode(paths: &[&[u8]], out: &mut impl Sink) {
        out.put_u16(paths.len() as u16);
        for p in paths {
            out.put_str(p);
        }
    }

    /// Reads a list that `encode` wrote, and nothing after it.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut c = Cursor::new(bytes);
        let paths = Paths::decode(&mut c)?;
        if !c.is_empty() {
            return Err(FormatError::Malformed);
        }
        Ok(paths)
    }

    fn decode(c: &mut Cursor<'a>) -> Result<Self, FormatError> {
        let start = c.bytes;
        let count = c.u16()?;
        for _ in 0..count {
            safe_path(c.str()?)?;
        }
        Ok(Paths {
            bytes: &start[..start.len() - c.bytes.len()],
            count,
        })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut c = Cursor::new(&self.bytes[2..]);
        (0..self.count).filter_map(move |_| c.str().ok())
    }
}

/// One variable of the run table, set at run time when the user has not set it.
pub struct Var<'a> {
    pub name: &'a [u8],
    /// May hold `ROOT_TOKEN`.
    pub value: &'a [u8],
}

/// The run table: `u16` program count, each program's name, path, interpreter and
/// libraries; `u16` variable count, each variable's name and value.
pub struct RunTable<'a> {
    programs: &'a [u8],
    program_count: u16,
    vars: &'a [u8],
    var_count: u16,
}

impl<'a> RunTable<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut c = Cursor::new(bytes);
        let program_count = c.u16()?;
        let programs = c.bytes;
        for _ in 0..program_count {
            Program::decode(&mut c)?;
        }
        let used = programs.len() - c.bytes.len();
        let var_count = c.u16()?;
        let vars = c.bytes;
        for _ in 0..var_count {
            c.str()?;
            c.str()?;
        }
        if !c.is_empty() {
            return Err(FormatError::Malformed);
        }
        Ok(RunTable {
            programs: &programs[..used],
            program_count,
            vars,
            var_count,
        })
    }

    pub fn encode(programs: &[Program], vars: &[Var], out: &mut impl Sink) {
        out.put_u16(programs.len() as u16);
        for p in programs {
            p.encode(out);
        }
        out.put_u16(vars.len() as u16);
        for v in vars {
            out.put_str(v.name);
            out.put_str(v.value);
        }
    }

    /// The programs, in order; the first is the default. Bounds were checked by `decode`.
    pub fn programs(&self) -> impl Iterator<Item = Program<'a>> {
        let mut c = Cursor::new(self.programs);
        (0..self.program_count).filter_map(move |_| Program::decode(&mut c).ok())
    }

    pub fn vars(&self) -> impl Iterator<Item = Var<'a>> {
        let mut c = Cursor::new(self.vars);
        (0..self.var_count).filter_map(move |_| {
            Some(Var {
                name: c.str().ok()?,
                value: c.str().ok()?,
            })
        })
    }
}

pub const KIND_DIR: u8 = 0;
pub const KIND_FILE: u8 = 1;
pub const KIND_SYMLINK: u8 = 2;

/// Bytes the launcher writes into an extracted file at `offset`: `template` with `ROOT_TOKEN`
/// expanded, then zeros up to `capacity` (the room the packer left there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patch<'a> {
    pub offset: u64,
    pub capacity: u32,
    pub template: &'a [u8],
}

/// One index entry. `path` is relative to the bundle root; `target` is a symlink's target.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub kind: u8,
    pub mode: u32,
    pub size: u64,
    /// A file's modification time in seconds since the epoch, set on the extracted file; 0
    /// for dirs and symlinks, whose times are left as extraction makes them.
    pub mtime: u64,
    pub path: &'a [u8],
    pub target: &'a [u8],
    patches: &'a [u8],
    patch_count: u16,
}

impl<'a> Entry<'a> {
    pub fn new(kind: u8, mode: u32, size: u64, path: &'a [u8], target: &'a [u8]) -> Self {
        Entry {
            kind,
            mode,
            size,
            mtime: 0,
            path,
            target,
            patches: &[],
            patch_count: 0,
        }
    }

    pub fn with_mtime(self, mtime: u64) -> Self {
        Entry { mtime, ..self }
    }

    /// Writes the entry with its patches: kind, mode, size, mtime, path, target, `u16` patch
    /// count, each patch's offset, capacity and template.
    pub fn encode(&self, patches: &[Patch], out: &mut impl Sink) {
        out.put(&[self.kind]);
        out.put_u32(self.mode);
        out.put_u64(self.size);
        out.put_u64(self.mtime);
        out.put_str(self.path);
        out.put_str(self.target);
        out.put_u16(patches.len() as u16);
        for p in patches {
            out.put_u64(p.offset);
            out.put_u32(p.capacity);
            out.put_str(p.template);
        }
    }

    fn decode(c: &mut Cursor<'a>) -> Result<Self, FormatError> {
        let kind = c.u8()?;
        let mode = c.u32()?;
        let size = c.u64()?;
        let mtime = c.u64()?;
        let path = safe_path(c.str()?)?;
        let target = c.str()?;
        let patch_count = c.u16()?;
        let patches = c.bytes;
        for _ in 0..patch_count {
            let p = Patch {
                offset: c.u64()?,
                capacity: c.u32()?,
                template: c.str()?,
            };
            let fits = p
                .offset
                .checked_add(p.capacity as u64)
                .is_some_and(|end| end <= size);
            if !fits || p.template.len() > p.capacity as usize {
                return Err(FormatError::Malformed);
            }
        }
        let patches = &patches[..patches.len() - c.bytes.len()];
        let file_only = size != 0 || mtime != 0 || patch_count != 0;
        if kind > KIND_SYMLINK || (kind != KIND_FILE && file_only) {
            return Err(FormatError::Malformed);
        }
        Ok(Entry {
            kind,
            mode,
            size,
            mtime,
            path,
            target,
            patches,
            patch_count,
        })
    }

    pub fn patches(&self) -> impl Iterator<Item = Patch<'a>> {
        let mut c = Cursor::new(self.patches);
        (0..self.patch_count).filter_map(move |_| {
            Some(Patch {
                offset: c.u64().ok()?,
                capacity: c.u32().ok()?,
                template: c.str().ok()?,
            })
        })
    }
}

/// One independently compressed stream of the data: the next `files` file entries of the
/// index, `raw_len` bytes decoded, `data_len` bytes compressed, decoded with a dictionary of
/// `dict_size` bytes. The streams follow each other in the data, so they can be decoded at
/// the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub data_len: u64,
    pub raw_len: u64,
    pub dict_size: u32,
    pub files: u32,
}

/// Where a stream of the index sits: its offset in the data and its first file (counting file
/// entries only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub stream: Stream,
    pub data_offset: u64,
    pub first_file: u32,
}

/// The most streams a payload may have.
pub const MAX_STREAMS: u16 = 16;
const STREAM_LEN: usize = 24;

impl Stream {
    pub fn encode(&self, out: &mut impl Sink) {
        out.put_u64(self.data_len);
        out.put_u64(self.raw_len);
        out.put_u32(self.dict_size);
        out.put_u32(self.files);
    }

    fn decode(c: &mut Cursor) -> Result<Self, FormatError> {
        Ok(Stream {
            data_len: c.u64()?,
            raw_len: c.u64()?,
            dict_size: c.u32()?,
            files: c.u32()?,
        })
    }
}

/// The index: a `u32` entry count, a `u16` stream count, the streams, then the entries.
pub struct Index<'a> {
    streams: &'a [u8],
    stream_count: u16,
    entries: &'a [u8],
    count: u32,
}

impl<'a> Index<'a> {
    /// Checks every stream and entry once, so that iterating cannot fail afterwards: the
    /// streams add up to the trailer's data and raw lengths with dictionaries no larger than
    /// its `dict_size`, and each stream's files add up to its raw length.
    pub fn decode(bytes: &'a [u8], t: &Trailer) -> Result<Self, FormatError> {
        let mut c = Cursor::new(bytes);
        let count = c.u32()?;
        let stream_count = c.u16()?;
        if stream_count > MAX_STREAMS {
            return Err(FormatError::Malformed);
        }
        let streams = c.take(stream_count as usize * STREAM_LEN)?;
        let entries = c.bytes;
        let mut sums = Sums::new(streams, stream_count, t)?;
        for _ in 0..count {
            let e = Entry::decode(&mut c)?;
            if e.kind == KIND_FILE {
                sums.file(e.size)?;
            }
        }
        if !c.is_empty() || !sums.done() {
            return Err(FormatError::Malformed);
        }
        Ok(Index {
            streams,
            stream_count,
            entries,
            count,
        })
    }

    pub fn encode_header(count: u32, streams: &[Stream], out: &mut impl Sink) {
        out.put_u32(count);
        out.put_u16(streams.len() as u16);
        for s in streams {
            s.encode(out);
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> {
        let mut c = Cursor::new(self.entries);
        (0..self.count).filter_map(move |_| Entry::decode(&mut c).ok())
    }

    /// The file entries of stream `s`, in the order its data holds them.
    pub fn files_of(&self, s: &Placed) -> impl Iterator<Item = Entry<'a>> {
        self.entries()
            .filter(|e| e.kind == KIND_FILE)
            .skip(s.first_file as usize)
            .take(s.stream.files as usize)
    }

    pub fn streams(&self) -> impl Iterator<Item = Placed> + 'a {
        let mut c = Cursor::new(self.streams);
        let (mut data_offset, mut first_file) = (0u64, 0u32);
        (0..self.stream_count).filter_map(move |_| {
            let stream = Stream::decode(&mut c).ok()?;
            let placed = Placed {
                stream,
                data_offset,
                first_file,
            };
            data_offset += stream.data_len;
            first_file += stream.files;
            Some(placed)
        })
    }
}

/// The running check of an index's files against its streams.
struct Sums<'a> {
    streams: Cursor<'a>,
    left: u16,
    /// What the current stream still holds.
    files: u32,
    raw: u64,
}

impl<'a> Sums<'a> {
    /// Checks the streams' totals against the trailer, then starts at the first stream.
    fn new(bytes: &'a [u8], count: u16, t: &Trailer) -> Result<Self, FormatError> {
        let mut c = Cursor::new(bytes);
        let (mut data, mut raw) = (0u64, 0u64);
        for _ in 0..count {
            let s = Stream::decode(&mut c)?;
            let empty = s.files == 0 || s.data_len == 0;
            if empty || s.dict_size as u64 > t.dict_size {
                return Err(FormatError::Malformed);
            }
            data = data.checked_add(s.data_len).ok_or(FormatError::Malformed)?;
            raw = raw.checked_add(s.raw_len).ok_or(FormatError::Malformed)?;
        }
        if data != t.data_len || raw != t.raw_len {
            return Err(FormatError::Malformed);
        }
        Ok(Sums {
            streams: Cursor::new(bytes),
            left: count,
            files: 0,
            raw: 0,
        })
    }

    /// Counts one file of `size` bytes against the current stream, moving to the next one
    /// when the current one is full.
    fn file(&mut self, size: u64) -> Result<(), FormatError> {
        if self.files == 0 {
            if self.raw != 0 || self.left == 0 {
                return Err(FormatError::Malformed);
            }
            let s = Stream::decode(&mut self.streams)?;
            self.left -= 1;
            self.files = s.files;
            self.raw = s.raw_len;
        }
        self.files -= 1;
        self.raw = self.raw.checked_sub(size).ok_or(FormatError::Malformed)?;
        Ok(())
    }

    fn done(&self) -> bool {
        self.left == 0 && self.files == 0 && self.raw == 0
    }
}

/// Accepts a relative path of normal components only: not empty, no leading `/`, no empty,
/// `.` or `..` component, no NUL.
pub fn safe_path(p: &[u8]) -> Result<&[u8], FormatError> {
    let bad = p.is_empty()
        || p.contains(&0)
        || p.split(|b| *b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        Err(FormatError::UnsafePath)
    } else {
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    struct Buf(Vec<u8>);

    impl Sink for Buf {
        fn put(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
    }

    fn trailer() -> Trailer {
        Trailer {
            codec: CODEC_XZ,
            data_offset: 1000,
            data_len: 500,
            index_len: 60,
            run_len: 40,
            raw_len: 4000,
            dict_size: 1 << 20,
            payload_checksum: 7,
            run_checksum: 9,
            key: [3; KEY_LEN],
        }
    }

    const FILE_LEN: u64 = 1000 + 500 + 60 + 40 + TRAILER_LEN as u64;

    #[test]
    fn checksum_in_pieces_is_the_checksum_of_the_whole() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut c = Checksum::new();
        for piece in bytes.chunks(33) {
            c.write(piece);
        }
        assert_eq!(c.finish(), checksum(&bytes));
    }

    #[test]
    fn trailer_round_trips() {
        let t = trailer();
        assert_eq!(Trailer::decode(&t.encode(), FILE_LEN), Ok(t));
    }

    #[test]
    fn trailer_refuses_every_single_byte_change() {
        let good = trailer().encode();
        for at in 0..TRAILER_LEN {
            for flip in [1u8, 0x80, 0xff] {
                let mut bad = good;
                bad[at] ^= flip;
                assert!(
                    Trailer::decode(&bad, FILE_LEN).is_err(),
                    "byte {at} ^ {flip:#x} accepted"
                );
            }
        }
    }

    #[test]
    fn trailer_refuses_regions_that_do_not_fill_the_file() {
        let t = trailer().encode();
        assert_eq!(
            Trailer::decode(&t, FILE_LEN + 1),
            Err(FormatError::Malformed)
        );
        assert_eq!(
            Trailer::decode(&t, FILE_LEN - 1),
            Err(FormatError::Malformed)
        );
        assert_eq!(
            Trailer::decode(&[0; TRAILER_LEN], FILE_LEN),
            Err(FormatError::NoPayload)
        );
    }

    #[test]
    fn trailer_refuses_regions_past_u64_in_a_file_shorter_than_a_trailer() {
        let t = Trailer {
            data_offset: u64::MAX,
            data_len: 2,
            ..trailer()
        };
        for file_len in [0, 1, TRAILER_LEN as u64 - 1] {
            assert_eq!(
                Trailer::decode(&t.encode(), file_len),
                Err(FormatError::Malformed),
                "file of {file_len} bytes"
            );
        }
    }

    #[test]
    fn run_table_round_trips() {
        let mut libs = Buf(Vec::new());
        Paths::encode(&[b"lib/libjq.so.1", b"lib/libc.so.6"], &mut libs);
        let mut none = Buf(Vec::new());
        Paths::encode(&[], &mut none);
        let programs = [
            Program {
                name: b"jq",
                path: b"usr/bin/jq",
                interpreter: b"lib64/ld-linux-x86-64.so.2",
                libraries: Paths::new(&libs.0).unwrap(),
            },
            Program {
                name: b"sh",
                path: b"bin/sh",
                interpreter: b"",
                libraries: Paths::new(&none.0).unwrap(),
            },
        ];
        let vars = [Var {
            name: b"GCONV_PATH",
            value: b"${TOTE_ROOT}/usr/lib/gconv",
        }];
        let mut out = Buf(Vec::new());
        RunTable::encode(&programs, &vars, &mut out);
        let run = RunTable::decode(&out.0).unwrap();
        let names: Vec<_> = run.programs().map(|p| (p.name, p.path)).collect();
        assert_eq!(
            names,
            [(&b"jq"[..], &b"usr/bin/jq"[..]), (b"sh", b"bin/sh")]
        );
        let jq = run.programs().next().unwrap();
        assert_eq!(jq.interpreter, b"lib64/ld-linux-x86-64.so.2");
        let jq_libs: Vec<_> = jq.libraries.iter().collect();
        assert_eq!(jq_libs, [&b"lib/libjq.so.1"[..], b"lib/libc.so.6"]);
        assert!(run.programs().nth(1).unwrap().libraries.is_empty());
        let v: Vec<_> = run.vars().map(|v| (v.name, v.value)).collect();
        assert_eq!(
            v,
            [(&b"GCONV_PATH"[..], &b"${TOTE_ROOT}/usr/lib/gconv"[..])]
        );
        for cut in 0..out.0.len() {
            assert!(
                RunTable::decode(&out.0[..cut]).is_err(),
                "truncated at {cut} accepted"
            );
        }
    }

    /// An index of `entries` whose files are one stream of 10 compressed bytes.
    fn index_bytes(entries: &[(Entry, &[Patch])]) -> Vec<u8> {
        let files: Vec<&Entry> = entries
            .iter()
            .map(|(e, _)| e)
            .filter(|e| e.kind == KIND_FILE)
            .collect();
        let streams: Vec<Stream> = if files.is_empty() {
            Vec::new()
        } else {
            vec![Stream {
                data_len: 10,
                raw_len: files.iter().map(|e| e.size).sum(),
                dict_size: 1 << 20,
                files: files.len() as u32,
            }]
        };
        index_with(entries, &streams)
    }

    fn index_with(entries: &[(Entry, &[Patch])], streams: &[Stream]) -> Vec<u8> {
        let mut out = Buf(Vec::new());
        Index::encode_header(entries.len() as u32, streams, &mut out);
        for (e, p) in entries {
            e.encode(p, &mut out);
        }
        out.0
    }

    /// A trailer for an index whose files hold `raw_len` bytes (in one stream of 10 bytes).
    fn totals(raw_len: u64) -> Trailer {
        Trailer {
            data_len: if raw_len == 0 { 0 } else { 10 },
            raw_len,
            ..trailer()
        }
    }

    #[test]
    fn index_streams_split_the_files_in_order() {
        let stream = |raw_len, files| Stream {
            data_len: 5,
            raw_len,
            dict_size: 1 << 16,
            files,
        };
        let entries: [(Entry, &[Patch]); 4] = [
            (Entry::new(KIND_DIR, 0o755, 0, b"d", b""), &[]),
            (Entry::new(KIND_FILE, 0o644, 30, b"d/a", b""), &[]),
            (Entry::new(KIND_FILE, 0o644, 40, b"d/b", b""), &[]),
            (Entry::new(KIND_FILE, 0o644, 30, b"d/c", b""), &[]),
        ];
        let t = totals(100);
        let bytes = index_with(&entries, &[stream(70, 2), stream(30, 1)]);
        let index = Index::decode(&bytes, &t).unwrap();
        let placed: Vec<Placed> = index.streams().collect();
        assert_eq!(placed[1].data_offset, 5);
        assert_eq!(placed[1].first_file, 2);
        let second: Vec<&[u8]> = index.files_of(&placed[1]).map(|e| e.path).collect();
        assert_eq!(second, [&b"d/c"[..]]);
        for wrong in [
            [stream(60, 2), stream(40, 1)],
            [stream(70, 1), stream(30, 2)],
            [stream(70, 3), stream(30, 0)],
        ] {
            let bytes = index_with(&entries, &wrong);
            assert!(Index::decode(&bytes, &t).is_err(), "{wrong:?} accepted");
        }
    }

    #[test]
    fn index_round_trips_with_patches() {
        let patch = Patch {
            offset: 16,
            capacity: 64,
            template: b"${TOTE_ROOT}/lib",
        };
        let bytes = index_bytes(&[
            (Entry::new(KIND_DIR, 0o755, 0, b"usr", b""), &[]),
            (Entry::new(KIND_FILE, 0o755, 100, b"usr/jq", b""), &[patch]),
            (Entry::new(KIND_SYMLINK, 0o777, 0, b"usr/q", b"jq"), &[]),
        ]);
        let index = Index::decode(&bytes, &totals(100)).unwrap();
        let entries: Vec<Entry> = index.entries().collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].path, b"usr/jq");
        assert_eq!(entries[1].patches().collect::<Vec<_>>(), [patch]);
        assert_eq!(entries[2].target, b"jq");
        assert_eq!(
            Index::decode(&bytes, &totals(99)).err(),
            Some(FormatError::Malformed)
        );
        for cut in 0..bytes.len() {
            assert!(
                Index::decode(&bytes[..cut], &totals(100)).is_err(),
                "truncated at {cut} accepted"
            );
        }
    }

    #[test]
    fn index_refuses_patches_outside_their_file() {
        let patch = Patch {
            offset: 90,
            capacity: 64,
            template: b"",
        };
        let bytes = index_bytes(&[(Entry::new(KIND_FILE, 0o644, 100, b"f", b""), &[patch])]);
        assert_eq!(
            Index::decode(&bytes, &totals(100)).err(),
            Some(FormatError::Malformed)
        );
    }

    #[test]
    fn index_refuses_paths_that_leave_the_root() {
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../x",
            b"a//b",
            b"",
            b"a/./b",
            b"a\0b",
        ] {
            let bytes = index_bytes(&[(Entry::new(KIND_DIR, 0o755, 0, bad, b""), &[])]);
            assert_eq!(
                Index::decode(&bytes, &totals(0)).err(),
                Some(FormatError::UnsafePath),
                "{bad:?}"
            );
        }
    }
}
