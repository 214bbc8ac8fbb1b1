//! tote packed by tote. The packed tote alone in a scratch image answers like the real one;
//! in a scratch image that holds only it and the merged-/usr symlinks on the way to jq's files,
//! with the host's jq and its libraries bind-mounted read-only, it packs jq into a mounted
//! output dir: the same bytes as tote packing jq on the host, and a jq that runs alone in a
//! second empty container like the native jq (stdout, stderr, exit status). Assumes a glibc
//! host where `ldd` lists jq's libraries.

mod common;

use common::fixtures::native_command;
use common::outcome::{capture, Failures, Run};
use common::podman::{podman, Image};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The program the packed tote packs, at the same path on the host and in the container.
const HOST_JQ: &str = "/usr/bin/jq";

/// Where the packed tote and the jq it packs sit in their images.
const IMAGE_TOTE: &str = "/tote";
const IMAGE_JQ: &str = "/jq";

/// The container's mount point for the host dir that receives the packed jq.
const OUTPUT_DIR: &str = "/out";

/// tote's arguments after argv[0], for the packed and the real tote.
const TOTE_CASES: &[&[&str]] = &[
    &["--version"],
    &["--help"],
    &["pack", "/no/such/program", "-o", "/no/such/dir/out"],
];

/// Each case: a name, jq's arguments after argv[0], and what jq reads on stdin.
#[rustfmt::skip]
const JQ_CASES: &[(&str, &[&str], &str)] = &[
    ("filter stdin", &["-c", ".items | map(.name)"], r#"{"items":[{"name":"a"},{"name":"b"}]}"#),
    ("regex", &["-nc", r#""2024-01-15" | capture("(?<y>\\d+)-(?<m>\\d+)")"#], ""),
    ("libm", &["-nc", "[pow(2; 10), (2 | sqrt), (100 | log10)]"], ""),
    ("error exit", &["-n", r#"error("x")"#], ""),
    ("invalid input", &["."], "{\"a\": }\n"),
];

fn packed_tote() -> PathBuf {
    common::tote::packed_as(Path::new(env!("CARGO_BIN_EXE_tote")), "tote")
}

fn with_argv0<'a>(argv0: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec![argv0];
    argv.extend(args);
    argv
}

/// Runs `program` natively as a container would: `argv`, the container's environment, the
/// work dir as working dir.
fn run_natively(program: &str, argv: &[&str], stdin: &[u8]) -> Run {
    let dir = common::work_dir();
    let mut command = native_command(Path::new(program), argv, common::podman::CONTAINER_ENV, dir);
    capture(&mut command, stdin)
}

/// The host files jq needs: jq itself and every library `ldd` lists, loader included.
fn jq_files() -> Vec<PathBuf> {
    let run = capture(Command::new("ldd").arg(HOST_JQ), b"");
    assert!(
        run.success(),
        "ldd {HOST_JQ} failed (is jq installed? scripts/install-deps installs it):\n{}",
        run.describe()
    );
    let libraries = run.stdout_text();
    let paths = libraries.split_whitespace().filter(|w| w.starts_with('/'));
    let mut files = vec![PathBuf::from(HOST_JQ)];
    files.extend(paths.map(PathBuf::from));
    files
}

/// What a container needs to see some host paths as the host does: every symlink met on the
/// way to them, to recreate in the image, and the real files they lead to, to bind-mount.
#[derive(Default, Debug)]
struct HostView {
    links: BTreeMap<PathBuf, PathBuf>,
    files: BTreeSet<PathBuf>,
}

impl HostView {
    fn of(paths: &[PathBuf]) -> HostView {
        let mut view = HostView::default();
        for path in paths {
            let real = view.follow(path);
            assert!(real.is_file(), "{path:?} leads to {real:?}, not a file");
            view.files.insert(real);
        }
        view
    }

    /// Walks `path` from `/` one component at a time, recording and following each symlink
    /// it meets; returns the path with no symlink left in it.
    fn follow(&mut self, path: &Path) -> PathBuf {
        let mut real = PathBuf::from("/");
        for component in path.components() {
            match component {
                Component::Normal(name) => {
                    let next = real.join(name);
                    real = match fs::read_link(&next) {
                        Ok(target) => {
                            self.links.insert(next, target.clone());
                            self.follow(&real.join(target))
                        }
                        Err(_) => next,
                    };
                }
                Component::ParentDir => {
                    real.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        real
    }

    /// `podman run` options mounting every file read-only at its own path.
    fn mount_options(&self) -> Vec<String> {
        let mount = |file: &PathBuf| {
            let path = common::utf8(file);
            format!("type=bind,source={path},target={path},readonly")
        };
        let mounts = self.files.iter().map(mount);
        mounts.flat_map(|m| ["--mount".to_owned(), m]).collect()
    }
}

/// A scratch image holding the packed tote and the symlinks of a host view, removed when
/// dropped. `common::podman::Image` copies files only, and the symlinks are the point here.
struct LinkedImage {
    name: String,
}

impl LinkedImage {
    fn build(tote: &Path, view: &HostView) -> LinkedImage {
        let stage = common::temp_dir();
        let root = stage.path().join("root");
        fill_root(&root, tote, view);
        let tarball = stage.path().join("image.tar");
        run_ok(
            Command::new("tar")
                .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
                .arg(&root)
                .arg("-cf")
                .arg(&tarball)
                .arg("."),
        );
        let name = format!("tote-test-image-tote-packed-{}", std::process::id());
        run_ok(podman().arg("import").arg(&tarball).arg(&name));
        LinkedImage { name }
    }

    /// `podman run --rm --network=none OPTIONS IMAGE COMMAND...`, captured.
    fn run(&self, options: &[String], command: &[&str]) -> Run {
        let mut podman = podman();
        podman.args(["run", "--rm", "--network=none"]).args(options);
        capture(podman.arg(&self.name).args(command), b"")
    }
}

impl Drop for LinkedImage {
    fn drop(&mut self) {
        let _ = capture(podman().args(["rmi", "--force", &self.name]), b"");
    }
}

/// Puts the packed tote at `IMAGE_TOTE` under `root`, and the symlinks of `view`.
fn fill_root(root: &Path, tote: &Path, view: &HostView) {
    let in_root = |path: &Path| root.join(path.strip_prefix("/").expect("an absolute path"));
    common::make_dir(root);
    let tote_path = in_root(Path::new(IMAGE_TOTE));
    fs::copy(tote, &tote_path).unwrap_or_else(|e| panic!("cannot copy {tote:?}: {e}"));
    for (link, target) in &view.links {
        let at = in_root(link);
        common::make_dir(at.parent().expect("a link has a parent dir"));
        std::os::unix::fs::symlink(target, &at)
            .unwrap_or_else(|e| panic!("cannot make the symlink {at:?}: {e}"));
    }
}

fn run_ok(command: &mut Command) {
    let run = capture(command, b"");
    assert!(run.success(), "{command:?} failed:\n{}", run.describe());
}

/// Packs the host's jq with the packed tote inside a scratch container; returns the packed
/// jq, written to a host dir mounted at `/out`.
fn pack_jq_in_container() -> PathBuf {
    let view = HostView::of(&jq_files());
    let image = LinkedImage::build(&packed_tote(), &view);
    let output = common::work_dir().join("out");
    common::make_dir(&output);
    let mut options = view.mount_options();
    let output_mount = format!(
        "type=bind,source={},target={OUTPUT_DIR}",
        common::utf8(&output)
    );
    options.extend(["--mount".to_owned(), output_mount]);
    let packed_jq = format!("{OUTPUT_DIR}/jq");
    let run = image.run(&options, &[IMAGE_TOTE, "pack", HOST_JQ, "-o", &packed_jq]);
    assert!(
        run.success(),
        "the packed tote could not pack {HOST_JQ} in a container seeing {view:#?}:\n{}",
        run.describe()
    );
    output.join("jq")
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"))
}

#[test]
fn packed_tote_answers_like_the_real_one_in_an_empty_container() {
    let image = Image::build("tote", &[(&packed_tote(), IMAGE_TOTE)]);
    let mut failures = Failures::new();
    for args in TOTE_CASES {
        let argv = with_argv0(IMAGE_TOTE, args);
        let packed = image.run(&[], &argv, b"");
        let real = run_natively(env!("CARGO_BIN_EXE_tote"), &argv, b"");
        failures.compare(&format!("tote {args:?}"), &real, &packed);
    }
    failures.finish();
}

#[test]
fn packed_tote_packs_jq_in_an_empty_container_like_tote_on_the_host() {
    let in_container = pack_jq_in_container();
    let on_host = common::tote::packed_as(Path::new(HOST_JQ), "jq");
    assert!(
        read(&in_container) == read(&on_host),
        "{in_container:?} (packed in the container) and {on_host:?} (packed on the host) \
         differ: compare their `tote inspect`"
    );
    let image = Image::build("jq", &[(&in_container, IMAGE_JQ)]);
    let mut failures = Failures::new();
    for (name, args, stdin) in JQ_CASES {
        let argv = with_argv0(IMAGE_JQ, args);
        let packed = image.run(&[], &argv, stdin.as_bytes());
        let native = run_natively(HOST_JQ, &argv, stdin.as_bytes());
        failures.compare(&format!("jq case {name:?} {args:?}"), &native, &packed);
    }
    failures.finish();
}
