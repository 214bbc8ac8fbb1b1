//! The image formats of `tote pack` (`--format dir|tar|oci`): which combinations of options
//! make sense, which tree each layout gives (the closure at its original paths, the bundle
//! under `--prefix`, or the single tote file alone), the files an image may add (`--passwd`,
//! `--ca-certs`), the variables the image must set, and writing the tree in its format.

use crate::bundle::Bundle;
use crate::closure::{Closure, Member};
use crate::mirror::{self, Mirror};
use crate::output;
use crate::plan::{normalize, relative_link, Plan};
use crate::tree::{Epoch, Node, Tree};
use crate::UsageError;
use anyhow::{Context, Result};
use log::{info, warn};
use std::path::{Path, PathBuf};

/// What `tote pack` writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Format {
    /// One self-extracting executable file.
    File,
    /// A root file system tree, as a new dir.
    Dir,
    /// The same tree as a tar archive.
    Tar,
    /// An OCI image archive, for `podman load` or `docker load`.
    Oci,
}

/// What an OCI image holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum OciLayout {
    /// The closure as a file tree (at original paths, or under --prefix).
    Tree,
    /// Only the single tote file, at /NAME.
    File,
}

/// The host's bundle of CA certificates, and where it goes in the image.
pub const CA_CERTS: &str = "/etc/ssl/certs/ca-certificates.crt";

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
";
const GROUP: &str = "root:x:0:
nobody:x:65534:
";

/// The image options of one `tote pack`, checked.
pub struct Request {
    pub format: Format,
    pub layout: OciLayout,
    pub prefix: Option<PathBuf>,
    /// `NAME:TAG`.
    pub reference: Option<String>,
    pub user: Option<String>,
    pub passwd: bool,
    pub ca_certs: bool,
    /// The names of the variables given with `--env`.
    pub user_vars: Vec<String>,
}

/// The image options as given on the command line.
pub struct Given<'a> {
    pub format: Format,
    pub layout: Option<OciLayout>,
    pub prefix: Option<&'a Path>,
    pub tag: Option<&'a str>,
    pub user: Option<&'a str>,
    pub passwd: bool,
    pub ca_certs: bool,
    pub env: &'a [(String, String)],
}

impl Request {
    /// Checks the combination of options; a bad one is a usage error.
    pub fn check(g: &Given) -> Result<Request> {
        let oci_only = [
            ("--tag", g.tag.is_some()),
            ("--user", g.user.is_some()),
            ("--oci-layout", g.layout.is_some()),
        ];
        for (flag, given) in oci_only {
            if given && g.format != Format::Oci {
                return usage(format!("{flag} needs --format oci"));
            }
        }
        let images_only = [
            ("--prefix", g.prefix.is_some()),
            ("--passwd", g.passwd),
            ("--ca-certs", g.ca_certs),
        ];
        for (flag, given) in images_only {
            if given && g.format == Format::File {
                return usage(format!(
                    "{flag} needs --format dir, tar or oci: it shapes an image's files"
                ));
            }
        }
        let layout = g.layout.unwrap_or(OciLayout::Tree);
        if layout == OciLayout::File && g.prefix.is_some() {
            return usage("--prefix and --oci-layout file do not go together: that image holds only the tote file, at /NAME".into());
        }
        Ok(Request {
            format: g.format,
            layout,
            prefix: g.prefix.map(check_prefix).transpose()?,
            reference: g.tag.map(check_tag).transpose()?,
            user: g.user.map(check_user).transpose()?,
            passwd: g.passwd,
            ca_certs: g.ca_certs,
            user_vars: g.env.iter().map(|(n, _)| n.clone()).collect(),
        })
    }
}

fn usage<T>(text: String) -> Result<T> {
    Err(UsageError(text).into())
}

fn check_prefix(prefix: &Path) -> Result<PathBuf> {
    let text = prefix.display();
    if !prefix.is_absolute() {
        return usage(format!(
            "--prefix {text}: not an absolute path; write /{text}"
        ));
    }
    let plain = normalize(prefix);
    let Some(given) = prefix.to_str().map(|s| s.trim_end_matches('/')) else {
        return usage(format!("--prefix {text}: not UTF-8"));
    };
    if plain.as_os_str().len() < 2 {
        return usage(format!(
            "--prefix {text}: name a dir below /, such as /opt/NAME"
        ));
    }
    if plain.as_os_str() != given {
        return usage(format!(
            "--prefix {text}: write it without . or .. ({})",
            plain.display()
        ));
    }
    Ok(plain)
}

