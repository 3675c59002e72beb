//! Makes a fresh Debian machine ready to build and test lb: root and bpffs
//! where needed, the nightly toolchain with rust-src, bpf-linker, and the
//! Debian packages a task uses. Everything is checked first and installed
//! only when missing, so the common path (all present) takes a moment.

use crate::exec::{self, capture, note, probe, run, step};
use crate::probe as parse;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The bpf-linker release that matches the nightly's LLVM 22 (0.11 wants a
/// system LLVM 23; see docs/architecture.md, "Toolchain pins").
pub const BPF_LINKER_VERSION: &str = "0.10.3";

/// Oldest kernel lb supports: XDP links and BTF maps.
const MIN_KERNEL: (u32, u32) = (6, 1);

const BPFFS: &str = "/sys/fs/bpf";

/// Packages for a network-namespace lab: veth and bridges, offloads,
/// forward-drop rules, map dumps, sysctl.
pub const LAB_PACKAGES: &[&str] = &["iproute2", "ethtool", "nftables", "bpftool", "procps"];

/// The bench's lab, plus the peer bench's HTTP servers and load generator.
pub const BENCH_PACKAGES: &[&str] = &[
    "iproute2", "ethtool", "nftables", "bpftool", "procps", "nginx", "wrk",
];

/// Everything the test suite uses: the lab, packet captures, module
/// loading, keepalived as a real VRRP peer, HAProxy for the migration lab
/// (the pair being replaced), Chromium for the stats page,
/// the systemd VM (debootstrap builds its image, QEMU runs it, mkfs.ext4
/// makes its disks, systemd-analyze verifies the unit), and the peer bench
/// that the suite's last step runs (nginx backends, wrk).
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "bpftool",
    "nftables",
    "tcpdump",
    "keepalived",
    "haproxy",
    "chromium",
    "chromium-driver",
    "procps",
    "kmod",
    "debootstrap",
    "qemu-system-x86",
    "e2fsprogs",
    "systemd",
    "nginx",
    "wrk",
];

/// What a task needs from the machine before it can run.
pub struct Needs {
    /// The task's name in `cargo xtask NAME`, for messages.
    pub task: &'static str,
    /// Why the task must run as root, or `None` when it need not.
    pub root: Option<&'static str>,
    /// Whether bpffs must be mounted (checked only when running as root
    /// for tasks that do not require root).
    pub bpf: bool,
    /// Debian packages the task uses.
    pub packages: &'static [&'static str],
}

/// Checks and installs what `needs` asks for, in order, stopping at the
/// first thing that cannot be fixed.
pub fn ensure(needs: &Needs) -> Result<()> {
    let started = Instant::now();
    step(format_args!("setup for cargo xtask {}", needs.task));
    let root = is_root();
    if let Some(why) = needs.root {
        if !root {
            bail!(
                "cargo xtask {task} must run as root: {why}; try: sudo -E env \"PATH=$PATH\" cargo xtask {task}",
                task = needs.task
            );
        }
        note("running as root");
    }
    if needs.bpf {
        check_kernel()?;
        if root {
            ensure_bpffs()?;
        } else {
            note(format_args!("not root: bpffs at {BPFFS} left unchecked"));
        }
    }
    ensure_nightly()?;
    ensure_bpf_linker()?;
    ensure_packages(needs)?;
    step(format_args!(
        "setup done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn check_kernel() -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("could not read the kernel release from /proc/sys/kernel/osrelease")?;
    let release = release.trim();
    let version = parse::kernel_version(release)
        .with_context(|| format!("could not make sense of the kernel release {release:?}"))?;
    if version < MIN_KERNEL {
        bail!(
            "kernel {release} is older than {}.{}, the oldest lb supports (it needs XDP links and BTF)",
            MIN_KERNEL.0,
            MIN_KERNEL.1
        );
    }
    note(format_args!("kernel {release}"));
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        note("warning: /sys/kernel/btf/vmlinux is missing: the kernel exposes no BTF");
    }
    Ok(())
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("could not read /proc/mounts")?;
    Ok(parse::bpffs_mounted(&mounts, BPFFS))
}

/// XDP links and maps are pinned under bpffs; without it nothing can stay
/// loaded when the agent exits, and the tests cannot run.
fn ensure_bpffs() -> Result<()> {
    if bpffs_mounted()? {
        note(format_args!("bpffs mounted at {BPFFS}"));
        return Ok(());
    }
    step(format_args!("mounting bpffs at {BPFFS}"));
    std::fs::create_dir_all(BPFFS).with_context(|| {
        format!("BPF is not available here: could not create {BPFFS}; is /sys mounted read-only?")
    })?;
    let mounted = run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]));
    if mounted.is_err() || !bpffs_mounted()? {
        bail!(
            "BPF is not available here: mounting bpffs at {BPFFS} failed; the kernel needs \
             CONFIG_BPF_SYSCALL and a container needs CAP_SYS_ADMIN and CAP_BPF"
        );
    }
    Ok(())
}

