//! The importers: on the shared real slices (skipped, with a message, where the shared folder is
//! absent) and on small hand-made sources in a temp dir, bad rows included.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Int64Array, LargeStringArray, RecordBatch, StringArray,
};
use parquet::arrow::ArrowWriter;
use proptest::prelude::*;

use convcg_data::import::{Dictionary, ImportReport, Imported, QUERY_SEPARATOR, Source, import};
use convcg_data::testing::require_shared_file;
use convcg_data::{
    ConversionKind, Dataset, DatasetConfig, EngagementKind, Error, EvalProtocol, EventLog, Surface,
};

const TAOBAO: &str = "data/taobao-userbehavior-slice/UserBehavior_slice.csv";
const TMALL: &str = "data/tmall-userlog-10k/user_log_10k.csv";
const TRIVAGO: &str = "data/trivago-100k/trivago_val_100k.parquet";

/// The shared slice `rel` (with its path), imported in `source`'s format, timed and checked
/// ([`check_invariants`]); `None` where the shared folder does not have it.
fn import_slice(source: Source, rel: &str) -> Option<(PathBuf, Imported)> {
    let path = require_shared_file(Path::new(env!("CARGO_MANIFEST_DIR")), rel)?;
    let start = Instant::now();
    let imported = checked_import(source, &path);
    eprintln!(
        "{source}: imported {} rows in {:.1} ms",
        imported.report.rows_read,
        start.elapsed().as_secs_f64() * 1e3
    );
    Some((path, imported))
}

/// `path` imported in `source`'s format, which must succeed, and checked ([`check_invariants`]).
fn checked_import(source: Source, path: &Path) -> Imported {
    let imported = import(source, path).expect("import");
    check_invariants(&imported);
    imported
}

/// The report's rows read, used and skipped.
fn row_counts(r: &ImportReport) -> (u64, u64, u64) {
    (r.rows_read, r.rows_used, r.rows_skipped())
}

/// The row and column of each bad row the report keeps, sorted.
fn bad_cells(r: &ImportReport) -> Vec<(Option<u64>, Option<&str>)> {
    let mut cells: Vec<_> = r
        .bad_rows()
        .map(|b| (b.at.row, b.at.column.as_deref()))
        .collect();
    cells.sort();
    cells
}

/// The `[data]` section of `dataset_toml` as a checked config, and its `eval_protocol`.
fn dataset_config(imported: &Imported) -> (DatasetConfig, String) {
    let text = &imported.dataset_toml;
    let mut doc: toml::Table = toml::from_str(text).expect("dataset_toml is TOML");
    let data = match doc.remove("data") {
        Some(toml::Value::Table(t)) => t,
        other => panic!("no [data] table: {other:?}"),
    };
    assert!(doc.is_empty(), "only [data] expected: {doc:?}");
    let lines: Vec<&str> = text.lines().collect();
    for key in data.keys() {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("{key} = ")))
            .expect("key line");
        assert!(
            lines[at - 1].starts_with("# "),
            "`{key}` has no comment above it"
        );
    }
    let protocol = match data.get("eval_protocol") {
        Some(toml::Value::String(s)) => s.clone(),
        other => panic!("eval_protocol missing or not a string: {other:?}"),
    };
    assert!(
        protocol == "time" || protocol == "last_conversion",
        "{protocol}"
    );
    // Every other key must be a real DatasetConfig key (it denies unknown fields).
    let cfg: DatasetConfig = toml::Value::Table(data)
        .try_into()
        .expect("keys of DatasetConfig");
    cfg.validate().expect("valid dataset config");
    assert_eq!(
        cfg.id_code_dim > 0,
        cfg.history_len <= 8,
        "identity codes where the bags are short, none where they are long"
    );
    (cfg, protocol)
}

