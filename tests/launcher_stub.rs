//! The launcher is a static executable: the bare stub (`tote stub -o PATH`) and a packed file
//! have no interpreter, no dynamic section and no needed library, so the kernel runs them
//! with nothing else present.

mod common;

use goblin::elf::header::EM_X86_64;
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP};
use goblin::elf::Elf;
use std::path::Path;

/// Panics unless `path` is an x86-64 ELF executable that needs nothing at run time.
fn assert_static(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"));
    let elf = Elf::parse(&bytes).unwrap_or_else(|e| panic!("{path:?} is not ELF: {e}"));
    assert_eq!(
        elf.header.e_machine, EM_X86_64,
        "{path:?} is not for x86-64"
    );
    let kinds: Vec<u32> = elf
        .program_headers
        .iter()
        .map(|header| header.p_type)
        .collect();
    assert!(
        !kinds.contains(&PT_INTERP),
        "{path:?} has a PT_INTERP: {:?}",
        elf.interpreter
    );
    assert!(!kinds.contains(&PT_DYNAMIC), "{path:?} has a PT_DYNAMIC");
    assert!(
        elf.libraries.is_empty(),
        "{path:?} needs {:?}",
        elf.libraries
    );
}

#[test]
fn the_launcher_stub_is_static() {
    let dir = common::temp_dir();
    let stub = dir.path().join("stub");
    let run = common::outcome::capture(common::tote::tote().arg("stub").arg("-o").arg(&stub), b"");
    assert!(run.success(), "tote stub failed:\n{}", run.describe());
    assert_static(&stub);
}

#[test]
fn a_packed_file_is_static() {
    assert_static(&common::tote::packed("exit_code"));
}
