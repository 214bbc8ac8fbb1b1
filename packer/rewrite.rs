//! ELF rewriting: gives every object of the bundle the search path and flags that keep the
//! host's libraries out, without moving any existing section.
//!
//! One read-write segment is appended to the file. It holds a copy of the dynamic string table
//! followed by the new rpath, a copy of the dynamic section (DT_STRTAB, DT_STRSZ, DT_RPATH,
//! DT_FLAGS_1 updated, DT_RUNPATH gone), and for executables a PATH_MAX slot for the
//! interpreter. PT_DYNAMIC (and PT_INTERP) then point into it. The segment needs a PT_LOAD
//! program header, placed after the existing PT_LOADs:
//! - route A, the file has a PT_NOTE: that header becomes the PT_LOAD (notes are not needed
//!   at run time);
//! - route B, no PT_NOTE (musl-gcc output): the program header table moves into the new
//!   segment with one more entry; the segment keeps the first PT_LOAD's offset-to-address
//!   delta, so the kernel's AT_PHDR is right on old kernels too.
//!
//! For executables the interpreter and rpath slots are filled by the launcher at extraction
//! (the cache dir's absolute path is known only then); libraries get an `$ORIGIN`-relative
//! rpath now.

use anyhow::{bail, Context, Result};
use goblin::elf::dynamic::{
    DF_1_NODEFLIB, DT_FLAGS_1, DT_NULL, DT_RPATH, DT_RUNPATH, DT_STRSZ, DT_STRTAB,
};
use goblin::elf::program_header::{
    ProgramHeader, PF_R, PF_W, PT_DYNAMIC, PT_GNU_PROPERTY, PT_INTERP, PT_LOAD, PT_NOTE, PT_PHDR,
};
use goblin::elf::Elf;

const PAGE: u64 = 0x1000;
/// Room left for a path the launcher fills in: PATH_MAX, NUL included.
pub const SLOT: usize = 4096;
const PHDR_SIZE: usize = 56;
const DYN_SIZE: usize = 16;
/// Empty dynamic entries left at the end for later tools.
const SPARE_DYNS: usize = 2;

/// What an object is rewritten as.
pub enum Role<'a> {
    /// Interpreter and rpath are slots, filled in at extraction from these templates.
    Executable {
        interpreter: &'a [u8],
        rpath: &'a [u8],
    },
    /// The rpath is final now (relative to `$ORIGIN`).
    Library { rpath: &'a [u8] },
}

/// Bytes for the launcher to write into the rewritten file at extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub offset: u64,
    pub capacity: u32,
    pub template: Vec<u8>,
}

pub struct Rewritten {
    pub bytes: Vec<u8>,
    pub slots: Vec<Slot>,
}

/// Where each part sits inside the new segment.
struct Layout {
    strtab_len: usize,
    rpath_at: usize,
    dynamic_at: usize,
    dynamic_len: usize,
    interpreter_at: Option<usize>,
    phdrs_at: Option<usize>,
    len: usize,
}

