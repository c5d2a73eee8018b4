//! Event logs on disk in the canonical schema (docs/design.md): [`read_log`] and [`write_log`].
//!
//! A dataset is a directory holding, per table, `NAME.parquet`, `NAME.csv`, or a folder `NAME/`
//! (or `NAME.parquet/`, as Spark names it) of `*.parquet` part files, read in file-name order as
//! one table (hidden files and `_SUCCESS`-style bookkeeping files are left out; a subfolder, as
//! a Hive-style partitioned write makes, is an error). Each file may hold any number of row
//! groups. The tables are `pins`, `users` (optional), `impressions`, `engagements` and
//! `conversions`; their columns are in docs/data-format.md. Column order does not matter and
//! unknown columns are ignored.
//!
//! # Types
//! Ids and `ts` accept any Arrow integer type (INT64 canonical; narrower and unsigned types are
//! widened; a UINT64 above `i64::MAX` is a bad value); floats accept FLOAT, DOUBLE and
//! integers; `surface` and `kind` accept UTF-8 strings, plain, large, view or
//! dictionary-encoded. `c_*` columns hold integers or strings: a string that spells an integer
//! is that integer (so `3` reads the same from Parquet and CSV), any other string becomes its
//! [`stable_string_id`](crate::stable_string_id); `f_*` columns hold numbers. An all-null column (Arrow's `Null` type) is
//! accepted anywhere. Any other type is an [`Error::BadInput`] naming the file and the column
//! and the expected and found types; for a timestamp or date in `ts` and a decimal in a float
//! column it also says to cast the column when writing it.
//!
//! # Bad values
//! Each of these is an [`Error::BadInput`] at [`Location::cell`](crate::Location::cell) (file,
//! data row from 1 counted per file, column), or with [`OnBadRow::Skip`] a skipped row counted in
//! the [`ReadReport`]: a null in a required column (every column without a `?` in
//! docs/data-format.md, and every `f_*` / `c_*` column), a CSV value that does not parse, an
//! unknown surface or kind, a timestamp outside [`TS_RANGE`], a non-finite float, a negative
//! `duration_s` or `price`, a position outside `u32`, a repeated `pin_id` or `user_id` (the first
//! is kept), an impression whose pin is not in the catalogue, and a CSV row with too few or too
//! many fields. Structural problems are always errors: a missing table, file or required column,
//! a table in two forms, a wrong column type, part files whose `f_*` / `c_*` columns differ, a
//! column read in a compression codec this build does not read, and a corrupt, truncated or
//! unreadable file. Nothing panics on bad input.
//!
//! # Compression
//! Parquet pages are read uncompressed or compressed with SNAPPY or ZSTD (the parquet crate's
//! `snap` and `zstd` features). A column that is read and is compressed with GZIP, LZ4,
//! LZ4_RAW, BROTLI or LZO is an [`Error::BadInput`] naming the file, the column and the codec;
//! columns that are not read may use any codec.
//!
//! # Speed
//! Parquet row groups of all part files are decoded in parallel (rayon), each straight into its
//! window of the table's column buffers, reading only the columns needed; the result's memory
//! is about that of the final [`EventLog`]. CSV is streamed through a buffer, one table per
//! thread.
//!
//! ```
//! use convcg_data::io::{Format, ReadOptions, WriteOptions, read_log, write_log};
//! use convcg_data::{Marketplace, SynthConfig};
//!
//! let cfg = SynthConfig {
//!     num_users: 200,
//!     num_pins: 300,
//!     num_advertisers: 30,
//!     num_categories: 10,
//!     num_brands: 40,
//!     num_queries: 20,
//!     impressions: 5_000,
//!     ..SynthConfig::default()
//! };
//! let market = Marketplace::generate(&cfg, 1, &|_, _| {})?;
//! let dir = std::env::temp_dir().join(format!("convcg-io-doc-{}", std::process::id()));
//! for format in [Format::Parquet, Format::Csv] {
//!     write_log(&dir, &market.log, &WriteOptions { format, ..WriteOptions::default() })?;
//!     let (log, report) = read_log(&dir, &ReadOptions::default())?;
//!     assert_eq!(log, market.log);
//!     assert_eq!(report.rows.events() as usize, market.log.num_events());
//! }
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), convcg_data::Error>(())
//! ```

mod arrow_in;
mod columns;
mod csv_in;
mod layout;
mod parquet_in;
mod plan;
mod report;
mod table;
mod write;

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ExpectedNames, Location, Result};
use crate::hash::IdSet;
use crate::schema::{Conversion, Engagement, EventLog, Impressions, PinRecord, UserRecord};
use layout::{Source, locate};
use table::{MAX_EXAMPLES, Skipped, TableData};

pub use crate::schema::OnBadRow;
pub use report::{ReadReport, TableCounts};
pub use write::write_log;