/// What every import must satisfy, whatever the source.
fn check_invariants(imported: &Imported) {
    let log = &imported.log;
    let imps = &log.impressions;
    imps.check_lengths().expect("column lengths");
    let imp_row: HashMap<i64, usize> = imps
        .impression_id
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    assert_eq!(imp_row.len(), imps.len(), "impression ids are unique");
    assert!(
        imps.impression_id.windows(2).all(|w| w[0] < w[1]),
        "impression ids increase in output order"
    );
    let pins: HashSet<i64> = log.pins.iter().map(|p| p.pin_id).collect();
    let users: HashSet<i64> = log.users.iter().map(|u| u.user_id).collect();
    assert_eq!(pins.len(), log.pins.len(), "pin ids are unique");
    assert_eq!(users.len(), log.users.len(), "user ids are unique");
    for imp in imps.iter() {
        assert!(pins.contains(&imp.pin_id), "impression pin {}", imp.pin_id);
        assert!(
            users.contains(&imp.user_id),
            "impression user {}",
            imp.user_id
        );
    }
    for e in &log.engagements {
        let row = imp_row
            .get(&e.impression_id)
            .unwrap_or_else(|| panic!("engagement of unknown impression {}", e.impression_id));
        assert_eq!(
            e.ts, imps.ts[*row],
            "engagements are at their impression's ts"
        );
        assert_eq!(e.duration_s, None);
    }
    for c in &log.conversions {
        assert!(pins.contains(&c.pin_id) && users.contains(&c.user_id));
        assert_eq!(c.value, None);
    }
    let r = &imported.report;
    assert_eq!(
        r.rows_read,
        r.rows_used + r.rows_ignored() + r.rows_skipped()
    );
    assert_eq!(
        (r.pins, r.users, r.impressions, r.conversions),
        (
            log.pins.len(),
            log.users.len(),
            imps.len(),
            log.conversions.len()
        )
    );
    assert_eq!(r.clicks + r.saves, log.engagements.len());
    for d in &imported.dictionaries {
        for (id, value) in d.iter() {
            assert_eq!(d.id(value), Some(id), "{} round trip", d.name());
        }
        let back = Dictionary::from_csv(d.name(), &d.relative_path(), &d.to_csv())
            .expect("dictionary CSV reads back");
        assert_eq!(&back, d);
    }
    let shown = r.to_string();
    assert!(shown.contains(&format!("{} read", r.rows_read)), "{shown}");
}

/// Builds the dataset with the imported config; returns its eval conversion queries.
fn build_dataset(imported: &Imported) -> Dataset {
    let (cfg, _) = dataset_config(imported);
    Dataset::build(&imported.log, None, &cfg).expect("the dataset builds from the imported log")
}

fn kinds_of(log: &EventLog) -> (HashSet<Surface>, HashSet<ConversionKind>) {
    (
        log.impressions.surface.iter().copied().collect(),
        log.conversions.iter().map(|c| c.kind).collect(),
    )
}

// ---------------------------------------------------------------- the shared slices

#[test]
fn taobao_slice() {
    let Some((path, imported)) = import_slice(Source::Taobao, TAOBAO) else {
        return;
    };
    let (log, r) = (&imported.log, &imported.report);
    // The file has 96,169 rows (the last has no line end) and its last row's unix_ts is `15`.
    assert_eq!(row_counts(r), (96_169, 96_168, 1));
    let bad: Vec<_> = r.bad_rows().collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].at.file, path);
    assert_eq!(bad[0].at.row, Some(96_169));
    assert_eq!(bad[0].at.column.as_deref(), Some("unix_ts"));
    assert!(bad[0].message.contains("15"), "{}", bad[0].message);
    assert_eq!(log.impressions.len(), 96_168);
    assert_eq!(log.impressions.impression_id.first(), Some(&1));
    assert_eq!(log.impressions.impression_id.last(), Some(&96_168));
    assert_eq!(log.impressions.request_id, log.impressions.impression_id);
    assert_eq!((r.clicks, r.saves, r.conversions), (85_773, 8_251, 2_144));
    assert_eq!(
        (r.pins, r.users, r.unengaged_impressions),
        (75_384, 58_732, 0)
    );
    let (surfaces, conversions) = kinds_of(log);
    assert_eq!(surfaces, HashSet::from([Surface::HomeFeed]));
    assert_eq!(conversions, HashSet::from([ConversionKind::Purchase]));
    assert!(log.impressions.position.is_empty() && log.impressions.query_id.is_empty());
    assert!(
        log.pins
            .iter()
            .all(|p| p.advertiser_id == 0 && p.brand_id.is_none())
    );
    // Row 1 is `543462,1715,1464116,pv,1511658000`.
    let first = log.impressions.get(0);
    assert_eq!(
        (first.user_id, first.pin_id, first.ts),
        (543_462, 1_715, 1_511_658_000)
    );
    let pin = log
        .pins
        .iter()
        .find(|p| p.pin_id == 1_715)
        .expect("pin 1715");
    assert_eq!(pin.category_id, 1_464_116);
    assert_eq!(log.engagements[0].impression_id, 1);
    assert_eq!(log.engagements[0].kind, EngagementKind::Click);
    assert!(imported.dictionaries.is_empty());

    let (_, protocol) = dataset_config(&imported);
    assert_eq!(protocol, "last_conversion");
    let data = build_dataset(&imported);
    assert!(data.stats().train_conversion_examples > 0);
    assert!(data.stats().eval_conversion_queries > 0);
}

