//! Running other programs: every step says what it runs, children inherit
//! stdio so their progress stays visible, and failures name the command.

use anyhow::{Context, Result, bail};
use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

/// Announces a step of the task.
pub fn step(message: impl Display) {
    println!("==> {message}");
    let _ = std::io::stdout().flush();
}

/// A detail under the current step.
pub fn note(message: impl Display) {
    println!("    {message}");
    let _ = std::io::stdout().flush();
}

/// The workspace root: every cargo command runs from there. `cargo run`
/// tells the running xtask where its manifest is; the path compiled in is
/// the fallback when xtask is started directly.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A cargo command in the workspace root. Uses the cargo that started
/// xtask (`$CARGO`), so `sudo` with a reset PATH still finds the same one.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(program);
    command.current_dir(workspace_root());
    command
}

/// The command as an operator would type it (`cargo build --release`).
pub fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or(command.get_program())
        .to_string_lossy()
        .into_owned();
    std::iter::once(program)
        .chain(
            command
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` with inherited stdio (stdin closed: CI has none) and
/// fails, naming the command, unless it exits successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let status = run_status(command)?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(command));
    }
    Ok(())
}

/// Like [`run`], but hands back the exit status for the caller to judge.
pub fn run_status(command: &mut Command) -> Result<ExitStatus> {
    let shown = describe(command);
    note(format_args!("$ {shown}"));
    command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{shown}`"))
}

/// Runs `command` quietly and returns its output whatever the exit status;
/// an error only when the program could not be started at all.
pub fn capture(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(command)))
}

/// Runs `command` quietly; its stdout when it succeeds, `None` when it is
/// missing or fails (a probe: "is this installed?").
pub fn probe(command: &mut Command) -> Option<String> {
    let output = capture(command).ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// True when `program` can be found on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// PATH with `dir` in front, or `None` when it is already there. cargo's
/// bin directory holds rustup and bpf-linker; `sudo` often drops it.
pub fn path_with(dir: &Path, path: Option<&OsStr>) -> Option<OsString> {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    if dirs.iter().any(|existing| existing == dir) {
        return None;
    }
    dirs.insert(0, dir.to_path_buf());
    std::env::join_paths(dirs).ok()
}

/// Where `cargo install` and rustup put their programs.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home).join("bin"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo").join("bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_with_prepends_only_when_missing() {
        let bin = Path::new("/root/.cargo/bin");
        let added = path_with(bin, Some(OsStr::new("/usr/bin:/bin"))).unwrap();
        assert_eq!(added, OsString::from("/root/.cargo/bin:/usr/bin:/bin"));
        assert_eq!(
            path_with(bin, Some(OsStr::new("/usr/bin:/root/.cargo/bin"))),
            None
        );
        assert_eq!(
            path_with(bin, None),
            Some(OsString::from("/root/.cargo/bin"))
        );
    }

    #[test]
    fn describe_shows_the_program_name_and_arguments() {
        let mut command = Command::new("/usr/bin/apt-get");
        command.args(["install", "-y", "nftables"]);
        assert_eq!(describe(&command), "apt-get install -y nftables");
    }
}