/// Timestamps accepted in `ts` columns, unix seconds: 1970-01-01 00:00 to 2100-01-01 00:00 UTC.
/// A value outside is a bad value (most often milliseconds or microseconds written as seconds).
pub const TS_RANGE: RangeInclusive<i64> = 0..=4_102_444_800;

/// The tables of the canonical schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Pins,
    Users,
    Impressions,
    Engagements,
    Conversions,
}

impl Table {
    pub(crate) const ALL: [Table; 5] = [
        Table::Pins,
        Table::Users,
        Table::Impressions,
        Table::Engagements,
        Table::Conversions,
    ];

    /// The table's name, which is also its file's stem.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Pins => "pins",
            Table::Users => "users",
            Table::Impressions => "impressions",
            Table::Engagements => "engagements",
            Table::Conversions => "conversions",
        }
    }
}

/// A file format of the tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet (snappy-compressed when written): the main format.
    #[default]
    Parquet,
    /// CSV with a header; an empty field is a null.
    Csv,
}

impl Format {
    const NAMES: [&'static str; 2] = ["parquet", "csv"];

    /// `parquet` or `csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = Error;

    /// `parquet` or `csv`; anything else is [`Error::UnknownName`].
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            _ => Err(Error::UnknownName {
                what: "format",
                value: s.to_owned(),
                expected: ExpectedNames(&Format::NAMES),
            }),
        }
    }
}

/// Which impression columns to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImpressionColumns {
    /// Every column of the schema.
    #[default]
    All,
    /// Only `impression_id`, `request_id`, `ts`, `user_id`, `pin_id` and `surface`; the optional
    /// and `c_*` columns are left empty (for pipelines that need ids only).
    Core,
}

/// How [`read_log`] reads a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadOptions {
    /// What to do with a bad row (default [`OnBadRow::Error`]).
    pub on_bad_row: OnBadRow,
    /// Read `pins` (and `users` where present) and check that every impression's pin is in the
    /// catalogue (default `true`). With `false` neither table is read nor needed, and
    /// `log.pins` and `log.users` stay empty.
    pub catalogue: bool,
    /// Which impression columns to read (default [`ImpressionColumns::All`]).
    pub impression_columns: ImpressionColumns,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            on_bad_row: OnBadRow::Error,
            catalogue: true,
            impression_columns: ImpressionColumns::All,
        }
    }
}

/// How [`write_log`] writes a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteOptions {
    /// The file format (default Parquet).
    pub format: Format,
    /// Most rows per Parquet row group (default 2^20); at least 1.
    pub row_group_rows: usize,
    /// Files per table (default 1: `NAME.parquet`; more: `NAME/part-00000.parquet`, ...);
    /// Parquet only.
    pub shards: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            format: Format::Parquet,
            row_group_rows: 1 << 20,
            shards: 1,
        }
    }
}

impl WriteOptions {
    /// Checks the options as [`write_log`] does, so that a caller can refuse bad ones before
    /// making the log.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the option: zero rows per row group or shards, or CSV
    /// in shards.
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |name: &'static str, message: String| Err(Error::InvalidArgument { name, message });
        if self.row_group_rows == 0 {
            return invalid("row_group_rows", "must be at least 1, got 0".to_owned());
        }
        if self.shards == 0 {
            return invalid("shards", "must be at least 1, got 0".to_owned());
        }
        if self.format == Format::Csv && self.shards > 1 {
            return invalid(
                "shards",
                format!(
                    "a table folder holds Parquet part files only; write CSV with 1 shard, got {}",
                    self.shards
                ),
            );
        }
        Ok(())
    }
}

/// One table read and resolved, with what its report needs.
struct Loaded<T> {
    value: T,
    files: Vec<PathBuf>,
    rows: u64,
    skipped: Skipped,
}

/// Reads, checks and resolves one table; `catalogue` checks impressions' pins.
fn load<T>(
    table: Table,
    source: &Source,
    opts: &ReadOptions,
    catalogue: Option<&IdSet<i64>>,
    finish: impl FnOnce(TableData) -> Result<T>,
) -> Result<Loaded<T>> {
    let core_only = opts.impression_columns == ImpressionColumns::Core;
    let mut data = match source {
        Source::Parquet(files) => parquet_in::read_parquet(table, files, core_only)?,
        Source::Csv(file) => csv_in::read_csv(table, file, core_only)?,
    };
    if let Some(pins) = catalogue {
        data.check_catalogue(pins);
    }
    match table {
        Table::Pins => data.check_unique("pin_id"),
        Table::Users => data.check_unique("user_id"),
        _ => {}
    }
    let skipped = data.resolve(opts.on_bad_row)?;
    let files = source.files();
    let rows = data.rows as u64;
    Ok(Loaded {
        value: finish(data)?,
        files,
        rows,
        skipped,
    })
}

