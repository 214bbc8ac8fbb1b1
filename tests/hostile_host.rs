//! A packed program on a hostile host: many cold starts at once, starts killed in the middle
//! of extraction, damaged and truncated files, and cache roots someone else could have filled.
//! Every start uses a private cache root, never the user's cache. The randomized tests print
//! their seed; `TOTE_TEST_SEED` repeats a run.

mod common;

use common::fixtures::{native_command, program};
use common::outcome::{capture, try_capture, Failures, Run, Status};
use common::tote::{bundle_name, host_command, inspect, packed, packed_as, stub_len, tote};
use common::utf8;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Barrier, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The file written last into a bundle dir: without it, the dir is never run.
const MARKER: &str = ".tote-complete";

/// The kill test times its kills by a cold start measured before: it runs alone (write), the
/// other tests that start many processes at once side by side (read), so that their load
/// does not slow its kills' starts after the measure.
static TIMING: RwLock<()> = RwLock::new(());

fn beside_other_heavy_tests() -> RwLockReadGuard<'static, ()> {
    TIMING
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The environment of a start whose cache root is `root`.
fn cache_env(root: &Path) -> Vec<(&str, &str)> {
    vec![("TOTE_CACHE_DIR", utf8(root))]
}

/// The fixture `name` run natively with exactly `argv` and `env`.
fn native_run(name: &str, argv: &[&str], env: &[(&str, &str)]) -> Run {
    capture(
        &mut native_command(&program(name), argv, env, Path::new("/")),
        b"",
    )
}

/// The names in `dir`, sorted; none when it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {dir:?}: {e}"));
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The temporary dirs of bundle `name` in `root`: `<name>.<something>.tmp`.
fn temporaries(root: &Path, name: &str) -> Vec<String> {
    let prefix = format!("{name}.");
    names_in(root)
        .into_iter()
        .filter(|entry| entry.starts_with(&prefix) && entry.ends_with(".tmp"))
        .collect()
}

/// The dirs in `root` that hold a completion marker: the published bundles.
fn published(root: &Path) -> Vec<String> {
    names_in(root)
        .into_iter()
        .filter(|entry| root.join(entry).join(MARKER).exists())
        .collect()
}

#[test]
fn sixty_four_cold_starts_at_once_all_run_and_publish_one_bundle() {
    let _heavy = beside_other_heavy_tests();
    const STARTS: usize = 64;
    let root = common::temp_dir();
    let env = cache_env(root.path());
    let argv = ["args_env", "at-once"];
    let native = native_run("args_env", &argv, &env);
    let packed = packed("args_env");
    let name = bundle_name(&packed);
    let together = Barrier::new(STARTS);
    let runs: Vec<Run> = thread::scope(|scope| {
        let start = || {
            together.wait();
            capture(&mut host_command(&packed, &argv, &env), b"")
        };
        let starts: Vec<_> = (0..STARTS).map(|_| scope.spawn(start)).collect();
        starts
            .into_iter()
            .map(|start| start.join().expect("a start panicked"))
            .collect()
    });

    let mut failures = Failures::new();
    for (n, run) in runs.iter().enumerate() {
        failures.compare(&format!("start {n}"), &native, run);
    }
    let entries = names_in(root.path());
    failures.check(
        "the cache root holds the bundle dir alone",
        entries == [name.clone()],
        || format!("expected [{name:?}], found {entries:?}"),
    );
    failures.check(
        "the bundle dir is complete",
        root.path().join(&name).join(MARKER).exists(),
        || format!("no {MARKER} in {name}"),
    );
    failures.finish();
}

/// The starts killed during extraction, shared among the workers of the test.
const KILLS: usize = 200;
/// Workers killing starts side by side, each in a cache root of its own.
const KILL_WORKERS: usize = 2;
/// Cold starts timed by each worker before it kills any.
const TIMED_STARTS: usize = 5;
const JQ: &str = "/usr/bin/jq";
const JQ_ARGV: [&str; 3] = ["jq", "-n", "1 + 1"];

/// What one worker of the kill test saw.
struct KillReport {
    /// The median duration of a cold start, the range of the kill delays.
    cold_start: Duration,
    /// Kills after which a new temporary dir was left: extraction was in progress.
    during_extraction: usize,
    /// The normal start after each kill, and the last one.
    starts: Vec<Run>,
    /// The temporary dirs in the worker's cache root at the end.
    left: Vec<String>,
}

