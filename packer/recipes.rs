//! Built-in knowledge: what common programs and libraries load at run time that their ELF
//! headers do not name, and the variables that make them find it inside the bundle. Each
//! recipe looks at the plan and the closure, adds files, and sets variables (only when the
//! user has not set them, never an `LD_*` one). Each says what it did at `-v`.

use crate::closure::{Closure, Member};
use crate::plan::Plan;
use anyhow::Result;
use log::info;
use std::path::Path;

const ROOT: &str = "${TOTE_ROOT}";
const MULTIARCH: &str = "/usr/lib/x86_64-linux-gnu";

/// Applies every recipe that fits; `programs` are the plan's programs, read.
pub fn apply(plan: &mut Plan, programs: &[Member], closure: &Closure) -> Result<()> {
    gconv(plan, programs, closure)?;
    old_glibc_nss(plan, closure);
    openssl(plan, closure)?;
    magic(plan, closure)?;
    terminfo(plan, closure)?;
    tcl(plan, closure)?;
    imagemagick(plan, closure)?;
    graphviz(plan, closure)?;
    fontconfig(plan, closure)?;
    let programs: Vec<(String, std::path::PathBuf)> = plan
        .programs
        .iter()
        .map(|p| (p.name.clone(), p.path.clone()))
        .collect();
    for (name, path) in programs {
        let real = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if real.starts_with("python3") || name.starts_with("python3") {
            python(plan, &real)?;
        } else if real.starts_with("perl") {
            perl(plan, &path)?;
        } else if real.starts_with("ruby") {
            ruby(plan, &path)?;
        } else if real == "git" {
            git(plan, &path)?;
        }
    }
    Ok(())
}

/// Adds `path` at the same place in the bundle, when it exists on this host.
fn add_if_present(plan: &mut Plan, path: &str, why: &str) -> Result<bool> {
    let p = Path::new(path);
    if !p.exists() {
        return Ok(false);
    }
    info!("{why}: adding {path}");
    plan.add_path(p, p)?;
    Ok(true)
}

fn set(plan: &mut Plan, name: &str, value: &str, why: &str) {
    info!("{why}: {name}={value} (unless set at run time)");
    plan.add_var(name, value);
}

/// glibc's iconv loads its converters from the gconv dir, compiled in as an absolute path.
fn gconv(plan: &mut Plan, programs: &[Member], closure: &Closure) -> Result<()> {
    let uses = closure
        .libraries
        .iter()
        .chain(programs)
        .any(|m| m.object.uses_iconv);
    let dir = format!("{MULTIARCH}/gconv");
    if uses
        && closure.library("libc.so.6").is_some()
        && add_if_present(plan, &dir, "iconv (gconv modules)")?
    {
        set(plan, "GCONV_PATH", &format!("{ROOT}{dir}"), "iconv");
    }
    Ok(())
}

/// Before glibc 2.34 the `files` and `dns` NSS modules were separate libraries, loaded with
/// dlopen for every user, group and host lookup.
fn old_glibc_nss(plan: &mut Plan, closure: &Closure) {
    let Some(libc) = closure.library("libc.so.6") else {
        return;
    };
    let has_2_34 = libc.object.bytes.windows(11).any(|w| w == b"GLIBC_2.34\0");
    if !has_2_34 {
        info!("glibc older than 2.34: adding the NSS files and dns modules");
        for lib in ["libnss_files.so.2", "libnss_dns.so.2"] {
            if !plan.libs.iter().any(|l| l == lib) {
                plan.libs.push(lib.to_string());
            }
        }
    }
}

/// OpenSSL reads its config and loads providers from compiled-in paths.
fn openssl(plan: &mut Plan, closure: &Closure) -> Result<()> {
    if closure.library("libcrypto.so.3").is_none() {
        return Ok(());
    }
    if add_if_present(plan, "/usr/lib/ssl/openssl.cnf", "OpenSSL config")? {
        set(
            plan,
            "OPENSSL_CONF",
            &format!("{ROOT}/usr/lib/ssl/openssl.cnf"),
            "OpenSSL",
        );
    }
    let modules = format!("{MULTIARCH}/ossl-modules");
    if add_if_present(plan, &modules, "OpenSSL providers")? {
        set(
            plan,
            "OPENSSL_MODULES",
            &format!("{ROOT}{modules}"),
            "OpenSSL",
        );
    }
    Ok(())
}

