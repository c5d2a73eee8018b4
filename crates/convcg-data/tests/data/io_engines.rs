//! Tables as other engines write them: folders of part files (DuckDB's `PER_THREAD_OUTPUT`,
//! Spark's `NAME.parquet/` with `_SUCCESS` and `.crc` files), several row groups per file, ZSTD,
//! SNAPPY or no compression, written by pyarrow where it is installed (else by the parquet
//! crate with settings unlike `write_log`'s); codecs this build does not read, partitioned
//! writes, and the timestamp and decimal columns engines write unless told to cast.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::io_roundtrip::log;
use crate::io_support::{dataset, table, write_all};
use arrow_array::{ArrayRef, Decimal128Array, TimestampMicrosecondArray};
use convcg_data::io::{Format, ReadOptions, WriteOptions, read_log, write_log};
use convcg_data::{Error, EventLog, Location};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, ParquetMetaDataWriter};
use parquet::file::properties::WriterProperties;

/// One part file to write: rows `rows` of `table`'s single file, into `path` (relative to the
/// dataset), with `codec` and at most `group_rows` rows per row group.
struct Part {
    table: &'static str,
    path: String,
    rows: (usize, usize),
    codec: &'static str,
    group_rows: usize,
}

/// The layout other engines write: `pins/` and `engagements/` as DuckDB's `PER_THREAD_OUTPUT`
/// names its parts, `users.parquet/` and `impressions/` as Spark names them, `conversions` as
/// one file of several row groups; three codecs among the impressions' parts.
fn parts(log: &EventLog) -> Vec<Part> {
    let part = |table, path: &str, rows, codec, group_rows| Part {
        table,
        path: path.to_owned(),
        rows,
        codec,
        group_rows,
    };
    let (p, u, i, e, c) = (
        log.pins.len(),
        log.users.len(),
        log.impressions.len(),
        log.engagements.len(),
        log.conversions.len(),
    );
    let spark = "c0a8e5f2-7d41-4b1e-9a36-5e0f1d2c3b4a-c000";
    vec![
        part("pins", "pins/data_0.parquet", (0, p / 2), "zstd", 64),
        part("pins", "pins/data_1.parquet", (p / 2, p), "zstd", 64),
        part(
            "users",
            &format!("users.parquet/part-00000-{spark}.snappy.parquet"),
            (0, u / 3),
            "snappy",
            50,
        ),
        part(
            "users",
            &format!("users.parquet/part-00001-{spark}.snappy.parquet"),
            (u / 3, u),
            "snappy",
            50,
        ),
        part(
            "impressions",
            &format!("impressions/part-00000-{spark}.zstd.parquet"),
            (0, i / 3),
            "zstd",
            1_000,
        ),
        part(
            "impressions",
            &format!("impressions/part-00001-{spark}.snappy.parquet"),
            (i / 3, 2 * i / 3),
            "snappy",
            1_500,
        ),
        part(
            "impressions",
            &format!("impressions/part-00002-{spark}.parquet"),
            (2 * i / 3, i),
            "none",
            2_500,
        ),
        part(
            "engagements",
            "engagements/data_0.parquet",
            (0, e / 2),
            "zstd",
            e.div_ceil(6),
        ),
        part(
            "engagements",
            "engagements/data_1.parquet",
            (e / 2, e),
            "snappy",
            e.div_ceil(6),
        ),
        part(
            "conversions",
            "conversions.parquet",
            (0, c),
            "zstd",
            c.div_ceil(3),
        ),
    ]
}

/// Writes the parts with pyarrow: strings plain instead of dictionary-encoded, floats as DOUBLE,
/// `position` as INT32 (Spark's `int`) and the impressions' `c_*` integers as strings, as a
/// query in another engine would leave them. Reads `SRC\tDST\tSTART\tEND\tCODEC\tGROUP_ROWS`
/// lines from stdin.
const PYARROW_SCRIPT: &str = r#"
import sys
import pyarrow as pa
import pyarrow.parquet as pq

