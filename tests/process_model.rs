//! The process model of a packed program. In a container the launcher is PID 1: the program
//! runs as its child, gets argv and environment unchanged (and so do its own children), can
//! re-execute /proc/self/exe, has its exit status or 128+signal passed on, is stopped by
//! `podman stop` at once, and its orphans are reaped. On the host the launcher replaces itself
//! with the program (same pid) and the run is byte for byte the native one.
//!
//! Container runs are compared with the same fixture built static (no launcher, no
//! libraries) and run the same way, which shows what podman itself gives the program.

mod common;

use common::fixtures::{native_command, program, static_program};
use common::outcome::{capture, capture_with_pid, Failures, Run, Status};
use common::podman::{Container, Image};
use common::tote::{host_command, packed};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments that must arrive untouched: spaces, empty, `=`, non-ASCII.
const ARGS: &[&str] = &["one", "two words", "", "--flag=x=y", "ünï ✓"];

/// Variables passed to the program; none starts with `LD_` or `TOTE`.
const PASSED_ENV: &[(&str, &str)] = &[
    ("GREETING", "hello world"),
    ("EMPTY", ""),
    ("EQUALS", "a=b=c"),
    ("UNICODE", "héllo ✓"),
];

/// What podman adds to the environment of a scratch container.
const PODMAN_ENV: &[&str] = &["HOME", "HOSTNAME", "PATH", "TERM", "container"];

/// An image holding the packed fixtures `names`, each at `/<name>`.
fn packed_image(tag: &str, names: &[&str]) -> Image {
    let files: Vec<(PathBuf, String)> = names
        .iter()
        .map(|name| (packed(name), format!("/{name}")))
        .collect();
    image_of(tag, &files)
}

/// An image holding the static builds of the fixtures `names`, each at `/<name>`.
fn static_image(tag: &str, names: &[&str]) -> Image {
    let files: Vec<(PathBuf, String)> = names
        .iter()
        .map(|name| (static_program(name), format!("/{name}")))
        .collect();
    image_of(tag, &files)
}

fn image_of(tag: &str, files: &[(PathBuf, String)]) -> Image {
    let files: Vec<(&Path, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_path(), t.as_str()))
        .collect();
    Image::build(tag, &files)
}

/// `podman run` options: a fixed hostname and every variable of `PASSED_ENV`.
fn env_options() -> Vec<String> {
    let mut options = vec!["--hostname".to_owned(), "tote-test".to_owned()];
    for (name, value) in PASSED_ENV {
        options.push("-e".to_owned());
        options.push(format!("{name}={value}"));
    }
    options
}

fn as_strs(strings: &[String]) -> Vec<&str> {
    strings.iter().map(String::as_str).collect()
}

/// The output lines starting with `prefix`, sorted.
fn sorted_lines(run: &Run, prefix: &str) -> Vec<String> {
    let mut lines: Vec<String> = run
        .stdout_lines()
        .into_iter()
        .filter(|line| line.starts_with(prefix))
        .collect();
    lines.sort();
    lines
}

/// The printed variables that are neither passed nor podman's, or look like the launcher's.
fn unexpected_variables(run: &Run) -> Vec<String> {
    let passed = |name: &str| PASSED_ENV.iter().any(|(passed, _)| *passed == name);
    sorted_lines(run, "env=")
        .into_iter()
        .filter(|line| {
            let name = line["env=".len()..].split('=').next().unwrap_or_default();
            let foreign = !passed(name) && !PODMAN_ENV.contains(&name);
            foreign || name.starts_with("LD_") || name.starts_with("TOTE")
        })
        .collect()
}

fn the_argv(argv0: &str) -> Vec<&str> {
    let mut argv = vec![argv0];
    argv.extend_from_slice(ARGS);
    argv
}

/// Runs the fixture `name` with `argv` and the passed variables: packed in a scratch
/// container, static in another, and natively.
struct ThreeRuns {
    packed: Run,
    without_tote: Run,
    native: Run,
}

