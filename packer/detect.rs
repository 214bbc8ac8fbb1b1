//! Detection of a program's data files through the Debian package database: the files of the
//! package that owns the program and, on request, of the packages it depends on, minus the base
//! system that every Debian host has. Everything is asked of `dpkg-query`, run in the C locale so
//! that its output can be parsed; file names are kept as the bytes dpkg stores.

use anyhow::{bail, Context, Result};
use log::{debug, info};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Dirs of documentation, bug-report scripts and shell completions: a program never reads them
/// to do its work, so their files are left out.
const UNNEEDED_DIRS: &[&str] = &[
    "/usr/share/doc",
    "/usr/share/doc-base",
    "/usr/share/gtk-doc",
    "/usr/share/help",
    "/usr/share/info",
    "/usr/share/man",
    "/usr/share/lintian",
    "/usr/share/bug",
    "/usr/share/bash-completion",
    "/usr/share/zsh",
    "/usr/share/fish",
    "/etc/bash_completion.d",
];

/// The priorities that, with Essential, make a package part of the base system.
const BASE_PRIORITIES: &[&str] = &["required", "important"];

/// The fields `Database::load` asks for, one package a line. Pre-Depends and Depends are joined,
/// as both must be installed for the package to work.
const FIELDS: &str = "${binary:Package}\t${Package}\t${Architecture}\t${db:Status-Status}\t\
                      ${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\t${Provides}\n";

/// The other files of the Debian package that owns `program` (found with `dpkg-query -S` on the
/// program's path, its canonical path, and their twins across a merged /usr), listed with
/// `dpkg-query -L`: regular files, and symlinks to them, that exist on this host, without the
/// files under `UNNEEDED_DIRS`. With `with_depends`, also the files of the packages it
/// depends on (Pre-Depends and Depends, recursively; of alternatives, the first installed one),
/// minus the base system. Returns absolute paths, sorted, deduplicated.
pub fn package_files(program: &Path, with_depends: bool) -> Result<Vec<PathBuf>> {
    let owners = program_owners(program)?;
    info!(
        "{}: owned by package {}",
        program.display(),
        owners.join(", ")
    );
    let packages = if with_depends {
        Database::load()?.depends_closure(&owners)
    } else {
        owners
    };
    let mut files = BTreeSet::new();
    for package in &packages {
        let listed = listed_files(package)?;
        debug!("{package}: {} files", listed.len());
        files.extend(listed);
    }
    info!(
        "{}: {} files from {}",
        program.display(),
        files.len(),
        packages.join(", ")
    );
    Ok(files.into_iter().collect())
}

/// The packages that own `program`, trying each of its candidate paths in turn.
fn program_owners(program: &Path) -> Result<Vec<String>> {
    for path in candidate_paths(program) {
        let owners = path_owners(&path)
            .with_context(|| format!("{}: cannot ask dpkg who owns it", program.display()))?;
        if !owners.is_empty() {
            debug!("{}: found in the package database", path.display());
            return Ok(owners);
        }
    }
    bail!(
        "{}: no Debian package owns it (--detect needs dpkg)",
        program.display()
    )
}

/// The paths under which dpkg may know `program`: as given (made absolute), canonical, and each
/// of these under the other half of a merged /usr, as dpkg records `/bin/sh`, not `/usr/bin/sh`.
fn candidate_paths(program: &Path) -> Vec<PathBuf> {
    let given = std::path::absolute(program).unwrap_or_else(|_| program.to_path_buf());
    let mut paths = vec![given];
    paths.extend(fs::canonicalize(program).ok());
    let twins: Vec<PathBuf> = paths.iter().filter_map(|p| usr_twin(p)).collect();
    paths.extend(twins);
    let mut seen = HashSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    paths
}

