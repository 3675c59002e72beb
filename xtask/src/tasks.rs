//! The tasks behind `cargo xtask`: each runs setup with its own needs, then
//! the cargo commands that do the work.

use crate::exec::{self, note, run, step};
use crate::install;
use crate::setup::{self, LAB_PACKAGES, Needs, TEST_PACKAGES};
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
    build_agent(release)
}

/// Builds `lbd`; lb-userspace's build.rs compiles the XDP program with the
/// nightly toolchain and bpf-linker.
fn build_agent(release: bool) -> Result<()> {
    step(format_args!(
        "building lbd ({})",
        if release { "release" } else { "debug" }
    ));
    let mut command = exec::cargo();
    command.args(["build", "-p", "lb-userspace"]);
    if release {
        command.arg("--release");
    }
    run(&mut command)
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
    build_agent(true)?;
    let lbd = target_dir().join("release").join("lbd");
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
    build_agent(true)?;
    let lbd = target_dir().join("release").join("lbd");
    step(format_args!(
        "starting {} {}",
        lbd.display(),
        args.join(" ")
    ));
    let err = std::process::Command::new(&lbd).args(args).exec();
    Err(err).with_context(|| format!("could not start {}", lbd.display()))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                exec::workspace_root().join(dir)
            }
        })
        .unwrap_or_else(|| exec::workspace_root().join("target"))
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

    // The labs run the real agent binary: build it even when the unit step
    // was filtered or failed early.
    let mut agent = exec::cargo();
    agent.args(["build", "--release", "-p", "lb-userspace", "--bin", "lbd"]);
    outcomes.push(test_step("build the agent (lbd) for the labs", &mut agent));

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
    lab_binary("lb-demo", "starting the demo", args)
}

pub fn bench(args: &[String]) -> Result<()> {
    setup::ensure(&Needs {
        task: "bench",
        root: Some(LAB_ROOT),
        bpf: true,
        packages: LAB_PACKAGES,
    })?;
    lab_binary("lb-bench", "running the benchmarks", args)
}

fn lab_binary(bin: &str, what: &str, args: &[String]) -> Result<()> {
    step(what);
    run(exec::cargo()
        .args(["run", "--release", "-p", "lb-tests", "--bin", bin, "--"])
        .args(args))
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