#[test]
fn tmall_slice() {
    let Some((path, imported)) = import_slice(Source::Tmall, TMALL) else {
        return;
    };
    let (log, r) = (&imported.log, &imported.report);
    // No header: all 10,000 lines are data rows, and all are valid.
    assert_eq!(row_counts(r), (10_000, 10_000, 0));
    assert_eq!((r.clicks, r.saves, r.conversions), (8_644, 107, 1_249));
    assert_eq!((r.pins, r.users, r.unengaged_impressions), (4_861, 358, 0));
    // 37 items name two brands, one item two categories (first kept).
    assert_eq!(r.pin_conflicts, 38);
    assert!(
        log.impressions.ts.iter().all(|&t| t == 1_447_200_000),
        "2015-11-11"
    );
    let (surfaces, conversions) = kinds_of(log);
    assert_eq!(surfaces, HashSet::from([Surface::HomeFeed]));
    assert_eq!(conversions, HashSet::from([ConversionKind::Purchase]));
    // Row 1 is `328862,406349,1280,2700,5476,11,11,0,...`.
    let pin = &log.pins[0];
    assert_eq!(
        (pin.pin_id, pin.advertiser_id, pin.category_id, pin.brand_id),
        (406_349, 2_700, 1_280, Some(5_476))
    );
    // Conversions keep file order: they are the action-2 rows, in order.
    let text = std::fs::read_to_string(&path).expect("read the slice");
    let buys: Vec<(i64, i64)> = text
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[7] == "2")
        .map(|f| (f[0].parse().unwrap(), f[1].parse().unwrap()))
        .collect();
    let converted: Vec<(i64, i64)> = log
        .conversions
        .iter()
        .map(|c| (c.user_id, c.pin_id))
        .collect();
    assert_eq!(converted, buys);
    assert_eq!(
        log.impressions.impression_id,
        (1..=10_000).collect::<Vec<i64>>()
    );

    let (cfg, protocol) = dataset_config(&imported);
    assert_eq!(protocol, "last_conversion");
    assert_eq!((cfg.click_window_days, cfg.view_window_days), (0.0, 0.0));
    build_dataset(&imported);
}

