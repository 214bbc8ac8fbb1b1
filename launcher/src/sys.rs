//! Typed wrappers over the raw Linux system calls the launcher makes. Each wrapper is one call
//! and turns the kernel's raw result into a `Result` in `check`; callers pass C strings as
//! `CStr` so every path handed to the kernel is NUL-terminated by construction.

use crate::arch::{self, syscall};
use core::ffi::CStr;

/// A failed system call's errno value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub const EINTR: Errno = Errno(4);
pub const EACCES: Errno = Errno(13);
pub const EEXIST: Errno = Errno(17);
pub const ENOTDIR: Errno = Errno(20);
pub const EISDIR: Errno = Errno(21);
pub const EINVAL: Errno = Errno(22);
pub const ENOTEMPTY: Errno = Errno(39);
pub const ELOOP: Errno = Errno(40);

pub type Result<T> = core::result::Result<T, Errno>;

pub const AT_FDCWD: i32 = -100;
pub const O_RDONLY: usize = 0;
pub const O_RDWR: usize = 2;
pub const O_CREAT: usize = 0o100;
pub const O_EXCL: usize = 0o200;
pub const O_DIRECTORY: usize = 0o200000;
pub const O_NOFOLLOW: usize = 0o400000;
pub const O_CLOEXEC: usize = 0o2000000;
pub const AT_REMOVEDIR: usize = 0x200;
pub const LOCK_EX: usize = 2;
pub const LOCK_NB: usize = 4;

