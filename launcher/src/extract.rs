//! Cold start: turns the payload into a bundle dir under a cache root. Everything happens
//! relative to the root's open dir and never follows a symlink. One extraction at a time holds
//! the root's lock: it checks whether another start published the bundle while it waited,
//! removes what killed extractions left, writes the entries into a temporary dir beside the
//! final one (each compressed stream decoded by a process of its own), the patches, the
//! completion marker last, and publishes the dir with one rename. A process killed on the way
//! leaves a temporary dir, which no start runs and the next extraction removes.

use crate::cache::{self, Root};
use crate::data::{self, Decoder, Payload, EBADMSG};
use crate::out::{self, Fail, Failure, Line};
use crate::path::{cstr_in, Path, PATH_MAX};
use crate::payload::{
    self, Entry, Index, Patch, Placed, Trailer, KIND_DIR, KIND_SYMLINK, MARKER, MAX_STREAMS,
};
use crate::program::OwnFile;
use crate::sys::{
    self, Errno, O_CLOEXEC, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_RDONLY, O_RDWR,
};
use core::ffi::CStr;

/// The deepest dir tree the launcher writes or removes.
const MAX_DEPTH: usize = 64;
const ENAMETOOLONG: Errno = Errno(36);

/// Extracts the payload of the file open at `own` into `root`'s bundle dir. `random` names
/// the temporary dir. Returns once the bundle is complete, whether this process or a
/// concurrent one published it.
// Kept out of line: its frame is large, and the warm path must not pay for it.
#[inline(never)]
pub fn extract(own: &OwnFile, t: &Trailer, root: &Root, random: [u8; 16]) -> Result<(), Fail> {
    let payload = Payload::open(own, t)?;
    let index = payload.index(own)?;
    lock(root)?;
    if cache::is_complete(&root.bundle) {
        out::debug(&[b"another process published ", root.bundle.bytes()]);
        return Ok(());
    }
    remove_abandoned(root);
    let tmp = Temporary::create(root, random)?;
    out::debug(&[b"decompressing into ", root.path.bytes(), b"/", tmp.name()]);
    let result = write_bundle(&tmp, root, &index, &payload)
        .map_err(|f| f.unwrap_or_else(|| data::damaged("damaged payload (compressed data)", own)))
        .and_then(|()| publish(&tmp, root));
    if !matches!(result, Ok(Publish::Moved)) {
        remove_tree(root.fd, tmp.cstr(), 0);
    }
    result.map(drop)
}

/// Takes the root's extraction lock, waiting while another start holds it. It is released
/// when the root's descriptor is closed, or the process ends.
fn lock(root: &Root) -> Result<(), Fail> {
    if sys::flock(root.fd, sys::LOCK_EX | sys::LOCK_NB).is_ok() {
        return Ok(());
    }
    out::debug(&[
        b"waiting for another start extracting in ",
        root.path.bytes(),
    ]);
    sys::flock(root.fd, sys::LOCK_EX).map_err(|e| {
        Fail::new(
            Failure::CacheDir,
            "cannot lock cache dir",
            root.path.bytes(),
            Some(e),
        )
    })
}

/// A temporary dir in the root, named `<bundle>.<random hex>.tmp`, open.
struct Temporary {
    name: Line,
    fd: i32,
    /// Its absolute path, for messages.
    path: Path,
}

impl Temporary {
    /// Makes a new temporary dir; the second name is tried when the first is taken.
    fn create(root: &Root, random: [u8; 16]) -> Result<Temporary, Fail> {
        let mut last = sys::EEXIST;
        for half in random.chunks(8) {
            let mut name = Line::new();
            name.push(&root.name);
            name.push(b".");
            push_hex(&mut name, half);
            name.push(b".tmp\0");
            let made = CStr::from_bytes_until_nul(name.bytes())
                .map_err(|_| ENAMETOOLONG)
                .and_then(|c| {
                    sys::mkdirat(root.fd, c, 0o755)?;
                    sys::openat(root.fd, c, DIR_FLAGS, 0)
                });
            match made {
                Ok(fd) => {
                    let bare = &name.bytes()[..name.bytes().len() - 1];
                    let path = root.path.joined(bare).unwrap_or_else(|_| root.path.clone());
                    return Ok(Temporary { name, fd, path });
                }
                Err(e) => last = e,
            }
        }
        Err(Fail::new(
            Failure::CacheDir,
            "cannot write in cache dir",
            root.path.bytes(),
            Some(last),
        ))
    }