#[test]
fn trivago_slice() {
    let Some((_, imported)) = import_slice(Source::Trivago, TRIVAGO) else {
        return;
    };
    let (log, r) = (&imported.log, &imported.report);
    assert_eq!(row_counts(r), (100_003, 86_568, 0));
    let ignored: HashMap<&str, u64> = r.ignored.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(
        ignored,
        HashMap::from([
            ("change of sort order", 2_948),
            ("filter selection", 5_303),
            ("search for destination", 3_060),
            ("search for item", 1_044),
            ("search for poi", 1_080),
        ])
    );
    // 72,971 interaction rows (one impression and click each), 13,597 clickouts listing
    // 312,539 items, one clickout whose item is not in its list.
    assert_eq!((r.clicks, r.saves, r.conversions), (72_971, 0, 13_597));
    assert_eq!(r.impressions, 385_511);
    assert_eq!(r.unengaged_impressions, 298_943);
    assert_eq!((r.pins, r.users), (107_380, 6_593));
    let (surfaces, conversions) = kinds_of(log);
    assert_eq!(surfaces, HashSet::from([Surface::Search]));
    assert_eq!(conversions, HashSet::from([ConversionKind::Lead]));

    let dicts: HashMap<&str, &Dictionary> = imported
        .dictionaries
        .iter()
        .map(|d| (d.name(), d))
        .collect();
    let sizes: Vec<(&str, usize)> = imported
        .dictionaries
        .iter()
        .map(|d| (d.name(), d.len()))
        .collect();
    assert_eq!(
        sizes,
        [
            ("user", 6_593),
            ("item", 107_380),
            ("city", 2_986),
            ("query", 4_444),
            ("platform", 55),
            ("device", 3),
        ]
    );
    let imps = &log.impressions;
    let positioned = imps.position.iter().filter(|p| p.is_some()).count();
    assert_eq!(positioned, 385_511 - 72_971 - 1);
    let names: Vec<&str> = imps.categorical.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["c_platform", "c_device"]);
    for (column, dict) in imps.categorical.iter().zip(["platform", "device"]) {
        assert!(
            column
                .values
                .iter()
                .all(|&v| dicts[dict].value(v).is_some())
        );
    }
    assert!(
        imps.query_id
            .iter()
            .all(|q| q.and_then(|q| dicts["query"].value(q)).is_some())
    );

    // Row 1: user 018ULPKHFF1A, `interaction item image` on 5967314 at 1541599523, Marseille.
    let first = imps.get(0);
    assert_eq!(dicts["user"].value(first.user_id), Some("018ULPKHFF1A"));
    assert_eq!(dicts["item"].value(first.pin_id), Some("5967314"));
    assert_eq!(
        (first.ts, first.request_id, first.position),
        (1_541_599_523, 1, None)
    );
    assert_eq!(
        dicts["query"].value(first.query_id.expect("query")),
        Some(format!("Marseille, France{QUERY_SEPARATOR}").as_str())
    );
    assert_eq!(
        dicts["device"].value(imps.categorical[1].values[0]),
        Some("tablet")
    );
    assert_eq!(log.engagements[0].impression_id, first.impression_id);
    // Row 3 is a clickout on 5967314 listing 25 items from 100131 (price 71).
    let request: Vec<usize> = (0..imps.len())
        .filter(|&i| imps.request_id[i] == 3)
        .collect();
    assert_eq!(request.len(), 25);
    let positions: Vec<Option<u32>> = request.iter().map(|&i| imps.position[i]).collect();
    assert_eq!(positions, (1..=25).map(Some).collect::<Vec<_>>());
    let top = log
        .pins
        .iter()
        .find(|p| dicts["item"].value(p.pin_id) == Some("100131"))
        .expect("pin 100131");
    assert_eq!(top.price, Some(71.0));
    assert_eq!(
        top.category_id,
        dicts["city"].id("Marseille, France").expect("city")
    );

    // Every clickout's item was shown in its request.
    let shown: HashSet<(i64, i64, i64)> =
        imps.iter().map(|i| (i.user_id, i.pin_id, i.ts)).collect();
    assert!(
        log.conversions
            .iter()
            .all(|c| shown.contains(&(c.user_id, c.pin_id, c.ts)))
    );

    let (_, protocol) = dataset_config(&imported);
    assert_eq!(protocol, "time");
    let data = build_dataset(&imported);
    assert!(data.stats().train_conversion_examples > 0);
    assert!(data.stats().eval_conversion_queries > 0);
}

// ---------------------------------------------------------------- hand-made sources

/// Each engagement's impression and kind, in log order.
fn engagement_kinds(log: &EventLog) -> Vec<(i64, EngagementKind)> {
    log.engagements
        .iter()
        .map(|e| (e.impression_id, e.kind))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

#[test]
fn taobao_mapping_and_bad_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "UserBehavior_slice.csv",
        "user_id,item_id,category_id,behavior_type,timestamp\n\
         10,100,7,pv,1511658000\n\
         10,100,7,buy,1511658060\r\n\
         11,101,8,fav,1511658100\n\
         11,102,8,jump,1511658100\n\
         12,103,9,cart,15\n\
         12,103,9,cart\n\
         1x,103,9,cart,1511658200\n\
         12,104,9,cart,1511658300",
    );
    // The folder is enough: the slice's file name is looked for in it.
    let imported = checked_import(Source::Taobao, dir.path());
    let (log, r) = (&imported.log, &imported.report);
    assert_eq!(row_counts(r), (8, 4, 4));
    assert_eq!(
        bad_cells(r),
        [
            (Some(4), Some("behavior")),
            (Some(5), Some("unix_ts")),
            (Some(6), None),
            (Some(7), Some("user")),
        ]
    );
    assert!(r.bad_rows().all(|b| b.at.file == path));
    assert_eq!(log.impressions.impression_id, [1, 2, 3, 8]);
    assert_eq!(log.impressions.request_id, [1, 2, 3, 8]);
    assert_eq!(log.impressions.pin_id, [100, 100, 101, 104]);
    assert_eq!(
        log.impressions.ts,
        [1_511_658_000, 1_511_658_060, 1_511_658_100, 1_511_658_300]
    );
    assert_eq!(
        engagement_kinds(log),
        [
            (1, EngagementKind::Click),
            (3, EngagementKind::Save),
            (8, EngagementKind::Save)
        ]
    );
    assert_eq!(log.conversions.len(), 1);
    let c = &log.conversions[0];
    assert_eq!(
        (c.ts, c.user_id, c.pin_id, c.kind),
        (1_511_658_060, 10, 100, ConversionKind::Purchase)
    );
    let pin_ids: Vec<i64> = log.pins.iter().map(|p| p.pin_id).collect();
    assert_eq!(pin_ids, [100, 101, 104]);
    let user_ids: Vec<i64> = log.users.iter().map(|u| u.user_id).collect();
    assert_eq!(user_ids, [10, 11, 12]);
    assert_eq!(r.unengaged_impressions, 0);
    // Row 3 (the buy) credited view-through or to the click a minute before: either way, one
    // conversion attributed and none lost. The log is too short to hold anything out, so every
    // impression trains (`eval_protocol = "none"`).
    let (cfg, _) = dataset_config(&imported);
    let cfg = DatasetConfig {
        eval_protocol: EvalProtocol::None,
        ..cfg
    };
    let data = Dataset::build(&imported.log, None, &cfg).expect("the dataset builds");
    assert_eq!(data.stats().unattributed, 0);
}

