//! Writing an [`EventLog`] in the canonical schema, one table at a time, each file made under a
//! temporary name, synced, then renamed into place.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::types::Int8Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Float32Array, Int8Array, Int64Array, RecordBatch, StringArray,
    UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io::plan::{CATEGORICAL_PREFIX, DENSE_PREFIX};
use crate::io::{Format, Table, WriteOptions};
use crate::schema::{ConversionKind, EngagementKind, EventLog, Surface};

/// Rows per Arrow batch handed to the Parquet writer: bounds the transient Arrow copy.
const WRITE_BATCH_ROWS: usize = 64 * 1024;

/// Writes `log` into `dir` (created if missing) as `NAME.parquet` / `NAME.csv` per table, or,
/// with `opts.shards > 1`, as folders `NAME/part-00000.parquet`, ... of about equal row counts.
/// Parquet is snappy-compressed, with INT64 ids, FLOAT floats, `surface` / `kind` as
/// dictionary-encoded UTF-8, nullable columns where the record has an `Option`; timestamps and
/// ids written in order are delta-encoded, other integers dictionary-encoded. CSV has a header,
/// an empty field for a null, and floats in their shortest exact decimal form.
/// Every table is written, the optional `users` too (so that reading it back gives the same
/// log); the impressions' optional columns only when present. Each file or folder appears under
/// its final name only once complete and synced, replacing what was there; the table's other
/// forms (a `NAME.csv` beside a new `NAME.parquet`, say) are then removed so that the directory
/// stays readable.
///
/// Errors: [`Error::InvalidArgument`] for bad options (zero rows per row group or shards, CSV
/// in shards) or a log that is not self-consistent (column lengths, `f_*` / `c_*` names);
/// [`Error::Io`] for the file system.
pub fn write_log(dir: &Path, log: &EventLog, opts: &WriteOptions) -> Result<()> {
    opts.validate()?;
    check_log(log)?;
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let tables = [
        (Table::Pins, pin_columns(log)),
        (Table::Users, user_columns(log)),
        (Table::Impressions, impression_columns(log)),
        (Table::Engagements, engagement_columns(log)),
        (Table::Conversions, conversion_columns(log)),
    ];
    tables
        .par_iter()
        .map(|(table, columns)| write_table(dir, *table, columns, opts))
        .collect::<Result<Vec<()>>>()?;
    sync_dir(dir)
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn invalid_log(message: String) -> Error {
    Error::InvalidArgument {
        name: "log",
        message,
    }
}

/// Checks what the writer relies on: full-length columns, one value per named `f_*` / `c_*`
/// column, and names that will read back as what they are.
fn check_log(log: &EventLog) -> Result<()> {
    log.impressions.check_lengths()?;
    check_names(Table::Pins, &log.pin_dense_names, DENSE_PREFIX)?;
    check_names(Table::Users, &log.user_dense_names, DENSE_PREFIX)?;
    check_names(
        Table::Users,
        &log.user_categorical_names,
        CATEGORICAL_PREFIX,
    )?;
    let impression_names: Vec<String> = log
        .impressions
        .categorical
        .iter()
        .map(|c| c.name.clone())
        .collect();
    check_names(Table::Impressions, &impression_names, CATEGORICAL_PREFIX)?;
    if let Some(p) = log
        .pins
        .iter()
        .find(|p| p.dense.len() != log.pin_dense_names.len())
    {
        return Err(invalid_log(format!(
            "pin {} has {} dense values for {} pin_dense_names",
            p.pin_id,
            p.dense.len(),
            log.pin_dense_names.len()
        )));
    }
    if let Some(u) = log.users.iter().find(|u| {
        u.dense.len() != log.user_dense_names.len()
            || u.categorical.len() != log.user_categorical_names.len()
    }) {
        return Err(invalid_log(format!(
            "user {} has {} dense and {} categorical values for {} user_dense_names and {} \
             user_categorical_names",
            u.user_id,
            u.dense.len(),
            u.categorical.len(),
            log.user_dense_names.len(),
            log.user_categorical_names.len()
        )));
    }
    Ok(())
}

fn check_names(table: Table, names: &[String], prefix: &str) -> Result<()> {
    let mut seen = HashSet::new();
    for name in names {
        if !name.starts_with(prefix) || name.len() == prefix.len() {
            return Err(invalid_log(format!(
                "column `{name}` of the `{}` table must be named `{prefix}<something>`",
                table.name()
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(invalid_log(format!(
                "column `{name}` of the `{}` table is named twice",
                table.name()
            )));
        }
    }
    Ok(())
}

/// A column's values as written.
enum Data<'a> {
    I64(Cow<'a, [i64]>),
    OptI64(Cow<'a, [Option<i64>]>),
    OptU32(&'a [Option<u32>]),
    F32(Vec<f32>),
    OptF32(Vec<Option<f32>>),
    /// Enumeration codes, indices into the names (written dictionary-encoded).
    Names(Vec<i8>, &'static [&'static str]),
}

/// How a column is encoded in Parquet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Plain values (floats, which rarely repeat).
    Plain,
    /// A dictionary of distinct values and bit-packed indices (ids with few distinct values,
    /// names); the writer falls back to plain once the dictionary passes 1 MiB.
    Dictionary,
    /// Bit-packed differences between consecutive values: for timestamps and ids that are
    /// sorted or nearly so. With dictionary encoding for the rest it makes the impressions file
    /// much smaller than plain + snappy, and quicker to read.
    Delta,
}

struct Column<'a> {
    name: String,
    data: Data<'a>,
    encoding: Encoding,
}

/// A column encoded by its type: integers and names with a dictionary, floats plain.
fn column<'a>(name: impl Into<String>, data: Data<'a>) -> Column<'a> {
    let encoding = match data {
        Data::F32(_) | Data::OptF32(_) => Encoding::Plain,
        _ => Encoding::Dictionary,
    };
    Column {
        name: name.into(),
        data,
        encoding,
    }
}

/// A required integer column that is sorted or nearly so (time order, or ids given in order).
fn sorted<'a>(name: &str, values: Cow<'a, [i64]>) -> Column<'a> {
    Column {
        name: name.to_owned(),
        data: Data::I64(values),
        encoding: Encoding::Delta,
    }
}

