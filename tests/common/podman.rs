//! Scratch images and containers. An image holds only the files a test names (no shell, no
//! libraries, no /tmp), or what a tar or image archive tote wrote holds, and is removed when
//! its guard drops; containers always run without a network. Podman is required: a test that needs it fails when it is missing.

use super::outcome::{capture, Run};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The environment podman gives a scratch container whose image sets none (jq reads HOME to
/// find ~/.jq); native runs compared with a container's get the same.
pub const CONTAINER_ENV: &[(&str, &str)] = &[
    ("HOME", "/"),
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("TERM", "xterm"),
    ("container", "podman"),
];

/// `program` run on the host as `argv0` with `args`, in the environment and work dir of a
/// container, for comparing with its run in one.
pub fn run_as_in_a_container(program: &Path, argv0: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut argv = vec![argv0];
    argv.extend_from_slice(args);
    let mut command =
        super::fixtures::native_command(program, &argv, CONTAINER_ENV, super::work_dir());
    capture(&mut command, stdin)
}

/// A `podman` command that prints only errors of its own, so that its warnings never mix
/// with the stderr of the program under test.
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.arg("--log-level=error");
    command
}

/// Runs `podman args...` and returns its stdout; panics when it fails.
fn podman_ok(args: &[&str]) -> String {
    let run = capture(podman().args(args), b"");
    assert!(
        run.success(),
        "podman {args:?} failed (is podman installed?):\n{}",
        run.describe()
    );
    run.stdout_text()
}

/// A name unique to this test binary, process and `tag`, as podman accepts it.
pub fn unique_name(kind: &str, tag: &str) -> String {
    let crate_name = env!("CARGO_CRATE_NAME").replace('_', "-");
    format!("tote-test-{kind}-{crate_name}-{tag}-{}", std::process::id()).to_lowercase()
}

/// A scratch image, removed when dropped.
pub struct Image {
    name: String,
}

impl Image {
    /// Imports an image whose whole content is `files`: each `(source, path in the image)`
    /// is copied with its mode; every dir on the way is created 0755.
    pub fn build(tag: &str, files: &[(&Path, &str)]) -> Image {
        let stage = super::temp_dir();
        let root = stage.path().join("root");
        super::make_dir(&root);
        for (source, target) in files {
            copy_into(&root, source, target);
        }
        let tarball = stage.path().join("image.tar");
        tar(&root, &tarball);
        let name = unique_name("image", tag);
        podman_ok(&["import", super::utf8(&tarball), &name]);
        Image { name }
    }

    /// An image podman holds already (built by a test with `podman build`), removed when
    /// dropped like the others.
    pub fn adopt(name: String) -> Image {
        Image { name }
    }

    /// `podman import TARBALL`: an image whose file system is the tarball, no config.
    pub fn import(tag: &str, tarball: &Path) -> Image {
        let name = unique_name("image", tag);
        podman_ok(&["import", super::utf8(tarball), &name]);
        Image { name }
    }

