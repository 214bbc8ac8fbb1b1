//! One traced run of a program: the files it opens and executes, seen through ptrace, for the
//! files a program needs that no ELF header names (data, plugins, the programs it runs). The
//! program and everything it starts are followed; the tracer is the calling thread, and nothing
//! else in the process may wait for children of that thread meanwhile. Syscalls are decoded in
//! `arch` (x86-64 only so far); the two calls nix cannot make for us are in `sys`.

use anyhow::{Context, Result};
use log::{debug, info, warn};
use nix::errno::Errno;
use nix::libc;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{kill, Signal};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, IoSliceMut};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Dirs whose files belong to the running system, not to the program.
const SKIPPED_DIRS: &[&str] = &["/proc", "/sys", "/dev", "/run", "/tmp"];

/// The longest path the kernel accepts, its NUL included.
const PATH_MAX: usize = 4096;

/// The smallest page size: one read of tracee memory never crosses a multiple of it, as the
/// next page may be unmapped.
const PAGE: usize = 4096;

/// The stop signal of a syscall stop, with PTRACE_O_TRACESYSGOOD.
const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;

/// Runs `program` with `args` once under ptrace, following forks, vforks, clones and execs,
/// with stdin and stdout on /dev/null and its stderr on tote's (so that what it says when it
/// fails is seen), and returns every path it opened or executed
/// successfully that is a regular file on this host outside `SKIPPED_DIRS`: absolute, sorted,
/// deduplicated. Opened or executed means: open, openat, openat2, execve and execveat; the
/// files the kernel mapped for each exec (the program or a script's interpreter, and the ELF
/// interpreter); `program` itself when it is given as a path. A program that fails is warned
/// about with its exit status, and what it opened is still returned; a program that cannot
/// start is an error. After `timeout`, every traced process is killed and what was seen so
/// far is returned.
pub fn opened_files(program: &Path, args: &[OsString], timeout: Duration) -> Result<Vec<PathBuf>> {
    let root = spawn_traced(program, args)?;
    let mut tracer = Tracer::default();
    // Its own exec happened before tracing began; a bare name was looked up on PATH.
    if program.as_os_str().as_bytes().contains(&b'/') {
        tracer.seen.extend(std::path::absolute(program).ok());
    }
    tracer
        .start(root)
        .with_context(|| format!("{}: cannot trace it", program.display()))?;
    let watchdog = Watchdog::start(Arc::clone(&tracer.live), timeout);
    let outcome = tracer.run();
    let expired = watchdog.stop();
    outcome.with_context(|| format!("{}: lost track of its run", program.display()))?;
    let files = kept_files(tracer.seen);
    info!("{}: opened {} files", program.display(), files.len());
    let failure = tracer.root_status.and_then(failure_of);
    if expired {
        warn!(
            "{}: still running after {}, killed; what it would open later is missing",
            program.display(),
            humantime::format_duration(timeout)
        );
    } else if let Some(failure) = failure {
        warn!(
            "{}: {failure} under --trace; packing the {} files it opened, which may be fewer \
             than a successful run opens",
            program.display(),
            files.len()
        );
    }
    Ok(files)
}

/// Starts `program` with PTRACE_TRACEME, so that it stops right after its exec, before its
/// first instruction, until `Tracer::start` resumes it.
fn spawn_traced(program: &Path, args: &[OsString]) -> Result<Pid> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: the hook runs in the forked child, where only async-signal-safe work is sound:
    // it makes one raw syscall and turns its errno into an io::Error without allocating.
    unsafe {
        command.pre_exec(|| ptrace::traceme().map_err(io::Error::from));
    }
    let child = command
        .spawn()
        .with_context(|| format!("{}: cannot run it", program.display()))?;
    Ok(Pid::from_raw(child.id() as libc::pid_t))
}

/// The tracer's view of the run: the tracees and the paths they opened.
#[derive(Default)]
struct Tracer {
    live: Arc<Mutex<Live>>,
    tracees: HashMap<Pid, Tracee>,
    /// Absolute paths opened or executed successfully, not yet checked against the host.
    seen: BTreeSet<PathBuf>,
    /// The first process, and its wait status once it has ended.
    root: Option<Pid>,
    root_status: Option<i32>,
}

/// How a process with wait status `status` failed, or None when it exited with status 0.
fn failure_of(status: i32) -> Option<String> {
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        (code != 0).then(|| format!("exited with status {code}"))
    } else if libc::WIFSIGNALED(status) {
        Some(format!("was killed by signal {}", libc::WTERMSIG(status)))
    } else {
        None
    }
}

