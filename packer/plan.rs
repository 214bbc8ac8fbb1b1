//! The plan: everything a bundle will hold before the closure is resolved. The programs, the
//! files and trees added by the user (`--add`), by built-in knowledge or by detection, the
//! extra libraries (`--lib`) and the variables to set at run time (`--env`). Paths are
//! host paths (sources) and absolute bundle paths (dests).

use crate::elf::io_error;
use anyhow::{bail, Context, Result};
use log::{debug, warn};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use walkdir::WalkDir;

/// A program the bundle starts, by the name it is invoked under.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    /// Canonical host path, and the path it has in the bundle.
    pub path: PathBuf,
}

/// A regular file to store: read from `source`, stored at `dest`.
#[derive(Debug, Clone)]
pub struct Added {
    pub source: PathBuf,
    pub dest: PathBuf,
}

/// A symlink to store at `dest`, pointing to `target` (relative).
#[derive(Debug, Clone)]
pub struct Link {
    pub dest: PathBuf,
    pub target: String,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub programs: Vec<Program>,
    pub files: Vec<Added>,
    pub links: Vec<Link>,
    /// `--lib`: sonames or paths, resolved like a need of the first program.
    pub libs: Vec<String>,
    /// Variables set at run time when the user has not set them; the first setting wins.
    pub vars: Vec<(String, String)>,
    /// Files already in the plan by (device, inode): a second name becomes a symlink.
    seen: HashMap<(u64, u64), PathBuf>,
    /// Every dest in the plan, so nothing is stored twice.
    dests: HashMap<PathBuf, ()>,
}

impl Plan {
    pub fn new() -> Plan {
        Plan::default()
    }

