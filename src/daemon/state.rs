//! The daemon's state on disk (`state.dir/state.json`): per-relay progress, settled rejected ids
//! and events fetched but not yet written at shutdown. Written atomically (temp file, fsync,
//! rename), so a crash leaves either the old or the new file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::relays::PersistedRelay;
use crate::policy::Note;
use crate::wire::unix_now;

pub const STATE_FILE: &str = "state.json";
/// Settled rejected events (compact), written only when they change.
pub const SETTLED_FILE: &str = "settled.json";
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    /// Unix seconds when the state was written.
    pub saved_at: u64,
    /// Relay URL → what is kept of it across restarts.
    pub relays: BTreeMap<String, PersistedRelay>,
    /// Read from state files of earlier versions only: settled rejected events now live in
    /// [`SETTLED_FILE`], written when they change rather than with every state save.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settled_rejected: Vec<Note>,
    /// Events fetched but not yet written to the host when the daemon stopped.
    pub unsent: Vec<Note>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {dir}: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Loads the saved state. A missing file is a first start (`None`). A file that cannot be read as
/// state is moved aside (never deleted) and the daemon starts fresh.
pub fn load(dir: &Path) -> Result<Option<SavedState>, StateError> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Dir { dir: dir.to_path_buf(), source }),
    };
    match serde_json::from_str::<SavedState>(&text) {
        Ok(s) if s.version == STATE_VERSION => Ok(Some(s)),
        outcome => {
            let why = match outcome {
                Ok(s) => format!("unknown version {}", s.version),
                Err(e) => e.to_string(),
            };
            let aside = dir.join(format!("{STATE_FILE}.unreadable-{}", unix_now()));
            std::fs::rename(&path, &aside).map_err(|source| StateError::Dir { dir: dir.to_path_buf(), source })?;
            tracing::warn!(path = %path.display(), moved_to = %aside.display(), error = %why, "state file unreadable; starting fresh");
            Ok(None)
        }
    }
}

/// Writes the state atomically.
pub fn save(dir: &Path, state: &SavedState) -> Result<(), StateError> {
    write_atomic(dir, STATE_FILE, state)
}

/// Writes the settled rejected events (compact, oldest first) atomically.
pub fn save_settled<'a>(dir: &Path, notes: impl Iterator<Item = &'a Note>) -> Result<(), StateError> {
    let notes: Vec<&Note> = notes.collect();
    write_atomic(dir, SETTLED_FILE, &notes)
}

/// Loads the settled rejected events; none when the file is missing. An unreadable file is moved
/// aside (those ids are then fetched and decided again, nothing is lost).
pub fn load_settled(dir: &Path) -> Vec<Note> {
    let path = dir.join(SETTLED_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else { return Vec::new() };
    match serde_json::from_str::<Vec<Note>>(&text) {
        Ok(notes) => notes,
        Err(e) => {
            let aside = dir.join(format!("{SETTLED_FILE}.unreadable-{}", unix_now()));
            let _ = std::fs::rename(&path, &aside);
            tracing::warn!(path = %path.display(), error = %e, "settled rejected events unreadable; moved aside");
            Vec::new()
        }
    }
}

fn write_atomic<T: Serialize + ?Sized>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Dir { dir: dir.to_path_buf(), source })?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&mut f, value).map_err(std::io::Error::other)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| StateError::Write { path, source })
}

/// Checks at start that the state directory can be written, so a bad `state.dir` fails early.
pub fn check_writable(dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Dir { dir: dir.to_path_buf(), source })?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|source| StateError::Dir { dir: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_missing_file_is_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut s = SavedState { version: STATE_VERSION, saved_at: 42, ..Default::default() };
        s.relays.insert(
            "wss://r1.example".into(),
            PersistedRelay {
                last_connected: Some(40),
                disconnected_at: Some(41),
                negentropy: Some(false),
                ..Default::default()
            },
        );
        s.settled_rejected.push(Note {
            id: "ab".repeat(32),
            pubkey: "cd".repeat(32),
            created_at: 7,
            kind: 1,
            tags: vec![],
            content: String::new(),
            sig: String::new(),
        });
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s.clone()));
        save_settled(dir.path(), s.settled_rejected.iter()).unwrap();
        assert_eq!(load_settled(dir.path()), s.settled_rejected);
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn unreadable_state_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let kept: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(kept.iter().any(|n| n.starts_with("state.json.unreadable-")), "{kept:?}");
    }

    #[test]
    fn unwritable_state_dir_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        assert!(check_writable(&file.join("sub")).is_err());
    }
}