def engine_types(name, table):
    columns = []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_dictionary(field.type):
            column = pa.chunked_array(
                [chunk.dictionary_decode() for chunk in column.chunks], field.type.value_type)
        if pa.types.is_floating(column.type):
            column = column.cast(pa.float64())
        if field.name == "position":
            column = column.cast(pa.int32())
        if name == "impressions" and field.name.startswith("c_"):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)

tables = {}
for line in sys.stdin.read().splitlines():
    src, dst, start, end, codec, group_rows = line.split("\t")
    if src not in tables:
        name = src.rsplit("/", 1)[-1].split(".")[0]
        tables[src] = engine_types(name, pq.read_table(src))
    start, end = int(start), int(end)
    pq.write_table(tables[src].slice(start, end - start), dst, compression=codec,
                   row_group_size=int(group_rows),
                   data_page_version="2.0" if codec == "snappy" else "1.0")
"#;

/// Whether `python3` can import pyarrow; if not, says why the test falls back.
fn pyarrow() -> bool {
    let status = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => true,
        Ok(_) => {
            eprintln!(
                "python3 cannot import pyarrow: the part files are written by the parquet crate"
            );
            false
        }
        Err(e) => {
            eprintln!("no python3 ({e}): the part files are written by the parquet crate");
            false
        }
    }
}

fn write_with_pyarrow(src: &Path, out: &Path, parts: &[Part]) {
    let mut child = Command::new("python3")
        .args(["-c", PYARROW_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let lines: String = parts
        .iter()
        .map(|p| {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                src.join(format!("{}.parquet", p.table)).display(),
                out.join(&p.path).display(),
                p.rows.0,
                p.rows.1,
                p.codec,
                p.group_rows
            )
        })
        .collect();
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), lines.as_bytes())
        .expect("the script reads its input");
    let output = child.wait_with_output().expect("python3 finishes");
    assert!(
        output.status.success(),
        "the pyarrow script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn compression(codec: &str) -> Compression {
    match codec {
        "zstd" => Compression::ZSTD(ZstdLevel::default()),
        "snappy" => Compression::SNAPPY,
        "none" => Compression::UNCOMPRESSED,
        other => panic!("no codec {other}"),
    }
}

/// The fallback: the parquet crate writes each part with dictionary encoding on (`write_log`
/// turns it off for most columns), the part's codec and row-group size, from record batches
/// whose size divides neither.
fn write_with_parquet_crate(src: &Path, out: &Path, parts: &[Part]) {
    for p in parts {
        let file = File::open(src.join(format!("{}.parquet", p.table))).expect("readable");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("a Parquet file")
            .with_offset(p.rows.0)
            .with_limit(p.rows.1 - p.rows.0)
            .with_batch_size(333)
            .build()
            .expect("a reader");
        let props = WriterProperties::builder()
            .set_compression(compression(p.codec))
            .set_max_row_group_row_count(Some(p.group_rows))
            .build();
        let mut writer = None;
        for batch in reader {
            let batch = batch.expect("a batch");
            let w = writer.get_or_insert_with(|| {
                let file = File::create(out.join(&p.path)).expect("writable");
                ArrowWriter::try_new(file, batch.schema(), Some(props.clone())).expect("a writer")
            });
            w.write(&batch).expect("written");
        }
        writer.expect("rows to write").close().expect("closed");
    }
}

fn metadata(path: &Path) -> ParquetMetaData {
    let file = File::open(path).expect("readable");
    ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .expect("a Parquet footer")
}

/// Spark's and Hadoop's bookkeeping beside the parts, which the reader must leave out: if it
/// read any of them as a part file, the read would fail.
fn add_bookkeeping(out: &Path) {
    for folder in ["users.parquet", "impressions"] {
        let folder = out.join(folder);
        std::fs::write(folder.join("_SUCCESS"), b"").expect("writable");
        std::fs::write(folder.join("_common_metadata"), b"not a part file").expect("writable");
        std::fs::create_dir(folder.join("_temporary")).expect("a folder");
        let names: Vec<String> = std::fs::read_dir(&folder)
            .expect("readable")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        for name in names {
            std::fs::write(folder.join(format!(".{name}.crc")), b"crc").expect("writable");
        }
    }
}