const SURFACE_NAMES: [&str; 3] = ["homefeed", "related", "search"];
const ENGAGEMENT_NAMES: [&str; 2] = ["click", "save"];
const CONVERSION_NAMES: [&str; 5] = ["purchase", "checkout", "add_to_cart", "signup", "lead"];

/// The index of `value` in `all` (every enumeration has far fewer than 128 values).
fn code<T: PartialEq>(all: &[T], value: &T) -> i8 {
    all.iter().position(|v| v == value).unwrap_or(0) as i8
}

fn pin_columns(log: &EventLog) -> Vec<Column<'_>> {
    let pins = &log.pins;
    let mut columns = vec![
        sorted("pin_id", pins.iter().map(|p| p.pin_id).collect()),
        column(
            "advertiser_id",
            Data::I64(pins.iter().map(|p| p.advertiser_id).collect()),
        ),
        column(
            "category_id",
            Data::I64(pins.iter().map(|p| p.category_id).collect()),
        ),
        column(
            "brand_id",
            Data::OptI64(pins.iter().map(|p| p.brand_id).collect()),
        ),
        column(
            "price",
            Data::OptF32(pins.iter().map(|p| p.price).collect()),
        ),
    ];
    for (k, name) in log.pin_dense_names.iter().enumerate() {
        columns.push(column(
            name,
            Data::F32(pins.iter().map(|p| p.dense[k]).collect()),
        ));
    }
    columns
}

