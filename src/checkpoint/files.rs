//! Checkpoint files in a run directory: their names, listing newest first, pruning to the
//! newest [`KEEP`], and finding the newest one that reads back sound. Every file is written
//! through [`write_atomic_with`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::frame::read_file;
use super::{Checkpoint, CheckpointError, MODEL_FILE};
use crate::fault::FaultPlan;
use crate::output::{is_temp_name, write_atomic_with};

/// The run directory's folder of periodic checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Periodic checkpoints kept: the newest and one fallback.
pub const KEEP: usize = 2;

impl Checkpoint {
    /// Reads and checks the checkpoint at `path`.
    ///
    /// # Errors
    /// A [`CheckpointError`] if the file cannot be read or is not a sound checkpoint.
    pub fn read(path: &Path) -> std::result::Result<Checkpoint, CheckpointError> {
        Checkpoint::decode(&read_file(path)?, path)
    }

    /// Writes it to `path` atomically, through `faults` (the test-only seam). On error `path`
    /// is as it was and no temporary file is left.
    ///
    /// # Errors
    /// The I/O error of the step that failed.
    pub fn write(&self, path: &Path, faults: &FaultPlan) -> std::io::Result<()> {
        write_atomic_with(path, &self.encode(), faults)
    }
}

/// The file name of the periodic checkpoint after `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:08}.ckpt")
}

/// The step a periodic checkpoint's file name stands for, if it is one.
fn step_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?.strip_suffix(".ckpt")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The periodic checkpoints in `dir`, newest first (an absent directory has none).
///
/// # Errors
/// If the directory exists but cannot be listed.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if let Some(step) = entry.file_name().to_str().and_then(step_of) {
            found.push((step, entry.path()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// Removes temporary files that an interrupted checkpoint write left in `dir`; returns them.
pub fn remove_stale_temp_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if (is_temp_name(name, "step-") || is_temp_name(name, MODEL_FILE))
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed.push(entry.path());
        }
    }
    removed
}

/// Deletes all but the newest [`KEEP`] periodic checkpoints in `dir`.
///
/// # Errors
/// If the directory cannot be listed or a file cannot be removed.
pub fn prune(dir: &Path) -> Result<()> {
    for (_, path) in list_checkpoints(dir)?.into_iter().skip(KEEP) {
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the old checkpoint {}", path.display()))?;
    }
    Ok(())
}

/// What [`newest_usable`] found: the checkpoint, its path, and every newer file it refused
/// (each with its reason), which the caller should report.
#[derive(Debug)]
pub struct Found {
    /// The newest checkpoint that reads back sound.
    pub checkpoint: Checkpoint,
    /// Its file.
    pub path: PathBuf,
    /// Newer checkpoints that were refused, newest first.
    pub refused: Vec<CheckpointError>,
}

/// The newest checkpoint in `dir` that reads back sound, falling back past unusable ones.
///
/// # Errors
/// If there is no checkpoint at all, or none is usable (the error lists each with its reason).
pub fn newest_usable(dir: &Path) -> Result<Found> {
    let all = list_checkpoints(dir)?;
    if all.is_empty() {
        bail!(
            "no checkpoint in {}: the run stopped before its first checkpoint (see `[train] checkpoint_every` and `checkpoint_every_s`); start it again (`convcg train` with `--force` and the same --out)",
            dir.display()
        );
    }
    let mut refused = Vec::new();
    for (_, path) in all {
        match Checkpoint::read(&path) {
            Ok(checkpoint) => {
                return Ok(Found {
                    checkpoint,
                    path,
                    refused,
                });
            }
            Err(e) => refused.push(e),
        }
    }
    let reasons: Vec<String> = refused.iter().map(ToString::to_string).collect();
    bail!(
        "no usable checkpoint in {}:\n  {}",
        dir.display(),
        reasons.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_checkpoint_names_parse_and_sort_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        for s in [3u64, 120, 40] {
            std::fs::write(dir.path().join(checkpoint_name(s)), b"x").unwrap();
        }
        std::fs::write(dir.path().join("step-12.ckpt.bad"), b"x").unwrap();
        std::fs::write(dir.path().join(".step-00000050.ckpt.tmp-7"), b"x").unwrap();
        let steps: Vec<u64> = list_checkpoints(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, [120, 40, 3]);
        assert_eq!(remove_stale_temp_files(dir.path()).len(), 1);
        prune(dir.path()).unwrap();
        let steps: Vec<u64> = list_checkpoints(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, [120, 40]);
        assert_eq!(step_of("step-.ckpt"), None);
        assert_eq!(step_of("step-1a.ckpt"), None);
    }
}
