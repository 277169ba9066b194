//! Manual pages from the clap definitions (clap_mangen): linuxha(8), one page per command name
//! (clbuild(8), clstat(8), cldaemon(8), …), and the configuration files' pages from
//! docs/config.md ([`super::config_man`]).

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_mangen::Man;
use roff::{bold, roman, Roff};

use crate::cli::{Cli, COMMAND_NAMES, SUBCOMMAND_PAGES};
use crate::fail::{Failure, Outcome};

/// The footer's source field of every page.
fn source() -> String {
    format!("linuxha {}", env!("CARGO_PKG_VERSION"))
}

/// The manual's name in every page's footer.
const MANUAL: &str = "linuxha manual";

/// A generated page: its file name (`clstat.8`), section and roff text.
pub struct Page {
    /// The file name, `<name>.<section>`.
    pub file: String,
    /// The manual section (`5` or `8`).
    pub section: &'static str,
    /// The page's roff source.
    pub text: String,
}

/// Every page: linuxha(8), one per command name, clconf.xml(5) and appconf.xml(5).
pub fn pages() -> Outcome<Vec<Page>> {
    let mut pages = vec![overview()?];
    for name in COMMAND_NAMES {
        pages.push(command_page(name, name, name)?);
    }
    for name in SUBCOMMAND_PAGES {
        pages.push(command_page(name, &format!("linuxha-{name}"), &format!("linuxha {name}"))?);
    }
    pages.extend(super::config_man::pages());
    for page in &mut pages {
        page.text = ascii(&page.text);
    }
    Ok(pages)
}