#[test]
fn tmall_mapping_and_bad_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "log.csv",
        "1,100,5,50,500,11,11,0,1,0,北京\n\
         1,100,6,50,,11,11,2,1,0,北京\n\
         2,101,5,51,,11,11,3,1,1,x\n\
         2,101,5,51,510,11,11,1,1,1,x\n\
         2,102,5,51,510,11,31,0,1,1,x\n\
         2,102,5,51,510,13,1,0,1,1,x\n\
         2,102,5,51,510,11,11,9,1,1,x\n\
         2,102,5,51,510,11,11,0,1\n\
         3,102,5,51,510,2,28,2,1,1,x\n",
    );
    // The folder's only .csv file is taken.
    let imported = checked_import(Source::Tmall, dir.path());
    let (log, r) = (&imported.log, &imported.report);
    assert_eq!(row_counts(r), (9, 5, 4));
    assert_eq!(
        bad_cells(r),
        [
            (Some(5), Some("day")),
            (Some(6), Some("month")),
            (Some(7), Some("action")),
            (Some(8), None),
        ]
    );
    assert!(r.bad_rows().all(|b| b.at.file == path));
    let nov11 = 1_447_200_000;
    let feb28 = 1_425_081_600;
    assert_eq!(log.impressions.ts, [nov11, nov11, nov11, nov11, feb28]);
    assert_eq!(log.impressions.impression_id, [1, 2, 3, 4, 9]);
    // Pin 100: advertiser 50, the first category (5) kept, brand 500 from the first row;
    // pin 101: brand unknown in its first row, filled by the next.
    let pins: Vec<(i64, i64, i64, Option<i64>)> = log
        .pins
        .iter()
        .map(|p| (p.pin_id, p.advertiser_id, p.category_id, p.brand_id))
        .collect();
    assert_eq!(
        pins,
        [
            (100, 50, 5, Some(500)),
            (101, 51, 5, Some(510)),
            (102, 51, 5, Some(510))
        ]
    );
    assert_eq!(r.pin_conflicts, 1);
    assert_eq!(
        engagement_kinds(log),
        [
            (1, EngagementKind::Click),
            (3, EngagementKind::Save),
            (4, EngagementKind::Save)
        ]
    );
    let buys: Vec<(i64, i64, i64)> = log
        .conversions
        .iter()
        .map(|c| (c.ts, c.user_id, c.pin_id))
        .collect();
    assert_eq!(buys, [(nov11, 1, 100), (feb28, 3, 102)]);
}

/// One row of a trivago file: the columns the importer reads (`session_id` and `step` are
/// made up when it is written).
#[derive(Clone)]
struct TrivagoRow {
    user: Option<&'static str>,
    ts: i64,
    action: &'static str,
    reference: Option<&'static str>,
    platform: &'static str,
    city: &'static str,
    device: &'static str,
    filters: Option<&'static str>,
    impressions: Option<&'static str>,
    prices: Option<&'static str>,
}

