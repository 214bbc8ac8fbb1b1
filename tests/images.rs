//! tote's image formats with Debian's jq. Each format and layout is packed and run with
//! podman, and every case must match the native jq (stdout, stderr, exit status): a dir as
//! `--rootfs`, a tar through `podman import`, and three OCI archives through `podman load`:
//! the closure at its original paths and the tree under `--prefix /opt/jq` (both also on a
//! read-only root), and the single tote file alone. skopeo reads each archive's config, and
//! the sizes podman reports are printed. A tar under `--prefix /tmp/...` added with `ADD` to
//! an image leaves that image's `/tmp` as it was.

mod common;

use common::outcome::{capture, Failures, Run};
use common::podman::{run_rootfs, unique_name, Image};
use common::tote::tote;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The jq under test.
const HOST_JQ: &str = "/usr/bin/jq";

/// Each case: a name, jq's arguments after argv[0], and what jq reads on stdin. The unknown
/// option names argv[0] in its message.
#[rustfmt::skip]
const CASES: &[(&str, &[&str], &str)] = &[
    ("add", &["-n", "[1,2]|add"], ""),
    ("stdin", &["-c", ".items | map(.name)"], r#"{"items":[{"name":"apple"},{"name":"bread"}]}"#),
    ("regex", &["-nc", r#""2024-01-15" | capture("(?<y>\\d+)-(?<m>\\d+)")"#], ""),
    ("libm", &["-nc", "[pow(2; 10), (2 | sqrt), (100 | log10)]"], ""),
    ("dates", &["-n", r#""2015-03-05T23:51:47Z" | fromdate | todate"#], ""),
    ("error exit", &["-n", r#"error("x")"#], ""),
    ("invalid input", &["."], "{\"a\": }\n"),
    ("exit status false", &["-e", ".missing"], "{}"),
    ("unknown option", &["--no-such-option"], ""),
];

/// `tote pack /usr/bin/jq ARGS... -o OUTPUT`; panics unless it worked.
fn pack(args: &[&str], output: &Path) {
    let run = capture(
        tote()
            .arg("pack")
            .arg(HOST_JQ)
            .args(args)
            .arg("-o")
            .arg(output),
        b"",
    );
    assert!(
        run.success(),
        "tote pack jq {args:?} failed:\n{}",
        run.describe()
    );
}

/// The host's jq run as `argv0` with `args`, as in a container.
fn native(argv0: &str, args: &[&str], stdin: &[u8]) -> Run {
    common::podman::run_as_in_a_container(Path::new(HOST_JQ), argv0, args, stdin)
}

/// Runs every case with `run` (given jq's arguments and stdin) and natively as `argv0`.
fn compare_all(
    failures: &mut Failures,
    label: &str,
    argv0: &str,
    run: impl Fn(&[&str], &[u8]) -> Run,
) {
    for (name, args, stdin) in CASES {
        let expected = native(argv0, args, stdin.as_bytes());
        let got = run(args, stdin.as_bytes());
        failures.compare(&format!("{label}: case {name:?} {args:?}"), &expected, &got);
    }
}

/// A unique image name for `tag`, as `--tag` takes it.
fn image_name(tag: &str) -> String {
    format!("localhost/{}:1", unique_name("oci", tag))
}

/// `skopeo inspect [--config] oci-archive:ARCHIVE` as JSON.
fn skopeo_inspect(archive: &Path, config: bool) -> serde_json::Value {
    let mut command = Command::new("skopeo");
    command.arg("inspect");
    if config {
        command.arg("--config");
    }
    command.arg(format!("oci-archive:{}", common::utf8(archive)));
    let run = capture(&mut command, b"");
    assert!(
        run.success(),
        "skopeo inspect failed (scripts/install-deps installs skopeo):\n{}",
        run.describe()
    );
    serde_json::from_slice(&run.stdout).expect("skopeo prints JSON")
}

/// Packs jq with `args` as an OCI archive named `tag`, loads it and runs every case, with
/// `options` for podman; returns the loaded image and the archive.
fn oci_case(
    failures: &mut Failures,
    tag: &str,
    args: &[&str],
    argv0: &str,
    options: &[&str],
) -> (Image, PathBuf, tempfile::TempDir) {
    let dir = common::temp_dir();
    let archive = dir.path().join(format!("{tag}.tar"));
    let name = image_name(tag);
    let mut all = vec!["--format", "oci", "--tag", &name];
    all.extend_from_slice(args);
    pack(&all, &archive);
    let image = Image::load(&archive, &name);
    compare_all(failures, tag, argv0, |args, stdin| {
        image.run(options, args, stdin)
    });
    let (shown, bytes) = image.size();
    let archive_len = std::fs::metadata(&archive).expect("the archive").len();
    println!("{tag}: podman images size {shown} ({bytes} bytes), archive {archive_len} bytes");
    (image, archive, dir)
}

/// A read-only root without the tmpfs podman would add at /tmp and /run.
const READ_ONLY: &[&str] = &["--read-only", "--read-only-tmpfs=false"];

#[test]
fn a_dir_runs_as_the_whole_root_of_a_container() {
    let dir = common::temp_dir();
    let root = dir.path().join("rootfs");
    pack(&["--format", "dir"], &root);
    let mut failures = Failures::new();
    compare_all(&mut failures, "dir", HOST_JQ, |args, stdin| {
        let mut command = vec![HOST_JQ];
        command.extend_from_slice(args);
        run_rootfs(&root, READ_ONLY, &command, stdin)
    });
    let interpreter = root.join("lib64/ld-linux-x86-64.so.2");
    failures.check(
        "the interpreter at its PT_INTERP path",
        interpreter.exists(),
        || format!("{interpreter:?} does not lead to a file"),
    );
    failures.finish();
}

#[test]
fn a_tar_imported_into_podman_runs() {
    let dir = common::temp_dir();
    let tarball = dir.path().join("jq-root.tar");
    pack(&["--format", "tar"], &tarball);
    let image = Image::import("tar", &tarball);
    let mut failures = Failures::new();
    compare_all(&mut failures, "tar", HOST_JQ, |args, stdin| {
        let mut command = vec![HOST_JQ];
        command.extend_from_slice(args);
        image.run(READ_ONLY, &command, stdin)
    });
    failures.finish();
}

#[test]
fn the_default_oci_image_holds_the_closure_at_its_paths_and_runs_on_a_read_only_root() {
    let mut failures = Failures::new();
    let (image, archive, _dir) = oci_case(&mut failures, "default", &[], HOST_JQ, READ_ONLY);
    let files = image.files();
    for path in [
        "usr/bin/jq",
        "lib64",
        "usr/lib/x86_64-linux-gnu/libonig.so.5",
    ] {
        failures.check(
            &format!("{path} in the image"),
            files.iter().any(|f| f == path),
            || format!("{files:?}"),
        );
    }
    let config = skopeo_inspect(&archive, true);
    failures.check(
        "entrypoint",
        config["config"]["Entrypoint"] == serde_json::json!([HOST_JQ]),
        || config.to_string(),
    );
    failures.finish();
}

#[test]
fn the_prefixed_oci_image_lives_under_its_prefix_and_runs_on_a_read_only_root() {
    let mut failures = Failures::new();
    let args = ["--prefix", "/opt/jq"];
    let (image, archive, _dir) =
        oci_case(&mut failures, "prefix", &args, "/opt/jq/bin/jq", READ_ONLY);
    let files = image.files();
    let outside: Vec<&String> = files.iter().filter(|f| !f.starts_with("opt")).collect();
    failures.check("only /opt/jq", outside.is_empty(), || {
        format!("{outside:?}")
    });
    let config = skopeo_inspect(&archive, true);
    let entrypoint = &config["config"]["Entrypoint"];
    failures.check(
        "entrypoint",
        *entrypoint == serde_json::json!(["/opt/jq/bin/jq"]),
        || config.to_string(),
    );
    failures.finish();
}

#[test]
fn the_single_file_oci_image_holds_only_the_tote_file() {
    let mut failures = Failures::new();
    let args = ["--oci-layout", "file"];
    let (image, _archive, _dir) = oci_case(&mut failures, "file", &args, "/jq", &[]);
    let files = image.files();
    failures.check("only /jq", files == ["jq"], || format!("{files:?}"));
    failures.finish();
}

#[test]
fn skopeo_reads_the_config_env_user_and_name() {
    let dir = common::temp_dir();
    let archive = dir.path().join("jq.tar");
    let name = image_name("skopeo");
    let args = [
        "--format",
        "oci",
        "--tag",
        &name,
        "--user",
        "65534:65534",
        "--passwd",
        "--ca-certs",
        "--env",
        "GREETING=hello",
    ];
    pack(&args, &archive);
    let image = skopeo_inspect(&archive, false);
    assert_eq!(image["Architecture"], "amd64", "{image}");
    assert_eq!(image["Os"], "linux", "{image}");
    assert_eq!(image["Created"], "1970-01-01T00:00:00Z", "{image}");
    let config = skopeo_inspect(&archive, true);
    let run = &config["config"];
    assert_eq!(run["Entrypoint"], serde_json::json!([HOST_JQ]), "{config}");
    assert_eq!(run["User"], "65534:65534", "{config}");
    assert_eq!(
        run["Env"],
        serde_json::json!([
            "GREETING=hello",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        ]),
        "{config}"
    );

    let loaded = Image::load(&archive, &name);
    let env = loaded.run(&[], &["-nr", "$ENV.GREETING, $ENV.HOME"], b"");
    assert_eq!(
        env.stdout_text(),
        "hello\n/nonexistent\n",
        "{}",
        env.describe()
    );
    let files = loaded.files();
    for path in [
        "etc/passwd",
        "etc/group",
        "etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(files.iter().any(|f| f == path), "no {path} in {files:?}");
    }
}

/// A tar made with `--prefix` holds no entry for the dirs above the prefix, so adding it to
/// another image (`ADD jq.tar /`) leaves those dirs as the image has them: here `/tmp`,
/// sticky and writable by all, stays so, and the program runs from under it.
#[test]
fn a_prefixed_tar_added_to_an_image_leaves_the_dirs_above_the_prefix_alone() {
    let dir = common::temp_dir();
    let tarball = dir.path().join("jq.tar");
    pack(&["--format", "tar", "--prefix", "/tmp/tote/jq"], &tarball);
    let list = capture(Command::new("tar").arg("-tf").arg(&tarball), b"");
    assert!(list.success(), "{}", list.describe());
    let entries = list.stdout_lines();
    assert_eq!(entries.first().map(String::as_str), Some("tmp/tote/jq/"));
    assert!(
        entries.iter().all(|e| e.starts_with("tmp/tote/jq/")),
        "{entries:?}"
    );

    // A base image whose /tmp is 1777, and the tar added onto it.
    let base_root = dir.path().join("base");
    common::make_dir(&base_root.join("tmp"));
    common::set_mode(&base_root.join("tmp"), 0o1777);
    let base_tar = dir.path().join("base.tar");
    let made = capture(
        Command::new("tar")
            .arg("-C")
            .arg(&base_root)
            .args(["-cf"])
            .arg(&base_tar)
            .arg("."),
        b"",
    );
    assert!(made.success(), "{}", made.describe());
    let base = Image::import("base", &base_tar);
    let context = dir.path().join("context");
    common::write_file(
        &context.join("Containerfile"),
        format!("FROM {}\nADD jq.tar /\n", base.name()),
    );
    std::fs::copy(&tarball, context.join("jq.tar")).expect("cannot copy the tar");
    let name = unique_name("image", "added");
    let built = capture(
        common::podman::podman()
            .args(["build", "--network=none", "-q", "-t", &name])
            .arg(&context),
        b"",
    );
    assert!(built.success(), "{}", built.describe());
    let image = Image::adopt(name);

    let run = image.run(&[], &["/tmp/tote/jq/bin/jq", "-n", "1 + 1"], b"");
    assert!(
        run.success() && run.stdout_text() == "2\n",
        "{}",
        run.describe()
    );
    let exported = dir.path().join("fs.tar");
    let container = capture(
        common::podman::podman().args(["create", image.name(), "/tmp/tote/jq/bin/jq"]),
        b"",
    );
    assert!(container.success(), "{}", container.describe());
    let id = container.stdout_text().trim().to_owned();
    let export = capture(
        common::podman::podman()
            .args(["export", "--output"])
            .arg(&exported)
            .arg(&id),
        b"",
    );
    capture(common::podman::podman().args(["rm", "--force", &id]), b"");
    assert!(export.success(), "{}", export.describe());
    let listing = capture(Command::new("tar").arg("-tvf").arg(&exported), b"");
    let tmp = listing
        .stdout_lines()
        .into_iter()
        .find(|l| l.ends_with(" tmp/") || l.ends_with(" ./tmp/"))
        .unwrap_or_else(|| panic!("no /tmp in the image:\n{}", listing.stdout_text()));
    assert!(tmp.starts_with("drwxrwxrwt"), "{tmp}");
}
