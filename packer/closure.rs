//! The closure: the program, its interpreter, and every library it needs, found the way the
//! loader finds them. DT_NEEDED is followed breadth-first; each name is looked up in the
//! needer's DT_RPATH (and the executable's, when the needer has no DT_RUNPATH), then its
//! DT_RUNPATH, then the dirs of `/etc/ld.so.conf` and the default dirs, unless the needer has
//! DF_1_NODEFLIB. Each library is stored under the dir it was found in and the name the loader
//! asks for, so `$ORIGIN` and every compiled-in path keep their meaning inside the bundle.

use crate::elf::{self, Object};
use crate::plan::normalize;
use anyhow::{bail, Context, Result};
use log::{debug, info, warn};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

/// The multiarch triplet that `$LIB` and the default dirs use on x86-64 Debian.
const TRIPLET: &str = "x86_64-linux-gnu";

/// One ELF object of the bundle and where it goes.
#[derive(Debug)]
pub struct Member {
    /// The absolute path the file has in the bundle (and had on this host).
    pub dest: PathBuf,
    pub object: Object,
}

/// What the ELF objects of a plan need: interpreters and libraries, each once.
#[derive(Debug, Default)]
pub struct Closure {
    /// The loaders named by PT_INTERP, by their path.
    pub interpreters: Vec<Member>,
    /// Libraries in breadth-first order.
    pub libraries: Vec<Member>,
}

impl Closure {
    /// Every dir the bundle's executables search, in first-seen order: those of the
    /// libraries, then those of the `added` objects that are shared libraries (a plugin found
    /// by `--trace` or `--add`, opened with dlopen by name). `glibc-hwcaps` subdirs are left
    /// out: the loader looks into them by itself, and only on CPUs that can run what they hold.
    pub fn library_dirs(&self, added: &[Member]) -> Vec<PathBuf> {
        let sonamed = added.iter().filter(|m| m.object.soname.is_some());
        let mut dirs: Vec<PathBuf> = Vec::new();
        for member in self.libraries.iter().chain(sonamed) {
            let dir = parent(&member.dest).to_path_buf();
            let hwcaps = dir.components().any(|c| c.as_os_str() == "glibc-hwcaps");
            if !hwcaps && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// The library stored under file name `name`, if any.
    pub fn library(&self, name: &str) -> Option<&Member> {
        self.libraries
            .iter()
            .find(|l| l.dest.file_name().is_some_and(|n| n == name))
    }

    fn has(&self, dest: &Path) -> bool {
        self.libraries
            .iter()
            .chain(&self.interpreters)
            .any(|m| m.dest == dest)
    }
}

/// Which loader a program uses: they search different dirs, and musl's loader is its libc.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Glibc,
    Musl,
}

impl Flavor {
    fn of(object: &Object) -> Option<Flavor> {
        let interp = object.interpreter.as_deref()?;
        Some(if file_name(interp).starts_with("ld-musl") {
            Flavor::Musl
        } else {
            Flavor::Glibc
        })
    }
}

/// An object whose needs are followed, and how strictly.
pub struct Root<'a> {
    pub member: &'a Member,
    /// A need that cannot be found is an error for programs, a warning for added files (a
    /// plugin whose optional library is not installed).
    pub required: bool,
}

