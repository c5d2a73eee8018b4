//! Where a table lives in a dataset directory: `NAME.parquet`, `NAME.csv`, or a folder of
//! Parquet part files (`NAME/` or, as Spark names it, `NAME.parquet/`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Location, Result};
use crate::io::Table;

/// The files of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Parquet files, in the order their rows are read.
    Parquet(Vec<PathBuf>),
    /// One CSV file with a header.
    Csv(PathBuf),
}

impl Source {
    /// The files, in reading order.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        match self {
            Source::Parquet(files) => files.clone(),
            Source::Csv(file) => vec![file.clone()],
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Finds `table` in `dir`: `None` if it is absent; an error if it is there in two forms, or is
/// a folder without part files.
pub(crate) fn locate(dir: &Path, table: Table) -> Result<Option<Source>> {
    let name = table.name();
    let parquet = dir.join(format!("{name}.parquet"));
    let csv = dir.join(format!("{name}.csv"));
    let folder = dir.join(name);
    let forms: Vec<&PathBuf> = [&parquet, &csv, &folder]
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    match forms.as_slice() {
        [] => Ok(None),
        [one] => source(one, &csv).map(Some),
        [first, second, ..] => Err(Error::BadInput {
            at: Location::file(*first),
            message: format!(
                "the `{name}` table is there in two forms, {} and {}: keep one",
                first.display(),
                second.display()
            ),
        }),
    }
}

fn source(path: &Path, csv: &Path) -> Result<Source> {
    if path.is_dir() {
        return part_files(path).map(Source::Parquet);
    }
    if path == csv {
        Ok(Source::Csv(path.to_owned()))
    } else {
        Ok(Source::Parquet(vec![path.to_owned()]))
    }
}

/// The `*.parquet` files of a folder in file-name order, leaving out hidden and bookkeeping
/// files and folders (`.part-0.crc`, `_SUCCESS`, `_common_metadata`, Spark's `_temporary/`, a
/// writer's `.NAME.tmp-*`). Any other subfolder is an error: it is most likely a partition of a
/// Hive-style partitioned write (`ts_day=19700/`), whose rows would otherwise go unread.
fn part_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|e| io_error(folder, e))? {
        let entry = entry.map_err(|e| io_error(folder, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let visible = !name.starts_with('.') && !name.starts_with('_');
        let path = entry.path();
        if !visible {
            continue;
        }
        if path.is_dir() {
            return Err(Error::BadInput {
                at: Location::file(&path),
                message: "a table folder holds Parquet part files, not folders: a partitioned \
                          (Hive-style `column=value/`) write is not read; write the table \
                          without partitioning"
                    .to_owned(),
            });
        }
        if name.ends_with(".parquet") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::BadInput {
            at: Location::file(folder),
            message: "a table folder must hold at least one `*.parquet` part file".to_owned(),
        });
    }
    Ok(files)
}