fn run_three_ways(name: &str, argv: &[&str]) -> ThreeRuns {
    let packed_image = packed_image(name, &[name]);
    let static_image = static_image(&format!("{name}-static"), &[name]);
    let options = env_options();
    let mut native = native_command(&program(name), argv, PASSED_ENV, Path::new("/"));
    ThreeRuns {
        packed: packed_image.run(&as_strs(&options), argv, b""),
        without_tote: static_image.run(&as_strs(&options), argv, b""),
        native: capture(&mut native, b""),
    }
}

/// The checks every environment-printing fixture shares: a clean exit, the same variables
/// as the static build gets from podman, and nothing foreign among them.
fn check_environment(failures: &mut Failures, runs: &ThreeRuns) {
    let packed = &runs.packed;
    failures.check(
        "clean exit",
        packed.status == Status::Code(0) && packed.stderr.is_empty(),
        || packed.describe(),
    );
    let same = sorted_lines(packed, "env=") == sorted_lines(&runs.without_tote, "env=");
    failures.check("environment as without tote", same, || {
        let (packed, reference) = (packed.stdout_text(), runs.without_tote.stdout_text());
        format!("packed:\n{packed}\nstatic build:\n{reference}")
    });
    let unexpected = unexpected_variables(packed);
    failures.check(
        "only passed and podman variables",
        unexpected.is_empty(),
        || format!("{unexpected:?}"),
    );
}

#[test]
fn argv_and_environment_reach_the_program_unchanged_in_a_container() {
    let runs = run_three_ways("args_env", &the_argv("/args_env"));
    let mut failures = Failures::new();
    check_environment(&mut failures, &runs);
    let argv = sorted_lines(&runs.packed, "argv[");
    failures.check(
        "argv as natively",
        argv == sorted_lines(&runs.native, "argv["),
        || {
            format!(
                "packed:\n{}\nnative:\n{}",
                runs.packed.stdout_text(),
                runs.native.stdout_text()
            )
        },
    );
    failures.finish();
}

#[test]
fn children_of_the_program_get_its_environment_unchanged_in_a_container() {
    let runs = run_three_ways("child_env", &["/child_env"]);
    let mut failures = Failures::new();
    check_environment(&mut failures, &runs);
    failures.finish();
}

#[test]
fn reexecuting_proc_self_exe_works_in_a_container() {
    let image = packed_image("reexec", &["reexec"]);
    let packed = image.run(&[], &["/reexec"], b"");
    let native = capture(
        &mut native_command(&program("reexec"), &["/reexec"], &[], Path::new("/")),
        b"",
    );
    assert_eq!(
        native.stdout_text(),
        "argv[0]=renamed\n",
        "the fixture itself misbehaves"
    );
    common::outcome::assert_same("reexec", &native, &packed);
}

#[test]
fn exit_status_is_the_programs_in_a_container() {
    let image = packed_image("exitcode", &["exit_code"]);
    let mut failures = Failures::new();
    for code in [0, 1, 42, 255] {
        let run = image.run(&[], &["/exit_code", &code.to_string()], b"");
        failures.check(
            &format!("exit {code}"),
            run.status == Status::Code(code),
            || run.describe(),
        );
    }
    failures.finish();
}

#[test]
fn death_by_signal_gives_128_plus_the_signal_in_a_container() {
    let image = packed_image("segv", &["segv"]);
    let run = image.run(&[], &["/segv"], b"");
    assert_eq!(
        run.status,
        Status::Code(128 + 11),
        "SIGSEGV should give 139:\n{}",
        run.describe()
    );
}

#[test]
fn podman_stop_ends_the_program_at_once() {
    let image = packed_image("sleeper", &["sleeper"]);
    let container = Container::start(&image, "sleeper", &[], &["/sleeper"]);
    container.wait_for_log("ready", Duration::from_secs(30));
    let took = container.stop(10);
    assert!(
        took < Duration::from_secs(5),
        "podman stop took {took:?}: SIGTERM was not forwarded"
    );
    assert_eq!(
        container.exit_code(),
        128 + 15,
        "a program ended by SIGTERM should give 143"
    );
}

