//! The cache: which root dir the bundle is extracted under, and whether this payload's bundle
//! is already there. A bundle dir is named by the payload's key, so a new build never meets an
//! old build's files; it counts only once its completion marker exists.
//!
//! The roots considered, in order: `$TOTE_CACHE_DIR` alone when set (the user chose it, so it
//! is used or the start fails); else `$XDG_CACHE_HOME/tote`, `$HOME/.cache/tote`, then
//! `tote-<euid>` in `$TMPDIR`, `/tmp`, `/var/tmp` and `/dev/shm`. Under AT_SECURE no variable
//! is read, so only the last three remain. A root is usable when it exists or can be created,
//! is a real dir of the effective user that no one else may write, under dirs that no one but
//! root or that user may change (sticky dirs such as `/tmp` aside), on a file system that is
//! writable, allows exec and has room for the bundle.

use crate::args::Args;
use crate::out::{self, Fail, Failure};
use crate::path::Path;
use crate::payload::{self, Trailer, BUNDLE_NAME_LEN, MARKER};
use crate::sys::{self, Errno, AT_FDCWD, EEXIST, O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, O_RDONLY};

/// Where this start runs the bundle from.
// The paths are held by value (no allocator to box them); one Placement is made per start.
#[allow(clippy::large_enum_variant)]
pub enum Placement {
    /// The bundle is complete in this dir: run it as it is.
    Cached(Path),
    /// Extract into a new bundle dir under this root, then run it.
    Extract(Root),
    /// No root is usable: run from memory.
    Memory,
}

/// A usable cache root, open, and the bundle dir to make in it.
pub struct Root {
    /// The root, opened without following a symlink; extraction works relative to it.
    pub fd: i32,
    pub path: Path,
    /// The bundle dir's name in the root.
    pub name: [u8; BUNDLE_NAME_LEN],
    /// `path/name`: the absolute path the bundle's files are run from.
    pub bundle: Path,
    /// Where `locate` goes on when extraction into this root fails for want of room; None for
    /// `$TOTE_CACHE_DIR`, which has no next.
    pub next: Option<usize>,
}

/// How a candidate root comes into being when it is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `$TOTE_CACHE_DIR`: created with its missing parents; when unusable the start fails.
    Chosen,
    /// Under the user's cache or home dir, which must exist: the dirs below it are created
    /// (a missing HOME, such as Debian's `/nonexistent`, is not made).
    Home,
    /// `tote-<euid>` in a temporary dir: only that dir is created, and `/tmp` itself when it
    /// is missing (as in a `FROM scratch` container run as root).
    Temporary,
}

struct Candidate {
    path: Path,
    origin: Origin,
    /// The length of the part of `path` that is never created: the dir of a `Home` root.
    given: usize,
}

/// A candidate before its path is made: `base` joined with `rel`. The list of them is small,
/// where a list of paths would be six times PATH_MAX on the warm path's stack.
#[derive(Clone, Copy)]
struct Spec {
    /// A variable's value or a fixed dir.
    base: &'static [u8],
    rel: Rel,
    origin: Origin,
}

