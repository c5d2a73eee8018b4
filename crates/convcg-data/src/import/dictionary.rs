//! Stable string-to-int64 dictionaries, and their CSV form.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Location, Result};

/// The folder, beside the tables, that holds the dictionaries.
pub const DICTIONARY_DIR: &str = "dictionaries";

/// Joins the two parts of a compound key (trivago's query: city, then current_filters). Neither
/// part holds a tab in the source.
pub const QUERY_SEPARATOR: char = '\t';

/// `value` as one CSV field: as it is, or quoted with doubled quotes where it holds a comma,
/// quote, CR or LF (RFC 4180).
pub fn csv_field(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\"")).into()
    } else {
        value.into()
    }
}

/// A map from strings to int64 ids in first-seen order: the first string inserted gets id 0,
/// the next new one 1, and so on, so the same input always gives the same ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dictionary {
    name: String,
    values: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Dictionary {
    /// An empty dictionary called `name` (used in its file name).
    pub fn new(name: impl Into<String>) -> Dictionary {
        Dictionary {
            name: name.into(),
            values: Vec::new(),
            ids: HashMap::new(),
        }
    }

    /// Its name (`user`, `item`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id of `value`, inserting it with the next id if new.
    pub fn intern(&mut self, value: &str) -> i64 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.values.len() as i64;
        self.values.push(value.to_owned());
        self.ids.insert(value.to_owned(), id);
        id
    }

    /// The id of `value`, if present.
    pub fn id(&self, value: &str) -> Option<i64> {
        self.ids.get(value).copied()
    }

    /// The string with this id, if any.
    pub fn value(&self, id: i64) -> Option<&str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.values.get(i))
            .map(String::as_str)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// (id, string) in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (i64, &str)> + '_ {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, v.as_str()))
    }

    /// Where it is written, relative to the dataset folder: `dictionaries/NAME.csv`.
    pub fn relative_path(&self) -> PathBuf {
        Path::new(DICTIONARY_DIR).join(format!("{}.csv", self.name))
    }

    /// The CSV text: a header `id,value`, then one row per entry in id order; a value holding
    /// a comma, quote, CR or LF is quoted with doubled quotes (RFC 4180).
    pub fn to_csv(&self) -> String {
        let mut out = String::from("id,value\n");
        for (id, value) in self.iter() {
            out.push_str(&id.to_string());
            out.push(',');
            out.push_str(&csv_field(value));
            out.push('\n');
        }
        out
    }

    /// Reads [`Dictionary::to_csv`]'s text back; `file` names the source in errors. The ids
    /// must be 0, 1, 2, ... in order and the values distinct.
    pub fn from_csv(name: impl Into<String>, file: &Path, text: &str) -> Result<Dictionary> {
        let mut dict = Dictionary::new(name);
        let records = parse_records(file, text)?;
        let mut rows = records.into_iter();
        match rows.next() {
            Some(header) if header == ["id", "value"] => {}
            _ => {
                return Err(Error::BadInput {
                    at: Location::file(file),
                    message: "the first line must be the header `id,value`".into(),
                });
            }
        }
        for (i, record) in rows.enumerate() {
            let row = i as u64 + 1;
            let [id, value]: [String; 2] =
                record
                    .try_into()
                    .map_err(|r: Vec<String>| Error::BadInput {
                        at: Location {
                            row: Some(row),
                            ..Location::file(file)
                        },
                        message: format!("{} fields, expected 2", r.len()),
                    })?;
            if id.parse::<i64>().ok() != Some(i as i64) {
                return Err(Error::BadInput {
                    at: Location::cell(file, row, "id"),
                    message: format!("id `{id}`, expected {i} (ids are dense and in order)"),
                });
            }
            if dict.intern(&value) != i as i64 {
                return Err(Error::BadInput {
                    at: Location::cell(file, row, "value"),
                    message: format!("duplicate value `{value}`"),
                });
            }
        }
        Ok(dict)
    }
}

/// Splits RFC 4180 text into records of fields (quoted fields may hold commas, quotes and line
/// breaks). A final line break does not start an empty record.
fn parse_records(file: &Path, text: &str) -> Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line: u64 = 1;
    let mut at_record_start = true;
    while let Some(c) = chars.next() {
        at_record_start = false;
        match c {
            '"' if field.is_empty() => loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => {
                        line += u64::from(c == '\n');
                        field.push(c);
                    }
                    None => {
                        return Err(Error::BadInput {
                            at: Location::file(file),
                            message: format!("unterminated quoted field starting on line {line}"),
                        });
                    }
                }
            },
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                line += 1;
                at_record_start = true;
            }
            c => field.push(c),
        }
    }
    if !at_record_start {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_first_seen_order_from_zero() {
        let mut d = Dictionary::new("city");
        assert_eq!(d.intern("Paris"), 0);
        assert_eq!(d.intern("Rome"), 1);
        assert_eq!(d.intern("Paris"), 0);
        assert_eq!(d.len(), 2);
        assert_eq!(d.value(1), Some("Rome"));
        assert_eq!(d.value(2), None);
        assert_eq!(d.value(-1), None);
        assert_eq!(d.id("Rome"), Some(1));
        assert_eq!(d.id("Oslo"), None);
        assert_eq!(d.relative_path(), Path::new("dictionaries/city.csv"));
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let mut d = Dictionary::new("q");
        d.intern("Santa Monica, USA");
        d.intern("plain");
        d.intern("say \"hi\"");
        assert_eq!(
            d.to_csv(),
            "id,value\n0,\"Santa Monica, USA\"\n1,plain\n2,\"say \"\"hi\"\"\"\n"
        );
    }

    #[test]
    fn bad_csv_is_an_error_naming_the_row() {
        let f = Path::new("d.csv");
        let err = Dictionary::from_csv("d", f, "id,value\n0,a\n2,b\n").unwrap_err();
        assert!(
            matches!(&err, Error::BadInput { at, .. } if at.row == Some(2)),
            "{err}"
        );
        let err = Dictionary::from_csv("d", f, "id,value\n0,a\n1,a\n").unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
        assert!(Dictionary::from_csv("d", f, "0,a\n").is_err());
        assert!(Dictionary::from_csv("d", f, "id,value\n0,\"open\n").is_err());
        assert!(Dictionary::from_csv("d", f, "id,value\n0,a,b\n").is_err());
    }

    proptest! {
        #[test]
        fn csv_round_trips(values in proptest::collection::vec(".{0,12}", 0..40)) {
            let mut d = Dictionary::new("x");
            for v in &values {
                d.intern(v);
            }
            let back = Dictionary::from_csv("x", Path::new("x.csv"), &d.to_csv()).unwrap();
            prop_assert_eq!(&back, &d);
            for v in &values {
                let id = back.id(v).unwrap();
                prop_assert_eq!(back.value(id), Some(v.as_str()));
            }
        }
    }
}
