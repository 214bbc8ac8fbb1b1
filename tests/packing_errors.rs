//! Inputs `tote pack` must refuse: a missing file, a name not on PATH, a text file, a
//! directory, an ELF file for another machine, and a truncated ELF file. Each refusal is one
//! stderr line starting `tote: ` that names the input, a non-zero exit, and nothing left in
//! the output dir (neither the output nor a temporary file). Image options that do not go
//! together are usage errors (exit 2), and an output of the wrong kind is refused and kept.

mod common;

use common::outcome::{capture, Failures, Run, Status};
use common::tote::tote;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Offset and little-endian value of e_machine for AArch64 in an ELF header.
const E_MACHINE_OFFSET: usize = 18;
const EM_AARCH64: u16 = 183;

/// Bytes kept of a fixture to make a truncated ELF: the ELF header alone.
const ELF_HEADER_SIZE: usize = 64;

/// `tote pack PROGRAM -o OUTPUT` with PATH set to `path_var`.
fn pack_with_path(program: &OsStr, output: &Path, path_var: &Path) -> Run {
    capture(
        tote()
            .arg("pack")
            .arg(program)
            .arg("-o")
            .arg(output)
            .env("PATH", path_var),
        b"",
    )
}

/// Records a failure unless packing `program` was refused as the contract says.
fn check_refused(failures: &mut Failures, label: &str, program: &OsStr, named: &str) {
    let (out_dir, empty_path) = (common::temp_dir(), common::temp_dir());
    let output = out_dir.path().join("packed");
    let run = pack_with_path(program, &output, empty_path.path());
    let lines = run.stderr_lines();
    let failed = matches!(run.status, Status::Code(code) if code != 0);
    failures.check(&format!("{label}: exit status"), failed, || run.describe());
    let one_line = lines.len() == 1 && lines[0].starts_with("tote: ") && lines[0].contains(named);
    failures.check(
        &format!("{label}: one `tote: ` line naming {named}"),
        one_line,
        || run.describe(),
    );
    let left: Vec<_> = std::fs::read_dir(out_dir.path())
        .expect("the output dir exists")
        .map(|entry| entry.expect("a dir entry").file_name())
        .collect();
    failures.check(
        &format!("{label}: nothing left in the output dir"),
        left.is_empty(),
        || format!("{left:?}"),
    );
}

/// A copy of a fixture with e_machine set to AArch64.
fn foreign_elf(dir: &Path) -> PathBuf {
    let mut bytes =
        std::fs::read(common::fixtures::program("exit_code")).expect("cannot read a fixture");
    bytes[E_MACHINE_OFFSET..E_MACHINE_OFFSET + 2].copy_from_slice(&EM_AARCH64.to_le_bytes());
    executable_file(dir, "aarch64-program", &bytes)
}

/// The first 64 bytes of a fixture: a valid header whose program headers are missing.
fn truncated_elf(dir: &Path) -> PathBuf {
    let bytes =
        std::fs::read(common::fixtures::program("exit_code")).expect("cannot read a fixture");
    executable_file(dir, "truncated-program", &bytes[..ELF_HEADER_SIZE])
}

fn executable_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    common::write_file(&path, bytes);
    common::set_mode(&path, 0o755);
    path
}

/// A name that no dir on PATH holds.
const UNKNOWN_NAME: &str = "tote-no-such-program";

#[test]
fn unpackable_inputs_are_refused_cleanly() {
    let inputs = common::temp_dir();
    let dir = inputs.path();
    let a_dir = dir.join("a-directory");
    common::make_dir(&a_dir);
    let refused = [
        ("missing file", dir.join("missing-program")),
        (
            "text file",
            executable_file(dir, "notes.txt", b"just some text\n"),
        ),
        ("directory", a_dir),
        ("aarch64 ELF", foreign_elf(dir)),
        ("truncated ELF", truncated_elf(dir)),
    ];

    let mut failures = Failures::new();
    for (label, path) in &refused {
        check_refused(&mut failures, label, path.as_os_str(), common::utf8(path));
    }
    check_refused(
        &mut failures,
        "name not on PATH",
        OsStr::new(UNKNOWN_NAME),
        UNKNOWN_NAME,
    );
    failures.finish();
}