fn user_columns(log: &EventLog) -> Vec<Column<'_>> {
    let users = &log.users;
    let mut columns = vec![sorted("user_id", users.iter().map(|u| u.user_id).collect())];
    for (k, name) in log.user_categorical_names.iter().enumerate() {
        columns.push(column(
            name,
            Data::I64(users.iter().map(|u| u.categorical[k]).collect()),
        ));
    }
    for (k, name) in log.user_dense_names.iter().enumerate() {
        columns.push(column(
            name,
            Data::F32(users.iter().map(|u| u.dense[k]).collect()),
        ));
    }
    columns
}

fn borrowed(v: &[i64]) -> Data<'_> {
    Data::I64(Cow::Borrowed(v))
}

fn impression_columns(log: &EventLog) -> Vec<Column<'_>> {
    let t = &log.impressions;
    let mut columns = vec![
        sorted("impression_id", Cow::Borrowed(&t.impression_id)),
        sorted("request_id", Cow::Borrowed(&t.request_id)),
        sorted("ts", Cow::Borrowed(&t.ts)),
        column("user_id", borrowed(&t.user_id)),
        column("pin_id", borrowed(&t.pin_id)),
        column(
            "surface",
            Data::Names(
                t.surface.iter().map(|s| code(&Surface::ALL, s)).collect(),
                &SURFACE_NAMES,
            ),
        ),
    ];
    if !t.position.is_empty() {
        columns.push(column("position", Data::OptU32(&t.position)));
    }
    if !t.context_pin_id.is_empty() {
        columns.push(column(
            "context_pin_id",
            Data::OptI64(Cow::Borrowed(&t.context_pin_id)),
        ));
    }
    if !t.query_id.is_empty() {
        columns.push(column("query_id", Data::OptI64(Cow::Borrowed(&t.query_id))));
    }
    for c in &t.categorical {
        columns.push(column(&c.name, Data::I64(Cow::Borrowed(&c.values))));
    }
    columns
}

fn engagement_columns(log: &EventLog) -> Vec<Column<'_>> {
    let e = &log.engagements;
    vec![
        sorted("impression_id", e.iter().map(|e| e.impression_id).collect()),
        sorted("ts", e.iter().map(|e| e.ts).collect()),
        column(
            "kind",
            Data::Names(
                e.iter()
                    .map(|e| code(&EngagementKind::ALL, &e.kind))
                    .collect(),
                &ENGAGEMENT_NAMES,
            ),
        ),
        column(
            "duration_s",
            Data::OptF32(e.iter().map(|e| e.duration_s).collect()),
        ),
    ]
}

