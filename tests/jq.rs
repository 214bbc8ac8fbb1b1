//! Debian's jq, packed, against the same jq run natively: every case runs in a scratch
//! container holding only the packed file (and one JSON data file), and its stdout, stderr
//! and exit status must match the native run byte for byte. The cases cover plain filters,
//! oniguruma regexes, base64, libm, command-line options, input from stdin and from a file,
//! and error exits. They run once as root and once as uid 1000 with the cache on a tmpfs.

mod common;

use common::fixtures::native_command;
use common::outcome::{capture, Failures, Run, Status};
use common::podman::Image;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The jq under test, and the path it has in the image.
const HOST_JQ: &str = "/usr/bin/jq";
const IMAGE_JQ: &str = "/jq";

/// The data file, relative to the image root (the container's working dir) and, natively,
/// to the dir holding it: the argument is the same string in both runs.
const DATA_FILE: &str = "data/input.json";

const DATA: &str = r#"{"items":[{"name":"apple","price":1.25,"tags":["fruit","red"]},
{"name":"bread","price":2.5,"tags":["bakery"]},{"name":"cheese","price":7,"tags":[]}],
"store":"Épicerie \u00e9t\u00e9"}
"#;

/// Each case: a name, jq's arguments after argv[0], and what jq reads on stdin.
#[rustfmt::skip]
const CASES: &[(&str, &[&str], &str)] = &[
    ("arithmetic", &["-n", "1 + 2 * 3 - 10 / 4, 17 % 5, -(3)"], ""),
    ("average", &["-n", "[range(1; 11)] | add / length"], ""),
    ("strings", &["-n", r#""tote" | ascii_upcase + "-" + (length | tostring)"#], ""),
    ("split join", &["-n", r#""a b  c" | split(" ") | join(",")"#], ""),
    ("unicode", &["-c", ". | explode, ascii_downcase, length"], "\"Héllo Wörld ✓\"\n"),
    ("regex test", &["-n", r#""abc123", "abc" | test("[0-9]+$")"#], ""),
    ("regex capture", &["-nc", r#""2024-01-15" | capture("(?<y>\\d+)-(?<m>\\d+)-(?<d>\\d+)")"#], ""),
    ("regex sub", &["-n", r#""hello world" | sub("o"; "0"), gsub("[lo]"; "_")"#], ""),
    ("invalid regex", &["-n", r#""a" | test("(")"#], ""),
    ("base64 decode", &["-n", r#""dG90ZSBwYWNrcyBqcQ==" | @base64d"#], ""),
    ("formats", &["-rn", r#"[1, "a b", null] | @base64, @csv, @sh, @uri, @html"#], ""),
    ("libm", &["-nc", "[pow(2; 10), (2 | sqrt), (1 | atan), (100 | log10)]"], ""),
    ("dates", &["-n", r#""2015-03-05T23:51:47Z" | fromdate | ., todate"#], ""),
    ("arg", &["-n", "--arg", "name", "tote", r#""hello \($name)""#], ""),
    ("argjson", &["-nc", "--argjson", "v", r#"{"a":[1,2]}"#, "$v.a | map(. * 10)"], ""),
    ("slurp", &["--slurp", "add"], "1 2\n3\n"),
    ("raw output", &["-r", ".[]"], "[\"a\", \"b c\", \"d\\te\"]"),
    ("compact sorted", &["-cS", "."], r#"{"b":1,"a":{"d":[1,2],"c":null}}"#),
    ("tab indent", &["--tab", "."], r#"{"a":[1,{"b":2}]}"#),
    ("reduce paths", &["-c", "reduce paths as $p ([]; . + [$p])"], r#"{"a":{"b":[0]}}"#),
    ("file input", &[".items | map(.name)", DATA_FILE], ""),
    ("file with filename", &["-r", "input_filename, .store", DATA_FILE], ""),
    ("missing file", &[".", "data/absent.json"], ""),
    ("error exit", &["-n", r#"error("x")"#], ""),
    ("invalid input", &["."], "{\"a\": 1,\n  \"b\": }\n"),
    ("exit status false", &["-e", ".missing"], "{}"),
    ("exit status true", &["-e", ".a"], r#"{"a": true}"#),
    ("unknown option", &["--no-such-option"], ""),
];

struct Case {
    name: &'static str,
    args: Vec<&'static str>,
    stdin: Vec<u8>,
}

impl Case {
    /// The whole argv, as the container and the native run both get it.
    fn argv(&self) -> Vec<&'static str> {
        let mut argv = vec![IMAGE_JQ];
        argv.extend(&self.args);
        argv
    }

    fn run_natively(&self) -> Run {
        let mut jq = native_command(
            Path::new(HOST_JQ),
            &self.argv(),
            common::podman::CONTAINER_ENV,
            data_root(),
        );
        capture(&mut jq, &self.stdin)
    }
}

fn cases() -> Vec<Case> {
    let table = CASES.iter().map(|(name, args, stdin)| Case {
        name,
        args: args.to_vec(),
        stdin: stdin.as_bytes().to_vec(),
    });
    table.chain([large_input()]).collect()
}

/// About 400 KB through stdin, more than any pipe buffer.
fn large_input() -> Case {
    let numbers: Vec<String> = (0..60_000).map(|n| n.to_string()).collect();
    let stdin = format!("[{}]", numbers.join(",")).into_bytes();
    let args = vec!["add, length, (map(. % 7) | unique)"];
    Case {
        name: "large stdin",
        args,
        stdin,
    }
}

/// The dir holding the data file, written once.
fn data_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = common::work_dir().join("jq-data");
        common::write_file(&root.join(DATA_FILE), DATA);
        root
    })
}

fn packed_jq() -> PathBuf {
    common::tote::packed_as(Path::new(HOST_JQ), "jq")
}

/// An image holding only the packed jq and the data file.
fn jq_image(tag: &str) -> Image {
    let packed = packed_jq();
    let data = data_root().join(DATA_FILE);
    Image::build(tag, &[(&packed, IMAGE_JQ), (&data, DATA_FILE)])
}

/// Runs every case in `image` with `options` and natively; reports every mismatch at once.
fn compare_all(image: &Image, options: &[&str]) {
    let mut failures = Failures::new();
    for case in cases() {
        let packed = image.run(options, &case.argv(), &case.stdin);
        let label = format!("jq case {:?} {:?}", case.name, case.args);
        failures.compare(&label, &case.run_natively(), &packed);
    }
    failures.finish();
}

#[test]
fn packed_jq_matches_native_jq_as_root() {
    let image = jq_image("root");
    compare_all(&image, &[]);
}

#[test]
fn packed_jq_matches_native_jq_as_uid_1000_with_cache_on_tmpfs() {
    let image = jq_image("uid1000");
    let options = [
        "--user",
        "1000:1000",
        "--tmpfs",
        "/cache:rw,exec,mode=1777",
        "-e",
        "TOTE_CACHE_DIR=/cache/tote",
    ];
    compare_all(&image, &options);
}

/// Guards the comparison itself: the cases must exercise failures as well as successes,
/// so a launcher that lost exit statuses or stderr could not pass.
#[test]
fn jq_cases_cover_errors_and_exit_statuses() {
    let runs: Vec<Run> = cases().iter().map(Case::run_natively).collect();
    let statuses: Vec<Status> = runs.iter().map(|run| run.status).collect();
    for code in [0, 1, 2, 5] {
        let found = statuses.contains(&Status::Code(code));
        assert!(found, "no jq case exits with {code}: {statuses:?}");
    }
    let noisy = runs.iter().any(|run| !run.stderr.is_empty());
    assert!(noisy, "no jq case writes to stderr");
}
