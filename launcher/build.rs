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
        // Functions with the same code are kept once (Rust makes no promise that two
        // functions have different addresses).
        "-Wl,--icf=all",
        // Nothing would apply PT_GNU_RELRO: the kernel ignores it, and it is the C runtime
        // or the dynamic loader that makes those pages read-only after relocation. Without it
        // the GOT joins the other writable segment, one program header and its padding less.
        "-Wl,-z,norelro",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("discard.ld");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    println!("cargo:rerun-if-changed={}", script.display());
}