/// The same command packs a program found on PATH by name: the refusals above are about
/// the inputs, not about how the command is called.
#[test]
fn a_program_named_on_path_is_packed() {
    let fixture = common::fixtures::program("exit_code");
    let path_dir = fixture.parent().expect("a fixture has a parent dir");
    let out_dir = common::temp_dir();
    let output = out_dir.path().join("packed");
    let run = pack_with_path(OsStr::new("exit_code"), &output, path_dir);
    assert!(run.success(), "{}", run.describe());

    let cache = common::temp_dir();
    let env = [("TOTE_CACHE_DIR", common::utf8(cache.path()))];
    let started = capture(
        &mut common::tote::host_command(&output, &["exit_code", "7"], &env),
        b"",
    );
    assert_eq!(started.status, Status::Code(7), "{}", started.describe());
}

/// A program whose library was removed after linking: the error names the library, the
/// object that needed it and the dirs searched.
#[test]
fn a_missing_library_is_named_with_who_needed_it() {
    let dir = common::temp_dir();
    let lib = dir.path().join("libtotegone.so");
    let program = dir.path().join("needs_gone");
    let lib_source = common::fixtures::source("origin_lib");
    let main_source = common::fixtures::source("origin_main");
    common::fixtures::cc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-o".as_ref(),
        lib.as_os_str(),
        lib_source.as_os_str(),
    ]);
    let link_dir = format!("-L{}", dir.path().display());
    let rpath = format!("-Wl,-rpath,{}", dir.path().display());
    common::fixtures::cc(&[
        "-o".as_ref(),
        program.as_os_str(),
        main_source.as_os_str(),
        OsStr::new(&link_dir),
        OsStr::new("-ltotegone"),
        OsStr::new(&rpath),
    ]);
    std::fs::remove_file(&lib).expect("the library was built");

    let mut failures = Failures::new();
    check_refused(
        &mut failures,
        "missing library",
        program.as_os_str(),
        "libtotegone.so",
    );
    check_refused(
        &mut failures,
        "missing library",
        program.as_os_str(),
        common::utf8(&program),
    );
    check_refused(
        &mut failures,
        "missing library",
        program.as_os_str(),
        common::utf8(dir.path()),
    );
    failures.finish();
}

/// A failed pack onto an existing file leaves that file as it was.
#[test]
fn a_failed_pack_leaves_an_existing_output_untouched() {
    let dir = common::temp_dir();
    let output = dir.path().join("existing");
    common::write_file(&output, b"keep me\n");
    let text = executable_file(dir.path(), "notes.txt", b"just some text\n");
    let run = pack_with_path(text.as_os_str(), &output, dir.path());
    assert!(!run.success(), "{}", run.describe());
    assert_eq!(std::fs::read(&output).unwrap(), b"keep me\n");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only the existing file and the input remain: {names:?}"
    );
}

/// Image options that do not go together, or are malformed: each is one `tote: ` line
/// naming the option, exit status 2 (a usage error, as clap's own), and nothing written.
#[test]
fn bad_image_options_are_refused_with_one_line_and_exit_2() {
    let jq = common::fixtures::program("exit_code");
    let cases: &[(&[&str], &str)] = &[
        (&["--prefix", "/opt/x"], "--prefix"),
        (&["--passwd"], "--passwd"),
        (&["--ca-certs"], "--ca-certs"),
        (&["--format", "tar", "--oci-layout", "file"], "--oci-layout"),
        (&["--format", "dir", "--tag", "x:1"], "--tag"),
        (&["--format", "tar", "--user", "1000"], "--user"),
        (&["--format", "oci", "--prefix", "opt/x"], "--prefix opt/x"),
        (&["--format", "oci", "--prefix", "/"], "--prefix /"),
        (
            &["--format", "oci", "--prefix", "/opt/../x"],
            "--prefix /opt/../x",
        ),
        (
            &[
                "--format",
                "oci",
                "--oci-layout",
                "file",
                "--prefix",
                "/opt/x",
            ],
            "--prefix",
        ),
        (&["--format", "oci", "--tag", "Bad:1"], "--tag Bad:1"),
        (&["--format", "oci", "--user", "root"], "--user root"),
        (&["--format", "oci", "--tag", "a..b"], "--tag a..b"),
        (&["--format", "oci", "--tag", "a___b:1"], "--tag a___b:1"),
        (&["--format", "oci", "--tag", "jq:.1"], "--tag jq:.1"),
        (
            &["--format", "oci", "--user", "99999999999"],
            "--user 99999999999",
        ),
        (
            &["--format", "oci", "--user", "0:2147483648"],
            "--user 0:2147483648",
        ),
        (&["--env", "A=1", "--env", "A=2"], "--env A"),
    ];
    let mut failures = Failures::new();
    for (args, named) in cases {
        let out_dir = common::temp_dir();
        let run = capture(
            tote()
                .arg("pack")
                .arg(&jq)
                .args(*args)
                .arg("-o")
                .arg(out_dir.path().join("out")),
            b"",
        );
        let label = format!("{args:?}");
        failures.check(
            &format!("{label}: exit 2"),
            run.status == Status::Code(2),
            || run.describe(),
        );
        let lines = run.stderr_lines();
        let one_line = lines.len() == 1 && lines[0].starts_with(&format!("tote: {named}"));
        failures.check(
            &format!("{label}: one line naming {named}"),
            one_line,
            || run.describe(),
        );
        let left = std::fs::read_dir(out_dir.path()).unwrap().count();
        failures.check(&format!("{label}: nothing written"), left == 0, || {
            format!("{left} entries")
        });
    }
    failures.finish();
}

