//! A table as read, before it becomes part of an [`EventLog`](crate::EventLog): its typed
//! columns, its bad cells, the checks that span rows, and the skip-or-fail decision.

use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::{Error, Location, Result};
use crate::hash::{IdMap, IdSet};
use crate::io::OnBadRow;
use crate::io::columns::{Bad, Values};
use crate::io::plan::{Plan, Rule};
use crate::schema::{
    CategoricalColumn, Conversion, ConversionKind, Engagement, EngagementKind, Impressions,
    PinRecord, UserRecord,
};

/// How many skipped rows a report shows.
pub(crate) const MAX_EXAMPLES: usize = 20;

/// A table's columns as read from its files, with every bad cell found so far.
#[derive(Debug)]
pub(crate) struct TableData {
    pub(crate) plan: Plan,
    /// Its files, in reading order.
    pub(crate) files: Vec<PathBuf>,
    /// Table row of each file's first row.
    pub(crate) file_starts: Vec<usize>,
    /// One buffer per planned column; `None` for an optional column no file has.
    pub(crate) values: Vec<Option<Values>>,
    pub(crate) rows: usize,
    pub(crate) bad: Vec<Bad>,
}

/// The rows a table lost to [`OnBadRow::Skip`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Skipped {
    pub(crate) rows: u64,
    /// The first few, with the first problem of each.
    pub(crate) examples: Vec<(Location, String)>,
}

impl TableData {
    /// The file, file row (from 1) and column of a bad cell.
    fn location(&self, bad: &Bad) -> Location {
        let f = self
            .file_starts
            .partition_point(|&s| s <= bad.row)
            .saturating_sub(1);
        let start = self.file_starts.get(f).copied().unwrap_or(0);
        Location {
            file: self.files.get(f).cloned().unwrap_or_default(),
            row: Some((bad.row - start) as u64 + 1),
            column: bad
                .column
                .and_then(|c| self.plan.columns.get(c))
                .map(|c| c.name.clone()),
        }
    }

    fn i64_column(&self, name: &str) -> Option<(usize, &[i64])> {
        let c = self.plan.index(name)?;
        match self.values.get(c)? {
            Some(Values::I64(v)) => Some((c, v)),
            _ => None,
        }
    }

    /// Marks every row whose `pin_id` is not in `pins`.
    pub(crate) fn check_catalogue(&mut self, pins: &IdSet<i64>) {
        let Some((c, ids)) = self.i64_column("pin_id") else {
            return;
        };
        let missing: Vec<Bad> = ids
            .par_iter()
            .enumerate()
            .filter(|(_, p)| !pins.contains(p))
            .map(|(row, p)| Bad {
                row,
                column: Some(c),
                message: format!("pin {p} is not in the pins table"),
            })
            .collect();
        self.bad.extend(missing);
    }

    /// Marks every row whose `column` repeats an earlier good row's value; the first stays.
    pub(crate) fn check_unique(&mut self, column: &str) {
        let Some((c, ids)) = self.i64_column(column) else {
            return;
        };
        let mut already_bad: Vec<usize> = self.bad.iter().map(|b| b.row).collect();
        already_bad.sort_unstable();
        let mut first: IdMap<i64, usize> = IdMap::default();
        first.reserve(ids.len());
        let mut repeats = Vec::new();
        for (row, &id) in ids.iter().enumerate() {
            if already_bad.binary_search(&row).is_ok() {
                continue;
            }
            if let Some(&earlier) = first.get(&id) {
                repeats.push((row, id, earlier));
            } else {
                first.insert(id, row);
            }
        }
        for (row, id, earlier) in repeats {
            let at = self.location(&Bad {
                row: earlier,
                column: None,
                message: String::new(),
            });
            let message = format!(
                "duplicate {column} {id} (first at {}, row {})",
                at.file.display(),
                at.row.unwrap_or(0)
            );
            self.bad.push(Bad {
                row,
                column: Some(c),
                message,
            });
        }
    }

    /// Fails on the first bad cell (in file and row order), or drops every row with one.
    pub(crate) fn resolve(&mut self, on_bad_row: OnBadRow) -> Result<Skipped> {
        if self.bad.is_empty() {
            return Ok(Skipped::default());
        }
        self.bad.sort();
        if on_bad_row == OnBadRow::Error {
            let first = &self.bad[0];
            return Err(Error::BadInput {
                at: self.location(first),
                message: first.message.clone(),
            });
        }
        let mut keep = vec![true; self.rows];
        let mut examples = Vec::new();
        for b in &self.bad {
            if let Some(k) = keep.get_mut(b.row).filter(|k| **k) {
                *k = false;
                if examples.len() < MAX_EXAMPLES {
                    examples.push((self.location(b), b.message.clone()));
                }
            }
        }
        let skipped = keep.iter().filter(|k| !**k).count();
        for v in self.values.iter_mut().flatten() {
            v.retain(&keep);
        }
        self.rows -= skipped;
        self.bad.clear();
        Ok(Skipped {
            rows: skipped as u64,
            examples,
        })
    }

    fn take(&mut self, name: &str) -> Option<Values> {
        let c = self.plan.index(name)?;
        self.values.get_mut(c)?.take()
    }

    /// A required column; its absence here is an internal error (the plan requires it).
    fn required(&mut self, name: &str) -> Result<Values> {
        self.take(name).ok_or_else(|| Error::BadInput {
            at: Location::column(self.files.first().cloned().unwrap_or_default(), name),
            message: format!("missing required column `{name}`"),
        })
    }

    fn ids(&mut self, name: &str) -> Result<Vec<i64>> {
        match self.required(name)? {
            Values::I64(v) => Ok(v),
            other => Err(self.type_error(name, &other)),
        }
    }