/// `path` on the other side of /usr (`/bin/x` for `/usr/bin/x` and back), when both name the
/// same file.
fn usr_twin(path: &Path) -> Option<PathBuf> {
    let twin = match path.strip_prefix("/usr") {
        Ok(rest) => Path::new("/").join(rest),
        Err(_) => Path::new("/usr").join(path.strip_prefix("/").ok()?),
    };
    let (a, b) = (fs::metadata(path).ok()?, fs::metadata(&twin).ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(twin)
}

/// The packages whose file is at `path`. Cases:
/// - no diversion: the owners dpkg lists;
/// - a package diverted others away from `path`: the file there is that package's own;
/// - `path` is where a diversion moved a file: the file belongs to the other owners of the path
///   it came from.
fn path_owners(path: &Path) -> Result<Vec<String>> {
    let found = search(path)?;
    match found.diversion {
        Some(d) if d.from == path && d.by.as_ref().is_some_and(|by| found.owners.contains(by)) => {
            Ok(d.by.into_iter().collect())
        }
        Some(d) if d.to == path => {
            let others = search(&d.from)?.owners;
            Ok(others
                .into_iter()
                .filter(|o| Some(o) != d.by.as_ref())
                .collect())
        }
        _ => Ok(found.owners),
    }
}

/// What `dpkg-query -S` says about one path.
#[derive(Debug, Default, PartialEq)]
struct Search {
    /// The packages that list the path.
    owners: Vec<String>,
    diversion: Option<Diversion>,
}

/// A dpkg diversion: the file a package ships as `from` is installed as `to`.
#[derive(Debug, Default, PartialEq)]
struct Diversion {
    /// The diverting package; None for a local diversion made by the administrator.
    by: Option<String>,
    from: PathBuf,
    to: PathBuf,
}

/// Runs `dpkg-query -S` on `path`; a path no package lists gives no owners.
fn search(path: &Path) -> Result<Search> {
    let output = dpkg_query(&[OsStr::new("-S"), path.as_os_str()])?;
    Ok(parse_search(&output.stdout, path))
}

/// Parses `dpkg-query -S` output: `pkg1, pkg2: PATH` lines, and `diversion by PKG from: PATH`,
/// `diversion by PKG to: PATH`, `local diversion from: PATH` lines.
fn parse_search(stdout: &[u8], path: &Path) -> Search {
    let mut search = Search::default();
    for line in stdout.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"diversion by ") {
            if let Some((by, rest)) = split_once(rest, b" ") {
                add_diversion(&mut search, Some(by), rest);
            }
        } else if let Some(rest) = line.strip_prefix(b"local diversion ") {
            add_diversion(&mut search, None, rest);
        } else {
            add_owners(&mut search, line, path);
        }
    }
    search
}

/// Takes `from: PATH` or `to: PATH`, the end of a diversion line.
fn add_diversion(search: &mut Search, by: Option<&[u8]>, rest: &[u8]) {
    let diversion = search.diversion.get_or_insert_with(Diversion::default);
    diversion.by = by.map(|b| String::from_utf8_lossy(b).into_owned());
    if let Some(from) = rest.strip_prefix(b"from: ") {
        diversion.from = bytes_path(from);
    } else if let Some(to) = rest.strip_prefix(b"to: ") {
        diversion.to = bytes_path(to);
    }
}

/// Takes `pkg1, pkg2: PATH` when PATH is the one asked about.
fn add_owners(search: &mut Search, line: &[u8], path: &Path) {
    let Some((packages, listed)) = split_once(line, b": ") else {
        return;
    };
    if bytes_path(listed) != path {
        return;
    }
    let packages = String::from_utf8_lossy(packages);
    search
        .owners
        .extend(packages.split(", ").map(|p| p.trim().to_string()));
}