#[derive(Default)]
struct Tracee {
    /// Whether a stop of it was seen: the first SIGSTOP of a new tracee is ptrace's own.
    started: bool,
    /// The syscall it is in, between its entry stop and its exit stop.
    syscall: Option<Entry>,
}

/// A syscall entered and not yet returned, with the absolute path it names, if it opens or
/// executes one.
struct Entry {
    path: Option<PathBuf>,
}

impl Tracer {
    /// Waits for the stop that follows the root's exec, then has the root and everything it
    /// starts traced, killed with the tracer should the tracer die.
    fn start(&mut self, root: Pid) -> nix::Result<()> {
        self.root = Some(root);
        let (_, status) = sys::wait(root)?;
        if !libc::WIFSTOPPED(status) {
            self.root_status = Some(status);
            return Ok(());
        }
        let options = Options::PTRACE_O_TRACESYSGOOD
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEEXEC
            | Options::PTRACE_O_EXITKILL;
        if let Err(e) = ptrace::setoptions(root, options) {
            let _ = kill(root, Signal::SIGKILL);
            let _ = sys::wait(root);
            return Err(e);
        }
        lock(&self.live).add(root);
        self.tracees.insert(
            root,
            Tracee {
                started: true,
                syscall: None,
            },
        );
        self.record_exec(root);
        resume(root, 0);
        Ok(())
    }

    /// Follows the tracees until none is left, resuming each after each stop. On an error,
    /// every tracee is killed first.
    fn run(&mut self) -> nix::Result<()> {
        loop {
            let (pid, status) = match sys::wait_any() {
                Ok(news) => news,
                Err(Errno::ECHILD) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    lock(&self.live).kill_all();
                    return Err(e);
                }
            };
            if !libc::WIFSTOPPED(status) {
                lock(&self.live).pids.remove(&pid);
                self.tracees.remove(&pid);
                if Some(pid) == self.root {
                    self.root_status = Some(status);
                }
                continue;
            }
            if !self.tracees.contains_key(&pid) {
                lock(&self.live).add(pid);
            }
            let signal = self.on_stop(pid, status);
            resume(pid, signal);
        }
    }

    /// Handles one stop; returns the signal to deliver on resuming, 0 for none. Cases:
    /// syscall stop; ptrace event (fork, vfork, clone, exec); the first SIGSTOP of a new
    /// tracee; any other signal.
    fn on_stop(&mut self, pid: Pid, status: i32) -> i32 {
        let signal = libc::WSTOPSIG(status);
        let event = status >> 16;
        let tracee = self.tracees.entry(pid).or_default();
        let first = !std::mem::replace(&mut tracee.started, true);
        match signal {
            SYSCALL_STOP => {
                self.on_syscall(pid);
                0
            }
            libc::SIGTRAP if event != 0 => {
                self.on_event(pid, event);
                0
            }
            libc::SIGSTOP if first => 0,
            _ => pending_signal(pid, signal),
        }
    }

    /// At a syscall entry, notes the path the syscall names; at its exit, keeps that path if
    /// the syscall succeeded.
    fn on_syscall(&mut self, pid: Pid) {
        let Ok(registers) = arch::registers(pid) else {
            return;
        };
        let tracee = self.tracees.entry(pid).or_default();
        match tracee.syscall.take() {
            None => {
                let call = registers.nr.and_then(arch::file_call);
                let path = call.and_then(|c| c.path(pid, &registers.args));
                tracee.syscall = Some(Entry { path });
            }
            Some(Entry { path: Some(path) }) if registers.ret >= 0 => {
                self.seen.insert(path);
            }
            Some(_) => {}
        }
    }

    /// On an exec, records what the kernel mapped. A thread other than the leader that calls
    /// execve takes the leader's pid, so its syscall entry moves to that pid.
    fn on_event(&mut self, pid: Pid, event: i32) {
        if event != libc::PTRACE_EVENT_EXEC {
            return;
        }
        if let Ok(former) = ptrace::getevent(pid) {
            let former = Pid::from_raw(former as libc::pid_t);
            if former != pid {
                lock(&self.live).pids.remove(&former);
                if let Some(tracee) = self.tracees.remove(&former) {
                    self.tracees.insert(pid, tracee);
                }
            }
        }
        self.record_exec(pid);
    }

    /// Records the files mapped into `pid` right after an exec: the program (for a script, its
    /// interpreter) and the ELF interpreter, which the kernel opens without a syscall of the
    /// tracee.
    fn record_exec(&mut self, pid: Pid) {
        let Ok(maps) = fs::read(format!("/proc/{pid}/maps")) else {
            return;
        };
        for line in maps.split(|&b| b == b'\n') {
            if let Some(at) = line.iter().position(|&b| b == b'/') {
                self.seen
                    .insert(PathBuf::from(OsStr::from_bytes(&line[at..])));
            }
        }
    }
}

