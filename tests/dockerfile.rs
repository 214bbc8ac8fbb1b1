//! The multi-stage recipe of `examples/jq.Dockerfile`, built with podman and no registry:
//! `scripts/debian-image` makes the local Debian builder image once (later runs find it and
//! keep it), then `podman build` packs the builder's jq with the tote under test and copies
//! the packed file alone into a `FROM scratch` stage. The image must hold that one file,
//! weigh under 2 MB, and run like the host's native jq (stdout, stderr, exit status). The
//! built image is removed at the end. Making the builder image needs Debian's package mirror.

mod common;

use common::outcome::{capture, Failures, Run};
use common::podman::{podman, Image};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The jq the container's is compared with, and the path it has in the image.
const HOST_JQ: &str = "/usr/bin/jq";
const IMAGE_JQ: &str = "/jq";

/// The largest image the scratch stage may make, in bytes.
const MAX_IMAGE_SIZE: u64 = 2_000_000;

/// Each case: a name, jq's arguments after argv[0], and what jq reads on stdin.
#[rustfmt::skip]
const CASES: &[(&str, &[&str], &str)] = &[
    ("add", &["-n", "[1,2]|add"], ""),
    ("stdin", &["-c", ".items | map(.name)"], r#"{"items":[{"name":"apple"},{"name":"bread"}]}"#),
    ("regex", &["-n", r#""2024-01-15" | capture("(?<y>\\d+)-(?<m>\\d+)")"#], ""),
    ("error exit", &["-n", r#"error("x")"#], ""),
    ("invalid input", &["."], "{\"a\": }\n"),
    ("exit status false", &["-e", ".missing"], "{}"),
];

/// A file of the repository.
fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `scripts/debian-image`, which returns at once when the builder image exists. It can
/// take minutes the first time, so it runs without the deadline of `capture`.
fn make_builder_image() {
    let script = repo_file("scripts/debian-image");
    let output = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script:?}: {e}"));
    assert!(
        output.status.success(),
        "{script:?} failed ({}); run it by hand to see why:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `podman ARGS...` and returns its stdout; panics with its output when it fails.
fn podman_ok(args: &[&str]) -> String {
    let run = capture(podman().args(args), b"");
    assert!(run.success(), "podman {args:?} failed:\n{}", run.describe());
    run.stdout_text()
}

/// `podman build` of `examples/jq.Dockerfile` with a context holding only the tote binary
/// under test, removed when dropped. Without layer caching, so every build runs `tote pack`
/// and leaves no intermediate image behind.
fn build() -> Image {
    let context = common::temp_dir();
    let tote = Path::new(env!("CARGO_BIN_EXE_tote"));
    std::fs::copy(tote, context.path().join("tote"))
        .unwrap_or_else(|e| panic!("cannot copy {tote:?} into the build context: {e}"));
    let name = format!("localhost/tote-test-dockerfile-jq-{}", std::process::id());
    let dockerfile = repo_file("examples/jq.Dockerfile");
    podman_ok(&[
        "build",
        "--quiet",
        "--layers=false",
        "--file",
        common::utf8(&dockerfile),
        "--tag",
        &name,
        common::utf8(context.path()),
    ]);
    Image::adopt(name)
}

/// The host's jq with the same argv and environment the container's gets.
fn run_natively(args: &[&str], stdin: &[u8]) -> Run {
    common::podman::run_as_in_a_container(Path::new(HOST_JQ), IMAGE_JQ, args, stdin)
}

#[test]
fn jq_dockerfile_builds_a_small_scratch_image_that_runs_like_native_jq() {
    make_builder_image();
    let image = build();
    let mut failures = Failures::new();

    let files = image.files();
    failures.check("image files", files == ["jq"], || {
        format!("expected only jq, found {files:?}")
    });
    let (_, size) = image.size();
    failures.check("image size", size < MAX_IMAGE_SIZE, || {
        format!("{size} bytes, expected under {MAX_IMAGE_SIZE}")
    });
    for (name, args, stdin) in CASES {
        let label = format!("jq case {name:?} {args:?}");
        let native = run_natively(args, stdin.as_bytes());
        failures.compare(&label, &native, &image.run(&[], args, stdin.as_bytes()));
    }
    failures.finish();
}
