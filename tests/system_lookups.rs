//! What programs ask the C library about the system, packed and run in scratch containers
//! whose only system files are the ones this test supplies: user and group names (NSS
//! `files`), host names, an nsswitch.conf naming a module the bundle lacks, and iconv
//! between UTF-8 and ISO-8859-1 (glibc's gconv modules, added by the packer by itself).

mod common;

use common::outcome::{capture, Failures, Status};
use common::podman::Image;
use std::path::Path;
use std::process::Command;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
tote:x:1000:1000:tote user:/home/tote:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\ntote:x:1000:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1 localhost\n10.1.2.3 totehost.example totehost\n";
/// `ldap` is not in any bundle: lookups must fall back on `files` without a crash.
const NSSWITCH: &str = "passwd: files ldap\ngroup: files ldap\nhosts: files dns\n";

struct Setup {
    _dir: tempfile::TempDir,
    image: Image,
}

/// One image (named after `label`, one per test) holding the packed id, getent and iconv and
/// the system files above.
fn setup(label: &str) -> Setup {
    let dir = common::temp_dir();
    let d = dir.path();
    let mut files: Vec<(std::path::PathBuf, String)> = Vec::new();
    for program in ["id", "getent", "iconv"] {
        let packed = d.join(program);
        common::tote::pack_ok(Path::new("/usr/bin").join(program), &packed);
        files.push((packed, format!("/{program}")));
    }
    for (name, text) in [
        ("passwd", PASSWD),
        ("group", GROUP),
        ("hosts", HOSTS),
        ("nsswitch.conf", NSSWITCH),
    ] {
        let path = d.join(name);
        common::write_file(&path, text);
        files.push((path, format!("/etc/{name}")));
    }
    let refs: Vec<(&Path, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_path(), t.as_str()))
        .collect();
    let image = Image::build(label, &refs);
    Setup { _dir: dir, image }
}

#[test]
fn names_and_hosts_resolve_as_root_and_as_uid_1000() {
    let s = setup("lookups");
    let mut failures = Failures::new();
    let cache = "--tmpfs=/cache:rw,exec,mode=1777";
    for (who, user, name) in [("root", "0:0", "root"), ("uid 1000", "1000:1000", "tote")] {
        let opts = [
            "--no-hosts",
            "--user",
            user,
            cache,
            "-e",
            "TOTE_CACHE_DIR=/cache/tote",
        ];
        let run = |cmd: &[&str]| s.image.run(&opts, cmd, b"");
        let id = run(&["/id", "-un"]);
        failures.check(
            &format!("{who}: id -un"),
            id.stdout_text() == format!("{name}\n") && id.success(),
            || id.describe(),
        );
        let groups = run(&["/id", "-gn"]);
        failures.check(
            &format!("{who}: id -gn"),
            groups.stdout_text() == format!("{name}\n"),
            || groups.describe(),
        );
        let host = run(&["/getent", "hosts", "totehost"]);
        failures.check(
            &format!("{who}: getent hosts"),
            host.stdout_text().split_whitespace().collect::<Vec<_>>()
                == ["10.1.2.3", "totehost.example", "totehost"],
            || host.describe(),
        );
        let user_entry = run(&["/getent", "passwd", "tote"]);
        failures.check(
            &format!("{who}: getent passwd"),
            user_entry.stdout_text() == "tote:x:1000:1000:tote user:/home/tote:/bin/sh\n",
            || user_entry.describe(),
        );
        let unknown = run(&["/getent", "passwd", "nosuchuser"]);
        failures.check(
            &format!("{who}: an unknown user is exit 2"),
            unknown.status == Status::Code(2),
            || unknown.describe(),
        );
    }
    failures.finish();
}

#[test]
fn iconv_converts_like_the_native_iconv() {
    let s = setup("iconv");
    let text = "Grüße, café, naïve — ½\n".as_bytes();
    let mut failures = Failures::new();
    for (from, to, input) in [
        ("UTF-8", "ISO-8859-1//TRANSLIT", text.to_vec()),
        ("ISO-8859-1", "UTF-8", b"caf\xe9\n".to_vec()),
    ] {
        let native = capture(
            Command::new("/usr/bin/iconv").args(["-f", from, "-t", to]),
            &input,
        );
        let packed = s.image.run(&[], &["/iconv", "-f", from, "-t", to], &input);
        failures.check(
            &format!("{from} to {to} natively"),
            native.success(),
            || native.describe(),
        );
        failures.compare(&format!("{from} to {to}"), &native, &packed);
    }
    failures.finish();
}
