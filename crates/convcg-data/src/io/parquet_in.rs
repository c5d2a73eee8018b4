//! Parquet tables: every row group of every part file is decoded in parallel straight into its
//! own window of the table's preallocated column buffers, reading only the planned columns.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::Compression;
use rayon::prelude::*;

use crate::error::{Error, Location, Result};
use crate::io::Table;
use crate::io::arrow_in::decode;
use crate::io::columns::{Bad, BadSink, Slot, Values};
use crate::io::plan::{Plan, Rule, bad_column};
use crate::io::table::TableData;

/// Rows per decoded record batch. Small batches keep each batch's Arrow buffers (64 KiB a
/// column) below the allocator's mmap threshold, so they are reused rather than faulted in
/// afresh, which makes the read cheaper than with larger batches or whole row groups (W3 in
/// docs/performance.md).
const BATCH_ROWS: usize = 8 * 1024;

/// One Parquet file: its metadata and where each planned column is in it.
struct PartFile {
    path: PathBuf,
    metadata: ArrowReaderMetadata,
    /// Arrow field index of each planned column, `None` where the file lacks it.
    positions: Vec<Option<usize>>,
}

/// One row group to decode.
struct Unit {
    file: usize,
    row_group: usize,
    rows: usize,
    /// Table row of its first row.
    start: usize,
}

fn bad_file(path: &Path, message: String) -> Error {
    Error::BadInput {
        at: Location::file(path),
        message,
    }
}

/// Runs `f`, turning a panic inside the Parquet decoder into an error: a malformed file must
/// never bring the process down, and the decoder is third-party code that has panicked on
/// fuzzed input before.
fn guarded<T>(path: &Path, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Err(bad_file(
            path,
            format!("malformed Parquet data while {what} (the decoder panicked: {detail})"),
        ))
    })
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn load_metadata(path: &Path) -> Result<ArrowReaderMetadata> {
    let file = open(path)?;
    guarded(path, "reading the footer", || {
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| {
            bad_file(
                path,
                format!("not a readable Parquet file (truncated or corrupt?): {e}"),
            )
        })
    })
}

fn column_names(metadata: &ArrowReaderMetadata) -> Vec<String> {
    metadata
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// Reads a table from its Parquet part files (in order), planning its columns from the first.
pub(crate) fn read_parquet(table: Table, paths: &[PathBuf], core_only: bool) -> Result<TableData> {
    let metadata: Vec<ArrowReaderMetadata> = paths
        .par_iter()
        .map(|p| load_metadata(p))
        .collect::<Result<_>>()?;
    let first_names = metadata.first().map(column_names).unwrap_or_default();
    let plan = Plan::new(table, &first_names, core_only);
    let files = paths
        .iter()
        .zip(metadata)
        .map(|(path, metadata)| part_file(&plan, path, metadata))
        .collect::<Result<Vec<_>>>()?;

    let (units, file_starts) = units(&files)?;
    let rows = units.last().map_or(0, |u| u.start + u.rows);
    let mut values: Vec<Option<Values>> = (0..plan.columns.len())
        .map(|c| {
            let present = files.iter().any(|f| f.positions[c].is_some());
            present.then(|| Values::filled(plan.columns[c].rule, rows))
        })
        .collect();

    let lens: Vec<usize> = units.iter().map(|u| u.rows).collect();
    let mut per_column: Vec<Option<std::vec::IntoIter<Slot<'_>>>> = values
        .iter_mut()
        .map(|v| v.as_mut().map(|v| v.split(&lens).into_iter()))
        .collect();
    let slots: Vec<Vec<Option<Slot<'_>>>> = units
        .iter()
        .map(|_| {
            per_column
                .iter_mut()
                .map(|it| it.as_mut().and_then(Iterator::next))
                .collect()
        })
        .collect();

    let results: Vec<Result<Vec<Bad>>> = units
        .par_iter()
        .zip(slots)
        .map(|(unit, slots)| {
            let file = &files[unit.file];
            guarded(&file.path, "decoding a row group", || {
                decode_unit(&plan, file, unit, slots)
            })
        })
        .collect();
    let mut bad = Vec::new();
    for r in results {
        bad.extend(r?);
    }
    Ok(TableData {
        plan,
        files: files.into_iter().map(|f| f.path).collect(),
        file_starts,
        values,
        rows,
        bad,
    })
}

/// Maps the plan onto one file and checks the types of its planned columns.
fn part_file(plan: &Plan, path: &Path, metadata: ArrowReaderMetadata) -> Result<PartFile> {
    let names = column_names(&metadata);
    let positions = plan.map(path, &names)?;
    let fields = metadata.schema().fields().clone();
    for (spec, position) in plan.columns.iter().zip(&positions) {
        let Some(field) = position.and_then(|p| fields.get(p)) else {
            continue;
        };
        if !spec.rule.accepts(field.data_type()) {
            return Err(bad_column(
                path,
                &spec.name,
                format!(
                    "expected {}, found {}{}",
                    spec.rule.expected(),
                    field.data_type(),
                    cast_hint(spec.rule, field.data_type())
                ),
            ));
        }
    }
    check_codecs(plan, path, &metadata, &positions)?;
    Ok(PartFile {
        path: path.to_owned(),
        metadata,
        positions,
    })
}

/// What to do about a column type that other engines write by default and the rule refuses.
fn cast_hint(rule: Rule, found: &DataType) -> &'static str {
    match (rule, found) {
        (Rule::Ts, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) => {
            "; `ts` holds unix seconds as an integer: cast the column when writing it \
             (docs/data-format.md shows how in each engine)"
        }
        (
            Rule::Dense | Rule::OptFloat | Rule::OptNonNegative,
            DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..),
        ) => "; cast the column to DOUBLE when writing it",
        _ => "",
    }
}

