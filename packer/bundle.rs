//! The bundle: turns a plan and its closure into index entries and file contents (rewriting
//! each ELF object for its role), then writes the tote file: launcher stub, compressed data,
//! index, run table, trailer (written by `output`, never half). The same bundle laid out under
//! a prefix, its slots filled in at pack time, is an image tree.

use crate::closure::{Closure, Member};
use crate::output;
use crate::payload::{
    self, Entry, Index, Patch, Paths, Program, RunTable, Sink, Stream, Trailer, Var,
};
use crate::plan::{relative_link, relative_way, Plan};
use crate::progress::Progress;
use crate::rewrite::{self, Role, Slot};
use crate::tree::{Node, Tree};
use anyhow::{bail, Context, Result};
use log::{debug, info};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The launcher stub, built by `build.rs`.
pub const STUB: &[u8] = include_bytes!(env!("TOTE_STUB"));
/// The largest run table the launcher reads with its first read of the file's tail.
const RUN_TABLE_MAX: usize = 60 * 1024;

/// One regular file of the bundle.
struct File {
    /// Relative to the bundle root.
    path: String,
    mode: u32,
    /// The source's modification time, in seconds since the epoch: programs that compare a
    /// file's time with one they recorded (CPython's bytecode caches) need it kept.
    mtime: u64,
    bytes: Vec<u8>,
    slots: Vec<Slot>,
}

/// One symlink of the bundle.
struct Link {
    /// Relative to the bundle root.
    path: String,
    target: String,
}

/// Everything that goes into a payload before it is encoded.
pub struct Bundle {
    files: Vec<File>,
    links: Vec<Link>,
    programs: Vec<RunProgram>,
    vars: Vec<(String, String)>,
}

/// A program as the run table lists it; paths relative to the bundle root.
struct RunProgram {
    name: String,
    path: String,
    /// Empty for a static program.
    interpreter: String,
    libraries: Vec<String>,
}

/// The files and links laid out so far, each dest once.
#[derive(Default)]
struct Layout {
    files: Vec<File>,
    links: Vec<Link>,
    dests: HashSet<PathBuf>,
}

impl Layout {
    fn push(&mut self, dest: &Path, make: impl FnOnce() -> Result<File>) -> Result<()> {
        if self.dests.insert(dest.to_path_buf()) {
            self.files.push(make()?);
        }
        Ok(())
    }

    fn link(&mut self, dest: &Path, target: String) -> Result<()> {
        if self.dests.insert(dest.to_path_buf()) {
            self.links.push(Link {
                path: relative(dest)?,
                target,
            });
        }
        Ok(())
    }
}

