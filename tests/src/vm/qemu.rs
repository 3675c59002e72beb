//! Boots the base image under QEMU with a stage disk and collects what the
//! guest reported: the kernel and systemd console on the first serial port,
//! the test's own lines on the second. The guest powers itself off when its
//! test is done; a guest that does not within the timeout is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::image::{BaseImage, which};

/// How the guest ran.
#[derive(Debug)]
pub struct Boot {
    /// Kernel and systemd messages (ttyS0).
    pub console: String,
    /// The test's lines (ttyS1).
    pub report: String,
    pub took: Duration,
    pub accel: Accel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// KVM when this machine can really run guests with it, else TCG
    /// (emulation: slower, but works everywhere). `LB_VM_ACCEL=kvm|tcg`
    /// overrides. A /dev/kvm without the CPU's vmx/svm flag (nested
    /// virtualization not passed through) hangs guests, so both are needed.
    pub fn detect() -> Accel {
        match std::env::var("LB_VM_ACCEL").as_deref() {
            Ok("kvm") => return Accel::Kvm,
            Ok("tcg") => return Accel::Tcg,
            _ => {}
        }
        let cpu_can = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines()
                .filter(|line| line.starts_with("flags"))
                .any(|line| line.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        });
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if cpu_can && device {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// Makes an ext4 image of `dir` (the stage disk, mounted as /dev/vdb).
pub fn make_disk(dir: &Path, disk: &Path, size: &str) -> Result<()> {
    let output = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "lbstage", "-d"])
        .arg(dir)
        .arg(disk)
        .arg(size)
        .output()
        .context("could not run mkfs.ext4 (package e2fsprogs)")?;
    if !output.status.success() {
        bail!(
            "mkfs.ext4 of {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Boots `image` (its root file system copy-on-write, never changed) with
/// `stage` as the second disk; logs go to `scratch`.
pub fn boot(image: &BaseImage, stage: &Path, scratch: &Path, timeout: Duration) -> Result<Boot> {
    let qemu = which("qemu-system-x86_64").context(
        "qemu-system-x86_64 is missing: install the Debian package qemu-system-x86 \
         (cargo xtask setup does)",
    )?;
    let accel = Accel::detect();
    let console = scratch.join("console.log");
    let report = scratch.join("report.log");
    let drive = |path: &Path, extra: &str| {
        let mut arg = std::ffi::OsString::from("file=");
        arg.push(path);
        arg.push(format!(",format=raw,if=virtio{extra}"));
        arg
    };
    let serial = |path: &PathBuf| {
        let mut arg = std::ffi::OsString::from("file:");
        arg.push(path);
        arg
    };
    let mut command = Command::new(qemu);
    command
        .args(accel.args())
        .args([
            "-m", "1024", "-smp", "2", "-display", "none", "-monitor", "none",
        ])
        .args(["-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(image.kernel())
        .arg("-initrd")
        .arg(image.initrd())
        .args([
            "-append",
            "console=ttyS0 root=/dev/vda rw panic=-1 systemd.show_status=1",
        ])
        .arg("-drive")
        .arg(drive(&image.rootfs(), ",snapshot=on"))
        .arg("-drive")
        .arg(drive(stage, ""))
        .arg("-serial")
        .arg(serial(&console))
        .arg("-serial")
        .arg(serial(&report))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().context("could not start QEMU")?;
    let status = loop {
        if let Some(status) = child.try_wait().context("could not poll QEMU")? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the VM ({accel:?}) did not power off within {timeout:?}; its test said:\n{}\n\
                 console ends with:\n{}",
                read_lossy(&report),
                tail(&read_lossy(&console), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    let output = child
        .wait_with_output()
        .context("could not collect QEMU's output")?;
    if !status.success() {
        bail!(
            "QEMU failed ({status}): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(Boot {
        console: read_lossy(&console),
        report: read_lossy(&report),
        took,
        accel,
    })
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