/// The longest image name (registry host and path) the engines accept.
const NAME_MAX: usize = 255;

/// The highest uid or gid container engines accept.
const ID_MAX: u64 = 2_147_483_647;

/// `NAME[:TAG]` by the grammar of image references (the `reference` package of
/// distribution, which podman and docker use): an optional registry host with a port, then
/// path components separated by `/`, then an optional tag; the tag is `latest` when none is
/// given.
fn check_tag(tag: &str) -> Result<String> {
    let (name, version) = match tag.rsplit_once(':') {
        Some((n, v)) if !v.contains('/') => (n, v),
        _ => (tag, "latest"),
    };
    if !is_image_name(name) {
        return usage(format!(
            "--tag {tag}: not an image name: write NAME[:TAG], NAME of lowercase letters and \
             digits joined by one . or _, two _, or dashes, in parts separated by /"
        ));
    }
    if !is_image_tag(version) {
        return usage(format!(
            "--tag {tag}: not an image tag: write up to 128 letters, digits, _ . and -, not \
             starting with . or -"
        ));
    }
    Ok(format!("{name}:{version}"))
}

/// A name as the engines split it: the first part is a registry host when it has a `.` or
/// a `:` (a port), is `localhost` or has an uppercase letter; the rest is the path.
fn is_image_name(name: &str) -> bool {
    let (host, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    };
    name.len() <= NAME_MAX
        && host.is_none_or(is_registry_host)
        && path.split('/').all(is_path_component)
}

