//! In-memory mode, for hosts where no cache root can be written and executed from (or when
//! `TOTE_MODE=memory` asks for it). The program, its loader and its libraries are decompressed
//! into anonymous memory files; the loader is executed from its memory file in explicit mode:
//!
//! ```text
//! ld.so --argv0 ARGV0 --preload "/proc/self/fd/L1:/proc/self/fd/L2:..." /proc/self/fd/P ARGS...
//! ```
//!
//! The libraries are preloaded breadth-first, so every DT_NEEDED name is met by a loaded
//! library's soname and no search is made. What this mode cannot do (the README says so):
//! dlopen by name, other files of the bundle, `/proc/self/exe` pointing at the program, and it
//! needs `/proc` and memory files that may be executed (`vm.memfd_noexec` below 2).

use crate::args::Args;
use crate::data::{self, Payload, EBADMSG};
use crate::extract::apply_patches;
use crate::out::{self, Fail, Failure, Line};
use crate::path::{cstr_in, PATH_MAX};
use crate::payload::{Program, RunTable, Trailer};
use crate::program::{self, Environment, Executable, OwnFile};
use crate::sys::{self, Errno, O_CLOEXEC, O_DIRECTORY, O_RDONLY};

/// The most libraries one program may preload in this mode.
const MAX_LIBRARIES: usize = 1024;
/// What the bundle's own dir becomes in patched paths: under a file that is not a dir, so
/// nothing is ever found there.
const NOWHERE: &[u8] = b"/dev/null";
/// `/proc/self/fd/` and a descriptor number, with the separator or NUL after it.
const FD_PATH_MAX: usize = 28;

/// Runs `program` of the payload from memory.
// Kept out of line: its frame is large, and the warm path must not pay for it.
#[inline(never)]
pub fn run(
    args: &Args,
    own: &OwnFile,
    t: &Trailer,
    run: &RunTable,
    program: &Program,
) -> Result<core::convert::Infallible, Fail> {
    if program.libraries.len() > MAX_LIBRARIES {
        return Err(fail(
            "too many libraries to run from memory",
            program.path,
            None,
        ));
    }
    let proc_fd = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    match sys::openat(sys::AT_FDCWD, c"/proc/self/fd", proc_fd, 0) {
        Ok(fd) => sys::close(fd),
        Err(e) => {
            return Err(fail(
                "running from memory needs /proc",
                b"/proc/self/fd",
                Some(e),
            ))
        }
    }
    out::debug(&[b"running from memory: ", program.path]);
    warn_unset(args, run);
    let files = load(own, t, program)?;
    let env = Environment::new(args, run, None)?;
    if program.interpreter.is_empty() {
        return program::launch(
            args,
            &Executable::Memory(files.program),
            args.argv,
            env.envp,
        );
    }
    let argv = loader_argv(args, &files, program.libraries.len())
        .map_err(|e| fail("cannot build arguments", program.path, Some(e)))?;
    program::launch(args, &Executable::Memory(files.interpreter), argv, env.envp)
}

/// Says which variables naming the bundle's files cannot be set in this mode: the program
/// will likely not find its data (Python its standard library, git its helpers).
fn warn_unset(args: &Args, run: &RunTable) {
    for v in run
        .vars()
        .filter(|v| program::tokens(v.value) > 0 && args.env(v.name).is_none())
    {
        let mut l = Line::new();
        l.push(b"tote: running from memory (no usable cache dir): ");
        l.push(v.name);
        l.push(b" cannot point into the bundle; the program may not find its files");
        l.end();
        let _ = sys::write_all(2, l.bytes());
    }
}

fn fail(what: &'static str, path: &[u8], e: Option<Errno>) -> Fail {
    Fail::new(Failure::Memory, what, path, e)
}

/// The memory files of one program.
struct Files {
    program: i32,
    interpreter: i32,
    libraries: [i32; MAX_LIBRARIES],
}

/// Decompresses the payload stream by stream, keeping the program's files in memory files
/// and dropping the rest.
fn load(own: &OwnFile, t: &Trailer, program: &Program) -> Result<Files, Fail> {
    let payload = Payload::open(own, t)?;
    let index = payload.index(own)?;
    let mut files = Files {
        program: -1,
        interpreter: -1,
        libraries: [-1; MAX_LIBRARIES],
    };
    let damaged = || data::damaged("damaged payload (compressed data)", own);
    for s in index.streams() {
        let mut decoder = payload
            .decoder(&s)
            .map_err(|e| fail("cannot decompress", own.name, Some(e)))?;
        for e in index.files_of(&s) {
            let Some(slot) = files.slot(program, e.path) else {
                decoder.copy_to(None, e.size).map_err(|_| damaged())?;
                continue;
            };
            let executed = e.path == program.interpreter
                || (program.interpreter.is_empty() && e.path == program.path);
            let fd = memory_file(e.path, executed)?;
            *slot = fd;
            decoder.copy_to(Some(fd), e.size).map_err(|err| match err {
                EBADMSG => damaged(),
                err => fail("cannot write to memory", e.path, Some(err)),
            })?;
            apply_patches(fd, &e, NOWHERE)
                .map_err(|err| fail("cannot patch", e.path, Some(err)))?;
        }
        decoder.finish().map_err(|_| damaged())?;
    }
    files.check(program)?;
    Ok(files)
}

