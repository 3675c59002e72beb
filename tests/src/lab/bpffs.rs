//! A private bpffs instance for tests that pin maps and links without
//! touching the host's /sys/fs/bpf: mounted at a scratch path, unmounted
//! with everything pinned in it on drop.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

pub struct PrivateBpffs(PathBuf);

impl PrivateBpffs {
    /// Mounts one at `<tmp>/lbt-bpffs-<tag>-<pid>`.
    pub fn mount(tag: &str) -> Result<PrivateBpffs> {
        let dir = std::env::temp_dir().join(format!("lbt-bpffs-{tag}-{}", std::process::id()));
        lb_userspace::dataplane::pins::ensure_bpffs(&dir)?;
        let fs = PrivateBpffs(dir);
        ensure!(
            lb_userspace::dataplane::pins::is_bpffs(&fs.0)?,
            "{} is not a bpffs after mounting one there",
            fs.0.display()
        );
        Ok(fs)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}
