//! Packing is reproducible: the same program packed twice gives the same bytes, whatever the
//! number of cores the packer may use (compression threads and stream split must not show).
//! So for every format: jq packed as a dir, tar or OCI archive (each layout) on one core and
//! on all gives the same tree or bytes. Host files keep their times, clamped to
//! `SOURCE_DATE_EPOCH` when it is set; every other entry is at `SOURCE_DATE_EPOCH`.

mod common;

use common::outcome::capture;
use common::tote::tote;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Packs the `args_env` fixture with the `adds` into `output`, the packer limited to the CPUs
/// in `cpus` (taskset).
fn pack_on(cpus: &str, adds: &[PathBuf], output: &Path) {
    let mut command = Command::new("taskset");
    command
        .args(["-c", cpus])
        .arg(env!("CARGO_BIN_EXE_tote"))
        .arg("pack")
        .arg(common::fixtures::program("args_env"))
        .args(["--level", "1", "--streams", "4", "-o"])
        .arg(output);
    for a in adds {
        command.arg("--add").arg(a);
    }
    let run = capture(&mut command, b"");
    assert!(run.success(), "{}", run.describe());
}

/// Files of pseudo-random bytes, enough for several streams.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut rng = fastrand::Rng::with_seed(11);
    (0..4)
        .map(|n| {
            let path = dir.join(format!("data{n}.bin"));
            let data: Vec<u8> = (0..3 << 20).map(|_| rng.u8(..)).collect();
            common::write_file(&path, &data);
            path
        })
        .collect()
}

#[test]
fn packing_twice_gives_the_same_bytes_on_one_core_or_all() {
    let dir = common::temp_dir();
    let all = format!(
        "0-{}",
        std::thread::available_parallelism().map_or(0, |n| n.get() - 1)
    );
    let adds = data_files(dir.path());
    let (one, every, again) = (
        dir.path().join("one"),
        dir.path().join("every"),
        dir.path().join("again"),
    );
    pack_on("0", &adds, &one);
    pack_on(&all, &adds, &every);
    pack_on(&all, &adds, &again);
    let streams = capture(tote().arg("inspect").arg(&one), b"");
    assert!(
        streams.stdout_text().contains("in 4 streams"),
        "{}",
        streams.describe()
    );
    let read = |p: &Path| std::fs::read(p).expect("a packed file");
    assert!(
        read(&every) == read(&again),
        "two packs on all cores differ"
    );
    assert!(
        read(&one) == read(&every),
        "a pack on one core differs from one on all cores"
    );
}

/// The `SOURCE_DATE_EPOCH` of these tests: after some of jq's files on the host were made,
/// before others (Debian 12's libc is from 2024 or later).
const EPOCH: u64 = 1_700_000_000;

/// The time an image entry for the host file `path` must have with `SOURCE_DATE_EPOCH` set.
fn clamped(path: &Path) -> u64 {
    let host = std::fs::metadata(path).expect("a host file").mtime();
    (host.max(0) as u64).min(EPOCH)
}

/// Packs jq with `args` into `output`, on the CPUs in `cpus`, with `SOURCE_DATE_EPOCH` set.
fn pack_jq_on(cpus: &str, args: &[&str], output: &Path) {
    let mut command = Command::new("taskset");
    command
        .args(["-c", cpus])
        .arg(env!("CARGO_BIN_EXE_tote"))
        .args(["pack", "/usr/bin/jq"])
        .args(args)
        .arg("-o")
        .arg(output)
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string());
    let run = capture(&mut command, b"");
    assert!(run.success(), "tote pack jq {args:?}: {}", run.describe());
}

fn all_cpus() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("0-{}", n - 1)
}

/// Everything a dir tree shows of itself: each entry's path, kind, mode, mtime, and its
/// bytes or symlink target. The root comes first, as `""`.
fn tree_of(root: &Path) -> Vec<(String, u32, i64, Vec<u8>)> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.expect("a readable tree");
            let meta = e.path().symlink_metadata().expect("an entry");
            let rel = e.path().strip_prefix(root).expect("below the root");
            let content = if meta.file_type().is_symlink() {
                std::fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                rel.to_string_lossy().into_owned(),
                meta.mode(),
                meta.mtime(),
                content,
            )
        })
        .collect()
}

#[test]
fn every_image_format_packs_twice_to_the_same_bytes() {
    let dir = common::temp_dir();
    let cases: &[(&str, &[&str])] = &[
        ("tar", &["--format", "tar"]),
        ("tar-prefix", &["--format", "tar", "--prefix", "/opt/jq"]),
        (
            "oci",
            &["--format", "oci", "--tag", "jq:1", "--passwd", "--ca-certs"],
        ),
        ("oci-prefix", &["--format", "oci", "--prefix", "/opt/jq"]),
        (
            "oci-file",
            &["--format", "oci", "--oci-layout", "file", "--streams", "4"],
        ),
    ];
    for (name, args) in cases {
        let (one, every) = (
            dir.path().join(format!("{name}-1")),
            dir.path().join(format!("{name}-all")),
        );
        pack_jq_on("0", args, &one);
        pack_jq_on(&all_cpus(), args, &every);
        let read = |p: &Path| std::fs::read(p).expect("a packed image");
        assert!(read(&one) == read(&every), "{name}: two packs differ");
    }
    let tarball = std::fs::read(dir.path().join("tar-1")).unwrap();
    let mut archive = tar::Archive::new(tarball.as_slice());
    let mut older = 0;
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let path = Path::new("/").join(entry.path().unwrap());
        let what = path.display().to_string();
        let want = if h.entry_type().is_file() {
            clamped(&path)
        } else {
            EPOCH
        };
        older += usize::from(want < EPOCH);
        assert_eq!(h.mtime().unwrap(), want, "{what}");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{what}");
    }
    assert!(older > 0, "no file of jq's closure is older than {EPOCH}");
}

#[test]
fn without_source_date_epoch_host_files_keep_their_times() {
    let dir = common::temp_dir();
    let image = dir.path().join("jq");
    let run = capture(
        tote()
            .args(["pack", "/usr/bin/jq", "--format", "dir", "-o"])
            .arg(&image)
            .env_remove("SOURCE_DATE_EPOCH"),
        b"",
    );
    assert!(run.success(), "{}", run.describe());
    let jq = std::fs::metadata(image.join("usr/bin/jq")).unwrap();
    let host = std::fs::metadata("/usr/bin/jq").unwrap();
    assert_eq!(jq.mtime(), host.mtime(), "usr/bin/jq");
    assert_eq!(std::fs::metadata(&image).unwrap().mtime(), 0, "the root");
}

#[test]
fn a_dir_packs_twice_to_the_same_tree() {
    let dir = common::temp_dir();
    for args in [
        &["--format", "dir"][..],
        &["--format", "dir", "--prefix", "/opt/jq"],
    ] {
        let (one, every) = (dir.path().join("one"), dir.path().join("every"));
        pack_jq_on("0", args, &one);
        pack_jq_on(&all_cpus(), args, &every);
        let (a, b) = (tree_of(&one), tree_of(&every));
        assert!(a.len() > 10, "{args:?}: a tree of {} entries", a.len());
        assert!(a == b, "{args:?}: two trees differ");
        assert!(
            a.iter().all(|e| e.2 <= EPOCH as i64),
            "{args:?}: an mtime is after {EPOCH}"
        );
        assert_eq!(a[0].2, EPOCH as i64, "{args:?}: the root's mtime");
        std::fs::remove_dir_all(&one).unwrap();
        std::fs::remove_dir_all(&every).unwrap();
    }
}
