//! Finding the programs a lab runs: `lbd` (package lb-userspace) and this
//! package's `lab-server` and `lab-client`.
//!
//! Cargo only tells an integration test where its own package's binaries
//! are (`CARGO_BIN_EXE_*`), and a dependency on lb-userspace's library does
//! not build `lbd`. So binaries are looked up in the target directory of the
//! running executable: `target/<profile>/` (a bin) or its parent (a test in
//! `target/<profile>/deps/`). The test runner builds lbd first
//! (`cargo build -p lb-userspace` with the same profile as the tests;
//! `cargo xtask test` does); failing that, the other profile's lbd is used
//! with a note on stderr. `LBD_BIN` overrides the lbd path.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The `target/<profile>` directory the running executable belongs to.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("could not find the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    Ok(if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

/// `name` (a binary of `package`) next to the running executable, or an
/// error that says how to build it in the same profile.
fn find(name: &str, package: &str) -> Result<PathBuf> {
    let profile = profile_dir()?;
    let path = profile.join(name);
    if !is_executable(&path) {
        let flag = if profile.ends_with("release") {
            " --release"
        } else {
            ""
        };
        bail!(
            "{name} binary missing: expected {}; build it with `cargo build{flag} -p {package} --bin {name}` \
             (`cargo xtask demo`, `bench` and `test` build it themselves)",
            path.display()
        );
    }
    Ok(path)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `lbd` agent to test: `$LBD_BIN`, else next to the running executable.
pub fn lbd() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("LBD_BIN") {
        let path = PathBuf::from(path);
        if !is_executable(&path) {
            bail!(
                "lbd binary missing: LBD_BIN points to {}, which is not an executable",
                path.display()
            );
        }
        return Ok(path);
    }
    let profile = profile_dir()?;
    let same = profile.join("lbd");
    if is_executable(&same) {
        return Ok(same);
    }
    // `cargo xtask test` may build lbd with --release while the tests run
    // in the dev profile: take the other profile's lbd, and say so.
    let target = profile
        .parent()
        .context("the profile directory has no parent")?;
    for other in ["release", "debug"] {
        let candidate = target.join(other).join("lbd");
        if candidate != same && is_executable(&candidate) {
            eprintln!(
                "using {} (no lbd in {})",
                candidate.display(),
                profile.display()
            );
            return Ok(candidate);
        }
    }
    find("lbd", "lb-userspace")
}

pub fn lab_server() -> Result<PathBuf> {
    find("lab-server", "lb-tests")
}

pub fn lab_client() -> Result<PathBuf> {
    find("lab-client", "lb-tests")
}
