//! What the end-to-end tests share: building the C fixtures, running `tote`, making
//! scratch images and running containers, comparing runs, and seeding randomized tests. Every
//! test binary compiles this module and uses only part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod fixtures;
pub mod outcome;
pub mod podman;
pub mod tote;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The directory where this test binary keeps what it builds once and shares between its
/// tests (fixtures, packed files, data). It lives under Cargo's per-target temporary dir, so
/// `cargo clean` removes it, and is emptied the first time a process asks for it: two
/// concurrent runs of the same test binary are not supported.
pub fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(env!("CARGO_CRATE_NAME"));
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot empty {dir:?}: {e}"));
        }
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        dir
    })
}

/// A fresh directory removed when the returned guard drops.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tote-test-")
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// `path` as text; the tests only make UTF-8 paths.
pub fn utf8(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("{path:?} is not UTF-8"))
}

/// Creates `path` (and its parents) with mode 0755, so other users can traverse it.
pub fn make_dir(path: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .unwrap_or_else(|e| panic!("cannot create {path:?}: {e}"));
    set_mode(path, 0o755);
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {path:?}: {e}"));
}

/// Writes `contents` to `path`, creating its parent dirs.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        make_dir(parent);
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
}

/// A random number generator for a randomized test: seeded from `TOTE_TEST_SEED` when set,
/// else at random. The seed is printed first, so that a failing run can be repeated.
pub fn seeded_rng() -> fastrand::Rng {
    let seed = match std::env::var("TOTE_TEST_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|e| panic!("TOTE_TEST_SEED={text:?} is not a u64: {e}")),
        Err(_) => fastrand::u64(..),
    };
    println!("seed {seed} (TOTE_TEST_SEED={seed} repeats this run)");
    fastrand::Rng::with_seed(seed)
}