pub fn rewrite(bytes: &[u8], role: &Role) -> Result<Rewritten> {
    let elf = Elf::parse(bytes).context("malformed ELF file")?;
    let phdrs = elf.program_headers.clone();
    let dyns = read_dynamic(bytes, &phdrs)?;
    let strtab = old_strtab(bytes, &phdrs, &dyns)?;
    let note = pick_note(&phdrs);

    let moved_phdrs = note.is_none().then_some(phdrs.len() + 1);
    let layout = lay_out(strtab.len(), role, dyns.len(), moved_phdrs);
    let (seg_off, seg_vaddr) = place(bytes.len() as u64, &phdrs, note.is_some())?;
    let new_dyns = new_dynamic(&dyns, seg_vaddr, &layout);

    let mut seg = vec![0u8; layout.len];
    seg[..strtab.len()].copy_from_slice(strtab);
    if let Role::Library { rpath } = role {
        seg[layout.rpath_at..layout.rpath_at + rpath.len()].copy_from_slice(rpath);
    }
    for (i, (tag, val)) in new_dyns.iter().enumerate() {
        let at = layout.dynamic_at + i * DYN_SIZE;
        seg[at..at + 8].copy_from_slice(&tag.to_le_bytes());
        seg[at + 8..at + 16].copy_from_slice(&val.to_le_bytes());
    }

    let load = ProgramHeader {
        p_type: PT_LOAD,
        p_flags: PF_R | PF_W,
        p_offset: seg_off,
        p_vaddr: seg_vaddr,
        p_paddr: seg_vaddr,
        p_filesz: layout.len as u64,
        p_memsz: layout.len as u64,
        p_align: PAGE,
    };
    let new_phdrs = new_program_headers(&phdrs, note, load, &layout);

    let mut out = bytes.to_vec();
    out.resize(seg_off as usize, 0);
    out.extend_from_slice(&seg);
    match layout.phdrs_at {
        None => write_phdrs(&mut out, elf.header.e_phoff as usize, &new_phdrs),
        Some(at) => {
            write_phdrs(&mut out, seg_off as usize + at, &new_phdrs);
            out[32..40].copy_from_slice(&(seg_off + at as u64).to_le_bytes());
            out[56..58].copy_from_slice(&(new_phdrs.len() as u16).to_le_bytes());
        }
    }

    let mut slots = Vec::new();
    if let Role::Executable { interpreter, rpath } = role {
        let interpreter_at = layout
            .interpreter_at
            .expect("executables have an interpreter slot");
        slots.push(slot(seg_off + interpreter_at as u64, interpreter));
        slots.push(slot(seg_off + layout.rpath_at as u64, rpath));
    }
    Ok(Rewritten { bytes: out, slots })
}

fn slot(offset: u64, template: &[u8]) -> Slot {
    Slot {
        offset,
        capacity: SLOT as u32,
        template: template.to_vec(),
    }
}

/// The dynamic entries up to DT_NULL, as (tag, value) pairs.
fn read_dynamic(bytes: &[u8], phdrs: &[ProgramHeader]) -> Result<Vec<(u64, u64)>> {
    let dynamic = phdrs
        .iter()
        .find(|p| p.p_type == PT_DYNAMIC)
        .context("no dynamic section")?;
    let start = dynamic.p_offset as usize;
    let region = bytes
        .get(start..start + dynamic.p_filesz as usize)
        .context("dynamic section outside the file")?;
    Ok(region
        .chunks_exact(DYN_SIZE)
        .map(|e| (u64_at(e, 0), u64_at(e, 8)))
        .take_while(|(tag, _)| *tag != DT_NULL)
        .collect())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn old_strtab<'a>(
    bytes: &'a [u8],
    phdrs: &[ProgramHeader],
    dyns: &[(u64, u64)],
) -> Result<&'a [u8]> {
    let get = |tag| dyns.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v);
    let vaddr = get(DT_STRTAB).context("no DT_STRTAB")?;
    let size = get(DT_STRSZ).context("no DT_STRSZ")? as usize;
    let load = phdrs
        .iter()
        .find(|p| p.p_type == PT_LOAD && p.p_vaddr <= vaddr && vaddr < p.p_vaddr + p.p_filesz)
        .context("DT_STRTAB outside every loaded segment")?;
    let start = (vaddr - load.p_vaddr + load.p_offset) as usize;
    bytes
        .get(start..start + size)
        .context("dynamic string table outside the file")
}

/// The PT_NOTE to turn into the new PT_LOAD: the last one, preferring one that does not hold
/// the GNU property note (which keeps its own PT_GNU_PROPERTY header anyway).
fn pick_note(phdrs: &[ProgramHeader]) -> Option<usize> {
    let property = phdrs
        .iter()
        .find(|p| p.p_type == PT_GNU_PROPERTY)
        .map(|p| p.p_offset);
    let notes: Vec<usize> = (0..phdrs.len())
        .filter(|&i| phdrs[i].p_type == PT_NOTE)
        .collect();
    notes
        .iter()
        .rev()
        .find(|&&i| Some(phdrs[i].p_offset) != property)
        .or(notes.last())
        .copied()
}

