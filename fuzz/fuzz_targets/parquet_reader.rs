//! The PARQUET reader: the first byte picks the table, the rest is its file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    convcg_fuzz::check_reader(data, "parquet");
});
