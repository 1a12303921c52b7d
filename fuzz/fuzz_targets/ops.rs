//! The cargo-fuzz target: libFuzzer's bytes, as an operation sequence, through the
//! driver (`src/lib.rs`). Run by `scripts/fuzz`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_fuzz::run(data));