/// libmagic's compiled database.
fn magic(plan: &mut Plan, closure: &Closure) -> Result<()> {
    if closure.library("libmagic.so.1").is_some()
        && add_if_present(plan, "/usr/lib/file/magic.mgc", "libmagic database")?
    {
        set(
            plan,
            "MAGIC",
            &format!("{ROOT}/usr/lib/file/magic.mgc"),
            "libmagic",
        );
    }
    Ok(())
}

/// ncurses' terminal descriptions (the base set Debian keeps in /lib/terminfo).
fn terminfo(plan: &mut Plan, closure: &Closure) -> Result<()> {
    let uses = ["libtinfo.so.6", "libncursesw.so.6", "libncurses.so.6"]
        .iter()
        .any(|l| closure.library(l).is_some());
    if uses && add_if_present(plan, "/lib/terminfo", "terminfo")? {
        set(
            plan,
            "TERMINFO",
            &format!("{ROOT}/lib/terminfo"),
            "terminfo",
        );
    }
    Ok(())
}

/// Tcl's script library (init.tcl and the rest).
fn tcl(plan: &mut Plan, closure: &Closure) -> Result<()> {
    let Some(lib) = closure.libraries.iter().find(|l| {
        l.dest
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libtcl8."))
    }) else {
        return Ok(());
    };
    let name = lib.dest.file_name().unwrap_or_default().to_string_lossy();
    let version = name.trim_start_matches("libtcl").trim_end_matches(".so");
    let dir = format!("/usr/share/tcltk/tcl{version}");
    if add_if_present(plan, &dir, "Tcl library")? {
        set(plan, "TCL_LIBRARY", &format!("{ROOT}{dir}"), "Tcl");
        // Its Tcl modules (msgcat, http...) are found through a compiled-in path otherwise.
        let tm_var = format!("TCL{}_TM_PATH", version.replace('.', "_"));
        set(plan, &tm_var, &format!("{ROOT}{dir}/tcl8"), "Tcl");
    }
    Ok(())
}

/// ImageMagick 6 loads its coders and filters as modules and reads XML configuration (policy,
/// delegates, type maps) from compiled-in dirs.
fn imagemagick(plan: &mut Plan, closure: &Closure) -> Result<()> {
    let Some(core) = closure.libraries.iter().find(|l| {
        l.dest
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libMagickCore-6."))
    }) else {
        return Ok(());
    };
    let quantum = if core.dest.to_string_lossy().contains("Q16HDRI") {
        "Q16HDRI"
    } else {
        "Q16"
    };
    let Some(lib_dir) = find_dir(MULTIARCH, "ImageMagick-6.") else {
        return Ok(());
    };
    let modules = format!("{lib_dir}/modules-{quantum}");
    if add_if_present(plan, &lib_dir, "ImageMagick modules")? {
        set(
            plan,
            "MAGICK_CODER_MODULE_PATH",
            &format!("{ROOT}{modules}/coders"),
            "ImageMagick",
        );
        set(
            plan,
            "MAGICK_CODER_FILTER_PATH",
            &format!("{ROOT}{modules}/filters"),
            "ImageMagick",
        );
    }
    let mut config = vec![format!("{ROOT}{lib_dir}/config-{quantum}")];
    for dir in ["/etc/ImageMagick-6", "/usr/share/ImageMagick-6"] {
        if add_if_present(plan, dir, "ImageMagick configuration")? {
            config.push(format!("{ROOT}{dir}"));
        }
    }
    set(
        plan,
        "MAGICK_CONFIGURE_PATH",
        &config.join(":"),
        "ImageMagick",
    );
    Ok(())
}

/// Fontconfig reads its configuration from a compiled-in path; the fonts it names stay on the
/// host (`--add` them when the program must render text exactly).
fn fontconfig(plan: &mut Plan, closure: &Closure) -> Result<()> {
    if closure.library("libfontconfig.so.1").is_some()
        && add_if_present(plan, "/etc/fonts", "Fontconfig configuration")?
    {
        set(
            plan,
            "FONTCONFIG_PATH",
            &format!("{ROOT}/etc/fonts"),
            "Fontconfig",
        );
    }
    Ok(())
}

