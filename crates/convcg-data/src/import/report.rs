//! What an import read, skipped and produced.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::Source;
use crate::error::Location;
use crate::hash::IdSet;
use crate::schema::{EngagementKind, EventLog};

/// Examples kept per group of skipped rows.
const EXAMPLES_PER_GROUP: usize = 3;

/// One skipped source row: where, and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    /// The file, the data row (from 1) and the column (none when the row as a whole is wrong,
    /// e.g. its field count).
    pub at: Location,
    /// What was wrong, and what was expected.
    pub message: String,
}

/// The skipped rows that failed on one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipGroup {
    /// The column, or `None` for rows wrong as a whole.
    pub column: Option<String>,
    /// Rows skipped for it.
    pub count: u64,
    /// The first few of them, in file order.
    pub examples: Vec<BadRow>,
}

/// Rows read, used, ignored and skipped, and what was produced, per table.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    /// The source format.
    pub source: Source,
    /// The file read.
    pub file: PathBuf,
    /// Data rows read (a header is not a row).
    pub rows_read: u64,
    /// Rows that produced events.
    pub rows_used: u64,
    /// Rows that are valid but carry nothing the schema holds, by kind (trivago's searches and
    /// sort or filter changes), sorted by kind.
    pub ignored: Vec<(String, u64)>,
    /// Rows skipped for a bad value or shape, grouped by the column that failed first.
    pub skipped: Vec<SkipGroup>,
    /// Rows of `pins`.
    pub pins: usize,
    /// Rows of `users`.
    pub users: usize,
    /// Rows of `impressions`.
    pub impressions: usize,
    /// Impressions with no engagement and no conversion of the same user and pin at the same
    /// second: the hard-negative candidates.
    pub unengaged_impressions: usize,
    /// Click engagements.
    pub clicks: usize,
    /// Save engagements.
    pub saves: usize,
    /// Rows of `conversions`.
    pub conversions: usize,
    /// Pins whose later rows disagree with the first on category, advertiser or brand (the first
    /// is kept).
    pub pin_conflicts: u64,
    /// How the source was mapped where the schema had no direct counterpart, and what the log
    /// lacks (one sentence each).
    pub notes: Vec<String>,
}

impl ImportReport {
    /// Rows skipped, all columns together.
    pub fn rows_skipped(&self) -> u64 {
        self.skipped.iter().map(|g| g.count).sum()
    }

    /// Rows ignored, all kinds together.
    pub fn rows_ignored(&self) -> u64 {
        self.ignored.iter().map(|g| g.1).sum()
    }

    /// Every example of a skipped row, in group order.
    pub fn bad_rows(&self) -> impl Iterator<Item = &BadRow> {
        self.skipped.iter().flat_map(|g| &g.examples)
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "import {} from {}", self.source, self.file.display())?;
        writeln!(
            f,
            "rows: {} read, {} used, {} ignored, {} skipped",
            self.rows_read,
            self.rows_used,
            self.rows_ignored(),
            self.rows_skipped()
        )?;
        for (kind, n) in &self.ignored {
            writeln!(f, "  ignored `{kind}`: {n}")?;
        }
        for g in &self.skipped {
            let column = g.column.as_deref().unwrap_or("(whole row)");
            writeln!(f, "  skipped for {column}: {}", g.count)?;
            for ex in &g.examples {
                writeln!(f, "    {}: {}", ex.at, ex.message)?;
            }
        }
        writeln!(
            f,
            "pins {}, users {}, impressions {} ({} unengaged), clicks {}, saves {}, conversions {}",
            self.pins,
            self.users,
            self.impressions,
            self.unengaged_impressions,
            self.clicks,
            self.saves,
            self.conversions
        )?;
        if self.pin_conflicts > 0 {
            writeln!(
                f,
                "pins with disagreeing rows (first kept): {}",
                self.pin_conflicts
            )?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// Collects skipped rows while a file is read.
#[derive(Default)]
pub(super) struct Skips {
    groups: BTreeMap<Option<String>, SkipGroup>,
}

impl Skips {
    /// Records a skipped row.
    pub(super) fn record(&mut self, at: Location, message: String) {
        let group = self
            .groups
            .entry(at.column.clone())
            .or_insert_with(|| SkipGroup {
                column: at.column.clone(),
                count: 0,
                examples: Vec::new(),
            });
        group.count += 1;
        if group.examples.len() < EXAMPLES_PER_GROUP {
            group.examples.push(BadRow { at, message });
        }
    }

    /// The first example recorded, in file order across groups.
    pub(super) fn first(&self) -> Option<&BadRow> {
        self.groups
            .values()
            .flat_map(|g| &g.examples)
            .min_by_key(|b| b.at.row)
    }

    pub(super) fn into_groups(self) -> Vec<SkipGroup> {
        self.groups.into_values().collect()
    }
}

/// The counts a report takes from the finished log.
pub(super) struct Produced {
    pub(super) pins: usize,
    pub(super) users: usize,
    pub(super) impressions: usize,
    pub(super) unengaged_impressions: usize,
    pub(super) clicks: usize,
    pub(super) saves: usize,
    pub(super) conversions: usize,
}

impl Produced {
    pub(super) fn of(log: &EventLog) -> Produced {
        let engaged: IdSet<i64> = log.engagements.iter().map(|e| e.impression_id).collect();
        let converted: IdSet<(i64, i64, i64)> = log
            .conversions
            .iter()
            .map(|c| (c.user_id, c.pin_id, c.ts))
            .collect();
        let imps = &log.impressions;
        let unengaged_impressions = (0..imps.len())
            .filter(|&i| {
                !engaged.contains(&imps.impression_id[i])
                    && !converted.contains(&(imps.user_id[i], imps.pin_id[i], imps.ts[i]))
            })
            .count();
        let clicks = log
            .engagements
            .iter()
            .filter(|e| e.kind == EngagementKind::Click)
            .count();
        Produced {
            pins: log.pins.len(),
            users: log.users.len(),
            impressions: imps.len(),
            unengaged_impressions,
            clicks,
            saves: log.engagements.len() - clicks,
            conversions: log.conversions.len(),
        }
    }
}
