//! Reading a tote file on the packer's side: `tote verify` (every checksum and table, nothing
//! decompressed) and `tote extract` (the bundle written into a dir, its paths patched for that
//! dir, as the launcher would extract it into its cache).

use crate::payload::{
    self, Entry, FormatError, Index, RunTable, Trailer, KIND_DIR, KIND_FILE, ROOT_TOKEN,
    TRAILER_LEN,
};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A tote file read into memory, with its trailer and run table checked.
pub struct TotePayload {
    pub file: PathBuf,
    map: Vec<u8>,
    pub trailer: Trailer,
}

impl TotePayload {
    /// Reads `file` and checks its trailer and run table; the data is not decoded yet.
    pub fn open(file: &Path) -> Result<TotePayload> {
        let name = file.display();
        let meta = std::fs::metadata(file).map_err(|e| crate::elf::io_error(file, &e))?;
        if !meta.is_file() {
            bail!("{name}: not a regular file");
        }
        let map = std::fs::read(file).map_err(|e| crate::elf::io_error(file, &e))?;
        if map.len() < TRAILER_LEN {
            bail!("{name}: not a tote file: too short to hold a tote trailer");
        }
        let mut raw = [0u8; TRAILER_LEN];
        raw.copy_from_slice(&map[map.len() - TRAILER_LEN..]);
        let trailer = Trailer::decode(&raw, map.len() as u64).map_err(|e| match e {
            FormatError::NoPayload => anyhow::anyhow!(
                "{name}: not a tote file, or a truncated or extended one: no tote trailer at its end"
            ),
            FormatError::Version => {
                anyhow::anyhow!("{name}: payload of another format version than this tote's")
            }
            e => anyhow::anyhow!("{name}: damaged: {}", damage("trailer", e)),
        })?;
        let payload = TotePayload {
            file: file.to_path_buf(),
            map,
            trailer,
        };
        if payload::checksum(payload.run_bytes()) != trailer.run_checksum {
            bail!(
                "{name}: damaged: {}",
                damage("run table", FormatError::Checksum)
            );
        }
        payload.run_table()?;
        Ok(payload)
    }

    fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.map[from as usize..to as usize]
    }

    fn run_bytes(&self) -> &[u8] {
        self.bytes(self.trailer.run_offset(), self.trailer.end())
    }

    pub fn run_table(&self) -> Result<RunTable<'_>> {
        RunTable::decode(self.run_bytes()).map_err(|e| self.damaged(&damage("run table", e)))
    }

    pub fn index(&self) -> Result<Index<'_>> {
        let t = &self.trailer;
        Index::decode(self.bytes(t.index_offset(), t.run_offset()), t)
            .map_err(|e| self.damaged(&damage("index", e)))
    }

    /// The launcher stub in front of the payload.
    pub fn stub(&self) -> &[u8] {
        self.bytes(0, self.trailer.data_offset)
    }

    /// Checks the checksum over data, index and run table, and that the tables decode.
    pub fn verify(&self) -> Result<()> {
        let t = &self.trailer;
        if payload::checksum(self.bytes(t.data_offset, t.end())) != t.payload_checksum {
            return Err(self.damaged(&damage("payload", FormatError::Checksum)));
        }
        self.index().map(drop)
    }

    fn damaged(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!("{}: damaged: {what}", self.file.display())
    }
}

/// What is wrong with `part` (the trailer, the run table, the index, the payload), in words.
fn damage(part: &str, e: FormatError) -> String {
    match e {
        FormatError::Checksum => format!("the {part}'s checksum does not match"),
        FormatError::UnsafePath => format!("the {part} names a path outside the bundle"),
        FormatError::NoPayload | FormatError::Version | FormatError::Malformed => {
            format!("the {part} is malformed")
        }
    }
}

/// Whether `file` ends with a tote trailer: it is a tote file already.
pub fn is_tote_file(file: &Path) -> bool {
    use std::io::{Seek, SeekFrom};
    let mut tail = [0u8; TRAILER_LEN];
    let read = std::fs::File::open(file).and_then(|mut f| {
        f.seek(SeekFrom::End(-(TRAILER_LEN as i64)))?;
        f.read_exact(&mut tail)
    });
    read.is_ok() && tail[..payload::MAGIC.len()] == payload::MAGIC
}