/// The signal a tracee stopped with, to deliver when resuming it; none after a group-stop,
/// which PTRACE_GETSIGINFO tells apart by failing with EINVAL.
fn pending_signal(pid: Pid, signal: i32) -> i32 {
    match ptrace::getsiginfo(pid) {
        Err(Errno::EINVAL) => 0,
        _ => signal,
    }
}

/// Resumes `pid` until its next syscall stop; a tracee that cannot be resumed is killed rather
/// than left stopped.
fn resume(pid: Pid, signal: i32) {
    if let Err(e) = sys::resume(pid, signal) {
        debug!("traced process {pid}: cannot resume it ({e}), killing it");
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// The NUL-terminated string at `addr` in the tracee's memory, at most `PATH_MAX` bytes.
fn read_string(pid: Pid, addr: u64) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut at = usize::try_from(addr).ok()?;
    let mut page = [0u8; PAGE];
    while bytes.len() < PATH_MAX {
        let len = (PAGE - at % PAGE).min(PATH_MAX - bytes.len());
        let local = &mut [IoSliceMut::new(&mut page[..len])];
        let read = process_vm_readv(pid, local, &[RemoteIoVec { base: at, len }]).ok()?;
        let chunk = &page[..read];
        if let Some(end) = chunk.iter().position(|&b| b == 0) {
            bytes.extend_from_slice(&chunk[..end]);
            return Some(bytes);
        }
        if read == 0 {
            return None;
        }
        bytes.extend_from_slice(chunk);
        at += read;
    }
    None
}

/// The registers of a syscall stop that matter here.
struct Registers {
    /// The syscall number; None when the tracee uses a syscall table other than the native one.
    nr: Option<u64>,
    args: [u64; 6],
    /// The return value, meaningful at syscall exit.
    ret: i64,
}

/// Where a syscall that opens or executes a file keeps its arguments, as indexes into
/// `Registers::args`.
#[derive(Clone, Copy)]
struct FileCall {
    /// The dir fd a relative path is resolved against; None for the cwd.
    dirfd: Option<usize>,
    path: usize,
    /// The flags that may hold AT_EMPTY_PATH.
    flags: Option<usize>,
}

/// open(path, ...) and execve(path, ...).
const BY_PATH: FileCall = FileCall {
    dirfd: None,
    path: 0,
    flags: None,
};

/// openat(dirfd, path, ...) and openat2(dirfd, path, ...).
const AT_DIRFD: FileCall = FileCall {
    dirfd: Some(0),
    path: 1,
    flags: None,
};

/// execveat(dirfd, path, argv, envp, flags).
const EXECVEAT: FileCall = FileCall {
    dirfd: Some(0),
    path: 1,
    flags: Some(4),
};

impl FileCall {
    /// The absolute path this call names, read from the tracee at syscall entry; a relative
    /// path is resolved against the tracee's cwd or dir fd as they are now.
    fn path(self, pid: Pid, args: &[u64; 6]) -> Option<PathBuf> {
        let name = read_string(pid, args[self.path])?;
        let dirfd = self.dirfd.map(|i| args[i] as i32);
        if name.is_empty() {
            let empty_path = libc::AT_EMPTY_PATH as u64;
            let allowed = self.flags.is_some_and(|i| args[i] & empty_path != 0);
            return dirfd.filter(|_| allowed).and_then(|fd| fd_path(pid, fd));
        }
        let name = PathBuf::from(OsString::from(OsStr::from_bytes(&name)));
        if name.is_absolute() {
            return Some(name);
        }
        let base = match dirfd {
            Some(fd) if fd != libc::AT_FDCWD => fd_path(pid, fd)?,
            _ => fs::read_link(format!("/proc/{pid}/cwd")).ok()?,
        };
        Some(base.join(name))
    }
}

/// The path that file descriptor `fd` of `pid` is open on.
fn fd_path(pid: Pid, fd: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
}

/// The paths of `seen` that are regular files on this host outside `SKIPPED_DIRS`, tidied,
/// sorted, deduplicated.
fn kept_files(seen: BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let kept: BTreeSet<PathBuf> = seen
        .iter()
        .map(|path| tidy(path))
        .filter(|path| is_host_file(path))
        .collect();
    kept.into_iter().collect()
}

/// `path` without `.` components and doubled slashes; `..` is resolved through the real dir,
/// as the component before it may be a symlink.
fn tidy(path: &Path) -> PathBuf {
    let clean: PathBuf = path.components().collect();
    if !clean.components().any(|c| c == Component::ParentDir) {
        return clean;
    }
    let real_dir = clean.parent().and_then(|dir| fs::canonicalize(dir).ok());
    match (real_dir, clean.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => clean,
    }
}

fn is_host_file(path: &Path) -> bool {
    !SKIPPED_DIRS.iter().any(|dir| path.starts_with(dir))
        && fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// The tracees not yet reaped, shared with the watchdog that kills them when time is up.
#[derive(Default)]
struct Live {
    pids: HashSet<Pid>,
    /// Set once time is up: from then on every tracee is killed as soon as it is seen.
    expired: bool,
}

impl Live {
    fn add(&mut self, pid: Pid) {
        if self.expired {
            let _ = kill(pid, Signal::SIGKILL);
        }
        self.pids.insert(pid);
    }

    /// Kills every tracee, now and from now on.
    fn kill_all(&mut self) {
        self.expired = true;
        for &pid in &self.pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn lock(live: &Mutex<Live>) -> MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A thread that kills every tracee when time is up, unless stopped first.
struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<bool>,
}

impl Watchdog {
    fn start(live: Arc<Mutex<Live>>, timeout: Duration) -> Watchdog {
        let (stop, stopped) = mpsc::channel();
        let thread = thread::spawn(move || {
            let expired = matches!(
                stopped.recv_timeout(timeout),
                Err(RecvTimeoutError::Timeout)
            );
            if expired {
                lock(&live).kill_all();
            }
            expired
        });
        Watchdog { stop, thread }
    }

    /// Stops the watchdog; returns whether time was up first.
    fn stop(self) -> bool {
        drop(self.stop);
        self.thread.join().unwrap_or(true)
    }
}

/// The raw wait and resume calls. nix 0.32 decodes stop signals into its `Signal` type, which
/// has no real-time signals: it would fail on a tracee stopped by one, and lose that tracee.
mod sys {
    use nix::errno::Errno;
    use nix::libc;
    use nix::unistd::Pid;

    /// Waits for the next stop or exit of any tracee or child of this thread (those of other
    /// threads are left to them); returns its pid and raw wait status.
    pub fn wait_any() -> nix::Result<(Pid, i32)> {
        wait(Pid::from_raw(-1))
    }

    /// Waits for the next stop or exit of `pid`; returns it with its raw wait status.
    pub fn wait(pid: Pid) -> nix::Result<(Pid, i32)> {
        let mut status = 0;
        let flags = libc::__WALL | libc::__WNOTHREAD;
        // SAFETY: waitpid writes one int through its pointer, which points to `status`, alive
        // across the call.
        let found = unsafe { libc::waitpid(pid.as_raw(), &mut status, flags) };
        Ok((Pid::from_raw(Errno::result(found)?), status))
    }

    /// Resumes a stopped tracee until its next syscall stop, delivering signal number
    /// `signal`, 0 for none.
    pub fn resume(pid: Pid, signal: i32) -> nix::Result<()> {
        let addr = std::ptr::null_mut::<libc::c_void>();
        let data = std::ptr::without_provenance_mut::<libc::c_void>(signal as usize);
        // SAFETY: PTRACE_SYSCALL touches no memory of this process: it ignores addr, and data
        // carries a signal number, not a pointer.
        let result = unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid.as_raw(), addr, data) };
        Errno::result(result).map(drop)
    }
}

/// The x86-64 view of a syscall stop. Another architecture adds a module with the same two
/// functions.
#[cfg(target_arch = "x86_64")]
mod arch {
    use super::{FileCall, Registers, AT_DIRFD, BY_PATH, EXECVEAT};
    use nix::libc;
    use nix::sys::ptrace;
    use nix::unistd::Pid;

    /// The code segment of a 32-bit process, whose syscalls follow the i386 table.
    const COMPAT_CS: u64 = 0x23;

    pub fn registers(pid: Pid) -> nix::Result<Registers> {
        let r = ptrace::getregs(pid)?;
        Ok(Registers {
            nr: (r.cs != COMPAT_CS).then_some(r.orig_rax),
            args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9],
            ret: r.rax as i64,
        })
    }

    /// Where syscall `nr` keeps its file arguments, if it opens or executes a file.
    pub fn file_call(nr: u64) -> Option<FileCall> {
        match i64::try_from(nr).ok()? {
            libc::SYS_open | libc::SYS_execve => Some(BY_PATH),
            libc::SYS_openat | libc::SYS_openat2 => Some(AT_DIRFD),
            libc::SYS_execveat => Some(EXECVEAT),
            _ => None,
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
compile_error!("trace.rs decodes syscalls for x86-64 only: add an `arch` module for this one");

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn sh(script: &str) -> Vec<PathBuf> {
        let args = ["-c", script].map(OsString::from);
        opened_files(Path::new("/bin/sh"), &args, TIMEOUT).unwrap()
    }

    fn has(files: &[PathBuf], path: &str) -> bool {
        files.contains(&PathBuf::from(path))
    }

    #[test]
    fn shell_run_finds_opened_and_executed_files() {
        let files = sh("cat /etc/hostname > /dev/null; ls /usr/share/doc/jq > /dev/null");
        assert!(has(&files, "/etc/hostname"), "{files:?}");
        assert!(has(&files, "/bin/sh"), "{files:?}");
        let libc_paths = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ];
        assert!(libc_paths.iter().any(|p| has(&files, p)), "{files:?}");
        assert!(["/bin/cat", "/usr/bin/cat"].iter().any(|p| has(&files, p)));
        assert!(["/bin/ls", "/usr/bin/ls"].iter().any(|p| has(&files, p)));
        assert!(!has(&files, "/usr/share/doc/jq"), "a dir is no file");
        let system = ["/proc", "/dev", "/sys", "/run", "/tmp"];
        assert!(!files
            .iter()
            .any(|f| system.iter().any(|d| f.starts_with(d))));
        assert!(
            files.windows(2).all(|w| w[0] < w[1]),
            "sorted, deduplicated"
        );
    }

    #[test]
    fn relative_open_resolves_against_the_cwd() {
        // Not under /tmp, whose files are left out.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/file"), "x").unwrap();
        let script = format!(
            "cd '{}/sub' && cat ./file ../sub/./file",
            dir.path().display()
        );
        let files = sh(&script);
        let want = fs::canonicalize(dir.path()).unwrap().join("sub/file");
        assert!(files.contains(&want), "{files:?}");
        let under_dir = files.iter().filter(|f| f.starts_with(dir.path()));
        assert_eq!(under_dir.count(), 1, "{files:?}");
    }

    #[test]
    fn missing_program_is_an_error_naming_it() {
        let err = opened_files(Path::new("/nonexistent/prog"), &[], TIMEOUT).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("/nonexistent/prog: cannot run it"),
            "{text}"
        );
    }

    #[test]
    fn failing_program_is_no_error() {
        let files = sh("cat /etc/os-release > /dev/null; exit 3");
        assert!(has(&files, "/etc/os-release"), "{files:?}");
    }

    #[test]
    fn failures_are_said_with_the_status() {
        let wait_status = |code: i32| code << 8;
        assert_eq!(failure_of(wait_status(0)), None);
        assert_eq!(
            failure_of(wait_status(3)).as_deref(),
            Some("exited with status 3")
        );
        assert_eq!(
            failure_of(libc::SIGKILL).as_deref(),
            Some("was killed by signal 9")
        );
    }

    #[test]
    fn endless_program_is_killed_at_the_timeout() {
        let args = [
            "-c",
            "cat /etc/os-release > /dev/null; sleep 1000 & sleep 1000",
        ];
        let args = args.map(OsString::from);
        let begun = Instant::now();
        let timeout = Duration::from_millis(500);
        let files = opened_files(Path::new("/bin/sh"), &args, timeout).unwrap();
        assert!(begun.elapsed() < Duration::from_secs(10));
        assert!(has(&files, "/etc/os-release"), "{files:?}");
        assert!(["/bin/sleep", "/usr/bin/sleep"]
            .iter()
            .any(|p| has(&files, p)));
    }

    #[test]
    fn tidy_resolves_dots() {
        assert_eq!(
            tidy(Path::new("/usr//bin/./cat")),
            Path::new("/usr/bin/cat")
        );
        let got = tidy(Path::new("/usr/lib/../bin/cat"));
        assert_eq!(got, fs::canonicalize("/usr/bin").unwrap().join("cat"));
    }
}