/// The files `package` installed that `wanted` keeps, as `dpkg-query -L` lists them.
fn listed_files(package: &str) -> Result<Vec<PathBuf>> {
    let output = dpkg_query(&[OsStr::new("-L"), OsStr::new(package)])?;
    if !output.status.success() {
        bail!(
            "{package}: dpkg-query cannot list its files: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(parse_listing(&output.stdout)
        .into_iter()
        .filter(|path| wanted(path))
        .collect())
}

/// Parses `dpkg-query -L` output. A path followed by `diverted by PKG to: NEW` (or `locally
/// diverted to: NEW`) is installed as NEW; `package diverts others to:` lines name other
/// packages' files and are skipped.
fn parse_listing(stdout: &[u8]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for line in stdout.split(|&b| b == b'\n') {
        if line.starts_with(b"/") {
            paths.push(bytes_path(line));
        } else if line.starts_with(b"diverted by ") || line.starts_with(b"locally diverted ") {
            if let (Some(last), Some((_, to))) = (paths.last_mut(), split_once(line, b" to: ")) {
                *last = bytes_path(to);
            }
        }
    }
    paths
}

/// Whether a listed path is a regular file on this host, or a symlink to one, outside
/// `UNNEEDED_DIRS`. Symlinks to dirs go with the dirs: on a merged /usr, `/bin` is one.
fn wanted(path: &Path) -> bool {
    if UNNEEDED_DIRS.iter().any(|dir| path.starts_with(dir)) {
        return false;
    }
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Runs `dpkg-query` in the C locale, so its words do not depend on the user's language.
fn dpkg_query(args: &[&OsStr]) -> Result<Output> {
    Command::new("dpkg-query")
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .context("dpkg-query: cannot run it (--detect needs dpkg)")
}

/// Splits `bytes` at the first `separator`.
fn split_once<'a>(bytes: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = bytes
        .windows(separator.len())
        .position(|w| w == separator)?;
    Some((&bytes[..at], &bytes[at + separator.len()..]))
}

fn bytes_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from(OsStr::from_bytes(bytes)))
}

/// The installed packages, as far as their dependencies go.
struct Database {
    packages: Vec<Package>,
    /// Indexes into `packages` by binary:Package (`jq`, `libc6:amd64`).
    by_id: HashMap<String, usize>,
    /// Indexes into `packages` by bare name, every architecture.
    by_name: HashMap<String, Vec<usize>>,
    /// Indexes into `packages` by the virtual names they provide.
    providers: HashMap<String, Vec<usize>>,
}

struct Package {
    /// The binary:Package name, arch-qualified when several architectures may be installed.
    id: String,
    arch: String,
    /// Essential, or of a base priority: the seeds of the base system.
    base_seed: bool,
    /// Pre-Depends and Depends: every group must be met by one of its alternatives.
    depends: Vec<Vec<Dependency>>,
}

/// One alternative of a dependency: a package name with an optional arch qualifier; the
/// version constraint does not matter, as dpkg already checked it.
#[derive(Debug, PartialEq)]
struct Dependency {
    name: String,
    arch: Option<String>,
}