#[test]
fn part_files_from_another_writer_read_as_the_log_they_were_made_from() {
    let original = log();
    let src = tempfile::tempdir().expect("temp dir");
    write_log(src.path(), &original, &WriteOptions::default()).expect("writes");
    let out = tempfile::tempdir().expect("temp dir");
    for folder in ["pins", "users.parquet", "impressions", "engagements"] {
        std::fs::create_dir(out.path().join(folder)).expect("a folder");
    }
    let parts = parts(&original);
    let by_pyarrow = pyarrow();
    if by_pyarrow {
        write_with_pyarrow(src.path(), out.path(), &parts);
    } else {
        write_with_parquet_crate(src.path(), out.path(), &parts);
    }
    add_bookkeeping(out.path());

    // The parts are what the test means them to be: another writer's, each of several row
    // groups, in their codecs.
    for p in &parts {
        let md = metadata(&out.path().join(&p.path));
        let created_by = md.file_metadata().created_by().unwrap_or_default();
        if by_pyarrow {
            assert!(created_by.starts_with("parquet-cpp"), "{created_by}");
        }
        assert!(md.num_row_groups() >= 2, "{}: one row group", p.path);
        let codec = compression(p.codec);
        for group in md.row_groups() {
            for chunk in group.columns() {
                assert_eq!(
                    chunk.compression(),
                    codec,
                    "{} {}",
                    p.path,
                    chunk.column_path()
                );
            }
        }
    }

    let (back, report) = read_log(out.path(), &ReadOptions::default()).expect("the parts read");
    assert_eq!(back, original);
    assert_eq!(report.skipped.total(), 0, "{report}");
    let expected_files: Vec<PathBuf> = parts.iter().map(|p| out.path().join(&p.path)).collect();
    let mut files = report.files.clone();
    files.sort();
    let mut expected_sorted = expected_files.clone();
    expected_sorted.sort();
    assert_eq!(files, expected_sorted, "only the part files are read");
    // The parts of a table are read in file-name order.
    let impressions: Vec<&PathBuf> = report
        .files
        .iter()
        .filter(|f| f.starts_with(out.path().join("impressions")))
        .collect();
    assert_eq!(impressions, expected_files[4..7].iter().collect::<Vec<_>>());
}

/// Rewrites the footer of the Parquet file at `path` so that its column chunks (those of
/// `column` only, if given) claim `codec`; the pages stay as they are.
fn claim_codec(path: &Path, codec: Compression, column: Option<&str>) {
    let bytes = std::fs::read(path).expect("readable");
    let footer = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
    let body = bytes.len() - 8 - footer as usize;
    let mut builder = metadata(path).into_builder();
    let groups = builder
        .take_row_groups()
        .into_iter()
        .map(|group| {
            let mut g = group.into_builder();
            let columns = g
                .take_columns()
                .into_iter()
                .map(|c| {
                    if column.is_none_or(|name| c.column_path().string() == name) {
                        c.into_builder()
                            .set_compression(codec)
                            .build()
                            .expect("valid")
                    } else {
                        c
                    }
                })
                .collect();
            g.set_column_metadata(columns).build().expect("valid")
        })
        .collect();
    let md = builder.set_row_groups(groups).build();
    let mut out = bytes[..body].to_vec();
    ParquetMetaDataWriter::new(&mut out, &md)
        .finish()
        .expect("a footer");
    std::fs::write(path, out).expect("writable");
}

/// The error of reading `dir`, which must be a `BadInput` at a column of `file`.
fn codec_error(dir: &Path, file: &Path) -> String {
    match read_log(dir, &ReadOptions::default()) {
        Err(Error::BadInput { at, message }) => {
            assert_eq!(at.file, file, "{message}");
            assert!(at.column.is_some(), "{at}: {message}");
            Error::BadInput { at, message }.to_string()
        }
        Err(other) => panic!("expected BadInput, got {other:?}"),
        Ok(_) => panic!("expected an error, the log was read"),
    }
}

