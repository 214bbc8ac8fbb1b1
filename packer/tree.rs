//! An image tree: the dirs, regular files and symlinks of a root file system, held in memory
//! by path, and the two ways it is written out: as a dir, or as a tar stream. Both are
//! reproducible: entries in path order, times from the files and the `Epoch` alone, owner 0:0
//! and no user or group names in the tar, dirs 0755, so the same tree gives the same bytes on
//! any host.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// `mtime`: the host file's, or `None` for a file made by tote.
    File {
        mode: u32,
        bytes: Vec<u8>,
        mtime: Option<u64>,
    },
    Symlink(String),
}

impl Node {
    /// A file made by tote, not copied from the host.
    pub fn made(mode: u32, bytes: Vec<u8>) -> Node {
        Node::File {
            mode,
            bytes,
            mtime: None,
        }
    }

    /// A file's own time: the host file's, None for a made file or another kind of entry.
    fn mtime(&self) -> Option<u64> {
        match self {
            Node::File { mtime, .. } => *mtime,
            _ => None,
        }
    }
}

/// The times a tree is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// Seconds since 1970 of dirs, symlinks and files made by tote: `SOURCE_DATE_EPOCH`, or 0.
    pub time: u64,
    /// Whether a host file newer than `time` is written at `time` (`SOURCE_DATE_EPOCH` is
    /// set). Otherwise host files keep their own time: a program may compare it with a cache
    /// made from the file (python's `.pyc` hold the time of their source).
    pub clamp: bool,
}

impl Epoch {
    /// The time written for an entry whose own time is `mtime`.
    fn of(self, mtime: Option<u64>) -> u64 {
        match mtime {
            Some(t) if !self.clamp || t < self.time => t,
            _ => self.time,
        }
    }
}

/// Entries by path relative to the root (no leading `/`); every parent of an entry is a
/// `Dir` entry too.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// The entry at absolute path `path`, if any.
    pub fn get(&self, path: &Path) -> Option<&Node> {
        self.nodes.get(&key(path).ok()?)
    }

    /// Adds `node` at absolute path `path`, with its parent dirs. An entry already there
    /// stays (the first one wins); a parent that is not a dir in the tree is an error.
    pub fn add(&mut self, path: &Path, node: Node) -> Result<()> {
        let key = key(path)?;
        let mut at = 0;
        while let Some(slash) = key[at..].find('/') {
            let parent = &key[..at + slash];
            match self.nodes.get(parent) {
                None => {
                    self.nodes.insert(parent.to_string(), Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(_) => bail!(
                    "{}: cannot be stored, /{parent} is not a dir in the image",
                    path.display()
                ),
            }
            at += slash + 1;
        }
        self.nodes.entry(key).or_insert(node);
        Ok(())
    }

    /// The regular files: count and bytes.
    pub fn totals(&self) -> (usize, u64) {
        self.nodes
            .values()
            .fold((0, 0), |(n, size), node| match node {
                Node::File { bytes, .. } => (n + 1, size + bytes.len() as u64),
                _ => (n, size),
            })
    }

    /// Writes the tree into `root`, an existing empty dir, with the times of `epoch` (the
    /// root's too).
    pub fn write_dir(&self, root: &Path, epoch: Epoch) -> Result<()> {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| crate::elf::io_error(root, &e))?;
        for (path, node) in &self.nodes {
            let dest = root.join(path);
            let made = match node {
                Node::Dir => std::fs::create_dir(&dest).and_then(|_| set_mode(&dest, 0o755)),
                Node::File { mode, bytes, .. } => {
                    std::fs::write(&dest, bytes).and_then(|_| set_mode(&dest, *mode))
                }
                Node::Symlink(target) => std::os::unix::fs::symlink(target, &dest),
            };
            made.map_err(|e| crate::elf::io_error(&dest, &e))?;
        }
        // Children before their dirs: setting a time changes no dir's mtime, making an entry
        // does.
        for (path, node) in self.nodes.iter().rev() {
            set_time(&root.join(path), epoch.of(node.mtime()))?;
        }
        set_time(root, epoch.time)
    }

    /// Writes the tree as a tar stream into `out` and returns `out`. With `below`, the dirs
    /// above that dir are left out (the dir itself and what it holds stay): extracted onto
    /// another root, such a tar leaves the modes and times of the dirs on the way alone, and
    /// creates the missing ones.
    pub fn write_tar<W: Write>(&self, out: W, epoch: Epoch, below: Option<&Path>) -> Result<W> {
        let above: Vec<String> = match below {
            Some(dir) => dir
                .ancestors()
                .skip(1)
                .filter(|a| a.parent().is_some())
                .map(key)
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let mut tar = tar::Builder::new(out);
        for (path, node) in &self.nodes {
            if matches!(node, Node::Dir) && above.contains(path) {
                continue;
            }
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(epoch.of(node.mtime()));
            header.set_size(0);
            match node {
                Node::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Node::File { mode, bytes, .. } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(bytes.len() as u64);
                    tar.append_data(&mut header, path, bytes.as_slice())?;
                }
                Node::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    tar.append_link(&mut header, path, target)?;
                }
            }
        }
        Ok(tar.into_inner()?)
    }
}