impl Database {
    /// Reads every installed package with `dpkg-query -W`.
    fn load() -> Result<Database> {
        let output = dpkg_query(&[OsStr::new("-W"), OsStr::new("-f"), OsStr::new(FIELDS)])?;
        if !output.status.success() {
            bail!(
                "dpkg-query: cannot read the package database: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut db = Database {
            packages: Vec::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            providers: HashMap::new(),
        };
        text.lines().for_each(|line| db.add(line));
        Ok(db)
    }

    /// Adds one line of `FIELDS` output, if that package is installed.
    fn add(&mut self, line: &str) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, name, arch, status, essential, priority, depends, provides] = fields[..] else {
            return;
        };
        if matches!(status, "not-installed" | "config-files") {
            return;
        }
        let index = self.packages.len();
        self.by_id.insert(id.to_string(), index);
        self.by_name
            .entry(name.to_string())
            .or_default()
            .push(index);
        for provided in parse_depends(provides).into_iter().flatten() {
            self.providers.entry(provided.name).or_default().push(index);
        }
        self.packages.push(Package {
            id: id.to_string(),
            arch: arch.to_string(),
            base_seed: essential == "yes" || BASE_PRIORITIES.contains(&priority),
            depends: parse_depends(depends),
        });
    }

    /// `owners` and every package they depend on, outside the base system. A package the
    /// database does not know is kept as it is, without dependencies.
    fn depends_closure(&self, owners: &[String]) -> Vec<String> {
        let base = self.base_system();
        let known: Vec<usize> = owners
            .iter()
            .filter_map(|o| self.by_id.get(o))
            .copied()
            .collect();
        let unknown = owners
            .iter()
            .filter(|o| !self.by_id.contains_key(*o))
            .cloned();
        let closure = self.closure(&known, |i| {
            let skip = base.contains(&i);
            if skip {
                debug!("{}: part of the base system, left out", self.packages[i].id);
            }
            skip
        });
        closure
            .into_iter()
            .map(|i| self.packages[i].id.clone())
            .chain(unknown)
            .collect()
    }

    /// The base system: the Essential packages and those of a base priority, with everything
    /// they depend on, as no Debian system has them without it.
    fn base_system(&self) -> HashSet<usize> {
        let seeds: Vec<usize> = (0..self.packages.len())
            .filter(|&i| self.packages[i].base_seed)
            .collect();
        self.closure(&seeds, |_| false).into_iter().collect()
    }

    /// `roots` and what they depend on, breadth-first, not entering packages `skip` refuses.
    fn closure(&self, roots: &[usize], skip: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut seen: HashSet<usize> = roots.iter().copied().collect();
        let mut queue: VecDeque<usize> = roots.iter().copied().collect();
        let mut order = Vec::new();
        while let Some(i) = queue.pop_front() {
            order.push(i);
            let package = &self.packages[i];
            for group in &package.depends {
                let Some(dep) = group.iter().find_map(|d| self.resolve(d, &package.arch)) else {
                    continue;
                };
                if seen.insert(dep) && !skip(dep) {
                    queue.push_back(dep);
                }
            }
        }
        order
    }

    /// The installed package that meets `dependency` for a package of architecture `arch`:
    /// a real package of that name before a provider of it; among several, the requested
    /// architecture, then `all`, then any other.
    fn resolve(&self, dependency: &Dependency, arch: &str) -> Option<usize> {
        let wanted = match dependency.arch.as_deref() {
            None | Some("any") | Some("native") => arch,
            Some(qualified) => qualified,
        };
        let pick = |candidates: &Vec<usize>| {
            let by_arch = |a: &str| candidates.iter().find(|&&i| self.packages[i].arch == a);
            by_arch(wanted)
                .or_else(|| by_arch("all"))
                .or(candidates.first())
                .copied()
        };
        self.by_name
            .get(&dependency.name)
            .and_then(pick)
            .or_else(|| self.providers.get(&dependency.name).and_then(pick))
    }
}

/// Parses a Depends-like field: `a (>= 1) | b:any, c` gives `[[a, b], [c]]`.
fn parse_depends(field: &str) -> Vec<Vec<Dependency>> {
    field
        .split(',')
        .map(|group| group.split('|').filter_map(parse_dependency).collect())
        .filter(|group: &Vec<Dependency>| !group.is_empty())
        .collect()
}