    pub fn add_program(&mut self, name: &str, path: &Path) -> Result<()> {
        if self.programs.iter().any(|p| p.name == name) {
            bail!(
                "{}: a program named {name} is in the bundle already",
                path.display()
            );
        }
        let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
        warn_special_bits(path, meta.mode());
        self.seen
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| path.to_path_buf());
        self.dests.insert(path.to_path_buf(), ());
        self.programs.push(Program {
            name: name.to_string(),
            path: path.to_path_buf(),
        });
        Ok(())
    }

    /// `--add PATH[:DEST]`: DEST defaults to PATH made absolute.
    pub fn add_spec(&mut self, spec: &str) -> Result<()> {
        let (source, dest) = match spec.split_once(':') {
            Some((s, d)) => (PathBuf::from(s), PathBuf::from(d)),
            None => (PathBuf::from(spec), absolute(Path::new(spec))?),
        };
        if !dest.is_absolute() {
            bail!("{spec}: the destination must be an absolute path in the bundle");
        }
        if let Err(e) = std::fs::metadata(&source) {
            return Err(anyhow::anyhow!("{} for --add", io_error(&source, &e)));
        }
        self.add_path(&source, &normalize(&dest))
    }

    /// Adds a file, or a whole tree, at `dest`. In a tree, a symlink that leads to a file of
    /// the same tree stays a symlink; one that leads elsewhere is stored as the file it
    /// leads to; a dangling one is skipped.
    pub fn add_path(&mut self, source: &Path, dest: &Path) -> Result<()> {
        self.add_tree(source, dest, &|_| false)
    }

    /// Like `add_path`, leaving out every dir or file for which `skip` (given the path
    /// relative to `source`) is true.
    pub fn add_tree(
        &mut self,
        source: &Path,
        dest: &Path,
        skip: &dyn Fn(&Path) -> bool,
    ) -> Result<()> {
        let meta = std::fs::metadata(source).map_err(|e| io_error(source, &e))?;
        if !meta.is_dir() {
            return self.add_file(source, dest);
        }
        let root = std::fs::canonicalize(source).map_err(|e| io_error(source, &e))?;
        let walk = WalkDir::new(&root).follow_links(false).sort_by_file_name();
        let entries = walk.into_iter().filter_entry(|e| {
            e.path()
                .strip_prefix(&root)
                .map_or(true, |rel| rel.as_os_str().is_empty() || !skip(rel))
        });
        for entry in entries {
            let entry =
                entry.with_context(|| format!("{}: cannot read the tree", source.display()))?;
            let rel = entry
                .path()
                .strip_prefix(&root)
                .expect("walked below its root");
            let to = dest.join(rel);
            if entry.path_is_symlink() {
                self.add_tree_link(entry.path(), &root, dest, &to)?;
            } else if entry.file_type().is_file() {
                self.add_file(entry.path(), &to)?;
            }
        }
        Ok(())
    }

    fn add_tree_link(&mut self, link: &Path, root: &Path, dest: &Path, to: &Path) -> Result<()> {
        let Ok(resolved) = std::fs::canonicalize(link) else {
            debug!("{}: dangling symlink, skipped", link.display());
            return Ok(());
        };
        if !resolved.is_file() {
            debug!("{}: symlink to a dir, skipped", link.display());
            return Ok(());
        }
        match resolved.strip_prefix(root) {
            Ok(inside) => {
                self.add_link(to, &dest.join(inside));
                Ok(())
            }
            Err(_) => self.add_file(&resolved, to),
        }
    }

    /// Adds one regular file (a symlink is followed). A file already in the plan under
    /// another name (a hard link, or reached twice) becomes a symlink to the first name.
    /// A dest the plan holds already is kept as it is when it is the same file, and an
    /// error when it is another: one of the two would be lost.
    pub fn add_file(&mut self, source: &Path, dest: &Path) -> Result<()> {
        let meta = std::fs::metadata(source).map_err(|e| io_error(source, &e))?;
        if !meta.is_file() {
            bail!("{}: not a regular file", source.display());
        }
        if self.dests.contains_key(dest) {
            return match self.source_at(dest) {
                Some(other) if !same_inode(other, &meta) => bail!(
                    "{}: cannot go at {} in the bundle: {} is there already; give it another \
                     DEST",
                    source.display(),
                    dest.display(),
                    other.display()
                ),
                _ => Ok(()),
            };
        }
        warn_special_bits(source, meta.mode());
        if let Some(first) = self.seen.get(&(meta.dev(), meta.ino())).cloned() {
            self.add_link(dest, &first);
            return Ok(());
        }
        self.seen
            .insert((meta.dev(), meta.ino()), dest.to_path_buf());
        self.dests.insert(dest.to_path_buf(), ());
        self.files.push(Added {
            source: source.to_path_buf(),
            dest: dest.to_path_buf(),
        });
        Ok(())
    }

    /// The host file the plan stores at `dest`, if a program or a regular file goes there.
    fn source_at(&self, dest: &Path) -> Option<&Path> {
        let program = self
            .programs
            .iter()
            .find(|p| p.path == dest)
            .map(|p| &p.path);
        let file = || {
            self.files
                .iter()
                .find(|f| f.dest == dest)
                .map(|f| &f.source)
        };
        program.or_else(file).map(PathBuf::as_path)
    }

    fn add_link(&mut self, dest: &Path, target: &Path) {
        if self.dests.insert(dest.to_path_buf(), ()).is_none() {
            let target = relative_link(dest, target);
            self.links.push(Link {
                dest: dest.to_path_buf(),
                target,
            });
        }
    }

    /// Sets `name` unless already set in the plan: the user's `--env` comes first.
    pub fn add_var(&mut self, name: &str, value: &str) {
        if !self.vars.iter().any(|(n, _)| n == name) {
            self.vars.push((name.to_string(), value.to_string()));
        }
    }
}

