//! What one run of a program produced (stdout, stderr, how it ended), how to capture it from
//! a `Command` with a deadline, and comparisons that explain a mismatch with a line diff.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any single command of a test may take before it is killed.
const DEADLINE: Duration = Duration::from_secs(120);

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Signal(i32),
}

impl From<ExitStatus> for Status {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Status::Code(code),
            (None, Some(signal)) => Status::Signal(signal),
            (None, None) => panic!("exit status {status:?} has neither code nor signal"),
        }
    }
}

/// Everything a test compares about one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Status,
}

impl Run {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_text().lines().map(str::to_owned).collect()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_text().lines().map(str::to_owned).collect()
    }

    pub fn success(&self) -> bool {
        self.status == Status::Code(0)
    }

    /// The whole run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            indent(&self.stdout_text()),
            indent(&self.stderr_text())
        )
    }
}

/// Runs `command` with `stdin` as its input and captures the run; returns the pid too.
/// Panics when the command cannot start or outlives the deadline.
pub fn capture_with_pid(command: &mut Command, stdin: &[u8]) -> (u32, Run) {
    match try_capture_with_pid(command, stdin) {
        Ok(started) => started,
        Err(e) => panic!("cannot start {command:?}: {e}"),
    }
}

/// Runs `command` with `stdin` as its input and captures the run, or returns why it could
/// not start (the kernel refusing the file, say). Panics when it outlives the deadline.
pub fn try_capture(command: &mut Command, stdin: &[u8]) -> io::Result<Run> {
    try_capture_with_pid(command, stdin).map(|(_, run)| run)
}

fn try_capture_with_pid(command: &mut Command, stdin: &[u8]) -> io::Result<(u32, Run)> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let writer = feed(&mut child, stdin);
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_with_deadline(&mut child, command);
    writer.join().expect("stdin writer panicked");
    let stdout = stdout.join().expect("stdout reader panicked");
    let stderr = stderr.join().expect("stderr reader panicked");
    Ok((
        pid,
        Run {
            stdout,
            stderr,
            status: status.into(),
        },
    ))
}

/// Runs `command` with `stdin` as its input and captures the run.
pub fn capture(command: &mut Command, stdin: &[u8]) -> Run {
    capture_with_pid(command, stdin).1
}

/// Writes `bytes` to the child's stdin, then closes it. A child that exits without reading
/// it all is fine, so write errors are ignored.
fn feed(child: &mut Child, bytes: &[u8]) -> JoinHandle<()> {
    let mut input = child.stdin.take().expect("stdin is piped");
    let bytes = bytes.to_vec();
    thread::spawn(move || {
        let _ = input.write_all(&bytes);
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    let mut pipe = pipe.expect("output is piped");
    thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes)
            .expect("cannot read a child's output");
        bytes
    })
}

