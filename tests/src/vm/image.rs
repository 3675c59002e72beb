//! The VM's base image: Debian bookworm with Debian's kernel and systemd,
//! built once by tests/vm/build-image.sh (debootstrap) and cached under
//! /var/cache/lb-vm/<hash of that script>, so a changed recipe gets a new
//! image and an unchanged one is reused across runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The recipe; its hash names the cache entry.
const RECIPE: &str = include_str!("../../vm/build-image.sh");

pub const CACHE_DIR: &str = "/var/cache/lb-vm";

/// A built image: kernel, initramfs and root file system.
#[derive(Clone, Debug)]
pub struct BaseImage {
    pub dir: PathBuf,
}

impl BaseImage {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }

    fn complete(&self) -> bool {
        [self.kernel(), self.initrd(), self.rootfs()]
            .iter()
            .all(|path| path.is_file())
    }
}

/// The cache key: a 128-bit SipHash of the recipe with fixed keys, the
/// same on every machine and build (std's hasher promises neither).
pub fn recipe_key() -> String {
    key_of(RECIPE)
}

fn key_of(recipe: &str) -> String {
    use std::hash::Hasher;
    let mut hasher = siphasher::sip128::SipHasher13::new_with_keys(0x6c62_766d, 0x696d_6167);
    hasher.write(recipe.as_bytes());
    format!(
        "{:032x}",
        siphasher::sip128::Hasher128::finish128(&hasher).as_u128()
    )
}

/// The cached image, built first when missing (debootstrap: about five
/// minutes and 200 MB of downloads from the Debian mirror).
pub fn ensure() -> Result<BaseImage> {
    let image = BaseImage {
        dir: Path::new(CACHE_DIR).join(recipe_key()),
    };
    if image.complete() {
        return Ok(image);
    }
    if image.dir.exists() {
        bail!(
            "{} exists but lacks vmlinuz, initrd.img or rootfs.ext4; remove it to rebuild",
            image.dir.display()
        );
    }
    for tool in ["debootstrap", "mkfs.ext4"] {
        if which(tool).is_none() {
            bail!("{tool} is missing: it builds the VM image; install it (cargo xtask setup does)");
        }
    }
    std::fs::create_dir_all(CACHE_DIR).with_context(|| format!("creating {CACHE_DIR}"))?;
    let recipe = Path::new(CACHE_DIR).join(format!("{}.build-image.sh", recipe_key()));
    std::fs::write(&recipe, RECIPE).with_context(|| format!("writing {}", recipe.display()))?;
    eprintln!(
        "building the VM image {} with debootstrap (about five minutes, once)",
        image.dir.display()
    );
    let started = Instant::now();
    let status = Command::new("sh")
        .arg(&recipe)
        .arg(&image.dir)
        .status()
        .context("could not run the VM image recipe with sh")?;
    let _ = std::fs::remove_file(&recipe);
    if !status.success() || !image.complete() {
        bail!(
            "building the VM image failed ({status}); debootstrap's messages are above \
             (is the Debian mirror reachable?)"
        );
    }
    eprintln!("VM image built in {:.0?}", started.elapsed());
    Ok(image)
}

/// The full path of `program` on PATH, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_recipe() {
        let key = recipe_key();
        assert_eq!(key.len(), 32);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(key, key_of(RECIPE));
        assert_ne!(key, key_of(&format!("{RECIPE}\n# changed")));
    }
}
