//! Packing is reproducible: the same program packed twice gives the same bytes, whatever the
//! number of cores the packer may use (compression threads and stream split must not show).

mod common;

use common::outcome::capture;
use common::tote::tote;
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
