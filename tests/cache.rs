//! The cache a packed program extracts into: a second start reuses it without decompressing,
//! a rebuilt program packed to the same path never runs the old copy (concurrent cold starts
//! are in hostile_host.rs), and the cache root is chosen as documented (`$TOTE_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/tote`, `$HOME/.cache/tote`, then `tote-<euid>` in `$TMPDIR` or `/tmp`),
//! by no variable at all under AT_SECURE. Host runs use a private cache root.

mod common;

use common::fixtures::{native_command, program, variant};
use common::outcome::{capture, capture_with_pid, Failures, Run};
use common::podman::Image;
use common::tote::{host_command, pack_ok, packed};
use std::path::{Path, PathBuf};

/// `TOTE_CACHE_DIR` pointing at `cache`, plus `extra`.
fn cache_env<'a>(cache: &'a Path, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("TOTE_CACHE_DIR", common::utf8(cache))];
    env.extend_from_slice(extra);
    env
}

/// Panics unless every stderr line of the launcher is tagged `tote[pid]: `.
fn assert_tagged(run: &Run, pid: u32) {
    let tag = format!("tote[{pid}]: ");
    let untagged: Vec<String> = run
        .stderr_lines()
        .into_iter()
        .filter(|line| !line.starts_with(&tag))
        .collect();
    assert!(
        untagged.is_empty(),
        "stderr lines without {tag:?}: {untagged:?}"
    );
}

fn mentions(run: &Run, word: &str) -> bool {
    run.stderr_lines().iter().any(|line| line.contains(word))
}

#[test]
fn a_second_start_uses_the_cache_without_decompressing() {
    let cache = common::temp_dir();
    let env = cache_env(cache.path(), &[("TOTE_DEBUG", "1")]);
    let argv = ["args_env", "warm"];
    let native = capture(
        &mut native_command(&program("args_env"), &argv, &env, Path::new("/")),
        b"",
    );
    let start = || capture_with_pid(&mut host_command(&packed("args_env"), &argv, &env), b"");
    let (cold_pid, cold) = start();
    let (warm_pid, warm) = start();

    let mut failures = Failures::new();
    for (label, run) in [("cold start", &cold), ("warm start", &warm)] {
        failures.check(
            &format!("{label} output"),
            run.stdout == native.stdout && run.success(),
            || {
                format!(
                    "expected:\n{}\ngot:\n{}",
                    native.stdout_text(),
                    run.describe()
                )
            },
        );
    }
    failures.check(
        "cold start decompresses",
        mentions(&cold, "decompressing"),
        || cold.describe(),
    );
    failures.check(
        "warm start uses the cache",
        mentions(&warm, "cached"),
        || warm.describe(),
    );
    failures.check(
        "warm start does not decompress",
        !mentions(&warm, "decompressing"),
        || warm.describe(),
    );
    failures.finish();
    assert_tagged(&cold, cold_pid);
    assert_tagged(&warm, warm_pid);
}

/// `version.c` built with `-DVERSION=n`.
fn version_program(n: u32) -> PathBuf {
    variant(
        "version",
        &format!("version{n}"),
        &[&format!("-DVERSION={n}")],
    )
}

#[test]
fn a_rebuilt_program_packed_to_the_same_path_never_runs_the_old_copy() {
    let (cache, out_dir) = (common::temp_dir(), common::temp_dir());
    let output = out_dir.path().join("version");
    let env = cache_env(cache.path(), &[]);
    let mut failures = Failures::new();
    for n in [1, 2, 1] {
        pack_ok(version_program(n), &output);
        for start in ["first", "second"] {
            let run = capture(&mut host_command(&output, &["version"], &env), b"");
            let expected = format!("version {n}\n");
            failures.check(
                &format!("version {n}, {start} start"),
                run.stdout_text() == expected && run.success(),
                || run.describe(),
            );
        }
    }
    failures.finish();
}

/// Where `/proc/self/exe` points in the packed `self_exe` run with `env` on the host.
fn host_exe(env: &[(&str, &str)]) -> PathBuf {
    let run = capture(
        &mut host_command(&packed("self_exe"), &["self_exe"], env),
        b"",
    );
    exe_of(&run)
}

fn exe_of(run: &Run) -> PathBuf {
    let line = run
        .stdout_lines()
        .into_iter()
        .find_map(|line| line.strip_prefix("exe=").map(str::to_owned));
    PathBuf::from(line.unwrap_or_else(|| panic!("no exe= line:\n{}", run.describe())))
}