fn check(ret: isize) -> Result<usize> {
    if (-4095..0).contains(&ret) {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

fn path(p: &CStr) -> usize {
    p.as_ptr() as usize
}

pub fn openat(dir: i32, p: &CStr, flags: usize, mode: u32) -> Result<i32> {
    // SAFETY: `p` is NUL-terminated and outlives the call.
    let r = unsafe {
        syscall(
            arch::SYS_OPENAT,
            [dir as usize, path(p), flags, mode as usize, 0, 0],
        )
    };
    check(r).map(|fd| fd as i32)
}

pub fn close(fd: i32) {
    // SAFETY: no pointer is passed; closing a descriptor we own.
    unsafe { syscall(arch::SYS_CLOSE, [fd as usize, 0, 0, 0, 0, 0]) };
}

pub fn pread(fd: i32, buf: &mut [u8], offset: u64) -> Result<usize> {
    let a = [
        fd as usize,
        buf.as_mut_ptr() as usize,
        buf.len(),
        offset as usize,
        0,
        0,
    ];
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    check(unsafe { syscall(arch::SYS_PREAD64, a) })
}

pub fn write(fd: i32, buf: &[u8]) -> Result<usize> {
    // SAFETY: the kernel reads at most buf.len() bytes from buf.
    check(unsafe {
        syscall(
            arch::SYS_WRITE,
            [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

pub fn pwrite(fd: i32, buf: &[u8], offset: u64) -> Result<usize> {
    let a = [
        fd as usize,
        buf.as_ptr() as usize,
        buf.len(),
        offset as usize,
        0,
        0,
    ];
    // SAFETY: the kernel reads at most buf.len() bytes from buf.
    check(unsafe { syscall(arch::SYS_PWRITE64, a) })
}

/// Writes all of `buf`, retrying short writes and interruptions.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn mkdirat(dir: i32, p: &CStr, mode: u32) -> Result<()> {
    // SAFETY: `p` is NUL-terminated and outlives the call.
    check(unsafe {
        syscall(
            arch::SYS_MKDIRAT,
            [dir as usize, path(p), mode as usize, 0, 0, 0],
        )
    })
    .map(drop)
}

pub fn unlinkat(dir: i32, p: &CStr, flags: usize) -> Result<()> {
    // SAFETY: `p` is NUL-terminated and outlives the call.
    check(unsafe { syscall(arch::SYS_UNLINKAT, [dir as usize, path(p), flags, 0, 0, 0]) }).map(drop)
}

pub fn renameat(old_dir: i32, old: &CStr, new_dir: i32, new: &CStr) -> Result<()> {
    let a = [
        old_dir as usize,
        path(old),
        new_dir as usize,
        path(new),
        0,
        0,
    ];
    // SAFETY: both paths are NUL-terminated and outlive the call.
    check(unsafe { syscall(arch::SYS_RENAMEAT, a) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: i32, p: &CStr) -> Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    check(unsafe {
        syscall(
            arch::SYS_SYMLINKAT,
            [path(target), dir as usize, path(p), 0, 0, 0],
        )
    })
    .map(drop)
}

/// Sets the modification time of the file open at `fd` to `secs` seconds since the epoch; its
/// access time is left as it is.
pub fn set_mtime(fd: i32, secs: u64) -> Result<()> {
    /// The nanoseconds value that leaves a time unchanged.
    const UTIME_OMIT: usize = (1 << 30) - 2;
    let times = [0, UTIME_OMIT, secs as usize, 0];
    // SAFETY: a null path makes the call act on `fd`; `times` is two timespecs that outlive it.
    check(unsafe {
        syscall(
            arch::SYS_UTIMENSAT,
            [fd as usize, 0, times.as_ptr() as usize, 0, 0, 0],
        )
    })
    .map(drop)
}

/// Whether `p` exists, without following a final symlink's target check beyond access(2).
pub fn exists(p: &CStr) -> bool {
    const F_OK: usize = 0;
    // SAFETY: `p` is NUL-terminated and outlives the call.
    check(unsafe {
        syscall(
            arch::SYS_FACCESSAT,
            [AT_FDCWD as usize, path(p), F_OK, 0, 0, 0],
        )
    })
    .is_ok()
}

/// What the launcher reads of a file's status.
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub size: u64,
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_ISVTX: u32 = 0o1000;

/// statx of `p` relative to `dir` with `flags`, reading type, mode, owner and size.
fn statx(dir: i32, p: &CStr, flags: usize) -> Result<Stat> {
    const STATX_TYPE_MODE_UID_SIZE: usize = 0x1 | 0x2 | 0x8 | 0x200;
    // struct statx is 256 bytes: stx_uid is the u32 at byte 20, stx_mode the u16 at byte 28,
    // stx_size the u64 at byte 40.
    let mut b = [0u8; 256];
    let a = [
        dir as usize,
        path(p),
        flags,
        STATX_TYPE_MODE_UID_SIZE,
        b.as_mut_ptr() as usize,
        0,
    ];
    // SAFETY: `p` is NUL-terminated; `b` is the size of struct statx; both outlive the call.
    check(unsafe { syscall(arch::SYS_STATX, a) })?;
    Ok(Stat {
        uid: u32::from_le_bytes([b[20], b[21], b[22], b[23]]),
        mode: u16::from_le_bytes([b[28], b[29]]) as u32,
        size: u64::from_le_bytes([b[40], b[41], b[42], b[43], b[44], b[45], b[46], b[47]]),
    })
}

const AT_EMPTY_PATH: usize = 0x1000;

/// The status of the file open at `fd`.
pub fn fstat(fd: i32) -> Result<Stat> {
    statx(fd, c"", AT_EMPTY_PATH)
}

/// What the launcher reads of a file system's status.
pub struct FsStat {
    pub read_only: bool,
    pub noexec: bool,
    /// Bytes an unprivileged user may still write.
    pub available: u64,
}

/// The status of the file system holding the file open at `fd`.
pub fn fstatfs(fd: i32) -> Result<FsStat> {
    const ST_RDONLY: u64 = 1;
    const ST_NOEXEC: u64 = 8;
    // struct statfs is 120 bytes of 8-byte fields: f_bsize at byte 8, f_bavail at 32,
    // f_flags at 80.
    let mut b = [0u64; 15];
    let a = [fd as usize, b.as_mut_ptr() as usize, 0, 0, 0, 0];
    // SAFETY: `b` is the size of struct statfs and outlives the call.
    check(unsafe { syscall(arch::SYS_FSTATFS, a) })?;
    Ok(FsStat {
        read_only: b[10] & ST_RDONLY != 0,
        noexec: b[10] & ST_NOEXEC != 0,
        available: b[4].saturating_mul(b[1]),
    })
}

/// Creates an anonymous memory file named `name` (the name is only shown in /proc).
pub fn memfd_create(name: &CStr, flags: usize) -> Result<i32> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check(unsafe { syscall(arch::SYS_MEMFD_CREATE, [path(name), flags, 0, 0, 0, 0]) })
        .map(|fd| fd as i32)
}

/// The status of `p`, following symlinks.
pub fn stat(p: &CStr) -> Result<Stat> {
    statx(AT_FDCWD, p, 0)
}

/// The status of `p` itself (a symlink is not followed).
pub fn stat_nofollow(p: &CStr) -> Result<Stat> {
    const AT_SYMLINK_NOFOLLOW: usize = 0x100;
    statx(AT_FDCWD, p, AT_SYMLINK_NOFOLLOW)
}

/// The current working dir, written into `buf`; returns its length without the NUL.
pub fn getcwd(buf: &mut [u8]) -> Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = check(unsafe {
        syscall(
            arch::SYS_GETCWD,
            [buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0, 0],
        )
    })?;
    Ok(n.saturating_sub(1))
}

pub fn getdents64(fd: i32, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    check(unsafe {
        syscall(
            arch::SYS_GETDENTS64,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

/// A duplicate of `fd` numbered `lowest` or above, closed on exec when `cloexec`.
pub fn dup_at_least(fd: i32, lowest: i32, cloexec: bool) -> Result<i32> {
    const F_DUPFD: usize = 0;
    const F_DUPFD_CLOEXEC: usize = 1030;
    let cmd = if cloexec { F_DUPFD_CLOEXEC } else { F_DUPFD };
    // SAFETY: no pointer is passed.
    check(unsafe {
        syscall(
            arch::SYS_FCNTL,
            [fd as usize, cmd, lowest as usize, 0, 0, 0],
        )
    })
    .map(|fd| fd as i32)
}

pub fn flock(fd: i32, op: usize) -> Result<()> {
    // SAFETY: no pointer is passed.
    check(unsafe { syscall(arch::SYS_FLOCK, [fd as usize, op, 0, 0, 0, 0]) }).map(drop)
}

/// Maps `len` bytes: of the file at `fd` from offset 0 read-only, or anonymous read-write
/// memory when `fd` is None.
pub fn mmap(len: usize, fd: Option<i32>) -> Result<*mut u8> {
    const PROT_READ: usize = 1;
    const PROT_WRITE: usize = 2;
    const MAP_PRIVATE: usize = 2;
    const MAP_ANONYMOUS: usize = 0x20;
    let (prot, flags, fd) = match fd {
        Some(fd) => (PROT_READ, MAP_PRIVATE, fd as usize),
        None => (
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            usize::MAX,
        ),
    };
    // SAFETY: a fresh mapping chosen by the kernel (address 0) touches no existing memory.
    check(unsafe { syscall(arch::SYS_MMAP, [0, len, prot, flags, fd, 0]) }).map(|a| a as *mut u8)
}

/// Maps `len` bytes of the file at `fd` from `offset` (a multiple of the page size) read-only.
pub fn mmap_file(fd: i32, offset: u64, len: usize) -> Result<*const u8> {
    const PROT_READ: usize = 1;
    const MAP_PRIVATE: usize = 2;
    let a = [0, len, PROT_READ, MAP_PRIVATE, fd as usize, offset as usize];
    // SAFETY: a fresh mapping chosen by the kernel (address 0) touches no existing memory.
    check(unsafe { syscall(arch::SYS_MMAP, a) }).map(|a| a as *const u8)
}

/// # Safety
/// `addr` and `len` must describe a mapping from `mmap` that nothing references any more.
pub unsafe fn munmap(addr: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { syscall(arch::SYS_MUNMAP, [addr as usize, len, 0, 0, 0, 0]) };
}

pub fn getpid() -> u32 {
    // SAFETY: no arguments.
    unsafe { syscall(arch::SYS_GETPID, [0; 6]) as u32 }
}

pub fn geteuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { syscall(arch::SYS_GETEUID, [0; 6]) as u32 }
}

pub fn fork() -> Result<u32> {
    check(arch::fork()).map(|pid| pid as u32)
}

/// Replaces this process with the program at `p`; returns only on failure.
///
/// # Safety
/// `argv` and `envp` must be NULL-terminated arrays of pointers to NUL-terminated strings.
pub unsafe fn execve(p: &CStr, argv: *const *const u8, envp: *const *const u8) -> Errno {
    // SAFETY: guaranteed by the caller.
    let r = unsafe {
        syscall(
            arch::SYS_EXECVE,
            [path(p), argv as usize, envp as usize, 0, 0, 0],
        )
    };
    Errno(-r as i32)
}

/// Replaces this process with the program open at `fd`; returns only on failure.
///
/// # Safety
/// As for `execve`.
pub unsafe fn execveat(fd: i32, argv: *const *const u8, envp: *const *const u8) -> Errno {
    let a = [
        fd as usize,
        path(c""),
        argv as usize,
        envp as usize,
        AT_EMPTY_PATH,
        0,
    ];
    // SAFETY: guaranteed by the caller; the empty path is a static C string.
    let r = unsafe { syscall(arch::SYS_EXECVEAT, a) };
    Errno(-r as i32)
}

/// Waits for child `pid` to end and returns its raw wait status.
pub fn wait(pid: u32) -> Result<i32> {
    let mut status = 0i32;
    let a = [pid as usize, &mut status as *mut i32 as usize, 0, 0, 0, 0];
    loop {
        // SAFETY: `status` is a valid i32 for the kernel to write.
        match check(unsafe { syscall(arch::SYS_WAIT4, a) }) {
            Ok(_) => return Ok(status),
            Err(EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn getppid() -> u32 {
    // SAFETY: no arguments.
    unsafe { syscall(arch::SYS_GETPPID, [0; 6]) as u32 }
}

/// Asks the kernel to send `sig` to this process when its parent ends.
pub fn die_with_parent(sig: i32) {
    const PR_SET_PDEATHSIG: usize = 1;
    // SAFETY: no pointer is passed.
    unsafe {
        syscall(
            arch::SYS_PRCTL,
            [PR_SET_PDEATHSIG, sig as usize, 0, 0, 0, 0],
        )
    };
}

/// Reaps one exited child without blocking; returns its pid and raw wait status, or pid 0
/// when no child has exited.
pub fn reap_any() -> Result<(u32, i32)> {
    const WNOHANG: usize = 1;
    let mut status = 0i32;
    let a = [
        usize::MAX,
        &mut status as *mut i32 as usize,
        WNOHANG,
        0,
        0,
        0,
    ];
    // SAFETY: `status` is a valid i32 for the kernel to write; pid -1 means any child.
    let pid = check(unsafe { syscall(arch::SYS_WAIT4, a) })?;
    Ok((pid as u32, status))
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: no pointer is passed.
    unsafe { syscall(arch::SYS_KILL, [pid as usize, sig as usize, 0, 0, 0, 0]) };
}

/// A signal set as the kernel's rt_sig* calls take it: one bit per signal, 64 signals.
pub type SigSet = u64;

/// Sets the blocked signal mask to `set` and returns the previous one.
pub fn set_sigmask(set: SigSet) -> SigSet {
    const SIG_SETMASK: usize = 2;
    let mut old: SigSet = 0;
    let a = [
        SIG_SETMASK,
        &set as *const SigSet as usize,
        &mut old as *mut SigSet as usize,
        8,
        0,
        0,
    ];
    // SAFETY: both sets are 8 bytes, the size passed, and outlive the call.
    unsafe { syscall(arch::SYS_RT_SIGPROCMASK, a) };
    old
}

/// Waits for one of the signals in `set` (which must be blocked) and returns its number.
pub fn sigwait(set: SigSet) -> Result<i32> {
    let a = [&set as *const SigSet as usize, 0, 0, 8, 0, 0];
    // SAFETY: `set` is 8 bytes and outlives the call; no siginfo or timeout is passed.
    check(unsafe { syscall(arch::SYS_RT_SIGTIMEDWAIT, a) }).map(|s| s as i32)
}

pub fn exit(code: i32) -> ! {
    // SAFETY: no pointer is passed, and exit_group cannot fail or return: it ends every
    // thread of the process.
    unsafe {
        syscall(arch::SYS_EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]);
        core::hint::unreachable_unchecked()
    }
}
