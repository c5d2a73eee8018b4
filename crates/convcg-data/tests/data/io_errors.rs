//! Malformed and corrupt logs: each problem is an `Error::BadInput` (or `Error::Io`) naming the
//! file, and the row and column where they apply, for both readers where the problem can be
//! written in both formats; with `on_bad_row = skip` bad rows are dropped and counted.

use std::path::Path;
use std::sync::Arc;

use crate::io_support::{TextTable, dataset, table, write_all};
use arrow_array::{ArrayRef, StringArray, UInt64Array};
use convcg_data::io::{Format, OnBadRow, ReadOptions, read_log};
use convcg_data::{Error, EventLog, Location};

const BOTH: [Format; 2] = [Format::Parquet, Format::Csv];

fn read(dir: &Path) -> convcg_data::Result<EventLog> {
    read_log(dir, &ReadOptions::default()).map(|(log, _)| log)
}

/// The location and message of a `BadInput` error.
fn bad_input(result: convcg_data::Result<EventLog>) -> (Location, String) {
    match result {
        Err(Error::BadInput { at, message }) => (at, message),
        Err(other) => panic!("expected BadInput, got {other:?}"),
        Ok(_) => panic!("expected an error, the log was read"),
    }
}

/// Writes the dataset in `format` after `change`, reads it, and checks the error's location
/// (the changed table's file, and `row` / `column` as given) and that the message holds `says`.
fn assert_bad(
    format: Format,
    table_name: &str,
    change: impl Fn(&mut TextTable),
    row: Option<u64>,
    column: Option<&str>,
    says: &str,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut tables = dataset();
    change(table(&mut tables, table_name));
    write_all(dir.path(), &tables, format);
    let (at, message) = bad_input(read(dir.path()));
    let expected = Location {
        file: dir.path().join(format!("{table_name}.{format}")),
        row,
        column: column.map(str::to_owned),
    };
    assert_eq!(at, expected, "{format}: {message}");
    assert!(
        message.contains(says),
        "{format}: `{message}` should say `{says}`"
    );
    let shown = Error::BadInput { at, message }.to_string();
    assert!(shown.contains(&format!("{table_name}.{format}")), "{shown}");
}

/// A bad cell, in both formats.
fn assert_bad_cell(table_name: &str, row: u64, column: &str, value: &str, says: &str) {
    for format in BOTH {
        assert_bad(
            format,
            table_name,
            |t| t.set(row as usize, column, value),
            Some(row),
            Some(column),
            says,
        );
    }
}

#[test]
fn the_valid_dataset_reads_in_both_formats() {
    for format in BOTH {
        let dir = tempfile::tempdir().expect("temp dir");
        write_all(dir.path(), &dataset(), format);
        let (log, report) = read_log(dir.path(), &ReadOptions::default()).expect("valid");
        assert_eq!(
            (log.pins.len(), log.users.len(), log.impressions.len()),
            (3, 2, 4)
        );
        assert_eq!((log.engagements.len(), log.conversions.len()), (2, 2));
        assert_eq!(report.files.len(), 5);
        assert_eq!(log.pins[0].brand_id, None);
        assert_eq!(log.pins[1].price, None);
        assert_eq!(log.pin_dense_names, ["f_a"]);
        assert_eq!(
            log.users[0].categorical[0],
            convcg_data::stable_string_id("fr")
        );
        assert_eq!(log.users[1].categorical[0], 3);
        assert_eq!(log.impressions.query(3), Some(42));
        assert_eq!(log.impressions.context_pin(2), Some(1));
        assert_eq!(log.engagements[1].duration_s, None);
        assert_eq!(log.conversions[0].value, Some(30.0));
    }
}

#[test]
fn a_null_in_a_required_column() {
    assert_bad_cell("impressions", 2, "user_id", "", "null");
    assert_bad_cell("pins", 3, "f_a", "", "null");
    assert_bad_cell("users", 1, "c_country", "", "null");
}

#[test]
fn an_unknown_surface_or_kind() {
    assert_bad_cell(
        "impressions",
        3,
        "surface",
        "moon",
        "unknown surface `moon`",
    );
    assert_bad_cell(
        "engagements",
        2,
        "kind",
        "like",
        "unknown engagement kind `like`",
    );
    assert_bad_cell(
        "conversions",
        1,
        "kind",
        "refund",
        "unknown conversion kind `refund`",
    );
}

#[test]
fn a_pin_not_in_the_catalogue() {
    assert_bad_cell(
        "impressions",
        4,
        "pin_id",
        "999",
        "pin 999 is not in the pins table",
    );
}

#[test]
fn a_negative_duration_or_price_or_a_non_finite_float() {
    assert_bad_cell("engagements", 1, "duration_s", "-1.5", "negative");
    assert_bad_cell("pins", 1, "price", "-2", "negative");
    assert_bad_cell("pins", 2, "f_a", "NaN", "not a finite number");
    assert_bad_cell("conversions", 1, "value", "inf", "not a finite number");
}

