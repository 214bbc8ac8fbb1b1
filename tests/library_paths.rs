//! Libraries found through the program's own search paths: an rpath or a runpath relative to
//! `$ORIGIN`, and a library whose DT_RUNPATH (which switches off the program's rpath for that
//! library's needs) names a host dir the container does not have. Each packed program runs in
//! a scratch container holding only the packed file and must print what it prints natively.

mod common;

use common::fixtures::{cc, source};
use common::outcome::{capture, Failures};
use common::podman::Image;
use goblin::elf::Elf;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// How a binary records its library search path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SearchPath {
    Rpath,
    Runpath,
}

impl SearchPath {
    fn linker_flag(self) -> &'static str {
        match self {
            SearchPath::Rpath => "-Wl,--disable-new-dtags",
            SearchPath::Runpath => "-Wl,--enable-new-dtags",
        }
    }
}

/// The rpath and runpath entries recorded in the dynamic section of `path`.
fn search_paths(path: &Path) -> (Vec<String>, Vec<String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"));
    let elf = Elf::parse(&bytes).unwrap_or_else(|e| panic!("{path:?} is not ELF: {e}"));
    let owned = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect();
    (owned(&elf.rpaths), owned(&elf.runpaths))
}

/// Panics unless `path` records exactly `entry`, as an rpath or a runpath as `kind` says, so
/// the test checks the case it claims to.
fn assert_search_path(path: &Path, kind: SearchPath, entry: &str) {
    let (rpaths, runpaths) = search_paths(path);
    let expected = vec![entry.to_owned()];
    let found = match kind {
        SearchPath::Rpath => rpaths == expected && runpaths.is_empty(),
        SearchPath::Runpath => runpaths == expected && rpaths.is_empty(),
    };
    assert!(
        found,
        "{path:?} should have {kind:?} {entry:?}: rpath {rpaths:?}, runpath {runpaths:?}"
    );
}

/// `<dir>/lib/libtoteorigin.so` and one program per search path kind in `<dir>/bin`, each
/// finding the library through `$ORIGIN/../lib`.
fn origin_programs() -> &'static [(SearchPath, PathBuf)] {
    static PROGRAMS: OnceLock<Vec<(SearchPath, PathBuf)>> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let dir = common::work_dir().join("origin");
        let lib = dir.join("lib");
        common::make_dir(&lib);
        common::make_dir(&dir.join("bin"));
        shared_library(&lib.join("libtoteorigin.so"), "origin_lib", &[]);
        [SearchPath::Runpath, SearchPath::Rpath]
            .into_iter()
            .map(|kind| (kind, origin_program(&dir, kind)))
            .collect()
    })
}

fn origin_program(dir: &Path, kind: SearchPath) -> PathBuf {
    let program = dir
        .join("bin")
        .join(format!("origin_main_{kind:?}").to_lowercase());
    let library_dir = format!("-L{}", dir.join("lib").display());
    let flags = [
        library_dir.as_str(),
        "-ltoteorigin",
        kind.linker_flag(),
        "-Wl,-rpath,$ORIGIN/../lib",
    ];
    executable(&program, "origin_main", &flags);
    assert_search_path(&program, kind, "$ORIGIN/../lib");
    program
}

/// Builds the fixture `name` as the program `output`, with extra `flags`.
fn executable(output: &Path, name: &str, flags: &[&str]) {
    let (output, source) = (
        output.display().to_string(),
        source(name).display().to_string(),
    );
    let mut args = vec!["-o", &output, &source];
    args.extend_from_slice(flags);
    cc(&args);
}

/// Builds the fixture `name` as the shared library `output`, with extra `flags`.
fn shared_library(output: &Path, name: &str, flags: &[&str]) {
    let mut args = vec!["-shared", "-fPIC"];
    args.extend_from_slice(flags);
    executable(output, name, &args);
}

/// Runs `program` natively, then packed in a scratch container, and records any difference
/// (a refusal to pack included).
fn compare_in_container(failures: &mut Failures, label: &str, program: &Path, expected: &str) {
    let native = capture(&mut Command::new(program), b"");
    let as_expected = native.stdout_text() == expected;
    failures.check(&format!("{label} natively"), as_expected, || {
        native.describe()
    });

    let out_dir = common::temp_dir();
    let packed = out_dir.path().join(label);
    let packing = common::tote::pack(program, &packed);
    if !packing.success() {
        failures.check(&format!("{label} packs"), false, || packing.describe());
        return;
    }
    let image = Image::build(label, &[(&packed, "/program")]);
    let contained = image.run(&[], &["/program"], b"");
    let context = format!("{label} packed in a scratch container");
    failures.compare(&context, &native, &contained);
}

#[test]
fn origin_relative_rpath_and_runpath_work_in_a_container() {
    let mut failures = Failures::new();
    for (kind, program) in origin_programs() {
        let label = format!("origin-{kind:?}").to_lowercase();
        compare_in_container(
            &mut failures,
            &label,
            program,
            "greeting from libtoteorigin\n",
        );
    }
    failures.finish();
}

/// A program with an rpath to libtoteouter.so, whose own runpath names the host dir holding
/// libtoteinner.so. Returns the program.
fn runpath_chain() -> PathBuf {
    let dir = common::work_dir().join("runpath");
    let (host, outer, bin) = (dir.join("host"), dir.join("outer"), dir.join("bin"));
    for made in [&host, &outer, &bin] {
        common::make_dir(made);
    }
    let (host_dir, outer_dir) = (host.display().to_string(), outer.display().to_string());
    shared_library(&host.join("libtoteinner.so"), "runpath_inner", &[]);

    let outer_lib = outer.join("libtoteouter.so");
    let runpath = format!("-Wl,--enable-new-dtags,-rpath,{host_dir}");
    shared_library(
        &outer_lib,
        "runpath_outer",
        &[&format!("-L{host_dir}"), "-ltoteinner", &runpath],
    );
    assert_search_path(&outer_lib, SearchPath::Runpath, &host_dir);

    let program = bin.join("runpath_main");
    let rpath = format!("-Wl,--disable-new-dtags,-rpath,{outer_dir}");
    let link_only = format!("-Wl,-rpath-link,{host_dir}");
    executable(
        &program,
        "runpath_main",
        &[&format!("-L{outer_dir}"), "-ltoteouter", &rpath, &link_only],
    );
    assert_search_path(&program, SearchPath::Rpath, &outer_dir);
    program
}

#[test]
fn a_library_runpath_into_a_host_dir_is_served_from_the_bundle() {
    let program = runpath_chain();
    let mut failures = Failures::new();
    compare_in_container(
        &mut failures,
        "runpath-chain",
        &program,
        "outer wraps inner\n",
    );
    failures.finish();
}
