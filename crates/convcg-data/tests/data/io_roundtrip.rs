//! Event logs written and read back: every format and layout gives the same `EventLog`, with
//! `c_*` / `f_*` columns and `None` values; the read options select what is read.

use std::path::Path;

use convcg_data::io::{
    Format, ImpressionColumns, OnBadRow, ReadOptions, WriteOptions, read_log, write_log,
};
use convcg_data::{CategoricalColumn, EventLog, Marketplace, SynthConfig, stable_string_id};

/// A small marketplace log with what the generator leaves out added: impression and user
/// `c_*` columns, impressions without a position, and prices and durations of every kind.
pub(crate) fn log() -> EventLog {
    let cfg = SynthConfig {
        num_users: 300,
        num_pins: 500,
        num_advertisers: 40,
        num_categories: 10,
        num_brands: 50,
        num_queries: 20,
        impressions: 20_000,
        ..SynthConfig::default()
    };
    let mut log = Marketplace::generate(&cfg, 3, &|_, _| {})
        .expect("valid config")
        .log;
    let n = log.impressions.len();
    for (i, p) in log.impressions.position.iter_mut().enumerate() {
        if i % 5 == 0 {
            *p = None;
        }
    }
    log.impressions.categorical = vec![
        CategoricalColumn {
            name: "c_device".to_owned(),
            values: (0..n as i64).map(|i| i % 3).collect(),
        },
        CategoricalColumn {
            name: "c_app_version".to_owned(),
            values: (0..n)
                .map(|i| stable_string_id(&format!("v{}", i % 11)))
                .collect(),
        },
    ];
    log.user_categorical_names = vec!["c_country".to_owned()];
    for u in &mut log.users {
        u.categorical = vec![u.user_id % 7 - 3];
    }
    // Awkward floats: tiny, huge, negative zero, values that are not short in decimal.
    let awkward = [1e-30f32, 3.4e38, -0.0, 0.1, 1.0 / 3.0, f32::MIN_POSITIVE];
    for (p, x) in log.pins.iter_mut().zip(awkward.iter().cycle()) {
        if p.price.is_some() {
            p.price = Some(x.abs());
        }
        if let Some(d) = p.dense.first_mut() {
            *d = *x;
        }
    }
    assert!(log.pins.iter().any(|p| p.price.is_none()));
    assert!(log.pins.iter().any(|p| p.brand_id.is_none()));
    assert!(log.engagements.iter().any(|e| e.duration_s.is_none()));
    assert!(log.impressions.context_pin_id.iter().any(Option::is_none));
    assert!(!log.conversions.is_empty());
    log
}

fn read(dir: &Path, opts: &ReadOptions) -> EventLog {
    let (log, report) = read_log(dir, opts).expect("the written log reads back");
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(report.rows.events() as usize, log.num_events(), "{report}");
    log
}

#[test]
fn every_format_and_layout_reads_back_the_same_log() {
    let original = log();
    let layouts = [
        (Format::Parquet, 1, 1 << 20),
        // Awkward row groups (not dividing the rows) across 3 part files per table.
        (Format::Parquet, 3, 997),
        (Format::Parquet, 1, 4_096),
        (Format::Csv, 1, 1 << 20),
    ];
    for (format, shards, row_group_rows) in layouts {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = WriteOptions {
            format,
            shards,
            row_group_rows,
        };
        write_log(dir.path(), &original, &opts).expect("writes");
        let back = read(dir.path(), &ReadOptions::default());
        assert_eq!(back, original, "{format} in {shards} shard(s)");
        if shards > 1 {
            let parts = std::fs::read_dir(dir.path().join("impressions"))
                .expect("a folder")
                .count();
            assert_eq!(parts, shards);
        }
    }
}

#[test]
fn rewriting_in_another_format_replaces_the_table() {
    let original = log();
    let dir = tempfile::tempdir().expect("temp dir");
    let sharded = WriteOptions {
        shards: 2,
        ..WriteOptions::default()
    };
    write_log(dir.path(), &original, &sharded).expect("writes parquet shards");
    let csv = WriteOptions {
        format: Format::Csv,
        ..WriteOptions::default()
    };
    write_log(dir.path(), &original, &csv).expect("writes csv");
    assert!(!dir.path().join("impressions").exists());
    assert!(dir.path().join("impressions.csv").is_file());
    write_log(dir.path(), &original, &WriteOptions::default()).expect("writes parquet");
    assert!(!dir.path().join("impressions.csv").exists());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // No temporary files are left behind.
    assert_eq!(
        names,
        [
            "conversions.parquet",
            "engagements.parquet",
            "impressions.parquet",
            "pins.parquet",
            "users.parquet"
        ]
    );
    assert_eq!(read(dir.path(), &ReadOptions::default()), original);
}

