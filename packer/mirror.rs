//! The closure at its original absolute paths, untouched: the image layout where every
//! compiled-in path works and nothing is extracted at start. Each file is put where the host
//! has it, with the host's symlinks on the way (`/lib64` -> `usr/lib64` on a merged-/usr
//! system, `libonig.so.5` -> `libonig.so.5.3.0`), so the kernel finds the interpreter at its
//! PT_INTERP path and the loader every library under the name it asks for. An absolute
//! symlink target is stored relative to the link, so the tree means the same wherever it is
//! unpacked.
//!
//! Not handled: the tree has no `/etc/ld.so.cache`, so a library the host finds only through
//! `/etc/ld.so.conf` (outside the loader's default dirs and every rpath) is not found in the
//! image. It can go when the tree gets a cache written for its own libraries; until then
//! `--prefix`, whose programs name every library dir, is the way (the README says so).

use crate::closure::{Closure, Member};
use crate::plan::{normalize, relative_link, Plan};
use crate::tree::{Node, Tree};
use anyhow::{bail, Result};
use log::debug;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The most symlinks followed on the way to one file, as the kernel allows.
const MAX_LINKS: usize = 40;

/// Lays out the plan's programs and files, the `objects` read from them and their `closure`.
pub fn original(plan: &Plan, objects: &[Member], closure: &Closure) -> Result<Tree> {
    let mut m = Mirror::default();
    let members = objects
        .iter()
        .chain(&closure.interpreters)
        .chain(&closure.libraries);
    for member in members {
        m.file(
            &member.dest,
            &member.object.source,
            Some(&member.object.bytes),
        )?;
    }
    for added in &plan.files {
        m.file(&added.dest, &added.source, None)?;
    }
    for link in &plan.links {
        m.link(&link.dest, &link.target)?;
    }
    Ok(m.tree)
}

/// A tree filled from the host, following the host's symlinks.
#[derive(Default)]
pub struct Mirror {
    pub tree: Tree,
    links: usize,
}

impl Mirror {
    /// A mirror adding to `tree`.
    pub fn on(tree: Tree) -> Mirror {
        Mirror { tree, links: 0 }
    }

    /// Stores the host file `source` (its `bytes`, when read already) at `dest`. When the
    /// host reaches `source` through symlinks at `dest`, those symlinks are stored too and
    /// the file where they lead.
    pub fn file(&mut self, dest: &Path, source: &Path, bytes: Option<&[u8]>) -> Result<()> {
        self.links = 0;
        let at = self.resolve_file(dest, source)?;
        if self.tree.get(&at).is_some() {
            return Ok(());
        }
        let (mode, mtime) = crate::bundle::mode_and_mtime(source)?;
        let bytes = match bytes {
            Some(b) => b.to_vec(),
            None => std::fs::read(source).map_err(|e| crate::elf::io_error(source, &e))?,
        };
        debug!("{}: from {}", at.display(), source.display());
        let mtime = Some(mtime);
        self.tree.add(&at, Node::File { mode, bytes, mtime })
    }

    /// Stores the bytes of a file that is not on the host at `dest`, with mode `mode`.
    pub fn new_file(&mut self, dest: &Path, mode: u32, bytes: Vec<u8>) -> Result<()> {
        self.links = 0;
        let at = self.resolve_parent(dest)?;
        self.tree.add(&at, Node::made(mode, bytes))
    }

    /// Stores a symlink of the plan: `target` is relative to `dest`'s dir as the plan has it;
    /// it is made relative to the dir the link lands in.
    fn link(&mut self, dest: &Path, target: &str) -> Result<()> {
        self.links = 0;
        let dir = dest.parent().unwrap_or(Path::new("/"));
        let aim = normalize(&dir.join(target));
        let at = self.resolve_parent(dest)?;
        self.tree.add(&at, Node::Symlink(relative_link(&at, &aim)))
    }

