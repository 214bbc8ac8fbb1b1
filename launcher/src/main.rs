//! The tote launcher: the static stub at the head of every tote file. It finds the payload at
//! the end of its own file, makes sure the bundle is extracted in the cache, and starts the
//! program through the bundled loader. No libc, no allocator, no panics on the way: every
//! failure is one `tote: ...` line and an exit code of its own.

#![no_std]
#![no_main]

#[cfg_attr(target_arch = "x86_64", path = "arch/x86_64.rs")]
mod arch;
mod args;
mod cache;
mod data;
mod extract;
mod init;
mod mem;
mod memory;
mod out;
mod path;
// The writing half of the format is the packer's.
#[allow(dead_code)]
mod payload;
mod program;
mod sys;

use args::Args;
use cache::Placement;
use out::{Fail, Failure};
use payload::{RunTable, Trailer, TRAILER_LEN};
use program::OwnFile;

/// How much of the file's tail the first look takes: the trailer and, in all but huge
/// bundles, the run table with it. It is mapped, not read, so only the pages touched cost.
const TAIL: usize = 64 * 1024;
/// File mappings start at a multiple of this.
const PAGE: u64 = 4096;

/// Called by `_start` with the initial stack pointer.
///
/// # Safety
/// `sp` must be the stack pointer the kernel gave the process.
pub unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: forwarded from the caller.
    let args = unsafe { Args::from_stack(sp) };
    out::set_debug(args.env(b"TOTE_DEBUG") == Some(b"1"));
    match run(&args) {
        Ok(never) => match never {},
        Err(fail) => fail.report(),
    }
}

fn run(args: &Args) -> Result<core::convert::Infallible, Fail> {
    // 1. Open our own file.
    let own = program::open_own_file(args)?;

    // 2. Read the trailer and the run table from its tail.
    let (trailer, run) = read_tail(&own)?;
    let run = RunTable::decode(run).map_err(|_| damaged("damaged payload (run table)", &own))?;
    // Which program before anything is extracted: an unknown name extracts nothing.
    let program = program::choose(args, &run)?;

    // 3. Find the bundle dir in the cache, or where to extract it, or run from memory.
    let mut placement = match args.env(b"TOTE_MODE") {
        Some(b"memory") => Placement::Memory,
        None | Some(b"") => cache::locate(args, &trailer, 0)?,
        Some(other) => {
            let what = "unknown TOTE_MODE (the one mode is memory)";
            return Err(Fail::new(Failure::CacheDir, what, other, None));
        }
    };

    // 4. Extract unless the bundle is complete already (in the next root when one is too
    //    full), and start the program: in place, or as the child of a minimal init when PID 1.
    let bundle = loop {
        match placement {
            Placement::Cached(dir) => break dir,
            Placement::Extract(root) => {
                let extracted = extract::extract(&own, &trailer, &root, args.random());
                sys::close(root.fd);
                match (extracted, root.next) {
                    (Ok(()), _) => break root.bundle,
                    (Err(f), Some(next)) if f.is_out_of_room() => {
                        out::debug(&[b"no room left in ", root.path.bytes()]);
                        placement = cache::locate(args, &trailer, next)?;
                    }
                    (Err(f), _) => return Err(f),
                }
            }
            Placement::Memory => return memory::run(args, &own, &trailer, &run, &program),
        }
    };
    sys::close(own.fd);
    program::start(args, &run, &program, &bundle)
}

fn damaged(what: &'static str, own: &OwnFile) -> Fail {
    Fail::new(Failure::Payload, what, own.name, None)
}

/// Maps the last `TAIL` bytes (or the whole file), decodes the trailer and checks the run
/// table's checksum. Returns the trailer and the run table's bytes. The mapping is never
/// unmapped: the exec that ends every start replaces the whole address space.
fn read_tail(own: &OwnFile) -> Result<(Trailer, &'static [u8]), Fail> {
    let len = own.len;
    if len < TRAILER_LEN as u64 {
        return Err(damaged("no payload (not a tote file)", own));
    }
    let at = len.saturating_sub(TAIL as u64) / PAGE * PAGE;
    let mapped = (len - at) as usize;
    let base = sys::mmap_file(own.fd, at, mapped)
        .map_err(|e| Fail::new(Failure::OwnFile, "cannot map own file", own.name, Some(e)))?;
    // SAFETY: the mapping is `mapped` bytes long, readable, and stays for the process's
    // life. A file shortened under it makes a touch past its new end fault (SIGBUS), which a
    // start of a file being rewritten may meet; it runs nothing.
    let tail = unsafe { core::slice::from_raw_parts(base, mapped) };
    let mut raw = [0u8; TRAILER_LEN];
    raw.copy_from_slice(&tail[mapped - TRAILER_LEN..]);
    let t = Trailer::decode(&raw, len).map_err(|e| match e {
        payload::FormatError::NoPayload => damaged("no payload (not a tote file)", own),
        payload::FormatError::Version => damaged("payload of an unknown format version", own),
        _ => damaged("damaged payload (trailer)", own),
    })?;
    let run_len = t.run_len as usize;
    if run_len > mapped.min(TAIL) - TRAILER_LEN {
        return Err(damaged("damaged payload (run table too large)", own));
    }
    let run = &tail[mapped - TRAILER_LEN - run_len..mapped - TRAILER_LEN];
    if payload::checksum(run) != t.run_checksum {
        return Err(damaged("damaged payload (run table checksum)", own));
    }
    Ok((t, run))
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    let _ = sys::write_all(2, b"tote: internal error\n");
    sys::exit(118)
}
