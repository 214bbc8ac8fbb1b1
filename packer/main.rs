//! `tote`: packs a dynamically linked Linux program and its whole library closure into one
//! self-contained executable file, or into an image (a root file system tree, a tar, an OCI
//! archive). This file owns the command line, logging, the error format (`tote: ...`, one
//! line; exit 1, or 2 for a usage error) and the order of the packing steps.

mod bundle;
mod closure;
mod detect;
mod elf;
mod image;
mod inspect;
mod mirror;
mod oci;
mod output;
// The reading half of the format is the launcher's; the packer reads only in its tests.
#[cfg(test)]
mod lzma_fuzz;
#[cfg(test)]
mod lzma_roundtrip;
#[allow(dead_code)]
#[path = "../launcher/src/payload.rs"]
mod payload;
#[cfg(test)]
mod payload_fuzz;
mod plan;
mod progress;
mod recipes;
mod rewrite;
mod trace;
mod tree;
mod unpack;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use closure::{Member, Root};
use image::{Format, OciLayout};
use plan::Plan;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "tote",
    version,
    about = "Pack a Linux program and its libraries into one file that runs anywhere, or into \
             a container image",
    after_help = "Exit status: 0 done, 1 error (one `tote: ...` line on stderr), 2 usage error."
)]
struct Cli {
    /// Say more: -v the decisions (why each library path), -vv every file.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack PROGRAM (a path, or a name looked up on PATH) into one executable file, or an
    /// image (--format).
    #[command(after_help = PACK_EXAMPLES)]
    Pack(PackArgs),
    /// Show what a tote file holds: launcher, programs, variables, every entry, totals, and
    /// where its bundle is or would go on this host.
    Inspect {
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a tote file's checksums and tables without running or extracting it.
    Verify { file: PathBuf },
    /// Write the bundle of a tote file into DIR (a new dir), its paths patched for DIR, so
    /// its programs run from there.
    Extract { file: PathBuf, dir: PathBuf },
    /// Write the bare launcher stub (for inspection).
    #[command(hide = true)]
    Stub {
        #[arg(short, long)]
        output: PathBuf,
    },
}

const PACK_EXAMPLES: &str = "Examples:
  tote pack jq -o jq                      one program
  tote pack git python3 -o tools          two programs; a link named git runs git
  tote pack app --add /usr/share/app -o app --env APP_DATA='${TOTE_ROOT}/usr/share/app'
  tote pack prog --lib libplugin.so.1 -o prog    a library the program opens with dlopen
  tote pack convert --detect-depends --detect -o convert
  tote pack prog --trace -o prog -- --some-option input.txt

Images (no daemon needed):
  tote pack jq --format oci --tag jq:1 -o jq.tar && podman load -i jq.tar && podman run --rm jq:1 -n 1
  tote pack jq --format oci --oci-layout file -o jq.tar    the image holds only the tote file, /jq
  tote pack jq --format oci --prefix /opt/jq -o jq.tar     under /opt/jq, entrypoint /opt/jq/bin/jq
  tote pack curl --format oci --ca-certs --passwd --user 65534 -o curl.tar
  tote pack jq --format dir -o rootfs && podman run --rm --rootfs $PWD/rootfs /usr/bin/jq -n 1
  tote pack jq --format tar --prefix /opt/jq -o jq-opt.tar    to add to another image";

#[derive(clap::Args)]
struct PackArgs {
    /// The programs to pack; with several, the file runs the one named like the link it is
    /// invoked through (a link named `git` runs git).
    #[arg(required = true)]
    programs: Vec<PathBuf>,
    /// The file to write (for --format dir, the new dir).
    #[arg(short, long)]
    output: PathBuf,
    /// What to write: one self-extracting file, or the closure as a root file system: a dir,
    /// a tar, or an OCI image archive. Images hold the files at their original paths,
    /// untouched, unless --prefix.
    #[arg(long, value_enum, default_value_t = Format::File, help_heading = "Images")]
    format: Format,
    /// Put everything under DIR (absolute) instead, its programs rewritten to load from there,
    /// with links DIR/bin/NAME: for adding a program to an image that has other files.
    #[arg(long, value_name = "DIR", help_heading = "Images")]
    prefix: Option<PathBuf>,
    /// With --format oci: the file tree (default), or only the single tote file at /NAME.
    #[arg(long, value_enum, help_heading = "Images")]
    oci_layout: Option<OciLayout>,
    /// With --format oci: the image name `podman load` and `docker load` give it.
    #[arg(long, value_name = "NAME[:TAG]", help_heading = "Images")]
    tag: Option<String>,
    /// With --format oci: the user the program runs as.
    #[arg(long, value_name = "UID[:GID]", help_heading = "Images")]
    user: Option<String>,
    /// Add /etc/passwd and /etc/group with root and nobody.
    #[arg(long, help_heading = "Images")]
    passwd: bool,
    /// Add the host's CA certificates at /etc/ssl/certs/ca-certificates.crt, and set
    /// SSL_CERT_FILE to it in an OCI image.
    #[arg(long, help_heading = "Images")]
    ca_certs: bool,
    /// Add a file or a whole dir at DEST in the bundle (default: the same absolute path), with
    /// the libraries every ELF file in it needs. The program finds it under the bundle root,
    /// `${TOTE_ROOT}/DEST`.
    #[arg(long, value_name = "PATH[:DEST]")]
    add: Vec<String>,
    /// Add a library (soname or path) and what it needs: for libraries opened with dlopen.
    #[arg(long, value_name = "NAME")]
    lib: Vec<String>,
    /// Set a variable for the program at run time, unless it is set already. `${TOTE_ROOT}`
    /// in VALUE is the bundle's root dir on the host where it runs; in an image config's Env,
    /// `/` or the prefix.
    #[arg(long, value_name = "NAME=VALUE", value_parser = plan::parse_var_spec)]
    env: Vec<(String, String)>,
    /// Leave out the built-in knowledge of what common programs load at run time.
    #[arg(long)]
    no_builtin: bool,
    /// Add the other files of the first program's Debian package (not docs or man pages).
    #[arg(long)]
    detect: bool,
    /// With --detect, also the files of the packages it depends on, minus the base system.
    #[arg(long, requires = "detect")]
    detect_depends: bool,
    /// Run the first program once with ARGS (after `--`) and add every file it opened, with
    /// what those files need.
    #[arg(long)]
    trace: bool,
    /// The arguments for --trace.
    #[arg(last = true, value_name = "ARGS", requires = "trace")]
    trace_args: Vec<OsString>,
    /// xz compression level, 0 (fast) to 9 (smallest).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(0..=9))]
    level: u32,
    /// Compress in up to N independent streams (at least 4 MiB each), which the first start
    /// decodes at the same time on N cores. Each split costs size: 2% for jq's closure, 14% at
    /// 4 streams for python3's (its standard library repeats itself across files).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    streams: u16,
}

/// A command line that asks for something that cannot be done: exit status 2, as clap's own
/// usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Err(e) = run(cli.command) {
        eprintln!("tote: {e:#}");
        let usage = e.downcast_ref::<UsageError>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    progress::allow(verbose == 0);
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            use std::io::Write;
            let warning = match record.level() {
                log::Level::Warn => "warning: ",
                _ => "",
            };
            writeln!(buf, "tote: {warning}{}", record.args())
        })
        .init();
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Pack(args) => pack(&args),
        Command::Inspect { file, json } => {
            let report = inspect::report(&file)?;
            print_out(&if json { report.json()? } else { report.text()? })
        }
        Command::Verify { file } => print_out(&(unpack::verify(&file)? + "\n")),
        Command::Extract { file, dir } => unpack::extract(&file, &dir),
        Command::Stub { output } => {
            std::fs::write(&output, bundle::STUB).with_context(|| format!("{}", output.display()))
        }
    }
}