/// Resolves what `roots` need. The first root is the main program: its rpath and loader
/// apply to roots that are not executables themselves (libraries loaded by it at run time).
/// `extra_libs` (`--lib`) are looked up like needs of the main program.
pub fn resolve(roots: &[Root], extra_libs: &[String]) -> Result<Closure> {
    let main = roots.first().context("nothing to pack")?.member;
    let main_flavor = Flavor::of(&main.object).unwrap_or(Flavor::Glibc);
    let mut closure = Closure::default();
    let mut systems: Vec<(Flavor, SystemDirs)> = Vec::new();
    let mut system = |f: Flavor| -> SystemDirs {
        if let Some((_, s)) = systems.iter().find(|(g, _)| *g == f) {
            return s.clone();
        }
        let s = SystemDirs::load(f);
        systems.push((f, s.clone()));
        s
    };
    for lib in extra_libs {
        if lib.contains('/') && !elf::is_packable(Path::new(lib)) {
            bail!("{lib} (--lib): {}", elf::why_no_library(Path::new(lib)));
        }
        let (dest, why) = find(lib, main, main, &system(main_flavor))?;
        info!("{lib} (--lib): {} (first found in a {why})", dest.display());
        if !closure.has(&dest) {
            closure.libraries.push(Member {
                object: elf::read(&dest)?,
                dest,
            });
        }
    }
    let extra: Vec<usize> = (0..closure.libraries.len()).collect();
    for root in roots {
        let object = &root.member.object;
        let (program, flavor) = match Flavor::of(object).filter(|_| object.is_executable()) {
            Some(f) => (root.member, f),
            None => (main, main_flavor),
        };
        if let Some(interp) = object
            .interpreter
            .as_deref()
            .filter(|_| object.is_executable())
        {
            add_interpreter(&mut closure, interp)?;
        }
        let start = Start {
            needer: Needer::Root(root.member),
            program,
            required: root.required,
        };
        breadth_first(&mut closure, start, &system(flavor), flavor)?;
    }
    for i in extra {
        let start = Start {
            needer: Needer::Library(i),
            program: main,
            required: true,
        };
        breadth_first(&mut closure, start, &system(main_flavor), main_flavor)?;
    }
    Ok(closure)
}

fn add_interpreter(closure: &mut Closure, path: &str) -> Result<()> {
    let dest = PathBuf::from(path);
    if !closure.interpreters.iter().any(|m| m.dest == dest) {
        closure.interpreters.push(Member {
            object: elf::read(&dest)?,
            dest,
        });
    }
    Ok(())
}

/// The object whose needs a walk starts from.
#[derive(Clone, Copy)]
enum Needer<'a> {
    Root(&'a Member),
    Library(usize),
}

struct Start<'a> {
    needer: Needer<'a>,
    /// The executable whose rpath applies.
    program: &'a Member,
    required: bool,
}

/// Follows DT_NEEDED breadth-first from `start`, adding each library found once.
fn breadth_first(
    closure: &mut Closure,
    start: Start,
    system: &SystemDirs,
    flavor: Flavor,
) -> Result<()> {
    let mut queue: VecDeque<(String, Needer)> = VecDeque::new();
    let mut seen: HashSet<(String, PathBuf)> = HashSet::new();
    enqueue(start.needer, closure, &mut queue);
    while let Some((name, needer_ref)) = queue.pop_front() {
        let needer = member_of(needer_ref, closure);
        if !seen.insert((name.clone(), needer.dest.clone())) {
            continue;
        }
        if flavor == Flavor::Musl && is_musl_libc(&name) {
            debug!(
                "{name} (needed by {}): musl's loader is its libc",
                needer.dest.display()
            );
            continue;
        }
        let (dest, why) = match find(&name, needer, start.program, system) {
            Ok(found) => found,
            Err(e) if !start.required => {
                warn!("{e:#}; left out");
                continue;
            }
            Err(e) => return Err(e),
        };
        if closure.has(&dest) {
            continue;
        }
        info!(
            "{name} (needed by {}): {} (first found in a {why})",
            needer.dest.display(),
            dest.display()
        );
        for variant in std::iter::once(dest.clone()).chain(hwcaps_variants(&dest)) {
            if variant != dest {
                info!("{name}: also its CPU-specific build {}", variant.display());
            }
            closure.libraries.push(Member {
                object: elf::read(&variant)?,
                dest: variant,
            });
            enqueue(
                Needer::Library(closure.libraries.len() - 1),
                closure,
                &mut queue,
            );
        }
    }
    Ok(())
}

fn enqueue<'a>(needer: Needer<'a>, closure: &Closure, queue: &mut VecDeque<(String, Needer<'a>)>) {
    for name in &member_of(needer, closure).object.needed {
        queue.push_back((name.clone(), needer));
    }
}

fn member_of<'a>(needer: Needer<'a>, closure: &'a Closure) -> &'a Member {
    match needer {
        Needer::Root(m) => m,
        Needer::Library(i) => &closure.libraries[i],
    }
}

fn is_musl_libc(name: &str) -> bool {
    name == "libc.so" || name.starts_with("ld-musl")
}