fn wait_with_deadline(child: &mut Child, command: &Command) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("cannot wait for a child") {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{command:?} still running after {DEADLINE:?}: killed");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Explains how `actual` differs from `expected`, or `None` when they are the same.
pub fn differences(expected: &Run, actual: &Run) -> Option<String> {
    let mut report = String::new();
    if expected.status != actual.status {
        let _ = writeln!(
            report,
            "status: expected {:?}, got {:?}",
            expected.status, actual.status
        );
    }
    for (stream, want, got) in [
        ("stdout", &expected.stdout, &actual.stdout),
        ("stderr", &expected.stderr, &actual.stderr),
    ] {
        if want != got {
            let _ = writeln!(report, "{stream} differs (- expected, + actual):");
            report.push_str(&diff_bytes(want, got));
        }
    }
    (!report.is_empty()).then_some(report)
}

/// Panics with a readable diff unless the two runs are the same.
pub fn assert_same(label: &str, expected: &Run, actual: &Run) {
    if let Some(report) = differences(expected, actual) {
        panic!("{label}: runs differ\n{report}");
    }
}

/// Collects every failed check of a test so that one run reports them all.
#[derive(Default)]
pub struct Failures {
    found: Vec<String>,
}

impl Failures {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a failure unless the two runs are the same.
    pub fn compare(&mut self, label: &str, expected: &Run, actual: &Run) {
        if let Some(report) = differences(expected, actual) {
            self.found.push(format!("{label}:\n{}", indent(&report)));
        }
    }

    /// Records `explain()` as a failure unless `ok` holds.
    pub fn check(&mut self, label: &str, ok: bool, explain: impl FnOnce() -> String) {
        if !ok {
            self.found.push(format!("{label}:\n{}", indent(&explain())));
        }
    }

    /// Panics listing every recorded failure, if any.
    pub fn finish(self) {
        if !self.found.is_empty() {
            panic!(
                "{} failure(s):\n\n{}",
                self.found.len(),
                self.found.join("\n")
            );
        }
    }
}

/// A line diff of two outputs; bytes that are not UTF-8 are shown replaced.
fn diff_bytes(expected: &[u8], actual: &[u8]) -> String {
    let expected = String::from_utf8_lossy(expected);
    let actual = String::from_utf8_lossy(actual);
    if expected == actual {
        return "    (the outputs differ only in bytes that are not UTF-8)\n".to_owned();
    }
    let old: Vec<&str> = expected.split_inclusive('\n').collect();
    let new: Vec<&str> = actual.split_inclusive('\n').collect();
    render(&edit_script(&old, &new))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// Beyond this many line pairs a diff is replaced by the first differing line.
const DIFF_CELLS: usize = 4_000_000;

/// The edits turning `old` into `new`, from a longest common subsequence of lines.
fn edit_script<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Edit<'a>> {
    if old.len() * new.len() > DIFF_CELLS {
        return first_difference(old, new);
    }
    let width = new.len() + 1;
    let mut common = vec![0u32; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i * width + j] = if old[i] == new[j] {
                common[(i + 1) * width + j + 1] + 1
            } else {
                common[(i + 1) * width + j].max(common[i * width + j + 1])
            };
        }
    }
    walk(old, new, &common, width)
}

fn walk<'a>(old: &[&'a str], new: &[&'a str], common: &[u32], width: usize) -> Vec<Edit<'a>> {
    let (mut i, mut j, mut edits) = (0, 0, Vec::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            edits.push(Edit::Same(old[i]));
            (i, j) = (i + 1, j + 1);
        } else if j < new.len()
            && (i == old.len() || common[i * width + j + 1] >= common[(i + 1) * width + j])
        {
            edits.push(Edit::Added(new[j]));
            j += 1;
        } else {
            edits.push(Edit::Removed(old[i]));
            i += 1;
        }
    }
    edits
}

/// For outputs too long to diff: the common prefix, then the first differing lines.
fn first_difference<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Edit<'a>> {
    let same = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let mut edits: Vec<Edit> = old[..same].iter().map(|line| Edit::Same(line)).collect();
    edits.extend(old.get(same).map(|line| Edit::Removed(line)));
    edits.extend(new.get(same).map(|line| Edit::Added(line)));
    edits
}

/// Unchanged lines shown around each change.
const CONTEXT: usize = 2;

fn render(edits: &[Edit]) -> String {
    let near_change = |at: usize| {
        let low = at.saturating_sub(CONTEXT);
        let high = (at + CONTEXT + 1).min(edits.len());
        edits[low..high]
            .iter()
            .any(|edit| !matches!(edit, Edit::Same(_)))
    };
    let mut text = String::new();
    let mut skipping = false;
    for (at, edit) in edits.iter().enumerate() {
        let (mark, line) = match edit {
            Edit::Same(_) if !near_change(at) => {
                if !skipping {
                    text.push_str("    ...\n");
                }
                skipping = true;
                continue;
            }
            Edit::Same(line) => (' ', line),
            Edit::Removed(line) => ('-', line),
            Edit::Added(line) => ('+', line),
        };
        skipping = false;
        let _ = writeln!(text, "  {mark} {}", shown(line));
    }
    text
}

/// One line made visible: control characters escaped, a missing final newline said.
fn shown(line: &str) -> String {
    let (body, ended) = match line.strip_suffix('\n') {
        Some(body) => (body, true),
        None => (line, false),
    };
    let mut text: String = body
        .chars()
        .map(|c| match c {
            '\t' => "\t".to_owned(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect();
    if !ended {
        text.push_str("  (no newline at end)");
    }
    text
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}