/// Parses one alternative, `name[:arch] [(op version)]`.
fn parse_dependency(text: &str) -> Option<Dependency> {
    let word = text.trim().split([' ', '(', '[', '<']).next()?;
    if word.is_empty() {
        return None;
    }
    let (name, arch) = match word.split_once(':') {
        Some((name, arch)) => (name, Some(arch.to_string())),
        None => (word, None),
    };
    Some(Dependency {
        name: name.to_string(),
        arch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_by(package: &str) -> Vec<PathBuf> {
        listed_files(package).unwrap()
    }

    #[test]
    fn jq_gives_its_files_without_docs() {
        let files = package_files(Path::new("/usr/bin/jq"), false).unwrap();
        assert!(files.contains(&PathBuf::from("/usr/bin/jq")), "{files:?}");
        assert!(!files.iter().any(|f| f.starts_with("/usr/share/doc")));
        assert!(!files.iter().any(|f| f.starts_with("/usr/share/man")));
        assert!(
            files.windows(2).all(|w| w[0] < w[1]),
            "sorted, deduplicated"
        );
    }

    #[test]
    fn depends_add_libraries_but_not_the_base_system() {
        let files = package_files(Path::new("/usr/bin/jq"), true).unwrap();
        assert!(files.contains(&PathBuf::from("/usr/bin/jq")));
        for package in ["libjq1", "libonig5"] {
            let theirs = owned_by(package);
            assert!(!theirs.is_empty());
            assert!(
                theirs.iter().all(|f| files.contains(f)),
                "{package}: missing"
            );
        }
        assert!(owned_by("libc6").iter().all(|f| !files.contains(f)));
    }

    #[test]
    fn merged_usr_path_finds_the_package() {
        // dpkg records /bin/sh and /bin/dash; tote hands over the canonical /usr/bin/dash.
        let files = package_files(Path::new("/usr/bin/dash"), false).unwrap();
        assert!(files.contains(&PathBuf::from("/bin/dash")), "{files:?}");
        // dash lists the dir /bin, a symlink to a dir on a merged /usr.
        assert!(!files.contains(&PathBuf::from("/bin")));
    }

    #[test]
    fn diverted_path_belongs_to_the_diverter() {
        let files = package_files(Path::new("/bin/sh"), false).unwrap();
        assert!(files.contains(&PathBuf::from("/bin/sh")), "{files:?}");
        assert!(files.contains(&PathBuf::from("/bin/dash")), "{files:?}");
    }

    #[test]
    fn unowned_file_is_an_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = package_files(file.path(), false).unwrap_err().to_string();
        let want = format!(
            "{}: no Debian package owns it (--detect needs dpkg)",
            file.path().display()
        );
        assert_eq!(err, want);
    }

    #[test]
    fn search_output_with_diversions() {
        let out = b"diversion by pgc from: /usr/bin/pg_config\n\
                    diversion by pgc to: /usr/bin/pg_config.libpq-dev\n\
                    pgc, libpq-dev: /usr/bin/pg_config\n";
        let search = parse_search(out, Path::new("/usr/bin/pg_config"));
        assert_eq!(search.owners, ["pgc", "libpq-dev"]);
        let diversion = search.diversion.unwrap();
        assert_eq!(diversion.by.as_deref(), Some("pgc"));
        assert_eq!(diversion.from, Path::new("/usr/bin/pg_config"));
        assert_eq!(diversion.to, Path::new("/usr/bin/pg_config.libpq-dev"));
        let other = parse_search(b"libc6:amd64, libc6:i386: /x/y\n", Path::new("/x/y"));
        assert_eq!(other.owners, ["libc6:amd64", "libc6:i386"]);
        assert_eq!(other.diversion, None);
    }

    #[test]
    fn listing_follows_diversions() {
        let out = b"/.\n/usr/bin/pg_config\ndiverted by pgc to: /usr/bin/pg_config.libpq-dev\n\
                    /bin/sh\npackage diverts others to: /bin/sh.distrib\n/usr/include\n";
        let want = [
            "/.",
            "/usr/bin/pg_config.libpq-dev",
            "/bin/sh",
            "/usr/include",
        ];
        assert_eq!(parse_listing(out), want.map(PathBuf::from));
    }

    #[test]
    fn depends_field_parses() {
        let dep = |name: &str, arch: Option<&str>| Dependency {
            name: name.to_string(),
            arch: arch.map(str::to_string),
        };
        let got = parse_depends("libjq1 (= 1.6-2.1), python3:any (>= 3.11~) | perl, , awk");
        let want = vec![
            vec![dep("libjq1", None)],
            vec![dep("python3", Some("any")), dep("perl", None)],
            vec![dep("awk", None)],
        ];
        assert_eq!(got, want);
    }
}
