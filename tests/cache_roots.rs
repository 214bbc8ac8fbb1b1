//! Where a packed program runs from on hosts that make it hard: scratch containers with a
//! read-only root, temporary dirs mounted noexec or too small, no writable dir at all, and a
//! user that may write nowhere. Each case runs Debian's jq (regexes through libonig, libm)
//! with `TOTE_DEBUG=1`, checks that its output is the native jq's, and that the launcher's
//! trace names the cache root (or memory) the case must end up with, and why it skipped the
//! others.

mod common;

use common::outcome::{capture, Failures, Run};
use common::podman::Image;
use std::path::Path;
use std::process::Command;

const FILTER: &str = r#""a1b22c333" | [scan("[0-9]+")], (2 | sqrt), ("x" | test("X"; "i"))"#;

fn native() -> Run {
    capture(Command::new("/usr/bin/jq").args(["-nc", FILTER]), b"")
}

fn jq_image(tag: &str) -> Image {
    let packed = common::tote::packed_as(Path::new("/usr/bin/jq"), "jq");
    Image::build(tag, &[(&packed, "/jq")])
}

/// One case: podman options, and the trace lines (parts of) the run must show.
struct Case {
    name: &'static str,
    options: &'static [&'static str],
    expect: &'static [&'static str],
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case {
        name: "read-only root: the exec tmpfs podman mounts on /tmp",
        options: &["--read-only"],
        expect: &["skipping cache root /.cache/tote: cannot be created (EROFS)",
                  "cache root: /tmp/tote-0"],
    },
    Case {
        name: "/tmp mounted noexec: /var/tmp",
        options: &["--read-only", "--tmpfs", "/tmp:rw,noexec"],
        expect: &["skipping cache root /tmp/tote-0: on a file system mounted noexec",
                  "cache root: /var/tmp/tote-0"],
    },
    Case {
        name: "nothing writable: memory",
        options: &["--read-only", "--read-only-tmpfs=false"],
        expect: &["skipping cache root /tmp/tote-0: cannot be created (EROFS)",
                  "no usable cache root: running from memory"],
    },
    Case {
        name: "uid 1000 may write nowhere: memory",
        options: &["--user", "1000:1000", "-e", "HOME=/"],
        expect: &["skipping cache root /.cache/tote: cannot be created (EACCES)",
                  "skipping cache root /dev/shm/tote-1000: on a file system mounted noexec",
                  "no usable cache root: running from memory"],
    },
    Case {
        name: "TMPDIR on the noexec /dev/shm: /tmp",
        options: &["--read-only", "-e", "TMPDIR=/dev/shm"],
        expect: &["skipping cache root /dev/shm/tote-0: on a file system mounted noexec",
                  "cache root: /tmp/tote-0"],
    },
    Case {
        name: "a 1 MiB exec tmpfs, the only writable dir: memory",
        options: &["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,exec,size=1m"],
        expect: &["skipping cache root /tmp/tote-0: not enough free space for the bundle",
                  "no usable cache root: running from memory"],
    },
];

#[test]
fn each_host_gets_the_cache_root_or_memory_it_allows() {
    let image = jq_image("roots");
    let native = native();
    assert!(native.success(), "native jq: {}", native.describe());
    let mut failures = Failures::new();
    for case in CASES {
        let mut options = vec!["-e", "TOTE_DEBUG=1"];
        options.extend_from_slice(case.options);
        let run = image.run(&options, &["/jq", "-nc", FILTER], b"");
        failures.check(
            &format!("{}: output", case.name),
            run.stdout == native.stdout && run.status == native.status,
            || format!("expected:\n{}\ngot:\n{}", native.describe(), run.describe()),
        );
        for line in case.expect {
            failures.check(
                &format!("{}: trace shows {line:?}", case.name),
                run.stderr_text().contains(line),
                || run.describe(),
            );
        }
    }
    failures.finish();
}

#[test]
fn a_too_small_chosen_cache_dir_is_a_clear_error_before_anything_is_written() {
    let image = jq_image("small");
    let options = [
        "--read-only",
        "--tmpfs",
        "/small:rw,exec,size=1m",
        "-e",
        "TOTE_CACHE_DIR=/small/cache",
    ];
    let run = image.run(&options, &["/jq", "-nc", FILTER], b"");
    let expected = "tote: not enough free space in TOTE_CACHE_DIR for the bundle: /small/cache\n";
    assert_eq!(run.stderr_text(), expected, "{}", run.describe());
    assert_eq!(run.status, common::outcome::Status::Code(114));
    assert!(run.stdout.is_empty(), "{}", run.describe());
}

#[test]
fn memory_mode_can_be_forced_and_runs_as_pid_1_and_as_a_child() {
    let image = jq_image("forced");
    let native = native();
    let mut failures = Failures::new();
    for init in ["1", "0"] {
        let options = ["-e", "TOTE_MODE=memory", "-e", "TOTE_DEBUG=1", "-e"];
        let mut options = options.to_vec();
        let init_var = format!("TOTE_INIT={init}");
        options.push(&init_var);
        let run = image.run(&options, &["/jq", "-nc", FILTER], b"");
        failures.check(
            &format!("TOTE_INIT={init}: output"),
            run.stdout == native.stdout && run.status == native.status,
            || run.describe(),
        );
        failures.check(
            &format!("TOTE_INIT={init}: ran from memory, extracted nothing"),
            run.stderr_text().contains("running from memory")
                && !run.stderr_text().contains("decompressing into"),
            || run.describe(),
        );
    }
    failures.finish();
}
