//! What makes both CLIs fit a shell: completion scripts and man pages, both
//! generated from the program's own clap definition, so they can never list
//! a flag the program does not take.
//!
//! Each binary adds two commands with these arguments: `completions SHELL`
//! (the script on stdout) and a hidden `man DIR` (one page per command and
//! subcommand: `kms-plugin.1`, `kms-plugin-key.1`, `kms-plugin-key-list.1`,
//! ...). `scripts/man` runs both into `target/man/`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The shells `completions` writes a script for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    /// bash: `source <(PROGRAM completions bash)`, or save it under
    /// `/usr/share/bash-completion/completions/PROGRAM`.
    Bash,
    /// zsh: save it as `_PROGRAM` in a directory of `$fpath`.
    Zsh,
    /// fish: save it as `~/.config/fish/completions/PROGRAM.fish`.
    Fish,
}

impl CompletionShell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// `completions` arguments.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// `man` arguments.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages to (created when missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Writes the completion script of `cmd` (named `bin`) for `shell` to `out`.
pub fn write_completions(
    cmd: &mut clap::Command,
    bin: &str,
    shell: CompletionShell,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    // clap_complete panics when its writer fails (a closed pipe): give it
    // memory, and report the real write's error.
    let mut script = Vec::new();
    clap_complete::generate(shell.generator(), cmd, bin, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Writes one man page (section 1) per command of `cmd` that is not hidden,
/// subcommands included, into `dir`; returns the files written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn pages(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub.clone(), dir, out)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page)?;
        std::fs::write(&path, page)?;
        out.push(path);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    // Builds the subcommands' display names (`kms-plugin-key-list`).
    cmd.build();
    let mut out = Vec::new();
    pages(cmd, dir, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> clap::Command {
        clap::Command::new("demo")
            .about("A demo")
            .subcommand(
                clap::Command::new("key")
                    .about("Keys")
                    .subcommand(clap::Command::new("list").about("List keys")),
            )
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn one_page_per_visible_command() {
        let dir = tempfile_dir();
        let files = write_man_pages(demo(), &dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["demo-key-list.1", "demo-key.1", "demo.1"]);
        let page = std::fs::read_to_string(dir.join("demo-key-list.1")).unwrap();
        assert!(
            page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"),
            "{page}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let mut out = Vec::new();
            write_completions(&mut demo(), "demo", shell, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("list"), "{shell:?}: {text}");
        }
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("kms-proto-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
