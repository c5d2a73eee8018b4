//! Assembling an [`EventLog`] row by row, and the bookkeeping every importer shares.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::DataSection;
use super::dictionary::Dictionary;
use super::report::{BadRow, ImportReport, Produced, Skips};
use super::{Imported, Source};
use crate::error::{Error, Location, Result};
use crate::hash::{IdMap, IdSet};
use crate::schema::{
    CategoricalColumn, Conversion, Engagement, EventLog, Impression, PinRecord, UserRecord,
};

/// Which optional impression columns a source has.
pub(super) struct Columns {
    pub(super) position: bool,
    pub(super) query: bool,
    /// Names of the `c_*` columns, prefix included.
    pub(super) categorical: &'static [&'static str],
}

/// An event log under construction: users and pins first-seen, impressions column by column.
pub(super) struct LogBuilder {
    log: EventLog,
    pin_rows: IdMap<i64, usize>,
    users: IdSet<i64>,
    columns: Columns,
    /// Pins whose later rows disagreed with the first.
    conflicting_pins: IdSet<i64>,
}

impl LogBuilder {
    pub(super) fn new(columns: Columns) -> LogBuilder {
        let mut log = EventLog::default();
        log.impressions.categorical = columns
            .categorical
            .iter()
            .map(|name| CategoricalColumn {
                name: (*name).to_owned(),
                values: Vec::new(),
            })
            .collect();
        LogBuilder {
            log,
            pin_rows: IdMap::default(),
            users: IdSet::default(),
            columns,
            conflicting_pins: IdSet::default(),
        }
    }

    fn user(&mut self, user_id: i64) {
        if self.users.insert(user_id) {
            self.log.users.push(UserRecord {
                user_id,
                categorical: Vec::new(),
                dense: Vec::new(),
            });
        }
    }

    /// Adds the pin if new; else fills its missing brand and price from `pin` and notes a
    /// conflict when category, advertiser or a known brand differ (the first values stay).
    pub(super) fn pin(&mut self, pin: PinRecord) {
        let Some(&row) = self.pin_rows.get(&pin.pin_id) else {
            self.pin_rows.insert(pin.pin_id, self.log.pins.len());
            self.log.pins.push(pin);
            return;
        };
        let known = &mut self.log.pins[row];
        let brand_differs = matches!((known.brand_id, pin.brand_id), (Some(a), Some(b)) if a != b);
        if known.category_id != pin.category_id
            || known.advertiser_id != pin.advertiser_id
            || brand_differs
        {
            self.conflicting_pins.insert(pin.pin_id);
        }
        known.brand_id = known.brand_id.or(pin.brand_id);
        known.price = known.price.or(pin.price);
    }

    /// Appends an impression (its user joins `users`); `categorical` holds one value per `c_*`
    /// column, in [`Columns::categorical`] order. Impression ids must increase from call to
    /// call (the importers use source rows or a counter), which lets lookups binary-search.
    pub(super) fn impression(&mut self, imp: Impression, categorical: &[i64]) {
        debug_assert_eq!(categorical.len(), self.columns.categorical.len());
        debug_assert!(
            self.log
                .impressions
                .impression_id
                .last()
                .is_none_or(|&last| last < imp.impression_id)
        );
        self.user(imp.user_id);
        let t = &mut self.log.impressions;
        t.push_required(&imp);
        if self.columns.position {
            t.position.push(imp.position);
        }
        if self.columns.query {
            t.query_id.push(imp.query_id);
        }
        for (column, &v) in t.categorical.iter_mut().zip(categorical) {
            column.values.push(v);
        }
    }

    pub(super) fn engagement(&mut self, e: Engagement) {
        self.log.engagements.push(e);
    }

    /// Appends a conversion (its user joins `users`).
    pub(super) fn conversion(&mut self, c: Conversion) {
        self.user(c.user_id);
        self.log.conversions.push(c);
    }

    /// The log so far (for the dataset config's measurements).
    pub(super) fn log(&self) -> &EventLog {
        &self.log
    }
}

/// Rows read, used, ignored and skipped while a file is read.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) rows_read: u64,
    pub(super) rows_used: u64,
    ignored: BTreeMap<String, u64>,
    skips: Skips,
}

impl Tally {
    /// A skipped row.
    pub(super) fn skip(&mut self, at: Location, message: String) {
        self.skips.record(at, message);
    }

    /// A valid row that carries nothing the schema holds.
    pub(super) fn ignore(&mut self, kind: &str) {
        *self.ignored.entry(kind.to_owned()).or_default() += 1;
    }
}

/// A skipped row's [`Location`] when the row as a whole is wrong.
pub(super) fn row_location(file: &Path, row: u64) -> Location {
    Location {
        row: Some(row),
        ..Location::file(file)
    }
}

/// Everything an importer hands over at the end.
pub(super) struct Finished {
    pub(super) source: Source,
    pub(super) builder: LogBuilder,
    pub(super) tally: Tally,
    pub(super) dictionaries: Vec<Dictionary>,
    pub(super) data: DataSection,
    pub(super) notes: Vec<String>,
}

/// Checks that some row was usable and assembles the [`Imported`].
pub(super) fn finish(file: &Path, done: Finished) -> Result<Imported> {
    let Finished {
        source,
        builder,
        tally,
        dictionaries,
        data,
        notes,
    } = done;
    if tally.rows_used == 0 {
        let message = match tally.skips.first() {
            Some(BadRow { at, message }) => format!(
                "no usable row: all {} rows were skipped or ignored; the first bad one, {at}: {message}",
                tally.rows_read
            ),
            None => format!(
                "no usable row among {} rows of the {source} format",
                tally.rows_read
            ),
        };
        return Err(Error::BadInput {
            at: Location::file(file),
            message,
        });
    }
    let log = builder.log;
    log.impressions.check_lengths()?;
    let produced = Produced::of(&log);
    let report = ImportReport {
        source,
        file: file.to_path_buf(),
        rows_read: tally.rows_read,
        rows_used: tally.rows_used,
        ignored: tally.ignored.into_iter().collect(),
        skipped: tally.skips.into_groups(),
        pins: produced.pins,
        users: produced.users,
        impressions: produced.impressions,
        unengaged_impressions: produced.unengaged_impressions,
        clicks: produced.clicks,
        saves: produced.saves,
        conversions: produced.conversions,
        pin_conflicts: builder.conflicting_pins.len() as u64,
        notes,
    };
    Ok(Imported {
        dataset_toml: data.to_toml(),
        log,
        dictionaries,
        report,
    })
}