#[test]
fn core_columns_and_no_catalogue_read_what_they_say() {
    let original = log();
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), &original, &WriteOptions::default()).expect("writes");
    // Without the catalogue the pins and users tables are not even needed.
    std::fs::remove_file(dir.path().join("pins.parquet")).expect("removable");
    std::fs::remove_file(dir.path().join("users.parquet")).expect("removable");
    let opts = ReadOptions {
        catalogue: false,
        impression_columns: ImpressionColumns::Core,
        on_bad_row: OnBadRow::Error,
    };
    let back = read(dir.path(), &opts);
    assert!(back.pins.is_empty() && back.users.is_empty());
    let t = &back.impressions;
    assert!(t.position.is_empty() && t.context_pin_id.is_empty() && t.query_id.is_empty());
    assert!(t.categorical.is_empty());
    let o = &original.impressions;
    assert_eq!(
        (
            &t.impression_id,
            &t.request_id,
            &t.ts,
            &t.user_id,
            &t.pin_id,
            &t.surface
        ),
        (
            &o.impression_id,
            &o.request_id,
            &o.ts,
            &o.user_id,
            &o.pin_id,
            &o.surface
        )
    );
    assert_eq!(back.engagements, original.engagements);
    assert_eq!(back.conversions, original.conversions);
}

#[test]
fn without_a_users_table_users_come_from_the_events() {
    let original = log();
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), &original, &WriteOptions::default()).expect("writes");
    std::fs::remove_file(dir.path().join("users.parquet")).expect("removable");
    let (back, report) = read_log(dir.path(), &ReadOptions::default()).expect("reads");
    let mut expected: Vec<i64> = original
        .impressions
        .user_id
        .iter()
        .chain(original.conversions.iter().map(|c| &c.user_id))
        .copied()
        .collect();
    expected.sort_unstable();
    expected.dedup();
    let ids: Vec<i64> = back.users.iter().map(|u| u.user_id).collect();
    assert_eq!(ids, expected);
    assert!(
        back.users
            .iter()
            .all(|u| u.dense.is_empty() && u.categorical.is_empty())
    );
    assert!(back.user_dense_names.is_empty() && back.user_categorical_names.is_empty());
    assert_eq!(report.rows.users as usize, expected.len());
    assert_eq!(report.files.len(), 4);
}

#[test]
fn an_empty_log_round_trips() {
    let dir = tempfile::tempdir().expect("temp dir");
    for format in [Format::Parquet, Format::Csv] {
        let opts = WriteOptions {
            format,
            ..WriteOptions::default()
        };
        write_log(dir.path(), &EventLog::default(), &opts).expect("writes");
        assert_eq!(
            read(dir.path(), &ReadOptions::default()),
            EventLog::default()
        );
    }
}

#[test]
fn bad_write_options_and_inconsistent_logs_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = log();
    for (opts, name) in [
        (
            WriteOptions {
                row_group_rows: 0,
                ..WriteOptions::default()
            },
            "row_group_rows",
        ),
        (
            WriteOptions {
                shards: 0,
                ..WriteOptions::default()
            },
            "shards",
        ),
        (
            WriteOptions {
                format: Format::Csv,
                shards: 2,
                ..WriteOptions::default()
            },
            "shards",
        ),
    ] {
        let err = write_log(dir.path(), &log, &opts).expect_err("refused");
        assert!(err.to_string().contains(name), "{err}");
    }
    let mut bad_name = log.clone();
    bad_name.pin_dense_names[0] = "price2".to_owned();
    let err = write_log(dir.path(), &bad_name, &WriteOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("price2"), "{err}");
    let mut short = log.clone();
    short.pins[3].dense.pop();
    assert!(write_log(dir.path(), &short, &WriteOptions::default()).is_err());
    let mut ragged = log;
    ragged.impressions.ts.pop();
    assert!(write_log(dir.path(), &ragged, &WriteOptions::default()).is_err());
    // Nothing was written by the refused calls.
    assert_eq!(std::fs::read_dir(dir.path()).expect("readable").count(), 0);
}

#[test]
fn format_names_parse_and_print() {
    for f in [Format::Parquet, Format::Csv] {
        assert_eq!(f.to_string().parse::<Format>().expect("parses"), f);
    }
    let err = "json".parse::<Format>().expect_err("unknown");
    assert!(err.to_string().contains("parquet, csv"), "{err}");
    let opts: ReadOptions =
        toml::from_str("on_bad_row = \"skip\"\nimpression_columns = \"core\"").expect("toml");
    assert_eq!(opts.on_bad_row, OnBadRow::Skip);
    assert_eq!(opts.impression_columns, ImpressionColumns::Core);
    assert!(opts.catalogue);
}
