//! `cargo xtask install`: puts the release agent, its systemd unit, the README
//! and (only when none is there yet) an example config in place, under a
//! root directory (`/` on a real machine, a staging directory for images and
//! the VM test).

use crate::exec::{note, step};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Where the unit in packaging/ expects the binary.
const UNIT_PREFIX: &str = "/usr/local";
const UNIT_FILE: &str = "etc/systemd/system/lbd.service";
const CONFIG_FILE: &str = "etc/lb/lbd.toml";

/// Where things go: `root` is prepended to every path, `prefix` is where
/// the binary and docs live as the installed system sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
    pub prefix: PathBuf,
}

/// One file to install.
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    pub what: &'static str,
    /// Path on the installed system (without `root`).
    pub path: PathBuf,
    pub mode: u32,
    /// Leave an existing file alone (the operator's config).
    pub keep_existing: bool,
}

impl Layout {
    pub fn new(root: Option<PathBuf>, prefix: Option<PathBuf>) -> Result<Layout> {
        let prefix = prefix.unwrap_or_else(|| PathBuf::from(UNIT_PREFIX));
        if !prefix.is_absolute() {
            bail!(
                "--prefix must be an absolute path as the installed system sees it (like {UNIT_PREFIX}), not {}",
                prefix.display()
            );
        }
        Ok(Layout {
            root: root.unwrap_or_else(|| PathBuf::from("/")),
            prefix,
        })
    }

    /// The binary's path on the installed system.
    pub fn binary(&self) -> PathBuf {
        self.prefix.join("sbin/lbd")
    }

    /// What gets installed, in order.
    pub fn items(&self) -> Vec<Item> {
        vec![
            Item {
                what: "the agent",
                path: self.binary(),
                mode: 0o755,
                keep_existing: false,
            },
            Item {
                what: "the systemd unit",
                path: Path::new("/").join(UNIT_FILE),
                mode: 0o644,
                keep_existing: false,
            },
            Item {
                what: "the README",
                path: self.prefix.join("share/doc/lb/README.md"),
                mode: 0o644,
                keep_existing: false,
            },
            Item {
                what: "the example config",
                path: Path::new("/").join(CONFIG_FILE),
                mode: 0o640,
                keep_existing: true,
            },
        ]
    }

    /// `path` (absolute on the installed system) under `root`.
    pub fn staged(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// The unit with the binary and docs moved from /usr/local to `prefix`.
pub fn render_unit(unit: &str, layout: &Layout) -> String {
    let prefix = layout.prefix.to_string_lossy();
    unit.replace(&format!("{UNIT_PREFIX}/"), &format!("{prefix}/"))
}

/// Installs the files; `sources` gives each item's content (same order as
/// [`Layout::items`]). Returns what it did, one line per item.
pub fn install(layout: &Layout, sources: &[Vec<u8>]) -> Result<Vec<String>> {
    let items = layout.items();
    assert_eq!(items.len(), sources.len(), "one source per item");
    let mut done = Vec::new();
    for (item, content) in items.iter().zip(sources) {
        let target = layout.staged(&item.path);
        if item.keep_existing && target.exists() {
            done.push(format!(
                "kept {} ({}): it exists, and is never overwritten",
                target.display(),
                item.what
            ));
            continue;
        }
        write_file(&target, content, item.mode)
            .with_context(|| format!("could not install {} as {}", item.what, target.display()))?;
        done.push(format!("installed {} as {}", item.what, target.display()));
    }
    Ok(done)
}

/// Writes next to `target` and renames over it: a running lbd keeps its
/// old binary, and nobody sees a half-written file.
fn write_file(target: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = target
        .parent()
        .with_context(|| format!("{} has no parent directory", target.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = target
        .file_name()
        .with_context(|| format!("{} has no file name", target.display()))?;
    let temp = dir.join(format!(".{}.new", name.to_string_lossy()));
    std::fs::write(&temp, content).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", temp.display()))?;
    std::fs::rename(&temp, target)
        .with_context(|| format!("renaming {} to {}", temp.display(), target.display()))
}

/// The operator's next steps after an install.
pub fn next_steps(layout: &Layout) -> Vec<String> {
    let config = Path::new("/").join(CONFIG_FILE);
    let mut steps = vec![
        format!(
            "edit {}: name this node [node.<hostname>] with its interface and xdp_mode, and your services",
            config.display()
        ),
        format!(
            "check it: {} check {}",
            layout.binary().display(),
            config.display()
        ),
    ];
    if layout.root == Path::new("/") {
        steps.push("start it: systemctl daemon-reload && systemctl enable --now lbd".into());
        steps.push("watch it: systemctl status lbd; journalctl -u lbd -f".into());
    } else {
        steps.push(format!(
            "copy {} onto the target machine, then: systemctl daemon-reload && systemctl enable --now lbd",
            layout.root.display()
        ));
    }
    steps
}

/// Reads the sources from the workspace and a built binary, installs, and
/// reports.
pub fn run(layout: &Layout, workspace: &Path, lbd: &Path) -> Result<()> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("could not read {}", path.display()))
    };
    let unit = String::from_utf8(read(&workspace.join("packaging/lbd.service"))?)
        .context("packaging/lbd.service is not UTF-8")?;
    let sources = vec![
        read(lbd)?,
        render_unit(&unit, layout).into_bytes(),
        read(&workspace.join("README.md"))?,
        read(&workspace.join("examples/horizon.toml"))?,
    ];
    step(format_args!("installing into {}", layout.root.display()));
    for line in install(layout, &sources)? {
        note(line);
    }
    step("next");
    for line in next_steps(layout) {
        note(line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-install-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_unit_follows_the_prefix() {
        let unit = "ExecStart=/usr/local/sbin/lbd run\nExecStopPost=/usr/local/sbin/lbd stop\n";
        let layout = Layout::new(None, Some("/opt/lb".into())).unwrap();
        assert_eq!(
            render_unit(unit, &layout),
            "ExecStart=/opt/lb/sbin/lbd run\nExecStopPost=/opt/lb/sbin/lbd stop\n"
        );
        let default = Layout::new(None, None).unwrap();
        assert_eq!(render_unit(unit, &default), unit);
        assert!(Layout::new(None, Some("opt".into())).is_err());
    }

    #[test]
    fn installs_under_the_root_and_never_overwrites_the_config() {
        let root = scratch("root");
        let layout = Layout::new(Some(root.clone()), None).unwrap();
        let sources = |tag: &str| -> Vec<Vec<u8>> {
            ["bin", "unit", "readme", "config"]
                .iter()
                .map(|what| format!("{what} {tag}").into_bytes())
                .collect()
        };
        let first = install(&layout, &sources("one")).unwrap();
        assert_eq!(first.len(), 4);
        assert!(
            first.iter().all(|line| line.starts_with("installed")),
            "{first:?}"
        );
        let second = install(&layout, &sources("two")).unwrap();
        assert!(second[3].starts_with("kept"), "{second:?}");

        let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
        assert_eq!(read("usr/local/sbin/lbd"), "bin two");
        assert_eq!(read("etc/systemd/system/lbd.service"), "unit two");
        assert_eq!(read("usr/local/share/doc/lb/README.md"), "readme two");
        assert_eq!(read("etc/lb/lbd.toml"), "config one");
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &str| {
            std::fs::metadata(root.join(path))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("usr/local/sbin/lbd"), 0o755);
        assert_eq!(mode("etc/lb/lbd.toml"), 0o640);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
