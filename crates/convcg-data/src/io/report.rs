//! What a read kept and skipped, for a run's report.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Location;
use crate::io::Table;

/// A row count per table of the canonical schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCounts {
    /// Rows of `pins`.
    pub pins: u64,
    /// Rows of `users`.
    pub users: u64,
    /// Rows of `impressions`.
    pub impressions: u64,
    /// Rows of `engagements`.
    pub engagements: u64,
    /// Rows of `conversions`.
    pub conversions: u64,
}

impl TableCounts {
    /// Impression, engagement and conversion rows together.
    pub fn events(&self) -> u64 {
        self.impressions + self.engagements + self.conversions
    }

    /// Rows of every table together.
    pub fn total(&self) -> u64 {
        self.pins + self.users + self.events()
    }

    pub(crate) fn get(&self, table: Table) -> u64 {
        match table {
            Table::Pins => self.pins,
            Table::Users => self.users,
            Table::Impressions => self.impressions,
            Table::Engagements => self.engagements,
            Table::Conversions => self.conversions,
        }
    }

    pub(crate) fn set(&mut self, table: Table, n: u64) {
        let slot = match table {
            Table::Pins => &mut self.pins,
            Table::Users => &mut self.users,
            Table::Impressions => &mut self.impressions,
            Table::Engagements => &mut self.engagements,
            Table::Conversions => &mut self.conversions,
        };
        *slot = n;
    }
}

/// What [`read_log`](crate::io::read_log) read: the files, the rows kept and skipped per
/// table, and the first skipped rows with the reason. `Display` prints a small table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadReport {
    /// Every file read, table by table, parts in reading order.
    pub files: Vec<PathBuf>,
    /// Rows kept per table (`users` counts the records made from the events when the log has
    /// no users table).
    pub rows: TableCounts,
    /// Rows skipped per table (only with [`OnBadRow::Skip`](crate::io::OnBadRow::Skip)).
    pub skipped: TableCounts,
    /// The first skipped rows (at most 20), table by table, with their first problem.
    pub first_skipped: Vec<(Location, String)>,
}

impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<12} | {:>12} | {:>9}", "table", "rows", "skipped")?;
        writeln!(
            f,
            "{}-+-{}-+-{}",
            "-".repeat(12),
            "-".repeat(12),
            "-".repeat(9)
        )?;
        for table in Table::ALL {
            writeln!(
                f,
                "{:<12} | {:>12} | {:>9}",
                table.name(),
                self.rows.get(table),
                self.skipped.get(table)
            )?;
        }
        writeln!(f, "{} files", self.files.len())?;
        for (at, message) in &self.first_skipped {
            writeln!(f, "skipped {at}: {message}")?;
        }
        Ok(())
    }
}
