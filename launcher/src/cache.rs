//! The cache: which root dir the bundle is extracted under, and whether this payload's bundle
//! is already there. A bundle dir is named by the payload's key, so a new build never meets an
//! old build's files; it counts only once its completion marker exists.

use crate::args::Args;
use crate::out::{self, Fail, Failure};
use crate::path::Path;
use crate::payload::{KEY_LEN, MARKER};
use crate::sys::{self, Errno, AT_FDCWD, EEXIST};

/// Chooses the cache root, creating it when missing. The cases, in order:
/// - `$TOTE_CACHE_DIR` set: that dir, created 0700; failing to make it is an error, since
///   the user asked for it;
/// - `$HOME` set: `$HOME/.cache/tote`, when it can be made;
/// - otherwise `/tmp/tote-<euid>`, creating `/tmp` itself when missing (as in an empty image).
pub fn root(args: &Args) -> Result<Path, Fail> {
    if let Some(dir) = args.env(b"TOTE_CACHE_DIR").filter(|d| !d.is_empty()) {
        let p = Path::from(dir).map_err(|e| fail(dir, e))?;
        make_dirs(&p).map_err(|e| fail(dir, e))?;
        out::debug(&[b"cache root (TOTE_CACHE_DIR): ", p.bytes()]);
        return Ok(p);
    }
    if let Some(home) = args.env(b"HOME").filter(|h| !h.is_empty()) {
        if let Ok(p) = Path::from(home).and_then(|mut p| p.join(b".cache/tote").map(|_| p)) {
            match make_dirs(&p) {
                Ok(()) => {
                    out::debug(&[b"cache root (HOME): ", p.bytes()]);
                    return Ok(p);
                }
                Err(_) => out::debug(&[b"cannot create ", p.bytes(), b", trying /tmp"]),
            }
        }
    }
    tmp_root()
}

fn tmp_root() -> Result<Path, Fail> {
    let mut name = out::Line::new();
    name.push(b"/tmp/tote-");
    name.push_decimal(sys::geteuid() as u64);
    let p = Path::from(name.bytes()).map_err(|e| fail(name.bytes(), e))?;
    make_dirs(&p).map_err(|e| fail(p.bytes(), e))?;
    out::debug(&[b"cache root: ", p.bytes()]);
    Ok(p)
}

fn fail(path: &[u8], e: Errno) -> Fail {
    Fail::new(Failure::CacheDir, "cannot use cache dir", path, Some(e))
}

/// Creates every missing dir of `p`: `/tmp` world-writable and sticky, any other 0700.
fn make_dirs(p: &Path) -> sys::Result<()> {
    let mut prefix = p.clone();
    let bytes = p.bytes();
    for end in (1..=bytes.len()).filter(|&i| i == bytes.len() || bytes[i] == b'/') {
        prefix.truncate(end);
        let mode = if prefix.bytes() == b"/tmp" {
            0o1777
        } else {
            0o700
        };
        match sys::mkdirat(AT_FDCWD, prefix.cstr(), mode) {
            Ok(()) | Err(EEXIST) => {}
            Err(e) => return Err(e),
        }
        prefix = p.clone();
    }
    Ok(())
}

/// The bundle dir of a payload: its key in hex under the root.
pub fn bundle_dir(root: &Path, key: &[u8; KEY_LEN]) -> sys::Result<Path> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = [0u8; KEY_LEN];
    for (i, b) in key[..KEY_LEN / 2].iter().enumerate() {
        name[2 * i] = HEX[(b >> 4) as usize];
        name[2 * i + 1] = HEX[(b & 15) as usize];
    }
    root.joined(&name)
}

/// Whether the bundle is extracted and complete: its marker exists.
pub fn is_complete(bundle: &Path) -> bool {
    bundle
        .joined(MARKER.as_bytes())
        .is_ok_and(|m| sys::exists(m.cstr()))
}
