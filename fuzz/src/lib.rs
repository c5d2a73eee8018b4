//! What the fuzz targets check, shared with the regression test of the main suite
//! (`tests/suite/fuzz_regressions.rs` includes this file), which replays the seed corpus and
//! every saved crash input through the same functions.
//!
//! The readers take paths, so a reader target writes the fuzzed table into a private directory
//! on tmpfs beside the other tables of a small valid dataset, then reads the whole log through
//! `read_log`, the path `convcg train --data` takes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use convcg::RunConfig;
use convcg::checkpoint::{CHECKPOINT_MAGIC, CHECKPOINT_VERSION, Checkpoint};
use convcg_data::io::{OnBadRow, ReadOptions, read_log};

/// The tables of a tiny valid dataset (`convcg synth --events 80 --format csv`, 6 users, 12 pins).
pub const TABLES: [(&str, &[u8]); 5] = [
    ("pins", include_bytes!("../data/pins.csv")),
    ("users", include_bytes!("../data/users.csv")),
    ("impressions", include_bytes!("../data/impressions.csv")),
    ("engagements", include_bytes!("../data/engagements.csv")),
    ("conversions", include_bytes!("../data/conversions.csv")),
];

/// This process's scratch directory (on /dev/shm where it exists, so reads never touch a disk).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("convcg-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// Splits an input into the table it targets (its first byte) and the file's bytes.
pub fn split(data: &[u8]) -> Option<(&'static str, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((TABLES[usize::from(first) % TABLES.len()].0, rest))
}

/// The reader targets: the first byte picks the table, the rest is its file in format `ext`
/// (`csv` or `parquet`). Returns whether the log read without error (under `on_bad_row =
/// "error"`).
pub fn check_reader(data: &[u8], ext: &str) -> bool {
    match split(data) {
        Some((table, bytes)) => read_with(table, ext, bytes),
        None => false,
    }
}

/// Writes the valid tables as CSV, except `fuzzed`, written as `fuzzed.EXT` from `bytes`; then
/// reads the log with both bad-row policies. Any outcome but a panic is fine, and an error must
/// say something. Returns whether the strict read succeeded.
pub fn read_with(fuzzed: &str, ext: &str, bytes: &[u8]) -> bool {
    let dir = scratch();
    for (name, csv) in TABLES {
        for e in ["csv", "parquet"] {
            let _ = std::fs::remove_file(dir.join(format!("{name}.{e}")));
        }
        if name == fuzzed {
            std::fs::write(dir.join(format!("{name}.{ext}")), bytes).expect("scratch write");
        } else {
            std::fs::write(dir.join(format!("{name}.csv")), csv).expect("scratch write");
        }
    }
    let mut strict_ok = false;
    for on_bad_row in [OnBadRow::Error, OnBadRow::Skip] {
        let opts = ReadOptions {
            on_bad_row,
            ..ReadOptions::default()
        };
        match read_log(dir, &opts) {
            Ok(_) => strict_ok |= on_bad_row == OnBadRow::Error,
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    strict_ok
}

/// The config target: the input as a `--config` file and as a dataset's `dataset.toml`. A
/// config that parses and validates must print as TOML that parses back to itself. Returns
/// whether it parsed and validated as a `--config` file.
pub fn check_config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let mut valid = false;
    if let Ok(cfg) = RunConfig::from_toml(text)
        && cfg.validate().is_ok()
    {
        let printed = cfg.to_toml().expect("a valid config prints");
        let back = RunConfig::from_toml(&printed).expect("a printed config parses");
        assert_eq!(back, cfg, "the config changed through TOML:\n{printed}");
        valid = true;
    }
    let dataset = convcg::ConfigText {
        text,
        origin: "dataset.toml",
    };
    if let Ok(layered) = RunConfig::for_dataset(Some(dataset), None) {
        let _ = layered.config.validate();
    }
    valid
}

/// The checkpoint target: the input as a whole file, and (first byte odd) as a body wrapped in
/// a valid header and checksum, so that the section parser sees it. A checkpoint that parses
/// encodes back to the same bytes; an error names the file. Returns whether it parsed.
pub fn check_checkpoint(data: &[u8]) -> bool {
    let Some((&first, rest)) = data.split_first() else {
        return false;
    };
    let bytes = if first % 2 == 1 {
        let mut b = CHECKPOINT_MAGIC.to_vec();
        b.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        b.extend_from_slice(&(rest.len() as u64).to_le_bytes());
        b.extend_from_slice(rest);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    } else {
        rest.to_vec()
    };
    match Checkpoint::decode(&bytes, Path::new("fuzz.ckpt")) {
        Ok(c) => {
            assert_eq!(
                c.encode(),
                bytes,
                "a parsed checkpoint re-encodes differently"
            );
            true
        }
        Err(e) => {
            assert!(e.to_string().contains("fuzz.ckpt"), "{e}");
            false
        }
    }
}