#[test]
fn starts_killed_during_extraction_never_spoil_a_later_start() {
    let _alone = TIMING
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let jq = packed_as(Path::new(JQ), "jq");
    let name = bundle_name(&jq);
    let mut rng = common::seeded_rng();
    let delays: Vec<f64> = (0..KILLS).map(|_| rng.f64()).collect();
    let reports: Vec<KillReport> = thread::scope(|scope| {
        let workers: Vec<_> = delays
            .chunks(KILLS.div_ceil(KILL_WORKERS))
            .map(|share| scope.spawn(|| kill_during_extraction(&jq, &name, share)))
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a kill worker panicked"))
            .collect()
    });

    let native = capture(
        &mut native_command(Path::new(JQ), &JQ_ARGV, &[], Path::new("/")),
        b"",
    );
    let mut failures = Failures::new();
    for (worker, report) in reports.iter().enumerate() {
        check_kill_report(&mut failures, worker, report, &native);
    }
    let hits: usize = reports.iter().map(|r| r.during_extraction).sum();
    println!("{hits} of {KILLS} kills landed during extraction");
    failures.check(
        "most kills land during extraction",
        hits * 2 >= KILLS,
        || format!("only {hits} of {KILLS} kills left a temporary dir"),
    );
    failures.finish();
}

fn check_kill_report(failures: &mut Failures, worker: usize, report: &KillReport, native: &Run) {
    println!("worker {worker}: cold start {:?}", report.cold_start);
    for (n, run) in report.starts.iter().enumerate() {
        failures.compare(&format!("worker {worker}, start {n}"), native, run);
    }
    failures.check(
        &format!("worker {worker}: temporary dirs of killed starts are removed"),
        report.left.is_empty(),
        || {
            let some = &report.left[..report.left.len().min(3)];
            format!(
                "{} left in the cache root, such as {some:?}",
                report.left.len()
            )
        },
    );
}

/// In a fresh cache root, for each fraction in `delays`: removes the bundle dir, starts `jq`
/// cold and kills it that fraction of a cold start later, then starts it normally.
fn kill_during_extraction(jq: &Path, name: &str, delays: &[f64]) -> KillReport {
    let root = common::temp_dir();
    let env = cache_env(root.path());
    let bundle = root.path().join(name);
    let cold_start = median_cold_start(jq, &env, &bundle);
    let mut report = KillReport {
        cold_start,
        during_extraction: 0,
        starts: Vec::new(),
        left: Vec::new(),
    };
    for fraction in delays {
        remove_bundle(&bundle);
        let before = temporaries(root.path(), name);
        start_and_kill(jq, &env, cold_start.mul_f64(*fraction));
        let after = temporaries(root.path(), name);
        if after.iter().any(|dir| !before.contains(dir)) {
            report.during_extraction += 1;
        }
        report.starts.push(start_jq(jq, &env));
    }
    report.starts.push(start_jq(jq, &env));
    report.left = temporaries(root.path(), name);
    report
}

fn start_jq(jq: &Path, env: &[(&str, &str)]) -> Run {
    capture(&mut host_command(jq, &JQ_ARGV, env), b"")
}

/// The median duration of a few cold starts of `jq`, each after removing `bundle`.
fn median_cold_start(jq: &Path, env: &[(&str, &str)], bundle: &Path) -> Duration {
    let mut times: Vec<Duration> = (0..TIMED_STARTS)
        .map(|_| {
            remove_bundle(bundle);
            let clock = Instant::now();
            let run = start_jq(jq, env);
            assert!(
                run.success(),
                "a timed cold start failed:\n{}",
                run.describe()
            );
            clock.elapsed()
        })
        .collect();
    times.sort();
    times[TIMED_STARTS / 2]
}

fn remove_bundle(bundle: &Path) {
    if bundle.exists() {
        fs::remove_dir_all(bundle).unwrap_or_else(|e| panic!("cannot remove {bundle:?}: {e}"));
    }
}

/// Starts `jq` with its output discarded and kills it with SIGKILL after `delay`.
fn start_and_kill(jq: &Path, env: &[(&str, &str)], delay: Duration) {
    let mut command = host_command(jq, &JQ_ARGV, env);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {jq:?}: {e}"));
    thread::sleep(delay);
    child.kill().expect("cannot kill a start");
    child.wait().expect("cannot wait for a killed start");
}