#[test]
fn a_codec_this_build_does_not_read_is_named_with_its_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tables = dataset();
    write_all(dir.path(), &tables, Format::Parquet);
    let folder = dir.path().join("impressions");
    std::fs::create_dir(&folder).expect("a folder");
    let part = folder.join("part-00001.parquet");
    std::fs::rename(dir.path().join("impressions.parquet"), &part).expect("moved");
    std::fs::copy(&part, folder.join("part-00000.parquet")).expect("copied");

    // A column that is not read may claim any codec.
    claim_codec(
        &part,
        Compression::GZIP(GzipLevel::default()),
        Some("c_device"),
    );
    let opts = ReadOptions {
        impression_columns: convcg_data::io::ImpressionColumns::Core,
        ..ReadOptions::default()
    };
    read_log(dir.path(), &opts).expect("c_device is not read");
    let message = codec_error(dir.path(), &part);
    assert_eq!(
        message,
        format!(
            "{}: the column is compressed with GZIP, which convcg does not read: it reads \
             Parquet compressed with ZSTD or SNAPPY, or uncompressed; write the file with one \
             of those",
            Location::column(&part, "c_device")
        )
    );
    for (codec, name) in [
        (Compression::LZ4, "LZ4"),
        (Compression::LZ4_RAW, "LZ4_RAW"),
        (Compression::LZO, "LZO"),
    ] {
        claim_codec(&part, codec, None);
        let message = codec_error(dir.path(), &part);
        assert!(
            message.contains(&format!("compressed with {name},")),
            "{message}"
        );
    }

    // Files that pyarrow really compressed with them, where it is installed.
    if !pyarrow() {
        return;
    }
    let good = folder.join("part-00000.parquet");
    let codecs = ["gzip", "lz4", "brotli"];
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq\n\
             table = pq.read_table(sys.argv[1])\n\
             for codec in sys.argv[3:]:\n\
             \x20   pq.write_table(table, f'{sys.argv[2]}/{codec}.parquet', compression=codec)",
        ])
        .arg(&good)
        .arg(elsewhere.path())
        .args(codecs)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "pyarrow writes {codecs:?}");
    for codec in codecs {
        std::fs::copy(elsewhere.path().join(format!("{codec}.parquet")), &part).expect("copied");
        let message = codec_error(dir.path(), &part);
        // pyarrow's `lz4` is LZ4_RAW (older versions wrote the framed LZ4).
        let name = codec.to_uppercase();
        assert!(
            message.contains(&format!("compressed with {name}")),
            "{message}"
        );
    }
}

#[test]
fn a_partitioned_write_is_refused_not_half_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_all(dir.path(), &dataset(), Format::Parquet);
    let folder = dir.path().join("impressions");
    let partition = folder.join("ts_day=19675");
    std::fs::create_dir_all(&partition).expect("folders");
    std::fs::rename(
        dir.path().join("impressions.parquet"),
        partition.join("part-0.parquet"),
    )
    .expect("moved");
    match read_log(dir.path(), &ReadOptions::default()) {
        Err(Error::BadInput { at, message }) => {
            assert_eq!(at, Location::file(&partition));
            assert!(message.contains("Hive-style"), "{message}");
        }
        other => panic!("expected BadInput, got {other:?}"),
    }
}

#[test]
fn an_engines_timestamp_or_decimal_column_says_how_to_cast_it() {
    let cases: [(&str, &str, ArrayRef, &str); 2] = [
        (
            "impressions",
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![
                1_700_000_000_000_000;
                4
            ])),
            "unix seconds as an integer",
        ),
        (
            "pins",
            "price",
            Arc::new(
                Decimal128Array::from(vec![Some(950), None, Some(300)])
                    .with_precision_and_scale(10, 2)
                    .expect("a decimal type"),
            ),
            "cast the column to DOUBLE",
        ),
    ];
    for (name, column, array, says) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tables = dataset();
        write_all(dir.path(), &tables, Format::Parquet);
        let path =
            table(&mut tables, name).write_with(dir.path(), Format::Parquet, &[(column, array)]);
        match read_log(dir.path(), &ReadOptions::default()) {
            Err(Error::BadInput { at, message }) => {
                assert_eq!(at, Location::column(&path, column));
                assert!(message.contains(says), "{message}");
            }
            other => panic!("expected BadInput, got {other:?}"),
        }
    }
}