fn required(dir: &Path, table: Table) -> Result<Source> {
    locate(dir, table)?.ok_or_else(|| {
        let name = table.name();
        Error::BadInput {
            at: Location::file(dir),
            message: format!(
                "the dataset has no `{name}` table: expected {name}.parquet, {name}.csv or a \
                 folder {name}/ of Parquet part files"
            ),
        }
    })
}

type PinsAndNames = (Vec<PinRecord>, Vec<String>);
type UsersAndNames = (Vec<UserRecord>, Vec<String>, Vec<String>);

/// Reads the event log in `dir` (see the [module docs](self) for the layout, the accepted types
/// and what counts as a bad value), with a report of what was read and skipped.
///
/// With `opts.catalogue` (the default) `pins` is required and every impression's pin must be
/// in it; a log without a `users` table gets one user record (no features) per distinct user
/// id of its impressions and conversions, in id order. `impressions`, `engagements` and
/// `conversions` are always required (they may have no rows).
///
/// Errors: [`Error::BadInput`] naming the file (and row and column where they apply),
/// [`Error::Io`] for a file that cannot be opened or read.
pub fn read_log(dir: &Path, opts: &ReadOptions) -> Result<(EventLog, ReadReport)> {
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let pins_source = opts
        .catalogue
        .then(|| required(dir, Table::Pins))
        .transpose()?;
    let users_source = if opts.catalogue {
        locate(dir, Table::Users)?
    } else {
        None
    };
    let impressions_source = required(dir, Table::Impressions)?;
    let engagements_source = required(dir, Table::Engagements)?;
    let conversions_source = required(dir, Table::Conversions)?;

    let (pins, users) = rayon::join(
        || {
            pins_source
                .as_ref()
                .map(|s| load(Table::Pins, s, opts, None, TableData::into_pins))
                .transpose()
        },
        || {
            users_source
                .as_ref()
                .map(|s| load(Table::Users, s, opts, None, TableData::into_users))
                .transpose()
        },
    );
    let pins: Option<Loaded<PinsAndNames>> = pins?;
    let users: Option<Loaded<UsersAndNames>> = users?;
    let catalogue: Option<IdSet<i64>> = pins
        .as_ref()
        .map(|p| p.value.0.iter().map(|p| p.pin_id).collect());

    let (impressions, (engagements, conversions)) = rayon::join(
        || {
            load(
                Table::Impressions,
                &impressions_source,
                opts,
                catalogue.as_ref(),
                TableData::into_impressions,
            )
        },
        || {
            rayon::join(
                || {
                    load(
                        Table::Engagements,
                        &engagements_source,
                        opts,
                        None,
                        TableData::into_engagements,
                    )
                },
                || {
                    load(
                        Table::Conversions,
                        &conversions_source,
                        opts,
                        None,
                        TableData::into_conversions,
                    )
                },
            )
        },
    );
    let impressions: Loaded<Impressions> = impressions?;
    let engagements: Loaded<Vec<Engagement>> = engagements?;
    let conversions: Loaded<Vec<Conversion>> = conversions?;

    let mut report = ReadReport::default();
    let mut note = |table: Table, files: &[PathBuf], rows: u64, skipped: &Skipped| {
        report.files.extend_from_slice(files);
        report.rows.set(table, rows);
        report.skipped.set(table, skipped.rows);
        let room = MAX_EXAMPLES.saturating_sub(report.first_skipped.len());
        report
            .first_skipped
            .extend(skipped.examples.iter().take(room).cloned());
    };
    let mut log = EventLog::default();
    if let Some(p) = pins {
        note(Table::Pins, &p.files, p.rows, &p.skipped);
        (log.pins, log.pin_dense_names) = p.value;
    }
    if let Some(u) = users {
        note(Table::Users, &u.files, u.rows, &u.skipped);
        (log.users, log.user_dense_names, log.user_categorical_names) = u.value;
    }
    note(
        Table::Impressions,
        &impressions.files,
        impressions.rows,
        &impressions.skipped,
    );
    note(
        Table::Engagements,
        &engagements.files,
        engagements.rows,
        &engagements.skipped,
    );
    note(
        Table::Conversions,
        &conversions.files,
        conversions.rows,
        &conversions.skipped,
    );
    log.impressions = impressions.value;
    log.engagements = engagements.value;
    log.conversions = conversions.value;
    if opts.catalogue && users_source.is_none() {
        log.users = users_from_events(&log);
        report.rows.users = log.users.len() as u64;
    }
    Ok((log, report))
}

/// One featureless user per distinct user id of the impressions and conversions, in id order.
fn users_from_events(log: &EventLog) -> Vec<UserRecord> {
    let distinct: IdSet<i64> = log
        .impressions
        .user_id
        .iter()
        .chain(log.conversions.iter().map(|c| &c.user_id))
        .copied()
        .collect();
    let mut ids: Vec<i64> = distinct.into_iter().collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|user_id| UserRecord {
            user_id,
            categorical: Vec::new(),
            dense: Vec::new(),
        })
        .collect()
}