/// Single-byte changes in the payload and trailer, tried on copies of one packed file.
const FLIPS: usize = 1000;
/// Copies cut short at random lengths.
const TRUNCATIONS: usize = 50;
/// Workers starting damaged copies side by side, each on copies of its own.
const DAMAGE_WORKERS: usize = 4;
/// Starts of a freshly written copy tried while the kernel says ETXTBSY.
const ETXTBSY_TRIES: usize = 50;
const ETXTBSY: i32 = 26;

/// One way to damage a copy of a tote file.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// The byte at `at` XORed with `mask` (never 0).
    Flip { at: usize, mask: u8 },
    /// Only the first `len` bytes kept.
    Truncate { len: usize },
}

impl Damage {
    fn applied_to(self, file: &[u8]) -> Vec<u8> {
        match self {
            Damage::Flip { at, mask } => {
                let mut copy = file.to_vec();
                copy[at] ^= mask;
                copy
            }
            Damage::Truncate { len } => file[..len].to_vec(),
        }
    }
}

/// What a start of a damaged copy did.
struct Outcome {
    damage: Damage,
    /// The run, or why it could not start.
    run: Result<Run, String>,
    /// The path the copy was started by.
    copy: String,
    /// Bundle dirs with a marker in the start's cache root afterwards.
    published: Vec<String>,
}

#[test]
fn damaged_or_truncated_files_never_run_and_publish_nothing() {
    let _heavy = beside_other_heavy_tests();
    let packed = packed("args_env");
    let file = fs::read(&packed).unwrap_or_else(|e| panic!("cannot read {packed:?}: {e}"));
    let stub_len = stub_len() as usize;
    let damages = random_damages(file.len(), stub_len);
    let outcomes: Vec<Outcome> = thread::scope(|scope| {
        let workers: Vec<_> = damages
            .chunks(damages.len().div_ceil(DAMAGE_WORKERS))
            .map(|share| scope.spawn(|| start_damaged(&file, share)))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a damage worker panicked"))
            .collect()
    });

    let mut failures = Failures::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in &outcomes {
        *tally.entry(summary(outcome)).or_default() += 1;
        check_damaged_start(&mut failures, outcome, stub_len);
    }
    println!("stub {stub_len} bytes, file {} bytes", file.len());
    println!("outcomes: {tally:?}");
    failures.finish();
}

/// `FLIPS` changed bytes after the stub and `TRUNCATIONS` lengths shorter than the file.
fn random_damages(file_len: usize, stub_len: usize) -> Vec<Damage> {
    let mut rng = common::seeded_rng();
    let flips = (0..FLIPS).map(|_| Damage::Flip {
        at: rng.usize(stub_len..file_len),
        mask: rng.u8(1..),
    });
    let mut damages: Vec<Damage> = flips.collect();
    damages.extend((0..TRUNCATIONS).map(|_| Damage::Truncate {
        len: rng.usize(..file_len),
    }));
    damages
}

/// Starts a copy of `file` with each damage, in a fresh empty cache root each time.
fn start_damaged(file: &[u8], damages: &[Damage]) -> Vec<Outcome> {
    let dir = common::temp_dir();
    let copy = dir.path().join("args_env");
    damages
        .iter()
        .map(|&damage| {
            write_executable(&copy, &damage.applied_to(file));
            let root = common::temp_dir();
            let run = start_fresh(&copy, &cache_env(root.path()));
            Outcome {
                damage,
                run: run.map_err(|e| e.to_string()),
                copy: utf8(&copy).to_owned(),
                published: published(root.path()),
            }
        })
        .collect()
}

/// Writes `bytes` to `path` with mode 0755 and closes it.
fn write_executable(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
    file.write_all(bytes)
        .unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
}

/// Starts the file `copy`, just written, by its path. Another thread of this test binary may
/// have forked while the file was open for writing, and until its child execs, the kernel
/// refuses to run the file with ETXTBSY: such starts are tried again.
fn start_fresh(copy: &Path, env: &[(&str, &str)]) -> io::Result<Run> {
    let argv = [utf8(copy)];
    let mut tries = 1;
    loop {
        match try_capture(&mut host_command(copy, &argv, env), b"") {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < ETXTBSY_TRIES => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            started => return started,
        }
    }
}

/// A short name for how a damaged start ended, to count them.
fn summary(outcome: &Outcome) -> String {
    let kind = match outcome.damage {
        Damage::Flip { .. } => "flip",
        Damage::Truncate { .. } => "truncation",
    };
    match &outcome.run {
        Ok(run) => format!("{kind}: {:?}", run.status),
        Err(e) => format!("{kind}: not started ({e})"),
    }
}

