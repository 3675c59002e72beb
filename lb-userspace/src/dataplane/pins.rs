//! Where a node's pinned maps and XDP link live on bpffs.
//!
//! bpffs is one per machine, not one per network namespace, so two lab nodes
//! on one host would share pins unless every path carries the node name. The
//! layout version is part of the path too: aya reuses an existing pin without
//! checking its key/value layout, so an agent built for another layout must
//! never find (and misread) these pins.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lb_common::LAYOUT_VERSION;

/// Where bpffs is mounted on a normal system.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Name of the pinned XDP link inside a pin directory.
pub const LINK_PIN: &str = "link";

/// `statfs` magic of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin directory of one node and one map layout:
/// `<bpffs>/lb/<node>/v<LAYOUT_VERSION>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    bpffs: PathBuf,
    node: String,
    path: PathBuf,
}

impl PinDir {
    /// The pin directory of `node` under the bpffs mounted at `bpffs`.
    pub fn new(bpffs: &Path, node: &str) -> Result<Self> {
        check_node_name(node)?;
        let path = node_dir(bpffs, node).join(format!("v{LAYOUT_VERSION}"));
        Ok(PinDir {
            bpffs: bpffs.to_owned(),
            node: node.to_owned(),
            path,
        })
    }

    /// The pin directory of `node` under [`BPFFS_ROOT`].
    pub fn for_node(node: &str) -> Result<Self> {
        Self::new(Path::new(BPFFS_ROOT), node)
    }

    /// Where bpffs is mounted.
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Pin path of the map called `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Pin path of the XDP link.
    pub fn link(&self) -> PathBuf {
        self.path.join(LINK_PIN)
    }

    /// Creates the directory (and its parents) so aya can pin into it.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.path)
            .with_context(|| format!("creating the pin directory {}", self.path.display()))
    }
}

/// `<bpffs>/lb/<node>`: every layout version of one node.
fn node_dir(bpffs: &Path, node: &str) -> PathBuf {
    bpffs.join("lb").join(node)
}

/// A node name becomes one path component (and part of an nft table name):
/// refuse anything that could escape or split it.
pub fn check_node_name(node: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if node.is_empty() || node == "." || node == ".." || !node.chars().all(ok_char) {
        bail!(
            "node name {node:?} cannot name a pin directory: use letters, digits, '-', '_' or '.'"
        );
    }
    Ok(())
}

/// Removes every pin of `node` (all layout versions): unpinning the link
/// detaches the XDP program, and the maps are freed once nothing holds them.
/// Used by `lbd stop --detach`. Returns whether anything was there.
pub fn remove_all(bpffs: &Path, node: &str) -> Result<bool> {
    check_node_name(node)?;
    let dir = node_dir(bpffs, node);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            tracing::info!(path = %dir.display(), "removed the pins: the XDP program is detached");
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing the pins under {}", dir.display())),
    }
}

/// Whether a bpffs is mounted exactly at `path`.
pub fn is_bpffs(path: &Path) -> Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} is not a valid path", path.display()))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and st is a valid out-pointer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(false);
        }
        return Err(e).with_context(|| format!("statfs {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at `path` unless one is already there (minimal systems and
/// some containers boot without it).
pub fn ensure_bpffs(path: &Path) -> Result<()> {
    if is_bpffs(path)? {
        return Ok(());
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("mounting bpffs at {} (needs root)", path.display()));
    }
    tracing::info!(path = %path.display(), "mounted bpffs");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_carry_node_and_layout() {
        let p = PinDir::for_node("lb1").unwrap();
        assert_eq!(
            p.path(),
            Path::new(&format!("/sys/fs/bpf/lb/lb1/v{LAYOUT_VERSION}"))
        );
        assert_eq!(p.map("flows"), p.path().join("flows"));
        assert_eq!(p.link(), p.path().join("link"));
        assert_eq!(p.node(), "lb1");
    }

    #[test]
    fn other_root() {
        let p = PinDir::new(Path::new("/tmp/bpf"), "node-a").unwrap();
        assert!(p.path().starts_with("/tmp/bpf/lb/node-a/"));
    }

    #[test]
    fn rejects_names_that_escape_the_directory() {
        for bad in ["", ".", "..", "a/b", "../x", "lb 1", "lb\"1"] {
            assert!(PinDir::for_node(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["lb1", "lb-2", "node_a", "host.example"] {
            assert!(PinDir::for_node(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn remove_all_of_a_missing_node_is_not_an_error() {
        let dir = std::env::temp_dir().join(format!("lb-pins-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lb/n1/v1")).unwrap();
        std::fs::write(dir.join("lb/n1/v1/flows"), b"x").unwrap();
        assert!(remove_all(&dir, "n1").unwrap());
        assert!(!dir.join("lb/n1").exists());
        assert!(!remove_all(&dir, "n1").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
