//! Where `tote pack` writes. The output path is checked before any work; the output is then
//! written as a temporary file or dir beside it and renamed into place, so it is whole or
//! absent: a failed pack leaves nothing behind and an existing file as it was.

use anyhow::{bail, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What the output is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: new, or an existing file it replaces.
    File,
    /// A dir, which must not exist yet.
    Dir,
}

/// Checks `output` for `kind` and returns the dir it goes in, which must exist.
pub fn check(output: &Path, kind: Kind) -> Result<PathBuf> {
    let dir = parent(output);
    if dir.exists() && !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    if !dir.is_dir() {
        bail!(
            "{}: no such directory to write {} in",
            dir.display(),
            output.display()
        );
    }
    let meta = std::fs::symlink_metadata(output);
    match kind {
        Kind::File if meta.as_ref().is_ok_and(|m| m.is_dir()) => bail!(
            "{}: is a directory; -o names the file to write",
            output.display()
        ),
        Kind::File if meta.as_ref().is_ok_and(|m| !m.is_file()) => bail!(
            "{}: exists and is not a regular file; tote writes only regular files",
            output.display()
        ),
        Kind::Dir if meta.is_ok() => bail!(
            "{}: already exists; -o names a new dir to write",
            output.display()
        ),
        _ => Ok(dir.to_path_buf()),
    }
}

fn parent(output: &Path) -> &Path {
    match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `parts` one after the other as the file `output`, with permission bits `mode`.
pub fn write_file(output: &Path, parts: &[&[u8]], mode: u32) -> Result<()> {
    let dir = parent(output);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tote-")
        .tempfile_in(dir)
        .map_err(|e| crate::elf::io_error(dir, &e).context("cannot create a file there"))?;
    let written: std::io::Result<()> = parts.iter().try_for_each(|p| tmp.write_all(p));
    written.map_err(|e| crate::elf::io_error(output, &e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| crate::elf::io_error(output, &e))?;
    tmp.persist(output)
        .map_err(|e| crate::elf::io_error(output, &e.error))?;
    Ok(())
}

/// Makes the dir `output` by letting `fill` write the new dir's contents, then renaming it
/// into place.
pub fn write_dir(output: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = parent(output);
    let tmp = tempfile::Builder::new()
        .prefix(".tote-")
        .tempdir_in(dir)
        .map_err(|e| crate::elf::io_error(dir, &e).context("cannot create a dir there"))?;
    fill(tmp.path())?;
    if output.symlink_metadata().is_ok() {
        bail!("{}: appeared while tote was writing it", output.display());
    }
    std::fs::rename(tmp.path(), output).map_err(|e| crate::elf::io_error(output, &e))?;
    // Renamed: there is nothing left for the guard to remove.
    let _ = tmp.keep();
    Ok(())
}

/// The process's file mode creation mask.
pub fn umask() -> u32 {
    use nix::sys::stat::{umask, Mode};
    let mask = umask(Mode::empty());
    umask(mask);
    mask.bits()
}
