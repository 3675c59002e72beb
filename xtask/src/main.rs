//! `cargo xtask`: one entry point that readies a fresh machine and builds,
//! runs, tests, demonstrates and benchmarks lb. It depends on nothing that
//! needs the eBPF toolchain, because installing that toolchain is its job.

mod artifacts;
mod exec;
mod fresh;
mod install;
mod probe;
mod setup;
mod tasks;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set up, build, run, test, demo and bench lb"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check root and bpffs, install the nightly toolchain, bpf-linker and Debian packages.
    Setup,
    /// Build the agent `lbd` (and its XDP program).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build the release agent and install it as a systemd service: the
    /// binary, packaging/lbd.service, the README, and examples/horizon.toml
    /// as /etc/lb/lbd.toml unless that exists (never overwritten).
    Install {
        /// Install under this directory instead of / (a staging tree).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Where the binary and docs go on the installed system.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
    /// Build the release agent and run it: cargo xtask run -- run --config FILE --node NAME
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test, including the root-only lab tests; fails rather than skips.
    Test {
        /// Passed to the test binaries (a name filter, --nocapture, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Start the lab demo (lb-demo); arguments after -- are passed on.
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks: lb-bench (XDP timings), then lb-peer-bench (the
    /// HTTP lab); arguments after -- go to both, or to one after `xdp`/`peer`.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check formatting (cargo fmt) and lints (clippy -D warnings).
    FmtCheck,
}

fn main() -> ExitCode {
    put_cargo_bin_on_path();
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => tasks::setup(),
        Task::Build { release } => tasks::build(release),
        Task::Install { root, prefix } => tasks::install(root, prefix),
        Task::Run { args } => tasks::run_agent(&args),
        Task::Test { args } => tasks::test(&args),
        Task::Demo { args } => tasks::demo(&args),
        Task::Bench { args } => tasks::bench(&args),
        Task::FmtCheck => tasks::fmt_check(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// rustup, bpf-linker and the build's own `rustup run nightly` live in
/// cargo's bin directory, which `sudo` usually leaves off PATH.
fn put_cargo_bin_on_path() {
    let Some(bin) = exec::cargo_bin_dir().filter(|dir| dir.is_dir()) else {
        return;
    };
    if let Some(path) = exec::path_with(&bin, std::env::var_os("PATH").as_deref()) {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var("PATH", path) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Task {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .expect("arguments parse")
            .task
    }

    #[test]
    fn run_passes_everything_after_the_separator_to_lbd() {
        let Task::Run { args } = parse(&[
            "run",
            "--",
            "run",
            "--config",
            "examples/horizon.toml",
            "--node",
            "lb1",
        ]) else {
            panic!("expected the run task");
        };
        assert_eq!(
            args,
            ["run", "--config", "examples/horizon.toml", "--node", "lb1"]
        );
    }

    #[test]
    fn test_and_demo_forward_their_extra_arguments() {
        let Task::Test { args } = parse(&["test", "--", "maglev", "--nocapture"]) else {
            panic!("expected the test task");
        };
        assert_eq!(args, ["maglev", "--nocapture"]);
        let Task::Demo { args } = parse(&["demo", "--", "--clients", "200"]) else {
            panic!("expected the demo task");
        };
        assert_eq!(args, ["--clients", "200"]);
        let Task::Install { root, prefix } = parse(&["install", "--root", "/tmp/stage"]) else {
            panic!("expected the install task");
        };
        assert_eq!(root, Some(PathBuf::from("/tmp/stage")));
        assert_eq!(prefix, PathBuf::from("/usr/local"));
        assert!(matches!(
            parse(&["build", "--release"]),
            Task::Build { release: true }
        ));
    }
}