impl Bundle {
    /// Lays out a plan: the programs and the other executables rewritten with slots for the
    /// launcher, the interpreters as they are, every library rewritten to search only the
    /// bundle, the other files as they are, then the symlinks. `objects` are the ELF objects
    /// of the plan (programs and added files), `closure` what they need. A dest already laid
    /// out is not stored twice.
    pub fn new(plan: &Plan, objects: &[Member], closure: &Closure) -> Result<Bundle> {
        let lib_dirs = closure.library_dirs(objects);
        let mut b = Layout::default();
        for program in &plan.programs {
            let member = objects
                .iter()
                .find(|m| m.dest == program.path)
                .context("program read")?;
            b.push(&member.dest, || executable_file(member, &lib_dirs))?;
        }
        for interp in &closure.interpreters {
            b.push(&interp.dest, || {
                plain_file(
                    &interp.dest,
                    &interp.object.source,
                    interp.object.bytes.clone(),
                )
            })?;
        }
        for lib in &closure.libraries {
            // Libraries that name the loader (libc does) get the loader itself, untouched.
            match closure
                .interpreters
                .iter()
                .find(|i| same_file(&lib.object.source, &i.object.source))
            {
                Some(interp) => b.link(&lib.dest, relative_link(&lib.dest, &interp.dest))?,
                None => b.push(&lib.dest, || library_file(lib, &lib_dirs))?,
            }
        }
        for added in &plan.files {
            match objects.iter().find(|m| m.dest == added.dest) {
                Some(m) if m.object.is_executable() => {
                    b.push(&m.dest, || executable_file(m, &lib_dirs))?
                }
                Some(m) => b.push(&m.dest, || library_file(m, &lib_dirs))?,
                None => b.push(&added.dest, || {
                    let bytes = std::fs::read(&added.source)
                        .map_err(|e| crate::elf::io_error(&added.source, &e))?;
                    plain_file(&added.dest, &added.source, bytes)
                })?,
            }
        }
        for link in &plan.links {
            b.link(&link.dest, link.target.clone())?;
        }
        let programs = plan
            .programs
            .iter()
            .map(|p| {
                let member = objects.iter().find(|m| m.dest == p.path);
                let (interpreter, libraries) = match member {
                    Some(m) => memory_load(m, closure)?,
                    None => (String::new(), Vec::new()),
                };
                Ok(RunProgram {
                    name: p.name.clone(),
                    path: relative(&p.path)?,
                    interpreter,
                    libraries,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Bundle {
            files: b.files,
            links: b.links,
            programs,
            vars: plan.vars.clone(),
        })
    }

    /// Writes launcher stub and payload to `output`, through a temporary file in its dir.
    /// `level` is xz's preset, 0 to 9; 9 is also "extreme".
    pub fn write(&self, output: &Path, level: u32, streams: usize) -> Result<()> {
        let payload = self.encode(level, streams)?;
        output::write_file(output, &[STUB, &payload], 0o777 & !output::umask())
    }

    /// The whole tote file: launcher stub and payload.
    pub fn file_bytes(&self, level: u32, streams: usize) -> Result<Vec<u8>> {
        let payload = self.encode(level, streams)?;
        Ok([STUB, &payload].concat())
    }

    /// The bundle laid out under the absolute dir `root`, as `tote extract` would write it
    /// there: the slots of every executable filled in for `root`.
    pub fn tree_at(&self, root: &Path) -> Result<Tree> {
        let text = root
            .to_str()
            .with_context(|| format!("{}: path is not UTF-8", root.display()))?;
        let mut tree = Tree::new();
        for f in &self.files {
            let mut bytes = f.bytes.clone();
            for s in &f.slots {
                let filled = crate::unpack::fill(&s.template, text.as_bytes());
                if filled.len() >= s.capacity as usize {
                    bail!("{text}: too long a prefix for the paths of {}", f.path);
                }
                let at = s.offset as usize;
                bytes[at..at + s.capacity as usize].fill(0);
                bytes[at..at + filled.len()].copy_from_slice(&filled);
            }
            tree.add(
                &root.join(&f.path),
                Node::File {
                    mode: f.mode,
                    bytes,
                    mtime: Some(f.mtime),
                },
            )?;
        }
        for l in &self.links {
            tree.add(&root.join(&l.path), Node::Symlink(l.target.clone()))?;
        }
        Ok(tree)
    }

    /// The variables to set, with `ROOT_TOKEN` in their values as `root`.
    pub fn vars_at(&self, root: &str) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.replace(root_token(), root)))
            .collect()
    }