/// `moved_phdrs`: on route B, how many program headers the moved table holds.
fn lay_out(strtab_len: usize, role: &Role, dyn_count: usize, moved_phdrs: Option<usize>) -> Layout {
    let rpath_len = match role {
        Role::Executable { .. } => SLOT,
        Role::Library { rpath } => rpath.len() + 1,
    };
    let strtab_len = strtab_len + rpath_len;
    let dynamic_at = align8(strtab_len);
    // Every old entry, minus rpath and runpath, plus rpath, flags and the terminators.
    let dynamic_len = (dyn_count + 2 + 1 + SPARE_DYNS) * DYN_SIZE;
    let mut end = dynamic_at + dynamic_len;
    let interpreter_at = matches!(role, Role::Executable { .. }).then(|| {
        let at = end;
        end += SLOT;
        at
    });
    let phdrs_at = moved_phdrs.map(|count| {
        let at = align8(end);
        end = at + count * PHDR_SIZE;
        at
    });
    Layout {
        strtab_len,
        rpath_at: strtab_len - rpath_len,
        dynamic_at,
        dynamic_len,
        interpreter_at,
        phdrs_at,
        len: end,
    }
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn align_page(n: u64) -> u64 {
    (n + PAGE - 1) & !(PAGE - 1)
}

/// File offset and address of the new segment: past the end of the file and past the end of
/// every loaded segment. Route B keeps the first PT_LOAD's address-minus-offset delta.
fn place(file_len: u64, phdrs: &[ProgramHeader], has_note: bool) -> Result<(u64, u64)> {
    let loads: Vec<&ProgramHeader> = phdrs.iter().filter(|p| p.p_type == PT_LOAD).collect();
    let first = loads.first().context("no loadable segment")?;
    let mem_end = loads
        .iter()
        .map(|p| p.p_vaddr + p.p_memsz)
        .max()
        .unwrap_or(0);
    if has_note {
        return Ok((align_page(file_len), align_page(mem_end)));
    }
    let delta = first.p_vaddr.wrapping_sub(first.p_offset);
    if delta % PAGE != 0 {
        bail!("first loadable segment is not page-aligned");
    }
    let vaddr = align_page(mem_end.max(file_len.wrapping_add(delta)));
    Ok((vaddr.wrapping_sub(delta), vaddr))
}

/// The old dynamic entries with rpath and runpath dropped, the string table moved, DT_RPATH
/// added and DF_1_NODEFLIB set.
fn new_dynamic(dyns: &[(u64, u64)], seg_vaddr: u64, layout: &Layout) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut has_flags_1 = false;
    for &(tag, val) in dyns {
        match tag {
            DT_RPATH | DT_RUNPATH => {}
            DT_STRTAB => out.push((tag, seg_vaddr)),
            DT_STRSZ => out.push((tag, layout.strtab_len as u64)),
            DT_FLAGS_1 => {
                has_flags_1 = true;
                out.push((tag, val | DF_1_NODEFLIB));
            }
            _ => out.push((tag, val)),
        }
    }
    if !has_flags_1 {
        out.push((DT_FLAGS_1, DF_1_NODEFLIB));
    }
    out.push((DT_RPATH, layout.rpath_at as u64));
    out.resize(layout.dynamic_len / DYN_SIZE, (DT_NULL, 0));
    out
}