/// Looks `name` up for `needer` in the loader's order; the error names every dir tried.
/// Returns the path and why the loader picks it: the kind of search dir it is first found in.
fn find(
    name: &str,
    needer: &Member,
    program: &Member,
    system: &SystemDirs,
) -> Result<(PathBuf, &'static str)> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        if elf::is_packable(&p) {
            return Ok((p, "a path"));
        }
        bail!(
            "{name} (needed by {}): {}",
            needer.dest.display(),
            elf::why_no_library(&p)
        );
    }
    let dirs = search_dirs(needer, program, system);
    for (dir, why) in &dirs {
        let candidate = dir.join(name);
        if candidate.is_file() && elf::is_packable(&candidate) {
            return Ok((candidate, why));
        }
    }
    let tried: Vec<String> = dirs.iter().map(|(d, _)| d.display().to_string()).collect();
    bail!(
        "{} needs {name} (needed by {}), not found in {}",
        program.dest.display(),
        needer.dest.display(),
        tried.join(", ")
    )
}

/// The optimised builds of `lib` that glibc picks on newer CPUs, from the `glibc-hwcaps`
/// subdirs of its dir; the baseline `lib` stays for older CPUs.
fn hwcaps_variants(lib: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (lib.parent(), lib.file_name()) else {
        return Vec::new();
    };
    ["x86-64-v4", "x86-64-v3", "x86-64-v2"]
        .iter()
        .map(|level| dir.join("glibc-hwcaps").join(level).join(name))
        .filter(|p| p.is_file() && elf::is_packable(p))
        .collect()
}

/// The dirs the loader searches for a library `needer` needs, in order:
/// - needer without DT_RUNPATH: its DT_RPATH, then the program's DT_RPATH (when the program
///   itself has no DT_RUNPATH);
/// - needer with DT_RUNPATH: only that, and only for its own needs;
/// - then, unless the needer has DF_1_NODEFLIB, the system dirs.
fn search_dirs(
    needer: &Member,
    program: &Member,
    system: &SystemDirs,
) -> Vec<(PathBuf, &'static str)> {
    let mut dirs = Vec::new();
    let own = &needer.object;
    let tag = |dirs: Vec<PathBuf>, why: &'static str| dirs.into_iter().map(move |d| (d, why));
    if own.runpath.is_empty() {
        dirs.extend(tag(
            expand(&own.rpath, &needer.dest),
            "dir of the needer's rpath",
        ));
        let is_program = std::ptr::eq(needer, program);
        if !is_program && program.object.runpath.is_empty() {
            dirs.extend(tag(
                expand(&program.object.rpath, &program.dest),
                "dir of the program's rpath",
            ));
        }
    } else {
        dirs.extend(tag(
            expand(&own.runpath, &needer.dest),
            "dir of the needer's runpath",
        ));
    }
    if !own.nodeflib {
        dirs.extend(system.dirs.iter().map(|d| (d.clone(), "system dir")));
    }
    dirs
}

/// Expands `$ORIGIN` (the dir of the object), `$LIB` and `$PLATFORM` in rpath entries, and
/// folds `.` and `..` so every library has one plain path in the bundle.
fn expand(entries: &[String], object: &Path) -> Vec<PathBuf> {
    let origin = parent(object).to_string_lossy().into_owned();
    entries
        .iter()
        .map(|e| {
            let e = e
                .replace("${ORIGIN}", &origin)
                .replace("$ORIGIN", &origin)
                .replace("${LIB}", &format!("lib/{TRIPLET}"))
                .replace("$LIB", &format!("lib/{TRIPLET}"))
                .replace("${PLATFORM}", "x86_64")
                .replace("$PLATFORM", "x86_64");
            // The dirs the loader starts from (`$ORIGIN` of a canonical program path, the
            // system dirs) hold no symlink to walk back out of, so `..` folds lexically.
            normalize(Path::new(&e))
        })
        .collect()
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("/"))
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The dirs the loader searches after an object's own paths: for glibc the dirs of
/// `/etc/ld.so.conf` (the loader's cache holds exactly their libraries) then the built-in
/// defaults; for musl its path file or its defaults.
#[derive(Clone)]
struct SystemDirs {
    dirs: Vec<PathBuf>,
}