#[test]
fn orphans_are_reaped_in_a_container() {
    let reference = static_image("orphan-static", &["orphan"]).run(&[], &["/orphan"], b"");
    assert_eq!(
        reference.stdout_text(),
        "zombie\n",
        "without an init the fixture should see a zombie"
    );
    let packed = packed_image("orphan", &["orphan"]).run(&[], &["/orphan"], b"");
    assert_eq!(
        packed.stdout_text(),
        "reaped\n",
        "the launcher as PID 1 left the orphan:\n{}",
        packed.describe()
    );
    assert_eq!(packed.status, Status::Code(0), "{}", packed.describe());
}

/// Runs the fixture `name` packed on the host and natively, with the same argv and the
/// passed variables plus a private cache root.
fn host_and_native(name: &str, argv: &[&str]) -> (Run, Run) {
    let cache = common::temp_dir();
    let mut env = PASSED_ENV.to_vec();
    env.push(("TOTE_CACHE_DIR", common::utf8(cache.path())));
    let packed = capture(&mut host_command(&packed(name), argv, &env), b"");
    let mut native = native_command(&program(name), argv, &env, Path::new("/"));
    (packed, capture(&mut native, b""))
}

#[test]
fn on_the_host_runs_are_byte_for_byte_native() {
    let mut failures = Failures::new();
    for (name, argv, status) in [
        ("args_env", the_argv("any name at all"), Status::Code(0)),
        ("child_env", vec!["child_env"], Status::Code(0)),
        ("reexec", vec!["./reexec"], Status::Code(0)),
        ("exit_code", vec!["exit_code", "42"], Status::Code(42)),
        ("segv", vec!["segv"], Status::Signal(11)),
    ] {
        let (packed, native) = host_and_native(name, &argv);
        failures.check(&format!("{name} natively"), native.status == status, || {
            native.describe()
        });
        failures.compare(name, &native, &packed);
    }
    failures.finish();
}

#[test]
fn on_the_host_the_program_replaces_the_launcher() {
    let cache = common::temp_dir();
    let env = [("TOTE_CACHE_DIR", common::utf8(cache.path()))];
    let packed_file = packed("self_exe");
    let (pid, run) = capture_with_pid(&mut host_command(&packed_file, &["self_exe"], &env), b"");
    assert!(run.success(), "{}", run.describe());
    assert_eq!(
        field(&run, "pid"),
        pid.to_string(),
        "the program runs in another process"
    );

    let exe = PathBuf::from(field(&run, "exe"));
    let cache_root = cache.path().canonicalize().expect("the cache root exists");
    assert!(
        exe.starts_with(&cache_root),
        "/proc/self/exe is {exe:?}, outside {cache_root:?}"
    );
    assert_same_code(&exe, &program("self_exe"));
}

/// The value of the `NAME=value` line `name` that a fixture printed.
fn field(run: &Run, name: &str) -> String {
    let prefix = format!("{name}=");
    let line = run
        .stdout_lines()
        .into_iter()
        .find(|line| line.starts_with(&prefix));
    line.unwrap_or_else(|| panic!("no {prefix} line in:\n{}", run.describe()))[prefix.len()..]
        .to_owned()
}

/// Asserts that `extracted` holds the same executable code as `original`: it is the real
/// program, not the launcher nor the dynamic loader.
fn assert_same_code(extracted: &Path, original: &Path) {
    let (got, want) = (
        executable_segments(extracted),
        executable_segments(original),
    );
    let sizes = |segments: &[Vec<u8>]| segments.iter().map(Vec::len).collect::<Vec<_>>();
    assert!(
        got == want,
        "{extracted:?} is not the program {original:?}: executable segments of {:?} and {:?} bytes",
        sizes(&got),
        sizes(&want)
    );
}

/// The file bytes of every executable PT_LOAD of an ELF file.
fn executable_segments(path: &Path) -> Vec<Vec<u8>> {
    use goblin::elf::program_header::{PF_X, PT_LOAD};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"));
    let elf =
        goblin::elf::Elf::parse(&bytes).unwrap_or_else(|e| panic!("{path:?} is not ELF: {e}"));
    elf.program_headers
        .iter()
        .filter(|header| header.p_type == PT_LOAD && header.p_flags & PF_X != 0)
        .map(|header| bytes[header.file_range()].to_vec())
        .collect()
}
