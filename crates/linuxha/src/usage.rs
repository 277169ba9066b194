//! Usage errors as one sentence: clap's errors become
//! `<command as called>: <what is wrong>; see <command as called> --help` and exit 2, for every
//! name the binary answers to (`clswitchapp`, `linuxha clbuild`, `linuxha lab up`, …).
//! `--help` and `--version` keep clap's output and exit 0.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};

use crate::cli::{self, Cli};
use crate::fail::{Failure, EXIT_CONFIG, EXIT_FAILED};

/// Parse the command line as the program was called: the parsed command line and the
/// command's name as called (for messages), or the one-line failure to print. `--help` and
/// `--version` are printed by clap, which exits 0.
pub fn parse(raw: Vec<OsString>) -> Result<(Cli, String), Failure> {
    let program = raw
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "linuxha".into());
    let args = cli::normalize_args(raw);
    let called = called_name(&program, &args);
    match Cli::try_parse_from(&args) {
        Ok(cli) => Ok((cli, called)),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // A fence agent's (and `lab power status`'s) exit 2 means "the node is off": their
            // usage errors must not say that.
            let code = if answers_power_state(&args) { EXIT_FAILED } else { EXIT_CONFIG };
            Err(Failure { code, message: one_line(&e, &called) })
        }
    }
}

/// Whether the command line runs a lab command whose exit 2 means "off": the fence agents
/// (`lab fence`, `lab fence-vm`) and `lab power`.
fn answers_power_state(args: &[OsString]) -> bool {
    let path = subcommand_path(args);
    path.first().map(String::as_str) == Some("lab")
        && matches!(path.get(1).map(String::as_str), Some("fence" | "fence-vm" | "power"))
}

/// The command's name as called: the program name for `clswitchapp`, `clhbd-cluster1` or
/// `fence_linuxha_lab`, else the program name and the subcommands (`linuxha lab up`).
pub fn called_name(program: &str, args: &[OsString]) -> String {
    let alias = cli::COMMAND_NAMES.contains(&program)
        || program == cli::LAB_FENCE_AGENT
        || program == cli::VM_FENCE_AGENT
        || cl_wire::Daemon::ALL.map(cl_wire::Daemon::name).iter().any(|d| {
            program.strip_prefix(d).and_then(|r| r.strip_prefix('-')).is_some_and(|c| !c.is_empty())
        });
    if alias {
        return program.to_string();
    }
    std::iter::once(program.to_string()).chain(subcommand_path(args)).collect::<Vec<_>>().join(" ")
}

/// The subcommands named on a normalised command line (`["lab", "up"]`), skipping options and
/// their values; stops at the first word that is not a subcommand.
fn subcommand_path(args: &[OsString]) -> Vec<String> {
    let mut root = Cli::command();
    root.build();
    let mut current = &root;
    let mut path = Vec::new();
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let Some(word) = word.to_str() else { break };
        if word == "--" {
            break;
        }
        if word.starts_with('-') && word.len() > 1 {
            if !word.contains('=') && takes_value(current, word) {
                words.next();
            }
            continue;
        }
        match current.find_subcommand(word) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                current = sub;
            }
            None => break,
        }
    }
    path
}

/// Whether option `word` (`--root`, `-a`) of `command` is followed by a value.
fn takes_value(command: &clap::Command, word: &str) -> bool {
    command.get_arguments().any(|arg| {
        let named = match word.strip_prefix("--") {
            Some(long) => arg.get_long() == Some(long),
            None => {
                let mut chars = word.chars().skip(1);
                let short = chars.next();
                chars.next().is_none() && short.is_some() && arg.get_short() == short
            }
        };
        named && arg.get_action().takes_values()
    })
}

/// One context value as text; an option's `--node <NODE>` shown as `--node`.
fn context(e: &clap::Error, kind: ContextKind) -> Option<String> {
    let value = match e.get(kind)? {
        ContextValue::String(s) => s.clone(),
        ContextValue::Strings(v) => v.join(", "),
        ContextValue::StyledStr(s) => s.to_string(),
        ContextValue::StyledStrs(v) => {
            v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
        ContextValue::Number(n) => n.to_string(),
        ContextValue::Bool(b) => b.to_string(),
        _ => return None,
    };
    Some(value)
}

/// `--node <NODE>` → `--node`; a positional `<LAB>` → `LAB`.
fn option_name(arg: &str) -> String {
    if arg.starts_with('-') {
        arg.split([' ', '=']).next().unwrap_or(arg).to_string()
    } else {
        display_arg(arg)
    }
}

/// clap's error as one sentence starting with `called`.
pub fn one_line(e: &clap::Error, called: &str) -> String {
    let arg = context(e, ContextKind::InvalidArg);
    let value = context(e, ContextKind::InvalidValue);
    let what = match e.kind() {
        ErrorKind::UnknownArgument => match arg {
            Some(a) if a.starts_with('-') => format!("unknown option {a}"),
            Some(a) => format!("unexpected argument `{a}`"),
            None => "unknown option".to_string(),
        },
        ErrorKind::InvalidSubcommand => match context(e, ContextKind::InvalidSubcommand) {
            Some(sub) => format!("unknown command `{sub}`"),
            None => "unknown command".to_string(),
        },
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "missing a command".to_string()
        }
        ErrorKind::MissingRequiredArgument => match &arg {
            Some(a) => {
                let missing: Vec<String> = match e.get(ContextKind::InvalidArg) {
                    Some(ContextValue::Strings(v)) => v.iter().map(|a| display_arg(a)).collect(),
                    _ => vec![display_arg(a)],
                };
                format!("missing {}", missing.join(" and "))
            }
            None => "a required option is missing".to_string(),
        },
        ErrorKind::InvalidValue => {
            let valid = context(e, ContextKind::ValidValue);
            let for_arg = arg.map(|a| format!(" for {}", option_name(&a))).unwrap_or_default();
            match (value.as_deref(), valid) {
                (Some(""), _) | (None, _) => format!("a value is required{for_arg}"),
                (Some(v), Some(valid)) => {
                    format!("invalid value `{v}`{for_arg}; expected one of {valid}")
                }
                (Some(v), None) => format!("invalid value `{v}`{for_arg}"),
            }
        }
        ErrorKind::ValueValidation => {
            let for_arg = arg.map(|a| format!(" for {}", option_name(&a))).unwrap_or_default();
            let why = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
            format!("invalid value `{}`{for_arg}{why}", value.unwrap_or_default())
        }
        ErrorKind::ArgumentConflict => {
            let prior = context(e, ContextKind::PriorArg);
            match (arg, prior) {
                (Some(a), Some(p)) => {
                    format!("{} cannot be used with {}", option_name(&a), option_name(&p))
                }
                _ => "options that cannot be used together".to_string(),
            }
        }
        ErrorKind::NoEquals => {
            format!(
                "{} needs its value after `=`",
                arg.map(|a| option_name(&a)).unwrap_or_default()
            )
        }
        ErrorKind::TooManyValues => format!(
            "unexpected value `{}`{}",
            value.unwrap_or_default(),
            arg.map(|a| format!(" for {}", option_name(&a))).unwrap_or_default()
        ),
        ErrorKind::TooFewValues | ErrorKind::WrongNumberOfValues => format!(
            "wrong number of values{}",
            arg.map(|a| format!(" for {}", option_name(&a))).unwrap_or_default()
        ),
        ErrorKind::InvalidUtf8 => "an argument is not valid UTF-8".to_string(),
        _ => first_line(e),
    };
    format!("{called}: {what}; see {called} --help")
}