    /// Each program's name and path relative to the bundle root.
    pub fn programs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.programs
            .iter()
            .map(|p| (p.name.as_str(), p.path.as_str()))
    }

    /// The payload: data, index, run table and trailer, with offsets counted from the end of
    /// the stub.
    fn encode(&self, level: u32, streams: usize) -> Result<Vec<u8>> {
        let groups = stream_groups(&self.files, streams);
        let total = self.files.iter().map(|f| f.bytes.len() as u64).sum();
        let progress = Progress::new(total, "compressing");
        let parts: Vec<Result<(Stream, Vec<u8>)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = groups
                .iter()
                .map(|group| {
                    let progress = &progress;
                    scope.spawn(move || compress_group(group, level, progress))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a compression thread panicked"))
                .collect()
        });
        let mut streams = Vec::new();
        let mut payload = Vec::new();
        for part in parts {
            let (stream, data) = part?;
            streams.push(stream);
            payload.extend_from_slice(&data);
        }
        let raw_len: u64 = streams.iter().map(|s| s.raw_len).sum();
        let dict_size = streams.iter().map(|s| s.dict_size).max().unwrap_or(0);
        let index = self.index(&streams, &groups);
        let run = self.run_table()?;
        info!(
            "payload: {} files, {} bytes raw, {} bytes compressed in {} streams",
            self.files.len(),
            raw_len,
            payload.len(),
            streams.len()
        );
        let data_len = payload.len() as u64;
        payload.extend_from_slice(&index);
        payload.extend_from_slice(&run);
        let mut key_hash = Sha256::new();
        key_hash.update(payload::VERSION.to_le_bytes());
        key_hash.update(&payload);
        let trailer = Trailer {
            codec: payload::CODEC_XZ,
            data_offset: STUB.len() as u64,
            data_len,
            index_len: index.len() as u64,
            run_len: run.len() as u64,
            raw_len,
            dict_size: dict_size as u64,
            payload_checksum: payload::checksum(&payload),
            run_checksum: payload::checksum(&run),
            key: key_hash.finalize().into(),
        };
        payload.extend_from_slice(&trailer.encode());
        Ok(payload)
    }

    /// Dirs first (every parent of every file and link, sorted), then the files stream by
    /// stream, then the links.
    fn index(&self, streams: &[Stream], groups: &[Vec<&File>]) -> Vec<u8> {
        let paths = self
            .files
            .iter()
            .map(|f| &f.path)
            .chain(self.links.iter().map(|l| &l.path));
        let dirs: BTreeSet<String> = paths.flat_map(|p| parents(p)).collect();
        let mut out = Bytes(Vec::new());
        let count = dirs.len() + self.files.len() + self.links.len();
        Index::encode_header(count as u32, streams, &mut out);
        for d in &dirs {
            Entry::new(payload::KIND_DIR, 0o755, 0, d.as_bytes(), b"").encode(&[], &mut out);
        }
        for f in groups.iter().flatten() {
            let patches: Vec<Patch> = f
                .slots
                .iter()
                .map(|s| Patch {
                    offset: s.offset,
                    capacity: s.capacity,
                    template: &s.template,
                })
                .collect();
            let entry = Entry::new(
                payload::KIND_FILE,
                f.mode,
                f.bytes.len() as u64,
                f.path.as_bytes(),
                b"",
            )
            .with_mtime(f.mtime);
            entry.encode(&patches, &mut out);
        }
        for l in &self.links {
            let entry = Entry::new(
                payload::KIND_SYMLINK,
                0o777,
                0,
                l.path.as_bytes(),
                l.target.as_bytes(),
            );
            entry.encode(&[], &mut out);
        }
        out.0
    }

    fn run_table(&self) -> Result<Vec<u8>> {
        let lists: Vec<Vec<u8>> = self
            .programs
            .iter()
            .map(|p| {
                let paths: Vec<&[u8]> = p.libraries.iter().map(|l| l.as_bytes()).collect();
                let mut out = Bytes(Vec::new());
                Paths::encode(&paths, &mut out);
                out.0
            })
            .collect();
        let programs = self
            .programs
            .iter()
            .zip(&lists)
            .map(|(p, list)| {
                Ok(Program {
                    name: p.name.as_bytes(),
                    path: p.path.as_bytes(),
                    interpreter: p.interpreter.as_bytes(),
                    libraries: Paths::new(list).map_err(|_| {
                        anyhow::anyhow!(
                            "{}: its library list cannot be recorded: a path in it is \
                                 empty, absolute, has `..` or is too long",
                            p.name
                        )
                    })?,
                })
            })
            .collect::<Result<Vec<Program>>>()?;
        let vars: Vec<Var> = self
            .vars
            .iter()
            .map(|(name, value)| Var {
                name: name.as_bytes(),
                value: value.as_bytes(),
            })
            .collect();
        let mut out = Bytes(Vec::new());
        RunTable::encode(&programs, &vars, &mut out);
        if out.0.len() > RUN_TABLE_MAX {
            bail!("too many programs or variables: the run table exceeds {RUN_TABLE_MAX} bytes");
        }
        Ok(out.0)
    }
}

/// A growable byte buffer the format's encoders write to.
struct Bytes(Vec<u8>);