/// `host[:port]`, the host dot-separated labels of letters, digits and inner dashes.
fn is_registry_host(text: &str) -> bool {
    let (host, port) = match text.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    let label = |l: &str| {
        let inner = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
        l.bytes().all(inner) && !l.starts_with('-') && !l.ends_with('-') && !l.is_empty()
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && host.split('.').all(label)
}

/// Runs of lowercase letters and digits, each two joined by exactly one separator: `.`,
/// `_`, `__`, or any number of `-`.
fn is_path_component(part: &str) -> bool {
    let b = part.as_bytes();
    let word = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && word(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let separator = i;
        while i < b.len() && !word(b[i]) {
            i += 1;
        }
        let ok = match &b[separator..i] {
            b"." | b"_" | b"__" => true,
            dashes => dashes.iter().all(|&x| x == b'-'),
        };
        if !ok {
            return false;
        }
    }
}

/// A tag: a letter, digit or `_`, then up to 127 of those, `.` and `-`.
fn is_image_tag(tag: &str) -> bool {
    let w = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    (1..=128).contains(&tag.len())
        && tag.bytes().next().is_some_and(w)
        && tag.bytes().all(|b| w(b) || b == b'.' || b == b'-')
}

/// `UID[:GID]`, in numbers from 0 to `ID_MAX`.
fn check_user(user: &str) -> Result<String> {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ids: Vec<&str> = match user.split_once(':') {
        Some((u, g)) => vec![u, g],
        None => vec![user],
    };
    if !ids.iter().all(|id| number(id)) {
        return usage(format!("--user {user}: write UID or UID:GID, in numbers"));
    }
    for id in ids {
        if id.parse::<u64>().map_or(true, |n| n > ID_MAX) {
            return usage(format!(
                "--user {user}: {id} is out of range: uids and gids go from 0 to {ID_MAX}"
            ));
        }
    }
    Ok(user.to_string())
}

/// The image tree and what runs in it.
struct Laid {
    tree: Tree,
    entrypoint: String,
    /// `NAME=VALUE` the image must set.
    env: Vec<String>,
}

/// Writes the image `req` asks for to `output`.
pub fn write(
    req: &Request,
    plan: &Plan,
    objects: &[Member],
    closure: &Closure,
    (level, streams): (u32, usize),
    epoch: Epoch,
    output: &Path,
) -> Result<()> {
    let mut laid = match (&req.prefix, req.layout) {
        (_, OciLayout::File) if req.format == Format::Oci => {
            single_file(&Bundle::new(plan, objects, closure)?, plan, level, streams)?
        }
        (Some(prefix), _) => prefixed(&Bundle::new(plan, objects, closure)?, prefix)?,
        (None, _) => original(req, plan, objects, closure)?,
    };
    add_extras(req, &mut laid)?;
    let (files, bytes) = laid.tree.totals();
    info!(
        "image: {files} files, {bytes} bytes, entrypoint {}",
        laid.entrypoint
    );
    match req.format {
        Format::Dir => {
            warn_env(&laid.env, output);
            output::write_dir(output, |d| laid.tree.write_dir(d, epoch))
        }
        Format::Tar => {
            warn_env(&laid.env, output);
            // Under a prefix the tar is for adding to another image (`ADD jq.tar /`): the
            // dirs above the prefix are that image's, with their own modes (`/tmp` 1777).
            let tar = laid
                .tree
                .write_tar(Vec::new(), epoch, req.prefix.as_deref())?;
            output::write_file(output, &[&tar], 0o666 & !output::umask())
        }
        // `main` writes a tote file itself; only the OCI archive is left.
        Format::Oci | Format::File => {
            let settings = crate::oci::Settings {
                entrypoint: vec![laid.entrypoint],
                env: laid.env,
                user: req.user.clone(),
                reference: req.reference.clone(),
                epoch,
                created_by: format!("tote pack {}", env!("CARGO_PKG_VERSION")),
            };
            let archive = crate::oci::archive(&laid.tree, &settings)?;
            output::write_file(output, &[&archive], 0o666 & !output::umask())
        }
    }
}

/// A dir or tar has no place for variables: the image made from it must set them.
fn warn_env(env: &[String], output: &Path) {
    if !env.is_empty() {
        warn!(
            "{}: the image made from it must set {} (a dir or tar cannot hold variables)",
            output.display(),
            env.join(" ")
        );
    }
}

/// The closure at its original paths. The variables of built-in knowledge point compiled-in
/// paths into a bundle; here the compiled-in paths are right, so only `--env` is kept, its
/// `${TOTE_ROOT}` the root `/`.
fn original(req: &Request, plan: &Plan, objects: &[Member], closure: &Closure) -> Result<Laid> {
    let tree = mirror::original(plan, objects, closure)?;
    let mut env = Vec::new();
    for (name, value) in &plan.vars {
        if req.user_vars.contains(name) {
            env.push(format!("{name}={}", value.replace("${TOTE_ROOT}", "")));
        } else {
            info!("{name}: not set, the compiled-in path is right at original paths");
        }
    }
    let entrypoint = plan.programs[0].path.to_string_lossy().into_owned();
    Ok(Laid {
        tree,
        entrypoint,
        env,
    })
}

/// The bundle under `prefix`, its executables pointing into it, and `bin/NAME` for each
/// program.
fn prefixed(bundle: &Bundle, prefix: &Path) -> Result<Laid> {
    let mut tree = bundle.tree_at(prefix)?;
    let mut entrypoint = None;
    for (name, path) in bundle.programs() {
        let link = prefix.join("bin").join(name);
        let target = relative_link(&link, &prefix.join(path));
        tree.add(&link, Node::Symlink(target))?;
        entrypoint.get_or_insert(link);
    }
    let text = prefix.to_str().context("prefix is UTF-8")?;
    let env = bundle
        .vars_at(text)
        .into_iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let entrypoint = entrypoint
        .context("a program")?
        .to_string_lossy()
        .into_owned();
    Ok(Laid {
        tree,
        entrypoint,
        env,
    })
}

/// The tote file alone at `/NAME` (NAME the first program's), with a link for each other
/// program. Variables naming the bundle root are the launcher's; the others go in the image
/// config too, where `podman inspect` shows them.
fn single_file(bundle: &Bundle, plan: &Plan, level: u32, streams: usize) -> Result<Laid> {
    let bytes = bundle.file_bytes(level, streams)?;
    let names: Vec<&str> = bundle.programs().map(|(n, _)| n).collect();
    let file = Path::new("/").join(names[0]);
    let mut tree = Tree::new();
    tree.add(&file, Node::made(0o755, bytes))?;
    for name in &names[1..] {
        tree.add(
            &Path::new("/").join(name),
            Node::Symlink(names[0].to_string()),
        )?;
    }
    let env = plan
        .vars
        .iter()
        .filter(|(_, v)| !v.contains("${TOTE_ROOT}"))
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let entrypoint = file.to_string_lossy().into_owned();
    Ok(Laid {
        tree,
        entrypoint,
        env,
    })
}

/// `/etc/passwd` and `/etc/group` with root and nobody; the host's CA certificates, with
/// `SSL_CERT_FILE` naming them unless `--env` set it.
fn add_extras(req: &Request, laid: &mut Laid) -> Result<()> {
    let mut m = Mirror::on(std::mem::take(&mut laid.tree));
    if req.passwd {
        m.new_file(Path::new("/etc/passwd"), 0o644, PASSWD.into())?;
        m.new_file(Path::new("/etc/group"), 0o644, GROUP.into())?;
    }
    if req.ca_certs {
        let certs = Path::new(CA_CERTS);
        if !certs.is_file() {
            anyhow::bail!("{CA_CERTS}: no such file for --ca-certs; install ca-certificates first");
        }
        m.file(certs, certs, None)?;
        if !laid.env.iter().any(|v| v.starts_with("SSL_CERT_FILE=")) {
            laid.env.push(format!("SSL_CERT_FILE={CA_CERTS}"));
        }
    }
    laid.tree = m.tree;
    Ok(())
}

/// The latest time a tar header holds in its 11 octal digits (the year 2242).
const LATEST: u64 = 0o77777777777;

/// `SOURCE_DATE_EPOCH` when set, the latest time of every entry and the time of the image;
/// else (unset or empty) the image is from 1970 and host files keep their times. A set value
/// is digits only, surrounding whitespace aside; anything else is an error for every format.
pub fn source_date_epoch() -> Result<Epoch> {
    let unset = Epoch {
        time: 0,
        clamp: false,
    };
    let text = match std::env::var("SOURCE_DATE_EPOCH") {
        Err(std::env::VarError::NotPresent) => return Ok(unset),
        Err(std::env::VarError::NotUnicode(raw)) => anyhow::bail!(
            "SOURCE_DATE_EPOCH={}: not a whole number of seconds from 1970 to {LATEST}",
            raw.to_string_lossy()
        ),
        Ok(text) => text,
    };
    let digits = text.trim();
    if digits.is_empty() {
        return Ok(unset);
    }
    let time = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<u64>().ok())
        .flatten()
        .filter(|&t| t <= LATEST);
    match time {
        Some(time) => Ok(Epoch { time, clamp: true }),
        None => anyhow::bail!(
            "SOURCE_DATE_EPOCH={text}: not a whole number of seconds from 1970 to {LATEST}: \
             write digits only, or leave it empty or unset"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_image_name_grammar() {
        assert_eq!(check_tag("jq").unwrap(), "jq:latest");
        assert_eq!(check_tag("jq:1.6").unwrap(), "jq:1.6");
        assert_eq!(
            check_tag("localhost:5000/me/jq:v1").unwrap(),
            "localhost:5000/me/jq:v1"
        );
        assert_eq!(
            check_tag("reg.example/jq").unwrap(),
            "reg.example/jq:latest"
        );
        for good in [
            "a--b",
            "a__b",
            "a.b_c-d",
            "me/jq_2:V1.0-rc_1",
            "Reg.Example:443/jq",
            "localhost/jq",
            "jq:_x",
            "Foo/bar",
        ] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in [
            "Jq:1",
            "jq:",
            "jq:-x",
            "/jq",
            "jq/",
            "j q",
            "jq:1:2",
            "a..b",
            "a___b",
            "a._b",
            "a-_b",
            "-a",
            "a-",
            "a//b",
            "reg-.example/jq",
            "reg.example:/jq",
            "jq@x",
        ] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
        let long = format!("{}:1", "a".repeat(NAME_MAX + 1));
        assert!(check_tag(&long).is_err());
        assert!(check_tag(&format!("jq:{}", "1".repeat(129))).is_err());
    }

    #[test]
    fn prefixes_and_users_are_checked() {
        assert_eq!(
            check_prefix(Path::new("/opt/jq")).unwrap(),
            Path::new("/opt/jq")
        );
        for bad in ["opt/jq", "/", "/opt/../jq", "/opt/./jq"] {
            assert!(check_prefix(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(check_user("1000:1000").is_ok() && check_user("65534").is_ok());
        assert!(check_user("2147483647:0").is_ok());
        for bad in [
            "",
            "root",
            "1000:",
            ":1",
            "1:2:3",
            "2147483648",
            "0:2147483648",
            "99999999999999999999999",
        ] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
    }
}