    /// `podman load -i ARCHIVE`, which must name the image `name` (podman may add a
    /// registry in front, `docker.io/library/` for a bare name).
    pub fn load(archive: &Path, name: &str) -> Image {
        let out = podman_ok(&["load", "-i", super::utf8(archive)]);
        let loaded = out
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("podman load named no image:\n{out}"))
            .trim()
            .to_owned();
        let image = Image { name: loaded };
        assert!(
            image.name == name || image.name.ends_with(&format!("/{name}")),
            "podman load named the image {:?}, not {name:?}",
            image.name
        );
        image
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image's size as `podman images` reports it, and in bytes.
    pub fn size(&self) -> (String, u64) {
        let shown = podman_ok(&["images", "--format", "{{.Size}}", &self.name]);
        let bytes = podman_ok(&["image", "inspect", "--format", "{{.Size}}", &self.name]);
        let bytes = bytes
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("image size {bytes:?}: {e}"));
        (shown.trim().to_owned(), bytes)
    }

    /// Every path in the image's file system, from `podman export` of a container created
    /// from it (never started).
    pub fn files(&self) -> Vec<String> {
        let dir = super::temp_dir();
        let tarball = dir.path().join("fs.tar");
        let container = podman_ok(&["create", &self.name]);
        let container = container.trim();
        let export = capture(
            podman()
                .args(["export", "--output"])
                .arg(&tarball)
                .arg(container),
            b"",
        );
        podman_ok(&["rm", "--force", container]);
        assert!(
            export.success(),
            "podman export failed:\n{}",
            export.describe()
        );
        let list = capture(Command::new("tar").arg("-tf").arg(&tarball), b"");
        assert!(
            list.success(),
            "tar -tf {tarball:?} failed:\n{}",
            list.describe()
        );
        list.stdout_lines()
    }

    /// `podman run --rm -i --network=none OPTIONS IMAGE COMMAND...` fed `stdin`, captured.
    /// The run's status is the container's, or podman's own (125 to 127) when it failed.
    pub fn run(&self, options: &[&str], command: &[&str], stdin: &[u8]) -> Run {
        let mut podman = podman();
        podman
            .args(["run", "--rm", "-i", "--network=none"])
            .args(options);
        podman.arg(&self.name).args(command);
        capture(&mut podman, stdin)
    }
}

/// `podman run --rm -i --network=none OPTIONS --rootfs DIR COMMAND...` fed `stdin`, captured:
/// the dir is the container's whole file system.
pub fn run_rootfs(dir: &Path, options: &[&str], command: &[&str], stdin: &[u8]) -> Run {
    let mut podman = podman();
    podman
        .args(["run", "--rm", "-i", "--network=none"])
        .args(options)
        .arg("--rootfs")
        .arg(dir)
        .args(command);
    capture(&mut podman, stdin)
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = capture(podman().args(["rmi", "--force", &self.name]), b"");
    }
}

fn copy_into(root: &Path, source: &Path, target: &str) {
    let destination = root.join(target.trim_start_matches('/'));
    super::make_dir(
        destination
            .parent()
            .expect("an image path has a parent dir"),
    );
    std::fs::copy(source, &destination)
        .unwrap_or_else(|e| panic!("cannot copy {source:?} to {destination:?}: {e}"));
}

fn tar(root: &Path, tarball: &Path) {
    let run = capture(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(root)
            .arg("-cf")
            .arg(tarball)
            .arg("."),
        b"",
    );
    assert!(run.success(), "tar of {root:?} failed:\n{}", run.describe());
}

/// A detached container, removed (killed first if need be) when dropped.
pub struct Container {
    name: String,
}

impl Container {
    /// `podman run -d --network=none OPTIONS IMAGE COMMAND...`.
    pub fn start(image: &Image, tag: &str, options: &[&str], command: &[&str]) -> Container {
        let name = unique_name("container", tag);
        let mut args = vec!["run", "-d", "--network=none", "--name", &name];
        args.extend_from_slice(options);
        args.push(image.name());
        args.extend_from_slice(command);
        podman_ok(&args);
        Container { name }
    }

    /// Everything the container wrote so far (stdout and stderr together).
    pub fn logs(&self) -> String {
        let run = capture(podman().args(["logs", &self.name]), b"");
        format!("{}{}", run.stdout_text(), run.stderr_text())
    }

    /// Waits until the logs contain `text`; panics after `limit`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.logs().contains(text) {
            assert!(
                start.elapsed() < limit,
                "no {text:?} in the logs after {limit:?}: {:?}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `podman stop -t GRACE`; returns how long the stop took.
    pub fn stop(&self, grace_seconds: u32) -> Duration {
        let start = Instant::now();
        podman_ok(&["stop", "-t", &grace_seconds.to_string(), &self.name]);
        start.elapsed()
    }

    /// The exit code podman recorded for the stopped container.
    pub fn exit_code(&self) -> i32 {
        let text = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("exit code {text:?}: {e}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = capture(podman().args(["rm", "--force", "-t", "0", &self.name]), b"");
    }
}
