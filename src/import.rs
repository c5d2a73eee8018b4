//! `convcg import`: a real slice of `shared/data/` into a canonical-schema dataset directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use convcg_data::import::{Imported, Source, import};
use convcg_data::io::{Format, WriteOptions, write_log};

use crate::output::write_atomic;

/// Name of the dataset config written beside the tables.
pub const DATASET_CONFIG_FILE: &str = "dataset.toml";

/// Imports `src` (the slice's folder or file) as `source` into `out`: the tables in `format`,
/// `dataset.toml` (the `[data]` settings that suit the slice) and the id dictionaries under
/// `dictionaries/`, each file written atomically. Returns what was imported, for its report.
///
/// # Errors
/// If the source cannot be read or is malformed (the error names the file, row and column), or
/// `out` cannot be written.
pub fn import_dataset(source: Source, src: &Path, out: &Path, format: Format) -> Result<Imported> {
    let imported = import(source, src)
        .with_context(|| format!("importing {source} from {}", src.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let opts = WriteOptions {
        format,
        ..WriteOptions::default()
    };
    write_log(out, &imported.log, &opts)
        .with_context(|| format!("writing the tables to {}", out.display()))?;
    write_atomic(
        &out.join(DATASET_CONFIG_FILE),
        imported.dataset_toml.as_bytes(),
    )?;
    for dict in &imported.dictionaries {
        let path: PathBuf = out.join(dict.relative_path());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_atomic(&path, dict.to_csv().as_bytes())?;
    }
    Ok(imported)
}