/// An output that exists as a dir is refused for the formats that write a file, and any
/// existing output for `--format dir`; what was there stays as it was.
#[test]
fn an_existing_output_of_the_wrong_kind_is_refused_and_kept() {
    let program = common::fixtures::program("exit_code");
    let dir = common::temp_dir();
    let existing_dir = dir.path().join("a-dir");
    common::make_dir(&existing_dir);
    let existing_file = dir.path().join("a-file");
    common::write_file(&existing_file, b"keep me\n");
    let cases: &[(&[&str], &Path, &str)] = &[
        (&["--format", "tar"], &existing_dir, "is a directory"),
        (&["--format", "oci"], &existing_dir, "is a directory"),
        (&["--format", "dir"], &existing_dir, "already exists"),
        (&["--format", "dir"], &existing_file, "already exists"),
    ];
    let mut failures = Failures::new();
    for (args, output, says) in cases {
        let run = capture(
            tote()
                .arg("pack")
                .arg(&program)
                .args(*args)
                .arg("-o")
                .arg(output),
            b"",
        );
        let label = format!("{args:?} onto {output:?}");
        let lines = run.stderr_lines();
        let refused = run.status == Status::Code(1) && lines.len() == 1 && lines[0].contains(says);
        failures.check(&label, refused, || run.describe());
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    failures.check("nothing added", names.len() == 2, || format!("{names:?}"));
    failures.check(
        "the dir still empty",
        std::fs::read_dir(&existing_dir).unwrap().count() == 0,
        String::new,
    );
    failures.check(
        "the file kept",
        std::fs::read(&existing_file).unwrap() == b"keep me\n",
        String::new,
    );
    failures.finish();
}

/// A `SOURCE_DATE_EPOCH` that is not digits, or not a time a tar can hold, is one line
/// naming it for every format (a tote file does not use it, but a typo is never ignored),
/// and nothing is written.
#[test]
fn a_bad_source_date_epoch_is_refused_for_every_format() {
    let program = common::fixtures::program("exit_code");
    let mut failures = Failures::new();
    for format in ["file", "dir", "tar", "oci"] {
        for bad in ["yesterday", "-1", "+5", "0x10", "1 2", "99999999999999"] {
            let dir = common::temp_dir();
            let run = capture(
                tote()
                    .arg("pack")
                    .arg(&program)
                    .args(["--format", format, "-o"])
                    .arg(dir.path().join("out"))
                    .env("SOURCE_DATE_EPOCH", bad),
                b"",
            );
            let label = format!("--format {format}, SOURCE_DATE_EPOCH={bad}");
            let lines = run.stderr_lines();
            let refused = run.status == Status::Code(1)
                && lines.len() == 1
                && lines[0].starts_with(&format!("tote: SOURCE_DATE_EPOCH={bad}: "));
            failures.check(&label, refused, || run.describe());
            let left = std::fs::read_dir(dir.path()).unwrap().count();
            failures.check(&format!("{label}: nothing written"), left == 0, || {
                format!("{left} entries")
            });
        }
    }
    failures.finish();
}

/// An empty `SOURCE_DATE_EPOCH` means unset: the tar is the same as without it. Whitespace
/// around the digits is allowed.
#[test]
fn an_empty_source_date_epoch_is_unset() {
    let program = common::fixtures::program("exit_code");
    let dir = common::temp_dir();
    let pack = |name: &str, epoch: Option<&str>| {
        let output = dir.path().join(name);
        let mut command = tote();
        command
            .arg("pack")
            .arg(&program)
            .args(["--format", "tar", "-o"])
            .arg(&output)
            .env_remove("SOURCE_DATE_EPOCH");
        if let Some(epoch) = epoch {
            command.env("SOURCE_DATE_EPOCH", epoch);
        }
        let run = capture(&mut command, b"");
        assert!(run.success(), "{name}: {}", run.describe());
        std::fs::read(output).expect("the tar was written")
    };
    assert!(pack("unset.tar", None) == pack("empty.tar", Some("")));
    assert!(pack("digits.tar", Some("5")) == pack("spaced.tar", Some(" 5\n")));
}

/// A malformed `--env` is a usage error as clap reports one: exit 2, the value and what is
/// wrong with it named, and nothing written.
#[test]
fn a_malformed_env_is_a_usage_error() {
    let program = common::fixtures::program("exit_code");
    let cases = [
        ("FOO", "no `=` in it"),
        ("A B=1", "`A B` is not a variable name"),
        ("=x", "no name before the `=`"),
        ("LD_PRELOAD=/x.so", "LD_PRELOAD: tote sets no LD_* variable"),
    ];
    let mut failures = Failures::new();
    for (spec, says) in cases {
        let out_dir = common::temp_dir();
        let run = capture(
            tote()
                .arg("pack")
                .arg(&program)
                .args(["--env", spec, "-o"])
                .arg(out_dir.path().join("out")),
            b"",
        );
        failures.check(
            &format!("--env {spec}: exit 2"),
            run.status == Status::Code(2),
            || run.describe(),
        );
        let first = run.stderr_lines().first().cloned().unwrap_or_default();
        let named = first.contains(&format!("'{spec}'")) && first.contains(says);
        failures.check(&format!("--env {spec}: says {says}"), named, || {
            run.describe()
        });
        failures.check(
            &format!("--env {spec}: no double space"),
            !first.contains("  "),
            || run.describe(),
        );
        let left = std::fs::read_dir(out_dir.path()).unwrap().count();
        failures.check(&format!("--env {spec}: nothing written"), left == 0, || {
            format!("{left} entries")
        });
    }
    failures.finish();
}

/// `tote pack PROGRAM ARGS... -o OUTPUT` into a fresh dir: the run, and what the dir holds
/// after it.
fn pack_in_new_dir(program: &Path, args: &[&str]) -> (Run, usize) {
    let out_dir = common::temp_dir();
    let run = capture(
        tote()
            .arg("pack")
            .arg(program)
            .args(args)
            .arg("-o")
            .arg(out_dir.path().join("out")),
        b"",
    );
    let left = std::fs::read_dir(out_dir.path()).unwrap().count();
    (run, left)
}

/// Inputs of `--add` and `--lib` that cannot be packed, an added file that would replace a
/// file of the closure, and a tote file given as the program: one line saying what is wrong
/// in words (no `os error`, no Rust names), exit 1, nothing written.
#[test]
fn unusable_additions_and_tote_files_are_refused_in_words() {
    let program = common::fixtures::program("exit_code");
    let program_text = common::utf8(&program);
    let packed = common::tote::packed("exit_code");
    let add_at = |dest: &str| format!("/etc/hostname:{dest}");
    let cases: Vec<(Vec<String>, &Path, String)> = vec![
        (
            vec!["--add".into(), "/nonexistent".into()],
            &program,
            "tote: /nonexistent: no such file or directory for --add".into(),
        ),
        (
            vec!["--lib".into(), "/etc/passwd".into()],
            &program,
            "tote: /etc/passwd (--lib): not an ELF shared library for x86-64".into(),
        ),
        (
            vec!["--lib".into(), "/nonexistent/libx.so".into()],
            &program,
            "tote: /nonexistent/libx.so (--lib): no such file or directory".into(),
        ),
        (
            vec!["--add".into(), add_at(program_text)],
            &program,
            format!("tote: /etc/hostname: cannot go at {program_text} in the bundle: {program_text} is there already"),
        ),
        (
            vec!["--add".into(), add_at("/lib64/ld-linux-x86-64.so.2")],
            &program,
            "tote: /etc/hostname: cannot go at /lib64/ld-linux-x86-64.so.2 in the bundle: the closure has ".into(),
        ),
        (
            vec![],
            &packed,
            format!("tote: {}: a tote file already; pack the program it was packed from instead", packed.display()),
        ),
    ];
    let mut failures = Failures::new();
    for (args, program, says) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (run, left) = pack_in_new_dir(program, &args);
        let label = format!("{program:?} {args:?}");
        failures.check(
            &format!("{label}: exit 1"),
            run.status == Status::Code(1),
            || run.describe(),
        );
        let lines = run.stderr_lines();
        let said = lines.len() == 1 && lines[0].starts_with(says.as_str());
        failures.check(&format!("{label}: says {says}"), said, || run.describe());
        failures.check(&format!("{label}: nothing written"), left == 0, || {
            format!("{left} entries")
        });
    }
    failures.finish();
}
