//! `tote inspect`: what a tote file holds, read from its trailer, run table and index
//! without extracting anything: the programs, the variables set at run time, every entry.

use crate::payload::{self, Index, RunTable, Trailer, KIND_DIR, KIND_FILE, TRAILER_LEN};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The report on `file`, as text.
pub fn report(file: &Path) -> Result<String> {
    let bytes = read_payload_tables(file)?;
    let name = file.display();
    let t = bytes.trailer;
    let run = RunTable::decode(&bytes.run)
        .map_err(|e| anyhow::anyhow!("{name}: damaged run table ({e:?})"))?;
    let index = Index::decode(&bytes.index, &t)
        .map_err(|e| anyhow::anyhow!("{name}: damaged index ({e:?})"))?;
    let mut out = String::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for p in run.programs() {
        writeln!(out, "program {} = {}", text(p.name), text(p.path))?;
    }
    for v in run.vars() {
        writeln!(out, "variable {}={}", text(v.name), text(v.value))?;
    }
    let (mut files, mut others) = (0, 0);
    for e in index.entries() {
        match e.kind {
            KIND_DIR => writeln!(out, "dir  {:04o} {}", e.mode, text(e.path))?,
            KIND_FILE => {
                files += 1;
                let patched = if e.patches().next().is_some() {
                    " (patched at extraction)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "file {:04o} {:>10} {}{patched}",
                    e.mode,
                    e.size,
                    text(e.path)
                )?
            }
            _ => writeln!(out, "link      {} -> {}", text(e.path), text(e.target))?,
        }
        others += usize::from(e.kind != KIND_FILE);
    }
    let bundle = payload::bundle_name(&t.key);
    writeln!(out, "cache dir name {}", text(&bundle))?;
    writeln!(
        out,
        "{files} files, {others} dirs and links, {} bytes raw, {} bytes compressed in {} streams, format version {}",
        t.raw_len,
        t.data_len,
        index.streams().count(),
        payload::VERSION
    )?;
    Ok(out)
}

struct Tables {
    trailer: Trailer,
    index: Vec<u8>,
    run: Vec<u8>,
}

fn read_payload_tables(file: &Path) -> Result<Tables> {
    let name = file.display();
    let mut f = std::fs::File::open(file).with_context(|| name.to_string())?;
    let len = f.metadata().with_context(|| name.to_string())?.len();
    if len < TRAILER_LEN as u64 {
        bail!("{name}: not a tote file (too short)");
    }
    let mut raw = [0u8; TRAILER_LEN];
    f.seek(SeekFrom::End(-(TRAILER_LEN as i64)))?;
    f.read_exact(&mut raw)?;
    let trailer = Trailer::decode(&raw, len).map_err(|e| match e {
        payload::FormatError::NoPayload => anyhow::anyhow!("{name}: not a tote file"),
        e => anyhow::anyhow!("{name}: damaged trailer ({e:?})"),
    })?;
    let mut tables = vec![0u8; (trailer.index_len + trailer.run_len) as usize];
    f.seek(SeekFrom::Start(trailer.index_offset()))?;
    f.read_exact(&mut tables)
        .with_context(|| format!("{name}: cannot read the index"))?;
    let run = tables.split_off(trailer.index_len as usize);
    Ok(Tables {
        trailer,
        index: tables,
        run,
    })
}
