//! PID 1 of a container: the kernel drops signals whose action is the default for PID 1 and
//! reparents every orphan to it. So there the launcher stays as a minimal init: the program
//! runs as its child, each signal the launcher receives is forwarded to it, every exited child
//! is reaped, and the launcher exits with the program's status, or 128+n when signal n
//! killed it.

use crate::out::{Fail, Failure};
use crate::program::Executable;
use crate::sys::{self, SigSet};

const SIGCHLD: i32 = 17;

/// Runs `exe` as a child and supervises it; never returns.
///
/// # Safety
/// `argv` and `envp` must be NULL-terminated arrays of pointers to NUL-terminated strings.
pub unsafe fn supervise(
    exe: &Executable,
    argv: *const *const u8,
    envp: *const *const u8,
) -> Result<(), Fail> {
    // Signals stay blocked (so they queue instead of being dropped) and are taken one by one
    // with sigwait; the child gets the original mask back before exec.
    let all: SigSet = !0;
    let original = sys::set_sigmask(all);
    let child = match sys::fork() {
        Ok(0) => {
            sys::set_sigmask(original);
            // SAFETY: forwarded from our caller.
            let e = unsafe { exe.exec(argv, envp) };
            Fail::new(Failure::Exec, "cannot execute", exe.name(), Some(e)).report()
        }
        Ok(pid) => pid,
        Err(e) => {
            return Err(Fail::new(
                Failure::Init,
                "cannot start program",
                exe.name(),
                Some(e),
            ))
        }
    };
    loop {
        match sys::sigwait(all) {
            Ok(SIGCHLD) => reap(child),
            Ok(sig) => sys::kill(child, sig),
            Err(_) => {}
        }
    }
}

/// Reaps every exited child; exits when the program itself is among them.
fn reap(program: u32) {
    while let Ok((pid @ 1.., status)) = sys::reap_any() {
        if pid == program {
            let signal = status & 0x7f;
            let code = if signal == 0 {
                (status >> 8) & 0xff
            } else {
                128 + signal
            };
            sys::exit(code);
        }
    }
}
