//! Reading ELF files: what the closure needs to know of one object (interpreter, needed
//! libraries, rpath, runpath, flags) and the checks that turn a bad input into a one-line
//! error naming the file.

use anyhow::{bail, Result};
use goblin::elf::dynamic::{DF_1_NODEFLIB, DT_FLAGS_1};
use goblin::elf::header::{ELFCLASS64, EM_X86_64, ET_CORE, ET_DYN, ET_EXEC, ET_REL};
use goblin::elf::Elf;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One ELF object as the closure sees it.
#[derive(Debug, Clone)]
pub struct Object {
    /// Where the bytes were read from (symlinks followed by the read).
    pub source: PathBuf,
    pub bytes: Vec<u8>,
    /// PT_INTERP: set for dynamically linked executables.
    pub interpreter: Option<String>,
    /// DT_NEEDED, in order.
    pub needed: Vec<String>,
    /// DT_RPATH entries, unexpanded.
    pub rpath: Vec<String>,
    /// DT_RUNPATH entries, unexpanded.
    pub runpath: Vec<String>,
    /// Has a PT_DYNAMIC segment (false for static programs).
    pub dynamic: bool,
    /// DF_1_NODEFLIB: the loader skips its cache and default dirs for this object's needs.
    pub nodeflib: bool,
    /// DT_SONAME: set for shared libraries.
    pub soname: Option<String>,
    /// Imports `iconv_open`, so it may load glibc's gconv modules at run time.
    pub uses_iconv: bool,
    /// e_type: ET_EXEC, ET_DYN...
    pub elf_type: u16,
    pub entry: u64,
}

impl Object {
    /// A program the loader runs (PT_INTERP, no soname), as opposed to a shared library
    /// (glibc's libc.so.6 has PT_INTERP too, and a soname).
    pub fn is_executable(&self) -> bool {
        self.interpreter.is_some() && self.soname.is_none()
    }
}

/// Reads and parses `path`, refusing what tote cannot pack: a missing path, a directory, a
/// file that is not ELF, an ELF for another architecture.
pub fn read(path: &Path) -> Result<Object> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
    if meta.is_dir() {
        bail!("{}: is a directory, not a program", path.display());
    }
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, &e))?;
    parse(path, bytes)
}

/// `<path>: <what the system said>`, without Rust's `(os error N)` tail.
pub fn io_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", path.display(), io_text(e))
}

/// What the system said, in lowercase, without Rust's `(os error N)` tail.
pub fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    text.split(" (os error")
        .next()
        .unwrap_or(&text)
        .to_lowercase()
}

/// Why `path` is no library tote can pack, for a library named by its path: missing, a dir,
/// or not an x86-64 ELF file.
pub fn why_no_library(path: &Path) -> String {
    match std::fs::metadata(path) {
        Err(e) => io_text(&e),
        Ok(m) if m.is_dir() => "is a directory, not a library".into(),
        Ok(_) => "not an ELF shared library for x86-64".into(),
    }
}

/// Refuses an ELF file that cannot be started as a program: an object file, a core dump, a
/// shared library without an interpreter or entry point, a file without an exec bit.
pub fn check_program(path: &Path, object: &Object) -> Result<()> {
    let what = match object.elf_type {
        ET_REL => Some("an object file (.o)"),
        ET_CORE => Some("a core dump"),
        ET_DYN if object.interpreter.is_none() && object.entry == 0 => Some("a shared library"),
        ET_EXEC | ET_DYN => None,
        _ => Some("an ELF file of an unknown type"),
    };
    if let Some(what) = what {
        bail!("{}: {what}, not a program", path.display());
    }
    let mode = std::fs::metadata(path)
        .map_err(|e| io_error(path, &e))?
        .permissions()
        .mode();
    if mode & 0o111 == 0 {
        bail!(
            "{}: not executable (mode {:04o}); chmod +x it first",
            path.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// Whether `path` holds an ELF object tote can pack, without reporting why not: for library
/// candidates, where a wrong-architecture file in a search dir is simply skipped.
pub fn is_packable(path: &Path) -> bool {
    let mut head = [0u8; 64];
    let read = std::fs::File::open(path).and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut head)
    });
    read.is_ok() && check_header(path, &head).is_ok()
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<()> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        bail!(
            "{}: not an ELF file (tote packs compiled programs)",
            path.display()
        );
    }
    if bytes[4] != ELFCLASS64 {
        bail!(
            "{}: a 32-bit ELF file (tote packs x86-64 programs)",
            path.display()
        );
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != EM_X86_64 {
        bail!(
            "{}: built for {}, not x86-64 (tote packs x86-64 programs)",
            path.display(),
            goblin::elf::header::machine_to_str(machine)
        );
    }
    Ok(())
}

fn parse(path: &Path, bytes: Vec<u8>) -> Result<Object> {
    check_header(path, &bytes)?;
    let elf = Elf::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: malformed ELF file ({e})", path.display()))?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let flags_1 = elf
        .dynamic
        .as_ref()
        .and_then(|d| d.dyns.iter().find(|e| e.d_tag == DT_FLAGS_1))
        .map_or(0, |e| e.d_val);
    let object = Object {
        source: path.to_path_buf(),
        interpreter: elf.interpreter.map(String::from),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        dynamic: elf.dynamic.is_some(),
        nodeflib: flags_1 & DF_1_NODEFLIB != 0,
        soname: elf.soname.map(String::from),
        uses_iconv: elf
            .dynsyms
            .iter()
            .any(|s| s.is_import() && elf.dynstrtab.get_at(s.st_name) == Some("iconv_open")),
        elf_type: elf.header.e_type,
        entry: elf.header.e_entry,
        bytes: Vec::new(),
    };
    Ok(Object { bytes, ..object })
}