    /// A column decoded into the wrong buffer type: an internal error, reported, not a panic.
    fn type_error(&self, name: &str, _values: &Values) -> Error {
        Error::BadInput {
            at: Location::column(self.files.first().cloned().unwrap_or_default(), name),
            message: format!("column `{name}` was decoded into the wrong type"),
        }
    }

    fn optional_ids(&mut self, name: &str) -> Vec<Option<i64>> {
        match self.take(name) {
            Some(Values::OptI64(v)) => v,
            _ => Vec::new(),
        }
    }

    fn optional_floats(&mut self, name: &str) -> Vec<Option<f32>> {
        match self.take(name) {
            Some(Values::OptF32(v)) => v,
            _ => Vec::new(),
        }
    }

    /// The `f_*` (for [`Rule::Dense`]) or `c_*` (for [`Rule::Categorical`]) columns in plan order.
    fn extras(&mut self, rule: Rule) -> Vec<(String, Values)> {
        let mut out = Vec::new();
        for (spec, values) in self.plan.columns.iter().zip(self.values.iter_mut()) {
            if spec.rule == rule
                && let Some(v) = values.take()
            {
                out.push((spec.name.clone(), v));
            }
        }
        out
    }

    fn dense(&mut self) -> Vec<(String, Vec<f32>)> {
        self.extras(Rule::Dense)
            .into_iter()
            .filter_map(|(name, v)| match v {
                Values::F32(v) => Some((name, v)),
                _ => None,
            })
            .collect()
    }

    fn categorical(&mut self) -> Vec<CategoricalColumn> {
        self.extras(Rule::Categorical)
            .into_iter()
            .filter_map(|(name, v)| match v {
                Values::I64(values) => Some(CategoricalColumn { name, values }),
                _ => None,
            })
            .collect()
    }

    /// The pins, and the names of their `f_*` columns.
    pub(crate) fn into_pins(mut self) -> Result<(Vec<PinRecord>, Vec<String>)> {
        let pin_id = self.ids("pin_id")?;
        let advertiser_id = self.ids("advertiser_id")?;
        let category_id = self.ids("category_id")?;
        let brand_id = self.optional_ids("brand_id");
        let price = self.optional_floats("price");
        let dense = self.dense();
        let pins = (0..self.rows)
            .map(|i| PinRecord {
                pin_id: pin_id[i],
                advertiser_id: advertiser_id[i],
                category_id: category_id[i],
                brand_id: brand_id.get(i).copied().flatten(),
                price: price.get(i).copied().flatten(),
                dense: dense.iter().map(|(_, v)| v[i]).collect(),
            })
            .collect();
        Ok((pins, dense.into_iter().map(|(n, _)| n).collect()))
    }

    /// The users, and the names of their `f_*` and `c_*` columns.
    pub(crate) fn into_users(mut self) -> Result<(Vec<UserRecord>, Vec<String>, Vec<String>)> {
        let user_id = self.ids("user_id")?;
        let dense = self.dense();
        let categorical = self.categorical();
        let users = (0..self.rows)
            .map(|i| UserRecord {
                user_id: user_id[i],
                categorical: categorical.iter().map(|c| c.values[i]).collect(),
                dense: dense.iter().map(|(_, v)| v[i]).collect(),
            })
            .collect();
        Ok((
            users,
            dense.into_iter().map(|(n, _)| n).collect(),
            categorical.into_iter().map(|c| c.name).collect(),
        ))
    }

    /// The impressions, as a column store.
    pub(crate) fn into_impressions(mut self) -> Result<Impressions> {
        let surface = match self.required("surface")? {
            Values::Surface(v) => v,
            other => return Err(self.type_error("surface", &other)),
        };
        let position = match self.take("position") {
            Some(Values::OptU32(v)) => v,
            _ => Vec::new(),
        };
        let impressions = Impressions {
            impression_id: self.ids("impression_id")?,
            request_id: self.ids("request_id")?,
            ts: self.ids("ts")?,
            user_id: self.ids("user_id")?,
            pin_id: self.ids("pin_id")?,
            surface,
            position,
            context_pin_id: self.optional_ids("context_pin_id"),
            query_id: self.optional_ids("query_id"),
            categorical: self.categorical(),
        };
        impressions.check_lengths()?;
        Ok(impressions)
    }

    /// The engagements.
    pub(crate) fn into_engagements(mut self) -> Result<Vec<Engagement>> {
        let impression_id = self.ids("impression_id")?;
        let ts = self.ids("ts")?;
        let kind: Vec<EngagementKind> = match self.required("kind")? {
            Values::Engagement(v) => v,
            other => return Err(self.type_error("kind", &other)),
        };
        let duration_s = self.optional_floats("duration_s");
        Ok((0..self.rows)
            .map(|i| Engagement {
                impression_id: impression_id[i],
                ts: ts[i],
                kind: kind[i],
                duration_s: duration_s.get(i).copied().flatten(),
            })
            .collect())
    }

    /// The conversions.
    pub(crate) fn into_conversions(mut self) -> Result<Vec<Conversion>> {
        let ts = self.ids("ts")?;
        let user_id = self.ids("user_id")?;
        let pin_id = self.ids("pin_id")?;
        let kind: Vec<ConversionKind> = match self.required("kind")? {
            Values::Conversion(v) => v,
            other => return Err(self.type_error("kind", &other)),
        };
        let value = self.optional_floats("value");
        Ok((0..self.rows)
            .map(|i| Conversion {
                ts: ts[i],
                user_id: user_id[i],
                pin_id: pin_id[i],
                kind: kind[i],
                value: value.get(i).copied().flatten(),
            })
            .collect())
    }
}
