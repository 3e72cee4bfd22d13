//! Learner progress that is not derivable from the code alone: how many hints of
//! each exercise have been revealed, and the verdict of the last `check` of each.
//! Kept in `.ferriseats/exercises.json` at the workspace root (git-ignored), so it
//! survives rebuilds but never ends up in a commit.
//!
//! `list` re-runs the plain-Rust checks (1–4 and 9), so for them progress can never
//! disagree with the code; the checks that need the real services show the last
//! recorded verdict instead (running them all takes a couple of minutes). `start N`
//! forgets N's verdict: a fresh copy is unsolved.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    /// Exercise number → hints revealed so far.
    #[serde(default)]
    pub hints_revealed: BTreeMap<u32, usize>,
    /// Exercise number → did its last `check` pass?
    #[serde(default)]
    pub last_check: BTreeMap<u32, bool>,
}

/// `<workspace>/.ferriseats/exercises.json`.
pub fn default_path() -> PathBuf {
    workspace_root().join(".ferriseats").join("exercises.json")
}

/// The workspace root, found from this crate's manifest directory at compile time.
pub fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).to_path_buf()
}

impl Progress {
    /// A missing file is a fresh start; a corrupt one is an error worth reporting.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid progress JSON", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Progress::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Write then rename, so an interrupted save never leaves half a file.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }

    /// Reveal one more hint of `exercise` (at most `available`); returns how many are
    /// now revealed.
    pub fn reveal_hint(&mut self, exercise: u32, available: usize) -> usize {
        let revealed = self.hints_revealed.entry(exercise).or_insert(0);
        *revealed = (*revealed + 1).min(available);
        *revealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_revealed_one_at_a_time_and_never_beyond_the_last() {
        let mut progress = Progress::default();
        assert_eq!(progress.reveal_hint(1, 2), 1);
        assert_eq!(progress.reveal_hint(1, 2), 2);
        assert_eq!(progress.reveal_hint(1, 2), 2);
        assert_eq!(progress.reveal_hint(2, 2), 1);
    }

    #[test]
    fn progress_survives_a_save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("ferriseats-progress-{}", std::process::id()));
        let path = dir.join("exercises.json");
        assert_eq!(Progress::load(&path).unwrap(), Progress::default());
        let mut progress = Progress::default();
        progress.reveal_hint(3, 4);
        progress.save(&path).unwrap();
        assert_eq!(Progress::load(&path).unwrap(), progress);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