impl Sink for Bytes {
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// A program of the bundle: its interpreter and rpath become slots the launcher fills in.
/// A static program is stored as it is.
fn executable_file(member: &Member, lib_dirs: &[PathBuf]) -> Result<File> {
    let Some(interp) = &member.object.interpreter else {
        debug!("{}: static, stored as it is", member.dest.display());
        return plain_file(
            &member.dest,
            &member.object.source,
            member.object.bytes.clone(),
        );
    };
    let interpreter = format!("{}{interp}", root_token());
    let rpath: Vec<String> = lib_dirs
        .iter()
        .map(|d| format!("{}{}", root_token(), d.display()))
        .collect();
    let rpath = rpath.join(":");
    let role = Role::Executable {
        interpreter: interpreter.as_bytes(),
        rpath: rpath.as_bytes(),
    };
    rewritten(member, &role)
}

fn library_file(lib: &Member, lib_dirs: &[PathBuf]) -> Result<File> {
    if !lib.object.dynamic {
        return plain_file(&lib.dest, &lib.object.source, lib.object.bytes.clone());
    }
    let own_dir = lib.dest.parent().unwrap_or(Path::new("/"));
    let rpath: Vec<String> = lib_dirs
        .iter()
        .map(|d| origin_relative(own_dir, d))
        .collect();
    let rpath = rpath.join(":");
    rewritten(
        lib,
        &Role::Library {
            rpath: rpath.as_bytes(),
        },
    )
}

fn rewritten(member: &Member, role: &Role) -> Result<File> {
    let r = rewrite::rewrite(&member.object.bytes, role)
        .with_context(|| format!("{}: cannot rewrite", member.object.source.display()))?;
    debug!(
        "{}: rewritten, {} slots",
        member.dest.display(),
        r.slots.len()
    );
    let (mode, mtime) = mode_and_mtime(&member.object.source)?;
    Ok(File {
        path: relative(&member.dest)?,
        mode,
        mtime,
        bytes: r.bytes,
        slots: r.slots,
    })
}

fn plain_file(dest: &Path, source: &Path, bytes: Vec<u8>) -> Result<File> {
    let (mode, mtime) = mode_and_mtime(source)?;
    Ok(File {
        path: relative(dest)?,
        mode,
        mtime,
        bytes,
        slots: Vec::new(),
    })
}

/// The permission bits and the modification time (seconds, none before the epoch) of `source`.
pub(crate) fn mode_and_mtime(source: &Path) -> Result<(u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(source).map_err(|e| crate::elf::io_error(source, &e))?;
    Ok((meta.mode() & 0o777, meta.mtime().max(0) as u64))
}

fn root_token() -> &'static str {
    std::str::from_utf8(payload::ROOT_TOKEN).expect("ASCII token")
}

