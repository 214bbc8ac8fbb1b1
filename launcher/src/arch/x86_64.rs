//! x86-64 Linux: the process entry point, the raw system call instruction and the system call
//! numbers. Everything CPU-specific in the launcher lives in this file; another architecture is
//! another file beside it.

use core::arch::{asm, global_asm};

// The kernel starts us with the stack pointer on argc, argv, envp and the auxiliary vector.
// `_start` hands that address to `crate::start` with the stack aligned as the ABI requires.
global_asm!(
    ".globl _start",
    ".type _start,@function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym crate::start,
);

pub const SYS_WRITE: usize = 1;
pub const SYS_CLOSE: usize = 3;
pub const SYS_MMAP: usize = 9;
pub const SYS_MUNMAP: usize = 11;
pub const SYS_RT_SIGPROCMASK: usize = 14;
pub const SYS_PREAD64: usize = 17;
pub const SYS_PWRITE64: usize = 18;
pub const SYS_GETPID: usize = 39;
pub const SYS_GETPPID: usize = 110;
pub const SYS_PRCTL: usize = 157;
pub const SYS_GETCWD: usize = 79;
pub const SYS_CLONE: usize = 56;
pub const SYS_EXECVE: usize = 59;
pub const SYS_WAIT4: usize = 61;
pub const SYS_KILL: usize = 62;
pub const SYS_FCNTL: usize = 72;
pub const SYS_FLOCK: usize = 73;
pub const SYS_GETEUID: usize = 107;
pub const SYS_RT_SIGTIMEDWAIT: usize = 128;
pub const SYS_FSTATFS: usize = 138;
pub const SYS_GETDENTS64: usize = 217;
pub const SYS_EXIT_GROUP: usize = 231;
pub const SYS_OPENAT: usize = 257;
pub const SYS_MKDIRAT: usize = 258;
pub const SYS_UNLINKAT: usize = 263;
pub const SYS_RENAMEAT: usize = 264;
pub const SYS_SYMLINKAT: usize = 266;
pub const SYS_FACCESSAT: usize = 269;
pub const SYS_UTIMENSAT: usize = 280;
pub const SYS_MEMFD_CREATE: usize = 319;
pub const SYS_EXECVEAT: usize = 322;
pub const SYS_STATX: usize = 332;

/// Makes system call `nr` with up to six arguments and returns the kernel's raw result: a
/// value, or a negated errno in -4095..=-1.
///
/// # Safety
/// The arguments must be valid for that system call: pointers point to memory of the size and
/// mutability the call expects, for as long as it runs.
#[inline(always)]
pub unsafe fn syscall(nr: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller guarantees the arguments; the instruction clobbers only rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Starts a child process sharing nothing, as fork(2) does: 0 in the child, its pid in the
/// parent, or a negated errno.
pub fn fork() -> isize {
    const SIGCHLD: usize = 17;
    // SAFETY: clone without CLONE_VM and with a null stack gives the child a copy of our
    // address space and stack, exactly like fork; no pointer is passed.
    unsafe { syscall(SYS_CLONE, [SIGCHLD, 0, 0, 0, 0, 0]) }
}

/// Copies `n` bytes from `src` to `dest`, first byte first.
///
/// # Safety
/// Both ranges are valid for `n` bytes; `dest` does not start inside `(src, src + n)`.
#[inline(always)]
pub unsafe fn copy_forward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: guaranteed by the caller; rep movsb copies exactly n bytes upwards.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
}

/// Copies `n` bytes from `src` to `dest`, last byte first.
///
/// # Safety
/// Both ranges are valid for `n` bytes and `n` > 0.
#[inline(always)]
pub unsafe fn copy_backward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: guaranteed by the caller; the direction flag is set for the copy and cleared
    // again, as the ABI requires.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _,
             inout("rsi") src.add(n - 1) => _, options(nostack));
    }
}

/// Stores `byte` into the `n` bytes at `dest`.
///
/// # Safety
/// The range is valid for `n` bytes.
#[inline(always)]
pub unsafe fn fill(dest: *mut u8, byte: u8, n: usize) {
    // SAFETY: guaranteed by the caller; rep stosb stores exactly n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") byte,
             options(nostack, preserves_flags));
    }
}