/// A damaged start must fail without the program's output and publish nothing. Where the
/// launcher stub is whole, it must say so on one `tote: ` line naming the file, with exit code
/// 113. A file cut inside the stub lacks the launcher's own code: the kernel refuses it or the
/// process dies of a signal, and it must just not succeed.
fn check_damaged_start(failures: &mut Failures, outcome: &Outcome, stub_len: usize) {
    let label = format!("{:?}", outcome.damage);
    let launcher_whole = match outcome.damage {
        Damage::Flip { .. } => true,
        Damage::Truncate { len } => len >= stub_len,
    };
    failures.check(&label, outcome.published.is_empty(), || {
        format!("published in the cache: {:?}", outcome.published)
    });
    match &outcome.run {
        Ok(run) if launcher_whole => {
            failures.check(&label, reports_damage(run, &outcome.copy), || {
                run.describe()
            })
        }
        Ok(run) => failures.check(&label, run.stdout.is_empty() && !run.success(), || {
            run.describe()
        }),
        Err(e) => failures.check(&label, !launcher_whole, || format!("not started: {e}")),
    }
}

/// Whether `run` is the launcher's refusal of a damaged payload: exit code 113, no output, and
/// one `tote: ` line on stderr naming the file.
fn reports_damage(run: &Run, copy: &str) -> bool {
    let lines = run.stderr_lines();
    run.status == Status::Code(113)
        && run.stdout.is_empty()
        && lines.len() == 1
        && lines[0].starts_with("tote: ")
        && lines[0].contains(copy)
}

/// How a cache root is made one that must never be trusted.
#[derive(Clone, Copy)]
enum BadRoot {
    WritableByAll,
    Symlink,
    OtherOwner,
}

/// A uid other than the one the tests run as (they run as root).
const OTHER_UID: u32 = 1000;

#[test]
fn a_cache_root_writable_by_all_is_refused_and_the_next_candidate_used() {
    refused_root_is_skipped(BadRoot::WritableByAll);
}

#[test]
fn a_cache_root_that_is_a_symlink_is_refused_and_the_next_candidate_used() {
    refused_root_is_skipped(BadRoot::Symlink);
}

#[test]
fn a_cache_root_of_another_user_is_refused_and_the_next_candidate_used() {
    refused_root_is_skipped(BadRoot::OtherOwner);
}

/// The planted bundle is a real trap: from a trusted root, the launcher runs it.
#[test]
fn a_planted_bundle_in_a_trusted_root_is_run() {
    let scratch = common::temp_dir();
    let packed = packed("args_env");
    let root = scratch.path().join("root");
    let ran = scratch.path().join("planted-ran");
    common::make_dir(&root);
    common::set_mode(&root, 0o700);
    plant(&packed, &root.join(bundle_name(&packed)), &ran);
    let run = capture(
        &mut host_command(&packed, &["args_env"], &cache_env(&root)),
        b"",
    );
    assert!(
        ran.exists(),
        "the planted program did not run:\n{}",
        run.describe()
    );
}

/// `XDG_CACHE_HOME/tote` is made a `bad` root holding a planted, complete-looking bundle;
/// HOME is unset (a missing `$HOME/.cache/tote` would be created and used) and TMPDIR is
/// private, so the next usable candidate is `$TMPDIR/tote-<euid>`. The start must refuse the
/// bad root, extract there, and never run a planted file.
fn refused_root_is_skipped(bad: BadRoot) {
    let scratch = common::temp_dir();
    let packed = packed_anew(scratch.path());
    let name = bundle_name(&packed);
    let xdg = scratch.path().join("xdg");
    let bad_root = xdg.join("tote");
    let ran = scratch.path().join("planted-ran");
    let planted = make_bad_root(bad, &bad_root, &scratch.path().join("elsewhere"));
    plant(&packed, &planted.join(&name), &ran);
    let tmp = scratch.path().join("tmp");
    common::make_dir(&tmp);
    common::set_mode(&tmp, 0o700);
    let env = [
        ("XDG_CACHE_HOME", utf8(&xdg)),
        ("TMPDIR", utf8(&tmp)),
        ("TOTE_DEBUG", "1"),
    ];
    let argv = ["args_env", "refused"];
    let native = native_run("args_env", &argv, &env);
    let run = capture(&mut host_command(&packed, &argv, &env), b"");

    let euid = euid(scratch.path());
    let extracted = tmp.join(format!("tote-{euid}")).join(&name).join(MARKER);
    let mut failures = Failures::new();
    failures.check(
        "the program's output",
        run.stdout == native.stdout && run.success(),
        || {
            format!(
                "expected:\n{}\ngot:\n{}",
                native.stdout_text(),
                run.describe()
            )
        },
    );
    failures.check("the bad root is refused", refuses(&run, &bad_root), || {
        run.describe()
    });
    failures.check(
        "the bundle is extracted in $TMPDIR",
        extracted.exists(),
        || format!("no {extracted:?}"),
    );
    failures.check("no planted file runs", !ran.exists(), || {
        fs::read_to_string(&ran).unwrap_or_default()
    });
    failures.finish();
}