fn conversion_columns(log: &EventLog) -> Vec<Column<'_>> {
    let c = &log.conversions;
    vec![
        sorted("ts", c.iter().map(|c| c.ts).collect()),
        column("user_id", Data::I64(c.iter().map(|c| c.user_id).collect())),
        column("pin_id", Data::I64(c.iter().map(|c| c.pin_id).collect())),
        column(
            "kind",
            Data::Names(
                c.iter()
                    .map(|c| code(&ConversionKind::ALL, &c.kind))
                    .collect(),
                &CONVERSION_NAMES,
            ),
        ),
        column("value", Data::OptF32(c.iter().map(|c| c.value).collect())),
    ]
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::I64(v) => v.len(),
            Data::OptI64(v) => v.len(),
            Data::OptU32(v) => v.len(),
            Data::F32(v) => v.len(),
            Data::OptF32(v) => v.len(),
            Data::Names(v, _) => v.len(),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Data::I64(_) | Data::OptI64(_) => DataType::Int64,
            Data::OptU32(_) => DataType::UInt32,
            Data::F32(_) | Data::OptF32(_) => DataType::Float32,
            Data::Names(..) => {
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
            }
        }
    }

    fn nullable(&self) -> bool {
        matches!(self, Data::OptI64(_) | Data::OptU32(_) | Data::OptF32(_))
    }

    fn array(&self, rows: Range<usize>) -> Result<ArrayRef> {
        Ok(match self {
            Data::I64(v) => Arc::new(Int64Array::from(v[rows].to_vec())),
            Data::OptI64(v) => Arc::new(Int64Array::from(v[rows].to_vec())),
            Data::OptU32(v) => Arc::new(UInt32Array::from(v[rows].to_vec())),
            Data::F32(v) => Arc::new(Float32Array::from(v[rows].to_vec())),
            Data::OptF32(v) => Arc::new(Float32Array::from(v[rows].to_vec())),
            Data::Names(codes, names) => {
                let keys = Int8Array::from(codes[rows].to_vec());
                let values: ArrayRef = Arc::new(StringArray::from(names.to_vec()));
                let array = DictionaryArray::<Int8Type>::try_new(keys, values).map_err(|e| {
                    Error::InvalidArgument {
                        name: "log",
                        message: format!("cannot dictionary-encode: {e}"),
                    }
                })?;
                Arc::new(array)
            }
        })
    }

    /// Appends value `i` as CSV text (nothing for a null).
    fn write_text(&self, i: usize, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = match self {
            Data::I64(v) => write!(out, "{}", v[i]),
            Data::OptI64(v) => v[i].map_or(Ok(()), |x| write!(out, "{x}")),
            Data::OptU32(v) => v[i].map_or(Ok(()), |x| write!(out, "{x}")),
            // `{}` on a float prints the shortest text that parses back to the same value.
            Data::F32(v) => write!(out, "{}", v[i]),
            Data::OptF32(v) => v[i].map_or(Ok(()), |x| write!(out, "{x}")),
            Data::Names(codes, names) => {
                out.extend_from_slice(names[codes[i] as usize].as_bytes());
                Ok(())
            }
        };
    }
}

/// Writes one table in the chosen format and layout, then removes its other forms.
fn write_table(
    dir: &Path,
    table: Table,
    columns: &[Column<'_>],
    opts: &WriteOptions,
) -> Result<()> {
    let name = table.name();
    let rows = columns.first().map_or(0, |c| c.data.len());
    let written = match (opts.format, opts.shards) {
        (Format::Csv, _) => {
            let path = dir.join(format!("{name}.csv"));
            write_file(&path, |file| write_csv(file, columns, 0..rows))?;
            path
        }
        (Format::Parquet, 1) => {
            let path = dir.join(format!("{name}.parquet"));
            write_file(&path, |file| {
                write_parquet(file, columns, 0..rows, opts.row_group_rows)
            })?;
            path
        }
        (Format::Parquet, shards) => {
            let folder = dir.join(name);
            write_folder(&folder, |tmp| {
                (0..shards)
                    .into_par_iter()
                    .map(|k| {
                        let part = tmp.join(format!("part-{k:05}.parquet"));
                        let range = rows * k / shards..rows * (k + 1) / shards;
                        let file = File::create(&part).map_err(|e| io_error(&part, e))?;
                        let file = write_parquet(file, columns, range, opts.row_group_rows)?;
                        file.sync_all().map_err(|e| io_error(&part, e))
                    })
                    .collect::<Result<Vec<()>>>()
                    .map(|_| ())
            })?;
            folder
        }
    };
    for other in [
        dir.join(format!("{name}.parquet")),
        dir.join(format!("{name}.csv")),
        dir.join(name),
    ] {
        if other != written {
            remove(&other)?;
        }
    }
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else if path.exists() {
        std::fs::remove_file(path)
    } else {
        Ok(())
    };
    result.map_err(|e| io_error(path, e))
}

fn write_parquet(
    file: File,
    columns: &[Column<'_>],
    rows: Range<usize>,
    row_group_rows: usize,
) -> Result<File> {
    let parquet_error = |e: parquet::errors::ParquetError| Error::InvalidArgument {
        name: "log",
        message: format!("cannot write Parquet: {e}"),
    };
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.data.data_type(), c.data.nullable()))
            .collect::<Vec<_>>(),
    ));
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(row_group_rows));
    for c in columns {
        let path = ColumnPath::from(c.name.as_str());
        props = match c.encoding {
            Encoding::Plain => props,
            Encoding::Dictionary => props.set_column_dictionary_enabled(path, true),
            Encoding::Delta => {
                props.set_column_encoding(path, parquet::basic::Encoding::DELTA_BINARY_PACKED)
            }
        };
    }
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(props.build())).map_err(parquet_error)?;
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + WRITE_BATCH_ROWS).min(rows.end);
        let arrays = columns
            .iter()
            .map(|c| c.data.array(start..end))
            .collect::<Result<Vec<_>>>()?;
        let batch =
            RecordBatch::try_new(schema.clone(), arrays).map_err(|e| Error::InvalidArgument {
                name: "log",
                message: format!("cannot make a record batch: {e}"),
            })?;
        writer.write(&batch).map_err(parquet_error)?;
        start = end;
    }
    writer.into_inner().map_err(parquet_error)
}