#[derive(Clone, Copy)]
enum Rel {
    /// `base` is the root itself (`$TOTE_CACHE_DIR`, made absolute).
    Itself,
    Fixed(&'static [u8]),
    /// `tote-<euid>`.
    PerUser,
}

const CANDIDATES: usize = 6;

fn candidates(args: &Args) -> [Option<Spec>; CANDIDATES] {
    let mut list = [None; CANDIDATES];
    let spec = |base, rel, origin| Some(Spec { base, rel, origin });
    if let Some(dir) = args.env(b"TOTE_CACHE_DIR").filter(|d| !d.is_empty()) {
        list[0] = spec(dir, Rel::Itself, Origin::Chosen);
        return list;
    }
    let var = |name: &[u8]| args.env(name).filter(|v| v.starts_with(b"/"));
    let found = [
        (var(b"XDG_CACHE_HOME"), Rel::Fixed(b"tote"), Origin::Home),
        (var(b"HOME"), Rel::Fixed(b".cache/tote"), Origin::Home),
        (var(b"TMPDIR"), Rel::PerUser, Origin::Temporary),
        (Some(&b"/tmp"[..]), Rel::PerUser, Origin::Temporary),
        (Some(&b"/var/tmp"[..]), Rel::PerUser, Origin::Temporary),
        (Some(&b"/dev/shm"[..]), Rel::PerUser, Origin::Temporary),
    ];
    for (slot, (base, rel, origin)) in list.iter_mut().zip(found) {
        *slot = base.and_then(|base| spec(base, rel, origin));
    }
    list
}

impl Spec {
    /// The candidate with its path made; None when the path is too long (the root is skipped),
    /// and an error when that root is `$TOTE_CACHE_DIR`.
    fn candidate(&self) -> Result<Option<Candidate>, Fail> {
        let origin = self.origin;
        let mut per_user = out::Line::new();
        let rel = match self.rel {
            Rel::Itself => {
                let path = absolute(self.base)
                    .map_err(|e| fail("cannot use TOTE_CACHE_DIR", self.base, e))?;
                return Ok(Some(Candidate {
                    path,
                    origin,
                    given: 0,
                }));
            }
            Rel::Fixed(rel) => rel,
            Rel::PerUser => {
                per_user.push(b"tote-");
                per_user.push_decimal(sys::geteuid() as u64);
                per_user.bytes()
            }
        };
        let Ok(mut path) = Path::from(self.base) else {
            return Ok(None);
        };
        if path.join(rel).is_err() {
            return Ok(None);
        }
        let given = self.base.len();
        Ok(Some(Candidate {
            path,
            origin,
            given,
        }))
    }
}

/// `dir` made absolute against the current dir: the paths written into extracted files must
/// hold from any working dir.
fn absolute(dir: &[u8]) -> sys::Result<Path> {
    if dir.starts_with(b"/") {
        return Path::from(dir);
    }
    let mut cwd = [0u8; crate::path::PATH_MAX];
    let len = sys::getcwd(&mut cwd)?;
    let mut p = Path::from(&cwd[..len])?;
    p.join(dir)?;
    Ok(p)
}

/// Finds where to run the payload of trailer `t` from. A complete bundle under any trusted
/// candidate is used as it is and nothing is created: that is the warm path. Otherwise the
/// first usable candidate from the `from`th on is where extraction goes; when there is none,
/// memory.
pub fn locate(args: &Args, t: &Trailer, from: usize) -> Result<Placement, Fail> {
    let name = payload::bundle_name(&t.key);
    let list = candidates(args);
    if let Some(dir) = find_cached(&list, &name)? {
        return Ok(Placement::Cached(dir));
    }
    choose_root(&list, &name, t.raw_len, from)
}

/// The warm path: the bundle dir under the first trusted candidate that holds it complete.
// Out of line, so that its frame is all the warm path's stack holds.
#[inline(never)]
fn find_cached(list: &[Option<Spec>], name: &[u8]) -> Result<Option<Path>, Fail> {
    for spec in list.iter().flatten() {
        let Some(c) = spec.candidate()? else { continue };
        let dir = c
            .path
            .joined(name)
            .map_err(|e| fail("cannot use cache dir", name, e))?;
        if is_complete(&dir) && owned_alone(&c.path) {
            out::debug(&[b"cached: ", dir.bytes()]);
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

/// The first usable candidate from the `from`th on, opened, with the bundle dir to make in
/// it; memory when there is none.
#[inline(never)]
fn choose_root(
    list: &[Option<Spec>],
    name: &[u8; BUNDLE_NAME_LEN],
    raw_len: u64,
    from: usize,
) -> Result<Placement, Fail> {
    for (i, spec) in list.iter().flatten().enumerate().skip(from) {
        let Some(c) = spec.candidate()? else { continue };
        match open_usable(&c, raw_len) {
            Ok(fd) => {
                out::debug(&[b"cache root: ", c.path.bytes()]);
                let bundle = c.path.joined(name).map_err(|e| {
                    sys::close(fd);
                    fail("cannot use cache dir", c.path.bytes(), e)
                })?;
                return Ok(Placement::Extract(Root {
                    fd,
                    path: c.path,
                    name: *name,
                    bundle,
                    next: (c.origin != Origin::Chosen).then_some(i + 1),
                }));
            }
            Err(refusal) if c.origin == Origin::Chosen => return Err(refusal.fail(&c.path)),
            Err(refusal) => refusal.trace(&c.path),
        }
    }
    out::debug(&[b"no usable cache root: running from memory"]);
    Ok(Placement::Memory)
}

/// Why a candidate root cannot be used.
enum Refusal {
    Create(Errno),
    Open(Errno),
    TooLong,
    UnsafeParent,
    NotTrusted,
    ReadOnly,
    NoExec,
    Full,
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Create(_) => "cannot be created",
            Refusal::Open(_) => "cannot be opened",
            Refusal::TooLong => "path too long for the bundle's paths (at most 1024 bytes)",
            Refusal::UnsafeParent => "a dir above it may be changed by another user",
            Refusal::NotTrusted => "not a dir of this user, or writable by others",
            Refusal::ReadOnly => "on a read-only file system",
            Refusal::NoExec => "on a file system mounted noexec",
            Refusal::Full => "not enough free space for the bundle",
        }
    }

    fn errno(&self) -> Option<Errno> {
        match self {
            Refusal::Create(e) | Refusal::Open(e) => Some(*e),
            _ => None,
        }
    }

    fn trace(&self, root: &Path) {
        let mut errno = out::Line::new();
        if let Some(e) = self.errno() {
            errno.push(b" (");
            out::push_errno(&mut errno, e);
            errno.push(b")");
        }
        out::debug(&[
            b"skipping cache root ",
            root.bytes(),
            b": ",
            self.reason().as_bytes(),
            errno.bytes(),
        ]);
    }

    /// The failure when the user's own choice, `$TOTE_CACHE_DIR`, cannot be used.
    fn fail(&self, root: &Path) -> Fail {
        let what = match self {
            Refusal::Create(_) => "cannot create TOTE_CACHE_DIR",
            Refusal::Open(_) => "cannot open TOTE_CACHE_DIR",
            Refusal::TooLong => "TOTE_CACHE_DIR is too long (at most 1024 bytes)",
            Refusal::UnsafeParent => {
                "refusing TOTE_CACHE_DIR (a dir above it may be changed by another user)"
            }
            Refusal::NotTrusted => {
                "refusing TOTE_CACHE_DIR (not a dir of this user, or writable by others)"
            }
            Refusal::ReadOnly => "TOTE_CACHE_DIR is on a read-only file system",
            Refusal::NoExec => "TOTE_CACHE_DIR is on a file system mounted noexec",
            Refusal::Full => "not enough free space in TOTE_CACHE_DIR for the bundle",
        };
        Fail::new(Failure::CacheDir, what, root.bytes(), self.errno())
    }
}

/// Creates the candidate if it is missing, opens it without following a symlink and checks it:
/// owner and mode on the open dir, then its file system. Returns the open dir.
fn open_usable(c: &Candidate, raw_len: u64) -> Result<i32, Refusal> {
    if c.path.bytes().len() > ROOT_MAX {
        return Err(Refusal::TooLong);
    }
    if !parents_safe(&c.path) {
        return Err(Refusal::UnsafeParent);
    }
    create(c).map_err(Refusal::Create)?;
    let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    let fd = sys::openat(AT_FDCWD, c.path.cstr(), flags, 0).map_err(|e| match e {
        sys::ELOOP | sys::ENOTDIR => Refusal::NotTrusted,
        e => Refusal::Open(e),
    })?;
    let checked = check_open_root(fd, raw_len);
    if checked.is_err() {
        sys::close(fd);
    }
    checked.map(|()| fd)
}

fn check_open_root(fd: i32, raw_len: u64) -> Result<(), Refusal> {
    let st = sys::fstat(fd).map_err(Refusal::Open)?;
    if !trusted(&st) {
        return Err(Refusal::NotTrusted);
    }
    let fs = sys::fstatfs(fd).map_err(Refusal::Open)?;
    if fs.read_only {
        Err(Refusal::ReadOnly)
    } else if fs.noexec {
        Err(Refusal::NoExec)
    } else if fs.available < room_for(raw_len) {
        Err(Refusal::Full)
    } else {
        Ok(())
    }
}

/// The free space a bundle of `raw_len` bytes of files asks for: its files, plus an eighth for
/// the blocks that dirs and partly filled blocks take.
fn room_for(raw_len: u64) -> u64 {
    raw_len.saturating_add(raw_len / 8)
}

/// Whether a root's status makes it safe: a real dir, owned by the effective user, not
/// writable by group or others. Anything else could hold files planted by someone else.
fn trusted(st: &sys::Stat) -> bool {
    st.mode & sys::S_IFMT == sys::S_IFDIR && st.uid == sys::geteuid() && st.mode & 0o022 == 0
}

/// The longest cache root accepted: the bundle's own paths (loader, libraries, search paths)
/// come after it and must stay within PATH_MAX.
const ROOT_MAX: usize = 1024;

/// Whether no one but root and the effective user can change what the existing dirs above
/// `root` lead to: each is owned by one of them and writable by no one else unless sticky (as
/// `/tmp` is, where others cannot rename what is ours), and a symlink on the way is owned by
/// one of them too. Otherwise another user could swap the tree between the checks and exec.
fn parents_safe(root: &Path) -> bool {
    let euid = sys::geteuid();
    let owned = |st: &sys::Stat| st.uid == 0 || st.uid == euid;
    let bytes = root.bytes();
    for end in (0..bytes.len()).filter(|&i| bytes[i] == b'/') {
        let Ok(prefix) = Path::from(if end == 0 { b"/" } else { &bytes[..end] }) else {
            return false;
        };
        let Ok(st) = sys::stat_nofollow(prefix.cstr()) else {
            // Missing: it and what is below will be made by this user.
            return true;
        };
        let st = if st.mode & sys::S_IFMT == sys::S_IFLNK {
            if !owned(&st) {
                return false;
            }
            match sys::stat(prefix.cstr()) {
                Ok(target) => target,
                Err(_) => return false,
            }
        } else {
            st
        };
        let shared = st.mode & 0o022 != 0 && st.mode & sys::S_ISVTX == 0;
        if !owned(&st) || shared {
            return false;
        }
    }
    true
}

/// The warm path's check of a root holding a complete bundle: `trusted`, by path, not
/// following a final symlink (one statx instead of open, fstat and close), and
/// `parents_safe`.
fn owned_alone(root: &Path) -> bool {
    let ok = sys::stat_nofollow(root.cstr()).is_ok_and(|st| trusted(&st)) && parents_safe(root);
    if !ok {
        out::debug(&[b"refused cache root: ", root.bytes()]);
    }
    ok
}

fn fail(what: &'static str, path: &[u8], e: Errno) -> Fail {
    Fail::new(Failure::CacheDir, what, path, Some(e))
}

/// Creates a missing candidate as its origin allows.
fn create(c: &Candidate) -> sys::Result<()> {
    let p = c.path.bytes();
    match c.origin {
        Origin::Chosen => return make_dirs(&c.path, 0),
        Origin::Home => return make_dirs(&c.path, c.given),
        Origin::Temporary => {}
    }
    if p.starts_with(b"/tmp/") {
        make_dir(&Path::from(b"/tmp")?, 0o1777)?;
    }
    make_dir(&c.path, 0o700)
}

fn make_dir(p: &Path, mode: u32) -> sys::Result<()> {
    match sys::mkdirat(AT_FDCWD, p.cstr(), mode) {
        Ok(()) | Err(EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates every missing dir of `p` longer than its first `given` bytes: `/tmp`
/// world-writable and sticky, any other 0700.
fn make_dirs(p: &Path, given: usize) -> sys::Result<()> {
    let bytes = p.bytes();
    let ends = (given + 1..=bytes.len()).filter(|&i| i == bytes.len() || bytes[i] == b'/');
    for end in ends {
        let mut prefix = p.clone();
        prefix.truncate(end);
        let mode = if prefix.bytes() == b"/tmp" {
            0o1777
        } else {
            0o700
        };
        make_dir(&prefix, mode)?;
    }
    Ok(())
}

/// Whether the bundle is extracted and complete: its marker exists.
pub fn is_complete(bundle: &Path) -> bool {
    bundle
        .joined(MARKER.as_bytes())
        .is_ok_and(|m| sys::exists(m.cstr()))
}