impl TrivagoRow {
    /// User `uA`'s `action` on `reference` at `ts`, on a French tablet in Paris, with no filters
    /// and no list of items.
    fn user_a(ts: i64, action: &'static str, reference: Option<&'static str>) -> Self {
        TrivagoRow {
            user: Some("uA"),
            ts,
            action,
            reference,
            platform: "FR",
            city: "Paris, France",
            device: "tablet",
            filters: None,
            impressions: None,
            prices: None,
        }
    }

    /// User `uB`'s, as [`TrivagoRow::user_a`]'s but on a US phone in Rome.
    fn user_b(ts: i64, action: &'static str, reference: Option<&'static str>) -> Self {
        TrivagoRow {
            user: Some("uB"),
            platform: "US",
            city: "Rome, Italy",
            device: "mobile",
            ..Self::user_a(ts, action, reference)
        }
    }

    /// The row with a list of `impressions` at `prices`.
    fn listing(self, impressions: &'static str, prices: &'static str) -> Self {
        TrivagoRow {
            impressions: Some(impressions),
            prices: Some(prices),
            ..self
        }
    }
}

/// Writes a trivago-shaped Parquet file with the given columns left out; `platform` is written
/// as LargeUtf8 and `device` dictionary-encoded, to cover those layouts.
fn write_trivago(path: &Path, rows: &[TrivagoRow], leave_out: &[&str]) {
    let strings = |f: &dyn Fn(&TrivagoRow) -> Option<&'static str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("user_id", strings(&|r| r.user)),
        ("session_id", strings(&|_| Some("s1"))),
        (
            "timestamp",
            Arc::new(rows.iter().map(|r| r.ts).collect::<Int64Array>()),
        ),
        (
            "step",
            Arc::new((1..=rows.len() as i64).collect::<Int64Array>()),
        ),
        ("action_type", strings(&|r| Some(r.action))),
        ("reference", strings(&|r| r.reference)),
        (
            "platform",
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.platform))
                    .collect::<LargeStringArray>(),
            ),
        ),
        ("city", strings(&|r| Some(r.city))),
        (
            "device",
            Arc::new(
                rows.iter()
                    .map(|r| r.device)
                    .collect::<DictionaryArray<Int32Type>>(),
            ),
        ),
        ("current_filters", strings(&|r| r.filters)),
        ("impressions", strings(&|r| r.impressions)),
        ("prices", strings(&|r| r.prices)),
    ];
    let batch = RecordBatch::try_from_iter(
        columns
            .into_iter()
            .filter(|(name, _)| !leave_out.contains(name)),
    )
    .expect("batch");
    let file = std::fs::File::create(path).expect("create parquet");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write batch");
    writer.close().expect("close parquet");
}

const T0: i64 = 1_541_599_523;

fn trivago_rows() -> Vec<TrivagoRow> {
    vec![
        // 1: an interaction: impression + click.
        TrivagoRow::user_a(T0, "interaction item image", Some("h1")),
        // 2: a clickout on a listed item.
        TrivagoRow {
            filters: Some("Wifi|Pool"),
            ..TrivagoRow::user_a(T0 + 10, "clickout item", Some("h2"))
        }
        .listing("h1|h2|h3", "80|95|120"),
        // 3: ignored: no item.
        TrivagoRow {
            city: "Rome, Italy",
            ..TrivagoRow::user_a(T0 + 20, "search for destination", Some("Rome, Italy"))
        },
        // 4: a clickout on an item missing from its list.
        TrivagoRow::user_b(T0 + 30, "clickout item", Some("h9")).listing("h3|h4", "60|70"),
        // 5: bad: 2 prices for 3 items.
        TrivagoRow::user_b(T0 + 40, "clickout item", Some("h3")).listing("h3|h4|h5", "60|70"),
        // 6: bad: no reference.
        TrivagoRow::user_b(T0 + 50, "interaction item info", None),
        // 7: bad: timestamp before 2000.
        TrivagoRow::user_b(1_000, "interaction item rating", Some("h4")),
        // 8: bad: no user.
        TrivagoRow {
            user: None,
            ..TrivagoRow::user_b(T0 + 70, "interaction item deals", Some("h4"))
        },
        // 9: bad: a price that is not a number.
        TrivagoRow::user_b(T0 + 80, "clickout item", Some("h3")).listing("h3|h4", "60|cheap"),
    ]
}