fn assert_under(exe: &Path, root: &Path) {
    assert!(
        exe.starts_with(root),
        "the program runs from {exe:?}, outside the cache root {root:?}"
    );
}

#[test]
fn the_cache_root_is_tote_cache_dir_when_set() {
    let (cache, home) = (common::temp_dir(), common::temp_dir());
    let home_text = common::utf8(home.path());
    let exe = host_exe(&cache_env(cache.path(), &[("HOME", home_text)]));
    assert_under(
        &exe,
        &cache.path().canonicalize().expect("the cache root exists"),
    );
}

#[test]
fn the_cache_root_is_under_home_without_tote_cache_dir() {
    let home = common::temp_dir();
    let exe = host_exe(&[("HOME", common::utf8(home.path()))]);
    let root = home
        .path()
        .canonicalize()
        .expect("home exists")
        .join(".cache/tote");
    assert_under(&exe, &root);
}

#[test]
fn a_missing_home_is_not_created() {
    let (dir, tmpdir) = (common::temp_dir(), common::temp_dir());
    let home = dir.path().join("nonexistent");
    let env = [
        ("HOME", common::utf8(&home)),
        ("TMPDIR", common::utf8(tmpdir.path())),
    ];
    let exe = host_exe(&env);
    assert!(!home.exists(), "{home:?} was created");
    let root = tmpdir.path().canonicalize().expect("the dir exists");
    let euid = nix::unistd::geteuid();
    assert_under(&exe, &root.join(format!("tote-{euid}")));
}

/// The packed `self_exe` in a scratch container, run with `options`.
fn contained_exe(tag: &str, options: &[&str]) -> PathBuf {
    let packed = packed("self_exe");
    let image = Image::build(tag, &[(&packed, "/self_exe")]);
    let run = image.run(options, &["/self_exe"], b"");
    assert!(run.success(), "{}", run.describe());
    exe_of(&run)
}

#[test]
fn as_root_in_a_container_the_cache_root_is_under_home() {
    assert_under(&contained_exe("root-home", &[]), Path::new("/.cache/tote"));
}

#[test]
fn without_a_usable_home_the_cache_root_is_in_tmp() {
    let options = ["--user", "1000:1000", "--tmpfs", "/tmp:rw,exec,mode=1777"];
    assert_under(
        &contained_exe("tmp-fallback", &options),
        Path::new("/tmp/tote-1000"),
    );
}

#[test]
fn xdg_cache_home_comes_before_home() {
    let (xdg, home) = (common::temp_dir(), common::temp_dir());
    let env = [
        ("XDG_CACHE_HOME", common::utf8(xdg.path())),
        ("HOME", common::utf8(home.path())),
    ];
    let root = xdg.path().canonicalize().expect("the dir exists");
    assert_under(&host_exe(&env), &root.join("tote"));
}

#[test]
fn tmpdir_comes_before_tmp_when_home_is_unusable() {
    let tmpdir = common::temp_dir();
    let env = [("HOME", "/proc"), ("TMPDIR", common::utf8(tmpdir.path()))];
    let root = tmpdir.path().canonicalize().expect("the dir exists");
    let euid = nix::unistd::geteuid();
    assert_under(&host_exe(&env), &root.join(format!("tote-{euid}")));
}

