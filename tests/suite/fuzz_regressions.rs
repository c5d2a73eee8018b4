//! Replays the fuzz targets' inputs through the targets' own checks (`fuzz/src/lib.rs`): every
//! saved crash input of `fuzz/regressions/TARGET/` must now pass them, and every seed of
//! `fuzz/corpus/TARGET/` (small valid files) must also be accepted as valid.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};

/// The files of `fuzz/DIR/TARGET`, sorted (an absent folder has none).
fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&folder) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One test for both readers: they share one scratch directory per process.
#[test]
fn reader_seeds_read_and_crash_inputs_no_longer_crash() {
    for (target, ext) in [("csv_reader", "csv"), ("parquet_reader", "parquet")] {
        let seeds = inputs("corpus", target);
        assert_eq!(seeds.len(), 5, "{target}: one seed per table");
        for seed in seeds {
            assert!(
                harness::check_reader(&read(&seed), ext),
                "{} does not read",
                seed.display()
            );
        }
        for input in inputs("regressions", target) {
            harness::check_reader(&read(&input), ext);
        }
    }
}

#[test]
fn config_seeds_are_valid_and_crash_inputs_no_longer_crash() {
    let seeds = inputs("corpus", "config_parser");
    assert!(seeds.len() >= 3);
    for seed in seeds {
        assert!(
            harness::check_config(&read(&seed)),
            "{} is not a valid config",
            seed.display()
        );
    }
    for input in inputs("regressions", "config_parser") {
        harness::check_config(&read(&input));
    }
}

#[test]
fn checkpoint_seeds_parse_and_crash_inputs_no_longer_crash() {
    let seeds = inputs("corpus", "checkpoint");
    assert!(seeds.len() >= 2);
    for seed in seeds {
        assert!(
            harness::check_checkpoint(&read(&seed)),
            "{} does not parse",
            seed.display()
        );
    }
    for input in inputs("regressions", "checkpoint") {
        harness::check_checkpoint(&read(&input));
    }
}