fn write_csv(file: File, columns: &[Column<'_>], rows: Range<usize>) -> Result<File> {
    let mut writer = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, file));
    let csv_error = |e: csv::Error| Error::InvalidArgument {
        name: "log",
        message: format!("cannot write CSV: {e}"),
    };
    writer
        .write_record(columns.iter().map(|c| c.name.as_bytes()))
        .map_err(csv_error)?;
    let mut field = Vec::with_capacity(32);
    for i in rows {
        for c in columns {
            field.clear();
            c.data.write_text(i, &mut field);
            writer.write_field(&field).map_err(csv_error)?;
        }
        writer.write_record(None::<&[u8]>).map_err(csv_error)?;
    }
    let buffered = writer.into_inner().map_err(|e| Error::InvalidArgument {
        name: "log",
        message: format!("cannot flush CSV: {}", e.error()),
    })?;
    buffered.into_inner().map_err(|e| Error::InvalidArgument {
        name: "log",
        message: format!("cannot flush CSV: {}", e.error()),
    })
}

/// Distinguishes temporary names of one process's concurrent writes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `path` through a temporary file in its directory: `write` fills it, then it is synced
/// and renamed over `path`. On failure the temporary file is removed.
fn write_file(path: &Path, write: impl FnOnce(File) -> Result<File>) -> Result<()> {
    let tmp = temp_path(path);
    let result = File::create(&tmp)
        .map_err(|e| io_error(&tmp, e))
        .and_then(write)
        .and_then(|file| file.sync_all().map_err(|e| io_error(&tmp, e)))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| io_error(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes the folder `path` through a temporary folder that `write` fills (syncing its files);
/// the old folder, if any, is removed just before the rename, so that a crash leaves either
/// the old folder, none, or the complete new one, never a partial one under `path`.
fn write_folder(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = std::fs::create_dir(&tmp)
        .map_err(|e| io_error(&tmp, e))
        .and_then(|()| write(&tmp))
        .and_then(|()| sync_dir(&tmp))
        .and_then(|()| remove(path))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| io_error(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Keeps the writer's column order in step with the reader's canonical columns.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::plan::base_names;

    #[test]
    fn written_columns_follow_the_canonical_order() {
        let log = EventLog::default();
        let tables = [
            (Table::Pins, pin_columns(&log)),
            (Table::Impressions, impression_columns(&log)),
            (Table::Engagements, engagement_columns(&log)),
            (Table::Conversions, conversion_columns(&log)),
        ];
        for (table, columns) in tables {
            let written: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let canonical: Vec<&str> = base_names(table).take(written.len()).collect();
            assert_eq!(written, canonical, "{}", table.name());
        }
        assert_eq!(SURFACE_NAMES, Surface::ALL.map(Surface::as_str));
        assert_eq!(
            ENGAGEMENT_NAMES,
            EngagementKind::ALL.map(EngagementKind::as_str)
        );
        assert_eq!(
            CONVERSION_NAMES,
            ConversionKind::ALL.map(ConversionKind::as_str)
        );
    }
}