/// `--application <NAME>` → `--application NAME`, `[LAB]` → `LAB`, `--build|--vgbuild` →
/// `--build or --vgbuild`.
fn display_arg(arg: &str) -> String {
    arg.replace(['<', '>', '[', ']'], "").replace('|', " or ")
}

/// clap's own message, without `error: ` and the lines after it.
fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let line = rendered.lines().next().unwrap_or("invalid command line");
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn error(words: &[&str]) -> String {
        match parse(args(words)) {
            Ok(_) => panic!("{words:?} parsed"),
            Err(f) => {
                assert_eq!(f.code, EXIT_CONFIG, "{words:?}: {}", f.message);
                f.message
            }
        }
    }

    #[test]
    fn the_called_name_follows_the_program_and_subcommands() {
        let called = |words: &[&str]| {
            let raw = args(words);
            let program = words[0].rsplit('/').next().unwrap_or_default().to_string();
            called_name(&program, &cli::normalize_args(raw))
        };
        assert_eq!(called(&["/usr/sbin/clswitchapp", "--nod", "x"]), "clswitchapp");
        assert_eq!(called(&["clhbd-cluster1", "--x"]), "clhbd-cluster1");
        assert_eq!(called(&["linuxha", "--root", "/r", "lab", "up", "--nodes"]), "linuxha lab up");
        assert_eq!(called(&["linuxha", "--root=/r", "clstat", "x"]), "linuxha clstat");
        assert_eq!(called(&["./linuxha", "nosuch"]), "linuxha");
    }

    #[test]
    fn usage_errors_are_one_sentence() {
        assert_eq!(
            error(&["clswitchapp", "--application", "a", "--nod", "x"]),
            "clswitchapp: unknown option --nod; see clswitchapp --help"
        );
        assert_eq!(
            error(&["clswitchapp"]),
            "clswitchapp: missing --application NAME; see clswitchapp --help"
        );
        assert_eq!(
            error(&["linuxha", "clbuild", "--genkey", "--rollback"]),
            "linuxha clbuild: --genkey cannot be used with --rollback; see linuxha clbuild --help"
        );
        assert_eq!(
            error(&["linuxha", "nosuch"]),
            "linuxha: unknown command `nosuch`; see linuxha --help"
        );
        assert_eq!(error(&["linuxha"]), "linuxha: missing a command; see linuxha --help");
        assert_eq!(
            error(&["linuxha", "lab", "link", "l", "node1", "0", "sideways"]),
            "linuxha lab link: invalid value `sideways` for STATE; expected one of up, down; see linuxha lab link --help"
        );
        assert_eq!(
            error(&["cllock", "--name", "x", "--timeout", "soon", "--", "true"]),
            "cllock: invalid value `soon` for --timeout: invalid digit found in string; see cllock --help"
        );
        for words in
            [&["clstat", "extra"][..], &["clbuildapp", "--application"], &["linuxha", "lab"]]
        {
            let message = error(words);
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn fence_agents_never_exit_2_on_usage_errors() {
        for (words, start) in [
            (&["fence_linuxha_lab", "--bogus"][..], "fence_linuxha_lab: unknown option --bogus"),
            (&["linuxha", "lab", "fence-vm", "--x"], "linuxha lab fence-vm: unknown option --x"),
            (
                &["linuxha", "lab", "power", "l", "stat", "node1"],
                "linuxha lab power: invalid value",
            ),
        ] {
            match parse(args(words)) {
                Ok(_) => panic!("{words:?} parsed"),
                Err(f) => {
                    assert_eq!(f.code, EXIT_FAILED, "{words:?}");
                    assert!(f.message.starts_with(start), "{}", f.message);
                }
            }
        }
    }
}
