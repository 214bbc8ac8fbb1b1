//! How the packer finds what a program needs, each rule on a small C fixture packed and run
//! in a scratch container against its native run: glibc-hwcaps variants, sonames reached
//! through symlink chains, a library opened with dlopen and added with `--lib`, data added
//! with `--add` and found through `--env`, and several programs in one file.

mod common;

use common::fixtures::{cc, source};
use common::outcome::{capture, Failures, Run, Status};
use common::podman::Image;
use common::tote::inspect;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `greeting_lib.c` as a shared library at `output` saying `greeting`.
fn greeting_lib(output: &Path, greeting: &str, flags: &[&str]) {
    common::make_dir(output.parent().unwrap());
    let define = format!("-DGREETING=\"{greeting}\"");
    let mut args: Vec<&OsStr> = vec![
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        define.as_ref(),
        "-o".as_ref(),
    ];
    args.push(output.as_os_str());
    let src = source("greeting_lib");
    args.push(src.as_os_str());
    args.extend(flags.iter().map(OsStr::new));
    cc(&args);
}

/// Builds the C fixture `name` at `output`, linked with `flags`.
fn program(output: &Path, name: &str, flags: &[String]) {
    let src = source(name);
    let mut args: Vec<&OsStr> = vec!["-o".as_ref(), output.as_os_str(), src.as_os_str()];
    args.extend(flags.iter().map(OsStr::new));
    cc(&args);
}

/// `greeting_main` in `dir`, linked against `lib<name>.so` of `lib_dir` with an rpath to it,
/// and that program packed; returns both paths.
fn greeting_program_packed(dir: &Path, lib_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let main = dir.join(format!("{name}_main"));
    let flags = [
        format!("-L{}", lib_dir.display()),
        format!("-l{name}"),
        format!("-Wl,-rpath,{}", lib_dir.display()),
    ];
    program(&main, "greeting_main", &flags);
    let packed = dir.join("packed");
    pack(&main, &[], &packed);
    (main, packed)
}

/// `dlopen_main` in `dir`, with an rpath to `dir/plugins`, which holds the plugin `name`
/// (soname `name`); returns the program and its native run opening the plugin by name.
fn plugin_program(dir: &Path, name: &str) -> (PathBuf, Run) {
    let lib_dir = dir.join("plugins");
    greeting_lib(
        &lib_dir.join(name),
        "plugin loaded",
        &[&format!("-Wl,-soname,{name}")],
    );
    let main = dir.join("dlopen_main");
    program(
        &main,
        "dlopen_main",
        &[format!("-Wl,-rpath,{}", lib_dir.display()), "-ldl".into()],
    );
    let native = capture(Command::new(&main).arg(name), b"");
    assert_eq!(
        native.stdout_text(),
        "plugin loaded\n",
        "{}",
        native.describe()
    );
    (main, native)
}

/// `tote pack PROGRAM -o OUTPUT EXTRA...`, required to succeed (EXTRA may end with `-- ARGS`).
fn pack(program: &Path, extra: &[&str], output: &Path) {
    let run = capture(
        common::tote::tote()
            .arg("pack")
            .arg(program)
            .arg("-o")
            .arg(output)
            .args(extra),
        b"",
    );
    assert!(
        run.success(),
        "packing {program:?} failed:\n{}",
        run.describe()
    );
}

/// The packed file alone in a scratch container, run as `/program ARGS`.
fn run_in_scratch(packed: &Path, label: &str, extra: &[(&Path, &str)], args: &[&str]) -> Run {
    let mut files = vec![(packed, "/program")];
    files.extend_from_slice(extra);
    let image = Image::build(label, &files);
    let mut command = vec!["/program"];
    command.extend_from_slice(args);
    image.run(&[], &command, b"")
}

#[test]
fn glibc_hwcaps_variants_are_bundled_beside_the_baseline() {
    let dir = common::temp_dir();
    let lib_dir = dir.path().join("lib");
    greeting_lib(&lib_dir.join("libtotehw.so"), "baseline build", &[]);
    greeting_lib(
        &lib_dir.join("glibc-hwcaps/x86-64-v2/libtotehw.so"),
        "x86-64-v2 build",
        &[],
    );
    let (main, packed) = greeting_program_packed(dir.path(), &lib_dir, "totehw");

    let listing = inspect(&packed);
    let mut failures = Failures::new();
    for lib in [
        "lib/libtotehw.so",
        "lib/glibc-hwcaps/x86-64-v2/libtotehw.so",
    ] {
        failures.check(
            &format!("{lib} bundled"),
            listing
                .lines()
                .any(|l| l.ends_with(lib) || l.contains(&format!("{lib} "))),
            || listing.clone(),
        );
    }
    let native = capture(&mut Command::new(&main), b"");
    let contained = run_in_scratch(&packed, "hwcaps", &[], &[]);
    failures.compare("hwcaps program in a container", &native, &contained);
    failures.finish();
}

