//! The cache: which root dir the bundle is extracted under, and whether this payload's bundle
//! is already there. A bundle dir is named by the payload's key, so a new build never meets an
//! old build's files; it counts only once its completion marker exists.

use crate::args::Args;
use crate::out::{self, Fail, Failure};
use crate::path::Path;
use crate::payload::{self, KEY_LEN, MARKER};
use crate::sys::{self, Errno, AT_FDCWD, EEXIST};

/// Where this payload's bundle lives, and whether it is complete there already.
pub struct Bundle {
    pub dir: Path,
    pub complete: bool,
}

/// The cache roots to consider, in order:
/// - `$TOTE_CACHE_DIR` when set: that dir alone, since the user asked for it;
/// - else `$HOME/.cache/tote` when HOME is set, then `/tmp/tote-<euid>`.
struct Candidates {
    roots: [Option<Path>; 2],
    /// Whether the roots came from `$TOTE_CACHE_DIR`.
    chosen: bool,
}

fn candidates(args: &Args) -> Result<Candidates, Fail> {
    if let Some(dir) = args.env(b"TOTE_CACHE_DIR").filter(|d| !d.is_empty()) {
        let p = absolute(dir).map_err(|e| fail(dir, e))?;
        return Ok(Candidates {
            roots: [Some(p), None],
            chosen: true,
        });
    }
    let home = args.env(b"HOME").filter(|h| !h.is_empty()).and_then(|h| {
        let mut p = Path::from(h).ok()?;
        p.join(b".cache/tote").ok()?;
        Some(p)
    });
    let mut tmp = out::Line::new();
    tmp.push(b"/tmp/tote-");
    tmp.push_decimal(sys::geteuid() as u64);
    let tmp = Path::from(tmp.bytes()).map_err(|e| fail(tmp.bytes(), e))?;
    Ok(Candidates {
        roots: [home, Some(tmp)],
        chosen: false,
    })
}

/// `dir` made absolute against the current dir: the paths written into extracted files must
/// hold from any working dir.
fn absolute(dir: &[u8]) -> sys::Result<Path> {
    if dir.starts_with(b"/") {
        return Path::from(dir);
    }
    let mut cwd = [0u8; crate::path::PATH_MAX];
    let len = sys::getcwd(&mut cwd)?;
    let mut p = Path::from(&cwd[..len])?;
    p.join(dir)?;
    Ok(p)
}

/// Whether `root` may hold bundles: a real dir (not a symlink), owned by the effective user,
/// not writable by group or others. Anything else could hold files planted by someone else.
fn trusted(root: &Path) -> Result<(), Fail> {
    let st = sys::stat_nofollow(root.cstr()).map_err(|e| fail(root.bytes(), e))?;
    if st.mode & sys::S_IFMT != sys::S_IFDIR || st.uid != sys::geteuid() || st.mode & 0o022 != 0 {
        out::debug(&[b"refused cache root: ", root.bytes()]);
        let what = "refusing cache dir (not a dir of this user, or writable by others)";
        return Err(Fail::new(Failure::CacheDir, what, root.bytes(), None));
    }
    Ok(())
}

/// Finds the bundle dir for payload `key`. A complete bundle under any trusted candidate root
/// is used as it is, and nothing is created: that is the warm path. Otherwise the first root
/// that exists or can be created (missing parents 0700, `/tmp` 1777) and is trusted is where
/// extraction goes.
pub fn locate(args: &Args, key: &[u8; KEY_LEN]) -> Result<Bundle, Fail> {
    let c = candidates(args)?;
    let roots = || c.roots.iter().flatten();
    for root in roots() {
        let dir = bundle_dir(root, key).map_err(|e| fail(root.bytes(), e))?;
        if is_complete(&dir) && trusted(root).is_ok() {
            out::debug(&[b"cached: ", dir.bytes()]);
            return Ok(Bundle {
                dir,
                complete: true,
            });
        }
    }
    let mut last = None;
    for root in roots() {
        let usable = make_dirs(root)
            .map_err(|e| Fail {
                what: creation_failure(c.chosen),
                ..fail(root.bytes(), e)
            })
            .and_then(|()| trusted(root));
        match usable {
            Ok(()) => {
                out::debug(&[b"cache root: ", root.bytes()]);
                let dir = bundle_dir(root, key).map_err(|e| fail(root.bytes(), e))?;
                return Ok(Bundle {
                    dir,
                    complete: false,
                });
            }
            Err(f) => {
                out::debug(&[b"cannot use cache root ", root.bytes()]);
                last = Some(f);
            }
        }
    }
    Err(last.unwrap_or_else(|| fail(b"", Errno(2))))
}

fn creation_failure(chosen: bool) -> &'static str {
    if chosen {
        "cannot create TOTE_CACHE_DIR"
    } else {
        "no usable cache dir"
    }
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
fn bundle_dir(root: &Path, key: &[u8; KEY_LEN]) -> sys::Result<Path> {
    root.joined(&payload::bundle_name(key))
}

/// Whether the bundle is extracted and complete: its marker exists.
pub fn is_complete(bundle: &Path) -> bool {
    bundle
        .joined(MARKER.as_bytes())
        .is_ok_and(|m| sys::exists(m.cstr()))
}