    fn cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(self.name.bytes()).unwrap_or(c"")
    }

    fn name(&self) -> &[u8] {
        self.cstr().to_bytes()
    }

    fn fail(&self, e: Errno) -> Fail {
        Fail::new(
            Failure::Extract,
            "cannot extract",
            self.path.bytes(),
            Some(e),
        )
    }

    /// The failure to write entry `rel` of the bundle.
    fn entry_fail(&self, rel: &[u8], e: Errno) -> Fail {
        let path = self.path.joined(rel).unwrap_or_else(|_| self.path.clone());
        Fail::new(Failure::Extract, "cannot extract", path.bytes(), Some(e))
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        sys::close(self.fd);
    }
}

const DIR_FLAGS: usize = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

fn push_hex(l: &mut Line, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        l.push(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
    }
}

/// What became of a finished temporary dir.
#[derive(PartialEq, Eq)]
enum Publish {
    /// Renamed into place: it is the bundle now.
    Moved,
    /// Another process published the same bundle first: this copy is not needed.
    Lost,
}

/// Writes every entry into the temporary dir: the dirs, then the files of all streams at
/// once, then the symlinks, then the marker. A failure is a write failure, or None when the
/// compressed data is damaged.
fn write_bundle(
    tmp: &Temporary,
    root: &Root,
    index: &Index,
    payload: &Payload,
) -> Result<(), Option<Fail>> {
    let entry_fail = |e: &Entry, err| match err {
        EBADMSG => None,
        err => Some(tmp.entry_fail(e.path, err)),
    };
    let mut dirs = Dirs::new(tmp.fd);
    for e in index.entries().filter(|e| e.kind == KIND_DIR) {
        make_entry(&mut dirs, &e).map_err(|err| entry_fail(&e, err))?;
    }
    write_streams(tmp, root, index, payload).map_err(|err| match err {
        EBADMSG => None,
        err => Some(tmp.fail(err)),
    })?;
    for e in index.entries().filter(|e| e.kind == KIND_SYMLINK) {
        make_entry(&mut dirs, &e).map_err(|err| entry_fail(&e, err))?;
    }
    let mut name = [0u8; 32];
    let marker = cstr_in(MARKER.as_bytes(), &mut name).map_err(|e| Some(tmp.fail(e)))?;
    let flags = O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC;
    let fd = sys::openat(tmp.fd, marker, flags, 0o644).map_err(|e| Some(tmp.fail(e)))?;
    sys::close(fd);
    Ok(())
}

