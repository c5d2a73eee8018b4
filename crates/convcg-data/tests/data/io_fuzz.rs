//! Arbitrary bytes never panic the readers: random CSV text, random bytes named `.parquet`, and
//! a valid Parquet file with bytes overwritten or cut off.

use crate::io_support::{dataset, write_all};
use convcg_data::io::{Format, OnBadRow, ReadOptions, read_log};
use proptest::prelude::*;

/// Reads `dir` with both bad-row policies: any result but a panic is fine; an error must say
/// where.
fn read_both_ways(dir: &std::path::Path) {
    for on_bad_row in [OnBadRow::Error, OnBadRow::Skip] {
        let opts = ReadOptions {
            on_bad_row,
            ..ReadOptions::default()
        };
        if let Err(e) = read_log(dir, &opts) {
            assert!(!e.to_string().is_empty());
        }
    }
}

/// A valid Parquet dataset's impressions file.
fn valid_impressions() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    write_all(dir.path(), &dataset(), Format::Parquet);
    std::fs::read(dir.path().join("impressions.parquet")).expect("readable")
}

/// CSV-ish text: mostly the schema's own words and digits, so that cases get past the header.
fn csv_text() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"impression_id,request_id,ts,user_id,pin_id,surface\n".to_vec()),
        Just(b",".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"homefeed".to_vec()),
        Just(b"c_x".to_vec()),
        "[0-9-]{1,22}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_csv_never_panics(text in csv_text(), raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().expect("temp dir");
        write_all(dir.path(), &dataset(), Format::Csv);
        std::fs::write(dir.path().join("impressions.csv"), &text).expect("writable");
        read_both_ways(dir.path());
        std::fs::write(dir.path().join("impressions.csv"), &raw).expect("writable");
        read_both_ways(dir.path());
    }

    #[test]
    fn random_bytes_as_parquet_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().expect("temp dir");
        write_all(dir.path(), &dataset(), Format::Parquet);
        let mut framed = b"PAR1".to_vec();
        framed.extend_from_slice(&raw);
        for bytes in [raw.clone(), framed.clone(), [framed.as_slice(), b"PAR1"].concat()] {
            std::fs::write(dir.path().join("engagements.parquet"), &bytes).expect("writable");
            read_both_ways(dir.path());
        }
    }

    #[test]
    fn damaged_parquet_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let valid = valid_impressions();
        let mut damaged = valid.clone();
        for (at, byte) in edits {
            let i = at.index(damaged.len());
            damaged[i] = byte;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        write_all(dir.path(), &dataset(), Format::Parquet);
        std::fs::write(dir.path().join("impressions.parquet"), &damaged).expect("writable");
        read_both_ways(dir.path());
        let keep = cut.index(valid.len());
        std::fs::write(dir.path().join("impressions.parquet"), &valid[..keep]).expect("writable");
        read_both_ways(dir.path());
    }
}
