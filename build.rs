//! Builds the launcher stub (`launcher/`, its own crate outside the workspace, with its own
//! target dir and profile) for the host's default target and hands its path to the packer,
//! which embeds it. Prints the stub's size on every build.

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
    let stub = build_launcher(&launcher, &out.join("launcher-target"));
    let size = std::fs::metadata(&stub).expect("launcher stub built").len();
    println!("cargo:warning=launcher stub: {size} bytes");
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