/// Writes `text` to stdout; a reader that went away early (`tote inspect FILE | head`) is
/// not an error.
fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// How long `--trace` lets the program run.
const TRACE_TIMEOUT: Duration = Duration::from_secs(60);

fn pack(args: &PackArgs) -> Result<()> {
    check_env_once(&args.env)?;
    // Read for every format, so that a malformed value is never ignored; a tote file keeps
    // its files' own times and has no other.
    let epoch = image::source_date_epoch()?;
    let request = image::Request::check(&image::Given {
        format: args.format,
        layout: args.oci_layout,
        prefix: args.prefix.as_deref(),
        tag: args.tag.as_deref(),
        user: args.user.as_deref(),
        passwd: args.passwd,
        ca_certs: args.ca_certs,
        env: &args.env,
    })?;
    let kind = match args.format {
        Format::Dir => output::Kind::Dir,
        _ => output::Kind::File,
    };
    output::check(&args.output, kind)?;
    let mut plan = plan_from(args)?;
    let (objects, closure) = resolve_all(&mut plan, !args.no_builtin)?;
    check_clashes(&plan, &closure)?;
    let compression = (args.level, args.streams as usize);
    if args.format == Format::File {
        let bundle = bundle::Bundle::new(&plan, &objects, &closure)?;
        return bundle.write(&args.output, compression.0, compression.1);
    }
    image::write(
        &request,
        &plan,
        &objects,
        &closure,
        compression,
        epoch,
        &args.output,
    )
}

