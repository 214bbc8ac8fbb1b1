//! Reading a tote file without running it: `tote inspect` (text and JSON), `tote verify` and
//! `tote extract`, on a good file and on damaged ones. An extracted tree runs its program
//! from where it was extracted; a damaged file is refused with one line naming it, and
//! extracting it leaves nothing behind.

mod common;

use common::outcome::{capture, Run, Status};
use common::tote::{packed_as, tote};
use std::path::{Path, PathBuf};
use std::process::Command;

fn jq() -> PathBuf {
    packed_as(Path::new("/usr/bin/jq"), "jq")
}

fn tote_run(args: &[&std::ffi::OsStr]) -> Run {
    capture(tote().args(args), b"")
}

/// A copy of packed jq with the byte at `from_end` bytes before its end changed.
fn damaged_copy(dir: &Path, from_end: u64) -> PathBuf {
    let mut bytes = std::fs::read(jq()).expect("packed jq is readable");
    let at = bytes.len() - from_end as usize;
    bytes[at] ^= 0x55;
    let copy = dir.join("damaged");
    std::fs::write(&copy, bytes).expect("cannot write the damaged copy");
    copy
}

#[test]
fn inspect_shows_programs_loaders_entries_and_the_cache_dir_as_text_and_json() {
    let file = jq();
    let text = tote_run(&["inspect".as_ref(), file.as_os_str()]);
    assert!(text.success(), "{}", text.describe());
    for line in [
        "program jq = usr/bin/jq",
        "  loader lib64/ld-linux-x86-64.so.2",
        "  needs lib/x86_64-linux-gnu/libonig.so.5",
        "file 0755      42568 usr/bin/jq (patched at extraction)",
    ] {
        assert!(
            text.stdout_lines().iter().any(|l| l.starts_with(line)),
            "no {line:?}:\n{}",
            text.stdout_text()
        );
    }
    let json = tote_run(&["inspect".as_ref(), "--json".as_ref(), file.as_os_str()]);
    assert!(json.success(), "{}", json.describe());
    let report: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("inspect --json prints JSON");
    assert_eq!(report["programs"][0]["name"], "jq");
    assert_eq!(
        report["launcher"]["version"],
        format!("tote {}", env!("CARGO_PKG_VERSION"))
    );
    let name = report["cache"]["dir_name"]
        .as_str()
        .expect("a cache dir name");
    assert!(text
        .stdout_text()
        .contains(&format!("cache dir name {name}")));
    let files = report["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["kind"] == "file")
        .count();
    assert_eq!(report["totals"]["files"], files);
}

#[test]
fn verify_accepts_a_good_file_and_names_the_damage_of_a_bad_one() {
    let good = tote_run(&["verify".as_ref(), jq().as_os_str()]);
    assert!(good.success(), "{}", good.describe());
    assert!(good.stdout_text().contains(": ok: "), "{}", good.describe());

    let dir = common::temp_dir();
    for (from_end, damage) in [
        (200_000, "the payload's checksum does not match"),
        (10, "the trailer's checksum does not match"),
        (140, "the run table's checksum does not match"),
    ] {
        let bad = damaged_copy(dir.path(), from_end);
        let run = tote_run(&["verify".as_ref(), bad.as_os_str()]);
        assert_eq!(run.status, Status::Code(1), "{}", run.describe());
        let expected = format!("tote: {}: damaged: {damage}\n", bad.display());
        assert_eq!(run.stderr_text(), expected, "{}", run.describe());
    }
    let not_tote = tote_run(&["verify".as_ref(), "/bin/true".as_ref()]);
    assert_eq!(
        not_tote.stderr_text(),
        "tote: /bin/true: not a tote file, or a truncated or extended one: no tote trailer at \
         its end\n"
    );
}

/// `tote inspect` checks what `tote verify` checks before it reads a table: a damaged file
/// anywhere (data, index, run table, trailer) is the same one line and exit status 1, and
/// no report.
#[test]
fn inspect_refuses_a_damaged_file_as_verify_does() {
    let dir = common::temp_dir();
    let len = std::fs::metadata(jq()).expect("packed jq").len();
    let middle = (len - common::tote::stub_len()) / 2;
    for from_end in [10, 140, 600, 2_000, middle] {
        let bad = damaged_copy(dir.path(), from_end);
        let verify = tote_run(&["verify".as_ref(), bad.as_os_str()]);
        assert_eq!(verify.status, Status::Code(1), "{}", verify.describe());
        assert_eq!(verify.stderr_lines().len(), 1, "{}", verify.describe());
        for json in [false, true] {
            let mut args = vec!["inspect".as_ref(), bad.as_os_str()];
            if json {
                args.insert(1, "--json".as_ref());
            }
            let inspect = tote_run(&args);
            let label = format!("{from_end} bytes from the end, json {json}");
            assert_eq!(
                inspect.status,
                verify.status,
                "{label}: {}",
                inspect.describe()
            );
            assert_eq!(
                inspect.stderr_text(),
                verify.stderr_text(),
                "{label}: {}",
                inspect.describe()
            );
            assert!(inspect.stdout.is_empty(), "{label}: {}", inspect.describe());
        }
    }
}

/// A tote file missing its last byte, or with bytes after its trailer, has no trailer at its
/// end: verify says so in words, not as a bare "no payload".
#[test]
fn a_truncated_or_extended_file_is_named_as_such() {
    let dir = common::temp_dir();
    let bytes = std::fs::read(jq()).expect("packed jq is readable");
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).expect("cannot write");
    let extended = dir.path().join("extended");
    std::fs::write(&extended, [&bytes[..], b"more\n"].concat()).expect("cannot write");
    for file in [truncated, extended] {
        for command in ["verify", "inspect"] {
            let run = tote_run(&[command.as_ref(), file.as_os_str()]);
            assert_eq!(run.status, Status::Code(1), "{}", run.describe());
            let expected = format!(
                "tote: {}: not a tote file, or a truncated or extended one: no tote trailer at \
                 its end\n",
                file.display()
            );
            assert_eq!(run.stderr_text(), expected, "{command}: {}", run.describe());
        }
    }
}

