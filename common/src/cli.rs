//! The commands both binaries have (`genkey`, `pubkey`, `run`, `check`, `status`, the hidden
//! `man`), as one [`Shared`] enum each binary flattens into its own `Cmd`
//! (`#[command(flatten)]`). What differs is the help: each binary keeps the texts of the
//! shared commands in a text file (`src/help.txt`) that [`with_help`] applies to the clap
//! definition, and what each command does is the binary's ([`Shared::execute`]).
//!
//! # The help file
//! A line `== <command>` starts the help of a command, `== <command> --<arg>` that of one of
//! its arguments; what precedes the first such line is a comment. The first paragraph of a
//! section is the short help (`-h`, the command lists); a section of several paragraphs is
//! also the long help (`--help`, the man pages), all of it, as a verbatim doc comment would be.

use anyhow::Result;
use clap::{Command, FromArgMatches, Subcommand};
use std::path::PathBuf;

/// The commands both binaries have, in the order their help lists them.
#[derive(Subcommand)]
pub enum Shared {
    Genkey,
    Pubkey,
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    Status {
        /// The config the daemon runs with (to find its management socket).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    #[command(hide = true)]
    Man {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// The binary's own half of a config command: `run`, `check` (given the config file).
pub type ConfigCommand = fn(PathBuf) -> Result<()>;
/// The binary's `status` (the config file, `--json`).
pub type StatusCommand = fn(PathBuf, bool) -> Result<()>;

impl Shared {
    /// `run`: the daemon (it keeps SIGPIPE ignored, see [`crate::daemon::main`]).
    pub fn is_daemon(&self) -> bool {
        matches!(self, Shared::Run { .. })
    }

    /// Carries the command out: `genkey`, `pubkey` and `man` (from `command`, the binary's
    /// command line with its help) here, the others by the binary's functions.
    pub fn execute(
        self,
        command: fn() -> Command,
        run: ConfigCommand,
        check: ConfigCommand,
        status: StatusCommand,
    ) -> Result<()> {
        match self {
            Shared::Genkey => crate::cmd_genkey(),
            Shared::Pubkey => crate::cmd_pubkey(),
            Shared::Run { config } => run(config),
            Shared::Check { config } => check(config),
            Shared::Status { config, json } => status(config, json),
            Shared::Man { dir } => crate::write_man_pages(command(), &dir),
        }
    }
}

/// Parses the process's arguments with `command` (the binary's definition with its help
/// applied), exiting with clap's message and status on an error or `--help`, as
/// `Parser::parse` does.
pub fn parse<T: FromArgMatches>(command: Command) -> T {
    let matches = command.get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The end of both binaries' `--help` (the top level's, and its man page): `own` (files,
/// signals, ...), then what both say (exit status, logs, documentation), then `see_also`.
pub fn more_help(own: &str, see_also: &str) -> String {
    format!(
        "{own}\n\n\
         Exit status: 0 on success; 1 on any error, with a message that names the file, the key and\n\
         the fix. Logs go to stderr (the journal under systemd); RUST_LOG=debug shows more.\n\n\
         Documentation: /usr/share/doc/metalvpc/ (install.md, configuration.md, nat-traversal.md).\n\
         See also: {see_also}."
    )
}

/// One section of a help file: the command, the argument (None: the command's own help)
/// and the text.
struct Section {
    command: &'static str,
    arg: Option<&'static str>,
    text: &'static str,
}

impl Section {
    /// The short help and, for a text of several paragraphs, the long help.
    fn helps(&self) -> (&'static str, Option<&'static str>) {
        match self.text.split_once("\n\n") {
            Some((short, _)) => (short, Some(self.text)),
            None => (self.text, None),
        }
    }
}

fn sections(file: &'static str) -> Vec<Section> {
    let mut out = Vec::new();
    let mut rest = file;
    // Skip the comment before the first section.
    match rest.find("\n== ") {
        Some(i) if !rest.starts_with("== ") => rest = &rest[i + 1..],
        _ => {}
    }
    while let Some(after) = rest.strip_prefix("== ") {
        let (header, body) = after.split_once('\n').unwrap_or((after, ""));
        let (text, next) = match body.find("\n== ") {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, ""),
        };
        let mut words = header.split_whitespace();
        let command = words.next().expect("a help section names its command");
        let arg = words.next().map(|a| {
            a.strip_prefix("--")
                .expect("a help section names an argument as --<arg>")
        });
        out.push(Section {
            command,
            arg,
            text: text.trim_end_matches('\n'),
        });
        rest = next;
    }
    out
}

/// `cmd` with the help texts of `file` (see the module doc) applied to its subcommands and
/// their arguments, in place (the order of commands and arguments stays). Panics on a
/// section that names a command or argument `cmd` does not have.
pub fn with_help(cmd: Command, file: &'static str) -> Command {
    let sections = sections(file);
    let mut applied = 0;
    let cmd = cmd.mut_subcommands(|mut sub| {
        let name = sub.get_name().to_string();
        for s in sections.iter().filter(|s| s.command == name) {
            let (short, long) = s.helps();
            sub = match s.arg {
                None => sub.about(short).long_about(long),
                Some(arg) => sub.mut_arg(arg, |a| a.help(short).long_help(long)),
            };
            applied += 1;
        }
        sub
    });
    assert_eq!(
        applied,
        sections.len(),
        "a help section names a command the binary does not have"
    );
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Shared,
    }

    const HELP: &str = "A comment.\n\n== run\nRun it.\n\nLonger.\nStill.\n\n== run --config\nThe file\n== man\nWrite pages\n";

    #[test]
    fn sections_give_short_and_long_help() {
        let cmd = with_help(<Cli as clap::CommandFactory>::command(), HELP);
        let run = cmd.find_subcommand("run").unwrap();
        assert_eq!(run.get_about().unwrap().to_string(), "Run it.");
        assert_eq!(
            run.get_long_about().unwrap().to_string(),
            "Run it.\n\nLonger.\nStill."
        );
        let config = run
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .unwrap();
        assert_eq!(config.get_help().unwrap().to_string(), "The file");
        assert!(config.get_long_help().is_none());
        let man = cmd.find_subcommand("man").unwrap();
        assert_eq!(man.get_about().unwrap().to_string(), "Write pages");
        assert!(man.get_long_about().is_none());
        let names: Vec<_> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        assert_eq!(names, ["genkey", "pubkey", "run", "check", "status", "man"]);
    }

    #[test]
    #[should_panic(expected = "a help section names a command")]
    fn a_section_for_an_unknown_command_panics() {
        let _ = with_help(<Cli as clap::CommandFactory>::command(), "== nope\nx\n");
    }
}