impl SystemDirs {
    fn load(flavor: Flavor) -> SystemDirs {
        let mut dirs = Vec::new();
        match flavor {
            Flavor::Glibc => {
                read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
                for d in [format!("/lib/{TRIPLET}"), format!("/usr/lib/{TRIPLET}")] {
                    dirs.push(PathBuf::from(d));
                }
                dirs.extend(["/lib64", "/usr/lib64", "/lib", "/usr/lib"].map(PathBuf::from));
            }
            Flavor::Musl => {
                let file = std::fs::read_to_string("/etc/ld-musl-x86_64.path");
                let text = file.unwrap_or_else(|_| "/lib:/usr/local/lib:/usr/lib".into());
                dirs.extend(
                    text.split([':', '\n'])
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from),
                );
            }
        }
        let mut unique = Vec::new();
        for d in dirs {
            if !unique.contains(&d) {
                unique.push(d);
            }
        }
        debug!("system library dirs: {unique:?}");
        SystemDirs { dirs: unique }
    }
}

/// Reads one ld.so.conf file: one dir per line, `#` comments, `include GLOB` lines (relative
/// globs are relative to the including file's dir). Missing files are skipped, as the loader's
/// cache builder does.
fn read_ld_so_conf(path: &Path, dirs: &mut Vec<PathBuf>, depth: usize) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    if depth > 8 {
        return;
    }
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for pattern in pattern.split_whitespace() {
                let full = parent(path).join(pattern);
                let mut files: Vec<PathBuf> = glob::glob(&full.to_string_lossy())
                    .map(|paths| paths.filter_map(|p| p.ok()).collect())
                    .unwrap_or_default();
                files.sort();
                for f in files {
                    read_ld_so_conf(&f, dirs, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_so_conf_follows_includes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("ld.so.conf"),
            "# top\n/first\ninclude conf.d/*.conf\n/last # end\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/b.conf"), "/from-b\n").unwrap();
        std::fs::write(
            d.join("conf.d/a.conf"),
            "/from-a\ninclude /nonexistent/*.conf\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/ignored.txt"), "/never\n").unwrap();
        let mut dirs = Vec::new();
        read_ld_so_conf(&d.join("ld.so.conf"), &mut dirs, 0);
        assert_eq!(
            dirs,
            ["/first", "/from-a", "/from-b", "/last"].map(PathBuf::from)
        );
    }

    #[test]
    fn rpath_tokens_expand() {
        let entries = [
            "$ORIGIN/../lib".to_string(),
            "${ORIGIN}/x".into(),
            "/opt/$LIB".into(),
            "/p/$PLATFORM".into(),
        ];
        let got = expand(&entries, Path::new("/app/bin/tool"));
        let want = [
            "/app/lib",
            "/app/bin/x",
            "/opt/lib/x86_64-linux-gnu",
            "/p/x86_64",
        ];
        assert_eq!(got, want.map(PathBuf::from));
    }

    fn member(dest: &str, rpath: &[&str], runpath: &[&str], nodeflib: bool) -> Member {
        let object = Object {
            source: PathBuf::from(dest),
            bytes: Vec::new(),
            interpreter: None,
            needed: Vec::new(),
            rpath: rpath.iter().map(|s| s.to_string()).collect(),
            runpath: runpath.iter().map(|s| s.to_string()).collect(),
            dynamic: true,
            nodeflib,
            soname: None,
            uses_iconv: false,
            elf_type: goblin::elf::header::ET_DYN,
            entry: 0,
        };
        Member {
            dest: PathBuf::from(dest),
            object,
        }
    }

    #[test]
    fn search_order_follows_the_loader() {
        let system = SystemDirs {
            dirs: vec![PathBuf::from("/sys")],
        };
        let program = member("/app/bin/tool", &["$ORIGIN/../lib"], &[], false);
        let paths = |needer: &Member| -> Vec<PathBuf> {
            search_dirs(needer, &program, &system)
                .into_iter()
                .map(|(d, _)| d)
                .collect()
        };
        // The program's own rpath, then the system dirs.
        assert_eq!(paths(&program), ["/app/lib", "/sys"].map(PathBuf::from));
        // A library with rpath: its own, then the program's.
        let lib = member("/l/liba.so", &["/r"], &[], false);
        assert_eq!(paths(&lib), ["/r", "/app/lib", "/sys"].map(PathBuf::from));
        // A library with runpath: its runpath only, neither rpath.
        let lib = member("/l/libb.so", &["/ignored"], &["$ORIGIN/run"], false);
        assert_eq!(paths(&lib), ["/l/run", "/sys"].map(PathBuf::from));
        // DF_1_NODEFLIB: no system dirs.
        let lib = member("/l/libc.so", &[], &[], true);
        assert_eq!(paths(&lib), ["/app/lib"].map(PathBuf::from));
    }
}