/// Each `--env` variable at most once: which of two values was meant is not for tote to guess.
fn check_env_once(env: &[(String, String)]) -> Result<()> {
    for (i, (name, value)) in env.iter().enumerate() {
        if let Some((_, again)) = env[..i].iter().find(|(n, _)| n == name) {
            return Err(UsageError(format!(
                "--env {name}: given twice ({name}={again}, {name}={value}); give it once"
            ))
            .into());
        }
    }
    Ok(())
}

/// The plan the command line asks for: programs, variables, added files and libraries, and
/// what detection and tracing find.
fn plan_from(args: &PackArgs) -> Result<Plan> {
    let mut plan = Plan::new();
    for program in &args.programs {
        let path = locate(program)?;
        elf::check_program(&path, &elf::read(&path)?)?;
        if unpack::is_tote_file(&path) {
            bail!(
                "{}: a tote file already; pack the program it was packed from instead (`tote \
                 inspect {}` names it)",
                path.display(),
                program.display()
            );
        }
        plan.add_program(&program_name(program)?, &path)?;
    }
    for (name, value) in &args.env {
        plan.add_var(name, value);
    }
    for spec in &args.add {
        plan.add_spec(spec)?;
    }
    plan.libs.extend(args.lib.iter().cloned());
    let first = plan.programs[0].path.clone();
    if args.detect {
        for file in detect::package_files(&first, args.detect_depends)? {
            plan.add_path(&file, &file)?;
        }
    }
    if args.trace {
        for file in trace::opened_files(&first, &args.trace_args, TRACE_TIMEOUT)? {
            plan.add_path(&file, &file)?;
        }
    }
    Ok(plan)
}

/// Resolves the plan's closure, with the built-in recipes when `builtin`. What a recipe adds
/// can bring libraries another recipe knows (a plugin dir needing fontconfig), so they are
/// applied until the plan stops growing.
fn resolve_all(plan: &mut Plan, builtin: bool) -> Result<(Vec<Member>, closure::Closure)> {
    let mut resolved = resolve(plan)?;
    if !builtin {
        return Ok(resolved);
    }
    let size = |p: &Plan| (p.files.len(), p.links.len(), p.vars.len(), p.libs.len());
    loop {
        let before = size(plan);
        let programs = plan.programs.len();
        recipes::apply(plan, &resolved.0[..programs], &resolved.1)?;
        if size(plan) == before {
            return Ok(resolved);
        }
        resolved = resolve(plan)?;
    }
}

/// Refuses an added file whose dest is where the closure has its loader or a library: one
/// of the two would be lost. The same file at its own path (`--add` of a library it needs
/// anyway) is no clash.
fn check_clashes(plan: &Plan, closure: &closure::Closure) -> Result<()> {
    let same = |a: &Path, b: &Path| matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y);
    let members = closure.interpreters.iter().chain(&closure.libraries);
    for member in members {
        let clash = plan
            .files
            .iter()
            .find(|f| f.dest == member.dest && !same(&f.source, &member.object.source));
        if let Some(added) = clash {
            bail!(
                "{}: cannot go at {} in the bundle: the closure has {} there; give it another \
                 DEST",
                added.source.display(),
                added.dest.display(),
                member.object.source.display()
            );
        }
    }
    Ok(())
}

/// Reads the ELF objects of the plan (programs first) and resolves what they need.
fn resolve(plan: &Plan) -> Result<(Vec<Member>, closure::Closure)> {
    let mut objects = Vec::new();
    for p in &plan.programs {
        objects.push(Member {
            dest: p.path.clone(),
            object: elf::read(&p.path)?,
        });
    }
    let programs = objects.len();
    for added in &plan.files {
        if elf::is_packable(&added.source) {
            let object = elf::read(&added.source)?;
            if object.dynamic {
                objects.push(Member {
                    dest: added.dest.clone(),
                    object,
                });
            }
        }
    }
    let roots: Vec<Root> = objects
        .iter()
        .enumerate()
        .map(|(i, m)| Root {
            member: m,
            required: i < programs,
        })
        .collect();
    let closure = closure::resolve(&roots, &plan.libs)?;
    Ok((objects, closure))
}

fn program_name(program: &Path) -> Result<String> {
    program
        .file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .with_context(|| format!("{}: not a file name", program.display()))
}

/// The canonical path of the program: as given when it contains a `/`, else the first match
/// on PATH.
fn locate(program: &Path) -> Result<PathBuf> {
    let found = if program.to_string_lossy().contains('/') {
        program.to_path_buf()
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let on_path = std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file());
        match on_path {
            Some(p) => p,
            None if program.exists() => bail!(
                "{}: not found on PATH (for the one in this dir, write ./{})",
                program.display(),
                program.display()
            ),
            None => bail!("{}: not found on PATH", program.display()),
        }
    };
    if found.is_dir() {
        bail!("{}: is a directory, not a program", found.display());
    }
    std::fs::canonicalize(&found).map_err(|e| elf::io_error(&found, &e))
}