/// `args_env` packed into `scratch` with one more file, whose content is the path of
/// `scratch`. Its bundle name is new, so no bundle left by an earlier run in a cache root this
/// test does not control (`/tmp/tote-<euid>`) can serve the start.
fn packed_anew(scratch: &Path) -> PathBuf {
    let unique = scratch.join("unique");
    common::write_file(&unique, utf8(scratch));
    let output = scratch.join("args_env");
    let mut pack = tote();
    pack.arg("pack")
        .arg(program("args_env"))
        .arg("--add")
        .arg(&unique)
        .args(["--level", "0", "-o"])
        .arg(&output);
    let run = capture(&mut pack, b"");
    assert!(run.success(), "{pack:?} failed:\n{}", run.describe());
    output
}

/// Makes `root` a `bad` cache root; returns the dir to plant a bundle in (for a symlink, the
/// dir `elsewhere` it points at).
fn make_bad_root(bad: BadRoot, root: &Path, elsewhere: &Path) -> PathBuf {
    let planted = match bad {
        BadRoot::Symlink => elsewhere,
        BadRoot::WritableByAll | BadRoot::OtherOwner => root,
    };
    common::make_dir(planted);
    common::set_mode(planted, 0o700);
    common::make_dir(root.parent().expect("a cache root has a parent dir"));
    match bad {
        BadRoot::WritableByAll => common::set_mode(root, 0o777),
        BadRoot::Symlink => std::os::unix::fs::symlink(elsewhere, root)
            .unwrap_or_else(|e| panic!("cannot link {root:?}: {e}")),
        BadRoot::OtherOwner => std::os::unix::fs::chown(root, Some(OTHER_UID), Some(OTHER_UID))
            .unwrap_or_else(|e| panic!("cannot chown {root:?}: {e}")),
    }
    planted.to_path_buf()
}

/// Lays out at `bundle` what looks like the complete bundle of `packed`: every dir and link
/// `tote inspect` lists, every file (the programs and the loader among them) a script that
/// appends its path to `ran`, and the marker.
fn plant(packed: &Path, bundle: &Path, ran: &Path) {
    let script = format!("#!/bin/sh\necho \"$0\" >> '{}'\n", utf8(ran));
    let mut must_exist = vec![bundle.join("lib64/ld-linux-x86-64.so.2")];
    for line in inspect(packed).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["program", _name, "=", path] => must_exist.push(bundle.join(path)),
            ["dir", _mode, path] => common::make_dir(&bundle.join(path)),
            ["file", _mode, _size, path, ..] => {
                let file = bundle.join(path);
                common::write_file(&file, &script);
                common::set_mode(&file, 0o755);
            }
            ["link", path, "->", target] => {
                let link = bundle.join(path);
                common::make_dir(link.parent().expect("a link has a parent dir"));
                std::os::unix::fs::symlink(target, &link)
                    .unwrap_or_else(|e| panic!("cannot link {link:?}: {e}"));
            }
            _ => {}
        }
    }
    for file in must_exist {
        assert!(file.is_file(), "the planted bundle has no {file:?}");
    }
    common::write_file(&bundle.join(MARKER), "");
}

/// Whether the launcher's trace says it refused `root`.
fn refuses(run: &Run, root: &Path) -> bool {
    let root = utf8(root);
    run.stderr_lines()
        .iter()
        .any(|line| line.contains("refus") && line.contains(root))
}

/// The effective uid of this process: the owner of `made`, a dir it created.
fn euid(made: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(made)
        .unwrap_or_else(|e| panic!("cannot stat {made:?}: {e}"))
        .uid()
}
