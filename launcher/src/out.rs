//! What the launcher says: failure messages (`tote: <what>: <path>: <errno name>`) with one exit
//! code per kind of failure, and `TOTE_DEBUG=1` trace lines tagged `tote[<pid>]:`. There is no
//! formatting machinery: a line is assembled from byte slices in a fixed buffer and written
//! with one `write`.

use crate::sys::{self, Errno};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// The path of the failure made last. Carried inside every `Fail`, a path made each
/// `Result<_, Fail>` a kilobyte, copied through every `?` on its way out: 1.7 KB of the stub's
/// code. The launcher has one thread, and the failure it reports is always the last one made:
/// the one failure it recovers from (a full cache root, given up for the next) is dropped
/// before the next failure can be made.
static FAIL_PATH: LastPath = LastPath::new();
const LINE_LEN: usize = 1024;

/// A path kept in a static. Bytes of atomics because that is the one static buffer code
/// without `unsafe` may write; with one thread, relaxed order is all there is.
struct LastPath {
    bytes: [AtomicU8; LINE_LEN],
    len: AtomicUsize,
}

impl LastPath {
    const fn new() -> LastPath {
        LastPath {
            bytes: [const { AtomicU8::new(0) }; LINE_LEN],
            len: AtomicUsize::new(0),
        }
    }

    /// Keeps `path`, cut to `LINE_LEN` bytes.
    fn set(&self, path: &[u8]) {
        for (slot, b) in self.bytes.iter().zip(path) {
            slot.store(*b, Ordering::Relaxed);
        }
        self.len.store(path.len().min(LINE_LEN), Ordering::Relaxed);
    }

    fn push_to(&self, l: &mut Line) {
        let len = self.len.load(Ordering::Relaxed);
        for slot in self.bytes.iter().take(len) {
            l.push(&[slot.load(Ordering::Relaxed)]);
        }
    }
}

/// A kind of failure, with its exit code (listed in the README).
#[derive(Clone, Copy)]
pub enum Failure {
    /// The launcher cannot open or read its own file.
    OwnFile = 112,
    /// The payload is missing, damaged or of another format version.
    Payload = 113,
    /// The chosen cache root cannot be used, or no temporary dir can be made in a root.
    CacheDir = 114,
    /// Writing the extracted bundle failed.
    Extract = 115,
    /// The program cannot be started.
    Exec = 116,
    /// As PID 1: the program's process cannot be created.
    Init = 117,
    /// The program cannot be run from memory (no cache dir was usable).
    Memory = 119,
}

/// A failure on its way to being reported: what failed, and the errno if any; its path is
/// in `FAIL_PATH`.
pub struct Fail {
    pub kind: Failure,
    pub what: &'static str,
    pub errno: Option<Errno>,
}

impl Fail {
    #[inline(never)]
    pub fn new(kind: Failure, what: &'static str, path: &[u8], errno: Option<Errno>) -> Fail {
        FAIL_PATH.set(path);
        Fail { kind, what, errno }
    }

    /// Whether the failure is a file system out of space or inodes, or a quota reached.
    pub fn is_out_of_room(&self) -> bool {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        matches!(self.errno, Some(Errno(ENOSPC | EDQUOT)))
    }

    /// Prints the message and exits with the failure's code.
    pub fn report(&self) -> ! {
        let mut l = Line::new();
        l.push(b"tote: ");
        l.push(self.what.as_bytes());
        l.push(b": ");
        FAIL_PATH.push_to(&mut l);
        if let Some(e) = self.errno {
            l.push(b": ");
            push_errno(&mut l, e);
        }
        l.end();
        let _ = sys::write_all(2, l.bytes());
        sys::exit(self.kind as i32)
    }
}

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_on() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Writes one trace line made of `parts` when `TOTE_DEBUG=1`.
pub fn debug(parts: &[&[u8]]) {
    if !debug_on() {
        return;
    }
    let mut l = Line::new();
    l.push(b"tote[");
    l.push_decimal(sys::getpid() as u64);
    l.push(b"]: ");
    for p in parts {
        l.push(p);
    }
    l.end();
    let _ = sys::write_all(2, l.bytes());
}

/// A fixed-capacity line; what does not fit is cut.
pub struct Line {
    buf: [u8; LINE_LEN],
    len: usize,
}

impl Line {
    pub const fn new() -> Line {
        Line {
            buf: [0; LINE_LEN],
            len: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    pub fn push_decimal(&mut self, v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    /// Ends the line with a newline, in place of its last byte when it is full.
    pub fn end(&mut self) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.push(b"\n");
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Appends the errno's name, or its number when the name is not known here.
pub fn push_errno(l: &mut Line, e: Errno) {
    const NAMES: &[(i32, &str)] = &[
        (1, "EPERM"),
        (2, "ENOENT"),
        (5, "EIO"),
        (7, "E2BIG"),
        (8, "ENOEXEC"),
        (9, "EBADF"),
        (11, "EAGAIN"),
        (12, "ENOMEM"),
        (13, "EACCES"),
        (14, "EFAULT"),
        (16, "EBUSY"),
        (17, "EEXIST"),
        (20, "ENOTDIR"),
        (21, "EISDIR"),
        (22, "EINVAL"),
        (23, "ENFILE"),
        (24, "EMFILE"),
        (26, "ETXTBSY"),
        (27, "EFBIG"),
        (28, "ENOSPC"),
        (30, "EROFS"),
        (36, "ENAMETOOLONG"),
        (38, "ENOSYS"),
        (39, "ENOTEMPTY"),
        (40, "ELOOP"),
        (122, "EDQUOT"),
    ];
    match NAMES.iter().find(|(n, _)| *n == e.0) {
        Some((_, name)) => l.push(name.as_bytes()),
        None => {
            l.push(b"errno ");
            l.push_decimal(e.0 as u64);
        }
    }
}
