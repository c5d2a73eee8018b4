//! The checkpoint parser (see `convcg_fuzz::check_checkpoint`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    convcg_fuzz::check_checkpoint(data);
});