/// The new program header table: PT_DYNAMIC and PT_INTERP pointing into the segment, the new
/// PT_LOAD right after the last old one, and route A's PT_NOTE gone or route B's PT_PHDR moved.
fn new_program_headers(
    phdrs: &[ProgramHeader],
    note: Option<usize>,
    load: ProgramHeader,
    layout: &Layout,
) -> Vec<ProgramHeader> {
    let at = |offset: usize, len: usize| {
        let mut p = load.clone();
        p.p_offset += offset as u64;
        p.p_vaddr += offset as u64;
        p.p_paddr += offset as u64;
        p.p_filesz = len as u64;
        p.p_memsz = len as u64;
        p
    };
    let mut out: Vec<ProgramHeader> = Vec::new();
    for (i, p) in phdrs.iter().enumerate() {
        if Some(i) == note {
            continue;
        }
        let moved = match p.p_type {
            PT_DYNAMIC => Some(at(layout.dynamic_at, layout.dynamic_len)),
            PT_INTERP => layout.interpreter_at.map(|a| at(a, SLOT)),
            PT_PHDR => layout
                .phdrs_at
                .map(|a| at(a, (phdrs.len() + 1) * PHDR_SIZE)),
            _ => None,
        };
        match moved {
            Some(m) => out.push(ProgramHeader {
                p_type: p.p_type,
                p_flags: p.p_flags,
                p_align: p.p_align,
                ..m
            }),
            None => out.push(p.clone()),
        }
    }
    let last_load = out
        .iter()
        .rposition(|p| p.p_type == PT_LOAD)
        .map_or(out.len(), |i| i + 1);
    out.insert(last_load, load);
    out
}