/// `tote verify`: one line saying what was checked.
pub fn verify(file: &Path) -> Result<String> {
    let p = TotePayload::open(file)?;
    p.verify()?;
    let t = &p.trailer;
    let streams = p.index()?.streams().count();
    Ok(format!(
        "{}: ok: trailer, run table and payload checksums match; {} bytes in {streams} stream{}",
        file.display(),
        t.data_len,
        if streams == 1 { "" } else { "s" }
    ))
}

/// `tote extract`: writes the bundle of `file` into `dir`, which must not exist yet. The
/// tree is written beside it and renamed into place, so `dir` is whole or absent.
pub fn extract(file: &Path, dir: &Path) -> Result<()> {
    let p = TotePayload::open(file)?;
    p.verify()?;
    if dir.symlink_metadata().is_ok() {
        bail!(
            "{}: already exists; name a new dir to extract into",
            dir.display()
        );
    }
    let parent = match dir.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let root = std::fs::canonicalize(parent)
        .map_err(|e| crate::elf::io_error(parent, &e))?
        .join(
            dir.file_name()
                .context("the dir to extract into needs a name")?,
        );
    let tmp = tempfile::Builder::new()
        .prefix(".tote-extract-")
        .tempdir_in(parent)
        .map_err(|e| crate::elf::io_error(parent, &e).context("cannot create a dir there"))?;
    write_tree(&p, tmp.path(), &root)?;
    std::fs::rename(tmp.path(), &root).map_err(|e| crate::elf::io_error(&root, &e))?;
    std::mem::forget(tmp);
    Ok(())
}

/// Writes every entry of `p` under `at`, patching paths for `root`, where the tree will be.
fn write_tree(p: &TotePayload, at: &Path, root: &Path) -> Result<()> {
    let index = p.index()?;
    let io = |path: &Path, e: std::io::Error| crate::elf::io_error(path, &e);
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o755)).map_err(|e| io(at, e))?;
    for e in index.entries().filter(|e| e.kind == KIND_DIR) {
        let dir = at.join(path_of(&e));
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    let t = &p.trailer;
    for s in index.streams() {
        let start = t.data_offset + s.data_offset;
        let data = p.bytes(start, start + s.stream.data_len);
        let mut decoder = xz2::read::XzDecoder::new(data);
        for e in index.files_of(&s) {
            let mut bytes = vec![0u8; e.size as usize];
            decoder
                .read_exact(&mut bytes)
                .map_err(|_| p.damaged("the compressed data does not decode"))?;
            patch(&mut bytes, &e, root)?;
            let dest = at.join(path_of(&e));
            std::fs::write(&dest, &bytes).map_err(|e| crate::elf::io_error(&dest, &e))?;
            set_mtime(&dest, e.mtime)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(e.mode & 0o777))
                .map_err(|e| io(&dest, e))?;
        }
    }
    for e in index
        .entries()
        .filter(|e| e.kind != KIND_DIR && e.kind != KIND_FILE)
    {
        let target = String::from_utf8_lossy(e.target).into_owned();
        let link = at.join(path_of(&e));
        std::os::unix::fs::symlink(target, &link).map_err(|e| io(&link, e))?;
    }
    Ok(())
}

/// Gives the file at `dest` the modification time its entry records.
fn set_mtime(dest: &Path, secs: u64) -> Result<()> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(dest)
        .and_then(|f| f.set_modified(time))
        .map_err(|e| crate::elf::io_error(dest, &e))
}

fn path_of(e: &Entry) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(e.path).into_owned())
}

/// Writes each patch of `e` into `bytes`: its template with `ROOT_TOKEN` as `root`,
/// NUL-padded to its capacity.
fn patch(bytes: &mut [u8], e: &Entry, root: &Path) -> Result<()> {
    let root = root.as_os_str().as_encoded_bytes();
    for p in e.patches() {
        let mut text = fill(p.template, root);
        if text.len() >= p.capacity as usize {
            bail!(
                "{}: too long a path to extract into: {} has room for {} bytes of patched path",
                String::from_utf8_lossy(root),
                String::from_utf8_lossy(e.path),
                p.capacity - 1
            );
        }
        text.resize(p.capacity as usize, 0);
        let at = p.offset as usize;
        bytes[at..at + text.len()].copy_from_slice(&text);
    }
    Ok(())
}

/// A patch template with every `ROOT_TOKEN` replaced by `root`.
pub fn fill(template: &[u8], root: &[u8]) -> Vec<u8> {
    let mut text = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(ROOT_TOKEN) {
            text.extend_from_slice(root);
            rest = after;
        } else {
            text.push(rest[0]);
            rest = &rest[1..];
        }
    }
    text
}
