//! The config parser (see `convcg_fuzz::check_config`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    convcg_fuzz::check_config(data);
});
