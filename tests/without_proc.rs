//! A packed program started where /proc is not mounted: in a chroot holding only the packed
//! file and an empty cache root. The launcher must find its own file without
//! /proc/self/exe (from the kernel's AT_EXECFN) and run the program as natively; running from
//! memory, which needs /proc, fails with a clear error.

mod common;

use common::fixtures::{native_command, program};
use common::outcome::{assert_same, capture, capture_with_pid, Run};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

const CHROOT_CANDIDATES: &[&str] = &["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"];

fn chroot_binary() -> &'static str {
    let found = CHROOT_CANDIDATES
        .iter()
        .find(|path| Path::new(path).exists());
    found.unwrap_or_else(|| panic!("no chroot in {CHROOT_CANDIDATES:?}"))
}

#[test]
fn without_proc_the_launcher_finds_itself_through_at_execfn() {
    let root = common::temp_dir();
    std::fs::copy(common::tote::packed("args_env"), root.path().join("prog"))
        .expect("cannot copy the packed file");
    std::fs::create_dir(root.path().join("cache")).expect("cannot create the cache root");
    assert!(!root.path().join("proc").exists());

    let argv = ["/prog", "no", "proc"];
    let env = [("TOTE_CACHE_DIR", "/cache")];
    let native = capture(
        &mut native_command(&program("args_env"), &argv, &env, Path::new("/")),
        b"",
    );
    let mut chrooted = Command::new(chroot_binary());
    chrooted
        .arg0("chroot")
        .arg(root.path())
        .args(argv)
        .env_clear()
        .envs(env);
    assert_same(
        "in a chroot without /proc",
        &native,
        &capture(&mut chrooted, b""),
    );

    let (pid, traced) = capture_with_pid(chrooted.env("TOTE_DEBUG", "1"), b"");
    assert!(traced.success(), "{}", traced.describe());
    assert_at_execfn_traced(&traced, pid);
}

/// The debug trace must say the launcher fell back to AT_EXECFN. chroot execs the packed
/// file in place, so the tag carries the pid of the process started.
fn assert_at_execfn_traced(run: &Run, pid: u32) {
    let tag = format!("tote[{pid}]: ");
    let found = run
        .stderr_lines()
        .iter()
        .any(|line| line.starts_with(&tag) && line.contains("AT_EXECFN"));
    assert!(
        found,
        "no {tag:?} line mentions AT_EXECFN:\n{}",
        run.stderr_text()
    );
}

/// Running from memory hands the loader `/proc/self/fd/N` paths: without /proc that cannot
/// work, and the launcher says so instead of letting the loader fail obscurely.
#[test]
fn without_proc_memory_mode_is_a_clear_error() {
    let root = common::temp_dir();
    std::fs::copy(common::tote::packed("args_env"), root.path().join("prog"))
        .expect("cannot copy the packed file");
    let mut chrooted = Command::new(chroot_binary());
    chrooted
        .arg0("chroot")
        .arg(root.path())
        .arg("/prog")
        .env_clear()
        .env("TOTE_MODE", "memory");
    let run = capture(&mut chrooted, b"");
    assert_eq!(
        run.stderr_text(),
        "tote: running from memory needs /proc: /proc/self/fd: ENOENT\n",
        "{}",
        run.describe()
    );
    assert_eq!(run.status, common::outcome::Status::Code(119));
    assert!(run.stdout.is_empty(), "{}", run.describe());
}
