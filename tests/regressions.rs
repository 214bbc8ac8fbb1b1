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

#[test]
fn a_packed_python_uses_the_bytecode_caches_of_its_standard_library() {
    // Extracted files used to get the time of the extraction, so every cached `.pyc`, which
    // records its source's modification time, was stale: CPython compiled each module it
    // imported from source at every start.
    let dir = common::temp_dir();
    let packed = dir.path().join("python3");
    let mut pack = common::tote::tote();
    pack.args(["pack", "/usr/bin/python3", "--level", "0", "-o"]);
    let run = capture(pack.arg(&packed), b"");
    assert!(run.success(), "{}", run.describe());
    let cache = dir.path().join("cache");
    let env = [("TOTE_CACHE_DIR", common::utf8(&cache))];
    let argv = ["python3", "-v", "-c", "import json, argparse"];
    let run = capture(&mut common::tote::host_command(&packed, &argv, &env), b"");
    assert!(run.success(), "{}", run.describe());
    let loaded: Vec<String> = run
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("# code object from "))
        .collect();
    let from_source: Vec<&String> = loaded.iter().filter(|l| l.ends_with(".py")).collect();
    assert!(
        from_source.is_empty(),
        "compiled from source: {from_source:#?}"
    );
    assert!(
        loaded.iter().any(|l| l.contains("json/__pycache__/")),
        "json was not loaded from its cache: {loaded:#?}"
    );
}

#[test]
fn extracted_files_keep_the_modification_time_of_their_source() {
    use std::os::unix::fs::MetadataExt;
    let dir = common::temp_dir();
    let packed = dir.path().join("jq");
    assert!(pack_to(Path::new("/usr/bin/jq"), &packed).success());
    let source = std::fs::metadata("/usr/bin/jq").unwrap().mtime();
    let cache = dir.path().join("cache");
    assert!(run_jq(&packed, common::utf8(&cache), dir.path()).success());
    let bundle = cache.join(common::tote::bundle_name(&packed));
    let tree = dir.path().join("tree");
    let mut extract = common::tote::tote();
    let run = capture(extract.arg("extract").arg(&packed).arg(&tree), b"");
    assert!(run.success(), "{}", run.describe());
    for extracted in [bundle.join("usr/bin/jq"), tree.join("usr/bin/jq")] {
        let mtime = std::fs::metadata(&extracted).unwrap().mtime();
        assert_eq!(mtime, source, "{extracted:?}");
    }
}
