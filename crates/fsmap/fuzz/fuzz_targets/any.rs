//! Fuzzes fsmap's any entry point; seeds in corpus/any come from real images (fuzz/seeds.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fsmap::fuzzing::any(data));
