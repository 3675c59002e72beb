//! The tasks behind `cargo xtask`: each runs setup with its own needs, then
//! the cargo commands that do the work.

use crate::artifacts::{self, Binary, Profile};
use crate::exec::{self, note, run, step};
use crate::fresh;
use crate::install;
use crate::setup::{self, BENCH_PACKAGES, LAB_PACKAGES, Needs, TEST_PACKAGES};
use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const LAB_ROOT: &str = "it builds network-namespace labs and loads XDP programs";

pub fn setup() -> Result<()> {
    setup::ensure(&Needs {
        task: "setup",
        root: Some("it installs Debian packages and mounts bpffs"),
        bpf: true,
        packages: TEST_PACKAGES,
    })
}

pub fn build(release: bool) -> Result<()> {
    setup::ensure(&Needs {
        task: "build",
        root: None,
        bpf: false,
        packages: &[],
    })?;
    artifacts::build(Profile::from_release(release), artifacts::AGENT)
}

/// Builds the release agent and installs it with its unit (see install.rs).
pub fn install(root: Option<PathBuf>, prefix: PathBuf) -> Result<()> {
    let layout = install::Layout::new(root, Some(prefix))?;
    setup::ensure(&Needs {
        task: "install",
        root: None,
        bpf: false,
        packages: &[],
    })?;
    artifacts::build(Profile::Release, artifacts::AGENT)?;
    let lbd = artifacts::path(Profile::Release, artifacts::LBD);
    install::run(&layout, &exec::workspace_root(), &lbd)
}

/// Builds the release agent and replaces this process with it, so signals
/// (Ctrl-C, SIGTERM, SIGHUP) reach lbd directly. Root is not demanded here:
/// `lbd check FILE` runs without it, and `lbd run` says so itself.
pub fn run_agent(args: &[String]) -> Result<()> {
    setup::ensure(&Needs {
        task: "run",
        root: None,
        bpf: true,
        packages: &[],
    })?;
    artifacts::build(Profile::Release, artifacts::AGENT)?;
    let lbd = artifacts::path(Profile::Release, artifacts::LBD);
    step(format_args!(
        "starting {} {}",
        lbd.display(),
        args.join(" ")
    ));
    let err = std::process::Command::new(&lbd).args(args).exec();
    Err(err).with_context(|| format!("could not start {}", lbd.display()))
}

/// One step of the test suite and how it went.
struct Outcome {
    name: &'static str,
    passed: bool,
    took: Duration,
}

/// Runs the whole suite: pure unit tests, then the root-only integration
/// tests one at a time (they share bpffs and build labs). Every step runs
/// even after a failure so the summary shows the whole picture.
pub fn test(extra: &[String]) -> Result<()> {
    setup::ensure(&Needs {
        task: "test",
        root: Some(LAB_ROOT),
        bpf: true,
        packages: TEST_PACKAGES,
    })?;

    let mut outcomes = Vec::new();
    let mut unit = exec::cargo();
    unit.args([
        "test",
        "--release",
        "--no-fail-fast",
        "-p",
        "lb-common",
        "-p",
        "lb-userspace",
        "-p",
        "xtask",
    ]);
    if !extra.is_empty() {
        unit.arg("--").args(extra);
    }
    outcomes.push(test_step(
        "unit tests (lb-common, lb-userspace, xtask)",
        &mut unit,
    ));

    // The labs run the real agent and lab programs: build them even when
    // the unit step was filtered or failed early.
    let started = Instant::now();
    let built = artifacts::build(Profile::Release, artifacts::LABS);
    outcomes.push(outcome("build lbd and the lab programs", built, started));

    let mut integration = exec::cargo();
    integration
        .args([
            "test",
            "--release",
            "--no-fail-fast",
            "-p",
            "lb-tests",
            "--",
            "--test-threads=1",
        ])
        .args(extra);
    outcomes.push(test_step(
        "integration tests (lb-tests, as root)",
        &mut integration,
    ));

    // The README's first command, as a new user runs it: from an empty
    // target directory. Skipped only when a name filter narrows the run.
    if extra.iter().all(|arg| arg.starts_with('-')) {
        let started = Instant::now();
        let checked = fresh::demo_and_bench();
        outcomes.push(outcome(
            "demo and bench from an empty target dir",
            checked,
            started,
        ));
    }

    step("summary");
    for outcome in &outcomes {
        note(format_args!(
            "{:<7} {:<45} {:>7.1} s",
            if outcome.passed { "ok" } else { "FAILED" },
            outcome.name,
            outcome.took.as_secs_f64()
        ));
    }
    let failed = outcomes.iter().filter(|outcome| !outcome.passed).count();
    if failed > 0 {
        bail!(
            "cargo xtask test: {failed} of {} steps failed",
            outcomes.len()
        );
    }
    println!("cargo xtask test: all {} steps passed", outcomes.len());
    Ok(())
}

/// Tests must fail, not skip, when they cannot run here.
fn test_step(name: &'static str, command: &mut std::process::Command) -> Outcome {
    step(name);
    command.env("LB_TEST_REQUIRE_ROOT", "1");
    let started = Instant::now();
    let result = run(command);
    outcome(name, result, started)
}

fn outcome(name: &'static str, result: Result<()>, started: Instant) -> Outcome {
    if let Err(err) = &result {
        note(format_args!("{name}: {err:#}"));
    }
    Outcome {
        name,
        passed: result.is_ok(),
        took: started.elapsed(),
    }
}