/// Decodes every stream into its files: the first in this process, each other one in a child
/// of its own, all at the same time. Returns the first failure.
fn write_streams(
    tmp: &Temporary,
    root: &Root,
    index: &Index,
    payload: &Payload,
) -> sys::Result<()> {
    let mut children = [0u32; MAX_STREAMS as usize];
    let mut started = 0;
    let mut result = Ok(());
    for s in index.streams().skip(1) {
        match sys::fork() {
            Ok(0) => sys::exit(child_stream(tmp, root, index, payload, &s)),
            Ok(pid) => {
                children[started] = pid;
                started += 1;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        if let Some(first) = index.streams().next() {
            result = write_stream(tmp.fd, index, payload, &first, &root.bundle);
        }
    }
    for pid in &children[..started] {
        if result.is_err() {
            sys::kill(*pid, SIGKILL);
        }
        let status = sys::wait(*pid).unwrap_or(-1);
        if result.is_ok() && status != 0 {
            result = Err(child_failure(status));
        }
    }
    result
}

const SIGKILL: i32 = 9;

/// The work of a child decoding stream `s`; returns its exit code: 0, or the errno of the
/// failure. The child dies with its parent, and drops its copy of the root's descriptor so
/// that the root's lock ends with the parent.
fn child_stream(tmp: &Temporary, root: &Root, index: &Index, payload: &Payload, s: &Placed) -> i32 {
    let parent = sys::getppid();
    sys::die_with_parent(SIGKILL);
    if sys::getppid() != parent {
        return sys::EINTR.0;
    }
    sys::close(root.fd);
    match write_stream(tmp.fd, index, payload, s, &root.bundle) {
        Ok(()) => 0,
        Err(e) => e.0,
    }
}

/// The failure a child's wait status stands for: its exit code is an errno; a child killed
/// by a signal is an I/O failure.
fn child_failure(status: i32) -> Errno {
    const EIO: Errno = Errno(5);
    match (status & 0x7f, (status >> 8) & 0xff) {
        (0, code) if code > 0 => Errno(code),
        _ => EIO,
    }
}

/// Writes the files of stream `s` into the dir open at `top`.
fn write_stream(
    top: i32,
    index: &Index,
    payload: &Payload,
    s: &Placed,
    bundle: &Path,
) -> sys::Result<()> {
    let mut dirs = Dirs::new(top);
    let mut decoder = payload.decoder(s)?;
    for e in index.files_of(s) {
        write_file(&mut dirs, &e, &mut decoder, bundle)?;
    }
    decoder.finish()
}

fn write_file(dirs: &mut Dirs, e: &Entry, decoder: &mut Decoder, bundle: &Path) -> sys::Result<()> {
    let (dir, leaf) = split(e.path);
    let at = dirs.enter(dir)?;
    let mut name = [0u8; PATH_MAX];
    let leaf = cstr_in(leaf, &mut name)?;
    // setuid, setgid and sticky bits are not carried into the cache.
    let flags = O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC;
    let fd = sys::openat(at, leaf, flags, e.mode & 0o777)?;
    let r = decoder
        .copy_to(Some(fd), e.size)
        .and_then(|()| apply_patches(fd, e, bundle.bytes()))
        .and_then(|()| sys::set_mtime(fd, e.mtime));
    sys::close(fd);
    r
}

/// Makes a dir or a symlink entry.
fn make_entry(dirs: &mut Dirs, e: &Entry) -> sys::Result<()> {
    let (dir, leaf) = split(e.path);
    let at = dirs.enter(dir)?;
    let mut name = [0u8; PATH_MAX];
    let leaf = cstr_in(leaf, &mut name)?;
    if e.kind == KIND_DIR {
        return match sys::mkdirat(at, leaf, (e.mode & 0o777) | 0o700) {
            Ok(()) | Err(sys::EEXIST) => Ok(()),
            Err(err) => Err(err),
        };
    }
    let mut target = [0u8; PATH_MAX];
    sys::symlinkat(cstr_in(e.target, &mut target)?, at, leaf)
}

/// `path` split into its dir (maybe empty) and its last component.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// The chain of dirs open below the temporary dir, one per component of the dir last
/// entered. Each is opened relative to its parent with O_NOFOLLOW, so no symlink in an
/// entry's path is ever followed; index order (each dir before its contents) keeps the chain
/// mostly open from one entry to the next.
struct Dirs {
    top: i32,
    fds: [i32; MAX_DEPTH],
    /// Where each open level's component ends in `open`.
    ends: [usize; MAX_DEPTH],
    depth: usize,
    open: Path,
}

impl Dirs {
    fn new(top: i32) -> Dirs {
        Dirs {
            top,
            fds: [-1; MAX_DEPTH],
            ends: [0; MAX_DEPTH],
            depth: 0,
            open: Path::new(),
        }
    }

    fn current(&self) -> i32 {
        match self.depth {
            0 => self.top,
            d => self.fds[d - 1],
        }
    }

    /// Opens `dir` (relative, normal components only) and returns its descriptor.
    fn enter(&mut self, dir: &[u8]) -> sys::Result<i32> {
        while self.depth > 0 {
            let end = self.ends[self.depth - 1];
            let kept = &self.open.bytes()[..end];
            if dir.starts_with(kept) && dir.get(end).is_none_or(|b| *b == b'/') {
                break;
            }
            self.depth -= 1;
            sys::close(self.fds[self.depth]);
        }
        let mut at = match self.depth {
            0 => 0,
            d => self.ends[d - 1] + 1,
        };
        self.open = Path::from(dir)?;
        while at < dir.len() {
            let end = dir[at..]
                .iter()
                .position(|b| *b == b'/')
                .map_or(dir.len(), |i| at + i);
            if self.depth == MAX_DEPTH {
                return Err(ENAMETOOLONG);
            }
            let mut name = [0u8; PATH_MAX];
            let fd = sys::openat(
                self.current(),
                cstr_in(&dir[at..end], &mut name)?,
                DIR_FLAGS,
                0,
            )?;
            self.fds[self.depth] = fd;
            self.ends[self.depth] = end;
            self.depth += 1;
            at = end + 1;
        }
        Ok(self.current())
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        for fd in &self.fds[..self.depth] {
            sys::close(*fd);
        }
    }
}

/// Writes each patch's template, with the bundle's final path for `ROOT_TOKEN`, NUL-padded to
/// the patch's capacity.
pub fn apply_patches(fd: i32, e: &Entry, root: &[u8]) -> sys::Result<()> {
    for p in e.patches() {
        let mut buf = [0u8; PATH_MAX * 2];
        let len = expand(&p, root, &mut buf)?;
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
            return Err(ENAMETOOLONG);
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
fn publish(tmp: &Temporary, root: &Root) -> Result<Publish, Fail> {
    let mut name = [0u8; 64];
    let bundle = cstr_in(&root.name, &mut name).map_err(|e| tmp.fail(e))?;
    let rename = || sys::renameat(root.fd, tmp.cstr(), root.fd, bundle);
    let fail = |e| {
        Fail::new(
            Failure::Extract,
            "cannot extract",
            root.bundle.bytes(),
            Some(e),
        )
    };
    match rename() {
        Ok(()) => Ok(Publish::Moved),
        Err(sys::EEXIST) | Err(sys::ENOTEMPTY) if cache::is_complete(&root.bundle) => {
            out::debug(&[b"another process published ", root.bundle.bytes()]);
            Ok(Publish::Lost)
        }
        Err(sys::EEXIST) | Err(sys::ENOTEMPTY) => {
            out::debug(&[
                b"replacing a stale bundle dir without its marker: ",
                root.bundle.bytes(),
            ]);
            remove_stale(root, bundle, tmp);
            rename().map(|()| Publish::Moved).map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

/// Moves an incomplete bundle dir out of the way (so no start sees it half-removed), under
/// the temporary dir's name with `.stale` added, then removes it.
fn remove_stale(root: &Root, bundle: &CStr, tmp: &Temporary) {
    let mut aside = Line::new();
    aside.push(tmp.name());
    aside.push(b".stale\0");
    let Ok(aside) = CStr::from_bytes_until_nul(aside.bytes()) else {
        return;
    };
    if sys::renameat(root.fd, bundle, root.fd, aside).is_ok() {
        remove_tree(root.fd, aside, 0);
    }
}

/// Removes the temporary dirs of this bundle that extractions killed on the way left. Called
/// with the root's lock held, so no other extraction is writing any of them.
fn remove_abandoned(root: &Root) {
    let Ok(listing) = sys::openat(root.fd, c".", DIR_FLAGS, 0) else {
        return;
    };
    for_each_entry(listing, &mut |name| {
        let n = name.to_bytes();
        let ours = n.starts_with(&root.name) && n.get(root.name.len()) == Some(&b'.');
        if ours && (n.ends_with(b".tmp") || n.ends_with(b".stale")) {
            out::debug(&[b"removing abandoned ", n]);
            remove_tree(root.fd, name, 0);
        }
    });
    sys::close(listing);
}

/// Removes the tree `name` in the dir open at `parent`, never following a symlink; failures
/// are ignored, as the tree is never run.
fn remove_tree(parent: i32, name: &CStr, depth: usize) {
    let Ok(dir) = sys::openat(parent, name, DIR_FLAGS, 0) else {
        let _ = sys::unlinkat(parent, name, 0);
        return;
    };
    if depth < MAX_DEPTH {
        for_each_entry(dir, &mut |child| {
            if sys::unlinkat(dir, child, 0) == Err(sys::EISDIR) {
                remove_tree(dir, child, depth + 1);
            }
        });
    }
    sys::close(dir);
    let _ = sys::unlinkat(parent, name, sys::AT_REMOVEDIR);
}

/// Calls `f` with the name of each entry of the dir open at `dir`, except `.` and `..`. (A
/// `dyn` callback: the loop is compiled once, not once per caller.)
fn for_each_entry(dir: i32, f: &mut dyn FnMut(&CStr)) {
    // A struct linux_dirent64: d_reclen is the u16 at byte 16, d_name starts at byte 19.
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = sys::getdents64(dir, &mut buf) {
        let mut at = 0;
        while at + 19 < n {
            let reclen = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let end = (at + reclen).min(n);
            if let Ok(name) = CStr::from_bytes_until_nul(&buf[at + 19..end]) {
                if name.to_bytes() != b"." && name.to_bytes() != b".." {
                    f(name);
                }
            }
            at += reclen.max(1);
        }
    }
}
