//! The program's side of a start: the launcher's own file, which program of the run table to
//! start, its environment (the user's, plus any run-table variable the user has not set, never
//! a loader variable), and the start itself.

use crate::args::Args;
use crate::init;
use crate::out::{self, Fail, Failure};
use crate::path::{Path, PATH_MAX};
use crate::payload::{Patch, Program, RunTable, Var, ROOT_TOKEN};
use crate::sys::{self, Errno, O_CLOEXEC, O_RDONLY};
use core::ffi::CStr;

/// The launcher's own file, open for reading.
pub struct OwnFile {
    pub fd: i32,
    pub len: u64,
    /// How to name the file in messages: the path it was executed by.
    pub name: &'static [u8],
}

/// Opens our own file through `/proc/self/exe`, or, where `/proc` is not mounted, through the
/// path the kernel recorded at exec (AT_EXECFN).
pub fn open_own_file(args: &Args) -> Result<OwnFile, Fail> {
    let name = args.execfn().map(|p| p.to_bytes()).unwrap_or(args.arg0());
    let fd = match sys::openat(sys::AT_FDCWD, c"/proc/self/exe", O_RDONLY | O_CLOEXEC, 0) {
        Ok(fd) => fd,
        Err(_) => {
            let execfn = args.execfn().unwrap_or(c"");
            out::debug(&[
                b"/proc/self/exe unavailable, using AT_EXECFN: ",
                execfn.to_bytes(),
            ]);
            sys::openat(sys::AT_FDCWD, execfn, O_RDONLY | O_CLOEXEC, 0).map_err(|e| {
                Fail::new(
                    Failure::OwnFile,
                    "cannot open own file",
                    execfn.to_bytes(),
                    Some(e),
                )
            })?
        }
    };
    let len = sys::fstat(fd)
        .map(|st| st.size)
        .map_err(|e| Fail::new(Failure::OwnFile, "cannot read own file", name, Some(e)))?;
    Ok(OwnFile { fd, len, name })
}

/// Starts `program` of the extracted bundle at `bundle` with our argv.
pub fn start(
    args: &Args,
    run: &RunTable,
    program: &Program,
    bundle: &Path,
) -> Result<core::convert::Infallible, Fail> {
    let rel = program.path;
    let exe = bundle
        .joined(rel)
        .map_err(|e| Fail::new(Failure::Exec, "program path too long", rel, Some(e)))?;
    let env = Environment::new(args, run, Some(bundle))?;
    launch(args, &Executable::Path(exe.cstr()), args.argv, env.envp)
}

/// What to execute: a file by its path, or an in-memory file by its open descriptor.
pub enum Executable<'a> {
    Path(&'a CStr),
    Memory(i32),
}

impl Executable<'_> {
    /// # Safety
    /// `argv` and `envp` must be NULL-terminated arrays of pointers to NUL-terminated strings.
    pub unsafe fn exec(&self, argv: *const *const u8, envp: *const *const u8) -> Errno {
        match self {
            // SAFETY: forwarded from the caller.
            Executable::Path(p) => unsafe { sys::execve(p, argv, envp) },
            // SAFETY: forwarded from the caller.
            Executable::Memory(fd) => unsafe { sys::execveat(*fd, argv, envp) },
        }
    }

    /// How messages name it.
    pub fn name(&self) -> &[u8] {
        match self {
            Executable::Path(p) => p.to_bytes(),
            Executable::Memory(_) => b"(in memory)",
        }
    }
}

/// Executes `exe` in place; as PID 1 (unless `TOTE_INIT=0`) as the child of a minimal init.
pub fn launch(
    args: &Args,
    exe: &Executable,
    argv: *const *const u8,
    envp: *const *const u8,
) -> Result<core::convert::Infallible, Fail> {
    out::debug(&[b"exec ", exe.name()]);
    if sys::getpid() == 1 && args.env(b"TOTE_INIT") != Some(b"0") {
        // SAFETY: argv comes from the kernel or is built like envp, which comes from the
        // kernel or `Environment`: NULL-terminated arrays of C strings that outlive the call.
        unsafe { init::supervise(exe, argv, envp) }?;
    }
    // SAFETY: as above.
    let e = unsafe { exe.exec(argv, envp) };
    Err(Fail::new(
        Failure::Exec,
        "cannot execute",
        exe.name(),
        Some(e),
    ))
}

/// Picks the program to start: the only one, or the one named like the file we were
/// invoked as (a link named `git` starts git).
pub fn choose<'a>(args: &Args, run: &RunTable<'a>) -> Result<Program<'a>, Fail> {
    let arg0 = args.arg0();
    let invoked = arg0.rsplit(|b| *b == b'/').next().unwrap_or(arg0);
    let mut programs = run.programs();
    if let (Some(only), None) = (programs.next(), programs.next()) {
        return Ok(only);
    }
    if let Some(p) = run.programs().find(|p| p.name == invoked) {
        return Ok(p);
    }
    let mut names = out::Line::new();
    names.push(invoked);
    names.push(b" (run this file through a link named after one of its programs:");
    for p in run.programs() {
        names.push(b" ");
        names.push(p.name);
    }
    names.push(b")");
    Err(Fail::new(
        Failure::Exec,
        "no program of this name in the bundle",
        names.bytes(),
        None,
    ))
}

/// The environment the program gets: the caller's own array when nothing is added, else a
/// new array in anonymous memory that lives until exec.
pub struct Environment {
    pub envp: *const *const u8,
}

