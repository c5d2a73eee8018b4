//! Files written so that a reader never sees half of one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::fault::{FaultPlan, WriteStage};

/// Writes `bytes` to `path` through a temporary file in the same directory, synced and then
/// renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, &FaultPlan::none())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The temporary file [`write_atomic_with`] writes before renaming it to `path`: a hidden
/// name in the same directory (a rename only stays atomic within one file system), with the
/// process id so that two processes never share one.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether `name` is a temporary file left by [`write_atomic_with`] for a target named
/// `target_prefix...` (any process).
pub(crate) fn is_temp_name(name: &str, target_prefix: &str) -> bool {
    name.starts_with(&format!(".{target_prefix}")) && name.contains(".tmp-")
}

/// [`write_atomic`] in explicit steps — create the temporary file, write, fsync, rename over
/// `path`, fsync the directory — consulting `faults` between them (the test-only seam). On
/// error the temporary file is removed, and `path` is as it was.
pub(crate) fn write_atomic_with(path: &Path, bytes: &[u8], faults: &FaultPlan) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        ));
    }
    let n = faults.begin_write()?;
    let tmp = temp_path(path);
    let steps = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        faults.after_stage(n, WriteStage::Created);
        faults.write_all(&mut f, bytes)?;
        faults.after_stage(n, WriteStage::Written);
        f.sync_all()?;
        faults.after_stage(n, WriteStage::Synced);
        drop(f);
        std::fs::rename(&tmp, path)?;
        faults.after_stage(n, WriteStage::Renamed);
        Ok(())
    };
    if let Err(e) = steps() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory entry is: sync the directory. Some file
    // systems refuse to open or sync a directory; the file itself is already safe there.
    if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        let _ = d.sync_all();
    }
    Ok(())
}
