//! Which columns a table has, what each must hold, and how a file's columns map onto them.

use std::collections::HashSet;
use std::path::Path;

use arrow_schema::DataType;

use crate::error::{Error, Location, Result};
use crate::io::{TS_RANGE, Table};

/// What a column holds and which values are bad. Both readers apply the same rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// A required integer id.
    Id,
    /// A required timestamp, unix seconds in [`TS_RANGE`].
    Ts,
    /// A nullable integer id.
    OptId,
    /// A nullable slot position, 0..=u32::MAX.
    Position,
    /// A required surface name.
    Surface,
    /// A required engagement kind name.
    EngagementKind,
    /// A required conversion kind name.
    ConversionKind,
    /// A required finite float (`f_*` columns).
    Dense,
    /// A nullable finite float.
    OptFloat,
    /// A nullable finite float >= 0 (`duration_s`, `price`).
    OptNonNegative,
    /// A required categorical value: an integer, or a string mapped by `stable_string_id`.
    Categorical,
}

impl Rule {
    /// Whether a null is a value (`None`) rather than a bad cell.
    pub(crate) fn nullable(self) -> bool {
        matches!(
            self,
            Rule::OptId | Rule::Position | Rule::OptFloat | Rule::OptNonNegative
        )
    }

    /// Whether a column of Arrow type `t` can hold this rule's values.
    pub(crate) fn accepts(self, t: &DataType) -> bool {
        match t {
            // An all-null column (what pyarrow writes for a column of Nones).
            DataType::Null => true,
            DataType::Dictionary(key, value) => is_integer(key) && self.accepts_plain(value),
            t => self.accepts_plain(t),
        }
    }

    fn accepts_plain(self, t: &DataType) -> bool {
        match self {
            Rule::Id | Rule::Ts | Rule::OptId | Rule::Position => is_integer(t),
            Rule::Dense | Rule::OptFloat | Rule::OptNonNegative => {
                is_integer(t) || matches!(t, DataType::Float32 | DataType::Float64)
            }
            Rule::Surface | Rule::EngagementKind | Rule::ConversionKind => is_string(t),
            Rule::Categorical => is_integer(t) || is_string(t),
        }
    }

    /// The accepted types, for an error message.
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Rule::Id | Rule::Ts | Rule::OptId | Rule::Position => {
                "an integer type (INT64 canonical)"
            }
            Rule::Dense | Rule::OptFloat | Rule::OptNonNegative => {
                "a float or integer type (FLOAT/DOUBLE canonical)"
            }
            Rule::Surface | Rule::EngagementKind | Rule::ConversionKind => {
                "a UTF-8 string type (plain or dictionary-encoded)"
            }
            Rule::Categorical => "an integer or UTF-8 string type",
        }
    }
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Checks a timestamp against [`TS_RANGE`].
pub(crate) fn check_ts(v: i64) -> std::result::Result<i64, String> {
    if TS_RANGE.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "timestamp {v} is outside {}..={} (1970-01-01 to 2100-01-01, unix seconds)",
            TS_RANGE.start(),
            TS_RANGE.end()
        ))
    }
}

/// Narrows a position to u32.
pub(crate) fn check_position(v: i64) -> std::result::Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("position {v} is outside 0..={}", u32::MAX))
}

/// Checks a float of a column with this rule (finite; not negative where the rule says so).
pub(crate) fn check_float(rule: Rule, v: f32) -> std::result::Result<f32, String> {
    if !v.is_finite() {
        Err(format!("{v} is not a finite number"))
    } else if rule == Rule::OptNonNegative && v < 0.0 {
        Err(format!("{v} is negative"))
    } else {
        Ok(v)
    }
}

/// The message of a null in a column whose rule does not allow one.
pub(crate) const NULL_MESSAGE: &str = "null in a required column";

/// One of a table's columns: its name and its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnSpec {
    pub(crate) name: String,
    pub(crate) rule: Rule,
    /// Whether every file of the table must have it.
    pub(crate) required: bool,
}

/// A canonical column of a table.
struct Base {
    name: &'static str,
    rule: Rule,
    required: bool,
    /// Kept by [`crate::io::ImpressionColumns::Core`].
    core: bool,
}

const fn req(name: &'static str, rule: Rule) -> Base {
    Base {
        name,
        rule,
        required: true,
        core: true,
    }
}

const fn opt(name: &'static str, rule: Rule) -> Base {
    Base {
        name,
        rule,
        required: false,
        core: false,
    }
}

const PINS: &[Base] = &[
    req("pin_id", Rule::Id),
    req("advertiser_id", Rule::Id),
    req("category_id", Rule::Id),
    opt("brand_id", Rule::OptId),
    opt("price", Rule::OptNonNegative),
];
const USERS: &[Base] = &[req("user_id", Rule::Id)];
const IMPRESSIONS: &[Base] = &[
    req("impression_id", Rule::Id),
    req("request_id", Rule::Id),
    req("ts", Rule::Ts),
    req("user_id", Rule::Id),
    req("pin_id", Rule::Id),
    req("surface", Rule::Surface),
    opt("position", Rule::Position),
    opt("context_pin_id", Rule::OptId),
    opt("query_id", Rule::OptId),
];
const ENGAGEMENTS: &[Base] = &[
    req("impression_id", Rule::Id),
    req("ts", Rule::Ts),
    req("kind", Rule::EngagementKind),
    opt("duration_s", Rule::OptNonNegative),
];
const CONVERSIONS: &[Base] = &[
    req("ts", Rule::Ts),
    req("user_id", Rule::Id),
    req("pin_id", Rule::Id),
    req("kind", Rule::ConversionKind),
    opt("value", Rule::OptFloat),
];

