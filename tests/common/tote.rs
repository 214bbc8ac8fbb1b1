//! Runs the `tote` binary under test: packing, inspecting, writing the bare launcher stub, and
//! the packed fixtures a test binary shares (packed once, into the work dir).

use super::outcome::{capture, Run};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A command running the `tote` binary built by Cargo.
pub fn tote() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tote"))
}

/// `tote pack PROGRAM -o OUTPUT`, captured.
pub fn pack(program: impl AsRef<OsStr>, output: &Path) -> Run {
    capture(tote().arg("pack").arg(program).arg("-o").arg(output), b"")
}

/// Packs `program` into `output` and panics unless that worked and left an executable file.
pub fn pack_ok(program: impl AsRef<OsStr>, output: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let program = program.as_ref();
    let run = pack(program, output);
    assert!(
        run.success(),
        "tote pack {program:?} -o {output:?} failed:\n{}",
        run.describe()
    );
    let mode = std::fs::metadata(output)
        .unwrap_or_else(|e| panic!("tote pack succeeded but {output:?} is missing: {e}"))
        .permissions()
        .mode();
    assert!(
        mode & 0o111 != 0,
        "{output:?} is not executable (mode {mode:o})"
    );
}

/// `tote inspect FILE`'s report; panics unless it worked.
pub fn inspect(file: &Path) -> String {
    let run = capture(tote().arg("inspect").arg(file), b"");
    assert!(
        run.success(),
        "tote inspect {file:?} failed:\n{}",
        run.describe()
    );
    run.stdout_text()
}

/// The name of the dir the tote file `file` extracts into under a cache root, from the
/// `cache dir name` line of `tote inspect`.
pub fn bundle_name(file: &Path) -> String {
    let report = inspect(file);
    let name = report
        .lines()
        .find_map(|line| line.strip_prefix("cache dir name "))
        .unwrap_or_else(|| panic!("tote inspect {file:?} names no cache dir:\n{report}"));
    name.to_owned()
}

/// The size of the launcher stub, which is where the payload of every tote file starts.
/// The stub is written once per test binary, at `<work dir>/stub`.
pub fn stub_len() -> u64 {
    static LEN: OnceLock<u64> = OnceLock::new();
    *LEN.get_or_init(|| {
        let stub = super::work_dir().join("stub");
        let run = capture(tote().arg("stub").arg("-o").arg(&stub), b"");
        assert!(run.success(), "tote stub failed:\n{}", run.describe());
        std::fs::metadata(&stub)
            .unwrap_or_else(|e| panic!("tote stub wrote no {stub:?}: {e}"))
            .len()
    })
}

/// `program` packed once per test binary, at `<work dir>/packed/<name>`.
pub fn packed_as(program: &Path, name: &str) -> PathBuf {
    static PACKED: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut packed = PACKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = packed.get(name) {
        return path.clone();
    }
    let path = super::work_dir().join("packed").join(name);
    super::make_dir(path.parent().expect("a packed file has a parent dir"));
    pack_ok(program, &path);
    packed.insert(name.to_owned(), path.clone());
    path
}

/// The fixture `name` built dynamically and packed, once per test binary.
pub fn packed(name: &str) -> PathBuf {
    packed_as(&super::fixtures::program(name), name)
}

/// A command starting the packed file `packed` on the host with exactly `argv` (argv[0]
/// included) and `env` as its whole environment (which should name the cache root in
/// `TOTE_CACHE_DIR`, so that tests never touch the user's cache).
pub fn host_command(packed: &Path, argv: &[&str], env: &[(&str, &str)]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(packed);
    command
        .arg0(argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().copied());
    command
}