fn rustup() -> Command {
    Command::new("rustup")
}

/// aya-build compiles the XDP program with `rustup run nightly` and
/// `-Z build-std=core`, which needs the nightly's rust-src.
fn ensure_nightly() -> Result<()> {
    if !exec::on_path("rustup") {
        bail!(
            "rustup is not on PATH: lb builds its XDP program with a nightly toolchain through \
             rustup; install it from https://rustup.rs and run again"
        );
    }
    let toolchains = probe(rustup().args(["toolchain", "list"])).unwrap_or_default();
    if !parse::has_nightly(&toolchains) {
        step("installing the rustup toolchain nightly with rust-src (about a minute)");
        return run(rustup().args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context(
            "installing the nightly toolchain failed; check the network and rustup's message above",
        );
    }
    let components =
        probe(rustup().args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .unwrap_or_default();
    if !parse::has_component(&components, "rust-src") {
        step("adding rust-src to the nightly toolchain (under a minute)");
        return run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))
            .context(
                "adding rust-src to nightly failed; check the network and rustup's message above",
            );
    }
    note("nightly toolchain with rust-src present");
    Ok(())
}

fn ensure_bpf_linker() -> Result<()> {
    let reported = probe(Command::new("bpf-linker").arg("--version"));
    let version = reported.as_deref().and_then(parse::tool_version);
    if version == Some(BPF_LINKER_VERSION) {
        note(format_args!("bpf-linker {BPF_LINKER_VERSION} present"));
        return Ok(());
    }
    match version {
        Some(other) => step(format_args!(
            "replacing bpf-linker {other} with {BPF_LINKER_VERSION}, the release that works with \
             the nightly's LLVM (about 2 minutes)"
        )),
        None => step(format_args!(
            "installing bpf-linker {BPF_LINKER_VERSION} (about 2 minutes)"
        )),
    }
    let spec = format!("bpf-linker@{BPF_LINKER_VERSION}");
    let mut install = exec::cargo();
    install.args(["install", &spec, "--locked"]);
    if version.is_some() {
        install.arg("--force");
    }
    run(&mut install)
        .with_context(|| format!("cargo install {spec} failed; cargo's message is above"))
}

fn ensure_packages(needs: &Needs) -> Result<()> {
    if needs.packages.is_empty() {
        return Ok(());
    }
    let missing = missing_packages(needs.packages)?;
    if missing.is_empty() {
        note(format_args!(
            "Debian packages present: {}",
            needs.packages.join(" ")
        ));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "cargo xtask {} needs these Debian packages, and installing them needs root: {}",
            needs.task,
            missing.join(" ")
        );
    }
    let hint = if missing.contains(&"chromium") {
        " (chromium is large: a few minutes)"
    } else {
        ""
    };
    step(format_args!(
        "installing Debian packages: {}{hint}",
        missing.join(" ")
    ));
    run(apt_get().arg("update"))
        .context("apt-get update failed; check the network and the apt sources (message above)")?;
    let mut install = apt_get();
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing);
    let status = exec::run_status(&mut install)?;
    let still_missing = missing_packages(&missing)?;
    if !status.success() {
        bail!(
            "apt-get install {} failed ({status}); still missing: {}; apt's message is above",
            missing.join(" "),
            if still_missing.is_empty() {
                "none".to_string()
            } else {
                still_missing.join(" ")
            }
        );
    }
    if !still_missing.is_empty() {
        bail!(
            "apt-get install reported success but these packages are still not installed: {}",
            still_missing.join(" ")
        );
    }
    Ok(())
}

/// apt-get that never asks a question and waits for a held lock (a fresh
/// machine may still be running its own apt jobs) instead of failing.
fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=300"]);
    command
}

fn missing_packages<'a>(wanted: &[&'a str]) -> Result<Vec<&'a str>> {
    if !exec::on_path("dpkg-query") {
        bail!(
            "this machine has no dpkg-query, so it is not Debian-like; install these packages \
             with its package manager and run again: {}",
            wanted.join(" ")
        );
    }
    // Unknown packages make dpkg-query exit 1 and complain on stderr; the
    // known ones are still listed on stdout, which is all we read.
    let output = capture(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package}\t${Status}\n"])
            .args(wanted),
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(parse::missing_packages(
        wanted,
        &parse::installed_packages(&stdout),
    ))
}