/// Graphviz loads its layout and render plugins as listed in the config file of its plugin dir.
fn graphviz(plan: &mut Plan, closure: &Closure) -> Result<()> {
    let dir = format!("{MULTIARCH}/graphviz");
    if closure.library("libgvc.so.6").is_some() && add_if_present(plan, &dir, "Graphviz plugins")? {
        set(plan, "GVBINDIR", &format!("{ROOT}{dir}"), "Graphviz");
    }
    Ok(())
}

/// The first entry of `dir` (sorted) whose name starts with `prefix`, as a full path.
fn find_dir(dir: &str, prefix: &str) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names.first().map(|n| format!("{dir}/{n}"))
}

/// CPython: its standard library (without the test suites: `--add` them when wanted), found
/// through PYTHONHOME.
fn python(plan: &mut Plan, real_name: &str) -> Result<()> {
    let version = real_name.trim_start_matches("python");
    let dir = format!("/usr/lib/python{version}");
    if !Path::new(&dir).is_dir() {
        return Ok(());
    }
    info!("python{version}: adding the standard library {dir} (test suites left out)");
    let skip = |rel: &Path| {
        let name = rel.file_name().unwrap_or_default();
        rel == Path::new("test")
            || name == "tests"
            || name == "idle_test"
            || rel == Path::new("site-packages")
    };
    plan.add_tree(Path::new(&dir), Path::new(&dir), &skip)?;
    set(plan, "PYTHONHOME", &format!("{ROOT}/usr"), "python");
    Ok(())
}

/// Perl: every dir of its @INC that exists, in order, through PERL5LIB.
fn perl(plan: &mut Plan, perl: &Path) -> Result<()> {
    search_path(
        plan,
        perl,
        "print join(qq(\\n), @INC)",
        "PERL5LIB",
        "perl @INC",
    )
}

/// Ruby: every dir of its $LOAD_PATH that exists, in order, through RUBYLIB.
fn ruby(plan: &mut Plan, ruby: &Path) -> Result<()> {
    search_path(plan, ruby, "puts $LOAD_PATH", "RUBYLIB", "ruby $LOAD_PATH")
}

/// Asks an interpreter for its module search path (one dir per line, printed by `script`),
/// adds each dir that exists and lists them, in order, in variable `var`.
fn search_path(
    plan: &mut Plan,
    interpreter: &Path,
    script: &str,
    var: &str,
    why: &str,
) -> Result<()> {
    let out = std::process::Command::new(interpreter)
        .args(["-e", script])
        .output();
    let Ok(out) = out else { return Ok(()) };
    let mut found = Vec::new();
    for dir in String::from_utf8_lossy(&out.stdout).lines() {
        if dir.starts_with('/') && add_if_present(plan, dir, why)? {
            found.push(format!("{ROOT}{dir}"));
        }
    }
    if !found.is_empty() {
        set(plan, var, &found.join(":"), why);
    }
    Ok(())
}

/// git runs its helpers from its exec path and copies templates into new repositories. The
/// exec path is the program's own (`git --exec-path`); the templates sit beside it, in
/// `<prefix>/share/git-core/templates`.
fn git(plan: &mut Plan, git: &Path) -> Result<()> {
    let out = std::process::Command::new(git).arg("--exec-path").output();
    let Ok(out) = out else { return Ok(()) };
    let exec_path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if exec_path.starts_with('/') && add_if_present(plan, &exec_path, "git exec path")? {
        set(plan, "GIT_EXEC_PATH", &format!("{ROOT}{exec_path}"), "git");
    }
    let prefix = Path::new(&exec_path)
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/usr"));
    let templates = prefix.join("share/git-core/templates");
    let templates = templates.to_string_lossy();
    if add_if_present(plan, &templates, "git templates")? {
        set(
            plan,
            "GIT_TEMPLATE_DIR",
            &format!("{ROOT}{templates}"),
            "git",
        );
    }
    Ok(())
}
