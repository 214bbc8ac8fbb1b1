//! What the launcher says: failure messages (`tote: <what>: <path>: <errno name>`) with one exit
//! code per kind of failure, and `TOTE_DEBUG=1` trace lines tagged `tote[<pid>]:`. There is no
//! formatting machinery: a line is assembled from byte slices in a fixed buffer and written
//! with one `write`.

use crate::sys::{self, Errno};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// The failure made last: its exit code, its errno and its text, `<what>: <path>`. Carried
/// inside every `Fail`, a path made each `Result<_, Fail>` a kilobyte, copied through every `?`
/// on its way out, and even without it a `Fail` of three fields is returned through memory:
/// kept here, a `Result<(), Fail>` is one flag. The launcher has one thread, and the failure it
/// reports is always the last one made: the one failure it recovers from (a full cache root,
/// given up for the next) is dropped before the next failure can be made.
static LAST: LastFail = LastFail::new();
const LINE_LEN: usize = 1024;

/// A failure kept in a static. Atomics because that is the one static memory code without
/// `unsafe` may write; with one thread, relaxed order is all there is.
struct LastFail {
    code: AtomicU8,
    /// 0 when the failure has no errno.
    errno: AtomicI32,
    text: [AtomicU8; LINE_LEN],
    len: AtomicUsize,
}

impl LastFail {
    const fn new() -> LastFail {
        LastFail {
            code: AtomicU8::new(0),
            errno: AtomicI32::new(0),
            text: [const { AtomicU8::new(0) }; LINE_LEN],
            len: AtomicUsize::new(0),
        }
    }

    /// Keeps the text made of `parts`, cut to `LINE_LEN` bytes.
    fn set_text(&self, parts: &[&[u8]]) {
        let mut len = 0;
        for (slot, b) in self.text.iter().zip(parts.iter().flat_map(|p| p.iter())) {
            slot.store(*b, Ordering::Relaxed);
            len += 1;
        }
        self.len.store(len, Ordering::Relaxed);
    }

    fn errno(&self) -> Option<Errno> {
        match self.errno.load(Ordering::Relaxed) {
            0 => None,
            e => Some(Errno(e)),
        }
    }

    fn push_text_to(&self, l: &mut Line) {
        let len = self.len.load(Ordering::Relaxed);
        for slot in self.text.iter().take(len) {
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

/// A failure on its way to being reported; what it is was kept in `LAST` when it was made.
pub struct Fail(());

impl Fail {
    #[inline(never)]
    pub fn new(kind: Failure, what: &'static str, path: &[u8], errno: Option<Errno>) -> Fail {
        LAST.code.store(kind as u8, Ordering::Relaxed);
        LAST.errno
            .store(errno.map_or(0, |e| e.0), Ordering::Relaxed);
        LAST.set_text(&[what.as_bytes(), b": ", path]);
        Fail(())
    }

    /// Whether the failure is a file system out of space or inodes, or a quota reached.
    pub fn is_out_of_room(&self) -> bool {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        matches!(LAST.errno(), Some(Errno(ENOSPC | EDQUOT)))
    }

    /// Prints the message and exits with the failure's code.
    pub fn report(&self) -> ! {
        let mut l = Line::new();
        l.push(b"tote: ");
        LAST.push_text_to(&mut l);
        if let Some(e) = LAST.errno() {
            l.push(b": ");
            push_errno(&mut l, e);
        }
        l.end();
        let _ = sys::write_all(2, l.bytes());
        sys::exit(LAST.code.load(Ordering::Relaxed) as i32)
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
    // The names of the errno values in `NUMBERS`, in the same order.
    const NUMBERS: [u8; 26] = [
        1, 2, 5, 7, 8, 9, 11, 12, 13, 14, 16, 17, 20, 21, 22, 23, 24, 26, 27, 28, 30, 36, 38, 39,
        40, 122,
    ];
    const NAMES: &str = "EPERM ENOENT EIO E2BIG ENOEXEC EBADF EAGAIN ENOMEM EACCES EFAULT EBUSY \
        EEXIST ENOTDIR EISDIR EINVAL ENFILE EMFILE ETXTBSY EFBIG ENOSPC EROFS ENAMETOOLONG ENOSYS \
        ENOTEMPTY ELOOP EDQUOT";
    let name = NUMBERS
        .iter()
        .position(|n| *n as i32 == e.0)
        .and_then(|i| NAMES.as_bytes().split(|b| *b == b' ').nth(i));
    match name {
        Some(name) => l.push(name),
        None => {
            l.push(b"errno ");
            l.push_decimal(e.0 as u64);
        }
    }
}
