//! `tote inspect`: what a tote file holds, read from its trailer, run table and index without
//! extracting anything: the launcher, the programs with what they load, the variables set at
//! run time, every entry, the totals, and where the bundle is or would go on this host. As
//! text, or as JSON with `--json`. A damaged file is refused as `tote verify` refuses it.

use crate::bundle::STUB;
use crate::payload::{self, KIND_DIR, KIND_FILE, MARKER};
use crate::unpack::TotePayload;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Serialize)]
pub struct Report {
    file: PathBuf,
    format_version: u32,
    launcher: Launcher,
    programs: Vec<ProgramReport>,
    variables: Vec<(String, String)>,
    entries: Vec<EntryReport>,
    totals: Totals,
    cache: Cache,
}

#[derive(Serialize)]
struct Launcher {
    bytes: u64,
    /// "tote <version>" when it is this tote's own stub, else None.
    version: Option<String>,
}

#[derive(Serialize)]
struct ProgramReport {
    name: String,
    path: String,
    interpreter: String,
    libraries: Vec<String>,
}

#[derive(Serialize)]
struct EntryReport {
    kind: &'static str,
    mode: u32,
    size: u64,
    path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    target: String,
    patched: bool,
}

#[derive(Serialize)]
struct Totals {
    files: usize,
    dirs: usize,
    links: usize,
    raw_bytes: u64,
    compressed_bytes: u64,
    streams: usize,
}

#[derive(Serialize)]
struct Cache {
    /// The bundle dir's name in any cache root.
    dir_name: String,
    /// Where a complete bundle is now, if anywhere.
    extracted_in: Option<PathBuf>,
    /// Otherwise the first cache root that looks usable to the launcher.
    would_extract_under: Option<PathBuf>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads `file` into a report, once its checksums and tables are checked as `tote verify`
/// checks them: a damaged file is refused with the same error.
pub fn report(file: &Path) -> Result<Report> {
    let p = TotePayload::open(file)?;
    p.verify()?;
    let (run, index) = (p.run_table()?, p.index()?);
    let t = &p.trailer;
    let programs = run
        .programs()
        .map(|pr| ProgramReport {
            name: text(pr.name),
            path: text(pr.path),
            interpreter: text(pr.interpreter),
            libraries: pr.libraries.iter().map(text).collect(),
        })
        .collect();
    let entries: Vec<EntryReport> = index
        .entries()
        .map(|e| EntryReport {
            kind: match e.kind {
                KIND_DIR => "dir",
                KIND_FILE => "file",
                _ => "link",
            },
            mode: e.mode,
            size: e.size,
            path: text(e.path),
            target: text(e.target),
            patched: e.patches().next().is_some(),
        })
        .collect();
    let count = |kind: &str| entries.iter().filter(|e| e.kind == kind).count();
    let dir_name = text(&payload::bundle_name(&t.key));
    Ok(Report {
        file: file.to_path_buf(),
        format_version: payload::VERSION,
        launcher: Launcher {
            bytes: t.data_offset,
            version: (p.stub() == STUB).then(|| format!("tote {}", env!("CARGO_PKG_VERSION"))),
        },
        programs,
        variables: run.vars().map(|v| (text(v.name), text(v.value))).collect(),
        totals: Totals {
            files: count("file"),
            dirs: count("dir"),
            links: count("link"),
            raw_bytes: t.raw_len,
            compressed_bytes: t.data_len,
            streams: index.streams().count(),
        },
        entries,
        cache: cache_here(&dir_name),
    })
}

/// The cache roots the launcher would consider on this host, in its order (README, "What
/// happens at run time"), and which one holds the bundle or would get it. Whether a root's
/// file system allows exec is left to the launcher: `TOTE_DEBUG=1` shows its decision.
fn cache_here(dir_name: &str) -> Cache {
    let roots = cache_roots();
    let extracted_in = roots
        .iter()
        .map(|r| r.join(dir_name))
        .find(|b| b.join(MARKER).exists());
    let would_extract_under = match extracted_in {
        Some(_) => None,
        None => roots.into_iter().find(|r| looks_usable(r)),
    };
    Cache {
        dir_name: dir_name.to_string(),
        extracted_in,
        would_extract_under,
    }
}

fn cache_roots() -> Vec<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(chosen) = var("TOTE_CACHE_DIR") {
        return vec![std::path::absolute(&chosen).unwrap_or(chosen)];
    }
    let euid = nix::unistd::geteuid();
    let temporary = format!("tote-{euid}");
    let mut roots = Vec::new();
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    roots.extend(
        var("XDG_CACHE_HOME")
            .and_then(absolute)
            .map(|d| d.join("tote")),
    );
    roots.extend(
        var("HOME")
            .and_then(absolute)
            .map(|d| d.join(".cache/tote")),
    );
    roots.extend(var("TMPDIR").and_then(absolute).map(|d| d.join(&temporary)));
    for base in ["/tmp", "/var/tmp", "/dev/shm"] {
        roots.push(Path::new(base).join(&temporary));
    }
    roots
}

/// A root that exists as a dir of this user that no one else may write, or that is missing
/// under a dir this user may write.
fn looks_usable(root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(root) {
        Ok(m) => m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0,
        Err(_) => root
            .ancestors()
            .skip(1)
            .find(|a| a.exists())
            .is_some_and(|a| nix::unistd::access(a, nix::unistd::AccessFlags::W_OK).is_ok()),
    }
}

impl Report {
    pub fn json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }

    pub fn text(&self) -> Result<String> {
        let mut out = String::new();
        let launcher = self
            .launcher
            .version
            .as_deref()
            .unwrap_or("not this tote's");
        writeln!(out, "launcher {} bytes ({launcher})", self.launcher.bytes)?;
        for p in &self.programs {
            writeln!(out, "program {} = {}", p.name, p.path)?;
            if !p.interpreter.is_empty() {
                writeln!(out, "  loader {}", p.interpreter)?;
            }
            for l in &p.libraries {
                writeln!(out, "  needs {l}")?;
            }
        }
        for (name, value) in &self.variables {
            writeln!(out, "variable {name}={value}")?;
        }
        for e in &self.entries {
            let patched = if e.patched {
                " (patched at extraction)"
            } else {
                ""
            };
            match e.kind {
                "dir" => writeln!(out, "dir  {:04o} {}", e.mode, e.path)?,
                "file" => writeln!(
                    out,
                    "file {:04o} {:>10} {}{patched}",
                    e.mode, e.size, e.path
                )?,
                _ => writeln!(out, "link      {} -> {}", e.path, e.target)?,
            }
        }
        let c = &self.cache;
        writeln!(out, "cache dir name {}", c.dir_name)?;
        match (&c.extracted_in, &c.would_extract_under) {
            (Some(dir), _) => writeln!(out, "extracted in {}", dir.display())?,
            (None, Some(root)) => writeln!(out, "would extract under {}", root.display())?,
            (None, None) => writeln!(out, "would run from memory (no usable cache root)")?,
        }
        let t = &self.totals;
        writeln!(
            out,
            "{} files, {} dirs and links, {} bytes raw, {} bytes compressed in {} stream{}, format version {}",
            t.files,
            t.dirs + t.links,
            t.raw_bytes,
            t.compressed_bytes,
            t.streams,
            if t.streams == 1 { "" } else { "s" },
            self.format_version
        )?;
        Ok(out)
    }
}