/// A setuid start (AT_SECURE): no variable may choose where the bundle goes, nor turn on the
/// trace. The packed file is made setuid to uid 1000 and started by root, so the launcher
/// runs with euid 1000 and its only roots are `tote-1000` in `/tmp`, `/var/tmp`, `/dev/shm`.
#[test]
fn under_at_secure_no_variable_chooses_a_path() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        panic!("this test starts a setuid file and must run as root");
    }
    let dir = common::temp_dir();
    let file = dir.path().join("self_exe");
    std::fs::copy(packed("self_exe"), &file).expect("cannot copy the packed file");
    let uid = nix::unistd::Uid::from_raw(1000);
    nix::unistd::chown(&file, Some(uid), None).expect("cannot chown the packed file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4755))
        .expect("cannot make the packed file setuid");
    common::set_mode(dir.path(), 0o755);
    let chosen: Vec<tempfile::TempDir> = (0..4).map(|_| common::temp_dir()).collect();
    let names = ["TOTE_CACHE_DIR", "XDG_CACHE_HOME", "HOME", "TMPDIR"];
    let mut env: Vec<(&str, &str)> = names
        .iter()
        .zip(&chosen)
        .map(|(name, d)| (*name, common::utf8(d.path())))
        .collect();
    env.push(("TOTE_DEBUG", "1"));
    let run = capture(&mut host_command(&file, &["self_exe"], &env), b"");
    let exe = exe_of(&run);

    let mut failures = Failures::new();
    failures.check(
        "the bundle is under a temporary dir's tote-1000",
        [
            "/tmp/tote-1000/",
            "/var/tmp/tote-1000/",
            "/dev/shm/tote-1000/",
        ]
        .iter()
        .any(|root| exe.starts_with(root)),
        || run.describe(),
    );
    failures.check("no trace", run.stderr.is_empty(), || run.describe());
    for (name, d) in names.iter().zip(&chosen) {
        let used = std::fs::read_dir(d.path()).map_or(0, |entries| entries.count());
        failures.check(&format!("{name} left unused"), used == 0, || {
            format!("{:?} holds {used} entries", d.path())
        });
    }
    if let Some(bundle) = exe.ancestors().find(|a| {
        a.parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "tote-1000")
    }) {
        let _ = std::fs::remove_dir_all(bundle);
    }
    failures.finish();
}

/// A payload larger than one stream is split into streams that are decoded at the same time,
/// each by a process of its own: every file must come out whole, whichever stream held it.
#[test]
fn a_payload_of_several_streams_extracts_every_file_whole() {
    let dir = common::temp_dir();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut adds = Vec::new();
    for n in 0..4 {
        let data: Vec<u8> = (0..3 << 20).map(|_| rng.u8(..)).collect();
        let path = dir.path().join(format!("data{n}.bin"));
        common::write_file(&path, &data);
        adds.push(path);
    }
    let packed = dir.path().join("big");
    let mut pack = common::tote::tote();
    pack.arg("pack")
        .arg(common::fixtures::program("args_env"))
        .args(["--level", "0", "--streams", "4", "-o"])
        .arg(&packed);
    for a in &adds {
        pack.arg("--add").arg(a);
    }
    let run = capture(&mut pack, b"");
    assert!(run.success(), "{}", run.describe());
    let report = capture(common::tote::tote().arg("inspect").arg(&packed), b"");
    assert!(
        report.stdout_text().contains("in 4 streams"),
        "{}",
        report.describe()
    );

    let cache = common::temp_dir();
    let env = cache_env(cache.path(), &[]);
    let started = capture(&mut host_command(&packed, &["args_env"], &env), b"");
    assert!(started.success(), "{}", started.describe());
    let bundle = std::fs::read_dir(cache.path())
        .expect("the cache root exists")
        .map(|e| e.expect("a cache entry").path())
        .find(|p| p.is_dir())
        .expect("a bundle dir");
    for a in &adds {
        let extracted = bundle.join(a.strip_prefix("/").expect("an absolute path"));
        let same = std::fs::read(&extracted).ok() == std::fs::read(a).ok();
        assert!(same, "{extracted:?} differs from {a:?}");
    }
}

/// A root under a dir another user owns is refused (that user could swap the tree between
/// the launcher's checks and the exec), and nothing is created in that user's tree.
#[test]
fn a_cache_root_under_another_users_dir_is_refused() {
    let dir = common::temp_dir();
    let theirs = dir.path().join("theirs");
    common::make_dir(&theirs);
    std::os::unix::fs::chown(&theirs, Some(1000), Some(1000)).expect("cannot chown");
    let tmpdir = common::temp_dir();
    let env = [
        ("XDG_CACHE_HOME", common::utf8(&theirs)),
        ("HOME", "/proc"),
        ("TMPDIR", common::utf8(tmpdir.path())),
    ];
    let root = tmpdir.path().canonicalize().expect("the dir exists");
    let euid = nix::unistd::geteuid();
    assert_under(&host_exe(&env), &root.join(format!("tote-{euid}")));
    assert_eq!(
        std::fs::read_dir(&theirs).expect("the dir exists").count(),
        0,
        "something was created in another user's dir"
    );

    let shared = dir.path().join("shared");
    common::make_dir(&shared);
    common::set_mode(&shared, 0o777);
    let chosen = shared.join("cache");
    let run = capture(
        &mut host_command(&packed("self_exe"), &["self_exe"], &cache_env(&chosen, &[])),
        b"",
    );
    let expected = format!(
        "tote: refusing TOTE_CACHE_DIR (a dir above it may be changed by another user): {}\n",
        chosen.display()
    );
    assert_eq!(run.stderr_text(), expected, "{}", run.describe());
    assert_eq!(run.status, common::outcome::Status::Code(114));
}

