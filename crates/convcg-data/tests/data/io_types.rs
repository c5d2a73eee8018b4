//! The Parquet reader takes the types other writers use: narrow and unsigned integers, large,
//! view and dictionary-encoded strings, integers for floats, all-null columns; column order
//! does not matter and unknown columns are ignored.

use std::sync::Arc;

use crate::io_support::write_batch;
use arrow_array::types::{Int8Type, Int32Type, UInt8Type};
use arrow_array::{
    ArrayRef, DictionaryArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, LargeStringArray, NullArray, RecordBatch, StringArray, StringViewArray, UInt8Array,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{Field, Schema};
use convcg_data::io::{ReadOptions, read_log};
use convcg_data::{ConversionKind, EngagementKind, Surface, stable_string_id};

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("a valid batch")
}

#[test]
fn other_writers_types_are_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let pins = batch(vec![
        ("f_a", Arc::new(Int64Array::from(vec![1, -2]))),
        ("comment", Arc::new(StringArray::from(vec!["x", "y"]))),
        ("pin_id", Arc::new(UInt32Array::from(vec![100, 200]))),
        ("advertiser_id", Arc::new(Int16Array::from(vec![1, 1]))),
        ("category_id", Arc::new(Int8Array::from(vec![3, 4]))),
        ("price", Arc::new(Float32Array::from(vec![Some(2.5), None]))),
    ]);
    write_batch(&d.join("pins.parquet"), &pins);

    let countries: DictionaryArray<Int32Type> = vec!["fr", "de", "fr"].into_iter().collect();
    let users = batch(vec![
        ("user_id", Arc::new(UInt64Array::from(vec![7, 8, 9]))),
        ("c_country", Arc::new(countries)),
        ("f_b", Arc::new(Float64Array::from(vec![0.5, 1.5, -2.0]))),
    ]);
    write_batch(&d.join("users.parquet"), &users);

    let surfaces = DictionaryArray::<Int8Type>::try_new(
        Int8Array::from(vec![1, 0, 2]),
        Arc::new(LargeStringArray::from(vec![
            "homefeed", "related", "search",
        ])),
    )
    .expect("a dictionary");
    let impressions = batch(vec![
        ("surface", Arc::new(surfaces)),
        ("impression_id", Arc::new(Int32Array::from(vec![1, 2, 3]))),
        ("request_id", Arc::new(UInt16Array::from(vec![10, 10, 11]))),
        (
            "ts",
            Arc::new(UInt32Array::from(vec![
                1_700_000_000,
                1_700_000_000,
                1_700_000_060,
            ])),
        ),
        ("user_id", Arc::new(Int64Array::from(vec![7, 7, 9]))),
        ("pin_id", Arc::new(UInt64Array::from(vec![100, 200, 100]))),
        (
            "position",
            Arc::new(Int8Array::from(vec![Some(1), Some(2), None])),
        ),
        ("context_pin_id", Arc::new(NullArray::new(3))),
        (
            "query_id",
            Arc::new(Int16Array::from(vec![None, None, Some(5)])),
        ),
        (
            "c_device",
            Arc::new(StringViewArray::from(vec!["ios", "web", "ios"])),
        ),
        ("c_slot", Arc::new(UInt8Array::from(vec![1, 2, 3]))),
    ]);
    write_batch(&d.join("impressions.parquet"), &impressions);

    let kinds = DictionaryArray::<UInt8Type>::try_new(
        UInt8Array::from(vec![1, 0]),
        Arc::new(StringArray::from(vec!["click", "save"])),
    )
    .expect("a dictionary");
    let engagements = batch(vec![
        ("impression_id", Arc::new(Int64Array::from(vec![1, 3]))),
        (
            "ts",
            Arc::new(Int64Array::from(vec![1_700_000_003, 1_700_000_070])),
        ),
        ("kind", Arc::new(kinds)),
        (
            "duration_s",
            Arc::new(Int32Array::from(vec![None, Some(14)])),
        ),
    ]);
    write_batch(&d.join("engagements.parquet"), &engagements);

    let conversions = batch(vec![
        ("ts", Arc::new(Int64Array::from(vec![1_700_003_600]))),
        ("user_id", Arc::new(Int64Array::from(vec![9]))),
        ("pin_id", Arc::new(Int64Array::from(vec![100]))),
        (
            "kind",
            Arc::new(LargeStringArray::from(vec!["add_to_cart"])),
        ),
        ("value", Arc::new(Float64Array::from(vec![Some(19.99)]))),
    ]);
    write_batch(&d.join("conversions.parquet"), &conversions);

    let (log, report) = read_log(d, &ReadOptions::default()).expect("readable");
    assert_eq!(report.rows.total(), 2 + 3 + 3 + 2 + 1);

    assert_eq!(log.pins[1].pin_id, 200);
    assert_eq!(log.pins[0].dense, [1.0]);
    assert_eq!(log.pins[1].dense, [-2.0]);
    assert_eq!((log.pins[0].price, log.pins[1].price), (Some(2.5), None));
    assert_eq!(log.pin_dense_names, ["f_a"]);

    assert_eq!(log.users[2].user_id, 9);
    assert_eq!(log.users[2].categorical, [stable_string_id("fr")]);
    assert_eq!(log.users[1].dense, [1.5]);

    let t = &log.impressions;
    assert_eq!(t.impression_id, [1, 2, 3]);
    assert_eq!(t.request_id, [10, 10, 11]);
    assert_eq!(t.ts[2], 1_700_000_060);
    assert_eq!(
        t.surface,
        [Surface::Related, Surface::HomeFeed, Surface::Search]
    );
    assert_eq!(t.position, [Some(1), Some(2), None]);
    assert_eq!(t.context_pin_id, [None, None, None]);
    assert_eq!(t.query_id, [None, None, Some(5)]);
    let names: Vec<&str> = t.categorical.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["c_device", "c_slot"]);
    assert_eq!(
        t.categorical[0].values,
        ["ios", "web", "ios"].map(stable_string_id)
    );
    assert_eq!(t.categorical[1].values, [1, 2, 3]);

    assert_eq!(log.engagements[0].kind, EngagementKind::Save);
    assert_eq!(log.engagements[1].duration_s, Some(14.0));
    assert_eq!(log.conversions[0].kind, ConversionKind::AddToCart);
    assert_eq!(log.conversions[0].value, Some(19.99));
}
