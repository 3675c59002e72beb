//! The one place that knows which programs each task runs, and builds them
//! in the profile the task runs them in. A task never relies on what an
//! earlier task left in the target directory: it builds its own list first
//! (cargo makes that a no-op when nothing changed).

use crate::exec::{self, run, step};
use anyhow::{Result, bail};
use std::path::PathBuf;

/// A binary of the workspace: its package and its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binary {
    pub package: &'static str,
    pub name: &'static str,
}

/// The agent. lb-userspace's build.rs compiles the XDP program into it.
pub const LBD: Binary = Binary {
    package: "lb-userspace",
    name: "lbd",
};
/// The lab's backend server and client, started by the demo and the labs.
pub const LAB_SERVER: Binary = Binary {
    package: "lb-tests",
    name: "lab-server",
};
pub const LAB_CLIENT: Binary = Binary {
    package: "lb-tests",
    name: "lab-client",
};
pub const LB_DEMO: Binary = Binary {
    package: "lb-tests",
    name: "lb-demo",
};
pub const LB_BENCH: Binary = Binary {
    package: "lb-tests",
    name: "lb-bench",
};
/// The peer lab bench: HTTP through lbd, nftables and no balancer.
pub const LB_PEER_BENCH: Binary = Binary {
    package: "lb-tests",
    name: "lb-peer-bench",
};

/// What each task runs. The first entry of a lab task is the program the
/// task starts (the bench starts its first [`BENCH_PROGRAMS`], one after the
/// other); the others are what those programs start in turn.
pub const AGENT: &[Binary] = &[LBD];
pub const DEMO: &[Binary] = &[LB_DEMO, LBD, LAB_SERVER, LAB_CLIENT];
pub const BENCH: &[Binary] = &[LB_BENCH, LB_PEER_BENCH, LBD, LAB_SERVER, LAB_CLIENT];
/// How many of BENCH's first binaries `cargo xtask bench` starts.
pub const BENCH_PROGRAMS: usize = 2;
/// The integration tests find these next to themselves (cargo builds a
/// package's own binaries for its tests, but not another package's lbd).
pub const LABS: &[Binary] = &[LBD, LAB_SERVER, LAB_CLIENT];

/// A cargo build profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release(release: bool) -> Profile {
        if release {
            Profile::Release
        } else {
            Profile::Debug
        }
    }

    /// The directory under the target directory.
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// Builds `binaries` in `profile` with one cargo command, announced on one
/// line.
pub fn build(profile: Profile, binaries: &[Binary]) -> Result<()> {
    if binaries.is_empty() {
        bail!("nothing to build");
    }
    let names: Vec<&str> = binaries.iter().map(|b| b.name).collect();
    step(format_args!(
        "building {} ({})",
        names.join(", "),
        profile.dir()
    ));
    run(&mut build_command(profile, binaries))
}

/// `cargo build [--release] -p PKG.. --bin NAME..`: cargo accepts bins of
/// several selected packages in one call, so shared dependencies build once.
fn build_command(profile: Profile, binaries: &[Binary]) -> std::process::Command {
    let mut command = exec::cargo();
    command.arg("build");
    if profile == Profile::Release {
        command.arg("--release");
    }
    let mut packages: Vec<&str> = Vec::new();
    for binary in binaries {
        if !packages.contains(&binary.package) {
            packages.push(binary.package);
        }
    }
    for package in packages {
        command.args(["-p", package]);
    }
    for binary in binaries {
        command.args(["--bin", binary.name]);
    }
    command
}

/// Where `binary` lands when built in `profile`.
pub fn path(profile: Profile, binary: Binary) -> PathBuf {
    target_dir().join(profile.dir()).join(binary.name)
}

/// The target directory cargo builds into: `$CARGO_TARGET_DIR` (relative to
/// the workspace root, as cargo reads it) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_command_builds_every_binary_of_a_task() {
        let described = exec::describe(&build_command(Profile::Release, DEMO));
        assert_eq!(
            described,
            "cargo build --release -p lb-tests -p lb-userspace --bin lb-demo --bin lbd \
             --bin lab-server --bin lab-client"
        );
        let described = exec::describe(&build_command(Profile::Debug, AGENT));
        assert_eq!(described, "cargo build -p lb-userspace --bin lbd");
    }

    /// A lab program looks for lbd, lab-server and lab-client next to
    /// itself: every task that starts one must build them in its profile.
    #[test]
    fn lab_tasks_build_what_their_program_starts() {
        for task in [DEMO, BENCH] {
            for needed in LABS {
                assert!(
                    task.contains(needed),
                    "{} does not build {}",
                    task[0].name,
                    needed.name
                );
            }
        }
    }
}
