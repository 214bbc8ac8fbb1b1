//! Links the launcher as a static executable with no C runtime: it brings its own `_start` and
//! its own `mem*` functions.

fn main() {
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-Wl,--gc-sections",
        "-Wl,--build-id=none",
        "-Wl,--no-eh-frame-hdr",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("discard.ld");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    println!("cargo:rerun-if-changed={}", script.display());
}