/// The prefix of dense float columns.
pub(crate) const DENSE_PREFIX: &str = "f_";
/// The prefix of categorical columns.
pub(crate) const CATEGORICAL_PREFIX: &str = "c_";

fn base(table: Table) -> &'static [Base] {
    match table {
        Table::Pins => PINS,
        Table::Users => USERS,
        Table::Impressions => IMPRESSIONS,
        Table::Engagements => ENGAGEMENTS,
        Table::Conversions => CONVERSIONS,
    }
}

/// The canonical column names of a table, in schema order (the writer's test checks its order).
#[cfg(test)]
pub(crate) fn base_names(table: Table) -> impl Iterator<Item = &'static str> {
    base(table).iter().map(|b| b.name)
}

/// Whether a table has `f_*` dense and `c_*` categorical columns.
fn extras(table: Table, core_only: bool) -> (bool, bool) {
    match table {
        Table::Pins => (true, false),
        Table::Users => (true, true),
        Table::Impressions => (false, !core_only),
        Table::Engagements | Table::Conversions => (false, false),
    }
}

/// The columns read from a table: its canonical ones, then the `f_*` / `c_*` columns of its first
/// file in that file's order.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) table: Table,
    pub(crate) columns: Vec<ColumnSpec>,
    core_only: bool,
}

impl Plan {
    /// Plans `table` from the column names of its first file.
    pub(crate) fn new(table: Table, names: &[String], core_only: bool) -> Plan {
        let mut columns: Vec<ColumnSpec> = base(table)
            .iter()
            .filter(|b| !(core_only && table == Table::Impressions && !b.core))
            .map(|b| ColumnSpec {
                name: b.name.to_owned(),
                rule: b.rule,
                required: b.required,
            })
            .collect();
        let (dense, categorical) = extras(table, core_only);
        let mut seen = HashSet::new();
        for name in names {
            let rule = if dense && name.starts_with(DENSE_PREFIX) {
                Rule::Dense
            } else if categorical && name.starts_with(CATEGORICAL_PREFIX) {
                Rule::Categorical
            } else {
                continue;
            };
            if seen.insert(name.as_str()) {
                columns.push(ColumnSpec {
                    name: name.clone(),
                    rule,
                    required: true,
                });
            }
        }
        Plan {
            table,
            columns,
            core_only,
        }
    }

    /// Where each planned column is among `names` (a file's columns): `None` for an optional
    /// column the file lacks. A missing required column, a planned column given twice, or an
    /// `f_*` / `c_*` column the plan lacks is an error naming the file.
    pub(crate) fn map(&self, file: &Path, names: &[String]) -> Result<Vec<Option<usize>>> {
        let mut positions = Vec::with_capacity(self.columns.len());
        for spec in &self.columns {
            let mut found = names.iter().enumerate().filter(|(_, n)| **n == spec.name);
            let position = found.next().map(|(i, _)| i);
            if found.next().is_some() {
                return Err(bad_column(
                    file,
                    &spec.name,
                    "the column appears twice".to_owned(),
                ));
            }
            if position.is_none() && spec.required {
                let message = if spec.rule == Rule::Dense || spec.rule == Rule::Categorical {
                    format!(
                        "missing column `{}`: every file of the `{}` table must have the same \
                         {DENSE_PREFIX}* and {CATEGORICAL_PREFIX}* columns",
                        spec.name,
                        self.table.name()
                    )
                } else {
                    format!(
                        "missing required column `{}` of the `{}` table",
                        spec.name,
                        self.table.name()
                    )
                };
                return Err(bad_column(file, &spec.name, message));
            }
            positions.push(position);
        }
        let planned = Plan::new(self.table, names, false);
        if let Some(extra) = planned.columns.iter().find(|c| {
            matches!(c.rule, Rule::Dense | Rule::Categorical)
                && self.wants_extras_of(c.rule)
                && !self.columns.iter().any(|p| p.name == c.name)
        }) {
            return Err(bad_column(
                file,
                &extra.name,
                format!(
                    "column `{}` is not in the first file of the `{}` table: every file of a table \
                     must have the same {DENSE_PREFIX}* and {CATEGORICAL_PREFIX}* columns",
                    extra.name,
                    self.table.name()
                ),
            ));
        }
        Ok(positions)
    }

    fn wants_extras_of(&self, rule: Rule) -> bool {
        let (dense, categorical) = extras(self.table, self.core_only);
        match rule {
            Rule::Dense => dense,
            Rule::Categorical => categorical,
            _ => false,
        }
    }

    /// The index of the planned column `name`.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A structural error about one column of a file.
pub(crate) fn bad_column(file: &Path, column: &str, message: String) -> Error {
    Error::BadInput {
        at: Location::column(file, column),
        message,
    }
}
