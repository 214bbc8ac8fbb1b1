//! Builds the launcher stub (`launcher/`, its own crate outside the workspace, with its own
//! target dir and profile) for the host's default target and hands its path to the packer,
//! which embeds it, without its section headers. Prints the stub's size on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let launcher = root.join("launcher");
    for p in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        ".cargo/config.toml",
        "discard.ld",
        "lzma/src",
        "lzma/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", launcher.join(p).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let built = build_launcher(&launcher, &out.join("launcher-target"));
    let bytes = without_section_headers(std::fs::read(&built).expect("launcher stub built"));
    let stub = out.join("tote-launcher");
    std::fs::write(&stub, &bytes).expect("OUT_DIR writable");
    println!("cargo:warning=launcher stub: {} bytes", bytes.len());
    println!("cargo:rustc-env=TOTE_STUB={}", stub.display());
}

/// Runs `cargo build --release` on the launcher with a clean environment: the flags cargo
/// gives this build script are for the packer, not for the stub.
fn build_launcher(launcher: &Path, target_dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(target_dir)
        .current_dir(launcher)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PROFILE_RELEASE_LTO")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the launcher stub failed");
    target_dir.join("release/tote-launcher")
}

/// The stub cut after the last byte a program header maps, with no section header table: the
/// kernel loads an executable from its program headers alone, and the section headers and
/// their names, at the end of the file, are 420 bytes nothing reads. Panics unless the stub
/// is a 64-bit little-endian ELF file laid out that way.
fn without_section_headers(mut elf: Vec<u8>) -> Vec<u8> {
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let u64_at = |b: &[u8], at: usize| {
        u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes")) as usize
    };
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "the stub is a 64-bit LSB ELF file"
    );
    let (phoff, phentsize, phnum) = (u64_at(&elf, 0x20), u16_at(&elf, 0x36), u16_at(&elf, 0x38));
    let end = (0..phnum)
        .map(|i| {
            let ph = &elf[phoff + i * phentsize..];
            u64_at(ph, 8) + u64_at(ph, 32)
        })
        .max()
        .expect("program headers");
    assert!(
        u64_at(&elf, 0x28) >= end,
        "the section headers follow the segments"
    );
    elf.truncate(end);
    // e_shoff, then e_shnum and e_shstrndx: no section headers.
    elf[0x28..0x30].fill(0);
    elf[0x3c..0x40].fill(0);
    elf
}
