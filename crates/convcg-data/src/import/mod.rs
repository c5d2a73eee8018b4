//! Importers that turn the real slices in `shared/data/` into the canonical [`EventLog`].
//!
//! [`import`] reads one source file (or the slice's folder) and returns the log in memory, the
//! dataset config that suits it ([`Imported::dataset_toml`]), the string-to-id
//! [`Dictionary`]s it built, and an [`ImportReport`]. Bad source rows are skipped and counted
//! with their [`Location`](crate::Location); a file that is missing, not of the expected format,
//! or without a single usable row is an error.
//!
//! # Mappings
//!
//! Common to all sources: every user seen gets a row in `users` (no features), every item a row
//! in `pins` whose attributes come from the first row that names it (a later row that disagrees
//! is counted in the report, a later row that fills a missing brand or price fills it). Taobao
//! and trivago have no advertiser, so [`PLACEHOLDER_ADVERTISER`] (0) is every pin's
//! `advertiser_id` there: advertiser-level losses and metrics carry no information on those
//! logs. Engagements have no `duration_s` (no source records dwell time). Timestamps
//! must be unix seconds in 2000..2100 ([`MIN_TS`]..[`MAX_TS`]); anything else is a bad value.
//!
//! **taobao** (`UserBehavior_slice.csv`: user, item, category, behavior, unix_ts; no header):
//! source row `r` (data rows from 1) becomes the impression with `impression_id = request_id =
//! r` of the item for the user at its ts, on the home feed (no position, context or query
//! columns). `pv` adds a click, `fav` and `cart` add a save, all at the row's ts on that
//! impression; `buy` adds a `purchase` conversion (no value) at the same ts. The pin's category is
//! the row's. Every impression is engaged or bought, so the log has no hard negatives.
//!
//! **tmall** (`user_log_10k.csv`: user_id, item_id, cat_id, merchant_id, brand_id, month, day,
//! action, age_range, gender, province; no header): as taobao, with action 0 a click, 1 (cart)
//! and 3 (fav) saves and 2 (buy) a purchase; `merchant_id` is the advertiser and `brand_id` the
//! brand (empty: unknown). The ts is midnight UTC of month/day in [`TMALL_YEAR`] (2015, the year
//! of the Tmall IJCAI-15 log; the file has no year). The slice is one day, so every event has
//! the same ts: the order inside the day survives only as file order, which is kept in
//! `impression_id = request_id =` source row and in the order of `conversions`, so an evaluation
//! can hold out each buyer's last buy in file order (the config says `eval_protocol =
//! "last_conversion"`). age_range, gender and province are noise (see the data's README) and
//! are not read.
//!
//! **trivago** (`trivago_val_100k.parquet`: user_id, session_id, timestamp, step, action_type,
//! reference, platform, city, device, current_filters, impressions, prices): a search log.
//! Every impression is on the search surface with `query_id` = the id of (city,
//! current_filters) in the `query` dictionary, and `c_platform`, `c_device` columns holding
//! ids from the `platform` and `device` dictionaries. A `clickout item` row at source row `r` is
//! one request (`request_id = r`): each item of its `impressions` list (pipe-separated) becomes
//! an impression with `position` = index + 1, its price from the same index of `prices`, and
//! the clicked `reference` becomes a `lead` conversion (the user is handed to a booking site: a
//! referral, the booking and its value are not observed) at the row's ts. The listed items that
//! were not clicked are the log's hard negatives. When the reference is not in the list, it
//! gets an impression of its own in that request (no position) so that the conversion has one.
//! An `interaction item image|info|rating|deals` row is a click on `reference`; the log has no
//! impression for it, so one is made at the row's ts (request `r`, no position). The other
//! action types (searches, sort and filter changes) carry no item and are counted as ignored.
//! Pins: the item's category is the id, in the `city` dictionary, of the city of the first row
//! that names it (a hotel listed in searches for several cities keeps the first), its price the
//! first listed one. String ids (user_id, reference and listed items, city, the query pair,
//! platform, device) are mapped to int64 by [`Dictionary`]s in first-seen order (ids from 0):
//! `user`, `item`, `city`, `query`, `platform`, `device`. `session_id` and `step` are not used:
//! the schema has no session, and each used source row is its own request. `impression_id`
//! counts from 1 in output order.
//!
//! # Example
//!
//! ```
//! use convcg_data::import::{Source, import};
//! use convcg_data::{ConversionKind, EngagementKind};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(
//!     dir.path().join("UserBehavior_slice.csv"),
//!     "1,10,5,pv,1511658000\n1,10,5,buy,1511658060\n2,11,5,pv,15\n",
//! )?;
//! let imported = import(Source::Taobao, dir.path())?;
//! let log = &imported.log;
//! assert_eq!(log.impressions.len(), 2);
//! assert_eq!(log.engagements[0].kind, EngagementKind::Click);
//! assert_eq!(log.conversions[0].kind, ConversionKind::Purchase);
//! // Row 3's timestamp is not a plausible unix time: skipped and reported with its place.
//! let bad = imported.report.bad_rows().next().expect("one bad row");
//! assert_eq!((bad.at.row, bad.at.column.as_deref()), (Some(3), Some("unix_ts")));
//! assert!(imported.dataset_toml.contains("eval_protocol = \"last_conversion\""));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod config;
mod csv;
mod dictionary;
mod report;
mod shop;
mod taobao;
mod tmall;
mod trivago;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, ExpectedNames, Location, Result};
use crate::schema::EventLog;

