//! `tote`: packs a dynamically linked Linux program and its whole library closure into one
//! self-contained executable file. This file owns the command line, logging and the error
//! format (`tote: ...`, one line, exit 1).

mod bundle;
mod closure;
mod elf;
// The reading half of the format is the launcher's; the packer reads only in its tests.
#[allow(dead_code)]
#[path = "../launcher/src/payload.rs"]
mod payload;
mod rewrite;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "tote",
    version,
    about = "Pack a Linux program and its libraries into one file that runs anywhere"
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
    /// Pack PROGRAM (a path, or a name looked up on PATH) into one executable file.
    #[command(after_help = "Example:\n  tote pack /usr/bin/jq -o jq && ./jq -n '1 + 1'")]
    Pack {
        program: PathBuf,
        /// The file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write the bare launcher stub (for inspection).
    #[command(hide = true)]
    Stub {
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Err(e) = run(cli.command) {
        eprintln!("tote: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            use std::io::Write;
            writeln!(buf, "tote: {}", record.args())
        })
        .init();
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Pack { program, output } => pack(&program, &output),
        Command::Stub { output } => {
            std::fs::write(&output, bundle::STUB).with_context(|| format!("{}", output.display()))
        }
    }
}

fn pack(program: &Path, output: &Path) -> Result<()> {
    let path = locate(program)?;
    let name = program
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", program.display()))?;
    if output.is_dir() {
        bail!(
            "{}: is a directory; -o names the file to write",
            output.display()
        );
    }
    let closure = closure::resolve(&path)?;
    let bundle = bundle::Bundle::from_closure(&closure, name)?;
    bundle.write(output)
}

/// The canonical path of the program: as given when it contains a `/`, else the first match
/// on PATH.
fn locate(program: &Path) -> Result<PathBuf> {
    let found = if program.to_string_lossy().contains('/') {
        program.to_path_buf()
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .with_context(|| format!("{}: not found on PATH", program.display()))?
    };
    if found.is_dir() {
        bail!("{}: is a directory, not a program", found.display());
    }
    std::fs::canonicalize(&found).with_context(|| format!("{}", found.display()))
}