#[test]
fn a_soname_reached_through_symlinks_is_stored_under_that_name() {
    let dir = common::temp_dir();
    let lib_dir = dir.path().join("lib");
    greeting_lib(
        &lib_dir.join("libtotelink.so.1.2.3"),
        "through symlinks",
        &["-Wl,-soname,libtotelink.so.1"],
    );
    std::os::unix::fs::symlink("libtotelink.so.1.2.3", lib_dir.join("libtotelink.so.1")).unwrap();
    std::os::unix::fs::symlink("libtotelink.so.1", lib_dir.join("libtotelink.so")).unwrap();
    let (main, packed) = greeting_program_packed(dir.path(), &lib_dir, "totelink");

    let listing = inspect(&packed);
    let mut failures = Failures::new();
    let stored = listing
        .lines()
        .any(|l| l.starts_with("file") && l.ends_with("/lib/libtotelink.so.1"));
    failures.check("stored as a file under its soname", stored, || {
        listing.clone()
    });
    failures.check(
        "no other name stored",
        !listing.contains("libtotelink.so.1.2.3"),
        || listing.clone(),
    );
    let native = capture(&mut Command::new(&main), b"");
    failures.compare(
        "symlinked soname in a container",
        &native,
        &run_in_scratch(&packed, "soname", &[], &[]),
    );
    failures.finish();
}

#[test]
fn a_library_opened_with_dlopen_runs_when_added_with_lib() {
    let dir = common::temp_dir();
    let (main, native) = plugin_program(dir.path(), "libtoteplugin.so");

    let without = dir.path().join("without");
    pack(&main, &[], &without);
    let with = dir.path().join("with");
    pack(&main, &["--lib", "libtoteplugin.so"], &with);
    let mut failures = Failures::new();
    let missing = run_in_scratch(&without, "dlopen-without", &[], &["libtoteplugin.so"]);
    failures.check(
        "without --lib the plugin is missing",
        missing.status == Status::Code(1),
        || missing.describe(),
    );
    let found = run_in_scratch(&with, "dlopen-with", &[], &["libtoteplugin.so"]);
    failures.compare("with --lib the plugin loads", &native, &found);
    failures.finish();
}

#[test]
fn added_data_is_found_through_a_variable_the_user_can_override() {
    let dir = common::temp_dir();
    let data = dir.path().join("greeting.txt");
    common::write_file(&data, "bundled data\n");
    let own = dir.path().join("own.txt");
    common::write_file(&own, "the user's data\n");
    let main = dir.path().join("print_file");
    program(&main, "print_file", &[]);
    let packed = dir.path().join("packed");
    let add = format!("{}:/share/greeting.txt", data.display());
    pack(
        &main,
        &[
            "--add",
            &add,
            "--env",
            "TOTE_TEST_DATA=${TOTE_ROOT}/share/greeting.txt",
        ],
        &packed,
    );

    let image = Image::build("added-data", &[(&packed, "/program"), (&own, "/own.txt")]);
    let mut failures = Failures::new();
    let bundled = image.run(&[], &["/program", "TOTE_TEST_DATA"], b"");
    failures.check(
        "the bundled file",
        bundled.stdout_text() == "bundled data\n",
        || bundled.describe(),
    );
    let overridden = image.run(
        &["-e", "TOTE_TEST_DATA=/own.txt"],
        &["/program", "TOTE_TEST_DATA"],
        b"",
    );
    failures.check(
        "the user's setting wins",
        overridden.stdout_text() == "the user's data\n",
        || overridden.describe(),
    );
    failures.finish();
}

/// The value of `name` in the output of the `args_env` fixture, which prints `env=NAME=VALUE`
/// lines; None when it is not set, a panic when it is set twice.
fn env_value(run: &Run, name: &str) -> Option<String> {
    let prefix = format!("env={name}=");
    let values: Vec<String> = run
        .stdout_lines()
        .into_iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    assert!(values.len() < 2, "{name} set twice:\n{}", run.describe());
    values.into_iter().next()
}