#[test]
fn an_unknown_tote_mode_is_an_error() {
    let cache = common::temp_dir();
    let env = cache_env(cache.path(), &[("TOTE_MODE", "mem")]);
    let run = capture(
        &mut host_command(&packed("self_exe"), &["self_exe"], &env),
        b"",
    );
    assert_eq!(
        run.stderr_text(),
        "tote: unknown TOTE_MODE (the one mode is memory): mem\n"
    );
    assert_eq!(run.status, common::outcome::Status::Code(114));
}

/// In memory mode the memory files must not take the numbers of a closed stdin or stdout:
/// the program finds them closed, as natively.
#[test]
fn in_memory_mode_closed_standard_descriptors_stay_closed() {
    let script = |program: &str| format!("exec {program} -n '\"x\"' <&- >&-");
    let jq = common::tote::packed_as(Path::new("/usr/bin/jq"), "jq");
    let native = capture(
        std::process::Command::new("sh").args(["-c", &script("/usr/bin/jq")]),
        b"",
    );
    let packed = capture(
        std::process::Command::new("sh")
            .args(["-c", &script(common::utf8(&jq))])
            .env("TOTE_MODE", "memory"),
        b"",
    );
    common::outcome::assert_same("jq with stdin and stdout closed", &native, &packed);
}

/// A root that passes the free-space check but runs out of inodes while extracting: the
/// extraction is abandoned there and goes to the next root. The small file system is a tmpfs
/// mounted in a private mount namespace (`unshare`), which needs root.
#[test]
fn a_root_that_fills_up_during_extraction_gives_way_to_the_next() {
    let (small, tmpdir) = (common::temp_dir(), common::temp_dir());
    let packed = packed("self_exe");
    let script = format!(
        "mount -t tmpfs -o nr_inodes=8,mode=0755 tmpfs {small} && exec env -i \
         XDG_CACHE_HOME={small} HOME=/proc TMPDIR={tmpdir} TOTE_DEBUG=1 {packed}",
        small = common::utf8(small.path()),
        tmpdir = common::utf8(tmpdir.path()),
        packed = common::utf8(&packed),
    );
    let run = capture(
        std::process::Command::new("unshare").args(["--mount", "sh", "-c", &script]),
        b"",
    );
    assert!(run.success(), "{}", run.describe());
    let full = format!("no room left in {}/tote", common::utf8(small.path()));
    assert!(run.stderr_text().contains(&full), "{}", run.describe());
    let euid = nix::unistd::geteuid();
    let root = tmpdir.path().canonicalize().expect("the dir exists");
    assert_under(&exe_of(&run), &root.join(format!("tote-{euid}")));
}

/// In memory mode a variable that names a bundle path cannot be set: it is left out, and one
/// line says so, since the program will likely miss its files.
#[test]
fn in_memory_mode_a_variable_naming_the_bundle_is_left_out_with_a_warning() {
    let dir = common::temp_dir();
    let packed = dir.path().join("args_env");
    let mut pack = common::tote::tote();
    pack.arg("pack")
        .arg(common::fixtures::program("args_env"))
        .args([
            "--env",
            "DATA_DIR=${TOTE_ROOT}/usr/share/data",
            "--env",
            "MODE=fast",
            "-o",
        ])
        .arg(&packed);
    let packing = capture(&mut pack, b"");
    assert!(packing.success(), "{}", packing.describe());
    let run = capture(
        &mut host_command(&packed, &["args_env"], &[("TOTE_MODE", "memory")]),
        b"",
    );
    assert!(run.success(), "{}", run.describe());
    assert_eq!(
        run.stderr_text(),
        "tote: running from memory (no usable cache dir): DATA_DIR cannot point into the \
         bundle; the program may not find its files\n"
    );
    assert!(
        run.stdout_lines().contains(&"env=MODE=fast".to_string()),
        "{}",
        run.describe()
    );
    assert!(
        !run.stdout_text().contains("DATA_DIR"),
        "{}",
        run.describe()
    );
}