impl Environment {
    /// The caller's environment plus each run-table variable the user has not set, with
    /// `ROOT_TOKEN` as `bundle`. Without a bundle dir (in memory) the variables naming one are
    /// left out.
    pub fn new(args: &Args, run: &RunTable, bundle: Option<&Path>) -> Result<Environment, Fail> {
        const SLOT: usize = PATH_MAX * 2;
        let vars = run.vars().count();
        if vars == 0 {
            return Ok(Environment { envp: args.envp });
        }
        let fail = |e| Fail::new(Failure::Exec, "cannot build environment", b"", Some(e));
        let kept = args.env_entries().count();
        let table_len = (kept + vars + 1) * 8;
        let text_len = vars * SLOT;
        let base = sys::mmap(table_len + text_len, None).map_err(fail)?;
        // SAFETY: the mapping is fresh, writable, `table_len + text_len` bytes, and never
        // unmapped: exec replaces the whole address space (when nothing is added too).
        let (table, text) = unsafe {
            (
                core::slice::from_raw_parts_mut(base as *mut *const u8, kept + vars + 1),
                core::slice::from_raw_parts_mut(base.add(table_len), text_len),
            )
        };
        // Each variable decided once: written into the next slot when it is added.
        let root = bundle.map_or(&b""[..], |b| b.bytes());
        let mut added = 0;
        for v in run.vars() {
            if set_by_user(args, &v) || (bundle.is_none() && tokens(v.value) > 0) {
                continue;
            }
            let slot = &mut text[added * SLOT..(added + 1) * SLOT];
            let len = var_text(v.name, v.value, root, slot).map_err(fail)?;
            out::debug(&[b"set ", &slot[..len]]);
            added += 1;
        }
        if added == 0 {
            return Ok(Environment { envp: args.envp });
        }
        let slots = || text[..added * SLOT].chunks(SLOT);
        let replaced = |e: &[u8]| slots().any(|slot| e.starts_with(name_of(slot)));
        let mut n = 0;
        for e in args.env_entries().filter(|e| !replaced(e)) {
            table[n] = e.as_ptr();
            n += 1;
        }
        for slot in slots() {
            table[n] = slot.as_ptr();
            n += 1;
        }
        table[n] = core::ptr::null();
        Ok(Environment {
            envp: table.as_ptr(),
        })
    }
}

/// `NAME=` of a slot's `NAME=value`: a caller's entry starting with it is replaced.
fn name_of(slot: &[u8]) -> &[u8] {
    let eq = slot.iter().position(|b| *b == b'=').unwrap_or(0);
    &slot[..=eq]
}

/// Whether the user set `v`, which is then left as it is. A value another bundle's launcher
/// set is not the user's: a packed python started by another packed program needs its own
/// PYTHONHOME, not the one of the bundle it was started from. Such a value is the template
/// with the root of a complete bundle for each `ROOT_TOKEN`.
fn set_by_user(args: &Args, v: &Var) -> bool {
    let Some(value) = args.env(v.name) else {
        return false;
    };
    let n = tokens(v.value);
    let fixed = v.value.len() - n * ROOT_TOKEN.len();
    if n == 0 || value.len() <= fixed || !(value.len() - fixed).is_multiple_of(n) {
        return true;
    }
    let at = v
        .value
        .windows(ROOT_TOKEN.len())
        .position(|w| w == ROOT_TOKEN);
    let root_len = (value.len() - fixed) / n;
    let root = at.and_then(|at| value.get(at..at + root_len));
    let by_bundle = root.is_some_and(|root| {
        expands_to(v.value, root, value)
            && Path::from(root).is_ok_and(|p| crate::cache::is_complete(&p))
    });
    if by_bundle {
        out::debug(&[b"replaces ", v.name, b" set for another bundle"]);
    }
    !by_bundle
}

/// How many times `ROOT_TOKEN` is in `template`: a variable with one names a bundle path.
pub fn tokens(template: &[u8]) -> usize {
    template
        .windows(ROOT_TOKEN.len())
        .filter(|w| *w == ROOT_TOKEN)
        .count()
}

/// Whether `template` with each `ROOT_TOKEN` as `root` is `value`.
fn expands_to(template: &[u8], root: &[u8], value: &[u8]) -> bool {
    let (mut t, mut v) = (template, value);
    while let Some(&first) = t.first() {
        let (t_rest, v_rest) = match t.strip_prefix(ROOT_TOKEN) {
            Some(t_rest) => (t_rest, v.strip_prefix(root)),
            None => (&t[1..], v.strip_prefix(&[first][..])),
        };
        let Some(v_rest) = v_rest else {
            return false;
        };
        (t, v) = (t_rest, v_rest);
    }
    v.is_empty()
}

/// Writes `NAME=value` with `ROOT_TOKEN` expanded, NUL-terminated, into `slot`.
fn var_text(name: &[u8], value: &[u8], root: &[u8], slot: &mut [u8]) -> sys::Result<usize> {
    let cap = slot.len();
    if name.len() + 1 >= cap {
        return Err(sys::Errno(7));
    }
    slot[..name.len()].copy_from_slice(name);
    slot[name.len()] = b'=';
    let head = name.len() + 1;
    let p = Patch {
        offset: 0,
        capacity: (cap - head) as u32,
        template: value,
    };
    crate::extract::expand(&p, root, &mut slot[head..])?;
    Ok(head + slot[head..].iter().position(|b| *b == 0).unwrap_or(0))
}