#[test]
fn trivago_mapping_and_bad_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessions.parquet");
    write_trivago(&path, &trivago_rows(), &[]);
    let imported = checked_import(Source::Trivago, &path);
    let (log, r) = (&imported.log, &imported.report);
    assert_eq!(row_counts(r), (9, 3, 5));
    assert_eq!(r.ignored, [("search for destination".to_owned(), 1)]);
    assert_eq!(
        bad_cells(r),
        [
            (Some(5), Some("prices")),
            (Some(6), Some("reference")),
            (Some(7), Some("timestamp")),
            (Some(8), Some("user_id")),
            (Some(9), Some("prices")),
        ]
    );

    let dict = |name: &str| {
        imported
            .dictionaries
            .iter()
            .find(|d| d.name() == name)
            .unwrap_or_else(|| panic!("dictionary {name}"))
    };
    let values = |name: &str| {
        dict(name)
            .iter()
            .map(|(_, v)| v.to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(values("user"), ["uA", "uB"]);
    assert_eq!(values("item"), ["h1", "h2", "h3", "h4", "h9"]);
    assert_eq!(values("city"), ["Paris, France", "Rome, Italy"]);
    assert_eq!(
        values("query"),
        [
            "Paris, France\t",
            "Paris, France\tWifi|Pool",
            "Rome, Italy\t"
        ]
    );
    assert_eq!(values("platform"), ["FR", "US"]);
    assert_eq!(values("device"), ["tablet", "mobile"]);

    let imps = &log.impressions;
    assert_eq!(imps.impression_id, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(imps.request_id, [1, 2, 2, 2, 4, 4, 4]);
    assert_eq!(imps.pin_id, [0, 0, 1, 2, 2, 3, 4]);
    assert_eq!(imps.user_id, [0, 0, 0, 0, 1, 1, 1]);
    assert_eq!(
        imps.position,
        [None, Some(1), Some(2), Some(3), Some(1), Some(2), None]
    );
    assert_eq!(
        imps.query_id,
        [
            Some(0),
            Some(1),
            Some(1),
            Some(1),
            Some(2),
            Some(2),
            Some(2)
        ]
    );
    assert!(imps.context_pin_id.is_empty());
    assert_eq!(imps.categorical[0].values, [0, 0, 0, 0, 1, 1, 1]);
    assert_eq!(imps.categorical[1].values, [0, 0, 0, 0, 1, 1, 1]);
    assert!(imps.surface.iter().all(|&s| s == Surface::Search));

    assert_eq!(log.engagements.len(), 1);
    assert_eq!(
        (log.engagements[0].impression_id, log.engagements[0].kind),
        (1, EngagementKind::Click)
    );
    let conversions: Vec<(i64, i64, i64, ConversionKind)> = log
        .conversions
        .iter()
        .map(|c| (c.ts, c.user_id, c.pin_id, c.kind))
        .collect();
    assert_eq!(
        conversions,
        [
            (T0 + 10, 0, 1, ConversionKind::Lead),
            (T0 + 30, 1, 4, ConversionKind::Lead)
        ]
    );
    // Prices are the first listed; a pin first seen in an interaction gets its price later.
    let pins: Vec<(i64, i64, Option<f32>)> = log
        .pins
        .iter()
        .map(|p| (p.pin_id, p.category_id, p.price))
        .collect();
    assert_eq!(
        pins,
        [
            (0, 0, Some(80.0)),
            (1, 0, Some(95.0)),
            (2, 0, Some(120.0)),
            (3, 1, Some(70.0)),
            (4, 1, None)
        ]
    );
    // h3 was listed under Paris, then under Rome: its first city stays.
    assert_eq!(r.pin_conflicts, 1);
    // Unclicked listed items: h1, h3 in request 2; h3, h4 in request 4.
    assert_eq!(r.unengaged_impressions, 4);
}

#[test]
fn trivago_structural_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no_prices.parquet");
    write_trivago(&path, &trivago_rows(), &["prices"]);
    match import(Source::Trivago, &path) {
        Err(Error::BadInput { at, .. }) => {
            assert_eq!(at.column.as_deref(), Some("prices"));
            assert_eq!(at.file, path);
        }
        other => panic!("expected a missing-column error, got {other:?}"),
    }
    let csv = write(dir.path(), "not.parquet", "user_id,timestamp\nu,1\n");
    match import(Source::Trivago, &csv) {
        Err(Error::BadInput { at, message }) => {
            assert_eq!(at.file, csv);
            assert!(message.contains("Parquet"), "{message}");
        }
        other => panic!("expected a not-Parquet error, got {other:?}"),
    }
    // Only bad and ignored rows: no usable row is an error naming the first bad one.
    let rows: Vec<TrivagoRow> = trivago_rows()
        .into_iter()
        .skip(2)
        .filter(|r| r.reference != Some("h9"))
        .collect();
    let path = dir.path().join("bad_only.parquet");
    write_trivago(&path, &rows, &[]);
    match import(Source::Trivago, &path) {
        Err(Error::BadInput { message, .. }) => {
            assert!(
                message.contains("no usable row") && message.contains("row 2"),
                "{message}"
            );
        }
        other => panic!("expected a no-usable-row error, got {other:?}"),
    }
}

#[test]
fn csv_structural_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.csv");
    assert!(matches!(
        import(Source::Taobao, &missing),
        Err(Error::Io { path, .. }) if path == missing
    ));
    let narrow = write(dir.path(), "narrow.csv", "1,2,3\n4,5,6\n");
    match import(Source::Taobao, &narrow) {
        Err(Error::BadInput { message, .. }) => {
            assert!(message.contains("3 fields, expected 5"), "{message}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let empty = write(dir.path(), "empty.csv", "");
    assert!(matches!(
        import(Source::Tmall, &empty),
        Err(Error::BadInput { .. })
    ));
    let header_only = write(dir.path(), "header.csv", "user,item,category,behavior,ts\n");
    assert!(matches!(
        import(Source::Taobao, &header_only),
        Err(Error::BadInput { .. })
    ));
    // A folder with several .csv files and none of the slice's name is ambiguous.
    match import(Source::Taobao, dir.path()) {
        Err(Error::BadInput { at, message }) => {
            assert_eq!(at.file, dir.path());
            assert!(message.contains("UserBehavior_slice.csv"), "{message}");
        }
        other => panic!("expected an ambiguity error, got {other:?}"),
    }
}

#[test]
fn sources_parse_from_their_names() {
    for s in Source::ALL {
        assert_eq!(s.as_str().parse::<Source>().expect("parse"), s);
        assert_eq!(s.to_string(), s.as_str());
    }
    let err = "amazon".parse::<Source>().unwrap_err();
    assert!(err.to_string().contains("taobao, tmall, trivago"), "{err}");
}

/// A taobao row as text, and whether it is valid.
fn taobao_row() -> impl Strategy<Value = (String, bool)> {
    let valid = (1i64..50, 1i64..30, 1i64..5, 0usize..4, 0i64..7200).prop_map(
        |(user, item, category, behavior, dt)| {
            let behavior = ["pv", "fav", "cart", "buy"][behavior];
            (
                format!("{user},{item},{category},{behavior},{}", 1_511_658_000 + dt),
                true,
            )
        },
    );
    let invalid = prop_oneof![
        Just("1,2,3,pv".to_owned()),
        Just("1,2,3,look,1511658000".to_owned()),
        Just("1,2,3,pv,99".to_owned()),
        Just("a,2,3,pv,1511658000".to_owned()),
        Just("   ".to_owned()),
    ]
    .prop_map(|s| (s, false));
    prop_oneof![4 => valid, 1 => invalid]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the mix of rows, each valid one yields one impression and exactly one
    /// engagement or conversion, each invalid one is reported with its row, and the log holds.
    #[test]
    fn taobao_rows_are_used_or_reported(rows in proptest::collection::vec(taobao_row(), 1..60)) {
        prop_assume!(rows.iter().any(|r| r.1));
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let path = write(dir.path(), "x.csv", &text.join("\n"));
        let imported = checked_import(Source::Taobao, &path);
        let valid: Vec<i64> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.1)
            .map(|(i, _)| i as i64 + 1)
            .collect();
        let log = &imported.log;
        prop_assert_eq!(&log.impressions.impression_id, &valid);
        prop_assert_eq!(log.engagements.len() + log.conversions.len(), valid.len());
        let mut bad: Vec<u64> = imported.report.bad_rows().filter_map(|b| b.at.row).collect();
        bad.sort();
        let invalid: Vec<u64> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.1)
            .map(|(i, _)| i as u64 + 1)
            .collect();
        prop_assert_eq!(imported.report.rows_skipped(), invalid.len() as u64);
        // Up to three examples are kept per column.
        prop_assert!(bad.iter().all(|b| invalid.contains(b)));
    }
}
