//! A tiny hand-made dataset, as text cells, that the I/O tests write as CSV or as Parquet after
//! changing a cell, a row or a column.

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};
use convcg_data::io::Format;
use parquet::arrow::ArrowWriter;

/// One table as text: a header and rows of cells (an empty cell is a null).
#[derive(Clone, Debug)]
pub struct TextTable {
    pub name: &'static str,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl TextTable {
    fn new(name: &'static str, header: &str, rows: &[&str]) -> TextTable {
        let split = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        TextTable {
            name,
            header: split(header),
            rows: rows.iter().map(|r| split(r)).collect(),
        }
    }

    /// Sets the cell of data row `row` (from 1) in `column`.
    pub fn set(&mut self, row: usize, column: &str, value: &str) {
        let c = self.index(column);
        self.rows[row - 1][c] = value.to_owned();
    }

    /// Removes a column.
    pub fn drop_column(&mut self, column: &str) {
        let c = self.index(column);
        self.header.remove(c);
        for r in &mut self.rows {
            r.remove(c);
        }
    }

    fn index(&self, column: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == column)
            .unwrap_or_else(|| panic!("no column {column} in {}", self.name))
    }

    /// The CSV text.
    pub fn csv(&self) -> String {
        let mut s = self.header.join(",");
        s.push('\n');
        for r in &self.rows {
            s.push_str(&r.join(","));
            s.push('\n');
        }
        s
    }

    /// The table as an Arrow batch: strings for `surface`, `kind` and `c_*`, doubles for
    /// floats, INT64 for the rest; `overrides` replace whole columns.
    pub fn batch(&self, overrides: &[(&str, ArrayRef)]) -> RecordBatch {
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (c, name) in self.header.iter().enumerate() {
            let cells: Vec<Option<&str>> = self
                .rows
                .iter()
                .map(|r| Some(r[c].as_str()).filter(|s| !s.is_empty()))
                .collect();
            let array: ArrayRef = if let Some((_, a)) = overrides.iter().find(|(n, _)| n == name) {
                a.clone()
            } else if is_string(name) {
                Arc::new(StringArray::from(cells))
            } else if is_float(name) {
                Arc::new(Float64Array::from(
                    cells
                        .iter()
                        .map(|c| c.map(|s| s.parse::<f64>().expect("a number")))
                        .collect::<Vec<_>>(),
                ))
            } else {
                Arc::new(Int64Array::from(
                    cells
                        .iter()
                        .map(|c| c.map(|s| s.parse::<i64>().expect("an integer")))
                        .collect::<Vec<_>>(),
                ))
            };
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("a valid batch")
    }

    /// Writes the table into `dir` in `format`; returns its path.
    pub fn write(&self, dir: &Path, format: Format) -> PathBuf {
        self.write_with(dir, format, &[])
    }

    /// Like [`TextTable::write`], with whole Parquet columns replaced.
    pub fn write_with(
        &self,
        dir: &Path,
        format: Format,
        overrides: &[(&str, ArrayRef)],
    ) -> PathBuf {
        let path = dir.join(format!("{}.{format}", self.name));
        match format {
            Format::Csv => std::fs::write(&path, self.csv()).expect("writable"),
            Format::Parquet => write_batch(&path, &self.batch(overrides)),
        }
        path
    }
}

/// Writes one batch as a Parquet file.
pub fn write_batch(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).expect("writable");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("a writer");
    writer.write(batch).expect("written");
    writer.close().expect("closed");
}

fn is_string(name: &str) -> bool {
    name == "surface" || name == "kind" || name.starts_with("c_")
}

fn is_float(name: &str) -> bool {
    matches!(name, "price" | "duration_s" | "value") || name.starts_with("f_")
}

/// The five tables of a small valid log: 3 pins, 2 users, 4 impressions, 2 engagements,
/// 2 conversions.
pub fn dataset() -> Vec<TextTable> {
    vec![
        TextTable::new(
            "pins",
            "pin_id,advertiser_id,category_id,brand_id,price,f_a",
            &["1,10,100,,9.5,0.1", "2,10,100,5,,0.2", "3,11,101,6,3,0.3"],
        ),
        TextTable::new("users", "user_id,c_country,f_b", &["7,fr,1.5", "8,3,2.5"]),
        TextTable::new(
            "impressions",
            "impression_id,request_id,ts,user_id,pin_id,surface,position,context_pin_id,query_id,c_device",
            &[
                "1,1,1700000000,7,1,homefeed,1,,,ios",
                "2,1,1700000000,7,2,homefeed,2,,,ios",
                "3,2,1700000100,8,3,related,1,1,,android",
                "4,3,1700000200,8,1,search,1,,42,android",
            ],
        ),
        TextTable::new(
            "engagements",
            "impression_id,ts,kind,duration_s",
            &["1,1700000005,click,12.5", "3,1700000110,save,"],
        ),
        TextTable::new(
            "conversions",
            "ts,user_id,pin_id,kind,value",
            &["1700003600,7,1,purchase,30", "1700090000,8,3,lead,"],
        ),
    ]
}

/// The table `name` of `tables`.
pub fn table<'a>(tables: &'a mut [TextTable], name: &str) -> &'a mut TextTable {
    tables
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no table {name}"))
}

/// Writes every table in `format`.
pub fn write_all(dir: &Path, tables: &[TextTable], format: Format) {
    for t in tables {
        t.write(dir, format);
    }
}
