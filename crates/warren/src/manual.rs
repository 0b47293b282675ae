//! Shell completions and man pages, generated from the command line's own definition, so they
//! say what `--help` says and cannot drift from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (warren.1, and warren-SUBCOMMAND.1 for each
    /// subcommand, as git's pages are named); created if missing.
    #[arg(long, short = 'o', default_value = ".")]
    pub out: PathBuf,
}

/// `warren completions SHELL`: the script on standard output (for bash:
/// `warren completions bash > /etc/bash_completion.d/warren`).
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "warren", &mut out);
    out.flush()?;
    Ok(())
}

/// `warren man --out DIR`: one page per command, printing each file it writes.
pub fn man(args: &ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    for path in write_pages(&cmd, "warren", &args.out)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes `cmd`'s page as `name.1`, then each visible subcommand's as `name-sub.1`, recursively.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let path = dir.join(format!("{name}.1"));
    let page = cmd.clone().name(name.to_string()).display_name(name.replace('-', " "));
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text)?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = vec![path];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        written.extend(write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::cli::Cli;

    /// Every positional argument of every command says what it is in `--help`: a bare
    /// `<SERVER> <LOCAL> <PATH>` leaves the reader guessing.
    #[test]
    fn every_positional_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_positionals() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{}>", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "warren", &mut missing);
        assert!(missing.is_empty(), "positional arguments without help:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