#[test]
fn a_timestamp_out_of_range() {
    // Milliseconds written as seconds, and a negative time.
    assert_bad_cell(
        "impressions",
        2,
        "ts",
        "1700000000000",
        "outside 0..=4102444800",
    );
    assert_bad_cell("conversions", 2, "ts", "-5", "outside");
    assert_bad_cell("engagements", 1, "ts", "4102444801", "outside");
}

#[test]
fn a_duplicate_pin_or_user() {
    assert_bad_cell("pins", 3, "pin_id", "1", "duplicate pin_id 1");
    assert_bad_cell("users", 2, "user_id", "7", "duplicate user_id 7");
}

#[test]
fn a_missing_column() {
    for format in BOTH {
        assert_bad(
            format,
            "impressions",
            |t| t.drop_column("request_id"),
            None,
            Some("request_id"),
            "missing required column",
        );
        // Optional columns may be missing.
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tables = dataset();
        table(&mut tables, "impressions").drop_column("position");
        table(&mut tables, "engagements").drop_column("duration_s");
        write_all(dir.path(), &tables, format);
        let log = read(dir.path()).expect("optional columns may be absent");
        assert!(log.impressions.position.is_empty());
        assert!(log.engagements.iter().all(|e| e.duration_s.is_none()));
    }
}

#[test]
fn an_unparsable_csv_value() {
    assert_bad(
        Format::Csv,
        "impressions",
        |t| t.set(3, "ts", "soon"),
        Some(3),
        Some("ts"),
        "`soon` is not an integer",
    );
    assert_bad(
        Format::Csv,
        "pins",
        |t| t.set(1, "price", "9,5"),
        Some(1),
        None,
        "the row has 7 fields, the header has 6",
    );
    assert_bad(
        Format::Csv,
        "impressions",
        |t| t.set(1, "position", "-1"),
        Some(1),
        Some("position"),
        "outside 0..=4294967295",
    );
}

#[test]
fn a_csv_row_with_too_few_or_too_many_fields() {
    for (line, says) in [
        (
            "5,4,1700000300,7,1",
            "the row has 5 fields, the header has 10",
        ),
        (
            "5,4,1700000300,7,1,homefeed,1,,,ios,extra",
            "the row has 11 fields, the header has 10",
        ),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        write_all(dir.path(), &dataset(), Format::Csv);
        let path = dir.path().join("impressions.csv");
        let mut text = std::fs::read_to_string(&path).expect("readable");
        text.push_str(line);
        text.push('\n');
        std::fs::write(&path, text).expect("writable");
        let (at, message) = bad_input(read(dir.path()));
        assert_eq!(
            at,
            Location {
                file: path,
                row: Some(5),
                column: None
            }
        );
        assert!(message.contains(says), "{message}");
    }
}

#[test]
fn a_wrong_column_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tables = dataset();
    write_all(dir.path(), &tables, Format::Parquet);
    let as_text: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c", "d"]));
    let path = tables[2].write_with(dir.path(), Format::Parquet, &[("ts", as_text)]);
    let (at, message) = bad_input(read(dir.path()));
    assert_eq!(at, Location::column(&path, "ts"));
    assert!(message.contains("expected an integer type"), "{message}");
    assert!(message.contains("Utf8"), "{message}");
}

#[test]
fn an_unsigned_id_above_i64_max() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tables = dataset();
    write_all(dir.path(), &tables, Format::Parquet);
    let ids: ArrayRef = Arc::new(UInt64Array::from(vec![1, 2, u64::MAX, 4]));
    let path = tables[2].write_with(dir.path(), Format::Parquet, &[("request_id", ids)]);
    let (at, message) = bad_input(read(dir.path()));
    assert_eq!(at, Location::cell(&path, 3, "request_id"));
    assert!(message.contains("does not fit"), "{message}");
}

#[test]
fn a_truncated_parquet_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_all(dir.path(), &dataset(), Format::Parquet);
    let path = dir.path().join("impressions.parquet");
    let bytes = std::fs::read(&path).expect("readable");
    for keep in [0, 4, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..keep]).expect("writable");
        let (at, message) = bad_input(read(dir.path()));
        assert_eq!(at, Location::file(&path), "{keep} bytes");
        assert!(message.contains("Parquet"), "{message}");
    }
}

#[test]
fn garbage_with_a_parquet_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_all(dir.path(), &dataset(), Format::Parquet);
    let path = dir.path().join("engagements.parquet");
    std::fs::write(&path, b"impression_id,ts,kind\n1,2,click\n").expect("writable");
    let (at, message) = bad_input(read(dir.path()));
    assert_eq!(at, Location::file(&path));
    assert!(message.contains("not a readable Parquet file"), "{message}");
}