/// What in-memory mode loads for `program`: its interpreter, and breadth-first from its
/// DT_NEEDED the libraries the bundle holds as files (the loader, which libc names, is running
/// already; `glibc-hwcaps` variants are the loader's own choice).
fn memory_load(program: &Member, closure: &Closure) -> Result<(String, Vec<String>)> {
    let interp = program.object.interpreter.as_deref();
    let interp_member = interp.and_then(|i| {
        closure
            .interpreters
            .iter()
            .find(|m| m.dest == Path::new(i) || same_file(&m.object.source, Path::new(i)))
    });
    let interpreter = match interp_member {
        Some(m) => relative(&m.dest)?,
        None => String::new(),
    };
    let is_loader = |lib: &Member| {
        closure
            .interpreters
            .iter()
            .any(|i| same_file(&lib.object.source, &i.object.source))
    };
    let mut seen: HashSet<&Path> = HashSet::new();
    let mut queue: std::collections::VecDeque<&str> =
        program.object.needed.iter().map(String::as_str).collect();
    let mut libraries = Vec::new();
    while let Some(name) = queue.pop_front() {
        let found = closure.libraries.iter().find(|l| {
            l.dest.file_name().is_some_and(|n| n == name)
                && !l.dest.components().any(|c| c.as_os_str() == "glibc-hwcaps")
        });
        let Some(lib) = found else { continue };
        if !seen.insert(&lib.dest) || is_loader(lib) {
            continue;
        }
        libraries.push(relative(&lib.dest)?);
        queue.extend(lib.object.needed.iter().map(String::as_str));
    }
    Ok((interpreter, libraries))
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// `$ORIGIN` followed by the way from `from` to `to`, both absolute dirs.
fn origin_relative(from: &Path, to: &Path) -> String {
    let way = relative_way(from, to);
    if way.is_empty() {
        "$ORIGIN".to_string()
    } else {
        format!("$ORIGIN/{way}")
    }
}

/// The bundle path of an absolute host path: the same path without its leading `/`.
fn relative(dest: &Path) -> Result<String> {
    let s = dest
        .to_str()
        .with_context(|| format!("{}: path is not UTF-8", dest.display()))?;
    let rel = s.trim_start_matches('/').to_string();
    if payload::safe_path(rel.as_bytes()).is_err() || rel.len() > u16::MAX as usize {
        bail!(
            "{}: cannot be stored in a bundle (not a plain absolute path)",
            dest.display()
        );
    }
    Ok(rel)
}

/// Every proper parent dir of a relative path, outermost first.
fn parents(path: &str) -> Vec<String> {
    path.match_indices('/')
        .map(|(i, _)| path[..i].to_string())
        .collect()
}

/// The raw bytes a stream holds at least: `--streams` splits no further than this.
const STREAM_BYTES: usize = 4 << 20;

/// Splits the files, in order, into `streams` groups of about the same raw size, fewer when
/// the payload is small (one per `STREAM_BYTES` at most). Neighbouring files stay
/// together (similar files compress best in one stream), and a file is never split, so each
/// stream can be decoded on its own into whole files. The split depends on the files alone,
/// so the output is the same on every machine.
fn stream_groups(files: &[File], streams: usize) -> Vec<Vec<&File>> {
    let total: usize = files.iter().map(|f| f.bytes.len()).sum();
    let wanted = total.div_ceil(STREAM_BYTES).clamp(1, streams.max(1));
    let mut groups: Vec<Vec<&File>> = vec![Vec::new()];
    let mut done = 0;
    for f in files {
        let boundary = total * groups.len() / wanted;
        let current = groups.last_mut().expect("one group at least");
        if done >= boundary && !current.is_empty() && groups.len() < wanted {
            groups.push(Vec::new());
        }
        groups.last_mut().expect("one group at least").push(f);
        done += f.bytes.len();
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// One group of files compressed as one stream.
fn compress_group(group: &[&File], level: u32, progress: &Progress) -> Result<(Stream, Vec<u8>)> {
    let raw: Vec<u8> = group.iter().flat_map(|f| f.bytes.iter().copied()).collect();
    let dict_size = dict_size(raw.len());
    let data = compress(&raw, dict_size, level, progress)?;
    let stream = Stream {
        data_len: data.len() as u64,
        raw_len: raw.len() as u64,
        dict_size,
        files: group.len() as u32,
    };
    Ok((stream, data))
}

/// The LZMA2 dictionary: the smallest power of two holding all the data, from 64 KiB to the
/// 64 MiB of xz's highest preset.
pub(crate) fn dict_size(raw_len: usize) -> u32 {
    (raw_len.max(1) as u32)
        .next_power_of_two()
        .clamp(64 << 10, 64 << 20)
}

/// xz with the x86 branch filter before LZMA2 (preset `level`, extreme at 9), through liblzma's
/// multi-threaded encoder with a fixed block size, so the bytes are the same whatever the
/// number of threads. No integrity check in the stream: the payload checksum covers the
/// compressed bytes, and the launcher verifies it before decoding any. The input goes in by
/// pieces, each counted on `progress`.
pub(crate) fn compress(
    raw: &[u8],
    dict_size: u32,
    level: u32,
    progress: &Progress,
) -> Result<Vec<u8>> {
    use xz2::stream::{Check, Filters, LzmaOptions, MtStreamBuilder};
    /// liblzma's LZMA_PRESET_EXTREME flag, which xz2 does not name.
    const PRESET_EXTREME: u32 = 1 << 31;
    let preset = if level >= 9 {
        9 | PRESET_EXTREME
    } else {
        level
    };
    let mut lzma = LzmaOptions::new_preset(preset)?;
    lzma.dict_size(dict_size);
    let mut filters = Filters::new();
    filters.x86().lzma2(&lzma);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let stream = MtStreamBuilder::new()
        .filters(filters)
        .check(Check::None)
        .threads(threads)
        .block_size(3 * dict_size as u64)
        .encoder()
        .context("cannot start the xz encoder")?;
    let mut out = Vec::with_capacity(raw.len() / 3);
    let mut enc = xz2::write::XzEncoder::new_stream(&mut out, stream);
    for piece in raw.chunks(1 << 20) {
        enc.write_all(piece)?;
        progress.add(piece.len() as u64);
    }
    enc.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_relative_walks_up_then_down() {
        let f = |a: &str, b: &str| origin_relative(Path::new(a), Path::new(b));
        assert_eq!(
            f("/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"),
            "$ORIGIN"
        );
        assert_eq!(
            f("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"),
            "$ORIGIN/../../usr/lib/x86_64-linux-gnu"
        );
        assert_eq!(f("/opt/app/lib", "/opt/app/lib/plugins"), "$ORIGIN/plugins");
    }

    #[test]
    fn parents_lists_every_enclosing_dir() {
        assert_eq!(
            parents("usr/lib/x/libc.so.6"),
            ["usr", "usr/lib", "usr/lib/x"]
        );
        assert!(parents("file").is_empty());
    }

    #[test]
    fn dict_size_is_bounded_power_of_two() {
        assert_eq!(dict_size(0), 64 << 10);
        assert_eq!(dict_size(3 << 20), 4 << 20);
        assert_eq!(dict_size(1 << 30), 64 << 20);
    }
}