#[test]
fn extract_writes_a_tree_whose_program_runs_from_there() {
    let dir = common::temp_dir();
    let target = dir.path().join("jq-tree");
    let run = tote_run(&["extract".as_ref(), jq().as_os_str(), target.as_os_str()]);
    assert!(run.success(), "{}", run.describe());
    let filter = r#""a1b22" | [scan("[0-9]+")], (2 | sqrt)"#;
    let native = capture(Command::new("/usr/bin/jq").args(["-nc", filter]), b"");
    let extracted = capture(
        Command::new(target.join("usr/bin/jq"))
            .args(["-nc", filter])
            .env_clear(),
        b"",
    );
    common::outcome::assert_same("extracted jq", &native, &extracted);

    let again = tote_run(&["extract".as_ref(), jq().as_os_str(), target.as_os_str()]);
    assert_eq!(again.status, Status::Code(1));
    assert!(
        again.stderr_text().contains("already exists"),
        "{}",
        again.describe()
    );
}

#[test]
fn extracting_a_damaged_file_fails_and_leaves_nothing() {
    let dir = common::temp_dir();
    let bad = damaged_copy(dir.path(), 200_000);
    let target = dir.path().join("tree");
    let run = tote_run(&["extract".as_ref(), bad.as_os_str(), target.as_os_str()]);
    assert_eq!(run.status, Status::Code(1), "{}", run.describe());
    assert!(
        run.stderr_text()
            .contains("damaged: the payload's checksum does not match"),
        "{}",
        run.describe()
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("the dir exists")
        .map(|e| e.expect("an entry").file_name())
        .filter(|n| n != "damaged")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
