//! One test per reported bug, named after what broke.

mod common;

use common::outcome::{capture, Run, Status};
use goblin::elf::Elf;
use std::path::Path;

fn pack_to(program: &Path, output: &Path) -> Run {
    common::tote::pack(program, output)
}

fn run_jq(packed: &Path, cache: &str, dir: &Path) -> Run {
    let env = [("TOTE_CACHE_DIR", cache)];
    let mut command = common::tote::host_command(packed, &["jq", "-n", "1 + 1"], &env);
    command.current_dir(dir);
    capture(&mut command, b"")
}

#[test]
fn packing_onto_a_device_or_a_symlink_does_not_replace_it() {
    let dir = common::temp_dir();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
    for output in [Path::new("/dev/null"), link.as_path()] {
        let run = pack_to(Path::new("/usr/bin/jq"), output);
        assert_eq!(
            run.status,
            Status::Code(1),
            "{output:?}: {}",
            run.describe()
        );
        assert!(
            run.stderr_text().contains("not a regular file"),
            "{}",
            run.describe()
        );
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let null = std::fs::metadata("/dev/null").unwrap();
    assert!(!null.is_file(), "/dev/null was replaced");
}

#[test]
fn elf_files_that_are_not_programs_are_refused_when_packing() {
    let dir = common::temp_dir();
    let not_executable = dir.path().join("jq644");
    std::fs::copy("/usr/bin/jq", &not_executable).unwrap();
    common::set_mode(&not_executable, 0o644);
    let object = dir.path().join("fixture.o");
    let src = common::fixtures::source("exit_code");
    common::fixtures::cc(&[
        "-c".as_ref(),
        "-o".as_ref(),
        object.as_os_str(),
        src.as_os_str(),
    ]);
    common::set_mode(&object, 0o755);
    let cases = [
        (object.clone(), "object file"),
        (
            Path::new("/lib/x86_64-linux-gnu/libz.so.1").to_path_buf(),
            "shared library",
        ),
        (not_executable.clone(), "not executable"),
        (Path::new("/dev/zero").to_path_buf(), "not a regular file"),
    ];
    for (input, why) in cases {
        let output = dir.path().join("out");
        let run = pack_to(&input, &output);
        assert_eq!(run.status, Status::Code(1), "{input:?}: {}", run.describe());
        assert!(
            run.stderr_text().contains(why),
            "{input:?}: {}",
            run.describe()
        );
        assert!(!output.exists(), "{input:?} left an output");
    }
}

#[test]
fn a_relative_cache_dir_still_writes_absolute_paths_into_programs() {
    let dir = common::temp_dir();
    let packed = dir.path().join("jq");
    assert!(pack_to(Path::new("/usr/bin/jq"), &packed).success());
    let run = run_jq(&packed, "relative-cache", dir.path());
    assert_eq!(run.stdout_text(), "2\n", "{}", run.describe());
    let bundle = std::fs::read_dir(dir.path().join("relative-cache"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let program = std::fs::read(bundle.path().join("usr/bin/jq")).unwrap();
    let interpreter = Elf::parse(&program)
        .unwrap()
        .interpreter
        .unwrap()
        .to_string();
    assert!(interpreter.starts_with('/'), "interpreter {interpreter:?}");
}

#[test]
fn a_bundle_dir_that_lost_its_marker_is_replaced_not_fatal() {
    let dir = common::temp_dir();
    let packed = dir.path().join("jq");
    assert!(pack_to(Path::new("/usr/bin/jq"), &packed).success());
    let cache = dir.path().join("cache");
    let cache = common::utf8(&cache);
    assert!(run_jq(&packed, cache, dir.path()).success());
    let bundle = std::fs::read_dir(cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(bundle.join(".tote-complete")).unwrap();
    std::fs::remove_file(bundle.join("usr/bin/jq")).unwrap();
    let again = run_jq(&packed, cache, dir.path());
    assert_eq!(again.stdout_text(), "2\n", "{}", again.describe());
    assert!(bundle.join(".tote-complete").exists());
    let left: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "only the bundle dir remains: {left:?}");
}

#[test]
fn a_cache_root_others_can_write_or_a_symlink_is_never_used() {
    let dir = common::temp_dir();
    let packed = dir.path().join("jq");
    assert!(pack_to(Path::new("/usr/bin/jq"), &packed).success());
    let open_root = dir.path().join("open");
    common::make_dir(&open_root);
    common::set_mode(&open_root, 0o777);
    let real = dir.path().join("real");
    common::make_dir(&real);
    common::set_mode(&real, 0o700);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for root in [&open_root, &link] {
        let run = run_jq(&packed, common::utf8(root), dir.path());
        assert_eq!(
            run.status,
            Status::Code(114),
            "{root:?}: {}",
            run.describe()
        );
        assert!(
            run.stderr_text()
                .starts_with("tote: refusing TOTE_CACHE_DIR"),
            "{}",
            run.describe()
        );
        assert!(run.stdout.is_empty());
    }
    assert_eq!(
        std::fs::read_dir(&open_root).unwrap().count(),
        0,
        "nothing written in the open root"
    );
}