impl Files {
    /// Where the memory file of bundle path `path` goes, if the program needs it.
    fn slot(&mut self, program: &Program, path: &[u8]) -> Option<&mut i32> {
        if path == program.path {
            Some(&mut self.program)
        } else if path == program.interpreter {
            Some(&mut self.interpreter)
        } else {
            let i = program.libraries.iter().position(|l| l == path)?;
            Some(&mut self.libraries[i])
        }
    }

    /// Fails unless every file the program needs was found in the payload.
    fn check(&self, program: &Program) -> Result<(), Fail> {
        let needed = program.libraries.iter().zip(&self.libraries);
        let missing = core::iter::once((program.path, &self.program))
            .chain(core::iter::once((program.interpreter, &self.interpreter)))
            .chain(needed)
            .find(|(path, fd)| !path.is_empty() && **fd < 0);
        match missing {
            Some((path, _)) => Err(fail("not a file of the bundle", path, None)),
            None => Ok(()),
        }
    }
}

/// A new memory file named after `path`'s last component. The one to execute is created
/// executable and closed on exec (the kernel has it open by then); the others stay open
/// across exec, for the loader to open them as `/proc/self/fd/N`.
fn memory_file(path: &[u8], executed: bool) -> Result<i32, Fail> {
    const MFD_CLOEXEC: usize = 1;
    const MFD_EXEC: usize = 0x10;
    let base = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    let mut buf = [0u8; PATH_MAX];
    let name = cstr_in(base, &mut buf).map_err(|e| fail("cannot name", path, Some(e)))?;
    let made = if executed {
        // Kernels before 6.3 do not know MFD_EXEC; their memory files are executable anyway.
        match sys::memfd_create(name, MFD_CLOEXEC | MFD_EXEC) {
            Err(sys::EINVAL) => sys::memfd_create(name, MFD_CLOEXEC),
            r => r,
        }
    } else {
        sys::memfd_create(name, 0)
    };
    let fd = made.map_err(|e| match e {
        sys::EACCES => fail("executable memory files are forbidden here", path, Some(e)),
        e => fail("cannot create a memory file", path, Some(e)),
    })?;
    above_standard(fd, executed).map_err(|e| fail("cannot create a memory file", path, Some(e)))
}

/// `fd` moved to 3 or above when it took the place of a closed stdin, stdout or stderr: the
/// program must find those closed as they were, not writing into its own libraries.
fn above_standard(fd: i32, cloexec: bool) -> sys::Result<i32> {
    if fd > 2 {
        return Ok(fd);
    }
    let moved = sys::dup_at_least(fd, 3, cloexec);
    sys::close(fd);
    moved
}

/// The loader's argv: `ARGV0 --argv0 ARGV0 [--preload LIBS] /proc/self/fd/P ARGS...`, in
/// anonymous memory that lives until exec.
fn loader_argv(args: &Args, files: &Files, libraries: usize) -> sys::Result<*const *const u8> {
    let user = args.arg_count();
    let slots = user + 6;
    let table_len = slots * 8;
    let text_len = (libraries + 1) * FD_PATH_MAX;
    let base = sys::mmap(table_len + text_len, None)?;
    // SAFETY: the mapping is fresh, writable, `table_len + text_len` bytes, and never
    // unmapped: exec replaces the whole address space.
    let (table, text) = unsafe {
        (
            core::slice::from_raw_parts_mut(base as *mut *const u8, slots),
            core::slice::from_raw_parts_mut(base.add(table_len), text_len),
        )
    };
    let (preload, rest) = text.split_at_mut(libraries * FD_PATH_MAX);
    let program = fd_path(files.program, b"\0", rest);
    let mut len = 0;
    for (i, fd) in files.libraries[..libraries].iter().enumerate() {
        let end = if i + 1 == libraries { b"\0" } else { b":" };
        len += fd_path(*fd, end, &mut preload[len..]);
    }
    let arg0 = args
        .arg(0)
        .map_or(c"".as_ptr() as *const u8, |a| a.as_ptr() as *const u8);
    let mut n = 0;
    let mut put = |p: *const u8| {
        table[n] = p;
        n += 1;
    };
    put(arg0);
    put(c"--argv0".as_ptr() as *const u8);
    put(arg0);
    if libraries > 0 {
        put(c"--preload".as_ptr() as *const u8);
        put(preload.as_ptr());
    }
    put(rest[..program].as_ptr());
    for i in 1..user {
        put(args
            .arg(i)
            .map_or(core::ptr::null(), |a| a.as_ptr() as *const u8));
    }
    put(core::ptr::null());
    Ok(table.as_ptr())
}

/// Writes `/proc/self/fd/<fd>` and `end` into `out`; returns the bytes written.
fn fd_path(fd: i32, end: &[u8], out: &mut [u8]) -> usize {
    let mut l = Line::new();
    l.push(b"/proc/self/fd/");
    l.push_decimal(fd as u64);
    l.push(end);
    out[..l.bytes().len()].copy_from_slice(l.bytes());
    l.bytes().len()
}