pub fn demo(args: &[String]) -> Result<()> {
    setup::ensure(&Needs {
        task: "demo",
        root: Some(LAB_ROOT),
        bpf: true,
        packages: LAB_PACKAGES,
    })?;
    start_lab_program(artifacts::DEMO, args)
}

/// Runs the XDP timings (lb-bench), then the peer lab (lb-peer-bench).
/// Arguments after `--` go to both (`--quick`, `--rounds N`), or to one
/// when they start with `xdp` or `peer` (`cargo xtask bench -- peer
/// --seconds 3`). The second runs even when the first failed, so one
/// broken bench does not hide the other's figures.
pub fn bench(args: &[String]) -> Result<()> {
    setup::ensure(&Needs {
        task: "bench",
        root: Some(LAB_ROOT),
        bpf: true,
        packages: BENCH_PACKAGES,
    })?;
    artifacts::build(Profile::Release, artifacts::BENCH)?;
    let programs = &artifacts::BENCH[..artifacts::BENCH_PROGRAMS];
    let (chosen, rest) = choose_bench(programs, args)?;
    let mut failed = Vec::new();
    for program in chosen {
        if let Err(err) = run_lab_program(*program, rest) {
            note(format_args!("{err:#}"));
            failed.push(program.name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "cargo xtask bench: {} failed (see above)",
            failed.join(" and ")
        );
    }
    Ok(())
}

/// Which bench programs run, and with which arguments.
fn choose_bench<'a>(
    programs: &'a [Binary],
    args: &'a [String],
) -> Result<(&'a [Binary], &'a [String])> {
    let pick = |name: &str| -> Result<&'a [Binary]> {
        let i = programs
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no bench program {name}"))?;
        Ok(&programs[i..=i])
    };
    Ok(match args.first().map(String::as_str) {
        Some("xdp") => (pick(artifacts::LB_BENCH.name)?, &args[1..]),
        Some("peer") => (pick(artifacts::LB_PEER_BENCH.name)?, &args[1..]),
        _ => (programs, args),
    })
}

/// Runs an already built lab program as a child and waits for it. Ctrl-C
/// reaches the child from the terminal; this process only notes it and
/// waits, so the child tears its lab down before the task ends.
fn run_lab_program(binary: Binary, args: &[String]) -> Result<()> {
    let program = artifacts::path(Profile::Release, binary);
    step(format_args!("starting {} {}", binary.name, args.join(" ")));
    wait_through_interrupts();
    run(std::process::Command::new(&program).args(args))
}

extern "C" fn ignore_while_waiting(_: libc::c_int) {}

/// SIGINT and SIGTERM get a handler that does nothing (not SIG_IGN, which a
/// child would inherit across exec): the child gets the default action back
/// and handles them itself.
fn wait_through_interrupts() {
    let handler = ignore_while_waiting as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler does nothing, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Builds a lab task's programs in release and replaces this process with
/// the first one, so Ctrl-C reaches it alone and it tears its lab down.
fn start_lab_program(binaries: &[Binary], args: &[String]) -> Result<()> {
    artifacts::build(Profile::Release, binaries)?;
    let first = binaries[0];
    let program = artifacts::path(Profile::Release, first);
    step(format_args!("starting {} {}", first.name, args.join(" ")));
    let err = std::process::Command::new(&program).args(args).exec();
    Err(err).with_context(|| format!("could not start {}", program.display()))
}

/// Formatting and lints as CI would check them. Clippy covers the
/// workspace's default members: lb-ebpf only builds for the BPF target.
pub fn fmt_check() -> Result<()> {
    setup::ensure(&Needs {
        task: "fmt-check",
        root: None,
        bpf: false,
        packages: &[],
    })?;
    step("checking formatting");
    let formatted = run(exec::cargo().args(["fmt", "--all", "--", "--check"]));
    step("running clippy");
    let linted = run(exec::cargo().args([
        "clippy",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]));
    match (formatted, linted) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(_), Err(_)) => bail!(
            "formatting and clippy both failed; run `cargo fmt --all` and fix the lints above"
        ),
        (Err(_), Ok(())) => bail!("the code is not formatted; run `cargo fmt --all`"),
        (Ok(()), Err(_)) => bail!("clippy found problems; they are listed above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bench_runs_both_programs_unless_one_is_named() {
        let programs = &artifacts::BENCH[..artifacts::BENCH_PROGRAMS];
        let all = args(&["--quick"]);
        let (chosen, rest) = choose_bench(programs, &all).unwrap();
        let names: Vec<&str> = chosen.iter().map(|b| b.name).collect();
        assert_eq!(names, ["lb-bench", "lb-peer-bench"]);
        assert_eq!(rest, ["--quick"]);

        let peer = args(&["peer", "--seconds", "3"]);
        let (chosen, rest) = choose_bench(programs, &peer).unwrap();
        assert_eq!(chosen, [artifacts::LB_PEER_BENCH]);
        assert_eq!(rest, ["--seconds", "3"]);

        let xdp = args(&["xdp", "--calls", "100"]);
        let (chosen, rest) = choose_bench(programs, &xdp).unwrap();
        assert_eq!(chosen, [artifacts::LB_BENCH]);
        assert_eq!(rest, ["--calls", "100"]);
    }
}