#[test]
fn corrupt_data_pages() {
    // The footer is intact, the column data is not: the error names the file, not a panic.
    let dir = tempfile::tempdir().expect("temp dir");
    write_all(dir.path(), &dataset(), Format::Parquet);
    let path = dir.path().join("impressions.parquet");
    let mut bytes = std::fs::read(&path).expect("readable");
    for b in &mut bytes[4..200] {
        *b = 0xff;
    }
    std::fs::write(&path, &bytes).expect("writable");
    let (at, _) = bad_input(read(dir.path()));
    assert_eq!(at.file, path);
}

#[test]
fn a_table_in_two_forms_or_missing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tables = dataset();
    write_all(dir.path(), &tables, Format::Parquet);
    let csv = tables[3].write(dir.path(), Format::Csv);
    let (at, message) = bad_input(read(dir.path()));
    let parquet = dir.path().join("engagements.parquet");
    assert_eq!(at, Location::file(&parquet));
    assert!(message.contains(&csv.display().to_string()), "{message}");
    assert!(
        message.contains(&parquet.display().to_string()),
        "{message}"
    );

    std::fs::remove_file(&csv).expect("removable");
    std::fs::remove_file(dir.path().join("conversions.parquet")).expect("removable");
    let (at, message) = bad_input(read(dir.path()));
    assert_eq!(at, Location::file(dir.path()));
    assert!(message.contains("no `conversions` table"), "{message}");

    let err = read(&dir.path().join("nowhere")).expect_err("no such directory");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn part_files_must_agree_on_their_feature_columns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut tables = dataset();
    write_all(dir.path(), &tables, Format::Parquet);
    let folder = dir.path().join("impressions");
    std::fs::create_dir(&folder).expect("a folder");
    std::fs::rename(
        dir.path().join("impressions.parquet"),
        folder.join("part-0.parquet"),
    )
    .expect("moved");
    let imps = table(&mut tables, "impressions");
    imps.drop_column("c_device");
    imps.write(&folder, Format::Parquet);
    std::fs::rename(
        folder.join("impressions.parquet"),
        folder.join("part-1.parquet"),
    )
    .expect("moved");
    // Bookkeeping files are not part files.
    std::fs::write(folder.join("_SUCCESS"), b"").expect("writable");
    let (at, message) = bad_input(read(dir.path()));
    assert_eq!(
        at,
        Location::column(folder.join("part-1.parquet"), "c_device")
    );
    assert!(message.contains("same f_* and c_* columns"), "{message}");

    std::fs::remove_dir_all(&folder).expect("removable");
    std::fs::create_dir(&folder).expect("a folder");
    let (at, message) = bad_input(read(dir.path()));
    assert_eq!(at, Location::file(&folder));
    assert!(message.contains("part file"), "{message}");
}

#[test]
fn skip_drops_and_counts_bad_rows() {
    for format in BOTH {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tables = dataset();
        let imps = table(&mut tables, "impressions");
        imps.set(1, "surface", "moon");
        imps.set(3, "pin_id", "999");
        imps.set(4, "ts", "1700000000000");
        table(&mut tables, "engagements").set(2, "duration_s", "-3");
        table(&mut tables, "pins").set(3, "pin_id", "1");
        write_all(dir.path(), &tables, format);
        let opts = ReadOptions {
            on_bad_row: OnBadRow::Skip,
            ..ReadOptions::default()
        };
        let (log, report) = read_log(dir.path(), &opts).expect("bad rows are skipped");
        assert_eq!(report.skipped.impressions, 3, "{report}");
        assert_eq!(report.skipped.engagements, 1, "{report}");
        assert_eq!(report.skipped.pins, 1, "{report}");
        assert_eq!(report.skipped.conversions + report.skipped.users, 0);
        assert_eq!(report.rows.impressions, 1);
        assert_eq!(report.rows.pins, 2);
        assert_eq!(log.impressions.impression_id, [2]);
        assert_eq!(log.impressions.categorical[0].values.len(), 1);
        assert_eq!(log.impressions.position, [Some(2)]);
        assert_eq!(log.engagements.len(), 1);
        let pins: Vec<i64> = log.pins.iter().map(|p| p.pin_id).collect();
        assert_eq!(pins, [1, 2]);
        let where_: Vec<(String, Option<u64>, Option<String>)> = report
            .first_skipped
            .iter()
            .map(|(at, _)| {
                (
                    at.file.file_name().unwrap().to_string_lossy().into_owned(),
                    at.row,
                    at.column.clone(),
                )
            })
            .collect();
        let file = |t: &str| format!("{t}.{format}");
        assert_eq!(
            where_[0],
            (file("pins"), Some(3), Some("pin_id".to_owned()))
        );
        assert_eq!(where_[1].0, file("impressions"));
        assert_eq!(where_.len(), 5, "{report}");
        let shown = report.to_string();
        assert!(shown.contains("impressions"), "{shown}");
        assert!(shown.contains("unknown surface `moon`"), "{shown}");
    }
}
