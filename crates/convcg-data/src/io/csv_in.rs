//! CSV tables: a header, then one record per row, streamed through a buffer into typed
//! columns. An empty field is a null.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::error::{Error, Location, Result};
use crate::io::Table;
use crate::io::arrow_in::categorical_text;
use crate::io::columns::{Bad, Values};
use crate::io::plan::{NULL_MESSAGE, Plan, Rule, check_float, check_position, check_ts};
use crate::io::table::TableData;
use crate::schema::{ConversionKind, EngagementKind, Surface};

/// Read buffer: a few large reads instead of many small ones.
const BUFFER_BYTES: usize = 1 << 20;

fn csv_error(path: &Path, row: Option<u64>, e: csv::Error) -> Error {
    if e.is_io_error() {
        if let csv::ErrorKind::Io(source) = e.into_kind() {
            return Error::Io {
                path: path.to_owned(),
                source,
            };
        }
        return Error::BadInput {
            at: Location::file(path),
            message: "unreadable CSV".to_owned(),
        };
    }
    Error::BadInput {
        at: Location {
            row,
            ..Location::file(path)
        },
        message: format!("malformed CSV: {e}"),
    }
}

/// Reads a table from one CSV file with a header.
pub(crate) fn read_csv(table: Table, path: &Path, core_only: bool) -> Result<TableData> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(BufReader::with_capacity(BUFFER_BYTES, file));
    let header: Vec<String> = reader
        .byte_headers()
        .map_err(|e| csv_error(path, None, e))?
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let plan = Plan::new(table, &header, core_only);
    let positions = plan.map(path, &header)?;
    let mut values: Vec<Option<Values>> = plan
        .columns
        .iter()
        .zip(&positions)
        .map(|(spec, p)| p.map(|_| Values::filled(spec.rule, 0)))
        .collect();

    let mut bad = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut row = 0usize;
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .map_err(|e| csv_error(path, Some(row as u64 + 1), e))?;
        if !more {
            break;
        }
        if record.len() != header.len() {
            bad.push(Bad {
                row,
                column: None,
                message: format!(
                    "the row has {} fields, the header has {}",
                    record.len(),
                    header.len()
                ),
            });
            values
                .iter_mut()
                .flatten()
                .for_each(Values::push_placeholder);
        } else {
            for (c, (v, p)) in values.iter_mut().zip(&positions).enumerate() {
                let (Some(v), Some(p)) = (v.as_mut(), p) else {
                    continue;
                };
                let field = record.get(*p).unwrap_or_default();
                if let Err(message) = push_field(v, plan.columns[c].rule, field) {
                    bad.push(Bad {
                        row,
                        column: Some(c),
                        message,
                    });
                }
            }
        }
        row += 1;
    }
    Ok(TableData {
        plan,
        files: vec![path.to_owned()],
        file_starts: vec![0],
        values,
        rows: row,
        bad,
    })
}

fn text(field: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(field).map_err(|_| format!("`{}` is not UTF-8", field.escape_ascii()))
}

fn parse_i64(field: &[u8]) -> std::result::Result<i64, String> {
    text(field)?
        .parse::<i64>()
        .map_err(|_| format!("`{}` is not an integer", field.escape_ascii()))
}

fn parse_f32(field: &[u8]) -> std::result::Result<f32, String> {
    text(field)?
        .parse::<f32>()
        .map_err(|_| format!("`{}` is not a number", field.escape_ascii()))
}

fn parse_name<T: std::str::FromStr<Err = Error>>(field: &[u8]) -> std::result::Result<T, String> {
    text(field)?.parse::<T>().map_err(|e| e.to_string())
}

/// A categorical cell: see [`categorical_text`].
fn categorical(field: &[u8]) -> i64 {
    categorical_text(&String::from_utf8_lossy(field))
}

/// Parses one field by `rule` and appends it to `values` (a placeholder if it is bad).
fn push_field(values: &mut Values, rule: Rule, field: &[u8]) -> std::result::Result<(), String> {
    let null = field.is_empty();
    if null && !rule.nullable() {
        values.push_placeholder();
        return Err(NULL_MESSAGE.to_owned());
    }
    let pushed = match values {
        Values::I64(v) => match rule {
            Rule::Categorical => {
                v.push(categorical(field));
                Ok(())
            }
            Rule::Ts => parse_i64(field).and_then(check_ts).map(|x| v.push(x)),
            _ => parse_i64(field).map(|x| v.push(x)),
        },
        Values::OptI64(v) if null => {
            v.push(None);
            Ok(())
        }
        Values::OptI64(v) => parse_i64(field).map(|x| v.push(Some(x))),
        Values::OptU32(v) if null => {
            v.push(None);
            Ok(())
        }
        Values::OptU32(v) => parse_i64(field)
            .and_then(check_position)
            .map(|x| v.push(Some(x))),
        Values::F32(v) => parse_f32(field)
            .and_then(|x| check_float(rule, x))
            .map(|x| v.push(x)),
        Values::OptF32(v) if null => {
            v.push(None);
            Ok(())
        }
        Values::OptF32(v) => parse_f32(field)
            .and_then(|x| check_float(rule, x))
            .map(|x| v.push(Some(x))),
        Values::Surface(v) => parse_name::<Surface>(field).map(|x| v.push(x)),
        Values::Engagement(v) => parse_name::<EngagementKind>(field).map(|x| v.push(x)),
        Values::Conversion(v) => parse_name::<ConversionKind>(field).map(|x| v.push(x)),
    };
    if pushed.is_err() {
        values.push_placeholder();
    }
    pushed
}