/// `--env NAME=VALUE` split and checked, as clap's value parser: a bad one is a usage error.
pub fn parse_var_spec(spec: &str) -> std::result::Result<(String, String), String> {
    let Some((name, value)) = spec.split_once('=') else {
        return Err("no `=` in it: write NAME=VALUE".into());
    };
    if name.is_empty() {
        return Err("no name before the `=`: write NAME=VALUE".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "`{name}` is not a variable name: use letters, digits and _"
        ));
    }
    if name.starts_with("LD_") {
        return Err(format!(
            "{name}: tote sets no LD_* variable (the bundle's programs find their libraries \
             without them)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Whether the file at `path` is the one `meta` describes.
fn same_inode(path: &Path, meta: &std::fs::Metadata) -> bool {
    std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
}

/// Says that the setuid or setgid bit of `path` is not carried into the bundle or image.
fn warn_special_bits(path: &Path, mode: u32) {
    let bits = match (mode & 0o4000 != 0, mode & 0o2000 != 0) {
        (true, true) => "setuid and setgid bits are",
        (true, false) => "setuid bit is",
        (false, true) => "setgid bit is",
        (false, false) => return,
    };
    warn!(
        "{}: its {bits} not kept: packed, it runs with the rights of whoever starts it",
        path.display()
    );
}

fn absolute(p: &Path) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current dir")?;
    Ok(normalize(&cwd.join(p)))
}

/// Folds `.` and `..` components lexically.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A symlink target that leads from the link at `link` to `target`, both absolute.
pub fn relative_link(link: &Path, target: &Path) -> String {
    let from = link.parent().unwrap_or(Path::new("/"));
    let to = target.parent().unwrap_or(Path::new("/"));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let way = relative_way(from, to);
    if way.is_empty() {
        name.into_owned()
    } else {
        format!("{way}/{name}")
    }
}

/// The relative path from dir `from` to dir `to`: `..` up to their common part, then down.
pub fn relative_way(from: &Path, to: &Path) -> String {
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let ups = (common..a.len()).map(|_| "..".to_string());
    let downs = b[common..]
        .iter()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    ups.chain(downs).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn relative_link_reaches_the_target() {
        let f = |a: &str, b: &str| relative_link(Path::new(a), Path::new(b));
        assert_eq!(
            f("/lib/x86_64-linux-gnu/ld.so", "/lib64/ld.so"),
            "../../lib64/ld.so"
        );
        assert_eq!(f("/lib/a.so", "/lib/b.so"), "b.so");
    }

    #[test]
    fn a_tree_keeps_inner_links_and_stores_outer_ones_as_files() {
        let host = tempfile::tempdir().unwrap();
        let tree = host.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/a"), "a").unwrap();
        std::fs::write(host.path().join("outside"), "o").unwrap();
        symlink("sub/a", tree.join("inner")).unwrap();
        symlink(host.path().join("outside"), tree.join("outer")).unwrap();
        symlink("missing", tree.join("dangling")).unwrap();
        std::fs::hard_link(tree.join("sub/a"), tree.join("hard")).unwrap();

        let mut plan = Plan::new();
        plan.add_path(&tree, Path::new("/opt/t")).unwrap();
        let files: Vec<_> = plan
            .files
            .iter()
            .map(|f| f.dest.to_str().unwrap())
            .collect();
        // Walked in name order: `hard` comes first, so `sub/a`, the same inode, links to it.
        assert_eq!(files, ["/opt/t/hard", "/opt/t/outer"]);
        let links: Vec<_> = plan
            .links
            .iter()
            .map(|l| (l.dest.to_str().unwrap(), l.target.as_str()))
            .collect();
        assert_eq!(
            links,
            [("/opt/t/inner", "sub/a"), ("/opt/t/sub/a", "../hard")]
        );
    }

    #[test]
    fn env_specs_are_checked() {
        let (name, value) = parse_var_spec("A=1=2").unwrap();
        assert_eq!((name.as_str(), value.as_str()), ("A", "1=2"));
        let mut plan = Plan::new();
        plan.add_var(&name, &value);
        plan.add_var("A", "later");
        assert_eq!(plan.vars, [("A".to_string(), "1=2".to_string())]);
        for bad in ["NOVALUE", "=x", "LD_PRELOAD=/x.so", "A-B=1", "A B=1"] {
            assert!(parse_var_spec(bad).is_err(), "{bad}");
        }
    }
}