    /// Where `dest` lands: its dir resolved, then, when `dest` on the host is a symlink to
    /// the same file as `source`, where that symlink leads.
    fn resolve_file(&mut self, dest: &Path, source: &Path) -> Result<PathBuf> {
        let at = self.resolve_parent(dest)?;
        let is_link = std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link || !same_file(&at, source) {
            return Ok(at);
        }
        let target = self.host_link(&at)?;
        self.resolve_file(&target, source)
    }

    /// `path` with its dir replaced by the real dir it names, through the tree's symlinks
    /// first and the host's next (stored as they are met).
    fn resolve_parent(&mut self, path: &Path) -> Result<PathBuf> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            bail!("{}: not a path to a file", path.display());
        };
        Ok(self.resolve_dir(dir)?.join(name))
    }

    fn resolve_dir(&mut self, dir: &Path) -> Result<PathBuf> {
        let mut real = PathBuf::from("/");
        for part in normalize(dir).components().skip(1) {
            let next = real.join(part);
            real = match self.tree.get(&next) {
                Some(Node::Symlink(target)) => {
                    let aim = normalize(&real.join(target));
                    self.follow(&next)?;
                    self.resolve_dir(&aim)?
                }
                Some(_) => next,
                None if is_host_link(&next) => {
                    let aim = self.host_link(&next)?;
                    self.resolve_dir(&aim)?
                }
                None => next,
            };
        }
        Ok(real)
    }

    /// Stores the host symlink `link` (whose dir is real) and returns the absolute path it
    /// leads to.
    fn host_link(&mut self, link: &Path) -> Result<PathBuf> {
        self.follow(link)?;
        let target = std::fs::read_link(link).map_err(|e| crate::elf::io_error(link, &e))?;
        let dir = link.parent().unwrap_or(Path::new("/"));
        let aim = normalize(&dir.join(&target));
        let stored = if target.is_absolute() {
            relative_link(link, &aim)
        } else {
            target.to_string_lossy().into_owned()
        };
        debug!("{} -> {stored}", link.display());
        self.tree.add(link, Node::Symlink(stored))?;
        Ok(aim)
    }

    fn follow(&mut self, link: &Path) -> Result<()> {
        self.links += 1;
        if self.links > MAX_LINKS {
            bail!("{}: too many levels of symbolic links", link.display());
        }
        Ok(())
    }
}

fn is_host_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A host tree in a temporary dir, shaped like merged /usr: `lib -> usr/lib`, and an
    /// absolute link in `usr/lib64`.
    #[test]
    fn host_symlinks_on_the_way_are_stored_and_absolute_ones_made_relative() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        std::fs::create_dir_all(h.join("usr/lib/x")).unwrap();
        std::fs::create_dir_all(h.join("usr/lib64")).unwrap();
        std::fs::write(h.join("usr/lib/x/ld.so.1.0"), "ld").unwrap();
        symlink("ld.so.1.0", h.join("usr/lib/x/ld.so")).unwrap();
        symlink("usr/lib", h.join("lib")).unwrap();
        symlink(h.join("lib/x/ld.so"), h.join("usr/lib64/ld.so")).unwrap();

        let mut m = Mirror::default();
        let dest = h.join("usr/lib64/ld.so");
        m.file(&dest, &dest, None).unwrap();
        let rel = |p: &str| h.join(p);
        let link = |t: &str| Some(Node::Symlink(t.to_string()));
        assert_eq!(
            m.tree.get(&rel("usr/lib64/ld.so")).cloned(),
            link("../../lib/x/ld.so")
        );
        assert_eq!(m.tree.get(&rel("lib")).cloned(), link("usr/lib"));
        assert_eq!(
            m.tree.get(&rel("usr/lib/x/ld.so")).cloned(),
            link("ld.so.1.0")
        );
        assert!(matches!(
            m.tree.get(&rel("usr/lib/x/ld.so.1.0")),
            Some(Node::File { bytes, .. }) if bytes == b"ld"
        ));
    }
}