/// The key of an absolute, plain path: relative to the root, `.` and `..` refused.
fn key(path: &Path) -> Result<String> {
    let plain = path.is_absolute()
        && path
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)));
    let text = path
        .to_str()
        .with_context(|| format!("{}: path is not UTF-8", path.display()))?;
    let key = text.trim_start_matches('/').trim_end_matches('/');
    if !plain || key.is_empty() {
        bail!(
            "{}: cannot be stored in an image (not a plain absolute path)",
            path.display()
        );
    }
    Ok(key.to_string())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Sets access and modification time of `path` itself (a symlink is not followed).
fn set_time(path: &Path, seconds: u64) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(seconds as i64, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| anyhow::anyhow!("{}: cannot set its time: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        let mut t = Tree::new();
        let file = |b: &[u8]| Node::File {
            mode: 0o644,
            bytes: b.to_vec(),
            mtime: Some(5),
        };
        t.add(Path::new("/usr/lib/b"), file(b"b")).unwrap();
        t.add(Path::new("/lib"), Node::Symlink("usr/lib".into()))
            .unwrap();
        t.add(Path::new("/usr/bin/a"), file(b"a")).unwrap();
        t
    }

    #[test]
    fn parents_become_dirs_and_the_first_entry_wins() {
        let mut t = tree();
        t.add(Path::new("/lib"), Node::Dir).unwrap();
        assert_eq!(t.get(Path::new("/usr")), Some(&Node::Dir));
        assert_eq!(
            t.get(Path::new("/lib")),
            Some(&Node::Symlink("usr/lib".into()))
        );
        assert!(t.add(Path::new("/lib/x"), Node::Dir).is_err());
        assert!(t.add(Path::new("/usr/../x"), Node::Dir).is_err());
        assert_eq!(t.totals(), (2, 2));
    }

    #[test]
    fn tar_entries_are_sorted_and_owned_by_root_at_their_clamped_times() {
        let epoch = Epoch {
            time: 7,
            clamp: true,
        };
        let bytes = tree().write_tar(Vec::new(), epoch, None).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                (path, h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap())
            })
            .collect();
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "lib",
                "usr/",
                "usr/bin/",
                "usr/bin/a",
                "usr/lib/",
                "usr/lib/b"
            ]
        );
        assert!(entries.iter().all(|e| e.1 == 0 && e.2 == 0));
        let times: Vec<u64> = entries.iter().map(|e| e.3).collect();
        assert_eq!(times, [7, 7, 7, 5, 7, 5]);
        assert_eq!(bytes, tree().write_tar(Vec::new(), epoch, None).unwrap());
    }

    #[test]
    fn a_tar_below_a_dir_leaves_out_the_dirs_above_it() {
        let epoch = Epoch {
            time: 0,
            clamp: false,
        };
        let mut t = Tree::new();
        t.add(
            Path::new("/tmp/a/jq/bin/jq"),
            Node::made(0o755, b"x".to_vec()),
        )
        .unwrap();
        let bytes = t
            .write_tar(Vec::new(), epoch, Some(Path::new("/tmp/a/jq")))
            .unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(paths, ["tmp/a/jq/", "tmp/a/jq/bin/", "tmp/a/jq/bin/jq"]);
    }

    #[test]
    fn a_host_file_newer_than_the_epoch_gets_the_epoch_only_when_clamped() {
        let at = |time, clamp| Epoch { time, clamp }.of(Some(9));
        assert_eq!((at(7, true), at(7, false), at(10, true)), (7, 9, 9));
        assert_eq!(
            Epoch {
                time: 7,
                clamp: false
            }
            .of(None),
            7
        );
    }
}
