//! What `tote pack` packs but warns about, one `tote: warning: ` line each: a `--trace` run
//! that failed (what it opened is still packed) and a setuid or setgid program, whose bits
//! the bundle does not keep.

mod common;

use common::outcome::{capture, Status};
use common::tote::tote;

/// A traced run that exits non-zero, or is killed, is warned about with its status; the
/// program's own stderr stays visible, and the file is written and runs.
#[test]
fn a_failed_trace_run_is_a_warning_with_its_status_and_still_packs() {
    let cases = [
        ("echo oops >&2; exit 3", "exited with status 3"),
        ("kill -9 $$", "was killed by signal 9"),
    ];
    for (script, says) in cases {
        let dir = common::temp_dir();
        let output = dir.path().join("sh");
        let run = capture(
            tote()
                .args(["pack", "/bin/sh", "--trace", "-o"])
                .arg(&output)
                .args(["--", "-c", script]),
            b"",
        );
        assert_eq!(run.status, Status::Code(0), "{}", run.describe());
        let warnings: Vec<String> = run
            .stderr_lines()
            .into_iter()
            .filter(|l| l.starts_with("tote: "))
            .collect();
        assert!(
            warnings.len() == 1
                && warnings[0].starts_with("tote: warning: ")
                && warnings[0].contains(&format!("{says} under --trace")),
            "{}",
            run.describe()
        );
        if script.contains("oops") {
            assert!(run.stderr_lines().contains(&"oops".to_string()));
        }
        let cache = common::temp_dir();
        let env = [("TOTE_CACHE_DIR", common::utf8(cache.path()))];
        let started = capture(
            &mut common::tote::host_command(&output, &["sh", "-c", "exit 5"], &env),
            b"",
        );
        assert_eq!(started.status, Status::Code(5), "{}", started.describe());
    }
}

/// A setuid or setgid program is packed with one warning naming it and the bit.
#[test]
fn a_setuid_or_setgid_program_is_packed_with_a_warning() {
    let fixture = common::fixtures::program("exit_code");
    for (mode, bits) in [
        (0o4755, "setuid bit is"),
        (0o2755, "setgid bit is"),
        (0o6755, "setuid and setgid bits are"),
    ] {
        let dir = common::temp_dir();
        let program = dir.path().join("exit_code");
        std::fs::copy(&fixture, &program).expect("cannot copy the fixture");
        common::set_mode(&program, mode);
        let output = dir.path().join("packed");
        let run = common::tote::pack(&program, &output);
        assert!(run.success(), "{}", run.describe());
        let expected = format!(
            "tote: warning: {}: its {bits} not kept",
            common::utf8(&program)
        );
        let lines = run.stderr_lines();
        assert!(
            lines.len() == 1 && lines[0].starts_with(&expected),
            "{mode:o}: {}",
            run.describe()
        );
        assert!(output.is_file());
    }
}