fn write_phdrs(out: &mut [u8], at: usize, phdrs: &[ProgramHeader]) {
    for (i, p) in phdrs.iter().enumerate() {
        let b = &mut out[at + i * PHDR_SIZE..at + (i + 1) * PHDR_SIZE];
        b[0..4].copy_from_slice(&p.p_type.to_le_bytes());
        b[4..8].copy_from_slice(&p.p_flags.to_le_bytes());
        for (j, v) in [
            p.p_offset, p.p_vaddr, p.p_paddr, p.p_filesz, p.p_memsz, p.p_align,
        ]
        .iter()
        .enumerate()
        {
            b[8 + 8 * j..16 + 8 * j].copy_from_slice(&v.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use goblin::elf::dynamic::DT_NEEDED;

    const LIBM: &str = "/lib/x86_64-linux-gnu/libm.so.6";

    fn libm() -> Vec<u8> {
        std::fs::read(LIBM).expect("Debian's libm")
    }

    /// The same object with every PT_NOTE header made PT_NULL, as musl-gcc output has none.
    fn without_notes(bytes: &[u8]) -> Vec<u8> {
        let elf = Elf::parse(bytes).unwrap();
        let mut out = bytes.to_vec();
        for (i, p) in elf.program_headers.iter().enumerate() {
            if p.p_type == PT_NOTE {
                let at = elf.header.e_phoff as usize + i * PHDR_SIZE;
                out[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            }
        }
        out
    }

    fn dyn_value(elf: &Elf, tag: u64) -> Option<u64> {
        elf.dynamic
            .as_ref()?
            .dyns
            .iter()
            .find(|d| d.d_tag == tag)
            .map(|d| d.d_val)
    }

    /// Checks what every rewritten object must satisfy, whichever route it took.
    fn check_common(before: &[u8], after: &[u8]) {
        let old = Elf::parse(before).unwrap();
        let new = Elf::parse(after).unwrap();
        assert_eq!(new.libraries, old.libraries, "needed libraries unchanged");
        assert_eq!(new.soname, old.soname);
        assert!(new.runpaths.is_empty(), "runpath removed");
        assert_ne!(
            dyn_value(&new, DT_FLAGS_1).unwrap() & DF_1_NODEFLIB,
            0,
            "DF_1_NODEFLIB set"
        );
        let loads: Vec<_> = new
            .program_headers
            .iter()
            .filter(|p| p.p_type == PT_LOAD)
            .collect();
        assert!(
            loads
                .windows(2)
                .all(|w| w[0].p_vaddr + w[0].p_memsz <= w[1].p_vaddr),
            "loads sorted"
        );
        let last = loads.last().unwrap();
        assert_eq!(last.p_offset % PAGE, last.p_vaddr % PAGE);
        assert_eq!(last.p_offset + last.p_filesz, after.len() as u64);
        let dynamic = new
            .program_headers
            .iter()
            .find(|p| p.p_type == PT_DYNAMIC)
            .unwrap();
        assert!(dynamic.p_vaddr >= last.p_vaddr && dynamic.p_vaddr < last.p_vaddr + last.p_memsz);
        let count = |elf: &Elf| {
            elf.dynamic
                .as_ref()
                .unwrap()
                .dyns
                .iter()
                .filter(|d| d.d_tag == DT_NEEDED)
                .count()
        };
        assert_eq!(count(&new), count(&old));
    }

    #[test]
    fn library_gets_origin_rpath_through_a_note_header() {
        let before = libm();
        let r = rewrite(
            &before,
            &Role::Library {
                rpath: b"$ORIGIN:$ORIGIN/../x",
            },
        )
        .unwrap();
        check_common(&before, &r.bytes);
        let new = Elf::parse(&r.bytes).unwrap();
        assert_eq!(new.rpaths, ["$ORIGIN:$ORIGIN/../x"]);
        let old = Elf::parse(&before).unwrap();
        assert_eq!(
            new.header.e_phoff, old.header.e_phoff,
            "route A keeps the header table"
        );
        assert_eq!(new.program_headers.len(), old.program_headers.len());
        assert!(r.slots.is_empty());
    }

    #[test]
    fn library_without_notes_moves_its_header_table() {
        let before = without_notes(&libm());
        let r = rewrite(&before, &Role::Library { rpath: b"$ORIGIN" }).unwrap();
        check_common(&before, &r.bytes);
        let new = Elf::parse(&r.bytes).unwrap();
        let old = Elf::parse(&before).unwrap();
        assert_eq!(new.program_headers.len(), old.program_headers.len() + 1);
        let last = new
            .program_headers
            .iter()
            .rfind(|p| p.p_type == PT_LOAD)
            .unwrap();
        let first = new
            .program_headers
            .iter()
            .find(|p| p.p_type == PT_LOAD)
            .unwrap();
        assert_eq!(
            last.p_vaddr - last.p_offset,
            first.p_vaddr - first.p_offset,
            "delta kept"
        );
        assert!(
            new.header.e_phoff >= last.p_offset
                && new.header.e_phoff < last.p_offset + last.p_filesz
        );
    }

    #[test]
    fn executable_gets_interpreter_and_rpath_slots() {
        let before = std::fs::read("/proc/self/exe").unwrap();
        let role = Role::Executable {
            interpreter: b"${TOTE_ROOT}/lib64/ld.so",
            rpath: b"${TOTE_ROOT}/lib",
        };
        let r = rewrite(&before, &role).unwrap();
        check_common(&before, &r.bytes);
        let new = Elf::parse(&r.bytes).unwrap();
        let interp = new
            .program_headers
            .iter()
            .find(|p| p.p_type == PT_INTERP)
            .unwrap();
        assert_eq!(interp.p_filesz, SLOT as u64);
        assert_eq!(
            r.slots[0],
            Slot {
                offset: interp.p_offset,
                capacity: SLOT as u32,
                template: b"${TOTE_ROOT}/lib64/ld.so".to_vec()
            }
        );
        let strtab = dyn_value(&new, DT_STRTAB).unwrap();
        let rpath_at = dyn_value(&new, DT_RPATH).unwrap();
        let last = new
            .program_headers
            .iter()
            .rfind(|p| p.p_type == PT_LOAD)
            .unwrap();
        assert_eq!(
            r.slots[1].offset,
            strtab - last.p_vaddr + last.p_offset + rpath_at
        );
        let slot_bytes = &r.bytes[r.slots[1].offset as usize..][..SLOT];
        assert!(
            slot_bytes.iter().all(|b| *b == 0),
            "slots are left empty for the launcher"
        );
    }
}
