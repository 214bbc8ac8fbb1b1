//! Builds the C programs in `tests/fixtures/` with the host's `cc`: dynamically linked against
//! glibc for packing, or static as a launcher-free reference to run beside them in a container.
//! Each build happens once per test binary, in the work dir.

use super::outcome::capture;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The source file `tests/fixtures/<name>.c`.
pub fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.c"))
}

/// Runs `cc` with `args`; panics with the compiler's messages when it fails.
pub fn cc<S: AsRef<OsStr>>(args: &[S]) {
    let run = capture(Command::new("cc").args(args), b"");
    assert!(
        run.success(),
        "cc {:?} failed:\n{}",
        os_strs(args),
        run.describe()
    );
}

fn os_strs<S: AsRef<OsStr>>(args: &[S]) -> Vec<&OsStr> {
    args.iter().map(AsRef::as_ref).collect()
}

/// `tests/fixtures/<name>.c` built as a dynamically linked program.
pub fn program(name: &str) -> PathBuf {
    variant(name, name, &[])
}

/// `tests/fixtures/<name>.c` built as a static program (no interpreter, no library).
pub fn static_program(name: &str) -> PathBuf {
    variant(name, &format!("static/{name}"), &["-static"])
}

/// `tests/fixtures/<name>.c` built with `flags`, at `<work dir>/fixtures/<output>`. Built once
/// per output name in this process; concurrent callers wait for the first build.
pub fn variant(name: &str, output: &str, flags: &[&str]) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(output) {
        return path.clone();
    }
    let path = super::work_dir().join("fixtures").join(output);
    super::make_dir(path.parent().expect("a fixture has a parent dir"));
    let source = source(name);
    let mut args: Vec<&OsStr> = vec!["-O1".as_ref(), "-Wall".as_ref(), "-o".as_ref()];
    args.push(path.as_os_str());
    args.push(source.as_os_str());
    args.extend(flags.iter().map(OsStr::new));
    cc(&args);
    built.insert(output.to_owned(), path.clone());
    path
}

/// Runs a fixture (or any program) natively with exactly `args` as argv (argv[0] included)
/// and `env` as its whole environment, in `dir`.
pub fn native_command(program: &Path, argv: &[&str], env: &[(&str, &str)], dir: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command
        .arg0(argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir);
    command
}