pub use dictionary::{DICTIONARY_DIR, Dictionary, QUERY_SEPARATOR, csv_field};
pub use report::{BadRow, ImportReport, SkipGroup};

/// The `advertiser_id` of every pin of a source without advertisers (taobao, trivago).
pub const PLACEHOLDER_ADVERTISER: i64 = 0;
/// The year of the Tmall log, whose rows give only month and day.
pub const TMALL_YEAR: i32 = 2015;
/// The smallest accepted timestamp: 2000-01-01 00:00:00 UTC.
pub const MIN_TS: i64 = 946_684_800;
/// One past the largest accepted timestamp: 2100-01-01 00:00:00 UTC.
pub const MAX_TS: i64 = 4_102_444_800;

/// A real public log that [`import`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Taobao UserBehavior (pv, fav, cart, buy), CSV.
    Taobao,
    /// Tmall IJCAI-15 user log (dblab sample), CSV.
    Tmall,
    /// Trivago RecSys Challenge 2019 sessions, Parquet.
    Trivago,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 3] = [Source::Taobao, Source::Tmall, Source::Trivago];
    const NAMES: [&'static str; 3] = ["taobao", "tmall", "trivago"];

    /// `taobao`, `tmall` or `trivago`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Taobao => "taobao",
            Source::Tmall => "tmall",
            Source::Trivago => "trivago",
        }
    }

    /// The file name of the slice in `shared/data/`, looked for first when [`import`] is given
    /// a folder.
    pub fn slice_file_name(self) -> &'static str {
        match self {
            Source::Taobao => "UserBehavior_slice.csv",
            Source::Tmall => "user_log_10k.csv",
            Source::Trivago => "trivago_val_100k.parquet",
        }
    }

    /// The extension of the source's files, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Source::Taobao | Source::Tmall => "csv",
            Source::Trivago => "parquet",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = Error;

    /// Parses `taobao`, `tmall` or `trivago` (what a command line passes).
    fn from_str(s: &str) -> Result<Source> {
        Source::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Source::ALL[i])
            .ok_or_else(|| Error::UnknownName {
                what: "source",
                value: s.to_owned(),
                expected: ExpectedNames(&Source::NAMES),
            })
    }
}

/// What [`import`] makes of a source.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The canonical event log.
    pub log: EventLog,
    /// The `[data]` section of a run config that suits the log, as TOML with a comment per key
    /// (to be written beside the tables).
    pub dataset_toml: String,
    /// The string-to-id maps used (empty for sources whose ids are integers); each is to be
    /// written beside the tables at [`Dictionary::relative_path`].
    pub dictionaries: Vec<Dictionary>,
    /// Rows read, used, ignored and skipped, and events produced.
    pub report: ImportReport,
}

/// Imports `src`, the source's file or a folder holding it (the slice's file name is looked for
/// first, else the folder's only file with the source's extension).
///
/// Bad rows are skipped and reported; the error cases are: `src` missing or unreadable
/// ([`Error::Io`]), no single matching file in a folder, a file that is not of the source's
/// format or lacks a required column, and a file without any usable row ([`Error::BadInput`]).
pub fn import(source: Source, src: &Path) -> Result<Imported> {
    let file = source_file(source, src)?;
    match source {
        Source::Taobao => taobao::FORMAT.import(&file),
        Source::Tmall => tmall::FORMAT.import(&file),
        Source::Trivago => trivago::import(&file),
    }
}

fn source_file(source: Source, src: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(src).map_err(|e| Error::Io {
        path: src.to_path_buf(),
        source: e,
    })?;
    if !meta.is_dir() {
        return Ok(src.to_path_buf());
    }
    let named = src.join(source.slice_file_name());
    if named.is_file() {
        return Ok(named);
    }
    let entries = std::fs::read_dir(src).map_err(|e| Error::Io {
        path: src.to_path_buf(),
        source: e,
    })?;
    let mut candidates = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Error::Io {
                path: src.to_path_buf(),
                source: e,
            })?
            .path();
        if path.is_file() && path.extension().is_some_and(|x| x == source.extension()) {
            candidates.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(candidates) {
        Ok([only]) => Ok(only),
        Err(found) => Err(Error::BadInput {
            at: Location::file(src),
            message: format!(
                "no {} in this folder and {} .{} files instead of exactly one",
                source.slice_file_name(),
                found.len(),
                source.extension()
            ),
        }),
    }
}
