//! `/var/lib/lbd/<node>.state`: what must survive an agent restart and is not
//! in the config: the operator's admin states, and the id tables (the pinned
//! maps hold ids, so a new agent must hand out the same ones even when the
//! config changed while no agent ran). JSON, written atomically (temp file,
//! fsync, rename), so a crash leaves the old file or the new one.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::admin_view::AdminView;
use crate::control::AdminState;
use crate::{health::BackendKey, ids::IdSnapshot};

/// Where the state files live.
pub const STATE_DIR: &str = "/var/lib/lbd";

/// Bumped when the layout changes incompatibly.
const VERSION: u32 = 1;

/// The saved state of one node's agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    /// `service/backend` -> state, only backends not ready.
    pub admin: BTreeMap<String, AdminState>,
    pub service_ids: IdSnapshot,
    pub backend_ids: IdSnapshot,
}

impl SavedState {
    pub fn new(admin: &AdminView, service_ids: IdSnapshot, backend_ids: IdSnapshot) -> Self {
        SavedState {
            version: VERSION,
            admin: admin
                .not_ready()
                .map(|(key, state)| (key.to_string(), state))
                .collect(),
            service_ids,
            backend_ids,
        }
    }

    /// The admin states as a view. A key without `/` cannot name a backend
    /// and is skipped (service names cannot contain `/`).
    pub fn admin_view(&self) -> AdminView {
        AdminView::with(self.admin.iter().filter_map(|(key, state)| {
            let (service, backend) = key.split_once('/')?;
            Some((BackendKey::new(service, backend), *state))
        }))
    }
}

/// `/var/lib/lbd/<node>.state`.
pub fn path_for(node: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{node}.state"))
}

/// Reads the state file; `None` when there is none (a fresh start).
pub fn load(path: &Path) -> Result<Option<SavedState>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(&text).map(Some).with_context(|| {
        format!(
            "{} is not a valid lbd state file; fix it, or move it away to start with every \
             backend ready and ids assigned afresh (only safe after `lbd stop --detach`)",
            path.display()
        )
    })
}

/// [`load`], but a file that cannot be read as a state file is renamed to
/// `<file>.corrupt-<unix seconds>` with a warning and the agent starts as
/// on a fresh node (every backend ready, ids assigned in config order,
/// which is what an agent without a state file on the same config gave
/// them). Only an I/O error other than "no such file" stops the start.
pub fn load_or_set_aside(path: &Path, now: SystemTime) -> Result<Option<SavedState>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    match parse(&text) {
        Ok(saved) => Ok(Some(saved)),
        Err(e) => {
            let aside = set_aside_path(path, now);
            std::fs::rename(path, &aside).with_context(|| {
                format!(
                    "{} is not a valid lbd state file ({e:#}) and could not be moved to {}",
                    path.display(),
                    aside.display()
                )
            })?;
            tracing::warn!(
                "{} is not a valid lbd state file ({e:#}); moved to {}, starting with every \
                 backend ready",
                path.display(),
                aside.display()
            );
            Ok(None)
        }
    }
}

/// Where a corrupt state file is moved.
pub fn set_aside_path(path: &Path, now: SystemTime) -> PathBuf {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    path.with_file_name(name)
}

fn parse(text: &str) -> Result<SavedState> {
    let saved: SavedState = serde_json::from_str(text)?;
    anyhow::ensure!(
        saved.version == VERSION,
        "it has version {}, this lbd reads version {VERSION}",
        saved.version
    );
    Ok(saved)
}

/// Writes `state` to `path` atomically, creating the directory (0750).
pub fn save(path: &Path, state: &SavedState) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().context("a state file path has a directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut text = serde_json::to_string_pretty(state).context("encoding the state")?;
    text.push('\n');
    let tmp = path.with_extension("state.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IdTable;
    use std::time::Duration;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbd-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("node.state")
    }

    #[test]
    fn a_saved_state_loads_back_the_same() {
        let path = scratch("roundtrip");
        assert_eq!(load(&path).unwrap(), None, "no file: fresh start");
        let mut ids = IdTable::new(16);
        ids.sync(["web/be1", "web/be2"], 0, Duration::from_secs(60))
            .unwrap();
        let admin = AdminView::with([
            (BackendKey::new("web", "be2"), AdminState::Maint),
            (BackendKey::new("web", "be1"), AdminState::Drain),
        ]);
        let state = SavedState::new(&admin, IdSnapshot::default(), ids.snapshot());
        save(&path, &state).unwrap();
        save(&path, &state).unwrap();
        let back = load(&path).unwrap().expect("saved");
        assert_eq!(back, state);
        assert_eq!(back.admin_view(), admin);
        assert!(
            !path.with_extension("state.tmp").exists(),
            "the temp file is renamed"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_the_start_is_fresh() {
        let path = scratch("aside");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(load_or_set_aside(&path, now).unwrap(), None, "no file");
        std::fs::write(&path, "{ half a fi").unwrap();
        assert_eq!(load_or_set_aside(&path, now).unwrap(), None);
        let aside = path.with_file_name("node.state.corrupt-1800000000");
        assert_eq!(set_aside_path(&path, now), aside);
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "{ half a fi");
        assert!(!path.exists(), "the corrupt file is moved, not left");
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(load_or_set_aside(&path, now).unwrap(), None, "not UTF-8");
        let state = SavedState::new(
            &AdminView::with([(BackendKey::new("web", "be1"), AdminState::Drain)]),
            IdSnapshot::default(),
            IdSnapshot::default(),
        );
        save(&path, &state).unwrap();
        assert_eq!(load_or_set_aside(&path, now).unwrap(), Some(state));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_the_file() {
        let path = scratch("readonly");
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let state = SavedState::default();
        // Root ignores mode bits: a directory in the way of the temp file
        // stands for a state directory that refuses writes.
        std::fs::create_dir_all(path.with_extension("state.tmp")).unwrap();
        let err = format!("{:#}", save(&path, &state).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!path.exists(), "nothing half-written");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file() {
        let path = scratch("corrupt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{ not json").unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("move it away"), "{err}");
        std::fs::write(
            &path,
            r#"{"version": 99, "admin": {}, "service_ids": {"by_name": {}, "resting": {}},
               "backend_ids": {"by_name": {}, "resting": {}}}"#,
        )
        .unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("version 99"), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