/// The Parquet codec of a column chunk as the format names it, or `None` where this build reads
/// it. The codecs read are the parquet crate's features that the workspace turns on ("snap" and
/// "zstd" in Cargo.toml); a codec without its feature would fail inside the decoder with a
/// message that names a Cargo feature rather than the codec.
fn unreadable_codec(compression: Compression) -> Option<&'static str> {
    match compression {
        Compression::UNCOMPRESSED | Compression::SNAPPY | Compression::ZSTD(_) => None,
        Compression::GZIP(_) => Some("GZIP"),
        Compression::LZO => Some("LZO"),
        Compression::BROTLI(_) => Some("BROTLI"),
        Compression::LZ4 => Some("LZ4"),
        Compression::LZ4_RAW => Some("LZ4_RAW"),
    }
}

/// Refuses a file whose planned columns are compressed with a codec this build does not read,
/// naming the file, the column and the codec (before any row group is decoded).
fn check_codecs(
    plan: &Plan,
    path: &Path,
    metadata: &ArrowReaderMetadata,
    positions: &[Option<usize>],
) -> Result<()> {
    let schema = metadata.parquet_schema();
    for group in metadata.metadata().row_groups() {
        for (leaf, chunk) in group.columns().iter().enumerate() {
            let Some(codec) = unreadable_codec(chunk.compression()) else {
                continue;
            };
            let root = schema.get_column_root_idx(leaf);
            let Some(spec) = positions
                .iter()
                .position(|p| *p == Some(root))
                .map(|c| &plan.columns[c])
            else {
                // A column that is not read may use any codec.
                continue;
            };
            return Err(bad_column(
                path,
                &spec.name,
                format!(
                    "the column is compressed with {codec}, which convcg does not read: it reads \
                     Parquet compressed with ZSTD or SNAPPY, or uncompressed; write the file with \
                     one of those"
                ),
            ));
        }
    }
    Ok(())
}

/// Every row group of every file, with the table row each starts at; and each file's first
/// table row.
fn units(files: &[PartFile]) -> Result<(Vec<Unit>, Vec<usize>)> {
    let mut units = Vec::new();
    let mut file_starts = Vec::with_capacity(files.len());
    let mut start = 0usize;
    for (f, file) in files.iter().enumerate() {
        file_starts.push(start);
        for (g, group) in file.metadata.metadata().row_groups().iter().enumerate() {
            let rows = usize::try_from(group.num_rows()).map_err(|_| {
                bad_file(
                    &file.path,
                    format!(
                        "row group {g} claims {} rows in its metadata",
                        group.num_rows()
                    ),
                )
            })?;
            units.push(Unit {
                file: f,
                row_group: g,
                rows,
                start,
            });
            start = start
                .checked_add(rows)
                .ok_or_else(|| bad_file(&file.path, "the row counts overflow".to_owned()))?;
        }
    }
    Ok((units, file_starts))
}

/// Decodes one row group into its slots; returns its bad cells.
fn decode_unit(
    plan: &Plan,
    file: &PartFile,
    unit: &Unit,
    mut slots: Vec<Option<Slot<'_>>>,
) -> Result<Vec<Bad>> {
    let corrupt = |message: String| {
        bad_file(
            &file.path,
            format!("row group {}: {message}", unit.row_group),
        )
    };
    let mut roots: Vec<usize> = file.positions.iter().flatten().copied().collect();
    roots.sort_unstable();
    roots.dedup();
    let mask = ProjectionMask::roots(file.metadata.parquet_schema(), roots);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
        open(&file.path)?,
        file.metadata.clone(),
    )
    .with_row_groups(vec![unit.row_group])
    .with_projection(mask)
    .with_batch_size(BATCH_ROWS)
    .build()
    .map_err(|e| corrupt(e.to_string()))?;

    let mut bad = Vec::new();
    let mut done = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let n = batch.num_rows();
        if done + n > unit.rows {
            return Err(corrupt(format!(
                "holds more rows than the {} its metadata says",
                unit.rows
            )));
        }
        for (c, spec) in plan.columns.iter().enumerate() {
            if file.positions[c].is_none() {
                continue;
            }
            let (Some(slot), Some(array)) = (slots[c].take(), batch.column_by_name(&spec.name))
            else {
                return Err(corrupt(format!("column `{}` is missing", spec.name)));
            };
            let (head, tail) = slot.split_at(n);
            slots[c] = Some(tail);
            let mut sink = BadSink {
                base: unit.start + done,
                column: c,
                bad: &mut bad,
            };
            decode(array.as_ref(), spec.rule, head, &mut sink)
                .map_err(|m| bad_column(&file.path, &spec.name, m))?;
        }
        done += n;
    }
    if done != unit.rows {
        return Err(corrupt(format!(
            "holds {done} rows, its metadata says {}",
            unit.rows
        )));
    }
    Ok(bad)
}