/// Non-ASCII characters as groff's `\[uXXXX]` escapes: the pages render the same with or
/// without preconv (man runs it, plain groff does not).
fn ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// Write every page under `dir` as `man5/…` and `man8/…`, gzipped (`clstat.8.gz`, as
/// packages install them) when `gzip`; the paths written.
pub fn write_pages(command: &str, dir: &Path, gzip: bool) -> Outcome<Vec<PathBuf>> {
    let mut written = Vec::new();
    for page in pages()? {
        let mut path = dir.join(format!("man{}", page.section)).join(&page.file);
        let mut bytes = page.text.into_bytes();
        if gzip {
            path.as_mut_os_string().push(".gz");
            bytes = gzipped(&bytes).map_err(|e| {
                Failure::runtime(format!("{command}: cannot compress {}: {e}", page.file))
            })?;
        }
        super::write(command, &path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// `bytes` compressed as gzip does (no name, no time stamp: the same pages give the same file).
fn gzipped(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn render(man: &Man, what: &str) -> Outcome<String> {
    let mut out = Vec::new();
    man.render(&mut out)
        .map_err(|e| Failure::runtime(format!("gen-man: cannot render {what}: {e}")))?;
    String::from_utf8(out).map_err(|_| Failure::runtime(format!("gen-man: {what} is not UTF-8")))
}

/// The page `page` (`clstat`, `linuxha-migrate`) of the subcommand `name`: its clap definition
/// under the name it is called by (`called`: `clstat`, `linuxha migrate`).
fn command_page(name: &str, page: &str, called: &str) -> Outcome<Page> {
    let mut root = Cli::command();
    root.build();
    let sub = root
        .find_subcommand(name)
        .ok_or_else(|| Failure::runtime(format!("gen-man: no command {name}")))?
        .clone()
        .name(page.to_string())
        .bin_name(called.to_string())
        .display_name(page.to_string());
    let man = Man::new(sub).section("8").source(source()).manual(MANUAL);
    let mut text = render(&man, page)?;
    text.push_str(&common_sections(page).to_roff());
    Ok(Page { file: format!("{page}.8"), section: "8", text })
}

/// linuxha(8): the options, every command (the cl* ones with their own pages) and the files.
fn overview() -> Outcome<Page> {
    let mut cmd = Cli::command();
    cmd.build();
    // The NAME line is `linuxha - <about>`: the about without its leading `linuxha: `.
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let about = about.strip_prefix("linuxha: ").unwrap_or(&about).to_string();
    let man = Man::new(cmd.clone().about(about.clone()).long_about(about))
        .section("8")
        .source(source())
        .manual(MANUAL);
    let mut out = Vec::new();
    let fail = |e: std::io::Error| Failure::runtime(format!("gen-man: cannot render linuxha: {e}"));
    for part in [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
    ] {
        part(&man, &mut out).map_err(fail)?;
    }
    let mut roff = Roff::new();
    roff.control("PP", []).text([
        roman("One binary is every command by the name it is called with: "),
        bold("clstat"),
        roman(" is "),
        bold("linuxha clstat"),
        roman(". The daemons also run as "),
        bold("<daemon>-<cluster>"),
        roman(" (as they show in ps)."),
    ]);
    out.extend(roff.to_roff().into_bytes());
    man.render_options_section(&mut out).map_err(fail)?;
    let mut text = String::from_utf8(out)
        .map_err(|_| Failure::runtime("gen-man: linuxha is not UTF-8".to_string()))?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        roff.control("TP", []);
        if COMMAND_NAMES.contains(&name) {
            roff.text([bold(name), roman("(8)")]);
        } else if SUBCOMMAND_PAGES.contains(&name) {
            roff.text([bold(format!("linuxha {name}")), roman(format!(" (linuxha-{name}(8))"))]);
        } else {
            roff.text([bold(format!("linuxha {name}"))]);
        }
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let more = if COMMAND_NAMES.contains(&name) || SUBCOMMAND_PAGES.contains(&name) {
            String::new()
        } else {
            format!(" Options: linuxha {name} --help.")
        };
        roff.text([roman(format!("{about}{more}"))]);
    }
    text.push_str(&roff.to_roff());
    text.push_str(&common_sections("linuxha").to_roff());
    Ok(Page { file: "linuxha.8".into(), section: "8", text })
}

/// EXIT STATUS, FILES, ENVIRONMENT and SEE ALSO, shared by the command pages.
fn common_sections(name: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "Success (warnings may have been printed)."),
        ("1", "The operation failed."),
        (
            "2",
            "Bad configuration or usage: an unknown option, a missing or bad value, or a node or \
             application name that is not a name or not in the built configuration. Nothing was \
             changed.",
        ),
    ] {
        roff.control("TP", []).text([bold(code)]).text([roman(meaning)]);
    }
    if name == "clstat" {
        roff.control("TP", [])
            .text([bold("3")])
            .text([roman("The cluster is not formed on this node.")]);
    }
    roff.control("PP", []).text([roman(
        "Errors are one sentence on standard error that starts with the command's name as called.",
    )]);
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, meaning) in [
        ("LINUXHA_ROOT", "Root directory all cluster files live under, as --root (default /)."),
        (
            "LINUXHA_NODE",
            "The local node's name (default: the clconf.xml node named like the host).",
        ),
        ("LINUXHA_STRICT_MODES", "no turns off the ownership and permission checks."),
    ] {
        roff.control("TP", []).text([bold(var)]).text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    for (file, meaning) in [
        ("/etc/cluster/clconf.xml", "The cluster configuration, see clconf.xml(5)."),
        (
            "/etc/cluster/<application>/appconf.xml",
            "An application's configuration, see appconf.xml(5).",
        ),
        ("/etc/cluster/cluster.key", "The cluster key (mode 0600)."),
        ("/etc/cluster/VERSION", "The installed linuxha version."),
        ("/var/log/cluster", "Logs."),
        ("/run/cluster", "Pid files, locks and sockets."),
    ] {
        roff.control("TP", []).text([bold(file)]).text([roman(meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut see: Vec<String> = std::iter::once("linuxha".to_string())
        .chain(COMMAND_NAMES.map(str::to_string))
        .chain(SUBCOMMAND_PAGES.map(|s| format!("linuxha-{s}")))
        .filter(|n| n != name)
        .map(|n| format!("{n}(8)"))
        .collect();
    see.push("clconf.xml(5)".into());
    see.push("appconf.xml(5)".into());
    roff.text([roman(see.join(", "))]);
    roff
}
