//! The README's first command as a new user meets it: `cargo xtask demo`
//! and `cargo xtask bench` on a target directory that holds nothing yet, so
//! a task that leans on another task's leftovers fails here, not on a
//! user's machine.

use crate::artifacts;
use crate::exec::{self, note, run, step};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Runs `cargo xtask demo` and `cargo xtask bench -- --quick`, each in a
/// target directory of its own that is empty when it starts and removed
/// when it ends: each task must build everything it runs by itself.
pub fn demo_and_bench() -> Result<()> {
    let dir = scratch_dir();
    let demo = run_in_empty_target(&dir, &["demo"]);
    let bench = run_in_empty_target(&dir, &["bench", "--", "--quick"]);
    remove(&dir);
    demo.context("`cargo xtask demo` failed from an empty target directory")?;
    bench.context("`cargo xtask bench -- --quick` failed from an empty target directory")
}

/// Under the workspace's own target directory, so `cargo clean` removes a
/// copy left by a killed run, and the next run starts by removing it too.
fn scratch_dir() -> PathBuf {
    artifacts::target_dir().join("fresh-clone")
}

fn run_in_empty_target(dir: &Path, task: &[&str]) -> Result<()> {
    remove(dir);
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "could not create the empty target directory {}",
            dir.display()
        )
    })?;
    step(format_args!(
        "cargo xtask {} with CARGO_TARGET_DIR={} (empty)",
        task.join(" "),
        dir.display()
    ));
    let mut command = exec::cargo();
    command
        .arg("xtask")
        .args(task)
        .env("CARGO_TARGET_DIR", dir)
        // The child is a user's run, not a test step.
        .env_remove("LB_TEST_REQUIRE_ROOT");
    run(&mut command)
}

fn remove(dir: &Path) {
    if dir.exists()
        && let Err(err) = std::fs::remove_dir_all(dir)
    {
        note(format_args!("could not remove {}: {err}", dir.display()));
    }
}
