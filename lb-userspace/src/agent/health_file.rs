//! `/run/lbd/<node>.health`: which checked backends the health checks held
//! DOWN, so that a restarted agent (kill -9, crash, `systemctl restart`)
//! does not send new clients to a dead server for `fall` checks while it
//! relearns that. It lives in /run, not beside the state file: a health
//! verdict is worth nothing after a reboot, where HAProxy's rule (every
//! backend starts UP) applies again. JSON, written atomically like the
//! state file; one that cannot be read is ignored with a warning (health is
//! relearned by the checks within `fall` intervals anyway).

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::health::BackendKey;

const VERSION: u32 = 1;

/// The backends held DOWN by their checks, `service/backend` -> when they
/// went DOWN (Unix ms, 0 when not known).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedHealth {
    pub version: u32,
    pub down: BTreeMap<String, u64>,
}

impl SavedHealth {
    pub fn new<'a>(down: impl IntoIterator<Item = (&'a BackendKey, u64)>) -> Self {
        SavedHealth {
            version: VERSION,
            down: down
                .into_iter()
                .map(|(key, at)| (key.to_string(), at))
                .collect(),
        }
    }

    /// The backends held DOWN, with when. A key without `/` names no
    /// backend and is skipped.
    pub fn down(&self) -> Vec<(BackendKey, u64)> {
        self.down
            .iter()
            .filter_map(|(key, at)| {
                let (service, backend) = key.split_once('/')?;
                Some((BackendKey::new(service, backend), *at))
            })
            .collect()
    }
}

/// `/run/lbd/<node>.health`.
pub fn path_for(node: &str) -> PathBuf {
    Path::new(crate::paths::RUN_DIR).join(format!("{node}.health"))
}

/// Reads the health file: `None` when there is none or it cannot be read
/// as one (with a warning: the checks relearn health in any case).
pub fn load(path: &Path) -> Option<SavedHealth> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "{} cannot be read ({e}); every backend starts UP",
                path.display()
            );
            return None;
        }
    };
    match parse(&text) {
        Ok(saved) => Some(saved),
        Err(e) => {
            tracing::warn!(
                "{} is not a valid lbd health file ({e:#}); every backend starts UP",
                path.display()
            );
            None
        }
    }
}

fn parse(text: &str) -> Result<SavedHealth> {
    let saved: SavedHealth = serde_json::from_str(text)?;
    anyhow::ensure!(
        saved.version == VERSION,
        "it has version {}, this lbd reads version {VERSION}",
        saved.version
    );
    Ok(saved)
}

/// Writes `health` to `path` atomically (temp file, fsync, rename).
pub fn save(path: &Path, health: &SavedHealth) -> Result<()> {
    let mut text = serde_json::to_string_pretty(health).context("encoding the health")?;
    text.push('\n');
    let tmp = path.with_extension("health.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbd-health-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("node.health")
    }

    #[test]
    fn saved_health_loads_back_and_bad_files_are_ignored() {
        let path = scratch("roundtrip");
        assert_eq!(load(&path), None, "no file: every backend UP");
        let be2 = BackendKey::new("web", "be2");
        let saved = SavedHealth::new([(&be2, 1_700_000_000_000)]);
        save(&path, &saved).unwrap();
        let back = load(&path).expect("saved");
        assert_eq!(back, saved);
        assert_eq!(back.down(), vec![(be2, 1_700_000_000_000)]);
        assert!(!path.with_extension("health.tmp").exists());

        std::fs::write(&path, "{ torn").unwrap();
        assert_eq!(load(&path), None, "a torn file is ignored");
        std::fs::write(&path, r#"{"version": 7, "down": {}}"#).unwrap();
        assert_eq!(load(&path), None, "another version is ignored");
        std::fs::write(&path, r#"{"version": 1, "down": {"nokey": 1, "a/b": 2}}"#).unwrap();
        assert_eq!(
            load(&path).unwrap().down(),
            vec![(BackendKey::new("a", "b"), 2)]
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