/// A packed program started by another one inherits the variables its parent's launcher set:
/// they name the parent's bundle, so the child's launcher replaces them with its own (a
/// packed python starting another packed python needs its own PYTHONHOME). A value the user
/// set stays.
#[test]
fn a_variable_set_for_another_bundle_is_replaced_by_the_bundles_own() {
    let dir = common::temp_dir();
    let args_env = common::fixtures::program("args_env");
    let [outer, inner] = ["outer", "inner"].map(|name| {
        let packed = dir.path().join(name);
        pack(
            &args_env,
            &[
                "--env",
                "DATA=${TOTE_ROOT}/share",
                "--env",
                &format!("NAME={name}"),
            ],
            &packed,
        );
        packed
    });
    let cache = common::temp_dir();
    let start = |packed: &Path, data: Option<&str>| {
        let mut env = vec![("TOTE_CACHE_DIR", common::utf8(cache.path()))];
        env.extend(data.map(|d| ("DATA", d)));
        let run = capture(
            &mut common::tote::host_command(packed, &["args_env"], &env),
            b"",
        );
        assert!(run.success(), "{}", run.describe());
        run
    };
    let outer_data = env_value(&start(&outer, None), "DATA").expect("DATA set");
    let inner_run = start(&inner, Some(&outer_data));
    let inner_data = env_value(&inner_run, "DATA").expect("DATA set");
    let inner_root = Path::new(&inner_data).parent().expect("a bundle dir");
    let mut failures = Failures::new();
    failures.check(
        "the inner bundle's own value",
        inner_data != outer_data && inner_root.join(".tote-complete").exists(),
        || format!("outer DATA={outer_data}\n{}", inner_run.describe()),
    );
    let own = start(&inner, Some("/the/users/own"));
    failures.check(
        "the user's value stays",
        env_value(&own, "DATA").as_deref() == Some("/the/users/own"),
        || own.describe(),
    );
    failures.finish();
}

#[test]
fn several_programs_share_one_file_and_run_by_link_name() {
    let dir = common::temp_dir();
    let exit_code = common::fixtures::program("exit_code");
    let args_env = common::fixtures::program("args_env");
    let packed = dir.path().join("tools");
    let run = capture(
        common::tote::tote()
            .arg("pack")
            .arg(&exit_code)
            .arg(&args_env)
            .arg("-o")
            .arg(&packed),
        b"",
    );
    assert!(run.success(), "{}", run.describe());
    let cache = common::temp_dir();
    let env = [("TOTE_CACHE_DIR", common::utf8(cache.path()))];
    let link = |name: &str| -> PathBuf {
        let l = dir.path().join(name);
        std::os::unix::fs::symlink(&packed, &l).unwrap();
        l
    };
    let mut failures = Failures::new();
    let code = capture(
        &mut common::tote::host_command(&link("exit_code"), &["exit_code", "9"], &env),
        b"",
    );
    failures.check(
        "exit_code through its link",
        code.status == Status::Code(9),
        || code.describe(),
    );
    let args = capture(
        &mut common::tote::host_command(&link("args_env"), &["args_env", "x"], &env),
        b"",
    );
    failures.check(
        "args_env through its link",
        args.stdout_text()
            .starts_with("argv[0]=args_env\nargv[1]=x\n"),
        || args.describe(),
    );
    let other = capture(
        &mut common::tote::host_command(&packed, &["tools"], &env),
        b"",
    );
    let names = other.stderr_text();
    failures.check(
        "another name is refused, listing the programs",
        other.status == Status::Code(116)
            && names.contains("exit_code")
            && names.contains("args_env"),
        || other.describe(),
    );
    let empty = common::temp_dir();
    let unknown = capture(
        &mut common::tote::host_command(
            &packed,
            &["tools"],
            &[("TOTE_CACHE_DIR", common::utf8(empty.path()))],
        ),
        b"",
    );
    let left: Vec<_> = std::fs::read_dir(empty.path()).unwrap().collect();
    failures.check(
        "another name extracts nothing",
        unknown.status == Status::Code(116) && left.is_empty(),
        || {
            format!(
                "{} entries in the cache root\n{}",
                left.len(),
                unknown.describe()
            )
        },
    );
    failures.finish();
}

#[test]
fn a_library_opened_with_dlopen_runs_when_found_by_trace() {
    // Not under /tmp: --trace leaves out what a program opens there (its scratch files).
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (main, native) = plugin_program(dir.path(), "libtotetraced.so");
    let packed = dir.path().join("traced");
    pack(&main, &["--trace", "--", "libtotetraced.so"], &packed);
    let found = run_in_scratch(&packed, "dlopen-traced", &[], &["libtotetraced.so"]);
    let mut failures = Failures::new();
    failures.compare("the traced plugin loads", &native, &found);
    failures.finish();
}
