//! Programs linked against musl, and static programs. musl-gcc output has no PT_NOTE header,
//! so the packer takes its other route (the program header table moves into the new
//! segment), and the bundle carries musl's loader instead of glibc's. Static programs (musl or
//! glibc) are stored as they are and run without a loader. The packed programs run in a
//! scratch container and must behave as they do natively.

mod common;

use common::fixtures::{native_command, source};
use common::outcome::{capture, Failures, Status};
use common::podman::Image;
use goblin::elf::program_header::{PT_INTERP, PT_NOTE};
use goblin::elf::Elf;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/fixtures/<name>.c` built with musl-gcc, dynamically linked.
fn musl_program(name: &str) -> PathBuf {
    musl_build(name, name, &[])
}

/// `tests/fixtures/<name>.c` built with musl-gcc and `flags` at `musl/<output>`.
fn musl_build(name: &str, output: &str, flags: &[&str]) -> PathBuf {
    let path = common::work_dir().join("musl").join(output);
    common::make_dir(path.parent().expect("a parent dir"));
    let run = capture(
        Command::new("musl-gcc")
            .arg("-O1")
            .args(flags)
            .arg("-o")
            .arg(&path)
            .arg(source(name)),
        b"",
    );
    assert!(
        run.success(),
        "musl-gcc failed (is musl-tools installed?):\n{}",
        run.describe()
    );
    path
}

/// Panics unless `path` asks for musl's loader and has no PT_NOTE: the case under test.
fn assert_musl_without_notes(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let elf = Elf::parse(&bytes).unwrap();
    assert!(
        elf.interpreter.is_some_and(|i| i.contains("ld-musl")),
        "{path:?} is not musl-linked"
    );
    let types: Vec<u32> = elf.program_headers.iter().map(|p| p.p_type).collect();
    assert!(
        types.contains(&PT_INTERP) && !types.contains(&PT_NOTE),
        "{path:?} headers: {types:?}"
    );
}

fn packed_image(name: &str) -> (PathBuf, Image) {
    let program = musl_program(name);
    assert_musl_without_notes(&program);
    let packed = common::work_dir().join("musl-packed").join(name);
    common::make_dir(packed.parent().unwrap());
    common::tote::pack_ok(&program, &packed);
    let image = Image::build(&format!("musl-{name}"), &[(&packed, &format!("/{name}"))]);
    (program, image)
}

#[test]
fn a_musl_program_gets_its_arguments_in_a_container() {
    let (program, image) = packed_image("args_env");
    let argv = ["/args_env", "one", "two words", ""];
    let packed = image.run(&[], &argv, b"");
    let native = capture(
        &mut native_command(&program, &argv, &[], Path::new("/")),
        b"",
    );
    let argv_lines = |text: String| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("argv["))
            .map(String::from)
            .collect()
    };
    let mut failures = Failures::new();
    failures.check("exit status 0", packed.success(), || packed.describe());
    failures.check(
        "argv as natively",
        argv_lines(packed.stdout_text()) == argv_lines(native.stdout_text()),
        || {
            format!(
                "packed:\n{}\nnative:\n{}",
                packed.describe(),
                native.describe()
            )
        },
    );
    failures.finish();
}

#[test]
fn a_musl_program_exits_with_its_own_status_in_a_container() {
    let (_, image) = packed_image("exit_code");
    let mut failures = Failures::new();
    for code in ["0", "3", "200"] {
        let run = image.run(&[], &["/exit_code", code], b"");
        failures.check(
            &format!("exit {code}"),
            run.status == Status::Code(code.parse().unwrap()),
            || run.describe(),
        );
    }
    failures.finish();
}

/// Static programs, musl and glibc: no interpreter, stored untouched, started directly.
#[test]
fn static_programs_run_packed_in_a_container() {
    let programs = [
        (
            "static-musl",
            musl_build("exit_code", "static_exit_code", &["-static"]),
        ),
        (
            "static-glibc",
            common::fixtures::static_program("exit_code"),
        ),
    ];
    let mut failures = Failures::new();
    for (label, program) in programs {
        let bytes = std::fs::read(&program).unwrap();
        assert!(
            Elf::parse(&bytes).unwrap().interpreter.is_none(),
            "{program:?} is not static"
        );
        let packed = common::work_dir().join("musl-packed").join(label);
        common::make_dir(packed.parent().unwrap());
        common::tote::pack_ok(&program, &packed);
        let image = Image::build(label, &[(&packed, "/exit_code")]);
        let run = image.run(&[], &["/exit_code", "17"], b"");
        failures.check(label, run.status == Status::Code(17), || run.describe());
    }
    failures.finish();
}
